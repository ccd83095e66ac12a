// The trace fields a proxied request carries: the proxy's span as the new parent. Written byte by byte through
// the caller's sink (or into a caller's buffer, TracePropagation+Unsafe.swift), never allocating.
//
//   traceparent: 00-<trace id>-<proxy span id>-<01|00>          always (W3C §3.2; flags: sampled only)
//   tracestate: <as received>                                   when a valid one came with a valid traceparent
//   b3: <trace id>-<span id>-<1|0|d>[-<parent id>]               when the request came with `b3`
//   x-b3-traceid / x-b3-spanid / x-b3-parentspanid / x-b3-sampled (x-b3-flags: 1 when debug)
//                                                                when it came with x-b3-* fields and no `b3`
//
// The B3 trace id keeps the width it came with (16 or 32 digits); traceparent always has 32.

extension TraceContext {
    /// Bytes `writeFields` writes at most (a 512-byte tracestate and B3 multi fields included).
    public static let maxFieldBytes = 768

    /// Names of the fields the proxy replaces: every received field with one of these names, and every field
    /// whose name starts with `replacedFieldPrefix`, is left out of the forwarded head (TernHTTP's
    /// `HTTP1Forwarding.RequestOptions.replaceTrace` does exactly this) and `writeFields` adds the new ones.
    public static let replacedFieldNames = ["traceparent", "tracestate", "b3"]
    public static let replacedFieldPrefix = "x-b3-"

    /// Writes the proxy span's "name: value\r\n" lines; `traceState` is the tracestate as received (several
    /// fields joined with ","), written only when `forwardsTraceState`.
    public func writeFields(traceState: borrowing Span<UInt8>, _ byte: (UInt8) -> Void) {
        writeTraceparent(byte)
        if forwardsTraceState && !traceState.isEmpty {
            Self.literal("tracestate: ", byte)
            for i in 0..<traceState.count { byte(traceState[i]) }
            Self.literal("\r\n", byte)
        }
        writeB3(byte)
    }

    /// As `writeFields(traceState:_:)`, the tracestate read from a request's capture slot.
    public func writeFields(traceStateFrom capture: RequestCapture, slot: Int, _ byte: (UInt8) -> Void) {
        writeTraceparent(byte)
        writeFieldsAfterTraceparent(traceStateFrom: capture, slot: slot, byte)
    }

    /// The lines `writeFields(traceStateFrom:slot:_:)` writes after traceparent (for a caller that wrote
    /// traceparent in one piece, `withTraceparentLine`).
    public func writeFieldsAfterTraceparent(traceStateFrom capture: RequestCapture, slot: Int, _ byte: (UInt8) -> Void) {
        if forwardsTraceState && capture.length(slot, .traceState) > 0 {
            Self.literal("tracestate: ", byte)
            capture.forEachByte(slot, .traceState, byte)
            Self.literal("\r\n", byte)
        }
        writeB3(byte)
    }

    /// The bytes `writeFields` writes for a tracestate of `traceStateCount` bytes.
    public func fieldBytes(traceStateCount: Int) -> Int {
        var n = 0
        writeTraceparent { _ in n += 1 }
        if forwardsTraceState && traceStateCount > 0 { n += 14 + traceStateCount }
        writeB3 { _ in n += 1 }
        return n
    }

    /// `traceparent: 00-{trace}-{span}-{flags}`.
    func writeTraceparent(_ byte: (UInt8) -> Void) {
        withTraceparentLine { line in
            for i in line.indices { byte(line[i]) }
        }
    }

    /// Bytes of the traceparent line, "\r\n" included.
    public static let traceparentLineBytes = 70

    /// The 16 lowercase hex digits of `value`, most significant first, as two words whose bytes in memory
    /// order (big-endian) are the digits: each nibble spread into its own byte, then turned into ASCII for
    /// all eight bytes at once.
    @inline(__always)
    static func hexWords(_ value: UInt64) -> (UInt64, UInt64) {
        (hexWord(UInt32(truncatingIfNeeded: value >> 32)), hexWord(UInt32(truncatingIfNeeded: value)))
    }

    @inline(__always)
    static func hexWord(_ x: UInt32) -> UInt64 {
        var v = UInt64(x)
        v = (v | (v << 16)) & 0x0000_FFFF_0000_FFFF
        v = (v | (v << 8)) & 0x00FF_00FF_00FF_00FF
        v = (v | (v << 4)) & 0x0F0F_0F0F_0F0F_0F0F  // byte i holds nibble i (least significant first)
        let letters = ((v &+ 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101  // 1 where the nibble ≥ 10
        return v &+ 0x3030_3030_3030_3030 &+ letters &* 0x27  // '0' + n, or 'a' + n - 10
    }

    /// B3 in the style the request came with.
    func writeB3(_ byte: (UInt8) -> Void) {
        if styles.contains(.b3Single) {
            Self.literal("b3: ", byte)
            writeB3TraceID(byte)
            byte(UInt8(ascii: "-"))
            Self.hex(spanID, 16, byte)
            Self.literal(debug ? "-d" : sampled == true ? "-1" : "-0", byte)
            if parentSpanID != 0 {
                byte(UInt8(ascii: "-"))
                Self.hex(parentSpanID, 16, byte)
            }
            Self.literal("\r\n", byte)
        } else if styles.contains(.b3Multi) {
            Self.literal("x-b3-traceid: ", byte)
            writeB3TraceID(byte)
            Self.literal("\r\nx-b3-spanid: ", byte)
            Self.hex(spanID, 16, byte)
            Self.literal("\r\n", byte)
            if parentSpanID != 0 {
                Self.literal("x-b3-parentspanid: ", byte)
                Self.hex(parentSpanID, 16, byte)
                Self.literal("\r\n", byte)
            }
            // Debug implies sampled, and B3 says not to send both.
            Self.literal(debug ? "x-b3-flags: 1\r\n" : sampled == true ? "x-b3-sampled: 1\r\n" : "x-b3-sampled: 0\r\n", byte)
        }
    }

    private func writeB3TraceID(_ byte: (UInt8) -> Void) {
        if !shortTraceID { Self.hex(traceIDHigh, 16, byte) }
        Self.hex(traceIDLow, 16, byte)
    }

    /// `digits` lowercase hex digits of `value` (the low ones).
    @inline(__always)
    static func hex(_ value: UInt64, _ digits: Int, _ byte: (UInt8) -> Void) {
        var shift = UInt64(digits * 4)
        while shift > 0 {
            shift -= 4
            let d = UInt8(truncatingIfNeeded: value >> shift) & 0xF
            byte(d < 10 ? 0x30 + d : 0x57 + d)
        }
    }

    @inline(__always)
    static func literal(_ text: String, _ byte: (UInt8) -> Void) {
        for c in text.utf8 { byte(c) }
    }
}
