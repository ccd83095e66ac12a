import TernConfig
import TernTestSupport
import Testing

/// A route's `corsPolicy` compiled into the flat facts the proxy reads (`Forwarding.cors`), as Istio translates it for
/// Envoy's CORS filter, and checked as Istio's validation checks it.
@Suite struct CORSTests {
    static func mesh(_ policies: [String]) -> String {
        var yaml = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: web}
            spec:
              hosts: [web]
              ports: [{number: 80, name: http, protocol: HTTP}]
              resolution: STATIC
              endpoints: [{address: 10.0.0.1}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: web}
            spec:
              hosts: [web]
              http:

            """
        for (i, p) in policies.enumerated() {
            yaml += "  - match: [{uri: {prefix: /\(i)}}]\n    route: [{destination: {host: web}}]\n"
            if !p.isEmpty { yaml += "    corsPolicy: \(p)\n" }
        }
        return yaml
    }

    /// The facts of route `route` of the `web` host, and the table they belong to.
    static func facts(_ table: RouteTable, route: Int) throws -> CORSFacts? {
        let vh = try #require(table.virtualHosts.firstIndex { $0.name.hasPrefix("web") })
        let e = try #require(table.forwarding.pick(RouteMatch(virtualHost: Int32(vh), route: Int32(route)), random: 0))
        let i = table.forwarding.entries[e].cors
        return i < 0 ? nil : table.forwarding.cors[Int(i)]
    }

    static func drops(_ f: Forwarding, _ name: String, _ which: Range<Int>) -> Bool {
        let bytes = Array(name.utf8)
        return f.drops(bytes.span, which)
    }

    static func allows(_ f: Forwarding, _ policy: Int, _ origin: String) -> Bool {
        let bytes = Array(origin.utf8)
        return f.allowsOrigin(policy, bytes.span, reactor: 0)
    }

    static func text(_ table: RouteTable, _ r: Range<Int>) -> String {
        String(decoding: table.forwarding.bytes[r], as: UTF8.self)
    }

    static func allows(_ table: RouteTable, route: Int, _ origin: String) throws -> Bool {
        let vh = try #require(table.virtualHosts.firstIndex { $0.name.hasPrefix("web") })
        let e = try #require(table.forwarding.pick(RouteMatch(virtualHost: Int32(vh), route: Int32(route)), random: 0))
        let bytes = Array(origin.utf8)
        return table.forwarding.allowsOrigin(Int(table.forwarding.entries[e].cors), bytes.span, reactor: 0)
    }

    @Test func istiosDocumentedExampleBecomesWhatIstioHandsEnvoy() throws {
        // The CorsPolicy example of Istio's VirtualService reference, as written (Tests/Fixtures/config), with a
        // ServiceEntry and DestinationRule for its host and subset.
        let table = try compile("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: ratings}
            spec:
              hosts: [ratings.prod.svc.cluster.local]
              ports: [{number: 80, name: http, protocol: HTTP}]
              resolution: STATIC
              endpoints: [{address: 10.0.0.1, labels: {version: v1}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: ratings}
            spec:
              host: ratings.prod.svc.cluster.local
              subsets: [{name: v1, labels: {version: v1}}]
            ---

            """ + configFixture("istio-cors-example.yaml"))
        let f = table.forwarding
        #expect(f.cors.count == 1)
        let p = f.cors[0]
        #expect(Self.text(table, p.allowMethods) == "POST,GET" && Self.text(table, p.allowHeaders) == "X-Foo-Bar")
        #expect(Self.text(table, p.maxAge) == "86400" && p.exposeHeaders.isEmpty)
        #expect(!p.allowCredentials && p.forwardsUnmatchedPreflights && !p.anyOrigin && !p.echoesMethod && !p.echoesHeaders)
        #expect(Self.allows(f, 0, "https://example.com") && !Self.allows(f, 0, "http://example.com"))
    }

    @Test func originsMatchExactlyByPrefixOrByWholeRegexCaseSensitively() throws {
        let table = try compile(Self.mesh([
            #"{allowOrigins: [{exact: "https://a.example"}, {prefix: "https://shop."}, {regex: "https://[a-z]+\\.example:(80|443)"}]}"#,
        ]))
        for (origin, allowed) in [
            ("https://a.example", true), ("https://A.example", false), ("https://a.example/", false),
            ("https://shop.", true), ("https://shop.evil.com", true), ("http://shop.example", false),
            ("https://b.example:443", true), ("https://b.example:4430", false), ("xhttps://b.example:80", false),
            ("null", false), ("*", false), ("https://a.example,https://b.example", false),
        ] {
            #expect(try Self.allows(table, route: 0, origin) == allowed, "\(origin)")
        }
        #expect(try Self.facts(table, route: 0)?.anyOrigin == false)
    }

    @Test func aMatcherThatAcceptsTheStringStarAllowsEveryOrigin() throws {
        // Envoy's filter asks each matcher about "*" before the origin: exact "*", a regex that matches "*" and the
        // prefix "*" allow everything (so does the deprecated allowOrigin "*"); another prefix does not.
        let table = try compile(Self.mesh([
            #"{allowOrigins: [{exact: "*"}]}"#, #"{allowOrigins: [{regex: ".*"}]}"#, #"{allowOrigins: [{prefix: "*"}]}"#,
            #"{allowOrigins: [{prefix: "https://"}]}"#, #"{allowOrigin: ["*"]}"#,
        ]))
        for route in [0, 1, 2, 4] {
            #expect(try Self.facts(table, route: route)?.anyOrigin == true, "route \(route)")
            #expect(try Self.allows(table, route: route, "null") && Self.allows(table, route: route, "http://x:1"))
        }
        #expect(try Self.facts(table, route: 3)?.anyOrigin == false)
        #expect(try !Self.allows(table, route: 3, "null"))
    }

    @Test func listsJoinWithoutSpacesAndAStarAloneEchoesTheRequest() throws {
        let table = try compile(Self.mesh([
            #"{allowOrigins: [{exact: a}], allowMethods: ["*"], allowHeaders: ["*"], exposeHeaders: [x-a, X-B], maxAge: 90s, allowCredentials: true, unmatchedPreflights: IGNORE}"#,
            #"{allowOrigins: [{exact: a}], allowMethods: [GET, "*"], allowHeaders: [x-y, "*"], unmatchedPreflights: FORWARD}"#,
            "",
        ]))
        let star = try #require(try Self.facts(table, route: 0))
        #expect(star.echoesMethod && star.echoesHeaders && star.allowCredentials && !star.forwardsUnmatchedPreflights)
        #expect(Self.text(table, star.exposeHeaders) == "x-a,X-B" && Self.text(table, star.maxAge) == "90")
        let listed = try #require(try Self.facts(table, route: 1))
        #expect(!listed.echoesMethod && !listed.echoesHeaders && listed.forwardsUnmatchedPreflights)
        #expect(Self.text(table, listed.allowMethods) == "GET,*" && Self.text(table, listed.allowHeaders) == "x-y,*")
        #expect(listed.maxAge.isEmpty && listed.exposeHeaders.isEmpty && !listed.allowCredentials)
        #expect(try Self.facts(table, route: 2) == nil)
    }

    @Test func theResponseLosesTheUpstreamsOwnCORSFieldsThePolicySets() throws {
        let table = try compile(Self.mesh([
            #"{allowOrigins: [{exact: a}], allowCredentials: true, exposeHeaders: [x-a]}"#,
            #"{allowOrigins: [{exact: a}], allowCredentials: false}"#,
        ]))
        let vh = try #require(table.virtualHosts.firstIndex { $0.name.hasPrefix("web") })
        let f = table.forwarding
        func dropped(_ route: Int) throws -> [String] {
            let e = try #require(f.pick(RouteMatch(virtualHost: Int32(vh), route: Int32(route)), random: 0))
            return ["Access-Control-Allow-Origin", "access-control-allow-credentials", "access-control-expose-headers",
                    "access-control-max-age", "server"].filter { Self.drops(f, $0, f.entries[e].corsResponseDrops) }
        }
        #expect(try dropped(0) == ["Access-Control-Allow-Origin", "access-control-allow-credentials", "access-control-expose-headers"])
        #expect(try dropped(1) == ["Access-Control-Allow-Origin"])
    }

    @Test func aRoutesOwnLinesForTheFieldsThePolicySetsAreLeftOutForAnAllowedOrigin() throws {
        let table = try compile(Self.mesh([""]) + """
              - headers:
                  response:
                    set: {access-control-allow-origin: "https://route.example", access-control-max-age: "5"}
                    add: {x-a: "1", access-control-expose-headers: x-b}
                corsPolicy: {allowOrigins: [{exact: a}], exposeHeaders: [x-c]}
                route: [{destination: {host: web}}]

            """)
        let f = table.forwarding
        let e = try #require(f.entries.first { $0.cors >= 0 })
        let all = Self.text(table, e.responseLines), kept = Self.text(table, e.corsResponseLines)
        #expect(all == "access-control-max-age: 5\r\nx-a: 1\r\naccess-control-allow-origin: https://route.example\r\naccess-control-expose-headers: x-b\r\n")
        #expect(kept == "access-control-max-age: 5\r\nx-a: 1\r\n")
        let plain = try #require(f.entries.first { $0.cors < 0 })
        #expect(plain.corsResponseLines == plain.responseLines)
    }

    @Test func everyDestinationOfARouteSharesItsPolicyAndTheRouteHeadersStayItsOwn() throws {
        let table = try compile(Self.mesh([""]) + """
              - headers: {response: {remove: [server]}}
                corsPolicy: {allowOrigins: [{exact: a}]}
                route:
                - {destination: {host: web}, weight: 50}
                - {destination: {host: web}, weight: 50}

            """)
        let f = table.forwarding
        let withPolicy = f.entries.filter { $0.cors >= 0 }
        #expect(withPolicy.count == 2 && Set(withPolicy.map(\.cors)).count == 1)
        for e in withPolicy {
            #expect(Self.drops(f, "server", e.responseDrops))
            #expect(!Self.drops(f, "access-control-allow-origin", e.responseDrops))
            #expect(Self.drops(f, "access-control-allow-origin", e.corsResponseDrops))
            #expect(Self.drops(f, "server", e.corsResponseDrops))
        }
        #expect(f.entries.filter { $0.cors < 0 }.allSatisfy { $0.corsResponseDrops.isEmpty })
    }

    @Test func allowOriginsIsReadBeforeTheDeprecatedAllowOrigin() throws {
        let yaml = Self.mesh([#"{allowOrigin: ["https://old.example"]}"#,
                              #"{allowOrigins: [{exact: "https://new.example"}], allowOrigin: ["https://old.example"]}"#])
        let table = try compile(yaml)
        #expect(try Self.allows(table, route: 0, "https://old.example"))
        #expect(try Self.allows(table, route: 1, "https://new.example") && !Self.allows(table, route: 1, "https://old.example"))
        #expect(diagnostics(yaml) == [
            "f.yaml:18: warning: VirtualService default/web: spec.http[0].corsPolicy.allowOrigin: allowOrigin is deprecated; use allowOrigins",
            "f.yaml:21: warning: VirtualService default/web: spec.http[1].corsPolicy.allowOrigin: allowOrigin is deprecated and ignored: allowOrigins is set",
        ])
    }

    @Test func istiosValidationRulesApply() {
        let bad = Self.mesh([
            #"{allowOrigins: [{exact: ""}, {prefix: ""}, {regex: "("}, {}]}"#,
            #"{allowMethods: [GET, get, PURGE, "*"], allowHeaders: ["x y", "*", ""], exposeHeaders: ["x:y"]}"#,
            #"{maxAge: 1.5s}"#, #"{maxAge: 500ms}"#, #"{maxAge: 0s}"#, #"{unmatchedPreflights: DROP}"#,
            #"{allowCredentials: yes please}"#,
        ])
        let got = diagnostics(bad)
        for expected in [
            "f.yaml:18: VirtualService default/web: spec.http[0].corsPolicy.allowOrigins[0]: '' is not a valid match type for CORS allow origins",
            "f.yaml:18: VirtualService default/web: spec.http[0].corsPolicy.allowOrigins[1].prefix: prefix must not be empty",
            "f.yaml:18: VirtualService default/web: spec.http[0].corsPolicy.allowOrigins[3]: needs one of exact, prefix or regex",
            "f.yaml:21: VirtualService default/web: spec.http[1].corsPolicy.allowMethods: \"get\" is not a supported HTTP method",
            "f.yaml:21: VirtualService default/web: spec.http[1].corsPolicy.allowMethods: \"PURGE\" is not a supported HTTP method",
            "f.yaml:21: VirtualService default/web: spec.http[1].corsPolicy.allowHeaders: header name x y is not a valid header name",
            "f.yaml:21: VirtualService default/web: spec.http[1].corsPolicy.allowHeaders: header name cannot be empty",
            "f.yaml:21: VirtualService default/web: spec.http[1].corsPolicy.exposeHeaders: header name x:y is not a valid header name",
            "f.yaml:24: VirtualService default/web: spec.http[2].corsPolicy.maxAge: max_age duration is accurate only to seconds precision",
            "f.yaml:27: VirtualService default/web: spec.http[3].corsPolicy.maxAge: max_age duration is accurate only to seconds precision",
            "f.yaml:30: VirtualService default/web: spec.http[4].corsPolicy.maxAge: must be at least 1ms, got 0s",
            "f.yaml:33: VirtualService default/web: spec.http[5].corsPolicy.unmatchedPreflights: must be FORWARD or IGNORE, got \"DROP\"",
        ] {
            #expect(got.contains(expected), "\(expected)\nin \(got)")
        }
        #expect(got.contains { $0.hasPrefix("f.yaml:18: VirtualService default/web: spec.http[0].corsPolicy.allowOrigins[2].regex: invalid regex") })
        #expect(got.contains { $0.hasPrefix("f.yaml:36: VirtualService default/web: spec.http[6].corsPolicy.allowCredentials:") })
        // What Istio accepts: "*" among the methods and headers, whole seconds, UNSPECIFIED.
        let good = Self.mesh([#"{allowOrigins: [{exact: a}], allowMethods: ["*", OPTIONS, TRACE, CONNECT], allowHeaders: ["*", x_y.z~], maxAge: 2m, unmatchedPreflights: UNSPECIFIED}"#])
        #expect(diagnostics(good).isEmpty)
    }

    @Test func aPolicyOnARouteThatDoesNotForwardWarnsThatItDoesNothing() {
        let yaml = ValidationTests.vsHead + """
              http:
              - directResponse: {status: 200}
                corsPolicy: {allowOrigins: [{exact: a}]}

            """
        #expect(diagnostics(yaml) == [
            "f.yaml:8: warning: VirtualService ns/r: spec.http[0].corsPolicy: corsPolicy applies to routes that forward (route), as Envoy's CORS filter; Tern ignores it with redirect, directResponse or delegate",
        ])
    }
}

extension AllocationTests {
    /// CORS origin matching, the filter's part that runs per request in TernConfig, allocates nothing (in this suite
    /// so that the counted `--filter AllocationTests` run includes it).
    @Test func corsOriginMatchingAllocatesNothing() throws {
        let counter = try MallocCounter.load()
        let table = try compile(CORSTests.mesh([
            #"{allowOrigins: [{exact: "https://a.example"}, {prefix: "https://shop."}, {regex: "https://[a-z]+\\.example"}]}"#,
        ]))
        let vh = try #require(table.virtualHosts.firstIndex { $0.name.hasPrefix("web") })
        let e = try #require(table.forwarding.pick(RouteMatch(virtualHost: Int32(vh), route: 0), random: 0))
        let policy = Int(table.forwarding.entries[e].cors)
        let origins = ["https://a.example", "https://shop.x", "https://b.example", "https://evil.test"].map { Array($0.utf8) }
        var allowed = 0
        func once() {
            for i in 0..<origins.count {
                let o = origins[i]
                if table.forwarding.allowsOrigin(policy, o.span, reactor: 0) { allowed += 1 }
            }
        }
        once()  // the thread's first regex match sets up its match state
        let before = counter?.count()
        for _ in 0..<2_000 { once() }
        let after = counter?.count()
        #expect(allowed == 2_001 * 3)
        if let before, let after {
            #expect(after - before == 0, "\(after - before) allocations in 8,000 origin checks")
        }
    }
}
