import Glibc

/// Gather lists for vectored sends (`IOBackend.send(fd:vectors:index:token:)`): `count` entries of one msghdr
/// and up to `maxSegments` iovecs each, in one calloc'd allocation made at start (pages are committed when an
/// entry is first used). An owner gives each connection direction its own entry, fills it with the pieces of
/// a message (a head kept in the receive buffer, the few bytes rebuilt, body bytes after it) and sends them in
/// one operation; after a short send, `advance` drops what went out. The bytes named must stay valid until
/// the send completes. Single-threaded: owned by one reactor.
@safe public final class IOVecTable {
    public let count: Int
    public let maxSegments: Int
    private let messages: UnsafeMutablePointer<msghdr>
    private let iovecs: UnsafeMutablePointer<iovec>
    /// Bytes still to send per entry.
    private let remainingBytes: UnsafeMutablePointer<Int>

    public init(count: Int, maxSegments: Int = 16) {
        precondition(count > 0 && maxSegments > 0, "an IOVecTable needs entries and segments")
        self.count = count
        self.maxSegments = maxSegments
        // SAFETY: three allocations owned until deinit; every index is checked against count before use.
        unsafe messages = calloc(count, MemoryLayout<msghdr>.stride)!.bindMemory(to: msghdr.self, capacity: count)
        unsafe iovecs = calloc(count * maxSegments, MemoryLayout<iovec>.stride)!.bindMemory(to: iovec.self, capacity: count * maxSegments)
        unsafe remainingBytes = calloc(count, MemoryLayout<Int>.stride)!.bindMemory(to: Int.self, capacity: count)
    }

    deinit {
        unsafe free(messages)
        unsafe free(iovecs)
        unsafe free(remainingBytes)
    }

    @inline(__always)
    private func check(_ i: Int) {
        precondition(i >= 0 && i < count, "IOVecTable entry out of range")
    }

    /// Empties entry `i`.
    public func reset(_ i: Int) {
        check(i)
        // SAFETY: i checked; the entry's iovecs start at i * maxSegments.
        unsafe messages[i] = msghdr()
        unsafe messages[i].msg_iov = iovecs + i * maxSegments
        unsafe remainingBytes[i] = 0
    }

    /// Appends `bytes` to entry `i`; false when the entry has no segment left. Empty pieces are skipped.
    @discardableResult
    public func append(_ i: Int, _ bytes: UnsafeRawBufferPointer) -> Bool {
        check(i)
        if unsafe bytes.isEmpty { return true }
        let n = unsafe Int(messages[i].msg_iovlen)
        guard n < maxSegments else { return false }
        // SAFETY: n < maxSegments keeps the write inside entry i's iovecs; the caller keeps the bytes alive.
        unsafe iovecs[i * maxSegments + n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        unsafe messages[i].msg_iovlen = n + 1
        unsafe remainingBytes[i] += bytes.count
        return true
    }

    /// Bytes entry `i` still has to send.
    public func remaining(_ i: Int) -> Int {
        check(i)
        return unsafe remainingBytes[i]
    }

    /// Segments left in entry `i`.
    public func segments(_ i: Int) -> Int {
        check(i)
        return unsafe Int(messages[i].msg_iovlen)
    }

    /// Drops the first `n` bytes of entry `i` (what a short send moved).
    public func advance(_ i: Int, by n: Int) {
        check(i)
        precondition(n >= 0 && n <= remaining(i), "advanced past the end of an IOVecTable entry")
        unsafe remainingBytes[i] -= n
        var left = n
        // SAFETY: i checked; msg_iov points at entry i's segments and msg_iovlen ≤ maxSegments.
        while left > 0 {
            let first = unsafe messages[i].msg_iov!
            let len = unsafe first.pointee.iov_len
            if left >= len {
                left -= len
                unsafe messages[i].msg_iov = first + 1
                unsafe messages[i].msg_iovlen -= 1
            } else {
                unsafe first.pointee.iov_base = first.pointee.iov_base! + left
                unsafe first.pointee.iov_len = len - left
                left = 0
            }
        }
    }

    /// Copies what entry `i` has to send, from byte `offset` of it, into `destination` (as many as fit) without
    /// dropping them; returns how many.
    public func copy(_ i: Int, from offset: Int = 0, into destination: UnsafeMutableRawBufferPointer) -> Int {
        check(i)
        var copied = 0
        var skip = offset
        var k = 0
        let n = unsafe Int(messages[i].msg_iovlen)
        // SAFETY: i checked; msg_iov points at entry i's segments and msg_iovlen ≤ maxSegments; every copy stays
        // inside `destination` (copied + take ≤ destination.count) and inside its segment (skip < iov_len).
        while k < n && copied < destination.count {
            let v = unsafe messages[i].msg_iov![k]
            k += 1
            if unsafe skip >= v.iov_len {
                skip -= unsafe v.iov_len
                continue
            }
            let take = min(unsafe v.iov_len - skip, destination.count - copied)
            if take > 0 { unsafe (destination.baseAddress! + copied).copyMemory(from: v.iov_base! + skip, byteCount: take) }
            copied += take
            skip = 0
        }
        return copied
    }

    /// The bytes of entry `i` from byte `offset` to the end of the segment that holds it (empty past the end):
    /// what can be read in place without gathering. Valid while the entry and the bytes it names are.
    public func contiguous(_ i: Int, from offset: Int) -> UnsafeRawBufferPointer {
        check(i)
        var skip = offset
        let n = unsafe Int(messages[i].msg_iovlen)
        // SAFETY: i checked; msg_iov points at entry i's segments; the view lies inside segment k.
        for k in 0..<n {
            let v = unsafe messages[i].msg_iov![k]
            if unsafe skip < v.iov_len { return unsafe UnsafeRawBufferPointer(start: v.iov_base! + skip, count: v.iov_len - skip) }
            skip -= unsafe v.iov_len
        }
        return unsafe UnsafeRawBufferPointer(start: nil, count: 0)
    }

    /// The msghdr of entry `i`, for sendmsg(2) and IORING_OP_SENDMSG.
    func message(_ i: Int) -> UnsafeMutablePointer<msghdr> {
        check(i)
        // SAFETY: i checked.
        return unsafe messages + i
    }
}
