import TernConfig
import TernCore
import TernTestSupport
import Testing

@Suite struct DNSResolutionTests {
    static let dns = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ext, namespace: ns}
        spec:
          hosts: [api.example.com]
          ports: [{number: 443, name: tls, protocol: TLS}]
          resolution: DNS
          endpoints:
          - {address: a.example.net, labels: {zone: a}, weight: 3}
          - {address: 10.0.0.9, labels: {zone: b}}
          - {address: b.example.net, ports: {tls: 8443}, labels: {zone: b}}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: rr, namespace: ns}
        spec:
          hosts: [rr.example.com]
          ports: [{number: 80, name: http}]
          resolution: DNS_ROUND_ROBIN
          endpoints: [{address: a.example.net}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: bare, namespace: ns}
        spec:
          hosts: [bare.example.com]
          ports: [{number: 80, name: http}]
          resolution: DNS
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ext, namespace: ns}
        spec:
          host: api.example.com
          trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}
          subsets: [{name: b, labels: {zone: b}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: ext, namespace: ns}
        spec:
          hosts: [api.example.com]
          tcp: [{route: [{destination: {host: api.example.com, subset: b}}]}]

        """

    func cluster(_ t: RouteTable, _ name: String) throws -> Cluster {
        try #require(t.clusters.first { $0.name == name })
    }

    func endpoints(_ c: Cluster) -> [String] {
        c.endpoints.map { "\($0.address):\($0.port)/\($0.weight)" + ($0.needsResolution ? "?" : "") }
    }

    @Test func namesAreListedOnceAndEndpointlessEntriesResolveTheirHosts() throws {
        let t = try compile(Self.dns, namespace: "ns")
        #expect(t.dnsNames == ["b.example.net", "a.example.net", "bare.example.com"])
        #expect(endpoints(try cluster(t, "outbound|80||bare.example.com")) == ["bare.example.com:80/1?"])
    }

    @Test func answersReplaceNamesAndKeepPortWeightAndLabels() throws {
        let t = try compile(Self.dns, namespace: "ns")
        let answers = ["a.example.net": ["192.0.2.1", "192.0.2.2"], "b.example.net": ["192.0.2.7"],
                       "bare.example.com": ["198.51.100.4"]]
        let r = t.resolved(answers)
        #expect(endpoints(try cluster(r, "outbound|443||api.example.com")) ==
                ["192.0.2.1:443/3", "192.0.2.2:443/3", "10.0.0.9:443/1", "192.0.2.7:8443/1"])
        #expect(try cluster(r, "outbound|443|b|api.example.com").endpoints.map(\.labels) == [["zone": "b"], ["zone": "b"]])
        // DNS_ROUND_ROBIN (Envoy's LOGICAL_DNS): the first address of the answer only.
        #expect(endpoints(try cluster(r, "outbound|80||rr.example.com")) == ["192.0.2.1:80/1"])
        #expect(endpoints(try cluster(r, "outbound|80||bare.example.com")) == ["198.51.100.4:80/1"])
        // The template is left as it was, routes and host lookup are shared, the hash ring covers the new endpoints.
        #expect(endpoints(try cluster(t, "outbound|443||api.example.com")).first == "a.example.net:443/3?")
        #expect(r.virtualHosts.count == t.virtualHosts.count)
        let name = Array("api.example.com".utf8)
        #expect(r.virtualHost(for: name.span) == t.virtualHost(for: name.span))
        guard case .ringHash(_, let ring) = try cluster(r, "outbound|443||api.example.com").loadBalancing else {
            Issue.record("not a ring hash")
            return
        }
        #expect(Set(ring.points.map(\.endpoint)) == [0, 1, 2, 3])
    }

    @Test func aNameWithoutAnAnswerLeavesNoEndpoint() throws {
        let t = try compile(Self.dns, namespace: "ns")
        let r = t.resolved(["a.example.net": ["192.0.2.1"]])
        #expect(endpoints(try cluster(r, "outbound|443||api.example.com")) == ["192.0.2.1:443/3", "10.0.0.9:443/1"])
        #expect(try cluster(r, "outbound|80||bare.example.com").endpoints.isEmpty)
    }

    @Test func refreshAsksNewNamesAtOnceThenEveryIntervalAndKeepsTheLastGoodAnswer() {
        var d = DNSRefresh(interval: .seconds(60))
        let s: UInt64 = 1_000_000_000
        d.track(["a", "b"], now: 10 * s)
        #expect(d.unasked == 2)
        var changed: Bool
        #expect(d.next()! == ("a", 10 * s))
        changed = d.record("a", ["192.0.2.1"], now: 10 * s)
        #expect(changed)
        #expect(d.next()! == ("b", 10 * s))
        changed = d.record("b", nil, now: 10 * s)
        #expect(!changed)  // failed, nothing to publish
        #expect(d.unasked == 0)
        // Failures are retried after 1 s, 2 s, 4 s, …; successes after the interval.
        #expect(d.next()! == ("b", 11 * s))
        changed = d.record("b", nil, now: 11 * s)
        #expect(!changed)
        #expect(d.next()! == ("b", 13 * s))
        changed = d.record("b", ["2001:db8::1"], now: 13 * s)
        #expect(changed)
        #expect(d.next()! == ("a", 70 * s))
        // The same answer publishes nothing; a failure (or an empty answer) keeps the last good one.
        changed = d.record("a", ["192.0.2.1"], now: 70 * s)
        #expect(!changed)
        changed = d.record("a", nil, now: 130 * s)
        #expect(!changed)
        changed = d.record("a", [], now: 131 * s)
        #expect(!changed)
        #expect(d.answers["a"] == ["192.0.2.1"])
        changed = d.record("a", ["192.0.2.1", "192.0.2.2", "192.0.2.3"], now: 140 * s)
        #expect(changed)
        // The same addresses in another order change nothing, unless the first one (DNS_ROUND_ROBIN's) changed.
        changed = d.record("a", ["192.0.2.1", "192.0.2.3", "192.0.2.2"], now: 150 * s)
        #expect(!changed)
        changed = d.record("a", ["192.0.2.2", "192.0.2.1", "192.0.2.3"], now: 200 * s)
        #expect(changed)
        // Names no longer used are forgotten; a lookup that finishes after that is ignored.
        changed = d.track(["b"], now: 210 * s)
        #expect(changed)
        #expect(d.answers["a"] == nil)
        changed = d.record("a", ["192.0.2.3"], now: 211 * s)
        #expect(!changed)
        #expect(d.names == ["b"])
    }

    @Test func theRetryBackOffStopsAtTheInterval() {
        var d = DNSRefresh(interval: .seconds(5))
        let s: UInt64 = 1_000_000_000
        d.track(["x"], now: 0)
        var now: UInt64 = 0
        var delays: [UInt64] = []
        for _ in 0..<6 {
            _ = d.record("x", nil, now: now)
            let due = d.next()!.due
            delays.append((due - now) / s)
            now = due
        }
        #expect(delays == [1, 2, 4, 5, 5, 5])
    }

    @Test func ipv4AddressesArePreferred() {
        var d = DNSRefresh()
        d.track(["dual", "six"], now: 0)
        _ = d.record("dual", ["::1", "127.0.0.1", "127.0.0.1", "not-an-ip"], now: 0)
        _ = d.record("six", ["fd00::2", "fd00::1"], now: 0)
        #expect(d.answers == ["dual": ["127.0.0.1"], "six": ["fd00::2", "fd00::1"]])
    }
}
