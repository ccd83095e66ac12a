// The cluster runtime's HTTP/1.1 pools without sockets: pool accounting across table swaps.
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

    @Test func aClosedReusedConnectionIsRetriedFromTheHeldRequest() {
        let d = RetryPolicy.decide(.reset(reusedConnection: true), attempt(replayFrom: 7), responseBytesSeen: false)
        #expect(d == .retry(from: 7))
    }

    @Test func aFreshConnectionThatFailsIsAnswered() {
        // The upstream may have processed a request on a connection it accepted for it: not sent twice.
        #expect(RetryPolicy.decide(.reset(reusedConnection: false), attempt(replayFrom: 0), responseBytesSeen: false) == .answer)
    }

    @Test func nothingIsRetriedOnceResponseBytesArrived() {
        #expect(RetryPolicy.decide(.reset(reusedConnection: true), attempt(replayFrom: 0), responseBytesSeen: true) == .answer)
    }

    @Test func aRequestNoLongerHeldWholeIsAnswered() {
        #expect(RetryPolicy.decide(.reset(reusedConnection: true), attempt(replayFrom: nil), responseBytesSeen: false) == .answer)
    }

    @Test func errorsCarryTheirFlagSourceAndRetryability() {
        #expect(ProxyError.connectFailure.reply.flag == "UF" && ProxyError.connectFailure.source == .upstreamConnect)
        #expect(ProxyError.reset(reusedConnection: false).reply.flag == "UC")
        #expect(ProxyError.overflow.reply.flag == "UO" && !ProxyError.overflow.retryable)
        #expect(ProxyError.malformedResponse.reply.flag == "UPE" && ProxyError.malformedResponse.source == .upstreamProtocol)
        // Connect failures are retryable in kind; today's policy (before Istio's retries) still answers them.
        #expect(ProxyError.connectFailure.retryable)
        #expect(RetryPolicy.decide(.connectFailure, attempt(replayFrom: 0), responseBytesSeen: false) == .answer)
    }
}
