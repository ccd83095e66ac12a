import TernConfig
import TernHTTP
import Testing

// AuthorizationPolicy as Istio evaluates it (AuthorizationTable.swift): decoding and its errors, scope and
// selectors, the CUSTOM → DENY → ALLOW order, the value forms, TCP ports, dry-run, fail-closed.

private let productpage = SecurityWorkload(namespace: "default", labels: ["app": "productpage", "version": "v1"],
                                           serviceAccount: "bookinfo-productpage")

private func table(_ yaml: String, workload: SecurityWorkload = productpage) throws -> (AuthorizationTable, [Diagnostic]) {
    let set = ConfigLoader.load(yaml: yaml, file: "f.yaml", namespace: "default")
    guard set.errors.isEmpty else {
        throw ConfigErrors(text: set.errors.map(\.description).joined(separator: "\n"))
    }
    return AuthorizationTable.compile(set.resources, workload: workload)
}

private struct ConfigErrors: Error { var text: String }

private func facts(principal: String = "", source: String = "10.0.0.7", port: UInt16 = 9080, sni: String = "") -> AuthorizationFacts {
    AuthorizationFacts(source: IPAddress(parsing: source), destination: IPAddress(parsing: "10.0.0.1"), destinationPort: port,
                       principal: Array(principal.utf8), serverName: Array(sni.utf8))
}

/// The decision for an HTTP request written as HTTP/1.1.
func decide(_ t: AuthorizationTable, _ request: String, _ f: AuthorizationFacts = AuthorizationFacts()) throws -> AuthorizationDecision {
    let bytes = Array(request.utf8)
    var parser = HTTP1Parser(kind: .request)
    #expect(try parser.parse(bytes.span) == .complete)
    let head = parser.head
    let view = RequestView(http1: head, bytes: bytes.span)
    var scratch: [UInt8] = []
    return t.evaluate(f, request: view, scratch: &scratch)
}

private func get(_ path: String, method: String = "GET", host: String = "productpage:9080", headers: [String] = []) -> String {
    "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n"
}

private func policy(_ name: String, ns: String = "default", _ spec: String, annotations: String = "") -> String {
    """
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata:
      name: \(name)
      namespace: \(ns)
    \(annotations)
    spec:
    \(spec.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n"))
    ---

    """
}

@Suite struct AuthorizationTests {
    @Test func noPolicyAllowsEverythingAndAnEmptySpecDeniesEverything() throws {
        let (none, _) = try table("# nothing\n")
        #expect(try decide(none, get("/")).allowed)
        #expect(none.evaluate(facts()).allowed)
        // `spec: {}` (and no spec at all): an ALLOW policy matching nothing.
        for yaml in [policy("deny-all", "{}"), "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all}\n"] {
            let (t, _) = try table(yaml)
            let d = try decide(t, get("/"))
            #expect(!d.allowed && d.policy == -1)
            #expect(!t.evaluate(facts()).allowed)
        }
        // `rules: [{}]`: a rule matching everything.
        let (all, _) = try table(policy("allow-all", "rules:\n- {}"))
        #expect(try decide(all, get("/anything")).allowed)
    }

    @Test func theSeedsPrincipalAndPathRules() throws {
        let (t, _) = try table(policy("productpage-viewer", """
            selector:
              matchLabels: {app: productpage}
            action: ALLOW
            rules:
            - from:
              - source:
                  principals: ["cluster.local/ns/default/sa/bookinfo-gateway"]
              to:
              - operation:
                  methods: ["GET"]
                  paths: ["/productpage", "/static/*", "/api/v1/products/{*}/reviews"]
            """))
        let gateway = facts(principal: "cluster.local/ns/default/sa/bookinfo-gateway")
        #expect(try decide(t, get("/productpage"), gateway).allowed)
        #expect(try decide(t, get("/static/css/a.css"), gateway).allowed)
        #expect(try decide(t, get("/api/v1/products/7/reviews"), gateway).allowed)
        #expect(try !decide(t, get("/api/v1/products/7/8/reviews"), gateway).allowed)
        #expect(try !decide(t, get("/api/v1/products//reviews"), gateway).allowed)
        #expect(try !decide(t, get("/productpage", method: "POST"), gateway).allowed)
        #expect(try !decide(t, get("/productpage"), facts(principal: "cluster.local/ns/default/sa/other")).allowed)
        #expect(try !decide(t, get("/productpage")).allowed)  // plaintext: no principal
        // The query is not part of the path.
        #expect(try decide(t, get("/productpage?u=1"), gateway).allowed)
        // Another workload: not selected, so no ALLOW policy applies to it.
        let (other, _) = try table(policy("productpage-viewer", "selector:\n  matchLabels: {app: productpage}\nrules: []"),
                                   workload: SecurityWorkload(namespace: "default", labels: ["app": "reviews"]))
        #expect(try decide(other, get("/")).allowed)
    }

    @Test func denyWinsOverAllowAndAuditChangesNothing() throws {
        let yaml = policy("allow-get", "rules:\n- to:\n  - operation: {methods: [GET, POST]}")
            + policy("deny-admin", "action: DENY\nrules:\n- to:\n  - operation: {paths: [\"/admin*\"]}")
            + policy("audit-post", "action: AUDIT\nrules:\n- to:\n  - operation: {methods: [POST]}")
        let (t, _) = try table(yaml)
        let ok = try decide(t, get("/a"))
        #expect(ok.allowed && t.policyNames[Int(ok.policy)] == "default/allow-get" && ok.audit == -1)
        let denied = try decide(t, get("/admin/users"))
        #expect(!denied.allowed && t.policyNames[Int(denied.policy)] == "default/deny-admin")
        let audited = try decide(t, get("/a", method: "POST"))
        #expect(audited.allowed && t.policyNames[Int(audited.audit)] == "default/audit-post")
        #expect(try !decide(t, get("/a", method: "DELETE")).allowed)
        #expect(t.envoyName(denied.policy) == "ns[default]-policy[deny-admin]-rule[0]")
    }

    @Test func scopeRootNamespaceNamespaceAndSelector() throws {
        let yaml = policy("mesh-deny", ns: "istio-system", "action: DENY\nrules:\n- to:\n  - operation: {paths: [/mesh]}")
            + policy("root-selects", ns: "istio-system", "selector:\n  matchLabels: {version: v1}\naction: DENY\nrules:\n- to:\n  - operation: {paths: [/v1]}")
            + policy("other-ns", ns: "shop", "action: DENY\nrules:\n- {}")
            + policy("ns-wide", "action: DENY\nrules:\n- to:\n  - operation: {paths: [/ns]}")
            + policy("not-me", "selector:\n  matchLabels: {app: reviews}\naction: DENY\nrules:\n- {}")
        let (t, _) = try table(yaml)
        #expect(t.policyNames == ["istio-system/mesh-deny", "istio-system/root-selects", "default/ns-wide"])
        for path in ["/mesh", "/v1", "/ns"] { #expect(try !decide(t, get(path)).allowed, "\(path)") }
        #expect(try decide(t, get("/other")).allowed)
    }

    @Test func valueFormsNotFieldsAndHosts() throws {
        let yaml = policy("p", """
            rules:
            - from:
              - source:
                  namespaces: ["prod*"]
                  notPrincipals: ["*/sa/blocked"]
              to:
              - operation:
                  hosts: ["*.example.com", "API.internal"]
                  notPaths: ["*.php"]
            """)
        let (t, _) = try table(yaml)
        let prod = facts(principal: "cluster.local/ns/prod-eu/sa/web")
        #expect(try decide(t, get("/x", host: "shop.example.com"), prod).allowed)
        #expect(try decide(t, get("/x", host: "api.internal:8080"), prod).allowed)  // case and port
        #expect(try !decide(t, get("/x", host: "example.org"), prod).allowed)
        #expect(try !decide(t, get("/index.php", host: "shop.example.com"), prod).allowed)
        #expect(try !decide(t, get("/x", host: "shop.example.com"), facts(principal: "cluster.local/ns/prod/sa/blocked")).allowed)
        #expect(try !decide(t, get("/x", host: "shop.example.com"), facts(principal: "cluster.local/ns/dev/sa/web")).allowed)
        // Trust domains: the part of the principal before its first "/".
        let (td, _) = try table(policy("p", "rules:\n- from:\n  - source: {trustDomains: [\"cluster.local\"], notTrustDomains: [\"bad*\"]}"))
        #expect(try decide(td, get("/"), prod).allowed)
        #expect(try !decide(td, get("/"), facts(principal: "other.local/ns/a/sa/b")).allowed)
        #expect(try !decide(td, get("/")).allowed)
        // Presence: any authenticated peer.
        let (any, _) = try table(policy("p", "rules:\n- from:\n  - source: {principals: [\"*\"]}"))
        #expect(try decide(any, get("/"), prod).allowed)
        #expect(try !decide(any, get("/")).allowed)
    }

    @Test func serviceAccountsIPBlocksAndConditions() throws {
        let yaml = policy("p", """
            rules:
            - from:
              - source:
                  serviceAccounts: ["frontend", "shop/cart"]
                  ipBlocks: ["10.0.0.0/16"]
              when:
              - key: request.headers[X-Tenant]
                values: ["acme", "beta*"]
              - key: destination.port
                notValues: ["9999"]
            """)
        let (t, _) = try table(yaml)
        let frontend = facts(principal: "cluster.local/ns/default/sa/frontend")
        #expect(try decide(t, get("/", headers: ["x-tenant: acme"]), frontend).allowed)
        #expect(try decide(t, get("/", headers: ["X-TENANT: beta-2"]), facts(principal: "td.example/ns/shop/sa/cart")).allowed)
        #expect(try !decide(t, get("/", headers: ["x-tenant: acme"]), facts(principal: "cluster.local/ns/shop/sa/frontend")).allowed)
        #expect(try !decide(t, get("/"), frontend).allowed)  // no header
        // A field that came twice is matched as its values joined with ",".
        #expect(try !decide(t, get("/", headers: ["x-tenant: acme", "x-tenant: other"]), frontend).allowed)
        let (joined, _) = try table(policy("p", "rules:\n- when:\n  - key: request.headers[x-tenant]\n    values: [\"acme,other\"]"))
        #expect(try decide(joined, get("/", headers: ["x-tenant: acme", "x-tenant: other"])).allowed)
        #expect(try !decide(t, get("/", headers: ["x-tenant: acme"]), facts(principal: "cluster.local/ns/default/sa/frontend", source: "10.1.0.1")).allowed)
        #expect(try !decide(t, get("/", headers: ["x-tenant: acme"]), facts(principal: "cluster.local/ns/default/sa/frontend", port: 9999)).allowed)
    }

    @Test func onATCPPortHTTPFieldsDropAllowRulesAndWidenDenyRules() throws {
        let yaml = policy("allow-get", "rules:\n- to:\n  - operation: {methods: [GET]}\n- from:\n  - source: {ipBlocks: [10.9.0.0/16]}")
            + policy("deny-post", "action: DENY\nrules:\n- to:\n  - operation: {methods: [POST], ports: [\"5432\"]}")
        let (t, _) = try table(yaml)
        // ALLOW: the methods rule is dropped on TCP; only the ipBlocks rule can allow.
        #expect(!t.evaluate(facts(port: 9080)).allowed)
        #expect(t.evaluate(facts(source: "10.9.1.1", port: 9080)).allowed)
        // DENY: `methods` ignored, so every connection to 5432 is denied.
        #expect(!t.evaluate(facts(source: "10.9.1.1", port: 5432)).allowed)
        // HTTP still reads them.
        #expect(try decide(t, get("/"), facts(port: 5432)).allowed)
        #expect(try !decide(t, get("/", method: "POST"), facts(source: "10.9.1.1", port: 5432)).allowed)
    }

    @Test func dryRunPoliciesAreReportedNeverEnforced() throws {
        let yaml = policy("dry-deny", "action: DENY\nrules:\n- to:\n  - operation: {paths: [/secret]}",
                          annotations: "  annotations: {istio.io/dry-run: \"true\"}")
        let (t, _) = try table(yaml)
        for bad in ["tRuE", "yes"] {
            #expect(diagnostics(policy("p", "action: DENY\nrules:\n- {}", annotations: "  annotations: {istio.io/dry-run: \"\(bad)\"}")).contains { $0.contains("must be true or false") })
        }
        #expect(diagnostics(policy("p", "action: AUDIT\nrules:\n- {}", annotations: "  annotations: {istio.io/dry-run: \"1\"}")).contains { $0.contains("only for actions ALLOW and DENY") })
        let d = try decide(t, get("/secret"))
        #expect(d.allowed && d.dryRunAllowed == false && t.policyNames[Int(d.dryRunPolicy)] == "default/dry-deny")
        let ok = try decide(t, get("/open"))
        #expect(ok.allowed && ok.dryRunAllowed == true)
    }

    @Test func customAndJWTPoliciesFailClosedWithAWarning() throws {
        let custom = policy("ext", "action: CUSTOM\nprovider: {name: opa}\nrules:\n- {}")
        let (t, warnings) = try table(custom)
        #expect(try !decide(t, get("/")).allowed)
        #expect(!t.evaluate(facts()).allowed)
        #expect(warnings.count == 1 && warnings[0].description.contains("failing closed"))
        let jwt = policy("jwt", "rules:\n- from:\n  - source: {requestPrincipals: [\"*\"]}")
        let (j, w) = try table(jwt)
        #expect(try !decide(j, get("/"), facts(principal: "cluster.local/ns/default/sa/x")).allowed)
        #expect(w.count == 1)
    }

    @Test func badPoliciesAreRejectedAtTheirLineAndField() {
        func errors(_ spec: String) -> [String] {
            diagnostics(policy("bad", spec)).filter { !$0.contains("warning: ") }
        }
        #expect(errors("action: DENY\nrules:\n- to:\n  - operation: {paths: [\"/a/{**}/{*}\"]}").first?.contains("spec.rules[0].to[0].operation.paths[0]") == true)
        #expect(errors("rules:\n- to:\n  - operation: {paths: [\"/a//{*}\", \"/{*}/foo/?abc\"]}").count == 2)
        #expect(errors("action: DENY").first?.contains("DENY action without rules") == true)
        #expect(errors("action: DENY\nrules: []").first?.contains("DENY action without rules") == true)
        #expect(errors("action: CUSTOM\nprovider: {name: x}\nrules:\n- from:\n  - source: {namespaces: [a]}").first?.contains("cannot use namespaces") == true)
        #expect(errors("action: CUSTOM\nprovider: {name: x}\nrules:\n- when:\n  - key: source.principal\n    values: [a]").first?.contains("cannot use source.principal") == true)
        #expect(errors("action: CUSTOM\nprovider: {name: \"\"}\nrules:\n- {}").first?.contains("provider.name must not be empty") == true)
        #expect(errors("rules:\n- from:\n  - source: {principals: []}").first?.contains("at least one field") == true)
        #expect(errors("rules:\n- when:\n  - key: source.ip\n    values: []").first?.contains("at least one of values") == true)
        #expect(errors("rules:\n- from:\n  - source: {trustDomains: [\"a/b\"]}").first?.contains("a trust domain has no") == true)
        #expect(errors("targetRef: {kind: Deployment, name: x}").first?.contains("kind must be Service") == true)
        #expect(errors("rules:\n- when:\n  - key: source.ipp\n    values: [a]").first?.contains("unknown attribute") == true)
        #expect(errors("rules:\n- when:\n  - key: source.ip").first?.contains("at least one of values or notValues") == true)
        #expect(errors("rules:\n- from:\n  - source: {ipBlocks: [\"10.0.0.0/33\"]}").first?.contains("invalid IP address or CIDR") == true)
        #expect(errors("rules:\n- to:\n  - operation: {ports: [\"65536\"]}").first?.contains("invalid port") == true)
        #expect(errors("rules:\n- to:\n  - operation: {ports: [\"0\"]}").isEmpty)
        #expect(errors("rules:\n- from:\n  - source: {serviceAccounts: [a], principals: [b]}").first?.contains("cannot be combined") == true)
        #expect(errors("action: CUSTOM\nrules:\n- {}").first?.contains("requires a provider") == true)
        #expect(errors("provider: {name: x}").first?.contains("only for action CUSTOM") == true)
        #expect(errors("action: MAYBE").first?.contains("unknown value") == true)
        #expect(errors("rules:\n- from:\n  - {}").first?.contains("source: required field missing") == true)
        #expect(errors("rules:\n- to:\n  - operation: {}").first?.contains("at least one field") == true)
        #expect(errors("rules:\n- from:\n  - source: {principal: [a]}").first?.contains("unknown field") == true)
        let line = errors("rules:\n- when:\n  - key: nope\n    values: [a]").first ?? ""
        #expect(line.hasPrefix("f.yaml:10: AuthorizationPolicy default/bad: spec.rules[0].when[0].key:"), "\(line)")
    }
}

@Suite struct PathPatternTests {
    @Test func templatesMatchWholeSegments() {
        func m(_ pattern: String, _ path: String) -> Bool { AuthorizationPathPattern(pattern).matches(Array(path.utf8).span) }
        #expect(m("/a/{*}/c", "/a/b/c"))
        #expect(!m("/a/{*}/c", "/a//c"))
        #expect(!m("/a/{*}/c", "/a/b/x/c"))
        #expect(m("/a/{**}", "/a/b/c/d"))
        #expect(m("/a/{**}", "/a/b"))
        #expect(m("/a/{**}", "/a/"))  // zero or more
        #expect(!m("/a/{**}", "/a"))
        // Literal segments may follow {**} (Istio's examples).
        #expect(m("/foo/{**}/", "/foo/bar/") && m("/foo/{**}/", "/foo//") && !m("/foo/{**}/", "/foo/bar"))
        #expect(m("/foo/{*}/bar/{**}", "/foo/buzz/bar/") && m("/foo/{*}/bar/{**}", "/foo/buzz/bar/baz"))
        #expect(m("/store/{**}/cart", "/store/a/b/cart") && !m("/store/{**}/cart", "/store/cart2"))
        #expect(m("/{*}", "/x"))
        #expect(!m("/{*}", "/x/"))
        #expect(m("*", "/x"))
        #expect(m("/api*", "/api/v1"))
        #expect(m("*.js", "/app.js"))
        #expect(AuthorizationPathPattern.problem("/a/{**}/b") == nil)
        #expect(AuthorizationPathPattern.problem("/a/{**}/{*}") != nil)
        #expect(AuthorizationPathPattern.problem("/a/b{*}") != nil)
        #expect(AuthorizationPathPattern.problem("/a/{*}/b/{**}") == nil)
    }
}

@Suite struct PeerAuthenticationTests {
    private func resolve(_ yaml: String, workload: SecurityWorkload = productpage) throws -> PeerAuthenticationPolicy {
        let set = ConfigLoader.load(yaml: yaml, file: "f.yaml", namespace: "default")
        guard set.errors.isEmpty else { throw ConfigErrors(text: set.errors.map(\.description).joined(separator: "\n")) }
        return PeerAuthenticationPolicy.resolve(set.resources, workload: workload)
    }

    private func pa(_ name: String, ns: String = "default", _ spec: String) -> String {
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: \(name), namespace: \(ns)}\nspec:\n"
            + spec.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n") + "\n---\n"
    }

    @Test func workloadOverNamespaceOverMeshUnsetInheritsAndNoneIsPermissive() throws {
        #expect(try resolve("# none\n") == .permissive)
        let mesh = pa("default", ns: "istio-system", "mtls: {mode: STRICT}")
        #expect(try resolve(mesh).mode == .STRICT)
        let ns = pa("ns", "mtls: {mode: PERMISSIVE}")
        #expect(try resolve(mesh + ns).mode == .PERMISSIVE)
        let unset = pa("unset", "selector:\n  matchLabels: {app: productpage}\nmtls: {mode: UNSET}")
        let r = try resolve(mesh + ns + unset)
        #expect(r.mode == .PERMISSIVE && r.sources == ["istio-system/default", "default/ns", "default/unset"])
        let own = pa("own", "selector:\n  matchLabels: {app: productpage}\nmtls: {mode: DISABLE}\nportLevelMtls:\n  8080: {mode: STRICT}\n  9090: {mode: UNSET}")
        let o = try resolve(mesh + own)
        #expect(o.mode == .DISABLE && o.mode(port: 8080) == .STRICT && o.mode(port: 9090) == .DISABLE)
        // The first of a scope stands in for the oldest; another workload's and other namespaces' do not apply;
        // selector policies in the root namespace are ignored.
        let later = pa("later", "mtls: {mode: DISABLE}")
        let other = pa("other", ns: "shop", "mtls: {mode: DISABLE}")
        let rootSelector = pa("root-sel", ns: "istio-system", "selector:\n  matchLabels: {app: productpage}\nmtls: {mode: DISABLE}")
        #expect(try resolve(mesh + ns + later + other + rootSelector).mode == .PERMISSIVE)
        #expect(try resolve(mesh + own, workload: SecurityWorkload(namespace: "default", labels: ["app": "reviews"])).mode == .STRICT)
    }

    @Test func badPeerAuthenticationsAreRejected() {
        let noSelector = diagnostics(pa("p", "portLevelMtls:\n  8080: {mode: STRICT}"))
        #expect(noSelector.contains { $0.contains("portLevelMtls requires a selector") })
        let badMode = diagnostics(pa("p", "mtls: {mode: strict}"))
        #expect(badMode.contains { $0.contains("spec.mtls.mode: unknown value") })
        let badPort = diagnostics(pa("p", "selector:\n  matchLabels: {app: a}\nportLevelMtls:\n  0: {mode: STRICT}"))
        #expect(badPort.contains { $0.contains("port must be a number between 1 and 65535") })
    }
}

@Suite struct AuthorizationIdentityTests {
    private func ap(_ spec: String) throws -> AuthorizationTable {
        let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: default}\nspec:\n"
            + spec.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n") + "\n"
        let set = ConfigLoader.load(yaml: yaml, file: "f.yaml", namespace: "default")
        #expect(set.errors.isEmpty, "\(set.errors)")
        return AuthorizationTable.compile(set.resources, workload: SecurityWorkload(namespace: "default")).0
    }

    private func allowed(_ t: AuthorizationTable, _ principal: String, _ request: String = "GET / HTTP/1.1\r\nHost: app\r\n\r\n") -> Bool {
        (try? decide(t, request, AuthorizationFacts(principal: Array(principal.utf8))))?.allowed ?? false
    }

    @Test func namespacesAndServiceAccountsMatchAsIstiosRegexesDo() throws {
        // Istio: namespaces → `.*/ns/<v>/.*` (any "/ns/", "/" required after it, `*` crossing "/").
        let deny = try ap("action: DENY\nrules:\n- from:\n  - source: {namespaces: [blocked]}")
        #expect(!allowed(deny, "cluster.local/ns/prod/sa/x/ns/blocked/sa/y"))
        #expect(allowed(deny, "cluster.local/ns/blockedx/sa/y"))
        let allow = try ap("rules:\n- from:\n  - source: {namespaces: [prod]}")
        #expect(!allowed(allow, "cluster.local/ns/prod"))  // no "/" after the namespace
        #expect(allowed(allow, "cluster.local/ns/prod/sa/a"))
        let glob = try ap("action: DENY\nrules:\n- from:\n  - source: {namespaces: [\"*-dev*\"]}")
        #expect(!allowed(glob, "cluster.local/ns/team-dev-2/sa/a"))
        #expect(allowed(glob, "cluster.local/ns/team/sa/a"))
        // serviceAccounts → `.+/ns/NS/(.+/|)sa/SA(/.+)?`.
        let sa = try ap("action: DENY\nrules:\n- from:\n  - source: {serviceAccounts: [prod/admin]}")
        #expect(!allowed(sa, "cluster.local/ns/prod/sa/admin"))
        #expect(!allowed(sa, "cluster.local/ns/prod/sa/admin/v2"))
        #expect(!allowed(sa, "td/x/ns/prod/extra/sa/admin"))
        #expect(allowed(sa, "cluster.local/ns/prod/sa/administrator"))
        #expect(allowed(sa, "cluster.local/ns/prod/sa/admin/"))
        #expect(allowed(sa, "/ns/prod/sa/admin"))  // ".+" before "/ns/"
        let cond = try ap("action: DENY\nrules:\n- when:\n  - key: source.namespace\n    values: [\"pr*\"]")
        #expect(!allowed(cond, "a/ns/prod/sa/b") && allowed(cond, "a/ns/dev/sa/b"))
    }

    @Test func headerPresenceHostsFromTheAuthorityAndTheRootPath() throws {
        // `*` on a header is presence: an empty value is there.
        let present = try ap("action: DENY\nrules:\n- when:\n  - key: request.headers[x-internal]\n    values: [\"*\"]")
        #expect(!allowed(present, "", "GET / HTTP/1.1\r\nHost: app\r\nx-internal:\r\n\r\n"))
        #expect(allowed(present, ""))
        // Hosts: the authority the request goes to (an absolute-form target's), not a Host field it overrides.
        let hosts = try ap("action: DENY\nrules:\n- to:\n  - operation: {hosts: [admin.internal]}")
        #expect(!allowed(hosts, "", "GET http://admin.internal/ HTTP/1.1\r\nHost: public\r\n\r\n"))
        #expect(allowed(hosts, "", "GET http://public/ HTTP/1.1\r\nHost: admin.internal\r\n\r\n"))
        // An absolute-form target without a path is "/", as it is forwarded.
        let root = try ap("action: DENY\nrules:\n- to:\n  - operation: {paths: [\"/\"]}")
        #expect(!allowed(root, "", "GET http://app?x HTTP/1.1\r\nHost: app\r\n\r\n"))
        // Attributes that never have a value: their notValues hold.
        let never = try ap("rules:\n- when:\n  - key: experimental.envoy.filters.a.b[c]\n    notValues: [x]")
        #expect(allowed(never, ""))
    }
}

@Suite struct AuthorizationIndexTests {
    @Test func policiesIndexedByPrincipalDecideAsInReadingOrder() throws {
        // Policies whose every rule names exact principals are looked at only for those peers; the first match in
        // reading order still decides, whichever list it sits in.
        let yaml = """
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: a, namespace: default}
            spec:
              rules:
              - from:
                - source: {principals: [cluster.local/ns/default/sa/x, cluster.local/ns/default/sa/y]}
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: b, namespace: default}
            spec:
              rules:
              - to:
                - operation: {methods: [GET]}
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: c, namespace: default}
            spec:
              action: DENY
              rules:
              - from:
                - source: {principals: [cluster.local/ns/default/sa/bad]}
                to:
                - operation: {paths: ["/secret"]}
            """
        let set = ConfigLoader.load(yaml: yaml, file: "f.yaml", namespace: "default")
        #expect(set.errors.isEmpty)
        let t = AuthorizationTable.compile(set.resources, workload: SecurityWorkload(namespace: "default")).0
        func decide(_ principal: String, _ request: String) -> AuthorizationDecision {
            // (The request heads here parse: `try!` names a broken test at once.)
            try! TernConfigTests.decide(t, request, AuthorizationFacts(principal: Array(principal.utf8)))
        }
        let get = "GET /secret HTTP/1.1\r\nHost: h\r\n\r\n", post = "POST /secret HTTP/1.1\r\nHost: h\r\ncontent-length: 0\r\n\r\n"
        #expect(decide("cluster.local/ns/default/sa/y", get).policy == 0)  // a, before b
        #expect(decide("cluster.local/ns/default/sa/z", get).policy == 1)  // b
        #expect(decide("", get).policy == 1)
        #expect(decide("cluster.local/ns/default/sa/x", post).allowed && decide("cluster.local/ns/default/sa/x", post).policy == 0)
        #expect(!decide("cluster.local/ns/default/sa/z", post).allowed)
        let bad = decide("cluster.local/ns/default/sa/bad", get)
        #expect(!bad.allowed && bad.policy == 2)
        #expect(decide("cluster.local/ns/default/sa/bad", "GET /open HTTP/1.1\r\nHost: h\r\n\r\n").allowed)
    }
}
