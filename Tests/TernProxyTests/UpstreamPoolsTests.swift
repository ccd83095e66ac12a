// The cluster runtime's HTTP/1.1 pools without sockets: pool accounting across table swaps.
import TernConfig
import TernCore
import TernIO
import Testing
@testable import TernProxy

@Suite struct UpstreamPoolsTests {
    func address(_ i: Int) -> SocketAddress { SocketAddress(parsing: "10.0.\(i / 250).\(i % 250 + 1):8080")! }
    func table(_ range: Range<Int>) -> [[SocketAddress?]] { [range.map { address($0) }] }

    @Test func endpointsThatLeaveTheTableAreFreedAndTheirSlotsReused() {
        var pools = UpstreamPools(listenerUpstreams: [])
        var (endpoints, retired) = pools.bind(clusters: table(0..<10))
        #expect(endpoints == [Array(0..<10)])
        #expect(retired.isEmpty)
        // A mesh whose endpoints churn: every swap replaces half of them. The pools follow the live endpoints.
        for round in 1...200 {
            (endpoints, retired) = pools.bind(clusters: table((round * 5)..<(round * 5 + 10)))
            #expect(retired.count == 5)
            #expect(pools.liveCount == 10)
            #expect(pools.slots.count <= 15, "slots must be reused, not appended (round \(round))")
            // The endpoints kept their pools: the table's second half is the next table's first.
            for (i, e) in endpoints[0].enumerated() { #expect(pools.slots[e].address == address(round * 5 + i)) }
        }
    }

    @Test func aPoolInUseOutlivesItsEndpointLeavingUntilTheLastUserIsDone() {
        var pools = UpstreamPools(listenerUpstreams: [])
        let e = pools.bind(clusters: table(0..<1)).endpoints[0][0]
        pools.exchangeStarted(e)
        pools.connectionOpened(e)
        pools.connectionOpened(e)
        let retired = pools.bind(clusters: table(1..<2)).retired
        #expect(retired == [e])
        #expect(pools.liveCount == 2)
        #expect(pools.slots[e].live && !pools.slots[e].configured)
        pools.connectionClosed(e)
        pools.exchangeFinished(e)
        #expect(pools.slots[e].live, "one connection still open")
        pools.connectionClosed(e)
        #expect(!pools.slots[e].live)
        #expect(pools.liveCount == 1)
        // The freed slot goes to the next new endpoint.
        let next = pools.bind(clusters: [[address(1), address(2)]]).endpoints[0]
        #expect(next == [1, e])
    }

    @Test func anEndpointThatComesBackBeforeItsPoolIsFreedKeepsIt() {
        var pools = UpstreamPools(listenerUpstreams: [])
        let e = pools.bind(clusters: table(0..<1)).endpoints[0][0]
        pools.connectionOpened(e)
        _ = pools.bind(clusters: table(1..<2))
        #expect(!pools.slots[e].configured)
        let back = pools.bind(clusters: table(0..<2)).endpoints[0]
        #expect(back[0] == e)
        #expect(pools.slots[e].configured)
        pools.connectionClosed(e)
        #expect(pools.slots[e].live, "named again: kept")
    }

    @Test func listenerUpstreamsAreNeverFreed() {
        var pools = UpstreamPools(listenerUpstreams: [address(0), address(1)])
        pools.connectionOpened(0)
        pools.connectionClosed(0)
        pools.exchangeStarted(1)
        pools.exchangeFinished(1)
        #expect(pools.liveCount == 2)
        #expect(pools.slots[0].live && pools.slots[1].live)
    }

    @Test func endpointsWithoutAnAddressMapToMinusOne() {
        var pools = UpstreamPools(listenerUpstreams: [])
        let endpoints = pools.bind(clusters: [[nil, address(3)], [address(3)]]).endpoints
        #expect(endpoints == [[-1, 0], [0]])
        #expect(pools.liveCount == 1)
    }

    @Test func theWaitingQueueGrowsOnDemandUpToItsLimitAndKeepsOrder() {
        var q = UpstreamPools.PendingQueue()
        #expect(q.capacity == 0, "nothing preallocated per endpoint")
        let ids = (0..<20).map { XID(index: UInt32($0), generation: 0) }
        for id in ids.prefix(12) {
            let pushed = q.push(id, limit: 12)
            #expect(pushed)
        }
        let overflow = q.push(ids[12], limit: 12)
        #expect(!overflow, "full at the limit")
        #expect(q.capacity == 12)
        for i in 0..<5 {
            let popped = q.pop()
            #expect(popped == ids[i])
        }
        for id in ids[12..<17] {
            let pushed = q.push(id, limit: 12)
            #expect(pushed)
        }
        var out: [XID] = []
        while let id = q.pop() { out.append(id) }
        #expect(out == Array(ids[5..<17]))
        #expect(q.count == 0)
    }
}

@Suite struct RetryPolicyTests {
    func attempt(replayFrom: Int?) -> UpstreamAttempt {
        var a = UpstreamAttempt()
        a.replayFrom = replayFrom
        return a
    }

    func decide(_ e: ProxyError, replayFrom: Int? = 0, started: Bool = false, seen: Bool = false,
                on: RetryOn = [], left: Int32 = 2) -> RetryPolicy.Decision {
        RetryPolicy.decide(e, attempt(replayFrom: replayFrom), responseStarted: started, responseBytesSeen: seen,
                           policy: RetryFacts(retries: 2, on: on, codes: 0..<0), retriesLeft: left)
    }

    @Test func aClosedReusedConnectionIsReplayedOnceWithoutAPolicy() {
        #expect(decide(.reset(reusedConnection: true), replayFrom: 7) == .retry(from: 7, counted: false))
        // A fresh connection that fails may have had the request processed: not sent twice without a policy.
        #expect(decide(.reset(reusedConnection: false)) == .answer)
        #expect(decide(.reset(reusedConnection: true), seen: true) == .answer)
        #expect(decide(.reset(reusedConnection: true), replayFrom: nil) == .answer)
    }

    @Test func eachFailureIsRetriedOnThePoliciesEnvoyRetriesItOn() {
        // Connect failures: connect-failure, reset-before-request, reset, 5xx, gateway-error.
        for on: RetryOn in [.connectFailure, .resetBeforeRequest, .reset, .serverError, .gatewayError] {
            #expect(decide(.connectFailure, on: on) == .retry(from: 0, counted: true), "\(on)")
        }
        for on: RetryOn in [.refusedStream, .retriable4xx, .retriableStatusCodes, .grpcUnavailable] {
            #expect(decide(.connectFailure, on: on) == .answer, "\(on)")
        }
        // A reset after the request went: reset, 5xx, gateway-error; not connect-failure nor reset-before-request.
        for on: RetryOn in [.reset, .serverError, .gatewayError] {
            #expect(decide(.reset(reusedConnection: false), on: on) == .retry(from: 0, counted: true), "\(on)")
        }
        for on: RetryOn in [.connectFailure, .resetBeforeRequest] {
            #expect(decide(.reset(reusedConnection: false), on: on) == .answer, "\(on)")
        }
        // A per-try timeout (Envoy resets the try): 5xx, gateway-error and reset; the route's own timeout and
        // overflow never.
        #expect(decide(.perTryTimeout, on: .gatewayError) == .retry(from: 0, counted: true))
        #expect(decide(.perTryTimeout, on: .reset) == .retry(from: 0, counted: true))
        #expect(decide(.perTryTimeout, on: [.connectFailure, .retriableStatusCodes]) == .answer)
        #expect(decide(.timeout, on: [.serverError, .reset, .gatewayError]) == .answer)
        #expect(decide(.overflow, on: [.serverError, .reset, .gatewayError]) == .answer)
    }

    @Test func aRefusedHTTP2StreamIsACountedRetryOfRefusedStreamNeverTheUncountedReplay() {
        for on: RetryOn in [.refusedStream, .reset, .resetBeforeRequest, .serverError, .gatewayError] {
            #expect(decide(.refusedStream, on: on) == .retry(from: 0, counted: true), "\(on)")
        }
        // Without a policy that names it, answered: an upstream refusing every stream cannot make a loop.
        #expect(decide(.refusedStream, on: [.connectFailure, .grpcUnavailable]) == .answer)
        #expect(decide(.refusedStream) == .answer)
        #expect(decide(.refusedStream, on: .refusedStream, left: 0) == .limitExceeded)
    }

    @Test func aRequestItsHTTP2ConnectionNeverSentMovesOnceUncountedThenCountsAsRefused() {
        // Whatever the policy, with no retries left too: nothing reached the upstream.
        for on: RetryOn in [[], .refusedStream, .connectFailure] {
            #expect(decide(.notSent, replayFrom: 3, on: on, left: 0) == .retry(from: 3, counted: false), "\(on)")
        }
        #expect(decide(.notSent, replayFrom: nil) == .answer)
        var moved = attempt(replayFrom: 0)
        moved.movedNotSent = true
        func again(_ on: RetryOn, left: Int32 = 2) -> RetryPolicy.Decision {
            RetryPolicy.decide(.notSent, moved, responseStarted: false, responseBytesSeen: false,
                               policy: RetryFacts(retries: 2, on: on, codes: 0..<0), retriesLeft: left)
        }
        #expect(again(.refusedStream) == .retry(from: 0, counted: true))
        #expect(again(.refusedStream, left: 0) == .limitExceeded)
        #expect(again([]) == .answer)
    }

    @Test func noRetryOnceTheResponseReachedTheClientOrTheRequestIsNotHeldWhole() {
        #expect(decide(.reset(reusedConnection: false), started: true, on: .reset) == .answer)
        #expect(decide(.connectFailure, replayFrom: nil, on: .connectFailure) == .answer)
    }

    @Test func aPolicyWithoutRetriesLeftIsURX() {
        #expect(decide(.connectFailure, on: .connectFailure, left: 0) == .limitExceeded)
        // The keep-alive replay is not a retry of the policy: it happens with none left.
        #expect(decide(.reset(reusedConnection: true), on: .connectFailure, left: 0) == .retry(from: 0, counted: false))
    }

    @Test func responseHeadsAreRetriedAsEnvoyDoes() {
        func would(_ status: Int, grpc: Int? = nil, limited: Bool = false, _ on: RetryOn, codes: [Int] = []) -> Bool {
            RetryPolicy.wouldRetry(status: status, grpcStatus: grpc, rateLimited: limited, on) { codes.contains($0) }
        }
        #expect(would(500, .serverError) && would(599, .serverError) && !would(499, .serverError))
        #expect(would(502, .gatewayError) && would(503, .gatewayError) && would(504, .gatewayError) && !would(500, .gatewayError))
        #expect(would(409, .retriable4xx) && !would(408, .retriable4xx))
        #expect(would(418, .retriableStatusCodes, codes: [418]) && !would(418, .serverError, codes: [418]))
        // Istio's mesh default names retriable-status-codes with no codes: no status is retried on.
        #expect(!would(503, RetryFacts.meshDefault.on))
        // gRPC statuses in the head (a trailers-only response), each by its own policy.
        #expect(would(200, grpc: 14, .grpcUnavailable) && would(200, grpc: 1, .grpcCancelled) && !would(200, grpc: 14, .grpcCancelled))
        #expect(would(200, grpc: 4, .grpcDeadlineExceeded) && would(200, grpc: 8, .grpcResourceExhausted) && would(200, grpc: 13, .grpcInternal))
        // x-envoy-ratelimited decides alone: only envoy-ratelimited retries it, whatever the status.
        #expect(would(429, limited: true, .envoyRateLimited) && !would(503, limited: true, [.serverError, .gatewayError]))
    }

    @Test func backOffIsEnvoysFullJitterWithItsCap() {
        let f = RetryFacts.meshDefault
        // Retry n waits in [0, (2^n - 1) × 25 ms), at most 250 ms.
        #expect(f.backoff(retry: 1, random: 24_999_999) == 24_999_999 && f.backoff(retry: 1, random: 25_000_000) == 0)
        #expect(f.backoff(retry: 2, random: 74_999_999) == 74_999_999)
        #expect(f.backoff(retry: 9, random: UInt64.max) < 250_000_000)
        #expect(f.backoff(retry: 60, random: 249_999_999) == 249_999_999)
    }

    @Test func errorsCarryTheirFlagSourceAndRetryability() {
        #expect(ProxyError.connectFailure.reply.flag == "UF" && ProxyError.connectFailure.source == .upstreamConnect)
        #expect(ProxyError.reset(reusedConnection: false).reply.flag == "UC")
        #expect(ProxyError.overflow.reply.flag == "UO" && !ProxyError.overflow.retryable)
        #expect(ProxyError.malformedResponse.reply.flag == "UPE" && ProxyError.malformedResponse.source == .upstreamProtocol)
        #expect(ProxyError.perTryTimeout.reply.flag == "UT")
    }
}
