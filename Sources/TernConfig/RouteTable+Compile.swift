import TernCore

extension RouteTable {
    /// Compiles a validated set into a table; a set with any error is refused whole (the old table keeps serving).
    /// `namespace` is the sidecar's: a bare `Host: cart` prefers `cart.<namespace>.svc.cluster.local`.
    /// `reactors`: how many reactors will match requests against the table; each regex is compiled once per
    /// reactor, and reactor i matches with copy i (`CompiledRegex` says why).
    /// `workload`: the workload the security policies are resolved for (default: one in `namespace` without
    /// labels); what Tern cannot enforce of them is in the table's `compileWarnings`.
    public static func compile(_ set: ConfigSet, namespace: String, reactors: Int = 1,
                               workload: SecurityWorkload? = nil) throws(ConfigError) -> RouteTable {
        if set.hasErrors { throw ConfigError(set.errors) }
        var compiler = RouteCompiler(resources: set.resources, namespace: namespace, reactors: reactors)
        compiler.workload = workload ?? SecurityWorkload(namespace: namespace)
        return compiler.run()
    }

    /// Loads, validates and compiles PATH in one go (what `tern validate` checks).
    public static func load(path: String, namespace: String, reactors: Int = 1,
                            workload: SecurityWorkload? = nil) throws(ConfigError) -> (RouteTable, warnings: [Diagnostic]) {
        let set = ConfigLoader.load(path: path, namespace: namespace)
        let table = try compile(set, namespace: namespace, reactors: reactors, workload: workload)
        return (table, set.warnings + table.compileWarnings)
    }
}

struct RouteCompiler {
    let resources: [Resource]
    let namespace: String
    /// Copies of each regex, one per reactor.
    let reactors: Int
    var workload = SecurityWorkload(namespace: "default")
    var services: [String: ServiceEntry] = [:]
    /// The namespace of the ServiceEntry that declares each host (its endpoints' service accounts live there).
    var serviceNamespaces: [String: String] = [:]
    var rules: [String: DestinationRule] = [:]
    var clusters: [Cluster] = []
    var clusterIndex: [String: Int] = [:]
    var virtualHosts: [VirtualHost] = []

    init(resources: [Resource], namespace: String, reactors: Int) {
        self.resources = resources
        self.namespace = namespace
        self.reactors = reactors
    }

    mutating func run() -> RouteTable {
        for r in resources {
            switch r.spec {
            case .serviceEntry(let se):
                for h in se.hosts where services[h] == nil {
                    services[h] = se
                    serviceNamespaces[h] = r.namespace
                }
            case .destinationRule(let dr): if rules[dr.host] == nil { rules[dr.host] = dr }
            default: break
            }
        }
        // Virtual hosts: each VirtualService host (the first VirtualService to claim a host wins), then each
        // ServiceEntry host no VirtualService claims, with a default route to the service.
        var hostOwner: [String: Int] = [:]
        for r in resources {
            // A VirtualService bound to gateways without `mesh` does not apply to sidecars (Istio's rule).
            guard case .virtualService(let vs) = r.spec, Self.appliesToMesh(vs.gateways) else { continue }
            let routes = vs.http.compactMap { compileRoute($0, gateways: vs.gateways) }
            let tcp = vs.tcp.map { compileTCP($0) }
            let tls = vs.tls.map { compileTLS($0) }
            for h in vs.hosts where hostOwner[h] == nil {
                hostOwner[h] = virtualHosts.count
                virtualHosts.append(VirtualHost(name: h, source: r.label, routes: routes, tcpRoutes: tcp,
                                                serviceDestination: serviceDestination(h), tlsRoutes: tls))
            }
        }
        for r in resources {
            guard case .serviceEntry(let se) = r.spec else { continue }
            for h in se.hosts where hostOwner[h] == nil && !h.hasPrefix("*") {
                let d = Destination(host: h, subset: nil, port: nil, mark: Mark(line: 0, path: ""))
                let wc = weightedCluster(d, weight: 1, headers: nil)
                let route = Route(name: "default", matchers: [], action: .forward(destinations: [wc], totalWeight: 1),
                                  rewrite: nil, uriRegexRewrite: nil, requestHeaders: HeaderOperations(),
                                  responseHeaders: HeaderOperations(),
                                  timeout: nil, retries: nil, fault: nil, mirrors: [], corsPolicy: nil)
                let tcp = TCPRouteEntry(matches: [], destinations: [wc], totalWeight: 1)
                hostOwner[h] = virtualHosts.count
                virtualHosts.append(VirtualHost(name: h, source: r.label, routes: [route], tcpRoutes: [tcp],
                                                serviceDestination: wc))
            }
        }
        // Host lookup: full names first, then the Kubernetes short forms (name.ns.svc, name.ns), then bare names of
        // the sidecar's namespace, then bare names of other namespaces (first claim wins at each step).
        var exact = HostIndex(expected: virtualHosts.count * 4)
        var wildcard = HostIndex(expected: virtualHosts.count)
        var catchAll: Int?
        let suffix = ".svc.cluster.local"
        var aliases: [(priority: Int, key: String, value: Int)] = []
        for (i, vh) in virtualHosts.enumerated() {
            if vh.name == "*" {
                if catchAll == nil { catchAll = i }
            } else if vh.name.hasPrefix("*.") {
                wildcard.insert(String(vh.name.dropFirst(2)), value: i)
            } else {
                aliases.append((0, vh.name, i))
                if vh.name.hasSuffix(suffix) {
                    let short = vh.name.dropLast(suffix.count)  // name.ns
                    let parts = short.split(separator: ".")
                    if parts.count == 2 {
                        aliases.append((1, short + ".svc", i))
                        aliases.append((1, String(short), i))
                        aliases.append((parts[1] == namespace ? 2 : 3, String(parts[0]), i))
                    }
                }
            }
        }
        for a in aliases.sorted(by: { $0.priority < $1.priority }) { exact.insert(a.key, value: a.value) }
        let (sniRoutes, sniPorts) = compileSNI(hostOwner: hostOwner)
        var (authorization, warnings) = AuthorizationTable.compile(resources, workload: workload)
        for r in resources {
            // (Checked and resolved for this workload; only an inbound side acts on it.)
            guard case .peerAuthentication = r.spec else { continue }
            warnings.append(Diagnostic(.warning, file: r.file, line: r.line, resource: r.label, path: "kind",
                                       message: "acted on only by an inbound side (--http --upstream APP with --config): it decides TLS or plaintext there; elsewhere it has no effect"))
        }
        return RouteTable(namespace: namespace, resources: resources, virtualHosts: virtualHosts, clusters: clusters,
                          exactHosts: exact, wildcardHosts: wildcard, catchAll: catchAll, sniRoutes: sniRoutes,
                          sniPorts: sniPorts, workload: workload, authorization: authorization,
                          peerAuthentication: PeerAuthenticationPolicy.resolve(resources, workload: workload),
                          compileWarnings: warnings)
    }

    /// The service a ServiceEntry declares as exactly `host`, as a destination (all its ports); nil when none does.
    mutating func serviceDestination(_ host: String) -> WeightedCluster? {
        guard services[host] != nil else { return nil }
        return weightedCluster(Destination(host: host, subset: nil, port: nil, mark: Mark(line: 0, path: "")), weight: 1,
                               headers: nil)
    }

    static func appliesToMesh(_ gateways: [String]) -> Bool { gateways.isEmpty || gateways.contains("mesh") }

    /// nil when every match of the route names gateways without `mesh` (a match's `gateways` overrides the
    /// VirtualService's): the route is then for gateways only.
    mutating func compileRoute(_ r: HTTPRoute, gateways: [String]) -> Route? {
        var r = r
        if !r.match.isEmpty {
            r.match = r.match.filter { Self.appliesToMesh($0.gateways.isEmpty ? gateways : $0.gateways) }
            if r.match.isEmpty { return nil }
        }
        let action: RouteAction
        if let redirect = r.redirect {
            action = .redirect(redirect)
        } else if let direct = r.directResponse {
            action = .directResponse(status: direct.status, body: direct.body ?? [])
        } else if !r.route.isEmpty {
            let single = r.route.count == 1
            let destinations = r.route.map {
                weightedCluster($0.destination, weight: single ? 1 : UInt64($0.weight ?? 0), headers: $0.headers)
            }
            action = .forward(destinations: destinations, totalWeight: destinations.reduce(0) { $0 + $1.weight })
        } else {
            action = .unsupported
        }
        var regexRewrite: RegexRewrite?
        if let rx = r.rewrite?.uriRegexRewrite {
            switch RegexRewrite.compile(match: rx.match, rewrite: rx.rewrite, copies: reactors) {
            case .success(let compiled): regexRewrite = compiled
            case .failure: bug("uriRegexRewrite \(rx.match) passed validation but does not compile")
            }
        }
        return Route(
            name: r.name, matchers: r.match.map(compileMatch), action: action, rewrite: r.rewrite,
            uriRegexRewrite: regexRewrite,
            requestHeaders: r.headers?.request ?? HeaderOperations(),
            responseHeaders: r.headers?.response ?? HeaderOperations(), timeout: r.timeout, retries: r.retries,
            fault: r.fault,
            mirrors: r.mirrors.map { (weightedCluster($0.destination, weight: 1, headers: nil), $0.percentage ?? 100) },
            corsPolicy: r.corsPolicy,
            corsOrigins: r.corsPolicy?.allowOrigins.map { matcher($0, ignoreCase: false) } ?? [])
    }

    /// A VirtualService tls route: its destinations as a TCP route's, its matches kept for SNI routing.
    mutating func compileTLS(_ r: TCPRoute) -> TLSRouteEntry {
        let tcp = compileTCP(r)
        let matches = r.match.filter { Self.appliesToMesh($0.gateways) }.map {
            SNIMatch(sniHosts: $0.sniHosts, port: $0.port, destinationSubnets: $0.destinationSubnets)
        }
        return TLSRouteEntry(destinations: tcp.destinations, totalWeight: tcp.totalWeight, sniMatches: matches)
    }

    mutating func compileTCP(_ r: TCPRoute) -> TCPRouteEntry {
        let single = r.route.count == 1
        let destinations = r.route.map {
            weightedCluster($0.destination, weight: single ? 1 : UInt64($0.weight ?? 0), headers: nil)
        }
        let matches = r.match.map { TCPRouteMatch(port: $0.port, destinationSubnets: $0.destinationSubnets) }
        return TCPRouteEntry(matches: matches, destinations: destinations,
                             totalWeight: destinations.reduce(0) { $0 + $1.weight })
    }

    func compileMatch(_ m: HTTPMatchRequest) -> RequestMatcher {
        func headers(_ list: [(name: String, match: StringMatch)]) -> [(name: [UInt8], matcher: Matcher)] {
            list.map { (Array($0.name.utf8), matcher($0.match, ignoreCase: false)) }
        }
        return RequestMatcher(
            uri: m.uri.map { matcher($0, ignoreCase: m.ignoreUriCase) },
            scheme: m.scheme.map { matcher($0, ignoreCase: false) },
            method: m.method.map { matcher($0, ignoreCase: false) },
            authority: m.authority.map { matcher($0, ignoreCase: false) },
            headers: headers(m.headers), withoutHeaders: headers(m.withoutHeaders),
            queryParams: m.queryParams.map { (Array($0.name.utf8), matcher($0.match, ignoreCase: false)) },
            port: m.port)
    }

    func matcher(_ s: StringMatch, ignoreCase: Bool) -> Matcher {
        switch s {
        case .exact(let v): return ignoreCase ? .exactIgnoringCase(Array(v.lowercased().utf8)) : .exact(Array(v.utf8))
        case .prefix(let v): return ignoreCase ? .prefixIgnoringCase(Array(v.lowercased().utf8)) : .prefix(Array(v.utf8))
        case .present: return .present
        case .regex(let v):
            switch CompiledRegex.compile(v, copies: reactors) {
            case .success(let r): return .regex(r)
            case .failure:
                bug("regex \(v) passed validation but does not compile")
                return .exact([0])  // matches nothing a parser accepts
            }
        }
    }

    mutating func weightedCluster(_ d: Destination, weight: UInt64, headers: Headers?) -> WeightedCluster {
        var list: [(port: UInt16, cluster: Int32)] = []
        if let (se, exactHost) = service(d.host) {
            let ports = d.port.map { [$0] } ?? se.ports.map(\.number)
            for p in ports { list.append((p, Int32(cluster(d.host, subset: d.subset, port: p, se, exactHost)))) }
        }
        return WeightedCluster(host: d.host, subset: d.subset, weight: weight, clusters: list,
                               requestHeaders: headers?.request ?? HeaderOperations(),
                               responseHeaders: headers?.response ?? HeaderOperations())
    }

    /// The ServiceEntry declaring `host`, exactly or by wildcard (then the host itself is the DNS name).
    func service(_ host: String) -> (ServiceEntry, Bool)? {
        if let se = services[host] { return (se, true) }
        var rest = Substring(host)
        while let dot = rest.firstIndex(of: ".") {
            rest = rest[rest.index(after: dot)...]
            if let se = services["*." + rest] { return (se, false) }
        }
        return services["*"].map { ($0, false) }
    }

    mutating func cluster(_ host: String, subset: String?, port: UInt16, _ se: ServiceEntry, _ exactHost: Bool) -> Int {
        let name = "outbound|\(port)|\(subset ?? "")|\(host)"
        if let i = clusterIndex[name] { return i }
        let rule = rules[host] ?? wildcardRule(host)
        let subsetDef = subset.flatMap { s in rule?.subsets.first { $0.name == s } }
        let labels = subsetDef?.labels ?? [:]
        let sePort = se.ports.first { $0.number == port }
        var endpoints: [Endpoint] = []
        let dns = se.resolution == .DNS || se.resolution == .DNS_ROUND_ROBIN
        for e in se.endpoints where labels.allSatisfy({ e.labels[$0.key] == $0.value }) {
            let p = sePort.flatMap { e.ports[$0.name] } ?? sePort?.targetPort ?? port
            endpoints.append(Endpoint(address: e.address, port: p, weight: max(e.weight ?? 1, 1), labels: e.labels,
                                      needsResolution: dns && IPAddress(parsing: e.address) == nil, locality: e.locality ?? "",
                                      network: e.network ?? ""))
        }
        if se.endpoints.isEmpty, dns, labels.isEmpty {
            endpoints.append(Endpoint(address: host, port: sePort?.targetPort ?? port, weight: 1, labels: [:],
                                      needsResolution: true))
        }
        // Policy: the DR's blocks, replaced whole by its port level for this port, then the subset's blocks
        // (each one it sets replaces the inherited one), then the subset's own port level.
        var policy = PolicyBlocks()
        if let tp = rule?.trafficPolicy {
            policy = tp.portLevelSettings.first { $0.port == port }?.blocks ?? tp.blocks
        }
        if let stp = subsetDef?.trafficPolicy {
            policy = stp.portLevelSettings.first { $0.port == port }?.blocks ?? policy.overridden(by: stp.blocks)
        }
        clusters.append(Cluster(name: name, host: host, subset: subset, port: port, endpoints: endpoints,
                                policy: policy, retryBudget: subsetDef?.trafficPolicy?.retryBudget ?? rule?.trafficPolicy?.retryBudget,
                                loadBalancing: LoadBalancingPolicy(policy, endpoints: endpoints),
                                originalDestination: se.resolution == .NONE, resolution: se.resolution,
                                upstreamProtocol: UpstreamProtocol(portProtocol: sePort?.protocol, pool: policy.connectionPool),
                                subjectAltNames: se.subjectAltNames,
                                serviceAccounts: Array(Set(se.endpoints.compactMap { e in
                                    e.serviceAccount.flatMap { $0.isEmpty ? nil : "/ns/\(serviceNamespace(se))/sa/\($0)" }
                                })).sorted(),
                                meshExternal: se.location == .MESH_EXTERNAL))
        clusterIndex[name] = clusters.count - 1
        return clusters.count - 1
    }

    /// The namespace of the ServiceEntry `se` (the sidecar's when it cannot be told).
    func serviceNamespace(_ se: ServiceEntry) -> String {
        se.hosts.lazy.compactMap { serviceNamespaces[$0] }.first ?? namespace
    }

    func wildcardRule(_ host: String) -> DestinationRule? {
        var rest = Substring(host)
        while let dot = rest.firstIndex(of: ".") {
            rest = rest[rest.index(after: dot)...]
            if let r = rules["*." + rest] { return r }
        }
        return rules["*"]
    }
}

extension LoadBalancingPolicy {
    /// The policy `blocks.loadBalancer` selects, with its consistent-hash table built over `endpoints` (built
    /// again whenever a cluster's endpoints change, as DNS answers do).
    init(_ blocks: PolicyBlocks, endpoints: [Endpoint]) {
        if let ch = blocks.loadBalancer?.consistentHash {
            switch ch.algorithm {
            case .ringHash(let size):
                self = .ringHash(key: HashSource(ch.key), ring: HashRing(endpoints: endpoints, minimumRingSize: size))
            case .maglev(let size):
                self = .maglev(key: HashSource(ch.key), table: MaglevTable(endpoints: endpoints, tableSize: size))
            }
        } else {
            switch blocks.loadBalancer?.simple ?? .UNSPECIFIED {
            case .ROUND_ROBIN: self = .roundRobin
            case .RANDOM: self = .random
            default: self = .leastRequest
            }
        }
    }
}
