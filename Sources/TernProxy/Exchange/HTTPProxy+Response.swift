// The response side of an exchange: head parsed and forwarded to the client with the body after it;
// the exchange ends when both sides are done.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    func receiveFromUpstream(_ u: UID, _ reactor: Reactor<Backend>) {
        if upstreams[u].transport == .h2stream { return h2uWants(u, reactor) }
        if upstreams[u].transport == .tls { return tlsWantsBytes(.upstream(u), reactor) }
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
            if upstreams[u].h2 != nil { return h2uReceived(u, c, reactor) }
        }
        guard let x = servedExchange(u) else {
            release(c.bufferID, reactor)
            closeUpstream(u, reactor)
            return
        }
        guard c.result > 0, let buffer = c.bufferID else {
            release(c.bufferID, reactor)
            upstreamEnded(x, u, c.result, reactor)
            return
        }
        exchanges[x].lastActivity = System.monotonicNanos()
        if exchanges[x].attempt.replayFrom != nil && exchanges[x].retry.on.isEmpty {
            // The upstream answered: the request will not be sent again (with a retry policy, not before its
            // response head was read: a retry may follow on it).
            noReplay(x, reactor)
        }
        switch exchanges[x].response.state {
        case .head:
            do {
                let (a, b) = try bytes.take(buffer: buffer, count: Int(c.result), into: &exchanges[x].response.held)
                release(a, reactor)
                release(b, reactor)
            } catch {
                release(buffer, reactor)
                Log.debug("upstream response head too large (UPE)")
                attemptFailed(x, .malformedResponse, responseBytesSeen: true, reactor)
                return
            }
            responseHead(x, reactor)
        case .body, .tunnel:
            precondition(!exchanges[x].response.held.holdsStorage, "response bytes held while receiving more")
            exchanges[x].response.held = Held(buffer: Int32(buffer), assembly: -1, start: 0, end: Int(c.result))
            if exchanges[x].response.state == .body { responseBody(x, reactor) } else { tunnelToClient(x, reactor) }
        case .idle, .sending, .splicing, .done, .reply:
            // Bytes after the end of the response: this connection cannot be reused.
            release(buffer, reactor)
            Log.debug("upstream sent bytes beyond its response")
            detachUpstream(x, reusable: false, reactor)
        }
    }

    /// The upstream closed (0) or failed (< 0).
    func upstreamEnded(_ x: XID, _ u: UID, _ result: Int32, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        let s = downstreams[id]
        switch exchanges[x].response.state {
        case .tunnel:
            if result == 0 {
                exchanges[x].upstreamEOF = true
                if s.transport == .tls {
                    // close_notify first, after any records still in flight.
                    tlsShutdownWrite(.client(id), reactor)
                } else {
                    _ = System.shutdown(s.fd, write: true, read: false)
                }
                if s.clientEOF { closeDownstream(id, reset: false, reactor) }
            } else {
                closeDownstream(id, reset: true, reactor)
            }
        case .body where exchanges[x].response.body == .untilClose && result == 0:
            upstreams[u].reused = false
            responseDone(x, reusable: false, reactor)
        default:
            Log.debug("upstream \(result == 0 ? "closed" : "failed: \(Errno.name(-result))") before the response ended")
            upstreamLost(x, u, reactor)
        }
    }

    func responseHead(_ x: XID, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        let p = Int(exchanges[x].response.parser)
        let progress: HTTP1Parser.Progress
        do {
            progress = try bytes.parse(&responseParsers.parsers[p], exchanges[x].response.held)
        } catch {
            Log.debug("malformed upstream response (UPE): \(error)")
            attemptFailed(x, .malformedResponse, responseBytesSeen: true, reactor)
            return
        }
        guard progress == .complete, exchanges[x].attempt.connection != nil else {
            if let u = exchanges[x].attempt.connection { receiveFromUpstream(u, reactor) }
            return
        }
        if exchanges[x].attempt.replayFrom != nil
            || exchanges[x].attempt.outstanding.map({ balancers.detectsOutliers($0) }) == true {
            // The retry policy's turn (Router/HTTPProxy+Retry.swift); past a final head the request is not sent
            // again. (Decided before this function copies the head: a copy alive during the retry would make the
            // parser's reset copy its field table.)
            switch responseRetry(x, parser: p) {
            case .retry(let from): return retry(x, from: from, reactor)
            case .final:
                // (A 1xx goes to the client: after it, as in Envoy, the request is not tried again.) Its retry, if
                // it was one, no longer counts against the cluster's retries (Envoy's retry state ends here).
                if exchanges[x].charges.contains(.retry) { discharge(x, .retry) }
                noReplay(x, reactor)
            }
        }
        let head = responseParsers.parsers[p].head
        // Fields read one by one: a copy of the whole Session would retain every reference it holds.
        let held = exchanges[x].response.held, http10 = exchanges[x].http10
        let entry = Int(id.index)
        exchanges[x].interimLength = 0
        exchanges[x].tunnelNext = false
        if !head.isInterim || head.status == 101 {
            exchanges[x].report.status = head.status
            exchanges[x].report.upstreamHead = System.monotonicNanos()
            if exchanges[x].report.grpc, let g = bytes.decimalField(head, held: held, bytes.names.grpcStatus).value {
                // A trailers-only gRPC response: its status is in its head.
                exchanges[x].report.grpcStatus = Int16(clamping: g)
                bytes.textField(head, held: held, bytes.names.grpcMessage, into: &exchanges[x].report.grpcMessage)
            }
        }
        if head.isInterim && head.status != 101 {
            exchanges[x].interimLength = head.length
        } else if head.status == 101 || (exchanges[x].method == .connect && head.status >= 200 && head.status < 300) {
            guard exchanges[x].upgrade else {
                Log.debug("upstream switched protocols without being asked (UPE)")
                attemptFailed(x, .malformedResponse, responseBytesSeen: true, reactor)
                return
            }
            exchanges[x].tunnelNext = true
        }
        var persistence = HTTP1Forwarding.Persistence.keepAlive
        exchanges[x].dechunk = false
        if !head.isInterim || head.status == 101 {
            var keep = downstreams[id].keepAlive && !draining && head.framing != .untilClose
            if exchanges[x].tunnelNext { keep = false }
            if http10 && head.framing == .chunked { keep = false }
            downstreams[id].keepAlive = keep
            persistence = exchanges[x].tunnelNext ? .tunnel : keep ? (http10 ? .keepAliveHTTP10 : .keepAlive) : .close
            switch head.framing {
            case .none: exchanges[x].response.body = .none
            case .contentLength(let n): exchanges[x].response.body = n == 0 ? .none : .length(n)
            case .chunked:
                exchanges[x].response.body = .chunked
                exchanges[x].response.decoder.reset()
                exchanges[x].response.inTrailers = false
                exchanges[x].dechunk = http10
                exchanges[x].keepTrailers = keepsTrailers(x)
            case .untilClose: exchanges[x].response.body = .untilClose
            }
            exchanges[x].attempt.reusable = head.keepAlive && head.framing != .untilClose && !exchanges[x].tunnelNext
        }
        toClient.reset(entry)
        dropHeld(&exchanges[x].response.extras, reactor)
        var fields = 0..<0
        let edited = exchanges[x].response.edited && !head.isInterim
        // An allowed CORS origin's fields go on the final head and on a 101 (Envoy's filter sees a 101 as the final
        // head of an upgrade; it does not touch the other 1xx heads).
        let cors = head.isInterim && head.status != 101 ? Held() : exchanges[x].cors
        if edited || cors.holdsStorage {
            guard let extras = bytes.compose({ w in
                if edited { writeRouteFields(x, response: true, &w) }
                if cors.holdsStorage { bytes.copy(0..<cors.count, from: cors, into: &w) }
            }) else {
                fail(x, .badGateway, reactor)
                return
            }
            exchanges[x].response.extras = extras
            fields = extras.start..<extras.end
        }
        let routeFields = !fields.isEmpty
        let drops = head.isInterim ? nil : routeDrops(x, response: true)
        let dechunk = exchanges[x].dechunk
        guard bytes.appendHead(toClient, entry, held, slot: Int(id.index), { head, span, emit in
            HTTP1Forwarding.response(head, span, persistence: persistence, routeFields: routeFields, dechunk: dechunk,
                                     drop: { name in drops.map { bytes.drops(held, name: name, $0.0, $0.1) } ?? false }, emit: emit)
        }, head: head, extras: exchanges[x].response.extras, fields: fields) else {
            fail(x, .badGateway, reactor)
            return
        }
        exchanges[x].report.responseHeads &+= UInt64(toClient.remaining(entry))
        let bodyStart = held.start + head.length
        var bodyEnd = bodyStart
        if exchanges[x].dechunk {
            guard let end = appendDechunked(x, from: bodyStart, reactor) else { return }
            bodyEnd = end
        } else {
            var forwardEnd = bodyStart, closesTrailers = false
            if exchanges[x].interimLength == 0 && !exchanges[x].tunnelNext {
                guard let extent = takeResponseBody(x, from: bodyStart, reactor) else { return }
                bodyEnd = extent.end
                forwardEnd = extent.forwardEnd
                closesTrailers = extent.closesTrailers
            }
            _ = bytes.append(toClient, entry, held, bodyStart..<forwardEnd)
            if closesTrailers { _ = bytes.append(toClient, entry, "\r\n") }
        }
        exchanges[x].response.sentTo = bodyEnd
        exchanges[x].responseStarted = exchanges[x].responseStarted || exchanges[x].interimLength == 0
        exchanges[x].response.state = .sending
        sendToClient(id, reactor)
    }

    /// The request will not be sent again: what is held of it only for a replay is let go.
    func noReplay(_ x: XID, _ reactor: Reactor<Backend>) {
        exchanges[x].attempt.replayFrom = nil
        if exchanges[x].request.held.isEmpty && exchanges[x].request.state != .sending { dropHeld(&exchanges[x].request.held, reactor) }
    }

    /// Readies the session's response parser for the response to its current request (in place: a copy
    /// would share the field table, and resetting it would then allocate).
    func prepareResponseParser(_ x: XID) {
        let p = Int(exchanges[x].response.parser)
        let method = exchanges[x].method
        responseParsers.parsers[p].reset()
        responseParsers.parsers[p].respondingToHEAD = method == .head
        responseParsers.parsers[p].respondingToCONNECT = method == .connect
    }

    /// Whether the response's trailer section goes on to the client: from an HTTP/2 upstream to an HTTP/2 client
    /// (an HTTP/1.1 upstream's trailers are dropped, as Envoy's HTTP/1 codec drops them by default).
    func keepsTrailers(_ x: XID) -> Bool {
        guard downstreams[exchanges[x].downstream].transport == .h2stream, let u = exchanges[x].attempt.connection else {
            return false
        }
        return upstreams[u].transport == .h2stream
    }

    func takeResponseBody(_ x: XID, from: Int, _ reactor: Reactor<Backend>) -> BodyExtent? {
        var body = exchanges[x].response.body
        var decoder = exchanges[x].response.decoder
        var inTrailers = exchanges[x].response.inTrailers
        defer {
            // A failure may have closed and freed the session.
            if exchanges.isCurrent(x) {
                exchanges[x].response.body = body
                exchanges[x].response.decoder = decoder
                exchanges[x].response.inTrailers = inTrailers
            }
        }
        do {
            return try bodyExtent(&body, &decoder, &inTrailers, exchanges[x].response.held, from: from,
                                  keepTrailers: exchanges[x].keepTrailers)
        } catch {
            Log.debug("malformed upstream chunked body (UPE): \(error)")
            attemptFailed(x, .malformedResponse, responseBytesSeen: true, reactor)
            return nil
        }
    }

    /// Decodes chunked framing from held bytes `from` on and appends only the chunks' data to the client's
    /// send, as long as the send has segments left (the rest stays held for the next round). Returns where
    /// decoding stopped; nil when the framing is broken (the exchange has then been failed).
    func appendDechunked(_ x: XID, from: Int, _ reactor: Reactor<Backend>) -> Int? {
        let id = exchanges[x].downstream
        let entry = Int(id.index)
        let held = exchanges[x].response.held
        var at = from
        do {
            while at < held.end && exchanges[x].response.body == .chunked && toClient.segments(entry) < toClient.maxSegments - 1 {
                let out = try bytes.decode(&exchanges[x].response.decoder, held, from: at)
                switch out.event {
                case .data(let r): _ = bytes.append(toClient, entry, held, (at + r.lowerBound)..<(at + r.upperBound))
                case .end: exchanges[x].response.body = .none
                case .needMore, .lastChunk: break  // a de-chunked body carries no trailers
                }
                at += out.consumed
                if out.event == .needMore { break }
            }
        } catch {
            Log.debug("malformed upstream chunked body (UPE): \(error)")
            attemptFailed(x, .malformedResponse, responseBytesSeen: true, reactor)
            return nil
        }
        return at
    }

    func responseBody(_ x: XID, _ reactor: Reactor<Backend>, from: Int = 0) {
        let id = exchanges[x].downstream
        let entry = Int(id.index)
        if exchanges[x].dechunk {
            toClient.reset(entry)
            guard let end = appendDechunked(x, from: from, reactor) else { return }
            exchanges[x].response.sentTo = end
            exchanges[x].response.state = .sending
            sendToClient(id, reactor)
            return
        }
        guard let extent = takeResponseBody(x, from: 0, reactor) else { return }
        toClient.reset(entry)
        _ = bytes.append(toClient, entry, exchanges[x].response.held, 0..<extent.forwardEnd)
        if extent.closesTrailers { _ = bytes.append(toClient, entry, "\r\n") }
        exchanges[x].response.sentTo = extent.end
        exchanges[x].response.state = .sending
        sendToClient(id, reactor)
    }

    func clientSent(_ id: DID, _ result: Int32, _ reactor: Reactor<Backend>, nothing: Bool = false) {
        if downstreams[id].h2 != nil { return h2Sent(id, result, reactor) }
        let x = downstreams[id].exchange
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
            exchanges[x].lastActivity = System.monotonicNanos()
            exchanges[x].report.responseWire &+= UInt64(result)
        }
        if toClient.remaining(entry) > 0 {
            sendToClient(id, reactor)
            return
        }
        if exchanges[x].response.state == .reply {
            exchanges[x].reply = nil
            dropHeld(&exchanges[x].response.held, reactor)
            if downstreams[id].keepAlive {
                exchangeDone(x, reactor)
            } else {
                dropHeld(&exchanges[x].cors, reactor)
                recordExchange(x)
                requestFinished(x)
                lingerClose(id, reactor)
            }
            return
        }
        if let reply = exchanges[x].pendingReply {
            exchanges[x].pendingReply = nil
            if exchanges[x].report.grpc { sendGRPCReply(x, reply, reactor) } else { sendReply(x, reply, reactor) }
            return
        }
        exchanges[x].response.held.start = exchanges[x].response.sentTo
        dropHeld(&exchanges[x].response.extras, reactor)
        if exchanges[x].response.state == .tunnel {
            dropHeld(&exchanges[x].response.held, reactor)
            if !exchanges[x].upstreamEOF, let u = exchanges[x].attempt.connection { receiveFromUpstream(u, reactor) }
            return
        }
        if exchanges[x].interimLength > 0 {
            // An interim response went out: the final one follows.
            exchanges[x].interimLength = 0
            prepareResponseParser(x)
            exchanges[x].response.state = .head
            if exchanges[x].response.held.isEmpty {
                dropHeld(&exchanges[x].response.held, reactor)
                if let u = exchanges[x].attempt.connection { receiveFromUpstream(u, reactor) }
            } else {
                responseHead(x, reactor)
            }
            return
        }
        if exchanges[x].tunnelNext {
            startTunnel(x, reactor)
            return
        }
        if exchanges[x].response.body == .none {
            responseDone(x, reusable: exchanges[x].attempt.reusable, reactor)
        } else if case .length(let left) = exchanges[x].response.body, left >= Self.spliceThreshold,
                  exchanges[x].response.held.isEmpty, let u = exchanges[x].attempt.connection,
                  spliceAllowed(id, u), let pipe = reactor.pipes.acquire()
        {
            dropHeld(&exchanges[x].response.held, reactor)
            exchanges[x].response.pipe = pipe
            exchanges[x].response.state = .splicing
            Log.debug("response body spliced: \(left) bytes")
            responseSpliceIn(x, u, reactor)
        } else if exchanges[x].dechunk && !exchanges[x].response.held.isEmpty {
            // Decoding stopped at the send's segment limit: go on with the bytes still held.
            exchanges[x].response.state = .body
            responseBody(x, reactor, from: exchanges[x].response.held.start)
        } else {
            exchanges[x].response.state = .body
            dropHeld(&exchanges[x].response.held, reactor)
            if let u = exchanges[x].attempt.connection { receiveFromUpstream(u, reactor) }
        }
    }

    /// The whole response went to the client.
    func responseDone(_ x: XID, reusable: Bool, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        exchanges[x].response.state = .done
        // Bytes after the response mean the upstream cannot be trusted with another request.
        let clean = reusable && exchanges[x].response.held.isEmpty
        dropHeld(&exchanges[x].response.held, reactor)
        if exchanges[x].request.state != .done {
            // The upstream answered before the request ended (an early 413, say): stop forwarding it; the
            // client connection closes since the rest of its request is unread.
            downstreams[id].keepAlive = false
            detachUpstream(x, reusable: false, reactor)
            exchangeDone(x, reactor)
            return
        }
        detachUpstream(x, reusable: clean, reactor)
        exchangeDone(x, reactor)
    }

    /// A new exchange's report starts empty.
    func beginExchange(_ x: XID) {
        exchanges[x].requestIDMade = false
        exchanges[x].report.recorded = false
        exchanges[x].report.transportFailure = ""
        exchanges[x].report.status = 0
        exchanges[x].report.flags = []
        exchanges[x].report.service = 0
        exchanges[x].report.requestWire = 0
        exchanges[x].report.responseWire = 0
        exchanges[x].report.responseHeads = 0
        exchanges[x].report.upstreamStart = 0
        exchanges[x].report.upstreamHead = 0
        exchanges[x].report.requestHeadLength = 0
        exchanges[x].report.answeredBy = nil
        exchanges[x].report.failedAfterResponseStarted = false
        exchanges[x].report.grpc = false
        exchanges[x].report.grpcStatus = -1
        if !exchanges[x].report.grpcMessage.isEmpty { exchanges[x].report.grpcMessage = ShortText() }
        if !exchanges[x].report.routeName.isEmpty { exchanges[x].report.routeName = "" }
        exchanges[x].report.trace = TraceContext()
        if capture != nil {
            // Wall-clock start from the monotonic one and the offset the loop refreshes (no clock call here).
            exchanges[x].report.startWall = (exchanges[x].headStart &+ wallOffsetNanos) / 1000
        }
    }

    /// Both sides of the exchange are finished: wait for the next request, or close.
    func exchangeDone(_ x: XID, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        recordExchange(x)
        requestFinished(x)
        dropHeld(&exchanges[x].cors, reactor)
        exchanges[x].active = false
        exchanges[x].attempt.replayFrom = nil
        exchanges[x].attempt.movedNotSent = false
        // While draining, a connection whose response still promised keep-alive waits for one more request,
        // answered with "connection: close" (closing now could lose a request already sent).
        if !downstreams[id].keepAlive {
            lingerClose(id, reactor)
            return
        }
        exchanges[x].request.state = .head
        exchanges[x].response.state = .idle
        exchanges[x].responseStarted = false
        if exchanges[x].request.held.isEmpty {
            // The parsers go back to their pools (taken, and reset, when the next head arrives).
            dropHeld(&exchanges[x].request.held, reactor)
            awaitRequest(id, reactor)
        } else {
            // A pipelined request is already here: the same request parser reads it.
            requestParsers.parsers[Int(exchanges[x].request.parser)].reset()
            exchanges[x].headStart = System.monotonicNanos()
            requestHead(x, reactor)
        }
    }
}
