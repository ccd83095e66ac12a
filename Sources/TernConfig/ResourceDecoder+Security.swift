// Decoding PeerAuthentication and AuthorizationPolicy, with the checks Istio's validation makes (pkg/config/
// validation: ValidatePeerAuthentication, ValidateAuthorizationPolicy and security.ValidateAttribute), each reported
// at its line and field.

extension ResourceDecoder {
    static let ruleKeys: Set<String> = ["from", "to", "when"]
    static let sourceKeys: Set<String> = [
        "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces", "notNamespaces",
        "serviceAccounts", "notServiceAccounts", "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks",
        "trustDomains", "notTrustDomains",
    ]
    /// Source fields that read the peer's identity: a CUSTOM policy may not use them (Istio's rule).
    static let identityKeys: Set<String> = [
        "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces", "notNamespaces",
        "serviceAccounts", "notServiceAccounts", "trustDomains", "notTrustDomains",
    ]
    static let operationKeys: Set<String> = ["hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"]

    // MARK: PeerAuthentication

    /// Istio refuses the dry-run annotation on anything but an AuthorizationPolicy.
    func refuseDryRun(_ metadata: Field?) {
        guard let meta = metadata, let mo = object(meta, allowed: nil), let a = mo["annotations"] else { return }
        for (key, _) in pairs(a) where key.name == "istio.io/dry-run" {
            error(key.line, key.path, "the istio.io/dry-run annotation is only for AuthorizationPolicy")
        }
    }

    func peerAuthentication(_ f: Field) -> PeerAuthentication? {
        guard let o = object(f, allowed: ["selector", "mtls", "portLevelMtls"]) else { return nil }
        let selector = o["selector"].map { labelSelector($0) }
        var mode: PeerAuthentication.Mode? = nil
        if let m = o["mtls"], let mo = object(m, allowed: ["mode"]) {
            mode = mo["mode"].flatMap { enumeration($0, PeerAuthentication.Mode.self) }
        }
        var portLevel: [UInt16: PeerAuthentication.Mode] = [:]
        if let p = o["portLevelMtls"] {
            if selector?.isEmpty ?? true {
                error(p, "portLevelMtls requires a selector with labels (a mesh or namespace policy cannot have port level mTLS)")
            }
            for (key, value) in pairs(p) {
                guard let n = UInt16(key.name), n > 0 else {
                    error(key.line, key.path, "port must be a number between 1 and 65535, got \"\(key.name)\"")
                    continue
                }
                guard let vo = object(value, allowed: ["mode"]) else { continue }
                // (No mode: UNSET, as the API's default.)
                portLevel[n] = vo["mode"].flatMap { enumeration($0, PeerAuthentication.Mode.self) } ?? .UNSET
            }
            if pairs(p).isEmpty { error(p, "portLevelMtls must name at least one port") }
        }
        return PeerAuthentication(selector: selector, mode: mode, portLevel: portLevel)
    }

    /// `selector: {matchLabels: {…}}` (an empty one selects as an absent one would, with Istio's warning).
    private func labelSelector(_ f: Field) -> LabelSelector {
        guard let o = object(f, allowed: ["matchLabels"]), let m = o["matchLabels"], !pairs(m).isEmpty else {
            warning(f, "workload selector specified without labels: it selects every workload of the namespace")
            return [:]
        }
        var out: LabelSelector = [:]
        for (key, value) in pairs(m) {
            if let why = WorkloadLabels.keyProblem(key.name) {
                error(key.line, key.path, "label key \"\(key.name)\": \(why)")
                continue
            }
            guard let v = string(value) else { continue }
            if let why = WorkloadLabels.valueProblem(v) {
                error(value, "label value \"\(v)\": \(why)")
                continue
            }
            out[key.name] = v
        }
        return out
    }

    // MARK: AuthorizationPolicy

    /// `spec` nil: a policy written without one (as `spec: {}`: ALLOW matching nothing, so it denies all).
    func authorizationPolicy(_ f: Field?, metadata: Field?, documentLine: Int) -> AuthorizationPolicy? {
        var dryRun = false
        var dryRunField: Field? = nil
        if let meta = metadata, let mo = object(meta, allowed: nil), let a = mo["annotations"] {
            for (key, value) in pairs(a) where key.name == "istio.io/dry-run" {
                guard let v = string(value) else { continue }
                // (Go's strconv.ParseBool, as Istio reads it.)
                switch v {
                case "1", "t", "T", "true", "True", "TRUE": dryRun = true
                case "0", "f", "F", "false", "False", "FALSE": dryRun = false
                default: error(value, "istio.io/dry-run must be true or false, got \"\(v)\"")
                }
                dryRunField = value
            }
        }
        let mark = f?.mark ?? Mark(line: documentLine, path: "spec")
        guard let f else {
            return AuthorizationPolicy(selector: nil, hasTargetRefs: false, action: .ALLOW, provider: nil, rules: nil,
                                       dryRun: dryRun, mark: mark)
        }
        guard let o = object(f, allowed: ["selector", "targetRef", "targetRefs", "action", "provider", "rules"]) else {
            return nil
        }
        let selector = o["selector"].map { labelSelector($0) }
        let refs = o["targetRef"] ?? o["targetRefs"]
        if let refs {
            if o["targetRef"] != nil && o["targetRefs"] != nil { error(refs, "only one of targetRef and targetRefs may be set") }
            if o["selector"] != nil { error(refs, "selector and targetRef(s) are mutually exclusive") }
            for ref in o["targetRefs"].map({ list($0) }) ?? [refs] { targetRef(ref) }
            warning(refs, "targets Gateway or Service resources (waypoints, gateways): a sidecar is neither, so this policy applies to none")
        }
        let action = o["action"].flatMap { enumeration($0, AuthorizationPolicy.Action.self) } ?? .ALLOW
        var provider: String? = nil
        if let p = o["provider"] {
            if let po = object(p, allowed: ["name"]) {
                provider = po["name"].flatMap { string($0) }
                if po["name"] == nil || provider?.isEmpty == true { error(p, "provider.name must not be empty") }
            }
            if action != .CUSTOM { error(p, "provider is only for action CUSTOM") }
        } else if action == .CUSTOM {
            error(o["action"]!, "action CUSTOM requires a provider")
        }
        if let d = dryRunField, action != .ALLOW && action != .DENY {
            error(d, "the istio.io/dry-run annotation is only for actions ALLOW and DENY")
        }
        var rules: [AuthorizationPolicy.Rule]? = nil
        if let r = o["rules"], !list(r).isEmpty {
            rules = list(r).compactMap { rule($0, action: action) }
        }
        if rules == nil && (action == .DENY || action == .CUSTOM) {
            error(o["action"] ?? f, "\(action.rawValue) action without rules is meaningless (it matches nothing)")
        }
        return AuthorizationPolicy(selector: selector, hasTargetRefs: refs != nil, action: action, provider: provider,
                                   rules: rules, dryRun: dryRun, mark: mark)
    }

    private func rule(_ f: Field, action: AuthorizationPolicy.Action) -> AuthorizationPolicy.Rule? {
        guard let o = object(f, allowed: Self.ruleKeys) else { return nil }
        // (An empty list is an absent one, as Istio's decoding makes it.)
        var from: [AuthorizationPolicy.Source]? = nil
        if let fr = o["from"], !list(fr).isEmpty {
            from = list(fr).compactMap { item in
                guard let io = object(item, allowed: ["source"]) else { return nil }
                guard let s = io["source"] else {
                    error(item, "source: required field missing")
                    return nil
                }
                return source(s)
            }
        }
        var to: [AuthorizationPolicy.Operation]? = nil
        if let t = o["to"], !list(t).isEmpty {
            to = list(t).compactMap { item in
                guard let io = object(item, allowed: ["operation"]) else { return nil }
                guard let op = io["operation"] else {
                    error(item, "operation: required field missing")
                    return nil
                }
                return operation(op)
            }
        }
        var when: [AuthorizationPolicy.Condition]? = nil
        if let w = o["when"], !list(w).isEmpty {
            when = list(w).compactMap { condition($0, custom: action == .CUSTOM) }
        }
        if action == .CUSTOM, let fr = o["from"] {
            // (Istio's rule: an external authorizer sees the request before the peer's identity or a JWT is checked.)
            for item in list(fr) {
                guard let io = object(item, allowed: nil), let s = io["source"], let so = object(s, allowed: nil) else { continue }
                for key in so.byKey.keys.sorted() where Self.identityKeys.contains(key) {
                    error(so[key]!, "a CUSTOM policy cannot use \(key)")
                }
            }
        }
        return AuthorizationPolicy.Rule(from: from, to: to, when: when, mark: f.mark)
    }

    private func source(_ f: Field) -> AuthorizationPolicy.Source? {
        guard let o = object(f, allowed: Self.sourceKeys) else { return nil }
        func values(_ key: String, _ check: ((Field, String) -> Void)? = nil) -> [AuthorizationPolicy.Value]? {
            guard let v = o[key], !list(v).isEmpty else { return nil }
            return valueList(v, check)
        }
        if !o.byKey.values.contains(where: { !list($0).isEmpty }) { error(f, "a source must set at least one field") }
        for key in ["serviceAccounts", "notServiceAccounts"] {
            if let v = o[key], list(v).count > 16 { error(v, "at most 16 service accounts, got \(list(v).count)") }
        }
        let domain = checkTrustDomain
        let ip = checkCIDR
        let account = checkAccount
        let source = AuthorizationPolicy.Source(
            principals: values("principals"), notPrincipals: values("notPrincipals"),
            requestPrincipals: values("requestPrincipals"), notRequestPrincipals: values("notRequestPrincipals"),
            namespaces: values("namespaces"), notNamespaces: values("notNamespaces"),
            serviceAccounts: values("serviceAccounts", account), notServiceAccounts: values("notServiceAccounts", account),
            ipBlocks: values("ipBlocks", ip), notIpBlocks: values("notIpBlocks", ip),
            remoteIpBlocks: values("remoteIpBlocks", ip), notRemoteIpBlocks: values("notRemoteIpBlocks", ip),
            trustDomains: values("trustDomains", domain), notTrustDomains: values("notTrustDomains", domain),
            mark: f.mark)
        if (source.serviceAccounts != nil || source.notServiceAccounts != nil)
            && (source.principals != nil || source.notPrincipals != nil || source.namespaces != nil || source.notNamespaces != nil) {
            error(f, "serviceAccounts cannot be combined with principals or namespaces in one source")
        }
        return source
    }

    private func operation(_ f: Field) -> AuthorizationPolicy.Operation? {
        guard let o = object(f, allowed: Self.operationKeys) else { return nil }
        if !o.byKey.values.contains(where: { !list($0).isEmpty }) { error(f, "an operation must set at least one field") }
        func values(_ key: String, _ check: ((Field, String) -> Void)? = nil) -> [AuthorizationPolicy.Value]? {
            guard let v = o[key], !list(v).isEmpty else { return nil }
            return valueList(v, check)
        }
        let port = checkPort
        let path: (Field, String) -> Void = { f, s in
            if let why = AuthorizationPathPattern.problem(s) { self.error(f, why) }
        }
        return AuthorizationPolicy.Operation(
            hosts: values("hosts"), notHosts: values("notHosts"), ports: values("ports", port),
            notPorts: values("notPorts", port), methods: values("methods"), notMethods: values("notMethods"),
            paths: values("paths", path), notPaths: values("notPaths", path), mark: f.mark)
    }

    private func condition(_ f: Field, custom: Bool) -> AuthorizationPolicy.Condition? {
        guard let o = object(f, allowed: ["key", "values", "notValues"]) else { return nil }
        guard let k = o["key"], let key = string(k) else {
            if o["key"] == nil { error(f, "key: required field missing") }
            return nil
        }
        guard let attribute = AuthorizationAttribute(key: key) else {
            error(k, "unknown attribute \"\(key)\" (request.headers[NAME], source.ip, remote.ip, source.namespace, source.principal, source.serviceAccount, destination.ip, destination.port, connection.sni, request.auth.*)")
            return nil
        }
        if custom && attribute.readsIdentity { error(k, "a CUSTOM policy cannot use \(key)") }
        let values = o["values"].flatMap { list($0).isEmpty ? nil : $0 }, notValues = o["notValues"].flatMap { list($0).isEmpty ? nil : $0 }
        if values == nil && notValues == nil { error(f, "at least one of values or notValues must be set") }
        let check: ((Field, String) -> Void)?
        switch attribute {
        case .sourceIP, .remoteIP, .destinationIP: check = checkCIDR
        case .destinationPort: check = checkPort
        case .sourceServiceAccount: check = checkAccount
        case .sourceTrustDomain: check = checkTrustDomain
        default:
            check = nil
        }
        if case .experimental = attribute { warning(k, "an Envoy filter-state attribute: Tern has no such state, so this condition never holds") }
        return AuthorizationPolicy.Condition(key: key, values: values.map { valueList($0, check) },
                                             notValues: notValues.map { valueList($0, check) }, mark: f.mark)
    }

    private func checkTrustDomain(_ f: Field, _ s: String) {
        if s.contains("/") { error(f, "a trust domain has no \"/\", got \"\(s)\"") }
        if s.dropFirst().dropLast().contains("*") { error(f, "a '*' in a trust domain is only allowed at its start or end, got \"\(s)\"") }
    }

    private func checkAccount(_ f: Field, _ s: String) {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        if s.contains("*") || parts.count > 2 || parts.contains(where: { $0.isEmpty }) {
            error(f, "a service account is \"namespace/name\" or \"name\" (no wildcards), got \"\(s)\"")
        }
    }

    /// A `targetRef(s)` entry: a Service, ServiceEntry, Gateway or GatewayClass of the policy's namespace.
    private func targetRef(_ f: Field) {
        guard let o = object(f, allowed: ["group", "kind", "name", "namespace"]) else { return }
        let kind = o["kind"].flatMap { string($0) } ?? ""
        let group = o["group"].flatMap { string($0) } ?? ""
        let groups = ["Service": "", "ServiceEntry": "networking.istio.io", "Gateway": "gateway.networking.k8s.io",
                      "GatewayClass": "gateway.networking.k8s.io"]
        if let want = groups[kind] {
            if group != want { error(o["group"] ?? f, "group of a \(kind) target must be \"\(want)\", got \"\(group)\"") }
        } else {
            error(o["kind"] ?? f, "kind must be Service, ServiceEntry, Gateway or GatewayClass, got \"\(kind)\"")
        }
        if (o["name"].flatMap { string($0) } ?? "").isEmpty { error(f, "name: required field missing") }
        if let n = o["namespace"], !(string(n) ?? "").isEmpty { error(n, "namespace must not be set (a policy targets its own namespace)") }
    }

    /// A list of non-empty strings, each checked by `check`.
    private func valueList(_ f: Field, _ check: ((Field, String) -> Void)?) -> [AuthorizationPolicy.Value] {
        var out: [AuthorizationPolicy.Value] = []
        for item in list(f) {
            // (Ports may be written as numbers: Kubernetes would refuse them, but their meaning is plain.)
            guard case .scalar(let s, _) = item.node.kind, !item.node.isNull else {
                _ = string(item)
                continue
            }
            if s.isEmpty {
                error(item, "empty value")
                continue
            }
            check?(item, s)
            out.append(AuthorizationPolicy.Value(text: s, mark: item.mark))
        }
        return out
    }

    private func checkCIDR(_ f: Field, _ s: String) {
        do { _ = try CIDRRange(parsing: s) } catch { self.error(f, "invalid IP address or CIDR \"\(s)\"") }
    }

    private func checkPort(_ f: Field, _ s: String) {
        if !Self.isPort(s) { error(f, "invalid port \"\(s)\" (a number between 0 and 65535)") }
    }

    /// A port as Istio checks it in policies (0 to 65535: ValidatePorts only refuses what is above).
    static func isPort(_ s: String) -> Bool {
        guard let n = Int(s), s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return false }
        return n <= 65535
    }
}
