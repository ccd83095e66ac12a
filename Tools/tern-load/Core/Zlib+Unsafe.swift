internal import CTernZlib

/// DEFLATE in a zlib stream (RFC 1950), as java.util.zip.Deflater writes it: HdrHistogram's compressed encoding.
enum Zlib {
    static func compress(_ input: [UInt8]) -> [UInt8] {
        var length = compressBound(uLong(input.count))
        var out = [UInt8](repeating: 0, count: Int(length))
        // SAFETY: both arrays outlive the call; compress2 writes at most `length` bytes (compressBound of the
        // input, the size `out` was made with) and reads input.count bytes.
        let rc = unsafe out.withUnsafeMutableBufferPointer { o in
            unsafe input.withUnsafeBufferPointer { i in
                unsafe compress2(o.baseAddress, &length, i.baseAddress, uLong(i.count), Z_DEFAULT_COMPRESSION)
            }
        }
        // compress2 fails only for lack of memory or a too-small output, which compressBound rules out.
        precondition(rc == Z_OK, "compress2 failed: \(rc)")
        out.removeLast(out.count - Int(length))
        return out
    }
}
