// Decoding PeerAuthentication and AuthorizationPolicy, with the checks Istio's validation makes (pkg/config/
// validation: ValidatePeerAuthentication, ValidateAuthorizationPolicy and security.ValidateAttribute), each reported
// at its line and field.

extension ResourceDecoder {
    static let ruleKeys: Set<String> = ["from", "to", "when"]
    static let sourceKeys: Set<String> = [
        "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces", "notNamespaces",
        "serviceAccounts", "notServiceAccounts", "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks",
    ]
    static let operationKeys: Set<String> = ["hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"]

    // MARK: PeerAuthentication

    func peerAuthentication(_ f: Field) -> PeerAuthentication? {
        guard let o = object(f, allowed: ["selector", "mtls", "portLevelMtls"]) else { return nil }
        let selector = o["selector"].map { labelSelector($0) }
        var mode: PeerAuthentication.Mode? = nil
        if let m = o["mtls"], let mo = object(m, allowed: ["mode"]) {
            mode = mo["mode"].flatMap { enumeration($0, PeerAuthentication.Mode.self) }
        }
        var portLevel: [UInt16: PeerAuthentication.Mode] = [:]
        if let p = o["portLevelMtls"] {
            if selector == nil { error(p, "portLevelMtls requires a selector (Istio applies it to a workload's ports only)") }
            for (key, value) in pairs(p) {
                guard let n = UInt16(key.name), n > 0 else {
                    error(key.line, key.path, "port must be a number between 1 and 65535, got \"\(key.name)\"")
                    continue
                }
                guard let vo = object(value, allowed: ["mode"]) else { continue }
                guard let v = vo["mode"] else {
                    error(value, "mode: required field missing")
                    continue
                }
                if let m = enumeration(v, PeerAuthentication.Mode.self) { portLevel[n] = m }
            }
            if pairs(p).isEmpty { error(p, "portLevelMtls must name at least one port") }
        }
        return PeerAuthentication(selector: selector, mode: mode, portLevel: portLevel)
    }

    /// `selector: {matchLabels: {…}}` (an empty one selects as an absent one would).
    private func labelSelector(_ f: Field) -> LabelSelector {
        guard let o = object(f, allowed: ["matchLabels"]), let m = o["matchLabels"] else { return [:] }
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
        if let meta = metadata, let mo = object(meta, allowed: nil), let a = mo["annotations"] {
            for (key, value) in pairs(a) where key.name == "istio.io/dry-run" {
                guard let v = string(value) else { continue }
                switch v.lowercased() {
                case "true": dryRun = true
                case "false": dryRun = false
                default: error(value, "istio.io/dry-run must be \"true\" or \"false\", got \"\(v)\"")
                }
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
            warning(refs, "targets Gateway or Service resources (waypoints, gateways): a sidecar is neither, so this policy applies to none")
        }
        let action = o["action"].flatMap { enumeration($0, AuthorizationPolicy.Action.self) } ?? .ALLOW
        var provider: String? = nil
        if let p = o["provider"] {
            if let po = object(p, allowed: ["name"]) {
                provider = po["name"].flatMap { string($0) }
                if po["name"] == nil { error(p, "name: required field missing") }
            }
            if action != .CUSTOM { error(p, "provider is only for action CUSTOM") }
        } else if action == .CUSTOM {
            error(o["action"]!, "action CUSTOM requires a provider")
        }
        if dryRun && action == .CUSTOM, let a = o["action"] {
            error(a, "the istio.io/dry-run annotation is not supported with action CUSTOM")
        }
        var rules: [AuthorizationPolicy.Rule]? = nil
        if let r = o["rules"] {
            rules = list(r).compactMap { rule($0, action: action) }
        }
        return AuthorizationPolicy(selector: selector, hasTargetRefs: refs != nil, action: action, provider: provider,
                                   rules: rules, dryRun: dryRun, mark: mark)
    }

    private func rule(_ f: Field, action: AuthorizationPolicy.Action) -> AuthorizationPolicy.Rule? {
        guard let o = object(f, allowed: Self.ruleKeys) else { return nil }
        var from: [AuthorizationPolicy.Source]? = nil
        if let fr = o["from"] {
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
        if let t = o["to"] {
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
        if let w = o["when"] {
            when = list(w).compactMap { condition($0) }
        }
        if action == .CUSTOM, from?.contains(where: { $0.requestPrincipals != nil || $0.notRequestPrincipals != nil }) == true {
            // (Istio's rule too: an external authorizer sees the request before any JWT is checked.)
            error(f, "a CUSTOM policy cannot use requestPrincipals")
        }
        return AuthorizationPolicy.Rule(from: from, to: to, when: when, mark: f.mark)
    }

    private func source(_ f: Field) -> AuthorizationPolicy.Source? {
        guard let o = object(f, allowed: Self.sourceKeys) else { return nil }
        if o.byKey.isEmpty { error(f, "a source must set at least one field") }
        func values(_ key: String, _ check: ((Field, String) -> Void)? = nil) -> [AuthorizationPolicy.Value]? {
            guard let v = o[key] else { return nil }
            return valueList(v, check)
        }
        let ip = checkCIDR
        let account: (Field, String) -> Void = { f, s in
            let parts = s.split(separator: "/", omittingEmptySubsequences: false)
            if s.contains("*") || parts.count > 2 || parts.contains(where: { $0.isEmpty }) {
                self.error(f, "a service account is \"namespace/name\" or \"name\" (no wildcards), got \"\(s)\"")
            }
        }
        let source = AuthorizationPolicy.Source(
            principals: values("principals"), notPrincipals: values("notPrincipals"),
            requestPrincipals: values("requestPrincipals"), notRequestPrincipals: values("notRequestPrincipals"),
            namespaces: values("namespaces"), notNamespaces: values("notNamespaces"),
            serviceAccounts: values("serviceAccounts", account), notServiceAccounts: values("notServiceAccounts", account),
            ipBlocks: values("ipBlocks", ip), notIpBlocks: values("notIpBlocks", ip),
            remoteIpBlocks: values("remoteIpBlocks", ip), notRemoteIpBlocks: values("notRemoteIpBlocks", ip),
            mark: f.mark)
        if (source.serviceAccounts != nil || source.notServiceAccounts != nil)
            && (source.principals != nil || source.notPrincipals != nil || source.namespaces != nil || source.notNamespaces != nil) {
            error(f, "serviceAccounts cannot be combined with principals or namespaces in one source")
        }
        return source
    }

    private func operation(_ f: Field) -> AuthorizationPolicy.Operation? {
        guard let o = object(f, allowed: Self.operationKeys) else { return nil }
        if o.byKey.isEmpty { error(f, "an operation must set at least one field") }
        func values(_ key: String, _ check: ((Field, String) -> Void)? = nil) -> [AuthorizationPolicy.Value]? {
            guard let v = o[key] else { return nil }
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

    private func condition(_ f: Field) -> AuthorizationPolicy.Condition? {
        guard let o = object(f, allowed: ["key", "values", "notValues"]) else { return nil }
        guard let k = o["key"], let key = string(k) else {
            if o["key"] == nil { error(f, "key: required field missing") }
            return nil
        }
        guard let attribute = AuthorizationAttribute(key: key) else {
            error(k, "unknown attribute \"\(key)\" (request.headers[NAME], source.ip, remote.ip, source.namespace, source.principal, source.serviceAccount, destination.ip, destination.port, connection.sni, request.auth.*)")
            return nil
        }
        if o["values"] == nil && o["notValues"] == nil { error(f, "at least one of values or notValues must be set") }
        let check: ((Field, String) -> Void)?
        switch attribute {
        case .sourceIP, .remoteIP, .destinationIP: check = checkCIDR
        case .destinationPort: check = checkPort
        default:
            check = nil
        }
        if case .experimental = attribute { warning(k, "an Envoy filter-state attribute: Tern has no such state, so this condition never holds") }
        return AuthorizationPolicy.Condition(key: key, values: o["values"].map { valueList($0, check) },
                                             notValues: o["notValues"].map { valueList($0, check) }, mark: f.mark)
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
        if !Self.isPort(s) { error(f, "invalid port \"\(s)\" (a number between 1 and 65535)") }
    }

    static func isPort(_ s: String) -> Bool {
        guard let n = Int(s), s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return false }
        return n >= 1 && n <= 65535
    }
}
