// Local responses: an exchange that fails is answered as Envoy answers (LocalReply), or reset when its
// response already started.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    /// Ends the exchange with a local reply when nothing of the response has reached the client yet, else by
    /// resetting the client connection (a truncated response must not look complete).
    func fail(_ x: XID, _ reply: LocalReply, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        if downstreams[id].phase != .open || exchanges[x].reply != nil { return }
        // A refused head (400, 408, 414, 431) is a request too, though no exchange began.
        if !exchanges[x].active && exchanges[x].report.recorded { beginExchange(x) }
        exchanges[x].report.flags.formUnion(reply.responseFlags)
        if exchanges[x].report.answeredBy == nil { exchanges[x].report.answeredBy = reply }
        detachUpstream(x, reusable: false, reactor)
        if exchanges[x].responseStarted {
            Log.debug("\(reply.flag) after the response started: resetting the client connection")
            closeDownstream(id, reset: true, reactor)
            return
        }
        if downstreams[id].sending {
            // An interim response is on its way; the reply follows it.
            exchanges[x].pendingReply = reply
            exchanges[x].reply = reply
            return
        }
        sendReply(x, reply, reactor)
    }

    func sendReply(_ x: XID, _ reply: LocalReply, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        Log.debug("local reply \(reply.status) \(reply.flag)")
        cancel(&downstreams[id].headerTimer, reactor)
        cancel(&exchanges[x].timer, reactor)
        // The connection stays open only when the whole request was read (and forwarded): otherwise the rest of
        // it is still unread in the socket.
        let keep = exchanges[x].request.state == .done && downstreams[id].keepAlive && !draining
        exchanges[x].reply = reply
        downstreams[id].keepAlive = keep
        exchanges[x].responseStarted = true
        exchanges[x].response.state = .reply
        // The request is abandoned: a queued one is skipped when its turn comes.
        exchanges[x].request.state = .done
        dropHeld(&exchanges[x].response.held, reactor)
        let entry = Int(id.index)
        toClient.reset(entry)
        _ = bytes.append(toClient, entry, reply, close: !keep)
        exchanges[x].report.status = reply.status
        exchanges[x].report.responseHeads &+= UInt64(toClient.remaining(entry) - reply.body.utf8.count)
        sendToClient(id, reactor)
    }
}
