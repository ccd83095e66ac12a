import Glibc
import TernIO

/// A request's bytes, built once and kept at a fixed address for the whole run: every send of that request
/// names them (the kernel reads them until the send completes).
@safe final class RequestBytes {
    let base: UnsafeMutableRawPointer
    let count: Int

    init(_ bytes: [UInt8]) {
        count = bytes.count
        // SAFETY: a private allocation of `count` bytes (at least one) freed in deinit; initialised from `bytes`.
        unsafe base = malloc(max(count, 1))!
        unsafe bytes.withUnsafeBytes { unsafe base.copyMemory(from: $0.baseAddress!, byteCount: count) }
    }

    deinit { unsafe free(base) }

    /// Sends the bytes from `offset` on (what a short send left).
    func send<B: IOBackend>(on backend: B, fd: Int32, from offset: Int, token: Token) {
        precondition(offset >= 0 && offset < count, "request send offset out of range")
        // SAFETY: offset < count keeps the view inside the allocation, which lives as long as the client that
        // owns this object, longer than any send on its sockets (the reactor closes them before returning).
        unsafe backend.send(fd: fd, bytes: UnsafeRawBufferPointer(start: base + offset, count: count - offset), token: token)
    }
}

/// Calls `body` with the first `length` bytes of a pooled receive buffer, read in place.
func withReceivedBytes<R>(_ pool: BufferPool, _ id: UInt16, length: Int, _ body: (borrowing Span<UInt8>) -> R) -> R {
    // SAFETY: the buffer belongs to the caller until it releases it, after this call; `bytes` checks the id and
    // the length; the span does not outlive the call. UInt8 may view any memory.
    let bytes = unsafe pool.bytes(id, length: length).assumingMemoryBound(to: UInt8.self)
    return body(unsafe bytes.span)
}
