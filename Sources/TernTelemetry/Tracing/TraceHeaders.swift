// Reading the trace context a request arrived with, one field at a time, from the request's own bytes (no
// copy, no allocation). Rules (../shared/reference/istio.md §6):
//
//   traceparent  W3C Trace Context §3.2: "vv-<32 hex>-<16 hex>-ff", lowercase hex only. Version ff is invalid;
//                version 00 is exactly 55 bytes; a higher version may carry more after a "-" at byte 55 (§4.3:
//                parse what version 00 defines, ignore the rest). All-zero ids are invalid. Flags: bit 0x01 is
//                sampled (a mask; other bits ignored). Two traceparent fields are invalid.
//   tracestate   §3.3: forwarded unchanged when it is a valid list (keys and values as §3.3.1 defines them,
//                ≤ 32 members, ≤ 512 bytes combined) and it came with a valid traceparent; otherwise dropped.
//                Several tracestate fields form one list (RFC 9110 §5.3).
//   b3           B3 single: "{traceid}-{spanid}[-{sampling}[-{parentspanid}]]" or the sampling state alone
//                ("0", "1", "d"); trace id 16 or 32 hex, span ids 16 hex, none all zeros.
//   x-b3-*       B3 multi: traceid (16/32 hex), spanid, parentspanid (16 hex), sampled (1, 0, true, false),
//                flags ("1": debug). Ids need both traceid and spanid; sampled/flags alone are a sampling-only
//                decision. Any invalid or repeated field voids all x-b3-* fields.
//
// Hex in B3 fields is accepted in either case (Envoy does; the B3 spec writes lowercase, and Tern writes
// lowercase). Precedence: a valid traceparent, else a valid b3, else valid x-b3-* fields, else nothing (the
// proxy starts a new trace). Invalid input is never an error, only "no context".

/// The trace fields of one request, fed as they are met in the head; `context` is the result.
public struct TraceHeaders: Sendable {
    private var w3c = TraceContext()
    private var traceparents = 0
    private var traceStateMembers = 0
    private var traceStateBytes = 0
    private var traceStateFields = 0
    private var traceStateValid = true

    private var single = TraceContext()
    private var singles = 0
    private var singleValid = false

    private var multi = TraceContext()
    private var multiSeen: UInt8 = 0
    private var multiValid = true

    /// The combined tracestate forwarded at most (bytes); `CapturedField.traceState.limit` keeps as many.
    public static let traceStateLimit = 512
    /// List members a tracestate may have (W3C §3.3.1.1).
    public static let traceStateMaxMembers = 32

    public init() {}

    /// Forgets every field (the next request on a connection).
    public mutating func reset() { self = TraceHeaders() }

    /// One field whose name and value (OWS trimmed) are ranges of `bytes` (a parsed head's offsets). Fields
    /// that carry no trace context are ignored, so every field of a head may be passed.
    public mutating func add(name: Range<Int>, value: Range<Int>, in bytes: borrowing Span<UInt8>) {
        add(name: bytes.extracting(name), value: bytes.extracting(value))
    }

    /// One field: its name (any case) and its value with surrounding whitespace trimmed.
    public mutating func add(name: borrowing Span<UInt8>, value: borrowing Span<UInt8>) {
        switch TraceField(name) {
        case .traceparent?:
            w3c.styles.insert(.w3c)
            traceparents += 1
            if traceparents == 1, let c = Self.traceparent(value) {
                let styles = w3c.styles
                w3c = c
                w3c.styles = styles
            } else {
                w3c.traceIDLow = 0
                w3c.traceIDHigh = 0
                w3c.spanID = 0
            }
        case .tracestate?:
            w3c.styles.insert(.w3c)
            traceStateFields += 1
            traceStateBytes += value.count + (traceStateFields > 1 ? 1 : 0)
            if let n = Self.traceStateMembers(value) { traceStateMembers += n } else { traceStateValid = false }
        case .b3?:
            single.styles.insert(.b3Single)
            singles += 1
            let styles = single.styles
            if singles == 1, let c = Self.b3Single(value) {
                single = c
                singleValid = true
            } else {
                single = TraceContext()
                singleValid = false
            }
            single.styles = styles
        case .b3TraceID?:
            multiField(0, value) { h, v in
                guard let (hi, lo, short) = Self.traceID(v, lowercaseOnly: false) else { return false }
                h.traceIDHigh = hi
                h.traceIDLow = lo
                h.shortTraceID = short
                return true
            }
        case .b3SpanID?:
            multiField(1, value) { h, v in
                guard let id = Self.spanID(v) else { return false }
                h.spanID = id
                return true
            }
        case .b3ParentSpanID?:
            multiField(2, value) { h, v in
                guard let id = Self.spanID(v) else { return false }
                h.parentSpanID = id
                return true
            }
        case .b3Sampled?:
            multiField(3, value) { h, v in
                if Self.equals(v, "1") || Self.equals(v, "true") { h.sampled = true; return true }
                if Self.equals(v, "0") || Self.equals(v, "false") { h.sampled = false; return true }
                return false
            }
        case .b3Flags?:
            multiField(4, value) { h, v in
                // Only "1" means anything (debug); B3 defines no other flag.
                if Self.equals(v, "1") { h.debug = true }
                return true
            }
        case nil:
            break
        }
    }

    /// One x-b3-* field: the first of its kind parsed by `parse`, a repeat voiding them all.
    private mutating func multiField(_ bit: UInt8, _ value: borrowing Span<UInt8>,
                                     _ parse: (inout TraceContext, borrowing Span<UInt8>) -> Bool)
    {
        multi.styles.insert(.b3Multi)
        if multiSeen & (1 << bit) != 0 { multiValid = false }
        multiSeen |= 1 << bit
        if !parse(&multi, value) { multiValid = false }
    }

    /// The context the fields carried (`hasIDs` false when none was valid), with every style that was present.
    public var context: TraceContext {
        // Most requests carry no trace field at all.
        guard traceparents | traceStateFields | singles | Int(multiSeen) != 0 else { return TraceContext() }
        let styles = w3c.styles.union(single.styles).union(multi.styles)
        var out: TraceContext
        if traceparents == 1 && w3c.hasIDs {
            out = w3c
            out.forwardsTraceState = traceStateValid && traceStateMembers > 0
                && traceStateMembers <= Self.traceStateMaxMembers && traceStateBytes <= Self.traceStateLimit
        } else if singleValid {
            out = single
        } else if multiValid && multiSeen != 0 {
            let ids = multiSeen & 0b111
            if ids == 0 {
                // Sampling only (x-b3-sampled and/or x-b3-flags).
                out = TraceContext()
                out.sampled = multi.sampled
                out.debug = multi.debug
            } else if ids & 0b011 == 0b011 {
                out = multi
            } else {
                out = TraceContext()  // a parent or one id without the other
            }
        } else {
            out = TraceContext()
        }
        if out.debug { out.sampled = true }
        out.styles = styles
        return out
    }

    // MARK: - Grammar

    /// "vv-<trace id>-<parent id>-<flags>", W3C Trace Context §3.2.2.
    static func traceparent(_ v: borrowing Span<UInt8>) -> TraceContext? {
        guard v.count >= 55, let version = hex(v, 0, 2, lowercaseOnly: true), version != 0xFF,
              v[2] == dash, v[35] == dash, v[52] == dash
        else { return nil }
        // Version 00 is exactly 55 bytes; a later version may append fields after a dash (§4.3).
        if version == 0 { guard v.count == 55 else { return nil } } else if v.count > 55 { guard v[55] == dash else { return nil } }
        guard let hi = hex(v, 3, 16, lowercaseOnly: true), let lo = hex(v, 19, 16, lowercaseOnly: true),
              let span = hex(v, 36, 16, lowercaseOnly: true), let flags = hex(v, 53, 2, lowercaseOnly: true),
              hi | lo != 0, span != 0
        else { return nil }
        return TraceContext(traceIDHigh: hi, traceIDLow: lo, spanID: span, sampled: flags & 0x01 != 0)
    }

    /// "{traceid}-{spanid}[-{sampling}[-{parentspanid}]]" or "0" / "1" / "d" (openzipkin/b3-propagation).
    static func b3Single(_ v: borrowing Span<UInt8>) -> TraceContext? {
        var c = TraceContext()
        if v.count == 1 {
            guard setSampling(&c, v[0]) else { return nil }
            return c
        }
        let t: Int
        if v.count >= 33 && v[32] == dash { t = 32 } else if v.count >= 17 && v[16] == dash { t = 16 } else { return nil }
        guard let (hi, lo, short) = traceID(v.extracting(0..<t), lowercaseOnly: false),
              v.count >= t + 17, let span = hex(v, t + 1, 16, lowercaseOnly: false), span != 0
        else { return nil }
        c.traceIDHigh = hi
        c.traceIDLow = lo
        c.shortTraceID = short
        c.spanID = span
        var i = t + 17
        if i == v.count { return c }
        guard v.count >= i + 2, v[i] == dash, setSampling(&c, v[i + 1]) else { return nil }
        i += 2
        if i == v.count { return c }
        guard v.count == i + 17, v[i] == dash, let parent = hex(v, i + 1, 16, lowercaseOnly: false), parent != 0 else { return nil }
        c.parentSpanID = parent
        return c
    }

    private static func setSampling(_ c: inout TraceContext, _ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "0"): c.sampled = false
        case UInt8(ascii: "1"): c.sampled = true
        case UInt8(ascii: "d"):
            c.debug = true
            c.sampled = true
        default: return false
        }
        return true
    }

    /// A 16- or 32-digit trace id, not all zeros: (high, low, was 16 digits).
    static func traceID(_ v: borrowing Span<UInt8>, lowercaseOnly: Bool) -> (UInt64, UInt64, Bool)? {
        if v.count == 16 {
            guard let lo = hex(v, 0, 16, lowercaseOnly: lowercaseOnly), lo != 0 else { return nil }
            return (0, lo, true)
        }
        guard v.count == 32, let hi = hex(v, 0, 16, lowercaseOnly: lowercaseOnly),
              let lo = hex(v, 16, 16, lowercaseOnly: lowercaseOnly), hi | lo != 0
        else { return nil }
        return (hi, lo, false)
    }

    /// A 16-digit span id, not zero.
    static func spanID(_ v: borrowing Span<UInt8>) -> UInt64? {
        guard v.count == 16, let id = hex(v, 0, 16, lowercaseOnly: false), id != 0 else { return nil }
        return id
    }

    /// `count` (≤ 16) hex digits of `v` from `start`.
    static func hex(_ v: borrowing Span<UInt8>, _ start: Int, _ count: Int, lowercaseOnly: Bool) -> UInt64? {
        guard start >= 0, count <= 16, start + count <= v.count else { return nil }
        var out: UInt64 = 0
        for i in start..<(start + count) {
            let b = v[i]
            let d: UInt8
            switch b {
            case 0x30...0x39: d = b &- 0x30
            case 0x61...0x66: d = b &- 0x61 &+ 10
            case 0x41...0x46 where !lowercaseOnly: d = b &- 0x41 &+ 10
            default: return nil
            }
            out = out << 4 | UInt64(d)
        }
        return out
    }

    /// The members of one tracestate field value, or nil when it is not a valid list (W3C §3.3.1). Empty
    /// members (",,") are allowed and not counted.
    static func traceStateMembers(_ v: borrowing Span<UInt8>) -> Int? {
        var members = 0
        var start = 0
        while start <= v.count {
            var end = start
            while end < v.count && v[end] != UInt8(ascii: ",") { end += 1 }
            var a = start
            var b = end
            while a < b && isOWS(v[a]) { a += 1 }
            while b > a && isOWS(v[b - 1]) { b -= 1 }
            if a < b {
                guard member(v, a, b) else { return nil }
                members += 1
            }
            start = end + 1
        }
        return members
    }

    /// key "=" value, W3C §3.3.1.3: simple-key or tenant-id "@" system-id; value of printable ASCII except
    /// "," and "=", at most 256, not ending in a space.
    private static func member(_ v: borrowing Span<UInt8>, _ a: Int, _ b: Int) -> Bool {
        var eq = a
        while eq < b && v[eq] != UInt8(ascii: "=") { eq += 1 }
        guard eq < b, eq > a else { return false }
        // Key.
        var at = -1
        for i in a..<eq {
            let c = v[i]
            if c == UInt8(ascii: "@") {
                guard at < 0 else { return false }
                at = i
            } else if !(isLowerAlpha(c) || isDigit(c) || c == 0x5F || c == 0x2D || c == 0x2A || c == 0x2F) {
                return false
            }
        }
        if at < 0 {
            guard eq - a <= 256, isLowerAlpha(v[a]) else { return false }
        } else {
            let tenant = at - a, system = eq - at - 1
            guard tenant >= 1, tenant <= 241, isLowerAlpha(v[a]) || isDigit(v[a]),
                  system >= 1, system <= 14, isLowerAlpha(v[at + 1])
            else { return false }
        }
        // Value: chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E.
        let n = b - eq - 1
        guard n >= 1, n <= 256, v[b - 1] != 0x20 else { return false }
        for i in (eq + 1)..<b {
            let c = v[i]
            guard c >= 0x20, c <= 0x7E, c != 0x2C, c != 0x3D else { return false }
        }
        return true
    }

    private static func isOWS(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }
    private static func isLowerAlpha(_ c: UInt8) -> Bool { c >= 0x61 && c <= 0x7A }
    private static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
    private static let dash = UInt8(ascii: "-")

    /// Whether `v` is exactly `text` (ASCII, `text` lowercase; `v` in any case).
    static func equals(_ v: borrowing Span<UInt8>, _ text: String) -> Bool {
        var i = 0
        for c in text.utf8 {
            guard i < v.count else { return false }
            let b = v[i]
            if (b >= 0x41 && b <= 0x5A ? b | 0x20 : b) != c { return false }
            i += 1
        }
        return i == v.count
    }
}

/// The fields `TraceHeaders` reads. The proxy removes each of them (and every other `x-b3-*` field) from a
/// forwarded head and adds the proxy's own (`TraceContext.writeFields`).
enum TraceField {
    case traceparent, tracestate, b3, b3TraceID, b3SpanID, b3ParentSpanID, b3Sampled, b3Flags

    init?(_ name: borrowing Span<UInt8>) {
        switch name.count {
        case 2 where TraceHeaders.equals(name, "b3"): self = .b3
        case 10 where TraceHeaders.equals(name, "tracestate"): self = .tracestate
        case 10 where TraceHeaders.equals(name, "x-b3-flags"): self = .b3Flags
        case 11 where TraceHeaders.equals(name, "traceparent"): self = .traceparent
        case 11 where TraceHeaders.equals(name, "x-b3-spanid"): self = .b3SpanID
        case 12 where TraceHeaders.equals(name, "x-b3-traceid"): self = .b3TraceID
        case 12 where TraceHeaders.equals(name, "x-b3-sampled"): self = .b3Sampled
        case 17 where TraceHeaders.equals(name, "x-b3-parentspanid"): self = .b3ParentSpanID
        default: return nil
        }
    }
}
