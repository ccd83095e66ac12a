// The response side of an exchange: head parsed and forwarded to the client with the body after it;
// the exchange ends when both sides are done.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    func receiveFromUpstream(_ u: UID, _ reactor: Reactor<Backend>) {
        guard !upstreams[u].receiving else { return }
        upstreams[u].receiving = true
        upstreams[u].inflight += 1
        reactor.backend.receive(fd: upstreams[u].fd, token: token(.upstreamReceive, u), multishot: false)
    }

    func upstreamReceived(_ u: UID, _ c: Completion, _ reactor: Reactor<Backend>) {
        switch upstreams[u].state {
        case .closing:
            release(c.bufferID, reactor)
            finishUpstreamIfQuiet(u, reactor)
            return
        case .idle, .connecting:
            // An idle pooled connection was closed by the upstream (or sent bytes nobody asked for).
            release(c.bufferID, reactor)
            closeUpstream(u, reactor)
            return
        case .bound:
            break
        }
        guard let id = upstreams[u].downstream, downstreams.isCurrent(id), downstreams[id].phase == .open else {
            release(c.bufferID, reactor)
            closeUpstream(u, reactor)
            return
        }
        guard c.result > 0, let buffer = c.bufferID else {
            release(c.bufferID, reactor)
            upstreamEnded(id, u, c.result, reactor)
            return
        }
        downstreams[id].exchange.lastActivity = System.monotonicNanos()
        if downstreams[id].exchange.attempt.replayFrom != nil {
            // The upstream answered: the request will not be sent again.
            downstreams[id].exchange.attempt.replayFrom = nil
            if downstreams[id].exchange.request.held.isEmpty && downstreams[id].exchange.request.state != .sending { dropHeld(&downstreams[id].exchange.request.held, reactor) }
        }
        switch downstreams[id].exchange.response.state {
        case .head:
            do {
                let (a, b) = try bytes.take(buffer: buffer, count: Int(c.result), into: &downstreams[id].exchange.response.held)
                release(a, reactor)
                release(b, reactor)
            } catch {
                release(buffer, reactor)
                Log.debug("upstream response head too large (UPE)")
                attemptFailed(id, .malformedResponse, responseBytesSeen: true, reactor)
                return
            }
            responseHead(id, reactor)
        case .body, .tunnel:
            precondition(!downstreams[id].exchange.response.held.holdsStorage, "response bytes held while receiving more")
            downstreams[id].exchange.response.held = Held(buffer: Int32(buffer), assembly: -1, start: 0, end: Int(c.result))
            if downstreams[id].exchange.response.state == .body { responseBody(id, reactor) } else { tunnelToClient(id, reactor) }
        case .idle, .sending, .splicing, .done, .reply:
            // Bytes after the end of the response: this connection cannot be reused.
            release(buffer, reactor)
            Log.debug("upstream sent bytes beyond its response")
            detachUpstream(id, reusable: false, reactor)
        }
    }

    /// The upstream closed (0) or failed (< 0).
    func upstreamEnded(_ id: DID, _ u: UID, _ result: Int32, _ reactor: Reactor<Backend>) {
        let s = downstreams[id]
        switch s.exchange.response.state {
        case .tunnel:
            if result == 0 {
                downstreams[id].exchange.upstreamEOF = true
                _ = System.shutdown(s.fd, write: true, read: false)
                if s.clientEOF { closeDownstream(id, reset: false, reactor) }
            } else {
                closeDownstream(id, reset: true, reactor)
            }
        case .body where s.exchange.response.body == .untilClose && result == 0:
            upstreams[u].reused = false
            responseDone(id, reusable: false, reactor)
        default:
            Log.debug("upstream \(result == 0 ? "closed" : "failed: \(Errno.name(-result))") before the response ended")
            upstreamLost(id, u, reactor)
        }
    }

    func responseHead(_ id: DID, _ reactor: Reactor<Backend>) {
        let p = Int(downstreams[id].exchange.response.parser)
        let progress: HTTP1Parser.Progress
        do {
            progress = try bytes.parse(&responseParsers.parsers[p], downstreams[id].exchange.response.held)
        } catch {
            Log.debug("malformed upstream response (UPE): \(error)")
            attemptFailed(id, .malformedResponse, responseBytesSeen: true, reactor)
            return
        }
        guard progress == .complete, downstreams[id].exchange.attempt.connection != nil else {
            if let u = downstreams[id].exchange.attempt.connection { receiveFromUpstream(u, reactor) }
            return
        }
        let head = responseParsers.parsers[p].head
        // Fields read one by one: a copy of the whole Session would retain every reference it holds.
        let held = downstreams[id].exchange.response.held, http10 = downstreams[id].exchange.http10
        let entry = Int(id.index)
        downstreams[id].exchange.interimLength = 0
        downstreams[id].exchange.tunnelNext = false
        if !head.isInterim || head.status == 101 {
            downstreams[id].exchange.report.status = head.status
            downstreams[id].exchange.report.upstreamHead = System.monotonicNanos()
        }
        if head.isInterim && head.status != 101 {
            downstreams[id].exchange.interimLength = head.length
        } else if head.status == 101 || (downstreams[id].exchange.method == .connect && head.status >= 200 && head.status < 300) {
            guard downstreams[id].exchange.upgrade else {
                Log.debug("upstream switched protocols without being asked (UPE)")
                attemptFailed(id, .malformedResponse, responseBytesSeen: true, reactor)
                return
            }
            downstreams[id].exchange.tunnelNext = true
        }
        var persistence = HTTP1Forwarding.Persistence.keepAlive
        downstreams[id].exchange.dechunk = false
        if !head.isInterim || head.status == 101 {
            var keep = downstreams[id].keepAlive && !draining && head.framing != .untilClose
            if downstreams[id].exchange.tunnelNext { keep = false }
            if http10 && head.framing == .chunked { keep = false }
            downstreams[id].keepAlive = keep
            persistence = keep ? (http10 ? .keepAliveHTTP10 : .keepAlive) : .close
            switch head.framing {
            case .none: downstreams[id].exchange.response.body = .none
            case .contentLength(let n): downstreams[id].exchange.response.body = n == 0 ? .none : .length(n)
            case .chunked:
                downstreams[id].exchange.response.body = .chunked
                downstreams[id].exchange.response.decoder.reset()
                downstreams[id].exchange.dechunk = http10
            case .untilClose: downstreams[id].exchange.response.body = .untilClose
            }
            downstreams[id].exchange.attempt.reusable = head.keepAlive && head.framing != .untilClose && !downstreams[id].exchange.tunnelNext
        }
        toClient.reset(entry)
        dropHeld(&downstreams[id].exchange.response.extras, reactor)
        var fields = 0..<0
        if let edits = downstreams[id].exchange.response.edits, !head.isInterim {
            guard let extras = bytes.compose({ w in Self.writeFields(edits, &w) }) else {
                fail(id, .badGateway, reactor)
                return
            }
            downstreams[id].exchange.response.extras = extras
            fields = extras.start..<extras.end
        }
        let routeFields = !fields.isEmpty
        let edits = head.isInterim ? nil : downstreams[id].exchange.response.edits
        let dechunk = downstreams[id].exchange.dechunk
        guard bytes.appendHead(toClient, entry, held, slot: Int(id.index), { head, span, drop, emit in
            HTTP1Forwarding.response(head, span, persistence: persistence, routeFields: routeFields, dechunk: dechunk,
                                     drop: drop, emit: emit)
        }, head: head, edits: edits, extras: downstreams[id].exchange.response.extras, fields: fields) else {
            fail(id, .badGateway, reactor)
            return
        }
        downstreams[id].exchange.report.responseHeads &+= UInt64(toClient.remaining(entry))
        let bodyStart = held.start + head.length
        var bodyEnd = bodyStart
        if downstreams[id].exchange.dechunk {
            guard let end = appendDechunked(id, from: bodyStart, reactor) else { return }
            bodyEnd = end
        } else {
            if downstreams[id].exchange.interimLength == 0 && !downstreams[id].exchange.tunnelNext {
                guard let end = takeResponseBody(id, from: bodyStart, reactor) else { return }
                bodyEnd = end
            }
            _ = bytes.append(toClient, entry, held, bodyStart..<bodyEnd)
        }
        downstreams[id].exchange.response.sentTo = bodyEnd
        downstreams[id].exchange.responseStarted = downstreams[id].exchange.responseStarted || downstreams[id].exchange.interimLength == 0
        downstreams[id].exchange.response.state = .sending
        sendToClient(id, reactor)
    }

    /// Readies the session's response parser for the response to its current request (in place: a copy
    /// would share the field table, and resetting it would then allocate).
    func prepareResponseParser(_ id: DID) {
        let p = Int(downstreams[id].exchange.response.parser)
        let method = downstreams[id].exchange.method
        responseParsers.parsers[p].reset()
        responseParsers.parsers[p].respondingToHEAD = method == .head
        responseParsers.parsers[p].respondingToCONNECT = method == .connect
    }

    func takeResponseBody(_ id: DID, from: Int, _ reactor: Reactor<Backend>) -> Int? {
        var body = downstreams[id].exchange.response.body
        var decoder = downstreams[id].exchange.response.decoder
        defer {
            // A failure may have closed and freed the session.
            if downstreams.isCurrent(id) {
                downstreams[id].exchange.response.body = body
                downstreams[id].exchange.response.decoder = decoder
            }
        }
        do {
            return try bodyExtent(&body, &decoder, downstreams[id].exchange.response.held, from: from)
        } catch {
            Log.debug("malformed upstream chunked body (UPE): \(error)")
            attemptFailed(id, .malformedResponse, responseBytesSeen: true, reactor)
            return nil
        }
    }

    /// Decodes chunked framing from held bytes `from` on and appends only the chunks' data to the client's
    /// send, as long as the send has segments left (the rest stays held for the next round). Returns where
    /// decoding stopped; nil when the framing is broken (the exchange has then been failed).
    func appendDechunked(_ id: DID, from: Int, _ reactor: Reactor<Backend>) -> Int? {
        let entry = Int(id.index)
        let held = downstreams[id].exchange.response.held
        var at = from
        do {
            while at < held.end && downstreams[id].exchange.response.body == .chunked && toClient.segments(entry) < toClient.maxSegments - 1 {
                let out = try bytes.decode(&downstreams[id].exchange.response.decoder, held, from: at)
                switch out.event {
                case .data(let r): _ = bytes.append(toClient, entry, held, (at + r.lowerBound)..<(at + r.upperBound))
                case .end: downstreams[id].exchange.response.body = .none
                case .needMore: break
                }
                at += out.consumed
                if out.event == .needMore { break }
            }
        } catch {
            Log.debug("malformed upstream chunked body (UPE): \(error)")
            attemptFailed(id, .malformedResponse, responseBytesSeen: true, reactor)
            return nil
        }
        return at
    }

    func responseBody(_ id: DID, _ reactor: Reactor<Backend>, from: Int = 0) {
        let entry = Int(id.index)
        if downstreams[id].exchange.dechunk {
            toClient.reset(entry)
            guard let end = appendDechunked(id, from: from, reactor) else { return }
            downstreams[id].exchange.response.sentTo = end
            downstreams[id].exchange.response.state = .sending
            sendToClient(id, reactor)
            return
        }
        guard let end = takeResponseBody(id, from: 0, reactor) else { return }
        toClient.reset(entry)
        _ = bytes.append(toClient, entry, downstreams[id].exchange.response.held, 0..<end)
        downstreams[id].exchange.response.sentTo = end
        downstreams[id].exchange.response.state = .sending
        sendToClient(id, reactor)
    }

    func clientSent(_ id: DID, _ result: Int32, _ reactor: Reactor<Backend>, nothing: Bool = false) {
        if downstreams[id].phase == .closing {
            finishDownstreamIfQuiet(id, reactor)
            return
        }
        if downstreams[id].phase == .lingering { return }
        if result < 0 {
            Log.debug("send to client failed: \(Errno.name(-result))")
            closeDownstream(id, reset: true, reactor)
            return
        }
        let entry = Int(id.index)
        if !nothing {
            toClient.advance(entry, by: Int(result))
            downstreams[id].exchange.lastActivity = System.monotonicNanos()
            downstreams[id].exchange.report.responseWire &+= UInt64(result)
        }
        if toClient.remaining(entry) > 0 {
            sendToClient(id, reactor)
            return
        }
        if downstreams[id].exchange.response.state == .reply {
            downstreams[id].exchange.reply = nil
            dropHeld(&downstreams[id].exchange.response.held, reactor)
            if downstreams[id].keepAlive {
                exchangeDone(id, reactor)
            } else {
                recordExchange(id)
                requestFinished(id)
                lingerClose(id, reactor)
            }
            return
        }
        if let reply = downstreams[id].exchange.pendingReply {
            downstreams[id].exchange.pendingReply = nil
            sendReply(id, reply, reactor)
            return
        }
        downstreams[id].exchange.response.held.start = downstreams[id].exchange.response.sentTo
        dropHeld(&downstreams[id].exchange.response.extras, reactor)
        if downstreams[id].exchange.response.state == .tunnel {
            dropHeld(&downstreams[id].exchange.response.held, reactor)
            if !downstreams[id].exchange.upstreamEOF, let u = downstreams[id].exchange.attempt.connection { receiveFromUpstream(u, reactor) }
            return
        }
        if downstreams[id].exchange.interimLength > 0 {
            // An interim response went out: the final one follows.
            downstreams[id].exchange.interimLength = 0
            prepareResponseParser(id)
            downstreams[id].exchange.response.state = .head
            if downstreams[id].exchange.response.held.isEmpty {
                dropHeld(&downstreams[id].exchange.response.held, reactor)
                if let u = downstreams[id].exchange.attempt.connection { receiveFromUpstream(u, reactor) }
            } else {
                responseHead(id, reactor)
            }
            return
        }
        if downstreams[id].exchange.tunnelNext {
            startTunnel(id, reactor)
            return
        }
        if downstreams[id].exchange.response.body == .none {
            responseDone(id, reusable: downstreams[id].exchange.attempt.reusable, reactor)
        } else if case .length(let left) = downstreams[id].exchange.response.body, left >= Self.spliceThreshold,
                  downstreams[id].exchange.response.held.isEmpty, let u = downstreams[id].exchange.attempt.connection,
                  spliceAllowed(id, u), let pipe = reactor.pipes.acquire()
        {
            dropHeld(&downstreams[id].exchange.response.held, reactor)
            downstreams[id].exchange.response.pipe = pipe
            downstreams[id].exchange.response.state = .splicing
            Log.debug("response body spliced: \(left) bytes")
            responseSpliceIn(id, u, reactor)
        } else if downstreams[id].exchange.dechunk && !downstreams[id].exchange.response.held.isEmpty {
            // Decoding stopped at the send's segment limit: go on with the bytes still held.
            downstreams[id].exchange.response.state = .body
            responseBody(id, reactor, from: downstreams[id].exchange.response.held.start)
        } else {
            downstreams[id].exchange.response.state = .body
            dropHeld(&downstreams[id].exchange.response.held, reactor)
            if let u = downstreams[id].exchange.attempt.connection { receiveFromUpstream(u, reactor) }
        }
    }

    /// The whole response went to the client.
    func responseDone(_ id: DID, reusable: Bool, _ reactor: Reactor<Backend>) {
        downstreams[id].exchange.response.state = .done
        // Bytes after the response mean the upstream cannot be trusted with another request.
        let clean = reusable && downstreams[id].exchange.response.held.isEmpty
        dropHeld(&downstreams[id].exchange.response.held, reactor)
        if downstreams[id].exchange.request.state != .done {
            // The upstream answered before the request ended (an early 413, say): stop forwarding it; the
            // client connection closes since the rest of its request is unread.
            downstreams[id].keepAlive = false
            detachUpstream(id, reusable: false, reactor)
            exchangeDone(id, reactor)
            return
        }
        detachUpstream(id, reusable: clean, reactor)
        exchangeDone(id, reactor)
    }

    /// A new exchange's report starts empty.
    func beginExchange(_ id: DID) {
        downstreams[id].exchange.report.recorded = false
        downstreams[id].exchange.report.status = 0
        downstreams[id].exchange.report.flags = []
        downstreams[id].exchange.report.service = 0
        downstreams[id].exchange.report.requestWire = 0
        downstreams[id].exchange.report.responseWire = 0
        downstreams[id].exchange.report.responseHeads = 0
        downstreams[id].exchange.report.upstreamStart = 0
        downstreams[id].exchange.report.upstreamHead = 0
        downstreams[id].exchange.report.requestHeadLength = 0
        downstreams[id].exchange.report.answeredBy = nil
        if !downstreams[id].exchange.report.routeName.isEmpty { downstreams[id].exchange.report.routeName = "" }
        downstreams[id].exchange.report.trace = TraceContext()
        if capture != nil {
            // Wall-clock start from the monotonic one and the offset the loop refreshes (no clock call here).
            downstreams[id].exchange.report.startWall = (downstreams[id].headStart &+ wallOffsetNanos) / 1000
        }
    }

    /// Both sides of the exchange are finished: wait for the next request, or close.
    func exchangeDone(_ id: DID, _ reactor: Reactor<Backend>) {
        recordExchange(id)
        requestFinished(id)
        downstreams[id].exchange.active = false
        downstreams[id].exchange.attempt.replayFrom = nil
        // While draining, a connection whose response still promised keep-alive waits for one more request,
        // answered with "connection: close" (closing now could lose a request already sent).
        if !downstreams[id].keepAlive {
            lingerClose(id, reactor)
            return
        }
        requestParsers.parsers[Int(downstreams[id].exchange.request.parser)].reset()
        downstreams[id].exchange.request.state = .head
        downstreams[id].exchange.response.state = .idle
        downstreams[id].exchange.responseStarted = false
        if downstreams[id].exchange.request.held.isEmpty {
            dropHeld(&downstreams[id].exchange.request.held, reactor)
            awaitRequest(id, reactor)
        } else {
            // A pipelined request is already here.
            downstreams[id].headStart = System.monotonicNanos()
            requestHead(id, reactor)
        }
    }
}
