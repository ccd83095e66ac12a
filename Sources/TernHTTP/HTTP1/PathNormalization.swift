// Request path normalisation as Istio configures Envoy (MeshConfig `pathNormalization`, default BASE: Envoy's
// `normalize_path`; istio.io docs/reference/config/security/normalization): the normalised path is the one routes
// and AuthorizationPolicies match and the one forwarded, so `/public/../admin` or `/%2e%2e/admin` cannot reach
// past a policy written for `/admin`.
//
// BASE, in order: a percent-encoded unreserved character (`%2D` `-`, `%2E` `.`, `%30`–`%39`, `%41`–`%5A`, `%5F`
// `_`, `%61`–`%7A`, `%7E` `~`, either hex case) is decoded, once (no double decoding); a backslash becomes `/`;
// dot segments are removed (RFC 3986 §5.2.4; never above the root). `%00` is refused (400). MERGE_SLASHES then
// merges runs of `/`; DECODE_AND_MERGE_SLASHES first decodes `%2F` to `/` and `%5C` to `\`. NONE leaves the path
// as received.

public enum PathNormalization: String, Sendable, CaseIterable {
    case none = "NONE"
    case base = "BASE"
    case mergeSlashes = "MERGE_SLASHES"
    case decodeAndMergeSlashes = "DECODE_AND_MERGE_SLASHES"

    public enum Outcome: Equatable, Sendable {
        /// The path is already normal (nothing written).
        case unchanged
        /// The normal path is in `out`.
        case normalized
        /// The path holds `%00`: the request is refused (400).
        case refused
    }

    /// Normalises `path` (an origin-form path starting with "/", without its query) into `out` (emptied first, its
    /// capacity kept: no allocation once it has grown to a path's size).
    public func normalize(_ path: Span<UInt8>, into out: inout [UInt8]) -> Outcome {
        guard self != .none, path.count > 0, path[0] == Self.slash else { return .unchanged }
        if !needsWork(path) { return .unchanged }
        out.removeAll(keepingCapacity: true)
        // 1. Percent-decoding (and backslashes), into `out`.
        var i = 0
        while i < path.count {
            var c = path[i]
            if c == Self.percent && i + 2 < path.count, let hi = Self.hex(path[i + 1]), let lo = Self.hex(path[i + 2]) {
                let decoded = hi << 4 | lo
                if decoded == 0 { return .refused }
                if Self.isUnreserved(decoded) || (self == .decodeAndMergeSlashes && (decoded == Self.slash || decoded == Self.backslash)) {
                    c = decoded
                    i += 3
                    out.append(c == Self.backslash ? Self.slash : c)
                    continue
                }
            }
            out.append(c == Self.backslash ? Self.slash : c)
            i += 1
        }
        // 2. Dot segments, then 3. merged slashes (Envoy's order: normalize_path, then merge_slashes), in place.
        Self.removeDotSegments(&out)
        if self == .mergeSlashes || self == .decodeAndMergeSlashes {
            var w = 0
            for r in 0..<out.count where !(out[r] == Self.slash && w > 0 && out[w - 1] == Self.slash) {
                out[w] = out[r]
                w += 1
            }
            out.removeLast(out.count - w)
        }
        guard out.count == path.count else { return .normalized }
        for k in 0..<out.count where out[k] != path[k] { return .normalized }
        return .unchanged
    }

    /// Whether anything here could change `path`: a `%`, a backslash, a dot segment, or (merging) a `//`.
    private func needsWork(_ path: Span<UInt8>) -> Bool {
        let merging = self == .mergeSlashes || self == .decodeAndMergeSlashes
        for i in 0..<path.count {
            let c = path[i]
            if c == Self.percent || c == Self.backslash { return true }
            if c == Self.slash && i + 1 < path.count {
                let n = path[i + 1]
                if n == Self.dot || (merging && n == Self.slash) { return true }
            }
        }
        return false
    }

    /// RFC 3986 §5.2.4 for an absolute path (it starts with "/"), in place: "." segments go, ".." removes the
    /// segment before it (none above the root); a path ending in one of them keeps its trailing "/".
    static func removeDotSegments(_ p: inout [UInt8]) {
        var w = 0  // the output, p[0..<w]; always starts with "/"
        var r = 0
        while r < p.count {
            // A segment: p[r] == "/", then up to the next "/".
            var end = r + 1
            while end < p.count && p[end] != slash { end += 1 }
            let length = end - r - 1
            let last = end == p.count
            if length == 1 && p[r + 1] == dot {
                if last {
                    p[w] = slash
                    w += 1
                }
            } else if length == 2 && p[r + 1] == dot && p[r + 2] == dot {
                // The last output segment goes, with the "/" that starts it.
                while w > 0 && p[w - 1] != slash { w -= 1 }
                if w > 0 { w -= 1 }
                if last {
                    p[w] = slash
                    w += 1
                }
            } else {
                for k in r..<end {
                    p[w] = p[k]
                    w += 1
                }
            }
            r = end
        }
        if w == 0 {
            p[0] = slash
            w = 1
        }
        p.removeLast(p.count - w)
    }

    private static func isUnreserved(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
            || c == 0x2D || c == 0x2E || c == 0x5F || c == 0x7E
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }

    static let slash = UInt8(ascii: "/"), backslash = UInt8(ascii: "\\"), dot = UInt8(ascii: "."), percent = UInt8(ascii: "%")
}
