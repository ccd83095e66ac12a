// A completion that arrives for a connection slot after that slot was freed and given to a new connection must
// be dropped by the relay (ARCHITECTURE.md §3: the token's generation tells the two apart): its buffer goes back
// to the pool and the new connection is left as it was. The relay runs in a real reactor loop on its own thread,
// with real loopback clients and upstreams; the late completions are slipped in as a backend would hand them over
// (LateCompletionInjector.swift).
import Glibc
import Testing
import TernCore
import TernIO
import TernTestSupport
@testable import TernProxy

struct StaleCompletionChecks<B: IOBackend> {
    static var bufferCount: Int { 8 }

    /// Bytes go client → upstream and back through the relay.
    func roundTrip(_ client: borrowing BlockingSocket, _ upstream: borrowing BlockingSocket, _ text: String) throws {
        let bytes = Array(text.utf8)
        try client.send(bytes, deadline: Loopback.deadline)
        #expect(try Loopback.receive(upstream, count: bytes.count) == bytes, "client → upstream: \(text)")
        try upstream.send(bytes.reversed(), deadline: Loopback.deadline)
        #expect(try Loopback.receive(client, count: bytes.count) == bytes.reversed(), "upstream → client: \(text)")
    }

    func lateCompletionForAReusedSlotIsDropped() throws {
        let upstreams = try Loopback.listener()
        defer { System.close(upstreams.fd) }
        let clients = try Loopback.listener()  // the relay's listener: closed by the relay when it stops
        let spares = try Loopback.listener()
        defer { System.close(spares.fd) }
        let spareClient = try BlockingSocket.connect(to: spares.address, timeoutMillis: 5_000)
        let spare = try Loopback.accept(spares.fd)

        let counters = RelayCounters()
        var settings = BackendSettings()
        settings.ringDepth = 64
        settings.bufferCount = Self.bufferCount
        settings.bufferSize = 4096
        // Capacity 1: every connection takes slot 0, each with the next generation.
        let late = try LateCompletions<TCPRelay<B>>.start(settings: settings, make: { _ in
            TCPRelay<B>(listeners: [RelayListener(fd: clients.fd, upstream: upstreams.address)], settings: RelaySettings(),
                        counters: counters, capacity: 1)
        }, observe: { relay in "connections \(relay.count)" })
        defer { late.stop() }

        // Connection A (slot 0, generation 0): relayed both ways, then closed at both ends.
        do {
            let a = try BlockingSocket.connect(to: clients.address, timeoutMillis: 5_000)
            let upstreamA = try Loopback.accept(upstreams.fd)
            try roundTrip(a, upstreamA, "first connection")
        }
        try #require(Loopback.eventually { counters.accepted.load(ordering: .relaxed) == 1 && counters.active.load(ordering: .relaxed) == 0 },
                     "connection A was not closed")
        // Connection B reuses slot 0 (generation 1).
        let b = try BlockingSocket.connect(to: clients.address, timeoutMillis: 5_000)
        let upstreamB = try Loopback.accept(upstreams.fd)
        try roundTrip(b, upstreamB, "second connection")

        // Late completions for A: a failed connect (were it taken for the slot's current connection, that one
        // would be counted as an upstream connect failure and closed), and a read of direction 0 that completes
        // with one byte in a pooled buffer (the relay itself splices, but a late completion may carry a buffer,
        // and the relay must give it back).
        let connect = try #require(late.deliver(Completion(token: Token(op: TCPRelay<B>.Op.connect.rawValue, slot: 0, generation: 0),
                                                           result: -ECONNREFUSED)))
        #expect(connect.after == connect.before)
        let read = Token(op: TCPRelay<B>.Op.read.rawValue, slot: 0, generation: 0)
        try #require(late.armReceive(fd: spare.fd, token: read))
        try spareClient.send([0x2A], deadline: Loopback.deadline)
        let delivery = try #require(late.delivery(of: read), "the late read never completed")
        #expect(delivery.hadBuffer, "the late read carried no buffer: nothing was checked")
        #expect(delivery.freeBuffersAfter == Self.bufferCount, "the late completion's buffer was not returned to the pool")
        // B is untouched: not failed, still open, still relaying both ways.
        let failures = counters.upstreamConnectFailures.load(ordering: .relaxed)
        #expect(failures == 0)
        let active = counters.active.load(ordering: .relaxed)
        let reactorActive = late.control.activeConnections.load(ordering: .relaxed)
        #expect(active == 1 && reactorActive == 1)
        try roundTrip(b, upstreamB, "after the late completions")

        // The same failed connect with B's generation does reach B (so the tokens above named the right slot):
        // counted, and B's client sees its connection end.
        _ = late.deliver(Completion(token: Token(op: TCPRelay<B>.Op.connect.rawValue, slot: 0, generation: 1), result: -ECONNREFUSED))
        #expect(Loopback.eventually { counters.upstreamConnectFailures.load(ordering: .relaxed) == 1 })
        // B's client sees its connection end: end of stream or a reset, not a timeout (which would mean B is
        // still open).
        do {
            let rest = try b.receive(max: 16, deadline: Loopback.deadline)
            #expect(rest == [], "B's client got bytes instead of the end of its connection")
        } catch {
            #expect(error.errno == ECONNRESET, "B's client still open: \(error)")
        }
        #expect(Loopback.eventually { counters.active.load(ordering: .relaxed) == 0 })
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
