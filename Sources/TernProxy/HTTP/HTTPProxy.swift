// The HTTP engine (ARCHITECTURE.md §1): one `HTTPProxy` per reactor, the handler its loop calls; all its state
// is owned by that thread. This file holds the handler itself (settings, the slabs, completion and timer
// dispatch by op kind); the request path is spread over the folders named after its parts:
//
//   Listener/Acceptor          accept (multishot), back-off on EMFILE, stop accepting at the descriptor cap
//   Downstream/                the client connection: its descriptor, transport, timers and the exchange it carries
//   Transport/                 plain today; TLS plugs in here (received bytes → plaintext, plaintext → bytes to send)
//   Exchange/                  one request and its response: request side, response side, spliced bodies, tunnels,
//                              local responses, and the report (metrics, access log, span)
//   Filters/                   the route phase: routing, route responses, header edits and rewrites
//   Router/                    the upstream attempt; ProxyError and RetryPolicy: where a retry is decided
//   Cluster/                   the cluster runtime: load balancers (kept across table swaps), per-endpoint HTTP/1.1 pools
//   Upstream/                  the upstream connection
//   Relay/                     the TCP splice relay (tunnels are handed to it) and its router
//
// A request runs: accept (Listener) → client bytes received (Downstream) → head parsed (Exchange/Request) →
// route phase (Filters) → attempt gets a pooled or new connection (Router, Cluster) → head and body sent
// (Exchange/Request, Splice) → response head parsed and sent to the client (Exchange/Response) → report
// (Exchange/Report) → the connection waits for its next request, or closes (Downstream).
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTLS
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
    /// `--accept-http-10`: HTTP/1.0 requests are proxied (with a Host field); without it they are answered 426
    /// Upgrade Required, as Envoy and Istio answer them by default.
    public var acceptHTTP10 = false
    /// `--path-normalization`: how request paths are normalised before routing, policies and forwarding (Istio's
    /// MeshConfig pathNormalization; BASE by default, as Istio's).
    public var pathNormalization = PathNormalization.base
    /// A mirrored request's Host gets `-shadow` appended (Envoy's default); off with `--no-shadow-host-suffix`.
    public var shadowHostSuffix = true
    /// `--outbound-traffic-policy` (Istio's MeshConfig outboundTrafficPolicy.mode): with ALLOW_ANY (true) a request
    /// whose Host names no service of the configuration goes to the intercepted connection's original destination
    /// (Istio's PassthroughCluster); with REGISTRY_ONLY (false) it is answered 502 (flag NR).
    public var allowAnyOutbound = true
    /// `--inbound-ports PORT/HTTP2|GRPC`: the app's ports an inbound side speaks HTTP/2 to (h2c with prior
    /// knowledge), whatever its client spoke, as Istio's inbound cluster of an HTTP2 or GRPC port; the others get
    /// HTTP/1.1.
    public var inboundHTTP2Ports: [UInt16] = []
    /// `--first-byte-timeout`: from the accept to the connection's first byte (a connection that never sends
    /// is not kept for the idle timeout).
    public var firstByteTimeout = TernDuration.seconds(10)
    /// `--max-head-memory-mb`: memory each reactor gives request heads that arrive in pieces and outgrow a small
    /// buffer (a head that arrives whole in one read takes none); a head that would need more is answered 503.
    public var maxHeadMemoryBytes = 64 << 20
    /// `--per-request-buffer-kb`: under a retry policy, a Content-Length body up to this size is gathered whole
    /// (with its head, in one assembly buffer, from the head memory budget) before the request goes upstream, so
    /// a retry can send it again; larger bodies, chunked ones and `Expect: 100-continue` stream and are not retried.
    public var perRequestBufferBytes = 64 << 10
    /// `--stream-idle-timeout`: an exchange with no bytes moving for this long is ended.
    public var streamIdleTimeout = TernDuration.seconds(300)
    /// `--max-idle-upstream`: idle keep-alive connections kept per endpoint, per reactor (memory, not a circuit
    /// breaker: the process-wide limits are `RelaySettings.circuits`).
    public var maxIdleUpstream = 64
    /// How long a closing client connection is read and discarded after the last response, so that unread
    /// request bytes do not turn the close into a reset that destroys the response (lingering close).
    public var lingerTimeout = TernDuration.seconds(2)
    /// How long the drain waits between its HTTP/2 notice and the final GOAWAY for a client that does not answer
    /// the notice's PING (a quarter of --drain-timeout, 1 s to half of it; set by the server, not a flag).
    public var drainNoticeWait = TernDuration.seconds(1)
    /// `--tls-handshake-timeout`: from the accept of a TLS connection to the end of its handshake.
    public var tlsHandshakeTimeout = TernDuration.seconds(10)
    /// HTTP/2 from clients (Downstream/HTTPProxy+H2+Unsafe.swift): `--http2-max-concurrent-streams` (Envoy's
    /// `max_concurrent_streams`; Tern's default is nghttp2's 100, where Envoy allows 2^31-1),
    /// `--http2-connection-window-kb` (`initial_connection_window_size`) and `--http2-max-frame-size`. A stream's
    /// window stays HTTP/2's initial 65,535 bytes: what a stream's request body may hold in Tern's buffers.
    public var http2MaxConcurrentStreams: UInt32 = 100
    public var http2ConnectionWindow: UInt32 = 512 << 10
    public var http2MaxFrameSize: UInt32 = 16_384
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

/// A request waiting for a descriptor to open its upstream socket, and since when.
struct DescriptorWaiter {
    var exchange: XID
    var since: UInt64
}

public final class HTTPProxy<Backend: IOBackend>: ReactorHandler {
    /// Op kinds from 32 up; those below belong to the embedded relay that splices tunnels.
    enum Op: UInt8 {
        case accept = 32, acceptBackoff
        case clientReceive, clientSend
        case upstreamConnect, upstreamReceive, upstreamSend
        case headerTimer, idleTimer, lingerTimer
        /// The exchange's timer (keyed by exchange, not connection): upstream timeout and stream idle timeout.
        case exchangeTimer
        case connectTimer, poolTimer
        /// Content-Length bodies spliced through a pipe: into it from the sending side, out of it to the other.
        case requestSpliceIn, requestSpliceOut, responseSpliceIn, responseSpliceOut
        /// Wakes the loop when the descriptor cap has been reached for `shedGrace` (slot and generation 0).
        case shedTimer
        /// Retries the upstream sockets of `descriptorWaiters` (slot and generation 0).
        case descriptorRetry
        /// A TLS client connection's socket operations (ciphertext), and its handshake deadline.
        case tlsClientReceive, tlsClientSend, tlsHandshakeTimer
        /// A TLS upstream connection's socket operations (ciphertext).
        case tlsUpstreamReceive, tlsUpstreamSend
        /// A mirror connection's operations and its timer (Router/HTTPProxy+Mirror.swift), keyed by mirror connection.
        case mirrorConnect, mirrorSend, mirrorReceive, mirrorTimer
        /// Wakes the loop at once for HTTP/2 streams that have work left for the next iteration (slot 0).
        case h2Kick
        /// The drain's second step: the final GOAWAY to HTTP/2 clients that have not answered the notice (slot 0).
        case h2Drain
        /// An HTTP/2 upstream connection's keepalive PING (keyed by its slot).
        case h2Ping
    }

    /// How close to the descriptor cap idle client connections start to be closed for new ones.
    static var evictionMargin: Int { 16 }
    /// How close to the descriptor cap accepting pauses: the last descriptors below it are left for upstream
    /// connections (the open-file limit keeps a further reserve beyond the cap).
    static var acceptMargin: Int { 8 }
    /// How long new connections wait in the listen backlog at the descriptor cap when no idle connection can be
    /// closed for them: past it, each is answered 503 with `connection: close` at once (Envoy's overload manager
    /// rejects, HAProxy queues without bound; waiting for ever behind long requests helps no client).
    static var shedGrace: UInt64 { 1_000_000_000 }
    /// The answer to a connection shed at the descriptor cap, sent before its request is read.
    let overloadReply: [UInt8] = Array(LocalReply.overloaded.wire(close: true).utf8)

    /// A Content-Length body with at least this much left after its head is spliced (socket → pipe → socket,
    /// as the TCP relay moves bytes) instead of passing through receive buffers.
    static var spliceThreshold: UInt64 { 64 * 1024 }

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

    let settings: HTTPSettings
    let relay: RelaySettings
    let counters: RelayCounters
    /// Each upstream endpoint's HTTP/1.1 pool: with `--upstream`, one per listener (by listener index); with
    /// `--config`, one per endpoint the bound table names (and those still in use after it stopped naming them).
    var pools: UpstreamPools
    /// Routing from Istio configuration (`--config`): this reactor's view of the published route tables, the
    /// load-balancer state per cluster (kept across swaps) and each cluster's endpoints as pool indexes.
    let routes: SnapshotReader<RouteTable>?
    /// An inbound side (`--upstream` with `--config`): the configuration's AuthorizationPolicies for this workload,
    /// decided for each request before it goes to the upstream (Filters/HTTPProxy+Authorization.swift); routing
    /// stays the listener's upstream.
    let policies: SnapshotReader<RouteTable>?
    /// A request field's values joined (AuthorizationTable.evaluate's scratch; capacity kept), and each listener's
    /// upstream port (the workload port policies see as `destination.port`).
    var authorizationScratch: [UInt8] = []
    /// The denial counters of the policies of the table bound last (by its `policyNames` index; the last one for
    /// "no ALLOW policy matched"), and that table.
    var denialCounters: [(enforced: SharedCounter, dryRun: SharedCounter)] = []
    var denialTable: AuthorizationTable? = nil
    let listenerUpstreamPorts: [UInt16]
    /// Per listener: a sidecar's inbound listener beside its outbound ones (`--inbound`: the bound table's policies
    /// apply to it, its requests go to its upstream or their original destination), the port it listens on, and
    /// its circuit (the `--upstream` and `--inbound` listeners').
    let listenerInbound: [Bool]
    let listenerPorts: [UInt16]
    var listenerCircuits: [ClusterCircuit] = []
    /// Istio's PassthroughCluster: requests of an outbound listener to an original destination no service names.
    let passthroughCircuit: ClusterCircuit?
    private let listenerCircuitNames: Set<String>
    var balancers = LoadBalancers()
    /// The route tables live exchanges were routed with (their routes are read in place, never copied).
    var routedTables = RoutedTables()
    /// The epoch of the route table bound last.
    var boundEpoch: UInt64 = 0
    var clusterEndpoints: [[Int]] = []
    /// Each cluster's circuit breakers (by cluster index of the bound table; with `--upstream`, by listener).
    var clusterCircuits: [ClusterCircuit] = []
    /// This reactor's index: its reader of the published tables, and its copy of each of their regexes (tables
    /// are compiled with one copy per reactor, `CompiledRegex`).
    let reactorIndex: Int
    var random: SplitMix
    let acceptor: Acceptor<Backend>
    let downstreams: Slab<DownstreamConnection>
    /// Client connections waiting for a request, oldest first: closed first when descriptors run short.
    var idle = IdleList()
    /// Exchanges, keyed by their own id: their upstream operations, queue places and timer carry it.
    let exchanges: Slab<Exchange>
    let upstreams: Slab<UpstreamConnection>
    /// Mirrored requests (Router/HTTPProxy+Mirror.swift): their connections, the idle ones by endpoint, the memory
    /// of their requests and response heads, and where a request is composed to be copied to them.
    let mirrors: Slab<MirrorConnection>
    /// Idle mirror connections by endpoint pool index (grown with the pools when a table is bound; each list keeps
    /// its capacity, so taking and returning connections allocates nothing).
    var mirrorIdle: [[MID]] = []
    var mirrorIdleCount = 0
    let mirrorMemory: MirrorMemory
    let mirrorVecs = IOVecTable(count: 1, maxSegments: 48)
    var mirrorReaders = [MirrorResponse?](repeating: nil, count: HTTPProxy.mirrorSlots)
    let bytes: HTTPBytes
    /// The reactor's buffers (HTTP/2 writes frames and its streams' bytes into spare ones).
    let pool: BufferPool
    /// HTTP/2 (Downstream/HTTPProxy+H2+Unsafe.swift): where a stream's head is written as HTTP/1.1, streams with
    /// bytes or a send to report this iteration, connections waiting for a spare buffer, and the streams open.
    var h2Scratch: [UInt8] = []
    /// A normalised request path is written here first (`HTTPBytes.normalizePath`).
    var pathScratch: [UInt8] = []
    var h2ReadyList: [DID] = []
    var h2Starved: [DID] = []
    /// The spare buffers HTTP/2 streams hold, all connections together (at most half the spare pool).
    lazy var h2Shares = H2Shares(limit: pool.spare / 2)
    var h2StreamCount = 0
    var h2KickArmed = false
    /// Arrays a chunked body's trailer section is kept in (`H2BodyOut.trailers`), lent to a stream when it sends
    /// such a body and taken back, emptied with their capacity, when it ends: gRPC's trailers allocate nothing.
    var h2TrailerArrays: [[UInt8]] = []
    /// Upstream HTTP/2 streams with bytes for an engine that asked, or sends to report; and those waiting for a
    /// spare buffer (Upstream/HTTPProxy+H2Upstream+Unsafe.swift).
    var h2uReadyList: [UID] = []
    var h2uStarved: [UID] = []
    /// Upstream slots that are HTTP/2 streams, not connections (for the connection gauges).
    var h2uStreamCount = 0
    /// Each cluster's upstream protocol (by the bound table's cluster index).
    var clusterProtocols: [UpstreamProtocol] = []
    let toClient: IOVecTable
    let toUpstream: IOVecTable
    var requestParsers: ParserPool
    var responseParsers: ParserPool
    /// Upstream connections in the idle state (the pool-size gauge), kept as they change state.
    var idleUpstreams = 0
    var draining = false
    var stopping = false
    /// When the descriptor cap was reached with nothing idle to close (0: not now), and whether new connections
    /// are being answered 503 because that has lasted `shedGrace`.
    var saturatedSince: UInt64 = 0
    var shedding = false
    /// Connections closed to make room at the descriptor cap whose sockets are not closed yet.
    var closingForRoom = 0
    /// Exchanges whose upstream socket could not be opened for lack of descriptors (EMFILE/ENFILE): retried on
    /// `descriptorRetry` until one is free or their own deadlines end them.
    var descriptorWaiters: [DescriptorWaiter] = []
    var descriptorRetryArmed = false
    /// While `retryDescriptorWaiters` runs one, when that request began to wait: a wait again keeps its start
    /// and is not counted anew.
    var retryingSince: UInt64? = nil
    let trustedClient: Bool
    /// Splices Upgrade and CONNECT tunnels once their 101 or 2xx went out (ARCHITECTURE.md §4), and relays the
    /// connections of TCP listeners when the process has listeners of both kinds.
    let tunnels: TCPRelay<Backend>
    /// This reactor's metrics (nil: metrics off), and each cluster's service id in them.
    let metrics: MetricsShard?
    let services: ServiceRegistry?
    let peers: PeerRegistry?
    var clusterServices: [UInt32] = []
    /// The head length of a response Tern composed (a self field: a captured local would be boxed).
    var composedHeadLength = 0
    /// Spans and the request values they report (nil capture: nothing is reported beside metrics).
    let reporting: ProxyReporting
    let capture: RequestCapture?
    /// Each listener's address as the access log shows it.
    let listenerNames: [String]
    /// Per listener: a TCP listener terminating TLS, whose connections are relayed (Relay/HTTPProxy+TCP.swift),
    /// and the router that picks their upstreams (nil when there is none).
    let listenerRelaysTCP: [Bool]
    let relayRouter: TCPRouter?
    /// TLS termination (`--tls-cert`): the current server context, the sessions and links of this reactor's
    /// connections, the connections with plaintext ready for the engine, and those waiting for a spare buffer.
    let tlsPolicy: SnapshotReader<TLSServerPolicy>?
    let tls: TLSIO?
    var tlsReady: [TLSEnd] = []
    var tlsStarved: [TLSEnd] = []
    var tlsSentEarly: [TLSEnd] = []
    /// TLS origination (DestinationRule `trafficPolicy.tls`): the client contexts of the route tables, published
    /// before each table, and this reactor's upstream sessions.
    let originations: SnapshotReader<TLSOriginations>?
    let upstreamTLS: TLSIO?
    /// Wall clock minus monotonic clock, in nanoseconds, refreshed once per loop iteration while something
    /// reports request start times (spans, access log).
    var wallOffsetNanos: UInt64 = 0

    /// `listeners` accept HTTP; `tcpListeners` (a process with listeners of both kinds) accept TCP connections,
    /// which the embedded relay routes and splices as the TCP proxy does.
    public init(listeners: [RelayListener], tcpListeners: [RelayListener] = [], settings: HTTPSettings, relay: RelaySettings, counters: RelayCounters,
                capacity: Int, bufferPool: BufferPool, routes: SnapshotReader<RouteTable>? = nil,
                policies: SnapshotReader<RouteTable>? = nil, telemetry: Telemetry? = nil, reactorIndex: Int = 0, reporting: ProxyReporting = ProxyReporting(),
                tls: SnapshotReader<TLSServerPolicy>? = nil, originations: SnapshotReader<TLSOriginations>? = nil)
    {
        tlsPolicy = tls
        self.tls = tls == nil ? nil : TLSIO(capacity: capacity, pool: bufferPool)
        self.originations = originations
        upstreamTLS = originations == nil ? nil : TLSIO(capacity: capacity, pool: bufferPool)
        if tls != nil || originations != nil {
            tlsReady.reserveCapacity(256)
            tlsStarved.reserveCapacity(256)
            tlsSentEarly.reserveCapacity(256)
        }
        metrics = telemetry?.shards[reactorIndex]
        services = telemetry?.services
        peers = telemetry?.peers
        self.reporting = reporting
        capture = reporting.needsCapture ? RequestCapture(slots: capacity) : nil
        listenerNames = reporting.needsCapture ? listeners.map { (try? System.localAddress($0.fd))?.description ?? "" } : []
        listenerRelaysTCP = listeners.map(\.relaysTCP)
        relayRouter = listeners.contains(where: \.relaysTCP) ? TCPRouter(listeners: listeners, routes: routes, circuits: counters.circuits, relay: relay) : nil
        self.settings = settings
        self.relay = relay
        self.counters = counters
        self.routes = routes
        self.policies = policies
        listenerUpstreamPorts = listeners.map(\.upstream.port)
        listenerInbound = listeners.map(\.inbound)
        listenerPorts = listeners.map { (try? System.localAddress($0.fd))?.port ?? 0 }
        self.reactorIndex = reactorIndex
        random = SplitMix.seeded(stream: UInt64(reactorIndex))
        let ownPools = routes == nil || listeners.contains(where: \.inbound)
        pools = UpstreamPools(listenerUpstreams: ownPools ? listeners.map(\.upstream) : [])
        var names: [String] = []
        if ownPools {
            // Each `--upstream` is a cluster of its own, named by its address, limited by the flags; an inbound
            // listener's is Istio's inbound cluster (`inbound|PORT||`, or its passthrough for original
            // destinations).
            let limits = CircuitLimits(nil, budget: nil, relay: relay)
            names = listeners.map { l in
                !l.inbound ? l.upstream.description : l.upstream.port == 0 ? "InboundPassthroughCluster" : "inbound|\(l.upstream.port)||"
            }
            listenerCircuits = names.map { counters.circuits.circuit($0, limits) }
            // An inbound side's app not on loopback (the pod's own address) is reached from 127.0.0.6, as Istio
            // 1.10+ does, so the pod's rules let the connection through rather than redirect it back here.
            for (i, l) in listeners.enumerated() where l.inbound {
                if let v4 = l.upstream.ipv4, v4 != 0, v4 >> 24 != 127, Self.isLocalAddress(l.upstream) {
                    pools.slots[i].source = SocketAddress(parsing: "127.0.0.6:0")
                }
            }
        }
        passthroughCircuit = routes == nil ? nil : counters.circuits.circuit("PassthroughCluster", CircuitLimits(nil, budget: nil, relay: relay))
        listenerCircuitNames = routes == nil ? [] : Set(names.indices.filter { listeners[$0].inbound }.map { names[$0] } + ["PassthroughCluster"])
        balancers = LoadBalancers(registry: counters.outliers, locality: Locality(relay.locality), labels: relay.labels)
        acceptor = Acceptor(fds: listeners.map(\.fd), acceptOp: Op.accept.rawValue, backoffOp: Op.acceptBackoff.rawValue, counters: counters)
        downstreams = Slab(capacity: capacity)
        exchanges = Slab(capacity: capacity)
        upstreams = Slab(capacity: capacity)
        mirrors = Slab(capacity: Self.mirrorSlots)
        // A mirror copies a request held whole: a head within the assembly, a body within --per-request-buffer-kb,
        // and what routing adds to the head.
        mirrorMemory = MirrorMemory(slots: Self.mirrorSlots,
                                    requestCapacity: settings.limits.maxHeaderBytes + bufferPool.receiveLength + settings.perRequestBufferBytes + (8 << 10),
                                    headCapacity: Self.mirrorHeadCapacity)
        pool = bufferPool
        h2Scratch.reserveCapacity(bufferPool.size)
        h2ReadyList.reserveCapacity(256)
        h2TrailerArrays.reserveCapacity(H2Wire.trailerArraysKept)
        bytes = HTTPBytes(pool: bufferPool, assemblySize: settings.limits.maxHeaderBytes + bufferPool.receiveLength, slots: capacity,
                          headMemory: settings.maxHeadMemoryBytes)
        // A forwarded head: start-line (2), runs of kept lines between removed ones, ~10 added pieces, body.
        toClient = IOVecTable(count: capacity, maxSegments: 48)
        toUpstream = IOVecTable(count: capacity, maxSegments: 48)
        requestParsers = ParserPool(kind: .request, limits: settings.limits)
        responseParsers = ParserPool(kind: .response, limits: HTTP1Parser.Limits(
            maxHeaderBytes: settings.limits.maxHeaderBytes, maxHeaderCount: max(settings.limits.maxHeaderCount, 100),
            maxURIBytes: settings.limits.maxURIBytes))
        trustedClient = settings.xffTrustedHops > 0
        tunnels = TCPRelay(listeners: tcpListeners, settings: relay, counters: counters, capacity: capacity,
                           metrics: tcpListeners.isEmpty ? nil : metrics, routes: tcpListeners.isEmpty ? nil : routes,
                           accessLog: tcpListeners.isEmpty ? nil : reporting.accessLog, embedded: true)
        precondition(Op.accept.rawValue >= TCPRelay<Backend>.opLimit, "HTTP proxy ops overlap the relay's")
        if let routes { bind(routes.current, reactor: nil) }
    }

    /// Whether `address` is one of this host's (a socket can be bound to it): an app on the pod's own address.
    static func isLocalAddress(_ address: SocketAddress) -> Bool {
        guard address.ipv4 != nil, let probe = SocketAddress(parsing: address.ip + ":0"),
              let fd = try? System.tcpSocket(family: probe.family) else { return false }
        defer { System.close(fd) }
        return (try? System.bindSource(fd, probe)) != nil
    }

    // MARK: - Routing (Istio configuration)

    /// Takes a new route table: load balancers rebound (their state kept by cluster name and endpoint address,
    /// requests in flight still counted) and every cluster endpoint given a pool. Runs when a snapshot arrives,
    /// never per request.
    func bind(_ table: RouteTable, reactor: Reactor<Backend>?) {
        boundEpoch = routes?.currentEpoch ?? 0
        balancers.bind(table)
        if listenerInbound.contains(true) { bindDenials(table.authorization) }
        clusterCircuits = table.clusters.map {
            counters.circuits.circuit($0.name, CircuitLimits($0.policy.connectionPool, budget: $0.retryBudget, relay: relay), epoch: boundEpoch)
        }
        counters.circuits.keep(Set(table.clusters.map(\.name)).union(listenerCircuitNames), epoch: boundEpoch)
        if let routes { routedTables.bind(routes) }
        if let services {
            clusterServices = table.clusters.map { services.id(.init(host: $0.host, namespace: table.namespace)) }
        }
        // Published before this table: its contexts (and the identity's trust domain) are there.
        _ = originations?.refresh()
        let current = originations?.current
        let tlsKeys = table.clusters.map { TLSOriginationKey.endpointKeys($0, trustDomain: current?.trustDomain) }
        let (endpoints, retired) = pools.bind(clusters: table.clusters.map { $0.endpoints.map(\.socketAddress) }, tls: tlsKeys)
        if originations != nil {
            // A key without a policy cannot happen; such a pool would have no context, and `upstreamStartTLS`
            // fails its connections rather than let them go out in plaintext.
            for c in endpoints.indices {
                for (i, e) in endpoints[c].enumerated() where e >= 0 {
                    guard let key = tlsKeys[c][i] else { continue }
                    let policy = current?.policies[key]
                    if policy == nil && !(key.mesh && current?.trustDomain == nil) {
                        bug("no TLS origination policy published for cluster \(table.clusters[c].name)")
                    }
                    // Sessions of another policy (an identity rotated since) are never resumed: a resumption would
                    // present the old certificate again.
                    if pools.slots[e].tls !== policy {
                        pools.slots[e].resumptions.removeAll()
                        pools.slots[e].tlsGeneration &+= 1
                    }
                    pools.slots[e].tls = policy
                }
            }
        }
        clusterEndpoints = endpoints
        clusterProtocols = table.clusters.map(\.upstreamProtocol)
        while mirrorIdle.count < pools.slots.count {
            mirrorIdle.append([])
            mirrorIdle[mirrorIdle.count - 1].reserveCapacity(Self.idleMirrorsPerEndpoint)
        }
        // Endpoints the table no longer names keep no idle connection; each pool is freed once unused.
        guard let reactor else { return }
        for e in retired {
            while let u = pools.slots[e].idle.popLast() {
                if upstreams.isCurrent(u) { closeUpstream(u, reactor) }
            }
            for u in pools.slots[e].h2Links { h2uIdleCheck(u, reactor) }
        }
        closeIdleMirrors(of: retired, reactor)
    }

    public var finished: Bool {
        (draining || stopping) && downstreams.count == 0 && exchanges.count == 0 && upstreams.count == 0 && mirrors.count == 0
            && tunnels.finished
            && acceptor.allClosed
    }

    // MARK: - Loop hooks

    public func iteration(_ reactor: Reactor<Backend>) {
        tunnels.iteration(reactor)
        // The reader may have been refreshed already this iteration by the embedded relay (TCP listeners share it):
        // a table is bound when its epoch is not the one bound last. Bound before anything below routes a request
        // (TLS and HTTP/2 hand requests over from here), so no request reads a table its pools and balancers are not
        // bound to.
        if let routes, routes.refresh() || routes.currentEpoch != boundEpoch {
            bind(routes.current, reactor: reactor)
            // Relayed TCP connections are routed with the same table (its cluster and endpoint indexes are the
            // pools'): the reader is not refreshed again in between.
            relayRouter?.refresh(reader: false)
            Log.debug("reactor \(reactor.index) serves route table \(routes.currentEpoch) with \(pools.liveCount) upstream pools, \(routedTables.heldCount) route tables in use")
        }
        if let tlsPolicy { _ = tlsPolicy.refresh() }
        if let policies, policies.refresh() || denialTable == nil { bindDenials(policies.current.authorization) }
        if tls != nil || upstreamTLS != nil { tlsIteration(reactor) }
        if !h2ReadyList.isEmpty || !h2Starved.isEmpty || !h2uReadyList.isEmpty || !h2uStarved.isEmpty { h2Iteration(reactor) }
        if capture != nil { wallOffsetNanos = System.wallClockMicros() &* 1000 &- System.monotonicNanos() }
        if !draining && reactor.control.drainRequested.load(ordering: .acquiring) {
            draining = true
            acceptor.closeAll(reactor)
            h2Drain(reactor)
            // Every client connection ends after its next response, which says "connection: close" (as Envoy
            // drains HTTP/1.1). An idle keep-alive connection is not closed at once: a request may already be on
            // its way, and closing under it would lose it; it closes with its next response, or when the drain
            // timeout stops the reactor.
            for e in pools.slots.indices {
                while let u = pools.slots[e].idle.popLast() {
                    if upstreams.isCurrent(u) { closeUpstream(u, reactor) }
                }
                // HTTP/2 connections with no stream close now; the others once their last stream ends.
                for u in pools.slots[e].h2Links { h2uIdleCheck(u, reactor) }
            }
            closeAllMirrors(reactor)
        }
        if !stopping && reactor.control.stopRequested.load(ordering: .acquiring) {
            stopping = true
            draining = true
            acceptor.closeAll(reactor)
            downstreams.forEachID {
                // (Those already closing may be draining records: the stop does not wait for them.)
                if downstreams[$0].phase == .closing { tlsStopDraining($0, reactor) }
                closeDownstream($0, reset: false, reactor)
            }
            upstreams.forEachID { closeUpstream($0, reactor) }
            closeAllMirrors(reactor)
        }
        if let m = metrics {
            m.reactor.set(ReactorWord.upstreamConnections, UInt64(upstreams.count - h2uStreamCount))
            m.reactor.set(ReactorWord.idleUpstreamConnections, UInt64(idleUpstreams))
        }
        // Once per loop iteration, before the reactor waits: client connections open on this reactor, those
        // carrying HTTP and the tunnels handed to the relay (tern_active_connections).
        reactor.control.activeConnections.store(downstreams.count - h2StreamCount + tunnels.count, ordering: .relaxed)
        // Sockets held, less those already closing to make room (their descriptors are freed when their
        // cancelled operations complete, an iteration or two later: counted once, not closed for again).
        var used = counters.descriptors.load(ordering: .relaxed) - closingForRoom
        // Near the descriptor cap, connections that wait for work make room for new ones (as the overload
        // managers of Envoy and HAProxy close idle connections before refusing work): idle pooled upstream
        // connections first (closing one costs no client anything), then idle keep-alive clients, oldest first.
        // A cap filled by idle connections must not stop all new service.
        let room = relay.descriptorCap - Self.evictionMargin
        if used >= room && !draining {
            var closed = 0
            for e in pools.slots.indices where idleUpstreams > 0 && used - closed >= room {
                while closed < 16, used - closed >= room, !pools.slots[e].idle.isEmpty {
                    let u = pools.slots[e].idle.removeFirst()
                    guard upstreams.isCurrent(u), upstreams[u].state == .idle else { continue }
                    Log.debug("descriptor cap reached: closing an idle upstream connection")
                    upstreams[u].closingForRoom = true
                    closingForRoom += 1
                    closeUpstream(u, reactor)
                    closed += 1
                }
            }
            // HTTP/2 upstream connections without a stream are idle too: GOAWAY, then the close.
            for e in pools.slots.indices where used - closed >= room && closed < 16 {
                for u in pools.slots[e].h2Links where closed < 16 && used - closed >= room {
                    guard let link = upstreams[u].h2, link.streams.isEmpty, !link.closing, !upstreams[u].closingForRoom else { continue }
                    Log.debug("descriptor cap reached: closing an idle HTTP/2 upstream connection")
                    upstreams[u].closingForRoom = true
                    closingForRoom += 1
                    link.goingAway = true
                    h2uIdleCheck(u, reactor)
                    closed += 1
                }
            }
            var evicted = 0
            while closed < 16, used - closed >= room, let oldest = idle.oldest {
                idle.remove(oldest, downstreams)
                // A request already waiting in the socket makes the connection busy, not idle: it is left to be read.
                if System.peek(downstreams[oldest].fd) > 0 { continue }
                Log.debug("descriptor cap reached: closing the oldest idle client connection")
                downstreams[oldest].closingForRoom = true
                closingForRoom += 1
                // (An HTTP/2 connection without a stream is told first: GOAWAY naming its last stream.)
                if downstreams[oldest].h2 != nil { h2GoAway(oldest, reactor) } else { closeDownstream(oldest, reset: false, reactor) }
                closed += 1
                evicted += 1
            }
            if evicted > 0 { counters.idleEvicted.add(evicted, ordering: .relaxed) }
            used = counters.descriptors.load(ordering: .relaxed) - closingForRoom
        }
        let atCap = used >= relay.descriptorCap - Self.acceptMargin
        updateShedding(atCap: atCap && !draining, nothingIdle: idle.oldest == nil && idleUpstreams == 0, reactor)
        acceptor.update(atCap: atCap && !shedding, headroom: shedding ? 0 : relay.descriptorCap - used, draining: draining, reactor)
    }

    /// At the descriptor cap with no idle connection left to close, new connections first wait in the listen
    /// backlog (a request ending frees a descriptor soon); once that has lasted `shedGrace`, they are accepted
    /// one at a time and answered 503 until the reactor is below the cap again, so none waits without an answer.
    /// Shedding stops only below the cap (a connection going idle meanwhile does not restart the grace).
    private func updateShedding(atCap: Bool, nothingIdle: Bool, _ reactor: Reactor<Backend>) {
        guard atCap else {
            if shedding { Log.info("descriptors free again: accepting connections") }
            saturatedSince = 0
            shedding = false
            return
        }
        if shedding { return }
        guard nothingIdle else {
            saturatedSince = 0  // something can still be closed for room: no grace running
            return
        }
        let now = System.monotonicNanos()
        if saturatedSince == 0 {
            saturatedSince = now
            _ = reactor.timers.schedule(Token(op: Op.shedTimer.rawValue, slot: 0, generation: 0), at: now + Self.shedGrace)
        } else if now - saturatedSince >= Self.shedGrace {
            shedding = true
            Log.warn("descriptor cap (\(relay.descriptorCap)) reached with no idle connection to close: answering new connections 503 until descriptors are free")
        }
    }

    /// A request head was refused because heads in progress hold the reactor's `--max-head-memory-mb`: counted,
    /// and said in a warning line at the first and every thousandth.
    func headRefusedOverBudget() {
        let n = counters.headsOverBudget.wrappingAdd(1, ordering: .relaxed).newValue
        if n == 1 || n % 1000 == 0 {
            Log.warn("request heads in progress hold the reactor's head memory (\(bytes.headBudget) large buffers, --max-head-memory-mb): answering new ones 503 (\(n) so far)")
        }
    }

    /// Answers a connection accepted while shedding: what the client sent so far is read and dropped (so closing
    /// does not reset the connection under the answer), then 503 with `connection: close`, and the socket closes.
    func shed(_ fd: Int32) {
        counters.shed.add(1, ordering: .relaxed)
        System.discardReadable(fd)
        let reply = overloadReply
        _ = System.sendNow(fd, reply.span)
        _ = System.shutdown(fd, write: true, read: false)
        System.close(fd)
    }

    public func handle(_ c: Completion, _ reactor: Reactor<Backend>) {
        if c.token.op < TCPRelay<Backend>.opLimit {
            tunnels.handle(c, reactor)
            return
        }
        guard let op = Op(rawValue: c.token.op) else { return bug("unknown HTTP proxy op \(c.token.op)") }
        switch op {
        case .accept:
            if let (fd, i) = acceptor.accepted(c, draining: draining, reactor) {
                if shedding && counters.descriptors.load(ordering: .relaxed) >= relay.descriptorCap - Self.acceptMargin {
                    if tls != nil {
                        // No plaintext answer on a TLS port: closed, and counted as shed.
                        counters.shed.add(1, ordering: .relaxed)
                        System.close(fd)
                    } else {
                        shed(fd)
                    }
                } else {
                    accepted(fd, listener: i, reactor)
                }
            }
        case .clientReceive, .clientSend:
            let id = DID(index: c.token.slot, generation: c.token.generation)
            guard downstreams.isCurrent(id) else {
                if let b = c.bufferID { reactor.backend.releaseBuffer(b) }
                return
            }
            downstreams[id].inflight -= 1
            if op == .clientReceive {
                downstreams[id].receiving = false
                clientReceived(id, c, reactor)
            } else {
                downstreams[id].sending = false
                clientSent(id, c.result, reactor)
            }
        case .requestSpliceIn, .responseSpliceOut:
            let id = DID(index: c.token.slot, generation: c.token.generation)
            guard downstreams.isCurrent(id) else { return }
            downstreams[id].inflight -= 1
            downstreams[id].clientSplice = 0
            if downstreams[id].phase == .closing {
                finishDownstreamIfQuiet(id, reactor)
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
            guard let x = servedExchange(u) else {
                closeUpstream(u, reactor)
                return
            }
            if op == .requestSpliceOut { requestSplicedOut(x, u, c.result, reactor) } else { responseSplicedIn(x, u, c.result, reactor) }
        case .tlsClientReceive, .tlsClientSend:
            let id = DID(index: c.token.slot, generation: c.token.generation)
            guard downstreams.isCurrent(id) else {
                if let b = c.bufferID { reactor.backend.releaseBuffer(b) }
                return
            }
            downstreams[id].inflight -= 1
            if op == .tlsClientReceive { tlsSocketReceived(.client(id), c, reactor) } else { tlsSocketSent(.client(id), c.result, reactor) }
        case .tlsUpstreamReceive, .tlsUpstreamSend:
            let u = UID(index: c.token.slot, generation: c.token.generation)
            guard upstreams.isCurrent(u) else {
                if let b = c.bufferID { reactor.backend.releaseBuffer(b) }
                return
            }
            upstreams[u].inflight -= 1
            if op == .tlsUpstreamReceive { tlsSocketReceived(.upstream(u), c, reactor) } else { tlsSocketSent(.upstream(u), c.result, reactor) }
        case .mirrorConnect, .mirrorSend, .mirrorReceive:
            mirrorCompleted(op, c, reactor)
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
            acceptor.backoffFired(token, headroom: relay.descriptorCap - counters.descriptors.load(ordering: .relaxed), reactor)
        case .shedTimer:
            break  // the iteration that follows decides
        case .h2Kick:
            h2KickArmed = false  // the iteration that follows does the work
        case .h2Drain:
            h2DrainNoticeExpired(reactor)
        case .h2Ping:
            let u = UID(index: token.slot, generation: token.generation)
            if upstreams.isCurrent(u) { h2uPingTimer(u, reactor) }
        case .descriptorRetry:
            descriptorRetryArmed = false
            retryDescriptorWaiters(reactor)
        case .connectTimer, .poolTimer:
            let u = UID(index: token.slot, generation: token.generation)
            guard upstreams.isCurrent(u) else { return }
            if op == .connectTimer {
                upstreams[u].connectTimer = nil
                if upstreams[u].state == .connecting {
                    if upstreams[u].transport == .tls {
                        let f = TLSFailure(.timeout, "handshake not finished within the connect timeout")
                        counters.tls.failed(.upstream, f.reason)
                        return upstreamHandshakeFailed(u, f, reactor)
                    }
                    Log.debug("upstream connect timed out (its cluster's connect timeout, else --connect-timeout)")
                    connectFailed(u, reactor)
                }
            } else {
                upstreams[u].poolTimer = nil
                if upstreams[u].h2 != nil { return h2uPoolTimer(u, reactor) }
                guard upstreams[u].state == .idle, let due = poolDue(u) else { return }
                if System.monotonicNanos() >= due {
                    closeUpstream(u, reactor)
                } else {
                    upstreams[u].poolTimer = reactor.timers.schedule(self.token(.poolTimer, u), at: due)
                }
            }
        case .mirrorTimer:
            mirrorTimerFired(token, reactor)
        case .exchangeTimer:
            let x = XID(index: token.slot, generation: token.generation)
            guard exchanges.isCurrent(x) else { return }
            exchangeTimerFired(x, reactor)
        default:
            let id = DID(index: token.slot, generation: token.generation)
            guard downstreams.isCurrent(id) else { return }
            guard downstreams[id].phase != .closing else {
                // A closing TLS connection whose records still had not gone out within the linger timeout.
                if op == .lingerTimer {
                    downstreams[id].lingerTimer = nil
                    tlsStopDraining(id, reactor)
                }
                return
            }
            downstreamTimer(op, id, reactor)
        }
    }

    /// The exchange an upstream connection serves, while it and its client connection are still open.
    func servedExchange(_ u: UID) -> XID? {
        guard let x = upstreams[u].exchange, exchanges.isCurrent(x), downstreams[exchanges[x].downstream].phase == .open else {
            return nil
        }
        return x
    }

    /// Sets the exchange's timer for `due` unless it is already set to fire by then.
    func armExchangeTimer(_ x: XID, at due: UInt64, _ reactor: Reactor<Backend>) {
        if let t = exchanges[x].timer {
            if exchanges[x].due <= due { return }
            reactor.timers.cancel(t)
        }
        exchanges[x].due = due
        exchanges[x].timer = reactor.timers.schedule(token(.exchangeTimer, x), at: due)
    }

    /// The exchange's timer fired: the upstream timeout (UT) or the stream idle timeout (SI) ends the exchange
    /// if its time has come; otherwise the timer is set again for the earlier of the two.
    func exchangeTimerFired(_ x: XID, _ reactor: Reactor<Backend>) {
        exchanges[x].timer = nil
        let id = exchanges[x].downstream
        if downstreams[id].relaysTCP { return relayTimerFired(x, reactor) }
        let response = exchanges[x].response.state, request = exchanges[x].request.state
        guard exchanges[x].active, downstreams[id].phase == .open, response != .reply, response != .tunnel else { return }
        let idleDue = saturatingAdd(exchanges[x].lastActivity, settings.streamIdleTimeout.nanoseconds)
        if exchanges[x].delayUntil != 0 {
            // A request held by an injected delay: released when it ends (the stream idle timeout still bounds it,
            // as Envoy's does).
            let now = System.monotonicNanos()
            if now >= exchanges[x].delayUntil { return faultDelayEnded(x, reactor) }
            if now < idleDue { return armExchangeTimer(x, at: min(idleDue, exchanges[x].delayUntil), reactor) }
        }
        // The route's timeout runs from when the router took the whole request (`startRouteTimeout`), through
        // retries and their back-offs; the per-try timeout from the end of this try's request; a back-off ends in a
        // retry. (`armExchangeDues` arms the earliest of the same times.)
        var upstreamDue = UInt64.max, tryDue = UInt64.max
        let timeout = exchanges[x].timeout, perTry = exchanges[x].retry.perTryTimeout
        if timeout > 0 && response != .done && exchanges[x].requestEnd != 0 {
            upstreamDue = saturatingAdd(exchanges[x].requestEnd, timeout)
        }
        if perTry > 0 && request == .done && response != .done && exchanges[x].tryEnd != 0 {
            tryDue = saturatingAdd(exchanges[x].tryEnd, perTry)
        }
        let backoffDue = exchanges[x].retryAt == 0 ? UInt64.max : exchanges[x].retryAt
        let next = min(idleDue, upstreamDue, tryDue, backoffDue)
        guard System.monotonicNanos() >= next else { return armExchangeTimer(x, at: next, reactor) }
        if upstreamDue == next {
            Log.debug("upstream timeout (UT) after \(TernDuration(nanoseconds: timeout))")
            attemptFailed(x, .timeout, responseBytesSeen: exchanges[x].responseStarted, reactor)
        } else if backoffDue == next {
            retryBackoffEnded(x, reactor)
        } else if tryDue == next {
            Log.debug("per-try timeout after \(TernDuration(nanoseconds: perTry))")
            attemptFailed(x, .perTryTimeout, responseBytesSeen: exchanges[x].responseStarted, reactor)
        } else {
            Log.debug("stream idle for \(settings.streamIdleTimeout) (SI)")
            fail(x, request == .done ? .streamTimeoutResponse : .streamTimeoutRequest, reactor)
        }
    }

    func downstreamTimer(_ op: Op, _ id: DID, _ reactor: Reactor<Backend>) {
        let s = downstreams[id], x = s.exchange
        switch op {
        case .idleTimer:
            downstreams[id].idleTimer = nil
            guard s.phase == .open && !exchanges[x].active && exchanges[x].request.held.isEmpty else { return }
            // An HTTP/2 connection is idle while it has no stream open; it says GOAWAY before it closes.
            if let link = s.h2 {
                if !link.streams.isEmpty {
                    // Busy: looked at again an idle timeout from now (its idle time starts when its last stream ends).
                    downstreams[id].idleTimer = reactor.timers.schedule(token(.idleTimer, id), at: deadline(after: relay.idleTimeout))
                } else if System.monotonicNanos() < idleDue(id) {
                    downstreams[id].idleTimer = reactor.timers.schedule(token(.idleTimer, id), at: idleDue(id))
                } else {
                    Log.debug("HTTP/2 connection idle for \(relay.idleTimeout): GOAWAY and closing")
                    h2GoAway(id, reactor)
                }
                return
            }
            let due = idleDue(id)
            if System.monotonicNanos() >= due {
                Log.debug(s.spoke ? "client connection idle for \(relay.idleTimeout): closing"
                                  : "client connection sent nothing within \(settings.firstByteTimeout) of its accept: closing")
                closeDownstream(id, reset: false, reactor)
            } else {
                downstreams[id].idleTimer = reactor.timers.schedule(token(.idleTimer, id), at: due)
            }
        case .headerTimer:
            downstreams[id].headerTimer = nil
            guard s.phase == .open && exchanges[x].request.state == .head && !exchanges[x].request.held.isEmpty else { return }
            let due = saturatingAdd(exchanges[x].headStart, settings.requestHeaderTimeout.nanoseconds)
            if System.monotonicNanos() >= due {
                Log.debug("request head not complete after \(settings.requestHeaderTimeout)")
                fail(x, .requestHeaderTimeout, reactor)
            } else {
                downstreams[id].headerTimer = reactor.timers.schedule(token(.headerTimer, id), at: due)
            }
        case .lingerTimer:
            downstreams[id].lingerTimer = nil
            closeDownstream(id, reset: false, reactor)
        case .tlsHandshakeTimer:
            guard let tls, s.transport == .tls else { return }
            tls[Int(id.index)].handshakeTimer = nil
            guard tls[Int(id.index)].handshaking else { return }
            tlsFailed(.client(id), TLSFailure(.timeout, "handshake not finished within \(settings.tlsHandshakeTimeout) of the accept"), reactor)
        default:
            bug("unknown session timer \(op)")
        }
    }

    // MARK: - Tokens and timers

    func token(_ op: Op, _ id: DID) -> Token { Token(op: op.rawValue, slot: id.index, generation: id.generation) }
    func token(_ op: Op, _ id: UID) -> Token { Token(op: op.rawValue, slot: id.index, generation: id.generation) }
    func token(_ op: Op, _ id: XID) -> Token { Token(op: op.rawValue, slot: id.index, generation: id.generation) }

    func saturatingAdd(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? UInt64.max : sum
    }

    func deadline(after d: TernDuration) -> UInt64 { saturatingAdd(System.monotonicNanos(), d.nanoseconds) }

    func cancel(_ timer: inout TimerWheel.ID?, _ reactor: Reactor<Backend>) {
        if let t = timer { reactor.timers.cancel(t) }
        timer = nil
    }

    func release(_ b: UInt16?, _ reactor: Reactor<Backend>) {
        if let b { reactor.backend.releaseBuffer(b) }
    }

    func dropHeld(_ held: inout Held, _ reactor: Reactor<Backend>) {
        if held.holdsStorage { release(bytes.drop(&held), reactor) }
    }

}
