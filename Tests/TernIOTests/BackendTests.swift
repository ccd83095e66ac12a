// Every reactor operation, on both backends (the same test body, specialised per backend).
import Glibc
import Testing
import TernCore
import TernIO

// Op kinds from the top of the handlers' range and the widest generation, so every operation below (linked
// splices, armed receives, cancels) is tried with tokens that use all of a token's handler bits.
let t1 = Token(op: 200, slot: 1, generation: Token.generationMask)
let t2 = Token(op: 255, slot: 2, generation: 5)

/// The shared test bodies, generic over the backend.
struct BackendChecks<B: IOBackend> {
    func multishotAcceptDeliversEachConnection() throws {
        let h = try Harness<B>()
        let (l, address) = try TestSockets.listener()
        defer { close(l) }
        h.backend.accept(listener: l, multishot: true, token: t1)
        let c1 = TestSockets.connect(address)
        let c2 = TestSockets.connect(address)
        defer { close(c1); close(c2) }
        try h.run { $0.filter { $0.token == t1 }.count >= 2 }
        let accepted = h.completions(for: t1)
        #expect(accepted.count == 2)
        for c in accepted {
            #expect(c.result >= 0)
            #expect(c.more)
            let flags = fcntl(c.result, F_GETFL)
            #expect(flags & O_NONBLOCK != 0)
            close(c.result)
        }
        h.backend.cancel(fd: l, token: t1)
        try h.run { $0.contains { $0.token == t1 && !$0.more } }
        #expect(h.completions(for: t1).last?.result == -ECANCELED)
    }

    func singleShotAcceptTakesOneConnection() throws {
        let h = try Harness<B>()
        let (l, address) = try TestSockets.listener()
        defer { close(l) }
        let c1 = TestSockets.connect(address)
        let c2 = TestSockets.connect(address)
        defer { close(c1); close(c2) }
        h.backend.accept(listener: l, multishot: false, token: t1)
        try h.run(timeoutSeconds: 1) { $0.filter { $0.token == t1 }.count >= 2 }
        let accepted = h.completions(for: t1)
        #expect(accepted.count == 1)
        #expect(accepted.first.map { $0.result >= 0 && !$0.more } == true)
        accepted.forEach { close($0.result) }
    }

    func receiveDeliversBytesInPooledBuffersAndEndOfStream() throws {
        let h = try Harness<B>()
        let (server, client) = try TestSockets.pair()
        defer { close(server) }
        h.backend.receive(fd: server, token: t1)
        TestSockets.write(client, Array("hello".utf8))
        let first = try #require(try h.first(t1))
        #expect(first.result == 5)
        #expect(first.more)
        let id = try #require(first.bufferID)
        #expect(Array(h.backend.buffers.bytes(id, length: 5)) == Array("hello".utf8))
        h.backend.releaseBuffer(id)
        close(client)
        try h.run { $0.contains { $0.token == t1 && $0.result == 0 } }
        let last = try #require(h.completions(for: t1).last)
        #expect(last.result == 0)
        #expect(!last.more)
    }

    func receiveWaitsForABufferWhenThePoolIsEmpty() throws {
        // One buffer: the second socket's data must wait until the first buffer is released (no allocation).
        let h = try Harness<B>(bufferCount: 1)
        let (s1, c1) = try TestSockets.pair()
        let (s2, c2) = try TestSockets.pair()
        defer { close(s1); close(c1); close(s2); close(c2) }
        h.backend.receive(fd: s1, token: t1)
        TestSockets.write(c1, [1])
        let got1 = try #require(try h.first(t1))
        h.backend.receive(fd: s2, token: t2)
        TestSockets.write(c2, [2])
        try h.run(timeoutSeconds: 1) { $0.contains { $0.token == t2 } }
        #expect(h.completions(for: t2).isEmpty, "a receive completed without a free buffer")
        h.backend.releaseBuffer(try #require(got1.bufferID))
        let got2 = try #require(try h.first(t2))
        #expect(got2.result == 1)
        let id = try #require(got2.bufferID)
        #expect(Array(h.backend.buffers.bytes(id, length: 1)) == [2])
        h.backend.releaseBuffer(id)
    }

    func sendWritesBytes() throws {
        let h = try Harness<B>()
        let (server, client) = try TestSockets.pair()
        defer { close(server); close(client) }
        let payload = Array("ping".utf8)
        let c: Completion? = try payload.withUnsafeBytes { bytes in
            h.backend.send(fd: server, bytes: bytes, token: t1)
            return try h.first(t1)
        }
        #expect(c?.result == 4)
        #expect(TestSockets.read(client, count: 4) == payload)
    }

    func singleShotReceiveTakesOneBufferAndStops() throws {
        let h = try Harness<B>()
        let (server, client) = try TestSockets.pair()
        defer { close(server); close(client) }
        h.backend.receive(fd: server, token: t1, multishot: false)
        TestSockets.write(client, Array("one".utf8))
        let first = try #require(try h.first(t1))
        #expect(first.result == 3)
        #expect(!first.more)
        let id = try #require(first.bufferID)
        h.backend.releaseBuffer(id)
        // Not re-armed: more bytes stay in the socket until the next receive.
        TestSockets.write(client, Array("two".utf8))
        try h.run(timeoutSeconds: 1) { $0.filter { $0.token == t1 }.count >= 2 }
        #expect(h.completions(for: t1).count == 1)
        h.backend.receive(fd: server, token: t2, multishot: false)
        let second = try #require(try h.first(t2))
        #expect(second.result == 3)
        let id2 = try #require(second.bufferID)
        #expect(Array(h.backend.buffers.bytes(id2, length: 3)) == Array("two".utf8))
        h.backend.releaseBuffer(id2)
    }

    func vectoredSendGathersPiecesAndAdvances() throws {
        let h = try Harness<B>()
        let (server, client) = try TestSockets.pair()
        defer { close(server); close(client) }
        let table = IOVecTable(count: 2, maxSegments: 3)
        let a = Array("GET / HTTP/1.1\r\n".utf8), b = Array("x: 1\r\n".utf8), c = Array("\r\n".utf8)
        let result: Completion? = try a.withUnsafeBytes { pa in
            try b.withUnsafeBytes { pb in
                try c.withUnsafeBytes { pc in
                    table.reset(1)
                    #expect(unsafe table.append(1, pa))
                    #expect(unsafe table.append(1, pb))
                    #expect(unsafe table.append(1, pc))
                    #expect(unsafe !table.append(1, pc))  // full
                    // A short send is simulated by advancing past the first piece and part of the second.
                    table.advance(1, by: a.count + 2)
                    #expect(table.remaining(1) == b.count - 2 + c.count)
                    #expect(table.segments(1) == 2)
                    h.backend.send(fd: server, vectors: table, index: 1, token: t1)
                    return try h.first(t1)
                }
            }
        }
        #expect(result?.result == Int32(b.count - 2 + c.count))
        #expect(TestSockets.read(client, count: b.count - 2 + c.count) == Array(b.dropFirst(2)) + c)
    }

    func connectSucceedsAndReportsRefusal() throws {
        let h = try Harness<B>()
        let (l, address) = try TestSockets.listener()
        let fd = try System.tcpSocket(family: AF_INET)
        h.backend.connect(fd: fd, to: address, token: t1)
        #expect(try h.first(t1)?.result == 0)
        close(fd)
        close(l)  // nothing listens on that port any more
        let fd2 = try System.tcpSocket(family: AF_INET)
        defer { close(fd2) }
        h.backend.connect(fd: fd2, to: address, token: t2)
        #expect(try h.first(t2)?.result == -ECONNREFUSED)
    }

    func spliceMovesBytesThroughAPipe() throws {
        let h = try Harness<B>()
        let (inServer, inClient) = try TestSockets.pair()
        let (outServer, outClient) = try TestSockets.pair()
        defer { close(inServer); close(inClient); close(outServer); close(outClient) }
        let pool = PipePool()
        let pipe = try #require(pool.acquire())
        #expect(pipe.capacity >= 4096)
        h.backend.splice(from: inServer, to: pipe.writeEnd, count: pipe.capacity, waitFor: .readable(inServer), token: t1)
        try h.run(timeoutSeconds: 1) { $0.contains { $0.token == t1 } }
        #expect(h.completions(for: t1).isEmpty, "splice completed before any data arrived")
        let payload = (0..<3000).map { UInt8($0 % 251) }
        TestSockets.write(inClient, payload)
        let read = try #require(try h.first(t1))
        #expect(read.result > 0)
        h.backend.splice(from: pipe.readEnd, to: outServer, count: Int(read.result), waitFor: .writable(outServer), token: t2)
        #expect(try h.first(t2)?.result == read.result)
        #expect(TestSockets.read(outClient, count: Int(read.result)) == Array(payload[0..<Int(read.result)]))
        pool.release(pipe, holdsData: false)
    }

    func speculativeSpliceReportsEAGAIN() throws {
        let h = try Harness<B>()
        let (server, client) = try TestSockets.pair()
        defer { close(server); close(client) }
        let pool = PipePool()
        let pipe = try #require(pool.acquire())
        h.backend.splice(from: server, to: pipe.writeEnd, count: 4096, waitFor: nil, token: t1)
        #expect(try h.first(t1)?.result == -EAGAIN)
        pool.release(pipe, holdsData: false)
    }

    func pollAfterEAGAINSeesDataThatArrivedMeanwhile() throws {
        // A speculative splice finds nothing (EAGAIN); data arrives and the backend's next waits report it
        // while nothing waits; then the caller polls with knownNotReady. It must not miss that data.
        let h = try Harness<B>()
        let (server, client) = try TestSockets.pair()
        defer { close(server); close(client) }
        let pool = PipePool(maxIdle: 1, preferredCapacity: 65536, reserve: 0)
        let pipe = try #require(pool.acquire())
        // An earlier wait leaves the descriptor watched, as in a relay that has been running.
        let t0 = Token(op: 9, slot: 0, generation: 0)
        h.backend.poll(.readable(server), knownNotReady: true, token: t0)
        TestSockets.write(client, [1])
        #expect(try h.first(t0) != nil)
        var drained: UInt8 = 0
        #expect(recv(server, &drained, 1, 0) == 1)
        h.backend.splice(from: server, to: pipe.writeEnd, count: 4096, waitFor: nil, token: t1)
        #expect(try h.first(t1)?.result == -EAGAIN)
        TestSockets.write(client, [42])
        for _ in 0..<20 { _ = try h.backend.wait(timeoutNanos: 1_000_000) }
        h.backend.poll(.readable(server), knownNotReady: true, token: t2)
        #expect(try h.first(t2) != nil, "the poll missed data that arrived after the EAGAIN")
        pool.release(pipe, holdsData: false)
    }

    func pollAndCancel() throws {
        let h = try Harness<B>()
        let (server, client) = try TestSockets.pair()
        defer { close(server); close(client) }
        h.backend.poll(.readable(server), knownNotReady: false, token: t1)
        try h.run(timeoutSeconds: 1) { $0.contains { $0.token == t1 } }
        #expect(h.completions(for: t1).isEmpty)
        h.backend.cancel(fd: server, token: t1)
        #expect(try h.first(t1)?.result == -ECANCELED)
        // A poll on a readable socket completes.
        TestSockets.write(client, [9])
        h.backend.poll(.readable(server), knownNotReady: false, token: t2)
        let c = try #require(try h.first(t2))
        #expect(c.result > 0 && Int16(truncatingIfNeeded: c.result) & Int16(POLLIN) != 0)
    }

    func shutdownWakesAPendingPoll() throws {
        let h = try Harness<B>()
        let (server, client) = try TestSockets.pair()
        defer { close(server); close(client) }
        h.backend.poll(.readable(server), knownNotReady: true, token: t1)
        _ = System.shutdown(server, write: false, read: true)
        #expect(try h.first(t1) != nil)
    }

    /// The backend hands back a late completion with the token it was submitted with, so its slot and generation
    /// can be checked against the slab. That the handler then drops it is TernProxyTests'
    /// TCPRelayStaleCompletionTests (through the real relay).
    func staleCompletionForAReusedSlotIsRecognised() throws {
        let h = try Harness<B>()
        let slab = Slab<Int32>(capacity: 1)
        let (server, client) = try TestSockets.pair()
        defer { close(server); close(client) }
        let old = try #require(slab.insert(server))
        let oldToken = Token(op: 3, slot: old.index, generation: old.generation)
        h.backend.poll(.readable(server), knownNotReady: false, token: oldToken)
        // The connection is freed and its slot reused before the completion arrives.
        slab.remove(old)
        let reused = try #require(slab.insert(server))
        #expect(reused.index == old.index)
        TestSockets.write(client, [1])
        let late = try #require(try h.first(oldToken))
        let idFromToken = Slab<Int32>.ID(index: late.token.slot, generation: late.token.generation)
        #expect(!slab.isCurrent(idFromToken), "a late completion must not reach the slot's new owner")
        #expect(slab.isCurrent(reused))
    }

    func wakeInterruptsAWait() throws {
        let h = try Harness<B>()
        let waker = h.backend.waker
        let start = System.monotonicNanos()
        waker.wake()
        _ = try h.backend.wait(timeoutNanos: 5_000_000_000)
        #expect(System.monotonicNanos() - start < 4_000_000_000)
    }
}

@Suite(.serialized) struct EpollBackendTests {
    let checks = BackendChecks<EpollBackend>()
    @Test func multishotAccept() throws { try checks.multishotAcceptDeliversEachConnection() }
    @Test func singleShotAccept() throws { try checks.singleShotAcceptTakesOneConnection() }
    @Test func receive() throws { try checks.receiveDeliversBytesInPooledBuffersAndEndOfStream() }
    @Test func receiveWaitsForBuffer() throws { try checks.receiveWaitsForABufferWhenThePoolIsEmpty() }
    @Test func send() throws { try checks.sendWritesBytes() }
    @Test func singleShotReceive() throws { try checks.singleShotReceiveTakesOneBufferAndStops() }
    @Test func vectoredSend() throws { try checks.vectoredSendGathersPiecesAndAdvances() }
    @Test func connect() throws { try checks.connectSucceedsAndReportsRefusal() }
    @Test func splice() throws { try checks.spliceMovesBytesThroughAPipe() }
    @Test func speculativeSplice() throws { try checks.speculativeSpliceReportsEAGAIN() }
    @Test func pollAndCancel() throws { try checks.pollAndCancel() }
    @Test func pollAfterEAGAIN() throws { try checks.pollAfterEAGAINSeesDataThatArrivedMeanwhile() }
    @Test func shutdownWakesPoll() throws { try checks.shutdownWakesAPendingPoll() }
    @Test func staleCompletion() throws { try checks.staleCompletionForAReusedSlotIsRecognised() }
    @Test func wake() throws { try checks.wakeInterruptsAWait() }
}

@Suite(.serialized, .enabled(if: Backends.uringAvailable, "io_uring cannot be set up on this kernel"))
struct URingBackendTests {
    let checks = BackendChecks<URingBackend>()
    /// The reason, once, where a ring cannot be set up (the suite runs only then where CI requires io_uring).
    @Test func ringSetup() throws { _ = try URingBackend(settings: BackendSettings()) }
    @Test func multishotAccept() throws { try checks.multishotAcceptDeliversEachConnection() }
    @Test func singleShotAccept() throws { try checks.singleShotAcceptTakesOneConnection() }
    @Test func receive() throws { try checks.receiveDeliversBytesInPooledBuffersAndEndOfStream() }
    @Test func receiveWaitsForBuffer() throws { try checks.receiveWaitsForABufferWhenThePoolIsEmpty() }
    @Test func send() throws { try checks.sendWritesBytes() }
    @Test func singleShotReceive() throws { try checks.singleShotReceiveTakesOneBufferAndStops() }
    @Test func vectoredSend() throws { try checks.vectoredSendGathersPiecesAndAdvances() }
    @Test func connect() throws { try checks.connectSucceedsAndReportsRefusal() }
    @Test func splice() throws { try checks.spliceMovesBytesThroughAPipe() }
    @Test func speculativeSplice() throws { try checks.speculativeSpliceReportsEAGAIN() }
    @Test func pollAndCancel() throws { try checks.pollAndCancel() }
    @Test func pollAfterEAGAIN() throws { try checks.pollAfterEAGAINSeesDataThatArrivedMeanwhile() }
    @Test func shutdownWakesPoll() throws { try checks.shutdownWakesAPendingPoll() }
    @Test func staleCompletion() throws { try checks.staleCompletionForAReusedSlotIsRecognised() }
    @Test func wake() throws { try checks.wakeInterruptsAWait() }
}
