// TLS on client connections (termination): what sits between a TLS connection's socket operations and the
// HTTP/1.1 engine (docs/architecture.md, "TLS"). The engine is written for received bytes in pooled buffers and
// sends of iovec entries; for a TLS connection:
//
// - `receiveFromClient` asks for plaintext (`tlsWantsBytes`): a receive of ciphertext is armed on the socket
//   (op `tlsClientReceive`), OpenSSL reads it out of the receive buffer it arrived in, and the plaintext is
//   decrypted into a spare pooled buffer handed to `clientReceived` as if the kernel had filled it. Ciphertext
//   left over (the engine did not ask for more yet) stays in its receive buffer until it does; a connection with
//   plaintext ready runs from the reactor's list at the next loop iteration, never inside the call that asked.
// - `sendToClient` encrypts (`tlsSend`): up to one record of the entry's bytes is gathered and written as a record
//   into a spare pooled buffer, which is sent (op `tlsClientSend`); once it is all on the wire, `clientSent` hears
//   of the plaintext it carried, and the engine advances and sends the rest as it does after a short send.
// - Records OpenSSL writes of its own accord (handshake flights, tickets, alerts) go out the same way.
// - Spare buffers are the reactor's (`BackendSettings.spareBuffers`); when none is free, the connection waits in
//   `tlsStarved` and runs again once one is (an iteration later).
import TernCore
import TernIO
import TernTLS

extension HTTPProxy {
    /// A connection accepted on a TLS listener: its session opens; the handshake runs as its bytes arrive, within
    /// `--tls-handshake-timeout` of now. False when no session could be made (the connection is then closed).
    func tlsAccepted(_ id: DID, _ reactor: Reactor<Backend>) -> Bool {
        guard let tls, let policy = tlsPolicy?.current else { return true }
        let slot = Int(id.index)
        guard tls.sessions.open(slot, policy.context) else { return false }
        tls.open(slot)
        downstreams[id].transport = .tls
        tls[slot].handshakeTimer = reactor.timers.schedule(token(.tlsHandshakeTimer, id), at: deadline(after: settings.tlsHandshakeTimeout))
        return true
    }

    /// The engine asks for the next plaintext of a TLS connection.
    func tlsWantsBytes(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls, !downstreams[id].receiving else { return }
        downstreams[id].receiving = true
        let slot = Int(id.index)
        if tls[slot].input >= 0 || tls[slot].ended || (!tls[slot].handshaking && tls.sessions.hasBuffered(slot)) {
            tlsQueue(id)
        } else {
            tlsSocketReceive(id, reactor)
        }
    }

    func tlsQueue(_ id: DID) {
        guard let tls, !tls[Int(id.index)].queued else { return }
        tls[Int(id.index)].queued = true
        tlsReady.append(id)
    }

    /// Once per loop iteration: connections with plaintext ready for the engine, and those that waited for a spare
    /// buffer.
    func tlsIteration(_ reactor: Reactor<Backend>) {
        guard let tls else { return }
        if !tlsStarved.isEmpty && reactor.backend.buffers.spareAvailable > 0 {
            let waiting = tlsStarved
            tlsStarved.removeAll(keepingCapacity: true)
            for id in waiting where downstreams.isCurrent(id) && downstreams[id].phase != .closing {
                tls[Int(id.index)].starved = false
                tlsRun(id, reactor)
                if downstreams.isCurrent(id) && downstreams[id].phase != .closing && downstreams[id].sending && tls[Int(id.index)].pendingPlain == 0 {
                    tlsEncryptRound(id, reactor)
                }
            }
        }
        var i = 0
        while i < tlsReady.count {
            let id = tlsReady[i]
            i += 1
            guard downstreams.isCurrent(id) else { continue }
            tls[Int(id.index)].queued = false
            guard downstreams[id].phase != .closing else { continue }
            tlsRun(id, reactor)
        }
        tlsReady.removeAll(keepingCapacity: true)
        TicketKeys.shared.rotateIfDue(now: System.monotonicNanos())
    }

    func tlsStarve(_ id: DID) {
        guard let tls, !tls[Int(id.index)].starved else { return }
        tls[Int(id.index)].starved = true
        tlsStarved.append(id)
    }

    func tlsSocketReceive(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls else { return }
        let slot = Int(id.index)
        guard !tls[slot].socketReceiving, !tls[slot].socketEnded, tls[slot].input < 0 else { return }
        tls[slot].socketReceiving = true
        downstreams[id].inflight += 1
        reactor.backend.receive(fd: downstreams[id].fd, token: token(.tlsClientReceive, id), multishot: false)
    }

    /// Ciphertext arrived (or the socket ended).
    func tlsSocketReceived(_ id: DID, _ c: Completion, _ reactor: Reactor<Backend>) {
        guard let tls else { return release(c.bufferID, reactor) }
        let slot = Int(id.index)
        tls[slot].socketReceiving = false
        if downstreams[id].phase == .closing {
            release(c.bufferID, reactor)
            return finishDownstreamIfQuiet(id, reactor)
        }
        if c.result > 0, let b = c.bufferID {
            tls[slot].input = Int32(b)
            tls[slot].inputStart = 0
            tls[slot].inputEnd = Int(c.result)
        } else {
            release(c.bufferID, reactor)
            tls[slot].socketEnded = true
            tls.sessions.setEndOfInput(slot)
        }
        tlsRun(id, reactor)
    }

    /// Moves a connection's TLS along: the handshake while it runs, then plaintext to the engine if it asked.
    func tlsRun(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls else { return }
        let slot = Int(id.index)
        if tls[slot].handshaking {
            let step = tlsCall(id, reactor) { $0.sessions.handshake(slot) }
            switch step {
            case .done:
                tlsHandshakeDone(id, reactor)
            case .wantRead:
                tlsFlush(id, reactor)
                if tls[slot].socketEnded {
                    return tlsFailed(id, TLSFailure(.closedEarly, "the client closed the connection during the handshake"), reactor)
                }
                return tlsSocketReceive(id, reactor)
            case .wantWrite:
                return tlsStarve(id)
            case .closed:
                return tlsFailed(id, TLSFailure(.closedEarly, "the client closed the connection during the handshake"), reactor)
            case .failed(let f):
                return tlsFailed(id, f, reactor)
            }
        }
        tlsFlush(id, reactor)
        guard downstreams[id].receiving, downstreams[id].phase != .closing else { return }
        tlsDeliver(id, reactor)
    }

    /// Runs `op` with the connection's unread ciphertext as input and room in its fill buffer as output; a full
    /// fill buffer is sent and another taken (two at most: the one in flight and the one filling). Input OpenSSL
    /// took is dropped; a fill buffer left empty is released (an idle connection holds no buffer).
    func tlsCall(_ id: DID, _ reactor: Reactor<Backend>, _ op: (TLSIO) -> TLSStep) -> TLSStep {
        guard let tls else { return .failed(TLSFailure(.internalError, "no TLS")) }
        let slot = Int(id.index)
        tls.setInput(slot, buffer: tls[slot].input, start: tls[slot].inputStart, end: tls[slot].inputEnd)
        var step = TLSStep.wantWrite
        while true {
            if tls[slot].fill < 0 {
                guard let b = reactor.backend.takeBuffer() else { break }
                tls[slot].fill = Int32(b)
                tls[slot].fillLength = 0
            }
            tls.setOutput(slot, buffer: tls[slot].fill, offset: tls[slot].fillLength)
            step = op(tls)
            tls[slot].fillLength += tls.sessions.outputCount(slot)
            if step != .wantWrite { break }
            guard tls[slot].flight < 0 else {
                step = .failed(TLSFailure(.internalError, "records to send exceed two buffers"))
                break
            }
            tlsFlush(id, reactor)
        }
        let left = tls.sessions.inputLeft(slot)
        tls[slot].inputStart = tls[slot].inputEnd - left
        if left == 0 && tls[slot].input >= 0 {
            release(UInt16(tls[slot].input), reactor)
            tls[slot].input = -1
        }
        tls.setInput(slot, buffer: -1, start: 0, end: 0)
        tls.setOutput(slot, buffer: -1, offset: 0)
        if tls[slot].fill >= 0 && tls[slot].fillLength == 0 {
            release(UInt16(tls[slot].fill), reactor)
            tls[slot].fill = -1
        }
        return step
    }

    /// Sends the fill buffer's records unless a send is in flight (it follows that one).
    func tlsFlush(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls else { return }
        let slot = Int(id.index)
        guard !tls[slot].socketSending, tls[slot].flight < 0, tls[slot].fill >= 0, tls[slot].fillLength > 0 else { return }
        tls[slot].flight = tls[slot].fill
        tls[slot].flightLength = tls[slot].fillLength
        tls[slot].flightSent = 0
        tls[slot].fill = -1
        tls[slot].fillLength = 0
        tlsSendFlight(id, reactor)
    }

    private func tlsSendFlight(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls else { return }
        let slot = Int(id.index)
        tls[slot].socketSending = true
        downstreams[id].inflight += 1
        tls.send(reactor.backend, fd: downstreams[id].fd, buffer: tls[slot].flight, start: tls[slot].flightSent,
                 end: tls[slot].flightLength, token: token(.tlsClientSend, id))
    }

    /// Records went out (some of them, or the send failed).
    func tlsSocketSent(_ id: DID, _ result: Int32, _ reactor: Reactor<Backend>) {
        guard let tls else { return }
        let slot = Int(id.index)
        tls[slot].socketSending = false
        if downstreams[id].phase == .closing || result < 0 {
            release(UInt16(tls[slot].flight), reactor)
            tls[slot].flight = -1
            if downstreams[id].phase == .closing { return finishDownstreamIfQuiet(id, reactor) }
            Log.debug("send to TLS client failed: \(Errno.name(-result))")
            return closeDownstream(id, reset: true, reactor)
        }
        tls[slot].flightSent += Int(result)
        if tls[slot].flightSent < tls[slot].flightLength { return tlsSendFlight(id, reactor) }
        release(UInt16(tls[slot].flight), reactor)
        tls[slot].flight = -1
        if tls[slot].fill >= 0 && tls[slot].fillLength > 0 { return tlsFlush(id, reactor) }
        if tls[slot].pendingPlain > 0 {
            let n = tls[slot].pendingPlain
            tls[slot].pendingPlain = 0
            downstreams[id].sending = false
            return clientSent(id, Int32(n), reactor)
        }
        // A send waited for room behind these records.
        if downstreams[id].sending && downstreams[id].phase == .open { tlsEncryptRound(id, reactor) }
    }

    /// The engine sends what entry `id.index` of `toClient` holds.
    func tlsSend(_ id: DID, _ reactor: Reactor<Backend>) {
        downstreams[id].sending = true
        tlsEncryptRound(id, reactor)
    }

    /// Encrypts up to one record of the engine's send into the fill buffer and sends it.
    func tlsEncryptRound(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls else { return }
        let slot = Int(id.index)
        guard tls[slot].pendingPlain == 0 else { return }
        if tls[slot].fill < 0 {
            guard let b = reactor.backend.takeBuffer() else { return tlsStarve(id) }
            tls[slot].fill = Int32(b)
            tls[slot].fillLength = 0
        }
        let room = tls.pool.size - tls[slot].fillLength - TLSIO.recordOverhead
        if room < 1024 {
            // Nearly full of records written before (a ticket, an alert): they go first, then this round.
            return tlsFlush(id, reactor)
        }
        tls.setOutput(slot, buffer: tls[slot].fill, offset: tls[slot].fillLength)
        let (n, step) = tls.writeStaged(slot, from: toClient, entry: Int(id.index), limit: room)
        tls[slot].fillLength += tls.sessions.outputCount(slot)
        tls.setOutput(slot, buffer: -1, offset: 0)
        guard case .done = step, n > 0 else {
            if case .failed(let f) = step { Log.debug("TLS write failed: \(f.detail)") }
            return closeDownstream(id, reset: true, reactor)
        }
        tls[slot].pendingPlain = n
        tlsFlush(id, reactor)
    }

    /// Decrypts what the connection has into a spare buffer and hands it to the engine (or the end of the stream).
    func tlsDeliver(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls else { return }
        let slot = Int(id.index)
        if tls[slot].ended {
            downstreams[id].receiving = false
            return clientReceived(id, Completion(token: token(.clientReceive, id), result: 0), reactor)
        }
        guard let plain = reactor.backend.takeBuffer() else { return tlsStarve(id) }
        var n = 0
        var step = TLSStep.wantRead
        while n < tls.pool.size {
            step = tlsCall(id, reactor) { $0.read(slot, into: plain, offset: n) }
            guard case .done(let k) = step else { break }
            n += k
        }
        tlsFlush(id, reactor)
        switch step {
        case .closed:
            tls[slot].ended = true
        case .failed(let f):
            release(plain, reactor)
            Log.debug("TLS connection failed: \(f.detail)")
            return closeDownstream(id, reset: true, reactor)
        case .wantRead:
            // The socket ended without close_notify: an end of stream all the same (as Envoy and nginx take it).
            if tls[slot].socketEnded && tls[slot].input < 0 { tls[slot].ended = true }
        case .wantWrite:
            if n == 0 {
                release(plain, reactor)
                return tlsStarve(id)
            }
        case .done:
            break
        }
        if n > 0 {
            downstreams[id].receiving = false
            clientReceived(id, Completion(token: token(.clientReceive, id), result: Int32(n), buffer: plain), reactor)
        } else if tls[slot].ended {
            release(plain, reactor)
            downstreams[id].receiving = false
            clientReceived(id, Completion(token: token(.clientReceive, id), result: 0), reactor)
        } else {
            release(plain, reactor)
            tlsSocketReceive(id, reactor)
        }
    }

    func tlsHandshakeDone(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls else { return }
        let slot = Int(id.index)
        tls[slot].handshaking = false
        if let t = tls[slot].handshakeTimer { reactor.timers.cancel(t) }
        tls[slot].handshakeTimer = nil
        counters.tls.handshake(.downstream, resumed: tls.sessions.resumed(slot))
        if let capture {
            let x = Int(downstreams[id].exchange.index)
            capture.set(x, .tlsVersion, tls.sessions.version(slot))
            capture.set(x, .tlsCipher, tls.sessions.cipher(slot))
            if let name = tls.sessions.serverName(slot) { capture.set(x, .serverName, name) } else { capture.clear(x, .serverName) }
        }
    }

    /// A handshake failed or timed out: counted by reason, the alert OpenSSL wrote sent if the socket takes it at
    /// once, and the connection closed.
    func tlsFailed(_ id: DID, _ f: TLSFailure, _ reactor: Reactor<Backend>) {
        guard let tls else { return }
        let slot = Int(id.index)
        counters.tls.failed(.downstream, f.reason)
        Log.debug("TLS handshake with a client failed (\(f.reason.rawValue)): \(f.detail)")
        if tls[slot].flight < 0 { tls.sendNow(fd: downstreams[id].fd, buffer: tls[slot].fill, count: tls[slot].fillLength) }
        closeDownstream(id, reset: false, reactor)
    }

    /// Before the write side closes (lingering close): close_notify, sent if the socket takes it at once.
    func tlsCloseNotify(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls else { return }
        let slot = Int(id.index)
        guard !tls[slot].handshaking, tls[slot].flight < 0, !tls[slot].socketSending else { return }
        _ = tlsCall(id, reactor) { $0.sessions.shutdown(slot) }
        if tls[slot].fill >= 0 {
            tls.sendNow(fd: downstreams[id].fd, buffer: tls[slot].fill, count: tls[slot].fillLength)
            release(UInt16(tls[slot].fill), reactor)
            tls[slot].fill = -1
            tls[slot].fillLength = 0
        }
    }

    /// Cancels the connection's socket operations (closing).
    func tlsCancel(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls else { return }
        let slot = Int(id.index), fd = downstreams[id].fd
        if tls[slot].socketReceiving { reactor.backend.cancel(fd: fd, token: token(.tlsClientReceive, id)) }
        if tls[slot].socketSending { reactor.backend.cancel(fd: fd, token: token(.tlsClientSend, id)) }
    }

    /// Frees the session and the buffers its link holds (no operation is in flight any more).
    func tlsFree(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let tls, downstreams[id].transport == .tls else { return }
        let slot = Int(id.index)
        for b in [tls[slot].input, tls[slot].fill, tls[slot].flight] where b >= 0 { release(UInt16(b), reactor) }
        if let t = tls[slot].handshakeTimer { reactor.timers.cancel(t) }
        tls.open(slot)
        tls.sessions.close(slot)
        downstreams[id].transport = .plain
    }
}
