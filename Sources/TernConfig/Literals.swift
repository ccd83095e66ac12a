/// IP literals as endpoint addresses are written (`10.0.0.1`, `fd00::1`): a syntax check, no resolution.
struct IPAddress {
    var isV6: Bool

    init?(parsing s: String) {
        if s.contains(":") {
            // IPv6: hex groups separated by colons, at most one "::", optionally an IPv4 tail.
            let parts = s.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count >= 3, parts.count <= 9, s.components(separatedBy: "::") <= 2 else { return nil }
            for (i, p) in parts.enumerated() {
                if p.isEmpty { continue }
                if i == parts.count - 1, p.contains(".") {
                    guard IPAddress(parsing: String(p)) != nil else { return nil }
                    continue
                }
                guard p.count <= 4, p.allSatisfy({ $0.isHexDigit }) else { return nil }
            }
            isV6 = true
            return
        }
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }), let v = Int(p), v <= 255
            else { return nil }
        }
        isV6 = false
    }
}

extension String {
    /// How many pieces `separator` cuts this into.
    fileprivate func components(separatedBy separator: String) -> Int {
        var count = 1
        var rest = Substring(self)
        while let r = rest.firstRange(of: separator) {
            count += 1
            rest = rest[r.upperBound...]
        }
        return count
    }
}

/// Standard base64 (RFC 4648 §4) for directResponse `body.bytes`.
enum Base64 {
    static func decode(_ s: String) -> [UInt8]? {
        var out: [UInt8] = []
        var acc: UInt32 = 0
        var bits = 0
        var padding = 0
        for c in s.utf8 {
            let v: UInt32
            switch c {
            case 65...90: v = UInt32(c - 65)
            case 97...122: v = UInt32(c - 71)
            case 48...57: v = UInt32(c + 4)
            case 43: v = 62
            case 47: v = 63
            case 61:
                padding += 1
                continue
            case 10, 13, 32: continue
            default: return nil
            }
            if padding > 0 { return nil }
            acc = (acc << 6) | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((acc >> UInt32(bits)) & 0xFF))
            }
        }
        return padding <= 2 ? out : nil
    }
}
