import TernConfig
import TernTestSupport
import Testing
@testable import TernProxy

/// Which endpoints a sidecar reaches over mutual TLS (Transport/TLSOriginations.swift, `endpointKeys`): Istio's
/// automatic mTLS by the `security.istio.io/tlsMode` label, a DestinationRule's ISTIO_MUTUAL and DISABLE, and the
/// identities the peer may present.
@Suite struct MeshOriginationTests {
    static func yaml(tls: String? = nil, subjectAltNames: String = "") -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: reviews, namespace: shop}
        spec:
          hosts: [reviews.shop.svc.cluster.local]
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
        // Every endpoint's service account is an identity the service may run as (in the ServiceEntry's namespace).
        #expect(key.subjectAltNames == ["spiffe://cluster.local/ns/shop/sa/reviews", "spiffe://cluster.local/ns/shop/sa/legacy"])
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
        #expect(entry[0]?.subjectAltNames == ["spiffe://cluster.local/ns/shop/sa/y", "spiffe://cluster.local/ns/shop/sa/reviews",
                                             "spiffe://cluster.local/ns/shop/sa/legacy"])
    }

    @Test func withoutAnIdentityEverythingStaysPlaintext() throws {
        #expect(try keys(Self.yaml(), trustDomain: nil).allSatisfy { $0 == nil })
        #expect(try keys(Self.yaml(tls: "{mode: ISTIO_MUTUAL}"), trustDomain: nil).allSatisfy { $0 == nil })
    }
}
