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
        service(localities.map { "locality: \($0)" }, lb: lb, outlier: outlier)
    }

    /// Service `s` with the endpoints written out (each `{...}` body after its address, 10.0.0.1, .2, …), outlier
    /// detection unless `outlier` is nil, and `lb` as its loadBalancer.
    static func service(_ endpoints: [String], lb: String, outlier: String?, resolution: String = "STATIC") -> String {
        var eps = ""
        for (i, e) in endpoints.enumerated() { eps += "  - {address: 10.0.0.\(i + 1), \(e)}\n" }
        return """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: s}
            spec:
              hosts: [s]
              ports: [{number: 80, name: http}]
              resolution: \(resolution)
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

    /// Service `s` with the endpoints written out, outlier detection unless `outlier` is false, and `setting` as
    /// its localityLbSetting.
    static func labelled(_ endpoints: [String], setting: String, outlier: Bool = true, resolution: String = "STATIC") -> String {
        service(endpoints, lb: "{simple: ROUND_ROBIN, localityLbSetting: \(setting)}",
                outlier: outlier ? "{consecutive5xxErrors: 1}" : nil, resolution: resolution)
    }

    func plan(_ yaml: String, proxy: String, labels: [String: String]) throws -> LocalityPlan {
        LocalityPlan(try compile(yaml).clusters[0], proxy: Locality(proxy), labels: labels)
    }

    @Test func failoverPriorityRanksByTheLabelsSharedInOrder() throws {
        // Istio's example order; the sidecar is in r1/z1 on network n1 (a label, as `--labels` gives it).
        let setting = "{failoverPriority: [topology.istio.io/network, topology.kubernetes.io/region, topology.kubernetes.io/zone]}"
        let endpoints = [
            "network: n1, locality: r1/z1",  // all three shared: 0
            "network: n1, locality: r1/z2",  // network and region: 1
            "network: n1, locality: r2/z1",  // network only: 2
            "network: n2, locality: r1/z1",  // not even the first: 3
            "labels: {topology.istio.io/network: n1}, locality: r1/z1",  // a written label counts as the network: 0
            "network: n2, labels: {topology.istio.io/network: n1}, locality: r1/z1",  // and wins over `network`: 0
        ]
        let p = try plan(Self.labelled(endpoints, setting: setting), proxy: "r1/z1", labels: ["topology.istio.io/network": "n1"])
        #expect(p.ranks == [0, 1, 2, 3, 0, 0] && p.rankCount == 4)
        // The sidecar's locality rides on its labels: from r2/z1 the third endpoint is nearest.
        let q = try plan(Self.labelled(endpoints, setting: setting), proxy: "r2/z1", labels: ["topology.istio.io/network": "n1"])
        #expect(q.ranks == [1, 1, 0, 2, 1, 1] && q.rankCount == 3)
    }

    @Test func failoverPriorityTakesAnEntrysOwnValueAndCountsALabelNeitherSideHasAsShared() throws {
        // `version=v2` compares with v2, not with the sidecar's v1; `team` is on no one, so it is shared by all.
        let setting = "{failoverPriority: [\"version=v2\", team, app]}"
        let endpoints = ["labels: {version: v2, app: a}", "labels: {version: v2, app: b}", "labels: {version: v1, app: a}",
                         "labels: {version: v2, app: a, team: t}"]
        let p = try plan(Self.labelled(endpoints, setting: setting), proxy: "", labels: ["version": "v1", "app": "a"])
        #expect(p.ranks == [0, 1, 3, 2] && p.rankCount == 4)
        // A sidecar with neither labels nor a locality ranks nothing (Istio's rule), whatever the entries say.
        #expect(try plan(Self.labelled(endpoints, setting: setting), proxy: "", labels: [:]).rankCount == 1)
        // Without outlier detection, nothing is ranked either.
        let unwatched = Self.labelled(endpoints, setting: setting, outlier: false)
        #expect(try plan(unwatched, proxy: "", labels: ["version": "v1", "app": "a"]).rankCount == 1)
    }

    @Test func failoverPriorityWithFailoverRulesSplitsEachLabelRankByLocality() throws {
        // Istio: label rank × 5 + locality rank, made contiguous.
        let setting = "{failover: [{from: r1, to: r3}], failoverPriority: [app]}"
        let endpoints = ["labels: {app: a}, locality: r1/z1", "labels: {app: a}, locality: r2/z1",
                         "labels: {app: a}, locality: r3/z1", "labels: {app: b}, locality: r1/z1"]
        let p = try plan(Self.labelled(endpoints, setting: setting), proxy: "r1/z1", labels: ["app": "a"])
        #expect(p.ranks == [0, 2, 1, 3] && p.rankCount == 4)
        // A DNS cluster's endpoints are not ranked by labels (Istio's cluster builder leaves them out): the failover
        // rule alone ranks them, and without one nothing does.
        let dns = try plan(Self.labelled(endpoints, setting: setting, resolution: "DNS"), proxy: "r1/z1", labels: ["app": "a"])
        #expect(dns.ranks == [0, 2, 1, 0] && dns.rankCount == 3)
        let dnsLabelsOnly = Self.labelled(endpoints, setting: "{failoverPriority: [app]}", resolution: "DNS")
        #expect(try plan(dnsLabelsOnly, proxy: "r1/z1", labels: ["app": "a"]).rankCount == 1)
    }

    @Test func ranksBeyondTheEighthShareIt() throws {
        let labels = (1...10).map { "l\($0)" }
        let setting = "{failoverPriority: [\(labels.joined(separator: ", "))]}"
        // Endpoint i shares the first i labels: rank 10 - i, eleven ranks in all.
        let endpoints = (0...10).map { i in "labels: {\((0..<i).map { "l\($0 + 1): x" }.joined(separator: ", "))}" }
        let own = Dictionary(uniqueKeysWithValues: labels.map { ($0, "x") })
        let p = try plan(Self.labelled(endpoints, setting: setting), proxy: "", labels: own)
        #expect(p.rankCount == LocalityPlan.maxRanks)
        #expect(p.ranks == [7, 7, 7, 7, 6, 5, 4, 3, 2, 1, 0])
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
