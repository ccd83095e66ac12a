import TernConfig
import TernTestSupport
import Testing

/// `RouteTable.hashKey`: the consistent-hash key a request carries under its cluster's policy (a cookie, a query
/// parameter, a header or the source address), which the engine's balancer then looks up on the cluster's ring or
/// Maglev table.
@Suite struct HashKeyTests {
    /// Service svc (namespace ns) with the load balancer `lb` for all of it: its one cluster is index 0.
    func table(_ lb: String) throws -> RouteTable {
        try compile(RoutingTests.service + """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: svc, namespace: ns}
            spec:
              host: svc
              trafficPolicy: {loadBalancer: \(lb)}

            """, namespace: "ns")
    }

    @Test func hashKeysFromCookieQueryAndSource() throws {
        let cookie = try table("{consistentHash: {httpCookie: {name: sid, ttl: 0s}}}")
        let query = try table("{consistentHash: {httpQueryParameterName: u}}")
        let source = try table("{consistentHash: {useSourceIp: true}}")
        func key(_ t: RouteTable, _ request: String, source: [UInt8] = []) -> UInt64? {
            let bytes = Array(request.utf8)
            let p = HTTP1ParserBox(bytes)
            return t.hashKey(cluster: 0, request: RequestView(http1: p.head, bytes: bytes.span), sourceAddress: source.span)
        }
        let k1 = key(cookie, get("/", host: "svc", headers: ["Cookie: a=1; sid=abc; b=2"]))
        #expect(k1 != nil && k1 == key(cookie, get("/x", host: "svc", headers: ["Cookie: sid=abc"])))
        #expect(key(cookie, get("/", host: "svc", headers: ["Cookie: sid=abd"])) != k1)
        #expect(key(cookie, get("/", host: "svc")) == nil)
        #expect(key(query, get("/?a=1&u=42", host: "svc")) == key(query, get("/p?u=42", host: "svc")))
        #expect(key(query, get("/?a=1", host: "svc")) == nil)
        #expect(key(source, get("/", host: "svc"), source: [10, 0, 0, 1]) == key(source, get("/z", host: "svc"), source: [10, 0, 0, 1]))
        #expect(key(source, get("/", host: "svc"), source: [10, 0, 0, 1]) != key(source, get("/", host: "svc"), source: [10, 0, 0, 2]))
    }
}
