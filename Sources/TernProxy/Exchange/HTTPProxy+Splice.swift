// Spliced bodies: a Content-Length body of at least `spliceThreshold` bytes moves socket → pipe → socket
// (client → upstream for requests, upstream → client for responses) without passing through user space.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    /// Bytes may move between client connection `id` and upstream connection `u` without passing through the
    /// codec only when both transports hand the kernel's bytes over as they are (plaintext).
    func spliceAllowed(_ id: DID, _ u: UID) -> Bool {
        downstreams[id].transport.allowsSplice && upstreams[u].transport.allowsSplice
    }

    func requestSpliceIn(_ id: DID, _ reactor: Reactor<Backend>) {
        let x = downstreams[id].exchange
        guard case .length(let left) = exchanges[x].request.body, let pipe = exchanges[x].request.pipe else {
            return bug("request splice without a body or pipe")
        }
        downstreams[id].clientSplice = Op.requestSpliceIn.rawValue
        downstreams[id].inflight += 1
        let fd = downstreams[id].fd
        reactor.backend.splice(from: fd, to: pipe.writeEnd, count: Int(min(left, UInt64(pipe.capacity))),
                               waitFor: .readable(fd), token: token(.requestSpliceIn, id))
    }

    func requestSplicedIn(_ id: DID, _ n: Int32, _ reactor: Reactor<Backend>) {
        let x = downstreams[id].exchange
        if n == -Errno.EAGAIN { return requestSpliceIn(id, reactor) }
        guard n > 0, case .length(let left) = exchanges[x].request.body, let u = exchanges[x].attempt.connection else {
            // The client ended or failed in the middle of its body: nothing sensible can follow.
            Log.debug("client ended during a spliced request body (\(n < 0 ? Errno.name(-n) : "EOF"))")
            closeDownstream(id, reset: n < 0, reactor)
            return
        }
        exchanges[x].lastActivity = System.monotonicNanos()
        exchanges[x].request.piped = Int(n)
        exchanges[x].report.requestWire &+= UInt64(n)
        exchanges[x].request.body = left == UInt64(n) ? .none : .length(left - UInt64(n))
        requestSpliceOut(x, u, reactor)
    }

    func requestSpliceOut(_ x: XID, _ u: UID, _ reactor: Reactor<Backend>) {
        guard let pipe = exchanges[x].request.pipe else { return bug("request splice without a pipe") }
        upstreams[u].splice = Op.requestSpliceOut.rawValue
        upstreams[u].inflight += 1
        let fd = upstreams[u].fd
        reactor.backend.splice(from: pipe.readEnd, to: fd, count: exchanges[x].request.piped, waitFor: .writable(fd),
                               token: token(.requestSpliceOut, u))
    }

    func requestSplicedOut(_ x: XID, _ u: UID, _ n: Int32, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        if n == -Errno.EAGAIN { return requestSpliceOut(x, u, reactor) }
        guard n > 0 else {
            Log.debug("upstream failed during a spliced request body: \(Errno.name(-n))")
            upstreamLost(x, u, reactor)
            return
        }
        exchanges[x].lastActivity = System.monotonicNanos()
        exchanges[x].request.piped -= Int(n)
        if exchanges[x].request.piped > 0 { return requestSpliceOut(x, u, reactor) }
        if exchanges[x].request.body != .none { return requestSpliceIn(id, reactor) }
        releasePipe(&exchanges[x].request.pipe, reactor)
        requestDone(x, reactor)
    }

    func responseSpliceIn(_ x: XID, _ u: UID, _ reactor: Reactor<Backend>) {
        guard case .length(let left) = exchanges[x].response.body, let pipe = exchanges[x].response.pipe else {
            return bug("response splice without a body or pipe")
        }
        upstreams[u].splice = Op.responseSpliceIn.rawValue
        upstreams[u].inflight += 1
        let fd = upstreams[u].fd
        reactor.backend.splice(from: fd, to: pipe.writeEnd, count: Int(min(left, UInt64(pipe.capacity))),
                               waitFor: .readable(fd), token: token(.responseSpliceIn, u))
    }

    func responseSplicedIn(_ x: XID, _ u: UID, _ n: Int32, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        if n == -Errno.EAGAIN { return responseSpliceIn(x, u, reactor) }
        guard n > 0, case .length(let left) = exchanges[x].response.body else {
            Log.debug("upstream ended during a spliced response body (\(n < 0 ? Errno.name(-n) : "EOF"))")
            upstreamLost(x, u, reactor)
            return
        }
        exchanges[x].lastActivity = System.monotonicNanos()
        exchanges[x].response.piped = Int(n)
        exchanges[x].response.body = left == UInt64(n) ? .none : .length(left - UInt64(n))
        responseSpliceOut(id, reactor)
    }

    func responseSpliceOut(_ id: DID, _ reactor: Reactor<Backend>) {
        let x = downstreams[id].exchange
        guard let pipe = exchanges[x].response.pipe else { return bug("response splice without a pipe") }
        downstreams[id].clientSplice = Op.responseSpliceOut.rawValue
        downstreams[id].inflight += 1
        let fd = downstreams[id].fd
        reactor.backend.splice(from: pipe.readEnd, to: fd, count: exchanges[x].response.piped, waitFor: .writable(fd),
                               token: token(.responseSpliceOut, id))
    }

    func responseSplicedOut(_ id: DID, _ n: Int32, _ reactor: Reactor<Backend>) {
        let x = downstreams[id].exchange
        if n == -Errno.EAGAIN { return responseSpliceOut(id, reactor) }
        guard n > 0 else {
            Log.debug("send to client failed during a spliced response body: \(Errno.name(-n))")
            closeDownstream(id, reset: true, reactor)
            return
        }
        exchanges[x].lastActivity = System.monotonicNanos()
        exchanges[x].report.responseWire &+= UInt64(n)
        exchanges[x].response.piped -= Int(n)
        if exchanges[x].response.piped > 0 { return responseSpliceOut(id, reactor) }
        if exchanges[x].response.body != .none, let u = exchanges[x].attempt.connection { return responseSpliceIn(x, u, reactor) }
        releasePipe(&exchanges[x].response.pipe, reactor)
        responseDone(x, reusable: exchanges[x].attempt.reusable, reactor)
    }

    /// Returns an emptied pipe to the pool.
    func releasePipe(_ pipe: inout Pipe?, _ reactor: Reactor<Backend>) {
        guard let p = pipe else { return }
        pipe = nil
        reactor.pipes.release(p, holdsData: false)
    }
}
