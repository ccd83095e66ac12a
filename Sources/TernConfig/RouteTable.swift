import TernCore

/// The compiled, immutable configuration a reactor routes with: host lookup, per virtual host the ordered HTTP
/// routes with precompiled matchers and their actions, TCP routes, and clusters with endpoints and load-balancing
/// policy. Published whole through `SnapshotCell` (ARCHITECTURE.md §5): everything that must agree (routes,
/// clusters, regexes) lives in one object, and nothing here is mutated after `compile`.
///
/// Per request the proxy calls `select(host:port:request:)` (no allocation, no lock), reads the route it names
/// (`route(_:)`), picks a weighted destination with a random number (`pickDestination`), resolves its cluster for
/// the port (`WeightedCluster.cluster(port:)`) and asks its reactor's balancer (the engine's cluster runtime)
/// for an endpoint.
public final class RouteTable: Sendable {
    /// The namespace of the sidecar: bare short names in requests (`Host: cart`) prefer its services.
    public let namespace: String
    /// Every resource the table was compiled from, as decoded (for /config_dump); Gateway and Sidecar are kept
    /// here but not compiled yet.
    public let resources: [Resource]
    /// The workload the security policies were resolved for, the AuthorizationPolicies that apply to it
    /// (AuthorizationTable.swift) and its PeerAuthentication mode (PeerAuthenticationPolicy.swift).
    public let workload: SecurityWorkload
    public let authorization: AuthorizationTable
    public let peerAuthentication: PeerAuthenticationPolicy
    /// What compiling found that the configuration's own checks do not: security policies Tern cannot enforce.
    public let compileWarnings: [Diagnostic]
    public let virtualHosts: [VirtualHost]
    public let clusters: [Cluster]
    let exactHosts: HostIndex
    /// Wildcard hosts `*.example.com` keyed by `example.com`.
    let wildcardHosts: HostIndex
    /// A virtual host for `*`, if any.
    let catchAll: Int?
    /// The per-request facts of the forwarding routes, flat (weights, clusters, rendered head changes).
    public let forwarding: Forwarding
    /// TLS connections routed by server name (RouteTable+SNI.swift), and the ports where that applies.
    let sniRoutes: [SNIRoute]
    let sniPorts: [UInt16]

    init(namespace: String, resources: [Resource], virtualHosts: [VirtualHost], clusters: [Cluster],
         exactHosts: HostIndex, wildcardHosts: HostIndex, catchAll: Int?, forwarding: Forwarding? = nil,
         sniRoutes: [SNIRoute] = [], sniPorts: [UInt16] = [], workload: SecurityWorkload? = nil,
         authorization: AuthorizationTable = .empty, peerAuthentication: PeerAuthenticationPolicy = .permissive,
         compileWarnings: [Diagnostic] = []) {
        self.compileWarnings = compileWarnings
        self.workload = workload ?? SecurityWorkload(namespace: namespace)
        self.authorization = authorization
        self.peerAuthentication = peerAuthentication
        self.sniRoutes = sniRoutes
        self.sniPorts = sniPorts
        self.namespace = namespace
        self.resources = resources
        self.virtualHosts = virtualHosts
        self.clusters = clusters
        self.exactHosts = exactHosts
        self.wildcardHosts = wildcardHosts
        self.catchAll = catchAll
        // A table resolved from a template shares its virtual hosts, and so their forwarding facts.
        self.forwarding = forwarding ?? Forwarding(virtualHosts)
    }

    /// An empty table: every request answers 404 (NR).
    public static func empty(namespace: String = "default") -> RouteTable {
        RouteTable(namespace: namespace, resources: [], virtualHosts: [], clusters: [],
                   exactHosts: HostIndex(expected: 0), wildcardHosts: HostIndex(expected: 0), catchAll: nil)
    }

    public func route(_ match: RouteMatch) -> Route? {
        guard match.virtualHost >= 0, match.route >= 0 else { return nil }
        return virtualHosts[Int(match.virtualHost)].routes[Int(match.route)]
    }
}

/// Which virtual host and route a request selected, as indexes into the table it was selected from.
public struct RouteMatch: Sendable, Equatable {
    /// Index in `RouteTable.virtualHosts`; -1 when no host matched (404, NR).
    public var virtualHost: Int32
    /// Index in that virtual host's `routes`; -1 when no route matched (404, NR).
    public var route: Int32
    /// Which of the route's matchers matched (-1: the route has none), e.g. to know the prefix `rewrite.uri`
    /// replaces.
    public var matcher: Int32

    public init(virtualHost: Int32, route: Int32, matcher: Int32 = -1) {
        self.virtualHost = virtualHost
        self.route = route
        self.matcher = matcher
    }

    public static let noHost = RouteMatch(virtualHost: -1, route: -1)
    public var found: Bool { route >= 0 }
}

public struct VirtualHost: Sendable {
    /// The host as written in the VirtualService (expanded), or the ServiceEntry host for a default route.
    public var name: String
    /// `VirtualService ns/name`, or `ServiceEntry ns/name` when only a ServiceEntry declares the host.
    public var source: String
    public var routes: [Route]
    public var tcpRoutes: [TCPRouteEntry]
    /// The host's own service (the ServiceEntry declaring it) as a destination: where a TCP connection for the
    /// host goes when none of `tcpRoutes` applies to its port (Istio's default TCP route). nil when no
    /// ServiceEntry declares the host by this name.
    public var serviceDestination: WeightedCluster? = nil
    /// VirtualService `tls` routes (routed by server name: `RouteTable.sniRoute`).
    public var tlsRoutes: [TLSRouteEntry] = []
}

/// A VirtualService `tls` route: where connections go, and the matches SNI routing reads.
public struct TLSRouteEntry: Sendable {
    public var destinations: [WeightedCluster]
    public var totalWeight: UInt64
    public var sniMatches: [SNIMatch]
}

public struct SNIMatch: Sendable {
    public var sniHosts: [String]
    public var port: UInt16?
    public var destinationSubnets: [CIDRRange]
}

/// One precompiled HTTP route.
public struct Route: Sendable {
    public var name: String?
    /// Empty: matches every request. Any matcher (OR) whose conditions all hold (AND) selects the route.
    public var matchers: [RequestMatcher]
    public var action: RouteAction
    public var rewrite: HTTPRewrite?
    /// `rewrite.uriRegexRewrite`, compiled.
    public var uriRegexRewrite: RegexRewrite?
    public var requestHeaders: HeaderOperations
    public var responseHeaders: HeaderOperations
    /// nil: none (Istio's default).
    public var timeout: TernDuration?
    /// nil: the mesh default policy.
    public var retries: HTTPRetry?
    public var fault: HTTPFaultInjection?
    public var mirrors: [(cluster: WeightedCluster, percentage: Double)]
    public var corsPolicy: CorsPolicy?
    /// `corsPolicy.allowOrigins` compiled (regexes as the route matchers' own).
    public var corsOrigins: [Matcher] = []
}

public enum RouteAction: Sendable {
    /// Forward to one of `destinations`, chosen by relative weight (`RouteTable.pickDestination`).
    case forward(destinations: [WeightedCluster], totalWeight: UInt64)
    case redirect(HTTPRedirect)
    case directResponse(status: Int, body: [UInt8])
    /// A delegate route (not supported yet): answers 404.
    case unsupported
}

/// A route destination: its clusters by service port, relative weight and per-destination header changes.
public struct WeightedCluster: Sendable {
    public var host: String
    public var subset: String?
    public var weight: UInt64
    /// (service port, cluster index); empty when no ServiceEntry declares the host (503, NC).
    public var clusters: [(port: UInt16, cluster: Int32)]
    public var requestHeaders: HeaderOperations
    public var responseHeaders: HeaderOperations

    /// The cluster for a request addressed to `port`: the destination's port if it named one (the only entry),
    /// else the service port equal to `port`, else the service's first port. nil: no such service (NC).
    public func cluster(port: UInt16) -> Int? {
        Self.cluster(count: clusters.count, port: port) { clusters[$0] }
    }

    /// The rule of `cluster(port:)` over `count` (service port, cluster) pairs (shared with `Forwarding`).
    static func cluster(count: Int, port: UInt16, _ pair: (Int) -> (port: UInt16, cluster: Int32)) -> Int? {
        if count == 1 { return Int(pair(0).cluster) }
        // An index loop: a for-in over these tuples allocates an iterator box in unoptimised builds.
        for i in 0..<count where pair(i).port == port { return Int(pair(i).cluster) }
        return count == 0 ? nil : Int(pair(0).cluster)
    }
}

public struct TCPRouteEntry: Sendable {
    /// Empty: the route applies to every connection. Else it applies when any match (OR) holds.
    public var matches: [TCPRouteMatch]
    public var destinations: [WeightedCluster]
    public var totalWeight: UInt64
}

/// One `match` of a TCP route: every condition it has must hold (AND). `sourceLabels`, `sourceNamespace` and
/// `gateways` say which proxies the route is for, not which connections, so they are not here.
public struct TCPRouteMatch: Sendable {
    /// nil: any port.
    public var port: UInt16?
    /// Empty: any destination address; else the connection's destination IP lies in one of them.
    public var destinationSubnets: [CIDRRange]

    /// Whether a connection to `port` at `destination` (nil: unknown, which no subnet contains) satisfies the
    /// match. No allocation.
    public func holds(port: UInt16, destination: IPAddress?) -> Bool {
        if let p = self.port, p != port { return false }
        if destinationSubnets.isEmpty { return true }
        guard let destination else { return false }
        // An index loop: a for-in over these structs allocates an iterator box in unoptimised builds.
        for i in 0..<destinationSubnets.count where destinationSubnets[i].contains(destination) { return true }
        return false
    }
}

/// How a string condition is checked, precompiled.
public enum Matcher: Sendable {
    case exact([UInt8])
    case prefix([UInt8])
    /// `ignoreUriCase`: the pattern is lowercased, the request compared ASCII case-insensitively.
    case exactIgnoringCase([UInt8])
    case prefixIgnoringCase([UInt8])
    case regex(CompiledRegex)
    case present
}

public struct RequestMatcher: Sendable {
    public var uri: Matcher?
    public var scheme: Matcher?
    public var method: Matcher?
    public var authority: Matcher?
    public var headers: [(name: [UInt8], matcher: Matcher)]
    public var withoutHeaders: [(name: [UInt8], matcher: Matcher)]
    public var queryParams: [(name: [UInt8], matcher: Matcher)]
    public var port: UInt16?
}

/// Upstream hosts for one (service host, subset, port), with the policy that applies to them.
public struct Cluster: Sendable {
    /// Envoy's name for it: `outbound|80|beta|cart.shop.svc.cluster.local` (stable across tables).
    public var name: String
    public var host: String
    public var subset: String?
    public var port: UInt16
    public var endpoints: [Endpoint]
    /// The four policy blocks after Istio's merge (DR, then its port level, then the subset's, whole blocks).
    public var policy: PolicyBlocks
    /// The subset's `retryBudget`, else the rule's (nil: none; `maxRetries` limits retries).
    public var retryBudget: RetryBudget? = nil
    public var loadBalancing: LoadBalancingPolicy
    /// ServiceEntry resolution NONE: connect to the original destination (no endpoints).
    public var originalDestination: Bool
    /// The ServiceEntry's resolution: with DNS and DNS_ROUND_ROBIN, endpoints that name a host
    /// (`needsResolution`) are replaced by their DNS answers in the tables a resolver publishes
    /// (`RouteTable.resolved`).
    public var resolution: ServiceEntry.Resolution = .STATIC
    /// The protocol requests go upstream in (Istio's cluster builder: `upstreamProtocol(port:policy:)`).
    public var upstreamProtocol: UpstreamProtocol = .http1
    /// The ServiceEntry's `subjectAltNames`: the identities mutual TLS to the service accepts (with its endpoints'
    /// service accounts).
    public var subjectAltNames: [String] = []
    /// The SPIFFE ID paths of the service accounts of every endpoint of the service (all subsets; sorted, each
    /// once), `/ns/<the ServiceEntry's namespace>/sa/<name>`: taken per service as Istio takes them, and kept when
    /// DNS answers replace the endpoints, so a cluster's mutual TLS settings do not change with them.
    public var serviceAccounts: [String] = []
    /// The ServiceEntry's `location` is MESH_EXTERNAL (its default): Istio's automatic mTLS never applies to it.
    public var meshExternal = false
}

/// How an HTTP cluster's requests travel to its endpoints.
public enum UpstreamProtocol: Sendable, Equatable {
    /// HTTP/1.1 connections, one request at a time.
    case http1
    /// HTTP/2 connections, many streams each (upgrade requests, WebSocket and CONNECT, still go over HTTP/1.1).
    case http2
    /// The protocol the client spoke (`useClientProtocol`, or a port of unknown protocol, as Istio sniffs it).
    case client

    /// Istio's choice for a ServiceEntry port of protocol `portProtocol` (nil: none declared) under a merged
    /// `connectionPool`: `useClientProtocol` first (it replaces every other protocol option); an `HTTP2`, `GRPC`
    /// or `GRPC-WEB` port is HTTP/2; an `HTTP` port is upgraded under `h2UpgradePolicy: UPGRADE` (the mesh's
    /// default policy, DO_NOT_UPGRADE, otherwise); a port with no protocol keeps the client's (sniffed).
    public init(portProtocol: String?, pool: ConnectionPoolSettings?) {
        let p = portProtocol?.uppercased()
        if pool?.useClientProtocol == true {
            self = .client
        } else if p == "HTTP2" || p == "GRPC" || p == "GRPC-WEB" {
            self = .http2
        } else if (p == "HTTP" || p == nil) && pool?.h2UpgradePolicy == "UPGRADE" {
            self = .http2
        } else if p == nil {
            self = .client
        } else {
            self = .http1
        }
    }
}

public struct Endpoint: Sendable, Equatable {
    /// An IP literal, or a DNS name still to be resolved (`needsResolution`).
    public var address: String
    public var port: UInt16
    public var weight: UInt32
    public var labels: [String: String]
    public var needsResolution: Bool
    /// `region/zone/subzone` (any part may be absent; "" for none), as the ServiceEntry endpoint gives it.
    public var locality: String
    /// The ServiceEntry endpoint's `network` ("" for none).
    public var network: String
    /// Labelled `security.istio.io/tlsMode: istio`: the endpoint has a sidecar, so automatic mTLS reaches it over
    /// mutual TLS.
    public var meshTLS: Bool { labels["security.istio.io/tlsMode"] == "istio" }

    public init(address: String, port: UInt16, weight: UInt32, labels: [String: String], needsResolution: Bool,
                locality: String = "", network: String = "") {
        self.address = address
        self.port = port
        self.weight = weight
        self.labels = labels
        self.needsResolution = needsResolution
        self.locality = locality
        self.network = network
    }
}

public enum LoadBalancingPolicy: Sendable {
    /// Istio's default (UNSPECIFIED, LEAST_REQUEST, LEAST_CONN): power of two choices on outstanding requests.
    case leastRequest
    case roundRobin
    case random
    case ringHash(key: HashSource, ring: HashRing)
    case maglev(key: HashSource, table: MaglevTable)

    /// Ring hash or maglev: the endpoint follows from the request (a retry does not look for another).
    public var hashesConsistently: Bool {
        switch self {
        case .ringHash, .maglev: true
        case .leastRequest, .roundRobin, .random: false
        }
    }
}

/// What a consistent hash is computed from, with names as the bytes requests are compared with.
public enum HashSource: Sendable, Equatable {
    /// A lowercase header name.
    case header([UInt8])
    case cookie([UInt8])
    case sourceIP
    case queryParameter([UInt8])

    init(_ key: LoadBalancerSettings.HashKey) {
        switch key {
        case .header(let name): self = .header(Array(name.lowercased().utf8))
        case .cookie(let name, _, _): self = .cookie(Array(name.utf8))
        case .sourceIP: self = .sourceIP
        case .queryParameter(let name): self = .queryParameter(Array(name.utf8))
        }
    }
}
