import TernConfig
import TernTestSupport
import Testing
@testable import TernProxy

/// The cluster runtime's balancers (Cluster/LoadBalancer.swift, LoadBalancers.swift): each policy's picks, the
/// outstanding counts LEAST_REQUEST reads, and what a route-table swap keeps.
@Suite struct LoadBalancerTests {
    /// Service `s` with `endpoints` endpoints at 10.0.0.1, .2, … (or at the last octets `octets`, in that order).
    static func yaml(endpoints: Int, lb: String, weights: [Int]? = nil, octets: [Int]? = nil) -> String {
        var eps = ""
        for i in 0..<endpoints {
            eps += "  - {address: 10.0.0.\(octets?[i] ?? i + 1)\(weights.map { ", weight: \($0[i])" } ?? "")}\n"
        }
        return """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: s}
            spec:
              hosts: [s]
              ports: [{number: 80, name: http}]
              resolution: STATIC
              endpoints:
            \(eps)---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: s}
            spec:
              host: s
              trafficPolicy: {loadBalancer: \(lb)}

            """
    }

    func balancer(_ yaml: String) throws -> (RouteTable, LoadBalancer) {
        let t = try compile(yaml)
        #expect(t.clusters.count == 1)
        return (t, LoadBalancer(table: t, cluster: 0))
    }

    @Test func roundRobinCyclesAndKeepsItsPositionAcrossASwap() throws {
        var (t, lb) = try balancer(Self.yaml(endpoints: 3, lb: "{simple: ROUND_ROBIN}"))
        #expect((0..<6).map { _ in lb.pick(table: t, random: 0)! } == [0, 1, 2, 0, 1, 2])
        _ = lb.pick(table: t, random: 0)
        let t2 = try compile(Self.yaml(endpoints: 3, lb: "{simple: ROUND_ROBIN}"))
        lb.rebind(table: t2, cluster: 0)
        #expect(lb.pick(table: t2, random: 0) == 1)  // continues where it was
    }

    @Test func weightedRoundRobinInterleaves() throws {
        var (t, lb) = try balancer(Self.yaml(endpoints: 3, lb: "{simple: ROUND_ROBIN}", weights: [5, 1, 1]))
        let picks = (0..<7).map { _ in lb.pick(table: t, random: 0)! }
        #expect(picks.filter { $0 == 0 }.count == 5 && picks.filter { $0 == 1 }.count == 1)
        #expect(picks == [0, 0, 1, 0, 2, 0, 0])
    }

    @Test func randomIsUniform() throws {
        var (t, lb) = try balancer(Self.yaml(endpoints: 4, lb: "{simple: RANDOM}"))
        var counts = [0, 0, 0, 0]
        var g = SplitMix64(seed: 0x7465_726e)
        for _ in 0..<10_000 { counts[lb.pick(table: t, random: g.next())!] += 1 }
        let chi = counts.reduce(0.0) { $0 + pow2(Double($1) - 2500) / 2500 }
        #expect(chi < 16.27, "\(counts)")  // 3 degrees of freedom, p = 0.001
    }

    @Test(arguments: ["{simple: LEAST_REQUEST}", "{simple: LEAST_CONN}", "{simple: UNSPECIFIED}"])
    func leastRequestAvoidsBusyEndpoints(lbText: String) throws {
        var (t, lb) = try balancer(Self.yaml(endpoints: 2, lb: lbText))
        let busy = (0..<10).map { _ in lb.requestStarted(endpoint: 0) }
        var g = SplitMix64(seed: 0x7465_726e)
        // With two endpoints, power of two choices always compares both: the idle one wins every time.
        for _ in 0..<100 { #expect(lb.pick(table: t, random: g.next()) == 1) }
        for slot in busy { lb.requestFinished(slot: slot) }
        for _ in 0..<20 { _ = lb.requestStarted(endpoint: 1) }
        #expect(lb.pick(table: t, random: g.next()) == 0)
        // Outstanding counts survive a swap by address.
        let t2 = try compile(Self.yaml(endpoints: 3, lb: lbText))
        lb.rebind(table: t2, cluster: 0)
        #expect(lb.outstanding == [0, 20, 0])
    }

    /// Another service, `a`, with one endpoint.
    static let serviceA = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: a}
        spec:
          hosts: [a]
          ports: [{number: 80, name: http}]
          resolution: STATIC
          endpoints: [{address: 10.1.0.1}]

        """

    /// Service `s` with endpoints at the given last octets (10.0.0.x), LEAST_REQUEST; `before` declares
    /// `serviceA` first, so the clusters of `s` get other indexes in the compiled table.
    static func leastRequestYAML(_ octets: [Int], before: Bool = false) -> String {
        (before ? serviceA + "---\n" : "") + yaml(endpoints: octets.count, lb: "{simple: LEAST_REQUEST}", octets: octets)
    }

    func clusterIndex(_ t: RouteTable) -> Int {
        t.clusters.firstIndex { $0.name == "outbound|80||s.default.svc.cluster.local" }!
    }

    /// Requests in flight across a configuration swap (the new table numbers the cluster and its endpoints
    /// differently) stay counted on their endpoint, so LEAST_REQUEST still steers around it, and their finish
    /// brings that count back to zero: nothing leaks, nothing lands on the endpoint that took the old index.
    @Test func requestsInFlightAcrossASwapFinishOnTheEndpointThatCountedThem() throws {
        let t1 = try compile(Self.leastRequestYAML([1, 2]))
        var lbs = LoadBalancers(table: t1)
        let c1 = clusterIndex(t1)
        let inFlight = (0..<10).map { _ in lbs.requestStarted(cluster: c1, endpoint: 0)! }  // 10.0.0.1
        #expect(lbs.outstanding(cluster: c1) == [10, 0])

        let t2 = try compile(Self.leastRequestYAML([3, 2, 1], before: true))
        lbs.bind(t2)
        let c2 = clusterIndex(t2)
        #expect(c2 != c1)
        #expect(lbs.outstanding(cluster: c2) == [0, 0, 10])
        var g = SplitMix64(seed: 0x7465_726e)
        for _ in 0..<200 { #expect(lbs.pick(cluster: c2, table: t2, random: g.next()) != 2) }

        for r in inFlight { lbs.requestFinished(r) }
        #expect(lbs.outstanding(cluster: c2) == [0, 0, 0])
        #expect(lbs.totalOutstanding == 0)
        // With the counts back at zero the formerly busy endpoint is picked again, about a third of the time.
        let picks = (0..<3_000).map { _ in lbs.pick(cluster: c2, table: t2, random: g.next())! }
        #expect(picks.filter { $0 == 2 }.count > 800)
    }

    /// A request to an endpoint (or a whole cluster) that a swap removed is still reported finished; the slot it
    /// held is not handed to a newcomer meanwhile, and an endpoint that comes back starts from zero.
    @Test func requestsToEndpointsAndClustersThatLeftStillFinish() throws {
        let t1 = try compile(Self.leastRequestYAML([1, 2]))
        var lbs = LoadBalancers(table: t1)
        let toTwo = lbs.requestStarted(cluster: clusterIndex(t1), endpoint: 1)!  // 10.0.0.2

        let t2 = try compile(Self.leastRequestYAML([1, 3]))  // .2 left, .3 came
        lbs.bind(t2)
        #expect(lbs.outstanding(cluster: clusterIndex(t2)) == [0, 0])
        #expect(lbs.totalOutstanding == 1)
        let toThree = lbs.requestStarted(cluster: clusterIndex(t2), endpoint: 1)!
        #expect(lbs.outstanding(cluster: clusterIndex(t2)) == [0, 1])
        lbs.requestFinished(toTwo)
        #expect(lbs.outstanding(cluster: clusterIndex(t2)) == [0, 1])
        #expect(lbs.totalOutstanding == 1)

        // The whole cluster leaves (only `a` is declared) while a request to it is in flight, then comes back.
        let t3 = try compile(Self.serviceA)
        lbs.bind(t3)
        #expect(lbs.totalOutstanding == 1)
        let toA = lbs.requestStarted(cluster: 0, endpoint: 0)!
        lbs.requestFinished(toThree)
        #expect(lbs.totalOutstanding == 1)
        lbs.requestFinished(toA)
        #expect(lbs.totalOutstanding == 0)
        let t4 = try compile(Self.leastRequestYAML([1, 2, 3]))
        lbs.bind(t4)
        #expect(lbs.outstanding(cluster: clusterIndex(t4)) == [0, 0, 0])
    }

    @Test(arguments: ["{consistentHash: {httpHeaderName: x-user}}",
                      "{consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}"])
    func consistentHashIsStableAndMovesFewKeysWhenAnEndpointIsAdded(lbText: String) throws {
        var (t, lb) = try balancer(Self.yaml(endpoints: 5, lb: lbText))
        let t6 = try compile(Self.yaml(endpoints: 6, lb: lbText))
        var lb6 = LoadBalancer(table: t6, cluster: 0)
        var moved = 0
        let keys = 2_000
        for k in 0..<keys {
            let bytes = Array(get("/", host: "s", headers: ["X-User: user-\(k)"]).utf8)
            let (h5, h6) = try hashes(bytes, t, t6)
            let a = lb.pick(table: t, random: UInt64(k), hashKey: h5)!
            #expect(lb.pick(table: t, random: UInt64(k) &* 31, hashKey: h5) == a)  // same key, same endpoint
            let b = lb6.pick(table: t6, random: 0, hashKey: h6)!
            if t.clusters[0].endpoints[a].address != t6.clusters[0].endpoints[b].address { moved += 1 }
        }
        // Ideal: 1/6 of keys move to the new endpoint; allow up to 30 %.
        #expect(Double(moved) / Double(keys) < 0.30, "\(moved) of \(keys) keys moved")
        #expect(moved > 0)
    }

    func hashes(_ bytes: [UInt8], _ a: RouteTable, _ b: RouteTable) throws -> (UInt64?, UInt64?) {
        let parser = HTTP1ParserBox(bytes)
        let view = RequestView(http1: parser.head, bytes: bytes.span)
        let empty: [UInt8] = []
        return (a.hashKey(cluster: 0, request: view, sourceAddress: empty.span),
                b.hashKey(cluster: 0, request: view, sourceAddress: empty.span))
    }

    /// A DNS cluster whose name has no answer has no endpoint: its balancer picks none (the router answers 503 UH).
    @Test func aClusterWithoutEndpointsPicksNothing() throws {
        let t = try compile("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: bare}
            spec:
              hosts: [bare.example.com]
              ports: [{number: 80, name: http}]
              resolution: DNS

            """)
        let r = t.resolved([:])
        let c = try #require(r.clusters.firstIndex { $0.name == "outbound|80||bare.example.com" })
        #expect(r.clusters[c].endpoints.isEmpty)
        var lb = LoadBalancer(table: r, cluster: c)
        #expect(lb.pick(table: r, random: 1) == nil)
    }
}
