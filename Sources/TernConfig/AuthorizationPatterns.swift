import TernCore

// The value forms of an AuthorizationPolicy (istio.io/latest/docs/reference/config/security/authorization-policy):
// every string is exact `abc`, prefix `abc*`, suffix `*abc` or presence `*` (any non-empty value); a path may also
// be a template where `{*}` is one whole segment and `{**}` anything, possibly nothing (the last operator; literal
// segments may follow it). Compiled to bytes, so a request is matched over its own bytes without allocating.

/// One string value of a rule, compiled.
public struct StringPattern: Sendable, Equatable {
    public enum Kind: UInt8, Sendable { case exact, prefix, suffix, presence }
    public let kind: Kind
    /// The literal part (without its `*`); lower-cased when the pattern ignores case.
    public let bytes: [UInt8]
    public let ignoresCase: Bool

    public init(_ text: String, ignoringCase: Bool = false) {
        var b = Array(text.utf8)
        if ignoringCase { b = b.map(asciiLower) }
        ignoresCase = ignoringCase
        if b == [UInt8(ascii: "*")] {
            kind = .presence
            bytes = []
        } else if b.first == UInt8(ascii: "*") {
            kind = .suffix
            bytes = Array(b.dropFirst())
        } else if b.last == UInt8(ascii: "*") {
            kind = .prefix
            bytes = Array(b.dropLast())
        } else {
            kind = .exact
            bytes = b
        }
    }

    /// Whether `value` matches. No allocation.
    public func matches(_ value: Span<UInt8>) -> Bool {
        let n = value.count, m = bytes.count
        switch kind {
        case .presence: return n > 0
        case .exact: return n == m && equal(value, at: 0)
        case .prefix: return n >= m && equal(value, at: 0)
        case .suffix: return n >= m && equal(value, at: n - m)
        }
    }

    private func equal(_ value: Span<UInt8>, at offset: Int) -> Bool {
        var i = 0
        while i < bytes.count {
            let c = value[offset + i]
            if (ignoresCase ? asciiLower(c) : c) != bytes[i] { return false }
            i += 1
        }
        return true
    }
}

/// A value whose every `*` stands for any bytes, "/" included (Istio's regex `.*`): namespaces, which Istio matches
/// with a regex over the principal.
public struct GlobPattern: Sendable, Equatable {
    /// The literal parts between the `*`s (the first and last anchored at the ends).
    let parts: [[UInt8]]

    public init(_ text: String) {
        parts = text.split(separator: "*", omittingEmptySubsequences: false).map { Array($0.utf8) }
    }

    /// Whether `s[from..<to]` matches. No allocation.
    func matches(_ s: Span<UInt8>, from: Int, to: Int) -> Bool {
        guard parts.count > 1 else { return Self.equal(s, from, to, parts[0]) }
        let first = parts[0], last = parts[parts.count - 1]
        guard to - from >= first.count + last.count, Self.equal(s, from, from + first.count, first),
              Self.equal(s, to - last.count, to, last) else { return false }
        // The middle parts in order, each at its first place after the one before (enough for `*`).
        var at = from + first.count
        let end = to - last.count
        var k = 1
        while k < parts.count - 1 {
            let part = parts[k]
            var found = false
            while at + part.count <= end {
                if Self.equal(s, at, at + part.count, part) {
                    found = true
                    break
                }
                at += 1
            }
            if !found { return false }
            at += part.count
            k += 1
        }
        return true
    }

    static func equal(_ s: Span<UInt8>, _ from: Int, _ to: Int, _ l: [UInt8]) -> Bool {
        guard to - from == l.count else { return false }
        var i = 0
        while i < l.count {
            if s[from + i] != l[i] { return false }
            i += 1
        }
        return true
    }
}

/// A `serviceAccounts` value as Istio matches it against a principal: `.+/ns/NS/(.+/|)sa/SA(/.+)?`.
public struct ServiceAccount: Sendable, Equatable {
    let namespace: [UInt8]
    let name: [UInt8]
    static let ns: [UInt8] = Array("/ns/".utf8), sa: [UInt8] = Array("sa/".utf8)

    /// Whether `principal` (without "spiffe://") names this account. No allocation.
    func matches(_ p: [UInt8]) -> Bool {
        let s = p.span, slash = UInt8(ascii: "/")
        // "/ns/" NS "/" at i ≥ 1 (something before it).
        let head = 4 + namespace.count + 1
        var i = 1
        while i + head <= p.count {
            if GlobPattern.equal(s, i, i + 4, Self.ns) && GlobPattern.equal(s, i + 4, i + 4 + namespace.count, namespace)
                && p[i + 4 + namespace.count] == slash {
                let k = i + head
                // "sa/" SA at k, or later after a "/" that follows at least one byte.
                var q = k
                while q + 3 + name.count <= p.count {
                    if (q == k || (q >= k + 2 && p[q - 1] == slash)) && GlobPattern.equal(s, q, q + 3, Self.sa)
                        && GlobPattern.equal(s, q + 3, q + 3 + name.count, name) {
                        let end = q + 3 + name.count
                        // The end, or "/" and at least one byte more.
                        if end == p.count || (p[end] == slash && end + 1 < p.count) { return true }
                    }
                    q += 1
                }
            }
            i += 1
        }
        return false
    }
}

/// A `paths` value: a plain pattern, or a template of segments (`/a/{*}/b/{**}`).
public struct AuthorizationPathPattern: Sendable, Equatable {
    enum Segment: Sendable, Equatable {
        case literal([UInt8])
        /// `{*}`: exactly one non-empty segment.
        case one
        /// `{**}`: anything, slashes included, possibly nothing (Envoy's `**`); the last operator of a template,
        /// literal segments may follow it.
        case rest
    }

    let plain: StringPattern?
    let segments: [Segment]

    public init(_ text: String) {
        guard text.contains("{") else {
            plain = StringPattern(text)
            segments = []
            return
        }
        plain = nil
        segments = text.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { s in
            s == "{*}" ? .one : s == "{**}" ? .rest : .literal(Array(s.utf8))
        }
    }

    /// Why `text` is not a valid path value (Istio's `CheckValidPathTemplate`), or nil.
    public static func problem(_ text: String) -> String? {
        guard text.contains("{") || text.contains("}") else { return nil }
        guard text.hasPrefix("/") else { return "a path template must begin with \"/\", got \"\(text)\"" }
        let parts = Array(text.split(separator: "/", omittingEmptySubsequences: false).dropFirst())
        var afterRest = false
        for (i, p) in parts.enumerated() {
            if p == "{*}" || p == "{**}" {
                if afterRest { return "{**} must be the last operator of \"\(text)\"" }
                afterRest = p == "{**}"
                continue
            }
            if p.isEmpty && i != parts.count - 1 { return "empty segment in path template \"\(text)\"" }
            if !p.utf8.allSatisfy(isPathCharacter) {
                return "a segment of a path template is {*}, {**} or path characters (RFC 3986 pchar, without '*', '{', '}'), got \"\(p)\" in \"\(text)\""
            }
        }
        return nil
    }

    /// RFC 3986 pchar: unreserved, "%" (of pct-encoded), sub-delims but "*", ":" and "@".
    static func isPathCharacter(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        default: return Array("-._~%!$&'()+,;=:@".utf8).contains(c)
        }
    }

    /// Whether the (normalised, query-less) path matches. No allocation.
    public func matches(_ path: Span<UInt8>) -> Bool {
        if let plain { return plain.matches(path) }
        guard path.count > 0, path[0] == UInt8(ascii: "/") else { return false }
        var at = 1
        for k in 0..<segments.count {
            if case .rest = segments[k] { return matchesAfterRest(path, from: at, segment: k + 1) }
            // The segment of the path starting at `at`: up to the next "/".
            var end = at
            while end < path.count && path[end] != UInt8(ascii: "/") { end += 1 }
            switch segments[k] {
            case .rest: return false
            case .one:
                if end == at { return false }
            case .literal(let l):
                if !Self.equal(path, at, end, l) { return false }
            }
            if k == segments.count - 1 { return end == path.count }
            guard end < path.count else { return false }
            at = end + 1
        }
        return at == path.count
    }

    /// `{**}` at `at` (anything, possibly nothing), then the literal segments from `segment` on: they must end
    /// the path, "/"-separated, after whatever `{**}` took.
    private func matchesAfterRest(_ path: Span<UInt8>, from at: Int, segment: Int) -> Bool {
        // The literal tail "/a/b" (each later segment preceded by "/").
        var tail = 0
        for k in segment..<segments.count {
            guard case .literal(let l) = segments[k] else { return false }
            tail += 1 + l.count
        }
        guard path.count - at >= tail else { return false }
        var p = path.count - tail
        for k in segment..<segments.count {
            guard case .literal(let l) = segments[k], path[p] == UInt8(ascii: "/") else { return false }
            if !Self.equal(path, p + 1, p + 1 + l.count, l) { return false }
            p += 1 + l.count
        }
        return true
    }

    private static func equal(_ path: Span<UInt8>, _ from: Int, _ to: Int, _ l: [UInt8]) -> Bool {
        GlobPattern.equal(path, from, to, l)
    }
}

/// A `when` condition's key.
public enum AuthorizationAttribute: Sendable, Equatable {
    case requestHeader([UInt8])
    case sourceIP, remoteIP, destinationIP, destinationPort
    case sourceNamespace, sourcePrincipal, sourceServiceAccount, sourceTrustDomain
    case connectionSNI
    /// `request.auth.*` (JWT claims): Tern validates no JWT, so a policy using one fails closed.
    case requestAuth
    /// `experimental.envoy.filters.*`: never holds.
    case experimental

    public init?(key: String) {
        switch key {
        case "source.ip": self = .sourceIP
        case "remote.ip": self = .remoteIP
        case "destination.ip": self = .destinationIP
        case "destination.port": self = .destinationPort
        case "source.namespace": self = .sourceNamespace
        case "source.principal": self = .sourcePrincipal
        case "source.serviceAccount": self = .sourceServiceAccount
        case "source.trustDomain": self = .sourceTrustDomain
        case "connection.sni": self = .connectionSNI
        case "request.auth.principal", "request.auth.audiences", "request.auth.presenter": self = .requestAuth
        default:
            if key.hasPrefix("request.auth.claims[") && key.hasSuffix("]") && key.count > "request.auth.claims[]".count {
                self = .requestAuth
            } else if key.hasPrefix("request.headers[") && key.hasSuffix("]") {
                let name = key.dropFirst("request.headers[".count).dropLast()
                guard !name.isEmpty else { return nil }
                self = .requestHeader(Array(name.utf8).map(asciiLower))
            } else if key.hasPrefix("experimental.envoy.filters.") && key.hasSuffix("]") && key.contains("[") {
                self = .experimental
            } else {
                return nil
            }
        }
    }

    /// Whether it reads the peer's identity (what Istio refuses in a CUSTOM policy: an external authorizer sees the
    /// request before Envoy's own checks).
    var readsIdentity: Bool {
        switch self {
        case .sourceNamespace, .sourcePrincipal, .sourceServiceAccount, .sourceTrustDomain, .requestAuth: return true
        default: return false
        }
    }

    /// Whether it reads the HTTP request (dropped from ALLOW rules and ignored in DENY on TCP ports).
    var isHTTPOnly: Bool {
        switch self {
        case .requestHeader, .requestAuth: return true
        default: return false
        }
    }
}
