// Tunnels (Upgrade, CONNECT): after a 101 or a 2xx to CONNECT both sockets go to the splice relay, or,
// when bytes were already read on either side, are forwarded buffer by buffer here.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    func startTunnel(_ id: DID, _ reactor: Reactor<Backend>) {
        // The upgrade counts as a request when its tunnel starts; the tunnel's bytes are not counted.
        recordExchange(id)
        requestFinished(id)
        cancel(&downstreams[id].exchange.upstreamTimer, reactor)
        cancel(&downstreams[id].exchange.streamTimer, reactor)
        downstreams[id].exchange.request.state = .tunnel
        downstreams[id].exchange.response.state = .tunnel
        downstreams[id].exchange.attempt.replayFrom = nil
        guard let u = downstreams[id].exchange.attempt.connection else { return bug("tunnel without an upstream") }
        if downstreams[id].exchange.request.held.isEmpty && downstreams[id].exchange.response.held.isEmpty && downstreams[id].inflight == 0
            && upstreams[u].inflight == 0 && spliceAllowed(id, u) && handOver(id, u, reactor)
        {
            return
        }
        // Bytes already read on either side (sent right after the request or the 101) go through buffers;
        // such a tunnel stays here, forwarding buffer by buffer.
        // Bytes that followed the 101 head from the upstream, or the request from the client, go first.
        if !downstreams[id].exchange.response.held.isEmpty {
            tunnelToClient(id, reactor)
        } else {
            dropHeld(&downstreams[id].exchange.response.held, reactor)
            receiveFromUpstream(u, reactor)
        }
        if !downstreams[id].exchange.request.held.isEmpty {
            tunnelToUpstream(id, reactor)
        } else {
            dropHeld(&downstreams[id].exchange.request.held, reactor)
            receiveFromClient(id, reactor)
        }
    }

    /// Gives both sockets of a tunnel to the splicing relay and forgets the session and upstream connection
    /// (without closing their sockets, and with the connection still counted as active: the relay ends it).
    func handOver(_ id: DID, _ u: UID, _ reactor: Reactor<Backend>) -> Bool {
        let client = downstreams[id].fd, upstream = upstreams[u].fd
        guard tunnels.adopt(client: client, upstream: upstream, reactor) else { return false }
        Log.debug("tunnel handed to the splice relay")
        let e = upstreams[u].endpoint
        upstreams.remove(u)
        metrics?.endpoint(pools.slots[e].key, EndpointWords.connections, -1)
        pools.connectionClosed(e)
        dropHeld(&downstreams[id].exchange.request.held, reactor)
        dropHeld(&downstreams[id].exchange.response.held, reactor)
        requestParsers.give(downstreams[id].exchange.request.parser)
        responseParsers.give(downstreams[id].exchange.response.parser)
        cancel(&downstreams[id].idleTimer, reactor)
        cancel(&downstreams[id].headerTimer, reactor)
        downstreams.remove(id)
        connectWaiting(e, reactor)
        return true
    }

    func tunnelToUpstream(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let u = downstreams[id].exchange.attempt.connection else { return }
        let held = downstreams[id].exchange.request.held
        toUpstream.reset(Int(u.index))
        _ = bytes.append(toUpstream, Int(u.index), held, held.start..<held.end)
        downstreams[id].exchange.request.sentTo = held.end
        sendToUpstream(id, u, reactor)
    }

    func tunnelToClient(_ id: DID, _ reactor: Reactor<Backend>) {
        let held = downstreams[id].exchange.response.held
        toClient.reset(Int(id.index))
        _ = bytes.append(toClient, Int(id.index), held, held.start..<held.end)
        downstreams[id].exchange.response.sentTo = held.end
        sendToClient(id, reactor)
    }
}
