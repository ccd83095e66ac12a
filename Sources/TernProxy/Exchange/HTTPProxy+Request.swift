// The request side of an exchange: head parsed, routed, forwarded upstream with the body after it.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    func requestHead(_ x: XID, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        if exchanges[x].request.parser < 0 { exchanges[x].request.parser = requestParsers.take() }
        let p = Int(exchanges[x].request.parser)
        let progress: HTTP1Parser.Progress
        do {
            progress = try bytes.parse(&requestParsers.parsers[p], exchanges[x].request.held)
        } catch {
            Log.debug("refused request: \(error)")
            fail(x, LocalReply.refusing(error), reactor)
            return
        }
        guard progress == .complete else {
            // The head waits for more bytes without holding a shared receive buffer (HTTPBytes.park).
            do {
                release(try bytes.park(&exchanges[x].request.held), reactor)
            } catch {
                headRefusedOverBudget()
                fail(x, .overloaded, reactor)
                return
            }
            if downstreams[id].headerTimer == nil {
                let due = saturatingAdd(exchanges[x].headStart, settings.requestHeaderTimeout.nanoseconds)
                downstreams[id].headerTimer = reactor.timers.schedule(token(.headerTimer, id), at: due)
            }
            receiveFromClient(id, reactor)
            return
        }
        // The path as routes, policies and the upstream see it (Istio's path normalisation); "%00" is refused.
        if bytes.normalizePath(&requestParsers.parsers[p], held: exchanges[x].request.held, mode: settings.pathNormalization,
                               scratch: &pathScratch) == .refused {
            Log.debug("refused request: %00 in its path")
            fail(x, .badRequest, reactor)
            return
        }
        let head = requestParsers.parsers[p].head
        beginExchange(x)
        exchanges[x].report.requestWire = UInt64(head.length)
        exchanges[x].report.requestHeadLength = UInt64(head.length)
        if let capture {
            let slot = Int(x.index)
            capture.beginRequest(slot)
            if reporting.spans != nil {
                let incoming = bytes.traceHeaders(head, held: exchanges[x].request.held, capture: capture, slot: slot)
                exchanges[x].report.trace = incoming.context.child(sampler: reporting.sampler, using: &random)
            }
            // The values are reported by the access log, and by the span of a sampled request only (1 % by
            // default): the other requests skip the copies.
            if reporting.accessLog != nil || exchanges[x].report.trace.sampled == true {
                bytes.capture(head, held: exchanges[x].request.held, into: capture, slot: slot)
            }
        }
        exchanges[x].active = true
        downstreams[id].keepAlive = head.keepAlive && !draining && downstreams[id].transport != .h2stream
        exchanges[x].http10 = head.version == .http10
        exchanges[x].method = head.method
        exchanges[x].upgrade = head.upgrade || head.method == .connect
        // (gRPC is always a POST: other requests skip the Content-Type lookup.)
        exchanges[x].report.grpc = head.method == .post && bytes.isGRPC(head, held: exchanges[x].request.held)
        exchanges[x].responseStarted = false
        exchanges[x].lastActivity = System.monotonicNanos()
        armExchangeTimer(x, at: saturatingAdd(exchanges[x].lastActivity, settings.streamIdleTimeout.nanoseconds), reactor)
        switch head.framing {
        case .contentLength(let n): exchanges[x].request.body = n == 0 ? .none : .length(n)
        case .chunked:
            exchanges[x].request.body = .chunked
            exchanges[x].request.decoder.reset()
            exchanges[x].request.inTrailers = false
        case .none, .untilClose: exchanges[x].request.body = .none
        }
        if exchanges[x].response.parser < 0 { exchanges[x].response.parser = responseParsers.take() }
        prepareResponseParser(x)
        exchanges[x].request.state = .waiting
        if head.version == .http10 && (!settings.acceptHTTP10 || head.host == nil) {
            _ = routeFailed(x, settings.acceptHTTP10 ? .missingHost : .upgradeRequired, reactor)
            return
        }
        exchanges[x].routeSetsHost = false
        exchanges[x].timeout = settings.upstreamTimeout.nanoseconds
        exchanges[x].requestEnd = 0
        exchanges[x].delayUntil = 0
        exchanges[x].retry = .none
        exchanges[x].retriesLeft = 0
        exchanges[x].tries = 1
        exchanges[x].cluster = -1
        exchanges[x].tried = 0
        exchanges[x].tryEnd = 0
        exchanges[x].retryAt = 0
        exchanges[x].replayBody = exchanges[x].request.body
        exchanges[x].gathering = false
        if !exchanges[x].fault.isEmpty { exchanges[x].fault = FaultFacts() }
        guard authorized(x, head, reactor), let endpoint = route(x, head, reactor) else { return }
        exchanges[x].attempt.endpoint = endpoint
        pools.exchangeStarted(endpoint)
        if let metrics {
            exchanges[x].report.activeKey = pools.slots[endpoint].key
            metrics.endpoint(pools.slots[endpoint].key, EndpointWords.activeRequests, 1)
        }
        if gatherForRetries(x, head, reactor) { return }
        forwardRouted(x, reactor)
    }

    /// A routed request goes on: the route's fault filter (Filters/HTTPProxy+Fault.swift) may hold or answer it,
    /// else it goes upstream.
    func forwardRouted(_ x: XID, _ reactor: Reactor<Backend>) {
        if !exchanges[x].fault.isEmpty && injectFault(x, reactor) { return }
        if exchanges[x].mirrorDraws != 0 { mirrorRequest(x, reactor) }
        startRouteTimeout(x, reactor)
        acquireUpstream(x, reactor)
    }

    func sendRequestHead(_ x: XID, _ reactor: Reactor<Backend>) {
        guard let u = exchanges[x].attempt.connection else { return bug("request head without an upstream") }
        let p = Int(exchanges[x].request.parser)
        let head = requestParsers.parsers[p].head
        let entry = Int(u.index)
        let held = exchanges[x].request.held
        guard composeRequestHead(x, head, into: toUpstream, entry: entry, reactor) else {
            fail(x, .headersTooLarge, reactor)
            return
        }
        let bodyStart = held.start + head.length
        guard let extent = takeRequestBody(x, from: bodyStart, reactor) else { return }
        let bodyEnd = extent.end
        _ = bytes.append(toUpstream, entry, held, bodyStart..<extent.forwardEnd)
        if extent.closesTrailers { _ = bytes.append(toUpstream, entry, "\r\n") }
        if exchanges[x].report.upstreamStart == 0 {
            // Not again when a retry on a fresh connection sends the same bytes.
            exchanges[x].report.requestWire &+= UInt64(bodyEnd - bodyStart)
            exchanges[x].report.upstreamStart = System.monotonicNanos()
        }
        // The request can be sent again, on a fresh connection if this reused one turns out to be closed or as a
        // retry (Router/HTTPProxy+Retry.swift), as long as all of it is still held: its whole body arrived with
        // its head (within one receive or assembly buffer) and it is no upgrade.
        let replayable = (upstreams[u].reused || !exchanges[x].retry.on.isEmpty) && exchanges[x].request.body == .none
            && !exchanges[x].upgrade
        exchanges[x].attempt.replayFrom = replayable ? held.start : nil
        exchanges[x].request.sentTo = bodyEnd
        exchanges[x].request.state = .sending
        exchanges[x].response.state = .head
        sendToUpstream(x, u, reactor)
        receiveFromUpstream(u, reactor)
    }

    /// Composes the request head as it goes upstream into entry `entry` of `table` (reset first): the received
    /// head's kept ranges, the rewritten target, and the extras (route fields, x-envoy-attempt-count, trace) composed
    /// anew into the exchange's extras buffer. False when it does not fit.
    func composeRequestHead(_ x: XID, _ head: HTTP1Head, into table: IOVecTable, entry: Int, _ reactor: Reactor<Backend>) -> Bool {
        let id = exchanges[x].downstream
        let held = exchanges[x].request.held
        table.reset(entry)
        dropHeld(&exchanges[x].request.extras, reactor)
        var target = 0..<0
        var fields = 0..<0
        var trace = 0..<0
        let traced = reporting.spans != nil
        // Routed by Istio configuration, every request carries x-envoy-attempt-count, as Istio has Envoy send it.
        if exchanges[x].request.edited || exchanges[x].targetRewrite != .none || traced || routes != nil
            || !downstreams[id].clientCertHash.isEmpty {
            guard let extras = composeRequestExtras(x, head, &target, &fields, &trace) else { return false }
            exchanges[x].request.extras = extras
        }
        let drops = routeDrops(x, response: false)
        let options = HTTP1Forwarding.RequestOptions(trustedClient: trustedClient, rewriteTarget: exchanges[x].targetRewrite != .none,
                                                     routeFields: !fields.isEmpty, replaceTrace: traced,
                                                     routeSetsHost: exchanges[x].routeSetsHost,
                                                     secure: clientIsSecure(id), setsAttemptCount: routes != nil)
        return bytes.appendHead(table, entry, held, slot: Int(id.index), { head, span, emit in
            // The fields the route removes or sets are dropped from the received head (ranges from its start).
            HTTP1Forwarding.request(head, span, options: options,
                                    drop: { name in drops.map { bytes.drops(held, name: name, $0.0, $0.1) } ?? false }, emit: emit)
        }, head: head, extras: exchanges[x].request.extras, target: target, fields: fields,
           trace: trace, capture: capture, captureSlot: Int(x.index), newRequestID: requestIDIsNew(x))
    }

    /// Whether the request's x-request-id (when Tern makes one) is to be made now: once per request.
    func requestIDIsNew(_ x: XID) -> Bool {
        defer { exchanges[x].requestIDMade = true }
        return !exchanges[x].requestIDMade
    }

    /// What to forward of the request body in the held bytes from `from`, updating what remains of it; nil
    /// when the chunked framing is broken (the exchange has then been failed).
    func takeRequestBody(_ x: XID, from: Int, _ reactor: Reactor<Backend>) -> BodyExtent? {
        var side = exchanges[x].request
        defer {
            // A failure may have closed and freed the session.
            if exchanges.isCurrent(x) {
                exchanges[x].request.body = side.body
                exchanges[x].request.decoder = side.decoder
                exchanges[x].request.inTrailers = side.inTrailers
            }
        }
        do {
            return try bodyExtent(&side.body, &side.decoder, &side.inTrailers, side.held, from: from)
        } catch {
            Log.debug("refused request body: \(error)")
            fail(x, .badRequest, reactor)
            return nil
        }
    }

    /// How far a body extends in the held bytes from `from` (`end`, updating what remains of it: a
    /// Content-Length count, or the chunked decoder's state; a body ending at close takes everything) and what of
    /// it is forwarded: [from, `forwardEnd`), then, when `closesTrailers`, the empty line that ends a chunked
    /// body. A chunked body's trailer section is dropped (unless `keepTrailers`: for an HTTP/2 client), as Envoy's HTTP/1 codec drops trailers by default
    /// (none of the fields RFC 9110 §6.5.1 forbids there, Content-Length or Host among them, reaches a peer).
    func bodyExtent(_ body: inout MessageBody, _ decoder: inout ChunkedDecoder, _ inTrailers: inout Bool, _ held: Held,
                    from: Int, keepTrailers: Bool = false) throws(HTTPParseError) -> BodyExtent
    {
        switch body {
        case .none:
            return BodyExtent(end: from, forwardEnd: from, closesTrailers: false)
        case .untilClose:
            return BodyExtent(end: held.end, forwardEnd: held.end, closesTrailers: false)
        case .length(let left):
            let take = Int(min(left, UInt64(held.end - from)))
            body = left == UInt64(take) ? .none : .length(left - UInt64(take))
            return BodyExtent(end: from + take, forwardEnd: from + take, closesTrailers: false)
        case .chunked:
            var at = from
            var forwardEnd = inTrailers ? from : held.end
            var closes = false
            while at < held.end {
                let out = try bytes.decode(&decoder, held, from: at)
                at += out.consumed
                if out.event == .lastChunk {
                    inTrailers = true
                    forwardEnd = at
                }
                if out.event == .end {
                    body = .none
                    closes = inTrailers
                    inTrailers = false
                    break
                }
            }
            // To an HTTP/2 client the trailer section goes on (its stream sends it as trailers: gRPC's status).
            if keepTrailers { return BodyExtent(end: at, forwardEnd: at, closesTrailers: false) }
            return BodyExtent(end: at, forwardEnd: min(forwardEnd, at), closesTrailers: closes)
        }
    }

    func sendToUpstream(_ x: XID, _ u: UID, _ reactor: Reactor<Backend>) {
        if upstreams[u].transport == .h2stream { return h2uSend(u, reactor) }
        if toUpstream.remaining(Int(u.index)) == 0 {
            upstreamSent(u, 0, reactor, nothing: true)
            return
        }
        if upstreams[u].transport == .tls { return tlsSend(.upstream(u), reactor) }
        upstreams[u].sending = true
        upstreams[u].inflight += 1
        reactor.backend.send(fd: upstreams[u].fd, vectors: toUpstream, index: Int(u.index), token: token(.upstreamSend, u))
    }

    func upstreamSent(_ u: UID, _ result: Int32, _ reactor: Reactor<Backend>, nothing: Bool = false) {
        if upstreams[u].state == .closing {
            finishUpstreamIfQuiet(u, reactor)
            return
        }
        if upstreams[u].h2 != nil { return h2uSent(u, result, reactor) }
        guard let x = servedExchange(u) else { return }
        let id = exchanges[x].downstream
        if result < 0 {
            Log.debug("send to upstream failed: \(Errno.name(-result))")
            upstreamLost(x, u, reactor)
            return
        }
        let entry = Int(u.index)
        if !nothing {
            toUpstream.advance(entry, by: Int(result))
            exchanges[x].lastActivity = System.monotonicNanos()
        }
        if toUpstream.remaining(entry) > 0 {
            sendToUpstream(x, u, reactor)
            return
        }
        // What was sent is consumed.
        exchanges[x].request.held.start = exchanges[x].request.sentTo
        dropHeld(&exchanges[x].request.extras, reactor)
        if exchanges[x].request.state == .tunnel {
            dropHeld(&exchanges[x].request.held, reactor)
            if !downstreams[id].clientEOF { receiveFromClient(id, reactor) }
            return
        }
        if exchanges[x].request.held.isEmpty && exchanges[x].attempt.replayFrom == nil { dropHeld(&exchanges[x].request.held, reactor) }
        parkForReplay(x, reactor)
        if exchanges[x].request.body == .none {
            requestDone(x, reactor)
        } else if case .length(let left) = exchanges[x].request.body, left >= Self.spliceThreshold,
                  exchanges[x].request.held.isEmpty, spliceAllowed(id, u), let pipe = reactor.pipes.acquire()
        {
            dropHeld(&exchanges[x].request.held, reactor)
            exchanges[x].request.pipe = pipe
            exchanges[x].request.state = .splicing
            Log.debug("request body spliced: \(left) bytes")
            requestSpliceIn(id, reactor)
        } else {
            exchanges[x].request.state = .body
            if exchanges[x].response.state != .done { receiveFromClient(id, reactor) }
        }
    }

    func requestBody(_ x: XID, _ reactor: Reactor<Backend>) {
        guard let u = exchanges[x].attempt.connection else { return bug("request body without an upstream") }
        guard let extent = takeRequestBody(x, from: 0, reactor) else { return }
        let end = extent.end
        exchanges[x].report.requestWire &+= UInt64(end)
        let entry = Int(u.index)
        toUpstream.reset(entry)
        _ = bytes.append(toUpstream, entry, exchanges[x].request.held, 0..<extent.forwardEnd)
        if extent.closesTrailers { _ = bytes.append(toUpstream, entry, "\r\n") }
        exchanges[x].request.sentTo = end
        exchanges[x].request.state = .sending
        sendToUpstream(x, u, reactor)
    }

    /// The whole request went upstream: the upstream timeout starts.
    func requestDone(_ x: XID, _ reactor: Reactor<Backend>) {
        exchanges[x].request.state = .done
        if exchanges[x].response.state == .done {
            exchangeDone(x, reactor)
            return
        }
        // The timeout runs from the first time the whole request went upstream: a retry does not restart it. The
        // per-try timeout runs from this try's.
        let now = System.monotonicNanos()
        if exchanges[x].requestEnd == 0 { exchanges[x].requestEnd = now }
        exchanges[x].tryEnd = now
        armExchangeDues(x, reactor)
    }
}
