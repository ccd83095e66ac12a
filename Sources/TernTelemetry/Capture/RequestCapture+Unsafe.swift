// Request values the access log and spans report after the request's bytes are gone (forwarded, buffers
// reused): copied at head time into a fixed area per connection slot, truncated to a bound per field, so the
// request path never allocates for them. One per reactor; only that reactor reads and writes it.
import Glibc

/// The values kept per request.
public enum CapturedField: Int, CaseIterable, Sendable {
    case method, path, authority, userAgent, forwardedFor, requestID, downstreamRemote, downstreamLocal
    case traceParent, traceState
    /// A TLS connection's protocol version ("TLSv1.3"), cipher suite and the server name its client asked for.
    case tlsVersion, tlsCipher, serverName

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
        case .tlsVersion: 16
        case .tlsCipher: 64
        case .serverName: 256
        }
    }

    /// Fields of the connection rather than of a request: set once when it is accepted, kept by `beginRequest`.
    @inline(__always)
    var ofConnection: Bool {
        switch self {
        case .downstreamRemote, .downstreamLocal, .tlsVersion, .tlsCipher, .serverName: true
        default: false
        }
    }

    /// How many fields there are (`allCases.count` builds an array each time in a debug build).
    static var count: Int { CapturedField.serverName.rawValue + 1 }

    // A slot: a table of (offset, length) UInt16 pairs, one per field; the packed region's end (UInt16); the
    // connection's two fields at fixed places; then the packed region, where a request's fields are written one
    // after the other as they are stored, so the few hundred bytes a request uses sit in a few adjacent cache
    // lines (fields at fixed offsets spread them over ten lines, and reading them back for the access log missed
    // the cache once per field). Every offset is a constant the compiler folds.
    static var cursorOffset: Int { count * 4 }
    /// After the table and the cursor, rounded up to 16 bytes.
    static var remoteOffset: Int { (cursorOffset + 2 + 15) & ~15 }
    static var localOffset: Int { remoteOffset + CapturedField.downstreamRemote.limit }
    static var tlsVersionOffset: Int { localOffset + CapturedField.downstreamLocal.limit }
    static var tlsCipherOffset: Int { tlsVersionOffset + CapturedField.tlsVersion.limit }
    static var serverNameOffset: Int { tlsCipherOffset + CapturedField.tlsCipher.limit }
    static var packedStart: Int { serverNameOffset + CapturedField.serverName.limit }

    /// A connection field's fixed place in a slot.
    var connectionOffset: Int {
        switch self {
        case .downstreamRemote: CapturedField.remoteOffset
        case .downstreamLocal: CapturedField.localOffset
        case .tlsVersion: CapturedField.tlsVersionOffset
        case .tlsCipher: CapturedField.tlsCipherOffset
        default: CapturedField.serverNameOffset
        }
    }
    /// Room for every request field at its limit at once, so a request never runs out of it.
    static var packedCapacity: Int {
        CapturedField.method.limit + CapturedField.path.limit + CapturedField.authority.limit + CapturedField.userAgent.limit
            + CapturedField.forwardedFor.limit + CapturedField.requestID.limit + CapturedField.traceParent.limit
            + CapturedField.traceState.limit
    }

    /// Bytes per slot, rounded up to a cache line.
    static var slotSize: Int { (packedStart + packedCapacity + 63) & ~63 }
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

    @inline(__always)
    private func slotBase(_ slot: Int) -> UnsafeMutableRawPointer {
        precondition(slot >= 0 && slot < slots, "capture slot out of range")
        return unsafe area + slot * CapturedField.slotSize
    }

    @inline(__always)
    private func entry(_ base: UnsafeMutableRawPointer, _ field: CapturedField) -> (offset: Int, length: Int) {
        let e = unsafe base.load(fromByteOffset: field.rawValue * 4, as: UInt32.self)
        return (Int(e & 0xFFFF), Int(e >> 16))
    }

    @inline(__always)
    private func setEntry(_ base: UnsafeMutableRawPointer, _ field: CapturedField, offset: Int, length: Int) {
        unsafe base.storeBytes(of: UInt32(offset) | UInt32(length) << 16, toByteOffset: field.rawValue * 4, as: UInt32.self)
    }

    @inline(__always)
    private func cursor(_ base: UnsafeMutableRawPointer) -> Int {
        Int(unsafe base.load(fromByteOffset: CapturedField.cursorOffset, as: UInt16.self))
    }

    @inline(__always)
    private func setCursor(_ base: UnsafeMutableRawPointer, _ c: Int) {
        unsafe base.storeBytes(of: UInt16(c), toByteOffset: CapturedField.cursorOffset, as: UInt16.self)
    }

    /// The stored length of `field` in `slot`.
    @inline(__always)
    public func length(_ slot: Int, _ field: CapturedField) -> Int {
        unsafe entry(slotBase(slot), field).length
    }

    /// Forgets every field of `slot` (a new connection).
    public func clear(_ slot: Int) {
        let base = unsafe slotBase(slot)
        unsafe base.initializeMemory(as: UInt8.self, repeating: 0, count: CapturedField.cursorOffset)
        unsafe setCursor(base, CapturedField.packedStart)
    }

    /// Forgets the request fields of `slot`, keeping the connection's: a new request on the connection. Its
    /// fields are then packed from the start of the region again.
    public func beginRequest(_ slot: Int) {
        let base = unsafe slotBase(slot)
        for raw in 0..<CapturedField.count {
            guard let field = CapturedField(rawValue: raw), !field.ofConnection else { continue }
            unsafe setEntry(base, field, offset: 0, length: 0)
        }
        unsafe setCursor(base, CapturedField.packedStart)
    }

    /// Forgets `field` of `slot`.
    public func clear(_ slot: Int, _ field: CapturedField) {
        let base = unsafe slotBase(slot)
        let e = unsafe entry(base, field)
        let end = unsafe cursor(base)
        // The last one packed gives its room back.
        if !field.ofConnection && e.length > 0 && e.offset + e.length == end { unsafe setCursor(base, e.offset) }
        unsafe setEntry(base, field, offset: 0, length: 0)
    }

    /// Where `field` of the slot at `base` may write `count` bytes (its stored bytes, `keep` of them, first):
    /// its fixed place for a connection field; in the packed region, where it is (if it is the last one there)
    /// or at the end (the region compacted first if the end lacks room). Updates the entry to `count` bytes.
    private func place(_ base: UnsafeMutableRawPointer, _ field: CapturedField, count: Int, keep: Int) -> UnsafeMutableRawPointer {
        precondition(count <= field.limit && keep <= count)
        if field.ofConnection {
            let offset = field.connectionOffset
            unsafe setEntry(base, field, offset: offset, length: count)
            return unsafe base + offset
        }
        let regionEnd = CapturedField.packedStart + CapturedField.packedCapacity
        var e = unsafe entry(base, field)
        let end = max(unsafe cursor(base), CapturedField.packedStart)  // 0 in a slot calloc'd and never cleared
        // The last one packed grows or shrinks in place; any other goes to the end.
        let last = e.length > 0 && e.offset + e.length == end
        var c = last ? e.offset : end
        if c + count > regionEnd {
            // Cleared fields left holes. Its old bytes are dead unless kept; the others then need at most the
            // capacity less its limit, so after compaction it fits.
            if keep == 0 { unsafe setEntry(base, field, offset: 0, length: 0) }
            unsafe compact(base, keeping: keep > 0 ? field : nil)
            e = unsafe entry(base, field)
            c = keep > 0 ? e.offset : unsafe cursor(base)
        } else if keep > 0 && !last {
            unsafe (base + c).copyMemory(from: base + e.offset, byteCount: keep)
        }
        precondition(c + count <= regionEnd, "capture region overflow")
        unsafe setEntry(base, field, offset: c, length: count)
        unsafe setCursor(base, c + count)
        return unsafe base + c
    }

    /// Moves the live request fields of a slot to the start of its packed region, in the order they lie
    /// (`last`, when given, after all of them), so the free room is all at the end. Only when the end lacks
    /// room: a caller storing fields without `beginRequest` between requests.
    private func compact(_ base: UnsafeMutableRawPointer, keeping last: CapturedField?) {
        var live: [(offset: Int, field: CapturedField)] = []
        for field in CapturedField.allCases where !field.ofConnection && field != last {
            let e = unsafe entry(base, field)
            if e.length > 0 { live.append((e.offset, field)) } else { unsafe setEntry(base, field, offset: 0, length: 0) }
        }
        live.sort { $0.offset < $1.offset }
        let saved: [UInt8]
        if let last, unsafe entry(base, last).length > 0 {
            let e = unsafe entry(base, last)
            saved = unsafe Array(UnsafeRawBufferPointer(start: base + e.offset, count: e.length))
        } else {
            saved = []
        }
        var c = CapturedField.packedStart
        for (offset, field) in live {
            let n = unsafe entry(base, field).length
            // Moving down only (c ≤ offset): memmove semantics.
            unsafe (base + c).copyMemory(from: base + offset, byteCount: n)
            unsafe setEntry(base, field, offset: c, length: n)
            c += n
        }
        if let last {
            unsafe saved.withUnsafeBytes { unsafe (base + c).copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(base), byteCount: $0.count) }
            unsafe setEntry(base, last, offset: c, length: saved.count)
            c += saved.count
        }
        unsafe setCursor(base, c)
    }

    /// Stores `bytes` (cut at the field's limit) as `field` of `slot`.
    public func set(_ slot: Int, _ field: CapturedField, _ bytes: UnsafeRawBufferPointer) {
        let base = unsafe slotBase(slot)
        let n = min(bytes.count, field.limit)
        if n == 0 {
            clear(slot, field)
            return
        }
        let p = unsafe place(base, field, count: n, keep: 0)
        unsafe p.copyMemory(from: bytes.baseAddress!, byteCount: n)
    }

    /// Appends `bytes` to `field` of `slot`, after `separator` when the field is not empty (a field repeated in
    /// a head, joined as a list: RFC 9110 §5.3). Stops at the field's limit.
    public func append(_ slot: Int, _ field: CapturedField, _ bytes: UnsafeRawBufferPointer, separator: UInt8 = 0x2C) {
        let base = unsafe slotBase(slot)
        let had = unsafe entry(base, field).length
        guard had < field.limit else { return }
        let sep = had > 0 ? 1 : 0
        let k = min(bytes.count, field.limit - had - sep)
        if had == 0 && k == 0 { return }
        // SAFETY: place returns room for had + sep + k ≤ the field's limit bytes, the first `had` its old ones.
        let p = unsafe place(base, field, count: had + sep + k, keep: had)
        if sep > 0 { unsafe p.storeBytes(of: separator, toByteOffset: had, as: UInt8.self) }
        if k > 0 { unsafe (p + had + sep).copyMemory(from: bytes.baseAddress!, byteCount: k) }
    }

    /// `append(_:_:_:separator:)` for bytes a parsed head refers to.
    public func append(_ slot: Int, _ field: CapturedField, _ bytes: borrowing Span<UInt8>, separator: UInt8 = 0x2C) {
        // SAFETY: the buffer is the span's own memory, valid for the call.
        unsafe bytes.withUnsafeBufferPointer { unsafe append(slot, field, UnsafeRawBufferPointer($0), separator: separator) }
    }

    /// `set(_:_:_:)` for bytes composed elsewhere (an address's text on the stack).
    public func set(_ slot: Int, _ field: CapturedField, _ bytes: borrowing Span<UInt8>) {
        // SAFETY: the buffer is the span's own memory, valid for the call.
        unsafe bytes.withUnsafeBufferPointer { unsafe set(slot, field, UnsafeRawBufferPointer($0)) }
    }

    /// Stores a string's UTF-8 (cut at the field's limit) as `field` of `slot`.
    public func set(_ slot: Int, _ field: CapturedField, _ text: String) {
        var text = text
        text.withUTF8 { unsafe set(slot, field, UnsafeRawBufferPointer($0)) }
    }

    /// Calls `body` with the stored bytes of `field` (valid only during the call).
    @inline(__always)
    public func withBytes<R>(_ slot: Int, _ field: CapturedField, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        let base = unsafe slotBase(slot)
        let e = unsafe entry(base, field)
        return unsafe body(UnsafeRawBufferPointer(start: base + e.offset, count: e.length))
    }

    /// Each stored byte of `field`, in order (the safe way to read a field).
    @inline(__always)
    public func forEachByte(_ slot: Int, _ field: CapturedField, _ body: (UInt8) -> Void) {
        let base = unsafe slotBase(slot)
        let e = unsafe entry(base, field)
        for i in 0..<e.length { body(unsafe base.load(fromByteOffset: e.offset + i, as: UInt8.self)) }
    }

    /// The stored field as a String (tests and the admin thread; allocates).
    public func string(_ slot: Int, _ field: CapturedField) -> String {
        var bytes: [UInt8] = []
        forEachByte(slot, field) { bytes.append($0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
