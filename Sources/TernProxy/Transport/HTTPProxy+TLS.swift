// TLS on client connections (termination) and upstream connections (origination): what sits between a TLS
// connection's socket operations and the HTTP/1.1 engine (docs/architecture.md, "TLS"). Both sides run the same
// code here, told apart by `TLSEnd`. The engine is written for received bytes in pooled buffers and sends of
// iovec entries; for a TLS connection:
//
// - `receiveFromClient` (`receiveFromUpstream`) asks for plaintext (`tlsWantsBytes`): a receive of ciphertext is
//   armed on the socket (op `tlsClientReceive`, `tlsUpstreamReceive`), OpenSSL reads it out of the receive buffer
//   it arrived in, and the plaintext is decrypted into a spare pooled buffer handed to `clientReceived`
//   (`upstreamReceived`) as if the kernel had filled it. Ciphertext
//   left over (the engine did not ask for more yet) stays in its receive buffer until it does; a connection with
//   plaintext ready runs from the reactor's list at the next loop iteration, never inside the call that asked.
// - `sendToClient` (`sendToUpstream`) encrypts (`tlsSend`): up to one record of the entry's bytes is gathered and
//   written as a record into a spare pooled buffer, which is sent (op `tlsClientSend`, `tlsUpstreamSend`); once it
//   is all on the wire, `clientSent` (`upstreamSent`) hears of the plaintext it carried, and the engine advances
//   and sends the rest as it does after a short send.
// - An upstream connection's handshake starts once its TCP connect completes and must end within the same
//   `--connect-timeout`; the engine hears of the connection only then (`upstreamReady`).
// - Records OpenSSL writes of its own accord (handshake flights, tickets, alerts) go out the same way.
// - Spare buffers are the reactor's (`BackendSettings.spareBuffers`); when none is free, the connection waits in
//   `tlsStarved` and runs again once one is (an iteration later).
import TernCore
import TernIO
import TernTLS

/// Which connection a TLS link belongs to: a client connection (termination) or an upstream one (origination).
enum TLSEnd: Equatable {
    case client(DID)
    case upstream(UID)

    var slot: Int {
        switch self {
        case .client(let id): Int(id.index)
        case .upstream(let u): Int(u.index)
        }
    }

    var side: TLSCounters.Side {
        switch self {
        case .client: .downstream
        case .upstream: .upstream
        }
    }
}

extension HTTPProxy {
    // MARK: - The two sides, told apart

    /// The TLS state of `end`'s side.
    func tlsIO(_ end: TLSEnd) -> TLSIO? {
        switch end {
        case .client: tls
        case .upstream: upstreamTLS
        }
    }

    private func tlsFD(_ end: TLSEnd) -> Int32 {
        switch end {
        case .client(let id): downstreams[id].fd
        case .upstream(let u): upstreams[u].fd
        }
    }

    /// Whether the connection still exists and is not closing.
    private func tlsLive(_ end: TLSEnd) -> Bool {
        switch end {
        case .client(let id): downstreams.isCurrent(id) && downstreams[id].phase != .closing
        case .upstream(let u): upstreams.isCurrent(u) && upstreams[u].state != .closing
        }
    }

    private func tlsClosing(_ end: TLSEnd) -> Bool {
        switch end {
        case .client(let id): downstreams[id].phase == .closing
        case .upstream(let u): upstreams[u].state == .closing
        }
    }

    private func tlsInflight(_ end: TLSEnd, _ delta: Int) {
        switch end {
        case .client(let id): downstreams[id].inflight += delta
        case .upstream(let u): upstreams[u].inflight += delta
        }
    }

    /// The engine asked for bytes and has not had them yet (the connection's `receiving`).
    private func tlsWanted(_ end: TLSEnd) -> Bool {
        switch end {
        case .client(let id): downstreams[id].receiving
        case .upstream(let u): upstreams[u].receiving
        }
    }

    private func tlsSetWanted(_ end: TLSEnd, _ value: Bool) {
        switch end {
        case .client(let id): downstreams[id].receiving = value
        case .upstream(let u): upstreams[u].receiving = value
        }
    }

    /// The engine sent and has not heard back yet (the connection's `sending`).
    private func tlsSending(_ end: TLSEnd) -> Bool {
        switch end {
        case .client(let id): downstreams[id].sending
        case .upstream(let u): upstreams[u].sending
        }
    }

    private func tlsSetSending(_ end: TLSEnd, _ value: Bool) {
        switch end {
        case .client(let id): downstreams[id].sending = value
        case .upstream(let u): upstreams[u].sending = value
        }
    }

    private func tlsToken(_ end: TLSEnd, receive: Bool) -> Token {
        switch end {
        case .client(let id): token(receive ? .tlsClientReceive : .tlsClientSend, id)
        case .upstream(let u): token(receive ? .tlsUpstreamReceive : .tlsUpstreamSend, u)
        }
    }

    /// Plaintext (or the end of the stream, `result` 0) for the engine.
    private func tlsHandOver(_ end: TLSEnd, result: Int32, buffer: UInt16?, _ reactor: Reactor<Backend>) {
        tlsSetWanted(end, false)
        switch end {
        case .client(let id):
            let c = buffer.map { Completion(token: token(.clientReceive, id), result: result, buffer: $0) }
                ?? Completion(token: token(.clientReceive, id), result: result)
            clientReceived(id, c, reactor)
        case .upstream(let u):
            let c = buffer.map { Completion(token: token(.upstreamReceive, u), result: result, buffer: $0) }
                ?? Completion(token: token(.upstreamReceive, u), result: result)
            upstreamReceived(u, c, reactor)
        }
    }

    /// The engine's send went out whole: `n` plaintext bytes.
    private func tlsReportSent(_ end: TLSEnd, _ n: Int32, _ reactor: Reactor<Backend>) {
        tlsSetSending(end, false)
        switch end {
        case .client(let id): clientSent(id, n, reactor)
        case .upstream(let u): upstreamSent(u, n, reactor)
        }
    }

    /// Spare buffers kept for records (never given to plaintext).
    static var tlsRecordReserve: Int { 16 }

    /// The connection broke after its handshake (a send failed, a record did not decrypt).
    private func tlsBroken(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        switch end {
        case .client(let id): closeDownstream(id, reset: downstreams[id].phase != .lingering, reactor)
        case .upstream(let u):
            if let x = servedExchange(u) { upstreamLost(x, u, reactor) } else { closeUpstream(u, reactor) }
        }
    }

    private func tlsEntry(_ end: TLSEnd) -> IOVecTable {
        switch end {
        case .client: toClient
        case .upstream: toUpstream
        }
    }

    // MARK: - Opening

    /// A connection accepted on a TLS listener: its session opens; the handshake runs as its bytes arrive, within
    /// `--tls-handshake-timeout` of now. False when no session could be made (the connection is then closed).
    func tlsAccepted(_ id: DID, _ reactor: Reactor<Backend>) -> Bool {
        guard let tls, let policy = tlsPolicy?.current else { return true }
        if let mesh = policy.mesh, !mesh.presentable(now: MeshIdentity.nowSeconds) {
            counters.tls.failed(.downstream, .identityExpired)
            return false
        }
        let slot = Int(id.index)
        guard tls.sessions.open(slot, policy.context) else { return false }
        tls.open(slot)
        downstreams[id].transport = .tls
        tls[slot].handshakeTimer = reactor.timers.schedule(token(.tlsHandshakeTimer, id), at: deadline(after: settings.tlsHandshakeTimeout))
        return true
    }

    /// A PERMISSIVE connection whose first bytes (`c`, received as plaintext) began a TLS handshake: its session
    /// opens now and takes them as its first ciphertext; the engine's wish for bytes carries over.
    func tlsAdopt(_ id: DID, _ c: Completion, _ reactor: Reactor<Backend>) {
        guard let tls, tlsAccepted(id, reactor), let b = c.bufferID else {
            release(c.bufferID, reactor)
            return closeDownstream(id, reset: true, reactor)
        }
        let slot = Int(id.index)
        tls[slot].input = Int32(b)
        tls[slot].inputStart = 0
        tls[slot].inputEnd = Int(c.result)
        tlsSetWanted(.client(id), true)
        tlsRun(.client(id), reactor)
    }

    // MARK: - Receiving

    /// The engine asks for the next plaintext of a TLS connection.
    func tlsWantsBytes(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end), !tlsWanted(end) else { return }
        tlsSetWanted(end, true)
        let slot = end.slot
        if io[slot].input >= 0 || io[slot].ended || (!io[slot].handshaking && io.sessions.hasBuffered(slot)) {
            tlsQueue(end)
        } else {
            tlsSocketReceive(end, reactor)
        }
    }

    func tlsQueue(_ end: TLSEnd) {
        guard let io = tlsIO(end), !io[end.slot].queued else { return }
        io[end.slot].queued = true
        tlsReady.append(end)
    }

    /// Once per loop iteration: connections with plaintext ready for the engine, and those that waited for a spare
    /// buffer.
    func tlsIteration(_ reactor: Reactor<Backend>) {
        if !tlsStarved.isEmpty && reactor.backend.buffers.spareAvailable > 0 {
            let waiting = tlsStarved
            tlsStarved.removeAll(keepingCapacity: true)
            for end in waiting where tlsLive(end) {
                guard let io = tlsIO(end) else { continue }
                io[end.slot].starved = false
                tlsRun(end, reactor)
                if tlsLive(end) && tlsSending(end) && io[end.slot].pendingPlain == 0 && !io[end.slot].handshaking {
                    tlsEncryptRound(end, reactor)
                }
            }
        }
        var i = 0
        while i < tlsReady.count {
            let end = tlsReady[i]
            i += 1
            guard tlsLive(end), let io = tlsIO(end) else { continue }
            io[end.slot].queued = false
            tlsRun(end, reactor)
        }
        tlsReady.removeAll(keepingCapacity: true)
        i = 0
        while i < tlsSentEarly.count {
            let end = tlsSentEarly[i]
            i += 1
            guard tlsLive(end), let io = tlsIO(end) else { continue }
            io[end.slot].earlyQueued = false
            tlsReportEarly(end, reactor)
        }
        tlsSentEarly.removeAll(keepingCapacity: true)
        if tls != nil { TicketKeys.shared.rotateIfDue(now: System.monotonicNanos()) }
    }

    /// A client connection's engine hears that its send is done once the records are in the flight (the kernel's
    /// hands) with none left filling, rather than once they are on the wire: its next receive (the next buffer of
    /// a body from the upstream) then overlaps their send, and the next round fills a second buffer meanwhile.
    /// What could overtake the records waits for them instead: shutting the write side (`tlsShutdownWrite`) and
    /// a graceful close (`closeDownstream` drains them, bounded by the linger timeout). Upstream connections hear
    /// of sends on the wire only: a tunnel's close must not cut what the upstream was told is sent.
    func tlsReportEarly(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        guard case .client = end, let io = tlsIO(end) else { return }
        let slot = end.slot
        guard io[slot].pendingPlain > 0, io[slot].fill < 0, io[slot].flight >= 0 else { return }
        let n = io[slot].pendingPlain
        io[slot].pendingPlain = 0
        tlsReportSent(end, Int32(n), reactor)
    }

    /// Stops a graceful close's drain (its linger timeout passed, or the process stops): the send is cancelled
    /// and the connection goes once it completes.
    func tlsStopDraining(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls, downstreams[id].transport == .tls, tls[Int(id.index)].draining else { return }
        tls[Int(id.index)].draining = false
        tlsCancel(.client(id), reactor)
    }

    /// Records written and not yet on the wire.
    func tlsUnsent(_ end: TLSEnd) -> Bool {
        guard let io = tlsIO(end) else { return false }
        return io[end.slot].flight >= 0 || (io[end.slot].fill >= 0 && io[end.slot].fillLength > 0)
    }

    func tlsStarve(_ end: TLSEnd) {
        guard let io = tlsIO(end), !io[end.slot].starved else { return }
        io[end.slot].starved = true
        tlsStarved.append(end)
    }

    func tlsSocketReceive(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return }
        let slot = end.slot
        guard !io[slot].socketReceiving, !io[slot].socketEnded, io[slot].input < 0 else { return }
        io[slot].socketReceiving = true
        tlsInflight(end, 1)
        reactor.backend.receive(fd: tlsFD(end), token: tlsToken(end, receive: true), multishot: false)
    }

    /// Ciphertext arrived (or the socket ended).
    func tlsSocketReceived(_ end: TLSEnd, _ c: Completion, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return release(c.bufferID, reactor) }
        let slot = end.slot
        io[slot].socketReceiving = false
        if tlsClosing(end) {
            release(c.bufferID, reactor)
            return tlsFinishIfQuiet(end, reactor)
        }
        if c.result > 0, let b = c.bufferID {
            io[slot].input = Int32(b)
            io[slot].inputStart = 0
            io[slot].inputEnd = Int(c.result)
        } else {
            release(c.bufferID, reactor)
            io[slot].socketEnded = true
            io.sessions.setEndOfInput(slot)
        }
        tlsRun(end, reactor)
    }

    private func tlsFinishIfQuiet(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        switch end {
        case .client(let id): finishDownstreamIfQuiet(id, reactor)
        case .upstream(let u): finishUpstreamIfQuiet(u, reactor)
        }
    }

    /// Moves a connection's TLS along: the handshake while it runs, then plaintext to the engine if it asked.
    func tlsRun(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return }
        let slot = end.slot
        if io[slot].handshaking {
            let step = tlsCall(end, reactor) { $0.sessions.handshake(slot) }
            switch step {
            case .done:
                tlsFlush(end, reactor)
                tlsHandshakeDone(end, reactor)
                // A client's request may have come with its last handshake flight.
                guard tlsLive(end) else { return }
            case .wantRead:
                tlsFlush(end, reactor)
                if io[slot].socketEnded {
                    return tlsFailed(end, TLSFailure(.closedEarly, "the peer closed the connection during the handshake"), reactor)
                }
                return tlsSocketReceive(end, reactor)
            case .wantWrite:
                return tlsStarve(end)
            case .closed:
                return tlsFailed(end, TLSFailure(.closedEarly, "the peer closed the connection during the handshake"), reactor)
            case .failed(let f):
                return tlsFailed(end, f, reactor)
            }
        }
        tlsFlush(end, reactor)
        guard tlsWanted(end), !tlsClosing(end) else { return }
        tlsDeliver(end, reactor)
    }

    /// Runs `op` with the connection's unread ciphertext as input and room in its fill buffer as output; a full
    /// fill buffer is sent and another taken (two at most: the one in flight and the one filling). Input OpenSSL
    /// took is dropped; a fill buffer left empty is released (an idle connection holds no buffer). `lazy` (reads,
    /// which seldom write): the op first runs with no output at all, and gets a fill buffer only if it asks.
    func tlsCall(_ end: TLSEnd, _ reactor: Reactor<Backend>, lazy: Bool = false, _ op: (TLSIO) -> TLSStep) -> TLSStep {
        guard let io = tlsIO(end) else { return .failed(TLSFailure(.internalError, "no TLS")) }
        let slot = end.slot
        io.setInput(slot, buffer: io[slot].input, start: io[slot].inputStart, end: io[slot].inputEnd)
        var step = TLSStep.wantWrite
        var withoutOutput = lazy
        while true {
            if io[slot].fill < 0 && !withoutOutput {
                guard let b = reactor.backend.takeBuffer() else { break }
                io[slot].fill = Int32(b)
                io[slot].fillLength = 0
            }
            if withoutOutput && io[slot].fill < 0 {
                withoutOutput = false
                io.setOutput(slot, buffer: -1, offset: 0)
                step = op(io)
                if step != .wantWrite { break }
                continue
            }
            io.setOutput(slot, buffer: io[slot].fill, offset: io[slot].fillLength)
            step = op(io)
            io[slot].fillLength += io.sessions.outputCount(slot)
            if step != .wantWrite { break }
            guard io[slot].flight < 0 else {
                step = .failed(TLSFailure(.internalError, "records to send exceed two buffers"))
                break
            }
            tlsFlush(end, reactor)
        }
        let left = io.sessions.inputLeft(slot)
        io[slot].inputStart = io[slot].inputEnd - left
        if left == 0 && io[slot].input >= 0 {
            release(UInt16(io[slot].input), reactor)
            io[slot].input = -1
        }
        io.setInput(slot, buffer: -1, start: 0, end: 0)
        io.setOutput(slot, buffer: -1, offset: 0)
        if io[slot].fill >= 0 && io[slot].fillLength == 0 {
            release(UInt16(io[slot].fill), reactor)
            io[slot].fill = -1
        }
        return step
    }

    // MARK: - Sending

    /// Sends the fill buffer's records unless a send is in flight (it follows that one).
    func tlsFlush(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return }
        let slot = end.slot
        guard !io[slot].socketSending, io[slot].flight < 0, io[slot].fill >= 0, io[slot].fillLength > 0 else { return }
        io[slot].flight = io[slot].fill
        io[slot].flightLength = io[slot].fillLength
        io[slot].flightSent = 0
        io[slot].fill = -1
        io[slot].fillLength = 0
        tlsSendFlight(end, reactor)
    }

    private func tlsSendFlight(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return }
        let slot = end.slot
        io[slot].socketSending = true
        tlsInflight(end, 1)
        io.send(reactor.backend, fd: tlsFD(end), buffer: io[slot].flight, start: io[slot].flightSent,
                end: io[slot].flightLength, token: tlsToken(end, receive: false))
    }

    /// Records went out (some of them, or the send failed).
    func tlsSocketSent(_ end: TLSEnd, _ result: Int32, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return }
        let slot = end.slot
        io[slot].socketSending = false
        if tlsClosing(end) && io[slot].draining && result > 0 {
            // A graceful close sends what the engine was told is sent, then the connection goes.
            io[slot].flightSent += Int(result)
            if io[slot].flightSent < io[slot].flightLength { return tlsSendFlight(end, reactor) }
            release(UInt16(io[slot].flight), reactor)
            io[slot].flight = -1
            if io[slot].fill >= 0 && io[slot].fillLength > 0 { return tlsFlush(end, reactor) }
            if io[slot].shutdownPending && !io[slot].closeNotifyWritten && !io[slot].handshaking {
                // The write side was to be shut after these records (a tunnel's half-close): close_notify first.
                io[slot].closeNotifyWritten = true
                _ = tlsCall(end, reactor) { $0.sessions.shutdown(slot) }
                if io[slot].fill >= 0 && io[slot].fillLength > 0 { return tlsFlush(end, reactor) }
            }
            return tlsFinishIfQuiet(end, reactor)
        }
        if tlsClosing(end) || result < 0 {
            release(UInt16(io[slot].flight), reactor)
            io[slot].flight = -1
            if tlsClosing(end) { return tlsFinishIfQuiet(end, reactor) }
            Log.debug("send to a TLS peer failed: \(Errno.name(-result))")
            if io[slot].handshaking {
                return tlsFailed(end, TLSFailure(.closedEarly, "send failed during the handshake: \(Errno.name(-result))"), reactor)
            }
            return tlsBroken(end, reactor)
        }
        io[slot].flightSent += Int(result)
        if io[slot].flightSent < io[slot].flightLength { return tlsSendFlight(end, reactor) }
        release(UInt16(io[slot].flight), reactor)
        io[slot].flight = -1
        if io[slot].fill >= 0 && io[slot].fillLength > 0 {
            tlsFlush(end, reactor)
            return tlsReportEarly(end, reactor)
        }
        if io[slot].pendingPlain > 0 {
            let n = io[slot].pendingPlain
            io[slot].pendingPlain = 0
            return tlsReportSent(end, Int32(n), reactor)
        }
        if io[slot].shutdownPending {
            io[slot].shutdownPending = false
            return tlsShutdownWrite(end, reactor)
        }
        // A send waited for room behind these records.
        if tlsSending(end) && !io[slot].handshaking { tlsEncryptRound(end, reactor) }
    }

    /// The engine sends what its entry for the connection holds.
    func tlsSend(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        tlsSetSending(end, true)
        tlsEncryptRound(end, reactor)
    }

    /// Encrypts as many records of the engine's send as the fill buffer has room for (two of 16 KiB in a
    /// 32 KiB buffer) and sends them.
    func tlsEncryptRound(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return }
        let slot = end.slot
        guard io[slot].pendingPlain == 0 else { return }
        if io[slot].fill < 0 {
            guard let b = reactor.backend.takeBuffer() else { return tlsStarve(end) }
            io[slot].fill = Int32(b)
            io[slot].fillLength = 0
        }
        let table = tlsEntry(end)
        let total = table.remaining(slot)
        var taken = 0
        while taken < total {
            // 1 KiB stays free for records OpenSSL writes of its own accord while these wait behind a flight (a
            // KeyUpdate's answer, an alert): a full buffer would fail the read that needs to write them.
            let room = io.pool.size - io[slot].fillLength - TLSIO.recordOverhead - 1024
            // Nearly full (of records written before: a ticket, an alert; or of this round's): send first.
            if room < 1024 { break }
            io.setOutput(slot, buffer: io[slot].fill, offset: io[slot].fillLength)
            let (n, step) = io.writeRecord(slot, from: table, entry: slot, offset: taken, limit: room)
            io[slot].fillLength += io.sessions.outputCount(slot)
            io.setOutput(slot, buffer: -1, offset: 0)
            guard case .done = step, n > 0 else {
                if case .failed(let f) = step { Log.debug("TLS write failed: \(f.detail)") }
                return tlsBroken(end, reactor)
            }
            taken += n
        }
        // The engine hears of the plaintext once its records are on the wire, or, on a client connection, once
        // they are all in the flight (`tlsReportEarly`: at the next loop iteration, not inside its call).
        io[slot].pendingPlain = taken
        tlsFlush(end, reactor)
        if case .client = end, taken > 0, io[slot].fill < 0, io[slot].flight >= 0, !io[slot].earlyQueued {
            io[slot].earlyQueued = true
            tlsSentEarly.append(end)
        }
    }

    /// Shuts the write side of a TLS connection (a lingering close, a tunnel's half-close): after the records
    /// still in flight or filling (the engine heard of them before they were sent), close_notify is written and
    /// sent the same way, and the socket's write side is shut once it is on the wire. (Sent with one non-blocking
    /// send, close_notify would be lost whenever the socket's buffer is full, as at the end of a bulk transfer.)
    func tlsShutdownWrite(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end), tlsLive(end) else { return }
        let slot = end.slot
        if io[slot].flight >= 0 || io[slot].socketSending {
            io[slot].shutdownPending = true
            return
        }
        if !io[slot].handshaking && !io[slot].closeNotifyWritten {
            io[slot].closeNotifyWritten = true
            _ = tlsCall(end, reactor) { $0.sessions.shutdown(slot) }
        }
        if io[slot].fill >= 0 && io[slot].fillLength > 0 {
            io[slot].shutdownPending = true
            return tlsFlush(end, reactor)
        }
        _ = System.shutdown(tlsFD(end), write: true, read: false)
    }

    /// Decrypts what the connection has into a spare buffer and hands it to the engine (or the end of the stream).
    func tlsDeliver(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return }
        let slot = end.slot
        if io[slot].ended { return tlsHandOver(end, result: 0, buffer: nil, reactor) }
        // Plaintext may be held by the engine for a while (a body waiting for its peer): the last spare buffers are
        // kept for records, so sends and handshakes always have room.
        guard reactor.backend.buffers.spareAvailable > Self.tlsRecordReserve, let plain = reactor.backend.takeBuffer() else {
            return tlsStarve(end)
        }
        var n = 0
        var step = TLSStep.wantRead
        while n < io.pool.receiveLength {
            step = tlsCall(end, reactor, lazy: true) { $0.read(slot, into: plain, offset: n) }
            guard case .done(let k) = step else { break }
            n += k
        }
        tlsFlush(end, reactor)
        switch step {
        case .closed:
            io[slot].ended = true
        case .failed(let f):
            release(plain, reactor)
            Log.debug("TLS connection failed: \(f.detail)")
            return tlsBroken(end, reactor)
        case .wantRead:
            // The socket ended without close_notify: an end of stream all the same (as Envoy and nginx take it).
            if io[slot].socketEnded && io[slot].input < 0 { io[slot].ended = true }
        case .wantWrite:
            if n == 0 {
                release(plain, reactor)
                return tlsStarve(end)
            }
        case .done:
            break
        }
        if n > 0 {
            tlsHandOver(end, result: Int32(n), buffer: plain, reactor)
        } else if io[slot].ended {
            release(plain, reactor)
            tlsHandOver(end, result: 0, buffer: nil, reactor)
        } else {
            release(plain, reactor)
            tlsSocketReceive(end, reactor)
        }
    }

    // MARK: - Handshakes

    func tlsHandshakeDone(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return }
        let slot = end.slot
        io[slot].handshaking = false
        if let t = io[slot].handshakeTimer { reactor.timers.cancel(t) }
        io[slot].handshakeTimer = nil
        switch end {
        case .client(let id):
            if let mesh = tlsPolicy?.current.mesh {
                // A sidecar's inbound side: the peer's certificate chained to the mesh root (OpenSSL checked that);
                // it must also be an X.509-SVID of the trust domain, whose SPIFFE ID is the source principal.
                let leaf = io.sessions.peerCertificate(slot)
                switch mesh.peerIdentity(leaf, now: MeshIdentity.nowSeconds) {
                case .failure(let f):
                    return tlsFailed(end, f, reactor)
                case .success(let peer):
                    downstreams[id].principal = Array(peer.principal.utf8)
                    downstreams[id].clientCertHash = Array((leaf?.sha256Hex ?? "").utf8)
                }
            }
            counters.tls.handshake(.downstream, resumed: io.sessions.resumed(slot))
            downstreams[id].mutualTLS = io.sessions.peerVerified(slot)
            if isInbound(downstreams[id].listener) {
                // What AuthorizationPolicies read of the handshake: the principal (the SPIFFE ID without its
                // scheme; with a mesh identity, found above) and the server name.
                if tlsPolicy?.current.mesh == nil, downstreams[id].mutualTLS, let spiffe = io.sessions.peerSPIFFEID(slot) {
                    downstreams[id].principal = Array(spiffe.utf8.dropFirst(9))
                }
                if let name = io.sessions.serverName(slot) { downstreams[id].serverName = Array(name.utf8) }
                // Once per connection: the peer's id for the metrics (a registry shared by the reactors).
                if let peers, !downstreams[id].principal.isEmpty {
                    downstreams[id].peerID = peers.id(String(decoding: downstreams[id].principal, as: UTF8.self))
                }
            }
            if let capture {
                let x = Int(downstreams[id].exchange.index)
                capture.set(x, .tlsVersion, io.sessions.version(slot))
                capture.set(x, .tlsCipher, io.sessions.cipher(slot))
                if let name = io.sessions.serverName(slot) { capture.set(x, .serverName, name) } else { capture.clear(x, .serverName) }
            }
            if downstreams[id].relaysTCP { relayHandshakeDone(id, reactor) }
        case .upstream(let u):
            upstreamHandshakeDone(u, reactor)
        }
    }

    /// A handshake failed or timed out: counted by reason, the alert OpenSSL wrote sent if the socket takes it at
    /// once, and the connection closed (an upstream attempt fails with the reason, 503 UF).
    func tlsFailed(_ end: TLSEnd, _ f: TLSFailure, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return }
        let slot = end.slot
        counters.tls.failed(end.side, f.reason)
        if io[slot].flight < 0 && io[slot].fill >= 0 {
            // The alert, if the socket takes it now; the close that follows does not send it again.
            io.sendNow(fd: tlsFD(end), buffer: io[slot].fill, count: io[slot].fillLength)
            release(UInt16(io[slot].fill), reactor)
            io[slot].fill = -1
            io[slot].fillLength = 0
        }
        switch end {
        case .client(let id):
            Log.debug("TLS handshake with a client failed (\(f.reason.rawValue)): \(f.detail)")
            closeDownstream(id, reset: false, reactor)
        case .upstream(let u):
            upstreamHandshakeFailed(u, f, reactor)
        }
    }

    /// Cancels the connection's socket operations (closing); `keepSending`: not its send (a graceful close
    /// drains its records).
    func tlsCancel(_ end: TLSEnd, keepSending: Bool = false, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return }
        let fd = tlsFD(end)
        if io[end.slot].socketReceiving { reactor.backend.cancel(fd: fd, token: tlsToken(end, receive: true)) }
        if io[end.slot].socketSending && !keepSending { reactor.backend.cancel(fd: fd, token: tlsToken(end, receive: false)) }
    }

    /// Frees the session and the buffers its link holds (no operation is in flight any more).
    func tlsFree(_ end: TLSEnd, _ reactor: Reactor<Backend>) {
        guard let io = tlsIO(end) else { return }
        let slot = end.slot
        guard io.sessions.isOpen(slot) else { return }
        if io[slot].input >= 0 { release(UInt16(io[slot].input), reactor) }
        if io[slot].fill >= 0 { release(UInt16(io[slot].fill), reactor) }
        if io[slot].flight >= 0 { release(UInt16(io[slot].flight), reactor) }
        if let t = io[slot].handshakeTimer { reactor.timers.cancel(t) }
        io.open(slot)
        io.sessions.close(slot)
    }
}
