import TernConfig
import TernTestSupport
import Testing
@testable import TernProxy

/// Outlier detection's rules on explicit clocks (no sleeping): thresholds, what counts, the ejection multiplier
/// and its decay, Envoy's cap, maxEjectionPercent with its at-least-one rule, and the return to service.
@Suite struct OutlierDetectionTests {
    let second: UInt64 = 1_000_000_000

    func cluster(hosts: Int) -> (OutlierRegistry, OutlierCluster, [OutlierHost]) {
        let r = OutlierRegistry()
        let c = r.cluster("outbound|80||svc")
        c.hosts.store(hosts, ordering: .relaxed)
        return (r, c, (0..<hosts).map { r.host(c, address: "10.0.0.\($0):80") })
    }

    func settings(_ edit: (inout OutlierDetection) -> Void = { _ in }) -> OutlierSettings {
        var d = OutlierDetection()
        edit(&d)
        return OutlierSettings(d)
    }

    @Test func istiosDefaultsAreEnvoys() {
        let s = settings()
        #expect(s.consecutive5xx == 5 && s.consecutiveGateway == 0 && !s.split && s.consecutiveLocal == 5)
        #expect(s.interval == 10 * second && s.baseEjection == 30 * second && s.maxEjectionPercent == 10 && s.minHealthPercent == 0)
    }

    @Test func consecutive5xxEjectsAndASuccessResetsTheRun() {
        let (_, c, h) = cluster(hosts: 3)
        let s = settings { $0.consecutive5xxErrors = 3 }
        #expect(!s.record(.status(503), on: h[0], errorCodes: [], now: 1))
        #expect(!s.record(.status(500), on: h[0], errorCodes: [], now: 2))
        #expect(!s.record(.status(200), on: h[0], errorCodes: [], now: 3))  // the run is over
        #expect(!s.record(.status(502), on: h[0], errorCodes: [], now: 4))
        #expect(!s.record(.status(504), on: h[0], errorCodes: [], now: 5))
        #expect(s.record(.status(599), on: h[0], errorCodes: [], now: 6))
        #expect(h[0].isEjected(now: 7) && c.ejected.load(ordering: .relaxed) == 1 && c.enforced.load(ordering: .relaxed) == 1)
        // 4xx never counts; another host's errors are its own.
        for t in 0..<10 { #expect(!s.record(.status(404), on: h[1], errorCodes: [], now: 10 + UInt64(t))) }
        #expect(!h[1].isEjected(now: 30))
    }

    @Test func gatewayErrorsCountOnlyWhenSetAndErrorCodesRedefineErrors() {
        let (_, _, h) = cluster(hosts: 3)
        let gw = settings { $0.consecutive5xxErrors = 0; $0.consecutiveGatewayErrors = 2 }
        #expect(!gw.record(.status(500), on: h[0], errorCodes: [], now: 1))
        #expect(!gw.record(.status(503), on: h[0], errorCodes: [], now: 2))
        #expect(gw.record(.status(502), on: h[0], errorCodes: [], now: 3))
        let codes = settings { $0.consecutive5xxErrors = 2; $0.maxEjectionPercent = 100 }
        #expect(!codes.record(.status(503), on: h[1], errorCodes: [429], now: 1))  // not an error now
        #expect(!codes.record(.status(429), on: h[1], errorCodes: [429], now: 2))
        #expect(codes.record(.status(429), on: h[1], errorCodes: [429], now: 3))
    }

    @Test func locallyOriginatedFailuresCountAsGatewayErrorsUnlessSplit() {
        let (_, _, h) = cluster(hosts: 4)
        let joined = settings { $0.consecutive5xxErrors = 2 }
        #expect(!joined.record(.connectFailed, on: h[0], errorCodes: [], now: 1))
        #expect(joined.record(.timeout, on: h[0], errorCodes: [], now: 2))
        let split = settings { $0.splitExternalLocalOriginErrors = true; $0.consecutiveLocalOriginFailures = 2; $0.consecutive5xxErrors = 2; $0.maxEjectionPercent = 100 }
        #expect(!split.record(.connectFailed, on: h[1], errorCodes: [], now: 1))
        #expect(!split.record(.status(503), on: h[1], errorCodes: [], now: 2))  // counted apart
        #expect(!split.record(.connected, on: h[1], errorCodes: [], now: 3))   // ends the local run
        #expect(!split.record(.connectFailed, on: h[1], errorCodes: [], now: 4))
        #expect(split.record(.connectFailed, on: h[1], errorCodes: [], now: 5))
        // A reset before the response is a failed connection to Envoy: with the split, a local-origin failure.
        #expect(!split.record(.reset, on: h[2], errorCodes: [], now: 1))
        #expect(split.record(.reset, on: h[2], errorCodes: [], now: 2))
    }

    @Test func ejectionsGrowWithTheMultiplierUpToEnvoysCapAndDecayPerHealthyInterval() {
        let (_, c, h) = cluster(hosts: 1)
        let s = settings { $0.consecutive5xxErrors = 1; $0.interval = .seconds(10); $0.baseEjectionTime = .seconds(30) }
        var now: UInt64 = 1_000 * second
        func ejectAndEnd() -> UInt64 {
            #expect(s.record(.status(503), on: h[0], errorCodes: [], now: now))
            let until = h[0].ejectedUntil.load(ordering: .relaxed)
            #expect(h[0].isEjected(now: until - 1) && !h[0].isEjected(now: until))
            return until - now
        }
        // Back to back (no interval in service between): 30 s, 60 s, … capped at 300 s.
        for k in 1...12 {
            let took = ejectAndEnd()
            #expect(took == min(300, 30 * UInt64(k)) * second, "ejection \(k)")
            now += took
        }
        #expect(c.ejected.load(ordering: .relaxed) == 0)
        // The multiplier stopped at 11 (Envoy grows it while base × it < 300 s + base): 25 healthy seconds take two
        // steps off, so the next ejection is the 10th step (300 s); after 2,000 healthy seconds (200 intervals) it
        // is back to the first: 30 s.
        #expect(h[0].multiplier.load(ordering: .relaxed) == 11)
        now += 25 * second
        #expect(ejectAndEnd() == 300 * second)
        #expect(h[0].multiplier.load(ordering: .relaxed) == 10)
        #expect(OutlierSettings().ejectionTime(multiplier: 11) == 300 * second)
        now += 300 * second + 2_000 * second
        #expect(ejectAndEnd() == 30 * second)
        // A base above 300 s is its own cap.
        #expect(settings { $0.baseEjectionTime = .seconds(400) }.ejectionTime(multiplier: 3) == 400 * second)
    }

    @Test func aResetIsAGatewayErrorWithoutTheSplit() {
        let (_, _, h) = cluster(hosts: 1)
        let gw = settings { $0.consecutive5xxErrors = 0; $0.consecutiveGatewayErrors = 2 }
        #expect(!gw.record(.status(502), on: h[0], errorCodes: [], now: 1))
        #expect(gw.record(.reset, on: h[0], errorCodes: [], now: 2))
    }

    @Test func anEndpointThatLeftTheTableReturnsAndCountsNoMore() {
        let (r, c, h) = cluster(hosts: 3)
        let s = settings { $0.consecutive5xxErrors = 1; $0.maxEjectionPercent = 100 }
        #expect(s.record(.status(503), on: h[0], errorCodes: [], now: 1))
        #expect(s.record(.status(503), on: h[1], errorCodes: [], now: 1))
        #expect(c.ejected.load(ordering: .relaxed) == 2)
        r.keep(c.name, addresses: ["10.0.0.1:80", "10.0.0.2:80"])  // 10.0.0.0 left the table
        #expect(c.ejected.load(ordering: .relaxed) == 1 && !h[0].isEjected(now: 2))
        #expect(!s.record(.status(503), on: h[0], errorCodes: [], now: 3))
        r.keep(c.name, addresses: ["10.0.0.1:80", "10.0.0.2:80"])  // every reactor binds the same table: once
        #expect(c.ejected.load(ordering: .relaxed) == 1)
        r.keep(c.name, addresses: [])  // outlier detection removed from the cluster
        #expect(c.ejected.load(ordering: .relaxed) == 0)
    }

    @Test func aRefusedEjectionStartsTheRunOver() {
        let (_, c, h) = cluster(hosts: 3)
        let s = settings { $0.consecutive5xxErrors = 2; $0.maxEjectionPercent = 10 }
        for t in 1...2 { _ = s.record(.status(503), on: h[0], errorCodes: [], now: UInt64(t)) }
        #expect(h[0].isEjected(now: 3))
        for t in 3...6 { _ = s.record(.status(503), on: h[1], errorCodes: [], now: UInt64(t)) }
        // Four errors, two runs refused (not one per error after the threshold).
        #expect(c.overflow.load(ordering: .relaxed) == 2)
    }

    @Test func maxEjectionPercentAlwaysAllowsOneAndCountsTheRefused() {
        let (_, c, h) = cluster(hosts: 3)
        let s = settings { $0.consecutive5xxErrors = 1; $0.maxEjectionPercent = 10 }
        // 10 % of 3 hosts is none, but one host can always be ejected (Envoy).
        #expect(s.record(.status(503), on: h[0], errorCodes: [], now: 1))
        #expect(!s.record(.status(503), on: h[1], errorCodes: [], now: 2))
        #expect(c.ejected.load(ordering: .relaxed) == 1 && c.overflow.load(ordering: .relaxed) == 1)
        let half = settings { $0.consecutive5xxErrors = 1; $0.maxEjectionPercent = 67 }
        #expect(half.record(.status(503), on: h[1], errorCodes: [], now: 3))  // 2 of 3: 66.7 % ≤ 67 %
        #expect(!half.record(.status(503), on: h[2], errorCodes: [], now: 4))
        #expect(c.ejected.load(ordering: .relaxed) == 2)
    }

    @Test func aReturnedHostLeavesItsClustersCountOnce() {
        let (r, c, h) = cluster(hosts: 2)
        let s = settings { $0.consecutive5xxErrors = 1; $0.baseEjectionTime = .seconds(1) }
        #expect(s.record(.status(500), on: h[0], errorCodes: [], now: 10))
        #expect(r.isEjected(cluster: c.name, address: "10.0.0.0:80", now: 11))
        #expect(!r.isEjected(cluster: c.name, address: "10.0.0.0:80", now: 10 + second))
        #expect(!h[0].isEjected(now: 10 + second))
        #expect(c.ejected.load(ordering: .relaxed) == 0)
        #expect(r.figures(now: 10 + second).map(\.enforced) == [1])
    }
}

/// Balancing around ejected endpoints, for every policy, and what happens when none is left.
@Suite struct OutlierBalancingTests {
    func balancer(_ lb: String, outlier: String) throws -> (RouteTable, LoadBalancer, OutlierRegistry, [OutlierHost]) {
        let yaml = LoadBalancerTests.yaml(endpoints: 4, lb: lb).replacingTrafficPolicy(lb: lb, outlier: outlier)
        let t = try compile(yaml)
        let r = OutlierRegistry()
        let b = LoadBalancer(table: t, cluster: 0, registry: r)
        let c = r.cluster(t.clusters[0].name)
        return (t, b, r, (1...4).map { r.host(c, address: "10.0.0.\($0):80") })
    }

    func eject(_ h: OutlierHost) {
        h.ejectedUntil.store(1_000, ordering: .relaxed)
        h.cluster.ejected.add(1, ordering: .relaxed)
    }

    @Test(arguments: ["{simple: ROUND_ROBIN}", "{simple: RANDOM}", "{simple: LEAST_REQUEST}",
                      "{consistentHash: {httpHeaderName: x-user}}", "{consistentHash: {httpHeaderName: x-user, maglev: {}}}"])
    func ejectedEndpointsAreNeverPicked(lb: String) throws {
        var (t, b, _, hosts) = try balancer(lb, outlier: "{consecutive5xxErrors: 1}")
        eject(hosts[1])
        eject(hosts[2])
        var picked = Set<Int>()
        for i in 0..<400 {
            let e = b.pick(table: t, random: SplitMix.mix(UInt64(i)), hashKey: SplitMix.mix(UInt64(i) ^ 77), now: 10)
            picked.insert(e ?? -1)
        }
        #expect(picked == [0, 3])
        // Their time up, they are picked again (and counted out of the ejected).
        picked = []
        for i in 0..<400 {
            picked.insert(b.pick(table: t, random: SplitMix.mix(UInt64(i)), hashKey: SplitMix.mix(UInt64(i) ^ 77), now: 1_000) ?? -1)
        }
        #expect(picked == [0, 1, 2, 3])
        #expect(hosts[0].cluster.ejected.load(ordering: .relaxed) == 0)
    }

    @Test func everyEndpointEjectedIsNoPickUnlessMinHealthPercentPanics() throws {
        var (t, b, _, hosts) = try balancer("{simple: ROUND_ROBIN}", outlier: "{consecutive5xxErrors: 1}")
        hosts.forEach(eject)
        #expect(b.pick(table: t, random: 1, now: 10) == nil)
        var (t2, b2, _, hosts2) = try balancer("{simple: ROUND_ROBIN}", outlier: "{consecutive5xxErrors: 1, minHealthPercent: 50}")
        // One of four in service: below 50 %, panic balances over all of them.
        eject(hosts2[0])
        eject(hosts2[1])
        eject(hosts2[2])
        #expect(Set((0..<8).compactMap { _ in b2.pick(table: t2, random: 1, now: 10) }) == [0, 1, 2, 3])
    }
}

extension String {
    /// A LoadBalancerTests fixture's traffic policy with outlier detection added.
    func replacingTrafficPolicy(lb: String, outlier: String) -> String {
        var out = ""
        for line in split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("  trafficPolicy: {loadBalancer:") {
                out += "  trafficPolicy: {loadBalancer: \(lb), outlierDetection: \(outlier)}\n"
            } else {
                out += line + "\n"
            }
        }
        return out
    }
}
