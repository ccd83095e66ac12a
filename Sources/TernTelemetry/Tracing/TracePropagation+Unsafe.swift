// The proxy span's trace fields written into a caller's buffer (an assembly buffer the forwarded head points
// into), for callers that hold raw buffers rather than a byte sink.

extension TraceContext {
    /// Writes the lines of `writeFields` into `out` and returns their length; nil, writing nothing, when they
    /// do not fit (`maxFieldBytes` always fits). `traceState` is the tracestate as received.
    public func writeFields(into out: UnsafeMutableRawBufferPointer, traceState: UnsafeRawBufferPointer) -> Int? {
        let n = fieldBytes(traceStateCount: traceState.count)
        guard n <= out.count else { return nil }
        var i = 0
        // SAFETY: the caller keeps both buffers alive for the call. Exactly n ≤ out.count bytes are stored
        // (fieldBytes counts what writeFields emits), so every store is inside `out`; the span covers
        // `traceState` as given. The closure is passed directly, never stored: it stays non-escaping and `i`
        // lives on the stack (a stored closure would box it, one allocation per call).
        let state = unsafe traceState.assumingMemoryBound(to: UInt8.self).span
        writeFields(traceState: state) { b in
            unsafe out[i] = b
            i += 1
        }
        return i
    }
}

extension TraceContext {
    /// The traceparent line ("traceparent: 00-{trace}-{span}-{flags}\r\n", `traceparentLineBytes` bytes)
    /// composed on the stack with word stores and handed to `body` in one piece. Not generic: callers live in
    /// other modules, where a generic would run unspecialised and instantiate its metadata on every request.
    public func withTraceparentLine(_ body: (borrowing Span<UInt8>) -> Void) {
        // SAFETY: the temporary holds 72 bytes and every store below ends at or before byte 70; `body` gets a
        // view of the 70 bytes written, valid for the call only.
        unsafe withUnsafeTemporaryAllocation(byteCount: 72, alignment: 8) { buffer in
            let p = buffer.baseAddress!
            let prefix: StaticString = "traceparent: 00-"
            unsafe p.copyMemory(from: prefix.utf8Start, byteCount: 16)
            let (a, b) = Self.hexWords(traceIDHigh)
            let (c, d) = Self.hexWords(traceIDLow)
            let (e, f) = Self.hexWords(spanID)
            unsafe p.storeBytes(of: a.bigEndian, toByteOffset: 16, as: UInt64.self)
            unsafe p.storeBytes(of: b.bigEndian, toByteOffset: 24, as: UInt64.self)
            unsafe p.storeBytes(of: c.bigEndian, toByteOffset: 32, as: UInt64.self)
            unsafe p.storeBytes(of: d.bigEndian, toByteOffset: 40, as: UInt64.self)
            unsafe p.storeBytes(of: UInt8(ascii: "-"), toByteOffset: 48, as: UInt8.self)
            unsafe p.storeBytes(of: e.bigEndian, toByteOffset: 49, as: UInt64.self)
            unsafe p.storeBytes(of: f.bigEndian, toByteOffset: 57, as: UInt64.self)
            let tail: StaticString = sampled == true ? "-01\r\n" : "-00\r\n"
            unsafe (p + 65).copyMemory(from: tail.utf8Start, byteCount: 5)
            let line = unsafe UnsafeBufferPointer(start: p.assumingMemoryBound(to: UInt8.self), count: Self.traceparentLineBytes)
            unsafe body(line.span)
        }
    }
}
