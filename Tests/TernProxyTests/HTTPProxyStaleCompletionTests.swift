// A completion that arrives for a slot of the HTTP engine after the connection it was meant for closed and a new
// connection took the slot must be dropped (ARCHITECTURE.md §3: the token's generation tells the two apart): a
// buffer it holds goes back to the pool, and the new connection's exchange goes on as if it had never come. A real
// HTTPProxy runs in a reactor loop on its own thread between loopback clients and an upstream this test plays, with
// one slot per slab, so connection B takes the downstream and upstream slots connection A had, each with the next
// generation. The late completions are slipped in as a backend would hand them over (LateCompletionInjector.swift).
import Glibc
import Testing
import TernCore
import TernIO
import TernTestSupport
@testable import TernProxy

/// What the test reads of the proxy's slot 0 (the connection slabs) and the exchange of the connection there, taken
/// on the reactor thread.
struct HTTPSlotState: Sendable {
    var downstream: DID? = nil
    var exchange: XID? = nil
    var phase: DownstreamConnection.Phase? = nil
    var clientReceiving = false
    var exchangeActive = false
    var request: RequestState? = nil
    var response: ResponseState? = nil
    /// A local response is being sent or waits to be (Tern answered instead of the upstream).
    var localReply = false
    var flags = ""
    var upstream: UID? = nil
    var upstreamState: UpstreamConnection.State? = nil
    var upstreamReceiving = false
    var upstreamSending = false
    var freeBuffers = 0

    init<B: IOBackend>(_ proxy: HTTPProxy<B>, _ reactor: Reactor<B>) {
        freeBuffers = reactor.backend.buffers.available
        if let id = proxy.downstreams.id(at: 0) {
            let d = proxy.downstreams[id]
            downstream = id
            exchange = d.exchange
            phase = d.phase
            clientReceiving = d.receiving
            let x = proxy.exchanges[d.exchange]
            exchangeActive = x.active
            request = x.request.state
            response = x.response.state
            localReply = x.reply != nil || x.pendingReply != nil
            flags = "\(x.report.flags)"
        }
        if let u = proxy.upstreams.id(at: 0) {
            upstream = u
            upstreamState = proxy.upstreams[u].state
            upstreamReceiving = proxy.upstreams[u].receiving
            upstreamSending = proxy.upstreams[u].sending
        }
    }

    /// Everything of the proxy a completion for slot 0 could change: the connection in each slot (with its
    /// exchange, timers and operations in flight), the pools, slot 0's pending iovecs, and the counters.
    static func describe<B: IOBackend>(_ proxy: HTTPProxy<B>) -> String {
        let d = proxy.downstreams.id(at: 0).map {
            "\($0): \(proxy.downstreams[$0]), exchange \(proxy.exchanges[proxy.downstreams[$0].exchange])"
        } ?? "free"
        let u = proxy.upstreams.id(at: 0).map { "\($0): \(proxy.upstreams[$0])" } ?? "free"
        let c = proxy.counters
        return """
            downstream \(d)
            upstream \(u)
            pools \(proxy.pools.slots), idle \(proxy.idleUpstreams)
            to client \(proxy.toClient.remaining(0)), to upstream \(proxy.toUpstream.remaining(0))
            accepted \(c.accepted.load(ordering: .relaxed)), active \(c.active.load(ordering: .relaxed)), \
            resets \(c.resetsPropagated.load(ordering: .relaxed))
            """
    }
}

struct HTTPStaleCompletionChecks<B: IOBackend> {
    typealias Proxy = HTTPProxy<B>
    static var bufferCount: Int { 8 }

    func token(_ op: Proxy.Op, _ id: DID) -> Token { Token(op: op.rawValue, slot: id.index, generation: id.generation) }
    func token(_ op: Proxy.Op, _ id: UID) -> Token { Token(op: op.rawValue, slot: id.index, generation: id.generation) }
    func token(_ op: Proxy.Op, _ id: XID) -> Token { Token(op: op.rawValue, slot: id.index, generation: id.generation) }

    /// Reads slot 0 until `condition` holds (or the deadline passes: then the test stops here).
    func settled(_ late: LateCompletions<Proxy>, _ what: Comment, _ condition: (HTTPSlotState) -> Bool) throws -> HTTPSlotState {
        var last: HTTPSlotState? = nil
        let held = Loopback.eventually {
            last = late.onReactor { proxy, reactor in HTTPSlotState(proxy, reactor) }
            return last.map(condition) ?? false
        }
        try #require(held, what)
        return try #require(last)
    }

    /// A head (up to the blank line) from `socket`, and whatever came after it in the same reads.
    func receiveHead(_ socket: borrowing BlockingSocket) throws -> (head: String, rest: [UInt8]) {
        let end = Loopback.deadline
        var got: [UInt8] = []
        while true {
            if let blank = got.indices.dropLast(3).first(where: { got[$0...].starts(with: [13, 10, 13, 10]) }) {
                return (String(decoding: got[..<(blank + 4)], as: UTF8.self), Array(got[(blank + 4)...]))
            }
            let piece = try socket.receive(max: 4096, deadline: end)
            if piece.isEmpty { return (String(decoding: got, as: UTF8.self), []) }
            got += piece
        }
    }

    /// A response as the client gets it: its status line and its body (Content-Length framed).
    func receiveResponse(_ socket: borrowing BlockingSocket) throws -> (status: String, body: String) {
        let (head, rest) = try receiveHead(socket)
        let lines = head.split(separator: "\r\n")
        let length = lines.dropFirst().compactMap { line -> Int? in
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
            return Int(parts[1].trimmingPrefix(" "))
        }.first ?? 0
        var body = rest
        if body.count < length { body += try Loopback.receive(socket, count: length - body.count) }
        return (lines.first.map(String.init) ?? "", String(decoding: body, as: UTF8.self))
    }

    func send(_ socket: borrowing BlockingSocket, _ text: String) throws {
        try socket.send(Array(text.utf8), deadline: Loopback.deadline)
    }

    func response(_ body: String) -> String { "HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)" }

    func lateCompletionsForReusedSlotsAreDropped() throws {
        let upstreams = try Loopback.listener()
        defer { System.close(upstreams.fd) }
        let clients = try Loopback.listener()  // the proxy's listener: closed by the proxy when it stops
        let spares = try Loopback.listener()
        defer { System.close(spares.fd) }
        // Spare connections: their accepted ends take the late receives, one for each slab's receive op.
        let spareClient = try BlockingSocket.connect(to: spares.address, timeoutMillis: 5_000)
        let spareForClientOps = try Loopback.accept(spares.fd)
        let spareUpstream = try BlockingSocket.connect(to: spares.address, timeoutMillis: 5_000)
        let spareForUpstreamOps = try Loopback.accept(spares.fd)

        let counters = RelayCounters()
        var settings = BackendSettings()
        settings.ringDepth = 64
        settings.bufferCount = Self.bufferCount
        settings.bufferSize = 4096
        // Capacity 1: every client connection takes downstream slot 0, every upstream connection upstream slot 0,
        // each with the next generation.
        let late = try LateCompletions<Proxy>.start(settings: settings, make: { backend in
            Proxy(listeners: [RelayListener(fd: clients.fd, upstream: upstreams.address)], settings: HTTPSettings(),
                  relay: RelaySettings(), counters: counters, capacity: 1, bufferPool: backend.buffers)
        }, observe: { HTTPSlotState.describe($0) })
        defer { late.stop() }

        // Connection A: one exchange, then its upstream connection and its client connection close, freeing both slots.
        let a: HTTPSlotState
        do {
            let client = try BlockingSocket.connect(to: clients.address, timeoutMillis: 5_000)
            try send(client, "GET /a HTTP/1.1\r\nHost: tern.test\r\n\r\n")
            let upstream = try Loopback.accept(upstreams.fd)
            #expect(try receiveHead(upstream).head.hasPrefix("GET /a HTTP/1.1\r\n"))
            a = try settled(late, "A's exchange never waited for its response") { $0.response == .head && $0.upstreamState == .bound }
            try send(upstream, response("a"))
            let got = try receiveResponse(client)
            #expect(got.status == "HTTP/1.1 200 OK" && got.body == "a")
        }
        _ = try settled(late, "A's slots were not freed") { $0.downstream == nil && $0.upstream == nil }
        let aDown = try #require(a.downstream), aUp = try #require(a.upstream)

        // Connection B, in the middle of a POST: head and 4 of its 10 body bytes forwarded, the client receive armed
        // for the rest, the upstream receive armed for the response.
        let b = try BlockingSocket.connect(to: clients.address, timeoutMillis: 5_000)
        try send(b, "POST /b HTTP/1.1\r\nHost: tern.test\r\nContent-Length: 10\r\n\r\n0123")
        let upstream = try Loopback.accept(upstreams.fd)  // a new upstream connection: A's is gone
        let (head, first) = try receiveHead(upstream)
        var body = first
        #expect(head.hasPrefix("POST /b HTTP/1.1\r\n"))
        if body.count < 4 { body += try Loopback.receive(upstream, count: 4 - body.count) }
        #expect(body == Array("0123".utf8))
        let before = try settled(late, "B's exchange did not settle mid-body") {
            $0.request == .body && $0.clientReceiving && $0.upstreamState == .bound && $0.upstreamReceiving && !$0.upstreamSending
        }
        let bDown = try #require(before.downstream), bUp = try #require(before.upstream)
        try #require(bDown.index == aDown.index && bDown.generation != aDown.generation, "B did not reuse A's downstream slot")
        try #require(bUp.index == aUp.index && bUp.generation != aUp.generation, "B did not reuse A's upstream slot")
        #expect(before.freeBuffers == Self.bufferCount)

        // Late completions for A, one per op the slots had in flight. Were they taken for B: the receive's bytes
        // would go upstream as B's body, the failed send would close B, the upstream receive's bytes would be
        // B's response, the failed connect would answer B with a 503.
        var deliveries: [(String, LateDelivery?)] = []
        let clientReceive = token(.clientReceive, aDown)
        try #require(late.armReceive(fd: spareForClientOps.fd, token: clientReceive))
        try send(spareClient, "GET /late HTTP/1.1\r\nHost: tern.test\r\n\r\n")
        deliveries.append(("clientReceive", late.delivery(of: clientReceive)))
        deliveries.append(("clientSend", late.deliver(Completion(token: token(.clientSend, aDown), result: -EPIPE))))
        let upstreamReceive = token(.upstreamReceive, aUp)
        try #require(late.armReceive(fd: spareForUpstreamOps.fd, token: upstreamReceive))
        try send(spareUpstream, "HTTP/1.1 502 Late\r\nContent-Length: 0\r\n\r\n")
        deliveries.append(("upstreamReceive", late.delivery(of: upstreamReceive)))
        deliveries.append(("upstreamConnect", late.deliver(Completion(token: token(.upstreamConnect, aUp), result: -ECONNREFUSED))))
        // A's exchange timer, firing after B's exchange took A's exchange slot: taken for B, it would drop B's own
        // timer and set another.
        let aX = try #require(a.exchange), bX = try #require(before.exchange)
        try #require(bX.index == aX.index && bX.generation != aX.generation, "B's exchange did not reuse A's exchange slot")
        deliveries.append(("exchangeTimer", late.fire(token(.exchangeTimer, aX))))
        for (op, delivery) in deliveries {
            guard let delivery else {
                Issue.record("the late \(op) never reached the proxy")
                continue
            }
            #expect(delivery.after == delivery.before, "the late \(op) changed the proxy")
            let received = op.hasSuffix("Receive")
            #expect(delivery.hadBuffer == received, "the late \(op) \(received ? "carried no buffer: nothing was checked" : "carried a buffer")")
            #expect(delivery.freeBuffersAfter == delivery.freeBuffersBefore + (received ? 1 : 0),
                    "the late \(op)'s buffer was not returned to the pool")
        }
        // Every buffer is back, and B is where it was: same slots and generations, no local reply, no close.
        let after = try #require(late.onReactor { proxy, reactor in HTTPSlotState(proxy, reactor) })
        #expect(after.freeBuffers == Self.bufferCount)
        #expect(after.downstream == bDown && after.upstream == bUp)
        #expect(after.phase == .open && after.request == .body && after.response == .head && after.upstreamState == .bound)
        #expect(!after.localReply && after.flags == before.flags)
        #expect(counters.accepted.load(ordering: .relaxed) == 2 && counters.active.load(ordering: .relaxed) == 1)
        #expect(counters.resetsPropagated.load(ordering: .relaxed) == 0)

        // B's exchange goes on: the rest of its body reaches the upstream, and nothing else does; its response and
        // the next request's come back whole.
        try send(b, "456789")
        #expect(try Loopback.receive(upstream, count: 6) == Array("456789".utf8), "the upstream got bytes B never sent")
        try send(upstream, response("ok"))
        var got = try receiveResponse(b)
        #expect(got.status == "HTTP/1.1 200 OK" && got.body == "ok")
        try send(b, "GET /b2 HTTP/1.1\r\nHost: tern.test\r\n\r\n")
        #expect(try receiveHead(upstream).head.hasPrefix("GET /b2 HTTP/1.1\r\n"))
        try send(upstream, response("ok2"))
        got = try receiveResponse(b)
        #expect(got.status == "HTTP/1.1 200 OK" && got.body == "ok2")

        // Controls: the same completions with B's generations do act (so the tokens above named B's slots). A client
        // receive while B waits for its next request: its bytes are taken as B's request, which goes upstream and is
        // answered to B's client, which never sent it.
        _ = try settled(late, "B did not go idle") {
            !$0.exchangeActive && $0.clientReceiving && $0.upstreamState == .idle
        }
        let bReceive = token(.clientReceive, bDown)
        try #require(late.armReceive(fd: spareForClientOps.fd, token: bReceive))
        try send(spareClient, "GET /injected HTTP/1.1\r\nHost: tern.test\r\n\r\n")
        let taken = late.delivery(of: bReceive)
        #expect(taken.map { $0.after != $0.before } == true, "a client receive with B's generation did nothing")
        #expect(try receiveHead(upstream).head.hasPrefix("GET /injected HTTP/1.1\r\n"))
        try send(upstream, response("injected"))
        got = try receiveResponse(b)
        #expect(got.status == "HTTP/1.1 200 OK" && got.body == "injected")
        // A failed connect while B waits for a response: B's attempt fails and Tern answers 503 (UF) itself.
        try send(b, "GET /b3 HTTP/1.1\r\nHost: tern.test\r\n\r\n")
        #expect(try receiveHead(upstream).head.hasPrefix("GET /b3 HTTP/1.1\r\n"))
        let waiting = try settled(late, "B's third exchange did not wait for its response") {
            $0.response == .head && $0.upstreamState == .bound && $0.upstreamReceiving && !$0.upstreamSending
        }
        #expect(waiting.downstream == bDown && waiting.upstream == bUp && waiting.exchange == bX)
        // B's exchange timer fired early: it finds no deadline passed and sets itself again.
        let timer = late.fire(token(.exchangeTimer, bX))
        #expect(timer.map { $0.after != $0.before } == true, "an exchange timer with B's generation did nothing")
        let failed = late.deliver(Completion(token: token(.upstreamConnect, bUp), result: -ECONNREFUSED))
        #expect(failed.map { $0.after != $0.before } == true, "a failed connect with B's generation did nothing")
        got = try receiveResponse(b)
        #expect(got.status.hasPrefix("HTTP/1.1 503 "))
        #expect(got.body == "upstream connect error or disconnect/reset before headers. reset reason: connection failure")
    }
}

@Suite(.serialized) struct HTTPProxyStaleCompletionTests {
    @Test func epollLateCompletionsForReusedSlotsAreDropped() throws {
        try HTTPStaleCompletionChecks<EpollBackend>().lateCompletionsForReusedSlotsAreDropped()
    }

    /// Left out where a ring cannot be set up, unless CI requires io_uring (then it fails there).
    @Test(.enabled(if: TestRequirement.isSet("TERN_REQUIRE_IO_URING") || (try? URingBackend(settings: BackendSettings())) != nil,
                   "io_uring cannot be set up on this kernel"))
    func uringLateCompletionsForReusedSlotsAreDropped() throws {
        try HTTPStaleCompletionChecks<URingBackend>().lateCompletionsForReusedSlotsAreDropped()
    }
}
