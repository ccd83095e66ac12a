import TernCore

// AuthorizationPolicy as Istio evaluates it for one workload (istio/istio pilot/pkg/security/authz and Envoy's
// RBAC filter): the policies that select the workload, compiled once per configuration, then per request or
// connection:
//   1. a CUSTOM policy (or one needing a JWT) selects the workload → denied (Tern has neither an external
//      authorizer nor JWT validation: it fails closed, and said so when the configuration loaded);
//   2. any enforced DENY policy matches → denied;
//   3. no enforced ALLOW policy selects the workload → allowed;
//   4. any enforced ALLOW policy matches → allowed; otherwise denied.
// AUDIT policies never change the decision (a match is reported). `istio.io/dry-run` policies are evaluated
// beside, as Envoy's shadow rules are, and only reported.
//
// Scope: a policy in the root namespace without a selector applies to every workload; with one, to the workloads
// of any namespace it selects; elsewhere, to its own namespace's workloads (all, or those its selector selects).
// Within a rule, `from` entries are ORed, `to` entries ORed, `when` conditions ANDed, and the three ANDed; inside a
// source or operation the fields are ANDed and each field's values ORed; `notX` holds when no value matches.
// `rules` absent matches nothing; a rule `{}` matches everything.
//
// On a TCP port (no HTTP request) the HTTP-only fields (hosts, methods, paths, requestPrincipals,
// request.headers / request.auth conditions) cannot be checked: in an ALLOW policy the rules using one are dropped
// (allowing less); in DENY and AUDIT the fields are ignored (denying more), as Istio builds its TCP filters.

/// The workload whose sidecar this is, as policies select it.
public struct SecurityWorkload: Sendable, Equatable {
    public var namespace: String
    public var labels: [String: String]
    public var serviceAccount: String
    /// Istio's root namespace (MeshConfig `rootNamespace`, `istio-system` by default).
    public var rootNamespace: String

    public init(namespace: String, labels: [String: String] = [:], serviceAccount: String = "default",
                rootNamespace: String = "istio-system") {
        self.namespace = namespace
        self.labels = labels
        self.serviceAccount = serviceAccount
        self.rootNamespace = rootNamespace
    }

    /// Whether a policy in `namespace` with `selector` applies to this workload (`peerAuthentication`: selector
    /// policies in the root namespace are ignored, as Istio ignores them for PeerAuthentication).
    public func isSelected(by selector: LabelSelector?, in namespace: String, peerAuthentication: Bool = false) -> Bool {
        if let selector, !selector.isEmpty {
            if namespace == rootNamespace { return !peerAuthentication && matches(selector) }
            return namespace == self.namespace && matches(selector)
        }
        return namespace == rootNamespace || namespace == self.namespace
    }

    private func matches(_ selector: LabelSelector) -> Bool {
        selector.allSatisfy { labels[$0.key] == $0.value }
    }
}

/// What a request or connection is, as the policies read it (a connection's facts, found once when it opens).
public struct AuthorizationFacts: Sendable {
    /// The peer's address (`source.ip`, `ipBlocks`), and the client's as forwarding fields tell it (`remote.ip`,
    /// `remoteIpBlocks`: the peer's without trusted proxies).
    public var source: IPAddress?
    public var remote: IPAddress?
    /// The address and port the connection was made to.
    public var destination: IPAddress?
    public var destinationPort: UInt16
    /// The peer's SPIFFE ID without `spiffe://` (`cluster.local/ns/NS/sa/SA`); empty: none (plaintext, or a
    /// certificate without one).
    public var principal: [UInt8]
    /// The TLS server name the client asked for (empty: none).
    public var serverName: [UInt8]

    public init(source: IPAddress? = nil, remote: IPAddress? = nil, destination: IPAddress? = nil,
                destinationPort: UInt16 = 0, principal: [UInt8] = [], serverName: [UInt8] = []) {
        self.source = source
        self.remote = remote ?? source
        self.destination = destination
        self.destinationPort = destinationPort
        self.principal = principal
        self.serverName = serverName
    }
}

public struct AuthorizationDecision: Sendable, Equatable {
    public var allowed: Bool
    /// The policy that decided (index into `AuthorizationTable.policyNames`): the DENY or fail-closed policy that
    /// denied, the ALLOW policy that allowed; -1: none (no ALLOW policy, or none matched).
    public var policy: Int32
    /// An AUDIT policy matched (index, or -1).
    public var audit: Int32
    /// What the dry-run policies would have decided, had they been enforced with the others (nil: none apply), and
    /// the dry-run policy that decided it.
    public var dryRunAllowed: Bool?
    public var dryRunPolicy: Int32

    static let allowedByDefault = AuthorizationDecision(allowed: true, policy: -1, audit: -1, dryRunAllowed: nil, dryRunPolicy: -1)
}

/// The AuthorizationPolicies that apply to one workload, compiled; immutable, shared by the reactors.
public final class AuthorizationTable: Sendable {
    /// `namespace/name` of each policy applying, for logs and the denial counters (`ns[NS]-policy[NAME]` as
    /// Envoy's RBAC reports it is `envoyName`).
    public let policyNames: [String]
    let failClosed: Int32
    let http: Policies
    let tcp: Policies
    /// Whether any policy applies at all (none: every request is allowed without looking).
    public let isEmpty: Bool

    struct Policies: Sendable {
        var deny = PolicyList()
        var allow = PolicyList()
        var audit = PolicyList()
        /// Enforced ALLOW policies select the workload (then one must match).
        var hasAllow = false
        var dryRunDeny = PolicyList()
        var dryRunAllow = PolicyList()
        var hasDryRunAllow = false
    }

    /// Policies of one action, in reading order, with those that only peers of given principals can match (every
    /// rule names exact `principals`) indexed by those principals: a request looks only at the others and at
    /// those of its own principal, not at every policy (none of them for a peer without one).
    struct PolicyList: Sendable {
        var open: [CompiledPolicy] = []
        var byPrincipal: [[UInt8]: [CompiledPolicy]] = [:]
        var isEmpty = true

        mutating func append(_ p: CompiledPolicy) {
            isEmpty = false
            guard let gate = p.principalGate else { return open.append(p) }
            for principal in gate where byPrincipal[principal]?.last !== p { byPrincipal[principal, default: []].append(p) }
        }

        /// The first policy (in reading order) that matches, or nil.
        func first(_ facts: AuthorizationFacts, _ request: RequestView?, _ scratch: inout [UInt8]) -> Int32? {
            var found: Int32? = nil
            var i = 0
            while i < open.count {
                if open[i].matches(facts, request, &scratch) {
                    found = open[i].index
                    break
                }
                i += 1
            }
            guard !facts.principal.isEmpty, !byPrincipal.isEmpty, let gated = byPrincipal[facts.principal] else { return found }
            i = 0
            while i < gated.count && gated[i].index < (found ?? Int32.max) {
                if gated[i].matches(facts, request, &scratch) { return gated[i].index }
                i += 1
            }
            return found
        }
    }

    init(policyNames: [String], failClosed: Int32, http: Policies, tcp: Policies) {
        self.policyNames = policyNames
        self.failClosed = failClosed
        self.http = http
        self.tcp = tcp
        isEmpty = policyNames.isEmpty
    }

    public static let empty = AuthorizationTable(policyNames: [], failClosed: -1, http: Policies(), tcp: Policies())

    /// Envoy's name for policy `i` in its RBAC reports (`ns[NS]-policy[NAME]-rule[0]`).
    public func envoyName(_ i: Int32) -> String {
        guard i >= 0 && Int(i) < policyNames.count else { return "" }
        let parts = policyNames[Int(i)].split(separator: "/", maxSplits: 1)
        return "ns[\(parts.first ?? "")]-policy[\(parts.count > 1 ? parts[1] : "")]-rule[0]"
    }

    // MARK: Compile

    /// The policies among `resources` that apply to `workload`, compiled; warnings for what Tern cannot enforce.
    public static func compile(_ resources: [Resource], workload: SecurityWorkload) -> (AuthorizationTable, [Diagnostic]) {
        var names: [String] = [], diagnostics: [Diagnostic] = []
        var failClosed: Int32 = -1
        var http = Policies(), tcp = Policies()
        for r in resources {
            guard case .authorizationPolicy(let p) = r.spec, !p.hasTargetRefs,
                  workload.isSelected(by: p.selector, in: r.namespace) else { continue }
            let index = Int32(names.count)
            names.append("\(r.namespace)/\(r.name)")
            let jwt = p.rules?.contains(where: usesJWT) ?? false
            if jwt && (p.dryRun || p.action == .AUDIT) {
                // (Reported, never enforced: it cannot fail anything closed; it is left out.)
                diagnostics.append(Diagnostic(.warning, file: r.file, line: p.mark.line, resource: r.label, path: p.mark.path,
                                              message: "requestPrincipals and request.auth conditions need JWT validation, which Tern does not have: this \(p.dryRun ? "dry-run" : "AUDIT") policy is left out"))
                continue
            }
            if p.action == .CUSTOM || jwt {
                let why = p.action == .CUSTOM
                    ? "action CUSTOM needs an external authorizer (provider \"\(p.provider ?? "")\"), which Tern does not have"
                    : "requestPrincipals and request.auth conditions need JWT validation (RequestAuthentication), which Tern does not have"
                diagnostics.append(Diagnostic(.warning, file: r.file, line: p.mark.line, resource: r.label, path: p.mark.path,
                                              message: "\(why): every request to this workload is denied (failing closed)"))
                if failClosed < 0 { failClosed = index }
                continue
            }
            for tcpPort in [false, true] {
                let compiled = CompiledPolicy(p, index: index, namespace: r.namespace, tcp: tcpPort)
                var set = tcpPort ? tcp : http
                switch (p.action, p.dryRun) {
                case (.DENY, false): set.deny.append(compiled)
                case (.ALLOW, false):
                    set.allow.append(compiled)
                    set.hasAllow = true
                case (.AUDIT, _): set.audit.append(compiled)
                case (.DENY, true): set.dryRunDeny.append(compiled)
                case (.ALLOW, true):
                    set.dryRunAllow.append(compiled)
                    set.hasDryRunAllow = true
                case (.CUSTOM, _): break
                }
                if tcpPort { tcp = set } else { http = set }
            }
        }
        return (AuthorizationTable(policyNames: names, failClosed: failClosed, http: http, tcp: tcp), diagnostics)
    }

    private static func usesJWT(_ rule: AuthorizationPolicy.Rule) -> Bool {
        if rule.from?.contains(where: { $0.requestPrincipals != nil || $0.notRequestPrincipals != nil }) == true { return true }
        return rule.when?.contains(where: { AuthorizationAttribute(key: $0.key) == .requestAuth }) == true
    }

    // MARK: Evaluate

    /// The decision for an HTTP request (`request` read through its view; its path already normalised), on a
    /// connection with `facts`. `scratch` holds a header's values joined when it came more than once (its
    /// capacity kept by the caller: no allocation once it has grown).
    public func evaluate(_ facts: AuthorizationFacts, request: RequestView, scratch: inout [UInt8]) -> AuthorizationDecision {
        guard !isEmpty else { return .allowedByDefault }
        return decide(http, facts, request: request, scratch: &scratch)
    }

    /// The decision for a TCP connection.
    public func evaluate(_ facts: AuthorizationFacts) -> AuthorizationDecision {
        guard !isEmpty else { return .allowedByDefault }
        var scratch: [UInt8] = []
        return decide(tcp, facts, request: nil, scratch: &scratch)
    }

    private func decide(_ set: Policies, _ facts: AuthorizationFacts, request: RequestView?,
                        scratch: inout [UInt8]) -> AuthorizationDecision {
        var d = AuthorizationDecision.allowedByDefault
        if let m = set.audit.first(facts, request, &scratch) { d.audit = m }
        if failClosed >= 0 {
            d.allowed = false
            d.policy = failClosed
        } else if let m = set.deny.first(facts, request, &scratch) {
            d.allowed = false
            d.policy = m
        } else if set.hasAllow {
            if let m = set.allow.first(facts, request, &scratch) {
                d.policy = m
            } else {
                d.allowed = false
            }
        }
        if !set.dryRunDeny.isEmpty || set.hasDryRunAllow {
            // As if the dry-run policies were enforced beside the others.
            if !d.allowed {
                d.dryRunAllowed = false
                d.dryRunPolicy = d.policy
            } else if let m = set.dryRunDeny.first(facts, request, &scratch) {
                d.dryRunAllowed = false
                d.dryRunPolicy = m
            } else if set.hasDryRunAllow || set.hasAllow {
                if d.policy >= 0 {
                    d.dryRunAllowed = true
                    d.dryRunPolicy = d.policy
                } else if let m = set.dryRunAllow.first(facts, request, &scratch) {
                    d.dryRunAllowed = true
                    d.dryRunPolicy = m
                } else {
                    d.dryRunAllowed = false
                }
            } else {
                d.dryRunAllowed = true
            }
        }
        return d
    }

}

// MARK: - Compiled policies

/// Compiled forms are classes: a request walks them without copying their arrays (a struct element read from an
/// array is copied, retaining each array it holds).
final class CompiledPolicy: Sendable {
    let index: Int32
    let rules: [CompiledRule]
    /// The principals that alone can match it, when every rule names exact ones in every source (nil: any peer may).
    let principalGate: [[UInt8]]?

    init(_ p: AuthorizationPolicy, index: Int32, namespace: String, tcp: Bool) {
        self.index = index
        var rules: [CompiledRule] = [], kept: [AuthorizationPolicy.Rule] = []
        for r in p.rules ?? [] {
            // On a TCP port an ALLOW rule that needs the HTTP request is dropped; DENY and AUDIT ignore those fields.
            if tcp && p.action == .ALLOW && CompiledRule.readsHTTP(r) { continue }
            rules.append(CompiledRule(r, namespace: namespace, tcp: tcp))
            kept.append(r)
        }
        self.rules = rules
        principalGate = Self.gate(kept)
    }

    /// Every rule has sources, each of which names exact principals: their union; else nil.
    static func gate(_ rules: [AuthorizationPolicy.Rule]) -> [[UInt8]]? {
        guard !rules.isEmpty else { return nil }
        var out: [[UInt8]] = []
        for r in rules {
            guard let from = r.from, !from.isEmpty else { return nil }
            for source in from {
                guard let values = source.principals, !values.isEmpty,
                      values.allSatisfy({ StringPattern($0.text).kind == .exact }) else { return nil }
                out += values.map { Array($0.text.utf8) }
            }
        }
        return out
    }

    func matches(_ facts: AuthorizationFacts, _ request: RequestView?, _ scratch: inout [UInt8]) -> Bool {
        var i = 0
        while i < rules.count {
            if rules[i].matches(facts, request, &scratch) { return true }
            i += 1
        }
        return false
    }
}

final class CompiledRule: Sendable {
    let from: [CompiledSource]?
    let to: [CompiledOperation]?
    let when: [CompiledCondition]

    init(_ r: AuthorizationPolicy.Rule, namespace: String, tcp: Bool) {
        from = r.from.map { $0.map { CompiledSource($0, namespace: namespace) } }
        to = r.to.map { $0.map { CompiledOperation($0, tcp: tcp) } }
        when = (r.when ?? []).compactMap { c in
            guard let a = AuthorizationAttribute(key: c.key), !(tcp && a.isHTTPOnly) else { return nil }
            return CompiledCondition(c, attribute: a, namespace: namespace)
        }
    }

    static func readsHTTP(_ r: AuthorizationPolicy.Rule) -> Bool {
        if let to = r.to, to.contains(where: { $0.hosts != nil || $0.notHosts != nil || $0.methods != nil
            || $0.notMethods != nil || $0.paths != nil || $0.notPaths != nil }) { return true }
        return r.when?.contains(where: { AuthorizationAttribute(key: $0.key)?.isHTTPOnly == true }) == true
    }

    func matches(_ facts: AuthorizationFacts, _ request: RequestView?, _ scratch: inout [UInt8]) -> Bool {
        if let from {
            var any = false, i = 0
            while i < from.count && !any {
                any = from[i].matches(facts)
                i += 1
            }
            if !any { return false }
        }
        if let to {
            var any = false, i = 0
            while i < to.count && !any {
                any = to[i].matches(facts, request)
                i += 1
            }
            if !any { return false }
        }
        var i = 0
        while i < when.count {
            if !when[i].holds(facts, request, &scratch) { return false }
            i += 1
        }
        return true
    }
}

/// A field's values and its `not` form's: nil when absent.
struct Either<T: Sendable>: Sendable {
    var values: [T]?
    var notValues: [T]?
    var isAbsent: Bool { values == nil && notValues == nil }

    /// The field holds: some value matches (when given) and no `not` value does.
    @inline(__always)
    func holds(_ match: (T) -> Bool) -> Bool {
        if let values {
            var any = false, i = 0
            while i < values.count && !any {
                any = match(values[i])
                i += 1
            }
            if !any { return false }
        }
        if let notValues {
            var i = 0
            while i < notValues.count {
                if match(notValues[i]) { return false }
                i += 1
            }
        }
        return true
    }
}

/// The trust domain of a principal (`TD/ns/NS/sa/SA`): before its first "/" (nil: no principal).
struct PrincipalParts {
    var trustDomain: Range<Int>? = nil

    init(_ p: [UInt8]) {
        guard !p.isEmpty else { return }
        var slash = 0
        while slash < p.count && p[slash] != UInt8(ascii: "/") { slash += 1 }
        trustDomain = 0..<slash
    }
}

final class CompiledSource: Sendable {
    let principals: Either<StringPattern>
    /// Namespaces as Istio matches them: its principal regex `.*/ns/<value, * as .*>/.*`.
    let namespaces: Either<GlobPattern>
    /// `serviceAccounts` (namespace, name) as Istio matches them: `.+/ns/NS/(.+/|)sa/SA(/.+)?`.
    let accounts: Either<ServiceAccount>
    let ipBlocks: Either<CIDRRange>
    let remoteIpBlocks: Either<CIDRRange>
    let trustDomains: Either<StringPattern>

    init(_ s: AuthorizationPolicy.Source, namespace: String) {
        func strings(_ v: [AuthorizationPolicy.Value]?) -> [StringPattern]? { v.map { $0.map { StringPattern($0.text) } } }
        func cidrs(_ v: [AuthorizationPolicy.Value]?) -> [CIDRRange]? { v.map { $0.compactMap { try? CIDRRange(parsing: $0.text) } } }
        func globs(_ v: [AuthorizationPolicy.Value]?) -> [GlobPattern]? { v.map { $0.map { GlobPattern($0.text) } } }
        principals = Either(values: strings(s.principals), notValues: strings(s.notPrincipals))
        namespaces = Either(values: globs(s.namespaces), notValues: globs(s.notNamespaces))
        accounts = Either(values: Self.accountSuffixes(s.serviceAccounts, namespace: namespace),
                          notValues: Self.accountSuffixes(s.notServiceAccounts, namespace: namespace))
        ipBlocks = Either(values: cidrs(s.ipBlocks), notValues: cidrs(s.notIpBlocks))
        remoteIpBlocks = Either(values: cidrs(s.remoteIpBlocks), notValues: cidrs(s.notRemoteIpBlocks))
        trustDomains = Either(values: strings(s.trustDomains), notValues: strings(s.notTrustDomains))
    }

    func matches(_ f: AuthorizationFacts) -> Bool {
        if !principals.isAbsent && !principals.holds({ $0.matches(f.principal.span) }) { return false }
        if !namespaces.isAbsent && !namespaces.holds({ Self.inNamespace(f.principal, $0) }) { return false }
        if !accounts.isAbsent && !accounts.holds({ $0.matches(f.principal) }) { return false }
        if !trustDomains.isAbsent {
            let td = PrincipalParts(f.principal).trustDomain
            if !trustDomains.holds({ p in td.map { p.matches(f.principal.span.extracting($0)) } ?? false }) { return false }
        }
        if !ipBlocks.isAbsent && !ipBlocks.holds({ c in f.source.map { c.contains($0) } ?? false }) { return false }
        if !remoteIpBlocks.isAbsent && !remoteIpBlocks.holds({ c in f.remote.map { c.contains($0) } ?? false }) { return false }
        return true
    }

    /// Service accounts (`ns/sa`, or `sa` of the policy's namespace).
    static func accountSuffixes(_ v: [AuthorizationPolicy.Value]?, namespace: String) -> [ServiceAccount]? {
        v.map { $0.map { value in
            let parts = value.text.split(separator: "/", maxSplits: 1)
            let (ns, sa) = parts.count == 2 ? (String(parts[0]), String(parts[1])) : (namespace, value.text)
            return ServiceAccount(namespace: Array(ns.utf8), name: Array(sa.utf8))
        } }
    }

    /// Istio's namespace match over a principal: `.*/ns/<glob>/.*`, any "/ns/" of it, the glob's `*` crossing "/".
    static func inNamespace(_ p: [UInt8], _ glob: GlobPattern) -> Bool {
        var i = 0
        while i + 4 <= p.count {
            if p[i] == UInt8(ascii: "/") && p[i + 1] == UInt8(ascii: "n") && p[i + 2] == UInt8(ascii: "s") && p[i + 3] == UInt8(ascii: "/") {
                var j = i + 4
                while j < p.count {
                    if p[j] == UInt8(ascii: "/") && glob.matches(p.span, from: i + 4, to: j) { return true }
                    j += 1
                }
            }
            i += 1
        }
        return false
    }
}

final class CompiledOperation: Sendable {
    let hosts: Either<StringPattern>
    let ports: Either<UInt16>
    let methods: Either<StringPattern>
    let paths: Either<AuthorizationPathPattern>

    init(_ o: AuthorizationPolicy.Operation, tcp: Bool) {
        func strings(_ v: [AuthorizationPolicy.Value]?, ignoringCase: Bool = false) -> [StringPattern]? {
            v.map { $0.map { StringPattern($0.text, ignoringCase: ignoringCase) } }
        }
        func ports(_ v: [AuthorizationPolicy.Value]?) -> [UInt16]? { v.map { $0.compactMap { UInt16($0.text) } } }
        self.ports = Either(values: ports(o.ports), notValues: ports(o.notPorts))
        guard !tcp else {
            // (HTTP-only fields: ignored on a TCP port)
            hosts = Either()
            methods = Either()
            paths = Either()
            return
        }
        hosts = Either(values: strings(o.hosts, ignoringCase: true), notValues: strings(o.notHosts, ignoringCase: true))
        methods = Either(values: strings(o.methods), notValues: strings(o.notMethods))
        paths = Either(values: o.paths.map { $0.map { AuthorizationPathPattern($0.text) } },
                       notValues: o.notPaths.map { $0.map { AuthorizationPathPattern($0.text) } })
    }

    func matches(_ f: AuthorizationFacts, _ request: RequestView?) -> Bool {
        if !ports.isAbsent && !ports.holds({ $0 == f.destinationPort }) { return false }
        guard let request else { return true }
        if !methods.isAbsent && !methods.holds({ $0.matches(request.bytes.extracting(request.method)) }) { return false }
        if !paths.isAbsent {
            // (An absolute-form target without a path goes upstream as "/": it is "/" here too.)
            let ok = request.path.isEmpty ? paths.holds({ $0.matches(HostName.root.span) })
                : paths.holds({ $0.matches(request.bytes.extracting(request.path)) })
            if !ok { return false }
        }
        if !hosts.isAbsent {
            // The authority routing and the upstream use (an absolute-form target's, else Host's).
            guard let host = request.authority else { return hosts.values == nil }
            let full = request.bytes.extracting(host)
            let bare = request.bytes.extracting(host.lowerBound..<HostName.withoutPort(request.bytes, host))
            // A pattern without a port matches the Host without its port too; `*` is presence (an empty value too).
            if !hosts.holds({ $0.kind == .presence || $0.matches(full) || (!$0.bytes.contains(UInt8(ascii: ":")) && $0.matches(bare)) }) {
                return false
            }
        }
        return true
    }
}

enum HostName {
    static let bytes: [UInt8] = Array("host".utf8)
    static let root: [UInt8] = [UInt8(ascii: "/")]

    /// Where the host of a Host value ends (before ":port"; an IPv6 literal keeps its colons).
    static func withoutPort(_ b: Span<UInt8>, _ r: Range<Int>) -> Int {
        var i = r.upperBound
        while i > r.lowerBound {
            let c = b[i - 1]
            if c == UInt8(ascii: ":") { return i - 1 }
            if c < UInt8(ascii: "0") || c > UInt8(ascii: "9") { return r.upperBound }
            i -= 1
        }
        return r.upperBound
    }
}

final class CompiledCondition: Sendable {
    let attribute: AuthorizationAttribute
    let strings: Either<StringPattern>
    let cidrs: Either<CIDRRange>
    let ports: Either<UInt16>
    /// `source.namespace` values as Istio matches them (CompiledSource.inNamespace), `source.serviceAccount` ones.
    let globs: Either<GlobPattern>
    let accounts: Either<ServiceAccount>

    init(_ c: AuthorizationPolicy.Condition, attribute: AuthorizationAttribute, namespace: String) {
        self.attribute = attribute
        var strings = Either<StringPattern>(), cidrs = Either<CIDRRange>(), ports = Either<UInt16>()
        var globs = Either<GlobPattern>(), accounts = Either<ServiceAccount>()
        switch attribute {
        case .sourceIP, .remoteIP, .destinationIP:
            cidrs = Either(values: c.values.map { $0.compactMap { try? CIDRRange(parsing: $0.text) } },
                           notValues: c.notValues.map { $0.compactMap { try? CIDRRange(parsing: $0.text) } })
        case .destinationPort:
            ports = Either(values: c.values.map { $0.compactMap { UInt16($0.text) } },
                           notValues: c.notValues.map { $0.compactMap { UInt16($0.text) } })
        case .sourceNamespace:
            globs = Either(values: c.values.map { $0.map { GlobPattern($0.text) } },
                           notValues: c.notValues.map { $0.map { GlobPattern($0.text) } })
        case .sourceServiceAccount:
            accounts = Either(values: CompiledSource.accountSuffixes(c.values, namespace: namespace),
                              notValues: CompiledSource.accountSuffixes(c.notValues, namespace: namespace))
        default:
            strings = Either(values: c.values.map { $0.map { StringPattern($0.text) } },
                             notValues: c.notValues.map { $0.map { StringPattern($0.text) } })
        }
        self.strings = strings
        self.cidrs = cidrs
        self.ports = ports
        self.globs = globs
        self.accounts = accounts
    }

    func holds(_ f: AuthorizationFacts, _ request: RequestView?, _ scratch: inout [UInt8]) -> Bool {
        switch attribute {
        case .sourceIP: return cidrs.holds { c in f.source.map { c.contains($0) } ?? false }
        case .remoteIP: return cidrs.holds { c in f.remote.map { c.contains($0) } ?? false }
        case .destinationIP: return cidrs.holds { c in f.destination.map { c.contains($0) } ?? false }
        case .destinationPort: return ports.holds { $0 == f.destinationPort }
        case .sourcePrincipal: return strings.holds { $0.matches(f.principal.span) }
        case .sourceNamespace: return globs.holds { CompiledSource.inNamespace(f.principal, $0) }
        case .sourceServiceAccount: return accounts.holds { $0.matches(f.principal) }
        case .sourceTrustDomain:
            let td = PrincipalParts(f.principal).trustDomain
            return strings.holds { p in td.map { p.matches(f.principal.span.extracting($0)) } ?? false }
        case .connectionSNI: return strings.holds { $0.matches(f.serverName.span) }
        case .requestAuth, .experimental:
            // (Never a value: `values` cannot match, `notValues` hold.)
            return strings.holds { _ in false }
        case .requestHeader(let name):
            guard let request else { return true }  // (not on TCP ports: dropped when compiled)
            // The field's values joined with "," when it came more than once (Envoy's view of it).
            var count = 0, only: Range<Int>? = nil
            scratch.removeAll(keepingCapacity: true)
            for n in 0..<request.fields.count where Self.named(request, n, name) {
                let v = request.fields[n].value
                if count == 0 {
                    only = v
                } else {
                    if count == 1, let o = only {
                        for i in o { scratch.append(request.bytes[i]) }
                    }
                    scratch.append(UInt8(ascii: ","))
                    for i in v { scratch.append(request.bytes[i]) }
                }
                count += 1
            }
            if count == 0 { return strings.holds { _ in false } }
            // (`*` is presence: the field is there, even empty, as Envoy's present_match.)
            if count == 1, let only { return strings.holds { $0.kind == .presence || $0.matches(request.bytes.extracting(only)) } }
            return strings.holds { $0.kind == .presence || $0.matches(scratch.span) }
        }
    }

    private static func named(_ request: RequestView, _ n: Int, _ lower: [UInt8]) -> Bool {
        let name = request.fields[n].name
        guard name.count == lower.count else { return false }
        var j = 0
        var i = name.lowerBound
        while i < name.upperBound {
            if asciiLower(request.bytes[i]) != lower[j] { return false }
            i += 1
            j += 1
        }
        return true
    }
}
