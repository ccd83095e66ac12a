// Retries (VirtualService `retries`, or Istio's mesh default when a route has none), as Envoy's router runs them:
// after a failed try (a connect failure, a reset before the response, a per-try timeout) or on a response head the
// policy names (a 5xx, a status code of its list, a gRPC status), before any byte of that response reaches the
// client. A retry backs off first (full jitter, 25 ms base, 250 ms cap), goes to an endpoint not tried yet when
// one exists (`retryIgnorePreviousHosts`), and carries `x-envoy-attempt-count`. The route's `timeout` bounds the
// request and all its retries. A request is replayable only while all of it is held: its body arrived with its
// head; a body that streamed past that is not retried.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    /// An attempt failed with `error`: the retry policy decides between trying again and answering the client (a
    /// local response, or a reset if the response had already started).
    func attemptFailed(_ x: XID, _ error: ProxyError, responseBytesSeen: Bool, _ reactor: Reactor<Backend>) {
        // Its connect failed or it timed out waiting: no longer pending (Envoy's pool drops the stream); a retry
        // takes a unit again when it waits again.
        discharge(x, .pending)
        switch error.source {
        case .upstreamConnect: recordOutcome(x, .connectFailed)
        case .upstreamReset, .upstreamProtocol, .upstreamRefused: recordOutcome(x, .reset)
        case .upstreamTimeout, .upstreamPerTryTimeout:
            // Only a try that reached an upstream and awaits its response head is the endpoint's timeout (not a
            // back-off, a queue, a connect, nor a response already under way), as Envoy counts it.
            if exchanges[x].attempt.connection != nil && exchanges[x].request.state != .waiting
                && exchanges[x].response.state == .head && !exchanges[x].responseStarted {
                recordOutcome(x, .timeout)
            }
        case .local, .upstreamNotSent: break
        }
        var attempt = exchanges[x].attempt
        if attempt.replayFrom == nil && exchanges[x].request.state == .waiting {
            // Nothing of the request was sent (its connection failed): it goes again as it is held.
            attempt.replayFrom = exchanges[x].request.held.start
        }
        let decision = RetryPolicy.decide(error, attempt, responseStarted: exchanges[x].responseStarted,
                                          responseBytesSeen: responseBytesSeen, policy: exchanges[x].retry,
                                          retriesLeft: exchanges[x].retriesLeft)
        switch decision {
        case .answer:
            fail(x, error.reply, reactor)
        case .limitExceeded:
            counters.retryLimitExceeded.add(1, ordering: .relaxed)
            exchanges[x].report.flags.insert(.upstreamRetryLimitExceeded)
            fail(x, error.reply, reactor)
        case .retry(let from, let counted):
            if counted {
                // The cluster's retry limit (maxRetries or its budget) may refuse it: then the failure is answered.
                guard admitRetry(x) else { return fail(x, error.reply, reactor) }
                Log.debug("\(error.reply.flag): retrying (\(exchanges[x].retriesLeft) retries left)")
                retry(x, from: from, reactor)
            } else {
                // The keep-alive replay: at once, on a new connection to the same endpoint.
                if error.source == .upstreamNotSent {
                    exchanges[x].attempt.movedNotSent = true
                    Log.debug("sending the request again on another HTTP/2 connection (the first went away before it was sent)")
                } else {
                    Log.debug("\(error.reply.flag) on a reused upstream connection; sending the request again on a new one")
                }
                detachUpstream(x, reusable: false, reactor)
                rewind(x, to: from, reactor)
                let e = exchanges[x].attempt.endpoint
                // (An HTTP/2 request replayed so goes again as any request would: on a connection with room.)
                if !exchanges[x].attempt.http2 && pools.slots[e].pending.count == 0 && mayConnect(x, e) && admitPending(x) {
                    connect(for: x, reactor)
                } else {
                    acquireUpstream(x, reactor)  // waits its turn (or is refused) as any request would
                }
            }
        }
    }

    /// Counts what the exchange's current try came to for outlier detection (Cluster/OutlierDetection.swift), on
    /// the endpoint its balancer counted it on.
    func recordOutcome(_ x: XID, _ outcome: OutlierOutcome) {
        guard let outstanding = exchanges[x].attempt.outstanding else { return }
        if balancers.record(outstanding, outcome, now: System.monotonicNanos()) {
            let e = exchanges[x].attempt.endpoint
            Log.info("outlier detection ejected \(e >= 0 ? pools.slots[e].address.description : "an endpoint") of \(balancers.clusterName(of: outstanding))")
        }
    }

    /// Under a retry policy, or drawn for a mirror, a request whose Content-Length body fits `--per-request-buffer-kb`
    /// (and, with its head, one assembly buffer) is held until all of it arrived, so a retry can send it again (and
    /// a mirror gets all of it): true when it waits for
    /// the rest of its body (`gathered` goes on). Not with `Expect: 100-continue` (the client waits for the
    /// upstream's 100 before sending it), nor when the head memory budget is spent (it then streams).
    func gatherForRetries(_ x: XID, _ head: HTTP1Head, _ reactor: Reactor<Backend>) -> Bool {
        guard !exchanges[x].retry.on.isEmpty || exchanges[x].mirrorDraws != 0, case .length(let n) = exchanges[x].request.body, !head.expectContinue,
              !exchanges[x].upgrade, n <= UInt64(settings.perRequestBufferBytes) else { return false }
        let total = head.length + Int(n)
        // Head and body within --max-request-headers-kb, so that one more receive (the rest of the body and
        // whatever pipelined request follows it) still fits the assembly; and gathering takes at most half of the
        // head memory, so that slow bodies cannot starve heads.
        guard exchanges[x].request.held.count < total, total <= settings.limits.maxHeaderBytes,
              bytes.largeInUse < bytes.headBudget / 2 else { return false }
        do {
            release(try bytes.holdLarge(&exchanges[x].request.held), reactor)
        } catch {
            return false
        }
        exchanges[x].gathering = true
        receiveFromClient(exchanges[x].downstream, reactor)
        return true
    }

    /// Bytes of a body being gathered arrived: appended; once all of it is held the request goes on.
    func gathered(_ x: XID, buffer: UInt16, count: Int, _ reactor: Reactor<Backend>) {
        do {
            let (a, b) = try bytes.take(buffer: buffer, count: count, into: &exchanges[x].request.held, budgeted: true)
            release(a, reactor)
            release(b, reactor)
        } catch {
            // (Cannot happen: the large assembly holds head and body; a pipelined request beyond them waits.)
            release(buffer, reactor)
            fail(x, .overloaded, reactor)
            return
        }
        let head = requestParsers.parsers[Int(exchanges[x].request.parser)].head
        guard case .length(let n) = exchanges[x].request.body,
              exchanges[x].request.held.count < head.length + Int(n) else {
            exchanges[x].gathering = false
            return forwardRouted(x, reactor)
        }
        receiveFromClient(exchanges[x].downstream, reactor)
    }

    enum ResponseRetry { case retry(from: Int), final }

    /// A response head was parsed: whether the policy retries on it (`retry`: the response is dropped and the
    /// request tried again from that offset), or it goes to the client (`final`, with flag URX when only the lack of
    /// retries left stopped a retry; also for a 1xx, after which, as in Envoy, the request is not tried again).
    /// (Also where a final response counts for outlier detection, so the head is read once.)
    func responseRetry(_ x: XID, parser p: Int) -> ResponseRetry {
        let head = responseParsers.parsers[p].head
        if head.isInterim && head.status != 101 { return .final }
        if head.status >= 200 { recordOutcome(x, .status(head.status)) }
        let on = exchanges[x].retry.on
        guard head.status != 101, !on.isEmpty, !exchanges[x].responseStarted, let from = exchanges[x].attempt.replayFrom,
              let routes, let routed = exchanges[x].routed else { return .final }
        let held = exchanges[x].response.held
        let grpc = on.isDisjoint(with: RetryOn.grpc) ? nil : bytes.decimalField(head, held: held, bytes.names.grpcStatus).value
        let codes = exchanges[x].retry.codes
        func would(limited: Bool) -> Bool {
            RetryPolicy.wouldRetry(status: head.status, grpcStatus: grpc, rateLimited: limited, on) { status in
                guard !codes.isEmpty else { return false }
                let forwarding = routedTables.table(routed.table, routes).forwarding
                for i in codes where Int(forwarding.retriableCodes[i]) == status { return true }
                return false
            }
        }
        // x-envoy-ratelimited is looked for only when it can change the answer (a response the policy would retry
        // otherwise, or an envoy-ratelimited policy): most responses are not scanned for it.
        guard would(limited: false) || on.contains(.envoyRateLimited) else { return .final }
        let limited = bytes.decimalField(head, held: held, bytes.names.envoyRateLimited).present
        guard would(limited: limited) else { return .final }
        guard exchanges[x].retriesLeft > 0 else {
            counters.retryLimitExceeded.add(1, ordering: .relaxed)
            exchanges[x].report.flags.insert(.upstreamRetryLimitExceeded)
            return .final
        }
        // The cluster's retry limit may refuse it: the response goes to the client, flagged UO.
        guard admitRetry(x) else { return .final }
        Log.debug("response \(head.status): retrying (\(exchanges[x].retriesLeft) retries left)")
        return .retry(from: from)
    }

    /// Tries the request again under the route's policy: the current try's connection and response go, the request
    /// is rewound, another endpoint is picked when one is left untried, and after the back-off it goes upstream.
    func retry(_ x: XID, from: Int, _ reactor: Reactor<Backend>) {
        counters.retries.add(1, ordering: .relaxed)
        exchanges[x].retriesLeft -= 1
        exchanges[x].tries += 1
        detachUpstream(x, reusable: false, reactor)
        rewind(x, to: from, reactor)
        repickEndpoint(x)
        let now = System.monotonicNanos()
        exchanges[x].lastActivity = now
        let wait = exchanges[x].retry.backoff(retry: Int(exchanges[x].tries - 1), random: random.next())
        if wait > 0 {
            // Backing off, the request holds no shared receive buffer (as one waiting for a connection).
            parkWaiting(x, reactor)
            exchanges[x].retryAt = max(1, saturatingAdd(now, wait))
        }
        armExchangeDues(x, reactor)
        if wait == 0 { acquireUpstream(x, reactor) }
    }

    /// A request that may be sent again keeps its bytes until its response head is read; they leave the shared
    /// receive buffer they arrived in for an assembly buffer of their own (as a request waiting for a connection
    /// does), so requests waiting on slow upstreams cannot hold all of the reactor's receive buffers.
    func parkForReplay(_ x: XID, _ reactor: Reactor<Backend>) {
        guard let from = exchanges[x].attempt.replayFrom, exchanges[x].request.held.buffer >= 0 else { return }
        let sent = exchanges[x].request.held.start - from
        exchanges[x].request.held.start = from
        // From the head budget beyond a small buffer: when it is spent, the request keeps its pooled buffer.
        guard let released = try? bytes.park(&exchanges[x].request.held, budgeted: true) else {
            exchanges[x].request.held.start = from + sent
            return
        }
        release(released, reactor)
        // Moved to the front of the assembly: the request starts at 0, what follows it where it was sent to.
        exchanges[x].attempt.replayFrom = exchanges[x].request.held.start
        exchanges[x].request.held.start += sent
    }

    /// The back-off before a retry ended: the request goes upstream.
    func retryBackoffEnded(_ x: XID, _ reactor: Reactor<Backend>) {
        exchanges[x].retryAt = 0
        exchanges[x].lastActivity = System.monotonicNanos()
        armExchangeDues(x, reactor)
        acquireUpstream(x, reactor)
    }

    /// The router takes the request (after the fault filter): the route's timeout starts now when the whole
    /// request is here (Envoy's starts at the end of the downstream request), or when its streamed body ends
    /// (`requestDone`).
    func startRouteTimeout(_ x: XID, _ reactor: Reactor<Backend>) {
        guard exchanges[x].requestEnd == 0, exchanges[x].request.body == .none || bodyHeldWhole(x) else { return }
        exchanges[x].requestEnd = System.monotonicNanos()
        armExchangeDues(x, reactor)
    }

    /// Whether all of a Content-Length body is held with its head.
    func bodyHeldWhole(_ x: XID) -> Bool {
        guard case .length(let n) = exchanges[x].request.body, exchanges[x].request.parser >= 0 else { return false }
        let head = requestParsers.parsers[Int(exchanges[x].request.parser)].head.length
        return exchanges[x].request.held.count >= head + Int(n)
    }

    /// Sets the exchange's timer for the earliest of what it waits for: the stream idle timeout, the route's
    /// timeout once it runs, the try's timeout, the end of a back-off or of an injected delay.
    func armExchangeDues(_ x: XID, _ reactor: Reactor<Backend>) {
        var due = saturatingAdd(exchanges[x].lastActivity, settings.streamIdleTimeout.nanoseconds)
        if exchanges[x].timeout > 0 && exchanges[x].requestEnd != 0 {
            due = min(due, saturatingAdd(exchanges[x].requestEnd, exchanges[x].timeout))
        }
        if exchanges[x].retry.perTryTimeout > 0 && exchanges[x].tryEnd != 0 {
            due = min(due, saturatingAdd(exchanges[x].tryEnd, exchanges[x].retry.perTryTimeout))
        }
        if exchanges[x].retryAt != 0 { due = min(due, exchanges[x].retryAt) }
        if exchanges[x].delayUntil != 0 { due = min(due, exchanges[x].delayUntil) }
        armExchangeTimer(x, at: due, reactor)
    }

    /// The exchange goes back to the state before its request was sent: the held request from `from` again, its
    /// body framing as the head announced it, and no response.
    func rewind(_ x: XID, to from: Int, _ reactor: Reactor<Backend>) {
        // (Trailers a failed try's response left are not the next try's.)
        if exchanges[x].responseTrailers.capacity > 0 { h2TakeBackTrailers(&exchanges[x].responseTrailers) }
        exchanges[x].attempt.replayFrom = nil
        exchanges[x].request.held.start = from
        exchanges[x].request.body = exchanges[x].replayBody
        exchanges[x].request.decoder.reset()
        exchanges[x].request.inTrailers = false
        exchanges[x].request.state = .waiting
        dropHeld(&exchanges[x].response.held, reactor)
        dropHeld(&exchanges[x].response.extras, reactor)
        prepareResponseParser(x)
        exchanges[x].response.state = .idle
        exchanges[x].report.status = 0
        exchanges[x].report.upstreamHead = 0
        exchanges[x].report.transportFailure = ""
        exchanges[x].tryEnd = 0
    }

    /// With `retryIgnorePreviousHosts` (Istio's default), a retry goes to an endpoint of the cluster not tried
    /// yet, picked by the cluster's balancer (up to five picks, as Istio configures Envoy's previous-hosts
    /// predicate); the same endpoint when none is found, under consistent hashing (Istio does not apply the
    /// predicate there), or when the table the request was routed with is no longer the bound one. With
    /// `retryRemoteLocalities`, the pick leaves out the locality ranks tried (Envoy's previous_priorities).
    func repickEndpoint(_ x: XID) {
        let cluster = Int(exchanges[x].cluster)
        let ignorePrevious = exchanges[x].retry.ignorePreviousHosts, remote = exchanges[x].retry.remoteLocalities
        guard ignorePrevious || remote, cluster >= 0, let routes, let routed = exchanges[x].routed,
              routedTables.isCurrent(routed.table), let outstanding = exchanges[x].attempt.outstanding,
              !routes.current.clusters[cluster].loadBalancing.hashesConsistently else { return }
        let table = routes.current
        var picked: Int? = nil
        let now = System.monotonicNanos()
        // Envoy's previous_priorities as Istio sets it (update_frequency 2): the ranks tried are left out from the
        // second retry on, refreshed every second attempt.
        if remote && (exchanges[x].tries - 1) % 2 == 0 { exchanges[x].excludedRanks = exchanges[x].triedRanks }
        let avoid = remote ? exchanges[x].excludedRanks : 0
        for _ in 0..<5 {
            guard let e = balancers.pick(cluster: cluster, table: table, random: random.next(), now: now, avoidRanks: avoid) else { return }
            if !ignorePrevious || exchanges[x].tried & (1 << UInt64(e & 63)) == 0 {
                picked = e
                break
            }
        }
        guard let e = picked, clusterEndpoints[cluster][e] >= 0 else { return }
        let endpoint = clusterEndpoints[cluster][e], previous = exchanges[x].attempt.endpoint
        exchanges[x].tried |= 1 << UInt64(e & 63)
        if remote { exchanges[x].triedRanks |= 1 << balancers.rank(cluster: cluster, endpoint: e) }
        balancers.requestFinished(outstanding)
        exchanges[x].attempt.outstanding = balancers.requestStarted(cluster: cluster, endpoint: e)
        if previous >= 0 { pools.exchangeFinished(previous) }
        pools.exchangeStarted(endpoint)
        exchanges[x].attempt.endpoint = endpoint
        if let metrics {
            if exchanges[x].report.activeKey != 0 { metrics.endpoint(exchanges[x].report.activeKey, EndpointWords.activeRequests, -1) }
            exchanges[x].report.activeKey = pools.slots[endpoint].key
            metrics.endpoint(pools.slots[endpoint].key, EndpointWords.activeRequests, 1)
        }
        setServerName(x, endpoint: endpoint, requestParsers.parsers[Int(exchanges[x].request.parser)].head)
    }
}
