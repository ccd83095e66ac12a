// The L4 relay (ARCHITECTURE.md §4): bytes move socket → pipe → socket with splice, in both directions,
// without passing through user space. One `TCPRelay` per reactor; all its state is owned by that thread.
//
// Each direction of a connection runs this state machine (src is the socket read, dst the one written):
//
//     polling ──readable──▶ reading ──n>0──▶ writing ──pipe empty, last read filled it──▶ reading
//        ▲                    │  │              │ ▲
//        │                    │  │              │ └─partial─┘
//        └───pipe empty, short read ────────────┘
//                             │  └─EOF──▶ done (shutdown(dst, SHUT_WR): half-close)
//                             └─error──▶ connection reset (RST propagated to the other peer)
//
// A pipe is taken when data is ready and returned as soon as it is empty after a short read, so an idle
// connection holds no pipe and no buffer. At most one pipe of bytes is in flight per direction: a slow
// reader stalls its writer's splices and, through TCP flow control, the sender (backpressure).
import Synchronization
import TernConfig
import TernCore
import TernIO
import TernTLS
import TernTelemetry

/// Settings shared by every reactor's relay (immutable once the proxy starts).
public struct RelaySettings: Sendable {
    public var connectTimeout = TernDuration.seconds(5)
    public var idleTimeout = TernDuration.seconds(3600)
    /// Process-wide cap on open proxied connections; 0 means unlimited. Beyond it new connections are
    /// closed at once and counted (`--max-connections`).
    public var maxConnections = 0
    /// How many sockets client and upstream connections may hold together (`RelayCounters.descriptors`): the
    /// open-file limit less what listeners, pipes, logs and side listeners keep. A relayed TCP connection holds
    /// two; an HTTP client connection one, and upstream connections are counted as they are opened (a pooled
    /// upstream connection serves many clients). Near it, reactors stop accepting (connections wait in the
    /// listen backlog) and idle HTTP keep-alive connections close, oldest first, to make room; an HTTP
    /// listener that stays full with nothing idle answers new connections 503 (`HTTPProxy.shedGrace`).
    public var descriptorCap = Int.max
    /// Circuit-breaker limits and connection settings where no DestinationRule sets them (Cluster/CircuitBreakers.swift).
    public var circuits = CircuitDefaults()
    /// `--locality region/zone/subzone`: this sidecar's locality, which locality-aware balancing ranks and weighs
    /// endpoints by ("": none, every endpoint ranks alike).
    public var locality = ""
    /// `--labels k=v,...`: this workload's labels (a pod's labels in Istio), which DestinationRule
    /// `failoverPriority` ranks endpoints by.
    public var labels: [String: String] = [:]
    public init() {}
}

/// Counters shared by all reactors. Written on accept and close only, never per byte.
public final class RelayCounters: Sendable {
    /// Client connections open (HTTP and relayed), for --max-connections and tern_active_connections.
    public let active = Atomic<Int>(0)
    /// Sockets held by client and upstream connections (the descriptor cap's measure).
    public let descriptors = Atomic<Int>(0)
    /// HTTP/2 client connections and the streams they opened, and those ended for a protocol error.
    public let h2Connections = Atomic<UInt64>(0)
    public let h2Streams = Atomic<UInt64>(0)
    public let h2ProtocolErrors = Atomic<UInt64>(0)
    /// HTTP/2 connections closed for resetting too many streams early (Envoy's premature-reset rule).
    public let h2ResetFloods = Atomic<UInt64>(0)
    /// HTTP/2 connections made to upstreams, and the streams sent on them.
    public let h2UpstreamConnections = Atomic<UInt64>(0)
    /// HTTP/2 connections (either side) ended for a frame flood (`HTTP2Session.flood`).
    public let h2Floods = Atomic<UInt64>(0)
    /// Requests an AuthorizationPolicy denied (403), and those a dry-run policy would have denied.
    public let authorizationDenied = Atomic<UInt64>(0)
    public let authorizationDryRunDenied = Atomic<UInt64>(0)
    /// The same, by policy (`namespace/name`).
    public let policyDenials = PolicyDenials()
    /// Connections an inbound side closed at once: PeerAuthentication STRICT, and no TLS to offer.
    public let peerAuthenticationRefused = Atomic<UInt64>(0)
    /// Connections to an `--inbound` listener without `--inbound-app` that were not redirected to it (no original
    /// destination to send them to): closed.
    public let inboundWithoutDestination = Atomic<UInt64>(0)
    /// Connections made straight to a sidecar's outbound listener (one with `--inbound` beside it) from another
    /// host, not redirected by iptables: closed, as Istio blackholes its 15001 (it would otherwise send anyone's
    /// requests on under the workload's identity).
    public let outboundDirectRefused = Atomic<UInt64>(0)
    /// HTTP/2 upstream connections closed for a keepalive PING not answered in time.
    public let h2PingTimeouts = Atomic<UInt64>(0)
    public let h2UpstreamStreams = Atomic<UInt64>(0)
    public let accepted = Atomic<Int>(0)
    /// Connections closed at once because --max-connections was reached.
    public let rejectedOverLimit = Atomic<Int>(0)
    /// Connections whose upstream connect failed or timed out.
    public let upstreamConnectFailures = Atomic<Int>(0)
    /// Accept failures for lack of descriptors (EMFILE/ENFILE), each followed by a back-off.
    public let acceptExhausted = Atomic<Int>(0)
    public let resetsPropagated = Atomic<Int>(0)
    /// Idle keep-alive HTTP connections closed, oldest first, to make room at the descriptor cap.
    public let idleEvicted = Atomic<Int>(0)
    /// HTTP connections answered 503 and closed at once because the descriptor cap stayed reached with no idle
    /// connection to close.
    public let shed = Atomic<Int>(0)
    /// Request heads answered 503 because heads in progress held their reactor's `--max-head-memory-mb`.
    public let headsOverBudget = Atomic<Int>(0)
    /// Requests a route's fault filter delayed (DI) and aborted (FI): Envoy's `fault.delays_injected` and
    /// `fault.aborts_injected`.
    public let faultDelays = Atomic<Int>(0)
    public let faultAborts = Atomic<Int>(0)
    /// Requests tried again under a route's retry policy (Envoy's `upstream_rq_retry`), and answered when the
    /// policy would have retried but none were left (`upstream_rq_retry_limit_exceeded`, flag URX).
    public let retries = Atomic<Int>(0)
    public let retryLimitExceeded = Atomic<Int>(0)
    /// HTTP requests whose upstream socket could not be opened for lack of descriptors and waited for one.
    public let upstreamDescriptorWaits = Atomic<Int>(0)
    /// TLS handshakes, resumptions and failures by reason.
    public let tls = TLSCounters()
    /// Outlier detection's records of every cluster and endpoint (Cluster/OutlierDetection.swift): shared by the
    /// reactors like these counters, written with atomics on the request path.
    /// Requests mirrored (sent to a mirror), mirrors whose whole response came back, mirrors dropped (not sent: a body that streams, no slot, a limit of
    /// the mirror's cluster, TLS origination), and mirrors that failed (connect, reset, timeout, malformed).
    public let mirrors = Atomic<Int>(0)
    public let mirrorsAnswered = Atomic<Int>(0)
    public let mirrorsDropped = Atomic<Int>(0)
    public let mirrorsFailed = Atomic<Int>(0)
    /// Mirror connection slots given their memory (the first time each is used; at most 64 per reactor): the one
    /// allocation mirroring makes after start, which the allocation tests discount.
    public let mirrorSlotsMade = Atomic<Int>(0)
    public let outliers = OutlierRegistry()
    /// Every cluster's circuit breakers, shared by the reactors.
    public let circuits = CircuitRegistry()
    public init() {}
}

/// A listening socket of this reactor and the upstream its connections go to (unused when routes decide).
public struct RelayListener: Sendable {
    public var fd: Int32
    public var upstream: SocketAddress
    /// A TCP listener that terminates TLS: the HTTP engine accepts on it (it holds the TLS glue) and relays each
    /// connection's decrypted stream to the upstream the TCP routes pick (HTTPProxy+TCP.swift), not HTTP.
    public var relaysTCP: Bool
    /// A sidecar's inbound listener (`--inbound`) in a process whose other listeners are its outbound side: its
    /// requests go to `upstream` (`--inbound-app`), or, when that is port 0, to each connection's original
    /// destination (iptables REDIRECT), under the workload's AuthorizationPolicy and PeerAuthentication.
    public var inbound: Bool
    public init(fd: Int32, upstream: SocketAddress, relaysTCP: Bool = false, inbound: Bool = false) {
        self.fd = fd
        self.upstream = upstream
        self.relaysTCP = relaysTCP
        self.inbound = inbound
    }
}

public final class TCPRelay<Backend: IOBackend>: ReactorHandler {
    /// Operation kinds carried in tokens. Direction d (0: client → upstream, 1: upstream → client) adds 3d.
    /// Internal, not private: tests build tokens with them (a late completion for a reused slot).
    enum Op: UInt8 {
        case accept = 1, connect = 2
        case poll = 3, read = 4, write = 5
        case connectTimer = 9, idleTimer = 10, acceptBackoff = 11, pipeRetry = 12, socketRetry = 20  // pipeRetry + 3 = 15 is direction 1
        /// SNI routing: the client's first bytes are readable (a poll), and a ClientHello cut short is peeked again.
        case inspect = 13, inspectRetry = 14
    }

    private enum Phase {
        /// Accepted on a listener that routes by server name: its ClientHello is being read (peeked, not consumed).
        case inspecting
        /// Accepted, but no descriptor was left for the upstream socket: retried on a timer.
        case waitingForSocket
        case connecting, relaying, closing
    }

    private struct Direction {
        enum State { case idle, polling, waitingForPipe, reading, writing, done }
        var state = State.idle
        var pipe: Pipe? = nil
        var buffered = 0
        /// The last read filled the pipe: more is probably waiting, so keep the pipe and read again.
        var lastReadFilled = false
        /// The op kind in flight for this direction (its token is needed to cancel it).
        var inFlight: UInt8 = 0
    }

    private struct Connection {
        var client: Int32
        var upstream: Int32
        var listener: Int
        var phase = Phase.connecting
        var directions = (Direction(), Direction())
        var inflight = 0
        var connectTimer: TimerWheel.ID? = nil
        var idleTimer: TimerWheel.ID? = nil
        var lastActivity: UInt64 = 0
        /// Its idle timeout: its cluster's `tcp.idleTimeout`, else `--idle-timeout` (0: none); and when its
        /// cluster's `tcp.maxConnectionDuration` ends it (0: never).
        var idleTimeout: UInt64 = 0
        var expires: UInt64 = 0
        /// The upstream chosen at accept (`TCPRouter`).
        var route = TCPRouter.Pick()
        /// For the access log: when the connection was accepted, bytes each way, why it ended.
        var startMono: UInt64 = 0
        var startWall: UInt64 = 0
        var received: UInt64 = 0
        var sent: UInt64 = 0
        var flags = ResponseFlags()
        /// SNI routing: how long until a ClientHello cut short is peeked again (doubling from 5 ms to 320 ms, so a
        /// client that stalls mid-hello costs a few dozen peeks before the connect timeout, not a thousand).
        var inspectDelay: UInt32 = 5

        subscript(d: Int) -> Direction {
            get { d == 0 ? directions.0 : directions.1 }
            set { if d == 0 { directions.0 = newValue } else { directions.1 = newValue } }
        }
        func source(_ d: Int) -> Int32 { d == 0 ? client : upstream }
        func destination(_ d: Int) -> Int32 { d == 0 ? upstream : client }
    }

    private let settings: RelaySettings
    private let counters: RelayCounters
    /// Each connection's upstream: the listener's, or one the route table picks (`--config`).
    private let router: TCPRouter
    private let acceptor: Acceptor<Backend>
    private let connections: Slab<Connection>
    private var draining = false
    private var stopping = false
    /// This reactor's metrics (nil: off). Connections from listeners count as Istio's TCP connections; the
    /// tunnels an HTTP proxy hands over were counted as HTTP requests.
    private let metrics: MetricsShard?
    /// This reactor's access-log ring (nil: off), the downstream addresses each line reports, and the
    /// upstream addresses as text (rendered once each).
    private let accessLog: AccessLogShard?
    private let capture: RequestCapture?
    private var addressNames: [String] = []
    /// Run inside another handler (the HTTP proxy's tunnels): that owner reports the reactor's connections.
    private let embedded: Bool
    private var listenerNames: [String] = []
    /// SNI routing: where a ClientHello is peeked and its server name written (kept for reuse: nothing is allocated
    /// per connection).
    private var helloBuffer: [UInt8] = []
    private var nameBuffer: [UInt8] = []
    /// The most of a ClientHello peeked: one that is not whole (to its server name) within it is refused.
    static var helloLimit: Int { 16 * 1024 }

    public init(listeners: [RelayListener], settings: RelaySettings, counters: RelayCounters, capacity: Int,
                metrics: MetricsShard? = nil, routes: SnapshotReader<RouteTable>? = nil, accessLog: AccessLogShard? = nil,
                embedded: Bool = false)
    {
        self.embedded = embedded
        self.metrics = metrics
        self.accessLog = accessLog
        capture = accessLog == nil ? nil : RequestCapture(slots: capacity)
        if accessLog != nil { listenerNames = listeners.map { (try? System.localAddress($0.fd))?.description ?? "" } }
        router = TCPRouter(listeners: listeners, routes: routes, circuits: counters.circuits, relay: settings)
        acceptor = Acceptor(fds: listeners.map(\.fd), acceptOp: Op.accept.rawValue, backoffOp: Op.acceptBackoff.rawValue, counters: counters)
        self.settings = settings
        self.counters = counters
        connections = Slab(capacity: capacity)
        if routes != nil {
            helloBuffer = [UInt8](repeating: 0, count: Self.helloLimit)
            nameBuffer = [UInt8](repeating: 0, count: ClientHello.maxNameLength)
        }
        // Direction 1 of a per-direction op is its raw value + 3: no other op may live there.
        for op in [Op.poll, .read, .write, .pipeRetry] {
            precondition(Op(rawValue: op.rawValue + 3) == nil, "relay op \(op) collides with another op in direction 1")
        }
    }

    public var finished: Bool {
        (draining || stopping) && connections.count == 0 && acceptor.allClosed
    }

    /// Token op kinds the relay uses are below this; an owner that embeds a relay (the HTTP proxy, for its
    /// tunnels) uses kinds from here up and passes the rest on.
    static var opLimit: UInt8 { 32 }

    /// Connections being relayed (an embedding owner waits for them when draining).
    var count: Int { connections.count }

    /// Relays an already connected pair (an HTTP Upgrade or CONNECT tunnel): from now on bytes are spliced
    /// both ways as for any relayed connection, and closing it closes both sockets and counts the connection
    /// (in `counters.active`) as gone. False when the relay is full; the caller keeps both sockets then.
    func adopt(client: Int32, upstream: Int32, circuit: ClusterCircuit? = nil, _ reactor: Reactor<Backend>) -> Bool {
        guard let id = connections.insert(Connection(client: client, upstream: upstream, listener: -1)) else { return false }
        // The upstream connection still counts against its cluster's connections until it closes here.
        connections[id].route.circuit = circuit
        connected(id, 0, reactor)
        return true
    }

    // MARK: - Loop hooks

    public func iteration(_ reactor: Reactor<Backend>) {
        // A new table applies to connections accepted from now on; open ones keep their upstream.
        router.refresh()
        if !draining && reactor.control.drainRequested.load(ordering: .acquiring) {
            draining = true
            acceptor.closeAll(reactor)
        }
        if !stopping && reactor.control.stopRequested.load(ordering: .acquiring) {
            stopping = true
            draining = true
            acceptor.closeAll(reactor)
            connections.forEachID { close($0, reset: false, reactor) }
        }
        // Once per loop iteration, before the reactor waits: what tern_active_connections shows.
        if !embedded { reactor.control.activeConnections.store(connections.count, ordering: .relaxed) }
        // A relayed connection needs two sockets: accepting pauses while fewer than two are left.
        let headroom = settings.descriptorCap - counters.descriptors.load(ordering: .relaxed)
        acceptor.update(atCap: headroom < 2, headroom: headroom / 2, draining: draining, reactor)
    }

    public func handle(_ c: Completion, _ reactor: Reactor<Backend>) {
        let token = c.token
        if token.op == Op.accept.rawValue {
            if let (fd, i) = acceptor.accepted(c, draining: draining, reactor) { accepted(fd, listener: i, reactor) }
            return
        }
        let id = Slab<Connection>.ID(index: token.slot, generation: token.generation)
        guard connections.isCurrent(id) else {
            // A completion for a slot that has been freed (and perhaps reused): drop it.
            if let b = c.bufferID { reactor.backend.releaseBuffer(b) }
            return
        }
        connections[id].inflight -= 1
        let op = token.op
        if op == Op.connect.rawValue {
            connected(id, c.result, reactor)
            return
        }
        if op == Op.inspect.rawValue {
            if connections[id].phase == .closing { return finishIfQuiet(id, reactor) }
            if c.result < 0 { return close(id, reset: false, reactor) }
            return inspect(id, reactor)
        }
        let d = Int((op - Op.poll.rawValue) / 3)
        let kind = op - 3 * UInt8(d)
        connections[id][d].inFlight = 0
        if connections[id].phase == .closing {
            finishIfQuiet(id, reactor)
            return
        }
        switch kind {
        case Op.poll.rawValue: polled(id, d, c.result, reactor)
        case Op.read.rawValue: read(id, d, c.result, reactor)
        case Op.write.rawValue: wrote(id, d, c.result, reactor)
        default: bug("unknown relay op \(op)")
        }
    }

    public func timerFired(_ token: Token, _ reactor: Reactor<Backend>) {
        if token.op == Op.acceptBackoff.rawValue {
            acceptor.backoffFired(token, headroom: (settings.descriptorCap - counters.descriptors.load(ordering: .relaxed)) / 2, reactor)
            return
        }
        let id = Slab<Connection>.ID(index: token.slot, generation: token.generation)
        guard connections.isCurrent(id), connections[id].phase != .closing else { return }
        switch token.op {
        case Op.socketRetry.rawValue:
            if connections[id].phase == .waitingForSocket { connectUpstream(id, reactor) }
        case Op.inspectRetry.rawValue:
            if connections[id].phase == .inspecting { inspect(id, reactor) }
        case Op.connectTimer.rawValue:
            connections[id].connectTimer = nil
            if connections[id].phase == .inspecting {
                Log.debug("no whole ClientHello within \(settings.connectTimeout): closing")
                close(id, reset: false, reactor)
            } else if connections[id].phase == .connecting || connections[id].phase == .waitingForSocket {
                counters.upstreamConnectFailures.add(1, ordering: .relaxed)
                Log.debug("upstream connect timed out after \(settings.connectTimeout)")
                close(id, reset: false, reactor)
            }
        case Op.idleTimer.rawValue:
            connections[id].idleTimer = nil
            let now = System.monotonicNanos()
            let deadline = relayDue(id)
            if now >= deadline {
                Log.debug(connections[id].expires != 0 && now >= connections[id].expires
                          ? "connection reached its cluster's maxConnectionDuration: closing"
                          : "connection idle for \(TernDuration(nanoseconds: connections[id].idleTimeout)): closing")
                close(id, reset: false, reactor)
            } else {
                connections[id].idleTimer = reactor.timers.schedule(token, at: deadline)
            }
        case Op.pipeRetry.rawValue, Op.pipeRetry.rawValue + 3:
            let d = Int(token.op - Op.pipeRetry.rawValue) / 3
            if connections[id][d].state == .waitingForPipe { polled(id, d, 0, reactor) }
        default:
            bug("unknown relay timer \(token.op)")
        }
    }

    /// `now + duration`, saturating (a duration of centuries must not trap).
    private func deadline(after duration: TernDuration) -> UInt64 {
        let (sum, overflow) = System.monotonicNanos().addingReportingOverflow(duration.nanoseconds)
        return overflow ? UInt64.max : sum
    }

    private func token(_ op: Op, _ id: Slab<Connection>.ID, direction d: Int = 0) -> Token {
        Token(op: op.rawValue + 3 * UInt8(d), slot: id.index, generation: id.generation)
    }

    // MARK: - Accept and connect

    private func accepted(_ fd: Int32, listener i: Int, _ reactor: Reactor<Backend>) {
        let active = counters.active.wrappingAdd(1, ordering: .relaxed).newValue
        if settings.maxConnections > 0 && active > settings.maxConnections {
            counters.active.subtract(1, ordering: .relaxed)
            counters.rejectedOverLimit.add(1, ordering: .relaxed)
            System.close(fd)
            return
        }
        counters.accepted.add(1, ordering: .relaxed)
        System.setNoDelay(fd)
        guard let id = connections.insert(Connection(client: fd, upstream: -1, listener: i)) else {
            counters.active.subtract(1, ordering: .relaxed)
            counters.rejectedOverLimit.add(1, ordering: .relaxed)
            System.close(fd)
            return
        }
        counters.descriptors.add(1, ordering: .relaxed)
        metrics?.tcp(service: 0, opened: 1)
        if let capture {
            // Per connection, and only with the access log on.
            connections[id].startMono = System.monotonicNanos()
            connections[id].startWall = System.wallClockMicros()
            if let peer = try? System.peerAddress(fd) {
                peer.withText(withPort: true) { capture.set(Int(id.index), .downstreamRemote, $0) }
            } else {
                capture.clear(Int(id.index), .downstreamRemote)
            }
            capture.set(Int(id.index), .downstreamLocal, i < listenerNames.count ? listenerNames[i] : "")
        }
        reactor.backend.register(fd: fd)
        connections[id].connectTimer = reactor.timers.schedule(
            token(.connectTimer, id), at: deadline(after: settings.connectTimeout))
        if i < router.routesBySNI.count && router.routesBySNI[i] && !helloBuffer.isEmpty {
            // Routed by the server name its ClientHello carries: read (peeked) before anything else happens, within
            // the connect timeout.
            connections[id].phase = .inspecting
            return startInspect(id, reactor)
        }
        routed(id, router.choose(listener: i, clientAddress: { try? System.peerAddress(fd) },
                                 destinationIP: { System.originalDestination(fd).flatMap(IPAddress.init) }), reactor)
    }

    private func routed(_ id: Slab<Connection>.ID, _ choice: TCPRouter.Choice, _ reactor: Reactor<Backend>) {
        switch choice {
        case .upstream(let pick):
            connections[id].route = pick
            if let c = pick.circuit?.connectionSettings.connectTimeout, c != settings.connectTimeout.nanoseconds {
                // The cluster's own connect timeout (DestinationRule tcp.connectTimeout), from now.
                if let t = connections[id].connectTimer { reactor.timers.cancel(t) }
                connections[id].connectTimer = reactor.timers.schedule(token(.connectTimer, id), at: deadline(after: TernDuration(nanoseconds: c)))
            }
            connectUpstream(id, reactor)
        case .none(let flag):
            // Nowhere to go (Envoy's TCP proxy closes the connection too).
            Log.debug("connection not routed: \(flag)")
            if accessLog != nil { connections[id].flags = ResponseFlags(name: flag.description) ?? [] }
            close(id, reset: false, reactor)
        }
    }

    // MARK: - SNI routing

    private func startInspect(_ id: Slab<Connection>.ID, _ reactor: Reactor<Backend>) {
        connections[id].inflight += 1
        reactor.backend.poll(.readable(connections[id].client), knownNotReady: false, token: token(.inspect, id))
    }

    /// Peeks at the client's first bytes: a whole ClientHello (to its server name) routes the connection, whose
    /// bytes then all go to the upstream as they are (nothing was consumed); a partial one is peeked again shortly
    /// (readiness would report the same bytes at once); anything else, or a hello beyond `helloLimit`, closes it.
    private func inspect(_ id: Slab<Connection>.ID, _ reactor: Reactor<Backend>) {
        let fd = connections[id].client
        var hello = helloBuffer, name = nameBuffer
        helloBuffer = []
        nameBuffer = []
        defer {
            helloBuffer = hello
            nameBuffer = name
        }
        let n = System.peek(fd, into: &hello)
        if n == -Int(Errno.EAGAIN) { return startInspect(id, reactor) }
        guard n > 0 else { return close(id, reset: false, reactor) }
        var out = name.mutableSpan
        let result = ClientHello.serverName(in: hello.span.extracting(0..<n), into: &out)
        switch result {
        case .complete(let length):
            if let capture {
                if length > 0 {
                    capture.set(Int(id.index), .serverName, name.span.extracting(0..<length))
                } else {
                    capture.clear(Int(id.index), .serverName)
                }
            }
            connections[id].phase = .connecting
            let i = connections[id].listener
            routed(id, router.choose(listener: i, serverName: name.span.extracting(0..<length),
                                     clientAddress: { try? System.peerAddress(fd) },
                                     destinationIP: { System.originalDestination(fd).flatMap(IPAddress.init) }), reactor)
        case .incomplete where n < hello.count:
            let delay = connections[id].inspectDelay
            connections[id].inspectDelay = min(delay * 2, 320)
            _ = reactor.timers.schedule(token(.inspectRetry, id), at: System.monotonicNanos() + UInt64(delay) * 1_000_000)
        case .incomplete, .notTLS:
            Log.debug("not a TLS ClientHello (or one beyond \(Self.helloLimit) bytes) on a listener routing by SNI: closing")
            close(id, reset: false, reactor)
        }
    }

    /// Opens the upstream socket and connects it. When no descriptor is left (EMFILE/ENFILE: more
    /// connections were accepted than the cap, as a multishot accept can), the client waits, with its
    /// bytes unread in the kernel, and the socket is retried shortly; the connect timeout still applies.
    private func connectUpstream(_ id: Slab<Connection>.ID, _ reactor: Reactor<Backend>) {
        let upstreamAddress = router.addresses[Int(connections[id].route.address)]
        let upstream: Int32
        do {
            upstream = try System.tcpSocket(family: upstreamAddress.family)
        } catch {
            if connections[id].phase != .waitingForSocket {
                Log.debug("upstream socket: \(error); waiting for a descriptor")
            }
            connections[id].phase = .waitingForSocket
            _ = reactor.timers.schedule(token(.socketRetry, id), at: System.monotonicNanos() + 5_000_000)
            return
        }
        counters.descriptors.add(1, ordering: .relaxed)
        System.setNoDelay(upstream)
        if let c = connections[id].route.circuit?.connectionSettings, c.keepalive {
            System.setKeepalive(upstream, idle: c.keepaliveTime, interval: c.keepaliveInterval, probes: c.keepaliveProbes)
        }
        reactor.backend.register(fd: upstream)
        connections[id].upstream = upstream
        connections[id].phase = .connecting
        connections[id].inflight += 1
        reactor.backend.connect(fd: upstream, to: upstreamAddress, token: token(.connect, id))
    }

    /// When the relayed connection is to close unless bytes move: its idle timeout from its last activity, or the
    /// end of its maximum duration, whichever is first (UInt64.max: never).
    private func relayDue(_ id: Slab<Connection>.ID) -> UInt64 {
        var due = UInt64.max
        if connections[id].idleTimeout > 0 {
            let (sum, overflow) = connections[id].lastActivity.addingReportingOverflow(connections[id].idleTimeout)
            due = overflow ? UInt64.max : sum
        }
        if connections[id].expires != 0 { due = min(due, connections[id].expires) }
        return due
    }

    private func connected(_ id: Slab<Connection>.ID, _ result: Int32, _ reactor: Reactor<Backend>) {
        if connections[id].phase == .closing {
            finishIfQuiet(id, reactor)
            return
        }
        if let t = connections[id].connectTimer { reactor.timers.cancel(t) }
        connections[id].connectTimer = nil
        if result < 0 {
            counters.upstreamConnectFailures.add(1, ordering: .relaxed)
            connections[id].flags.insert(.upstreamConnectionFailure)
            Log.debug("upstream connect failed: \(Errno.name(-result))")
            close(id, reset: false, reactor)
            return
        }
        connections[id].phase = .relaying
        let now = System.monotonicNanos()
        connections[id].lastActivity = now
        // (An HTTP tunnel handed over keeps the HTTP connection's --idle-timeout and no maximum duration: its
        // circuit is only counted here.)
        let cluster = connections[id].listener >= 0 ? connections[id].route.circuit?.connectionSettings : nil
        connections[id].idleTimeout = cluster?.tcpIdleTimeout ?? settings.idleTimeout.nanoseconds
        if let duration = cluster?.maxConnectionDuration, duration > 0 {
            let (sum, overflow) = now.addingReportingOverflow(duration)
            connections[id].expires = overflow ? UInt64.max : sum
        }
        let due = relayDue(id)
        if due != UInt64.max { connections[id].idleTimer = reactor.timers.schedule(token(.idleTimer, id), at: due) }
        startPoll(id, 0, reactor)
        startPoll(id, 1, reactor)
    }

    // MARK: - Directions

    private func startPoll(_ id: Slab<Connection>.ID, _ d: Int, knownNotReady: Bool = false, _ reactor: Reactor<Backend>) {
        connections[id][d].state = .polling
        connections[id][d].inFlight = Op.poll.rawValue
        connections[id].inflight += 1
        reactor.backend.poll(.readable(connections[id].source(d)), knownNotReady: knownNotReady, token: token(.poll, id, direction: d))
    }

    private func polled(_ id: Slab<Connection>.ID, _ d: Int, _ result: Int32, _ reactor: Reactor<Backend>) {
        if result < 0 {
            close(id, reset: false, reactor)
            return
        }
        guard let pipe = reactor.pipes.acquire() else {
            // No pipe can be had (descriptors ran out and the reserve is in use). A source that has only
            // ended or failed needs no pipe: settle it now so the connection can finish and free its
            // descriptors. Otherwise retry shortly.
            let peeked = System.peek(connections[id].source(d))
            if peeked == 0 || (peeked < 0 && peeked != -Int(Errno.EAGAIN)) {
                read(id, d, Int32(peeked), reactor)
                return
            }
            connections[id][d].state = .waitingForPipe
            _ = reactor.timers.schedule(token(.pipeRetry, id, direction: d), at: System.monotonicNanos() + 10_000_000)
            return
        }
        connections[id][d].pipe = pipe
        startRead(id, d, reactor)
    }

    /// Splices from src into the direction's pipe. `speculative`: data may not be there; try once and
    /// fall back to polling without the pipe on EAGAIN (so an idle connection holds no pipe).
    private func startRead(_ id: Slab<Connection>.ID, _ d: Int, speculative: Bool = false, _ reactor: Reactor<Backend>) {
        let c = connections[id]
        guard let pipe = c[d].pipe else { return bug("read without a pipe") }
        connections[id][d].state = .reading
        connections[id][d].inFlight = Op.read.rawValue
        connections[id].inflight += 1
        reactor.backend.splice(from: c.source(d), to: pipe.writeEnd, count: pipe.capacity,
                               waitFor: speculative ? nil : .readable(c.source(d)), token: token(.read, id, direction: d))
    }

    private func read(_ id: Slab<Connection>.ID, _ d: Int, _ n: Int32, _ reactor: Reactor<Backend>) {
        if n > 0 {
            connections[id].lastActivity = System.monotonicNanos()
            connections[id][d].buffered = Int(n)
            connections[id][d].lastReadFilled = Int(n) == connections[id][d].pipe?.capacity
            startWrite(id, d, reactor)
        } else if n == 0 {
            // End of stream from src: pass the FIN on and keep the other direction open (half-close).
            releasePipe(id, d, reactor)
            connections[id][d].state = .done
            _ = System.shutdown(connections[id].destination(d), write: true, read: false)
            if connections[id][1 - d].state == .done { close(id, reset: false, reactor) }
        } else if n == -Errno.EAGAIN {
            releasePipe(id, d, reactor)
            startPoll(id, d, knownNotReady: true, reactor)
        } else {
            // src was reset (or failed): reset the other side too.
            Log.debug("read failed: \(Errno.name(-n)); resetting the peer")
            close(id, reset: true, reactor)
        }
    }

    private func startWrite(_ id: Slab<Connection>.ID, _ d: Int, _ reactor: Reactor<Backend>) {
        let c = connections[id]
        guard let pipe = c[d].pipe else { return bug("write without a pipe") }
        connections[id][d].state = .writing
        connections[id][d].inFlight = Op.write.rawValue
        connections[id].inflight += 1
        reactor.backend.splice(from: pipe.readEnd, to: c.destination(d), count: c[d].buffered,
                               waitFor: .writable(c.destination(d)), token: token(.write, id, direction: d))
    }

    private func wrote(_ id: Slab<Connection>.ID, _ d: Int, _ n: Int32, _ reactor: Reactor<Backend>) {
        if n > 0 {
            connections[id].lastActivity = System.monotonicNanos()
            connections[id][d].buffered -= Int(n)
            if connections[id].listener >= 0 {
                if d == 0 { connections[id].received &+= UInt64(n) } else { connections[id].sent &+= UInt64(n) }
                if let metrics {
                    if d == 0 { metrics.tcp(service: 0, received: UInt64(n)) } else { metrics.tcp(service: 0, sent: UInt64(n)) }
                }
            }
            if connections[id][d].buffered > 0 {
                startWrite(id, d, reactor)
            } else if connections[id][d].lastReadFilled {
                startRead(id, d, reactor)
            } else if Backend.speculativeIOIsCheap {
                startRead(id, d, speculative: true, reactor)
            } else {
                releasePipe(id, d, reactor)
                startPoll(id, d, reactor)
            }
        } else if n == -Errno.EAGAIN {
            startWrite(id, d, reactor)
        } else {
            // dst is gone (EPIPE, ECONNRESET): reset the side we read from.
            Log.debug("write failed: \(Errno.name(-n)); resetting the peer")
            close(id, reset: true, reactor)
        }
    }

    private func releasePipe(_ id: Slab<Connection>.ID, _ d: Int, _ reactor: Reactor<Backend>) {
        guard let pipe = connections[id][d].pipe else { return }
        connections[id][d].pipe = nil
        // In the normal flow the pipe is released empty; after an interrupted transfer, ask the kernel.
        let holdsData = connections[id][d].buffered > 0 || (connections[id].phase == .closing && System.bytesReadable(pipe.readEnd) > 0)
        connections[id][d].buffered = 0
        reactor.pipes.release(pipe, holdsData: holdsData)
    }

    // MARK: - Closing

    /// Starts closing: cancels what is in flight; the slot is freed once every operation has completed
    /// (the kernel may still be using the pipes and descriptors until then).
    private func close(_ id: Slab<Connection>.ID, reset: Bool, _ reactor: Reactor<Backend>) {
        if reset {
            counters.resetsPropagated.add(1, ordering: .relaxed)
            System.setLingerReset(connections[id].client)
            if connections[id].upstream >= 0 { System.setLingerReset(connections[id].upstream) }
        }
        if connections[id].phase == .closing { return }
        connections[id].phase = .closing
        router.finished(connections[id].route)
        if let t = connections[id].connectTimer { reactor.timers.cancel(t) }
        if let t = connections[id].idleTimer { reactor.timers.cancel(t) }
        connections[id].connectTimer = nil
        connections[id].idleTimer = nil
        let c = connections[id]
        if c.inflight > 0 {
            for d in 0..<2 where c[d].inFlight != 0 {
                let fd = c[d].inFlight == Op.write.rawValue ? c.destination(d) : c.source(d)
                reactor.backend.cancel(fd: fd, token: Token(op: c[d].inFlight + 3 * UInt8(d), slot: id.index, generation: id.generation))
            }
            reactor.backend.cancel(fd: c.upstream, token: token(.connect, id))
            // Wake operations the kernel has already started.
            _ = System.shutdown(c.client, write: false, read: true)
            if c.upstream >= 0 { _ = System.shutdown(c.upstream, write: false, read: true) }
        }
        finishIfQuiet(id, reactor)
    }

    private func finishIfQuiet(_ id: Slab<Connection>.ID, _ reactor: Reactor<Backend>) {
        guard connections[id].inflight == 0 else { return }
        releasePipe(id, 0, reactor)
        releasePipe(id, 1, reactor)
        let c = connections[id]
        reactor.backend.unregister(fd: c.client)
        System.close(c.client)
        if c.upstream >= 0 {
            reactor.backend.unregister(fd: c.upstream)
            System.close(c.upstream)
        }
        counters.descriptors.subtract(c.upstream >= 0 ? 2 : 1, ordering: .relaxed)
        if c.listener >= 0 {
            metrics?.tcp(service: 0, closed: 1)
            if let accessLog { log(c, slot: Int(id.index), accessLog) }
        }
        connections.remove(id)
        counters.active.subtract(1, ordering: .relaxed)
    }

    /// One access-log line for a connection from a listener, when it is gone.
    private func log(_ c: Connection, slot: Int, _ shard: AccessLogShard) {
        var r = AccessLogRecord()
        r.protocol = .tcp
        r.startMicros = c.startWall
        r.durationMicros = (System.monotonicNanos() &- c.startMono) / 1000
        r.flags = c.flags
        r.bytesReceived = c.received
        r.bytesSent = c.sent
        let a = Int(c.route.address)
        if a >= 0 && a < router.addresses.count {
            while addressNames.count < router.addresses.count { addressNames.append(router.addresses[addressNames.count].description) }
            r.upstreamHost = addressNames[a]
        }
        r.upstreamCluster = router.clusterName(c.route)
        shard.append(r, capture: capture, slot: slot)
    }
}
