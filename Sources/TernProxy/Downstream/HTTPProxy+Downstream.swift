// Client connections: accepted, read, written, lingering-closed and freed. The bytes they carry go to
// the exchange (HTTPProxy+Request.swift, HTTPProxy+Response.swift).
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    func accepted(_ fd: Int32, listener: Int, _ reactor: Reactor<Backend>) {
        let active = counters.active.wrappingAdd(1, ordering: .relaxed).newValue
        if relay.maxConnections > 0 && active > relay.maxConnections {
            counters.active.subtract(1, ordering: .relaxed)
            counters.rejectedOverLimit.add(1, ordering: .relaxed)
            System.close(fd)
            return
        }
        guard let id = downstreams.insert(DownstreamConnection(fd: fd, listener: listener)) else {
            counters.active.subtract(1, ordering: .relaxed)
            counters.rejectedOverLimit.add(1, ordering: .relaxed)
            System.close(fd)
            return
        }
        counters.accepted.add(1, ordering: .relaxed)
        System.setNoDelay(fd)
        reactor.backend.register(fd: fd)
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
        downstreams[id].exchange.request.parser = requestParsers.take()
        downstreams[id].exchange.response.parser = responseParsers.take()
        awaitRequest(id, reactor)
    }

    /// Waits for the next request head on a client connection (idle keep-alive until its first byte).
    func awaitRequest(_ id: DID, _ reactor: Reactor<Backend>) {
        downstreams[id].idleSince = System.monotonicNanos()
        if downstreams[id].idleTimer == nil {
            downstreams[id].idleTimer = reactor.timers.schedule(token(.idleTimer, id), at: deadline(after: relay.idleTimeout))
        }
        receiveFromClient(id, reactor)
    }

    func receiveFromClient(_ id: DID, _ reactor: Reactor<Backend>) {
        guard !downstreams[id].receiving else { return }
        downstreams[id].receiving = true
        downstreams[id].inflight += 1
        reactor.backend.receive(fd: downstreams[id].fd, token: token(.clientReceive, id), multishot: false)
    }

    func clientReceived(_ id: DID, _ c: Completion, _ reactor: Reactor<Backend>) {
        // Fields read one by one: a copy of the whole Session would retain every reference it holds.
        let phase = downstreams[id].phase
        if phase == .closing {
            release(c.bufferID, reactor)
            finishDownstreamIfQuiet(id, reactor)
            return
        }
        if phase == .lingering || downstreams[id].exchange.reply != nil {
            // Read and discard until the client closes (lingering close), or the linger timer fires.
            release(c.bufferID, reactor)
            if c.result > 0 { receiveFromClient(id, reactor) } else if phase == .lingering { closeDownstream(id, reset: false, reactor) }
            return
        }
        guard c.result > 0, let buffer = c.bufferID else {
            release(c.bufferID, reactor)
            clientEnded(id, c.result, reactor)
            return
        }
        downstreams[id].exchange.lastActivity = System.monotonicNanos()
        let request = downstreams[id].exchange.request.state
        switch request {
        case .head:
            let wasEmpty = downstreams[id].exchange.request.held.isEmpty, exchange = downstreams[id].exchange.active
            do {
                let (a, b) = try bytes.take(buffer: buffer, count: Int(c.result), into: &downstreams[id].exchange.request.held)
                release(a, reactor)
                release(b, reactor)
            } catch {
                release(buffer, reactor)
                fail(id, .headersTooLarge, reactor)
                return
            }
            if wasEmpty && !exchange { downstreams[id].headStart = downstreams[id].exchange.lastActivity }
            requestHead(id, reactor)
        case .body, .tunnel:
            precondition(!downstreams[id].exchange.request.held.holdsStorage, "request bytes held while receiving more")
            downstreams[id].exchange.request.held = Held(buffer: Int32(buffer), assembly: -1, start: 0, end: Int(c.result))
            if request == .body { requestBody(id, reactor) } else { tunnelToUpstream(id, reactor) }
        case .waiting, .sending, .splicing, .done:
            // Not receiving in these states; a stray completion is a bug.
            release(buffer, reactor)
            bug("client receive completed in request state \(request)")
        }
    }

    /// The client closed (0) or failed (< 0) its side.
    func clientEnded(_ id: DID, _ result: Int32, _ reactor: Reactor<Backend>) {
        let s = downstreams[id]
        if s.exchange.request.state == .tunnel && result == 0 {
            downstreams[id].clientEOF = true
            if let u = s.exchange.attempt.connection { _ = System.shutdown(upstreams[u].fd, write: true, read: false) }
            if s.exchange.upstreamEOF { closeDownstream(id, reset: false, reactor) }
            return
        }
        // Between requests this is the normal end of a keep-alive connection; inside one the client gave up:
        // the upstream side is abandoned with it.
        if s.exchange.active { Log.debug("client closed during an exchange (\(result < 0 ? Errno.name(-result) : "EOF"))") }
        closeDownstream(id, reset: result < 0 && s.exchange.request.state == .tunnel, reactor)
    }

    func sendToClient(_ id: DID, _ reactor: Reactor<Backend>) {
        if toClient.remaining(Int(id.index)) == 0 {
            clientSent(id, 0, reactor, nothing: true)
            return
        }
        downstreams[id].sending = true
        downstreams[id].inflight += 1
        reactor.backend.send(fd: downstreams[id].fd, vectors: toClient, index: Int(id.index), token: token(.clientSend, id))
    }

    /// Closes the write side and reads what the client still sends until it closes or the linger time passes.
    func lingerClose(_ id: DID, _ reactor: Reactor<Backend>) {
        downstreams[id].phase = .lingering
        cancel(&downstreams[id].idleTimer, reactor)
        cancel(&downstreams[id].headerTimer, reactor)
        dropHeld(&downstreams[id].exchange.request.held, reactor)
        dropHeld(&downstreams[id].exchange.response.held, reactor)
        _ = System.shutdown(downstreams[id].fd, write: true, read: false)
        downstreams[id].lingerTimer = reactor.timers.schedule(token(.lingerTimer, id), at: deadline(after: settings.lingerTimeout))
        receiveFromClient(id, reactor)
    }

    func closeDownstream(_ id: DID, reset: Bool, _ reactor: Reactor<Backend>) {
        if downstreams[id].phase == .closing { return }
        if !downstreams[id].exchange.report.recorded {
            // The exchange ends with the connection: the client went away (DC), or a failure after the
            // response started already set its flag.
            if downstreams[id].exchange.report.flags.isEmpty { downstreams[id].exchange.report.flags = .downstreamConnectionTermination }
            recordExchange(id)
        }
        if reset {
            counters.resetsPropagated.add(1, ordering: .relaxed)
            System.setLingerReset(downstreams[id].fd)
        }
        downstreams[id].phase = .closing
        detachUpstream(id, reusable: false, reactor)
        cancel(&downstreams[id].headerTimer, reactor)
        cancel(&downstreams[id].idleTimer, reactor)
        cancel(&downstreams[id].exchange.upstreamTimer, reactor)
        cancel(&downstreams[id].exchange.streamTimer, reactor)
        cancel(&downstreams[id].lingerTimer, reactor)
        let fd = downstreams[id].fd
        if downstreams[id].inflight > 0 {
            if downstreams[id].receiving { reactor.backend.cancel(fd: fd, token: token(.clientReceive, id)) }
            if downstreams[id].sending { reactor.backend.cancel(fd: fd, token: token(.clientSend, id)) }
            if downstreams[id].clientSplice != 0 {
                reactor.backend.cancel(fd: fd, token: Token(op: downstreams[id].clientSplice, slot: id.index, generation: id.generation))
            }
            _ = System.shutdown(fd, write: false, read: true)
        }
        finishDownstreamIfQuiet(id, reactor)
    }

    func finishDownstreamIfQuiet(_ id: DID, _ reactor: Reactor<Backend>) {
        guard downstreams[id].inflight == 0 else { return }
        requestFinished(id)
        dropHeld(&downstreams[id].exchange.request.extras, reactor)
        dropHeld(&downstreams[id].exchange.response.extras, reactor)
        // A pipe left mid-transfer may hold bytes, and a cancelled splice of the upstream socket may still
        // hold it: it is closed, never reused (the kernel keeps its own reference while an operation runs).
        for pipe in [downstreams[id].exchange.request.pipe, downstreams[id].exchange.response.pipe] {
            if let pipe { reactor.pipes.release(pipe, holdsData: true) }
        }
        dropHeld(&downstreams[id].exchange.request.held, reactor)
        dropHeld(&downstreams[id].exchange.response.held, reactor)
        requestParsers.give(downstreams[id].exchange.request.parser)
        responseParsers.give(downstreams[id].exchange.response.parser)
        reactor.backend.unregister(fd: downstreams[id].fd)
        System.close(downstreams[id].fd)
        downstreams.remove(id)
        counters.active.subtract(1, ordering: .relaxed)
    }
}
