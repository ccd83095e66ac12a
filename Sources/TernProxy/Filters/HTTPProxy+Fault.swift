// The fault filter (VirtualService `fault`), as Envoy's runs it between the route and the router: a delay holds
// the request before it goes upstream (flag DI), then an abort answers it instead (flag FI) with Envoy's body
// "fault filter abort". Each fires for its share of requests, drawn from the reactor's random source
// (`TERN_RANDOM_SEED` makes the draws reproducible). The delay comes before the upstream timeout starts and an
// aborted request never reaches the router, so neither timeouts nor retries apply to injected faults, as Istio
// documents.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

/// The answers the fault filter composes, made once: Envoy's abort body, and the fields of a gRPC abort.
enum FaultReply {
    static let body: [UInt8] = Array("fault filter abort".utf8)
    /// Per gRPC status code: a trailers-only gRPC response's fields (`grpc-status`, `grpc-message`).
    static let grpcFields: [HeaderOperations] = (0..<FaultFacts.grpcCodes.count).map { code in
        var ops = HeaderOperations()
        ops.set = [("content-type", "application/grpc"), ("grpc-status", String(code)), ("grpc-message", "fault filter abort")]
        return ops
    }
    /// The fields of a plain abort: none beyond those every route response has.
    static let plainFields = HeaderOperations()
}

extension HTTPProxy {
    /// Applies the route's fault to a routed request: true when the fault took it (held by a delay, or answered
    /// by an abort), false when it goes upstream now.
    func injectFault(_ x: XID, _ reactor: Reactor<Backend>) -> Bool {
        let fault = exchanges[x].fault
        if fault.delayPerMillion > 0 && random.next() % 1_000_000 < UInt64(fault.delayPerMillion) {
            counters.faultDelays.add(1, ordering: .relaxed)
            exchanges[x].report.flags.insert(.delayInjected)
            // Held, the request keeps none of the reactor's shared receive buffers (as one waiting for a
            // connection does).
            parkWaiting(x, reactor)
            exchanges[x].delayUntil = max(1, saturatingAdd(System.monotonicNanos(), fault.delay))
            armExchangeTimer(x, at: exchanges[x].delayUntil, reactor)
            return true
        }
        return abortByFault(x, reactor)
    }

    /// An injected delay ended: the abort is drawn now (Envoy: a delay may be followed by an abort), else the
    /// request goes upstream.
    func faultDelayEnded(_ x: XID, _ reactor: Reactor<Backend>) {
        exchanges[x].delayUntil = 0
        exchanges[x].lastActivity = System.monotonicNanos()
        if abortByFault(x, reactor) { return }
        // A CORS preflight the route's policy answers: its turn comes after the fault's (Istio's filter order).
        if exchanges[x].corsPreflight { return answerPreflight(x, reactor) }
        armExchangeDues(x, reactor)
        if exchanges[x].mirrorDraws != 0 { mirrorRequest(x, reactor) }
        startRouteTimeout(x, reactor)
        acquireUpstream(x, reactor)
    }

    /// Draws the route's abort; when it fires, answers the request (HTTP status and "fault filter abort", or, with a
    /// gRPC status, 200 with `grpc-status` to a gRPC client) and returns true.
    func abortByFault(_ x: XID, _ reactor: Reactor<Backend>) -> Bool {
        let fault = exchanges[x].fault
        guard fault.abortPerMillion > 0 && random.next() % 1_000_000 < UInt64(fault.abortPerMillion) else { return false }
        counters.faultAborts.add(1, ordering: .relaxed)
        let head = requestParsers.parsers[Int(exchanges[x].request.parser)].head
        exchanges[x].report.flags.insert(.faultInjected)
        exchanges[x].report.status = fault.abortStatus
        var response = RouteResponse(status: fault.abortStatus, direct: true, body: FaultReply.body, fields: FaultReply.plainFields)
        if fault.abortGrpc >= 0 && bytes.isGRPC(head, held: exchanges[x].request.held) {
            // Trailers-only, as Envoy answers a gRPC request locally: the status in the head, no body.
            response.body = []
            response.fields = FaultReply.grpcFields[fault.abortGrpc]
        }
        respondFromRoute(x, head, response, port: hostPort(head, x) ?? 80, reactor)
        if exchanges.isCurrent(x) { exchanges[x].report.answeredBy = .faultAbort }
        return true
    }
}
