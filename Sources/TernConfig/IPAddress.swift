/// An IPv4 or IPv6 address as its bits: compared and masked as integers, so matching a connection's destination
/// against `destinationSubnets` (`CIDRRange`) neither allocates nor builds text. Parsed from the literals users
/// write (`10.0.0.1`, `fd00::1`, `::ffff:10.0.0.1`) with the rules of Go's `netip.ParseAddr`, which Istio
/// validates with: dotted-quad IPv4 with four decimal octets and no leading zeros; IPv6 as eight hex groups of
/// at most four digits, at most one `::` standing for at least one zero group, optionally ending in a
/// dotted-quad; no zone (`%eth0`).
public struct IPAddress: Sendable, Hashable {
    public var isV6: Bool
    /// IPv6: the first 64 bits (the first group in the top 16 bits). IPv4: 0.
    public var high: UInt64
    /// IPv6: the last 64 bits. IPv4: the address in the low 32 bits (`a.b.c.d` is a<<24 | b<<16 | c<<8 | d).
    public var low: UInt64

    public init(v4 address: UInt32) {
        isV6 = false
        high = 0
        low = UInt64(address)
    }

    public init(v6High high: UInt64, low: UInt64) {
        isV6 = true
        self.high = high
        self.low = low
    }

    public init?(parsing text: String) {
        let b = Array(text.utf8)
        if b.contains(UInt8(ascii: ":")) {
            guard let (high, low) = Self.v6(b) else { return nil }
            self.init(v6High: high, low: low)
        } else {
            guard let v4 = Self.v4(b, 0..<b.count) else { return nil }
            self.init(v4: v4)
        }
    }

    /// Four decimal octets separated by dots, each 0–255 without a leading zero.
    static func v4(_ b: [UInt8], _ range: Range<Int>) -> UInt32? {
        var value: UInt32 = 0
        var i = range.lowerBound
        for octet in 0..<4 {
            let start = i
            var n: UInt32 = 0
            while i < range.upperBound, i - start < 3, let d = decimal(b[i]) {
                n = n * 10 + d
                i += 1
            }
            let digits = i - start
            if digits == 0 || n > 255 || (digits > 1 && b[start] == UInt8(ascii: "0")) { return nil }
            value = value << 8 | n
            if octet < 3 {
                guard i < range.upperBound, b[i] == UInt8(ascii: ".") else { return nil }
                i += 1
            }
        }
        return i == range.upperBound ? value : nil
    }

    /// Hex groups separated by colons, at most one `::`, an optional dotted-quad tail (two groups).
    static func v6(_ b: [UInt8]) -> (UInt64, UInt64)? {
        var groups = [UInt16](repeating: 0, count: 8)
        var count = 0
        var ellipsis = -1  // the group index `::` stands before
        var i = 0
        let colon = UInt8(ascii: ":")
        if b.count >= 2, b[0] == colon, b[1] == colon {
            ellipsis = 0
            i = 2
        }
        while i < b.count {
            let start = i
            var v: UInt16 = 0
            while i < b.count, i - start < 4, let h = hex(b[i]) {
                v = v << 4 | h
                i += 1
            }
            if i < b.count, b[i] == UInt8(ascii: ".") {
                // The dotted-quad tail ends the address.
                guard count <= 6, let v4 = v4(b, start..<b.count) else { return nil }
                groups[count] = UInt16(v4 >> 16)
                groups[count + 1] = UInt16(v4 & 0xFFFF)
                count += 2
                break
            }
            guard i > start, count < 8 else { return nil }
            groups[count] = v
            count += 1
            if i == b.count { break }
            guard b[i] == colon, i + 1 < b.count else { return nil }  // no trailing single colon
            i += 1
            if b[i] == colon {
                guard ellipsis < 0 else { return nil }
                ellipsis = count
                i += 1
            }
        }
        if ellipsis >= 0 {
            guard count < 8 else { return nil }
            // Move the groups after `::` to the end; the ones it stands for are zero.
            let tail = count - ellipsis
            for k in 0..<tail { groups[7 - k] = groups[count - 1 - k] }
            for k in ellipsis..<(8 - tail) { groups[k] = 0 }
        } else if count != 8 {
            return nil
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for k in 0..<4 {
            high = high << 16 | UInt64(groups[k])
            low = low << 16 | UInt64(groups[k + 4])
        }
        return (high, low)
    }

    private static func decimal(_ c: UInt8) -> UInt32? {
        c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") ? UInt32(c - UInt8(ascii: "0")) : nil
    }

    private static func hex(_ c: UInt8) -> UInt16? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt16(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt16(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt16(c - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}
