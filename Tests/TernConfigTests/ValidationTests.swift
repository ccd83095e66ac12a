import TernConfig
import TernTestSupport
import Testing

/// Bad configuration → the exact lines users see.
@Suite struct ValidationTests {
    static let vsHead = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: ns}\nspec:\n  hosts: [r]\n"
    static let prefix = "f.yaml"

    static let cases: [(String, [String])] = [
        // unknown field under spec
        (vsHead + "  htp: []\n  http: [{route: [{destination: {host: r}}]}]\n",
         ["f.yaml:6: VirtualService ns/r: spec.htp: unknown field",
          "f.yaml:7: warning: VirtualService ns/r: spec.http[0].route[0].destination.host: no ServiceEntry declares host r.ns.svc.cluster.local; requests routed here get 503 (NC)"]),
        // wrong type
        (vsHead + "  http:\n  - route: {destination: {host: r}}\n",
         ["f.yaml:7: VirtualService ns/r: spec.http[0].route: expected a list, got map"]),
        // bad duration, and durations that are fine
        (vsHead + "  http:\n  - route: [{destination: {host: r}}]\n    timeout: 30\n    retries: {attempts: 1, perTryTimeout: 0.5ms}\n",
         ["f.yaml:7: warning: VirtualService ns/r: spec.http[0].route[0].destination.host: no ServiceEntry declares host r.ns.svc.cluster.local; requests routed here get 503 (NC)",
          "f.yaml:8: VirtualService ns/r: spec.http[0].timeout: invalid duration \"30\" (write e.g. 30s, 1.5s, 100ms, 1h30m)",
          "f.yaml:9: VirtualService ns/r: spec.http[0].retries.perTryTimeout: must be at least 1ms, got 0.5ms"]),
        // bad weights
        (vsHead + "  http:\n  - route:\n    - {destination: {host: a.example.com}, weight: 0}\n    - {destination: {host: b.example.com}, weight: 0}\n",
         ["f.yaml:7: VirtualService ns/r: spec.http[0].route: weights must not all be 0 when there are several destinations",
          "f.yaml:8: warning: VirtualService ns/r: spec.http[0].route[0].destination.host: no ServiceEntry declares host a.example.com; requests routed here get 503 (NC)",
          "f.yaml:9: warning: VirtualService ns/r: spec.http[0].route[1].destination.host: no ServiceEntry declares host b.example.com; requests routed here get 503 (NC)"]),
        (vsHead + "  http:\n  - route:\n    - destination: {host: a.example.com}\n      weight: -5\n",
         ["f.yaml:8: warning: VirtualService ns/r: spec.http[0].route[0].destination.host: no ServiceEntry declares host a.example.com; requests routed here get 503 (NC)",
          "f.yaml:9: VirtualService ns/r: spec.http[0].route[0].weight: must be between 0 and 2147483647, got -5"]),
        // route and redirect together; bad redirect code
        (vsHead + "  http:\n  - redirect: {uri: /x, redirectCode: 200}\n    directResponse: {status: 200}\n",
         ["f.yaml:7: VirtualService ns/r: spec.http[0].redirect.redirectCode: must be 301, 302, 303, 307 or 308, got 200",
          "f.yaml:7: VirtualService ns/r: spec.http[0]: route, redirect, directResponse and delegate are mutually exclusive"]),
        // bad regex, two kinds of match, uppercase header
        (vsHead + "  http:\n  - match:\n    - uri: {regex: \"(\"}\n      method: {exact: GET, prefix: G}\n      headers: {X-A: {exact: a}}\n    directResponse: {status: 200}\n",
         ["f.yaml:8: VirtualService ns/r: spec.http[0].match[0].uri.regex: invalid regex: missing ): (",
          "f.yaml:9: VirtualService ns/r: spec.http[0].match[0].method: exact, prefix and regex are mutually exclusive",
          "f.yaml:10: VirtualService ns/r: spec.http[0].match[0].headers.X-A: header names must be lowercase"]),
        // uriRegexRewrite: empty fields are errors (as in Istio); a substitution Envoy would not apply as written
        // (a group the pattern lacks, an unknown escape) is a warning; uri excludes it
        (vsHead + "  http:\n  - rewrite:\n      uriRegexRewrite: {match: \"\", rewrite: /x}\n    directResponse: {status: 200}\n"
            + "  - rewrite:\n      uriRegexRewrite:\n        match: \"^/a/(.*)\"\n        rewrite: \"/\\\\2/\\\\q\"\n    directResponse: {status: 200}\n"
            + "  - rewrite:\n      uri: /y\n      uriRegexRewrite: {match: a, rewrite: \"\"}\n    directResponse: {status: 200}\n",
         ["f.yaml:8: VirtualService ns/r: spec.http[0].rewrite.uriRegexRewrite.match: must not be empty",
          "f.yaml:13: warning: VirtualService ns/r: spec.http[1].rewrite.uriRegexRewrite.rewrite: \\2 names a group the match does not have (it has 1 group): Envoy then rewrites nothing, every path stays as it is",
          "f.yaml:13: warning: VirtualService ns/r: spec.http[1].rewrite.uriRegexRewrite.rewrite: unknown escape at offset 4 (\\0-\\9 insert groups, \\\\ a backslash): Envoy drops the rest of the substitution from there",
          "f.yaml:17: VirtualService ns/r: spec.http[2].rewrite.uriRegexRewrite.rewrite: must not be empty",
          "f.yaml:17: VirtualService ns/r: spec.http[2].rewrite.uriRegexRewrite: uri and uriRegexRewrite are mutually exclusive"]),
        // Regexes Istio and Envoy refuse: Perl (PCRE) syntax RE2 lacks, \C, and a program over Envoy's size limit,
        // in every place a regex is taken
        (vsHead + "  http:\n  - match:\n    - uri: {regex: \"/a/(?=b)\"}\n    - headers: {x-a: {regex: \"(a)\\\\1\"}}\n"
            + "    - queryParams: {q: {regex: \"a++\"}}\n    - authority: {regex: \"(?<!x)y\"}\n    - withoutHeaders: {x-b: {regex: \"a\\\\Cb\"}}\n"
            + "    - method: {regex: \"\(String(repeating: "[A-Z]{1000}", count: 40))\"}\n    directResponse: {status: 200}\n"
            + "  - rewrite: {uriRegexRewrite: {match: \"(?>a)\", rewrite: /b}}\n    directResponse: {status: 200}\n",
         ["f.yaml:8: VirtualService ns/r: spec.http[0].match[0].uri.regex: invalid regex: invalid perl operator: (?= (lookahead and lookbehind are not RE2 syntax)",
          "f.yaml:9: VirtualService ns/r: spec.http[0].match[1].headers.x-a.regex: invalid regex: invalid escape sequence: \\1 (backreferences are not RE2 syntax)",
          "f.yaml:10: VirtualService ns/r: spec.http[0].match[2].queryParams.q.regex: invalid regex: bad repetition operator: ++ (possessive quantifiers are not RE2 syntax)",
          "f.yaml:11: VirtualService ns/r: spec.http[0].match[3].authority.regex: invalid regex: invalid perl operator: (?< (lookahead and lookbehind are not RE2 syntax)",
          "f.yaml:12: VirtualService ns/r: spec.http[0].match[4].withoutHeaders.x-b.regex: invalid regex: invalid escape sequence: \\C (Istio refuses it; it would match any byte)",
          "f.yaml:13: VirtualService ns/r: spec.http[0].match[5].method.regex: regex too large: RE2 program size of 40004 > max program size of 32768 (the re2.max_program_size.error_level Istio gives Envoy)",
          "f.yaml:15: VirtualService ns/r: spec.http[1].rewrite.uriRegexRewrite.match: invalid regex: invalid perl operator: (?> (atomic groups are not RE2 syntax)"]),
        // tcp destinationSubnets: IPv4 and IPv6, with or without a prefix (host bits set are fine: cleared, as
        // Envoy does); a bad address or prefix is an error at its list item
        (vsHead + "  tcp:\n  - match:\n    - destinationSubnets: [10.0.0.0/8, 10.1.2.3/16, 192.168.0.1, \"fd00::/8\", \"::1\", 0.0.0.0/0]\n      port: 9000\n"
            + "    - destinationSubnets:\n      - 10.0.0.0/33\n      - 10.0.0.256\n      - \"fd00::/129\"\n      - \"fd00:::1\"\n      - 10.0.0.0/08\n      - 10.0.0.0/\n"
            + "    route: [{destination: {host: r}}]\n",
         ["f.yaml:11: VirtualService ns/r: spec.tcp[0].match[1].destinationSubnets[0]: \"10.0.0.0/33\": the prefix length must be a number from 0 to 32",
          "f.yaml:12: VirtualService ns/r: spec.tcp[0].match[1].destinationSubnets[1]: \"10.0.0.256\" is not an IP address or subnet (write a.b.c.d, a.b.c.d/xx, or an IPv6 address with an optional /xx)",
          "f.yaml:13: VirtualService ns/r: spec.tcp[0].match[1].destinationSubnets[2]: \"fd00::/129\": the prefix length must be a number from 0 to 128",
          "f.yaml:14: VirtualService ns/r: spec.tcp[0].match[1].destinationSubnets[3]: \"fd00:::1\" is not an IP address or subnet (write a.b.c.d, a.b.c.d/xx, or an IPv6 address with an optional /xx)",
          "f.yaml:15: VirtualService ns/r: spec.tcp[0].match[1].destinationSubnets[4]: \"10.0.0.0/08\": the prefix length must be a number from 0 to 32",
          "f.yaml:16: VirtualService ns/r: spec.tcp[0].match[1].destinationSubnets[5]: \"10.0.0.0/\": the prefix length must be a number from 0 to 32",
          "f.yaml:17: warning: VirtualService ns/r: spec.tcp[0].route[0].destination.host: no ServiceEntry declares host r.ns.svc.cluster.local; requests routed here get 503 (NC)"]),
        // missing subset, with its ServiceEntry
        ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: r, namespace: ns}\nspec: {hosts: [r], ports: [{number: 80, name: http}], resolution: DNS}\n---\n"
            + vsHead + "  http:\n  - route:\n    - destination:\n        host: r\n        subset: v2\n",
         ["f.yaml:15: VirtualService ns/r: spec.http[0].route[0].destination.subset: subset \"v2\" is not defined by any DestinationRule for host r.ns.svc.cluster.local"]),
        // duplicate names and subsets; deprecated LEAST_CONN; bad enum
        ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: d\n  trafficPolicy: {loadBalancer: {simple: LEAST_CONN}}\n  subsets: [{name: a}, {name: a}]\n---\n"
            + "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: d\nspec:\n  host: d\n  trafficPolicy: {tls: {mode: MTLS}}\n",
         ["f.yaml:5: warning: DestinationRule default/d: spec.host: no ServiceEntry declares host d.default.svc.cluster.local; this rule applies to nothing yet",
          "f.yaml:6: warning: DestinationRule default/d: spec.trafficPolicy.loadBalancer.simple: LEAST_CONN is deprecated; use LEAST_REQUEST (same policy)",
          "f.yaml:7: DestinationRule default/d: spec.subsets[1].name: duplicate subset name \"a\"",
          "f.yaml:12: DestinationRule default/d: metadata.name: duplicate name (first defined at f.yaml:3)",
          "f.yaml:14: warning: DestinationRule default/d: spec.host: no ServiceEntry declares host d.default.svc.cluster.local; this rule applies to nothing yet",
          "f.yaml:15: DestinationRule default/d: spec.trafficPolicy.tls.mode: unknown value \"MTLS\""]),
        // ServiceEntry: STATIC with a name, an unknown port name, bad port
        ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n  hosts: [s]\n  ports: [{number: 70000, name: http}]\n  resolution: STATIC\n  endpoints:\n  - address: db.local\n    ports: {grpc: 9000}\n",
         ["f.yaml:6: ServiceEntry default/s: spec.ports[0].number: must be between 1 and 65535, got 70000",
          "f.yaml:9: ServiceEntry default/s: spec.endpoints[0].address: resolution STATIC needs an IP address, got \"db.local\"",
          "f.yaml:10: ServiceEntry default/s: spec.endpoints[0].ports.grpc: no port named \"grpc\" in spec.ports"]),
        // envelope
        ("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: x}\nspec: {}\n",
         ["f.yaml:1: apiVersion: unsupported \"networking.istio.io/v2\" (networking.istio.io/v1, v1beta1, v1alpha3; security.istio.io/v1, v1beta1)"]),
        ("apiVersion: networking.istio.io/v1\nkind: Ingress\nmetadata: {name: x}\n",
         ["f.yaml:2: kind: unsupported kind \"Ingress\" for networking.istio.io/v1"]),
        // fault percentage range, consistent hash with two keys
        (vsHead + "  http:\n  - route: [{destination: {host: r}}]\n    fault: {delay: {fixedDelay: 5s, percentage: {value: 101}}}\n",
         ["f.yaml:7: warning: VirtualService ns/r: spec.http[0].route[0].destination.host: no ServiceEntry declares host r.ns.svc.cluster.local; requests routed here get 503 (NC)",
          "f.yaml:8: VirtualService ns/r: spec.http[0].fault.delay.percentage.value: must be between 0 and 100, got 101"]),
        ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: d\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: a, useSourceIp: true}\n",
         ["f.yaml:5: warning: DestinationRule default/d: spec.host: no ServiceEntry declares host d.default.svc.cluster.local; this rule applies to nothing yet",
          "f.yaml:8: DestinationRule default/d: spec.trafficPolicy.loadBalancer.consistentHash: httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName are mutually exclusive"]),
    ]

    @Test(arguments: 0..<cases.count)
    func reportsEveryErrorWithItsLine(index: Int) {
        let (yaml, expected) = Self.cases[index]
        #expect(diagnostics(yaml) == expected)
    }

    @Test func anErrorMeansNoTable() {
        let set = ConfigLoader.load(yaml: Self.vsHead + "  htp: []\n")
        #expect(set.hasErrors)
        #expect(throws: ConfigError.self) { try RouteTable.compile(set, namespace: "default") }
    }

    @Test func anEmptyFileIsRefusedButACommentAloneIsNot() {
        // Empty: what a reload sees between a writer's truncation and its write.
        let empty = ConfigLoader.load(files: [("a.yaml", Self.vsHead + "  http: [{route: [{destination: {host: r}}]}]\n"), ("b.yaml", "")],
                                      namespace: "default")
        #expect(empty.hasErrors)
        #expect(empty.diagnostics.filter { $0.severity == .error }.map(\.file) == ["b.yaml"])
        let comment = ConfigLoader.load(files: [("b.yaml", "# nothing here yet\n")], namespace: "default")
        #expect(!comment.hasErrors && comment.resources.isEmpty)
    }

    @Test func warningsAloneStillCompile() throws {
        let set = ConfigLoader.load(yaml: Self.vsHead + "  http: [{route: [{destination: {host: r}}]}]\n")
        #expect(!set.hasErrors && set.warnings.count == 1)
        let table = try RouteTable.compile(set, namespace: "default")
        // No ServiceEntry: the destination has no cluster (the proxy answers 503 NC).
        let m = try select(table, get("/", host: "r.ns"))
        #expect(m.found)
        #expect(table.pickDestination(m, random: 0)?.cluster(port: 80) == nil)
    }
}

@Suite struct DestinationRuleWarningTests {
    @Test func unknownHostAndEmptySubsetWarn() {
        let yaml = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: s}
            spec:
              hosts: [s]
              ports: [{number: 80, name: http}]
              resolution: STATIC
              endpoints: [{address: 10.0.0.1, labels: {v: "1"}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: s}
            spec:
              host: s
              subsets:
              - {name: one, labels: {v: "1"}}
              - {name: two, labels: {v: "2"}}
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: t}
            spec:
              host: t
            """
        #expect(diagnostics(yaml) == [
            "f.yaml:17: warning: DestinationRule default/s: spec.subsets[1]: subset two selects no endpoint of s.default.svc.cluster.local; requests routed to it get 503 (UH)",
            "f.yaml:23: warning: DestinationRule default/t: spec.host: no ServiceEntry declares host t.default.svc.cluster.local; this rule applies to nothing yet",
        ])
    }
}
