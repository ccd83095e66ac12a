/// Character classes and small productions of RFC 9110 §5.6 and RFC 9112, over bytes.
/// Strictness decisions that a lenient parser might make differently are stated where they are made.
enum HTTPGrammar {
    static let cr: UInt8 = 0x0D
    static let lf: UInt8 = 0x0A
    static let sp: UInt8 = 0x20
    static let htab: UInt8 = 0x09
    static let colon: UInt8 = 0x3A
    static let comma: UInt8 = 0x2C
    static let semicolon: UInt8 = 0x3B

    /// tchar (RFC 9110 §5.6.2): "!#$%&'*+-.^_`|~", DIGIT, ALPHA.
    @inline(__always) static func isTokenChar(_ b: UInt8) -> Bool {
        switch b {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
        case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: true
        default: false
        }
    }

    /// `isTokenChar` as a bit table (one load and a shift instead of range compares), for the per-byte loops.
    @inline(__always) static func isTokenCharFast(_ b: UInt8) -> Bool {
        // Bits for 0x00–0x3F and 0x40–0x7F; nothing at or above 0x80.
        let low: UInt64 = 0x03FF_6CFA_0000_0000   // ! # $ % & ' * + - . 0-9
        let high: UInt64 = 0x57FF_FFFF_C7FF_FFFE  // A-Z ^ _ ` a-z | ~
        if b >= 0x80 { return false }
        let word = b < 0x40 ? low : high
        return (word >> UInt64(b & 0x3F)) & 1 == 1
    }

    /// field-vchar / SP / HTAB (RFC 9110 §5.5): VCHAR, obs-text (0x80–0xFF), SP, HTAB. No NUL, no other CTL, no DEL.
    @inline(__always) static func isFieldValueChar(_ b: UInt8) -> Bool {
        b == htab || (b >= 0x20 && b != 0x7F)
    }

    /// OWS (RFC 9110 §5.6.3).
    @inline(__always) static func isWhitespace(_ b: UInt8) -> Bool { b == sp || b == htab }

    /// Bytes allowed in a request-target. Stricter than RFC 3986 parsers that pass obs-text through: only VCHAR
    /// (0x21–0x7E), and no "#" (a fragment is never part of a request-target, RFC 9112 §3.2). Anything else is 400, so
    /// an upstream never has to decide what a byte it might read differently means.
    @inline(__always) static func isTargetChar(_ b: UInt8) -> Bool { b >= 0x21 && b <= 0x7E && b != 0x23 }

    /// Host characters (RFC 3986 §3.2.2 reg-name / IP-literal, plus ":" port): unreserved, sub-delims, "%", ":",
    /// "[", "]". No userinfo ("@"), no "/", no whitespace.
    @inline(__always) static func isHostChar(_ b: UInt8) -> Bool {
        // A bit table of the set above: one load and a shift per byte (Host values are checked byte by byte).
        let low: UInt64 = 0x2FFF_7FF2_0000_0000   // ! $ & ' ( ) * + , - . 0-9 : ; =
        let high: UInt64 = 0x47FF_FFFE_AFFF_FFFE  // A-Z [ ] _ a-z ~
        if b >= 0x80 { return false }
        let word = b < 0x40 ? low : high
        return (word >> UInt64(b & 0x3F)) & 1 == 1
    }

    @inline(__always) static func lowercased(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5A ? b | 0x20 : b }

    @inline(__always) static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    /// The value of a hex digit, or nil.
    @inline(__always) static func hexValue(_ b: UInt8) -> UInt64? {
        switch b {
        case 0x30...0x39: UInt64(b - 0x30)
        case 0x41...0x46: UInt64(b - 0x41 + 10)
        case 0x61...0x66: UInt64(b - 0x61 + 10)
        default: nil
        }
    }

    /// Whether `bytes[range]` equals the lowercase ASCII `literal`, ignoring ASCII case.
    static func equalsIgnoringCase(_ bytes: borrowing Span<UInt8>, _ range: Range<Int>, _ literal: StaticBytes)
        -> Bool
    {
        guard range.count == literal.count else { return false }
        var i = range.lowerBound
        var j = 0
        while i < range.upperBound {
            if lowercased(bytes[i]) != literal[j] { return false }
            i += 1
            j += 1
        }
        return true
    }

    /// Whether two ranges of `bytes` hold the same text, ignoring ASCII case.
    static func equalsIgnoringCase(_ bytes: borrowing Span<UInt8>, _ a: Range<Int>, _ b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        var i = a.lowerBound
        var j = b.lowerBound
        while i < a.upperBound {
            if lowercased(bytes[i]) != lowercased(bytes[j]) { return false }
            i += 1
            j += 1
        }
        return true
    }

    /// `range` without leading and trailing OWS.
    static func trimmingWhitespace(_ bytes: borrowing Span<UInt8>, _ range: Range<Int>) -> Range<Int> {
        trimmedValue(bytes, from: range.lowerBound, end: range.upperBound)
    }

    /// The next element of a comma-separated list (RFC 9110 §5.6.1) starting at `cursor`, trimmed of OWS; nil when
    /// the list is exhausted. Empty elements are returned as empty ranges: each caller decides whether to ignore
    /// them (Connection) or refuse them (Content-Length, Transfer-Encoding).
    static func nextListElement(_ bytes: borrowing Span<UInt8>, _ cursor: inout Int, end: Int) -> Range<Int>? {
        guard cursor <= end else { return nil }
        var i = cursor
        while i < end, bytes[i] != comma { i += 1 }
        let element = trimmingWhitespace(bytes, cursor..<i)
        cursor = i + 1
        return element
    }
}

/// A short lowercase ASCII literal as bytes, compared without allocating or touching a String.
struct StaticBytes: Sendable {
    let storage: (UInt64, UInt64, UInt64)
    let count: Int

    init(_ literal: StaticString) {
        precondition(literal.utf8CodeUnitCount <= 24, "literal too long")
        var words: (UInt64, UInt64, UInt64) = (0, 0, 0)
        var i = 0
        for byte in literal.description.utf8 {
            let shift = UInt64((i % 8) * 8)
            switch i / 8 {
            case 0: words.0 |= UInt64(byte) << shift
            case 1: words.1 |= UInt64(byte) << shift
            default: words.2 |= UInt64(byte) << shift
            }
            i += 1
        }
        storage = words
        count = i
    }

    @inline(__always) subscript(_ i: Int) -> UInt8 {
        let word = i < 8 ? storage.0 : i < 16 ? storage.1 : storage.2
        return UInt8(truncatingIfNeeded: word >> UInt64((i % 8) * 8))
    }
}
