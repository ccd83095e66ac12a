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
        if downstreams[id].relaysTCP { return relayFailed(x, reply, reactor) }
        // A refused head (400, 408, 414, 431) is a request too, though no exchange began.
        if !exchanges[x].active && exchanges[x].report.recorded { beginExchange(x) }
        exchanges[x].report.flags.formUnion(reply.responseFlags)
        if exchanges[x].report.answeredBy == nil { exchanges[x].report.answeredBy = reply }
        detachUpstream(x, reusable: false, reactor)
        if exchanges[x].responseStarted {
            Log.debug("\(reply.flag) after the response started: resetting the client connection")
            if exchanges[x].reply == nil { exchanges[x].report.failedAfterResponseStarted = true }
            closeDownstream(id, reset: true, reactor)
            return
        }
        if downstreams[id].sending {
            // An interim response is on its way; the reply follows it.
            exchanges[x].pendingReply = reply
            exchanges[x].reply = reply
            return
        }
        if exchanges[x].report.grpc { return sendGRPCReply(x, reply, reactor) }
        if reply == .connectFailure && !exchanges[x].report.transportFailure.isEmpty { return sendTransportFailure(x, reactor) }
        sendReply(x, reply, reactor)
    }

    /// Answers a gRPC request as Envoy answers one locally: trailers-only (HTTP 200, `content-type:
    /// application/grpc`, no body), `grpc-status` mapped from the reply's HTTP status (`GRPC.status(forHTTP:)`:
    /// 503 and 504 → 14 UNAVAILABLE, …) and its body text as `grpc-message`.
    func sendGRPCReply(_ x: XID, _ reply: LocalReply, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        let code = GRPC.status(forHTTP: reply.status)
        Log.debug("local reply \(reply.status) \(reply.flag) as gRPC status \(code)")
        cancel(&downstreams[id].headerTimer, reactor)
        cancel(&exchanges[x].timer, reactor)
        let keep = exchanges[x].request.state == .done && downstreams[id].keepAlive && !draining
        let failure = exchanges[x].report.transportFailure
        guard let composed = bytes.compose({ w in
            w.append("HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: ")
            w.append(decimal: code)
            w.append("\r\ngrpc-message: ")
            // (Envoy's reply texts and OpenSSL's reasons are printable ASCII without "%": nothing to percent-encode.)
            w.append(reply.body)
            if reply == .connectFailure && !failure.isEmpty {
                w.append(", transport failure reason: ")
                w.append(failure)
            }
            w.append("\r\ncontent-length: 0\r\n")
            if reply == .overflow { w.append("x-envoy-overloaded: true\r\n") }
            if !keep { w.append("connection: close\r\n") }
            w.append("\r\n")
        }) else {
            return sendReply(x, reply, reactor)
        }
        exchanges[x].reply = reply
        downstreams[id].keepAlive = keep
        exchanges[x].responseStarted = true
        exchanges[x].response.state = .reply
        exchanges[x].request.state = .done
        exchanges[x].report.status = 200
        exchanges[x].report.grpcStatus = Int16(code)
        exchanges[x].report.grpcMessage.set(reply.body.utf8)
        if reply == .connectFailure && !failure.isEmpty {
            exchanges[x].report.grpcMessage.append(", transport failure reason: ".utf8)
            exchanges[x].report.grpcMessage.append(failure.utf8)
        }
        dropHeld(&exchanges[x].response.held, reactor)
        exchanges[x].response.held = composed
        exchanges[x].report.responseHeads &+= UInt64(composed.count)
        let entry = Int(id.index)
        toClient.reset(entry)
        _ = bytes.append(toClient, entry, composed, composed.start..<composed.end)
        sendToClient(id, reactor)
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
        let cors = exchanges[x].cors
        if cors.holdsStorage, let composed = bytes.compose({ w in
            // The reply with the CORS fields of an allowed origin, as Envoy's filter adds them to the router's
            // local replies.
            w.append("HTTP/1.1 ")
            w.append(decimal: reply.status)
            w.append(" ")
            w.append(reply.reason)
            w.append("\r\ncontent-length: ")
            w.append(decimal: reply.body.utf8.count)
            w.append("\r\ncontent-type: text/plain\r\n")
            if reply == .overflow { w.append("x-envoy-overloaded: true\r\n") }
            bytes.copy(0..<cors.count, from: cors, into: &w)
            if !keep { w.append("connection: close\r\n") }
            w.append("\r\n")
            w.append(reply.body)
        }) {
            exchanges[x].response.held = composed
            _ = bytes.append(toClient, entry, composed, composed.start..<composed.end)
        } else {
            _ = bytes.append(toClient, entry, reply, close: !keep)
        }
        exchanges[x].report.status = reply.status
        exchanges[x].report.responseHeads &+= UInt64(toClient.remaining(entry) - reply.body.utf8.count)
        sendToClient(id, reactor)
    }

    /// Answers with a response the route makes itself, written by the HTTP/1.1 codec: status line, fields,
    /// the connection's fate, body, composed in an assembly buffer and sent from there.
    /// Route response bodies up to this size are copied after the head; larger ones are sent from the table.
    static var inlineBodyLimit: Int { 16 * 1024 }

    func respondFromRoute(_ x: XID, _ request: HTTP1Head, _ response: RouteResponse, port: UInt16,
                          _ reactor: Reactor<Backend>)
    {
        let id = exchanges[x].downstream
        // The head as received: answering consumes it from the held bytes; a Location is written from it.
        let held = exchanges[x].request.held
        // A request without a body is consumed whole, so the connection can go on.
        if exchanges[x].request.body == .none {
            exchanges[x].request.held.start += request.length
            exchanges[x].request.state = .done
        }
        let keep = exchanges[x].request.state == .done && downstreams[id].keepAlive && !draining
        guard let composed = bytes.compose({ w in
            w.append("HTTP/1.1 ")
            w.append(decimal: response.status)
            w.append(" ")
            w.append(LocalReply.reasonPhrase(response.status))
            w.append("\r\n")
            if response.direct && !Self.replaces(response.fields, "content-type") { w.append("content-type: text/plain\r\n") }
            if let redirect = response.redirect, !Self.replaces(response.fields, "location") {
                w.append("location: ")
                bytes.writeLocation(redirect, request, held, port: port, matchedPrefix: response.matchedPrefix, into: &w)
                w.append("\r\n")
            }
            w.append("content-length: ")
            w.append(decimal: response.body.count)
            w.append("\r\n")
            Self.lines(response.fields, &w)
            if response.preflight { writePreflightFields(x, request, held, &w) }
            if !keep { w.append("connection: close\r\n") }
            w.append("\r\n")
            composedHeadLength = w.count
            if response.body.count <= Self.inlineBodyLimit { w.append(response.body) }
        }) else {
            fail(x, .unsupportedRoute, reactor)
            return
        }
        exchanges[x].reply = .routeResponse
        exchanges[x].report.answeredBy = .routeResponse
        downstreams[id].keepAlive = keep
        exchanges[x].responseStarted = true
        exchanges[x].response.state = .reply
        exchanges[x].request.state = .done
        dropHeld(&exchanges[x].response.held, reactor)
        exchanges[x].response.held = composed
        exchanges[x].report.responseHeads &+= UInt64(composedHeadLength)
        let entry = Int(id.index)
        toClient.reset(entry)
        _ = bytes.append(toClient, entry, composed, composed.start..<composed.end)
        if response.body.count > Self.inlineBodyLimit {
            // A large directResponse body (Istio allows 1 MB) goes from the route table's bytes, which the exchange
            // keeps (`routed`, set by the route phase) until it ends.
            _ = bytes.appendTableBytes(toClient, entry, response.body)
        }
        sendToClient(id, reactor)
    }
}
