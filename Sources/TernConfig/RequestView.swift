import TernCore

/// What route matching reads of a request, over the bytes it was parsed from: nothing is copied. Protocol-neutral:
/// the codec that parsed the request builds it per request (the HTTP/1.1 codec from its head, whose fields are
/// ranges into the received bytes; HTTP/2 from a header block decoded into a buffer), so TernConfig knows no
/// codec. It cannot outlive the bytes. Ranges it returns are ranges of `bytes`.
public struct RequestView: ~Escapable {
    public enum Scheme: Sendable { case http, https }

    public let bytes: Span<UInt8>
    /// The head's field lines (a reference to the parser's array: no copy).
    public let fields: [HeadField]
    public let method: Range<Int>
    /// The path of the request-target, before any `?` (for an absolute-form target, after the authority).
    public let path: Range<Int>
    /// The query after `?`, without it; nil when the target has no `?`.
    public let query: Range<Int>?
    public let scheme: Scheme
    /// The authority the request is for, as the codec found it (an absolute-form target's, else the Host field's;
    /// nil: none): what routing and the upstream use, and so what AuthorizationPolicy `hosts` match.
    public let authority: Range<Int>?

    /// - Parameters:
    ///   - fields: the head's field lines (the codec's array, shared: no copy).
    ///   - method: the method token; `target`: the request-target as received.
    ///   - targetHasAuthority: the target is absolute-form ("scheme://authority/path", RFC 9112 §3.2.2); its path
    ///     starts at the first "/" after the authority.
    @_lifetime(copy bytes)
    public init(bytes: Span<UInt8>, fields: [HeadField], method: Range<Int>, target: Range<Int>,
                targetHasAuthority: Bool, scheme: Scheme = .http, authority: Range<Int>? = nil)
    {
        self.authority = authority
        self.bytes = bytes
        self.fields = fields
        self.method = method
        self.scheme = scheme
        var start = target.lowerBound
        let end = target.upperBound
        if targetHasAuthority {
            // scheme "://" authority path: the authority ends at the first "/" or "?" after "://" (as the codec
            // reads it, RFC 3986 §3.2), where the path starts (empty when none).
            var i = start
            while i < end, bytes[i] != UInt8(ascii: ":") { i += 1 }
            i = min(i + 3, end)
            while i < end, bytes[i] != UInt8(ascii: "/"), bytes[i] != UInt8(ascii: "?") { i += 1 }
            start = i
        }
        var q = start
        while q < end, bytes[q] != UInt8(ascii: "?") { q += 1 }
        self.path = start..<q
        self.query = q < end ? (q + 1)..<end : nil
    }

    /// The path of a request-target, as rewrites and redirects replace it: from its start (for an absolute-form
    /// target, the "/" after the authority; none there: empty, at the end) to the first "?" or "#".
    public static func pathExtent(of target: Span<UInt8>) -> Range<Int> {
        var start = 0
        if target.count > 0, target[0] != UInt8(ascii: "/") {
            var colon = 0
            while colon < target.count, target[colon] != UInt8(ascii: ":"), target[colon] != UInt8(ascii: "/") { colon += 1 }
            if colon + 2 < target.count, target[colon] == UInt8(ascii: ":"), target[colon + 1] == UInt8(ascii: "/"),
               target[colon + 2] == UInt8(ascii: "/") {
                // scheme "://" authority path
                start = colon + 3
                while start < target.count, target[start] != UInt8(ascii: "/"), target[start] != UInt8(ascii: "?") { start += 1 }
            }
        }
        var end = start
        while end < target.count, target[end] != UInt8(ascii: "?"), target[end] != UInt8(ascii: "#") { end += 1 }
        return start..<end
    }

    /// The value of the first field named `lowercaseName` (ASCII case-insensitive), nil when absent.
    public func header(_ lowercaseName: [UInt8]) -> Range<Int>? {
        // Index loops throughout: a for-in over an array of structs allocates an iterator box in unoptimised
        // builds, and this runs per request.
        for n in 0..<fields.count where fields[n].name.count == lowercaseName.count {
            let name = fields[n].name
            var equal = true
            var j = 0
            var i = name.lowerBound
            while i < name.upperBound {
                if asciiLower(bytes[i]) != lowercaseName[j] {
                    equal = false
                    break
                }
                j += 1
                i += 1
            }
            if equal { return fields[n].value }
        }
        return nil
    }

    /// The value of query parameter `name` (compared byte for byte, not percent-decoded); an empty range for
    /// `?name` or `?name=`; nil when absent.
    public func queryParameter(_ name: [UInt8]) -> Range<Int>? {
        guard let query else { return nil }
        var i = query.lowerBound
        while i < query.upperBound {
            var end = i
            while end < query.upperBound, bytes[end] != UInt8(ascii: "&") { end += 1 }
            var eq = i
            while eq < end, bytes[eq] != UInt8(ascii: "=") { eq += 1 }
            if eq - i == name.count, RouteTable.equal(bytes, i, name, ignoringCase: false) {
                return eq < end ? (eq + 1)..<end : end..<end
            }
            i = end + 1
        }
        return nil
    }
}

@inline(__always)
func asciiLower(_ b: UInt8) -> UInt8 { b >= 65 && b <= 90 ? b | 0x20 : b }
