import TernCore

/// Decodes one YAML document into a `Resource`, checking what can be checked within it: the envelope, unknown
/// fields under `spec` (an error: Istio's API server prunes them, so a typo would silently change routing),
/// types, enums, ranges, durations, regexes and the constraints Istio's own validation applies to a single
/// resource. Every problem is recorded; decoding goes on so that one run reports them all.
final class ResourceDecoder {
    private let file: String
    private let defaultNamespace: String
    private(set) var diagnostics: [Diagnostic] = []
    private var resourceLabel = ""
    private var namespace = ""

    init(file: String, defaultNamespace: String) {
        self.file = file
        self.defaultNamespace = defaultNamespace
    }

    // MARK: Envelope

    static let networkingGroups: Set<String> = [
        "networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3",
    ]
    static let securityGroups: Set<String> = ["security.istio.io/v1", "security.istio.io/v1beta1"]
    static let networkingKinds: Set<String> = [
        "ServiceEntry", "VirtualService", "DestinationRule", "Gateway", "Sidecar", "WorkloadEntry",
    ]
    static let securityKinds: Set<String> = ["PeerAuthentication", "AuthorizationPolicy"]
    /// Istio resources Tern reads past with a warning (Envoy-specific patches; kinds it has nothing to do with yet),
    /// by API group: a manifest directory that holds them still loads.
    static let ignoredKinds: [String: Set<String>] = [
        "networking.istio.io": ["EnvoyFilter", "WorkloadGroup", "ProxyConfig"],
        "security.istio.io": ["RequestAuthentication"],
        "telemetry.istio.io": ["Telemetry"],
        "extensions.istio.io": ["WasmPlugin"],
    ]

    func decode(_ document: YAMLNode) -> Resource? {
        resourceLabel = ""
        guard let top = object(Field(document, line: document.line, path: ""),
                               allowed: ["apiVersion", "kind", "metadata", "spec", "status"]) else { return nil }
        let apiVersion = top["apiVersion"].flatMap { string($0) }
        let kind = top["kind"].flatMap { string($0) }
        guard let apiVersion, let kind else {
            if top["apiVersion"] == nil { error(document.line, "apiVersion", "required field missing") }
            if top["kind"] == nil { error(document.line, "kind", "required field missing") }
            return nil
        }
        let group = apiVersion.split(separator: "/").first.map(String.init) ?? apiVersion
        if let ignored = Self.ignoredKinds[group], ignored.contains(kind) {
            let why = kind == "EnvoyFilter" ? "it patches Envoy's own configuration, which Tern does not have"
                : "Tern does not act on \(kind) resources"
            diagnostics.append(Diagnostic(.warning, file: file, line: top["kind"]!.line, resource: "", path: "kind",
                                          message: "\(kind) \(apiVersion) is ignored: \(why)"))
            return nil
        }
        let known = Self.networkingGroups.contains(apiVersion) ? Self.networkingKinds
            : Self.securityGroups.contains(apiVersion) ? Self.securityKinds : nil
        guard let known else {
            if group.hasSuffix(".istio.io") && group != "networking.istio.io" && group != "security.istio.io" {
                // telemetry.istio.io, extensions.istio.io, …: Istio's, with nothing Tern acts on.
                diagnostics.append(Diagnostic(.warning, file: file, line: top["kind"]!.line, resource: "", path: "kind",
                                              message: "\(kind) \(apiVersion) is an Istio resource Tern does not act on; ignored"))
            } else if apiVersion.hasPrefix("networking.istio.io/") || apiVersion.hasPrefix("security.istio.io/") {
                error(top["apiVersion"]!.line, "apiVersion",
                      "unsupported \"\(apiVersion)\" (networking.istio.io/v1, v1beta1, v1alpha3; security.istio.io/v1, v1beta1)")
            } else {
                // A Deployment or ConfigMap next to the Istio resources (one manifest directory): not ours.
                diagnostics.append(Diagnostic(.warning, file: file, line: top["apiVersion"]!.line, resource: "",
                                              path: "apiVersion", message: "\(kind) \(apiVersion) is not an Istio resource; ignored"))
            }
            return nil
        }
        guard known.contains(kind) else {
            error(top["kind"]!.line, "kind", "unsupported kind \"\(kind)\" for \(apiVersion)")
            return nil
        }
        var name = ""
        var nameLine = top["metadata"]?.line ?? document.line
        namespace = defaultNamespace
        if let meta = top["metadata"], let m = object(meta, allowed: nil) {
            if let n = m["name"], let s = string(n) {
                name = s
                nameLine = n.line
            }
            if let n = m["namespace"], let s = string(n) { namespace = s }
        }
        resourceLabel = "\(kind) \(namespace)/\(name)"
        if name.isEmpty { error(top["metadata"]?.line ?? document.line, "metadata.name", "required field missing") }
        var resource = Resource(apiVersion: apiVersion, kind: kind, name: name, namespace: namespace, file: file,
                                line: document.line, nameLine: nameLine, spec: .other(top["spec"]?.node),
                                document: document)
        if kind == "AuthorizationPolicy" {
            // (Without a spec too: it is then an ALLOW policy matching nothing, which denies all.)
            guard let ap = authorizationPolicy(top["spec"], metadata: top["metadata"], documentLine: document.line) else { return nil }
            resource.spec = .authorizationPolicy(ap)
            return resource
        }
        guard let spec = top["spec"] else {
            if kind == "ServiceEntry" || kind == "VirtualService" || kind == "DestinationRule" {
                error(document.line, "spec", "required field missing")
                return nil
            }
            if kind == "PeerAuthentication" {
                resource.spec = .peerAuthentication(PeerAuthentication(selector: nil, mode: nil, portLevel: [:]))
            }
            return resource
        }
        switch kind {
        case "ServiceEntry":
            guard let se = serviceEntry(spec) else { return nil }
            resource.spec = .serviceEntry(se)
        case "VirtualService":
            guard let vs = virtualService(spec) else { return nil }
            resource.spec = .virtualService(vs)
        case "DestinationRule":
            guard let dr = destinationRule(spec) else { return nil }
            resource.spec = .destinationRule(dr)
        case "PeerAuthentication":
            refuseDryRun(top["metadata"])
            guard let pa = peerAuthentication(spec) else { return nil }
            resource.spec = .peerAuthentication(pa)
        default:
            _ = object(spec, allowed: nil)  // kept as written; checked when compiled
        }
        return resource
    }

    // MARK: Hosts

    /// A short name (no dot, not a wildcard) becomes name.<namespace of this resource>.svc.cluster.local.
    func expandHost(_ host: String) -> String {
        let h = host.lowercased()
        if h == "*" || h.contains(".") || h.contains(":") { return h }
        return "\(h).\(namespace).svc.cluster.local"
    }

    private func host(_ f: Field, wildcard: Bool) -> String? {
        guard let s = string(f) else { return nil }
        if !Self.isValidHost(s, wildcard: wildcard) {
            error(f, "invalid host \"\(s)\"" + (wildcard ? "" : " (no wildcard here)"))
            return nil
        }
        return expandHost(s)
    }

    static func isValidHost(_ s: String, wildcard: Bool) -> Bool {
        if s == "*" { return wildcard }
        var rest = Substring(s)
        if rest.hasPrefix("*.") {
            guard wildcard else { return false }
            rest = rest.dropFirst(2)
        }
        if rest.isEmpty || rest.count > 253 { return false }
        for label in rest.split(separator: ".", omittingEmptySubsequences: false) {
            if label.isEmpty || label.count > 63 { return false }
            for c in label.utf8 {
                let ok = (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c == 45 || c == 95
                if !ok { return false }
            }
        }
        return true
    }

    // MARK: ServiceEntry

    private func serviceEntry(_ f: Field) -> ServiceEntry? {
        guard let o = object(f, allowed: ["hosts", "addresses", "ports", "location", "resolution", "endpoints",
                                          "workloadSelector", "exportTo", "subjectAltNames"]) else { return nil }
        var hosts: [String] = []
        var marks: [Mark] = []
        if let h = o["hosts"] {
            for item in list(h) {
                if let s = host(item, wildcard: true) {
                    hosts.append(s)
                    marks.append(item.mark)
                }
            }
            if list(h).isEmpty { error(h, "at least one host is required") }
        } else {
            error(f.node.line, "spec.hosts", "required field missing")
        }
        var ports: [ServiceEntry.Port] = []
        var portNames: Set<String> = []
        var portNumbers: Set<UInt16> = []
        for p in items(o["ports"]) {
            guard let po = object(p, allowed: ["number", "protocol", "name", "targetPort"]) else { continue }
            guard let n = po["number"], let number = port(n) else {
                if po["number"] == nil { error(p, "number: required field missing") }
                continue
            }
            let name = po["name"].flatMap { string($0) } ?? ""
            if po["name"] == nil { error(p, "name: required field missing") }
            let proto = po["protocol"].flatMap { string($0) }
            if let pr = po["protocol"], let v = proto, !Self.protocols.contains(v.uppercased()) {
                error(pr, "unknown protocol \"\(v)\" (\(Self.protocols.sorted().joined(separator: ", ")))")
            }
            let target = po["targetPort"].flatMap { port($0) }
            if !name.isEmpty, !portNames.insert(name).inserted { error(po["name"]!, "duplicate port name \"\(name)\"") }
            if !portNumbers.insert(number).inserted { error(n, "duplicate port number \(number)") }
            ports.append(.init(number: number, protocol: proto, name: name, targetPort: target))
        }
        // No `ports` is valid in Istio (the entry then routes nothing by port; a sidecar has no listener for it).
        let location = o["location"].flatMap { enumeration($0, ServiceEntry.Location.self) } ?? .MESH_EXTERNAL
        let resolution = o["resolution"].flatMap { enumeration($0, ServiceEntry.Resolution.self) } ?? .NONE
        var endpoints: [ServiceEntry.Endpoint] = []
        for e in items(o["endpoints"]) {
            guard let eo = object(e, allowed: ["address", "ports", "labels", "network", "locality", "weight",
                                              "serviceAccount"]) else { continue }
            let address = eo["address"].flatMap { string($0) } ?? ""
            if eo["address"] == nil, resolution != .DNS, resolution != .DNS_ROUND_ROBIN {
                error(e, "address: required field missing")
            }
            if let a = eo["address"], resolution == .STATIC, !address.hasPrefix("unix://"),
               IPAddress(parsing: address) == nil {
                error(a, "resolution STATIC needs an IP address, got \"\(address)\"")
            }
            var epPorts: [String: UInt16] = [:]
            if let pm = eo["ports"] {
                for (k, v) in map(pm) {
                    if !portNames.contains(k.name) { error(v, "no port named \"\(k.name)\" in spec.ports") }
                    if let n = port(v) { epPorts[k.name] = n }
                }
            }
            let labels = eo["labels"].map { self.stringMap($0) } ?? [:]
            let weight = eo["weight"].flatMap { integer($0, min: 0, max: Int(UInt32.max)) }.map(UInt32.init)
            endpoints.append(.init(address: address, ports: epPorts, labels: labels, weight: weight,
                                   network: eo["network"].flatMap { string($0) },
                                   locality: eo["locality"].flatMap { string($0) },
                                   serviceAccount: eo["serviceAccount"].flatMap { string($0) }, mark: e.mark))
        }
        if resolution == .STATIC, endpoints.isEmpty, o["workloadSelector"] == nil {
            error(f.node.line, "spec.endpoints", "resolution STATIC needs endpoints")
        }
        // Istio's rules (pkg/config/validation: ValidateServiceEntry).
        if let w = o["workloadSelector"] {
            if let wo = object(w, allowed: ["labels"]), let l = wo["labels"] {
                for (k, v) in pairs(l) where k.name.contains("*") || (string(v) ?? "").contains("*") {
                    error(v, "wildcard is not supported in selector labels")
                }
            }
            if o["endpoints"] != nil { error(w, "workloadSelector and endpoints are mutually exclusive") }
        }
        if resolution == .NONE, !endpoints.isEmpty, let e = o["endpoints"] {
            error(e, "no endpoints may be given with resolution NONE")
        }
        if resolution == .DNS_ROUND_ROBIN, endpoints.count > 1, let e = o["endpoints"] {
            error(e, "resolution DNS_ROUND_ROBIN takes at most one endpoint, got \(endpoints.count)")
        }
        if resolution == .DNS || resolution == .DNS_ROUND_ROBIN {
            if endpoints.isEmpty, let h = o["hosts"] {
                for item in list(h) where (string(item) ?? "").hasPrefix("*") {
                    error(item, "a wildcard host needs endpoints with resolution \(resolution.rawValue) (the host itself is resolved)")
                }
            }
            if let a = o["addresses"] {
                for item in list(a) where (string(item) ?? "").contains("/") {
                    error(item, "a CIDR address is allowed only with resolution NONE or STATIC")
                }
            }
        }
        return ServiceEntry(hosts: hosts, hostMarks: marks, addresses: o["addresses"].map { self.stringList($0) } ?? [],
                            ports: ports, location: location, resolution: resolution, endpoints: endpoints,
                            exportTo: o["exportTo"].map { self.stringList($0) } ?? [],
                            subjectAltNames: o["subjectAltNames"].map { self.stringList($0) } ?? [])
    }

    static let protocols: Set<String> = ["HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "UDP"]

    // MARK: VirtualService

    private func virtualService(_ f: Field) -> VirtualService? {
        guard let o = object(f, allowed: ["hosts", "gateways", "http", "tls", "tcp", "exportTo"]) else { return nil }
        var hosts: [String] = []
        var marks: [Mark] = []
        for item in items(o["hosts"]) {
            if let s = host(item, wildcard: true) {
                // Istio refuses a VirtualService that names one host twice (also as a short and a full name).
                if hosts.contains(s) { error(item, "duplicate host \"\(s)\"") }
                hosts.append(s)
                marks.append(item.mark)
            }
        }
        if o["hosts"] == nil || hosts.isEmpty && items(o["hosts"]).isEmpty {
            error(o["hosts"]?.line ?? f.node.line, "spec.hosts", "at least one host is required")
        }
        let http = items(o["http"]).compactMap(httpRoute)
        let tcp = items(o["tcp"]).compactMap { tcpRoute($0, tls: false) }
        let tls = items(o["tls"]).compactMap { tcpRoute($0, tls: true) }
        if o["http"] == nil, o["tcp"] == nil, o["tls"] == nil {
            error(f.node.line, "spec", "needs http, tcp or tls routes")
        }
        return VirtualService(hosts: hosts, hostMarks: marks, gateways: o["gateways"].map { self.stringList($0) } ?? [],
                              http: http, tcp: tcp, tls: tls, exportTo: o["exportTo"].map { self.stringList($0) } ?? [])
    }

    private func httpRoute(_ f: Field) -> HTTPRoute? {
        guard let o = object(f, allowed: ["name", "match", "route", "redirect", "directResponse", "delegate",
                                          "rewrite", "timeout", "retries", "fault", "mirror", "mirrors",
                                          "mirrorPercentage", "mirrorPercent", "mirror_percent", "corsPolicy",
                                          "headers"]) else { return nil }
        let matches = items(o["match"]).compactMap(matchRequest)
        var route: [HTTPRouteDestination] = []
        let before = diagnostics.count
        for d in items(o["route"]) {
            guard let dobj = object(d, allowed: ["destination", "weight", "headers"]) else { continue }
            guard let dest = dobj["destination"].flatMap(destination) else {
                if dobj["destination"] == nil { error(d, "destination: required field missing") }
                continue
            }
            let weight = dobj["weight"].flatMap { integer($0, min: 0, max: Int(Int32.max)) }
            route.append(.init(destination: dest, weight: weight, headers: dobj["headers"].flatMap(headers),
                               mark: d.mark))
        }
        if let r = o["route"] { checkWeights(route, r, valid: diagnostics.count == before) }
        let redirect = o["redirect"].flatMap(redirect)
        var direct: HTTPDirectResponse?
        if let dr = o["directResponse"], let d = object(dr, allowed: ["status", "body"]) {
            let status = d["status"].flatMap { integer($0, min: 200, max: 599) }
            if d["status"] == nil { error(dr, "status: required field missing") }
            var body: [UInt8]?
            if let b = d["body"], let bo = object(b, allowed: ["string", "bytes"]) {
                if let s = bo["string"].flatMap({ string($0) }) { body = Array(s.utf8) }
                if let bf = bo["bytes"], let s = string(bf) {
                    if let decoded = Base64.decode(s) { body = decoded } else { error(bf, "not valid base64") }
                }
                if bo["string"] != nil, bo["bytes"] != nil { error(b, "set string or bytes, not both") }
                // Istio's limits: 1 MB at most, a warning above 100 KB.
                if let n = body?.count {
                    if n > 1_000_000 {
                        error(b, "body is \(n) bytes; at most 1000000 (1 MB) are allowed")
                    } else if n > 100_000 {
                        warning(b, "body is \(n) bytes; a body above 100 KB is kept in every sidecar's memory")
                    }
                }
            }
            if let status { direct = HTTPDirectResponse(status: status, body: body) }
        }
        let actions = [o["route"] != nil, o["redirect"] != nil, o["directResponse"] != nil, o["delegate"] != nil]
            .filter { $0 }.count
        if actions == 0 {
            error(f, "needs one of route, redirect, directResponse or delegate")
        } else if actions > 1 {
            error(f, "route, redirect, directResponse and delegate are mutually exclusive")
        }
        if let d = o["delegate"] {
            _ = object(d, allowed: ["name", "namespace"])
            warning(d, "delegate is not supported yet; this route answers 404 until it is")
        }
        var rewrite: HTTPRewrite?
        if let rw = o["rewrite"], let r = object(rw, allowed: ["uri", "authority", "uriRegexRewrite"]) {
            var rr = HTTPRewrite(uri: r["uri"].flatMap { string($0) }, authority: r["authority"].flatMap { string($0) })
            if let rx = r["uriRegexRewrite"], let x = object(rx, allowed: ["match", "rewrite"]) {
                let m = x["match"].flatMap { string($0) }
                let w = x["rewrite"].flatMap { string($0) }
                var valid = false
                if let m, let mf = x["match"] {
                    // Istio refuses an empty match or rewrite ("requires both Rewrite and Match").
                    if m.isEmpty { error(mf, "must not be empty") } else { valid = checkRegex(m, mf) }
                }
                if let w, let wf = x["rewrite"], w.isEmpty { error(wf, "must not be empty") }
                if x["match"] == nil { error(rx, "match: required field missing") }
                if x["rewrite"] == nil { error(rx, "rewrite: required field missing") }
                if let m, let w {
                    rr.uriRegexRewrite = (m, w)
                    if valid, let wf = x["rewrite"] {
                        for problem in RegexRewrite.problems(match: m, rewrite: w) { warning(wf, problem) }
                    }
                }
                if r["uri"] != nil { error(rx, "uri and uriRegexRewrite are mutually exclusive") }
            }
            if o["redirect"] != nil { error(rw, "rewrite cannot be combined with redirect") }
            rewrite = rr
        }
        let timeout = o["timeout"].flatMap { duration($0, minimum: .zero) }
        var retries: HTTPRetry?
        if let rf = o["retries"], let r = object(rf, allowed: ["attempts", "perTryTimeout", "retryOn",
                                                               "retryRemoteLocalities", "retryIgnorePreviousHosts",
                                                               "backoff"]) {
            let attempts = r["attempts"].flatMap { integer($0, min: 0, max: Int(Int32.max)) } ?? 0
            var retryOn: [String] = []
            if let ro = r["retryOn"], let s = string(ro) {
                for token in s.split(separator: ",").map({ $0.trimmingSpaces }) where !token.isEmpty {
                    if Int(token) == nil, !Self.retryOnPolicies.contains(token) {
                        error(ro, "unknown retryOn policy \"\(token)\"")
                    }
                    if token == "retriable-headers" {
                        warning(ro, "retriable-headers retries on the headers of a list Istio's retries cannot give: it matches nothing")
                    }
                    retryOn.append(token)
                }
            }
            retries = HTTPRetry(attempts: attempts,
                                perTryTimeout: r["perTryTimeout"].flatMap { duration($0, minimum: .milliseconds(1)) },
                                retryOn: retryOn,
                                retryRemoteLocalities: r["retryRemoteLocalities"].flatMap(bool),
                                retryIgnorePreviousHosts: r["retryIgnorePreviousHosts"].flatMap(bool),
                                backoff: r["backoff"].flatMap { duration($0, minimum: .milliseconds(1)) })
        }
        var fault: HTTPFaultInjection?
        if let ff = o["fault"], let fo = object(ff, allowed: ["delay", "abort"]) {
            var fi = HTTPFaultInjection()
            if let df = fo["delay"], let d = object(df, allowed: ["fixedDelay", "exponentialDelay", "percentage",
                                                                  "percent"]) {
                if d["exponentialDelay"] != nil { error(d["exponentialDelay"]!, "exponentialDelay is not supported") }
                if let fd = d["fixedDelay"].flatMap({ duration($0, minimum: .milliseconds(1)) }) {
                    fi.delay = .init(fixedDelay: fd, percentage: percentage(d))
                } else if d["fixedDelay"] == nil {
                    error(df, "fixedDelay: required field missing")
                }
            }
            if let af = fo["abort"], let a = object(af, allowed: ["httpStatus", "grpcStatus", "http2Error",
                                                                  "percentage"]) {
                let status = a["httpStatus"].flatMap { integer($0, min: 200, max: 599) }
                let grpc = a["grpcStatus"].flatMap { string($0) }
                if let g = grpc, !Self.grpcCodes.contains(g) { error(a["grpcStatus"]!, "unknown gRPC status \"\(g)\"") }
                if a["httpStatus"] == nil, a["grpcStatus"] == nil { error(af, "needs httpStatus or grpcStatus") }
                fi.abort = .init(httpStatus: status, grpcStatus: grpc, percentage: percentage(a))
            }
            if fo["delay"] == nil, fo["abort"] == nil { error(ff, "needs delay or abort") }
            if o["route"] == nil { warning(ff, "fault applies to routes that forward (route); Tern ignores it with redirect, directResponse or delegate") }
            fault = fi
        }
        var mirrors: [HTTPMirror] = []
        if let m = o["mirror"], let d = destination(m) {
            var pct: Double?
            if let mp = o["mirrorPercentage"] { pct = percentValue(mp) }
            if let mp = o["mirrorPercent"] ?? o["mirror_percent"] {
                pct = integer(mp, min: 0, max: 100).map(Double.init)
            }
            mirrors.append(HTTPMirror(destination: d, percentage: pct))
        }
        for mf in items(o["mirrors"]) {
            guard let mo = object(mf, allowed: ["destination", "percentage"]) else { continue }
            guard let d = mo["destination"].flatMap(destination) else {
                if mo["destination"] == nil { error(mf, "destination: required field missing") }
                continue
            }
            mirrors.append(HTTPMirror(destination: d, percentage: mo["percentage"].flatMap(percentValue)))
        }
        if o["mirror"] != nil, o["mirrors"] != nil { error(o["mirrors"]!, "mirror and mirrors are mutually exclusive") }
        let cors = o["corsPolicy"].flatMap(corsPolicy)
        if let cf = o["corsPolicy"], o["route"] == nil {
            warning(cf, "corsPolicy applies to routes that forward (route), as Envoy's CORS filter; Tern ignores it with redirect, directResponse or delegate")
        }
        return HTTPRoute(name: o["name"].flatMap { string($0) }, match: matches, route: route, redirect: redirect,
                         directResponse: direct, rewrite: rewrite, timeout: timeout, retries: retries, fault: fault,
                         mirrors: mirrors, corsPolicy: cors, headers: o["headers"].flatMap(headers), mark: f.mark)
    }

    /// `corsPolicy`, with Istio's checks (`validateCORSPolicy`): origins that match something, methods Istio knows
    /// (or `*`), header names that are tokens (or `*`), a `maxAge` of whole seconds.
    private func corsPolicy(_ cf: Field) -> CorsPolicy? {
        guard let c = object(cf, allowed: ["allowOrigins", "allowOrigin", "allowMethods", "allowHeaders",
                                           "exposeHeaders", "maxAge", "allowCredentials", "unmatchedPreflights"])
        else { return nil }
        var origins: [StringMatch] = []
        for of in items(c["allowOrigins"]) {
            guard let m = stringMatch(of, presence: false) else { continue }
            switch m {
            case .exact(""), .prefix(""), .regex(""): error(of, "'' is not a valid match type for CORS allow origins")
            default: break
            }
            origins.append(m)
        }
        if let legacy = c["allowOrigin"] {
            // Istio reads the deprecated list (exact origins) only when allowOrigins is empty.
            if origins.isEmpty {
                warning(legacy, "allowOrigin is deprecated; use allowOrigins")
                origins = stringList(legacy).map { .exact($0) }
            } else {
                warning(legacy, "allowOrigin is deprecated and ignored: allowOrigins is set")
            }
        }
        let methods = c["allowMethods"].map { self.stringList($0) } ?? []
        if let mf = c["allowMethods"] {
            for m in methods where !Self.corsMethods.contains(m) { error(mf, "\"\(m)\" is not a supported HTTP method") }
        }
        func headerNames(_ key: String) -> [String] {
            guard let hf = c[key] else { return [] }
            let names = stringList(hf)
            for n in names where n != "*" && !Self.isToken(n) {
                error(hf, n.isEmpty ? "header name cannot be empty" : "header name \(n) is not a valid header name")
            }
            return names
        }
        var maxAge: TernDuration?
        if let af = c["maxAge"], let d = duration(af, minimum: .milliseconds(1)) {
            if d.nanoseconds % 1_000_000_000 != 0 {
                error(af, "max_age duration is accurate only to seconds precision")
            } else {
                maxAge = d
            }
        }
        let unmatched = c["unmatchedPreflights"].flatMap { string($0) }
        if let u = unmatched, u != "FORWARD", u != "IGNORE", u != "UNSPECIFIED" {
            error(c["unmatchedPreflights"]!, "must be FORWARD or IGNORE, got \"\(u)\"")
        }
        return CorsPolicy(allowOrigins: origins, allowMethods: methods, allowHeaders: headerNames("allowHeaders"),
                          exposeHeaders: headerNames("exposeHeaders"), maxAge: maxAge,
                          allowCredentials: c["allowCredentials"].flatMap(bool), unmatchedPreflights: unmatched)
    }

    /// The methods Istio accepts in `allowMethods` (Go's net/http names, and `*`).
    static let corsMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"]

    /// An RFC 9110 §5.6.2 token: what Istio accepts as a header name in a CORS policy.
    static func isToken(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) || "!#$%&'*+-.^_`|~".utf8.contains(b)
        }
    }

    static let retryOnPolicies: Set<String> = [
        "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx", "refused-stream",
        "retriable-status-codes", "retriable-headers", "envoy-ratelimited", "http3-post-connect-failure",
        "cancelled", "deadline-exceeded", "resource-exhausted", "internal", "unavailable",
    ]
    static let grpcCodes = Set(FaultFacts.grpcCodes)

    /// Istio's rule: weights ≥ 0 (checked per field) and, with several destinations, not all 0. `valid`: the
    /// destinations decoded without error (else the sum says nothing).
    private func checkWeights<T>(_ route: [T], _ f: Field, valid: Bool) where T: WeightedDestination {
        guard valid else { return }
        if route.isEmpty { error(f, "at least one destination is required") }
        if route.count > 1, route.allSatisfy({ ($0.weight ?? 0) == 0 }) {
            error(f, "weights must not all be 0 when there are several destinations")
        }
    }

    private func percentage(_ o: Fields) -> Double? {
        if let p = o["percentage"] { return percentValue(p) }
        if let p = o["percent"] {
            warning(p, "percent is deprecated; use percentage: {value: N}")
            return integer(p, min: 0, max: 100).map(Double.init)
        }
        return nil
    }

    private func percentValue(_ f: Field) -> Double? {
        guard let o = object(f, allowed: ["value"]), let v = o["value"] else {
            if case .mapping = f.node.kind { error(f, "value: required field missing") }
            return nil
        }
        guard let d = double(v) else { return nil }
        if d < 0 || d > 100 { error(v, "must be between 0 and 100, got \(v.node.scalar ?? "")") ; return nil }
        return d
    }

    private func matchRequest(_ f: Field) -> HTTPMatchRequest? {
        guard let o = object(f, allowed: ["name", "uri", "scheme", "method", "authority", "headers", "withoutHeaders",
                                          "queryParams", "ignoreUriCase", "port", "sourceLabels", "gateways",
                                          "sourceNamespace", "statPrefix"]) else { return nil }
        func headerMap(_ key: String) -> [(name: String, match: StringMatch)] {
            var out: [(name: String, match: StringMatch)] = []
            for (k, v) in pairs(o[key]) {
                if key != "queryParams", k.name != k.name.lowercased() {
                    error(k.line, k.path, "header names must be lowercase")
                    continue
                }
                if let m = stringMatch(v, presence: true) { out.append((k.name, m)) }
            }
            return out
        }
        let uri = o["uri"].flatMap { stringMatch($0, presence: false) }
        let ignoreCase = o["ignoreUriCase"].flatMap(bool) ?? false
        if ignoreCase, case .regex = uri, let f = o["ignoreUriCase"] {
            warning(f, "ignoreUriCase applies to exact and prefix only; write (?i) in the regex")
        }
        return HTTPMatchRequest(
            name: o["name"].flatMap { string($0) }, uri: uri,
            scheme: o["scheme"].flatMap { stringMatch($0, presence: false) },
            method: o["method"].flatMap { stringMatch($0, presence: false) },
            authority: o["authority"].flatMap { stringMatch($0, presence: false) },
            headers: headerMap("headers"), withoutHeaders: headerMap("withoutHeaders"),
            queryParams: headerMap("queryParams"), ignoreUriCase: ignoreCase, port: o["port"].flatMap(port),
            sourceLabels: o["sourceLabels"].map { self.stringMap($0) } ?? [:],
            sourceNamespace: o["sourceNamespace"].flatMap { string($0) },
            gateways: o["gateways"].map { self.stringList($0) } ?? [], statPrefix: o["statPrefix"].flatMap { string($0) },
            mark: f.mark)
    }

    /// `{exact|prefix|regex: S}`; `{}` is presence where `presence` is allowed (headers, query parameters).
    private func stringMatch(_ f: Field, presence: Bool) -> StringMatch? {
        guard let o = object(f, allowed: ["exact", "prefix", "regex"]) else { return nil }
        let set = ["exact", "prefix", "regex"].filter { o[$0] != nil }
        if set.isEmpty {
            if presence { return .present }
            error(f, "needs one of exact, prefix or regex")
            return nil
        }
        if set.count > 1 {
            error(f, "exact, prefix and regex are mutually exclusive")
            return nil
        }
        let key = set[0]
        guard let v = o[key], let s = string(v) else { return nil }
        switch key {
        case "exact": return .exact(s)
        case "prefix":
            if s.isEmpty && !presence { error(v, "prefix must not be empty") }
            return .prefix(s)
        default:
            if presence, s == "*" { return .present }  // Istio special-cases a regex of exactly "*"
            return checkRegex(s, v) ? .regex(s) : nil
        }
    }

    /// A regex as Envoy takes it (RE2 syntax, within its program-size limit) and Istio validates it.
    @discardableResult
    private func checkRegex(_ pattern: String, _ f: Field) -> Bool {
        switch CompiledRegex.compile(pattern) {
        case .success: return true
        case .failure(let e):
            error(f, e.message)
            return false
        }
    }

    private func destination(_ f: Field) -> Destination? {
        guard let o = object(f, allowed: ["host", "subset", "port"]) else { return nil }
        guard let hf = o["host"], let h = host(hf, wildcard: false) else {
            if o["host"] == nil { error(f, "host: required field missing") }
            return nil
        }
        var p: UInt16?
        if let pf = o["port"], let po = object(pf, allowed: ["number"]) {
            p = po["number"].flatMap(port)
            if po["number"] == nil { error(pf, "number: required field missing") }
        }
        return Destination(host: h, subset: o["subset"].flatMap { string($0) }, port: p, mark: hf.mark,
                           subsetMark: o["subset"]?.mark, portMark: o["port"]?.mark)
    }

    private func headers(_ f: Field) -> Headers? {
        guard let o = object(f, allowed: ["request", "response"]) else { return nil }
        func ops(_ key: String) -> HeaderOperations {
            var h = HeaderOperations()
            guard let g = o[key], let go = object(g, allowed: ["set", "add", "remove"]) else { return h }
            h.set = go["set"].map { self.map($0) }?.compactMap { k, v in string(v).map { (k.name.lowercased(), $0) } } ?? []
            h.add = go["add"].map { self.map($0) }?.compactMap { k, v in string(v).map { (k.name.lowercased(), $0) } } ?? []
            h.remove = (go["remove"].map { self.stringList($0) } ?? []).map { $0.lowercased() }
            for name in h.set.map(\.name) + h.add.map(\.name) + h.remove where Self.protectedHeaders.contains(name) {
                error(g, "header \"\(name)\" cannot be changed")
            }
            return h
        }
        var h = Headers()
        h.request = ops("request")
        h.response = ops("response")
        return h
    }

    static let protectedHeaders: Set<String> = [
        "host", ":authority", ":path", ":method", ":scheme", "content-length", "transfer-encoding", "connection",
    ]

    private func redirect(_ f: Field) -> HTTPRedirect? {
        guard let o = object(f, allowed: ["uri", "prefixRewrite", "authority", "port", "derivePort", "scheme",
                                          "redirectCode"]) else { return nil }
        let code = o["redirectCode"].flatMap { integer($0, min: 0, max: 999) } ?? 301
        if let c = o["redirectCode"], ![301, 302, 303, 307, 308].contains(code) {
            error(c, "must be 301, 302, 303, 307 or 308, got \(code)")
        }
        if o["uri"] != nil, o["prefixRewrite"] != nil { error(f, "uri and prefixRewrite are mutually exclusive") }
        if o["port"] != nil, o["derivePort"] != nil { error(f, "port and derivePort are mutually exclusive") }
        return HTTPRedirect(uri: o["uri"].flatMap { string($0) }, prefixRewrite: o["prefixRewrite"].flatMap { string($0) },
                            authority: o["authority"].flatMap { string($0) }, port: o["port"].flatMap(port),
                            derivePort: o["derivePort"].flatMap { enumeration($0, HTTPRedirect.DerivePort.self) },
                            scheme: o["scheme"].flatMap { string($0) }, redirectCode: code)
    }

    private func tcpRoute(_ f: Field, tls: Bool) -> TCPRoute? {
        guard let o = object(f, allowed: ["match", "route"]) else { return nil }
        var matches: [L4Match] = []
        for m in items(o["match"]) {
            let allowed: Set<String> = tls
                ? ["sniHosts", "destinationSubnets", "port", "sourceLabels", "gateways", "sourceNamespace"]
                : ["destinationSubnets", "port", "sourceLabels", "gateways", "sourceNamespace", "sourceSubnet"]
            guard let mo = object(m, allowed: allowed) else { continue }
            let sni = mo["sniHosts"].map { self.stringList($0) } ?? []
            if tls, sni.isEmpty { error(m, "sniHosts: required field missing") }
            var subnets: [CIDRRange] = []
            for item in items(mo["destinationSubnets"]) {
                guard let s = string(item) else { continue }
                do throws(CIDRRange.ParseError) {
                    subnets.append(try CIDRRange(parsing: s))
                } catch {
                    self.error(item, error.description)
                }
            }
            matches.append(L4Match(destinationSubnets: subnets,
                                   port: mo["port"].flatMap(port), sniHosts: sni,
                                   sourceLabels: mo["sourceLabels"].map { self.stringMap($0) } ?? [:],
                                   sourceNamespace: mo["sourceNamespace"].flatMap { string($0) },
                                   gateways: mo["gateways"].map { self.stringList($0) } ?? []))
        }
        var route: [RouteDestination] = []
        let before = diagnostics.count
        for d in items(o["route"]) {
            guard let dobj = object(d, allowed: ["destination", "weight"]) else { continue }
            guard let dest = dobj["destination"].flatMap(destination) else {
                if dobj["destination"] == nil { error(d, "destination: required field missing") }
                continue
            }
            route.append(.init(destination: dest, weight: dobj["weight"].flatMap { integer($0, min: 0, max: Int(Int32.max)) },
                               mark: d.mark))
        }
        if let r = o["route"] { checkWeights(route, r, valid: diagnostics.count == before) } else { error(f, "route: required field missing") }
        return TCPRoute(match: matches, route: route, mark: f.mark)
    }

    // MARK: DestinationRule

    private func destinationRule(_ f: Field) -> DestinationRule? {
        guard let o = object(f, allowed: ["host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"]) else {
            return nil
        }
        guard let hf = o["host"], let h = host(hf, wildcard: true) else {
            if o["host"] == nil { error(f.node.line, "spec.host", "required field missing") }
            return nil
        }
        var subsets: [Subset] = []
        var names: Set<String> = []
        for s in items(o["subsets"]) {
            guard let so = object(s, allowed: ["name", "labels", "trafficPolicy"]) else { continue }
            guard let nf = so["name"], let name = string(nf) else {
                if so["name"] == nil { error(s, "name: required field missing") }
                continue
            }
            if !names.insert(name).inserted { error(nf, "duplicate subset name \"\(name)\"") }
            subsets.append(Subset(name: name, labels: so["labels"].map { self.stringMap($0) } ?? [:],
                                  trafficPolicy: so["trafficPolicy"].flatMap { trafficPolicy($0, portLevel: false) },
                                  mark: s.mark))
        }
        return DestinationRule(host: h, hostMark: hf.mark,
                               trafficPolicy: o["trafficPolicy"].flatMap { trafficPolicy($0, portLevel: true) },
                               subsets: subsets, exportTo: o["exportTo"].map { self.stringList($0) } ?? [])
    }

    private func trafficPolicy(_ f: Field, portLevel: Bool) -> TrafficPolicy? {
        guard let o = object(f, allowed: ["loadBalancer", "connectionPool", "outlierDetection", "tls",
                                          "portLevelSettings", "tunnel", "proxyProtocol", "retryBudget"]) else {
            return nil
        }
        var ports: [(port: UInt16, blocks: PolicyBlocks)] = []
        for p in items(o["portLevelSettings"]) {
            guard let po = object(p, allowed: ["port", "loadBalancer", "connectionPool", "outlierDetection", "tls"])
            else { continue }
            guard let pf = po["port"], let pp = object(pf, allowed: ["number"]), let n = pp["number"].flatMap(port)
            else {
                if po["port"] == nil { error(p, "port: required field missing") }
                continue
            }
            ports.append((n, blocks(po)))
        }
        if !portLevel, let p = o["portLevelSettings"] { _ = p }
        if let t = o["tunnel"], let to = object(t, allowed: ["protocol", "targetHost", "targetPort"]) {
            notActedOn(t)
            if to["targetHost"] == nil { error(t, "targetHost: required field missing") }
            if to["targetPort"] == nil { error(t, "targetPort: required field missing") }
            _ = to["targetPort"].flatMap(port)
        }
        if let pp = o["proxyProtocol"], let po = object(pp, allowed: ["version"]) {
            notActedOn(pp)
            if let v = po["version"], let s = string(v), s != "V1", s != "V2" { error(v, "must be V1 or V2, got \"\(s)\"") }
        }
        var budget: RetryBudget? = nil
        if let rb = o["retryBudget"], let ro = object(rb, allowed: ["percent", "minRetryConcurrency", "budgetInterval"]) {
            var b = RetryBudget()
            if let p = ro["percent"].flatMap(percentValue) { b.percent = p }
            if let m = ro["minRetryConcurrency"].flatMap({ integer($0, min: 0, max: Int(UInt32.max)) }) { b.minRetryConcurrency = m }
            // A budget over recent requests rather than those in flight now: Tern counts only those in flight.
            if let i = ro["budgetInterval"], let d = duration(i, minimum: .zero), d.nanoseconds > 0 { notActedOn(i) }
            budget = b
        }
        return TrafficPolicy(blocks: blocks(o), portLevelSettings: ports, retryBudget: budget)
    }

    private func blocks(_ o: Fields) -> PolicyBlocks {
        let b = PolicyBlocks(loadBalancer: o["loadBalancer"].flatMap(loadBalancer),
                             connectionPool: o["connectionPool"].flatMap(connectionPool),
                             outlierDetection: o["outlierDetection"].flatMap(outlierDetection),
                             tls: o["tls"].flatMap(clientTLS))
        // Istio's warning: failover moves traffic only as outlier detection ejects endpoints.
        if o["outlierDetection"] == nil, let f = o["loadBalancer"], let l = b.loadBalancer?.locality,
           !l.failover.isEmpty || !l.failoverPriority.isEmpty {
            warning(f, "outlier detection policy must be provided for failover (Istio's warning): localityLbSetting "
                + "failover and failoverPriority rank endpoints only where outlierDetection applies")
        }
        return b
    }

    private func loadBalancer(_ f: Field) -> LoadBalancerSettings? {
        guard let o = object(f, allowed: ["simple", "consistentHash", "localityLbSetting", "zoneAwareLbSetting",
                                          "warmupDurationSecs", "warmup", "backendUtilization"]) else { return nil }
        var lb = LoadBalancerSettings()
        if let s = o["simple"] {
            lb.simple = enumeration(s, LoadBalancerSettings.Simple.self)
            if lb.simple == .LEAST_CONN { warning(s, "LEAST_CONN is deprecated; use LEAST_REQUEST (same policy)") }
            if lb.simple == .PASSTHROUGH { error(s, "PASSTHROUGH is not supported by Tern") }
        }
        if let ch = o["consistentHash"], let c = object(ch, allowed: ["httpHeaderName", "httpCookie", "useSourceIp",
                                                                     "httpQueryParameterName", "ringHash", "maglev",
                                                                     "minimumRingSize"]) {
            var keys: [LoadBalancerSettings.HashKey] = []
            if let h = c["httpHeaderName"].flatMap({ string($0) }) { keys.append(.header(h.lowercased())) }
            if let cf = c["httpCookie"], let co = object(cf, allowed: ["name", "path", "ttl", "attributes"]) {
                for a in items(co["attributes"]) {
                    guard let ao = object(a, allowed: ["name", "value"]) else { continue }
                    if ao["name"] == nil { error(a, "name: required field missing") } else { _ = ao["name"].flatMap { string($0) } }
                    _ = ao["value"].flatMap { string($0) }
                }
                if let attributes = co["attributes"] { notActedOn(attributes) }
                if let n = co["name"].flatMap({ string($0) }) {
                    keys.append(.cookie(name: n, path: co["path"].flatMap { string($0) },
                                        ttl: co["ttl"].flatMap { duration($0, minimum: .zero) }))
                } else if co["name"] == nil {
                    error(cf, "name: required field missing")
                }
            }
            if let u = c["useSourceIp"], bool(u) == true { keys.append(.sourceIP) }
            if let q = c["httpQueryParameterName"].flatMap({ string($0) }) { keys.append(.queryParameter(q)) }
            if keys.count != 1 {
                error(ch, keys.isEmpty
                      ? "needs one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName"
                      : "httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName are mutually exclusive")
            }
            var algorithm = LoadBalancerSettings.HashAlgorithm.ringHash(minimumRingSize: 1024)
            if let m = c["minimumRingSize"] {
                warning(m, "minimumRingSize is deprecated; use ringHash: {minimumRingSize: N}")
                if let n = integer(m, min: 1, max: 8_388_608) { algorithm = .ringHash(minimumRingSize: UInt64(n)) }
            }
            if let r = c["ringHash"], let ro = object(r, allowed: ["minimumRingSize"]) {
                let n = ro["minimumRingSize"].flatMap { integer($0, min: 1, max: 8_388_608) } ?? 1024
                algorithm = .ringHash(minimumRingSize: UInt64(n))
            }
            if let m = c["maglev"], let mo = object(m, allowed: ["tableSize"]) {
                let n = mo["tableSize"].flatMap { integer($0, min: 1, max: 5_000_011) } ?? 65537
                if let t = mo["tableSize"], !Self.isPrime(n) { error(t, "must be a prime number, got \(n)") }
                algorithm = .maglev(tableSize: UInt64(n))
                if c["ringHash"] != nil { error(ch, "ringHash and maglev are mutually exclusive") }
            }
            if keys.count == 1 { lb.consistentHash = .init(key: keys[0], algorithm: algorithm) }
            if o["simple"] != nil { error(f, "simple and consistentHash are mutually exclusive") }
        }
        if let w = o["warmupDurationSecs"], let d = duration(w, minimum: .zero), d.nanoseconds > 0 {
            lb.warmup = .init(duration: d)
        }
        if let w = o["warmup"], let wo = object(w, allowed: ["duration", "minimumPercent", "aggression"]) {
            // Istio: duration required and at least 1 ms; minimumPercent within [0, 100]; aggression at least 1.
            var warmup: LoadBalancerSettings.Warmup? = nil
            if let d = wo["duration"] {
                warmup = duration(d, minimum: .milliseconds(1)).map { .init(duration: $0) }
            } else {
                error(w, "duration: required field missing")
            }
            if let m = wo["minimumPercent"], let v = double(m) {
                if (0...100).contains(v) { warmup?.minimumPercent = v } else { error(m, "must be between 0 and 100, got \(v)") }
            }
            if let a = wo["aggression"], let v = double(a) {
                if v >= 1 { warmup?.aggression = v } else { error(a, "must be at least 1, got \(v)") }
            }
            if o["warmupDurationSecs"] != nil { error(w, "warmup and warmupDurationSecs are mutually exclusive") }
            lb.warmup = warmup
        }
        if let l = o["localityLbSetting"] { lb.locality = localityLB(l, zoneAware: false) }
        if let z = o["zoneAwareLbSetting"] {
            notActedOn(z)
            _ = localityLB(z, zoneAware: true)
        }
        if let b = o["backendUtilization"] {
            // Newer than the Istio API this build was checked against: its fields are accepted unchecked.
            _ = object(b, allowed: nil)
            notActedOn(b)
        }
        return lb
    }

    /// The labels a locality stands for (Kubernetes' node topology labels and Istio's subzone).
    static let localityLabels: Set<String> = ["topology.kubernetes.io/region", "topology.kubernetes.io/zone",
                                              "topology.istio.io/subzone"]

    /// `localityLbSetting` ({enabled, distribute[{from, to}], failover[{from, to}], failoverPriority[]}) or
    /// `zoneAwareLbSetting` ({enabled, failover[{from, to}], failoverPriority[], minClusterSize}).
    private func localityLB(_ f: Field, zoneAware: Bool) -> LoadBalancerSettings.LocalityLbSetting? {
        let keys: Set<String> = zoneAware ? ["enabled", "failover", "failoverPriority", "minClusterSize"]
            : ["enabled", "distribute", "failover", "failoverPriority"]
        guard let o = object(f, allowed: keys) else { return nil }
        var setting = LoadBalancerSettings.LocalityLbSetting()
        setting.enabled = o["enabled"].flatMap(bool)
        for d in items(o["distribute"]) {
            guard let dobj = object(d, allowed: ["from", "to"]) else { continue }
            var entry = LoadBalancerSettings.LocalityLbSetting.Distribute(from: dobj["from"].flatMap { string($0) } ?? "*", to: [])
            if let t = dobj["to"] {
                // Istio: the weights of one `from` add up to 100.
                var total = 0, valid = true
                for (k, v) in pairs(t) {
                    if let w = integer(v, min: 0, max: 100) {
                        total += w
                        entry.to.append((k.name, UInt32(w)))
                    } else {
                        valid = false
                    }
                }
                if valid && total != 100 { error(t, "weights must add up to 100, got \(total)") }
            }
            setting.distribute.append(entry)
        }
        for fo in items(o["failover"]) {
            guard let fobj = object(fo, allowed: ["from", "to"]) else { continue }
            let from = fobj["from"].flatMap { string($0) }, to = fobj["to"].flatMap { string($0) }
            if let from, from == to { error(fo, "from and to must differ, both \"\(from)\"") }
            if let from, let to { setting.failover.append((from, to)) }
        }
        if let p = o["failoverPriority"] {
            setting.failoverPriority = stringList(p)
            // Istio's rule: with failover rules, the locality's own labels cannot rank endpoints a second time.
            if !setting.failover.isEmpty, let l = setting.failoverPriority.first(where: Self.localityLabels.contains) {
                error(p, "cannot set failover together with the topology label \"\(l)\" in failoverPriority")
            }
        }
        if let m = o["minClusterSize"] { _ = integer(m, min: 0, max: Int.max) }
        if o["distribute"] != nil, o["failover"] != nil { error(f, "distribute and failover are mutually exclusive") }
        return setting
    }

    static func isPrime(_ n: Int) -> Bool {
        if n < 2 { return false }
        var i = 2
        while i * i <= n {
            if n % i == 0 { return false }
            i += 1
        }
        return true
    }

    private func connectionPool(_ f: Field) -> ConnectionPoolSettings? {
        guard let o = object(f, allowed: ["tcp", "http"]) else { return nil }
        var c = ConnectionPoolSettings()
        let maxInt = Int(Int32.max)
        if let t = o["tcp"], let to = object(t, allowed: ["maxConnections", "connectTimeout", "tcpKeepalive",
                                                          "maxConnectionDuration", "idleTimeout"]) {
            c.maxConnections = to["maxConnections"].flatMap { integer($0, min: 0, max: maxInt) }
            c.connectTimeout = to["connectTimeout"].flatMap { duration($0, minimum: .milliseconds(1)) }
            c.maxConnectionDuration = to["maxConnectionDuration"].flatMap { duration($0, minimum: .milliseconds(1)) }
            c.tcpIdleTimeout = to["idleTimeout"].flatMap { duration($0, minimum: .zero) }
            if let k = to["tcpKeepalive"], let ko = object(k, allowed: ["probes", "time", "interval"]) {
                c.tcpKeepalive = true
                c.tcpKeepaliveProbes = ko["probes"].flatMap { integer($0, min: 0, max: maxInt) }
                c.tcpKeepaliveTime = ko["time"].flatMap { duration($0, minimum: .milliseconds(1)) }
                c.tcpKeepaliveInterval = ko["interval"].flatMap { duration($0, minimum: .milliseconds(1)) }
            }
        }
        if let h = o["http"], let ho = object(h, allowed: ["http1MaxPendingRequests", "http2MaxRequests",
                                                           "maxRequestsPerConnection", "maxRetries", "idleTimeout",
                                                           "h2UpgradePolicy", "useClientProtocol",
                                                           "maxConcurrentStreams", "http2KeepAlive"]) {
            if let k = ho["http2KeepAlive"], let ko = object(k, allowed: ["interval", "timeout"]) {
                c.http2KeepAliveInterval = ko["interval"].flatMap { duration($0, minimum: .milliseconds(1)) }
                c.http2KeepAliveTimeout = ko["timeout"].flatMap { duration($0, minimum: .milliseconds(1)) }
            }
            c.http1MaxPendingRequests = ho["http1MaxPendingRequests"].flatMap { integer($0, min: 0, max: maxInt) }
            c.http2MaxRequests = ho["http2MaxRequests"].flatMap { integer($0, min: 0, max: maxInt) }
            c.maxRequestsPerConnection = ho["maxRequestsPerConnection"].flatMap { integer($0, min: 0, max: maxInt) }
            c.maxRetries = ho["maxRetries"].flatMap { integer($0, min: 0, max: maxInt) }
            c.idleTimeout = ho["idleTimeout"].flatMap { duration($0, minimum: .zero) }
            c.maxConcurrentStreams = ho["maxConcurrentStreams"].flatMap { integer($0, min: 0, max: maxInt) }
            c.useClientProtocol = ho["useClientProtocol"].flatMap(bool)
            if let u = ho["h2UpgradePolicy"], let s = string(u) {
                if !["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"].contains(s) {
                    error(u, "must be DEFAULT, DO_NOT_UPGRADE or UPGRADE, got \"\(s)\"")
                }
                c.h2UpgradePolicy = s
            }
        }
        return c
    }

    private func outlierDetection(_ f: Field) -> OutlierDetection? {
        guard let o = object(f, allowed: ["consecutiveErrors", "consecutiveGatewayErrors", "consecutive5xxErrors",
                                          "consecutiveLocalOriginFailures", "splitExternalLocalOriginErrors",
                                          "interval", "baseEjectionTime", "maxEjectionPercent", "minHealthPercent",
                                          "outlierDetectionHttpErrorCodes"])
        else { return nil }
        let errorCodes = items(o["outlierDetectionHttpErrorCodes"]).compactMap { integer($0, min: 100, max: 599) }
        let maxInt = Int(UInt32.max)
        var d = OutlierDetection()
        if let c = o["consecutiveErrors"] {
            warning(c, "consecutiveErrors is deprecated; use consecutive5xxErrors or consecutiveGatewayErrors")
            d.consecutiveGatewayErrors = integer(c, min: 0, max: maxInt)
        }
        if let c = o["consecutiveGatewayErrors"] { d.consecutiveGatewayErrors = integer(c, min: 0, max: maxInt) }
        d.consecutive5xxErrors = o["consecutive5xxErrors"].flatMap { integer($0, min: 0, max: maxInt) }
        d.consecutiveLocalOriginFailures = o["consecutiveLocalOriginFailures"].flatMap { integer($0, min: 0, max: maxInt) }
        d.splitExternalLocalOriginErrors = o["splitExternalLocalOriginErrors"].flatMap(bool)
        d.interval = o["interval"].flatMap { duration($0, minimum: .milliseconds(1)) }
        d.baseEjectionTime = o["baseEjectionTime"].flatMap { duration($0, minimum: .milliseconds(1)) }
        d.maxEjectionPercent = o["maxEjectionPercent"].flatMap { integer($0, min: 0, max: 100) }
        d.minHealthPercent = o["minHealthPercent"].flatMap { integer($0, min: 0, max: 100) }
        d.errorCodes = errorCodes
        return d
    }

    private func clientTLS(_ f: Field) -> ClientTLSSettings? {
        guard let o = object(f, allowed: ["mode", "clientCertificate", "privateKey", "caCertificates", "caCrl",
                                          "credentialName", "subjectAltNames", "sni", "insecureSkipVerify"]) else {
            return nil
        }
        let mode = o["mode"].flatMap { enumeration($0, ClientTLSSettings.Mode.self) } ?? .DISABLE
        let t = ClientTLSSettings(mode: mode, clientCertificate: o["clientCertificate"].flatMap { string($0) },
                                  privateKey: o["privateKey"].flatMap { string($0) },
                                  caCertificates: o["caCertificates"].flatMap { string($0) },
                                  caCrl: o["caCrl"].flatMap { string($0) },
                                  credentialName: o["credentialName"].flatMap { string($0) },
                                  subjectAltNames: o["subjectAltNames"].map { self.stringList($0) } ?? [],
                                  sni: o["sni"].flatMap { string($0) },
                                  insecureSkipVerify: o["insecureSkipVerify"].flatMap(bool))
        if mode == .MUTUAL, t.credentialName == nil, t.clientCertificate == nil || t.privateKey == nil {
            error(f, "mode MUTUAL needs clientCertificate and privateKey (or credentialName)")
        }
        return t
    }

    // MARK: Field access

    /// A value with the line of its key and its path from the resource root.
    struct Field {
        var node: YAMLNode
        var line: Int
        var path: String
        init(_ node: YAMLNode, line: Int, path: String) {
            self.node = node
            self.line = line
            self.path = path
        }
        var mark: Mark { Mark(line: line, path: path) }
    }

    /// The fields of a mapping by key.
    struct Fields {
        var byKey: [String: Field]
        subscript(_ key: String) -> Field? { byKey[key] }
    }

    func child(_ parent: String, _ key: String) -> String { parent.isEmpty ? key : parent + "." + key }

    /// The fields of a mapping; `allowed` nil accepts any key. Unknown and repeated keys are errors at their line.
    func object(_ f: Field, allowed: Set<String>?) -> Fields? {
        guard case .mapping(let pairs) = f.node.kind else {
            if f.node.isNull, allowed != nil { return Fields(byKey: [:]) }
            typeError(f, expected: "a map")
            return nil
        }
        var out: [String: Field] = [:]
        for (k, v) in pairs {
            let key = k.scalar ?? ""
            let path = child(f.path, key)
            if let allowed, !allowed.contains(key) {
                error(k.line, path, "unknown field")
                continue
            }
            if out[key] != nil {
                error(k.line, path, "repeated key")
                continue
            }
            out[key] = Field(v, line: k.line, path: path)
        }
        return Fields(byKey: out)
    }

    func items(_ f: Field?) -> [Field] { f.map { list($0) } ?? [] }
    func pairs(_ f: Field?) -> [(key: (name: String, line: Int, path: String), value: Field)] {
        f.map { map($0) } ?? []
    }

    func list(_ f: Field) -> [Field] {
        guard case .sequence(let items) = f.node.kind else {
            if f.node.isNull { return [] }
            typeError(f, expected: "a list")
            return []
        }
        return items.enumerated().map { i, n in Field(n, line: n.line, path: "\(f.path)[\(i)]") }
    }

    /// A map with arbitrary keys (labels, header matches), in order.
    func map(_ f: Field) -> [(key: (name: String, line: Int, path: String), value: Field)] {
        guard case .mapping(let pairs) = f.node.kind else {
            if f.node.isNull { return [] }
            typeError(f, expected: "a map")
            return []
        }
        var seen: Set<String> = []
        var out: [(key: (name: String, line: Int, path: String), value: Field)] = []
        for (k, v) in pairs {
            let key = k.scalar ?? ""
            let path = child(f.path, key)
            if !seen.insert(key).inserted {
                error(k.line, path, "repeated key")
                continue
            }
            out.append(((key, k.line, path), Field(v, line: k.line, path: path)))
        }
        return out
    }

    func string(_ f: Field) -> String? {
        guard case .scalar(let s, _) = f.node.kind, !f.node.isNull else {
            typeError(f, expected: "a string")
            return nil
        }
        return s
    }

    func stringList(_ f: Field) -> [String] { list(f).compactMap { string($0) } }

    func stringMap(_ f: Field) -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in map(f) {
            if let s = string(v) { out[k.name] = s }
        }
        return out
    }

    func integer(_ f: Field, min: Int, max: Int) -> Int? {
        guard case .scalar(let s, let style) = f.node.kind, style == .plain, let v = Int(s) else {
            typeError(f, expected: "an integer")
            return nil
        }
        if v < min || v > max {
            error(f, "must be between \(min) and \(max), got \(v)")
            return nil
        }
        return v
    }

    func port(_ f: Field) -> UInt16? { integer(f, min: 1, max: 65535).map { UInt16($0) } }

    func double(_ f: Field) -> Double? {
        guard case .scalar(let s, let style) = f.node.kind, style == .plain, let v = Double(s), v.isFinite else {
            typeError(f, expected: "a number")
            return nil
        }
        return v
    }

    func bool(_ f: Field) -> Bool? {
        if case .scalar(let s, .plain) = f.node.kind {
            if ["true", "True", "TRUE"].contains(s) { return true }
            if ["false", "False", "FALSE"].contains(s) { return false }
        }
        typeError(f, expected: "a boolean")
        return nil
    }

    /// A Go-style duration string ("30s", "1.5s", "100ms", "1h30m"), at least `minimum`.
    func duration(_ f: Field, minimum: TernDuration) -> TernDuration? {
        guard case .scalar(let s, _) = f.node.kind, !f.node.isNull else {
            typeError(f, expected: "a duration such as \"30s\"")
            return nil
        }
        guard let d = TernDuration(parsing: s) else {
            error(f, "invalid duration \"\(s)\" (write e.g. 30s, 1.5s, 100ms, 1h30m)")
            return nil
        }
        if d < minimum {
            error(f, "must be at least \(minimum), got \(s)")
            return nil
        }
        return d
    }

    func enumeration<E: RawRepresentable>(_ f: Field, _ type: E.Type) -> E? where E.RawValue == String {
        guard let s = string(f) else { return nil }
        guard let e = E(rawValue: s) else {
            error(f, "unknown value \"\(s)\"")
            return nil
        }
        return e
    }

    // MARK: Diagnostics

    func typeError(_ f: Field, expected: String) {
        error(f, "expected \(expected), got \(f.node.typeName)")
    }

    func error(_ f: Field, _ message: String) { error(f.line, f.path, message) }
    /// A field Tern decodes and checks but does not act on yet (the resilience issue's): said, never silent.
    func notActedOn(_ f: Field) {
        warning(f, "not acted on by Tern yet: decoded and checked, but it has no effect")
    }

    func warning(_ f: Field, _ message: String) {
        diagnostics.append(Diagnostic(.warning, file: file, line: f.line, resource: resourceLabel, path: f.path,
                                      message: message))
    }

    func error(_ line: Int, _ path: String, _ message: String) {
        diagnostics.append(Diagnostic(.error, file: file, line: line, resource: resourceLabel, path: path,
                                      message: message))
    }
}

protocol WeightedDestination {
    var weight: Int? { get }
}
extension HTTPRouteDestination: WeightedDestination {}
extension RouteDestination: WeightedDestination {}

extension Substring {
    var trimmingSpaces: String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
