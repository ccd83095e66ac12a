// Gathered writes for the access-log writer thread: a byte ring's published bytes are one or two spans (two
// when they wrap around its end), written with one writev.
import Glibc

extension System {
    /// Writes what it can of `first` then `second` with one writev (EINTR retried); the bytes written, or a
    /// negative errno (-EAGAIN on a non-blocking descriptor that is full).
    public static func writev(_ fd: Int32, _ first: Span<UInt8>, _ second: Span<UInt8>) -> Int {
        if first.isEmpty && second.isEmpty { return 0 }
        // SAFETY: both buffer pointers are valid for the closures' duration, which covers the writev call; the
        // two iovecs (on the stack) point inside them with their exact lengths, and the kernel only reads them.
        return unsafe first.withUnsafeBufferPointer { a in
            unsafe second.withUnsafeBufferPointer { b in
                unsafe withUnsafeTemporaryAllocation(of: iovec.self, capacity: 2) { iov in
                    unsafe iov.initialize(repeating: iovec())
                    unsafe iov[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count)
                    unsafe iov[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count)
                    let count: Int32 = b.isEmpty ? 1 : 2
                    return syscallResult { unsafe Int(Glibc.writev(fd, iov.baseAddress!, count)) }
                }
            }
        }
    }

    /// Waits until `fd` can take more bytes or `timeoutMillis` pass; true when it can.
    public static func waitWritable(_ fd: Int32, timeoutMillis: Int32) -> Bool {
        poll(fd, events: Int16(POLLOUT), timeoutMillis: timeoutMillis)
    }
}
