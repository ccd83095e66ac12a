import TernConfig
import TernTestSupport
import Testing

@Suite struct TCPRoutingTests {
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

    func clusterName(_ t: RouteTable, _ route: TCPListenerRoute, port: UInt16, random: UInt64) -> String? {
        guard let d = t.pickTCPDestination(route, random: random), let c = d.cluster(port: port) else { return nil }
        return t.clusters[c].name
    }

    @Test func theListenerPortSelectsTheServiceAndItsVirtualServiceTCPRoute() throws {
        let t = try compile(TCPRoutingConfig.yaml(TCPRoutingConfig.split), namespace: "ns")
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
        let t = try compile(TCPRoutingConfig.yaml(TCPRoutingConfig.split), namespace: "ns")
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
        let t = try compile(TCPRoutingConfig.yaml(TCPRoutingConfig.split), namespace: "ns")
        #expect(t.tcpListenerRoute(port: 80) == nil)
        #expect(RouteTable.empty().tcpListenerRoute(port: 9000) == nil)
    }

    @Test func aVirtualServiceWithOnlyHTTPRoutesLeavesTCPToTheService() throws {
        let t = try compile(TCPRoutingConfig.yaml(Self.virtualService("http: [{route: [{destination: {host: echo, subset: v2}}]}]")),
                            namespace: "ns")
        let route = try #require(t.tcpListenerRoute(port: 9000))
        #expect(clusterName(t, route, port: 9000, random: 0) == "outbound|9000||echo.ns.svc.cluster.local")
    }

    @Test func aRouteWithADestinationPortUsesThatPortsCluster() throws {
        let t = try compile(TCPRoutingConfig.yaml(Self.virtualService("tcp: [{route: [{destination: {host: echo, port: {number: 9001}}}]}]")),
                            namespace: "ns")
        let route = try #require(t.tcpListenerRoute(port: 9000))
        #expect(clusterName(t, route, port: 9000, random: 0) == "outbound|9001||echo.ns.svc.cluster.local")
    }

    // MARK: destinationSubnets

    /// Two routes for host echo: route 0 for 10.1.0.0/16 on port 9000 or anything on 9001; route 1 for
    /// 10.0.0.0/8 and fd00::/8 on any port.
    static let bySubnet = virtualService("""
        tcp:
          - match:
            - {port: 9000, destinationSubnets: [10.1.0.0/16]}
            - {port: 9001}
            route: [{destination: {host: echo, subset: v1}}]
          - match: [{destinationSubnets: [10.0.0.0/8, "fd00::/8"]}]
            route: [{destination: {host: echo, subset: v2}}]
        """)

    /// Where a connection to `port` at `ip` goes: "route N", "service" or "none".
    func routed(_ t: RouteTable, port: UInt16, to ip: String?) -> String {
        var destination: IPAddress?
        if let ip {
            destination = IPAddress(parsing: ip)
            if destination == nil { Issue.record("bad test address \(ip)") }
        }
        switch t.tcpListenerRoute(port: port, destination: destination) {
        case .route(_, let r): return "route \(r)"
        case .service: return "service"
        case .tlsRoute(_, let r): return "tls route \(r)"
        case nil: return "none"
        }
    }

    @Test func aMatchHoldsWhenItsPortAndItsSubnetsBothDo() throws {
        let t = try compile(TCPRoutingConfig.yaml(Self.bySubnet), namespace: "ns")
        // Route 0's first match: port and subnet (AND). Both routes hold for 10.1.2.3: the first wins.
        #expect(routed(t, port: 9000, to: "10.1.2.3") == "route 0")
        #expect(routed(t, port: 9000, to: "10.1.0.0") == "route 0")
        #expect(routed(t, port: 9000, to: "10.1.255.255") == "route 0")
        // Outside 10.1.0.0/16: route 0's first match fails on the subnet, its second on the port.
        #expect(routed(t, port: 9000, to: "10.2.0.1") == "route 1")
        #expect(routed(t, port: 9000, to: "10.0.255.255") == "route 1")
        // Route 0's second match has no subnet: any address on 9001 (OR across matches).
        #expect(routed(t, port: 9001, to: "192.168.1.1") == "route 0")
        #expect(routed(t, port: 9001, to: "10.1.2.3") == "route 0")
        // IPv6 in fd00::/8 reaches route 1; an IPv4-mapped address is IPv6, not in 10.0.0.0/8.
        #expect(routed(t, port: 9000, to: "fd12:3456::1") == "route 1")
        #expect(routed(t, port: 9000, to: "fe00::1") == "service")
        #expect(routed(t, port: 9000, to: "::ffff:10.1.2.3") == "service")
        // No route holds: the service itself (Istio's default route); nor without a known destination.
        #expect(routed(t, port: 9000, to: "192.168.1.1") == "service")
        #expect(routed(t, port: 9000, to: "11.0.0.1") == "service")
        #expect(routed(t, port: 9000, to: nil) == "service")
    }

    @Test func eachMatchKeepsItsOwnPort() throws {
        // A port in one match does not restrict the other: on 9001 the subnet match alone decides.
        let t = try compile(TCPRoutingConfig.yaml(Self.virtualService("""
            tcp:
              - match: [{port: 9000}, {destinationSubnets: [10.0.0.0/8]}]
                route: [{destination: {host: echo, subset: v1}}]
            """)), namespace: "ns")
        #expect(routed(t, port: 9000, to: "192.168.1.1") == "route 0")
        #expect(routed(t, port: 9001, to: "10.9.9.9") == "route 0")
        #expect(routed(t, port: 9001, to: "192.168.1.1") == "service")
    }

    /// The index of the virtual host named `name` in `t` (found by name, not by the lookups under test).
    func virtualHost(_ t: RouteTable, _ name: String) throws -> Int {
        try #require(t.virtualHosts.firstIndex { $0.name == name }, "no virtual host \(name) in \(t.virtualHosts.map(\.name))")
    }

    @Test func aListenerIsRoutedPerConnectionOnlyWhenARouteForItsPortMatchesSubnets() throws {
        let t = try compile(TCPRoutingConfig.yaml(Self.bySubnet), namespace: "ns")
        let echo = try virtualHost(t, "echo.ns.svc.cluster.local")
        let db = try virtualHost(t, "db.ns.svc.cluster.local")
        // Port 9000 is echo's alone, and route 0 matches it on a subnet: decided per connection, over echo.
        #expect(t.tcpListenerRouting(port: 9000) == .byDestination(virtualHosts: [echo]))
        // Each expected route written out from bySubnet's matches, not taken from another lookup.
        let on9000: [(String, TCPListenerRoute)] = [
            ("10.1.2.3", .route(virtualHost: echo, route: 0)),  // route 0: port 9000 and 10.1.0.0/16
            ("10.200.0.1", .route(virtualHost: echo, route: 1)),  // outside 10.1.0.0/16, inside 10.0.0.0/8
            ("fd00::1", .route(virtualHost: echo, route: 1)),  // fd00::/8
            ("192.168.1.1", .service(virtualHost: echo)),  // no route holds: echo's own service
        ]
        for (ip, expected) in on9000 {
            let route = t.tcpListenerRoute(virtualHosts: [echo], port: 9000, destination: try address(ip))
            #expect(route == expected, "\(ip)")
        }
        #expect(t.tcpListenerRoute(virtualHosts: [echo], port: 9000, destination: nil) == .service(virtualHost: echo))
        // Route 1 has no port, so it is in question on 9001 too; there route 0's second match takes any address.
        #expect(t.tcpListenerRouting(port: 9001) == .byDestination(virtualHosts: [echo]))
        #expect(t.tcpListenerRoute(virtualHosts: [echo], port: 9001, destination: try address("192.168.1.1"))
                == .route(virtualHost: echo, route: 0))
        // The other service's port: no route of echo in question; db has no VirtualService, so its ServiceEntry's
        // default route (route 0 of its virtual host) for every connection.
        #expect(t.tcpListenerRouting(port: 5432) == .fixed(.route(virtualHost: db, route: 0)))
        // A port no service declares: nowhere (NR), for every connection.
        #expect(t.tcpListenerRouting(port: 80) == .fixed(nil))
        // A subnet match for 9001 only leaves 9000 fixed (to the service: the route does not match 9000).
        let only9001 = try compile(TCPRoutingConfig.yaml(Self.virtualService("""
            tcp:
              - match: [{port: 9001, destinationSubnets: [10.0.0.0/8]}]
                route: [{destination: {host: echo, subset: v1}}]
            """)), namespace: "ns")
        let echo2 = try virtualHost(only9001, "echo.ns.svc.cluster.local")
        #expect(only9001.tcpListenerRouting(port: 9000) == .fixed(.service(virtualHost: echo2)))
        #expect(only9001.tcpListenerRouting(port: 9001) == .byDestination(virtualHosts: [echo2]))
        #expect(only9001.tcpListenerRoute(virtualHosts: [echo2], port: 9001, destination: try address("10.9.9.9"))
                == .route(virtualHost: echo2, route: 0))
        #expect(only9001.tcpListenerRoute(virtualHosts: [echo2], port: 9001, destination: try address("11.0.0.1"))
                == .service(virtualHost: echo2))
    }

    func subnet(_ text: String) throws -> CIDRRange { try CIDRRange(parsing: text) }

    func address(_ text: String) throws -> IPAddress { try #require(IPAddress(parsing: text), "\(text)") }

    @Test func subnetsParseIPv4AndIPv6WithOrWithoutAPrefix() throws {
        let eight = try subnet("10.1.2.3/8")  // host bits set: cleared, as Envoy does
        #expect(eight.base == IPAddress(v4: 0x0A00_0000) && eight.prefixLength == 8)
        #expect(try eight == subnet("10.0.0.0/8"))
        #expect(try eight.contains(address("10.255.255.255")) && !eight.contains(address("11.0.0.0")))
        let host = try subnet("192.168.0.1")  // a bare address: that host alone
        #expect(try host.prefixLength == 32 && host.contains(address("192.168.0.1")))
        #expect(try !host.contains(address("192.168.0.2")))
        let all4 = try subnet("0.0.0.0/0")
        #expect(try all4.contains(address("255.255.255.255")) && all4.contains(address("0.0.0.0")))
        #expect(!all4.contains(try address("::")))  // families never mix
        let all6 = try subnet("::/0")
        #expect(try all6.contains(address("ffff::1")) && !all6.contains(address("1.2.3.4")))

        #expect(try address("2001:0db8:0000:0000:0000:ff00:0042:8329") == address("2001:db8::ff00:42:8329"))
        #expect(try address("2001:db8::ff00:42:8329") == IPAddress(v6High: 0x2001_0db8_0000_0000, low: 0x0000_ff00_0042_8329))
        #expect(try address("::ffff:10.0.0.1") == IPAddress(v6High: 0, low: 0x0000_ffff_0a00_0001))
        #expect(try address("1::") == IPAddress(v6High: 0x0001_0000_0000_0000, low: 0))
        #expect(try address("1:2:3:4:5:6:7::") == IPAddress(v6High: 0x0001_0002_0003_0004, low: 0x0005_0006_0007_0000))
        #expect(try address("::") == IPAddress(v6High: 0, low: 0))
        #expect(try subnet("2001:db8::1").prefixLength == 128)
        // Prefixes on both sides of the 64-bit halves.
        let p64 = try subnet("2001:db8:1:2:ffff::/64")
        #expect(try p64.contains(address("2001:db8:1:2::9")) && !p64.contains(address("2001:db8:1:3::")))
        let p65 = try subnet("2001:db8:1:2:8000::/65")
        #expect(try p65.contains(address("2001:db8:1:2:ffff::")) && !p65.contains(address("2001:db8:1:2:7fff::")))
        let p127 = try subnet("fd00::2/127")
        #expect(try p127.contains(address("fd00::3")) && !p127.contains(address("fd00::1")))
        let p1 = try subnet("8000::/1")
        #expect(try p1.contains(address("ffff::")) && !p1.contains(address("7fff::")))
    }

    @Test(arguments: [
        ("10.0.0.0/33", "\"10.0.0.0/33\": the prefix length must be a number from 0 to 32"),
        ("fd00::/129", "\"fd00::/129\": the prefix length must be a number from 0 to 128"),
        ("10.0.0.0/-1", "\"10.0.0.0/-1\": the prefix length must be a number from 0 to 32"),
        ("10.0.0.0/08", "\"10.0.0.0/08\": the prefix length must be a number from 0 to 32"),
        ("10.0.0.0/ 8", "\"10.0.0.0/ 8\": the prefix length must be a number from 0 to 32"),
        ("10.0.0.0/8/8", "\"10.0.0.0/8/8\": the prefix length must be a number from 0 to 32"),
        ("10.0.0.0/", "\"10.0.0.0/\": the prefix length must be a number from 0 to 32"),
    ])
    func subnetsWithABadPrefixAreRefused(text: String, message: String) {
        #expect(throws: CIDRRange.ParseError.self) { try CIDRRange(parsing: text) }
        do { _ = try CIDRRange(parsing: text) } catch { #expect(error.description == message) }
    }

    @Test(arguments: ["", "/8", "10.0.0", "10.0.0.0.0", "10.0.0.256", "010.0.0.1", "10..0.1", "1.2.3.4 ", "a.b.c.d",
                      "fd00:::1", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8::", "12345::", ":1::", "1::2::3",
                      "1:", "fe80::1%eth0", "::ffff:1.2.3", "::1.2.3.4.5", "1:2:3:4:5:6:7:1.2.3.4", "g::", "10.0.0.0 /8"])
    func malformedAddressesAreRefused(text: String) {
        #expect(IPAddress(parsing: text) == nil)
        #expect(throws: CIDRRange.ParseError.notAnAddress(text)) { try CIDRRange(parsing: text) }
    }
}

/// The table's per-connection half of TCP routing (weighted destination, cluster by port) allocates nothing
/// (counted by Tools/scripts/test.sh's malloc counter run, which selects AllocationTests; `MallocCounter`). The
/// balancer's half is TernProxyTests' LoadBalancerAllocationTests.
extension AllocationTests {
    @Test func pickingATCPDestinationAllocatesNothing() throws {
        let counter = try MallocCounter.load()
        let t = try compile(TCPRoutingConfig.yaml(TCPRoutingConfig.split), namespace: "ns")
        let route = try #require(t.tcpListenerRoute(port: 9000))
        var picked = 0
        func once(_ random: UInt64) {
            if let d = t.pickTCPDestination(route, random: random), d.cluster(port: 9000) != nil {
                picked += 1
            }
        }
        once(1)
        let before = counter?.count()
        var random: UInt64 = 0x9e37_79b9
        for _ in 0..<2_000 {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            once(random)
        }
        if let counter, let before { #expect(counter.count() - before == 0) }
        #expect(picked == 2_001)
    }
}

/// Choosing a listener's route per connection, by its destination IP (destinationSubnets), allocates nothing either.
extension AllocationTests {
    @Test func routingATCPConnectionByItsDestinationAllocatesNothing() throws {
        let counter = try MallocCounter.load()
        let t = try compile(TCPRoutingConfig.yaml(TCPRoutingTests.bySubnet), namespace: "ns")
        guard case .byDestination(let hosts) = t.tcpListenerRouting(port: 9000) else {
            Issue.record("not routed by destination")
            return
        }
        let addresses = try ["10.1.2.3", "10.2.0.1", "192.168.1.1", "fd00::1", "::1"].map {
            try #require(IPAddress(parsing: $0))
        }
        var routed = 0
        func once(_ i: Int) {
            let destination = addresses[i % addresses.count]
            if let route = t.tcpListenerRoute(virtualHosts: hosts, port: 9000, destination: destination),
               t.pickTCPDestination(route, random: UInt64(i)) != nil {
                routed += 1
            }
        }
        once(0)
        let before = counter?.count()
        for i in 1...2_000 { once(i) }
        if let counter, let before { #expect(counter.count() - before == 0) }
        #expect(routed == 2_001)
    }
}
