import TernConfig
import TernTestSupport
import Testing

/// A redirect route's Location as an Istio user gets it from Envoy (Istio's ApplyRedirect, then Envoy's newUri):
/// scheme, authority, port, derivePort, uri and prefixRewrite, alone and combined.
@Suite struct RedirectTests {
    /// The Location for a request to a VirtualService on `*` whose one route has `match` (if any) and
    /// `redirect`; `port` is the port the request was addressed to.
    func location(_ redirect: String, match: String? = nil, host: String = "a.example", port: UInt16 = 80,
                  headers: [String] = [], _ target: String) throws -> String {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n"
            + "  hosts: [\"*\"]\n  http:\n  - " + (match.map { "match: [\($0)]\n    " } ?? "") + "redirect: \(redirect)\n"
        let table = try compile(yaml)
        let m = try select(table, get(target, host: host, headers: headers), port: port)
        let route = try #require(table.route(m))
        guard case .redirect(let r) = route.action else {
            Issue.record("not a redirect route")
            return ""
        }
        return r.location(host: host, target: target, requestPort: port, matchedPrefix: route.matchedPrefixLength(m))
    }

    @Test func theRequestFillsWhatTheRouteLeavesOut() throws {
        #expect(try location("{authority: b.example}", "/p?q=1") == "http://b.example/p?q=1")
        #expect(try location("{scheme: https}", host: "a.example", "/p") == "https://a.example/p")
        // An absolute-form target: its path and query, not the whole URL.
        #expect(try location("{scheme: https}", "http://a.example/p?q=1") == "https://a.example/p?q=1")
    }

    @Test func uriReplacesThePathAndKeepsTheQueryUnlessItHasItsOwn() throws {
        #expect(try location("{uri: /new}", "/old/page?x=1") == "http://a.example/new?x=1")
        #expect(try location("{uri: \"/new?y=2\"}", "/old?x=1") == "http://a.example/new?y=2")
        #expect(try location("{uri: new}", "/old") == "http://a.example/new")
        #expect(try location("{uri: /new}", match: "{uri: {prefix: /old}}", "/old/deeper") == "http://a.example/new")
    }

    @Test func prefixRewriteReplacesTheMatchedPrefix() throws {
        // Istio's documented example: example.com/foo/bar → foo.example.com/bar.
        #expect(try location("{authority: foo.example.com, prefixRewrite: /}", match: "{uri: {prefix: /foo/}}",
                             "/foo/bar?x=1") == "http://foo.example.com/bar?x=1")
        #expect(try location("{prefixRewrite: /bar}", match: "{uri: {prefix: /foo}}", "/foo/baz") == "http://a.example/bar/baz")
        #expect(try location("{prefixRewrite: /}", match: "{uri: {prefix: /foo}}", "/foo/baz") == "http://a.example//baz")
        #expect(try location("{prefixRewrite: /manual/}", match: "{uri: {prefix: /Docs/}, ignoreUriCase: true}",
                             "/DOCS/a") == "http://a.example/manual/a")
        #expect(try location("{prefixRewrite: x/}", match: "{uri: {prefix: /foo/}}", "/foo/bar") == "http://a.example/x/bar")
        // Exact and regex matches: the whole path (the query stays); no uri match: Istio's catch-all prefix "/".
        #expect(try location("{prefixRewrite: /new}", match: "{uri: {exact: /old}}", "/old?q") == "http://a.example/new?q")
        #expect(try location("{prefixRewrite: /new}", match: "{uri: {regex: \"/o.d\"}}", "/old") == "http://a.example/new")
        #expect(try location("{prefixRewrite: /legacy/}", match: "{headers: {x-old: {}}}", headers: ["X-Old: 1"], "/a/b?c")
                == "http://a.example/legacy/a/b?c")
        #expect(try location("{prefixRewrite: /legacy/}", "/a/b") == "http://a.example/legacy/a/b")
    }

    @Test func anExplicitPortReplacesTheHostsAndIsLeftOutWhenItIsTheSchemesDefault() throws {
        #expect(try location("{scheme: https, port: 8443}", host: "a.example:8080", port: 8080, "/p")
                == "https://a.example:8443/p")
        #expect(try location("{scheme: https, port: 443}", host: "a.example:80", "/p") == "https://a.example/p")
        #expect(try location("{port: 80}", host: "a.example", "/p") == "http://a.example/p")
        #expect(try location("{port: 9000}", host: "[::1]:8080", port: 8080, "/p") == "http://[::1]:9000/p")
        #expect(try location("{authority: b.example, port: 8443}", host: "a.example:8080", port: 8080, "/p")
                == "http://b.example:8443/p")
    }

    @Test func derivePortFromRequestPortUsesThePortTheRequestWasAddressedTo() throws {
        let r = "{derivePort: FROM_REQUEST_PORT}"
        #expect(try location(r, host: "a.example:8080", port: 8080, "/p") == "http://a.example:8080/p")
        #expect(try location(r, host: "a.example", "/p") == "http://a.example/p")  // 80 is http's default
        #expect(try location("{scheme: https, derivePort: FROM_REQUEST_PORT}", host: "a.example", "/p")
                == "https://a.example:80/p")
        #expect(try location("{scheme: https, derivePort: FROM_REQUEST_PORT}", host: "a.example:8443", port: 8443, "/p")
                == "https://a.example:8443/p")
        #expect(try location("{authority: b.example, derivePort: FROM_REQUEST_PORT}", host: "a.example:8080", port: 8080,
                             "/p") == "http://b.example:8080/p")
        #expect(try location(r, host: "[::1]:8080", port: 8080, "/p") == "http://[::1]:8080/p")
    }

    @Test func derivePortFromProtocolDefaultWritesNoPortAndKeepsANonDefaultHostPortAsEnvoyDoes() throws {
        let r = "{scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}"
        #expect(try location(r, host: "a.example", "/p?q") == "https://a.example/p?q")
        #expect(try location(r, host: "a.example:80", "/p") == "https://a.example/p")  // http's default, scheme changed
        // Envoy drops the Host's port only when it is the default of the request's scheme.
        #expect(try location(r, host: "a.example:8080", port: 8080, "/p") == "https://a.example:8080/p")
        #expect(try location("{derivePort: FROM_PROTOCOL_DEFAULT}", host: "a.example:8080", port: 8080, "/p")
                == "http://a.example:8080/p")
        #expect(try location("{authority: b.example, derivePort: FROM_PROTOCOL_DEFAULT}", host: "a.example:8080",
                             port: 8080, "/p") == "http://b.example/p")
    }
}
