import Glibc

/// A reactor's receive buffers: `count` buffers of `size` bytes in one allocation made at start, named by a
/// 16-bit id (the id io_uring's provided-buffer ring reports). Pages are committed only when the kernel
/// first writes into a buffer, so an idle reactor holds address space, not memory.
///
/// Policy when empty: nothing is allocated. A receive waits until a buffer comes back (the backends keep a
/// list of receives waiting for buffers). Single-threaded: owned by one reactor.
///
/// Beyond the `count` receive buffers, `spare` more (ids `count..<count+spare`, same allocation) are handed out
/// to the owner to fill itself (`takeSpare`): where TLS writes plaintext it decrypted and records it encrypted.
/// They are released like receive buffers (`IOBackend.releaseBuffer` gives them back here, not to the kernel).
@safe public final class BufferPool {
    public let count: Int
    public let size: Int
    /// The most a receive puts in a buffer (`size`, or less where the owner needs the rest: TLS writes the
    /// records of a buffer's worth of plaintext into one buffer, and records are larger than what they carry).
    public let receiveLength: Int
    public let spare: Int
    /// Free spare buffers (a stack of ids).
    private var freeSpare: [UInt16] = []
    public var spareAvailable: Int { freeSpare.count }
    private let base: UnsafeMutableRawPointer
    /// Free stack, used by the epoll backend (the io_uring backend hands free buffers to the kernel).
    private let free: UnsafeMutablePointer<UInt16>
    public private(set) var available: Int

    init(count: Int, size: Int, spare: Int = 0, receiveLength: Int? = nil) {
        precondition(count > 0 && count <= 32768 && count & (count - 1) == 0, "buffer count must be a power of two ≤ 32768")
        precondition(spare >= 0 && spare <= 32768, "at most 32768 spare buffers")
        self.count = count
        self.size = size
        self.receiveLength = min(max(receiveLength ?? size, 1), size)
        self.spare = spare
        // SAFETY: calloc'd memory of (count+spare)*size bytes owned until deinit; large calloc is mmap-backed and
        // lazily committed. Buffer ids are checked against count+spare before any pointer arithmetic.
        unsafe base = calloc(count + spare, size)!
        freeSpare = (0..<spare).reversed().map { UInt16(count + $0) }
        unsafe free = UnsafeMutablePointer<UInt16>.allocate(capacity: count)
        for i in 0..<count { unsafe free[i] = UInt16(count - 1 - i) }
        available = count
    }

    deinit {
        unsafe Glibc.free(base)
        unsafe free.deallocate()
    }

    /// The start of buffer `id`.
    func pointer(_ id: UInt16) -> UnsafeMutableRawPointer {
        precondition(Int(id) < count + spare, "buffer id out of range")
        // SAFETY: id < count + spare, so the buffer lies inside the allocation.
        return unsafe base + Int(id) * size
    }

    /// The first `length` bytes of buffer `id`, valid until the buffer is released.
    public func bytes(_ id: UInt16, length: Int) -> UnsafeRawBufferPointer {
        precondition(length >= 0 && length <= size, "length out of range")
        // SAFETY: pointer(id) checks the id; length ≤ size keeps the view inside that buffer.
        return unsafe UnsafeRawBufferPointer(start: pointer(id), count: length)
    }

    /// The first `length` bytes of buffer `id` to write into (a spare buffer the owner took).
    public func mutableBytes(_ id: UInt16, length: Int) -> UnsafeMutableRawBufferPointer {
        precondition(length >= 0 && length <= size, "length out of range")
        // SAFETY: pointer(id) checks the id; length ≤ size keeps the view inside that buffer.
        return unsafe UnsafeMutableRawBufferPointer(start: pointer(id), count: length)
    }

    /// Whether `id` is a spare buffer (given back with `putSpare`, never to the kernel).
    public func isSpare(_ id: UInt16) -> Bool { Int(id) >= count }

    /// Takes a spare buffer; nil when none is free.
    public func takeSpare() -> UInt16? { freeSpare.popLast() }

    /// Gives back a spare buffer.
    func putSpare(_ id: UInt16) {
        precondition(isSpare(id) && freeSpare.count < spare, "spare buffer released twice")
        freeSpare.append(id)
    }

    /// Takes a free buffer (epoll backend); nil when none is free.
    func take() -> UInt16? {
        guard available > 0 else { return nil }
        available -= 1
        // SAFETY: available < count after the decrement.
        return unsafe free[available]
    }

    /// Returns a buffer taken with `take` (epoll backend).
    func put(_ id: UInt16) {
        precondition(available < count, "buffer released twice")
        // SAFETY: available < count checked above.
        unsafe free[available] = id
        available += 1
    }

    /// Bookkeeping for the io_uring backend, whose free list is the kernel's ring.
    func noteTaken() { available -= 1 }
    func noteReturned() { available += 1 }
}
