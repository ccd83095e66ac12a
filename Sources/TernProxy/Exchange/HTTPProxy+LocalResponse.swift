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
    func fail(_ id: DID, _ reply: LocalReply, _ reactor: Reactor<Backend>) {
        if downstreams[id].phase != .open || downstreams[id].exchange.reply != nil { return }
        // A refused head (400, 408, 414, 431) is a request too, though no exchange began.
        if !downstreams[id].exchange.active && downstreams[id].exchange.report.recorded { beginExchange(id) }
        downstreams[id].exchange.report.flags.formUnion(reply.responseFlags)
        if downstreams[id].exchange.report.answeredBy == nil { downstreams[id].exchange.report.answeredBy = reply }
        detachUpstream(id, reusable: false, reactor)
        if downstreams[id].exchange.responseStarted {
            Log.debug("\(reply.flag) after the response started: resetting the client connection")
            closeDownstream(id, reset: true, reactor)
            return
        }
        if downstreams[id].sending {
            // An interim response is on its way; the reply follows it.
            downstreams[id].exchange.pendingReply = reply
            downstreams[id].exchange.reply = reply
            return
        }
        sendReply(id, reply, reactor)
    }

    func sendReply(_ id: DID, _ reply: LocalReply, _ reactor: Reactor<Backend>) {
        Log.debug("local reply \(reply.status) \(reply.flag)")
        cancel(&downstreams[id].headerTimer, reactor)
        cancel(&downstreams[id].exchange.upstreamTimer, reactor)
        cancel(&downstreams[id].exchange.streamTimer, reactor)
        // The connection stays open only when the whole request was read (and forwarded): otherwise the rest of
        // it is still unread in the socket.
        let keep = downstreams[id].exchange.request.state == .done && downstreams[id].keepAlive && !draining
        downstreams[id].exchange.reply = reply
        downstreams[id].keepAlive = keep
        downstreams[id].exchange.responseStarted = true
        downstreams[id].exchange.response.state = .reply
        // The request is abandoned: a queued one is skipped when its turn comes.
        downstreams[id].exchange.request.state = .done
        dropHeld(&downstreams[id].exchange.response.held, reactor)
        let entry = Int(id.index)
        toClient.reset(entry)
        _ = bytes.append(toClient, entry, reply, close: !keep)
        downstreams[id].exchange.report.status = reply.status
        downstreams[id].exchange.report.responseHeads &+= UInt64(toClient.remaining(entry) - reply.body.utf8.count)
        sendToClient(id, reactor)
    }
}
