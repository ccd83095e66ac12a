/// One try of an exchange against an upstream endpoint: where it goes, the connection carrying it, and what of
/// the request can still be sent again. The router decides from a `ProxyError` and this attempt whether a
/// failure is answered or tried again (`RetryPolicy`).
struct UpstreamAttempt {
    /// The endpoint's index in the cluster runtime's pools, or -1 before routing.
    var endpoint = -1
    /// The upstream connection carrying it (nil while waiting for one, or after it was detached).
    var connection: UID? = nil
    /// The request's bytes [replayFrom, held start) are still held whole, so the request can be sent again on a
    /// fresh connection (nil: not replayable: a body streamed, or an upgrade).
    var replayFrom: Int? = nil
    /// The upstream connection may carry another request once this response ends.
    var reusable = false
    /// The request as its load balancer counts it, to report it finished to the same balancer and endpoint
    /// even when the route table was swapped meanwhile (nil: none outstanding).
    var outstanding: OutstandingRequest? = nil
    /// With TLS origination and no fixed SNI: the hash of the request's Host (without port), the SNI its
    /// connection must have been made with (0: none). Its text is in the pool's `serverNames`.
    var serverName: UInt64 = 0
    /// It goes over HTTP/2 (a stream on one of its endpoint's HTTP/2 connections).
    var http2 = false
    /// The request was moved once, uncounted, off an HTTP/2 connection that went away before it was sent
    /// (`ProxyError.notSent`); again, it counts as a refused stream.
    var movedNotSent = false
}
