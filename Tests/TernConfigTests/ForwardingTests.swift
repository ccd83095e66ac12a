import TernConfig
import TernTestSupport
import Testing

/// `RouteTable.forwarding`, the flat facts the proxy reads per request instead of copying `Route` and
/// `WeightedCluster`, says what the model says: the same weighted choice, clusters by port, prefix lengths, and
/// the route's and destination's header operations rendered as field lines and names of dropped fields.
@Suite struct ForwardingTests {
    static let yaml = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: api}
        spec:
          hosts: [api]
          ports: [{number: 80, name: http, protocol: HTTP}, {number: 8080, name: http-alt, protocol: HTTP}]
          resolution: STATIC
          endpoints: [{address: 10.0.0.1}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: api}
        spec:
          hosts: [api]
          http:
          - match: [{uri: {prefix: /gone}}]
            directResponse: {status: 410}
          - match: [{uri: {exact: /exact}}, {uri: {prefix: /v1/}}]
            rewrite: {uri: /api/, authority: internal.api}
            headers:
              request: {set: {X-Env: prod}, add: {x-added: "1"}, remove: [X-Secret]}
              response: {set: {x-served-by: tern}, remove: [server]}
            route:
            - destination: {host: api, port: {number: 8080}}
              weight: 30
              headers: {request: {set: {x-dest: d1}}}
            - destination: {host: api}
              weight: 70
          - route: [{destination: {host: api}}]
        """

    func drops(_ f: Forwarding, _ name: String, _ which: Range<Int>) -> Bool {
        let bytes = Array(name.utf8)
        return f.drops(bytes.span, which)
    }

    @Test func agreesWithTheRoutesItFlattens() throws {
        let table = try compile(Self.yaml)
        let f = table.forwarding
        let vh = try #require(table.virtualHosts.firstIndex { $0.name.hasPrefix("api") })
        let direct = RouteMatch(virtualHost: Int32(vh), route: 0, matcher: 0)
        let edited = RouteMatch(virtualHost: Int32(vh), route: 1, matcher: 1)
        let plain = RouteMatch(virtualHost: Int32(vh), route: 2)
        #expect(!f.forwards(direct) && f.pick(direct, random: 1) == nil)
        #expect(f.forwards(edited) && f.forwards(plain) && !f.forwards(.noHost))
        // The same destination for every random the model picks with, by cluster and weight.
        var random: UInt64 = 0x9e37_79b9
        var seen = Set<Int>()
        for _ in 0..<1_000 {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let e = try #require(f.pick(edited, random: random))
            let d = try #require(table.pickDestination(edited, random: random))
            seen.insert(e)
            #expect(f.entries[e].weight == d.weight)
            for port: UInt16 in [80, 8080, 9999] { #expect(f.cluster(e, port: port) == d.cluster(port: port)) }
        }
        #expect(seen.count == 2, "both destinations picked")
        #expect(f.matchedPrefixLength(edited) == table.route(edited)!.matchedPrefixLength(edited))
        #expect(f.matchedPrefixLength(RouteMatch(virtualHost: Int32(vh), route: 1, matcher: 0)) == -1)

        // The rendered changes of the first destination: the rewritten Host first, route then destination (names
        // as decoded: lowercase).
        let first = try #require(f.pick(edited, random: 0))
        let e = f.entries[first]
        func text(_ r: Range<Int>) -> String { String(decoding: f.bytes[r], as: UTF8.self) }
        #expect(text(e.requestLines) == "host: internal.api\r\nx-env: prod\r\nx-added: 1\r\nx-dest: d1\r\n")
        #expect(text(e.responseLines) == "x-served-by: tern\r\n")
        #expect(text(e.uri) == "/api/")
        #expect(e.editsRequest && e.editsResponse && !e.regex && !e.brokenRegex)
        for (name, dropped) in [("Host", true), ("x-secret", true), ("X-ENV", true), ("x-added", false),
                                ("x-dest", true), ("x-env2", false), ("x-en", false)] {
            #expect(drops(f, name, e.requestDrops) == dropped, "\(name)")
        }
        #expect(drops(f, "Server", e.responseDrops))
        #expect(!drops(f, "x-served", e.responseDrops))
        // The plain route changes nothing.
        let p = f.entries[try #require(f.pick(plain, random: 5))]
        #expect(!p.editsRequest && !p.editsResponse && p.uri.isEmpty)
    }
}
