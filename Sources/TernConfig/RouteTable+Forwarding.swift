// The per-request facts of every forwarding route, flattened once per table: each (route, destination) pair's
// weight, clusters by port, and what forwarding changes in the heads, rendered: the route's and the
// destination's Istio `headers` operations together (route first, as Envoy applies them), a rewritten authority
// and a `rewrite.uri`. A request's exchange keeps the index of its pair (an entry) instead of copies of the
// strings and arrays of `Route` and `WeightedCluster`, each of which costs a reference count to copy: the proxy
// writes the lines with one copy from `bytes`, compares received field names with `names`, and reads only
// trivial values per request (counted with callgrind: Benchmarks/README.md).

/// The forwarding facts of a table's routes: one entry per (forwarding route, destination).
public final class Forwarding: Sendable {
    /// One destination of one forwarding route: ranges in `bytes` (field lines "name: value\r\n", the rewritten
    /// path), in `names` (the lowercase names of received fields each head loses: removed, or set anew) and in
    /// `ports`.
    public struct Entry: Sendable {
        public var weight: UInt64
        public var requestLines: Range<Int>
        public var responseLines: Range<Int>
        public var requestDrops: Range<Int>
        public var responseDrops: Range<Int>
        /// `rewrite.uri` (empty: none).
        public var uri: Range<Int>
        /// The route rewrites the path with a compiled `uriRegexRewrite`.
        public var regex: Bool
        /// The route names a `uriRegexRewrite` that did not compile (validation refuses those: never silent).
        public var brokenRegex: Bool
        /// The route rewrites the authority (`rewrite.authority`: a "host" line among `requestLines`).
        public var rewritesHost: Bool
        /// The route's `timeout` in nanoseconds: -1 when it sets none (the proxy's default applies), 0 for no
        /// timeout at all.
        public var timeout: Int64
        /// The route's `fault` (empty: none).
        public var fault: FaultFacts
        /// The route's `retries`, or Istio's mesh default when it has none.
        public var retry: RetryFacts
        /// The route's CORS policy: an index in `cors` (-1: none).
        public var cors: Int32
        /// `responseLines` without the lines of the fields the policy sets on a response to an origin it allows
        /// (a prefix of `responseLines`, all of it without a policy).
        public var corsResponseLines: Range<Int>
        /// `responseDrops` and the CORS fields the policy sets on a response whose origin it allows (Envoy's filter
        /// replaces what the upstream sent): `access-control-allow-origin`, and `-allow-credentials` and
        /// `-expose-headers` when it sends them. Empty without a policy.
        public var corsResponseDrops: Range<Int>
        var ports: Range<Int>
        /// The route's mirrors (VirtualService `mirror`/`mirrors`), in `mirrorTargets` (empty: none).
        public var mirrors: Range<Int>

        public var editsRequest: Bool { !requestLines.isEmpty || !requestDrops.isEmpty }
        public var editsResponse: Bool { !responseLines.isEmpty || !responseDrops.isEmpty }
    }

    /// A forwarding route's destinations (entries [first, first + count)), their total weight, and the prefix
    /// length each of its matchers matches (`prefixes`, a range in `prefixLengths`).
    struct RouteEntries: Sendable {
        var first: Int
        var count: Int
        var totalWeight: UInt64
        var prefixes: Range<Int>
    }

    public let bytes: [UInt8]
    public let names: [Range<Int>]
    /// The status codes of `retryOn` lists, in `RetryFacts.codes` ranges.
    public let retriableCodes: [UInt16]
    /// The CORS policies of the forwarding routes (`Entry.cors`), and their origin matchers (`CORSFacts.origins`).
    public let cors: [CORSFacts]
    let originMatchers: [Matcher]
    public let entries: [Entry]
    /// Every route's mirror targets: the clusters by port (in `ports`) and the share of requests mirrored.
    public let mirrorTargets: [MirrorTarget]
    /// (service port, cluster index) of every entry, in `Entry.ports` ranges.
    let ports: [(port: UInt16, cluster: Int32)]
    /// Per virtual host, the index in `routes` of its first route; per route in that flat order, its entries
    /// (nil: not a forwarding route).
    let firstRoute: [Int]
    let routes: [RouteEntries?]
    /// `Route.matchedPrefixLength` of each matcher of each forwarding route.
    let prefixLengths: [Int]

    init(_ virtualHosts: [VirtualHost]) {
        var b = Builder()
        var firstRoute: [Int] = []
        var routes: [RouteEntries?] = []
        var prefixLengths: [Int] = []
        for vh in virtualHosts {
            firstRoute.append(routes.count)
            for route in vh.routes {
                guard case .forward(let destinations, let total) = route.action else {
                    routes.append(nil)
                    continue
                }
                let start = prefixLengths.count
                for m in route.matchers.indices {
                    prefixLengths.append(route.matchedPrefixLength(RouteMatch(virtualHost: 0, route: 0, matcher: Int32(m))))
                }
                routes.append(RouteEntries(first: b.entries.count, count: destinations.count, totalWeight: total,
                                           prefixes: start..<prefixLengths.count))
                let cors = b.cors.add(route, into: &b.bytes)
                for d in destinations { b.entries.append(b.render(route, d, cors: cors)) }
            }
        }
        bytes = b.bytes
        names = b.names
        retriableCodes = b.codes
        cors = b.cors.facts
        originMatchers = b.cors.matchers
        entries = b.entries
        ports = b.ports
        mirrorTargets = b.mirrors
        self.firstRoute = firstRoute
        self.routes = routes
        self.prefixLengths = prefixLengths
    }

    /// `Route.matchedPrefixLength(match)` of the forwarding route `match` selected, read from the flat facts.
    public func matchedPrefixLength(_ match: RouteMatch) -> Int {
        guard match.virtualHost >= 0, match.route >= 0, let r = routes[firstRoute[Int(match.virtualHost)] + Int(match.route)],
              match.matcher >= 0, Int(match.matcher) < r.prefixes.count else { return 1 }
        return prefixLengths[r.prefixes.lowerBound + Int(match.matcher)]
    }

    /// Picks the entry of one of the destinations of the forwarding route `match` selected, by relative weight
    /// from a uniformly random `random` (as `RouteTable.pickDestination`); nil for other routes, or when every
    /// weight is 0.
    public func pick(_ match: RouteMatch, random: UInt64) -> Int? {
        guard match.virtualHost >= 0, match.route >= 0,
              let r = routes[firstRoute[Int(match.virtualHost)] + Int(match.route)] else { return nil }
        return RouteTable.weightedIndex(count: r.count, total: r.totalWeight, random: random) { entries[r.first + $0].weight }
            .map { r.first + $0 }
    }

    /// Whether the route `match` selected forwards (rather than redirecting, answering or being unsupported).
    public func forwards(_ match: RouteMatch) -> Bool {
        match.virtualHost >= 0 && match.route >= 0 && routes[firstRoute[Int(match.virtualHost)] + Int(match.route)] != nil
    }

    /// The cluster of entry `entry` for a request addressed to `port`, as `WeightedCluster.cluster(port:)`.
    public func cluster(_ entry: Int, port: UInt16) -> Int? {
        let p = entries[entry].ports
        return WeightedCluster.cluster(count: p.count, port: port) { ports[p.lowerBound + $0] }
    }

    /// The cluster of mirror target `target` for a request addressed to `port` (as `cluster(_:port:)`).
    public func mirrorCluster(_ target: Int, port: UInt16) -> Int? {
        let p = mirrorTargets[target].ports
        return WeightedCluster.cluster(count: p.count, port: port) { ports[p.lowerBound + $0] }
    }

    /// Whether `name` (a received field name) is among `names[which]`, ASCII case-insensitively.
    public func drops(_ name: borrowing Span<UInt8>, _ which: Range<Int>) -> Bool {
        for i in which {
            let n = names[i]
            guard n.count == name.count else { continue }
            var same = true
            for k in 0..<n.count {
                if asciiLower(name[k]) != bytes[n.lowerBound + k] {
                    same = false
                    break
                }
            }
            if same { return true }
        }
        return false
    }

    private struct Builder {
        var codes: [UInt16] = []

        mutating func retry(_ r: HTTPRetry?) -> RetryFacts {
            guard let r else { return .meshDefault }
            // `attempts: 0`: Istio sets no retry policy at all.
            guard r.attempts > 0 else { return .none }
            var f = RetryFacts(retries: Int32(clamping: r.attempts), on: [], codes: 0..<0)
            let start = codes.count
            for token in r.retryOn {
                if let code = UInt16(token) {
                    codes.append(code)
                    f.on.insert(.retriableStatusCodes)  // as Istio adds it for a status code in the list
                } else if let on = RetryOn.named[token] {
                    f.on.insert(on)
                }
            }
            f.codes = start..<codes.count
            // Istio starts from its default policy and replaces what the route sets: no retryOn, the default's.
            if r.retryOn.isEmpty { f.on = RetryFacts.meshDefault.on }
            if let t = r.perTryTimeout { f.perTryTimeout = t.nanoseconds }
            f.ignorePreviousHosts = r.retryIgnorePreviousHosts ?? true
            f.remoteLocalities = r.retryRemoteLocalities ?? false
            if let b = r.backoff { f.backoffBase = b.nanoseconds }
            return f
        }

        var bytes: [UInt8] = []
        var names: [Range<Int>] = []
        var entries: [Entry] = []
        var ports: [(port: UInt16, cluster: Int32)] = []
        var mirrors: [MirrorTarget] = []
        var cors = CORSBuilder()

        mutating func render(_ route: Route, _ destination: WeightedCluster, cors: Int32) -> Entry {
            var start = bytes.count
            if let host = route.rewrite?.authority { line("host", host) }
            lines(route.requestHeaders)
            lines(destination.requestHeaders)
            let requestLines = start..<bytes.count
            start = bytes.count
            // The lines of fields a CORS policy sets come last: a response to an origin it allows goes without them
            // (`corsResponseLines`), as Envoy's filter overwrites them.
            let corsNames = cors >= 0 ? self.cors.fieldNames(Int(cors)) : []
            lines(route.responseHeaders, corsNames, replaced: false)
            lines(destination.responseHeaders, corsNames, replaced: false)
            let corsResponseLines = start..<bytes.count
            lines(route.responseHeaders, corsNames, replaced: true)
            lines(destination.responseHeaders, corsNames, replaced: true)
            let responseLines = start..<bytes.count
            start = names.count
            if route.rewrite?.authority != nil { name("host") }
            drops(route.requestHeaders)
            drops(destination.requestHeaders)
            let requestDrops = start..<names.count
            start = names.count
            drops(route.responseHeaders)
            drops(destination.responseHeaders)
            let responseDrops = start..<names.count
            for n in corsNames { name(n) }
            let corsResponseDrops = cors >= 0 ? responseDrops.lowerBound..<names.count : 0..<0
            start = bytes.count
            if let uri = route.rewrite?.uri { bytes.append(contentsOf: uri.utf8) }
            let uri = start..<bytes.count
            start = ports.count
            ports.append(contentsOf: destination.clusters)
            let destinationPorts = start..<ports.count
            let firstMirror = mirrors.count
            for m in route.mirrors {
                let p = ports.count
                ports.append(contentsOf: m.cluster.clusters)
                mirrors.append(MirrorTarget(ports: p..<ports.count, perMillion: FaultFacts.perMillion(m.percentage)))
            }
            return Entry(weight: destination.weight, requestLines: requestLines, responseLines: responseLines,
                         requestDrops: requestDrops, responseDrops: responseDrops, uri: uri,
                         regex: route.uriRegexRewrite != nil,
                         brokenRegex: route.rewrite?.uriRegexRewrite != nil && route.uriRegexRewrite == nil,
                         rewritesHost: route.rewrite?.authority != nil,
                         timeout: route.timeout.map { Int64(clamping: $0.nanoseconds) } ?? -1,
                         fault: FaultFacts(route.fault),
                         retry: retry(route.retries),
                         cors: cors, corsResponseLines: corsResponseLines, corsResponseDrops: corsResponseDrops,
                         ports: destinationPorts, mirrors: firstMirror..<mirrors.count)
        }

        mutating func lines(_ ops: HeaderOperations) {
            for (n, v) in ops.set { line(n, v) }
            for (n, v) in ops.add { line(n, v) }
        }

        /// The lines of `ops` whose names are among `names` (`replaced`), or the others.
        mutating func lines(_ ops: HeaderOperations, _ names: [String], replaced: Bool) {
            for (n, v) in ops.set where names.contains(n) == replaced { line(n, v) }
            for (n, v) in ops.add where names.contains(n) == replaced { line(n, v) }
        }

        mutating func line(_ n: String, _ v: String) {
            bytes.append(contentsOf: n.utf8)
            bytes.append(contentsOf: ": ".utf8)
            bytes.append(contentsOf: v.utf8)
            bytes.append(contentsOf: "\r\n".utf8)
        }

        /// A set replaces the received field of its name, a remove drops it.
        mutating func drops(_ ops: HeaderOperations) {
            for n in ops.remove { name(n) }
            for (n, _) in ops.set { name(n) }
        }

        mutating func name(_ n: String) {
            let start = bytes.count
            // ASCII lowercase, as received names are compared (field names are ASCII tokens).
            bytes.append(contentsOf: n.utf8.map(asciiLower))
            names.append(start..<bytes.count)
        }
    }
}

/// Where a route mirrors its requests (VirtualService `mirror`/`mirrors`): the clusters of the mirror destination by
/// port (a range of `Forwarding.ports`), and the share of requests mirrored, in parts per million (Istio: 100 %
/// unless `mirrorPercentage` or the entry's `percentage` says otherwise; an explicit 0 mirrors nothing).
public struct MirrorTarget: Sendable, Equatable {
    public var ports: Range<Int>
    public var perMillion: UInt32
}

/// A route's fault injection (VirtualService `fault`) as trivial values, read per request: each fault fires for
/// `perMillion` requests in a million, as Istio hands Envoy a percentage (value × 10,000 over a million).
public struct FaultFacts: Sendable, Equatable {
    /// `delay.fixedDelay` in nanoseconds, and how often it applies.
    public var delay: UInt64 = 0
    public var delayPerMillion: UInt32 = 0
    /// `abort.httpStatus` (200 with a gRPC status, as Envoy answers those), the gRPC status code (-1: none), and
    /// how often it applies.
    public var abortStatus = 0
    public var abortGrpc = -1
    public var abortPerMillion: UInt32 = 0

    public var isEmpty: Bool { delayPerMillion == 0 && abortPerMillion == 0 }

    public init() {}

    init(_ fault: HTTPFaultInjection?) {
        guard let fault else { return }
        if let d = fault.delay {
            delay = d.fixedDelay.nanoseconds
            delayPerMillion = Self.perMillion(d.percentage)
        }
        if let a = fault.abort {
            if let s = a.httpStatus {
                abortStatus = s
            } else if let g = a.grpcStatus, let code = Self.grpcCodes.firstIndex(of: g) {
                abortStatus = 200
                abortGrpc = code
            }
            if abortStatus != 0 { abortPerMillion = Self.perMillion(a.percentage) }
        }
    }

    /// Istio's conversion of a percentage (nil: 0 %) to parts per million.
    static func perMillion(_ percentage: Double?) -> UInt32 {
        guard let p = percentage, p > 0 else { return 0 }
        return UInt32(min(p, 100) * 10_000)
    }

    /// gRPC status names by code.
    public static let grpcCodes = [
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    ]
}

/// What a route retries on (Envoy's `retry_on` policies, as Istio writes `retryOn`).
///
/// The options are inlinable constants: the request path tests them on every response, and a `static let` read
/// from another module is a call to its addressor each time.
public struct RetryOn: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    @inlinable public static var serverError: RetryOn { RetryOn(rawValue: 1 << 0) }  // 5xx
    @inlinable public static var gatewayError: RetryOn { RetryOn(rawValue: 1 << 1) }
    @inlinable public static var reset: RetryOn { RetryOn(rawValue: 1 << 2) }
    @inlinable public static var resetBeforeRequest: RetryOn { RetryOn(rawValue: 1 << 3) }
    @inlinable public static var connectFailure: RetryOn { RetryOn(rawValue: 1 << 4) }
    @inlinable public static var retriable4xx: RetryOn { RetryOn(rawValue: 1 << 5) }
    @inlinable public static var refusedStream: RetryOn { RetryOn(rawValue: 1 << 6) }
    @inlinable public static var retriableStatusCodes: RetryOn { RetryOn(rawValue: 1 << 7) }
    /// Accepted for parity; it matches nothing: Istio gives no header list to match (a warning says so).
    @inlinable public static var retriableHeaders: RetryOn { RetryOn(rawValue: 1 << 8) }
    @inlinable public static var envoyRateLimited: RetryOn { RetryOn(rawValue: 1 << 9) }
    /// HTTP/3 only: matches nothing here.
    @inlinable public static var http3PostConnectFailure: RetryOn { RetryOn(rawValue: 1 << 10) }
    @inlinable public static var grpcCancelled: RetryOn { RetryOn(rawValue: 1 << 11) }
    @inlinable public static var grpcDeadlineExceeded: RetryOn { RetryOn(rawValue: 1 << 12) }
    @inlinable public static var grpcResourceExhausted: RetryOn { RetryOn(rawValue: 1 << 13) }
    @inlinable public static var grpcInternal: RetryOn { RetryOn(rawValue: 1 << 14) }
    @inlinable public static var grpcUnavailable: RetryOn { RetryOn(rawValue: 1 << 15) }

    public static let named: [String: RetryOn] = [
        "5xx": .serverError, "gateway-error": .gatewayError, "reset": .reset, "reset-before-request": .resetBeforeRequest,
        "connect-failure": .connectFailure, "retriable-4xx": .retriable4xx, "refused-stream": .refusedStream,
        "retriable-status-codes": .retriableStatusCodes, "retriable-headers": .retriableHeaders,
        "envoy-ratelimited": .envoyRateLimited, "http3-post-connect-failure": .http3PostConnectFailure,
        "cancelled": .grpcCancelled, "deadline-exceeded": .grpcDeadlineExceeded,
        "resource-exhausted": .grpcResourceExhausted, "internal": .grpcInternal, "unavailable": .grpcUnavailable,
    ]

    /// The gRPC statuses (by code) a response head may be retried on.
    /// (`grpcCancelled` through `grpcUnavailable`: bits 11 to 15.)
    @inlinable public static var grpc: RetryOn { RetryOn(rawValue: 0b11111 << 11) }
}

/// A route's retry policy as trivial values, read per request (Envoy's router retry semantics).
public struct RetryFacts: Sendable, Equatable {
    /// Retries after the first try (Istio's `attempts`); 0: none.
    public var retries: Int32
    public var on: RetryOn
    /// The route's retriable status codes: a range of `Forwarding.retriableCodes`.
    public var codes: Range<Int>
    /// `perTryTimeout` in nanoseconds (0: none: the route's timeout alone bounds each try).
    public var perTryTimeout: UInt64 = 0
    /// `retryIgnorePreviousHosts` (Istio's default true): a retry goes to another endpoint when one exists.
    public var ignorePreviousHosts = true
    /// `retryRemoteLocalities`: a retry goes to a locality rank not tried yet (Envoy's previous_priorities, as
    /// Istio configures it), when locality failover ranks the cluster.
    public var remoteLocalities = false
    /// The back-off base interval (Envoy's 25 ms unless `backoff` sets it): retry N waits a uniformly random time
    /// in [0, (2^N - 1) × base), at most 10 × base.
    public var backoffBase: UInt64 = 25_000_000

    public init(retries: Int32, on: RetryOn, codes: Range<Int>) {
        self.retries = retries
        self.on = on
        self.codes = codes
    }

    /// Istio's mesh default when a route has no `retries`: 2 retries on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` (with no status codes).
    /// No retries (`--upstream`, no route).
    public static let none = RetryFacts(retries: 0, on: [], codes: 0..<0)

    public static let meshDefault = RetryFacts(retries: 2, on: [.connectFailure, .refusedStream, .grpcUnavailable, .grpcCancelled,
                                                                .retriableStatusCodes], codes: 0..<0)

    /// The wait before retry `n` (1 for the first retry) from a uniformly random `random`.
    public func backoff(retry n: Int, random: UInt64) -> UInt64 {
        let cap = backoffBase &* 10
        let shift = min(n, 20)
        let window = min(cap, ((UInt64(1) << UInt64(shift)) - 1) &* backoffBase)
        return window == 0 ? 0 : random % window
    }
}
