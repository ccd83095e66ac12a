/// An entry point over raw receive-buffer memory; the decoder itself reads only through a bounds-checked `Span`.
extension ChunkedDecoder {
    /// `decode(_:)` over a piece of raw receive-buffer memory.
    public mutating func decode(_ piece: UnsafeRawBufferPointer) throws(HTTPParseError) -> Output {
        // SAFETY: the caller keeps `piece` alive for this call, reads are bounds-checked.
        let bytes = unsafe piece.assumingMemoryBound(to: UInt8.self)
        return try decode(unsafe bytes.span)
    }
}
