/// The parser's one hot loop, eight bytes at a time: finding the next byte that ends a line or is not allowed in
/// one. It reads the span's memory directly (SWAR on unaligned 64-bit loads); everything else reads through the
/// bounds-checked `Span`.
extension HTTPGrammar {
    private static let ones: UInt64 = 0x0101_0101_0101_0101
    private static let highs: UInt64 = 0x8080_8080_8080_8080

    /// The index of the first byte of `bytes[from..<end]` that is a control character other than HTAB (so CR,
    /// LF and NUL among them) or DEL; `end` when there is none. Field lines contain no such byte (RFC 9110 §5.5)
    /// but for their CRLF, so a line is crossed in a few steps.
    @inline(__always)
    static func firstSpecial(_ bytes: borrowing Span<UInt8>, from: Int, end: Int) -> Int {
        precondition(from >= 0 && end <= bytes.count && from <= end, "range outside the span")
        return unsafe bytes.withUnsafeBufferPointer { buffer in
            var i = from
            // SAFETY: every load reads buffer[i..<i+8] with i + 8 <= end <= buffer.count.
            let base = unsafe UnsafeRawPointer(buffer.baseAddress!)
            while i + 8 <= end {
                let x = unsafe base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                // A byte below 0x20 (Mycroft's hasless) or equal to 0x7F (haszero of x ^ 0x7F…): look closer.
                let below = (x &- ones &* 0x20) & ~x & highs
                let y = x ^ (ones &* 0x7F)
                let del = (y &- ones) & ~y & highs
                let found = below | del
                if found == 0 {
                    i += 8
                    continue
                }
                // Borrows run upwards only, so the lowest flagged byte is a real one (little-endian loads).
                let k = i + found.trailingZeroBitCount >> 3
                if unsafe buffer[k] != HTTPGrammar.htab { return k }
                i = k + 1
            }
            while i < end {
                let b = unsafe buffer[i]
                if (b < 0x20 && b != HTTPGrammar.htab) || b == 0x7F { return i }
                i += 1
            }
            return end
        }
    }

    /// The index of the first byte of `bytes[from..<end]` that `isTargetChar` refuses (SP, CR and LF among them),
    /// or `end`: a request-target is crossed eight bytes at a time.
    static func firstNonTarget(_ bytes: borrowing Span<UInt8>, from: Int, end: Int) -> Int {
        precondition(from >= 0 && end <= bytes.count && from <= end, "range outside the span")
        return unsafe bytes.withUnsafeBufferPointer { buffer in
            var i = from
            // SAFETY: every load reads buffer[i..<i+8] with i + 8 <= end <= buffer.count.
            let base = unsafe UnsafeRawPointer(buffer.baseAddress!)
            while i + 8 <= end {
                let x = unsafe base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                // Below 0x21, at or above 0x7F, or "#" (0x23): look closer.
                let below = (x &- ones &* 0x21) & ~x & highs
                let above = (x &+ ones &* 0x01) | x  // 0x7F + 1 sets the high bit; so does anything ≥ 0x80
                let y = x ^ (ones &* 0x23)
                let hash = (y &- ones) & ~y & highs
                let found = below | (above & highs) | hash
                if found == 0 {
                    i += 8
                    continue
                }
                // Borrows and carries run upwards only: the lowest flagged byte is a real one.
                return i + found.trailingZeroBitCount >> 3
            }
            while i < end {
                if !isTargetChar(unsafe buffer[i]) { return i }
                i += 1
            }
            return end
        }
    }

    /// The end of a field name starting at `from`: the index of the first byte in `from..<end` that is not a
    /// token character (the colon, in a valid line), or `end`. Byte by byte without bounds checks: names are
    /// short, and this loop runs for every field line.
    @inline(__always)
    static func fieldNameEnd(_ bytes: borrowing Span<UInt8>, from: Int, end: Int) -> Int {
        precondition(from >= 0 && end <= bytes.count && from <= end, "range outside the span")
        return unsafe bytes.withUnsafeBufferPointer { buffer in
            var i = from
            // SAFETY: from <= i < end <= buffer.count.
            while i < end, isTokenCharFast(unsafe buffer[i]) { i += 1 }
            return i
        }
    }

    /// A field value's bounds: `from..<end` without leading and trailing OWS (RFC 9110 §5.5), read without
    /// bounds checks per byte (it runs for every field line).
    @inline(__always)
    static func trimmedValue(_ bytes: borrowing Span<UInt8>, from: Int, end: Int) -> Range<Int> {
        precondition(from >= 0 && end <= bytes.count && from <= end, "range outside the span")
        return unsafe bytes.withUnsafeBufferPointer { buffer in
            var lo = from
            var hi = end
            // SAFETY: from <= lo < hi <= end <= buffer.count on every read.
            while lo < hi, isWhitespace(unsafe buffer[lo]) { lo += 1 }
            while hi > lo, isWhitespace(unsafe buffer[hi - 1]) { hi -= 1 }
            return lo..<hi
        }
    }

    /// Whether every byte of `range` is a Host character (`isHostChar`).
    @inline(__always)
    static func allHostChars(_ bytes: borrowing Span<UInt8>, _ range: Range<Int>) -> Bool {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count, "range outside the span")
        return unsafe bytes.withUnsafeBufferPointer { buffer in
            var i = range.lowerBound
            // SAFETY: range lies inside the buffer (checked above).
            while i < range.upperBound {
                if !isHostChar(unsafe buffer[i]) { return false }
                i += 1
            }
            return true
        }
    }
}
