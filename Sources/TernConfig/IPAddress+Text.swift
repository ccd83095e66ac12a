/// Addresses and ranges written back as text: dotted-quad IPv4 and RFC 5952's canonical IPv6 (lower-case hex, no
/// leading zeros, the longest run of two or more zero groups, the first if tied, as `::`; IPv4-mapped addresses
/// as `::ffff:a.b.c.d`, §5), the forms `iptables-save` and Go's `netip` print, so that rules Tern generates read
/// as the kernel reports them.
extension IPAddress: CustomStringConvertible {
    public var description: String {
        if !isV6 {
            let v = low
            return "\(v >> 24 & 0xFF).\(v >> 16 & 0xFF).\(v >> 8 & 0xFF).\(v & 0xFF)"
        }
        if high == 0, low >> 32 == 0xFFFF {
            return "::ffff:" + IPAddress(v4: UInt32(truncatingIfNeeded: low)).description
        }
        let groups = (0..<8).map { k in UInt16(truncatingIfNeeded: (k < 4 ? high : low) >> (48 - 16 * UInt64(k % 4))) }
        // RFC 5952 §4.2: the longest run of zero groups, at least two long, the first of equal runs.
        var best = (start: -1, count: 0)
        var k = 0
        while k < 8 {
            guard groups[k] == 0 else { k += 1; continue }
            var end = k
            while end < 8, groups[end] == 0 { end += 1 }
            if end - k > best.count, end - k >= 2 { best = (k, end - k) }
            k = end
        }
        func hex(_ range: Range<Int>) -> String {
            groups[range].map { String($0, radix: 16) }.joined(separator: ":")
        }
        guard best.start >= 0 else { return hex(0..<8) }
        return hex(0..<best.start) + "::" + hex((best.start + best.count)..<8)
    }

    /// 127.0.0.0/8 (also IPv4-mapped) or ::1, as Go's `netip.Addr.IsLoopback` (Istio's test for a loopback
    /// range) decides.
    public var isLoopback: Bool {
        if isV6, high == 0, low >> 32 == 0xFFFF { return low >> 24 & 0xFF == 127 }
        return isV6 ? high == 0 && low == 1 : low >> 24 == 127
    }
}

extension CIDRRange: CustomStringConvertible {
    /// `base/prefix`, host bits cleared: `10.0.0.0/8`, `fd00::/8`.
    public var description: String { "\(base)/\(prefixLength)" }
}
