import TernConfig
import TernCore
import TernTestSupport
import Testing

@Suite struct YAMLReaderTests {
    @Test func keepsLinesStylesAndDocuments() throws {
        let docs = try YAMLReader.documents("a: 1\nb: \"yes\"\n---\n- x\n- {y: z}\n", file: "t.yaml")
        #expect(docs.count == 2)
        guard case .mapping(let pairs) = docs[0].root.kind else { Issue.record("not a map"); return }
        #expect(pairs.map { $0.key.line } == [1, 2])
        guard case .scalar("yes", .quoted) = pairs[1].value.kind else { Issue.record("style lost"); return }
        guard case .sequence(let items) = docs[1].root.kind else { Issue.record("not a list"); return }
        #expect(items.map(\.line) == [4, 5])
    }

    @Test func resolvesAliases() throws {
        let docs = try YAMLReader.documents("a: &x {k: v}\nb: *x\n", file: "t.yaml")
        guard case .mapping(let pairs) = docs[0].root.kind, case .mapping(let inner) = pairs[1].value.kind else {
            Issue.record("alias not resolved"); return
        }
        #expect(inner.first?.value.scalar == "v")
    }

    @Test func reportsSyntaxErrorsWithTheirLine() {
        #expect(throws: YAMLError.self) { try YAMLReader.documents("a: [1,\n", file: "t.yaml") }
        #expect(diagnostics("a: b\nc: [\n") == ["f.yaml:3: YAML: did not find expected node content while parsing a flow node"])
    }
}

@Suite struct DecodingTests {
    @Test func decodesTheCanary() throws {
        let set = ConfigLoader.load(yaml: canaryYAML, namespace: "default")
        #expect(set.diagnostics.isEmpty)
        #expect(set.resources.map(\.label) == ["ServiceEntry shop/cart", "VirtualService shop/cart", "DestinationRule shop/cart"])
        guard case .serviceEntry(let se) = set.resources[0].spec else { Issue.record(); return }
        #expect(se.hosts == ["cart.shop.svc.cluster.local"])
        #expect(se.resolution == .STATIC)
        #expect(se.ports.first?.number == 80 && se.ports.first?.name == "http")
        #expect(se.endpoints.map(\.ports) == [["http": 9001], ["http": 9002]])
        #expect(se.endpoints.map(\.labels) == [["track": "stable"], ["track": "beta"]])
        guard case .virtualService(let vs) = set.resources[1].spec else { Issue.record(); return }
        #expect(vs.http.count == 2)
        #expect(vs.http[0].match[0].headers.first?.name == "x-beta")
        #expect(vs.http[0].match[0].headers.first?.match == .exact("yes"))
        #expect(vs.http[1].route.map(\.weight) == [80, 20])
        #expect(vs.http[1].route.map(\.destination.subset) == ["stable", "beta"])
        guard case .destinationRule(let dr) = set.resources[2].spec else { Issue.record(); return }
        #expect(dr.trafficPolicy?.blocks.loadBalancer?.simple == .ROUND_ROBIN)
        #expect(dr.subsets.map(\.name) == ["stable", "beta"])
    }

    @Test func missingNamespaceIsTheDefaultOne() {
        let yaml = """
            apiVersion: networking.istio.io/v1beta1
            kind: ServiceEntry
            metadata: {name: a, labels: {app: a}, annotations: {x: y}}
            spec: {hosts: [a], ports: [{number: 80, name: http}], resolution: DNS}
            status: {anything: goes}
            """
        let set = ConfigLoader.load(yaml: yaml, namespace: "team")
        #expect(set.diagnostics.isEmpty)
        #expect(set.resources.first?.label == "ServiceEntry team/a")
        guard case .serviceEntry(let se) = set.resources.first?.spec else { Issue.record(); return }
        #expect(se.hosts == ["a.team.svc.cluster.local"])
        #expect(ConfigLoader.defaultNamespace(flag: nil, environment: ["POD_NAMESPACE": "p"]) == "p")
        #expect(ConfigLoader.defaultNamespace(flag: "f", environment: ["POD_NAMESPACE": "p"]) == "f")
        #expect(ConfigLoader.defaultNamespace(flag: nil, environment: [:]) == "default")
    }

    @Test func acceptsEveryAPIVersionAndKeepsOtherKinds() {
        var yaml = ""
        for (v, k) in [("networking.istio.io/v1alpha3", "Gateway"), ("networking.istio.io/v1", "Sidecar"),
                       ("security.istio.io/v1", "PeerAuthentication"), ("security.istio.io/v1beta1", "AuthorizationPolicy")] {
            // (The security kinds are decoded now: their specs here are ones they accept.)
            let spec = k == "PeerAuthentication" ? "{mtls: {mode: STRICT}}" : k == "AuthorizationPolicy" ? "{action: DENY, rules: [{}]}" : "{anything: {}}"
            yaml += "---\napiVersion: \(v)\nkind: \(k)\nmetadata: {name: x}\nspec: \(spec)\n"
        }
        let set = ConfigLoader.load(yaml: yaml)
        #expect(set.diagnostics.isEmpty)
        #expect(set.resources.map(\.kind) == ["Gateway", "Sidecar", "PeerAuthentication", "AuthorizationPolicy"])
    }

    @Test func decodesEveryVirtualServiceField() {
        let yaml = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: r, namespace: ns}
            spec:
              hosts: [r, "*.example.com"]
              gateways: [mesh]
              exportTo: ["."]
              http:
              - name: main
                match:
                - name: m
                  uri: {regex: "/v[0-9]+/.*"}
                  scheme: {exact: https}
                  method: {exact: GET}
                  authority: {prefix: r}
                  headers: {x-a: {}, x-b: {prefix: b}}
                  withoutHeaders: {x-c: {exact: c}}
                  queryParams: {q: {exact: "1"}}
                  ignoreUriCase: true
                  port: 8080
                  sourceLabels: {app: web}
                  sourceNamespace: web
                  statPrefix: s
                route:
                - destination: {host: r, port: {number: 80}}
                  weight: 3
                  headers: {request: {set: {X-A: "1"}, add: {x-b: "2"}, remove: [x-c]}, response: {remove: [server]}}
                rewrite: {uri: /new, authority: other}
                timeout: 1.5s
                retries: {attempts: 3, perTryTimeout: 100ms, retryOn: "5xx,reset,503", retryRemoteLocalities: true, retryIgnorePreviousHosts: false, backoff: 25ms}
                fault:
                  delay: {fixedDelay: 1h30m, percentage: {value: 0.1}}
                  abort: {grpcStatus: UNAVAILABLE, percentage: {value: 5}}
                mirror: {host: shadow}
                mirrorPercentage: {value: 50}
                corsPolicy: {allowOrigins: [{exact: "https://a"}], allowMethods: [GET], allowHeaders: [x], exposeHeaders: [y], maxAge: 24h, allowCredentials: true, unmatchedPreflights: IGNORE}
                headers: {response: {set: {x-served-by: tern}}}
              - redirect: {uri: /moved, authority: b, port: 8443, scheme: https, redirectCode: 308}
              - directResponse: {status: 418, body: {bytes: aGk=}}
              tcp:
              - match: [{port: 9000, destinationSubnets: [10.0.0.0/8]}]
                route: [{destination: {host: db}, weight: 1}]
              tls:
              - match: [{sniHosts: [r.example.com], port: 443}]
                route: [{destination: {host: r}}]
            """
        let set = ConfigLoader.load(yaml: yaml)
        #expect(set.errors.map(\.description) == [])
        guard case .virtualService(let vs) = set.resources.first?.spec else { Issue.record(); return }
        #expect(vs.hosts == ["r.ns.svc.cluster.local", "*.example.com"])
        let h = vs.http[0]
        let m = h.match[0]
        #expect(m.uri == .regex("/v[0-9]+/.*") && m.scheme == .exact("https") && m.method == .exact("GET"))
        #expect(m.authority == .prefix("r") && m.ignoreUriCase && m.port == 8080)
        #expect(m.headers.map(\.name) == ["x-a", "x-b"] && m.headers[0].match == .present)
        #expect(m.withoutHeaders.first?.match == .exact("c") && m.queryParams.first?.match == .exact("1"))
        #expect(m.sourceLabels == ["app": "web"] && m.sourceNamespace == "web" && m.statPrefix == "s")
        #expect(h.route[0].destination.port == 80 && h.route[0].weight == 3)
        #expect(h.route[0].headers?.request.set.first?.name == "x-a")
        #expect(h.route[0].headers?.request.remove == ["x-c"])
        #expect(h.rewrite?.uri == "/new" && h.rewrite?.authority == "other")
        #expect(h.timeout == TernDuration(parsing: "1.5s"))
        #expect(h.retries?.attempts == 3 && h.retries?.retryOn == ["5xx", "reset", "503"])
        #expect(h.retries?.perTryTimeout == .milliseconds(100) && h.retries?.retryIgnorePreviousHosts == false)
        #expect(h.fault?.delay?.fixedDelay == TernDuration(parsing: "1h30m") && h.fault?.delay?.percentage == 0.1)
        #expect(h.fault?.abort?.grpcStatus == "UNAVAILABLE" && h.fault?.abort?.percentage == 5)
        #expect(h.mirrors.first?.destination.host == "shadow.ns.svc.cluster.local" && h.mirrors.first?.percentage == 50)
        #expect(h.corsPolicy?.allowOrigins == [.exact("https://a")] && h.corsPolicy?.allowCredentials == true)
        #expect(h.corsPolicy?.maxAge == .seconds(86400) && h.corsPolicy?.unmatchedPreflights == "IGNORE")
        #expect(h.headers?.response.set.first?.value == "tern")
        #expect(vs.http[1].redirect?.redirectCode == 308 && vs.http[1].redirect?.port == 8443)
        #expect(vs.http[2].directResponse?.status == 418 && vs.http[2].directResponse?.body == Array("hi".utf8))
        #expect(vs.tcp.first?.match.first?.port == 9000 && vs.tcp.first?.route.first?.weight == 1)
        #expect(vs.tls.first?.match.first?.sniHosts == ["r.example.com"])
    }

    @Test func decodesEveryDestinationRuleField() {
        let yaml = """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: d}
            spec:
              host: d
              exportTo: ["*"]
              trafficPolicy:
                loadBalancer: {consistentHash: {httpCookie: {name: user, path: /, ttl: 0s}, maglev: {tableSize: 65537}}}
                connectionPool:
                  tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}, maxConnectionDuration: 1h, idleTimeout: 1h}
                  http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 10, maxRetries: 3, idleTimeout: 30s, h2UpgradePolicy: UPGRADE, useClientProtocol: true, maxConcurrentStreams: 100}
                outlierDetection: {consecutive5xxErrors: 7, consecutiveGatewayErrors: 0, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 100, minHealthPercent: 0, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 5}
                tls: {mode: SIMPLE, sni: d.example, caCertificates: /ca.pem, subjectAltNames: [d], insecureSkipVerify: false}
                portLevelSettings:
                - port: {number: 8080}
                  loadBalancer: {simple: RANDOM}
              subsets:
              - name: v1
                labels: {version: v1}
                trafficPolicy:
                  loadBalancer: {consistentHash: {httpHeaderName: X-User, ringHash: {minimumRingSize: 2048}}}
              - name: v2
                labels: {version: v2}
                trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}
              - name: v3
                trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: u}}}
            """
        let set = ConfigLoader.load(yaml: yaml)
        #expect(set.errors.map(\.description) == [])
        guard case .destinationRule(let dr) = set.resources.first?.spec, let tp = dr.trafficPolicy else {
            Issue.record(); return
        }
        #expect(tp.blocks.loadBalancer?.consistentHash == .init(key: .cookie(name: "user", path: "/", ttl: .zero),
                                                                algorithm: .maglev(tableSize: 65537)))
        #expect(tp.blocks.connectionPool?.maxConnections == 100 && tp.blocks.connectionPool?.connectTimeout == .milliseconds(30))
        #expect(tp.blocks.connectionPool?.tcpKeepaliveProbes == 9 && tp.blocks.connectionPool?.http2MaxRequests == 1000)
        #expect(tp.blocks.connectionPool?.h2UpgradePolicy == "UPGRADE" && tp.blocks.connectionPool?.maxRetries == 3)
        #expect(tp.blocks.outlierDetection?.consecutive5xxErrors == 7 && tp.blocks.outlierDetection?.interval == .seconds(300))
        #expect(tp.blocks.tls?.mode == .SIMPLE && tp.blocks.tls?.sni == "d.example")
        #expect(tp.portLevelSettings.first?.port == 8080 && tp.portLevelSettings.first?.blocks.loadBalancer?.simple == .RANDOM)
        #expect(dr.subsets[0].trafficPolicy?.blocks.loadBalancer?.consistentHash ==
                .init(key: .header("x-user"), algorithm: .ringHash(minimumRingSize: 2048)))
        #expect(dr.subsets[1].trafficPolicy?.blocks.loadBalancer?.consistentHash?.key == .sourceIP)
        #expect(dr.subsets[2].trafficPolicy?.blocks.loadBalancer?.consistentHash?.key == .queryParameter("u"))
    }

    @Test func decodesServiceEntryFields() {
        let yaml = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: ext, namespace: n}
            spec:
              hosts: [api.example.com]
              addresses: [10.1.0.1]
              location: MESH_INTERNAL
              ports: [{number: 443, name: https, protocol: TLS, targetPort: 8443}]
              resolution: DNS
              exportTo: ["."]
              subjectAltNames: [spiffe://x]
              endpoints:
              - {address: api-1.example.com, weight: 3, network: n1, locality: us/a, serviceAccount: sa}
            """
        let set = ConfigLoader.load(yaml: yaml)
        #expect(set.errors.map(\.description) == [])
        guard case .serviceEntry(let se) = set.resources.first?.spec else { Issue.record(); return }
        #expect(se.hosts == ["api.example.com"] && se.location == .MESH_INTERNAL && se.resolution == .DNS)
        #expect(se.ports.first?.targetPort == 8443 && se.ports.first?.protocol == "TLS")
        #expect(se.endpoints.first?.weight == 3 && se.endpoints.first?.locality == "us/a")
    }
}

@Suite struct JSONTests {
    @Test func documentsRenderAsJSONWithKubernetesScalarTypes() throws {
        let set = ConfigLoader.load(yaml: canaryYAML, namespace: "default")
        #expect(set.resources[2].document.json ==
            #"{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":"cart","namespace":"shop"},"spec":{"host":"cart","trafficPolicy":{"loadBalancer":{"simple":"ROUND_ROBIN"}},"subsets":[{"name":"stable","labels":{"track":"stable"}},{"name":"beta","labels":{"track":"beta"}}]}}"#)
        let docs = try YAMLReader.documents("a: [1, 1.5, true, ~, \"2\", 'q\"\\x', \"tab\\there\", .5, 1e3]\n", file: "t")
        #expect(docs[0].root.json == #"{"a":[1,1.5,true,null,"2","q\"\\x","tab\there",".5",1e3]}"#)
    }
}
