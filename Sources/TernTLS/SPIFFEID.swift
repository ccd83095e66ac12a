/// A SPIFFE ID, `spiffe://<trust domain><path>` (SPIFFE-ID.md §2), parsed as strictly as the standard asks and
/// as go-spiffe's `spiffeid.FromString` does: the scheme and trust domain lower-case, the trust domain of
/// `[a-z0-9.-_]` only (so no port, userinfo or percent-encoding), the path a sequence of `/segment`, each of
/// `[A-Za-z0-9.-_]`, none empty, `.` or `..`, no trailing slash, no query or fragment, the trust domain 255 bytes
/// at most (SPIFFE-ID.md §2.3), 2048 bytes in all (X509-SVID.md §2). Istio's workload identities are `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
public struct SPIFFEID: Hashable, Sendable, CustomStringConvertible {
    /// "cluster.local".
    public let trustDomain: String
    /// "/ns/default/sa/web", or "" for the ID of the trust domain itself.
    public let path: String

    /// The most bytes a SPIFFE ID may have (X509-SVID.md §2: URI SANs of up to 2048 bytes must be supported).
    public static let maximumLength = 2048
    /// The most bytes a trust domain may have (SPIFFE-ID.md §2.3: implementations must reject longer ones).
    public static let maximumTrustDomainLength = 255

    public var description: String { "spiffe://" + trustDomain + path }

    /// The ID without its scheme, as Istio's AuthorizationPolicy `principals` write it: "cluster.local/ns/x/sa/y".
    public var principal: String { trustDomain + path }

    /// Parses `text` whole; throws the first rule it breaks.
    public init(parsing text: String) throws(SPIFFEIDError) {
        let bytes = Array(text.utf8)
        if bytes.isEmpty { throw .empty }
        if bytes.count > Self.maximumLength { throw .tooLong(bytes.count) }
        let scheme = Array("spiffe://".utf8)
        guard bytes.count >= scheme.count, Array(bytes[0..<scheme.count]) == scheme else {
            let lowered = String(decoding: bytes.prefix(scheme.count), as: UTF8.self).lowercased()
            throw lowered == "spiffe://" ? .uppercaseScheme : .wrongScheme
        }
        let rest = bytes[scheme.count...]
        let slash = rest.firstIndex(of: UInt8(ascii: "/")) ?? rest.endIndex
        let domain = rest[rest.startIndex..<slash]
        try Self.check(trustDomain: domain)
        let path = rest[slash...]
        try Self.check(path: path)
        trustDomain = String(decoding: domain, as: UTF8.self)
        self.path = String(decoding: path, as: UTF8.self)
    }

    /// An ID from its parts, each checked as `init(parsing:)` checks it.
    public init(trustDomain: String, path: String) throws(SPIFFEIDError) {
        try self.init(parsing: "spiffe://" + trustDomain + path)
    }

    /// Istio's identity of a workload: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    public static func workload(trustDomain: String, namespace: String, serviceAccount: String) throws(SPIFFEIDError) -> SPIFFEID {
        try SPIFFEID(trustDomain: trustDomain, path: "/ns/" + namespace + "/sa/" + serviceAccount)
    }

    /// The namespace and service account of an Istio workload identity (`/ns/NS/sa/SA`), else nil.
    public var istioWorkload: (namespace: String, serviceAccount: String)? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[1] == "ns", parts[3] == "sa" else { return nil }
        return (String(parts[2]), String(parts[4]))
    }

    /// Whether `text` is a valid trust domain name (what `spiffe://` is followed by).
    public static func validate(trustDomain text: String) throws(SPIFFEIDError) {
        try check(trustDomain: Array(text.utf8)[...])
    }

    private static func check(trustDomain domain: ArraySlice<UInt8>) throws(SPIFFEIDError) {
        if domain.isEmpty { throw .missingTrustDomain }
        if domain.count > maximumTrustDomainLength { throw .trustDomainTooLong(domain.count) }
        for b in domain {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "_"):
                continue
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): throw .uppercaseTrustDomain
            case UInt8(ascii: ":"): throw .port
            case UInt8(ascii: "@"): throw .userinfo
            default: throw Self.special(b) ?? .badTrustDomainCharacter
            }
        }
    }

    private static func check(path: ArraySlice<UInt8>) throws(SPIFFEIDError) {
        guard !path.isEmpty else { return }
        // path begins with "/": each segment runs to the next "/" or the end.
        var start = path.startIndex + 1
        while true {
            let end = path[start...].firstIndex(of: UInt8(ascii: "/")) ?? path.endIndex
            let segment = path[start..<end]
            if segment.isEmpty { throw end == path.endIndex ? .trailingSlash : .emptySegment }
            if segment.elementsEqual([UInt8(ascii: ".")]) || segment.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                throw .dotSegment
            }
            for b in segment {
                switch b {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                     UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "_"):
                    continue
                default: throw Self.special(b) ?? .badPathCharacter
                }
            }
            if end == path.endIndex { return }
            start = end + 1
        }
    }

    /// The URI parts a byte starts that a SPIFFE ID must not have.
    private static func special(_ b: UInt8) -> SPIFFEIDError? {
        switch b {
        case UInt8(ascii: "%"): return .percentEncoded
        case UInt8(ascii: "?"): return .query
        case UInt8(ascii: "#"): return .fragment
        default: return nil
        }
    }
}

/// Why a string is not a SPIFFE ID (the wording follows go-spiffe's errors).
public enum SPIFFEIDError: Error, Equatable, Sendable, CustomStringConvertible {
    case empty
    case tooLong(Int)
    case wrongScheme
    case uppercaseScheme
    case missingTrustDomain
    case trustDomainTooLong(Int)
    case uppercaseTrustDomain
    case badTrustDomainCharacter
    case port
    case userinfo
    case emptySegment
    case dotSegment
    case trailingSlash
    case badPathCharacter
    case percentEncoded
    case query
    case fragment

    public var description: String {
        switch self {
        case .empty: return "cannot be empty"
        case .tooLong(let n): return "is \(n) bytes long, more than the \(SPIFFEID.maximumLength) a SPIFFE ID may have"
        case .wrongScheme: return "scheme is missing or invalid (must be spiffe://)"
        case .uppercaseScheme: return "scheme must be lower-case spiffe://"
        case .missingTrustDomain: return "trust domain is missing"
        case .trustDomainTooLong(let n):
            return "trust domain is \(n) bytes long, more than the \(SPIFFEID.maximumTrustDomainLength) it may have"
        case .uppercaseTrustDomain: return "trust domain must be lower-case"
        case .badTrustDomainCharacter:
            return "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
        case .port: return "trust domain cannot have a port"
        case .userinfo: return "trust domain cannot have user info"
        case .emptySegment: return "path cannot contain empty segments"
        case .dotSegment: return "path cannot contain dot segments"
        case .trailingSlash: return "path cannot have a trailing slash"
        case .badPathCharacter:
            return "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
        case .percentEncoded: return "cannot contain percent-encoded characters"
        case .query: return "cannot have a query"
        case .fragment: return "cannot have a fragment"
        }
    }
}
