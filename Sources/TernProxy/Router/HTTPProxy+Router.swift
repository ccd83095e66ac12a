// The router: an upstream attempt gets a connection (pooled, new, or a place in the queue), sends the
// request, and on failure is answered or tried again (RetryPolicy).
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    /// Finds the exchange an upstream connection: an idle pooled one, a new one, or a place in the queue.
    func acquireUpstream(_ id: DID, _ reactor: Reactor<Backend>) {
        let e = downstreams[id].exchange.attempt.endpoint
        while let u = pools.slots[e].idle.popLast() {
            guard upstreams.isCurrent(u), upstreams[u].state == .idle else { continue }
            bind(u, to: id, reused: true, reactor)
            return
        }
        if pools.slots[e].connections < settings.maxUpstreamConnections {
            connect(for: id, reactor)
        } else if pools.slots[e].pending.push(id, limit: settings.maxPendingRequests) {
            Log.debug("request waits for an upstream connection (\(pools.slots[e].pending.count) waiting)")
        } else {
            Log.debug("pending request queue full (UO)")
            fail(id, .overflow, reactor)
        }
    }

    func connect(for id: DID, _ reactor: Reactor<Backend>) {
        let e = downstreams[id].exchange.attempt.endpoint
        let fd: Int32
        do {
            fd = try System.tcpSocket(family: pools.slots[e].address.family)
        } catch {
            Log.debug("upstream socket: \(error)")
            fail(id, .connectFailure, reactor)
            return
        }
        guard let u = upstreams.insert(UpstreamConnection(fd: fd, endpoint: e)) else {
            System.close(fd)
            fail(id, .overflow, reactor)
            return
        }
        pools.connectionOpened(e)
        metrics?.endpoint(pools.slots[e].key, EndpointWords.connections, 1)
        System.setNoDelay(fd)
        reactor.backend.register(fd: fd)
        upstreams[u].downstream = id
        downstreams[id].exchange.attempt.connection = u
        upstreams[u].connectTimer = reactor.timers.schedule(token(.connectTimer, u), at: deadline(after: relay.connectTimeout))
        upstreams[u].inflight += 1
        reactor.backend.connect(fd: fd, to: pools.slots[e].address, token: token(.upstreamConnect, u))
    }

    func upstreamConnected(_ u: UID, _ result: Int32, _ reactor: Reactor<Backend>) {
        if upstreams[u].state == .closing {
            finishUpstreamIfQuiet(u, reactor)
            return
        }
        cancel(&upstreams[u].connectTimer, reactor)
        if result < 0 {
            Log.debug("upstream connect failed: \(Errno.name(-result)) (UF)")
            connectFailed(u, reactor)
            return
        }
        guard let id = upstreams[u].downstream, downstreams.isCurrent(id) else {
            recycle(u, reactor)
            return
        }
        bind(u, to: id, reused: false, reactor)
    }

    /// Gives upstream connection `u` to the exchange of session `id` and sends the request head.
    func bind(_ u: UID, to id: DID, reused: Bool, _ reactor: Reactor<Backend>) {
        if upstreams[u].state == .idle { idleUpstreams -= 1 }
        upstreams[u].state = .bound
        upstreams[u].downstream = id
        upstreams[u].reused = reused
        downstreams[id].exchange.attempt.connection = u
        sendRequestHead(id, reactor)
    }

    /// An upstream connection could not be made (refused, or the connect timed out): its attempt failed (UF).
    func connectFailed(_ u: UID, _ reactor: Reactor<Backend>) {
        let id = upstreams[u].downstream
        upstreams[u].downstream = nil
        closeUpstream(u, reactor)
        guard let id, downstreams.isCurrent(id), downstreams[id].exchange.attempt.connection == u else { return }
        downstreams[id].exchange.attempt.connection = nil
        attemptFailed(id, .connectFailure, responseBytesSeen: false, reactor)
    }

    /// The upstream connection of an exchange is gone before the response ended (UC).
    func upstreamLost(_ id: DID, _ u: UID, _ reactor: Reactor<Backend>) {
        let error = ProxyError.reset(reusedConnection: upstreams[u].reused)
        let seen = !downstreams[id].exchange.response.held.isEmpty
        closeUpstream(u, reactor)
        downstreams[id].exchange.attempt.connection = nil
        attemptFailed(id, error, responseBytesSeen: seen, reactor)
    }

    /// An attempt failed with `error`: the retry policy decides between sending the request again on a fresh
    /// connection and answering the client (a local response, or a reset if the response had already started).
    func attemptFailed(_ id: DID, _ error: ProxyError, responseBytesSeen: Bool, _ reactor: Reactor<Backend>) {
        guard case .retry(let from) = RetryPolicy.decide(error, downstreams[id].exchange.attempt,
                                                          responseBytesSeen: responseBytesSeen)
        else { return fail(id, error.reply, reactor) }
        Log.debug("\(error.reply.flag) on a reused upstream connection; sending the request again on a new one")
        downstreams[id].exchange.attempt.replayFrom = nil
        downstreams[id].exchange.request.held.start = from
        if downstreams[id].exchange.request.held.isEmpty { dropHeld(&downstreams[id].exchange.request.held, reactor) }
        downstreams[id].exchange.request.state = .waiting
        downstreams[id].exchange.response.state = .idle
        cancel(&downstreams[id].exchange.upstreamTimer, reactor)
        connect(for: id, reactor)
    }
}
