import TernConfig
import TernCore
import Testing
@testable import TernProxy

/// The circuit breakers' rules without sockets: how a DestinationRule's connectionPool and the flags become a
/// cluster's limits (Istio's "zero means unset"), taking and giving units at the limits, the retry budget's share
/// of the requests in flight, and the registry that shares one record per cluster between reactors. The proxy's
/// use of them (queues, 503 UO, retries refused) is tested end to end in Tests/Integration/test_resilience.py.
@Suite struct CircuitBreakerTests {
    func relay(_ edit: (inout CircuitDefaults) -> Void = { _ in }) -> RelaySettings {
        var r = RelaySettings()
        edit(&r.circuits)
        return r
    }

    @Test func flagsAreTheDefaultsAndIstiosZeroMeansUnset() {
        let none = CircuitLimits(nil, budget: nil, relay: relay())
        #expect(none.maxConnections == 1024 && none.maxPending == 1024)
        #expect(none.maxRequests == Int.max && none.maxRetries == Int.max && none.maxTCPConnections == Int.max)
        #expect(none.budgetBasisPoints == -1 && none.connectTimeout == 5_000_000_000 && none.idleTimeout == 3600_000_000_000)
        #expect(none.tcpIdleTimeout == 3600_000_000_000 && none.maxRequestsPerConnection == 0 && none.maxConnectionDuration == 0)

        var pool = ConnectionPoolSettings()
        pool.maxConnections = 0  // Istio: not set
        pool.http1MaxPendingRequests = 7
        pool.http2MaxRequests = 9
        pool.maxRetries = 0
        let set = CircuitLimits(pool, budget: nil, relay: relay { $0.maxRetries = 4; $0.maxRequests = 100 })
        #expect(set.maxConnections == 1024 && set.maxPending == 7 && set.maxRequests == 9 && set.maxRetries == 4)

        pool.maxConnections = 3
        let tcp = CircuitLimits(pool, budget: nil, relay: relay())
        #expect(tcp.maxConnections == 3 && tcp.maxTCPConnections == 3)
    }

    @Test func connectionSettingsFollowIstiosFallbacks() {
        var pool = ConnectionPoolSettings()
        pool.tcpIdleTimeout = TernDuration.seconds(30)
        pool.connectTimeout = TernDuration.milliseconds(250)
        pool.tcpKeepaliveTime = TernDuration.milliseconds(1500)  // rounded up to whole seconds
        pool.tcpKeepaliveProbes = 4
        pool.tcpKeepalive = true
        pool.maxConnectionDuration = TernDuration.seconds(60)
        pool.maxRequestsPerConnection = 1
        var l = CircuitLimits(pool, budget: nil, relay: relay())
        // http.idleTimeout unset: tcp.idleTimeout is the HTTP pool's idle timeout too (Istio's applyConnectionPool).
        #expect(l.idleTimeout == 30_000_000_000 && l.tcpIdleTimeout == 30_000_000_000)
        #expect(l.keepalive && l.connectTimeout == 250_000_000 && l.keepaliveTime == 2 && l.keepaliveInterval == 0 && l.keepaliveProbes == 4)
        #expect(l.maxConnectionDuration == 60_000_000_000 && l.maxRequestsPerConnection == 1)
        pool.idleTimeout = TernDuration.zero  // 0s: never
        l = CircuitLimits(pool, budget: nil, relay: relay())
        #expect(l.idleTimeout == 0 && l.tcpIdleTimeout == 30_000_000_000)
    }

    @Test func unitsAreTakenUpToTheLimitAndGivenBack() {
        let c = ClusterCircuit(name: "outbound|80||svc")
        var l = CircuitLimits()
        l.maxPending = 2
        l.maxRequests = 1
        l.maxConnections = 1
        c.configure(l)
        #expect(c.take(.pending) && c.take(.pending) && !c.take(.pending))
        #expect(c.pending.load(ordering: .relaxed) == 2)  // the refused unit was not kept
        c.give(.pending)
        #expect(c.take(.pending))
        #expect(c.take(.request) && !c.take(.request))
        #expect(c.open == (connections: false, pending: true, requests: true, retries: false))
        // A forced connection counts, and says it went past the limit.
        #expect(c.connectionsLeft && c.forceConnection() && !c.connectionsLeft && !c.forceConnection())
        #expect(c.connections.load(ordering: .relaxed) == 2)
        // A TCP route's connection has its own limit (unlimited here), counted in the same gauge.
        #expect(c.take(.tcpConnection) && c.connections.load(ordering: .relaxed) == 3)
    }

    @Test func retryBudgetIsAShareOfRequestsInFlightWithAFloor() {
        let c = ClusterCircuit(name: "outbound|80||svc")
        var budget = RetryBudget()
        budget.percent = 25
        budget.minRetryConcurrency = 2
        c.configure(CircuitLimits(nil, budget: budget, relay: relay { $0.maxRetries = 1 }))
        // Nothing in flight: the floor (2), not maxRetries (1), which a budget replaces.
        #expect(c.take(.retry) && c.take(.retry) && !c.take(.retry))
        // 16 active and 4 pending: 25 % of 20 is 5 retries.
        for _ in 0..<16 { _ = c.take(.request) }
        for _ in 0..<4 { _ = c.take(.pending) }
        #expect(c.take(.retry) && c.take(.retry) && c.take(.retry) && !c.take(.retry))
        #expect(c.retries.load(ordering: .relaxed) == 5)
    }

    @Test func registrySharesOneRecordPerClusterAndForgetsClustersThatLeft() {
        let r = CircuitRegistry()
        var l = CircuitLimits()
        l.maxRequests = 1
        let a = r.circuit("a", l)
        let again = r.circuit("a", CircuitLimits())  // a reactor binding a newer table: same record, new limits
        #expect(a === again && a.take(.request) && a.take(.request))
        _ = r.circuit("b", l)
        // Left the table, but requests still hold units of it: kept (a core binding an older table finds it).
        r.keep(["b"])
        #expect(r.figures().map(\.cluster) == ["a", "b"])
        a.give(.request)
        a.give(.request)
        r.keep(["b"])
        #expect(r.figures().map(\.cluster) == ["b"])
        #expect(r.circuit("a", l) !== a)
        // An older table's limits do not replace a newer one's.
        var newer = CircuitLimits()
        newer.maxRequests = 5
        let b = r.circuit("b", newer, epoch: 7)
        _ = r.circuit("b", l, epoch: 6)
        #expect(b.take(.request) && b.take(.request))
    }
}
