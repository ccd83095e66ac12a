import TernTelemetry

/// Why an upstream attempt did not bring a response: what the client is answered (status, body and Envoy's
/// response flag, as `LocalReply`), where the failure came from, and whether trying again may help. The router
/// hands it to `RetryPolicy` before anything is answered.
struct ProxyError: Equatable {
    enum Source: Equatable {
        /// Tern itself: a limit, a refused request, a queue full (UO).
        case local
        /// The upstream connection could not be made (refused, timed out: UF).
        case upstreamConnect
        /// The upstream connection closed or reset before the response ended (UC).
        case upstreamReset
        /// An HTTP/2 upstream refused the stream (REFUSED_STREAM, or above its GOAWAY's last stream id): not
        /// processed (UR; Envoy's `remote_refused_stream_reset`).
        case upstreamRefused
        /// The HTTP/2 connection the request was given went away (GOAWAY, or its end) before any of the request
        /// was submitted on it: nothing reached the upstream.
        case upstreamNotSent
        /// The upstream sent something that is not HTTP/1.1 (UPE).
        case upstreamProtocol
        /// No response in time (UT): the route's timeout, which bounds the request and all its retries.
        case upstreamTimeout
        /// No response within the try's `perTryTimeout` (UT, unless a retry follows).
        case upstreamPerTryTimeout
    }

    var reply: LocalReply
    var source: Source
    /// The request was certainly not processed by the upstream, so sending it again cannot do anything twice:
    /// the connection failed before it was made, or a reused keep-alive connection turned out to be closed
    /// before any byte of the response (the race every keep-alive client has with an idle upstream timeout).
    var retryable: Bool

    static let connectFailure = ProxyError(reply: .connectFailure, source: .upstreamConnect, retryable: true)
    static let overflow = ProxyError(reply: .overflow, source: .local, retryable: false)
    static let malformedResponse = ProxyError(reply: .badGateway, source: .upstreamProtocol, retryable: false)
    static let timeout = ProxyError(reply: .upstreamTimeout, source: .upstreamTimeout, retryable: false)
    static let perTryTimeout = ProxyError(reply: .upstreamTimeout, source: .upstreamPerTryTimeout, retryable: false)
    /// An HTTP/2 upstream refused the stream (REFUSED_STREAM, or above the last stream of its GOAWAY): it was not
    /// processed, so the retry policy may send it again (`refused-stream`, in Istio's default), as a counted retry
    /// with its back-off, never the uncounted keep-alive replay (an upstream refusing every stream would loop).
    static let refusedStream = ProxyError(reply: .remoteRefusedStream, source: .upstreamRefused, retryable: false)
    /// Its HTTP/2 connection went away before the request was submitted on it: sent again on another connection at
    /// once and uncounted, as Envoy's pool moves a request that is not yet on a connection (no flag, no retry, no
    /// outlier outcome); once: a second time it is a refused stream (`RetryPolicy.decide`).
    static let notSent = ProxyError(reply: .remoteRefusedStream, source: .upstreamNotSent, retryable: true)

    /// The upstream connection ended before the response did; `reusedConnection`: it had served an exchange
    /// before this one.
    static func reset(reusedConnection: Bool) -> ProxyError {
        ProxyError(reply: .connectionTermination, source: .upstreamReset, retryable: reusedConnection)
    }

    var flags: ResponseFlags { reply.responseFlags }
}
