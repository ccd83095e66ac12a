// Tunnels (Upgrade, CONNECT): after a 101 or a 2xx to CONNECT both sockets go to the splice relay, or,
// when bytes were already read on either side, are forwarded buffer by buffer here.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    func startTunnel(_ x: XID, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        // The upgrade counts as a request when its tunnel starts; the tunnel's bytes are not counted. (A relayed
        // TCP connection is reported when it closes, with its bytes.)
        if !downstreams[id].relaysTCP {
            recordExchange(x)
            requestFinished(x)
        }
        cancel(&exchanges[x].timer, reactor)
        // The 101 (or 2xx to CONNECT) went with the CORS fields: they are not needed for the tunnel's life.
        dropHeld(&exchanges[x].cors, reactor)
        exchanges[x].request.state = .tunnel
        exchanges[x].response.state = .tunnel
        exchanges[x].attempt.replayFrom = nil
        guard let u = exchanges[x].attempt.connection else { return bug("tunnel without an upstream") }
        if exchanges[x].request.held.isEmpty && exchanges[x].response.held.isEmpty && downstreams[id].inflight == 0
            && upstreams[u].inflight == 0 && spliceAllowed(id, u) && handOver(x, u, reactor)
        {
            return
        }
        // Bytes already read on either side (sent right after the request or the 101) go through buffers;
        // such a tunnel stays here, forwarding buffer by buffer.
        // Bytes that followed the 101 head from the upstream, or the request from the client, go first.
        if !exchanges[x].response.held.isEmpty {
            tunnelToClient(x, reactor)
        } else {
            dropHeld(&exchanges[x].response.held, reactor)
            receiveFromUpstream(u, reactor)
        }
        if !exchanges[x].request.held.isEmpty {
            tunnelToUpstream(x, reactor)
        } else {
            dropHeld(&exchanges[x].request.held, reactor)
            receiveFromClient(id, reactor)
        }
    }

    /// Gives both sockets of a tunnel to the splicing relay and forgets the exchange, its client connection and
    /// the upstream connection (without closing their sockets, and with the connection still counted as active:
    /// the relay ends it).
    func handOver(_ x: XID, _ u: UID, _ reactor: Reactor<Backend>) -> Bool {
        let id = exchanges[x].downstream
        let client = downstreams[id].fd, upstream = upstreams[u].fd
        guard tunnels.adopt(client: client, upstream: upstream, circuit: upstreams[u].circuit, reactor) else { return false }
        Log.debug("tunnel handed to the splice relay")
        upstreams[u].circuit = nil  // (the relay gives it back)
        let e = upstreams[u].endpoint
        upstreams.remove(u)
        metrics?.endpoint(pools.slots[e].key, EndpointWords.connections, -1)
        pools.connectionClosed(e)
        dropHeld(&exchanges[x].request.held, reactor)
        dropHeld(&exchanges[x].response.held, reactor)
        requestParsers.give(exchanges[x].request.parser)
        responseParsers.give(exchanges[x].response.parser)
        cancel(&downstreams[id].idleTimer, reactor)
        cancel(&downstreams[id].headerTimer, reactor)
        idle.remove(id, downstreams)
        let held = downstreams[id].passthroughPool
        downstreams[id].passthroughPool = -1
        exchanges.remove(x)
        downstreams.remove(id)
        connectWaiting(e, reactor)
        if held >= 0 { passthroughReleased(Int(held), reactor) }
        return true
    }

    func tunnelToUpstream(_ x: XID, _ reactor: Reactor<Backend>) {
        guard let u = exchanges[x].attempt.connection else { return }
        let held = exchanges[x].request.held
        toUpstream.reset(Int(u.index))
        _ = bytes.append(toUpstream, Int(u.index), held, held.start..<held.end)
        exchanges[x].request.sentTo = held.end
        if downstreams[exchanges[x].downstream].relaysTCP { relayCounted(x, toUpstream: true, held.end - held.start) }
        sendToUpstream(x, u, reactor)
    }

    func tunnelToClient(_ x: XID, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        let held = exchanges[x].response.held
        toClient.reset(Int(id.index))
        _ = bytes.append(toClient, Int(id.index), held, held.start..<held.end)
        exchanges[x].response.sentTo = held.end
        if downstreams[id].relaysTCP { relayCounted(x, toUpstream: false, held.end - held.start) }
        sendToClient(id, reactor)
    }
}
