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
        // Its exchange slot first (HTTP/1.1: one for the connection's life), then the connection naming it.
        guard let x = exchanges.insert(Exchange(downstream: DID(index: 0, generation: 0))) else {
            counters.active.subtract(1, ordering: .relaxed)
            counters.rejectedOverLimit.add(1, ordering: .relaxed)
            System.close(fd)
            return
        }
        guard let id = downstreams.insert(DownstreamConnection(fd: fd, listener: listener, exchange: x)) else {
            exchanges.remove(x)
            counters.active.subtract(1, ordering: .relaxed)
            counters.rejectedOverLimit.add(1, ordering: .relaxed)
            System.close(fd)
            return
        }
        exchanges[x].downstream = id
        counters.accepted.add(1, ordering: .relaxed)
        counters.descriptors.add(1, ordering: .relaxed)
        // How the connection is taken (TLS, plaintext, or decided by its first bytes; an inbound side's
        // PeerAuthentication, Filters/HTTPProxy+Authorization.swift); STRICT with no TLS to offer closes it.
        var port: UInt16 = 0
        var routable = true
        if isInbound(listener) {
            port = listener < listenerUpstreamPorts.count ? listenerUpstreamPorts[listener] : 0
            if port == 0 && listenerInbound[listener] {
                // An `--inbound` listener without `--inbound-app`: iptables redirected the connection here, and
                // its original destination (the app's address and port) is where it goes. One made straight to
                // the listener has none.
                // (IPv6: its passthrough would need ::6 on lo to leave the pod's own rules alone; not yet.)
                if let original = System.originalDestination(fd), original.port != listenerPorts[listener], original.ipv4 != nil {
                    downstreams[id].originalDestination = original
                    port = original.port
                } else {
                    routable = false
                }
            }
            downstreams[id].destinationPort = port
        } else if routes != nil {
            // An outbound listener: where a connection iptables redirected was going (outboundTrafficPolicy).
            if let original = System.originalDestination(fd), original.port != listenerPorts[listener] {
                downstreams[id].originalDestination = original
            } else if listenerInbound.contains(true), !((try? System.peerAddress(fd)).map(Self.isAppClient) ?? false) {
                // A sidecar's outbound listener reached without a redirect by anyone but a local app (another
                // host, or its own inbound side passing a connection for port 15001 on from 127.0.0.6): refused,
                // as Istio blackholes 15001, or anyone could send requests on under the workload's identity.
                counters.outboundDirectRefused.add(1, ordering: .relaxed)
                routable = false
            }
        }
        let transport = routable ? inboundTransport(listener, port: port) : .refuse
        if transport == .sniff { downstreams[id].sniffTLS = true }
        if transport == .refuse || (transport == .tls && !tlsAccepted(id, reactor)) {
            if !routable {
                if isInbound(listener) {
                    counters.inboundWithoutDestination.add(1, ordering: .relaxed)
                    Log.debug("inbound connection not redirected by iptables (no IPv4 original destination) and no --inbound-app: closed")
                }
            } else if transport == .refuse {
                counters.peerAuthenticationRefused.add(1, ordering: .relaxed)
            } else if tlsPolicy?.current.mesh?.presentable(now: MeshIdentity.nowSeconds) == false {
                // (Counted as identity_expired; the expiry was logged once.)
            } else {
                Log.warn("cannot start a TLS session (out of memory): closing the connection")
            }
            exchanges.remove(x)
            downstreams.remove(id)
            counters.active.subtract(1, ordering: .relaxed)
            counters.descriptors.subtract(1, ordering: .relaxed)
            System.close(fd)
            return
        }
        System.setNoDelay(fd)
        reactor.backend.register(fd: fd)
        // Per connection, composed on the stack: nothing allocated.
        let peer = try? System.peerAddress(fd)
        if let peer {
            peer.withText(withPort: false) { bytes.setClientAddress(Int(id.index), $0) }
            if isInbound(listener) {
                downstreams[id].peerIP = Self.ipAddress(peer)
                downstreams[id].localIP = (try? System.localAddress(fd)).flatMap(Self.ipAddress)
            }
        } else {
            bytes.setClientAddress(Int(id.index), "unknown")
        }
        if let capture {
            // Reported per exchange: HTTP/1.1's one exchange slot carries its connection's addresses.
            if let peer {
                peer.withText(withPort: true) { capture.set(Int(x.index), .downstreamRemote, $0) }
            } else {
                capture.clear(Int(x.index), .downstreamRemote)
            }
            capture.set(Int(x.index), .downstreamLocal, listener < listenerNames.count ? listenerNames[listener] : "")
        }
        if listenerRelaysTCP[listener] && downstreams[id].transport == .tls { return relayAccepted(id, reactor) }
        awaitRequest(id, reactor)
    }

    /// Whether `peer` may be an app of this pod calling its sidecar's outbound listener straight: a loopback
    /// address other than 127.0.0.6 (the inbound side's own source).
    static func isAppClient(_ peer: SocketAddress) -> Bool {
        if let v4 = peer.ipv4 { return v4 >> 24 == 127 && v4 != 0x7F00_0006 }
        if let v6 = peer.ipv6 { return v6.high == 0 && v6.low == 1 }
        return false
    }

    /// Gives back the passthrough pool a connection held (`passthroughPool`), as it is freed.
    func releasePassthroughPool(_ id: DID, _ reactor: Reactor<Backend>) {
        let e = Int(downstreams[id].passthroughPool)
        guard e >= 0 else { return }
        downstreams[id].passthroughPool = -1
        passthroughReleased(e, reactor)
    }

    /// A passthrough pool lost a holder: once no client connection holds it, its idle connections close (the pool
    /// is freed with the last of them), as a retired pool's do.
    func passthroughReleased(_ e: Int, _ reactor: Reactor<Backend>) {
        pools.exchangeFinished(e)
        guard pools.slots[e].live, !pools.slots[e].keepsIdle else { return }
        while let u = pools.slots[e].idle.popLast() {
            if upstreams.isCurrent(u) { closeUpstream(u, reactor) }
        }
        for u in pools.slots[e].h2Links { h2uIdleCheck(u, reactor) }
    }

    /// Waits for the next request head on a client connection (idle keep-alive until its first byte).
    func awaitRequest(_ id: DID, _ reactor: Reactor<Backend>) {
        // A connection waiting for a request holds no parser (each reserves a field table): it takes them again
        // when its next head arrives, so idle keep-alive connections cost their slots and little more.
        let x = downstreams[id].exchange
        requestParsers.give(exchanges[x].request.parser)
        responseParsers.give(exchanges[x].response.parser)
        exchanges[x].request.parser = -1
        exchanges[x].response.parser = -1
        downstreams[id].idleSince = System.monotonicNanos()
        // Only a connection that has had an exchange may be closed to make room at the descriptor cap (a client
        // expects a kept-alive connection to close between requests and sends again on a new one). A new
        // connection's request may be on its way already: closing it would lose it unanswered; it is bounded by
        // the first-byte timeout instead.
        if downstreams[id].spoke { idle.append(id, downstreams) }
        if downstreams[id].idleTimer == nil {
            downstreams[id].idleTimer = reactor.timers.schedule(token(.idleTimer, id), at: idleDue(id))
        }
        receiveFromClient(id, reactor)
    }

    /// When a connection waiting for a request is closed: the idle timeout after its last exchange, or, before
    /// its first byte, the first-byte timeout if that is shorter.
    func idleDue(_ id: DID) -> UInt64 {
        var limit = relay.idleTimeout.nanoseconds
        if !downstreams[id].spoke { limit = min(limit, settings.firstByteTimeout.nanoseconds) }
        return saturatingAdd(downstreams[id].idleSince, limit)
    }

    func receiveFromClient(_ id: DID, _ reactor: Reactor<Backend>) {
        if downstreams[id].transport == .h2stream { return h2Wants(id, reactor) }
        if downstreams[id].transport == .tls { return tlsWantsBytes(.client(id), reactor) }
        guard !downstreams[id].receiving else { return }
        downstreams[id].receiving = true
        downstreams[id].inflight += 1
        reactor.backend.receive(fd: downstreams[id].fd, token: token(.clientReceive, id), multishot: false)
    }

    func clientReceived(_ id: DID, _ c: Completion, _ reactor: Reactor<Backend>) {
        if downstreams[id].h2 != nil { return h2Received(id, c, reactor) }
        // Fields read one by one: a copy of the whole Session would retain every reference it holds.
        let phase = downstreams[id].phase, x = downstreams[id].exchange
        if phase == .closing {
            release(c.bufferID, reactor)
            finishDownstreamIfQuiet(id, reactor)
            return
        }
        if phase == .lingering || exchanges[x].reply != nil {
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
        if downstreams[id].sniffTLS {
            // PERMISSIVE: a TLS handshake record first makes it a TLS connection, anything else plaintext.
            downstreams[id].sniffTLS = false
            if tlsRecordFirst(buffer, Int(c.result)) { return tlsAdopt(id, c, reactor) }
        }
        // A connection whose first bytes are the HTTP/2 preface speaks HTTP/2 (Downstream/HTTPProxy+H2+Unsafe.swift).
        if !downstreams[id].spoke && downstreams[id].transport != .h2stream && h2Preface(buffer, Int(c.result)) {
            downstreams[id].spoke = true
            return h2Begin(id, c, reactor)
        }
        exchanges[x].lastActivity = System.monotonicNanos()
        downstreams[id].spoke = true
        if downstreams[id].inIdleList { idle.remove(id, downstreams) }
        let request = exchanges[x].request.state
        switch request {
        case .head:
            let wasEmpty = exchanges[x].request.held.isEmpty, exchange = exchanges[x].active
            do {
                let (a, b) = try bytes.take(buffer: buffer, count: Int(c.result), into: &exchanges[x].request.held, budgeted: true)
                release(a, reactor)
                release(b, reactor)
            } catch {
                release(buffer, reactor)
                if error == .overBudget { headRefusedOverBudget() }
                fail(x, error == .tooLarge ? .headersTooLarge : .overloaded, reactor)
                return
            }
            if wasEmpty && !exchange { exchanges[x].headStart = exchanges[x].lastActivity }
            requestHead(x, reactor)
        case .body, .tunnel:
            precondition(!exchanges[x].request.held.holdsStorage, "request bytes held while receiving more")
            exchanges[x].request.held = Held(buffer: Int32(buffer), assembly: -1, start: 0, end: Int(c.result))
            if request == .body { requestBody(x, reactor) } else { tunnelToUpstream(x, reactor) }
        case .waiting where exchanges[x].gathering:
            gathered(x, buffer: buffer, count: Int(c.result), reactor)
        case .waiting, .sending, .splicing, .done:
            // Not receiving in these states; a stray completion is a bug.
            release(buffer, reactor)
            bug("client receive completed in request state \(request)")
        }
    }

    /// The client closed (0) or failed (< 0) its side.
    func clientEnded(_ id: DID, _ result: Int32, _ reactor: Reactor<Backend>) {
        let x = downstreams[id].exchange
        let tunnel = exchanges[x].request.state == .tunnel
        if tunnel && result == 0 {
            downstreams[id].clientEOF = true
            if let u = exchanges[x].attempt.connection {
                if upstreams[u].transport == .tls {
                    tlsShutdownWrite(.upstream(u), reactor)  // close_notify after what is in flight
                } else {
                    _ = System.shutdown(upstreams[u].fd, write: true, read: false)
                }
            }
            if exchanges[x].upstreamEOF { closeDownstream(id, reset: false, reactor) }
            return
        }
        // Between requests this is the normal end of a keep-alive connection; inside one the client gave up:
        // the upstream side is abandoned with it.
        if exchanges[x].active { Log.debug("client closed during an exchange (\(result < 0 ? Errno.name(-result) : "EOF"))") }
        closeDownstream(id, reset: result < 0 && tunnel, reactor)
    }

    func sendToClient(_ id: DID, _ reactor: Reactor<Backend>) {
        if toClient.remaining(Int(id.index)) == 0 {
            clientSent(id, 0, reactor, nothing: true)
            return
        }
        if downstreams[id].transport == .tls { return tlsSend(.client(id), reactor) }
        if downstreams[id].transport == .h2stream { return h2Send(id, reactor) }
        downstreams[id].sending = true
        downstreams[id].inflight += 1
        reactor.backend.send(fd: downstreams[id].fd, vectors: toClient, index: Int(id.index), token: token(.clientSend, id))
    }

    /// Closes the write side and reads what the client still sends until it closes or the linger time passes.
    func lingerClose(_ id: DID, _ reactor: Reactor<Backend>) {
        // An HTTP/2 stream ends with its response: there is no socket to linger on.
        if downstreams[id].transport == .h2stream {
            downstreams[id].h2s.graceful = true
            return closeDownstream(id, reset: false, reactor)
        }
        let x = downstreams[id].exchange
        idle.remove(id, downstreams)
        downstreams[id].phase = .lingering
        cancel(&downstreams[id].idleTimer, reactor)
        cancel(&downstreams[id].headerTimer, reactor)
        dropHeld(&exchanges[x].request.held, reactor)
        dropHeld(&exchanges[x].response.held, reactor)
        if downstreams[id].transport == .tls {
            tlsShutdownWrite(.client(id), reactor)
        } else {
            _ = System.shutdown(downstreams[id].fd, write: true, read: false)
        }
        downstreams[id].lingerTimer = reactor.timers.schedule(token(.lingerTimer, id), at: deadline(after: settings.lingerTimeout))
        receiveFromClient(id, reactor)
    }

    func closeDownstream(_ id: DID, reset: Bool, _ reactor: Reactor<Backend>) {
        if downstreams[id].phase == .closing { return }
        // An HTTP/2 connection ends its streams first.
        if let link = downstreams[id].h2, !link.ended { return h2Close(id, reset: reset, reactor) }
        idle.remove(id, downstreams)
        let x = downstreams[id].exchange
        if !exchanges[x].report.recorded {
            // The exchange ends with the connection: the client went away (DC), Tern closed it at the end of
            // the drain timeout (LR), or a failure after the response started already set its flag. (A relayed
            // TCP connection's close is its normal end.)
            if exchanges[x].report.flags.isEmpty && !downstreams[id].relaysTCP {
                exchanges[x].report.cutAtDrainTimeout = stopping
                exchanges[x].report.flags = stopping ? .localReset : .downstreamConnectionTermination
            }
            recordExchange(x)
        }
        if downstreams[id].transport == .h2stream {
            downstreams[id].phase = .closing
            h2StreamClose(id, reactor)
            detachUpstream(x, reusable: false, reactor)
            cancel(&downstreams[id].headerTimer, reactor)
            cancel(&downstreams[id].idleTimer, reactor)
            cancel(&exchanges[x].timer, reactor)
            return finishDownstreamIfQuiet(id, reactor)
        }
        if reset {
            counters.resetsPropagated.add(1, ordering: .relaxed)
            System.setLingerReset(downstreams[id].fd)
        }
        // A graceful close of a TLS connection first sends the records the engine was told are sent
        // (tlsReportEarly), within the linger timeout; a reset, or the end of the drain timeout, does not wait.
        let drain = !reset && !stopping && downstreams[id].transport == .tls && tlsUnsent(.client(id))
        downstreams[id].phase = .closing
        detachUpstream(x, reusable: false, reactor)
        cancel(&downstreams[id].headerTimer, reactor)
        cancel(&downstreams[id].idleTimer, reactor)
        cancel(&exchanges[x].timer, reactor)
        cancel(&downstreams[id].lingerTimer, reactor)
        let fd = downstreams[id].fd
        if downstreams[id].inflight > 0 {
            if downstreams[id].transport == .tls {
                tlsCancel(.client(id), keepSending: drain, reactor)
            } else {
                if downstreams[id].receiving { reactor.backend.cancel(fd: fd, token: token(.clientReceive, id)) }
                if downstreams[id].sending { reactor.backend.cancel(fd: fd, token: token(.clientSend, id)) }
            }
            if downstreams[id].clientSplice != 0 {
                reactor.backend.cancel(fd: fd, token: Token(op: downstreams[id].clientSplice, slot: id.index, generation: id.generation))
            }
            _ = System.shutdown(fd, write: false, read: true)
        }
        if drain, let tls {
            tls[Int(id.index)].draining = true
            tlsFlush(.client(id), reactor)  // (records still filling, with none in flight: sent now)
            downstreams[id].lingerTimer = reactor.timers.schedule(token(.lingerTimer, id), at: deadline(after: settings.lingerTimeout))
        }
        finishDownstreamIfQuiet(id, reactor)
    }

    func finishDownstreamIfQuiet(_ id: DID, _ reactor: Reactor<Backend>) {
        guard downstreams[id].inflight == 0 else { return }
        let x = downstreams[id].exchange
        cancel(&downstreams[id].lingerTimer, reactor)
        requestFinished(x)
        dropHeld(&exchanges[x].request.extras, reactor)
        dropHeld(&exchanges[x].response.extras, reactor)
        dropHeld(&exchanges[x].cors, reactor)
        // A pipe left mid-transfer may hold bytes, and a cancelled splice of the upstream socket may still
        // hold it: it is closed, never reused (the kernel keeps its own reference while an operation runs).
        for pipe in [exchanges[x].request.pipe, exchanges[x].response.pipe] {
            if let pipe { reactor.pipes.release(pipe, holdsData: true) }
        }
        dropHeld(&exchanges[x].request.held, reactor)
        dropHeld(&exchanges[x].response.held, reactor)
        requestParsers.give(exchanges[x].request.parser)
        responseParsers.give(exchanges[x].response.parser)
        if downstreams[id].transport == .h2stream {
            // A stream's slots: no socket, and not a client connection of the counts.
            h2StreamFree(id, reactor)
            releasePassthroughPool(id, reactor)
            exchanges.remove(x)
            downstreams.remove(id)
            h2StreamCount -= 1
            return
        }
        if downstreams[id].h2 != nil { h2Free(id, reactor) }
        if downstreams[id].transport == .tls {
            tlsFree(.client(id), reactor)
            downstreams[id].transport = .plain
        }
        reactor.backend.unregister(fd: downstreams[id].fd)
        System.close(downstreams[id].fd)
        if downstreams[id].closingForRoom { closingForRoom -= 1 }
        releasePassthroughPool(id, reactor)
        exchanges.remove(x)
        downstreams.remove(id)
        counters.active.subtract(1, ordering: .relaxed)
        counters.descriptors.subtract(1, ordering: .relaxed)
    }
}
