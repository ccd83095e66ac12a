import TernConfig
import TernTestSupport
import Testing

/// Where Tern reads configuration as Istio does (issue 18, §9): the kinds, fields and rules of Istio's own validation,
/// and fields Tern decodes without acting on them said as warnings, never silently.
@Suite struct IstioParityTests {
    static let se = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: s}
        spec:
          hosts: [s.example.com]
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: STATIC
          endpoints: [{address: 10.0.0.1}]

        """

    @Test func istioKindsTernDoesNotActOnAreWarnedAboutAndSkipped() {
        let yaml = """
            apiVersion: networking.istio.io/v1alpha3
            kind: EnvoyFilter
            metadata: {name: lua}
            spec: {configPatches: [{applyTo: HTTP_FILTER}]}
            ---
            apiVersion: telemetry.istio.io/v1
            kind: Telemetry
            metadata: {name: mesh-default, namespace: istio-system}
            spec: {accessLogging: [{providers: [{name: envoy}]}]}
            ---
            apiVersion: security.istio.io/v1
            kind: RequestAuthentication
            metadata: {name: jwt}
            spec: {}
            ---
            apiVersion: extensions.istio.io/v1alpha1
            kind: WasmPlugin
            metadata: {name: w}
            spec: {}
            ---
            apiVersion: telemetry.istio.io/v1
            kind: SomethingNewer
            metadata: {name: x}
            """
        let set = ConfigLoader.load(yaml: yaml, file: "f.yaml")
        #expect(!set.hasErrors)
        #expect(set.resources.isEmpty)
        #expect(set.diagnostics.map(\.description) == [
            "f.yaml:2: warning: kind: EnvoyFilter networking.istio.io/v1alpha3 is ignored: it patches Envoy's own configuration, which Tern does not have",
            "f.yaml:7: warning: kind: Telemetry telemetry.istio.io/v1 is ignored: Tern does not act on Telemetry resources",
            "f.yaml:12: warning: kind: RequestAuthentication security.istio.io/v1 is ignored: Tern does not act on RequestAuthentication resources",
            "f.yaml:17: warning: kind: WasmPlugin extensions.istio.io/v1alpha1 is ignored: Tern does not act on WasmPlugin resources",
            "f.yaml:22: warning: kind: SomethingNewer telemetry.istio.io/v1 is an Istio resource Tern does not act on; ignored",
        ])
    }

    @Test func newerDestinationRuleFieldsAreAcceptedAndSaidToHaveNoEffect() {
        let yaml = Self.se + """
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: s}
            spec:
              host: s.example.com
              trafficPolicy:
                connectionPool:
                  http: {http2KeepAlive: {interval: 10s, timeout: 3s}}
                loadBalancer:
                  zoneAwareLbSetting: {enabled: true, minClusterSize: 3, failover: [{from: a, to: b}]}
                  backendUtilization: {anything: goes}
                  consistentHash: {httpCookie: {name: c, ttl: 0s, attributes: [{name: SameSite, value: Strict}, {name: Secure}]}}
                outlierDetection: {consecutive5xxErrors: 3, outlierDetectionHttpErrorCodes: [500, 503]}
            """
        let d = diagnostics(yaml)
        #expect(!d.contains { !$0.contains("warning:") }, "\(d)")
        let said = " not acted on by Tern yet: decoded and checked, but it has no effect"
        #expect(d == [
            "f.yaml:19: warning: DestinationRule default/s: spec.trafficPolicy.loadBalancer.zoneAwareLbSetting:" + said,
            "f.yaml:20: warning: DestinationRule default/s: spec.trafficPolicy.loadBalancer.backendUtilization:" + said,
            "f.yaml:21: warning: DestinationRule default/s: spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes:" + said,
        ])
    }

    @Test func newerDestinationRuleFieldsAreChecked() {
        let yaml = Self.se + """
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: s}
            spec:
              host: s.example.com
              trafficPolicy:
                connectionPool:
                  http: {http2KeepAlive: {interval: soon}}
                loadBalancer:
                  localityLbSetting: {distribute: [{from: a/*, to: {b/*: 60, c/*: 30}}], failover: [{from: a, to: a}]}
                  warmup: {minimumPercent: 120}
                outlierDetection: {outlierDetectionHttpErrorCodes: [99]}
            """
        let errors = diagnostics(yaml).filter { !$0.contains("warning:") }
        #expect(errors == [
            "f.yaml:17: DestinationRule default/s: spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval: invalid duration \"soon\" (write e.g. 30s, 1.5s, 100ms, 1h30m)",
            "f.yaml:19: DestinationRule default/s: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: weights must add up to 100, got 90",
            "f.yaml:19: DestinationRule default/s: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]: from and to must differ, both \"a\"",
            "f.yaml:19: DestinationRule default/s: spec.trafficPolicy.loadBalancer.localityLbSetting: distribute and failover are mutually exclusive",
            "f.yaml:20: DestinationRule default/s: spec.trafficPolicy.loadBalancer.warmup: duration: required field missing",
            "f.yaml:20: DestinationRule default/s: spec.trafficPolicy.loadBalancer.warmup.minimumPercent: must be between 0 and 100, got 120.0",
            "f.yaml:21: DestinationRule default/s: spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[0]: must be between 100 and 599, got 99",
        ])
    }

    @Test func failoverPriorityFollowsIstiosRules() {
        func said(_ lb: String, outlier: Bool = true) -> [String] {
            diagnostics(Self.se + """
                ---
                apiVersion: networking.istio.io/v1
                kind: DestinationRule
                metadata: {name: s}
                spec:
                  host: s.example.com
                  trafficPolicy:
                    loadBalancer: {localityLbSetting: \(lb)}
                """ + (outlier ? "\n    outlierDetection: {consecutive5xxErrors: 3}\n" : "\n"))
        }
        // Acted on: no warning.
        #expect(said("{failoverPriority: [topology.istio.io/network, topology.kubernetes.io/region, \"version=v2\"]}") == [])
        #expect(said("{failover: [{from: a, to: b}], failoverPriority: [topology.istio.io/network, app]}") == [])
        // Istio's validation: failover rules and a locality topology label in failoverPriority do not go together.
        #expect(said("{failover: [{from: a, to: b}], failoverPriority: [app, topology.kubernetes.io/zone]}") == [
            "f.yaml:16: DestinationRule default/s: spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority: cannot set failover together with the topology label \"topology.kubernetes.io/zone\" in failoverPriority",
        ])
        // And its warning: without outlier detection nothing fails over.
        #expect(said("{failoverPriority: [app]}", outlier: false) == [
            "f.yaml:16: warning: DestinationRule default/s: spec.trafficPolicy.loadBalancer: outlier detection policy must be provided for failover (Istio's warning): localityLbSetting failover and failoverPriority rank endpoints only where outlierDetection applies",
        ])
    }

    @Test func workloadLabelsAreCheckedAsKubernetesChecksThem() {
        #expect(WorkloadLabels.parse("app=reviews,version=v2,topology.istio.io/network=n1,empty=") == .success([
            "app": "reviews", "version": "v2", "topology.istio.io/network": "n1", "empty": "",
        ]))
        let refused = ["", "app", "app=a,", "=v", "app=a,app=b", "Bad.Prefix/app=a", "app=-x", "app=a b",
                       String(repeating: "a", count: 64) + "=v", "a/b/c=v", "/app=v", "app=\(String(repeating: "v", count: 64))"]
        for text in refused {
            guard case .failure = WorkloadLabels.parse(text) else {
                Issue.record("\(text) was accepted")
                continue
            }
        }
        #expect(WorkloadLabels.parse("app=a,app=b") == .failure(LabelError("label key 'app' given twice")))
        // The locality, as Istio reads a proxy's from its topology labels.
        #expect(WorkloadLabels.locality(["app": "a"]) == nil)
        #expect(WorkloadLabels.locality(["topology.kubernetes.io/region": "r1", "topology.kubernetes.io/zone": "z1"]) == "r1/z1")
        #expect(WorkloadLabels.locality(["topology.kubernetes.io/region": "r1", "topology.istio.io/subzone": "s1"]) == "r1//s1")
    }

    @Test func serviceEntryRulesAsIstioHasThem() {
        func errors(_ spec: String) -> [String] {
            diagnostics("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n" + spec)
                .filter { !$0.contains("warning:") }
        }
        // No ports: valid in Istio.
        #expect(errors("  hosts: [a.example.com]\n  resolution: DNS\n") == [])
        #expect(errors("  hosts: [a.example.com]\n  ports: [{number: 80, name: http}]\n  workloadSelector: {labels: {app: \"*\"}}\n") == [
            "f.yaml:7: ServiceEntry default/s: spec.workloadSelector.labels.app: wildcard is not supported in selector labels",
        ])
        #expect(errors("  hosts: [a.example.com]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  workloadSelector: {labels: {app: a}}\n  endpoints: [{address: 10.0.0.1}]\n") == [
            "f.yaml:8: ServiceEntry default/s: spec.workloadSelector: workloadSelector and endpoints are mutually exclusive",
        ])
        #expect(errors("  hosts: [a.example.com]\n  ports: [{number: 80, name: http}]\n  resolution: NONE\n  endpoints: [{address: 10.0.0.1}]\n") == [
            "f.yaml:8: ServiceEntry default/s: spec.endpoints: no endpoints may be given with resolution NONE",
        ])
        #expect(errors("  hosts: [a.example.com]\n  ports: [{number: 80, name: http}]\n  resolution: DNS_ROUND_ROBIN\n  endpoints: [{address: a.example.com}, {address: b.example.com}]\n") == [
            "f.yaml:8: ServiceEntry default/s: spec.endpoints: resolution DNS_ROUND_ROBIN takes at most one endpoint, got 2",
        ])
        #expect(errors("  hosts: [\"*.example.com\"]\n  ports: [{number: 80, name: http}]\n  resolution: DNS\n") == [
            "f.yaml:5: ServiceEntry default/s: spec.hosts[0]: a wildcard host needs endpoints with resolution DNS (the host itself is resolved)",
        ])
        #expect(errors("  hosts: [a.example.com]\n  addresses: [10.1.0.0/16]\n  ports: [{number: 80, name: http}]\n  resolution: DNS\n") == [
            "f.yaml:6: ServiceEntry default/s: spec.addresses[0]: a CIDR address is allowed only with resolution NONE or STATIC",
        ])
    }

    @Test func aVirtualServiceNamingAHostTwiceIsAnError() {
        let d = diagnostics("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: ns}\nspec:\n  hosts: [r, r.ns.svc.cluster.local]\n  http: [{directResponse: {status: 200}}]\n")
        #expect(d == ["f.yaml:5: VirtualService ns/r: spec.hosts[1]: duplicate host \"r.ns.svc.cluster.local\""])
    }

    @Test func directResponseBodiesUpToOneMegabyte() {
        func body(_ n: Int) -> [String] {
            diagnostics("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: ns}\nspec:\n  hosts: [r]\n  http: [{directResponse: {status: 200, body: {string: \"" + String(repeating: "a", count: n) + "\"}}}]\n")
        }
        #expect(body(100_000) == [])
        #expect(body(150_000) == ["f.yaml:6: warning: VirtualService ns/r: spec.http[0].directResponse.body: body is 150000 bytes; a body above 100 KB is kept in every sidecar's memory"])
        #expect(body(1_000_001) == ["f.yaml:6: VirtualService ns/r: spec.http[0].directResponse.body: body is 1000001 bytes; at most 1000000 (1 MB) are allowed"])
    }

    @Test func anUnquotedIPv6AddressEndingInDoubleColonInAFlowListReadsAsGoReadsIt() {
        let yaml = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: v6}
            spec:
              hosts: [v6.example.com]
              addresses: [2001:db8::, "fd00::1", 2001:db8:1::]
              ports: [{number: 80, name: http, protocol: HTTP}]
              resolution: STATIC
              endpoints: [{address: 10.0.0.1}]
              bogus: [a:b::c]
            """
        // The scalars are read as written; the line of the unknown field below them is still its own.
        #expect(diagnostics(yaml) == ["f.yaml:10: ServiceEntry default/v6: spec.bogus: unknown field"])
        let set = ConfigLoader.load(yaml: yaml.split(separator: "\n").dropLast().joined(separator: "\n"), file: "f.yaml")
        #expect(!set.hasErrors)
        guard case .serviceEntry(let se) = set.resources.first?.spec else {
            Issue.record("no ServiceEntry")
            return
        }
        #expect(se.addresses == ["2001:db8::", "fd00::1", "2001:db8:1::"])
        // Other plain-scalar errors are still errors, with their line.
        #expect(diagnostics("a: [b: c: d]\n").first?.hasPrefix("f.yaml:1: YAML:") == true)
    }

    @Test func fieldsNotActedOnAreWarnings() {
        let yaml = ValidationTests.vsHead + """
              http:
              - route: [{destination: {host: r}}]
                retries: {attempts: 3, retryOn: "5xx,retriable-headers", retryRemoteLocalities: true}
                mirror: {host: m}
                corsPolicy: {allowOrigins: [{exact: "https://a.example"}]}
              - directResponse: {status: 200}
                fault: {abort: {httpStatus: 500, percentage: {value: 100}}}

            """
        let d = diagnostics(yaml).filter { !$0.contains("no ServiceEntry declares") }
        #expect(d == [
            "f.yaml:8: warning: VirtualService ns/r: spec.http[0].retries.retryOn: retriable-headers retries on the headers of a list Istio's retries cannot give: it matches nothing",
            "f.yaml:12: warning: VirtualService ns/r: spec.http[1].fault: fault applies to routes that forward (route); Tern ignores it with redirect, directResponse or delegate",
        ])
    }
}

/// The per-request facts of timeouts and faults, as the proxy reads them.
@Suite struct TimeoutAndFaultFactsTests {
    @Test func routeTimeoutAndFaultAreFlattenedPerDestination() throws {
        let t = try compile("""
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: r}
            spec:
              hosts: [r.example.com]
              http:
              - match: [{uri: {prefix: /slow}}]
                timeout: 1.5s
                fault:
                  delay: {fixedDelay: 7s, percentage: {value: 0.1}}
                  abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}
                route: [{destination: {host: r.example.com}}]
              - match: [{uri: {prefix: /none}}]
                timeout: 0s
                fault: {abort: {httpStatus: 503}}
                route: [{destination: {host: r.example.com}}]
              - route: [{destination: {host: r.example.com}}]
            """)
        let e = t.forwarding.entries
        #expect(e.count == 3)
        #expect(e[0].timeout == 1_500_000_000)
        #expect(e[0].fault.delay == 7_000_000_000 && e[0].fault.delayPerMillion == 1_000)
        #expect(e[0].fault.abortStatus == 200 && e[0].fault.abortGrpc == 14 && e[0].fault.abortPerMillion == 500_000)
        // `timeout: 0s`: no timeout at all; an abort without a percentage aborts nothing (Istio).
        #expect(e[1].timeout == 0)
        #expect(e[1].fault.isEmpty)
        // No timeout set: the proxy's default applies.
        #expect(e[2].timeout == -1 && e[2].fault.isEmpty)
    }
}
