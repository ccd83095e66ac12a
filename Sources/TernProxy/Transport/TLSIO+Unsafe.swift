// The memory side of TLS connections: a reactor's TLS sessions (TernTLS) pointed at its pooled buffers. Received
// ciphertext is read by OpenSSL straight out of the receive buffer it arrived in; records are written straight
// into spare pooled buffers, which are sent from there; plaintext is decrypted into a spare pooled buffer that the
// HTTP engine then holds as it holds received bytes. Every raw pointer of the TLS transport lives in this file.
import Glibc
import TernIO
import TernTLS

@safe final class TLSIO {
    let sessions: TLSSessions
    let pool: BufferPool
    /// Plaintext gathered from a send's iovecs into one record (a head in a dozen pieces is one record, not a
    /// dozen).
    private let staging: UnsafeMutableRawBufferPointer
    /// The most plaintext one record carries, and what a record adds to it at most (TLS 1.2 AES-GCM: 5 header +
    /// 8 explicit nonce + 16 tag; TLS 1.3: 5 + 1 content type + 16), rounded up.
    static let recordPayload = 16 * 1024
    static let recordOverhead = 64

    /// Each connection slot's `TLSLink`: calloc'd, so memory is committed only for slots used (a link is written
    /// whole, `open`, before it is read; TLSLink is plain data).
    private let links: UnsafeMutablePointer<TLSLink>
    let capacity: Int

    init(capacity: Int, pool: BufferPool) {
        sessions = TLSSessions(capacity: capacity)
        self.pool = pool
        self.capacity = capacity
        // SAFETY: owned until deinit.
        unsafe staging = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.recordPayload, alignment: 16)
        // SAFETY: owned until deinit; indexes are checked against capacity; TLSLink is trivial, so a slot is
        // initialised by assignment (`open`) before its first read.
        unsafe links = calloc(capacity, MemoryLayout<TLSLink>.stride)!.bindMemory(to: TLSLink.self, capacity: capacity)
    }

    deinit {
        unsafe staging.deallocate()
        unsafe free(links)
    }

    subscript(_ slot: Int) -> TLSLink {
        get {
            precondition(slot >= 0 && slot < capacity, "TLS link out of range")
            return unsafe links[slot]
        }
        _modify {
            precondition(slot >= 0 && slot < capacity, "TLS link out of range")
            yield unsafe &links[slot]
        }
    }

    /// Starts slot `slot`'s link afresh.
    func open(_ slot: Int) {
        precondition(_isPOD(TLSLink.self) && slot >= 0 && slot < capacity, "TLS link out of range")
        unsafe (links + slot).initialize(to: TLSLink())
    }

    /// Points the session's input at bytes [start, end) of pooled buffer `buffer`.
    func setInput(_ slot: Int, buffer: Int32, start: Int, end: Int) {
        if buffer < 0 {
            unsafe sessions.setInput(slot, UnsafeRawBufferPointer(start: nil, count: 0))
            return
        }
        let whole = unsafe pool.bytes(UInt16(buffer), length: end)
        unsafe sessions.setInput(slot, UnsafeRawBufferPointer(rebasing: whole[start..<end]))
    }

    /// Points the session's output at pooled buffer `buffer` from `offset` to its end (nil: nowhere, so a write
    /// asks for room).
    func setOutput(_ slot: Int, buffer: Int32, offset: Int) {
        guard buffer >= 0 else { return unsafe sessions.setOutput(slot, nil) }
        let whole = unsafe pool.mutableBytes(UInt16(buffer), length: pool.size)
        unsafe sessions.setOutput(slot, UnsafeMutableRawBufferPointer(rebasing: whole[offset...]))
    }

    /// Decrypts into pooled buffer `buffer` from `offset` to the most a receive would have put there (the engine
    /// takes plaintext as received bytes).
    func read(_ slot: Int, into buffer: UInt16, offset: Int) -> TLSStep {
        let whole = unsafe pool.mutableBytes(buffer, length: pool.receiveLength)
        return unsafe sessions.read(slot, into: UnsafeMutableRawBufferPointer(rebasing: whole[offset...]))
    }

    /// Encrypts up to `limit` bytes (one record at most) of what entry `entry` of `table` has to send, from byte
    /// `offset` of it: read in place when one segment holds them all (a body), else gathered first (a head in a
    /// dozen pieces makes one record, not a dozen). Returns the plaintext byte count taken and the step.
    func writeRecord(_ slot: Int, from table: IOVecTable, entry: Int, offset: Int, limit: Int) -> (Int, TLSStep) {
        let want = min(limit, Self.recordPayload)
        let run = unsafe table.contiguous(entry, from: offset)
        if run.count >= want || run.count == table.remaining(entry) - offset {
            let n = min(run.count, want)
            return (n, unsafe sessions.write(slot, UnsafeRawBufferPointer(rebasing: run[0..<n])))
        }
        let n = unsafe table.copy(entry, from: offset, into: UnsafeMutableRawBufferPointer(rebasing: staging[0..<want]))
        let step = unsafe sessions.write(slot, UnsafeRawBufferPointer(rebasing: staging[0..<n]))
        return (n, step)
    }

    /// Sends bytes [start, end) of pooled buffer `buffer`.
    func send<B: IOBackend>(_ backend: B, fd: Int32, buffer: Int32, start: Int, end: Int, token: Token) {
        let whole = unsafe pool.bytes(UInt16(buffer), length: end)
        unsafe backend.send(fd: fd, bytes: UnsafeRawBufferPointer(rebasing: whole[start..<end]), token: token)
    }

    /// Sends bytes [0, count) of pooled buffer `buffer` now, if the socket takes them (a closing alert).
    func sendNow(fd: Int32, buffer: Int32, count: Int) {
        guard buffer >= 0, count > 0 else { return }
        let bytes = unsafe pool.bytes(UInt16(buffer), length: count)
        _ = unsafe System.sendNow(fd, bytes.assumingMemoryBound(to: UInt8.self).span)
    }
}
