// tern-load over TLS: one client session per socket (TernTLS), fed the ciphertext each receive brings in its
// pooled buffer, writing its records into a per-socket buffer allocated once (sends name it until they complete),
// and decrypting into a per-reactor scratch buffer the response parser reads in place. Every raw pointer of
// tern-load's TLS is in this file.
import Glibc
import TernIO
import TernTLS

@safe final class TLSClientIO {
    let sessions: TLSSessions
    private let out: UnsafeMutableRawPointer
    let outCapacity: Int
    /// Per socket: records written [sent, length) not yet on the wire, and whether a send is in flight.
    private var outLength: [Int]
    private var outSent: [Int]
    private let scratch: UnsafeMutableRawBufferPointer

    /// `largestRequest`: the longest request any target sends (its records must fit beside a handshake flight).
    init(sockets: Int, largestRequest: Int) {
        sessions = TLSSessions(capacity: sockets)
        outCapacity = 16 * 1024 + largestRequest + (largestRequest / (16 * 1024) + 1) * 64
        // SAFETY: owned until deinit; socket indexes are checked against the arrays' counts before any pointer
        // arithmetic; calloc'd, so a socket's buffer is committed when first used.
        unsafe out = calloc(sockets, outCapacity)!
        outLength = [Int](repeating: 0, count: sockets)
        outSent = [Int](repeating: 0, count: sockets)
        unsafe scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    }

    deinit {
        unsafe free(out)
        unsafe scratch.deallocate()
    }

    private func region(_ s: Int) -> UnsafeMutableRawPointer {
        precondition(s >= 0 && s < outLength.count, "TLS socket index out of range")
        return unsafe out + s * outCapacity
    }

    /// Forgets socket `s`'s unsent records (its socket closed).
    func reset(_ s: Int) {
        outLength[s] = 0
        outSent[s] = 0
        if sessions.isOpen(s) { sessions.close(s) }
    }

    /// Points the session's output at the free end of its buffer and runs `op`; the records it wrote join those
    /// to send. `.wantWrite` means the buffer is full (the caller sends and retries).
    func run(_ s: Int, _ op: (TLSSessions) -> TLSStep) -> TLSStep {
        let start = outLength[s]
        unsafe sessions.setOutput(s, UnsafeMutableRawBufferPointer(start: region(s) + start, count: outCapacity - start))
        let step = op(sessions)
        outLength[s] += sessions.outputCount(s)
        unsafe sessions.setOutput(s, nil)
        return step
    }

    /// Feeds the ciphertext of pooled buffer `id` (its first `length` bytes) as the session's input.
    func feed(_ s: Int, _ pool: BufferPool, _ id: UInt16, length: Int) {
        unsafe sessions.setInput(s, pool.bytes(id, length: length))
    }

    func clearInput(_ s: Int) { unsafe sessions.setInput(s, UnsafeRawBufferPointer(start: nil, count: 0)) }

    /// Decrypts what the input holds, calling `body` with each piece of plaintext (valid during the call); returns
    /// the last step (`.wantRead` once the input is used up, `.closed`, `.failed`), or `.done(0)` when `body`
    /// asked to stop (it returns false).
    func read(_ s: Int, _ body: (borrowing Span<UInt8>) -> Bool) -> TLSStep {
        while true {
            let step = run(s) { unsafe $0.read(s, into: scratch) }
            guard case .done(let n) = step else { return step }
            let piece = unsafe UnsafeRawBufferPointer(rebasing: scratch[0..<n]).assumingMemoryBound(to: UInt8.self)
            if !body(unsafe piece.span) { return .done(0) }
        }
    }

    /// Encrypts `request` whole into the socket's records.
    func write(_ s: Int, _ request: RequestBytes) -> TLSStep {
        unsafe request.withBytes { bytes in run(s) { unsafe $0.write(s, bytes) } }
    }

    /// Encrypts `bytes` whole into the socket's records (--h2: frames gathered by H2LoadConnection).
    func write(_ s: Int, bytes: UnsafeRawBufferPointer) -> TLSStep {
        run(s) { unsafe $0.write(s, bytes) }
    }

    /// Whether records wait to be sent.
    func hasPending(_ s: Int) -> Bool { outSent[s] < outLength[s] }

    /// Sends the records not yet sent.
    func send<B: IOBackend>(_ s: Int, on backend: B, fd: Int32, token: Token) {
        let from = outSent[s], to = outLength[s]
        precondition(from < to, "nothing to send")
        unsafe backend.send(fd: fd, bytes: UnsafeRawBufferPointer(start: region(s) + from, count: to - from), token: token)
    }

    /// A send moved `n` bytes; true when everything written so far is on the wire (the buffer starts over).
    func sent(_ s: Int, _ n: Int) -> Bool {
        outSent[s] += n
        guard outSent[s] >= outLength[s] else { return false }
        outSent[s] = 0
        outLength[s] = 0
        return true
    }
}

extension RequestBytes {
    /// The request's bytes, for a TLS write.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        unsafe body(UnsafeRawBufferPointer(start: base, count: count))
    }
}
