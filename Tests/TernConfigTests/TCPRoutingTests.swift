import TernConfig
import Testing

@Suite struct TCPRoutingTests {
    /// A TCP service on port 9000 with subsets v1 and v2, a second service sharing nothing, and `extra`.
    static func yaml(_ extra: String = "") -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: echo, namespace: ns}
        spec:
          hosts: [echo]
          ports: [{number: 9000, name: tcp, protocol: TCP}, {number: 9001, name: tcp-admin, protocol: TCP}]
          resolution: STATIC
          endpoints:
          - {address: 10.0.0.1, labels: {version: v1}}
          - {address: 10.0.0.2, labels: {version: v2}}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: db, namespace: ns}
        spec:
          hosts: [db]
          ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
          resolution: STATIC
          endpoints: [{address: 10.0.1.1}]
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: echo, namespace: ns}
        spec:
          host: echo
          subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
        ---

        """ + extra
    }

    /// A VirtualService for host echo whose spec, after `hosts`, is the one line `routes`.
    static func virtualService(_ routes: String) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: echo, namespace: ns}
        spec:
          hosts: [echo]
          \(routes)

        """
    }

    static let split = """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: echo, namespace: ns}
        spec:
          hosts: [echo]
          tcp:
          - match: [{port: 9000, sourceLabels: {app: client}}]
            route:
            - {destination: {host: echo, subset: v1}, weight: 80}
            - {destination: {host: echo, subset: v2}, weight: 20}

        """

    func clusterName(_ t: RouteTable, _ route: TCPListenerRoute, port: UInt16, random: UInt64) -> String? {
        guard let d = t.pickTCPDestination(route, random: random), let c = d.cluster(port: port) else { return nil }
        return t.clusters[c].name
    }

    @Test func theListenerPortSelectsTheServiceAndItsVirtualServiceTCPRoute() throws {
        let t = try compile(Self.yaml(Self.split), namespace: "ns")
        let route = try #require(t.tcpListenerRoute(port: 9000))
        guard case .route = route else { Issue.record("\(route)"); return }
        // Weighted split (sourceLabels is a selector, not a match): 80 % v1, 20 % v2 over the random range.
        var v1 = 0
        for i in 0..<1000 {
            let r = UInt64(i) &* (UInt64.max / 1000)
            if clusterName(t, route, port: 9000, random: r) == "outbound|9000|v1|echo.ns.svc.cluster.local" { v1 += 1 }
        }
        #expect((799...801).contains(v1), "\(v1)")
    }

    @Test func withoutAMatchingTCPRouteTheServiceItselfIsTheDestination() throws {
        let t = try compile(Self.yaml(Self.split), namespace: "ns")
        // Port 9001 is the service's too, but the route matches 9000 only: Istio's default route to the service.
        let route = try #require(t.tcpListenerRoute(port: 9001))
        guard case .service = route else { Issue.record("\(route)"); return }
        #expect(clusterName(t, route, port: 9001, random: 7) == "outbound|9001||echo.ns.svc.cluster.local")
        // A service without VirtualService: its ServiceEntry's default route.
        let db = try #require(t.tcpListenerRoute(port: 5432))
        #expect(clusterName(t, db, port: 5432, random: 7) == "outbound|5432||db.ns.svc.cluster.local")
        #expect(t.clusters.first { $0.name == "outbound|5432||db.ns.svc.cluster.local" }?.endpoints.map(\.address) == ["10.0.1.1"])
    }

    @Test func aPortNoServiceDeclaresHasNoRoute() throws {
        let t = try compile(Self.yaml(Self.split), namespace: "ns")
        #expect(t.tcpListenerRoute(port: 80) == nil)
        #expect(RouteTable.empty().tcpListenerRoute(port: 9000) == nil)
    }

    @Test func aVirtualServiceWithOnlyHTTPRoutesLeavesTCPToTheService() throws {
        let t = try compile(Self.yaml(Self.virtualService("http: [{route: [{destination: {host: echo, subset: v2}}]}]")),
                            namespace: "ns")
        let route = try #require(t.tcpListenerRoute(port: 9000))
        #expect(clusterName(t, route, port: 9000, random: 0) == "outbound|9000||echo.ns.svc.cluster.local")
    }

    @Test func aRouteWithADestinationPortUsesThatPortsCluster() throws {
        let t = try compile(Self.yaml(Self.virtualService("tcp: [{route: [{destination: {host: echo, port: {number: 9001}}}]}]")),
                            namespace: "ns")
        let route = try #require(t.tcpListenerRoute(port: 9000))
        #expect(clusterName(t, route, port: 9000, random: 0) == "outbound|9001||echo.ns.svc.cluster.local")
    }
}

/// The per-connection half of TCP routing (weighted destination, cluster by port, balancer) allocates nothing
/// (counted by Tools/scripts/test.sh's malloc counter run, which selects AllocationTests).
extension AllocationTests {
    @Test func pickingATCPDestinationAllocatesNothing() throws {
        let t = try compile(TCPRoutingTests.yaml(TCPRoutingTests.split), namespace: "ns")
        let route = try #require(t.tcpListenerRoute(port: 9000))
        var balancers = LoadBalancers(table: t)
        var picked = 0
        func once(_ random: UInt64) {
            if let d = t.pickTCPDestination(route, random: random), let c = d.cluster(port: 9000),
               let e = balancers.pick(cluster: c, table: t, random: random),
               let outstanding = balancers.requestStarted(cluster: c, endpoint: e) {
                balancers.requestFinished(outstanding)
                picked += 1
            }
        }
        once(1)
        let before = threadMallocCount()
        var random: UInt64 = 0x9e37_79b9
        for _ in 0..<2_000 {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            once(random)
        }
        if let before, let after = threadMallocCount() { #expect(after - before == 0) }
        #expect(picked == 2_001)
    }
}
