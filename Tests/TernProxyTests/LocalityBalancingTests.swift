import TernConfig
import TernIO
import TernTestSupport
import Testing
@testable import TernProxy

/// Locality-aware balancing (Cluster/LocalityPlan.swift) and slow start, on explicit localities and clocks: Istio's
/// failover ranks, Envoy's priority load as endpoints of the nearest rank are ejected, `distribute` weights, and a
/// new endpoint's weight growing over its warm-up.
@Suite struct LocalityBalancingTests {
    /// Service `s` with an endpoint per locality (10.0.0.1, .2, …), outlier detection unless `outlier` is nil,
    /// and `lb` as its loadBalancer.
    static func yaml(_ localities: [String], lb: String = "{simple: ROUND_ROBIN}",
                     outlier: String? = "{consecutive5xxErrors: 1, maxEjectionPercent: 100}") -> String {
        var eps = ""
        for (i, l) in localities.enumerated() { eps += "  - {address: 10.0.0.\(i + 1), locality: \(l)}\n" }
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
              trafficPolicy: {loadBalancer: \(lb)\(outlier.map { ", outlierDetection: \($0)" } ?? "")}

            """
    }

    func plan(_ yaml: String, proxy: String) throws -> LocalityPlan {
        LocalityPlan(try compile(yaml).clusters[0], proxy: Locality(proxy))
    }

    @Test func localitiesMatchAsIstioMatchesThem() {
        let l = Locality("us-east/us-east-1a/rack1")
        #expect(l.matches("us-east/us-east-1a/rack1") && l.matches("us-east/*") && l.matches("us-east") && l.matches("*"))
        #expect(l.matches("us-east/us-east-1a/*") && !l.matches("us-west/*") && !l.matches("us-east/us-east-1b/*"))
        #expect(Locality("").isEmpty && Locality("r").zone == "")
    }

    @Test func failoverRanksByProximityAndOnlyWithOutlierDetection() throws {
        let localities = ["r1/z1/s1", "r1/z1/s2", "r1/z2/s1", "r2/z1/s1", "r3/z1/s1"]
        #expect(try plan(Self.yaml(localities), proxy: "r1/z1/s1").ranks == [0, 1, 2, 3, 3])
        #expect(try plan(Self.yaml(localities), proxy: "r1/z1/s1").rankCount == 4)
        // A failover rule from the sidecar's region puts its `to` region before the other remote ones.
        let failover = "{simple: ROUND_ROBIN, localityLbSetting: {failover: [{from: r1, to: r3}]}}"
        #expect(try plan(Self.yaml(localities, lb: failover), proxy: "r1/z1/s1").ranks == [0, 1, 2, 4, 3])
        // No outlier detection, no locality of its own, or the setting disabled: one rank, as Istio.
        #expect(try plan(Self.yaml(localities, outlier: nil), proxy: "r1/z1/s1").rankCount == 1)
        #expect(try plan(Self.yaml(localities), proxy: "").rankCount == 1)
        let off = "{simple: ROUND_ROBIN, localityLbSetting: {enabled: false}}"
        #expect(try plan(Self.yaml(localities, lb: off), proxy: "r1/z1/s1").rankCount == 1)
    }

    @Test func trafficStaysInTheNearestRankAndSpillsAsItsEndpointsAreEjected() throws {
        // Ten endpoints in the sidecar's zone, ten in another zone of its region.
        let t = try compile(Self.yaml(Array(repeating: "r1/z1", count: 10) + Array(repeating: "r1/z2", count: 10),
                                      lb: "{simple: RANDOM}"))
        let p = LocalityPlan(t.clusters[0], proxy: Locality("r1/z1"))
        var g = SplitMix64(seed: 0x7465_726e)
        func share(_ inService: (Int) -> Bool) -> Int {
            (0..<10_000).filter { _ in p.chooseRank(random: g.next(), inService: inService) == 0 }.count
        }
        #expect(share { _ in true } == 10_000)
        // 8 of 10 in service: 1.4 × 80 % caps at 100 %; 5 of 10: 70 % stays, 30 % spills (Envoy's overprovisioning).
        #expect(share { $0 >= 2 } == 10_000)
        let half = share { $0 >= 5 }
        #expect(abs(half - 7_000) < 300, "\(half)")
        #expect(share { $0 >= 10 } == 0)
        #expect(p.chooseRank(random: 1, inService: { _ in false }) == nil)
    }

    @Test func distributeWeighsLocalitiesAsIstioDoes() throws {
        // From r1/z1: 80 to r1/z1 (two endpoints share it), 20 to r1/z2; r2 gets nothing.
        let lb = "{simple: RANDOM, localityLbSetting: {distribute: [{from: \"r1/z1/*\", to: {\"r1/z1/*\": 80, \"r1/z2/*\": 20}}]}}"
        let t = try compile(Self.yaml(["r1/z1/a", "r1/z1/b", "r1/z2/a", "r2/z1/a"], lb: lb, outlier: nil))
        let p = LocalityPlan(t.clusters[0], proxy: Locality("r1/z1/a"))
        #expect(p.rankCount == 1 && p.weights[3] == 0)
        #expect(p.weights[0] == p.weights[1] && p.weights[0] * 2 * 20 == p.weights[2] * 80)
        var balancer = LoadBalancer(table: t, cluster: 0, locality: Locality("r1/z1/a"))
        var counts = [0, 0, 0, 0]
        var g = SplitMix64(seed: 0x7465_726e)
        for _ in 0..<10_000 { counts[balancer.pick(table: t, random: g.next())!] += 1 }
        #expect(counts[3] == 0 && abs(counts[2] - 2_000) < 200 && abs(counts[0] + counts[1] - 8_000) < 200, "\(counts)")
        // A sidecar no `from` matches: endpoints weighted as written.
        #expect(LocalityPlan(t.clusters[0], proxy: Locality("r2/z1/a")).weights == [1, 1, 1, 1])
    }

    @Test func aNewEndpointWarmsUpFromItsMinimumShare() throws {
        let lb = "{simple: ROUND_ROBIN, warmup: {duration: 100s, minimumPercent: 10}}"
        let t1 = try compile(Self.yaml(["r/z/1"], lb: lb, outlier: nil))
        var balancer = LoadBalancer(table: t1, cluster: 0)
        let t2 = try compile(Self.yaml(["r/z/1", "r/z/2"], lb: lb, outlier: nil))
        balancer.rebind(table: t2, cluster: 0)  // 10.0.0.2 joins now
        let joined = System.monotonicNanos()
        // At first it weighs its 10 % minimum: about 1 pick in 11; half way through, 1 in 3 (weight 0.5 against 1).
        var picks = (0..<1_100).map { _ in balancer.pick(table: t2, random: 0, now: joined)! }
        #expect(abs(picks.filter { $0 == 1 }.count - 100) <= 10, "\(picks.filter { $0 == 1 }.count)")
        picks = (0..<900).map { _ in balancer.pick(table: t2, random: 0, now: joined + 50_000_000_000)! }
        #expect(abs(picks.filter { $0 == 1 }.count - 300) <= 10)
        // Warm: equal turns.
        picks = (0..<100).map { _ in balancer.pick(table: t2, random: 0, now: joined + 101_000_000_000)! }
        #expect(picks.filter { $0 == 1 }.count == 50)
    }

    @Test func aHashedRequestKeepsToOneEndpointOfTheNearestRank() throws {
        // Ring hash over ten endpoints, one of them in the sidecar's zone: every key goes to it, always.
        let lb = "{consistentHash: {httpHeaderName: x-user}}"
        let t = try compile(Self.yaml(["r1/z1"] + Array(repeating: "r1/z2", count: 9), lb: lb))
        var balancer = LoadBalancer(table: t, cluster: 0, locality: Locality("r1/z1"))
        var g = SplitMix64(seed: 7)
        for key in 0..<200 {
            let h = SplitMix.mix(UInt64(key))
            #expect(balancer.pick(table: t, random: g.next(), hashKey: h) == 0)
        }
        // With distribute giving the sidecar's zone nothing, no key lands there.
        let d = "{consistentHash: {httpHeaderName: x-user}, localityLbSetting: {distribute: [{from: r1/z1, to: {r1/z2: 100}}]}}"
        let t2 = try compile(Self.yaml(["r1/z1"] + Array(repeating: "r1/z2", count: 9), lb: d, outlier: nil))
        var b2 = LoadBalancer(table: t2, cluster: 0, locality: Locality("r1/z1"))
        for key in 0..<200 {
            let h = SplitMix.mix(UInt64(key))
            let first = b2.pick(table: t2, random: g.next(), hashKey: h)
            #expect(first != 0 && first != nil && b2.pick(table: t2, random: g.next(), hashKey: h) == first)
        }
    }
}
