import TernTestSupport
import Testing
@testable import TernConfig

/// Which protocol a cluster's requests go upstream in (issue 17), as Istio's cluster builder decides it.
@Suite struct UpstreamProtocolTests {
    func cluster(protocol p: String?, pool: String? = nil) throws -> UpstreamProtocol {
        let port = p.map { "{number: 80, name: p, protocol: \($0)}" } ?? "{number: 80, name: p}"
        var yaml = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: s}
            spec:
              hosts: [svc]
              ports: [\(port)]
              resolution: STATIC
              endpoints: [{address: 127.0.0.1}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: v}
            spec:
              hosts: [svc]
              http: [{route: [{destination: {host: svc}}]}]

            """
        if let pool {
            yaml += """
                ---
                apiVersion: networking.istio.io/v1
                kind: DestinationRule
                metadata: {name: d}
                spec:
                  host: svc
                  trafficPolicy: {connectionPool: {http: \(pool)}}

                """
        }
        let t = try compile(yaml)
        return try #require(t.clusters.first).upstreamProtocol
    }

    @Test func portProtocolAndRuleDecide() throws {
        #expect(try cluster(protocol: "HTTP") == .http1)
        #expect(try cluster(protocol: "HTTP2") == .http2)
        #expect(try cluster(protocol: "GRPC") == .http2)
        #expect(try cluster(protocol: "grpc-web") == .http2)
        // No protocol: sniffed by Istio, so the client's.
        #expect(try cluster(protocol: nil) == .client)
        #expect(try cluster(protocol: "HTTP", pool: "{h2UpgradePolicy: UPGRADE}") == .http2)
        #expect(try cluster(protocol: "HTTP", pool: "{h2UpgradePolicy: DO_NOT_UPGRADE}") == .http1)
        #expect(try cluster(protocol: "HTTP", pool: "{h2UpgradePolicy: DEFAULT}") == .http1)
        // useClientProtocol replaces every other protocol option.
        #expect(try cluster(protocol: "GRPC", pool: "{useClientProtocol: true}") == .client)
        #expect(try cluster(protocol: "HTTP", pool: "{useClientProtocol: true, h2UpgradePolicy: UPGRADE}") == .client)
    }

    @Test func theHTTP2FieldsNoLongerWarn() {
        let set = ConfigLoader.load(yaml: """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: d}
            spec:
              host: svc
              trafficPolicy:
                connectionPool:
                  http: {h2UpgradePolicy: UPGRADE, useClientProtocol: false, maxConcurrentStreams: 10, http2KeepAlive: {interval: 10s}}
            """, file: "f.yaml")
        let text = set.diagnostics.map(\.description).joined(separator: "\n")
        #expect(!text.contains("h2UpgradePolicy") && !text.contains("useClientProtocol") && !text.contains("maxConcurrentStreams")
                && !text.contains("http2KeepAlive"), "\(text)")
        guard case .destinationRule(let dr) = set.resources.first?.spec, let pool = dr.trafficPolicy?.blocks.connectionPool else {
            Issue.record("no DestinationRule")
            return
        }
        #expect(pool.http2KeepAliveInterval == .seconds(10) && pool.http2KeepAliveTimeout == nil)
    }
}
