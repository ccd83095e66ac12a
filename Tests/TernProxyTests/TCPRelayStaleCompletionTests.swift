// A completion that arrives for a connection slot after that slot was freed and given to a new connection must
// be dropped by the relay (ARCHITECTURE.md §3: the token's generation tells the two apart): its buffer goes back
// to the pool and the new connection is left as it was. The relay runs in a real reactor loop on its own thread,
// with real loopback clients and upstreams; the late completions are slipped in as a backend would hand them over.
import Glibc
import Synchronization
import Testing
import TernCore
import TernIO
import TernTestSupport
@testable import TernProxy

/// What the test thread asks of the reactor thread, and what the reactor thread saw (atomics only).
final class LateCompletions: Sendable {
    /// Set by the test: on its next iteration the reactor hands the relay a failed connect with `generation`
    /// for slot 0 and, unless `connectOnly`, arms a receive on `spareFD` whose token carries the same.
    let requested = Atomic<Int>(0)
    let generation = Atomic<UInt32>(0)
    let connectOnly = Atomic<Bool>(false)
    let spareFD = Atomic<Int32>(-1)
    /// Set on the reactor thread once the late receive's completion has been through the relay.
    let receiveDelivered = Atomic<Bool>(false)
    let receiveHadBuffer = Atomic<Bool>(false)
    /// Free receive buffers right after the relay handled that completion, and how many the pool has.
    let freeBuffersAfter = Atomic<Int>(-1)
    let bufferCount = Atomic<Int>(0)
    /// Set on the reactor thread: its loop is running, or it could not start (`error`).
    let running = Atomic<Bool>(false)
    let error = Mutex<String?>(nil)
}

/// The relay as the reactor's handler, plus the injection `LateCompletions` asks for. Everything else is passed
/// through unchanged, so the relay sees the loop exactly as `tern` runs it.
final class LateCompletionInjector<B: IOBackend>: ReactorHandler {
    typealias Backend = B
    let relay: TCPRelay<B>
    let shared: LateCompletions
    private var served = 0
    private var lateReceive: Token? = nil

    init(relay: TCPRelay<B>, shared: LateCompletions) {
        self.relay = relay
        self.shared = shared
    }

    func iteration(_ reactor: Reactor<B>) {
        relay.iteration(reactor)
        shared.running.store(true, ordering: .releasing)
        guard shared.requested.load(ordering: .acquiring) > served else { return }
        served += 1
        let generation = shared.generation.load(ordering: .relaxed)
        // A failed connect: were it taken for the slot's current connection, that one would be counted as an
        // upstream connect failure and closed.
        let connect = Token(op: TCPRelay<B>.Op.connect.rawValue, slot: 0, generation: generation)
        relay.handle(Completion(token: connect, result: -ECONNREFUSED), reactor)
        if shared.connectOnly.load(ordering: .relaxed) { return }
        // A read of direction 0 that completes with one byte in a pooled buffer (the relay itself splices, but a
        // late completion may carry a buffer, and the relay must give it back).
        let read = Token(op: TCPRelay<B>.Op.read.rawValue, slot: 0, generation: generation)
        lateReceive = read
        reactor.backend.receive(fd: shared.spareFD.load(ordering: .relaxed), token: read, multishot: false)
    }

    func handle(_ c: Completion, _ reactor: Reactor<B>) {
        relay.handle(c, reactor)
        if let t = lateReceive, c.token == t {
            lateReceive = nil
            shared.receiveHadBuffer.store(c.bufferID != nil, ordering: .relaxed)
            shared.freeBuffersAfter.store(reactor.backend.buffers.available, ordering: .relaxed)
            shared.receiveDelivered.store(true, ordering: .releasing)
        }
    }

    func timerFired(_ token: Token, _ reactor: Reactor<B>) { relay.timerFired(token, reactor) }

    var finished: Bool { relay.finished }
}

struct StaleCompletionChecks<B: IOBackend> {
    static var deadline: UInt64 { System.monotonicNanos() + 5_000_000_000 }

    /// Polls `condition` until it holds or five seconds pass.
    func eventually(_ condition: () -> Bool) -> Bool {
        let end = Self.deadline
        while !condition() {
            if System.monotonicNanos() >= end { return false }
            usleep(1_000)
        }
        return true
    }

    func listener() throws -> (fd: Int32, address: SocketAddress) {
        let fd = try System.listen(on: try #require(SocketAddress(parsing: "127.0.0.1:0")), reusePort: false)
        return (fd, try System.localAddress(fd))
    }

    func accept(_ listener: Int32) throws -> BlockingSocket {
        #expect(System.poll(listener, events: Int16(POLLIN), timeoutMillis: 5_000), "nothing to accept")
        return BlockingSocket(adopting: try #require(System.accept(listener)))
    }

    /// Exactly `count` bytes from `socket` (before the deadline), or fewer when it closed.
    func receive(_ socket: borrowing BlockingSocket, count: Int) throws -> [UInt8] {
        let end = Self.deadline
        var got: [UInt8] = []
        while got.count < count {
            let piece = try socket.receive(max: count - got.count, deadline: end)
            if piece.isEmpty { break }
            got += piece
        }
        return got
    }

    /// Bytes go client → upstream and back through the relay.
    func roundTrip(_ client: borrowing BlockingSocket, _ upstream: borrowing BlockingSocket, _ text: String) throws {
        let bytes = Array(text.utf8)
        try client.send(bytes, deadline: Self.deadline)
        #expect(try receive(upstream, count: bytes.count) == bytes, "client → upstream: \(text)")
        try upstream.send(bytes.reversed(), deadline: Self.deadline)
        #expect(try receive(client, count: bytes.count) == bytes.reversed(), "upstream → client: \(text)")
    }

    func lateCompletionForAReusedSlotIsDropped() throws {
        let upstreams = try listener()
        defer { System.close(upstreams.fd) }
        let clients = try listener()  // the relay's listener: closed by the relay when it stops
        let spares = try listener()
        defer { System.close(spares.fd) }
        let spareClient = try BlockingSocket.connect(to: spares.address, timeoutMillis: 5_000)
        let spare = try accept(spares.fd)

        let control = ReactorControl()
        let counters = RelayCounters()
        let shared = LateCompletions()
        shared.spareFD.store(spare.fd, ordering: .relaxed)
        let thread = try #require(ReactorThread.start(name: "test-relay") {
            do {
                var settings = BackendSettings()
                settings.ringDepth = 64
                settings.bufferCount = 8
                settings.bufferSize = 4096
                shared.bufferCount.store(settings.bufferCount, ordering: .relaxed)
                let reactor = Reactor(index: 0, backend: try B(settings: settings), control: control)
                // Capacity 1: every connection takes slot 0, each with the next generation.
                let relay = TCPRelay<B>(listeners: [RelayListener(fd: clients.fd, upstream: upstreams.address)],
                                        settings: RelaySettings(), counters: counters, capacity: 1)
                try reactor.run(LateCompletionInjector(relay: relay, shared: shared))
            } catch {
                shared.error.withLock { $0 = "\(error)" }
            }
        })
        defer {
            control.requestStop()
            thread.join()
        }
        try #require(eventually { shared.running.load(ordering: .acquiring) || shared.error.withLock { $0 } != nil })
        let startError = shared.error.withLock { $0 }
        try #require(startError == nil, "the reactor did not start")

        // Connection A (slot 0, generation 0): relayed both ways, then closed at both ends.
        do {
            let a = try BlockingSocket.connect(to: clients.address, timeoutMillis: 5_000)
            let upstreamA = try accept(upstreams.fd)
            try roundTrip(a, upstreamA, "first connection")
        }
        try #require(eventually { counters.accepted.load(ordering: .relaxed) == 1 && counters.active.load(ordering: .relaxed) == 0 },
                     "connection A was not closed")
        // Connection B reuses slot 0 (generation 1).
        let b = try BlockingSocket.connect(to: clients.address, timeoutMillis: 5_000)
        let upstreamB = try accept(upstreams.fd)
        try roundTrip(b, upstreamB, "second connection")

        // Late completions for A: a failed connect, and a one-byte read in a pooled buffer.
        shared.generation.store(0, ordering: .relaxed)
        shared.requested.store(1, ordering: .releasing)
        control.wake()
        try spareClient.send([0x2A], deadline: Self.deadline)
        try #require(eventually { shared.receiveDelivered.load(ordering: .acquiring) }, "the late read never completed")
        let hadBuffer = shared.receiveHadBuffer.load(ordering: .relaxed)
        #expect(hadBuffer, "the late read carried no buffer: nothing was checked")
        let freeAfter = shared.freeBuffersAfter.load(ordering: .relaxed)
        #expect(freeAfter == shared.bufferCount.load(ordering: .relaxed), "the late completion's buffer was not returned to the pool")
        // B is untouched: not failed, still open, still relaying both ways.
        let failures = counters.upstreamConnectFailures.load(ordering: .relaxed)
        #expect(failures == 0)
        let active = counters.active.load(ordering: .relaxed)
        let reactorActive = control.activeConnections.load(ordering: .relaxed)
        #expect(active == 1 && reactorActive == 1)
        try roundTrip(b, upstreamB, "after the late completions")

        // The same failed connect with B's generation does reach B (so the tokens above named the right slot):
        // counted, and B's client sees its connection end.
        shared.generation.store(1, ordering: .relaxed)
        shared.connectOnly.store(true, ordering: .relaxed)
        shared.requested.store(2, ordering: .releasing)
        control.wake()
        #expect(eventually { counters.upstreamConnectFailures.load(ordering: .relaxed) == 1 })
        // B's client sees its connection end: end of stream or a reset, not a timeout (which would mean B is
        // still open).
        do {
            let rest = try b.receive(max: 16, deadline: Self.deadline)
            #expect(rest == [], "B's client got bytes instead of the end of its connection")
        } catch {
            #expect(error.errno == ECONNRESET, "B's client still open: \(error)")
        }
        #expect(eventually { counters.active.load(ordering: .relaxed) == 0 })
        let error = shared.error.withLock { $0 }
        #expect(error == nil)
    }
}

@Suite(.serialized) struct TCPRelayStaleCompletionTests {
    @Test func epollLateCompletionForAReusedSlotIsDropped() throws {
        try StaleCompletionChecks<EpollBackend>().lateCompletionForAReusedSlotIsDropped()
    }

    /// Left out where a ring cannot be set up, unless CI requires io_uring (then it fails there).
    @Test(.enabled(if: TestRequirement.isSet("TERN_REQUIRE_IO_URING") || (try? URingBackend(settings: BackendSettings())) != nil,
                   "io_uring cannot be set up on this kernel"))
    func uringLateCompletionForAReusedSlotIsDropped() throws {
        try StaleCompletionChecks<URingBackend>().lateCompletionForAReusedSlotIsDropped()
    }
}
