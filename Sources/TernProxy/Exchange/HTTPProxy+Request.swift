// The request side of an exchange: head parsed, routed, forwarded upstream with the body after it.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    func requestHead(_ id: DID, _ reactor: Reactor<Backend>) {
        let p = Int(downstreams[id].exchange.request.parser)
        let progress: HTTP1Parser.Progress
        do {
            progress = try bytes.parse(&requestParsers.parsers[p], downstreams[id].exchange.request.held)
        } catch {
            Log.debug("refused request: \(error)")
            fail(id, LocalReply.refusing(error), reactor)
            return
        }
        guard progress == .complete else {
            if downstreams[id].headerTimer == nil {
                let due = saturatingAdd(downstreams[id].headStart, settings.requestHeaderTimeout.nanoseconds)
                downstreams[id].headerTimer = reactor.timers.schedule(token(.headerTimer, id), at: due)
            }
            receiveFromClient(id, reactor)
            return
        }
        let head = requestParsers.parsers[p].head
        beginExchange(id)
        downstreams[id].exchange.report.requestWire = UInt64(head.length)
        downstreams[id].exchange.report.requestHeadLength = UInt64(head.length)
        if let capture {
            let slot = Int(id.index)
            capture.beginRequest(slot)
            if reporting.spans != nil {
                let incoming = bytes.traceHeaders(head, held: downstreams[id].exchange.request.held, capture: capture, slot: slot)
                downstreams[id].exchange.report.trace = incoming.context.child(sampler: reporting.sampler, using: &random)
            }
            // The values are reported by the access log, and by the span of a sampled request only (1 % by
            // default): the other requests skip the copies.
            if reporting.accessLog != nil || downstreams[id].exchange.report.trace.sampled == true {
                bytes.capture(head, held: downstreams[id].exchange.request.held, into: capture, slot: slot)
            }
        }
        downstreams[id].exchange.active = true
        downstreams[id].keepAlive = head.keepAlive && !draining
        downstreams[id].exchange.http10 = head.version == .http10
        downstreams[id].exchange.method = head.method
        downstreams[id].exchange.upgrade = head.upgrade || head.method == .connect
        downstreams[id].exchange.responseStarted = false
        downstreams[id].exchange.lastActivity = System.monotonicNanos()
        if downstreams[id].exchange.streamTimer == nil {
            downstreams[id].exchange.streamTimer = reactor.timers.schedule(token(.streamTimer, id), at: deadline(after: settings.streamIdleTimeout))
        }
        switch head.framing {
        case .contentLength(let n): downstreams[id].exchange.request.body = n == 0 ? .none : .length(n)
        case .chunked:
            downstreams[id].exchange.request.body = .chunked
            downstreams[id].exchange.request.decoder.reset()
        case .none, .untilClose: downstreams[id].exchange.request.body = .none
        }
        prepareResponseParser(id)
        downstreams[id].exchange.request.state = .waiting
        guard let endpoint = route(id, head, reactor) else { return }
        downstreams[id].exchange.attempt.endpoint = endpoint
        pools.exchangeStarted(endpoint)
        if let metrics {
            downstreams[id].exchange.report.activeKey = pools.slots[endpoint].key
            metrics.endpoint(pools.slots[endpoint].key, EndpointWords.activeRequests, 1)
        }
        acquireUpstream(id, reactor)
    }

    func sendRequestHead(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let u = downstreams[id].exchange.attempt.connection else { return bug("request head without an upstream") }
        let p = Int(downstreams[id].exchange.request.parser)
        let head = requestParsers.parsers[p].head
        let entry = Int(u.index)
        let held = downstreams[id].exchange.request.held
        toUpstream.reset(entry)
        dropHeld(&downstreams[id].exchange.request.extras, reactor)
        var target = 0..<0
        var fields = 0..<0
        var trace = 0..<0
        let traced = reporting.spans != nil
        if downstreams[id].exchange.request.edits != nil || downstreams[id].exchange.targetRewrite != nil || traced {
            guard let extras = composeRequestExtras(id, head, &target, &fields, &trace) else {
                fail(id, .headersTooLarge, reactor)
                return
            }
            downstreams[id].exchange.request.extras = extras
        }
        let options = HTTP1Forwarding.RequestOptions(trustedClient: trustedClient, rewriteTarget: downstreams[id].exchange.targetRewrite != nil,
                                                     routeFields: !fields.isEmpty, replaceTrace: traced)
        guard bytes.appendHead(toUpstream, entry, held, slot: Int(id.index), { head, span, drop, emit in
            HTTP1Forwarding.request(head, span, options: options, drop: drop, emit: emit)
        }, head: head, edits: downstreams[id].exchange.request.edits, extras: downstreams[id].exchange.request.extras, target: target, fields: fields,
           trace: trace, capture: capture) else {
            fail(id, .headersTooLarge, reactor)
            return
        }
        let bodyStart = held.start + head.length
        guard let bodyEnd = takeRequestBody(id, from: bodyStart, reactor) else { return }
        _ = bytes.append(toUpstream, entry, held, bodyStart..<bodyEnd)
        if downstreams[id].exchange.report.upstreamStart == 0 {
            // Not again when a retry on a fresh connection sends the same bytes.
            downstreams[id].exchange.report.requestWire &+= UInt64(bodyEnd - bodyStart)
            downstreams[id].exchange.report.upstreamStart = System.monotonicNanos()
        }
        // The request can be sent again on a fresh connection if this reused one turns out to be closed, as
        // long as all of it is still held.
        downstreams[id].exchange.attempt.replayFrom = upstreams[u].reused && downstreams[id].exchange.request.body == .none && !downstreams[id].exchange.upgrade ? held.start : nil
        downstreams[id].exchange.request.sentTo = bodyEnd
        downstreams[id].exchange.request.state = .sending
        downstreams[id].exchange.response.state = .head
        sendToUpstream(id, u, reactor)
        receiveFromUpstream(u, reactor)
    }

    /// How far the request body extends in the held bytes from `from`, updating what remains of it; nil when
    /// the chunked framing is broken (the exchange has then been failed).
    func takeRequestBody(_ id: DID, from: Int, _ reactor: Reactor<Backend>) -> Int? {
        var body = downstreams[id].exchange.request.body
        var decoder = downstreams[id].exchange.request.decoder
        defer {
            // A failure may have closed and freed the session.
            if downstreams.isCurrent(id) {
                downstreams[id].exchange.request.body = body
                downstreams[id].exchange.request.decoder = decoder
            }
        }
        do {
            return try bodyExtent(&body, &decoder, downstreams[id].exchange.request.held, from: from)
        } catch {
            Log.debug("refused request body: \(error)")
            fail(id, .badRequest, reactor)
            return nil
        }
    }

    /// How far a body extends in the held bytes from `from`, updating what remains of it (a Content-Length
    /// count, or the chunked decoder's state); a body ending at close takes everything.
    func bodyExtent(_ body: inout MessageBody, _ decoder: inout ChunkedDecoder, _ held: Held, from: Int)
        throws(HTTPParseError) -> Int
    {
        switch body {
        case .none:
            return from
        case .untilClose:
            return held.end
        case .length(let left):
            let take = Int(min(left, UInt64(held.end - from)))
            body = left == UInt64(take) ? .none : .length(left - UInt64(take))
            return from + take
        case .chunked:
            var at = from
            while at < held.end {
                let out = try bytes.decode(&decoder, held, from: at)
                at += out.consumed
                if out.event == .end {
                    body = .none
                    break
                }
            }
            return at
        }
    }

    func sendToUpstream(_ id: DID, _ u: UID, _ reactor: Reactor<Backend>) {
        if toUpstream.remaining(Int(u.index)) == 0 {
            upstreamSent(u, 0, reactor, nothing: true)
            return
        }
        upstreams[u].sending = true
        upstreams[u].inflight += 1
        reactor.backend.send(fd: upstreams[u].fd, vectors: toUpstream, index: Int(u.index), token: token(.upstreamSend, u))
    }

    func upstreamSent(_ u: UID, _ result: Int32, _ reactor: Reactor<Backend>, nothing: Bool = false) {
        if upstreams[u].state == .closing {
            finishUpstreamIfQuiet(u, reactor)
            return
        }
        guard let id = upstreams[u].downstream, downstreams.isCurrent(id), downstreams[id].phase == .open else { return }
        if result < 0 {
            Log.debug("send to upstream failed: \(Errno.name(-result))")
            upstreamLost(id, u, reactor)
            return
        }
        let entry = Int(u.index)
        if !nothing {
            toUpstream.advance(entry, by: Int(result))
            downstreams[id].exchange.lastActivity = System.monotonicNanos()
        }
        if toUpstream.remaining(entry) > 0 {
            sendToUpstream(id, u, reactor)
            return
        }
        // What was sent is consumed.
        downstreams[id].exchange.request.held.start = downstreams[id].exchange.request.sentTo
        dropHeld(&downstreams[id].exchange.request.extras, reactor)
        if downstreams[id].exchange.request.state == .tunnel {
            dropHeld(&downstreams[id].exchange.request.held, reactor)
            if !downstreams[id].clientEOF { receiveFromClient(id, reactor) }
            return
        }
        if downstreams[id].exchange.request.held.isEmpty && downstreams[id].exchange.attempt.replayFrom == nil { dropHeld(&downstreams[id].exchange.request.held, reactor) }
        if downstreams[id].exchange.request.body == .none {
            requestDone(id, reactor)
        } else if case .length(let left) = downstreams[id].exchange.request.body, left >= Self.spliceThreshold,
                  downstreams[id].exchange.request.held.isEmpty, spliceAllowed(id, u), let pipe = reactor.pipes.acquire()
        {
            dropHeld(&downstreams[id].exchange.request.held, reactor)
            downstreams[id].exchange.request.pipe = pipe
            downstreams[id].exchange.request.state = .splicing
            Log.debug("request body spliced: \(left) bytes")
            requestSpliceIn(id, reactor)
        } else {
            downstreams[id].exchange.request.state = .body
            if downstreams[id].exchange.response.state != .done { receiveFromClient(id, reactor) }
        }
    }

    func requestBody(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let u = downstreams[id].exchange.attempt.connection else { return bug("request body without an upstream") }
        guard let end = takeRequestBody(id, from: 0, reactor) else { return }
        downstreams[id].exchange.report.requestWire &+= UInt64(end)
        let entry = Int(u.index)
        toUpstream.reset(entry)
        _ = bytes.append(toUpstream, entry, downstreams[id].exchange.request.held, 0..<end)
        downstreams[id].exchange.request.sentTo = end
        downstreams[id].exchange.request.state = .sending
        sendToUpstream(id, u, reactor)
    }

    /// The whole request went upstream: the upstream timeout starts.
    func requestDone(_ id: DID, _ reactor: Reactor<Backend>) {
        downstreams[id].exchange.request.state = .done
        if downstreams[id].exchange.response.state == .done {
            exchangeDone(id, reactor)
            return
        }
        downstreams[id].exchange.requestEnd = System.monotonicNanos()
        if settings.upstreamTimeout.nanoseconds > 0 && downstreams[id].exchange.upstreamTimer == nil {
            downstreams[id].exchange.upstreamTimer = reactor.timers.schedule(token(.upstreamTimer, id), at: deadline(after: settings.upstreamTimeout))
        }
    }
}
