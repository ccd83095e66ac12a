import TernConfig
import TernTestSupport
import Testing
@testable import TernProxy

/// Which endpoints a sidecar reaches over mutual TLS (Transport/TLSOriginations.swift, `endpointKeys`): Istio's
/// automatic mTLS by the `security.istio.io/tlsMode` label, a DestinationRule's ISTIO_MUTUAL and DISABLE, and the
/// identities the peer may present.
@Suite struct MeshOriginationTests {
    static func yaml(tls: String? = nil, subjectAltNames: String = "", location: String = "MESH_INTERNAL") -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: reviews, namespace: shop}
        spec:
          hosts: [reviews.shop.svc.cluster.local]
          location: \(location)
          ports: [{number: 9080, name: http, protocol: HTTP}]
          resolution: STATIC
          \(subjectAltNames)
          endpoints:
          - {address: 10.0.0.1, labels: {security.istio.io/tlsMode: istio}, serviceAccount: reviews}
          - {address: 10.0.0.2, serviceAccount: legacy}
          - {address: 10.0.0.3, labels: {security.istio.io/tlsMode: disabled}}
        \(tls.map { """
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews, namespace: shop}
        spec:
          host: reviews.shop.svc.cluster.local
          trafficPolicy: {tls: \($0)}
        """ } ?? "")
        """
    }

    func keys(_ yaml: String, trustDomain: String? = "cluster.local") throws -> [TLSOriginationKey?] {
        let t = try compile(yaml, namespace: "shop")
        #expect(t.clusters.count == 1)
        return TLSOriginationKey.endpointKeys(t.clusters[0], trustDomain: trustDomain)
    }

    @Test func automaticMTLSReachesOnlyLabelledEndpoints() throws {
        let k = try keys(Self.yaml())
        #expect(k.map { $0?.mesh ?? false } == [true, false, false])
        let key = try #require(k[0])
        #expect(key.sni == "outbound_.9080_._.reviews.shop.svc.cluster.local")
        // Every endpoint's service account is an identity the service may run as (in the ServiceEntry's namespace),
        // sorted, whatever subset the cluster is of.
        #expect(key.subjectAltNames == ["spiffe://cluster.local/ns/shop/sa/legacy", "spiffe://cluster.local/ns/shop/sa/reviews"])
        // A service outside the mesh (MESH_EXTERNAL, the default location) never gets automatic mTLS.
        #expect(try keys(Self.yaml(location: "MESH_EXTERNAL")).allSatisfy { $0 == nil })
        #expect(key.mutual && !key.insecureSkipVerify && !key.http2)
    }

    @Test func istioMutualReachesEveryEndpointAndDisableNone() throws {
        #expect(try keys(Self.yaml(tls: "{mode: ISTIO_MUTUAL}")).map { $0?.mesh ?? false } == [true, true, true])
        #expect(try keys(Self.yaml(tls: "{mode: DISABLE}")).allSatisfy { $0 == nil })
        // SIMPLE is the DestinationRule's own origination, never the mesh's.
        let simple = try keys(Self.yaml(tls: "{mode: SIMPLE, sni: reviews.example}"))
        #expect(simple.allSatisfy { $0 != nil && !$0!.mesh && $0!.sni == "reviews.example" })
    }

    @Test func subjectAltNamesOfTheRuleReplaceTheServiceAccounts() throws {
        let rule = try keys(Self.yaml(tls: "{mode: ISTIO_MUTUAL, subjectAltNames: [\"spiffe://cluster.local/ns/shop/sa/x\"]}"))
        #expect(rule.allSatisfy { $0?.subjectAltNames == ["spiffe://cluster.local/ns/shop/sa/x"] })
        let entry = try keys(Self.yaml(subjectAltNames: "subjectAltNames: [\"spiffe://cluster.local/ns/shop/sa/y\"]"))
        #expect(entry[0]?.subjectAltNames == ["spiffe://cluster.local/ns/shop/sa/y", "spiffe://cluster.local/ns/shop/sa/legacy",
                                             "spiffe://cluster.local/ns/shop/sa/reviews"])
        // ISTIO_MUTUAL's own sni replaces the cluster's name.
        #expect(try keys(Self.yaml(tls: "{mode: ISTIO_MUTUAL, sni: reviews.internal}"))[0]?.sni == "reviews.internal")
    }

    @Test func withoutAnIdentityAutomaticMTLSIsPlaintextAndIstioMutualFailsClosed() throws {
        #expect(try keys(Self.yaml(), trustDomain: nil).allSatisfy { $0 == nil })
        // ISTIO_MUTUAL demands mutual TLS: mesh keys no policy serves, so its connections fail, never plaintext.
        let demanded = try keys(Self.yaml(tls: "{mode: ISTIO_MUTUAL}"), trustDomain: nil)
        #expect(demanded.allSatisfy { $0?.mesh == true })
        let (o, warnings) = try TLSOriginations.build(try compile(Self.yaml(tls: "{mode: ISTIO_MUTUAL}"), namespace: "shop"), credentialsDir: nil)
        #expect(o.policies.isEmpty && warnings.contains { $0.contains("ISTIO_MUTUAL") })
    }

    /// The keys a reactor computes from a table with DNS answers (some not in yet) are the keys the contexts were
    /// built for from the configuration as written: the service's accounts do not change with its endpoints.
    @Test func keysOfAResolvedTableAreThoseOfItsTemplate() throws {
        let t = try compile("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: ratings, namespace: shop}
            spec:
              hosts: [ratings.shop.svc.cluster.local]
              location: MESH_INTERNAL
              ports: [{number: 80, name: http, protocol: HTTP}]
              resolution: DNS
              endpoints:
              - {address: a.ratings.example, labels: {security.istio.io/tlsMode: istio}, serviceAccount: ratings-a}
              - {address: b.ratings.example, labels: {security.istio.io/tlsMode: istio}, serviceAccount: ratings-b}
            """, namespace: "shop")
        let written = Set(t.clusters.flatMap { TLSOriginationKey.endpointKeys($0, trustDomain: "cluster.local").compactMap { $0 } })
        #expect(written.count == 1)
        let partly = t.resolved(["a.ratings.example": ["10.1.0.1", "10.1.0.2"]])
        let bound = Set(partly.clusters.flatMap { TLSOriginationKey.endpointKeys($0, trustDomain: "cluster.local").compactMap { $0 } })
        #expect(partly.clusters[0].endpoints.count == 2 && bound == written)
        #expect(written.first?.subjectAltNames == ["spiffe://cluster.local/ns/shop/sa/ratings-a", "spiffe://cluster.local/ns/shop/sa/ratings-b"])
    }

    /// TCP routes cannot originate TLS yet: the clusters they reach whose endpoints would get mutual TLS are named.
    @Test func tcpRoutesToMeshEndpointsAreWarnedAbout() throws {
        let t = try compile("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: db, namespace: shop}
            spec:
              hosts: [db.shop.svc.cluster.local]
              location: MESH_INTERNAL
              ports: [{number: 5432, name: tcp, protocol: TCP}]
              resolution: STATIC
              endpoints: [{address: 10.0.0.9, labels: {security.istio.io/tlsMode: istio}}]
            """, namespace: "shop")
        let warnings = TLSOriginations.tcpMeshWarnings(t, trustDomain: "cluster.local", ports: [5432])
        #expect(warnings.count == 1 && warnings[0].contains("outbound|5432||db.shop.svc.cluster.local"))
        #expect(TLSOriginations.tcpMeshWarnings(t, trustDomain: nil, ports: [5432]).isEmpty)
        // Only what a TCP listener's port reaches.
        #expect(TLSOriginations.tcpMeshWarnings(t, trustDomain: "cluster.local", ports: [9999]).isEmpty)
    }

    /// ISTIO_MUTUAL demands mutual TLS, which TCP routes cannot originate yet: such a configuration is refused for
    /// a process with TCP listeners rather than served in plaintext.
    @Test func istioMutualOnATCPRouteIsRefused() throws {
        let t = try compile("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: db, namespace: shop}
            spec:
              hosts: [db.shop.svc.cluster.local]
              location: MESH_INTERNAL
              ports: [{number: 5432, name: tcp, protocol: TCP}]
              resolution: STATIC
              endpoints: [{address: 10.0.0.9}]
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: db, namespace: shop}
            spec:
              host: db.shop.svc.cluster.local
              trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
            """, namespace: "shop")
        #expect(TLSOriginations.tcpMeshRefusal(t, ports: [5432])?.contains("ISTIO_MUTUAL") == true)
        #expect(TLSOriginations.tcpMeshWarnings(t, trustDomain: "cluster.local", ports: [5432]).isEmpty)
        // An HTTP service under a mesh-wide ISTIO_MUTUAL rule, beside a TCP listener on another port: served.
        let http = try compile("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: web, namespace: shop}
            spec:
              hosts: [web.shop.svc.cluster.local]
              location: MESH_INTERNAL
              ports: [{number: 80, name: http, protocol: HTTP}]
              resolution: STATIC
              endpoints: [{address: 10.0.0.8}]
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: mesh-wide, namespace: istio-system}
            spec:
              host: "*.local"
              trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
            """, namespace: "shop")
        #expect(TLSOriginations.tcpMeshRefusal(http, ports: [5432]) == nil)
    }
}
