// TernConfig: Istio configuration as Tern uses it (issue 4, ARCHITECTURE.md §5–6), in three separately tested
// stages: decode (YAML through libyaml → typed resources, `ResourceDecoder`), validate (every error at once, as
// `FILE:LINE: Kind ns/name: field.path: reason`, `ConfigValidator`), compile (an immutable `RouteTable`, the
// snapshot the proxy publishes with SnapshotCell). A pure library: it reads the config files it is given and
// makes no other system call, starts no thread, and knows nothing of reactors or sockets. What runs per request
// (`RouteTable.select`, `pickDestination`, `hashKey`, `LoadBalancer.pick`) never allocates, locks or blocks.
