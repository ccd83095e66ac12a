import TernCore

// The typed form of the Istio resources Tern reads (istio/api networking/v1alpha3 and security/v1beta1, fields in
// their YAML lowerCamelCase). Host names here are already expanded: a short name `cart` in namespace `shop` is
// `cart.shop.svc.cluster.local`. Optional fields stay nil when absent, so defaults are applied where they have
// meaning (see ../shared/reference/istio.md) rather than guessed here.

/// One Kubernetes-style resource as written, with where it came from.
public struct Resource: Sendable {
    public var apiVersion: String
    public var kind: String
    public var name: String
    public var namespace: String
    public var file: String
    /// Line of the document's first key.
    public var line: Int
    /// Line of `metadata.name` (duplicate names are reported there).
    public var nameLine: Int
    public var spec: Spec
    /// The document as written (minus nothing), e.g. for /config_dump (`YAMLNode.json`).
    public var document: YAMLNode

    public enum Spec: Sendable {
        case serviceEntry(ServiceEntry)
        case virtualService(VirtualService)
        case destinationRule(DestinationRule)
        case peerAuthentication(PeerAuthentication)
        case authorizationPolicy(AuthorizationPolicy)
        /// Gateway, Sidecar: accepted and kept, not compiled yet.
        case other(YAMLNode?)
    }

    /// `Kind namespace/name`, as diagnostics name it.
    public var label: String { "\(kind) \(namespace)/\(name)" }
}

/// A position in the source for a decoded value, so later stages (validation, compilation) can point at it.
public struct Mark: Sendable, Equatable {
    public var line: Int
    public var path: String
    public init(line: Int, path: String) {
        self.line = line
        self.path = path
    }
}

// MARK: ServiceEntry

public struct ServiceEntry: Sendable {
    public enum Resolution: String, Sendable { case NONE, STATIC, DNS, DNS_ROUND_ROBIN }
    public enum Location: String, Sendable { case MESH_EXTERNAL, MESH_INTERNAL }

    public struct Port: Sendable {
        public var number: UInt16
        public var `protocol`: String?
        public var name: String
        public var targetPort: UInt16?
    }

    public struct Endpoint: Sendable {
        public var address: String
        /// Port name → endpoint port.
        public var ports: [String: UInt16]
        public var labels: [String: String]
        public var weight: UInt32?
        public var network: String?
        public var locality: String?
        public var serviceAccount: String?
        public var mark: Mark
    }

    public var hosts: [String]
    public var hostMarks: [Mark]
    public var addresses: [String]
    public var ports: [Port]
    public var location: Location
    public var resolution: Resolution
    public var endpoints: [Endpoint]
    public var exportTo: [String]
    public var subjectAltNames: [String]
}

// MARK: VirtualService

/// Istio's StringMatch: `exact`, `prefix` or `regex` (RE2 syntax, whole-string), or `{}` for presence.
public enum StringMatch: Sendable, Equatable {
    case exact(String)
    case prefix(String)
    case regex(String)
    /// `{}` in a header or query match: the field is present, whatever its value.
    case present
}

public struct HTTPMatchRequest: Sendable {
    public var name: String?
    public var uri: StringMatch?
    public var scheme: StringMatch?
    public var method: StringMatch?
    public var authority: StringMatch?
    /// Lowercase header name → match, in the order written.
    public var headers: [(name: String, match: StringMatch)]
    public var withoutHeaders: [(name: String, match: StringMatch)]
    public var queryParams: [(name: String, match: StringMatch)]
    public var ignoreUriCase: Bool
    public var port: UInt16?
    /// Selectors (decide which clients get the rule), not per-request matches.
    public var sourceLabels: [String: String]
    public var sourceNamespace: String?
    public var gateways: [String]
    public var statPrefix: String?
    public var mark: Mark
}

public struct Destination: Sendable {
    public var host: String
    public var subset: String?
    public var port: UInt16?
    /// The `host` key.
    public var mark: Mark
    /// The `subset` key, when present.
    public var subsetMark: Mark?
    /// The `port` key, when present.
    public var portMark: Mark?
}

public struct HeaderOperations: Sendable {
    public var set: [(name: String, value: String)] = []
    public var add: [(name: String, value: String)] = []
    public var remove: [String] = []
    public init() {}
    public var isEmpty: Bool { self.set.isEmpty && self.add.isEmpty && self.remove.isEmpty }
}

public struct Headers: Sendable {
    public var request = HeaderOperations()
    public var response = HeaderOperations()
    public init() {}
}

public struct HTTPRouteDestination: Sendable {
    public var destination: Destination
    public var weight: Int?
    public var headers: Headers?
    public var mark: Mark
}

public struct HTTPRedirect: Sendable {
    public enum DerivePort: String, Sendable { case FROM_PROTOCOL_DEFAULT, FROM_REQUEST_PORT }
    public var uri: String?
    public var prefixRewrite: String?
    public var authority: String?
    public var port: UInt16?
    public var derivePort: DerivePort?
    public var scheme: String?
    /// Default 301.
    public var redirectCode: Int
}

public struct HTTPDirectResponse: Sendable {
    public var status: Int
    public var body: [UInt8]?
}

public struct HTTPRewrite: Sendable {
    public var uri: String?
    public var authority: String?
    public var uriRegexRewrite: (match: String, rewrite: String)?
}

public struct HTTPRetry: Sendable {
    public var attempts: Int
    public var perTryTimeout: TernDuration?
    public var retryOn: [String]
    public var retryRemoteLocalities: Bool?
    public var retryIgnorePreviousHosts: Bool?
    public var backoff: TernDuration?
}

public struct HTTPFaultInjection: Sendable {
    public struct Delay: Sendable {
        public var fixedDelay: TernDuration
        /// Percent 0–100; nil (omitted) means 0 %: no request is delayed.
        public var percentage: Double?
    }
    public struct Abort: Sendable {
        public var httpStatus: Int?
        public var grpcStatus: String?
        /// Percent 0–100; nil (omitted) means no request is aborted.
        public var percentage: Double?
    }
    public var delay: Delay?
    public var abort: Abort?
}

public struct HTTPMirror: Sendable {
    public var destination: Destination
    /// nil: 100 %.
    public var percentage: Double?
}

public struct CorsPolicy: Sendable {
    public var allowOrigins: [StringMatch]
    public var allowMethods: [String]
    public var allowHeaders: [String]
    public var exposeHeaders: [String]
    public var maxAge: TernDuration?
    public var allowCredentials: Bool?
    public var unmatchedPreflights: String?
}

public struct HTTPRoute: Sendable {
    public var name: String?
    /// Empty: matches every request. OR across entries, AND within one.
    public var match: [HTTPMatchRequest]
    public var route: [HTTPRouteDestination]
    public var redirect: HTTPRedirect?
    public var directResponse: HTTPDirectResponse?
    public var rewrite: HTTPRewrite?
    /// nil: no timeout (Istio writes Envoy's route timeout as 0).
    public var timeout: TernDuration?
    /// nil: the mesh default (2 retries on connect-failure,refused-stream,unavailable,cancelled).
    public var retries: HTTPRetry?
    public var fault: HTTPFaultInjection?
    public var mirrors: [HTTPMirror]
    public var corsPolicy: CorsPolicy?
    public var headers: Headers?
    public var mark: Mark
}

public struct L4Match: Sendable {
    /// Empty: any destination address.
    public var destinationSubnets: [CIDRRange]
    public var port: UInt16?
    public var sniHosts: [String]
    public var sourceLabels: [String: String]
    public var sourceNamespace: String?
    public var gateways: [String]
}

public struct RouteDestination: Sendable {
    public var destination: Destination
    public var weight: Int?
    public var mark: Mark
}

public struct TCPRoute: Sendable {
    public var match: [L4Match]
    public var route: [RouteDestination]
    public var mark: Mark
}

public struct VirtualService: Sendable {
    public var hosts: [String]
    public var hostMarks: [Mark]
    public var gateways: [String]
    public var http: [HTTPRoute]
    public var tcp: [TCPRoute]
    /// TLS routes (by SNI): kept, compiled with TLS.
    public var tls: [TCPRoute]
    public var exportTo: [String]
}

// MARK: DestinationRule

public struct LoadBalancerSettings: Sendable, Equatable {
    public enum Simple: String, Sendable {
        case UNSPECIFIED, LEAST_REQUEST, ROUND_ROBIN, RANDOM, PASSTHROUGH
        /// Deprecated alias of LEAST_REQUEST.
        case LEAST_CONN
    }
    public enum HashKey: Sendable, Equatable {
        case header(String)
        case cookie(name: String, path: String?, ttl: TernDuration?)
        case sourceIP
        case queryParameter(String)
    }
    public enum HashAlgorithm: Sendable, Equatable {
        case ringHash(minimumRingSize: UInt64)
        case maglev(tableSize: UInt64)
    }
    public struct ConsistentHash: Sendable, Equatable {
        public var key: HashKey
        public var algorithm: HashAlgorithm
        public init(key: HashKey, algorithm: HashAlgorithm) {
            self.key = key
            self.algorithm = algorithm
        }
    }
    public var simple: Simple?
    public var consistentHash: ConsistentHash?
    /// `warmup` (or the older `warmupDurationSecs`): slow start for endpoints new to the cluster.
    public var warmup: Warmup?
    public var locality: LocalityLbSetting?

    /// Envoy's slow start: a new endpoint's weight grows over `duration` from `minimumPercent` of it, as
    /// (time in window / duration)^(1 / aggression).
    public struct Warmup: Sendable, Equatable {
        public var duration: TernDuration
        public var minimumPercent = 10.0
        public var aggression = 1.0
        public init(duration: TernDuration) { self.duration = duration }
    }

    /// `localityLbSetting`: locality-weighted distribution, or failover by proximity to the sidecar's locality.
    public struct LocalityLbSetting: Sendable, Equatable {
        /// nil: Istio's mesh default, enabled.
        public var enabled: Bool?
        /// From a locality pattern of the sidecar's (`region/zone/subzone`, `*` for any rest) to endpoint
        /// locality patterns and their weights (out of 100).
        public var distribute: [Distribute] = []
        public var failover: [(from: String, to: String)] = []
        public var failoverPriority: [String] = []
        public struct Distribute: Sendable, Equatable {
            public var from: String
            public var to: [(locality: String, weight: UInt32)]
            public static func == (a: Distribute, b: Distribute) -> Bool {
                a.from == b.from && a.to.map(\.locality) == b.to.map(\.locality) && a.to.map(\.weight) == b.to.map(\.weight)
            }
        }
        public init() {}
        public static func == (a: LocalityLbSetting, b: LocalityLbSetting) -> Bool {
            a.enabled == b.enabled && a.distribute == b.distribute && a.failoverPriority == b.failoverPriority
                && a.failover.map(\.from) == b.failover.map(\.from) && a.failover.map(\.to) == b.failover.map(\.to)
        }
    }
}

public struct ConnectionPoolSettings: Sendable, Equatable {
    public var maxConnections: Int?
    public var connectTimeout: TernDuration?
    public var tcpKeepaliveTime: TernDuration?
    public var tcpKeepaliveInterval: TernDuration?
    public var tcpKeepaliveProbes: Int?
    /// `tcpKeepalive` is present (SO_KEEPALIVE on, with the system's values where it sets none).
    public var tcpKeepalive = false
    public var maxConnectionDuration: TernDuration?
    public var tcpIdleTimeout: TernDuration?
    public var http1MaxPendingRequests: Int?
    public var http2MaxRequests: Int?
    public var maxRequestsPerConnection: Int?
    public var maxRetries: Int?
    public var idleTimeout: TernDuration?
    public var h2UpgradePolicy: String?
    public var useClientProtocol: Bool?
    public var maxConcurrentStreams: Int?
    /// `http.http2KeepAlive`: PINGs to HTTP/2 upstreams every `interval`, the connection closed when one is not
    /// answered within `timeout` (Envoy's `connection_keepalive`).
    public var http2KeepAliveInterval: TernDuration?
    public var http2KeepAliveTimeout: TernDuration?
    public init() {}
}

public struct OutlierDetection: Sendable, Equatable {
    public var consecutiveGatewayErrors: Int?
    /// nil with the block present: 5 (reference/istio.md §10.7); 0 disables.
    public var consecutive5xxErrors: Int?
    public var consecutiveLocalOriginFailures: Int?
    public var splitExternalLocalOriginErrors: Bool?
    public var interval: TernDuration?
    public var baseEjectionTime: TernDuration?
    public var maxEjectionPercent: Int?
    public var minHealthPercent: Int?
    /// `outlierDetectionHttpErrorCodes`: the statuses that count as errors (empty: every 5xx).
    public var errorCodes: [Int] = []

    public init() {}
}

/// A cluster's outlier detection with Istio's and Envoy's defaults applied (reference/istio.md, OutlierDetection),
/// as trivial values the proxy reads per request.
public struct OutlierSettings: Sendable, Equatable {
    /// Consecutive 5xx (or `errorCodes`) responses that eject a host; 0: off. Envoy's default 5.
    public var consecutive5xx: UInt32 = 5
    /// Consecutive 502, 503 and 504 responses that eject a host; 0 (Envoy's enforcement default): off.
    public var consecutiveGateway: UInt32 = 0
    /// With `splitExternalLocalOriginErrors`: consecutive locally originated failures (connect failures,
    /// timeouts) that eject a host, counted apart from responses; without it those count as 503 and 504.
    public var split = false
    public var consecutiveLocal: UInt32 = 5
    public var interval: UInt64 = 10_000_000_000
    public var baseEjection: UInt64 = 30_000_000_000
    public var maxEjectionPercent: UInt32 = 10
    /// Below this share of hosts in service, balance over all of them (Envoy's panic); Istio's default 0: never.
    public var minHealthPercent: UInt32 = 0

    public init() {}

    public init(_ d: OutlierDetection) {
        if let v = d.consecutive5xxErrors { consecutive5xx = UInt32(clamping: v) }
        if let v = d.consecutiveGatewayErrors { consecutiveGateway = UInt32(clamping: v) }
        split = d.splitExternalLocalOriginErrors ?? false
        if let v = d.consecutiveLocalOriginFailures { consecutiveLocal = UInt32(clamping: v) }
        if let v = d.interval { interval = v.nanoseconds }
        if let v = d.baseEjectionTime { baseEjection = v.nanoseconds }
        if let v = d.maxEjectionPercent { maxEjectionPercent = UInt32(clamping: v) }
        if let v = d.minHealthPercent { minHealthPercent = UInt32(clamping: v) }
    }

    /// How long an ejection lasts, the `multiplier`-th in a row: base × multiplier, at most Envoy's
    /// `max_ejection_time` (300 s, or the base when that is longer).
    public func ejectionTime(multiplier: UInt32) -> UInt64 {
        let cap = max(300_000_000_000, baseEjection)
        return min(cap, baseEjection &* UInt64(max(1, multiplier)))
    }
}

public struct ClientTLSSettings: Sendable, Equatable {
    public enum Mode: String, Sendable { case DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL }
    public var mode: Mode
    public var clientCertificate: String?
    public var privateKey: String?
    public var caCertificates: String?
    public var caCrl: String?
    public var credentialName: String?
    public var subjectAltNames: [String]
    public var sni: String?
    public var insecureSkipVerify: Bool?
}

/// The four blocks a subset or port level replaces whole (never merged field by field).
public struct PolicyBlocks: Sendable, Equatable {
    public var loadBalancer: LoadBalancerSettings?
    public var connectionPool: ConnectionPoolSettings?
    public var outlierDetection: OutlierDetection?
    public var tls: ClientTLSSettings?

    public init(loadBalancer: LoadBalancerSettings? = nil, connectionPool: ConnectionPoolSettings? = nil,
                outlierDetection: OutlierDetection? = nil, tls: ClientTLSSettings? = nil) {
        self.loadBalancer = loadBalancer
        self.connectionPool = connectionPool
        self.outlierDetection = outlierDetection
        self.tls = tls
    }

    /// Istio's subset-over-DR merge: each block the subset sets replaces the DR's; the others are inherited.
    public func overridden(by subset: PolicyBlocks) -> PolicyBlocks {
        PolicyBlocks(
            loadBalancer: subset.loadBalancer ?? loadBalancer,
            connectionPool: subset.connectionPool ?? connectionPool,
            outlierDetection: subset.outlierDetection ?? outlierDetection,
            tls: subset.tls ?? tls)
    }
}

public struct TrafficPolicy: Sendable {
    public var blocks: PolicyBlocks
    /// Port → settings that replace all four blocks (unset blocks fall back to defaults, not to the DR's).
    public var portLevelSettings: [(port: UInt16, blocks: PolicyBlocks)]
    /// `retryBudget` (not one of the four blocks: a port level has none; a subset's replaces the rule's).
    public var retryBudget: RetryBudget? = nil
}

/// `trafficPolicy.retryBudget`: concurrent retries limited to `percent` of the cluster's active and pending
/// requests, at least `minRetryConcurrency` (Envoy's retry budget; it replaces `maxRetries`).
public struct RetryBudget: Sendable, Equatable {
    public var percent = 20.0
    public var minRetryConcurrency = 3
    public init() {}
}

public struct Subset: Sendable {
    public var name: String
    public var labels: [String: String]
    public var trafficPolicy: TrafficPolicy?
    public var mark: Mark
}

public struct DestinationRule: Sendable {
    public var host: String
    public var hostMark: Mark
    public var trafficPolicy: TrafficPolicy?
    public var subsets: [Subset]
    public var exportTo: [String]
}
