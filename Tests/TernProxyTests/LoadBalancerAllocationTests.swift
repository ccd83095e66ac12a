import TernConfig
import TernTestSupport
import Testing
@testable import TernProxy

/// A reactor's balancers allocate nothing per request or connection: `pick`, `requestStarted` and
/// `requestFinished` on the clusters routing chose. The table's half of the same work (route selection, weighted
/// destination, hash keys; the TCP destination) is counted in TernConfigTests' AllocationTests; here the
/// table's choices are worked out before counting, so only the balancers are counted, with the same clusters,
/// random numbers and hash keys in the same order.
/// Counted under the malloc counter (Tools/scripts/test.sh: `TERN_REQUIRE_MALLOC_COUNTER=1
/// LD_PRELOAD=count_malloc.so swift test --filter AllocationTests`, where a missing counter fails the test);
/// a plain `swift test` only checks the results (`MallocCounter`).
@Suite struct LoadBalancerAllocationTests {
    /// The random numbers the table's half draws: 1 for the warm-up, then 2,000 from a linear congruential
    /// generator.
    static let randoms: [UInt64] = {
        var randoms: [UInt64] = [1]
        var random: UInt64 = 0x9e37_79b9
        for _ in 0..<2_000 {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            randoms.append(random)
        }
        return randoms
    }()

    /// Runs `once(0)` to warm up, then `once(1)` … `once(2_000)` counted: the allocations those made, nil when the
    /// counter is not preloaded (an error instead where the run requires it: `MallocCounter.load`).
    static func allocations(_ once: (Int) -> Void) throws -> UInt? {
        let counter = try MallocCounter.load()
        once(0)
        let before = counter?.count()
        for k in 1..<randoms.count { once(k) }
        guard let counter, let before else { return nil }
        return counter.count() - before
    }

    @Test func balancingRoutedRequestsAllocatesNothing() throws {
        let table = try RouteSelectionWorkload.table()
        let requests = RouteSelectionWorkload.requests
        let heads = requests.map { HTTP1ParserBox($0).head }
        let source: [UInt8] = [10, 0, 0, 1]
        // Per random number, the cluster and hash key of each request that has a destination (not counted here).
        var routed: [[(cluster: Int, hashKey: UInt64?)]] = []
        for random in Self.randoms {
            var clusters: [(cluster: Int, hashKey: UInt64?)] = []
            for i in 0..<requests.count {
                let bytes = requests[i]
                let host = Array(bytes[heads[i].host!])
                let view = RequestView(http1: heads[i], bytes: bytes.span)
                let m = table.select(host: host.span, port: 80, request: view)
                if let d = table.pickDestination(m, random: random), let c = d.cluster(port: 80) {
                    clusters.append((c, table.hashKey(cluster: c, request: view, sourceAddress: source.span)))
                }
            }
            routed.append(clusters)
        }
        var balancers = LoadBalancers(table: table)
        var finished = 0
        func once(_ k: Int) {
            let random = Self.randoms[k]
            for j in 0..<routed[k].count {
                let c = routed[k][j].cluster
                if let e = balancers.pick(cluster: c, table: table, random: random, hashKey: routed[k][j].hashKey),
                   let outstanding = balancers.requestStarted(cluster: c, endpoint: e) {
                    balancers.requestFinished(outstanding)
                    finished += 1
                }
            }
        }
        let allocations = try Self.allocations(once)
        #expect(finished == 2_001 * 3)  // three requests are forwarded; two get direct responses, one no route
        #expect(balancers.totalOutstanding == 0)
        if let allocations { #expect(allocations == 0, "\(allocations) allocations in 6,000 picks") }
    }

    @Test func balancingTCPConnectionsAllocatesNothing() throws {
        let t = try compile(TCPRoutingConfig.yaml(TCPRoutingConfig.split), namespace: "ns")
        let route = try #require(t.tcpListenerRoute(port: 9000))
        // Per random number, the cluster the table's weighted split chose (not counted here).
        let clusters = Self.randoms.map { t.pickTCPDestination(route, random: $0)?.cluster(port: 9000) }
        var balancers = LoadBalancers(table: t)
        var picked = 0
        func once(_ k: Int) {
            if let c = clusters[k], let e = balancers.pick(cluster: c, table: t, random: Self.randoms[k]),
               let outstanding = balancers.requestStarted(cluster: c, endpoint: e) {
                balancers.requestFinished(outstanding)
                picked += 1
            }
        }
        let allocations = try Self.allocations(once)
        #expect(picked == 2_001)
        if let allocations { #expect(allocations == 0, "\(allocations) allocations in 2,000 picks") }
    }
}
