// The HTTP/1.1 proxy (ARCHITECTURE.md §4): one `HTTPProxy` per reactor; all its state is owned by that thread.
//
// A session is one client connection. It carries one exchange at a time (HTTP/1.1 answers requests in order,
// so pipelined requests wait, unread, until the exchange before them is finished). Each exchange has two sides:
//
//   request   head ──▶ (waiting for an upstream) ──▶ sending ──▶ body ◀──▶ sending ──▶ done
//   response  idle ──▶ head ──▶ sending ──▶ body ◀──▶ sending ──▶ done       (1xx: head again; 101/CONNECT: tunnel)
//
// Bytes move in received buffers: a side holds at most one buffer of unforwarded bytes and re-arms its
// single-shot receive only once that buffer has been sent on (backpressure: a slow reader stalls its writer
// through TCP flow control, and memory per exchange is bounded by two buffers). Heads are parsed in place and
// forwarded with iovecs; a head split across reads is gathered in an assembly buffer first.
//
// Upstream connections are per reactor and per endpoint: after a clean exchange one goes back to the idle pool
// (a receive stays armed on it so a close by the upstream is noticed at once) or to the next request waiting
// in the pending queue. Failures are answered as Envoy answers them (LocalReply).
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

/// Settings of the HTTP proxy (immutable once the proxy starts).
public struct HTTPSettings: Sendable {
    /// `--max-request-headers-kb`, `--max-request-headers-count`, `--max-uri-kb`.
    public var limits = HTTP1Parser.Limits()
    /// `--xff-trusted-hops` (Envoy's xff_num_trusted_hops). Above 0 the client is a trusted proxy: its
    /// X-Forwarded-Proto, x-envoy-* and X-Forwarded-Client-Cert fields are kept.
    public var xffTrustedHops = 0
    /// `--upstream-timeout`: from the end of the request to the end of the response (Envoy's route timeout).
    public var upstreamTimeout = TernDuration.seconds(15)
    /// `--request-header-timeout`: from the first byte of a request head to its end.
    public var requestHeaderTimeout = TernDuration.seconds(10)
    /// `--stream-idle-timeout`: an exchange with no bytes moving for this long is ended.
    public var streamIdleTimeout = TernDuration.seconds(300)
    /// `--max-pending-requests`: requests waiting for an upstream connection, per reactor; beyond: 503 UO.
    public var maxPendingRequests = 1024
    /// `--max-upstream-connections`: connections per upstream endpoint, per reactor.
    public var maxUpstreamConnections = 1024
    /// `--max-idle-upstream`: idle keep-alive connections kept per endpoint, per reactor.
    public var maxIdleUpstream = 64
    /// `--upstream-idle-timeout`: an idle pooled connection is closed after this long.
    public var upstreamIdleTimeout = TernDuration.seconds(3600)
    /// How long a closing client connection is read and discarded after the last response, so that unread
    /// request bytes do not turn the close into a reset that destroys the response (lingering close).
    public var lingerTimeout = TernDuration.seconds(2)
    public init() {}
}

/// What a reactor's HTTP proxy reports beside metrics: spans (with `--trace-collector`) and the request values
/// they and access-log lines carry.
public struct ProxyReporting: Sendable {
    /// This reactor's span ring, the sampler for requests that come without a decision, and the spans' kind.
    public var spans: SpanShard? = nil
    public var sampler = TraceSampler()
    public var spanKind = SpanKind.client
    /// This reactor's access-log ring (`--access-log`).
    public var accessLog: AccessLogShard? = nil
    public init() {}
    var needsCapture: Bool { spans != nil || accessLog != nil }
}

public final class HTTPProxy<Backend: IOBackend>: ReactorHandler {
    /// Op kinds from 32 up; those below belong to the embedded relay that splices tunnels.
    private enum Op: UInt8 {
        case accept = 32, acceptBackoff
        case clientReceive, clientSend
        case upstreamConnect, upstreamReceive, upstreamSend
        case headerTimer, idleTimer, upstreamTimer, streamTimer, lingerTimer
        case connectTimer, poolTimer
        /// Content-Length bodies spliced through a pipe: into it from the sending side, out of it to the other.
        case requestSpliceIn, requestSpliceOut, responseSpliceIn, responseSpliceOut
    }

    /// A Content-Length body with at least this much left after its head is spliced (socket → pipe → socket,
    /// as the TCP relay moves bytes) instead of passing through receive buffers.
    static var spliceThreshold: UInt64 { 64 * 1024 }

    typealias SID = Slab<Session>.ID
    typealias UID = Slab<Upstream>.ID

    enum Body: Equatable {
        case none
        case length(UInt64)
        case chunked
        case untilClose
    }

    enum RequestState { case head, waiting, sending, body, splicing, done, tunnel }
    enum ResponseState { case idle, head, sending, body, splicing, done, reply, tunnel }
    enum Phase { case open, lingering, closing }

    /// How a route rewrites the request path (the query and fragment always stay).
    enum TargetRewrite {
        /// `rewrite.uri`: replaces the first `prefix` bytes of the path (the prefix the route matched), or all
        /// of it when `prefix` is -1.
        case path(String, prefix: Int)
        /// `rewrite.uriRegexRewrite`: every match in the path replaced.
        case regex(RegexRewrite)
    }

    struct Session {
        var fd: Int32
        var endpoint: Int
        var phase = Phase.open
        var inflight = 0
        var receiving = false
        var sending = false
        var request = RequestState.head
        var response = ResponseState.idle
        var requestHeld = Held()
        var responseHeld = Held()
        /// Where, in the held bytes, the part being sent ends (consumed once the send completes).
        var requestSentTo = 0
        var responseSentTo = 0
        var requestBody = Body.none
        var responseBody = Body.none
        var requestDecoder = ChunkedDecoder()
        var responseDecoder = ChunkedDecoder()
        var requestParser: Int32 = -1
        var responseParser: Int32 = -1
        var upstream: UID? = nil
        /// An exchange is in progress (a request head was received and not yet answered to its end).
        var exchange = false
        /// The client connection stays open after this exchange.
        var keepAlive = true
        var http10 = false
        var method = HTTPMethod.get
        var upgrade = false
        /// The response head (or a local reply) went to the client: no local reply can be sent any more.
        var responseStarted = false
        /// The head being sent to the client is an interim (1xx) one of this length.
        var interimLength = 0
        /// The head being sent to the client is a 101 or a 2xx to CONNECT: a tunnel follows.
        var tunnelNext = false
        /// The upstream connection may carry another request once this response ends.
        var upstreamReusable = false
        /// The request's bytes [retryFrom, requestHeld.start) are still held, so the request can be sent
        /// again on a fresh connection if a reused one turns out to be closed.
        var retryFrom: Int? = nil
        var reply: LocalReply? = nil
        var pendingReply: LocalReply? = nil
        var clientEOF = false
        var upstreamEOF = false
        // Timers are lazy: each is set when first needed and, when it fires, checks the time it guards (below)
        // and sets itself again if that moved; nothing is cancelled on the request path. A keep-alive request
        // then costs no timer operation.
        var headerTimer: TimerWheel.ID? = nil
        var idleTimer: TimerWheel.ID? = nil
        var upstreamTimer: TimerWheel.ID? = nil
        var streamTimer: TimerWheel.ID? = nil
        var lingerTimer: TimerWheel.ID? = nil
        var lastActivity: UInt64 = 0
        /// Spliced bodies: the pipe of each side, the bytes in it, and which splice of the client socket is in
        /// flight (its token is needed to cancel it). Splices of the upstream socket are the upstream's ops.
        var requestPipe: Pipe? = nil
        var requestPiped = 0
        var responsePipe: Pipe? = nil
        var responsePiped = 0
        var clientSplice: UInt8 = 0
        /// A routed request as its load balancer counts it, to report it finished to the same balancer and
        /// endpoint even when the route table was swapped meanwhile (nil: none outstanding).
        var outstanding: OutstandingRequest? = nil
        /// The routed request's cluster, an index in the table it was routed with (-1: none), for its report.
        var cluster: Int32 = -1
        /// What the route does to the request and response heads (nil: nothing), and the bytes it adds, held
        /// in an assembly buffer until the head that carries them has been sent.
        var requestEdits: FieldEdits? = nil
        var responseEdits: FieldEdits? = nil
        var targetRewrite: TargetRewrite? = nil
        var requestExtras = Held()
        var responseExtras = Held()
        /// When the connection last became idle between requests (idle timeout).
        var idleSince: UInt64 = 0
        /// When the first byte of the current request head arrived (request header timeout).
        var headStart: UInt64 = 0
        /// When the current request was completely sent upstream (upstream timeout).
        var requestEnd: UInt64 = 0
        // What the exchange reports when it ends (metrics, access log): exactly once (`recorded`).
        var recorded = true
        var status = 0
        var flags = ResponseFlags()
        /// The destination service's id in the metrics registry (0: unknown).
        var service: UInt32 = 0
        /// Bytes of the request received from the client and of the response sent to it (heads included),
        /// and the part of the latter that was heads.
        var requestWire: UInt64 = 0
        var responseWire: UInt64 = 0
        var responseHeads: UInt64 = 0
        /// When the request head went upstream and when the response head came back (upstream service time).
        var upstreamStart: UInt64 = 0
        var upstreamHead: UInt64 = 0
        /// The endpoint whose active-request gauge this exchange raised (0: none).
        var activeKey: UInt64 = 0
        /// A chunked response to an HTTP/1.0 client: only the chunks' data is forwarded, ended by the close.
        var dechunk = false
        /// Tracing: the proxy's span for this request (its parent the incoming context), and when the
        /// request started on the wall clock (spans, access log).
        var trace = TraceContext()
        var startWall: UInt64 = 0
        /// The upstream endpoint (pool index) the request went to, or -1.
        var upstreamIndex = -1
        /// The request head's length (the access log reports body bytes), the route's name, and the local
        /// reply that answered, if one did.
        var requestHeadLength: UInt64 = 0
        var routeName = ""
        var answeredBy: LocalReply? = nil
    }

    enum UpstreamState { case connecting, idle, bound, closing }

    struct Upstream {
        var fd: Int32
        var endpoint: Int
        var state = UpstreamState.connecting
        var session: SID? = nil
        var inflight = 0
        var receiving = false
        var sending = false
        var reused = false
        var connectTimer: TimerWheel.ID? = nil
        /// Which splice of this socket is in flight, for cancelling it.
        var splice: UInt8 = 0
        /// Lazy, as the session timers: set when the connection first goes idle.
        var poolTimer: TimerWheel.ID? = nil
        var idleSince: UInt64 = 0
    }

    /// Requests waiting for an upstream connection of one endpoint, oldest first (a fixed ring).
    struct PendingQueue {
        private var ring: [SID?]
        private var head = 0
        private(set) var count = 0
        init(capacity: Int) { ring = Array(repeating: nil, count: max(capacity, 1)) }
        var isFull: Bool { count == ring.count }
        mutating func push(_ id: SID) {
            ring[(head + count) % ring.count] = id
            count += 1
        }
        mutating func pop() -> SID? {
            guard count > 0 else { return nil }
            let id = ring[head]
            ring[head] = nil
            head = (head + 1) % ring.count
            count -= 1
            return id
        }
    }

    /// Parsers kept for reuse (each holds a field table reserved once): a session takes one per side.
    struct ParserPool {
        var parsers: [HTTP1Parser] = []
        var free: [Int32] = []
        let kind: HTTP1Parser.Kind
        let limits: HTTP1Parser.Limits
        mutating func take() -> Int32 {
            if let i = free.popLast() {
                parsers[Int(i)].reset()
                return i
            }
            parsers.append(HTTP1Parser(kind: kind, limits: limits))
            return Int32(parsers.count - 1)
        }
        mutating func give(_ i: Int32) { if i >= 0 { free.append(i) } }
    }

    private let settings: HTTPSettings
    private let relay: RelaySettings
    private let counters: RelayCounters
    /// Upstream addresses the pools are kept for: with `--upstream`, one per listener (by listener index);
    /// with `--config`, every endpoint any snapshot's clusters named, added as snapshots arrive.
    private var endpoints: [SocketAddress]
    /// With `--config`: each endpoint's index in `endpoints`, so binding a table of thousands of endpoints
    /// looks each up at once rather than scanning.
    private var endpointsByAddress: [SocketAddress: Int] = [:]
    /// Each endpoint's key for its live gauges in the metrics (admin /clusters).
    private var endpointKeys: [UInt64] = []
    /// Routing from Istio configuration (`--config`): this reactor's view of the published route tables, the
    /// load-balancer state per cluster (kept across swaps) and each cluster's endpoints as pool indexes.
    private let routes: SnapshotReader<RouteTable>?
    private var balancers = LoadBalancers()
    private var clusterEndpoints: [[Int]] = []
    private var random: SplitMix
    private let acceptor: Acceptor<Backend>
    private let sessions: Slab<Session>
    private let upstreams: Slab<Upstream>
    private let bytes: HTTPBytes
    private let toClient: IOVecTable
    private let toUpstream: IOVecTable
    private var requestParsers: ParserPool
    private var responseParsers: ParserPool
    private var idle: [[UID]]
    private var pending: [PendingQueue]
    private var upstreamCount: [Int]
    /// Upstream connections in the idle state (the pool-size gauge), kept as they change state.
    private var idleUpstreams = 0
    private var draining = false
    private var stopping = false
    private let trustedClient: Bool
    /// Splices Upgrade and CONNECT tunnels once their 101 or 2xx went out (ARCHITECTURE.md §4).
    private let tunnels: TCPRelay<Backend>
    /// This reactor's metrics (nil: metrics off), and each cluster's service id in them.
    private let metrics: MetricsShard?
    private let services: ServiceRegistry?
    private var clusterServices: [UInt32] = []
    /// The head length of a response Tern composed (a self field: a captured local would be boxed).
    private var composedHeadLength = 0
    /// Spans and the request values they report (nil capture: nothing is reported beside metrics).
    private let reporting: ProxyReporting
    private let capture: RequestCapture?
    /// Names spans carry: per cluster (with --config) or per endpoint, the operation and the upstream cluster.
    private var clusterOperations: [String] = []
    private var clusterNames: [String] = []
    private var endpointNames: [String] = []
    /// Each listener's address as the access log shows it.
    private let listenerNames: [String]
    /// Wall clock minus monotonic clock, in nanoseconds, refreshed once per loop iteration while something
    /// reports request start times (spans, access log).
    private var wallOffsetNanos: UInt64 = 0

    public init(listeners: [RelayListener], settings: HTTPSettings, relay: RelaySettings, counters: RelayCounters,
                capacity: Int, bufferPool: BufferPool, routes: SnapshotReader<RouteTable>? = nil,
                telemetry: Telemetry? = nil, reactorIndex: Int = 0, reporting: ProxyReporting = ProxyReporting())
    {
        metrics = telemetry?.shards[reactorIndex]
        services = telemetry?.services
        self.reporting = reporting
        capture = reporting.needsCapture ? RequestCapture(slots: capacity) : nil
        listenerNames = reporting.needsCapture ? listeners.map { (try? System.localAddress($0.fd))?.description ?? "" } : []
        self.settings = settings
        self.relay = relay
        self.counters = counters
        self.routes = routes
        var system = SystemRandomNumberGenerator()
        random = SplitMix(seed: system.next())
        endpoints = routes == nil ? listeners.map(\.upstream) : []
        acceptor = Acceptor(fds: listeners.map(\.fd), acceptOp: Op.accept.rawValue, backoffOp: Op.acceptBackoff.rawValue, counters: counters)
        sessions = Slab(capacity: capacity)
        upstreams = Slab(capacity: capacity)
        bytes = HTTPBytes(pool: bufferPool, assemblySize: settings.limits.maxHeaderBytes + bufferPool.size, slots: capacity)
        // A forwarded head: start-line (2), runs of kept lines between removed ones, ~10 added pieces, body.
        toClient = IOVecTable(count: capacity, maxSegments: 48)
        toUpstream = IOVecTable(count: capacity, maxSegments: 48)
        requestParsers = ParserPool(kind: .request, limits: settings.limits)
        responseParsers = ParserPool(kind: .response, limits: HTTP1Parser.Limits(
            maxHeaderBytes: settings.limits.maxHeaderBytes, maxHeaderCount: max(settings.limits.maxHeaderCount, 100),
            maxURIBytes: settings.limits.maxURIBytes))
        idle = endpoints.map { _ in [] }
        pending = endpoints.map { _ in PendingQueue(capacity: settings.maxPendingRequests) }
        upstreamCount = endpoints.map { _ in 0 }
        endpointKeys = endpoints.map { EndpointKey.make(address: $0.ip, port: $0.port) }
        endpointNames = endpoints.map(\.description)
        trustedClient = settings.xffTrustedHops > 0
        tunnels = TCPRelay(listeners: [], settings: relay, counters: counters, capacity: capacity)
        precondition(Op.accept.rawValue >= TCPRelay<Backend>.opLimit, "HTTP proxy ops overlap the relay's")
        for i in idle.indices { idle[i].reserveCapacity(settings.maxIdleUpstream) }
        if let routes { bind(routes.current) }
    }

    // MARK: - Routing (Istio configuration)

    /// Takes a new route table: load balancers rebound (their state kept by cluster name and endpoint address,
    /// requests in flight still counted) and every cluster endpoint given a pool. Runs when a snapshot arrives,
    /// never per request.
    private func bind(_ table: RouteTable) {
        balancers.bind(table)
        if let services {
            clusterServices = table.clusters.map { services.id(.init(host: $0.host, namespace: table.namespace)) }
        }
        if capture != nil {
            // Istio's span name for a route: its destination's host:port, then the path pattern.
            clusterOperations = table.clusters.map { "\($0.host):\($0.port)/*" }
            clusterNames = table.clusters.map(\.name)
        }
        clusterEndpoints = table.clusters.map { cluster in
            cluster.endpoints.map { e in
                guard let address = e.socketAddress else { return -1 }
                return endpointIndex(address)
            }
        }
    }

    private func endpointIndex(_ address: SocketAddress) -> Int {
        if let i = endpointsByAddress[address] { return i }
        endpointsByAddress[address] = endpoints.count
        endpoints.append(address)
        endpointKeys.append(EndpointKey.make(address: address.ip, port: address.port))
        endpointNames.append(address.description)
        idle.append([])
        idle[idle.count - 1].reserveCapacity(settings.maxIdleUpstream)
        pending.append(PendingQueue(capacity: settings.maxPendingRequests))
        upstreamCount.append(0)
        return endpoints.count - 1
    }

    /// Chooses where a request goes from the route table: the endpoint's pool index, or nil after answering
    /// it (404 NR, 503 NC, 503 UH, 501 for route actions not applied yet).
    private func route(_ id: SID, _ head: HTTP1Head, _ reactor: Reactor<Backend>) -> Int? {
        guard let routes else { return sessions[id].endpoint }
        let table = routes.current
        let port = hostPort(head, id) ?? 80
        let match = bytes.select(table, head: head, held: sessions[id].requestHeld, port: port)
        guard match.found, let route = table.route(match) else { return routeFailed(id, .routeNotFound, reactor) }
        if capture != nil, let name = route.name { sessions[id].routeName = name }
        switch route.action {
        case .forward:
            // A rewrite that did not compile (validation makes that impossible) is never ignored silently.
            if route.rewrite?.uriRegexRewrite != nil && route.uriRegexRewrite == nil {
                return routeFailed(id, .unsupportedRoute, reactor)
            }
        case .directResponse(let status, let body):
            sessions[id].status = status
            let ops = route.responseHeaders
            respondFromRoute(id, head, reactor) { w in
                w.append(decimal: status)
                w.append(" ")
                w.append(LocalReply.reasonPhrase(status))
                w.append("\r\n")
                if !Self.replaces(ops, "content-type") { w.append("content-type: text/plain\r\n") }
                w.append("content-length: ")
                w.append(decimal: body.count)
                w.append("\r\n")
                Self.lines(ops, &w)  // never framing fields: validation refuses changing those
            } body: { w in w.append(body) }
            return nil
        case .redirect(let r):
            // The head as received: answering consumes it from the held bytes before the Location is written.
            let held = sessions[id].requestHeld
            let prefix = route.matchedPrefixLength(match)
            sessions[id].status = r.redirectCode
            let ops = route.responseHeaders
            respondFromRoute(id, head, reactor) { w in
                w.append(decimal: r.redirectCode)
                w.append(" ")
                w.append(LocalReply.reasonPhrase(r.redirectCode))
                w.append("\r\n")
                if !Self.replaces(ops, "location") {
                    w.append("location: ")
                    bytes.writeLocation(r, head, held, port: port, matchedPrefix: prefix, into: &w)
                    w.append("\r\n")
                }
                w.append("content-length: 0\r\n")
                Self.lines(ops, &w)  // never framing fields: validation refuses changing those
            } body: { _ in }
            return nil
        case .unsupported:
            return routeFailed(id, .unsupportedRoute, reactor)
        }
        guard let destination = table.pickDestination(match, random: random.next()),
              let cluster = destination.cluster(port: port) else { return routeFailed(id, .clusterNotFound, reactor) }
        // Consistent hashing (DestinationRule consistentHash): the request's header, cookie, query parameter or
        // source address, read in place; nil (a random pick, as Envoy) for other policies or a missing value.
        let hashKey = bytes.hashKey(table, cluster: cluster, head: head, held: sessions[id].requestHeld, slot: Int(id.index))
        guard let e = balancers.pick(cluster: cluster, table: table, random: random.next(), hashKey: hashKey),
              clusterEndpoints[cluster][e] >= 0 else { return routeFailed(id, .noHealthyUpstream, reactor) }
        sessions[id].outstanding = balancers.requestStarted(cluster: cluster, endpoint: e)
        sessions[id].cluster = Int32(cluster)
        var requestEdits = FieldEdits(first: route.requestHeaders, second: destination.requestHeaders)
        requestEdits.host = route.rewrite?.authority
        sessions[id].requestEdits = requestEdits.isEmpty ? nil : requestEdits
        let responseEdits = FieldEdits(first: route.responseHeaders, second: destination.responseHeaders)
        sessions[id].responseEdits = responseEdits.isEmpty ? nil : responseEdits
        if let regex = route.uriRegexRewrite {
            sessions[id].targetRewrite = .regex(regex)
        } else if let uri = route.rewrite?.uri, !uri.isEmpty {
            sessions[id].targetRewrite = .path(uri, prefix: route.matchedPrefixLength(match))
        } else {
            sessions[id].targetRewrite = nil
        }
        if cluster < clusterServices.count { sessions[id].service = clusterServices[cluster] }
        return clusterEndpoints[cluster][e]
    }

    /// Answers with a response the route defines (directResponse, redirect): status line and fields from
    /// `head`, then the connection's fate, then `body`, composed in an assembly buffer and sent from there.
    private func respondFromRoute(_ id: SID, _ request: HTTP1Head, _ reactor: Reactor<Backend>,
                                  head: (inout ResponseWriter) -> Void, body: (inout ResponseWriter) -> Void)
    {
        // A request without a body is consumed whole, so the connection can go on.
        if sessions[id].requestBody == .none {
            sessions[id].requestHeld.start += request.length
            sessions[id].request = .done
        }
        let keep = sessions[id].request == .done && sessions[id].keepAlive && !draining
        guard let composed = bytes.compose({ w in
            w.append("HTTP/1.1 ")
            head(&w)
            if !keep { w.append("connection: close\r\n") }
            w.append("\r\n")
            composedHeadLength = w.count
            body(&w)
        }) else {
            fail(id, .unsupportedRoute, reactor)
            return
        }
        sessions[id].reply = .routeResponse
        sessions[id].answeredBy = .routeResponse
        sessions[id].keepAlive = keep
        sessions[id].responseStarted = true
        sessions[id].response = .reply
        sessions[id].request = .done
        dropHeld(&sessions[id].responseHeld, reactor)
        sessions[id].responseHeld = composed
        sessions[id].responseHeads &+= UInt64(composedHeadLength)
        let entry = Int(id.index)
        toClient.reset(entry)
        _ = bytes.append(toClient, entry, composed, composed.start..<composed.end)
        sendToClient(id, reactor)
    }

    /// The bytes a route adds to a request head: the rewritten target (`target`) and the field lines it adds
    /// or sets (`fields`), and the trace context fields of the proxy's span (`trace`), in one assembly buffer.
    /// Nil when they do not fit.
    private func composeRequestExtras(_ id: SID, _ head: HTTP1Head, _ target: inout Range<Int>, _ fields: inout Range<Int>,
                                      _ trace: inout Range<Int>) -> Held? {
        // The fields read, not the whole session: copying a Session retains every reference it holds.
        let rewriteTarget = sessions[id].targetRewrite, held = sessions[id].requestHeld
        let edits = sessions[id].requestEdits, context = sessions[id].trace
        var targetEnd = 0
        var fieldsEnd = 0
        let extras = bytes.compose { w in
            if let rewrite = rewriteTarget {
                // The rewritten target is origin-form: the path (of an absolute-form target, what follows the
                // authority), rewritten, then the query and fragment as received.
                let t = head.target
                let path = bytes.pathExtent(head, held: held)
                switch rewrite {
                case .path(let uri, let prefix):
                    w.append(uri)
                    let from = prefix >= 0 ? min(path.lowerBound + prefix, path.upperBound) : path.upperBound
                    bytes.copy(from..<t.upperBound, from: held, into: &w)
                case .regex(let regex):
                    bytes.rewrite(path.lowerBound..<t.upperBound, from: held, with: regex, into: &w)
                }
            }
            targetEnd = w.count
            if let edits { Self.writeFields(edits, &w) }
            fieldsEnd = w.count
            if let capture, reporting.spans != nil {
                context.withTraceparentLine { w.append($0) }
                context.writeFieldsAfterTraceparent(traceStateFrom: capture, slot: Int(id.index)) { w.append(byte: $0) }
            }
        }
        guard let extras else { return nil }
        target = 0..<targetEnd
        fields = targetEnd..<fieldsEnd
        trace = fieldsEnd..<extras.end
        return extras
    }

    /// Whether a route's response operations set or remove field `name` (lowercase, as decoded): a response the
    /// route makes itself (directResponse, redirect) then leaves out its own field of that name, as Envoy
    /// applies a route's response header changes to its direct responses too.
    private static func replaces(_ ops: HeaderOperations, _ name: String) -> Bool {
        for i in 0..<ops.set.count where ops.set[i].name == name { return true }
        for i in 0..<ops.remove.count where ops.remove[i] == name { return true }
        return false
    }

    /// "name: value" lines for a route's set and add operations (and a rewritten Host).
    private static func writeFields(_ edits: FieldEdits, _ w: inout ResponseWriter) {
        if let host = edits.host { line("host", host, &w) }
        lines(edits.first, &w)
        lines(edits.second, &w)
    }

    private static func lines(_ ops: HeaderOperations, _ w: inout ResponseWriter) {
        for i in 0..<ops.set.count { line(ops.set[i].name, ops.set[i].value, &w) }
        for i in 0..<ops.add.count { line(ops.add[i].name, ops.add[i].value, &w) }
    }

    private static func line(_ name: String, _ value: String, _ w: inout ResponseWriter) {
        w.append(name)
        w.append(": ")
        w.append(value)
        w.append("\r\n")
    }

    /// The port in the request's Host, if it names one.
    private func hostPort(_ head: HTTP1Head, _ id: SID) -> UInt16? {
        guard let host = head.host else { return nil }
        return bytes.port(in: host, held: sessions[id].requestHeld)
    }

    /// Answers a request that cannot be routed; one without a body leaves the connection usable.
    private func routeFailed(_ id: SID, _ reply: LocalReply, _ reactor: Reactor<Backend>) -> Int? {
        Log.debug("request not routed: \(reply.flag)")
        if sessions[id].requestBody == .none {
            let head = requestParsers.parsers[Int(sessions[id].requestParser)].head
            sessions[id].requestHeld.start += head.length
            sessions[id].request = .done
        }
        fail(id, reply, reactor)
        return nil
    }

    /// Reports a routed request finished to the balancer and endpoint that counted it, also when the table it
    /// was routed with has been replaced since (the balancers keep its slot until then). Once per request.
    private func requestFinished(_ id: SID) {
        if sessions[id].activeKey != 0 {
            metrics?.endpoint(sessions[id].activeKey, EndpointWords.activeRequests, -1)
            sessions[id].activeKey = 0
        }
        sessions[id].cluster = -1
        guard let outstanding = sessions[id].outstanding else { return }
        balancers.requestFinished(outstanding)
        sessions[id].outstanding = nil
    }

    public var finished: Bool {
        (draining || stopping) && sessions.count == 0 && upstreams.count == 0 && tunnels.count == 0 && acceptor.allClosed
    }

    // MARK: - Loop hooks

    public func iteration(_ reactor: Reactor<Backend>) {
        tunnels.iteration(reactor)
        if capture != nil { wallOffsetNanos = System.wallClockMicros() &* 1000 &- System.monotonicNanos() }
        if let routes, routes.refresh() {
            bind(routes.current)
            Log.debug("reactor \(reactor.index) serves route table \(routes.currentEpoch)")
        }
        if !draining && reactor.control.drainRequested.load(ordering: .acquiring) {
            draining = true
            acceptor.closeAll(reactor)
            // Every client connection ends after its next response, which says "connection: close" (as Envoy
            // drains HTTP/1.1). An idle keep-alive connection is not closed at once: a request may already be on
            // its way, and closing under it would lose it; it closes with its next response, or when the drain
            // timeout stops the reactor.
            for e in idle.indices {
                while let u = idle[e].popLast() {
                    if upstreams.isCurrent(u) { closeUpstream(u, reactor) }
                }
            }
        }
        if !stopping && reactor.control.stopRequested.load(ordering: .acquiring) {
            stopping = true
            draining = true
            acceptor.closeAll(reactor)
            sessions.forEachID { closeSession($0, reset: false, reactor) }
            upstreams.forEachID { closeUpstream($0, reactor) }
        }
        if let m = metrics {
            m.reactor.set(ReactorWord.upstreamConnections, UInt64(upstreams.count))
            m.reactor.set(ReactorWord.idleUpstreamConnections, UInt64(idleUpstreams))
        }
        let active = counters.active.load(ordering: .relaxed)
        acceptor.update(atCap: active >= relay.descriptorCap, headroom: relay.descriptorCap - active, draining: draining, reactor)
    }

    public func handle(_ c: Completion, _ reactor: Reactor<Backend>) {
        if c.token.op < TCPRelay<Backend>.opLimit {
            tunnels.handle(c, reactor)
            return
        }
        guard let op = Op(rawValue: c.token.op) else { return bug("unknown HTTP proxy op \(c.token.op)") }
        switch op {
        case .accept:
            if let (fd, i) = acceptor.accepted(c, draining: draining, reactor) { accepted(fd, listener: i, reactor) }
        case .clientReceive, .clientSend:
            let id = SID(index: c.token.slot, generation: c.token.generation)
            guard sessions.isCurrent(id) else {
                if let b = c.bufferID { reactor.backend.releaseBuffer(b) }
                return
            }
            sessions[id].inflight -= 1
            if op == .clientReceive {
                sessions[id].receiving = false
                clientReceived(id, c, reactor)
            } else {
                sessions[id].sending = false
                clientSent(id, c.result, reactor)
            }
        case .requestSpliceIn, .responseSpliceOut:
            let id = SID(index: c.token.slot, generation: c.token.generation)
            guard sessions.isCurrent(id) else { return }
            sessions[id].inflight -= 1
            sessions[id].clientSplice = 0
            if sessions[id].phase == .closing {
                finishSessionIfQuiet(id, reactor)
            } else if op == .requestSpliceIn {
                requestSplicedIn(id, c.result, reactor)
            } else {
                responseSplicedOut(id, c.result, reactor)
            }
        case .requestSpliceOut, .responseSpliceIn:
            let u = UID(index: c.token.slot, generation: c.token.generation)
            guard upstreams.isCurrent(u) else { return }
            upstreams[u].inflight -= 1
            upstreams[u].splice = 0
            if upstreams[u].state == .closing {
                finishUpstreamIfQuiet(u, reactor)
                return
            }
            guard let id = upstreams[u].session, sessions.isCurrent(id), sessions[id].phase == .open else {
                closeUpstream(u, reactor)
                return
            }
            if op == .requestSpliceOut { requestSplicedOut(id, u, c.result, reactor) } else { responseSplicedIn(id, u, c.result, reactor) }
        case .upstreamConnect, .upstreamReceive, .upstreamSend:
            let id = UID(index: c.token.slot, generation: c.token.generation)
            guard upstreams.isCurrent(id) else {
                if let b = c.bufferID { reactor.backend.releaseBuffer(b) }
                return
            }
            upstreams[id].inflight -= 1
            switch op {
            case .upstreamConnect: upstreamConnected(id, c.result, reactor)
            case .upstreamReceive:
                upstreams[id].receiving = false
                upstreamReceived(id, c, reactor)
            default:
                upstreams[id].sending = false
                upstreamSent(id, c.result, reactor)
            }
        default:
            bug("timer op \(op) completed as an operation")
        }
    }

    public func timerFired(_ token: Token, _ reactor: Reactor<Backend>) {
        if token.op < TCPRelay<Backend>.opLimit {
            tunnels.timerFired(token, reactor)
            return
        }
        guard let op = Op(rawValue: token.op) else { return }
        switch op {
        case .acceptBackoff:
            acceptor.backoffFired(token, headroom: relay.descriptorCap - counters.active.load(ordering: .relaxed), reactor)
        case .connectTimer, .poolTimer:
            let u = UID(index: token.slot, generation: token.generation)
            guard upstreams.isCurrent(u) else { return }
            if op == .connectTimer {
                upstreams[u].connectTimer = nil
                if upstreams[u].state == .connecting {
                    Log.debug("upstream connect timed out after \(relay.connectTimeout)")
                    upstreamFailed(u, connecting: true, reactor)
                }
            } else {
                upstreams[u].poolTimer = nil
                guard upstreams[u].state == .idle else { return }
                let due = saturatingAdd(upstreams[u].idleSince, settings.upstreamIdleTimeout.nanoseconds)
                if System.monotonicNanos() >= due {
                    closeUpstream(u, reactor)
                } else {
                    upstreams[u].poolTimer = reactor.timers.schedule(self.token(.poolTimer, u), at: due)
                }
            }
        default:
            let id = SID(index: token.slot, generation: token.generation)
            guard sessions.isCurrent(id), sessions[id].phase != .closing else { return }
            sessionTimer(op, id, reactor)
        }
    }

    private func sessionTimer(_ op: Op, _ id: SID, _ reactor: Reactor<Backend>) {
        let s = sessions[id]
        switch op {
        case .idleTimer:
            sessions[id].idleTimer = nil
            guard s.phase == .open && !s.exchange && s.requestHeld.isEmpty else { return }
            let due = saturatingAdd(s.idleSince, relay.idleTimeout.nanoseconds)
            if System.monotonicNanos() >= due {
                Log.debug("client connection idle for \(relay.idleTimeout): closing")
                closeSession(id, reset: false, reactor)
            } else {
                sessions[id].idleTimer = reactor.timers.schedule(token(.idleTimer, id), at: due)
            }
        case .headerTimer:
            sessions[id].headerTimer = nil
            guard s.phase == .open && s.request == .head && !s.requestHeld.isEmpty else { return }
            let due = saturatingAdd(s.headStart, settings.requestHeaderTimeout.nanoseconds)
            if System.monotonicNanos() >= due {
                Log.debug("request head not complete after \(settings.requestHeaderTimeout)")
                fail(id, .requestHeaderTimeout, reactor)
            } else {
                sessions[id].headerTimer = reactor.timers.schedule(token(.headerTimer, id), at: due)
            }
        case .upstreamTimer:
            sessions[id].upstreamTimer = nil
            guard s.exchange && s.request == .done && s.response != .done && s.response != .reply && s.response != .tunnel else { return }
            let due = saturatingAdd(s.requestEnd, settings.upstreamTimeout.nanoseconds)
            if System.monotonicNanos() >= due {
                Log.debug("upstream timeout (UT) after \(settings.upstreamTimeout)")
                fail(id, .upstreamTimeout, reactor)
            } else {
                sessions[id].upstreamTimer = reactor.timers.schedule(token(.upstreamTimer, id), at: due)
            }
        case .streamTimer:
            sessions[id].streamTimer = nil
            guard s.exchange, s.phase == .open, s.response != .reply else { return }
            let due = saturatingAdd(s.lastActivity, settings.streamIdleTimeout.nanoseconds)
            if System.monotonicNanos() >= due {
                Log.debug("stream idle for \(settings.streamIdleTimeout) (SI)")
                fail(id, s.request == .done ? .streamTimeoutResponse : .streamTimeoutRequest, reactor)
            } else {
                sessions[id].streamTimer = reactor.timers.schedule(token(.streamTimer, id), at: due)
            }
        case .lingerTimer:
            sessions[id].lingerTimer = nil
            closeSession(id, reset: false, reactor)
        default:
            bug("unknown session timer \(op)")
        }
    }

    // MARK: - Tokens and timers

    private func token(_ op: Op, _ id: SID) -> Token { Token(op: op.rawValue, slot: id.index, generation: id.generation) }
    private func token(_ op: Op, _ id: UID) -> Token { Token(op: op.rawValue, slot: id.index, generation: id.generation) }

    private func saturatingAdd(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? UInt64.max : sum
    }

    private func deadline(after d: TernDuration) -> UInt64 { saturatingAdd(System.monotonicNanos(), d.nanoseconds) }

    private func cancel(_ timer: inout TimerWheel.ID?, _ reactor: Reactor<Backend>) {
        if let t = timer { reactor.timers.cancel(t) }
        timer = nil
    }

    private func release(_ b: UInt16?, _ reactor: Reactor<Backend>) {
        if let b { reactor.backend.releaseBuffer(b) }
    }

    private func dropHeld(_ held: inout Held, _ reactor: Reactor<Backend>) {
        if held.holdsStorage { release(bytes.drop(&held), reactor) }
    }

    // MARK: - Client connections

    private func accepted(_ fd: Int32, listener: Int, _ reactor: Reactor<Backend>) {
        let active = counters.active.wrappingAdd(1, ordering: .relaxed).newValue
        if relay.maxConnections > 0 && active > relay.maxConnections {
            counters.active.subtract(1, ordering: .relaxed)
            counters.rejectedOverLimit.add(1, ordering: .relaxed)
            System.close(fd)
            return
        }
        guard let id = sessions.insert(Session(fd: fd, endpoint: listener)) else {
            counters.active.subtract(1, ordering: .relaxed)
            counters.rejectedOverLimit.add(1, ordering: .relaxed)
            System.close(fd)
            return
        }
        counters.accepted.add(1, ordering: .relaxed)
        System.setNoDelay(fd)
        reactor.backend.register(fd: fd)
        reactor.control.activeConnections.store(sessions.count, ordering: .relaxed)
        // Per connection, composed on the stack: nothing allocated.
        let peer = try? System.peerAddress(fd)
        if let peer {
            peer.withText(withPort: false) { bytes.setClientAddress(Int(id.index), $0) }
        } else {
            bytes.setClientAddress(Int(id.index), "unknown")
        }
        if let capture {
            if let peer {
                peer.withText(withPort: true) { capture.set(Int(id.index), .downstreamRemote, $0) }
            } else {
                capture.clear(Int(id.index), .downstreamRemote)
            }
            capture.set(Int(id.index), .downstreamLocal, listener < listenerNames.count ? listenerNames[listener] : "")
        }
        sessions[id].requestParser = requestParsers.take()
        sessions[id].responseParser = responseParsers.take()
        awaitRequest(id, reactor)
    }

    /// Waits for the next request head on a client connection (idle keep-alive until its first byte).
    private func awaitRequest(_ id: SID, _ reactor: Reactor<Backend>) {
        sessions[id].idleSince = System.monotonicNanos()
        if sessions[id].idleTimer == nil {
            sessions[id].idleTimer = reactor.timers.schedule(token(.idleTimer, id), at: deadline(after: relay.idleTimeout))
        }
        receiveFromClient(id, reactor)
    }

    private func receiveFromClient(_ id: SID, _ reactor: Reactor<Backend>) {
        guard !sessions[id].receiving else { return }
        sessions[id].receiving = true
        sessions[id].inflight += 1
        reactor.backend.receive(fd: sessions[id].fd, token: token(.clientReceive, id), multishot: false)
    }

    private func clientReceived(_ id: SID, _ c: Completion, _ reactor: Reactor<Backend>) {
        // Fields read one by one: a copy of the whole Session would retain every reference it holds.
        let phase = sessions[id].phase
        if phase == .closing {
            release(c.bufferID, reactor)
            finishSessionIfQuiet(id, reactor)
            return
        }
        if phase == .lingering || sessions[id].reply != nil {
            // Read and discard until the client closes (lingering close), or the linger timer fires.
            release(c.bufferID, reactor)
            if c.result > 0 { receiveFromClient(id, reactor) } else if phase == .lingering { closeSession(id, reset: false, reactor) }
            return
        }
        guard c.result > 0, let buffer = c.bufferID else {
            release(c.bufferID, reactor)
            clientEnded(id, c.result, reactor)
            return
        }
        sessions[id].lastActivity = System.monotonicNanos()
        let request = sessions[id].request
        switch request {
        case .head:
            let wasEmpty = sessions[id].requestHeld.isEmpty, exchange = sessions[id].exchange
            do {
                let (a, b) = try bytes.take(buffer: buffer, count: Int(c.result), into: &sessions[id].requestHeld)
                release(a, reactor)
                release(b, reactor)
            } catch {
                release(buffer, reactor)
                fail(id, .headersTooLarge, reactor)
                return
            }
            if wasEmpty && !exchange { sessions[id].headStart = sessions[id].lastActivity }
            requestHead(id, reactor)
        case .body, .tunnel:
            precondition(!sessions[id].requestHeld.holdsStorage, "request bytes held while receiving more")
            sessions[id].requestHeld = Held(buffer: Int32(buffer), assembly: -1, start: 0, end: Int(c.result))
            if request == .body { requestBody(id, reactor) } else { tunnelToUpstream(id, reactor) }
        case .waiting, .sending, .splicing, .done:
            // Not receiving in these states; a stray completion is a bug.
            release(buffer, reactor)
            bug("client receive completed in request state \(request)")
        }
    }

    /// The client closed (0) or failed (< 0) its side.
    private func clientEnded(_ id: SID, _ result: Int32, _ reactor: Reactor<Backend>) {
        let s = sessions[id]
        if s.request == .tunnel && result == 0 {
            sessions[id].clientEOF = true
            if let u = s.upstream { _ = System.shutdown(upstreams[u].fd, write: true, read: false) }
            if s.upstreamEOF { closeSession(id, reset: false, reactor) }
            return
        }
        // Between requests this is the normal end of a keep-alive connection; inside one the client gave up:
        // the upstream side is abandoned with it.
        if s.exchange { Log.debug("client closed during an exchange (\(result < 0 ? Errno.name(-result) : "EOF"))") }
        closeSession(id, reset: result < 0 && s.request == .tunnel, reactor)
    }

    // MARK: - Request side

    private func requestHead(_ id: SID, _ reactor: Reactor<Backend>) {
        let p = Int(sessions[id].requestParser)
        let progress: HTTP1Parser.Progress
        do {
            progress = try bytes.parse(&requestParsers.parsers[p], sessions[id].requestHeld)
        } catch {
            Log.debug("refused request: \(error)")
            fail(id, LocalReply.refusing(error), reactor)
            return
        }
        guard progress == .complete else {
            if sessions[id].headerTimer == nil {
                let due = saturatingAdd(sessions[id].headStart, settings.requestHeaderTimeout.nanoseconds)
                sessions[id].headerTimer = reactor.timers.schedule(token(.headerTimer, id), at: due)
            }
            receiveFromClient(id, reactor)
            return
        }
        let head = requestParsers.parsers[p].head
        beginExchange(id)
        sessions[id].requestWire = UInt64(head.length)
        sessions[id].requestHeadLength = UInt64(head.length)
        if let capture {
            let slot = Int(id.index)
            capture.beginRequest(slot)
            if reporting.spans != nil {
                let incoming = bytes.traceHeaders(head, held: sessions[id].requestHeld, capture: capture, slot: slot)
                sessions[id].trace = incoming.context.child(sampler: reporting.sampler, using: &random)
            }
            // The values are reported by the access log, and by the span of a sampled request only (1 % by
            // default): the other requests skip the copies.
            if reporting.accessLog != nil || sessions[id].trace.sampled == true {
                bytes.capture(head, held: sessions[id].requestHeld, into: capture, slot: slot)
            }
        }
        sessions[id].exchange = true
        sessions[id].keepAlive = head.keepAlive && !draining
        sessions[id].http10 = head.version == .http10
        sessions[id].method = head.method
        sessions[id].upgrade = head.upgrade || head.method == .connect
        sessions[id].responseStarted = false
        sessions[id].lastActivity = System.monotonicNanos()
        if sessions[id].streamTimer == nil {
            sessions[id].streamTimer = reactor.timers.schedule(token(.streamTimer, id), at: deadline(after: settings.streamIdleTimeout))
        }
        switch head.framing {
        case .contentLength(let n): sessions[id].requestBody = n == 0 ? .none : .length(n)
        case .chunked:
            sessions[id].requestBody = .chunked
            sessions[id].requestDecoder.reset()
        case .none, .untilClose: sessions[id].requestBody = .none
        }
        prepareResponseParser(id)
        sessions[id].request = .waiting
        guard let endpoint = route(id, head, reactor) else { return }
        sessions[id].endpoint = endpoint
        sessions[id].upstreamIndex = endpoint
        if let metrics {
            sessions[id].activeKey = endpointKeys[endpoint]
            metrics.endpoint(endpointKeys[endpoint], EndpointWords.activeRequests, 1)
        }
        acquireUpstream(id, reactor)
    }

    /// Finds the exchange an upstream connection: an idle pooled one, a new one, or a place in the queue.
    private func acquireUpstream(_ id: SID, _ reactor: Reactor<Backend>) {
        let e = sessions[id].endpoint
        while let u = idle[e].popLast() {
            guard upstreams.isCurrent(u), upstreams[u].state == .idle else { continue }
            bind(u, to: id, reused: true, reactor)
            return
        }
        if upstreamCount[e] < settings.maxUpstreamConnections {
            connect(for: id, reactor)
        } else if !pending[e].isFull {
            pending[e].push(id)
        } else {
            Log.debug("pending request queue full (UO)")
            fail(id, .overflow, reactor)
        }
    }

    private func connect(for id: SID, _ reactor: Reactor<Backend>) {
        let e = sessions[id].endpoint
        let fd: Int32
        do {
            fd = try System.tcpSocket(family: endpoints[e].family)
        } catch {
            Log.debug("upstream socket: \(error)")
            fail(id, .connectFailure, reactor)
            return
        }
        guard let u = upstreams.insert(Upstream(fd: fd, endpoint: e)) else {
            System.close(fd)
            fail(id, .overflow, reactor)
            return
        }
        upstreamCount[e] += 1
        metrics?.endpoint(endpointKeys[e], EndpointWords.connections, 1)
        System.setNoDelay(fd)
        reactor.backend.register(fd: fd)
        upstreams[u].session = id
        sessions[id].upstream = u
        upstreams[u].connectTimer = reactor.timers.schedule(token(.connectTimer, u), at: deadline(after: relay.connectTimeout))
        upstreams[u].inflight += 1
        reactor.backend.connect(fd: fd, to: endpoints[e], token: token(.upstreamConnect, u))
    }

    private func upstreamConnected(_ u: UID, _ result: Int32, _ reactor: Reactor<Backend>) {
        if upstreams[u].state == .closing {
            finishUpstreamIfQuiet(u, reactor)
            return
        }
        cancel(&upstreams[u].connectTimer, reactor)
        if result < 0 {
            Log.debug("upstream connect failed: \(Errno.name(-result)) (UF)")
            upstreamFailed(u, connecting: true, reactor)
            return
        }
        guard let id = upstreams[u].session, sessions.isCurrent(id) else {
            recycle(u, reactor)
            return
        }
        bind(u, to: id, reused: false, reactor)
    }

    /// Gives upstream connection `u` to the exchange of session `id` and sends the request head.
    private func bind(_ u: UID, to id: SID, reused: Bool, _ reactor: Reactor<Backend>) {
        if upstreams[u].state == .idle { idleUpstreams -= 1 }
        upstreams[u].state = .bound
        upstreams[u].session = id
        upstreams[u].reused = reused
        sessions[id].upstream = u
        sendRequestHead(id, reactor)
    }

    private func sendRequestHead(_ id: SID, _ reactor: Reactor<Backend>) {
        guard let u = sessions[id].upstream else { return bug("request head without an upstream") }
        let p = Int(sessions[id].requestParser)
        let head = requestParsers.parsers[p].head
        let entry = Int(u.index)
        let held = sessions[id].requestHeld
        toUpstream.reset(entry)
        dropHeld(&sessions[id].requestExtras, reactor)
        var target = 0..<0
        var fields = 0..<0
        var trace = 0..<0
        let traced = reporting.spans != nil
        if sessions[id].requestEdits != nil || sessions[id].targetRewrite != nil || traced {
            guard let extras = composeRequestExtras(id, head, &target, &fields, &trace) else {
                fail(id, .headersTooLarge, reactor)
                return
            }
            sessions[id].requestExtras = extras
        }
        let options = HTTP1Forwarding.RequestOptions(trustedClient: trustedClient, rewriteTarget: sessions[id].targetRewrite != nil,
                                                     routeFields: !fields.isEmpty, replaceTrace: traced)
        guard bytes.appendHead(toUpstream, entry, held, slot: Int(id.index), { head, span, drop, emit in
            HTTP1Forwarding.request(head, span, options: options, drop: drop, emit: emit)
        }, head: head, edits: sessions[id].requestEdits, extras: sessions[id].requestExtras, target: target, fields: fields,
           trace: trace, capture: capture) else {
            fail(id, .headersTooLarge, reactor)
            return
        }
        let bodyStart = held.start + head.length
        guard let bodyEnd = takeRequestBody(id, from: bodyStart, reactor) else { return }
        _ = bytes.append(toUpstream, entry, held, bodyStart..<bodyEnd)
        if sessions[id].upstreamStart == 0 {
            // Not again when a retry on a fresh connection sends the same bytes.
            sessions[id].requestWire &+= UInt64(bodyEnd - bodyStart)
            sessions[id].upstreamStart = System.monotonicNanos()
        }
        // The request can be sent again on a fresh connection if this reused one turns out to be closed, as
        // long as all of it is still held.
        sessions[id].retryFrom = upstreams[u].reused && sessions[id].requestBody == .none && !sessions[id].upgrade ? held.start : nil
        sessions[id].requestSentTo = bodyEnd
        sessions[id].request = .sending
        sessions[id].response = .head
        sendToUpstream(id, u, reactor)
        receiveFromUpstream(u, reactor)
    }

    /// How far the request body extends in the held bytes from `from`, updating what remains of it; nil when
    /// the chunked framing is broken (the exchange has then been failed).
    private func takeRequestBody(_ id: SID, from: Int, _ reactor: Reactor<Backend>) -> Int? {
        var body = sessions[id].requestBody
        var decoder = sessions[id].requestDecoder
        defer {
            // A failure may have closed and freed the session.
            if sessions.isCurrent(id) {
                sessions[id].requestBody = body
                sessions[id].requestDecoder = decoder
            }
        }
        do {
            return try bodyExtent(&body, &decoder, sessions[id].requestHeld, from: from)
        } catch {
            Log.debug("refused request body: \(error)")
            fail(id, .badRequest, reactor)
            return nil
        }
    }

    /// How far a body extends in the held bytes from `from`, updating what remains of it (a Content-Length
    /// count, or the chunked decoder's state); a body ending at close takes everything.
    private func bodyExtent(_ body: inout Body, _ decoder: inout ChunkedDecoder, _ held: Held, from: Int)
        throws(HTTPParseError) -> Int
    {
        switch body {
        case .none:
            return from
        case .untilClose:
            return held.end
        case .length(let left):
            let take = Int(min(left, UInt64(held.end - from)))
            body = left == UInt64(take) ? .none : .length(left - UInt64(take))
            return from + take
        case .chunked:
            var at = from
            while at < held.end {
                let out = try bytes.decode(&decoder, held, from: at)
                at += out.consumed
                if out.event == .end {
                    body = .none
                    break
                }
            }
            return at
        }
    }

    private func sendToUpstream(_ id: SID, _ u: UID, _ reactor: Reactor<Backend>) {
        if toUpstream.remaining(Int(u.index)) == 0 {
            upstreamSent(u, 0, reactor, nothing: true)
            return
        }
        upstreams[u].sending = true
        upstreams[u].inflight += 1
        reactor.backend.send(fd: upstreams[u].fd, vectors: toUpstream, index: Int(u.index), token: token(.upstreamSend, u))
    }

    private func upstreamSent(_ u: UID, _ result: Int32, _ reactor: Reactor<Backend>, nothing: Bool = false) {
        if upstreams[u].state == .closing {
            finishUpstreamIfQuiet(u, reactor)
            return
        }
        guard let id = upstreams[u].session, sessions.isCurrent(id), sessions[id].phase == .open else { return }
        if result < 0 {
            Log.debug("send to upstream failed: \(Errno.name(-result))")
            upstreamLost(id, u, reactor)
            return
        }
        let entry = Int(u.index)
        if !nothing {
            toUpstream.advance(entry, by: Int(result))
            sessions[id].lastActivity = System.monotonicNanos()
        }
        if toUpstream.remaining(entry) > 0 {
            sendToUpstream(id, u, reactor)
            return
        }
        // What was sent is consumed.
        sessions[id].requestHeld.start = sessions[id].requestSentTo
        dropHeld(&sessions[id].requestExtras, reactor)
        if sessions[id].request == .tunnel {
            dropHeld(&sessions[id].requestHeld, reactor)
            if !sessions[id].clientEOF { receiveFromClient(id, reactor) }
            return
        }
        if sessions[id].requestHeld.isEmpty && sessions[id].retryFrom == nil { dropHeld(&sessions[id].requestHeld, reactor) }
        if sessions[id].requestBody == .none {
            requestDone(id, reactor)
        } else if case .length(let left) = sessions[id].requestBody, left >= Self.spliceThreshold,
                  sessions[id].requestHeld.isEmpty, let pipe = reactor.pipes.acquire()
        {
            dropHeld(&sessions[id].requestHeld, reactor)
            sessions[id].requestPipe = pipe
            sessions[id].request = .splicing
            Log.debug("request body spliced: \(left) bytes")
            requestSpliceIn(id, reactor)
        } else {
            sessions[id].request = .body
            if sessions[id].response != .done { receiveFromClient(id, reactor) }
        }
    }

    // MARK: - Spliced bodies (Content-Length, request: client → pipe → upstream)

    private func requestSpliceIn(_ id: SID, _ reactor: Reactor<Backend>) {
        guard case .length(let left) = sessions[id].requestBody, let pipe = sessions[id].requestPipe else {
            return bug("request splice without a body or pipe")
        }
        sessions[id].clientSplice = Op.requestSpliceIn.rawValue
        sessions[id].inflight += 1
        let fd = sessions[id].fd
        reactor.backend.splice(from: fd, to: pipe.writeEnd, count: Int(min(left, UInt64(pipe.capacity))),
                               waitFor: .readable(fd), token: token(.requestSpliceIn, id))
    }

    private func requestSplicedIn(_ id: SID, _ n: Int32, _ reactor: Reactor<Backend>) {
        if n == -Errno.EAGAIN { return requestSpliceIn(id, reactor) }
        guard n > 0, case .length(let left) = sessions[id].requestBody, let u = sessions[id].upstream else {
            // The client ended or failed in the middle of its body: nothing sensible can follow.
            Log.debug("client ended during a spliced request body (\(n < 0 ? Errno.name(-n) : "EOF"))")
            closeSession(id, reset: n < 0, reactor)
            return
        }
        sessions[id].lastActivity = System.monotonicNanos()
        sessions[id].requestPiped = Int(n)
        sessions[id].requestWire &+= UInt64(n)
        sessions[id].requestBody = left == UInt64(n) ? .none : .length(left - UInt64(n))
        requestSpliceOut(id, u, reactor)
    }

    private func requestSpliceOut(_ id: SID, _ u: UID, _ reactor: Reactor<Backend>) {
        guard let pipe = sessions[id].requestPipe else { return bug("request splice without a pipe") }
        upstreams[u].splice = Op.requestSpliceOut.rawValue
        upstreams[u].inflight += 1
        let fd = upstreams[u].fd
        reactor.backend.splice(from: pipe.readEnd, to: fd, count: sessions[id].requestPiped, waitFor: .writable(fd),
                               token: token(.requestSpliceOut, u))
    }

    private func requestSplicedOut(_ id: SID, _ u: UID, _ n: Int32, _ reactor: Reactor<Backend>) {
        if n == -Errno.EAGAIN { return requestSpliceOut(id, u, reactor) }
        guard n > 0 else {
            Log.debug("upstream failed during a spliced request body: \(Errno.name(-n))")
            upstreamLost(id, u, reactor)
            return
        }
        sessions[id].lastActivity = System.monotonicNanos()
        sessions[id].requestPiped -= Int(n)
        if sessions[id].requestPiped > 0 { return requestSpliceOut(id, u, reactor) }
        if sessions[id].requestBody != .none { return requestSpliceIn(id, reactor) }
        releasePipe(&sessions[id].requestPipe, reactor)
        requestDone(id, reactor)
    }

    // MARK: - Spliced bodies (Content-Length, response: upstream → pipe → client)

    private func responseSpliceIn(_ id: SID, _ u: UID, _ reactor: Reactor<Backend>) {
        guard case .length(let left) = sessions[id].responseBody, let pipe = sessions[id].responsePipe else {
            return bug("response splice without a body or pipe")
        }
        upstreams[u].splice = Op.responseSpliceIn.rawValue
        upstreams[u].inflight += 1
        let fd = upstreams[u].fd
        reactor.backend.splice(from: fd, to: pipe.writeEnd, count: Int(min(left, UInt64(pipe.capacity))),
                               waitFor: .readable(fd), token: token(.responseSpliceIn, u))
    }

    private func responseSplicedIn(_ id: SID, _ u: UID, _ n: Int32, _ reactor: Reactor<Backend>) {
        if n == -Errno.EAGAIN { return responseSpliceIn(id, u, reactor) }
        guard n > 0, case .length(let left) = sessions[id].responseBody else {
            Log.debug("upstream ended during a spliced response body (\(n < 0 ? Errno.name(-n) : "EOF"))")
            upstreamLost(id, u, reactor)
            return
        }
        sessions[id].lastActivity = System.monotonicNanos()
        sessions[id].responsePiped = Int(n)
        sessions[id].responseBody = left == UInt64(n) ? .none : .length(left - UInt64(n))
        responseSpliceOut(id, reactor)
    }

    private func responseSpliceOut(_ id: SID, _ reactor: Reactor<Backend>) {
        guard let pipe = sessions[id].responsePipe else { return bug("response splice without a pipe") }
        sessions[id].clientSplice = Op.responseSpliceOut.rawValue
        sessions[id].inflight += 1
        let fd = sessions[id].fd
        reactor.backend.splice(from: pipe.readEnd, to: fd, count: sessions[id].responsePiped, waitFor: .writable(fd),
                               token: token(.responseSpliceOut, id))
    }

    private func responseSplicedOut(_ id: SID, _ n: Int32, _ reactor: Reactor<Backend>) {
        if n == -Errno.EAGAIN { return responseSpliceOut(id, reactor) }
        guard n > 0 else {
            Log.debug("send to client failed during a spliced response body: \(Errno.name(-n))")
            closeSession(id, reset: true, reactor)
            return
        }
        sessions[id].lastActivity = System.monotonicNanos()
        sessions[id].responseWire &+= UInt64(n)
        sessions[id].responsePiped -= Int(n)
        if sessions[id].responsePiped > 0 { return responseSpliceOut(id, reactor) }
        if sessions[id].responseBody != .none, let u = sessions[id].upstream { return responseSpliceIn(id, u, reactor) }
        releasePipe(&sessions[id].responsePipe, reactor)
        responseDone(id, reusable: sessions[id].upstreamReusable, reactor)
    }

    /// Returns an emptied pipe to the pool.
    private func releasePipe(_ pipe: inout Pipe?, _ reactor: Reactor<Backend>) {
        guard let p = pipe else { return }
        pipe = nil
        reactor.pipes.release(p, holdsData: false)
    }

    private func requestBody(_ id: SID, _ reactor: Reactor<Backend>) {
        guard let u = sessions[id].upstream else { return bug("request body without an upstream") }
        guard let end = takeRequestBody(id, from: 0, reactor) else { return }
        sessions[id].requestWire &+= UInt64(end)
        let entry = Int(u.index)
        toUpstream.reset(entry)
        _ = bytes.append(toUpstream, entry, sessions[id].requestHeld, 0..<end)
        sessions[id].requestSentTo = end
        sessions[id].request = .sending
        sendToUpstream(id, u, reactor)
    }

    /// The whole request went upstream: the upstream timeout starts.
    private func requestDone(_ id: SID, _ reactor: Reactor<Backend>) {
        sessions[id].request = .done
        if sessions[id].response == .done {
            exchangeDone(id, reactor)
            return
        }
        sessions[id].requestEnd = System.monotonicNanos()
        if settings.upstreamTimeout.nanoseconds > 0 && sessions[id].upstreamTimer == nil {
            sessions[id].upstreamTimer = reactor.timers.schedule(token(.upstreamTimer, id), at: deadline(after: settings.upstreamTimeout))
        }
    }

    // MARK: - Response side

    private func receiveFromUpstream(_ u: UID, _ reactor: Reactor<Backend>) {
        guard !upstreams[u].receiving else { return }
        upstreams[u].receiving = true
        upstreams[u].inflight += 1
        reactor.backend.receive(fd: upstreams[u].fd, token: token(.upstreamReceive, u), multishot: false)
    }

    private func upstreamReceived(_ u: UID, _ c: Completion, _ reactor: Reactor<Backend>) {
        switch upstreams[u].state {
        case .closing:
            release(c.bufferID, reactor)
            finishUpstreamIfQuiet(u, reactor)
            return
        case .idle, .connecting:
            // An idle pooled connection was closed by the upstream (or sent bytes nobody asked for).
            release(c.bufferID, reactor)
            closeUpstream(u, reactor)
            return
        case .bound:
            break
        }
        guard let id = upstreams[u].session, sessions.isCurrent(id), sessions[id].phase == .open else {
            release(c.bufferID, reactor)
            closeUpstream(u, reactor)
            return
        }
        guard c.result > 0, let buffer = c.bufferID else {
            release(c.bufferID, reactor)
            upstreamEnded(id, u, c.result, reactor)
            return
        }
        sessions[id].lastActivity = System.monotonicNanos()
        if sessions[id].retryFrom != nil {
            // The upstream answered: the request will not be sent again.
            sessions[id].retryFrom = nil
            if sessions[id].requestHeld.isEmpty && sessions[id].request != .sending { dropHeld(&sessions[id].requestHeld, reactor) }
        }
        switch sessions[id].response {
        case .head:
            do {
                let (a, b) = try bytes.take(buffer: buffer, count: Int(c.result), into: &sessions[id].responseHeld)
                release(a, reactor)
                release(b, reactor)
            } catch {
                release(buffer, reactor)
                Log.debug("upstream response head too large (UPE)")
                fail(id, .badGateway, reactor)
                return
            }
            responseHead(id, reactor)
        case .body, .tunnel:
            precondition(!sessions[id].responseHeld.holdsStorage, "response bytes held while receiving more")
            sessions[id].responseHeld = Held(buffer: Int32(buffer), assembly: -1, start: 0, end: Int(c.result))
            if sessions[id].response == .body { responseBody(id, reactor) } else { tunnelToClient(id, reactor) }
        case .idle, .sending, .splicing, .done, .reply:
            // Bytes after the end of the response: this connection cannot be reused.
            release(buffer, reactor)
            Log.debug("upstream sent bytes beyond its response")
            detachUpstream(id, reusable: false, reactor)
        }
    }

    /// The upstream closed (0) or failed (< 0).
    private func upstreamEnded(_ id: SID, _ u: UID, _ result: Int32, _ reactor: Reactor<Backend>) {
        let s = sessions[id]
        switch s.response {
        case .tunnel:
            if result == 0 {
                sessions[id].upstreamEOF = true
                _ = System.shutdown(s.fd, write: true, read: false)
                if s.clientEOF { closeSession(id, reset: false, reactor) }
            } else {
                closeSession(id, reset: true, reactor)
            }
        case .body where s.responseBody == .untilClose && result == 0:
            upstreams[u].reused = false
            responseDone(id, reusable: false, reactor)
        default:
            Log.debug("upstream \(result == 0 ? "closed" : "failed: \(Errno.name(-result))") before the response ended")
            upstreamLost(id, u, reactor)
        }
    }

    /// The upstream connection of an exchange is gone before the response ended: send the request again on a
    /// fresh connection if it went to a reused one and is still held, else 503 UC, or a reset if the response
    /// had already started.
    private func upstreamLost(_ id: SID, _ u: UID, _ reactor: Reactor<Backend>) {
        if let from = sessions[id].retryFrom, upstreams[u].reused, sessions[id].responseHeld.isEmpty {
            Log.debug("reused upstream connection was closed; sending the request again on a new one")
            closeUpstream(u, reactor)
            sessions[id].upstream = nil
            sessions[id].retryFrom = nil
            sessions[id].requestHeld.start = from
            if sessions[id].requestHeld.isEmpty { dropHeld(&sessions[id].requestHeld, reactor) }
            sessions[id].request = .waiting
            sessions[id].response = .idle
            cancel(&sessions[id].upstreamTimer, reactor)
            connect(for: id, reactor)
            return
        }
        fail(id, .connectionTermination, reactor)
    }

    private func responseHead(_ id: SID, _ reactor: Reactor<Backend>) {
        let p = Int(sessions[id].responseParser)
        let progress: HTTP1Parser.Progress
        do {
            progress = try bytes.parse(&responseParsers.parsers[p], sessions[id].responseHeld)
        } catch {
            Log.debug("malformed upstream response (UPE): \(error)")
            fail(id, .badGateway, reactor)
            return
        }
        guard progress == .complete, sessions[id].upstream != nil else {
            if let u = sessions[id].upstream { receiveFromUpstream(u, reactor) }
            return
        }
        let head = responseParsers.parsers[p].head
        // Fields read one by one: a copy of the whole Session would retain every reference it holds.
        let held = sessions[id].responseHeld, http10 = sessions[id].http10
        let entry = Int(id.index)
        sessions[id].interimLength = 0
        sessions[id].tunnelNext = false
        if !head.isInterim || head.status == 101 {
            sessions[id].status = head.status
            sessions[id].upstreamHead = System.monotonicNanos()
        }
        if head.isInterim && head.status != 101 {
            sessions[id].interimLength = head.length
        } else if head.status == 101 || (sessions[id].method == .connect && head.status >= 200 && head.status < 300) {
            guard sessions[id].upgrade else {
                Log.debug("upstream switched protocols without being asked (UPE)")
                fail(id, .badGateway, reactor)
                return
            }
            sessions[id].tunnelNext = true
        }
        var persistence = HTTP1Forwarding.Persistence.keepAlive
        sessions[id].dechunk = false
        if !head.isInterim || head.status == 101 {
            var keep = sessions[id].keepAlive && !draining && head.framing != .untilClose
            if sessions[id].tunnelNext { keep = false }
            if http10 && head.framing == .chunked { keep = false }
            sessions[id].keepAlive = keep
            persistence = keep ? (http10 ? .keepAliveHTTP10 : .keepAlive) : .close
            switch head.framing {
            case .none: sessions[id].responseBody = .none
            case .contentLength(let n): sessions[id].responseBody = n == 0 ? .none : .length(n)
            case .chunked:
                sessions[id].responseBody = .chunked
                sessions[id].responseDecoder.reset()
                sessions[id].dechunk = http10
            case .untilClose: sessions[id].responseBody = .untilClose
            }
            sessions[id].upstreamReusable = head.keepAlive && head.framing != .untilClose && !sessions[id].tunnelNext
        }
        toClient.reset(entry)
        dropHeld(&sessions[id].responseExtras, reactor)
        var fields = 0..<0
        if let edits = sessions[id].responseEdits, !head.isInterim {
            guard let extras = bytes.compose({ w in Self.writeFields(edits, &w) }) else {
                fail(id, .badGateway, reactor)
                return
            }
            sessions[id].responseExtras = extras
            fields = extras.start..<extras.end
        }
        let routeFields = !fields.isEmpty
        let edits = head.isInterim ? nil : sessions[id].responseEdits
        let dechunk = sessions[id].dechunk
        guard bytes.appendHead(toClient, entry, held, slot: Int(id.index), { head, span, drop, emit in
            HTTP1Forwarding.response(head, span, persistence: persistence, routeFields: routeFields, dechunk: dechunk,
                                     drop: drop, emit: emit)
        }, head: head, edits: edits, extras: sessions[id].responseExtras, fields: fields) else {
            fail(id, .badGateway, reactor)
            return
        }
        sessions[id].responseHeads &+= UInt64(toClient.remaining(entry))
        let bodyStart = held.start + head.length
        var bodyEnd = bodyStart
        if sessions[id].dechunk {
            guard let end = appendDechunked(id, from: bodyStart, reactor) else { return }
            bodyEnd = end
        } else {
            if sessions[id].interimLength == 0 && !sessions[id].tunnelNext {
                guard let end = takeResponseBody(id, from: bodyStart, reactor) else { return }
                bodyEnd = end
            }
            _ = bytes.append(toClient, entry, held, bodyStart..<bodyEnd)
        }
        sessions[id].responseSentTo = bodyEnd
        sessions[id].responseStarted = sessions[id].responseStarted || sessions[id].interimLength == 0
        sessions[id].response = .sending
        sendToClient(id, reactor)
    }

    /// Readies the session's response parser for the response to its current request (in place: a copy
    /// would share the field table, and resetting it would then allocate).
    private func prepareResponseParser(_ id: SID) {
        let p = Int(sessions[id].responseParser)
        let method = sessions[id].method
        responseParsers.parsers[p].reset()
        responseParsers.parsers[p].respondingToHEAD = method == .head
        responseParsers.parsers[p].respondingToCONNECT = method == .connect
    }

    private func takeResponseBody(_ id: SID, from: Int, _ reactor: Reactor<Backend>) -> Int? {
        var body = sessions[id].responseBody
        var decoder = sessions[id].responseDecoder
        defer {
            // A failure may have closed and freed the session.
            if sessions.isCurrent(id) {
                sessions[id].responseBody = body
                sessions[id].responseDecoder = decoder
            }
        }
        do {
            return try bodyExtent(&body, &decoder, sessions[id].responseHeld, from: from)
        } catch {
            Log.debug("malformed upstream chunked body (UPE): \(error)")
            fail(id, .badGateway, reactor)
            return nil
        }
    }

    /// Decodes chunked framing from held bytes `from` on and appends only the chunks' data to the client's
    /// send, as long as the send has segments left (the rest stays held for the next round). Returns where
    /// decoding stopped; nil when the framing is broken (the exchange has then been failed).
    private func appendDechunked(_ id: SID, from: Int, _ reactor: Reactor<Backend>) -> Int? {
        let entry = Int(id.index)
        let held = sessions[id].responseHeld
        var at = from
        do {
            while at < held.end && sessions[id].responseBody == .chunked && toClient.segments(entry) < toClient.maxSegments - 1 {
                let out = try bytes.decode(&sessions[id].responseDecoder, held, from: at)
                switch out.event {
                case .data(let r): _ = bytes.append(toClient, entry, held, (at + r.lowerBound)..<(at + r.upperBound))
                case .end: sessions[id].responseBody = .none
                case .needMore: break
                }
                at += out.consumed
                if out.event == .needMore { break }
            }
        } catch {
            Log.debug("malformed upstream chunked body (UPE): \(error)")
            fail(id, .badGateway, reactor)
            return nil
        }
        return at
    }

    private func responseBody(_ id: SID, _ reactor: Reactor<Backend>, from: Int = 0) {
        let entry = Int(id.index)
        if sessions[id].dechunk {
            toClient.reset(entry)
            guard let end = appendDechunked(id, from: from, reactor) else { return }
            sessions[id].responseSentTo = end
            sessions[id].response = .sending
            sendToClient(id, reactor)
            return
        }
        guard let end = takeResponseBody(id, from: 0, reactor) else { return }
        toClient.reset(entry)
        _ = bytes.append(toClient, entry, sessions[id].responseHeld, 0..<end)
        sessions[id].responseSentTo = end
        sessions[id].response = .sending
        sendToClient(id, reactor)
    }

    private func sendToClient(_ id: SID, _ reactor: Reactor<Backend>) {
        if toClient.remaining(Int(id.index)) == 0 {
            clientSent(id, 0, reactor, nothing: true)
            return
        }
        sessions[id].sending = true
        sessions[id].inflight += 1
        reactor.backend.send(fd: sessions[id].fd, vectors: toClient, index: Int(id.index), token: token(.clientSend, id))
    }

    private func clientSent(_ id: SID, _ result: Int32, _ reactor: Reactor<Backend>, nothing: Bool = false) {
        if sessions[id].phase == .closing {
            finishSessionIfQuiet(id, reactor)
            return
        }
        if sessions[id].phase == .lingering { return }
        if result < 0 {
            Log.debug("send to client failed: \(Errno.name(-result))")
            closeSession(id, reset: true, reactor)
            return
        }
        let entry = Int(id.index)
        if !nothing {
            toClient.advance(entry, by: Int(result))
            sessions[id].lastActivity = System.monotonicNanos()
            sessions[id].responseWire &+= UInt64(result)
        }
        if toClient.remaining(entry) > 0 {
            sendToClient(id, reactor)
            return
        }
        if sessions[id].response == .reply {
            sessions[id].reply = nil
            dropHeld(&sessions[id].responseHeld, reactor)
            if sessions[id].keepAlive {
                exchangeDone(id, reactor)
            } else {
                recordExchange(id)
                lingerClose(id, reactor)
            }
            return
        }
        if let reply = sessions[id].pendingReply {
            sessions[id].pendingReply = nil
            sendReply(id, reply, reactor)
            return
        }
        sessions[id].responseHeld.start = sessions[id].responseSentTo
        dropHeld(&sessions[id].responseExtras, reactor)
        if sessions[id].response == .tunnel {
            dropHeld(&sessions[id].responseHeld, reactor)
            if !sessions[id].upstreamEOF, let u = sessions[id].upstream { receiveFromUpstream(u, reactor) }
            return
        }
        if sessions[id].interimLength > 0 {
            // An interim response went out: the final one follows.
            sessions[id].interimLength = 0
            prepareResponseParser(id)
            sessions[id].response = .head
            if sessions[id].responseHeld.isEmpty {
                dropHeld(&sessions[id].responseHeld, reactor)
                if let u = sessions[id].upstream { receiveFromUpstream(u, reactor) }
            } else {
                responseHead(id, reactor)
            }
            return
        }
        if sessions[id].tunnelNext {
            startTunnel(id, reactor)
            return
        }
        if sessions[id].responseBody == .none {
            responseDone(id, reusable: sessions[id].upstreamReusable, reactor)
        } else if case .length(let left) = sessions[id].responseBody, left >= Self.spliceThreshold,
                  sessions[id].responseHeld.isEmpty, let u = sessions[id].upstream, let pipe = reactor.pipes.acquire()
        {
            dropHeld(&sessions[id].responseHeld, reactor)
            sessions[id].responsePipe = pipe
            sessions[id].response = .splicing
            Log.debug("response body spliced: \(left) bytes")
            responseSpliceIn(id, u, reactor)
        } else if sessions[id].dechunk && !sessions[id].responseHeld.isEmpty {
            // Decoding stopped at the send's segment limit: go on with the bytes still held.
            sessions[id].response = .body
            responseBody(id, reactor, from: sessions[id].responseHeld.start)
        } else {
            sessions[id].response = .body
            dropHeld(&sessions[id].responseHeld, reactor)
            if let u = sessions[id].upstream { receiveFromUpstream(u, reactor) }
        }
    }

    /// The whole response went to the client.
    private func responseDone(_ id: SID, reusable: Bool, _ reactor: Reactor<Backend>) {
        sessions[id].response = .done
        // Bytes after the response mean the upstream cannot be trusted with another request.
        let clean = reusable && sessions[id].responseHeld.isEmpty
        dropHeld(&sessions[id].responseHeld, reactor)
        if sessions[id].request != .done {
            // The upstream answered before the request ended (an early 413, say): stop forwarding it; the
            // client connection closes since the rest of its request is unread.
            sessions[id].keepAlive = false
            detachUpstream(id, reusable: false, reactor)
            exchangeDone(id, reactor)
            return
        }
        detachUpstream(id, reusable: clean, reactor)
        exchangeDone(id, reactor)
    }

    /// A new exchange's report starts empty.
    private func beginExchange(_ id: SID) {
        sessions[id].recorded = false
        sessions[id].status = 0
        sessions[id].flags = []
        sessions[id].service = 0
        sessions[id].requestWire = 0
        sessions[id].responseWire = 0
        sessions[id].responseHeads = 0
        sessions[id].upstreamStart = 0
        sessions[id].upstreamHead = 0
        sessions[id].upstreamIndex = -1
        sessions[id].requestHeadLength = 0
        sessions[id].answeredBy = nil
        if !sessions[id].routeName.isEmpty { sessions[id].routeName = "" }
        sessions[id].trace = TraceContext()
        if capture != nil {
            // Wall-clock start from the monotonic one and the offset the loop refreshes (no clock call here).
            sessions[id].startWall = (sessions[id].headStart &+ wallOffsetNanos) / 1000
        }
    }

    /// Reports the exchange once: one istio_requests_total increment and its histograms, and its span when
    /// the request is sampled.
    private func recordExchange(_ id: SID) {
        guard !sessions[id].recorded else { return }
        sessions[id].recorded = true
        let micros = (System.monotonicNanos() &- sessions[id].headStart) / 1000
        if let metrics {
            let key = SeriesKey(service: sessions[id].service, code: sessions[id].status, flags: sessions[id].flags, protocol: .http)
            metrics.request(key, durationMicros: micros, requestBytes: sessions[id].requestWire, responseBytes: sessions[id].responseWire)
        }
        if let spans = reporting.spans, let capture, sessions[id].trace.sampled == true {
            var span = SpanRecord(context: sessions[id].trace, kind: reporting.spanKind, startMicros: sessions[id].startWall)
            span.setRequest(from: capture, slot: Int(id.index))
            span.durationMicros = max(micros, 1)
            span.responseCode = UInt16(clamping: sessions[id].status)
            span.responseFlags = sessions[id].flags
            span.requestBytes = sessions[id].requestWire
            span.responseBytes = sessions[id].responseWire
            span.httpProtocol = sessions[id].http10 ? .http10 : .http11
            let c = Int(sessions[id].cluster)
            if c >= 0 && c < clusterNames.count {
                span.operation = clusterOperations[c]
                span.upstreamCluster = clusterNames[c]
            } else if routes == nil, sessions[id].upstreamIndex >= 0 {
                span.operation = endpointNames[sessions[id].upstreamIndex]
                span.upstreamCluster = endpointNames[sessions[id].upstreamIndex]
            } else {
                span.operation = "-"
                span.upstreamCluster = "-"
            }
            _ = spans.record(span)
        }
        if let log = reporting.accessLog {
            var r = AccessLogRecord()
            r.startMicros = sessions[id].startWall
            r.durationMicros = micros
            let up = sessions[id].upstreamStart, head = sessions[id].upstreamHead
            r.upstreamServiceMicros = up > 0 && head >= up ? (head - up) / 1000 : nil
            r.responseCode = sessions[id].status
            r.flags = sessions[id].flags
            r.bytesReceived = sessions[id].requestWire &- min(sessions[id].requestHeadLength, sessions[id].requestWire)
            r.bytesSent = sessions[id].responseWire &- min(sessions[id].responseHeads, sessions[id].responseWire)
            r.protocol = sessions[id].http10 ? .http10 : .http11
            let e = sessions[id].upstreamIndex
            if e >= 0 { r.upstreamHost = endpointNames[e] }
            let c = Int(sessions[id].cluster)
            if c >= 0 && c < clusterNames.count { r.upstreamCluster = clusterNames[c] }
            r.routeName = sessions[id].routeName
            if let reply = sessions[id].answeredBy {
                r.responseCodeDetails = reply.details
            } else if sessions[id].status != 0 {
                r.responseCodeDetails = "via_upstream"
            } else if sessions[id].flags.contains(.downstreamConnectionTermination) {
                r.responseCodeDetails = "downstream_remote_disconnect"
            }
            log.append(r, capture: capture, slot: Int(id.index))
        }
    }

    /// Both sides of the exchange are finished: wait for the next request, or close.
    private func exchangeDone(_ id: SID, _ reactor: Reactor<Backend>) {
        recordExchange(id)
        requestFinished(id)
        sessions[id].exchange = false
        sessions[id].retryFrom = nil
        // While draining, a connection whose response still promised keep-alive waits for one more request,
        // answered with "connection: close" (closing now could lose a request already sent).
        if !sessions[id].keepAlive {
            lingerClose(id, reactor)
            return
        }
        requestParsers.parsers[Int(sessions[id].requestParser)].reset()
        sessions[id].request = .head
        sessions[id].response = .idle
        sessions[id].responseStarted = false
        if sessions[id].requestHeld.isEmpty {
            dropHeld(&sessions[id].requestHeld, reactor)
            awaitRequest(id, reactor)
        } else {
            // A pipelined request is already here.
            sessions[id].headStart = System.monotonicNanos()
            requestHead(id, reactor)
        }
    }

    // MARK: - Tunnels (Upgrade, CONNECT)

    private func startTunnel(_ id: SID, _ reactor: Reactor<Backend>) {
        // The upgrade counts as a request when its tunnel starts; the tunnel's bytes are not counted.
        recordExchange(id)
        requestFinished(id)
        cancel(&sessions[id].upstreamTimer, reactor)
        cancel(&sessions[id].streamTimer, reactor)
        sessions[id].request = .tunnel
        sessions[id].response = .tunnel
        sessions[id].retryFrom = nil
        guard let u = sessions[id].upstream else { return bug("tunnel without an upstream") }
        if sessions[id].requestHeld.isEmpty && sessions[id].responseHeld.isEmpty && sessions[id].inflight == 0
            && upstreams[u].inflight == 0 && handOver(id, u, reactor)
        {
            return
        }
        // Bytes already read on either side (sent right after the request or the 101) go through buffers;
        // such a tunnel stays here, forwarding buffer by buffer.
        // Bytes that followed the 101 head from the upstream, or the request from the client, go first.
        if !sessions[id].responseHeld.isEmpty {
            tunnelToClient(id, reactor)
        } else {
            dropHeld(&sessions[id].responseHeld, reactor)
            receiveFromUpstream(u, reactor)
        }
        if !sessions[id].requestHeld.isEmpty {
            tunnelToUpstream(id, reactor)
        } else {
            dropHeld(&sessions[id].requestHeld, reactor)
            receiveFromClient(id, reactor)
        }
    }

    /// Gives both sockets of a tunnel to the splicing relay and forgets the session and upstream connection
    /// (without closing their sockets, and with the connection still counted as active: the relay ends it).
    private func handOver(_ id: SID, _ u: UID, _ reactor: Reactor<Backend>) -> Bool {
        let client = sessions[id].fd, upstream = upstreams[u].fd
        guard tunnels.adopt(client: client, upstream: upstream, reactor) else { return false }
        Log.debug("tunnel handed to the splice relay")
        let e = upstreams[u].endpoint
        upstreams.remove(u)
        upstreamCount[e] -= 1
        metrics?.endpoint(endpointKeys[e], EndpointWords.connections, -1)
        dropHeld(&sessions[id].requestHeld, reactor)
        dropHeld(&sessions[id].responseHeld, reactor)
        requestParsers.give(sessions[id].requestParser)
        responseParsers.give(sessions[id].responseParser)
        cancel(&sessions[id].idleTimer, reactor)
        cancel(&sessions[id].headerTimer, reactor)
        sessions.remove(id)
        reactor.control.activeConnections.store(sessions.count + tunnels.count, ordering: .relaxed)
        connectWaiting(e, reactor)
        return true
    }

    private func tunnelToUpstream(_ id: SID, _ reactor: Reactor<Backend>) {
        guard let u = sessions[id].upstream else { return }
        let held = sessions[id].requestHeld
        toUpstream.reset(Int(u.index))
        _ = bytes.append(toUpstream, Int(u.index), held, held.start..<held.end)
        sessions[id].requestSentTo = held.end
        sendToUpstream(id, u, reactor)
    }

    private func tunnelToClient(_ id: SID, _ reactor: Reactor<Backend>) {
        let held = sessions[id].responseHeld
        toClient.reset(Int(id.index))
        _ = bytes.append(toClient, Int(id.index), held, held.start..<held.end)
        sessions[id].responseSentTo = held.end
        sendToClient(id, reactor)
    }

    // MARK: - Failures and closing

    /// Ends the exchange with a local reply when nothing of the response has reached the client yet, else by
    /// resetting the client connection (a truncated response must not look complete).
    private func fail(_ id: SID, _ reply: LocalReply, _ reactor: Reactor<Backend>) {
        if sessions[id].phase != .open || sessions[id].reply != nil { return }
        // A refused head (400, 408, 414, 431) is a request too, though no exchange began.
        if !sessions[id].exchange && sessions[id].recorded { beginExchange(id) }
        sessions[id].flags.formUnion(reply.responseFlags)
        if sessions[id].answeredBy == nil { sessions[id].answeredBy = reply }
        detachUpstream(id, reusable: false, reactor)
        if sessions[id].responseStarted {
            Log.debug("\(reply.flag) after the response started: resetting the client connection")
            closeSession(id, reset: true, reactor)
            return
        }
        if sessions[id].sending {
            // An interim response is on its way; the reply follows it.
            sessions[id].pendingReply = reply
            sessions[id].reply = reply
            return
        }
        sendReply(id, reply, reactor)
    }

    private func sendReply(_ id: SID, _ reply: LocalReply, _ reactor: Reactor<Backend>) {
        Log.debug("local reply \(reply.status) \(reply.flag)")
        cancel(&sessions[id].headerTimer, reactor)
        cancel(&sessions[id].upstreamTimer, reactor)
        cancel(&sessions[id].streamTimer, reactor)
        // The connection stays open only when the whole request was read (and forwarded): otherwise the rest of
        // it is still unread in the socket.
        let keep = sessions[id].request == .done && sessions[id].keepAlive && !draining
        sessions[id].reply = reply
        sessions[id].keepAlive = keep
        sessions[id].responseStarted = true
        sessions[id].response = .reply
        // The request is abandoned: a queued one is skipped when its turn comes.
        sessions[id].request = .done
        dropHeld(&sessions[id].responseHeld, reactor)
        let entry = Int(id.index)
        toClient.reset(entry)
        _ = bytes.append(toClient, entry, reply, close: !keep)
        sessions[id].status = reply.status
        sessions[id].responseHeads &+= UInt64(toClient.remaining(entry) - reply.body.utf8.count)
        sendToClient(id, reactor)
    }

    /// Closes the write side and reads what the client still sends until it closes or the linger time passes.
    private func lingerClose(_ id: SID, _ reactor: Reactor<Backend>) {
        sessions[id].phase = .lingering
        cancel(&sessions[id].idleTimer, reactor)
        cancel(&sessions[id].headerTimer, reactor)
        dropHeld(&sessions[id].requestHeld, reactor)
        dropHeld(&sessions[id].responseHeld, reactor)
        _ = System.shutdown(sessions[id].fd, write: true, read: false)
        sessions[id].lingerTimer = reactor.timers.schedule(token(.lingerTimer, id), at: deadline(after: settings.lingerTimeout))
        receiveFromClient(id, reactor)
    }

    /// Unbinds the exchange's upstream connection: back to the pool or to a waiting request when `reusable`,
    /// else closed.
    private func detachUpstream(_ id: SID, reusable: Bool, _ reactor: Reactor<Backend>) {
        guard let u = sessions[id].upstream else {
            // Perhaps still waiting in the queue: it is skipped when popped (no longer waiting).
            return
        }
        sessions[id].upstream = nil
        upstreams[u].session = nil
        if reusable && upstreams[u].state == .bound && !upstreams[u].sending {
            recycle(u, reactor)
        } else {
            closeUpstream(u, reactor)
        }
    }

    /// A clean upstream connection: to the oldest waiting request, or the idle pool, or closed.
    private func recycle(_ u: UID, _ reactor: Reactor<Backend>) {
        let e = upstreams[u].endpoint
        upstreams[u].session = nil
        while let next = pending[e].pop() {
            guard sessions.isCurrent(next), sessions[next].phase == .open, sessions[next].request == .waiting,
                  sessions[next].upstream == nil else { continue }
            bind(u, to: next, reused: true, reactor)
            return
        }
        guard !draining && idle[e].count < settings.maxIdleUpstream else {
            closeUpstream(u, reactor)
            return
        }
        upstreams[u].state = .idle
        idleUpstreams += 1
        upstreams[u].idleSince = System.monotonicNanos()
        idle[e].append(u)
        if upstreams[u].poolTimer == nil {
            upstreams[u].poolTimer = reactor.timers.schedule(token(.poolTimer, u), at: deadline(after: settings.upstreamIdleTimeout))
        }
        // Armed while idle so a close by the upstream is seen at once (and the connection dropped).
        receiveFromUpstream(u, reactor)
    }

    /// An upstream connection failed while connecting (UF) or was lost: its exchange gets the answer.
    private func upstreamFailed(_ u: UID, connecting: Bool, _ reactor: Reactor<Backend>) {
        let id = upstreams[u].session
        upstreams[u].session = nil
        closeUpstream(u, reactor)
        if let id, sessions.isCurrent(id), sessions[id].upstream == u {
            sessions[id].upstream = nil
            fail(id, connecting ? .connectFailure : .connectionTermination, reactor)
        }
    }

    private func closeUpstream(_ u: UID, _ reactor: Reactor<Backend>) {
        if upstreams[u].state == .closing { return }
        if let id = upstreams[u].session, sessions.isCurrent(id), sessions[id].upstream == u { sessions[id].upstream = nil }
        upstreams[u].session = nil
        if upstreams[u].state == .idle { idleUpstreams -= 1 }
        upstreams[u].state = .closing
        cancel(&upstreams[u].connectTimer, reactor)
        cancel(&upstreams[u].poolTimer, reactor)
        let fd = upstreams[u].fd
        if upstreams[u].inflight > 0 {
            if upstreams[u].receiving { reactor.backend.cancel(fd: fd, token: token(.upstreamReceive, u)) }
            if upstreams[u].sending { reactor.backend.cancel(fd: fd, token: token(.upstreamSend, u)) }
            if upstreams[u].splice != 0 {
                reactor.backend.cancel(fd: fd, token: Token(op: upstreams[u].splice, slot: u.index, generation: u.generation))
            }
            reactor.backend.cancel(fd: fd, token: token(.upstreamConnect, u))
            _ = System.shutdown(fd, write: false, read: true)
        }
        finishUpstreamIfQuiet(u, reactor)
    }

    private func finishUpstreamIfQuiet(_ u: UID, _ reactor: Reactor<Backend>) {
        guard upstreams[u].inflight == 0 else { return }
        let e = upstreams[u].endpoint
        reactor.backend.unregister(fd: upstreams[u].fd)
        System.close(upstreams[u].fd)
        upstreams.remove(u)
        upstreamCount[e] -= 1
        metrics?.endpoint(endpointKeys[e], EndpointWords.connections, -1)
        connectWaiting(e, reactor)
    }

    /// A connection slot to endpoint `e` opened: the oldest waiting request gets a new connection.
    private func connectWaiting(_ e: Int, _ reactor: Reactor<Backend>) {
        while let next = pending[e].pop() {
            guard sessions.isCurrent(next), sessions[next].phase == .open, sessions[next].request == .waiting,
                  sessions[next].upstream == nil else { continue }
            connect(for: next, reactor)
            break
        }
    }

    private func closeSession(_ id: SID, reset: Bool, _ reactor: Reactor<Backend>) {
        if sessions[id].phase == .closing { return }
        if !sessions[id].recorded {
            // The exchange ends with the connection: the client went away (DC), or a failure after the
            // response started already set its flag.
            if sessions[id].flags.isEmpty { sessions[id].flags = .downstreamConnectionTermination }
            recordExchange(id)
        }
        if reset {
            counters.resetsPropagated.add(1, ordering: .relaxed)
            System.setLingerReset(sessions[id].fd)
        }
        sessions[id].phase = .closing
        detachUpstream(id, reusable: false, reactor)
        cancel(&sessions[id].headerTimer, reactor)
        cancel(&sessions[id].idleTimer, reactor)
        cancel(&sessions[id].upstreamTimer, reactor)
        cancel(&sessions[id].streamTimer, reactor)
        cancel(&sessions[id].lingerTimer, reactor)
        let fd = sessions[id].fd
        if sessions[id].inflight > 0 {
            if sessions[id].receiving { reactor.backend.cancel(fd: fd, token: token(.clientReceive, id)) }
            if sessions[id].sending { reactor.backend.cancel(fd: fd, token: token(.clientSend, id)) }
            if sessions[id].clientSplice != 0 {
                reactor.backend.cancel(fd: fd, token: Token(op: sessions[id].clientSplice, slot: id.index, generation: id.generation))
            }
            _ = System.shutdown(fd, write: false, read: true)
        }
        finishSessionIfQuiet(id, reactor)
    }

    private func finishSessionIfQuiet(_ id: SID, _ reactor: Reactor<Backend>) {
        guard sessions[id].inflight == 0 else { return }
        requestFinished(id)
        dropHeld(&sessions[id].requestExtras, reactor)
        dropHeld(&sessions[id].responseExtras, reactor)
        // A pipe left mid-transfer may hold bytes, and a cancelled splice of the upstream socket may still
        // hold it: it is closed, never reused (the kernel keeps its own reference while an operation runs).
        for pipe in [sessions[id].requestPipe, sessions[id].responsePipe] {
            if let pipe { reactor.pipes.release(pipe, holdsData: true) }
        }
        dropHeld(&sessions[id].requestHeld, reactor)
        dropHeld(&sessions[id].responseHeld, reactor)
        requestParsers.give(sessions[id].requestParser)
        responseParsers.give(sessions[id].responseParser)
        reactor.backend.unregister(fd: sessions[id].fd)
        System.close(sessions[id].fd)
        sessions.remove(id)
        counters.active.subtract(1, ordering: .relaxed)
        reactor.control.activeConnections.store(sessions.count, ordering: .relaxed)
    }
}
