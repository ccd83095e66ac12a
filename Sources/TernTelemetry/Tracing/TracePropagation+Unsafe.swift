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
