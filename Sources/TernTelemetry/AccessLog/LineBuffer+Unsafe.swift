// The fixed buffer an access-log line is composed in before it is copied into a shard's ring: one per shard,
// allocated once, used by the producing reactor only. Every append is bounds-checked; one that does not fit
// sets `overflowed` and writes nothing, and the caller drops the whole line (a line is never cut).

/// A fixed-capacity byte buffer that never grows.
@safe struct LineBuffer: ~Copyable {
    // SAFETY: `base` holds `capacity` bytes, allocated in init and freed in deinit (the buffer is ~Copyable, so
    // exactly one owner frees it); every store below checks `count + n <= capacity` first.
    private let base: UnsafeMutableRawPointer
    let capacity: Int
    private(set) var count = 0
    private(set) var overflowed = false

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        unsafe base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
    }

    deinit { unsafe base.deallocate() }

    mutating func reset() {
        count = 0
        overflowed = false
    }

    @inline(__always)
    mutating func append(_ b: UInt8) {
        guard count < capacity else {
            overflowed = true
            return
        }
        unsafe base.storeBytes(of: b, toByteOffset: count, as: UInt8.self)
        count += 1
    }

    /// Bytes `[from, to)` of `bytes`, as they are (a run the caller checked needs no escaping).
    mutating func append(_ bytes: UnsafeRawBufferPointer, from: Int, to: Int) {
        precondition(from >= 0 && from <= to && to <= bytes.count)
        let n = to - from
        guard count + n <= capacity else {
            overflowed = true
            return
        }
        // SAFETY: [from, to) lies inside `bytes` (checked above); count + n is within capacity.
        if n > 0 { unsafe (base + count).copyMemory(from: bytes.baseAddress! + from, byteCount: n) }
        count += n
    }

    /// A literal (JSON keys, separators).
    mutating func append(_ s: StaticString) {
        let n = s.utf8CodeUnitCount
        guard count + n <= capacity else {
            overflowed = true
            return
        }
        // SAFETY: the buffer holds the literal's n bytes (static storage, or a scalar on the stack for the
        // call); count + n is within capacity (checked above).
        s.withUTF8Buffer { src in
            if let p = src.baseAddress { unsafe (base + count).copyMemory(from: p, byteCount: n) }
        }
        count += n
    }

    /// `v` in decimal.
    mutating func appendDecimal(_ v: UInt64) {
        var digits = 1
        var rest = v / 10
        while rest != 0 {
            digits += 1
            rest /= 10
        }
        appendDecimal(v, width: digits)
    }

    /// `v` in decimal, left-padded with zeros to `width` digits (more when `v` needs them).
    mutating func appendDecimal(_ v: UInt64, width: Int) {
        var digits = 1
        var rest = v / 10
        while rest != 0 {
            digits += 1
            rest /= 10
        }
        let n = max(digits, width)
        guard count + n <= capacity else {
            overflowed = true
            return
        }
        var value = v
        var i = count + n - 1
        while i >= count {
            // SAFETY: count <= i < count + n <= capacity.
            unsafe base.storeBytes(of: UInt8(truncatingIfNeeded: value % 10) &+ 0x30, toByteOffset: i, as: UInt8.self)
            value /= 10
            i -= 1
        }
        count += n
    }

    /// The line's bytes copied into `ring` (of `ringCapacity` bytes) at `offset`, wrapping to its start.
    /// The caller guarantees the ring has room (the shard checked it against the consumer's head).
    func copy(into ring: UnsafeMutableRawPointer, ringCapacity: Int, at offset: Int) {
        precondition(offset >= 0 && offset < ringCapacity && count <= ringCapacity)
        let first = min(count, ringCapacity - offset)
        // SAFETY: offset + first <= ringCapacity and count - first < ringCapacity; both sources lie in base's
        // first `count` bytes.
        unsafe (ring + offset).copyMemory(from: base, byteCount: first)
        if count > first { unsafe ring.copyMemory(from: base + first, byteCount: count - first) }
    }

    /// The line so far (tests and `AccessLogLine.render`; allocates).
    var bytes: [UInt8] {
        // SAFETY: the first `count` bytes were written by the appends above.
        unsafe Array(UnsafeRawBufferPointer(start: base, count: count))
    }
}

extension LineBuffer {
    /// A captured value escaped for `mode` (see `appendEscaped(_:_:)`).
    mutating func appendEscaped(_ capture: RequestCapture, _ slot: Int, _ field: CapturedField, _ mode: ValueEscaper.Mode) {
        unsafe capture.withBytes(slot, field) { unsafe appendEscaped($0, mode) }
    }

    /// A string escaped for `mode`, its UTF-8 read in place (strings from the route table are native: no copy
    /// is made).
    mutating func appendEscaped(_ text: String, _ mode: ValueEscaper.Mode) {
        var text = text
        text.withUTF8 { unsafe appendEscaped(UnsafeRawBufferPointer($0), mode) }
    }

    /// `bytes` escaped for `mode`: runs of printable ASCII that need no escaping are copied whole (most of
    /// every value), the rest goes byte by byte through the escaper.
    mutating func appendEscaped(_ bytes: UnsafeRawBufferPointer, _ mode: ValueEscaper.Mode) {
        var e = ValueEscaper(mode)
        var i = 0
        while i < bytes.count {
            var j = i
            if e.idle {
                while j < bytes.count && ValueEscaper.plain(unsafe bytes[j], mode) { j += 1 }
            }
            if j > i {
                unsafe append(bytes, from: i, to: j)
                i = j
            } else {
                e.put(unsafe bytes[i], &self)
                i += 1
            }
        }
        e.finish(&self)
    }
}
