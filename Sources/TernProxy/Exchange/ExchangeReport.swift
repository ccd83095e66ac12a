import TernCore
import TernTelemetry

/// What an exchange reports when it ends (istio_requests_total and its histograms, the access-log line, the
/// span): reported exactly once (`recorded`).
struct ExchangeReport {
    var recorded = true
    var status = 0
    var flags = ResponseFlags()
    /// The destination service's id in the metrics registry (0: unknown).
    var service: UInt32 = 0
    /// Bytes of the request received from the client and of the response sent to it (heads included), and the
    /// part of the latter that was heads.
    var requestWire: UInt64 = 0
    var responseWire: UInt64 = 0
    var responseHeads: UInt64 = 0
    /// When the request head went upstream and when the response head came back (upstream service time).
    var upstreamStart: UInt64 = 0
    var upstreamHead: UInt64 = 0
    /// The endpoint whose active-request gauge this exchange raised (0: none).
    var activeKey: UInt64 = 0
    /// Tracing: the proxy's span for this request (its parent the incoming context), and when the request
    /// started on the wall clock (spans, access log).
    var trace = TraceContext()
    var startWall: UInt64 = 0
    /// The request head's length (the access log reports body bytes), the route's name, and the local reply
    /// that answered, if one did.
    var requestHeadLength: UInt64 = 0
    var routeName = ""
    var answeredBy: LocalReply? = nil
    /// The failure came after the response had started: the client connection was reset instead of answered.
    var failedAfterResponseStarted = false
    /// Tern closed the client connection under the exchange because the drain timeout ran out (LR, Envoy's
    /// `downstream_local_disconnect(…)` details), not the client.
    var cutAtDrainTimeout = false
    /// Why the upstream connection failed below HTTP (a TLS handshake), in Envoy's words: the 503's body and the
    /// access log's upstream_transport_failure_reason.
    var transportFailure = ""
    /// The request is gRPC (a POST whose Content-Type is `application/grpc` or `application/grpc+…`): Istio's
    /// `request_protocol` "grpc"; and the response's `grpc-status` (its head's, a trailers-only response's, or its
    /// trailers'; -1: none seen).
    var grpc = false
    var grpcStatus: Int16 = -1
    /// Its `grpc-message`, from the same place (empty: none).
    var grpcMessage = ShortText()
}
