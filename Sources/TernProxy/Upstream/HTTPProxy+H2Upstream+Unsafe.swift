// HTTP/2 to upstreams (issue 17): a cluster whose protocol is HTTP/2 (a ServiceEntry port `HTTP2`, `GRPC` or
// `GRPC-WEB`, `h2UpgradePolicy: UPGRADE`, or the client's under `useClientProtocol`) sends its requests as streams
// on multiplexed connections, one pool of them per endpoint on each reactor. The engine never learns the
// difference: each stream has an upstream slot of its own (transport `.h2stream`, no socket), bound to its
// exchange as an HTTP/1.1 connection would be, mirroring what Downstream/HTTPProxy+H2+Unsafe.swift does for clients.
//
// - Requests: what the engine sends to a stream (HTTP/1.1 bytes) is copied into a spare buffer, its head read
//   with a request parser and submitted as HEADERS (`HTTP2Translation.http2Request`), its body (de-chunked) read by
//   nghttp2 as the stream's window allows; the engine hears its send is done once nghttp2 took the bytes.
// - Responses: a response head is written as HTTP/1.1 (`HTTP2Translation.http1Response`, chunked unless it has a
//   Content-Length), its DATA as chunks, its trailers as the chunked body's trailer section, into spare buffers
//   handed to the engine a buffer at a time as it asks. A stream's window reopens only as the engine takes what it
//   was given, so a slow client holds an upstream stream to what fits its buffers.
// - Pools: a request takes a stream on a connection with room (the peer's SETTINGS_MAX_CONCURRENT_STREAMS, the
//   cluster's `maxConcurrentStreams`, `maxRequestsPerConnection`, `maxConnectionDuration`), else waits for one on its
//   way, else opens a connection (within the cluster's connection limit), else waits for a stream to free.
//   GOAWAY stops new streams on a connection; those above its last stream id, and streams the upstream refused,
//   are failed as refused, which the router's policy may send again (`ProxyError.refusedStream`); a request not yet
//   submitted when its connection goes away is sent again on another at once, uncounted (`ProxyError.notSent`).
// - Upgrade requests (WebSocket, CONNECT) and mirrored copies go over HTTP/1.1 always.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension H2Wire {
    /// Spare buffers an upstream stream's response may wait in: its window (65,535 bytes) and a head, framed.
    static let upstreamBuffers = 6
    /// A chunk-size line written for an upstream's DATA: eight hex digits (leading zeros), CRLF.
    static let chunkLine = 10
    static let errorReset: Int32 = -104  // ECONNRESET
}

extension HTTPProxy {
    // MARK: - The pool

    /// Whether exchange `x`'s next attempt goes over HTTP/2.
    func wantsHTTP2(_ x: XID) -> Bool {
        let c = Int(exchanges[x].cluster)
        guard !exchanges[x].upgrade, exchanges[x].method != .connect, exchanges[x].relayed == nil else { return false }
        if c < 0 {
            // An inbound side's app: HTTP/2 on the ports `--inbound-ports` declares HTTP2 or GRPC (a few ports,
            // scanned in place).
            let id = exchanges[x].downstream
            guard !settings.inboundHTTP2Ports.isEmpty, isInbound(downstreams[id].listener) else { return false }
            let port = downstreams[id].destinationPort
            for p in settings.inboundHTTP2Ports where p == port { return true }
            return false
        }
        guard c < clusterProtocols.count else { return false }
        switch clusterProtocols[c] {
        case .http1: return false
        case .http2: return true
        // (Over TLS the pool's connections offer ALPN http/1.1: the client's protocol is HTTP/1.1 there.)
        case .client: return exchanges[x].http2 && pools.slots[exchanges[x].attempt.endpoint].tls == nil
        }
    }

    /// Finds exchange `x` a stream: on a connection with room, else a place in the queue of one on its way or of
    /// a full pool, else a new connection.
    func h2uAcquire(_ x: XID, _ reactor: Reactor<Backend>) {
        let e = exchanges[x].attempt.endpoint
        exchanges[x].attempt.http2 = true
        if let u = h2uLinkWithRoom(e, serverName: exchanges[x].attempt.serverName) {
            guard admitRequest(x, reactor) else { return }
            return h2uOpen(u, for: x, reactor)
        }
        guard admitPending(x) else { return fail(x, .overflow, reactor) }
        while let first = pools.slots[e].h2Pending.first, !h2uIsWaiting(first, for: e) { _ = pools.slots[e].h2Pending.pop() }
        // A connection on its way will take as many as it may carry (the peer's limit is not known before its
        // SETTINGS: HTTP/2's recommended 100 is assumed).
        let expected = pools.slots[e].h2Connecting * 100
        if pools.slots[e].h2Pending.count >= expected && mayConnect(x, e) {
            return connect(for: x, http2: true, reactor)
        }
        if let circuit = exchanges[x].circuit, !circuit.connectionsLeft { circuit.cxOverflow.add(1, ordering: .relaxed) }
        parkWaiting(x, reactor)
        guard pools.slots[e].h2Pending.push(x, limit: Self.pendingQueueLimit) else {
            discharge(x, .pending)
            return fail(x, .overflow, reactor)
        }
        Log.debug("request waits for an HTTP/2 stream (\(pools.slots[e].h2Pending.count) waiting)")
    }

    /// An HTTP/2 connection to endpoint `e` that may open another stream now, made with server name `serverName`.
    private func h2uLinkWithRoom(_ e: Int, serverName: UInt64) -> UID? {
        var i = 0
        while i < pools.slots[e].h2Links.count {
            let u = pools.slots[e].h2Links[i]
            i += 1
            guard upstreams.isCurrent(u), let link = upstreams[u].h2, upstreams[u].serverName == serverName else { continue }
            if h2uHasRoom(u, link) { return u }
        }
        return nil
    }

    private func h2uHasRoom(_ u: UID, _ link: H2UpLink) -> Bool {
        guard !link.goingAway && !link.closing && upstreams[u].state == .bound && mayServeAgain(u),
              link.buffersHeld < H2Wire.buffersPerConnection, h2Shares.held < h2Shares.limit else { return false }
        let peer = Int(link.session.peerMaxConcurrentStreams)
        return link.streams.count < min(peer, link.maxConcurrent) && link.session.canOpenStream
    }

    /// Whether a queue entry still names an exchange waiting for an HTTP/2 stream to endpoint `e`.
    func h2uIsWaiting(_ x: XID, for e: Int) -> Bool {
        exchanges.isCurrent(x) && downstreams[exchanges[x].downstream].phase == .open && exchanges[x].request.state == .waiting
            && exchanges[x].attempt.connection == nil && exchanges[x].attempt.endpoint == e && exchanges[x].attempt.http2
    }

    /// Requests waiting for a stream to endpoint `e` get one on a connection with room, in order; the first of
    /// those left opens a connection when none is on its way and the cluster allows. Run when a connection is
    /// made, a stream ends, or a connection goes.
    func h2uServePending(_ e: Int, _ reactor: Reactor<Backend>) {
        while let next = pools.slots[e].h2Pending.first {
            guard h2uIsWaiting(next, for: e) else {
                _ = pools.slots[e].h2Pending.pop()
                continue
            }
            guard let u = h2uLinkWithRoom(e, serverName: exchanges[next].attempt.serverName) else { break }
            _ = pools.slots[e].h2Pending.pop()
            guard admitRequest(next, reactor) else { continue }
            h2uOpen(u, for: next, reactor)
        }
        guard pools.slots[e].h2Connecting == 0, let next = pools.slots[e].h2Pending.first, mayConnect(next, e) else { return }
        _ = pools.slots[e].h2Pending.pop()
        connect(for: next, http2: true, reactor)
    }

    /// Connection `u` (made to speak HTTP/2) is connected, and its TLS handshake done: its session starts, its
    /// first stream goes to the request it was made for (if that still waits), then to those queued.
    func h2uReady(_ u: UID, _ reactor: Reactor<Backend>) {
        cancel(&upstreams[u].connectTimer, reactor)
        let e = upstreams[u].endpoint
        pools.slots[e].h2Connecting -= 1
        var settings = HTTP2Session.Settings()
        settings.initialStreamWindow = 65_535
        settings.connectionWindow = self.settings.http2ConnectionWindow
        settings.maxConcurrentStreams = self.settings.http2MaxConcurrentStreams
        settings.maxFrameSize = self.settings.http2MaxFrameSize
        settings.maxHeaderListSize = UInt32(self.settings.limits.maxHeaderBytes)
        let x = upstreams[u].exchange
        upstreams[u].exchange = nil
        let session: HTTP2Session
        do {
            session = try HTTP2Session(role: .client, settings: settings)
        } catch {
            Log.error("HTTP/2: no session for an upstream connection: \(error)")
            // (Its count among the connections on their way was taken off above.)
            upstreams[u].http2 = false
            if let x, exchanges.isCurrent(x), exchanges[x].attempt.connection == u {
                exchanges[x].attempt.connection = nil
                attemptFailed(x, .connectFailure, responseBytesSeen: false, reactor)
            }
            closeUpstream(u, reactor)
            return
        }
        let link = H2UpLink(session: session)
        link.shares = h2Shares
        if let circuit = upstreams[u].circuit {
            let c = circuit.connectionSettings
            link.maxConcurrent = c.maxConcurrentStreams
            link.pingInterval = c.pingInterval
            link.pingTimeout = c.pingTimeout
        }
        unsafe session.bodySource = { [unowned self] stream, buffer in unsafe self.h2uBodyRead(u, stream, buffer) }
        upstreams[u].h2 = link
        upstreams[u].state = .bound
        pools.slots[e].h2Links.append(u)
        if link.pingInterval > 0 {
            _ = reactor.timers.schedule(token(.h2Ping, u), at: saturatingAdd(System.monotonicNanos(), link.pingInterval))
        }
        counters.h2UpstreamConnections.add(1, ordering: .relaxed)
        receiveFromUpstream(u, reactor)
        if let x, exchanges.isCurrent(x), exchanges[x].attempt.connection == u {
            exchanges[x].attempt.connection = nil
            if exchanges[x].circuit == nil || exchanges[x].charges.contains(.request) || admitRequest(x, reactor) {
                h2uOpen(u, for: x, reactor)
            }
        }
        h2uServePending(e, reactor)
        h2uFlush(u, reactor)
        h2uIdleCheck(u, reactor)
    }

    /// A stream on connection `u` for exchange `x`: a slot of its own, bound to the exchange, which sends its
    /// request into it.
    private func h2uOpen(_ u: UID, for x: XID, _ reactor: Reactor<Backend>) {
        guard let link = upstreams[u].h2 else { return fail(x, .overflow, reactor) }
        let e = upstreams[u].endpoint
        guard let v = upstreams.insert(UpstreamConnection(fd: -1, endpoint: e)) else { return fail(x, .overflow, reactor) }
        upstreams[v].transport = .h2stream
        upstreams[v].h2s.parent = u
        upstreams[v].serverName = upstreams[u].serverName
        upstreams[v].state = .connecting
        h2uStreamCount += 1
        link.streams.append((0, v))
        link.opened += 1
        if upstreams[u].requestsLeft != Int.max { upstreams[u].requestsLeft -= 1 }
        cancel(&upstreams[u].poolTimer, reactor)
        // (Not `reused`: a stream the upstream resets may have been processed; only refused ones go again.)
        bind(v, to: x, reused: false, reactor)
    }

    // MARK: - The connection's bytes

    /// Bytes (or the end) from an HTTP/2 upstream connection.
    func h2uReceived(_ u: UID, _ c: Completion, _ reactor: Reactor<Backend>) {
        guard let link = upstreams[u].h2 else { return release(c.bufferID, reactor) }
        guard c.result > 0, let buffer = c.bufferID else {
            release(c.bufferID, reactor)
            Log.debug("HTTP/2 upstream connection \(c.result == 0 ? "closed" : "failed: \(Errno.name(-c.result))")")
            return h2uEnd(u, reactor)
        }
        let input = unsafe pool.bytes(buffer, length: Int(c.result))
        if link.pingInterval > 0 { link.lastHeard = System.monotonicNanos() }
        let ok = unsafe link.session.receive(input)
        unsafe h2uEvents(u, link, input, reactor)
        release(buffer, reactor)
        guard upstreams.isCurrent(u), upstreams[u].h2 === link else { return }
        if ok, let what = link.session.flood, !link.closing {
            Log.debug("HTTP/2 upstream connection: a flood of \(what): GOAWAY ENHANCE_YOUR_CALM")
            counters.h2Floods.add(1, ordering: .relaxed)
        }
        if !ok || link.session.flood != nil {
            if !ok {
                Log.debug("HTTP/2 upstream connection failed: \(link.session.failure ?? "?")")
                h2CountFailure(link.session)
            }
            link.goingAway = true
            link.closing = true
            // Its streams fail now; the connection closes once its GOAWAY is out (at once when a send is still
            // out: an upstream that does not read may never take it).
            h2uFailStreams(link, reactor)
            if link.out >= 0 { return closeUpstream(u, reactor) }
            h2uFlush(u, reactor)
            return
        }
        // A GOAWAY on a connection without streams: it closes now, not at its idle timeout.
        if link.goingAway && link.streams.isEmpty { h2uIdleCheck(u, reactor) }
        h2uFlush(u, reactor)
        if upstreams.isCurrent(u) && upstreams[u].state == .bound && !link.ended && !link.closing { receiveFromUpstream(u, reactor) }
    }

    /// What the session's last call produced, stream by stream.
    private func h2uEvents(_ u: UID, _ link: H2UpLink, _ input: UnsafeRawBufferPointer, _ reactor: Reactor<Backend>) {
        guard !link.inEvents else { return }
        link.inEvents = true
        defer { link.inEvents = false }
        var i = 0
        while i < link.session.events.count {
            let event = link.session.events[i]
            i += 1
            switch event {
            case .head(let stream, let fields, let endStream):
                guard let v = link.connection(of: stream) else { continue }
                h2uResponseHead(v, link, fields, endStream: endStream, reactor)
            case .trailers(let stream, let fields):
                guard let v = link.connection(of: stream) else { continue }
                if let x = upstreams[v].exchange, exchanges.isCurrent(x), exchanges[x].report.grpc,
                   let g = GRPC.status(link.session, fields) {
                    exchanges[x].report.grpcStatus = Int16(clamping: g)
                    if let m = GRPC.message(link.session, fields) { exchanges[x].report.grpcMessage.set(m) }
                }
                h2Scratch.removeAll(keepingCapacity: true)
                if upstreams[v].h2s.chunked {
                    HTTP2Translation.http1Trailers(link.session, fields, into: &h2Scratch)
                } else if upstreams[v].h2s.headSeen, let x = upstreams[v].exchange, exchanges.isCurrent(x) {
                    // A Content-Length body cannot carry them: kept beside it for an HTTP/2 client.
                    h2KeepTrailers(link.session, fields, in: &exchanges[x].responseTrailers)
                }
                unsafe h2Scratch.withUnsafeBytes { unsafe h2uGather(v, link, $0, data: 0, reactor) }
                upstreams[v].h2s.responseEnded = true
                h2uReady(v)
            case .data(let stream, let range):
                guard let v = link.connection(of: stream), upstreams[v].h2s.headSeen, !upstreams[v].h2s.failed else {
                    link.session.consume(stream: stream, range.count)
                    continue
                }
                unsafe h2uData(v, link, UnsafeRawBufferPointer(rebasing: input[range]), reactor)
            case .endStream(let stream):
                guard let v = link.connection(of: stream), !upstreams[v].h2s.responseEnded else { continue }
                if upstreams[v].h2s.chunked {
                    unsafe H2Wire.lastChunk.withUnsafeBytes { unsafe h2uGather(v, link, $0, data: 0, reactor) }
                }
                upstreams[v].h2s.responseEnded = true
                h2uReady(v)
            case .reset(let stream, let code):
                guard let v = link.connection(of: stream) else { continue }
                Log.debug("HTTP/2 upstream reset stream \(stream) (error \(code))")
                h2uStreamGone(v, refused: code == HTTP2ErrorCode.refusedStream, reactor)
            case .closed(let stream, let code):
                guard let v = link.connection(of: stream) else { continue }
                upstreams[v].h2s.gone = true
                if !upstreams[v].h2s.responseEnded {
                    // Closed before its response ended: streams above a GOAWAY's last stream are closed as refused.
                    h2uStreamGone(v, refused: code == HTTP2ErrorCode.refusedStream, reactor)
                }
            case .goaway(let last, let code):
                Log.debug("HTTP/2 upstream said GOAWAY (last stream \(last), error \(code))")
                link.goingAway = true
                // Streams not yet submitted wait in nghttp2 for a stream id it will not give: refused now.
                for s in link.streams where s.id == 0 || s.id > last {
                    h2uStreamGone(s.connection, refused: true, notSent: s.id == 0, reactor)
                }
            }
        }
        link.session.clearEvents()
    }

    /// Sends what the session has to send, a spare buffer at a time, through the connection's transport.
    func h2uFlush(_ u: UID, _ reactor: Reactor<Backend>) {
        guard upstreams.isCurrent(u), let link = upstreams[u].h2, link.out < 0, !link.flushing,
              upstreams[u].state == .bound else { return }
        link.flushing = true
        defer { link.flushing = false }
        guard let b = h2TakeBuffer(reactor) else {
            if !link.starved {
                link.starved = true
                h2uStarved.append(u)
            }
            return
        }
        let room = unsafe pool.mutableBytes(b, length: pool.size)
        var n = 0
        while true {
            n = unsafe link.fill(room, from: n)
            guard !link.session.events.isEmpty && !link.inEvents else { break }
            unsafe h2uEvents(u, link, UnsafeRawBufferPointer(start: nil, count: 0), reactor)
            guard upstreams.isCurrent(u), upstreams[u].h2 === link else { return release(b, reactor) }
        }
        // nghttp2 ended the session for the upstream's protocol error (its GOAWAY is in this buffer): the
        // connection takes no new stream, its streams fail once the GOAWAY is on its way, and it closes.
        let endedNow = link.session.endedForError && !link.endedForError
        if endedNow {
            link.endedForError = true
            Log.debug("HTTP/2 upstream connection: a protocol error of the upstream's: GOAWAY and the close")
            counters.h2ProtocolErrors.add(1, ordering: .relaxed)
            link.goingAway = true
            link.closing = true
        }
        defer { if endedNow && upstreams.isCurrent(u) && upstreams[u].h2 === link { h2uFailStreams(link, reactor) } }
        guard n > 0 else {
            release(b, reactor)
            if link.closing && (link.streams.isEmpty || link.goingAway) { closeUpstream(u, reactor) }
            return
        }
        link.out = Int32(b)
        let entry = Int(u.index)
        toUpstream.reset(entry)
        _ = unsafe toUpstream.append(entry, UnsafeRawBufferPointer(rebasing: room[0..<n]))
        h2uTransmit(u, reactor)
    }

    private func h2uTransmit(_ u: UID, _ reactor: Reactor<Backend>) {
        if upstreams[u].transport == .tls { return tlsSend(.upstream(u), reactor) }
        upstreams[u].sending = true
        upstreams[u].inflight += 1
        reactor.backend.send(fd: upstreams[u].fd, vectors: toUpstream, index: Int(u.index), token: token(.upstreamSend, u))
    }

    /// The connection's frames went out (`result` bytes of them).
    func h2uSent(_ u: UID, _ result: Int32, _ reactor: Reactor<Backend>) {
        guard let link = upstreams[u].h2 else { return }
        if result < 0 {
            Log.debug("send to HTTP/2 upstream failed: \(Errno.name(-result))")
            return h2uEnd(u, reactor)
        }
        let entry = Int(u.index)
        toUpstream.advance(entry, by: Int(result))
        if toUpstream.remaining(entry) > 0 { return h2uTransmit(u, reactor) }
        if link.out >= 0 {
            release(UInt16(link.out), reactor)
            link.out = -1
        }
        h2uFlush(u, reactor)
    }

    /// The connection is gone (closed by the upstream, failed): its streams fail, and it closes.
    private func h2uEnd(_ u: UID, _ reactor: Reactor<Backend>) {
        guard let link = upstreams[u].h2 else { return closeUpstream(u, reactor) }
        link.goingAway = true
        link.ended = true
        h2uFailStreams(link, reactor)
        if upstreams.isCurrent(u) { closeUpstream(u, reactor) }
    }

    /// Every stream of `link` not yet ended fails (a stream never submitted as refused).
    private func h2uFailStreams(_ link: H2UpLink, _ reactor: Reactor<Backend>) {
        for s in link.streams where upstreams.isCurrent(s.connection) && !upstreams[s.connection].h2s.responseEnded {
            h2uStreamGone(s.connection, refused: s.id == 0, notSent: s.id == 0, reactor)
        }
    }

    /// Connection `u` has no stream: it closes if it may carry none again, or when its idle timeout passes.
    func h2uIdleCheck(_ u: UID, _ reactor: Reactor<Backend>) {
        guard upstreams.isCurrent(u), let link = upstreams[u].h2, link.streams.isEmpty else { return }
        let e = upstreams[u].endpoint
        if link.goingAway || !mayServeAgain(u) || !pools.slots[e].keepsIdle || draining {
            link.closing = true
            link.session.goaway(code: HTTP2ErrorCode.noError)
            return h2uFlush(u, reactor)
        }
        upstreams[u].idleSince = System.monotonicNanos()
        if upstreams[u].poolTimer == nil, let due = poolDue(u) {
            upstreams[u].poolTimer = reactor.timers.schedule(token(.poolTimer, u), at: due)
        }
    }

    /// The pool timer of an HTTP/2 connection fired: closed if it had no stream since its idle timeout began (or
    /// its `maxConnectionDuration` passed), else looked at again then.
    func h2uPoolTimer(_ u: UID, _ reactor: Reactor<Backend>) {
        guard let link = upstreams[u].h2, link.streams.isEmpty else { return }
        guard let due = poolDue(u) else { return }
        if System.monotonicNanos() >= due {
            Log.debug("idle HTTP/2 upstream connection closed")
            link.goingAway = true
            h2uIdleCheck(u, reactor)
        } else {
            upstreams[u].poolTimer = reactor.timers.schedule(token(.poolTimer, u), at: due)
        }
    }

    /// The keepalive timer of an HTTP/2 connection (`http2KeepAlive`): a PING goes out every interval; one not
    /// answered within the timeout (of it, or of the last bytes the upstream sent) closes the connection, and its
    /// streams fail as on any connection lost (retried where the route's policy says so).
    func h2uPingTimer(_ u: UID, _ reactor: Reactor<Backend>) {
        guard let link = upstreams[u].h2, !link.ended, !link.closing, link.pingInterval > 0 else { return }
        let now = System.monotonicNanos()
        var next: UInt64
        if link.session.pingOutstanding {
            let deadline = saturatingAdd(max(link.pingSentAt, link.lastHeard), link.pingTimeout)
            if now >= deadline {
                Log.debug("HTTP/2 upstream connection: keepalive PING not answered within \(link.pingTimeout / 1_000_000) ms: closed")
                counters.h2PingTimeouts.add(1, ordering: .relaxed)
                return h2uEnd(u, reactor)
            }
            next = deadline
        } else if now < saturatingAdd(link.pingSentAt, link.pingInterval) {
            next = saturatingAdd(link.pingSentAt, link.pingInterval)
        } else {
            link.session.ping()
            link.pingSentAt = now
            h2uFlush(u, reactor)
            guard upstreams.isCurrent(u), upstreams[u].h2 === link else { return }
            // Looked at again when the answer is due, or for the next PING if that comes first.
            next = saturatingAdd(now, min(link.pingTimeout, link.pingInterval))
        }
        _ = reactor.timers.schedule(token(.h2Ping, u), at: next)
    }

    /// The connection's slot is freed (`finishUpstreamIfQuiet`): out of its pool, its buffer back.
    func h2uFree(_ u: UID, _ reactor: Reactor<Backend>) {
        let e = upstreams[u].endpoint
        if let i = pools.slots[e].h2Links.firstIndex(of: u) { pools.slots[e].h2Links.remove(at: i) }
        if let link = upstreams[u].h2 {
            link.ended = true
            if link.out >= 0 { release(UInt16(link.out), reactor) }
            link.out = -1
            unsafe link.session.bodySource = nil
            upstreams[u].h2 = nil
        }
    }

    /// A connection made for HTTP/2 stops connecting without becoming one (failed, timed out, closed).
    func h2uConnectEnded(_ u: UID, _ reactor: Reactor<Backend>) {
        guard upstreams[u].http2 && upstreams[u].h2 == nil && upstreams[u].state == .connecting else { return }
        upstreams[u].http2 = false
        let e = upstreams[u].endpoint
        pools.slots[e].h2Connecting -= 1
    }

    // MARK: - Requests

    /// The engine sends to a stream (`sendToUpstream`): its HTTP/1.1 bytes become HEADERS and DATA.
    func h2uSend(_ v: UID, _ reactor: Reactor<Backend>) {
        guard let u = upstreams[v].h2s.parent, upstreams.isCurrent(u), let link = upstreams[u].h2,
              !upstreams[v].h2s.gone else {
            // Its connection or stream is gone: the engine hears it when it reads (or now, if it is reading).
            return h2uReady(v)
        }
        if upstreams[v].h2s.send.out < 0 {
            guard let b = h2TakeBuffer(reactor, link) else {
                upstreams[v].h2s.send.starvedSend = true
                return h2uStarve(v)
            }
            upstreams[v].h2s.send.out = Int32(b)
            upstreams[v].h2s.send.start = 0
            upstreams[v].h2s.send.end = 0
        }
        let buffer = unsafe pool.mutableBytes(UInt16(upstreams[v].h2s.send.out), length: pool.size)
        let (from, copied) = unsafe upstreams[v].h2s.send.take(toUpstream, Int(v.index), into: buffer)
        if !upstreams[v].h2s.headSubmitted {
            guard unsafe h2uRequestHead(v, u, link, buffer, reactor) else { return }
            if !upstreams[v].h2s.headSubmitted && upstreams[v].h2s.send.end == pool.size {
                // A head larger than a buffer (the engine's heads may be up to 60 KiB): not sent (431 is the
                // client's answer only for its own head; here the route's additions made it so).
                Log.debug("HTTP/2 upstream request head over \(pool.size) bytes")
                upstreams[v].h2s.gone = true
                upstreams[v].h2s.failed = true
                return h2uReady(v)
            }
        } else {
            let stop = unsafe upstreams[v].h2s.send.body.absorb(buffer, from: from, end: upstreams[v].h2s.send.end)
            upstreams[v].h2s.send.end = stop
        }
        upstreams[v].h2s.send.unreported = copied
        if upstreams[v].h2s.send.isDrained {
            // Nothing waits for nghttp2 (a request without a body, or its end): the buffer goes back at the next
            // iteration, so a long-lived stream (a watch, a stream of server messages) holds none.
            if upstreams[v].h2s.send.body.ended { upstreams[v].h2s.send.releaseOut = true }
            // Nothing waits for nghttp2: the send is done.
            upstreams[v].h2s.send.start = 0
            upstreams[v].h2s.send.end = 0
            upstreams[v].h2s.send.reportSent = true
            h2uReady(v)
        }
        if upstreams[v].h2s.headSubmitted && upstreams[v].h2s.stream > 0 { link.session.resume(stream: upstreams[v].h2s.stream) }
        h2uFlush(u, reactor)
    }

    /// Reads the request head from the front of the stream's `out` and submits it; its body bytes stay after it.
    /// False when the stream failed instead.
    private func h2uRequestHead(_ v: UID, _ u: UID, _ link: H2UpLink, _ buffer: UnsafeMutableRawBufferPointer,
                                _ reactor: Reactor<Backend>) -> Bool {
        if upstreams[v].h2s.parser < 0 { upstreams[v].h2s.parser = requestParsers.take() }
        let p = Int(upstreams[v].h2s.parser)
        let bytes = unsafe UnsafeRawBufferPointer(rebasing: buffer[0..<upstreams[v].h2s.send.end])
        let progress: HTTP1Parser.Progress
        do {
            progress = try unsafe bytes.withMemoryRebound(to: UInt8.self) { try unsafe requestParsers.parsers[p].parse($0.span) }
        } catch {
            bug("HTTP/2 upstream stream: request head the engine wrote does not parse: \(error)")
            upstreams[v].h2s.gone = true
            upstreams[v].h2s.failed = true
            h2uReady(v)
            return false
        }
        guard progress == .complete else { return true }
        // (What the rest needs of the head, read before the parser is reset: a copy of the head alive across the
        // reset would share its field array, and the reset would then allocate a new one.)
        let (length, framing) = unsafe h2uHeadToSubmit(u, link, p, bytes)
        if framing == .chunked { h2LendTrailers(&upstreams[v].h2s.send.body) }
        upstreams[v].h2s.send.body.begin(framing == .untilClose ? .none : framing)
        let hasBody = !upstreams[v].h2s.send.body.ended
        guard let stream = link.session.submitRequest(hasBody: hasBody) else {
            // No stream id left on this connection, or it is going away: refused, so the router tries again.
            link.goingAway = true
            upstreams[v].h2s.gone = true
            upstreams[v].h2s.failed = true
            upstreams[v].h2s.refused = true
            upstreams[v].h2s.notSent = true
            h2uReady(v)
            return false
        }
        requestParsers.parsers[p].reset()
        requestParsers.give(upstreams[v].h2s.parser)
        upstreams[v].h2s.parser = -1
        upstreams[v].h2s.stream = stream
        upstreams[v].h2s.headSubmitted = true
        for k in link.streams.indices where link.streams[k].connection == v { link.streams[k].id = stream }
        counters.h2UpstreamStreams.add(1, ordering: .relaxed)
        let rest = upstreams[v].h2s.send.end - length
        unsafe buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + length, byteCount: rest)
        upstreams[v].h2s.send.end = unsafe upstreams[v].h2s.send.body.absorb(buffer, from: 0, end: rest)
        return true
    }

    /// Builds the request head parser `p` holds (read from `bytes`) as the session's head to submit on connection
    /// `u`: its length, and its body's framing.
    private func h2uHeadToSubmit(_ u: UID, _ link: H2UpLink, _ p: Int, _ bytes: UnsafeRawBufferPointer) -> (length: Int, framing: BodyFraming) {
        let head = requestParsers.parsers[p].head
        link.session.beginHead()
        unsafe HTTP2Translation.http2Request(head, bytes, scheme: upstreams[u].transport == .tls ? "https" : "http", into: link.session)
        return (head.length, head.framing)
    }

    /// The client's HTTP/2 trailers kept beside the request an upstream stream sends (none: empty).
    private func keptRequestTrailers(_ v: UID) -> [UInt8] {
        guard let x = upstreams[v].exchange, exchanges.isCurrent(x) else { return [] }
        return exchanges[x].requestTrailers
    }

    /// nghttp2 frames a stream's request body: the bytes waiting in its `out`, and its end once the body ended.
    func h2uBodyRead(_ u: UID, _ stream: Int32, _ into: UnsafeMutableRawBufferPointer) -> HTTP2BodyRead {
        guard upstreams.isCurrent(u), let link = upstreams[u].h2, let v = link.connection(of: stream) else {
            return .bytes(0, end: true)
        }
        guard upstreams[v].h2s.send.out >= 0 else {
            return upstreams[v].h2s.send.body.ended ? link.endBody(stream, upstreams[v].h2s.send.body, 0, kept: keptRequestTrailers(v)) : .wait
        }
        let buffer = unsafe pool.bytes(UInt16(upstreams[v].h2s.send.out), length: pool.size)
        let (n, drained) = unsafe upstreams[v].h2s.send.read(buffer, into: into)
        guard drained else { return .bytes(n, end: false) }
        upstreams[v].h2s.send.releaseOut = true
        if upstreams[v].h2s.send.unreported > 0 || n > 0 { upstreams[v].h2s.send.reportSent = true }
        h2uReady(v)
        if upstreams[v].h2s.send.body.ended { return link.endBody(stream, upstreams[v].h2s.send.body, n, kept: keptRequestTrailers(v)) }
        return n == 0 ? .wait : .bytes(n, end: false)
    }

    // MARK: - Responses

    /// A response head on stream slot `v`: written as HTTP/1.1 for the engine (an interim one too).
    private func h2uResponseHead(_ v: UID, _ link: H2UpLink, _ fields: Range<Int>, endStream: Bool, _ reactor: Reactor<Backend>) {
        guard !upstreams[v].h2s.headSeen, !upstreams[v].h2s.failed else { return }
        let method = upstreams[v].exchange.map { exchanges.isCurrent($0) ? exchanges[$0].method : .get } ?? .get
        h2Scratch.removeAll(keepingCapacity: true)
        switch HTTP2Translation.http1Response(link.session, fields, endStream: endStream, toHEAD: method == .head, into: &h2Scratch) {
        case .success(let framing):
            let interim = h2Scratch.count > 12 && h2Scratch[9] == UInt8(ascii: "1")
            if !interim {
                upstreams[v].h2s.headSeen = true
                upstreams[v].h2s.chunked = framing == .chunked
                if case .contentLength(let n) = framing { upstreams[v].h2s.lengthLeft = n }
                // (Trailers an earlier try's response left are not this one's.)
                if let x = upstreams[v].exchange, exchanges.isCurrent(x) { h2TakeBackTrailers(&exchanges[x].responseTrailers) }
                if framing != .chunked && framing != .none {
                    // A Content-Length body: its DATA go as they are.
                } else if framing == .none && !endStream {
                    // No body is allowed (HEAD, 204, 304), whatever DATA follow.
                }
                if framing == .none || endStream { upstreams[v].h2s.responseEnded = true }
            }
            unsafe h2Scratch.withUnsafeBytes { unsafe h2uGather(v, link, $0, data: 0, reactor) }
            if endStream && upstreams[v].h2s.chunked {
                unsafe H2Wire.lastChunk.withUnsafeBytes { unsafe h2uGather(v, link, $0, data: 0, reactor) }
                upstreams[v].h2s.responseEnded = true
            }
            h2uReady(v)
        case .failure(let why):
            Log.debug("HTTP/2 upstream: malformed response head (\(why))")
            counters.h2ProtocolErrors.add(1, ordering: .relaxed)
            link.session.reset(stream: upstreams[v].h2s.stream, code: HTTP2ErrorCode.protocolError)
            upstreams[v].h2s.gone = true
            upstreams[v].h2s.failed = true
            h2uReady(v)
        }
    }

    /// DATA for a stream: framed as a chunk when its body is chunked, gathered until the engine asks.
    private func h2uData(_ v: UID, _ link: H2UpLink, _ data: UnsafeRawBufferPointer, _ reactor: Reactor<Backend>) {
        guard unsafe !data.isEmpty else { return }
        if upstreams[v].h2s.responseEnded || upstreams[v].state == .closing {
            link.session.consume(stream: upstreams[v].h2s.stream, data.count)
            return
        }
        if upstreams[v].h2s.chunked {
            unsafe h2uGatherChunked(v, link, data, reactor)
        } else {
            unsafe h2uGather(v, link, data, data: data.count, reactor)
            if upstreams[v].h2s.lengthLeft != .max {
                upstreams[v].h2s.lengthLeft -= min(upstreams[v].h2s.lengthLeft, UInt64(data.count))
            }
        }
        h2uReady(v)
    }

    /// DATA for a chunked response: added to the chunk open at the end of the stream's last buffer (its size line
    /// of fixed width rewritten), or to a new chunk there, so framing costs one chunk per buffer however small the
    /// peer's frames (DATA frames of one byte would otherwise take nine times their size).
    private func h2uGatherChunked(_ v: UID, _ link: H2UpLink, _ data: UnsafeRawBufferPointer, _ reactor: Reactor<Backend>) {
        var rest = unsafe data
        while unsafe !rest.isEmpty && !upstreams[v].h2s.failed {
            let last = upstreams[v].h2s.count - 1
            let open = upstreams[v].h2s.openChunk >= 0
            // A new chunk needs its size line and CRLF, and at least a byte of data.
            let need = open ? 1 : H2Wire.chunkLine + 2 + 1
            if last < 0 || pool.size - upstreams[v].h2s.lengths[last] < need {
                // (A buffer of its own: `h2uGather` takes it; nothing is appended.)
                unsafe h2uGather(v, link, UnsafeRawBufferPointer(start: nil, count: 0), data: 0, reactor, newBuffer: true)
                if upstreams[v].h2s.failed { link.session.consumeConnection(rest.count) }
                continue
            }
            let buffer = unsafe pool.mutableBytes(UInt16(upstreams[v].h2s.buffers[last]), length: pool.size)
            if !open {
                let at = upstreams[v].h2s.lengths[last]
                upstreams[v].h2s.openChunk = at
                upstreams[v].h2s.openChunkSize = 0
                unsafe buffer[at + H2Wire.chunkLine - 2] = 0x0D
                unsafe buffer[at + H2Wire.chunkLine - 1] = 0x0A
                unsafe buffer[at + H2Wire.chunkLine] = 0x0D
                unsafe buffer[at + H2Wire.chunkLine + 1] = 0x0A
                upstreams[v].h2s.lengths[last] = at + H2Wire.chunkLine + 2
            }
            // The data goes before the chunk's closing CRLF, which moves after it.
            let at = upstreams[v].h2s.lengths[last] - 2
            let k = min(rest.count, pool.size - upstreams[v].h2s.lengths[last])
            unsafe (buffer.baseAddress! + at).copyMemory(from: rest.baseAddress!, byteCount: k)
            unsafe buffer[at + k] = 0x0D
            unsafe buffer[at + k + 1] = 0x0A
            upstreams[v].h2s.lengths[last] = at + k + 2
            upstreams[v].h2s.dataBytes[last] += k
            upstreams[v].h2s.openChunkSize += k
            var size = upstreams[v].h2s.openChunkSize
            let line = upstreams[v].h2s.openChunk
            for d in (0..<(H2Wire.chunkLine - 2)).reversed() {
                let nibble = size & 0xF
                unsafe buffer[line + d] = UInt8(nibble < 10 ? 0x30 + nibble : 0x57 + nibble)
                size >>= 4
            }
            unsafe rest = unsafe UnsafeRawBufferPointer(rebasing: rest[k...])
        }
    }

    /// Appends bytes for the engine to the stream's buffers (`data` of them DATA payload). Beyond its buffers (a
    /// peer past its window, or no spare buffer), the stream is reset and fails.
    private func h2uGather(_ v: UID, _ link: H2UpLink, _ bytes: UnsafeRawBufferPointer, data: Int, _ reactor: Reactor<Backend>,
                           newBuffer: Bool = false) {
        guard !upstreams[v].h2s.failed else {
            link.session.consumeConnection(data)
            return
        }
        // Anything but a chunk's data ends the chunk open at the end of the last buffer (it is complete as it is).
        upstreams[v].h2s.openChunk = -1
        var rest = unsafe bytes
        if newBuffer {
            guard upstreams[v].h2s.count < H2Wire.upstreamBuffers, let b = h2TakeBuffer(reactor) else {
                return h2uNoRoom(v, link, data)
            }
            upstreams[v].h2s.buffers[upstreams[v].h2s.count] = Int32(b)
            upstreams[v].h2s.lengths[upstreams[v].h2s.count] = 0
            upstreams[v].h2s.dataBytes[upstreams[v].h2s.count] = 0
            upstreams[v].h2s.count += 1
        }
        var dataLeft = data
        while unsafe !rest.isEmpty {
            let last = upstreams[v].h2s.count - 1
            let room = last < 0 ? 0 : pool.size - upstreams[v].h2s.lengths[last]
            if room == 0 {
                // (Not within the connection's share of spare buffers, which bounds what its streams hold to send:
                // what the upstream may send is bounded by the windows Tern gave, 64 KiB a stream.)
                guard upstreams[v].h2s.count < H2Wire.upstreamBuffers, let b = h2TakeBuffer(reactor) else {
                    return h2uNoRoom(v, link, dataLeft)
                }
                upstreams[v].h2s.buffers[last + 1] = Int32(b)
                upstreams[v].h2s.lengths[last + 1] = 0
                upstreams[v].h2s.dataBytes[last + 1] = 0
                upstreams[v].h2s.count += 1
                continue
            }
            let k = min(room, rest.count)
            let at = upstreams[v].h2s.lengths[last]
            let buffer = unsafe pool.mutableBytes(UInt16(upstreams[v].h2s.buffers[last]), length: pool.size)
            unsafe (buffer.baseAddress! + at).copyMemory(from: rest.baseAddress!, byteCount: k)
            upstreams[v].h2s.lengths[last] += k
            let d = min(k, dataLeft)
            upstreams[v].h2s.dataBytes[last] += d
            dataLeft -= d
            unsafe rest = unsafe UnsafeRawBufferPointer(rebasing: rest[k...])
        }
    }

    /// No room for what came for a stream (a peer past its window, or no spare buffer in the reactor): its DATA
    /// (`data` bytes not stored) are off the connection, and the stream is reset and fails.
    private func h2uNoRoom(_ v: UID, _ link: H2UpLink, _ data: Int) {
        Log.debug("HTTP/2 upstream stream \(upstreams[v].h2s.stream): no room for its response")
        link.session.consumeConnection(data)
        link.session.reset(stream: upstreams[v].h2s.stream, code: HTTP2ErrorCode.internalError)
        upstreams[v].h2s.gone = true
        upstreams[v].h2s.failed = true
    }

    /// The stream is gone before its response ended: refused (never processed) or failed.
    func h2uStreamGone(_ v: UID, refused: Bool, notSent: Bool = false, _ reactor: Reactor<Backend>) {
        guard upstreams.isCurrent(v), upstreams[v].transport == .h2stream, !upstreams[v].h2s.failed else { return }
        upstreams[v].h2s.gone = true
        upstreams[v].h2s.failed = true
        upstreams[v].h2s.refused = refused
        upstreams[v].h2s.notSent = notSent
        h2uReady(v)
    }

    // MARK: - Handing over to the engine

    /// The engine asks a stream for bytes (`receiveFromUpstream`).
    func h2uWants(_ v: UID, _ reactor: Reactor<Backend>) {
        upstreams[v].h2s.wanting = true
        h2uReady(v)
    }

    func h2uReady(_ v: UID) {
        guard upstreams.isCurrent(v), !upstreams[v].h2s.queued else { return }
        upstreams[v].h2s.queued = true
        h2uReadyList.append(v)
    }

    private func h2uStarve(_ v: UID) {
        guard !upstreams[v].h2s.starved else { return }
        upstreams[v].h2s.starved = true
        h2uStarved.append(v)
    }

    /// A round of `h2Iteration`: the upstream streams ready when it begins (bytes for an engine that asked, sends to
    /// report); those it adds wait for the next round.
    func h2uIterateReady(_ reactor: Reactor<Backend>) {
        let count = h2uReadyList.count
        var i = 0
        while i < count {
            let v = h2uReadyList[i]
            i += 1
            guard upstreams.isCurrent(v), upstreams[v].transport == .h2stream else { continue }
            upstreams[v].h2s.queued = false
            if upstreams[v].h2s.send.releaseOut {
                upstreams[v].h2s.send.releaseOut = false
                let s = upstreams[v].h2s
                if s.send.out >= 0 && s.headSubmitted && s.send.start == s.send.end {
                    release(UInt16(s.send.out), reactor)
                    h2uGaveBuffer(s.parent, reactor)
                    upstreams[v].h2s.send.out = -1
                }
            }
            if upstreams[v].h2s.send.reportSent && !upstreams[v].h2s.failed {
                upstreams[v].h2s.send.reportSent = false
                let n = upstreams[v].h2s.send.unreported
                upstreams[v].h2s.send.unreported = 0
                upstreamSent(v, Int32(n), reactor)
                guard upstreams.isCurrent(v), upstreams[v].transport == .h2stream else { continue }
            }
            // (`starved` is about a buffer to send in: what came back is handed over all the same.)
            if upstreams[v].h2s.wanting { h2uDeliver(v, reactor) }
        }
        h2uReadyList.removeSubrange(0..<count)
    }

    /// Once spare buffers are free: upstream connections and streams that waited for one.
    func h2uServeStarved(_ reactor: Reactor<Backend>) {
        if reactor.backend.buffers.spareAvailable > Self.tlsRecordReserve {
            let waiting = h2uStarved.count
            for k in 0..<waiting {
                let u = h2uStarved[k]
                guard upstreams.isCurrent(u) else { continue }
                if let link = upstreams[u].h2 {
                    link.starved = false
                    h2uFlush(u, reactor)
                } else if upstreams[u].transport == .h2stream {
                    upstreams[u].h2s.starved = false
                    if upstreams[u].h2s.send.starvedSend {
                        upstreams[u].h2s.send.starvedSend = false
                        h2uSend(u, reactor)
                    } else {
                        h2uReady(u)
                    }
                }
            }
            h2uStarved.removeSubrange(0..<waiting)
        }
    }

    private func h2uGaveBuffer(_ parent: UID?, _ reactor: Reactor<Backend>) {
        guard let parent, upstreams.isCurrent(parent), let link = upstreams[parent].h2 else { return }
        link.buffersHeld -= 1
        // Below its share again: it may take the requests that waited for a connection with room.
        if link.buffersHeld == H2Wire.buffersPerConnection - 1 { h2uServePending(upstreams[parent].endpoint, reactor) }
    }

    /// Hands the engine what a stream has: the response's bytes a buffer at a time, or its failure.
    private func h2uDeliver(_ v: UID, _ reactor: Reactor<Backend>) {
        let token = token(.upstreamReceive, v)
        let parent = upstreams[v].h2s.parent
        let link = parent.flatMap { upstreams.isCurrent($0) ? upstreams[$0].h2 : nil }
        if upstreams[v].h2s.consumable > 0, let link {
            // The engine took what it was given before: the upstream may send that much more on the stream.
            if !upstreams[v].h2s.gone { link.session.consumeStream(upstreams[v].h2s.stream, upstreams[v].h2s.consumable) }
            upstreams[v].h2s.consumable = 0
            if let parent { h2uFlush(parent, reactor) }
            guard upstreams.isCurrent(v), upstreams[v].transport == .h2stream else { return }
        }
        // The last of a Content-Length body waits for the stream's end when the client is HTTP/2 and so could get
        // trailers that may come before it (an HTTP/1.1 client's are dropped: nothing waits).
        if upstreams[v].h2s.count == 1 && upstreams[v].h2s.lengthLeft == 0 && !upstreams[v].h2s.responseEnded
            && !upstreams[v].h2s.failed, let x = upstreams[v].exchange, exchanges.isCurrent(x), exchanges[x].http2 { return }
        if upstreams[v].h2s.count > 0 {
            let b = UInt16(upstreams[v].h2s.buffers[0]), n = upstreams[v].h2s.lengths[0], d = upstreams[v].h2s.dataBytes[0]
            let count = upstreams[v].h2s.count
            for k in 1..<H2Wire.upstreamBuffers {
                upstreams[v].h2s.buffers[k - 1] = upstreams[v].h2s.buffers[k]
                upstreams[v].h2s.lengths[k - 1] = upstreams[v].h2s.lengths[k]
                upstreams[v].h2s.dataBytes[k - 1] = upstreams[v].h2s.dataBytes[k]
            }
            upstreams[v].h2s.buffers[H2Wire.upstreamBuffers - 1] = -1
            upstreams[v].h2s.count = count - 1
            if count == 1 { upstreams[v].h2s.openChunk = -1 }
            upstreams[v].h2s.consumable = d
            // Off the connection (bounded by the stream's window): the connection's window reopens now.
            link?.session.consumeConnection(d)
            upstreams[v].h2s.wanting = false
            return upstreamReceived(v, Completion(token: token, result: Int32(n), buffer: b), reactor)
        }
        guard upstreams[v].h2s.failed else { return }  // nothing yet: delivered when it comes
        upstreams[v].h2s.wanting = false
        if upstreams[v].h2s.refused, let x = upstreams[v].exchange, exchanges.isCurrent(x),
           exchanges[x].attempt.connection == v, exchanges[x].response.state == .head, exchanges[x].response.held.isEmpty {
            // Never processed: the router may send it again.
            let notSent = upstreams[v].h2s.notSent
            Log.debug(notSent ? "HTTP/2 upstream connection went away before the stream was sent" : "HTTP/2 upstream refused the stream")
            closeUpstream(v, reactor)
            exchanges[x].attempt.connection = nil
            return attemptFailed(x, notSent ? .notSent : .refusedStream, responseBytesSeen: false, reactor)
        }
        upstreamReceived(v, Completion(token: token, result: H2Wire.errorReset), reactor)
    }

    // MARK: - A stream's end

    /// The engine is done with a stream's slot (`closeUpstream`): the stream ends there, reset unless both sides
    /// ended; its buffers go back; its connection may serve a waiting request, or go idle.
    func h2uStreamClose(_ v: UID, _ reactor: Reactor<Backend>) {
        let parent = upstreams[v].h2s.parent
        // (Before the copy below, which would share the array.)
        h2TakeBackTrailers(&upstreams[v].h2s.send.body)
        let s = upstreams[v].h2s
        h2uStreamCount -= 1
        if s.send.out >= 0 { release(UInt16(s.send.out), reactor) }
        for k in 0..<s.count { release(UInt16(s.buffers[k]), reactor) }
        if s.parser >= 0 { requestParsers.give(s.parser) }
        upstreams[v].h2s = H2UpStream()
        guard let u = parent, upstreams.isCurrent(u), let link = upstreams[u].h2 else { return }
        if s.send.out >= 0 { link.buffersHeld -= 1 }
        if s.stream > 0 && !s.gone {
            let requestDone = s.send.body.ended && s.send.start == s.send.end
            if !s.responseEnded || !requestDone {
                // Cut short (a timeout, the client gone, a failure): the upstream stops working on it.
                link.session.reset(stream: s.stream, code: HTTP2ErrorCode.cancel)
            }
        }
        // What it held of the connection's window is given back.
        var held = 0
        for k in 0..<s.count { held += s.dataBytes[k] }
        link.session.consumeConnection(held)
        if let i = link.streams.firstIndex(where: { $0.connection == v }) { link.streams.remove(at: i) }
        h2uFlush(u, reactor)
        guard upstreams.isCurrent(u), upstreams[u].h2 === link else { return }
        h2uServePending(upstreams[u].endpoint, reactor)
        h2uIdleCheck(u, reactor)
    }
}
