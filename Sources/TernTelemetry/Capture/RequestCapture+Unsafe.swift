// Request values the access log and spans report after the request's bytes are gone (forwarded, buffers
// reused): copied at head time into a fixed area per connection slot, truncated to a bound per field, so the
// request path never allocates for them. One per reactor; only that reactor reads and writes it.
import Glibc

/// The values kept per request.
public enum CapturedField: Int, CaseIterable, Sendable {
    case method, path, authority, userAgent, forwardedFor, requestID, downstreamRemote, downstreamLocal
    case traceParent, traceState

    /// Bytes kept at most (a longer value is cut there).
    public var limit: Int {
        switch self {
        case .method: 24
        case .path: 512
        case .authority: 128
        case .userAgent: 192
        case .forwardedFor: 128
        case .requestID: 64
        case .downstreamRemote, .downstreamLocal: 48
        case .traceParent: 64
        // W3C Trace Context: a proxy should pass on at least 512 bytes of tracestate (TraceHeaders.traceStateLimit).
        case .traceState: 512
        }
    }

    /// Where the field's bytes start in a slot: after the slot's length table, then each field after the one
    /// before it. A switch the compiler folds to constants, because the request path reads it for every field
    /// (a table in a global costs a lazy-init check and an array access each time).
    @inline(__always)
    var offset: Int {
        switch self {
        case .method: CapturedField.count * 2
        case .path: CapturedField.method.end
        case .authority: CapturedField.path.end
        case .userAgent: CapturedField.authority.end
        case .forwardedFor: CapturedField.userAgent.end
        case .requestID: CapturedField.forwardedFor.end
        case .downstreamRemote: CapturedField.requestID.end
        case .downstreamLocal: CapturedField.downstreamRemote.end
        case .traceParent: CapturedField.downstreamLocal.end
        case .traceState: CapturedField.traceParent.end
        }
    }

    /// Where the field's bytes end in a slot.
    @inline(__always)
    var end: Int { offset + limit }

    /// How many fields there are (`allCases.count` builds an array each time in a debug build).
    static var count: Int { CapturedField.traceState.rawValue + 1 }

    /// Bytes per slot: a UInt16 length per field, then the fields, rounded up to a cache line.
    static var slotSize: Int { (CapturedField.traceState.end + 63) & ~63 }
}

@safe public final class RequestCapture {
    // SAFETY: `area` holds `slots` × slotSize bytes, zeroed by calloc, freed in deinit; every access below checks
    // the slot index and keeps offsets inside the field's limit.
    private let area: UnsafeMutableRawPointer
    public let slots: Int

    public init(slots: Int) {
        self.slots = slots
        // calloc: pages are backed only once a slot is used.
        unsafe area = calloc(max(slots, 1), CapturedField.slotSize)!
    }

    deinit { unsafe free(area) }

    private func slotBase(_ slot: Int) -> UnsafeMutableRawPointer {
        precondition(slot >= 0 && slot < slots, "capture slot out of range")
        return unsafe area + slot * CapturedField.slotSize
    }

    /// The stored length of `field` in `slot`.
    public func length(_ slot: Int, _ field: CapturedField) -> Int {
        Int(unsafe slotBase(slot).load(fromByteOffset: field.rawValue * 2, as: UInt16.self))
    }

    private func setLength(_ slot: Int, _ field: CapturedField, _ n: Int) {
        unsafe slotBase(slot).storeBytes(of: UInt16(n), toByteOffset: field.rawValue * 2, as: UInt16.self)
    }

    /// Forgets every field of `slot` (a new request on the connection).
    public func clear(_ slot: Int) {
        unsafe slotBase(slot).initializeMemory(as: UInt8.self, repeating: 0, count: CapturedField.count * 2)
    }

    /// Forgets `field` of `slot`.
    public func clear(_ slot: Int, _ field: CapturedField) { setLength(slot, field, 0) }

    /// Stores `bytes` (cut at the field's limit) as `field` of `slot`.
    public func set(_ slot: Int, _ field: CapturedField, _ bytes: UnsafeRawBufferPointer) {
        let n = min(bytes.count, field.limit)
        if n > 0 { unsafe (slotBase(slot) + field.offset).copyMemory(from: bytes.baseAddress!, byteCount: n) }
        setLength(slot, field, n)
    }

    /// Appends `bytes` to `field` of `slot`, after `separator` when the field is not empty (a field repeated in
    /// a head, joined as a list: RFC 9110 §5.3). Stops at the field's limit.
    public func append(_ slot: Int, _ field: CapturedField, _ bytes: UnsafeRawBufferPointer, separator: UInt8 = 0x2C) {
        var n = length(slot, field)
        let base = unsafe slotBase(slot) + field.offset
        if n > 0 && n < field.limit {
            unsafe base.storeBytes(of: separator, toByteOffset: n, as: UInt8.self)
            n += 1
        }
        let k = min(bytes.count, field.limit - n)
        // SAFETY: n + k ≤ the field's limit, so the copy stays inside the field's bytes of the slot.
        if k > 0 { unsafe (base + n).copyMemory(from: bytes.baseAddress!, byteCount: k) }
        setLength(slot, field, n + k)
    }

    /// `append(_:_:_:separator:)` for bytes a parsed head refers to.
    public func append(_ slot: Int, _ field: CapturedField, _ bytes: borrowing Span<UInt8>, separator: UInt8 = 0x2C) {
        // SAFETY: the buffer is the span's own memory, valid for the call.
        unsafe bytes.withUnsafeBufferPointer { unsafe append(slot, field, UnsafeRawBufferPointer($0), separator: separator) }
    }

    /// Stores a string's UTF-8 (cut at the field's limit) as `field` of `slot`.
    public func set(_ slot: Int, _ field: CapturedField, _ text: String) {
        var text = text
        text.withUTF8 { unsafe set(slot, field, UnsafeRawBufferPointer($0)) }
    }

    /// Calls `body` with the stored bytes of `field` (valid only during the call).
    public func withBytes<R>(_ slot: Int, _ field: CapturedField, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        let n = length(slot, field)
        return unsafe body(UnsafeRawBufferPointer(start: slotBase(slot) + field.offset, count: n))
    }

    /// Each stored byte of `field`, in order (the safe way to read a field).
    @inline(__always)
    public func forEachByte(_ slot: Int, _ field: CapturedField, _ body: (UInt8) -> Void) {
        let n = length(slot, field)
        let p = unsafe slotBase(slot) + field.offset
        for i in 0..<n { body(unsafe p.load(fromByteOffset: i, as: UInt8.self)) }
    }

    /// The stored field as a String (tests and the admin thread; allocates).
    public func string(_ slot: Int, _ field: CapturedField) -> String {
        var bytes: [UInt8] = []
        forEachByte(slot, field) { bytes.append($0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
