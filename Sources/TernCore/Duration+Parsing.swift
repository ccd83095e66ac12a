/// Durations as users write them in flags and config: a sequence of number+unit pairs such as `5s`,
/// `250ms`, `1h30m`, `1.5s`. Units: h, m, s, ms, us (or µs), ns. This is the grammar Istio accepts for its
/// protobuf Duration fields written as strings, extended with compound forms (`1h30m`) as Go's
/// time.ParseDuration accepts.
public struct TernDuration: Equatable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }
    public static func seconds(_ s: UInt64) -> TernDuration { TernDuration(nanoseconds: s * 1_000_000_000) }
    public static func milliseconds(_ ms: UInt64) -> TernDuration { TernDuration(nanoseconds: ms * 1_000_000) }
    public static let zero = TernDuration(nanoseconds: 0)

    public var milliseconds: UInt64 { nanoseconds / 1_000_000 }

    public static func < (a: TernDuration, b: TernDuration) -> Bool { a.nanoseconds < b.nanoseconds }

    /// Parses `text`; nil when it is not a duration (empty, a bare number, an unknown unit, overflow).
    public init?(parsing text: String) {
        var total: UInt64 = 0
        var chars = Array(text.unicodeScalars)
        if chars.isEmpty { return nil }
        var i = 0
        while i < chars.count {
            // number: digits with an optional fraction
            var whole: UInt64 = 0
            var fraction: UInt64 = 0
            var fractionDigits = 0
            var sawDigit = false
            while i < chars.count, let d = Self.digit(chars[i]) {
                let (m, o1) = whole.multipliedReportingOverflow(by: 10)
                let (s, o2) = m.addingReportingOverflow(d)
                if o1 || o2 { return nil }
                whole = s
                sawDigit = true
                i += 1
            }
            if i < chars.count, chars[i] == "." {
                i += 1
                while i < chars.count, let d = Self.digit(chars[i]) {
                    if fractionDigits < 9 {
                        fraction = fraction * 10 + d
                        fractionDigits += 1
                    }
                    sawDigit = true
                    i += 1
                }
            }
            if !sawDigit { return nil }
            // unit
            var unit = ""
            while i < chars.count, Self.digit(chars[i]) == nil, chars[i] != "." {
                unit.unicodeScalars.append(chars[i])
                i += 1
            }
            let scale: UInt64
            switch unit {
            case "h": scale = 3_600_000_000_000
            case "m": scale = 60_000_000_000
            case "s": scale = 1_000_000_000
            case "ms": scale = 1_000_000
            case "us", "µs": scale = 1_000
            case "ns": scale = 1
            default: return nil
            }
            var fractionScaled: UInt64 = 0
            if fractionDigits > 0 {
                var divisor: UInt64 = 1
                for _ in 0..<fractionDigits { divisor *= 10 }
                // scale ≤ 3.6e12 and fraction < 1e9: compute (fraction * scale) / divisor without overflow.
                let (hi, lo) = fraction.multipliedFullWidth(by: scale)
                fractionScaled = divisor.dividingFullWidth((hi, lo)).quotient
            }
            let (wholeScaled, o1) = whole.multipliedReportingOverflow(by: scale)
            let (part, o2) = wholeScaled.addingReportingOverflow(fractionScaled)
            let (sum, o3) = total.addingReportingOverflow(part)
            if o1 || o2 || o3 { return nil }
            total = sum
        }
        chars.removeAll()
        self.nanoseconds = total
    }

    private static func digit(_ c: Unicode.Scalar) -> UInt64? {
        c.value >= 48 && c.value <= 57 ? UInt64(c.value - 48) : nil
    }

    /// The shortest exact form: `1h30m`, `250ms`, `5s`, `0s`.
    public var description: String {
        if nanoseconds == 0 { return "0s" }
        var n = nanoseconds
        var out = ""
        let units: [(String, UInt64)] = [
            ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000), ("ms", 1_000_000),
            ("us", 1_000), ("ns", 1),
        ]
        for (name, size) in units where n >= size {
            out += "\(n / size)\(name)"
            n %= size
        }
        return out
    }
}
