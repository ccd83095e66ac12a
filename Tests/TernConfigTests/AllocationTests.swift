import TernConfig
import TernHTTP
import TernTestSupport
import Testing

/// The request path's half of the table allocates nothing: select, weighted choice (the model's and the flat
/// `Forwarding` the proxy reads), hash keys, uriRegexRewrite
/// and a redirect's Location (the proxy writes their pieces into a pooled buffer; here, into reserved array
/// capacity). The balancers that then pick an endpoint are the engine's: TernProxyTests'
/// LoadBalancerAllocationTests counts them on the same workload (`RouteSelectionWorkload`).
/// Counted under the malloc counter (Tools/scripts/test.sh: `TERN_REQUIRE_MALLOC_COUNTER=1
/// LD_PRELOAD=count_malloc.so swift test --filter AllocationTests`, where a missing counter fails the test);
/// a plain `swift test` only checks the results (`MallocCounter`).
@Suite struct AllocationTests {
    @Test func routeSelectionAllocatesNothing() throws {
        let counter = try MallocCounter.load()
        let table = try RouteSelectionWorkload.table()
        let requests = RouteSelectionWorkload.requests
        let heads = requests.map { HTTP1ParserBox($0).head }
        let hosts = zip(requests, heads).map { Array($0.0[$0.1.host!]) }
        let source: [UInt8] = [10, 0, 0, 1]
        var found = 0
        var keys = 0
        let rewriteTarget = Array("/items/42/parts/7?q=/a/1".utf8)
        var rewritten: [UInt8] = []
        rewritten.reserveCapacity(256)
        var rewrites = 0
        var flat = 0
        var modelled = 0
        var location: [UInt8] = []
        location.reserveCapacity(256)
        let redirectTable = try compile("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [\"*\"]\n  http:\n  - match: [{uri: {prefix: /cart/}}]\n    redirect: {scheme: https, derivePort: FROM_REQUEST_PORT, prefixRewrite: /shop/}\n")
        guard case .redirect(let redirect)? = redirectTable.virtualHosts.first?.routes.first?.action else {
            Issue.record("no redirect route")
            return
        }

        func once(_ random: UInt64) {
            for i in 0..<requests.count {
                let bytes = requests[i]
                let host = hosts[i]
                let view = RequestView(http1: heads[i], bytes: bytes.span)
                let m = table.select(host: host.span, port: 80, request: view)
                if m.found { found += 1 }
                if i == 1 {
                    // "GET /cart/items?id=1" with Host cart.shop.svc.cluster.local:80
                    location.removeAll(keepingCapacity: true)
                    redirect.writeLocation(host: bytes.span.extracting(heads[i].host!), target: bytes.span.extracting(heads[i].target),
                                           requestPort: 80, matchedPrefix: 6) { piece in
                        for k in 0..<piece.count { location.append(piece[k]) }
                    }
                }
                // The flat forwarding facts the proxy reads per request agree with the model and allocate nothing.
                if let e = table.forwarding.pick(m, random: random), table.forwarding.cluster(e, port: 80) != nil {
                    flat += 1
                    if table.forwarding.drops(bytes.span.extracting(0..<4), table.forwarding.entries[e].requestDrops) { flat += 1 }
                }
                if let d = table.pickDestination(m, random: random), let c = d.cluster(port: 80) {
                    modelled += 1
                    if table.hashKey(cluster: c, request: view, sourceAddress: source.span) != nil { keys += 1 }
                    if let rewrite = table.route(m)?.uriRegexRewrite {
                        rewritten.removeAll(keepingCapacity: true)
                        rewrites += rewrite.apply(target: rewriteTarget.span, reactor: 0) { piece in
                            for k in 0..<piece.count { rewritten.append(piece[k]) }
                        }
                    }
                }
            }
        }
        once(1)  // RE2 builds each regex's DFA, and its states, as its first matches meet them
        let before = counter?.count()
        var random: UInt64 = 0x9e37_79b9
        for _ in 0..<2_000 {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            once(random)
        }
        let after = counter?.count()
        #expect(found == 2_001 * 5)
        #expect(flat == modelled && flat > 0)
        // No route here goes to the consistent-hash subset x: every key is nil, the round-robin clusters' early
        // return (HashKeyTests checks keys that exist; they are not counted).
        #expect(keys == 0)
        #expect(rewrites == 2_001 * 2)  // the v42 request takes the rewrite route: two matches each time
        #expect(String(decoding: rewritten, as: UTF8.self) == "/42/items//items/42/7/parts//parts/7?q=/a/1")
        #expect(String(decoding: location, as: UTF8.self) == "https://cart.shop.svc.cluster.local:80/shop/items?id=1")
        if let before, let after {
            #expect(after - before == 0, "\(after - before) allocations in 12,000 selections")
        }
    }
}

/// AuthorizationPolicy evaluation (an inbound side's per-request decision) allocates nothing: 100 ALLOW policies
/// with distinct principals and paths, only the last matching, beside a DENY with a header condition (a field that
/// came twice is joined in the kept scratch array).
@Suite struct AuthorizationAllocationTests {
    @Test func policyEvaluationAllocatesNothing() throws {
        let counter = try MallocCounter.load()
        var yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-evil}\nspec:\n  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-evil]\n      values: [\"1\", \"yes,*\"]\n---\n"
        for i in 0..<100 {
            yaml += "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p\(i)}\nspec:\n  rules:\n  - from:\n    - source: {principals: [\"cluster.local/ns/default/sa/sa\(i)\"], ipBlocks: [10.0.0.0/8]}\n    to:\n    - operation: {methods: [GET], paths: [\"/api/v\(i)/*\", \"/items/{*}/parts\"]}\n---\n"
        }
        let set = ConfigLoader.load(yaml: yaml, namespace: "default")
        #expect(set.errors.isEmpty)
        let (table, _) = AuthorizationTable.compile(set.resources, workload: SecurityWorkload(namespace: "default"))
        let request = Array("GET /api/v99/orders?x=1 HTTP/1.1\r\nHost: backend\r\nx-evil: no\r\nx-evil: yes\r\n\r\n".utf8)
        let head = HTTP1ParserBox(request).head
        let facts = AuthorizationFacts(source: IPAddress(parsing: "10.1.2.3"), destinationPort: 8080,
                                       principal: Array("cluster.local/ns/default/sa/sa99".utf8))
        var scratch: [UInt8] = []
        scratch.reserveCapacity(256)
        var allowed = 0
        func once() {
            let d = table.evaluate(facts, request: RequestView(http1: head, bytes: request.span), scratch: &scratch)
            if d.allowed && d.policy == 100 { allowed += 1 }
        }
        once()
        let before = counter?.count()
        for _ in 0..<2_000 { once() }
        let after = counter?.count()
        #expect(allowed == 2_001)
        if let before, let after {
            #expect(after - before == 0, "\(after - before) allocations in 2,000 decisions")
        }
    }
}
