// TernConfig: Istio configuration as Tern uses it (issue 4, ARCHITECTURE.md §5–6), in three separately tested
// stages: decode (YAML through libyaml → typed resources, `ResourceDecoder`), validate (every error at once, as
// `FILE:LINE: Kind ns/name: field.path: reason`, `ConfigValidator`), compile (an immutable `RouteTable`, the
// snapshot the proxy publishes with SnapshotCell). A pure library: it reads the config files it is given and
// makes no other system call, starts no thread, and knows nothing of reactors or sockets. What runs per request
// (`RouteTable.select`, `pickDestination`, `hashKey`, the consistent-hash lookups) never allocates, locks or
// blocks. It holds no mutable per-reactor state: the load balancers that read the table live in the engine's
// cluster runtime (TernProxy's Cluster/LoadBalancers.swift).
