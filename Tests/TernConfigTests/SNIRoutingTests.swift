import TernConfig
import TernTestSupport
import Testing

/// Routing TLS connections by server name (`RouteTable.sniRoute`), as Istio's TLS and HTTPS service ports do.
@Suite struct SNIRoutingTests {
    static let yaml = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: api, namespace: ns}
        spec:
          hosts: [api.example.com]
          ports: [{number: 443, name: tls, protocol: TLS}]
          resolution: STATIC
          endpoints: [{address: 10.0.0.1}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: wild, namespace: ns}
        spec:
          hosts: ["*.example.com"]
          ports: [{number: 443, name: https, protocol: HTTPS}]
          resolution: STATIC
          endpoints: [{address: 10.0.0.2}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: plain, namespace: ns}
        spec:
          hosts: [db.internal]
          ports: [{number: 5432, name: tcp, protocol: TCP}]
          resolution: STATIC
          endpoints: [{address: 10.0.0.3}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: steer, namespace: ns}
        spec:
          hosts: [steered.example.com]
          tls:
          - match: [{sniHosts: [steered.example.com], port: 443, destinationSubnets: [192.168.0.0/16]}]
            route: [{destination: {host: api.example.com}}]
          - match: [{sniHosts: [steered.example.com], port: 443}]
            route: [{destination: {host: db.internal}}]

        """

    func cluster(_ t: RouteTable, _ name: String, port: UInt16 = 443, destination: IPAddress? = nil) -> String? {
        let bytes = Array(name.utf8)
        guard let route = t.sniRoute(port: port, name: bytes.span, destination: destination),
              let d = t.pickTCPDestination(route, random: 0), let c = d.cluster(port: port) else { return nil }
        return t.clusters[c].name
    }

    @Test func portsWithTLSServicesOrTLSRoutesRouteBySNI() throws {
        let t = try compile(Self.yaml, namespace: "ns")
        #expect(t.routesBySNI(port: 443))
        #expect(!t.routesBySNI(port: 5432))
    }

    @Test func exactNamesWinOverWildcards() throws {
        let t = try compile(Self.yaml, namespace: "ns")
        #expect(cluster(t, "api.example.com") == "outbound|443||api.example.com")
        #expect(cluster(t, "other.example.com") == "outbound|443||*.example.com")
        #expect(cluster(t, "example.com") == nil)
        #expect(cluster(t, "nowhere.test") == nil)
        #expect(cluster(t, "") == nil)
        #expect(cluster(t, "api.example.com", port: 8443) == nil)
    }

    @Test func virtualServiceTLSRoutesByNameAndDestinationSubnet() throws {
        let t = try compile(Self.yaml, namespace: "ns")
        let inside = IPAddress(v4: 0xC0A8_0101)  // 192.168.1.1
        #expect(cluster(t, "steered.example.com", destination: inside) == "outbound|443||api.example.com")
        #expect(cluster(t, "steered.example.com", destination: nil)?.hasSuffix("db.internal") == true)
    }

    static let overlapping = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: narrow, namespace: ns}
        spec:
          hosts: ["*.api.example.com"]
          ports: [{number: 443, name: tls, protocol: TLS}]
          resolution: STATIC
          endpoints: [{address: 10.0.0.5}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: fallback, namespace: ns}
        spec:
          hosts: [fallback.internal]
          ports: [{number: 443, name: tls, protocol: TLS}]
          resolution: STATIC
          endpoints: [{address: 10.0.0.6}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: broad, namespace: ns}
        spec:
          hosts: [broad.example.com]
          tls:
          - match: [{sniHosts: ["*.example.com"], port: 443}]
            route: [{destination: {host: fallback.internal}}]
          - match: [{sniHosts: ["*"], port: 443}]
            route: [{destination: {host: fallback.internal}}]

        """

    @Test func theMostSpecificWildcardWinsAndStarTakesHellosWithoutSNI() throws {
        let t = try compile(Self.overlapping, namespace: "ns")
        #expect(cluster(t, "x.api.example.com") == "outbound|443||*.api.example.com")
        #expect(cluster(t, "www.example.com") == "outbound|443||fallback.internal")
        #expect(cluster(t, "") == "outbound|443||fallback.internal")
        #expect(cluster(t, "elsewhere.test") == "outbound|443||fallback.internal")
    }

    @Test func wildcardHostsNeedEndpointsOfTheirOwnAndNothingAsksDNSForThePattern() throws {
        // Istio refuses a wildcard host under DNS resolution without endpoints (the pattern cannot be resolved).
        #expect(diagnostics("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: dns, namespace: ns}
            spec:
              hosts: ["*.dns.example.com"]
              ports: [{number: 443, name: tls, protocol: TLS}]
              resolution: DNS
            """) == ["f.yaml:5: ServiceEntry ns/dns: spec.hosts[0]: a wildcard host needs endpoints with resolution DNS (the host itself is resolved)"])
        let t = try compile("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: dns, namespace: ns}
            spec:
              hosts: ["*.dns.example.com"]
              ports: [{number: 443, name: tls, protocol: TLS}, {number: 8443, name: tls2, protocol: TLS}]
              resolution: DNS
              endpoints: [{address: backend.dns.example.com}]
            ---
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: twice, namespace: ns}
            spec:
              hosts: ["*.twice.example.com"]
              ports: [{number: 443, name: tls, protocol: TLS}, {number: 8443, name: tls2, protocol: TLS}]
              resolution: STATIC
              endpoints: [{address: 10.0.0.7}]

            """, namespace: "ns")
        #expect(cluster(t, "a.dns.example.com") == "outbound|443||*.dns.example.com")
        #expect(!t.dnsNames.contains { $0.hasPrefix("*") }, "\(t.dnsNames)")
        #expect(cluster(t, "a.twice.example.com") == "outbound|443||*.twice.example.com")
        #expect(cluster(t, "a.twice.example.com", port: 8443) == "outbound|8443||*.twice.example.com")
        #expect(t.virtualHosts.filter { $0.name == "*.twice.example.com" }.count == 1)
    }
}
