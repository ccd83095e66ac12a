// The HTTP/1.1 connection pool of each endpoint: connections detached from exchanges go back to a
// waiting request or the idle pool, or are closed; a freed connection slot lets the oldest waiting request connect.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    /// Unbinds the exchange's upstream connection: back to the pool or to a waiting request when `reusable`,
    /// else closed.
    func detachUpstream(_ x: XID, reusable: Bool, _ reactor: Reactor<Backend>) {
        // No longer on a connection: no longer one of its cluster's requests in flight.
        discharge(x, .request)
        guard let u = exchanges[x].attempt.connection else {
            // Perhaps still waiting in the queue: it is skipped when popped (no longer waiting).
            return
        }
        if upstreams[u].http2 && upstreams[u].transport != .h2stream {
            // An HTTP/2 connection still on its way: it carries on, for the requests queued for it.
            exchanges[x].attempt.connection = nil
            upstreams[u].exchange = nil
            return
        }
        if upstreams[u].transport == .h2stream {
            // A stream ends with its exchange (ended cleanly when its response did, else reset).
            return closeUpstream(u, reactor)
        }
        exchanges[x].attempt.connection = nil
        upstreams[u].exchange = nil
        if reusable && upstreams[u].state == .bound && !upstreams[u].sending && mayServeAgain(u) {
            recycle(u, reactor)
        } else {
            closeUpstream(u, reactor)
        }
    }

    /// A clean upstream connection: to the oldest waiting request, or the idle pool, or closed.
    func recycle(_ u: UID, _ reactor: Reactor<Backend>) {
        let e = upstreams[u].endpoint
        upstreams[u].exchange = nil
        keepResumption(u)
        while let next = pools.slots[e].pending.pop() {
            guard isWaiting(next, for: e) else { continue }
            guard exchanges[next].attempt.serverName == upstreams[u].serverName else {
                // Made for another server name (auto SNI): closed, and the waiting request connects anew.
                _ = pools.slots[e].pending.pushFront(next)
                closeUpstream(u, reactor)
                return
            }
            // One the cluster's request limit refuses is answered (503 UO); the next one waiting is offered it.
            guard admitRequest(next, reactor) else { continue }
            bind(u, to: next, reused: true, reactor)
            return
        }
        // A request waiting for a descriptor to open its own connection to this endpoint takes this one.
        // (Not a relayed TCP connection: it has an upstream connection of its own, never an HTTP one.)
        while let i = descriptorWaiters.firstIndex(where: {
            isWaiting($0.exchange, for: e) && exchanges[$0.exchange].relayed == nil && !exchanges[$0.exchange].attempt.http2
                && exchanges[$0.exchange].attempt.serverName == upstreams[u].serverName
        }) {
            let next = descriptorWaiters.remove(at: i).exchange
            guard admitRequest(next, reactor) else { continue }
            bind(u, to: next, reused: true, reactor)
            return
        }
        guard !draining && pools.slots[e].keepsIdle && pools.slots[e].idle.count < settings.maxIdleUpstream else {
            closeUpstream(u, reactor)
            return
        }
        upstreams[u].state = .idle
        idleUpstreams += 1
        upstreams[u].idleSince = System.monotonicNanos()
        pools.slots[e].idle.append(u)
        if upstreams[u].poolTimer == nil, let due = poolDue(u) {
            upstreams[u].poolTimer = reactor.timers.schedule(token(.poolTimer, u), at: due)
        }
        // Armed while idle so a close by the upstream is seen at once (and the connection dropped).
        receiveFromUpstream(u, reactor)
    }

    func closeUpstream(_ u: UID, _ reactor: Reactor<Backend>) {
        if upstreams[u].state == .closing { return }
        if upstreams[u].transport == .h2stream {
            // An HTTP/2 stream's slot: no socket; the stream ends and the slot goes at once.
            if let x = upstreams[u].exchange, exchanges.isCurrent(x), exchanges[x].attempt.connection == u { exchanges[x].attempt.connection = nil }
            upstreams[u].exchange = nil
            upstreams[u].state = .closing
            h2uStreamClose(u, reactor)
            upstreams.remove(u)
            return
        }
        if upstreams[u].http2 {
            if let link = upstreams[u].h2 {
                // Its streams end with it.
                link.goingAway = true
                link.ended = true
                for s in link.streams where upstreams.isCurrent(s.connection) {
                    h2uStreamGone(s.connection, refused: s.id == 0, notSent: s.id == 0, reactor)
                }
            } else {
                h2uConnectEnded(u, reactor)
            }
        }
        keepResumption(u)
        if let x = upstreams[u].exchange, exchanges.isCurrent(x), exchanges[x].attempt.connection == u { exchanges[x].attempt.connection = nil }
        upstreams[u].exchange = nil
        if upstreams[u].state == .idle { idleUpstreams -= 1 }
        upstreams[u].state = .closing
        cancel(&upstreams[u].connectTimer, reactor)
        cancel(&upstreams[u].poolTimer, reactor)
        let fd = upstreams[u].fd
        if upstreams[u].inflight > 0 {
            if upstreams[u].transport == .tls {
                tlsCancel(.upstream(u), reactor)
            } else {
                if upstreams[u].receiving { reactor.backend.cancel(fd: fd, token: token(.upstreamReceive, u)) }
                if upstreams[u].sending { reactor.backend.cancel(fd: fd, token: token(.upstreamSend, u)) }
            }
            if upstreams[u].splice != 0 {
                reactor.backend.cancel(fd: fd, token: Token(op: upstreams[u].splice, slot: u.index, generation: u.generation))
            }
            reactor.backend.cancel(fd: fd, token: token(.upstreamConnect, u))
            _ = System.shutdown(fd, write: false, read: true)
        }
        finishUpstreamIfQuiet(u, reactor)
    }

    func finishUpstreamIfQuiet(_ u: UID, _ reactor: Reactor<Backend>) {
        guard upstreams[u].inflight == 0 else { return }
        let e = upstreams[u].endpoint
        if upstreams[u].transport == .tls {
            tlsFree(.upstream(u), reactor)
            upstreams[u].transport = .plain
        }
        if upstreams[u].http2 { h2uFree(u, reactor) }
        reactor.backend.unregister(fd: upstreams[u].fd)
        System.close(upstreams[u].fd)
        counters.descriptors.subtract(1, ordering: .relaxed)
        if upstreams[u].closingForRoom { closingForRoom -= 1 }
        upstreams[u].circuit?.give(.connection)
        upstreams[u].circuit = nil
        upstreams.remove(u)
        metrics?.endpoint(pools.slots[e].key, EndpointWords.connections, -1)
        pools.connectionClosed(e)
        connectWaiting(e, reactor)
        h2uServePending(e, reactor)
    }

    /// Requests wait for connections to endpoint `e`: the oldest get new connections, in order, while their
    /// cluster's limit allows (or while this core has none to `e`); the rest wait on for one to come free. Run when
    /// a request joins the queue and when a connection to `e` closes.
    /// The queue is the endpoint's, shared by the clusters that name it: one whose cluster is at its limit keeps
    /// its place while those of other clusters behind it go (one pass over the queue, order kept).
    func connectWaiting(_ e: Int, _ reactor: Reactor<Backend>) {
        var left = pools.slots[e].pending.count
        while left > 0, let next = pools.slots[e].pending.pop() {
            left -= 1
            guard isWaiting(next, for: e) else { continue }
            if mayConnect(next, e) {
                connect(for: next, reactor)
            } else {
                _ = pools.slots[e].pending.push(next, limit: Self.pendingQueueLimit)
            }
        }
    }

    /// When idle connection `u` is to close: its idle timeout, or the end of its `maxConnectionDuration` (nil:
    /// neither).
    func poolDue(_ u: UID) -> UInt64? {
        var due = upstreams[u].idleTimeout > 0 ? saturatingAdd(upstreams[u].idleSince, upstreams[u].idleTimeout) : UInt64.max
        if upstreams[u].expires > 0 { due = min(due, upstreams[u].expires) }
        return due == UInt64.max ? nil : due
    }

    /// Whether a queue entry still names an exchange waiting for a connection to endpoint `e`: the entry of an
    /// exchange that ended meanwhile (and perhaps left a later exchange of its connection waiting elsewhere) is
    /// skipped.
    func isWaiting(_ x: XID, for e: Int) -> Bool {
        exchanges.isCurrent(x) && downstreams[exchanges[x].downstream].phase == .open && exchanges[x].request.state == .waiting
            && exchanges[x].attempt.connection == nil && exchanges[x].attempt.endpoint == e
    }
}
