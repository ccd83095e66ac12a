import TernCore

/// What one access-log line reports besides the request's captured bytes (those come from a `RequestCapture`
/// slot): times, sizes, outcome, and the upstream side. The proxy fills one when an HTTP exchange or a TCP
/// connection ends. Its strings are rendered by the proxy ahead of time (per endpoint, per cluster, per route,
/// constants for the details), so building a record retains them and allocates nothing. An empty string is an
/// absent value (null in JSON, "-" in text).
public struct AccessLogRecord: Sendable {
    /// Wall clock at the first byte of the request (or the connection's accept for TCP), µs since the epoch.
    public var startMicros: UInt64 = 0
    /// From the start to the last byte sent downstream (`%DURATION%`, written in whole ms).
    public var durationMicros: UInt64 = 0
    /// From the request head sent upstream to the response head received; nil when no upstream answered.
    public var upstreamServiceMicros: UInt64? = nil
    /// The status sent downstream; 0 when no response was started (and for TCP).
    public var responseCode: Int = 0
    public var flags = ResponseFlags()
    /// Body bytes for HTTP; connection bytes for TCP (`%BYTES_RECEIVED%`, `%BYTES_SENT%`).
    public var bytesReceived: UInt64 = 0
    public var bytesSent: UInt64 = 0
    public var `protocol` = AccessLogProtocol.http11
    /// `10.0.0.7:8080`.
    public var upstreamHost = ""
    /// `outbound|80||cart.shop.svc.cluster.local` (`%UPSTREAM_CLUSTER_RAW%`).
    public var upstreamCluster = ""
    public var routeName = ""
    /// `via_upstream`, `route_not_found`, `upstream_reset_before_response_started{connection_failure}`, …
    public var responseCodeDetails = ""
    public var connectionTerminationDetails = ""
    public var upstreamLocalAddress = ""
    public var upstreamTransportFailureReason = ""
    /// The TLS SNI the client asked for.
    public var requestedServerName = ""
    /// A gRPC response's status (`grpc_status`, Envoy's %GRPC_STATUS(NUMBER)%); -1: none (not gRPC, or no status
    /// seen).
    public var grpcStatus = -1
    /// Its `grpc-message`, as sent (percent-encoded, cut at 128 bytes; `grpc_message`); empty: none.
    public var grpcMessage = ShortText()

    public init() {}
}
