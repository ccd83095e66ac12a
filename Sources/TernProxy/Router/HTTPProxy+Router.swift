// The router: an upstream attempt gets a connection (pooled, new, or a place in the queue), sends the
// request, and on failure is answered or tried again (RetryPolicy).
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    /// Finds the exchange an upstream connection: an idle pooled one, a new one, or a place in the queue.
    func acquireUpstream(_ x: XID, _ reactor: Reactor<Backend>) {
        // A relayed TCP connection has an upstream connection of its own, never a pooled HTTP one.
        if exchanges[x].relayed != nil { return connect(for: x, reactor) }
        if wantsHTTP2(x) { return h2uAcquire(x, reactor) }
        exchanges[x].attempt.http2 = false
        let e = exchanges[x].attempt.endpoint
        if pools.slots[e].tls != nil && pools.slots[e].tls?.sni == nil {
            // Auto SNI: only a connection made for the same server name serves it; those of other names stay
            // pooled for theirs, unless the pool is full (then the oldest of them makes room).
            let name = exchanges[x].attempt.serverName
            var i = pools.slots[e].idle.count
            while i > 0 {
                i -= 1
                let u = pools.slots[e].idle[i]
                guard upstreams.isCurrent(u), upstreams[u].state == .idle else {
                    pools.slots[e].idle.remove(at: i)
                    continue
                }
                if upstreams[u].serverName == name {
                    pools.slots[e].idle.remove(at: i)
                    guard admitRequest(x, reactor) else { return pools.slots[e].idle.append(u) }
                    bind(u, to: x, reused: true, reactor)
                    return
                }
            }
            if let circuit = exchanges[x].circuit, !circuit.connectionsLeft, !pools.slots[e].idle.isEmpty {
                closeUpstream(pools.slots[e].idle.removeFirst(), reactor)
            }
        }
        while let u = pools.slots[e].idle.popLast() {
            guard upstreams.isCurrent(u), upstreams[u].state == .idle else { continue }
            guard upstreams[u].serverName == exchanges[x].attempt.serverName else {
                // (Auto SNI only, handled above: keep it.)
                pools.slots[e].idle.append(u)
                break
            }
            guard admitRequest(x, reactor) else { return pools.slots[e].idle.append(u) }
            bind(u, to: x, reused: true, reactor)
            return
        }
        // Not given a ready connection, the request is pending (as Envoy counts it, connecting or queued) until it
        // gets one: beyond the cluster's pending limit it is refused.
        guard admitPending(x) else { return fail(x, .overflow, reactor) }
        // (Entries of requests that ended meanwhile are dropped from the front first: they wait for nothing.)
        while let first = pools.slots[e].pending.first, !isWaiting(first, for: e) { _ = pools.slots[e].pending.pop() }
        if pools.slots[e].pending.count == 0 && mayConnect(x, e) { return connect(for: x, reactor) }
        // Behind requests already waiting here (they go first), or at the cluster's connection limit.
        if let circuit = exchanges[x].circuit, !circuit.connectionsLeft { circuit.cxOverflow.add(1, ordering: .relaxed) }
        parkWaiting(x, reactor)
        guard pools.slots[e].pending.push(x, limit: Self.pendingQueueLimit) else {
            discharge(x, .pending)
            return fail(x, .overflow, reactor)
        }
        Log.debug("request waits for an upstream connection (\(pools.slots[e].pending.count) waiting)")
        connectWaiting(e, reactor)
    }

    /// The most requests one endpoint's queue on one reactor holds: the cluster's pending limit decides first;
    /// this only bounds the queue's memory when that limit is very large.
    static var pendingQueueLimit: Int { 1 << 20 }

    /// Opens a connection to exchange `x`'s endpoint for it (to speak HTTP/2 once made, with `http2`).
    func connect(for x: XID, http2: Bool = false, _ reactor: Reactor<Backend>) {
        let e = exchanges[x].attempt.endpoint
        // Upstream sockets may use part of the reserve beyond the descriptor cap, never the descriptors kept for
        // the side listeners, pipes and logs: past that the request waits for one (closing idle connections at
        // the cap frees some), retried shortly; its own timeouts still bound the wait.
        guard counters.descriptors.load(ordering: .relaxed) - Self.acceptMargin < relay.descriptorCap else {
            return waitForDescriptor(x, reactor)
        }
        let fd: Int32
        do {
            fd = try System.tcpSocket(family: pools.slots[e].address.family)
        } catch {
            if error.errno == Errno.EMFILE || error.errno == Errno.ENFILE { return waitForDescriptor(x, reactor) }
            Log.debug("upstream socket: \(error)")
            fail(x, .connectFailure, reactor)
            return
        }
        if let source = pools.slots[e].source {
            do {
                try System.bindSource(fd, source)
            } catch {
                Log.debug("upstream socket: \(error)")
                System.close(fd)
                fail(x, .connectFailure, reactor)
                return
            }
        }
        guard let u = upstreams.insert(UpstreamConnection(fd: fd, endpoint: e)) else {
            System.close(fd)
            fail(x, .overflow, reactor)
            return
        }
        pools.connectionOpened(e)
        counters.descriptors.add(1, ordering: .relaxed)
        metrics?.endpoint(pools.slots[e].key, EndpointWords.connections, 1)
        System.setNoDelay(fd)
        let connectTimeout = chargeConnection(u, for: x)
        reactor.backend.register(fd: fd)
        upstreams[u].exchange = x
        upstreams[u].serverName = exchanges[x].attempt.serverName
        if http2 {
            upstreams[u].http2 = true
            pools.slots[e].h2Connecting += 1
        }
        exchanges[x].attempt.connection = u
        upstreams[u].connectTimer = reactor.timers.schedule(token(.connectTimer, u), at: saturatingAdd(System.monotonicNanos(), connectTimeout))
        upstreams[u].inflight += 1
        reactor.backend.connect(fd: fd, to: pools.slots[e].address, token: token(.upstreamConnect, u))
    }

    /// Out of descriptors for exchange `x`'s upstream socket: it waits in `descriptorWaiters` (an upstream
    /// connection to its endpoint coming free takes it, see `recycle`; otherwise retried every 5 ms, oldest
    /// first, while descriptors are below the cap again), for at most `--connect-timeout` (then 503 UF, as a
    /// connect that did not complete). Counted and logged once per wait.
    func waitForDescriptor(_ x: XID, _ reactor: Reactor<Backend>) {
        parkWaiting(x, reactor)
        if retryingSince == nil {
            Log.debug("no descriptor for an upstream socket: the request waits for one")
            counters.upstreamDescriptorWaits.add(1, ordering: .relaxed)
        }
        descriptorWaiters.append(DescriptorWaiter(exchange: x, since: retryingSince ?? System.monotonicNanos()))
        armDescriptorRetry(reactor)
    }

    /// A request about to wait for an upstream connection gives back the shared receive buffer its bytes are
    /// in (they move to an assembly buffer of its own, as a slow head's do): requests waiting in numbers must
    /// not leave the reactor without buffers to receive the responses that would let them go on. Their memory
    /// is bounded by `--max-pending-requests` and the descriptors, not by the head budget.
    func parkWaiting(_ x: XID, _ reactor: Reactor<Backend>) {
        // An unbudgeted park never throws.
        release(try? bytes.park(&exchanges[x].request.held, budgeted: false), reactor)
    }

    private func armDescriptorRetry(_ reactor: Reactor<Backend>) {
        guard !descriptorRetryArmed else { return }
        descriptorRetryArmed = reactor.timers.schedule(Token(op: Op.descriptorRetry.rawValue, slot: 0, generation: 0),
                                                       at: System.monotonicNanos() + 5_000_000) != nil
    }

    /// The retry timer fired. Entries of requests that ended meanwhile go; requests that waited past
    /// `--connect-timeout` are answered 503 UF; then the rest, oldest first, go through `acquireUpstream` again
    /// (an idle connection, a new one within `--max-upstream-connections`, or the pending queue) while
    /// descriptors allow, stopping at the first that has to wait again (it keeps its place).
    func retryDescriptorWaiters(_ reactor: Reactor<Backend>) {
        descriptorWaiters.removeAll { !exchanges.isCurrent($0.exchange) || !isWaiting($0.exchange, for: exchanges[$0.exchange].attempt.endpoint) }
        let expired = System.monotonicNanos() &- relay.connectTimeout.nanoseconds
        var i = 0
        while i < descriptorWaiters.count {
            if descriptorWaiters[i].since <= expired {
                let x = descriptorWaiters.remove(at: i).exchange
                Log.debug("no descriptor for an upstream socket within \(relay.connectTimeout) (UF)")
                fail(x, .connectFailure, reactor)
            } else {
                i += 1
            }
        }
        var done = 0
        while done < descriptorWaiters.count
            && counters.descriptors.load(ordering: .relaxed) - Self.acceptMargin < relay.descriptorCap
        {
            let w = descriptorWaiters[done]
            done += 1
            guard exchanges.isCurrent(w.exchange), isWaiting(w.exchange, for: exchanges[w.exchange].attempt.endpoint) else { continue }
            let before = descriptorWaiters.count
            retryingSince = w.since
            acquireUpstream(w.exchange, reactor)
            retryingSince = nil
            if descriptorWaiters.count > before {
                // It waits again: back to its place, and so would the rest.
                descriptorWaiters[done - 1] = descriptorWaiters.removeLast()
                done -= 1
                break
            }
        }
        descriptorWaiters.removeFirst(done)
        if !descriptorWaiters.isEmpty { armDescriptorRetry(reactor) }
    }

    func upstreamConnected(_ u: UID, _ result: Int32, _ reactor: Reactor<Backend>) {
        if upstreams[u].state == .closing {
            finishUpstreamIfQuiet(u, reactor)
            return
        }
        if result < 0 {
            cancel(&upstreams[u].connectTimer, reactor)
            Log.debug("upstream connect failed: \(Errno.name(-result)) (UF)")
            connectFailed(u, reactor)
            return
        }
        // TLS origination: the handshake first, within the same connect timeout.
        if upstreamStartTLS(u, reactor) { return }
        upstreamReady(u, reactor)
    }

    /// The connection is made (and its TLS handshake done): it serves the request it was made for.
    func upstreamReady(_ u: UID, _ reactor: Reactor<Backend>) {
        if upstreams[u].http2 { return h2uReady(u, reactor) }
        cancel(&upstreams[u].connectTimer, reactor)
        // The exchange slot of an HTTP/1.1 connection serves request after request: the one connected for must
        // still be the one waiting for this connection.
        guard let x = upstreams[u].exchange, exchanges.isCurrent(x), exchanges[x].attempt.connection == u else {
            recycle(u, reactor)
            return
        }
        if exchanges[x].relayed == nil && exchanges[x].circuit != nil && !exchanges[x].charges.contains(.request) {
            // Unlinked while admitted: a request refused (503 UO) leaves the new connection to whoever waits next.
            exchanges[x].attempt.connection = nil
            upstreams[u].exchange = nil
            guard admitRequest(x, reactor) else { return recycle(u, reactor) }
        }
        bind(u, to: x, reused: false, reactor)
    }

    /// Gives upstream connection `u` to exchange `x` and sends the request head.
    func bind(_ u: UID, to x: XID, reused: Bool, _ reactor: Reactor<Backend>) {
        if upstreams[u].state == .idle { idleUpstreams -= 1 }
        upstreams[u].state = .bound
        upstreams[u].exchange = x
        upstreams[u].reused = reused
        if upstreams[u].requestsLeft != Int.max { upstreams[u].requestsLeft -= 1 }
        exchanges[x].attempt.connection = u
        recordOutcome(x, .connected)
        if exchanges[x].relayed != nil { return relayConnected(x, reactor) }
        sendRequestHead(x, reactor)
    }

    /// An upstream connection could not be made (refused, or the connect timed out): its attempt failed (UF).
    func connectFailed(_ u: UID, _ reactor: Reactor<Backend>) {
        let x = upstreams[u].exchange
        upstreams[u].exchange = nil
        closeUpstream(u, reactor)
        guard let x, exchanges.isCurrent(x), exchanges[x].attempt.connection == u else { return }
        exchanges[x].attempt.connection = nil
        attemptFailed(x, .connectFailure, responseBytesSeen: false, reactor)
    }

    /// The upstream connection of an exchange is gone before the response ended (UC).
    func upstreamLost(_ x: XID, _ u: UID, _ reactor: Reactor<Backend>) {
        let error = ProxyError.reset(reusedConnection: upstreams[u].reused)
        let seen = !exchanges[x].response.held.isEmpty
        closeUpstream(u, reactor)
        exchanges[x].attempt.connection = nil
        attemptFailed(x, error, responseBytesSeen: seen, reactor)
    }
}
