/// Where a retry is decided: given how an attempt failed and what of it remains, whether the exchange is tried
/// again or answered. Pure (no I/O), so each rule is unit-tested alone.
///
/// Today's policy is the one HTTP/1.1 keep-alive needs and Envoy applies without any configuration: a request
/// sent on a reused connection that the upstream had already closed goes out again once, on a new connection,
/// provided Tern still holds all of it and no byte of the response has come back. Istio's `retries` (attempts,
/// perTryTimeout, retryOn, back-off, budgets) extend this type in the resilience issue.
struct RetryPolicy {
    enum Decision: Equatable {
        /// Send the request again on a new connection, from this offset of the held request bytes.
        case retry(from: Int)
        /// Answer the client with the error (or reset it if the response has started).
        case answer
    }

    /// - Parameters:
    ///   - error: how the attempt failed.
    ///   - attempt: the attempt; its `replayFrom` says whether the request is still held whole.
    ///   - responseBytesSeen: some of the response arrived (or reached the client): never sent twice.
    static func decide(_ error: ProxyError, _ attempt: UpstreamAttempt, responseBytesSeen: Bool) -> Decision {
        guard error.retryable, error.source == .upstreamReset, !responseBytesSeen,
              let from = attempt.replayFrom else { return .answer }
        return .retry(from: from)
    }
}
