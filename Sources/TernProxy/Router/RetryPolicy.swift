import TernConfig

/// Where a retry is decided: given how an attempt failed (or the response head it brought) and what of the
/// request remains, whether the exchange is tried again or answered. Pure (no I/O), so each rule is unit-tested
/// alone. The rules are Envoy's router's (`RetryStateImpl`), under the route's Istio `retries` (or Istio's mesh
/// default), plus one Envoy users do not configure: a request sent on a reused keep-alive connection that the
/// upstream had already closed goes out again once on a new connection, provided no byte of the response came
/// back (the race every keep-alive client has with an idle upstream timeout), without counting as a retry.
struct RetryPolicy {
    enum Decision: Equatable {
        /// Send the request again, from this offset of the held request bytes; `counted`: a retry of the
        /// route's policy (backed off, counted against its retries), not the keep-alive replay.
        case retry(from: Int, counted: Bool)
        /// Answer the client with the error (or reset it if the response has started).
        case answer
        /// The policy would retry, but the request has no retries left: answered, with flag URX.
        case limitExceeded
    }

    /// After a failed attempt (no response head).
    /// - Parameters:
    ///   - error: how the attempt failed.
    ///   - attempt: the attempt; its `replayFrom` says whether the request is still held whole.
    ///   - responseStarted: the client got response bytes: never sent twice.
    ///   - responseBytesSeen: some of the response arrived from the upstream (the keep-alive replay needs none).
    ///   - policy: the route's retry policy, and the retries it has left.
    static func decide(_ error: ProxyError, _ attempt: UpstreamAttempt, responseStarted: Bool, responseBytesSeen: Bool,
                       policy: RetryFacts, retriesLeft: Int32) -> Decision {
        guard !responseStarted, let from = attempt.replayFrom else { return .answer }
        // Moved once uncounted; a second time it is what a refused stream is (so nothing can loop).
        if error.source == .upstreamNotSent && !attempt.movedNotSent { return .retry(from: from, counted: false) }
        if wouldRetry(error, policy.on) { return retriesLeft > 0 ? .retry(from: from, counted: true) : .limitExceeded }
        if error.retryable && error.source == .upstreamReset && !responseBytesSeen { return .retry(from: from, counted: false) }
        return .answer
    }

    /// Whether a failure is one the policy retries (Envoy's `wouldRetryFromReset` and per-try timeouts).
    static func wouldRetry(_ error: ProxyError, _ on: RetryOn) -> Bool {
        switch error.source {
        case .local, .upstreamTimeout:
            // An overflow is never retried, nor is the route's own timeout (it bounds the retries).
            return false
        case .upstreamConnect:
            // The request never reached the upstream.
            return !on.isDisjoint(with: [.connectFailure, .resetBeforeRequest, .reset, .serverError, .gatewayError])
        case .upstreamReset, .upstreamProtocol:
            return !on.isDisjoint(with: [.reset, .serverError, .gatewayError])
        case .upstreamRefused, .upstreamNotSent:
            // Envoy: a remote refused-stream reset is retried under refused-stream, and as any reset (it came before
            // the request was processed: reset-before-request too).
            return !on.isDisjoint(with: [.refusedStream, .reset, .resetBeforeRequest, .serverError, .gatewayError])
        case .upstreamPerTryTimeout:
            // Envoy resets the try (a local reset): 5xx, gateway-error and reset retry it.
            return !on.isDisjoint(with: [.serverError, .gatewayError, .reset])
        }
    }

    /// Whether a final response head is one the policy retries (Envoy's `wouldRetryFromHeaders`).
    /// - Parameters:
    ///   - status: its status code.
    ///   - grpcStatus: its `grpc-status` field, when it has one (a trailers-only gRPC response).
    ///   - rateLimited: it carries `x-envoy-ratelimited` (from an upstream Envoy).
    ///   - isRetriableCode: whether a status is in the route's `retryOn` status codes.
    static func wouldRetry(status: Int, grpcStatus: Int?, rateLimited: Bool, _ on: RetryOn,
                           isRetriableCode: (Int) -> Bool) -> Bool {
        if rateLimited { return on.contains(.envoyRateLimited) }
        if on.contains(.serverError) && status >= 500 && status <= 599 { return true }
        if on.contains(.gatewayError) && (status == 502 || status == 503 || status == 504) { return true }
        if on.contains(.retriable4xx) && status == 409 { return true }
        if on.contains(.retriableStatusCodes) && isRetriableCode(status) { return true }
        if let g = grpcStatus {
            switch g {
            case 1: return on.contains(.grpcCancelled)
            case 4: return on.contains(.grpcDeadlineExceeded)
            case 8: return on.contains(.grpcResourceExhausted)
            case 13: return on.contains(.grpcInternal)
            case 14: return on.contains(.grpcUnavailable)
            default: return false
            }
        }
        return false
    }
}
