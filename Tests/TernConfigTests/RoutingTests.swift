import TernConfig
import TernTestSupport
import Testing

@Suite struct RoutingTests {
    static let service = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: svc, namespace: ns}
        spec:
          hosts: [svc]
          ports: [{number: 80, name: http}]
          resolution: STATIC
          endpoints: [{address: 10.0.0.1}]
        ---

        """

    /// The ServiceEntry above and the start of a VirtualService for it, up to `spec.hosts`.
    static let virtualService = service + """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: svc, namespace: ns}
        spec:
          hosts: [svc]

        """

    /// A VirtualService on host svc (namespace ns) whose routes are `routes`, each answering its index as status
    /// 200 + i, so tests read which route won.
    func table(_ matches: [String]) throws -> RouteTable {
        var yaml = Self.virtualService + "  http:\n"
        for (i, m) in matches.enumerated() {
            yaml += "  - match: [\(m)]\n    directResponse: {status: \(200 + i)}\n"
        }
        yaml += "  - directResponse: {status: 599}\n"
        return try compile(yaml, namespace: "ns")
    }

    func status(_ t: RouteTable, _ request: String, port: UInt16 = 80, scheme: RequestView.Scheme = .http) throws -> Int? {
        let m = try select(t, request, port: port, scheme: scheme)
        guard let r = t.route(m), case .directResponse(let s, _) = r.action else { return nil }
        return s
    }

    @Test func uriExactPrefixRegexAndCase() throws {
        let t = try table(["{uri: {exact: /a}}", "{uri: {prefix: /p}}", "{uri: {regex: \"/r/[0-9]+\"}}",
                           "{uri: {exact: /CaSe}, ignoreUriCase: true}", "{uri: {prefix: /Up}, ignoreUriCase: true}"])
        #expect(try status(t, get("/a", host: "svc")) == 200)
        #expect(try status(t, get("/a?x=1", host: "svc")) == 200)  // the query is not part of the path
        #expect(try status(t, get("/ab", host: "svc")) == 599)
        #expect(try status(t, get("/pfoo", host: "svc")) == 201)  // plain string prefix, as Istio's
        #expect(try status(t, get("/r/123", host: "svc")) == 202)
        #expect(try status(t, get("/r/123x", host: "svc")) == 599)  // whole-string regex
        #expect(try status(t, get("/case", host: "svc")) == 203)
        #expect(try status(t, get("/uPPER", host: "svc")) == 204)
        #expect(try status(t, get("/A", host: "svc")) == 599)
    }

    @Test func headersPresenceAbsenceQueryMethodSchemeAuthorityPort() throws {
        let t = try table([
            "{headers: {x-exact: {exact: v}}}", "{headers: {x-present: {}}}", "{headers: {x-re: {regex: \"a+b\"}}}",
            "{queryParams: {q: {exact: \"1\"}}}", "{queryParams: {flag: {exact: \"\"}}}", "{method: {exact: POST}}",
            "{scheme: {exact: https}}", "{authority: {prefix: svc.ns}}", "{port: 8080}",
            "{headers: {x-both: {}}, withoutHeaders: {x-no: {}}}",
        ])
        #expect(try status(t, get("/", host: "svc", headers: ["X-Exact: v"])) == 200)
        #expect(try status(t, get("/", host: "svc", headers: ["x-exact: vv"])) == 599)
        #expect(try status(t, get("/", host: "svc", headers: ["x-present: "])) == 201)
        #expect(try status(t, get("/", host: "svc", headers: ["x-re: aaab"])) == 202)
        #expect(try status(t, get("/", host: "svc", headers: ["x-re: aaabc"])) == 599)
        #expect(try status(t, get("/?a=2&q=1", host: "svc")) == 203)
        #expect(try status(t, get("/?q=12", host: "svc")) == 599)
        #expect(try status(t, get("/?flag", host: "svc")) == 204)
        #expect(try status(t, get("/", host: "svc", method: "POST")) == 205)
        #expect(try status(t, get("/", host: "svc"), scheme: .https) == 206)
        #expect(try status(t, get("/", host: "svc.ns:80")) == 207)
        #expect(try status(t, get("/", host: "svc"), port: 8080) == 208)
        #expect(try status(t, get("/", host: "svc", headers: ["x-both: 1"])) == 209)
        #expect(try status(t, get("/", host: "svc", headers: ["x-both: 1", "x-no: 1"])) == 599)
    }

    @Test func firstMatchWinsAndMatchesAreOrWithinAnd() throws {
        let t = try table(["{uri: {prefix: /}, headers: {x-a: {}}}, {uri: {prefix: /b}}", "{uri: {prefix: /}}"])
        #expect(try status(t, get("/b", host: "svc")) == 200)  // second entry of the first route (OR)
        #expect(try status(t, get("/c", host: "svc", headers: ["x-a: 1"])) == 200)
        #expect(try status(t, get("/c", host: "svc")) == 201)  // first route's AND fails
    }

    @Test func hostForms() throws {
        let t = try table([])
        for h in ["svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local", "SVC.NS:80", "svc.ns.svc.cluster.local.",
                  "svc:8080"] {
            #expect(try status(t, get("/", host: h)) == 599, "\(h)")
        }
        #expect(try select(t, get("/", host: "other")) == .noHost)
        #expect(try select(t, get("/", host: "svc.other")) == .noHost)
    }

    @Test func wildcardsLongestSuffixFirst() throws {
        var yaml = ""
        for (i, h) in ["\"*.example.com\"", "\"*.api.example.com\"", "\"*\"", "exact.example.com"].enumerated() {
            yaml += "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v\(i)}\nspec:\n  hosts: [\(h)]\n  http: [{directResponse: {status: \(200 + i)}}]\n"
        }
        let t = try compile(yaml)
        func s(_ host: String) throws -> Int? {
            let m = try select(t, get("/", host: host))
            guard let r = t.route(m), case .directResponse(let s, _) = r.action else { return nil }
            return s
        }
        #expect(try s("a.example.com") == 200)
        #expect(try s("v1.api.example.com:443") == 201)
        #expect(try s("example.com") == 202)  // "*.example.com" needs a label before it
        #expect(try s("exact.example.com") == 203)
        #expect(try s("elsewhere.org") == 202)
    }

    @Test func canaryRoutesBetaHeaderToBetaAndSplitsTheRest() throws {
        let t = try compile(canaryYAML, namespace: "shop")
        let beta = try select(t, get("/", headers: ["x-beta: yes"]))
        #expect(beta == RouteMatch(virtualHost: 0, route: 0, matcher: 0))
        let d = try #require(t.pickDestination(beta, random: .max))
        #expect(d.subset == "beta")
        let cluster = try #require(d.cluster(port: 80))
        #expect(t.clusters[cluster].endpoints.map(\.port) == [9002])
        #expect(t.clusters[cluster].name == "outbound|80|beta|cart.shop.svc.cluster.local")
        let rest = try select(t, get("/", headers: ["x-beta: no"]))
        #expect(rest.route == 1)
        // 80/20 over 10,000 uniform picks: chi-square with 1 degree of freedom below 10.83 (p = 0.001).
        var generator = SplitMix64(seed: 0x7465_726e)
        var stable = 0
        let n = 10_000
        for _ in 0..<n where t.pickDestination(rest, random: generator.next())?.subset == "stable" { stable += 1 }
        let e1 = Double(n) * 0.8
        let e2 = Double(n) * 0.2
        let chi = pow2(Double(stable) - e1) / e1 + pow2(Double(n - stable) - e2) / e2
        #expect(chi < 10.83, "stable \(stable) of \(n), chi-square \(chi)")
        let stableCluster = try #require(t.pickDestination(rest, random: 0)?.cluster(port: 80))
        #expect(t.clusters[stableCluster].endpoints.map(\.port) == [9001])
        if case .roundRobin = t.clusters[stableCluster].loadBalancing {} else { Issue.record("not round robin") }
    }

    @Test func threeWaySplitFollowsRelativeWeights() throws {
        let yaml = RoutingTests.virtualService + """
              http:
              - route:
                - {destination: {host: svc, port: {number: 80}}, weight: 1, headers: {request: {set: {x-w: "1"}}}}
                - {destination: {host: svc, port: {number: 80}}, weight: 2, headers: {request: {set: {x-w: "2"}}}}
                - {destination: {host: svc, port: {number: 80}}, weight: 7, headers: {request: {set: {x-w: "7"}}}}
            """
        let t = try compile(yaml, namespace: "ns")
        let m = try select(t, get("/", host: "svc"))
        var counts: [String: Int] = [:]
        var generator = SplitMix64(seed: 0x7465_726e)
        for _ in 0..<10_000 {
            counts[t.pickDestination(m, random: generator.next())!.requestHeaders.set[0].value, default: 0] += 1
        }
        var chi = 0.0
        for (k, p) in [("1", 0.1), ("2", 0.2), ("7", 0.7)] {
            chi += pow2(Double(counts[k, default: 0]) - 10_000 * p) / (10_000 * p)
        }
        #expect(chi < 13.82, "\(counts), chi-square \(chi)")  // 2 degrees of freedom, p = 0.001
    }

    @Test func serviceEntryAloneGivesADefaultRoute() throws {
        let t = try compile(Self.service, namespace: "ns")
        let m = try select(t, get("/anything", host: "svc.ns.svc.cluster.local"))
        let c = try #require(t.pickDestination(m, random: 1)?.cluster(port: 80))
        #expect(t.clusters[c].endpoints == [Endpoint(address: "10.0.0.1", port: 80, weight: 1, labels: [:], needsResolution: false)])
        if case .leastRequest = t.clusters[c].loadBalancing {} else { Issue.record("default is not LEAST_REQUEST") }
    }

    @Test func subsetReplacesWholeBlocks() throws {
        let yaml = Self.service + """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: svc, namespace: ns}
            spec:
              host: svc
              trafficPolicy:
                loadBalancer: {simple: RANDOM}
                connectionPool: {tcp: {maxConnections: 5}}
              subsets:
              - name: a
                trafficPolicy: {connectionPool: {http: {maxRetries: 1}}}
              - name: b
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: svc, namespace: ns}
            spec:
              hosts: [svc]
              http:
              - match: [{headers: {x-a: {}}}]
                route: [{destination: {host: svc, subset: a}}]
              - route: [{destination: {host: svc, subset: b}}]
            """
        let t = try compile(yaml, namespace: "ns")
        let a = try #require(t.pickDestination(try select(t, get("/", host: "svc", headers: ["x-a: 1"])), random: 0)?.cluster(port: 80))
        let b = try #require(t.pickDestination(try select(t, get("/", host: "svc")), random: 0)?.cluster(port: 80))
        // Subset a set connectionPool: it replaces the whole block (no maxConnections inherited); loadBalancer
        // is inherited.
        #expect(t.clusters[a].policy.connectionPool?.maxConnections == nil)
        #expect(t.clusters[a].policy.connectionPool?.maxRetries == 1)
        #expect(t.clusters[a].policy.loadBalancer?.simple == .RANDOM)
        #expect(t.clusters[b].policy.connectionPool?.maxConnections == 5)
    }
}

@Suite struct MoreRoutingTests {
    @Test func absoluteFormTargetsMatchOnTheirPath() throws {
        let t = try compile(RoutingTests.virtualService + """
              http:
              - match: [{uri: {exact: /p}, queryParams: {a: {exact: b}}}]
                directResponse: {status: 201}
              - directResponse: {status: 404}
            """, namespace: "ns")
        let m = try select(t, "GET http://svc/p?a=b HTTP/1.1\r\nHost: svc\r\n\r\n")
        guard case .directResponse(201, _) = t.route(m)?.action else { Issue.record("\(m)"); return }
    }

    @Test func multiPortServicesPickTheClusterByPortAndPortLevelPolicyReplacesBlocks() throws {
        let t = try compile("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: m, namespace: ns}
            spec:
              hosts: [m]
              ports: [{number: 80, name: http}, {number: 8080, name: admin, targetPort: 9090}]
              resolution: DNS
              endpoints: [{address: m-1.internal, ports: {http: 8000}}, {address: 10.0.0.9}]
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: m, namespace: ns}
            spec:
              host: m
              trafficPolicy:
                loadBalancer: {simple: ROUND_ROBIN}
                connectionPool: {tcp: {maxConnections: 3}}
                portLevelSettings:
                - port: {number: 8080}
                  loadBalancer: {simple: RANDOM}
            """, namespace: "ns")
        let m = try select(t, get("/", host: "m.ns:8080"), port: 8080)
        let d = try #require(t.pickDestination(m, random: 0))
        let c80 = try #require(d.cluster(port: 80))
        let c8080 = try #require(d.cluster(port: 8080))
        #expect(d.cluster(port: 1234) == c80)  // no such service port: the first
        #expect(t.clusters[c80].endpoints.map { "\($0.address):\($0.port):\($0.needsResolution)" } ==
                ["m-1.internal:8000:true", "10.0.0.9:80:false"])
        #expect(t.clusters[c8080].endpoints.map(\.port) == [9090, 9090])
        #expect(t.clusters[c80].policy.connectionPool?.maxConnections == 3)
        // Port level replaces all four blocks: the DR's connectionPool is not inherited on 8080.
        #expect(t.clusters[c8080].policy.connectionPool == nil)
        if case .random = t.clusters[c8080].loadBalancing {} else { Issue.record("8080 is not RANDOM") }
        if case .roundRobin = t.clusters[c80].loadBalancing {} else { Issue.record("80 is not ROUND_ROBIN") }
    }

    @Test func tcpRoutesByPort() throws {
        let t = try compile(RoutingTests.virtualService + """
              tcp:
              - match: [{port: 5432}]
                route: [{destination: {host: svc}}]
              - route: [{destination: {host: svc}, weight: 1}, {destination: {host: svc}, weight: 0}]
            """, namespace: "ns")
        let name = Array("svc".utf8)
        let found = t.virtualHost(for: name.span)
        let vh = try #require(found)
        #expect(t.selectTCP(virtualHost: vh, port: 5432) == 0)
        #expect(t.selectTCP(virtualHost: vh, port: 80) == 1)
        #expect(t.pickTCPDestination(virtualHost: vh, route: 1, random: .max)?.weight == 1)
    }

    @Test func duplicateHostsAndForeignResourcesWarn() {
        let yaml = """
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: web}
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: a}
            spec: {hosts: [h.example.com], http: [{directResponse: {status: 200}}]}
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: b}
            spec:
              hosts:
              - h.example.com
              http: [{directResponse: {status: 200}}]
            """
        #expect(diagnostics(yaml) == [
            "f.yaml:1: warning: apiVersion: Deployment apps/v1 is not an Istio resource; ignored",
            "f.yaml:15: warning: VirtualService default/b: spec.hosts[0]: host h.example.com is already routed by VirtualService default/a; this VirtualService is not used for it",
        ])
    }
}

@Suite struct GatewayBindingTests {
    @Test func gatewayOnlyVirtualServicesAndMatchesAreNotUsedBySidecars() throws {
        let t = try compile("""
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: edge}
            spec:
              hosts: [a.example.com]
              gateways: [istio-system/ingress]
              http: [{directResponse: {status: 500}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: both}
            spec:
              hosts: [b.example.com]
              gateways: [ingress, mesh]
              http:
              - match: [{uri: {prefix: /}, gateways: [ingress]}]
                directResponse: {status: 500}
              - directResponse: {status: 200}
            """)
        #expect(try select(t, get("/", host: "a.example.com")) == .noHost)
        let m = try select(t, get("/", host: "b.example.com"))
        guard case .directResponse(200, _) = t.route(m)?.action else { Issue.record("\(m)"); return }
    }
}

/// An absolute-form target's path starts where its authority ends, at the first "/" or "?" after "://", as
/// the HTTP/1.1 codec reads the authority it forwards as Host: a "/" inside the query is not the path.
@Suite struct AbsoluteFormPathTests {
    static let yaml = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: svc}
        spec:
          hosts: [svc]
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: STATIC
          endpoints: [{address: 10.0.0.1}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: svc}
        spec:
          hosts: [svc]
          http:
          - match: [{uri: {prefix: /public}}]
            route: [{destination: {host: svc}}]
        """

    @Test func theQueryIsNotThePath() throws {
        let table = try compile(Self.yaml)
        #expect(try select(table, "GET http://svc/public/x HTTP/1.1\r\nHost: svc\r\n\r\n", host: "svc").found)
        #expect(try !select(table, "GET http://svc?/public HTTP/1.1\r\nHost: svc\r\n\r\n", host: "svc").found)
        #expect(try !select(table, "GET http://svc HTTP/1.1\r\nHost: svc\r\n\r\n", host: "svc").found)
    }
}
