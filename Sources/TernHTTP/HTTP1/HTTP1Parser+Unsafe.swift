/// Entry points over raw receive-buffer memory (a pooled buffer from TernIO), for callers that hold a pointer
/// rather than an array. The parser itself reads only through a bounds-checked `Span`.
extension HTTP1Parser {
    /// `parse(_:)` over `buffer`, which starts at the first byte of the message.
    public mutating func parse(_ buffer: UnsafeRawBufferPointer) throws(HTTPParseError) -> Progress {
        // SAFETY: the caller keeps `buffer` alive and unchanged for this call; the span lives only inside it and
        // every read through it is bounds-checked against buffer.count. UInt8 may alias any memory.
        let bytes = unsafe buffer.assumingMemoryBound(to: UInt8.self)
        return try parse(unsafe bytes.span)
    }
}
