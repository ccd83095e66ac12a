// One reactor's share of a tern-load run: its connections, its histograms, its counters. Everything here runs
// on that reactor's thread; the main thread sees only the atomics of `ReactorLink` and, at the end, the result.
//
// A client is one HTTP/1.1 connection's worth of load (with --compare, one socket per target, used in turns).
// It has at most one request in flight:
//
//     idle ──issue──▶ waiting for socket ──connected──▶ sending ──sent──▶ reading head ──▶ reading body
//      ▲ ▲                  │ connect failed, timeout       │ reset          │ reset, timeout    │ end of body
//      │ │                  ▼                               ▼                ▼                   │
//      │ └──────── failed: counted by kind; the socket is closed (reopened for the next request)  │
//      └──────────────────────────────────── complete: recorded ◀───────────────────────────────┘
//
// Closed loop: a client issues its next request as soon as the last one ended. Open loop: request k of client i
// is due at OpenLoopSchedule.intendedOffset(i, k); a client that is still busy when its next request is due
// sends it as soon as it is free, and the latency counts from the due time (coordinated omission, corrected).
//
// With --h2 a connection is an HTTP/2 session (H2LoadConnection) carrying --streams lanes, each a client as above
// (one request in flight, as a stream of its own): a lane's connect, timeout and completion are its own; a stream
// that times out is reset, not its connection; GOAWAY makes the connection take no new stream, and it is reopened
// once its streams have ended. The open-loop schedule spreads the rate over every lane.
//
// Steady state allocates nothing per request (HTTP/1.1; over HTTP/2 nghttp2 allocates per stream): the request bytes are built once, parsers and decoders are reset,
// received bytes are read in the pooled buffer they arrived in, timeouts are found by a periodic sweep (no
// timer per request), due sends wait in a heap of fixed capacity. (--hdr-log takes fresh histograms once a
// second.)
import Glibc
import Synchronization
import TernCore
import TernHTTP
import TernIO
import TernLoadCore
import TernTLS

/// Between the main thread and one reactor.
final class ReactorLink: Sendable {
    /// Set once every socket of the reactor has connected or failed to (the run starts after that).
    let connected = Atomic<Bool>(false)
    let exited = Atomic<Bool>(false)
    /// Live counters for the progress line (single writer, relaxed).
    let completed = Atomic<UInt64>(0)
    let failed = Atomic<UInt64>(0)
    let result = Mutex<ReactorResult?>(nil)
    let failure = Mutex<String?>(nil)
    /// --hdr-log: one shard per second of measurement, taken by the main thread as they come.
    let intervals = Mutex<[IntervalShard]>([])
}

/// One reactor's histograms for one interval of the HdrHistogram log (interval `index` from the start of
/// the measurement), per report.
struct IntervalShard: Sendable {
    var index: Int
    var recorders: [LatencyRecorder]
    /// The reactor's last (its length is known only once the run ended).
    var final: Bool
}

/// Shared by every reactor: when the run starts, whether it must stop now.
final class RunClock: Sendable {
    /// Monotonic nanoseconds at which warm-up starts; 0 until the main thread publishes it.
    let start = Atomic<UInt64>(0)
    /// SIGINT: stop at once, keep what was measured.
    let stop = Atomic<Bool>(false)
    /// A malformed response was explained on stderr (once per run, not per reactor).
    let explainedMalformed = Atomic<Bool>(false)
}

/// What one reactor measured, per target (one target unless --compare).
struct ReactorResult: Sendable {
    var recorders: [LatencyRecorder]
    var errors: [ErrorCounts]
    var bytesSent: [UInt64]
    var bytesReceived: [UInt64]
    /// When the last recorded response ended (monotonic ns), for runs that end on a request count.
    var lastCompletion: UInt64 = 0
}

/// The part of the settings a reactor needs, with its share of the connections and requests.
struct ReactorPlan: Sendable {
    var settings: LoadSettings
    /// Global indices of this reactor's clients (the open-loop schedule spreads the rate over all of them).
    var clients: Range<Int>
    /// --requests: how many this reactor sends after the warm-up.
    var requestQuota: UInt64?
}

final class LoadClient<Backend: IOBackend> {
    private enum Op: UInt8 {
        case connect = 1, send = 2, receive = 3
        case reconnect = 9
    }

    private enum SocketPhase { case closed, connecting, open, closing }

    private struct Socket {
        var fd: Int32 = -1
        var phase = SocketPhase.closed
        /// Bumped each time the socket is closed, so completions and timers of an earlier socket are dropped.
        var generation: UInt32 = 0
        /// Operations the kernel still owns (connect, the multishot receive, a send).
        var pending = 0
        var receiving = false
        var sending = false
        /// After a failed connect, not before this time (back-off).
        var retryAt: UInt64 = 0
        var reconnectScheduled = false
        /// https: the handshake has not finished (the request waits for it).
        var handshaking = false
        /// https: this connection's session was kept for the next one to resume.
        var sessionKept = false
    }

    private enum Reading {
        case head
        case body(remaining: UInt64)
        case chunked
        case untilClose
    }

    private struct Client {
        var global: Int
        /// Target of the request in flight (or of the last one).
        var target = 0
        var busy = false
        /// The request's bytes are on their way (its socket was open).
        var transmitted = false
        var sentBytes = 0
        var intended: UInt64 = 0
        var sent: UInt64 = 0
        var reading = Reading.head
        var status = 0
        var keepAlive = true
        /// Whether the request counts (it was due after the warm-up and before the end).
        var measured = false
        /// Serial of the request in flight (bytes left over from an earlier response are not fed to it).
        var serial: UInt32 = 0
        /// When the request in flight times out (found by the periodic sweep).
        var deadline: UInt64 = .max
        /// Open loop: index of the next request in this client's schedule.
        var nextRequest: UInt64 = 0
        /// --h2: the stream of the request in flight (0: none yet), and whether the server refused it unprocessed
        /// (it goes again, keeping its first send time).
        var stream: Int32 = 0
        var refused = false
    }

    private let backend: Backend
    private let timers: TimerWheel
    private let plan: ReactorPlan
    private let link: ReactorLink
    private let clock: RunClock
    private let compare: Bool
    private let schedule: OpenLoopSchedule?
    private let isHEAD: Bool
    private let timeoutNanos: UInt64
    private let requests: [RequestBytes]
    /// --h2: lanes (clients) per connection, each connection's session, and each target's request head.
    private let http2: Bool
    private let lanes: Int
    private var h2: [H2LoadConnection?]
    private let h2Heads: [[(name: [UInt8], value: [UInt8])]]

    private var sockets: [Socket]
    /// https: the sockets' sessions and records, the client context, and per socket the session its next
    /// connection resumes (unless --no-resume).
    private let tls: TLSClientIO?
    private let tlsContext: TLSContext?
    private var resumptions: [TLSResumption?]
    private var clients: [Client]
    private var parsers: [HTTP1Parser]
    private var decoders: [ChunkedDecoder]
    /// Heads that arrived in more than one receive, gathered until complete (rare; capacity kept).
    private var staging: [[UInt8]]
    private var due: DueHeap

    private var recorders: [LatencyRecorder]
    private var errors: [ErrorCounts]
    private var bytesSent: [UInt64]
    private var bytesReceived: [UInt64]
    private var lastCompletion: UInt64 = 0
    private var completedCount: UInt64 = 0
    private var failedCount: UInt64 = 0

    private var start: UInt64 = 0
    private var measureStart: UInt64 = .max
    private var measureEnd: UInt64 = .max
    private var measuredIssued: UInt64 = 0
    private var ending = false
    private var stopping = false
    private var nextSweep: UInt64 = 0
    private let sweepInterval: UInt64
    /// --hdr-log: what this interval recorded (a second of measurement), handed to the main thread at its end.
    private let logsIntervals: Bool
    private var intervalRecorders: [LatencyRecorder]
    private var intervalIndex = 0
    private var intervalEnd: UInt64 = .max

    /// Past the end of a timed run, responses on their way, and open-loop requests that were due before the
    /// end but could not leave yet (a server stalling across the end must not hide its stall), are awaited
    /// this long (or --timeout, if shorter).
    static var endGraceNanos: UInt64 { 1_000_000_000 }
    /// Closed loop: how long a client waits before reconnecting after a failed connect.
    static var reconnectBackoffNanos: UInt64 { 10_000_000 }

    init(backend: Backend, plan: ReactorPlan, link: ReactorLink, clock: RunClock) {
        self.backend = backend
        self.plan = plan
        self.link = link
        self.clock = clock
        let s = plan.settings
        compare = s.compare
        http2 = s.http2
        lanes = s.http2 ? s.streams : 1
        if case .openLoop(let rate) = s.mode {
            schedule = OpenLoopSchedule(rate: rate, connections: s.connections * lanes)
        } else {
            schedule = nil
        }
        isHEAD = s.method == "HEAD"
        timeoutNanos = s.timeoutNanos
        requests = s.targets.map { RequestBytes(s.requestBytes(for: $0)) }
        // --compare: one socket per target for each client; otherwise client i uses target i mod targets. --h2:
        // one socket per connection, carrying `lanes` clients.
        let socketsPerClient = compare ? 2 : 1
        let socketCount = plan.clients.count * socketsPerClient
        sockets = [Socket](repeating: Socket(), count: socketCount)
        tlsContext = s.tlsContext
        let largest = max(requests.map(\.count).max() ?? 0, s.http2 ? H2LoadConnection.capacity : 0)
        tls = s.tlsContext == nil ? nil : TLSClientIO(sockets: socketCount, largestRequest: largest)
        resumptions = [TLSResumption?](repeating: nil, count: s.tlsContext == nil ? 0 : socketCount)
        if s.http2 {
            let lanes = s.streams
            clients = plan.clients.flatMap { g in (0..<lanes).map { Client(global: g * lanes + $0, target: g % s.targets.count) } }
        } else {
            clients = plan.clients.map { Client(global: $0, target: s.compare ? 0 : $0 % s.targets.count) }
        }
        h2 = [H2LoadConnection?](repeating: nil, count: s.http2 ? socketCount : 0)
        h2Heads = s.http2 ? s.targets.map { s.http2Head(for: $0) } : []
        let n = clients.count
        parsers = [HTTP1Parser](repeating: HTTP1Parser(kind: .response), count: n)
        decoders = [ChunkedDecoder](repeating: ChunkedDecoder(), count: n)
        staging = [[UInt8]](repeating: [], count: n)
        due = DueHeap(capacity: n)
        let perTarget = compare ? 2 : 1
        recorders = [LatencyRecorder](repeating: LatencyRecorder(), count: perTarget)
        logsIntervals = s.hdrLogPath != nil
        intervalRecorders = logsIntervals ? recorders : []
        errors = [ErrorCounts](repeating: ErrorCounts(), count: perTarget)
        bytesSent = [UInt64](repeating: 0, count: perTarget)
        bytesReceived = [UInt64](repeating: 0, count: perTarget)
        // A reconnect per socket at most.
        timers = TimerWheel(capacity: socketCount + 16, now: System.monotonicNanos())
        sweepInterval = max(1_000_000, min(s.timeoutNanos / 10, 100_000_000))
    }

    // MARK: - The loop

    /// Connects every socket, waits for the start, runs until the end (or SIGINT) and returns what it measured.
    func run() throws(IOError) -> ReactorResult {
        for s in sockets.indices { open(s, now: System.monotonicNanos()) }
        var announced = false
        while true {
            let now = System.monotonicNanos()
            if !announced && sockets.allSatisfy({ $0.phase != .connecting && !$0.handshaking }) {
                announced = true
                link.connected.store(true, ordering: .releasing)
            }
            if start == 0 {
                let s = clock.start.load(ordering: .acquiring)
                if s != 0 && now >= s { begin(at: s, now: now) }
            }
            if !stopping && clock.stop.load(ordering: .relaxed) { stopAll() }
            if start != 0 && !stopping { advance(now) }
            if now >= intervalEnd { flushInterval() }
            if start != 0 && !stopping && now >= nextSweep {
                sweep(now)
                nextSweep = now + sweepInterval
            }
            if stopping && sockets.allSatisfy({ $0.phase == .closed }) { break }

            // Sleep until just before the next due send (the timer wheel's 1 ms ticks are too coarse for it), the
            // next timer, or 10 ms at most, so a stop request is seen promptly without a cross-thread wake-up.
            // Just before a send, poll and give way to other threads (SendWait).
            var timeout: UInt64 = 10_000_000
            if let t = timers.nanosUntilNext(now: now) { timeout = min(timeout, t) }
            if start != 0 { timeout = nextSweep > now ? min(timeout, nextSweep - now) : 0 }
            if intervalEnd != .max { timeout = intervalEnd > now ? min(timeout, intervalEnd - now) : 0 }
            let wait = SendWait.before(nextDue: stopping ? nil : due.top?.at, now: now)
            switch wait {
            case .sleep(let nanos): timeout = min(timeout, nanos)
            case .poll: timeout = 0
            case .idle: break
            }
            let n = try backend.wait(timeoutNanos: timeout)
            if n == 0 && wait == .poll { sched_yield() }
            for i in 0..<n { handle(backend.completion(at: i)) }
            timers.expire(now: System.monotonicNanos()) { fired($0) }
        }
        if logsIntervals && start != 0 { flushInterval(final: true) }
        return ReactorResult(recorders: recorders, errors: errors, bytesSent: bytesSent, bytesReceived: bytesReceived,
                             lastCompletion: lastCompletion)
    }

    private func begin(at s: UInt64, now: UInt64) {
        start = s
        measureStart = s + plan.settings.warmupNanos
        if case .duration(let d) = plan.settings.stop { measureEnd = measureStart + d }
        if logsIntervals { intervalEnd = boundary(after: measureStart) }
        for c in clients.indices {
            if let schedule {
                let at = start + schedule.intendedOffset(connection: clients[c].global, request: 0)
                due.push(at: at, client: c)
            } else {
                issue(c, now: now)
            }
        }
    }

    /// Sends what is due and ends the run when its time or its request count is reached.
    private func advance(_ now: UInt64) {
        while let top = due.top, top.at <= now {
            due.pop()
            issue(top.client, now: now, intended: top.at)
        }
        if !ending {
            if now >= measureEnd { ending = true }
            if let quota = plan.requestQuota, measuredIssued >= quota, now >= measureStart { ending = true }
        }
        if ending {
            let graceOver = measureEnd != .max && now >= measureEnd + min(Self.endGraceNanos, timeoutNanos)
            if graceOver || !clients.contains(where: { $0.busy }) { stopAll() }
        }
    }

    /// Hands this interval's histograms to the main thread and starts the next (a fresh pair of histograms
    /// once a second: not on the request path).
    private func flushInterval(final: Bool = false) {
        let shard = IntervalShard(index: intervalIndex, recorders: intervalRecorders, final: final)
        link.intervals.withLock { $0.append(shard) }
        for i in intervalRecorders.indices { intervalRecorders[i] = LatencyRecorder() }
        intervalIndex += 1
        if intervalEnd != .max { intervalEnd = boundary(after: intervalEnd) }
    }

    /// The end of the interval starting at `t`; none for the last one before the end of a timed run, which
    /// also takes the responses that arrive after the end (their requests were due before it).
    private func boundary(after t: UInt64) -> UInt64 {
        let end = t + LoadSettings.hdrLogIntervalNanos
        return end < measureEnd ? end : .max
    }

    private func stopAll() {
        stopping = true
        for s in sockets.indices { close(s, reset: false) }
    }

    // MARK: - Requests

    private func socketIndex(_ c: Int, _ target: Int) -> Int { compare ? 2 * c + target : c / lanes }

    /// Which report a target's requests count in: A or B with --compare, else one for all the URLs.
    private func report(_ target: Int) -> Int { compare ? target : 0 }

    /// Which target a request due at `t` goes to: with --compare, A and B take turns in slices.
    private func target(for c: Int, at t: UInt64) -> Int {
        compare ? CompareSlices(start: start, length: LoadSettings.compareSliceNanos).target(at: t) : clients[c].target
    }

    private func issue(_ c: Int, now: UInt64, intended: UInt64? = nil) {
        let intendedAt = intended ?? now
        // Past the end only requests that were due before it still go out (open loop, behind schedule).
        if stopping || (ending && intendedAt >= measureEnd) { return }
        if intendedAt >= measureStart {
            if let quota = plan.requestQuota, measuredIssued >= quota { return }
            measuredIssued += 1
        }
        let t = target(for: c, at: intendedAt)
        clients[c].busy = true
        clients[c].refused = false
        clients[c].transmitted = false
        clients[c].target = t
        clients[c].intended = intendedAt
        clients[c].measured = intendedAt >= measureStart && intendedAt < measureEnd
        clients[c].serial &+= 1
        if schedule != nil { clients[c].nextRequest += 1 }
        clients[c].deadline = now + timeoutNanos
        let s = socketIndex(c, t)
        switch sockets[s].phase {
        case .open where sockets[s].handshaking: break  // sent once the TLS handshake is done
        case .open: transmit(c, s, now: now)
        case .closed:
            reopen(s, now: now)
        case .connecting, .closing: break  // sent once connected (or reopened)
        }
    }

    private func transmit(_ c: Int, _ s: Int, now: UInt64) {
        if http2 { return h2Transmit(c, s, now: now) }
        clients[c].transmitted = true
        clients[c].sent = now
        clients[c].sentBytes = 0
        clients[c].reading = .head
        parsers[c].reset()
        parsers[c].respondingToHEAD = isHEAD
        if !staging[c].isEmpty { staging[c].removeAll(keepingCapacity: true) }
        if let tls {
            // The whole request becomes records at once; they go out as sends complete.
            let step = tls.write(s, requests[clients[c].target])
            guard case .done = step else { return fail(c, .reset, now: now) }
            clients[c].sentBytes = requests[clients[c].target].count
            return tlsFlush(s)
        }
        sendRest(c, s)
    }

    /// https: sends the socket's records unless a send is in flight (they follow it).
    private func tlsFlush(_ s: Int) {
        guard let tls, !sockets[s].sending, sockets[s].phase == .open, tls.hasPending(s) else { return }
        sockets[s].sending = true
        sockets[s].pending += 1
        tls.send(s, on: backend, fd: sockets[s].fd, token: token(.send, s))
    }

    private func sendRest(_ c: Int, _ s: Int) {
        sockets[s].sending = true
        sockets[s].pending += 1
        requests[clients[c].target].send(on: backend, fd: sockets[s].fd, from: clients[c].sentBytes, token: token(.send, s))
    }

    /// The response ended: record it and go on.
    private func complete(_ c: Int, now: UInt64) {
        let t = clients[c].target, r = report(t)
        clients[c].busy = false
        if clients[c].measured {
            recorders[r].record(intended: clients[c].intended, sent: clients[c].sent, completed: now)
            if logsIntervals { intervalRecorders[r].record(intended: clients[c].intended, sent: clients[c].sent, completed: now) }
            let status = clients[c].status
            if status >= 500 { errors[r].status5xx += 1 } else if status >= 400 { errors[r].status4xx += 1 }
            lastCompletion = now
            completedCount += 1
            link.completed.store(completedCount, ordering: .relaxed)
        }
        let s = socketIndex(c, t)
        if tls != nil { keepSession(s) }
        if !clients[c].keepAlive || plan.settings.reconnect { close(s, reset: false) }
        next(c, now: now)
    }

    /// https: the connection's session, for the next connection of this socket to resume (once per connection,
    /// after its first response, by when TLS 1.3 tickets have come).
    private func keepSession(_ s: Int) {
        guard let tls, plan.settings.resume, !sockets[s].sessionKept, tls.sessions.isOpen(s) else { return }
        sockets[s].sessionKept = true
        if let r = tls.sessions.resumption(s) { resumptions[s] = r }
    }

    private enum Failure { case connect, timeout, reset }

    private func fail(_ c: Int, _ kind: Failure, now: UInt64) {
        let t = clients[c].target, r = report(t)
        clients[c].busy = false
        let stream = clients[c].stream
        clients[c].stream = 0
        if now >= measureStart && (clients[c].measured || kind == .connect) {
            switch kind {
            case .connect: errors[r].connect += 1
            case .timeout: errors[r].timeout += 1
            case .reset: errors[r].reset += 1
            }
            failedCount += 1
            link.failed.store(failedCount, ordering: .relaxed)
        }
        let s = socketIndex(c, t)
        if http2 {
            // A lane's timeout resets its stream only; the connection fails whole (and is closed by whoever saw
            // that) only on a connect failure, a reset or a protocol error.
            if let conn = h2[s], stream != 0 {
                conn.forget(stream)
                if kind == .timeout {
                    conn.session.reset(stream: stream, code: HTTP2ErrorCode.cancel)
                    h2Flush(s)
                }
            }
            if kind == .connect && sockets[s].phase != .open { close(s, reset: false) }
        } else {
            close(s, reset: kind == .timeout)
        }
        next(c, now: now)
    }

    private func next(_ c: Int, now: UInt64) {
        if stopping || (ending && schedule == nil) { return }
        if let schedule {
            let at = start + schedule.intendedOffset(connection: clients[c].global, request: clients[c].nextRequest)
            if at <= now { issue(c, now: now, intended: at) } else { due.push(at: at, client: c) }
        } else {
            issue(c, now: now)
        }
    }

    // MARK: - Sockets

    private func token(_ op: Op, _ s: Int) -> Token {
        Token(op: op.rawValue, slot: UInt32(s), generation: sockets[s].generation)
    }

    /// The clients socket `s` carries (one; --h2: its lanes), and the target it connects to.
    private func lanesOf(_ s: Int) -> (clients: Range<Int>, target: Int) {
        if compare { return (s / 2 ..< s / 2 + 1, s % 2) }
        return (s * lanes ..< (s + 1) * lanes, clients[s * lanes].target)
    }

    /// Whether client `c` has a request waiting to go out on its socket to target `t`.
    private func waiting(_ c: Int, _ t: Int) -> Bool { clients[c].busy && clients[c].target == t && !clients[c].transmitted }

    /// Whether client `c` has a request out on its socket to target `t`.
    private func inFlight(_ c: Int, _ t: Int) -> Bool { clients[c].busy && clients[c].target == t && clients[c].transmitted }

    private func open(_ s: Int, now: UInt64) {
        let address = plan.settings.targets[lanesOf(s).target].address
        let fd: Int32
        do {
            fd = try System.tcpSocket(family: address.family)
        } catch {
            connectFailed(s, now: now)
            return
        }
        System.setNoDelay(fd)
        backend.register(fd: fd)
        sockets[s].fd = fd
        sockets[s].phase = .connecting
        sockets[s].pending = 1
        backend.connect(fd: fd, to: address, token: token(.connect, s))
    }

    private func connectFailed(_ s: Int, now: UInt64) {
        sockets[s].retryAt = now + Self.reconnectBackoffNanos
        let (cs, t) = lanesOf(s)
        for c in cs where waiting(c, t) { fail(c, .connect, now: now) }
    }

    /// Closes a socket once the kernel has given back every operation on it; with `reset`, the peer gets a RST.
    private func close(_ s: Int, reset: Bool) {
        guard sockets[s].phase == .open || sockets[s].phase == .connecting else { return }
        if reset { System.setLingerReset(sockets[s].fd) }
        sockets[s].phase = .closing
        let fd = sockets[s].fd
        if sockets[s].pending > 0 {
            if sockets[s].receiving { backend.cancel(fd: fd, token: token(.receive, s)) }
            if sockets[s].sending { backend.cancel(fd: fd, token: token(.send, s)) }
            backend.cancel(fd: fd, token: token(.connect, s))
            _ = System.shutdown(fd, write: true, read: true)
        }
        finishClose(s)
    }

    private func finishClose(_ s: Int) {
        guard sockets[s].phase == .closing && sockets[s].pending == 0 else { return }
        backend.unregister(fd: sockets[s].fd)
        System.close(sockets[s].fd)
        sockets[s].fd = -1
        sockets[s].phase = .closed
        sockets[s].receiving = false
        sockets[s].sending = false
        sockets[s].handshaking = false
        sockets[s].sessionKept = false
        tls?.reset(s)
        if http2 {
            h2[s] = nil
            for c in lanesOf(s).clients { clients[c].stream = 0 }
        }
        // Tokens carry only so many bits of generation: wrap there, or a slot reused 2^22 times would never again
        // match its completions.
        sockets[s].generation = (sockets[s].generation &+ 1) & Token.generationMask
        // A request issued meanwhile waits for this socket: reopen it.
        let (cs, t) = lanesOf(s)
        if !stopping && cs.contains(where: { waiting($0, t) }) { reopen(s, now: System.monotonicNanos()) }
    }

    /// Opens a closed socket now, or once the back-off after a failed connect is over.
    private func reopen(_ s: Int, now: UInt64) {
        if sockets[s].retryAt > now {
            if !sockets[s].reconnectScheduled {
                sockets[s].reconnectScheduled = timers.schedule(token(.reconnect, s), at: sockets[s].retryAt) != nil
            }
        } else {
            open(s, now: now)
        }
    }

    // MARK: - Completions and timers

    private func handle(_ completion: Completion) {
        let tok = completion.token
        let s = Int(tok.slot)
        guard s < sockets.count, tok.generation == sockets[s].generation, sockets[s].phase != .closed else {
            if let b = completion.bufferID { backend.releaseBuffer(b) }
            return
        }
        let now = System.monotonicNanos()
        switch tok.op {
        case Op.connect.rawValue:
            sockets[s].pending -= 1
            connected(s, completion.result, now: now)
        case Op.send.rawValue:
            sockets[s].pending -= 1
            sockets[s].sending = false
            sent(s, completion.result, now: now)
        case Op.receive.rawValue:
            if !completion.more {
                sockets[s].pending -= 1
                sockets[s].receiving = false
            }
            received(s, completion, now: now)
        default:
            bug("tern-load: unknown op \(tok.op)")
        }
        if sockets[s].phase == .closing { finishClose(s) }
    }

    private func connected(_ s: Int, _ result: Int32, now: UInt64) {
        guard sockets[s].phase == .connecting else { return }
        if result < 0 {
            // The client (if one waits) fails first, so closing does not reopen the socket at once.
            connectFailed(s, now: now)
            close(s, reset: false)
            return
        }
        sockets[s].phase = .open
        armReceive(s)
        if let tls, let tlsContext {
            // The handshake first: the request goes once it is done.
            let target = plan.settings.targets[lanesOf(s).target]
            guard tls.sessions.open(s, tlsContext, serverName: target.serverName, verifyName: target.serverName,
                                    resume: plan.settings.resume ? resumptions[s] : nil) else {
                connectFailed(s, now: now)
                close(s, reset: false)
                return
            }
            sockets[s].handshaking = true
            return tlsHandshake(s, now: now)
        }
        startRequests(s, now: now)
    }

    /// The socket is ready for requests (connected, and its handshake done): those waiting go (--h2: once its
    /// session is made).
    private func startRequests(_ s: Int, now: UInt64) {
        if http2 && !h2Start(s, now: now) { return }
        let (cs, t) = lanesOf(s)
        for c in cs where waiting(c, t) { transmit(c, s, now: now) }
        if http2 { h2Flush(s) }
    }

    private func armReceive(_ s: Int) {
        sockets[s].receiving = true
        sockets[s].pending += 1
        backend.receive(fd: sockets[s].fd, token: token(.receive, s), multishot: true)
    }

    private func sent(_ s: Int, _ result: Int32, now: UInt64) {
        if http2 && tls == nil { return h2Sent(s, result, now: now) }
        let (cs, t) = lanesOf(s)
        let c = cs.lowerBound
        if let tls {
            guard sockets[s].phase == .open else { return }
            if result <= 0 {
                if result == -Errno.EAGAIN { return tlsFlush(s) }
                if http2 && !sockets[s].handshaking { return h2Lost(s, nil, now: now) }
                for c in cs where clients[c].busy && clients[c].target == t && (clients[c].transmitted || sockets[s].handshaking) {
                    fail(c, sockets[s].handshaking ? .connect : .reset, now: now)
                }
                return close(s, reset: false)
            }
            if now >= measureStart { bytesSent[report(t)] += UInt64(result) }
            _ = tls.sent(s, Int(result))
            tlsFlush(s)
            if http2 && !sockets[s].sending { h2Flush(s) }
            // A handshake that filled the buffer (a long client-certificate chain) goes on now there is room.
            if sockets[s].handshaking && !sockets[s].sending { tlsHandshake(s, now: now) }
            return
        }
        guard sockets[s].phase == .open, clients[c].busy, clients[c].target == t, clients[c].transmitted else { return }
        if result <= 0 {
            if result == -Errno.EAGAIN { sendRest(c, s); return }
            fail(c, .reset, now: now)
            return
        }
        if now >= measureStart { bytesSent[report(t)] += UInt64(result) }
        clients[c].sentBytes += Int(result)
        if clients[c].sentBytes < requests[t].count { sendRest(c, s) }
    }

    private func received(_ s: Int, _ completion: Completion, now: UInt64) {
        if http2 && tls == nil { return h2Received(s, completion, now: now) }
        let (cs, t) = lanesOf(s)
        let c = cs.lowerBound
        let mine = clients[c].busy && clients[c].target == t && clients[c].transmitted
        let result = completion.result
        if tls != nil, result > 0, let buffer = completion.bufferID {
            if sockets[s].phase == .open && now >= measureStart { bytesReceived[report(t)] += UInt64(result) }
            if sockets[s].phase == .open { tlsReceived(s, buffer, Int(result), now: now) }
            backend.releaseBuffer(buffer)
            if sockets[s].phase == .open && !completion.more { armReceive(s) }
            return
        }
        if result > 0, let buffer = completion.bufferID {
            if sockets[s].phase == .open && now >= measureStart { bytesReceived[report(t)] += UInt64(result) }
            if mine && sockets[s].phase == .open {
                withReceivedBytes(backend.buffers, buffer, length: Int(result)) { consume(c, $0, now: now) }
            }
            backend.releaseBuffer(buffer)
            if sockets[s].phase == .open && !completion.more { armReceive(s) }
            return
        }
        if let buffer = completion.bufferID { backend.releaseBuffer(buffer) }
        if sockets[s].phase != .open { return }
        if result == -ENOBUFS {
            if !completion.more { armReceive(s) }
            return
        }
        if http2 { return h2Lost(s, nil, now: now) }
        // End of stream or an error: a close-delimited body ends here; any other response in flight failed.
        if mine {
            if result == 0, case .untilClose = clients[c].reading {
                clients[c].keepAlive = false
                complete(c, now: now)
            } else {
                fail(c, .reset, now: now)
            }
        }
        close(s, reset: false)
    }

    /// Fails the requests whose --timeout passed: a request never sent (its connection never came up) as a
    /// connect error, one sent as a timeout. A sweep every `sweepInterval` rather than a timer per request:
    /// cancelling the earliest timer of the wheel on every response would make it rescan itself each time.
    private func sweep(_ now: UInt64) {
        for c in clients.indices where clients[c].busy && clients[c].deadline <= now {
            fail(c, clients[c].transmitted ? .timeout : .connect, now: now)
        }
    }

    private func fired(_ tok: Token) {
        let now = System.monotonicNanos()
        switch tok.op {
        case Op.reconnect.rawValue:
            let s = Int(tok.slot)
            guard s < sockets.count, tok.generation == sockets[s].generation else { return }
            sockets[s].reconnectScheduled = false
            guard sockets[s].phase == .closed else { return }
            let (cs, t) = lanesOf(s)
            if cs.contains(where: { waiting($0, t) }) { open(s, now: now) }
        default:
            bug("tern-load: unknown timer \(tok.op)")
        }
    }

    // MARK: - TLS

    /// Runs the handshake as far as the input allows; once done, the request waiting for it goes.
    private func tlsHandshake(_ s: Int, now: UInt64) {
        guard let tls else { return }
        let step = tls.run(s) { $0.handshake(s) }
        tlsFlush(s)
        switch step {
        case .done:
            sockets[s].handshaking = false
            if http2 && tls.sessions.alpn(s) != "h2" {
                if !clock.explainedMalformed.exchange(true, ordering: .relaxed) {
                    System.writeStderr("tern-load: \(plan.settings.targets[lanesOf(s).target].url) did not choose h2 by ALPN (it chose \(tls.sessions.alpn(s) ?? "nothing")): --h2 needs HTTP/2 (counted as connect errors)")
                }
                connectFailed(s, now: now)
                return close(s, reset: false)
            }
            startRequests(s, now: now)
        case .wantRead, .wantWrite:
            break
        case .closed, .failed:
            if case .failed(let f) = step, !clock.explainedMalformed.exchange(true, ordering: .relaxed) {
                System.writeStderr("tern-load: TLS handshake with \(plan.settings.targets[lanesOf(s).target].url) failed: \(f.detail) (counted as connect errors)")
            }
            connectFailed(s, now: now)
            close(s, reset: false)
        }
    }

    /// Ciphertext arrived: the handshake goes on, or the plaintext goes to the response parser.
    private func tlsReceived(_ s: Int, _ buffer: UInt16, _ length: Int, now: UInt64) {
        guard let tls else { return }
        tls.feed(s, backend.buffers, buffer, length: length)
        defer { if sockets[s].phase != .closed { tls.clearInput(s) } }
        if sockets[s].handshaking {
            tlsHandshake(s, now: now)
            if sockets[s].handshaking || sockets[s].phase != .open { return }
        }
        let (cs, t) = lanesOf(s)
        let c = cs.lowerBound
        let step = tls.read(s) { piece in
            if http2 { return h2Feed(s, piece, now: now) }
            if inFlight(c, t) { consume(c, piece, now: now) }
            return sockets[s].phase == .open
        }
        tlsFlush(s)
        if http2 && sockets[s].phase == .open {
            h2Flush(s)
            h2Recycle(s)
        }
        switch step {
        case .closed:
            if http2 { return h2Lost(s, nil, now: now) }
            if inFlight(c, t) {
                if case .untilClose = clients[c].reading {
                    clients[c].keepAlive = false
                    complete(c, now: now)
                } else {
                    fail(c, .reset, now: now)
                }
            }
            close(s, reset: false)
        case .failed(let f):
            if !clock.explainedMalformed.exchange(true, ordering: .relaxed) {
                System.writeStderr("tern-load: TLS connection to \(plan.settings.targets[t].url) failed: \(f.detail) (counted as reset)")
            }
            if http2 { return h2Lost(s, nil, now: now) }
            for c in cs where clients[c].busy && clients[c].target == t { fail(c, .reset, now: now) }
            close(s, reset: false)
        default:
            break
        }
    }

    // MARK: - Responses

    /// Feeds received bytes (in place, in their pooled buffer) to client c's response.
    /// Bytes after the end of the response are dropped (requests are not pipelined).
    func consume(_ c: Int, _ piece: borrowing Span<UInt8>, now: UInt64) {
        var offset = 0
        let serial = clients[c].serial
        while offset < piece.count && clients[c].busy && clients[c].serial == serial {
            switch clients[c].reading {
            case .head:
                if staging[c].isEmpty {
                    let rest = piece.extracting(offset..<piece.count)
                    guard let length = parseHead(c, rest, now: now) else {
                        // Incomplete: keep the bytes for the next piece (unless the response was refused).
                        if clients[c].busy && clients[c].serial == serial {
                            for i in offset..<piece.count { staging[c].append(piece[i]) }
                        }
                        return
                    }
                    offset += length
                } else {
                    for i in offset..<piece.count { staging[c].append(piece[i]) }
                    consumeStaged(c, now: now)
                    return
                }
            case .body(let remaining):
                let n = min(UInt64(piece.count - offset), remaining)
                offset += Int(n)
                clients[c].reading = .body(remaining: remaining - n)
                if remaining == n { complete(c, now: now) }
            case .chunked:
                do {
                    let out = try decoders[c].decode(piece.extracting(offset..<piece.count))
                    offset += out.consumed
                    if out.event == .end { complete(c, now: now) }
                } catch {
                    malformed(c, "\(error)", now: now)
                }
            case .untilClose:
                return
            }
        }
    }

    /// A head that arrived in pieces: parse the gathered bytes, then whatever followed the head.
    private func consumeStaged(_ c: Int, now: UInt64) {
        let serial = clients[c].serial
        let buffer = staging[c]
        guard let length = parseHead(c, buffer.span, now: now) else { return }
        // The response may have ended with its head (and the next request begun): what follows is not its.
        guard clients[c].busy && clients[c].serial == serial else { return }
        staging[c].removeAll(keepingCapacity: true)
        if length < buffer.count { consume(c, buffer.span.extracting(length..<buffer.count), now: now) }
    }

    /// Parses client c's response head; returns its length once complete (and sets up the body), nil when
    /// more is needed or the response was refused.
    private func parseHead(_ c: Int, _ bytes: borrowing Span<UInt8>, now: UInt64) -> Int? {
        let progress: HTTP1Parser.Progress
        do {
            progress = try parsers[c].parse(bytes)
        } catch {
            malformed(c, "\(error)", now: now)
            return nil
        }
        guard progress == .complete else { return nil }
        let head = parsers[c].head
        let length = head.length
        if head.isInterim {
            // 1xx: the final response follows on the same connection.
            parsers[c].reset()
            parsers[c].respondingToHEAD = isHEAD
            return length
        }
        clients[c].status = head.status
        clients[c].keepAlive = head.keepAlive
        switch head.framing {
        case .none:
            complete(c, now: now)
        case .contentLength(let n):
            clients[c].reading = .body(remaining: n)
            if n == 0 { complete(c, now: now) }
        case .chunked:
            decoders[c].reset()
            clients[c].reading = .chunked
        case .untilClose:
            clients[c].reading = .untilClose
        }
        return length
    }

    /// The server sent something that is not an HTTP/1.1 response: counted as a reset (the connection is
    /// dropped), explained once on stderr.
    private func malformed(_ c: Int, _ why: String, now: UInt64) {
        if !clock.explainedMalformed.exchange(true, ordering: .relaxed) {
            System.writeStderr("tern-load: malformed response from \(plan.settings.targets[clients[c].target].url): \(why) (counted as reset)")
        }
        fail(c, .reset, now: now)
    }

    // MARK: - HTTP/2 (--h2)

    /// Makes socket `s`'s session (its preface and SETTINGS go with the first flush); false when it cannot be
    /// made (nghttp2 missing: explained once, counted as connect errors).
    private func h2Start(_ s: Int, now: UInt64) -> Bool {
        if h2[s] != nil { return true }
        do throws(HTTP2SessionError) {
            h2[s] = try H2LoadConnection(body: plan.settings.body, streams: lanes)
            return true
        } catch {
            if !clock.explainedMalformed.exchange(true, ordering: .relaxed) {
                System.writeStderr("tern-load: --h2: \(error.description) (counted as connect errors)")
            }
            connectFailed(s, now: now)
            close(s, reset: false)
            return false
        }
    }

    /// Lane `c`'s request as a stream on its connection (once the connection takes new streams).
    private func h2Transmit(_ c: Int, _ s: Int, now: UInt64) {
        guard let conn = h2[s] else { return }  // the session comes with the connection
        guard !conn.goingAway && conn.session.canOpenStream else { return h2Recycle(s) }
        if !clients[c].refused { clients[c].sent = now }
        clients[c].refused = false
        clients[c].transmitted = true
        clients[c].status = 0
        conn.session.beginHead()
        for f in h2Heads[clients[c].target] { conn.session.addField(f.name, f.value) }
        guard let id = conn.submit() else {
            // nghttp2 refused the stream (out of memory, or stream ids used up): the lane waits for a new connection.
            clients[c].transmitted = false
            conn.goingAway = true
            return h2Recycle(s)
        }
        clients[c].stream = id
        h2Flush(s)
    }

    /// The lane of socket `s` whose request is stream `stream`.
    private func h2Lane(_ s: Int, _ stream: Int32) -> Int? {
        for c in lanesOf(s).clients where clients[c].busy && clients[c].stream == stream { return c }
        return nil
    }

    /// Sends what the session has to send, unless a send is out (the rest follows it).
    private func h2Flush(_ s: Int) {
        guard let conn = h2[s], sockets[s].phase == .open, !sockets[s].sending, !sockets[s].handshaking else { return }
        defer {
            // Streams that closed as their frames went out (a reset): handled here unless the event loop that
            // called this is already walking the events.
            if h2[s] === conn && !conn.session.events.isEmpty && !conn.inEvents { h2Events(s, now: System.monotonicNanos()) }
        }
        if let tls {
            guard !tls.hasPending(s), conn.fill() > 0 else { return }
            guard case .done = conn.write(to: tls, s) else {
                return h2Lost(s, "TLS write failed", now: System.monotonicNanos())
            }
            return tlsFlush(s)
        }
        guard conn.fill() > 0 else { return }
        sockets[s].sending = true
        sockets[s].pending += 1
        conn.send(on: backend, fd: sockets[s].fd, token: token(.send, s))
    }

    private func h2Sent(_ s: Int, _ result: Int32, now: UInt64) {
        guard sockets[s].phase == .open, let conn = h2[s] else { return }
        if result <= 0 {
            if result == -Errno.EAGAIN {
                sockets[s].sending = true
                sockets[s].pending += 1
                return conn.send(on: backend, fd: sockets[s].fd, token: token(.send, s))
            }
            return h2Lost(s, nil, now: now)
        }
        if now >= measureStart { bytesSent[report(lanesOf(s).target)] += UInt64(result) }
        conn.sent(Int(result))
        if conn.pending {
            sockets[s].sending = true
            sockets[s].pending += 1
            return conn.send(on: backend, fd: sockets[s].fd, token: token(.send, s))
        }
        h2Flush(s)
    }

    private func h2Received(_ s: Int, _ completion: Completion, now: UInt64) {
        let result = completion.result
        if result > 0, let buffer = completion.bufferID {
            if sockets[s].phase == .open, let conn = h2[s] {
                if now >= measureStart { bytesReceived[report(lanesOf(s).target)] += UInt64(result) }
                let ok = conn.receive(backend.buffers, buffer, length: Int(result))
                backend.releaseBuffer(buffer)
                h2Events(s, now: now)
                if !ok { return h2Lost(s, conn.session.failure, now: now) }
                if let what = conn.session.flood { return h2Lost(s, "the server flooded it with \(what)", now: now) }
                h2Flush(s)
                h2Recycle(s)
            } else {
                backend.releaseBuffer(buffer)
            }
            if sockets[s].phase == .open && !completion.more { armReceive(s) }
            return
        }
        if let buffer = completion.bufferID { backend.releaseBuffer(buffer) }
        if sockets[s].phase != .open { return }
        if result == -ENOBUFS {
            if !completion.more { armReceive(s) }
            return
        }
        h2Lost(s, nil, now: now)
    }

    /// https: a piece of plaintext for socket `s`'s session; false once the socket is done for.
    private func h2Feed(_ s: Int, _ piece: borrowing Span<UInt8>, now: UInt64) -> Bool {
        guard sockets[s].phase == .open, let conn = h2[s] else { return false }
        let ok = conn.receive(piece)
        h2Events(s, now: now)
        if !ok { h2Lost(s, conn.session.failure, now: now) }
        if sockets[s].phase == .open, let what = conn.session.flood { h2Lost(s, "the server flooded it with \(what)", now: now) }
        return sockets[s].phase == .open
    }

    /// What the session's last receive produced: heads, ends, resets, GOAWAY.
    private func h2Events(_ s: Int, now: UInt64) {
        guard let conn = h2[s], !conn.inEvents else { return }
        conn.inEvents = true
        defer { conn.inEvents = false }
        let session = conn.session
        var i = 0
        while i < session.events.count {
            let e = session.events[i]
            i += 1
            switch e {
            case .head(let stream, let fields, let endStream):
                guard let c = h2Lane(s, stream) else { continue }
                var status = 0
                for f in fields where session.name(f).elementsEqual(h2StatusName) {
                    for d in session.value(f) { status = status &* 10 &+ Int(d &- 0x30) }
                }
                guard status >= 200 else { continue }  // interim: the final head follows
                clients[c].status = status
                if endStream { h2Complete(c, now: now) }
            case .data(let stream, let bytes):
                session.consume(stream: stream, bytes.count)
            case .trailers(let stream, _), .endStream(let stream):
                if let c = h2Lane(s, stream) { h2Complete(c, now: now) }
            case .reset(let stream, let code), .closed(let stream, let code):
                // (A stream that ended closes after its lane completed, by when the lane moved on.)
                conn.forget(stream)
                guard let c = h2Lane(s, stream) else { continue }
                if code == HTTP2ErrorCode.refusedStream {
                    // Not processed (refused, or above the server's GOAWAY): sent again, on this connection if it
                    // still takes streams, else on a new one; its latency counts from its first send.
                    clients[c].stream = 0
                    clients[c].transmitted = false
                    clients[c].refused = true
                    continue
                }
                fail(c, .reset, now: now)
            case .goaway:
                conn.goingAway = true
            }
        }
        session.clearEvents()
        let (cs, t) = lanesOf(s)
        for c in cs where waiting(c, t) && h2[s] != nil && sockets[s].phase == .open { h2Transmit(c, s, now: now) }
    }

    private func h2Complete(_ c: Int, now: UInt64) {
        clients[c].stream = 0
        complete(c, now: now)
    }

    /// A connection that takes no new stream (GOAWAY, stream ids used up) is closed once its streams ended;
    /// lanes waiting reopen it.
    private func h2Recycle(_ s: Int) {
        guard let conn = h2[s], sockets[s].phase == .open, conn.goingAway || !conn.session.canOpenStream else { return }
        let (cs, t) = lanesOf(s)
        if !cs.contains(where: { inFlight($0, t) }) { close(s, reset: false) }
    }

    /// The connection is lost (closed, reset, or its session failed): every stream on it fails as a reset.
    private func h2Lost(_ s: Int, _ why: String?, now: UInt64) {
        if let why, !clock.explainedMalformed.exchange(true, ordering: .relaxed) {
            System.writeStderr("tern-load: HTTP/2 connection to \(plan.settings.targets[lanesOf(s).target].url) failed: \(why) (counted as reset)")
        }
        // (Lanes failed here issue their next request at once: with the connection marked gone it waits for the
        // reopen, rather than going out on the dead session.)
        h2[s]?.goingAway = true
        let (cs, t) = lanesOf(s)
        for c in cs where inFlight(c, t) { fail(c, .reset, now: now) }
        close(s, reset: false)
    }

}

/// The name of HTTP/2's status pseudo-header field.
private let h2StatusName: [UInt8] = Array(":status".utf8)
