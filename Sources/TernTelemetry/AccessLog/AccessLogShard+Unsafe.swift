// One reactor's access log (ARCHITECTURE.md §8): a single-producer, single-consumer byte ring. The reactor
// composes a line in a fixed buffer and copies it in whole, or drops it (and counts the drop) when the ring
// lacks room, so the loop never waits for the disk. The writer thread takes what was published and frees it.
//
//   positions only grow (UInt64: no wrap in practice); byte p lives at ring[p % capacity]
//
//        head (consumer: release after writing)      tail (producer: release after copying a line in)
//          │                                           │
//   ───────┼──────────── published, not written ───────┼──────── free ────────
//
// The producer reads head with acquire (only when its cached copy shows too little room), so the bytes the
// consumer freed are no longer being read when it overwrites them; the consumer reads tail with acquire, so the
// bytes of every line it sees are complete. Each position has one writer, so no read-modify-write is needed.
import Glibc
import Synchronization

/// A reactor's access-log buffer: `append` on the reactor, `withPublished`/`consume` on the writer thread.
@safe public final class AccessLogShard: @unchecked Sendable {
    // @unchecked Sendable: `scratch`, `cachedHead` and the ring bytes at and after `tail` belong to the one
    // producing reactor; the bytes in [head, tail) belong to the one consumer until it moves head past them.
    // The two threads exchange ownership of bytes only through the release/acquire pairs on head and tail.

    public let format: AccessLogFormat
    /// Ring bytes (a power of two).
    public let capacity: Int
    // SAFETY: `ring` holds `capacity` bytes allocated in init and freed in deinit; every offset into it is
    // reduced by `mask`, and every length is at most `capacity` (checked before copying).
    private let ring: UnsafeMutableRawPointer
    private let mask: UInt64
    private let head = Atomic<UInt64>(0)
    private let tail = Atomic<UInt64>(0)
    private let appendedLines = Atomic<UInt64>(0)
    private let droppedLines = Atomic<UInt64>(0)
    /// Called by the producer when its ring is half full (then again every further quarter while it stays
    /// so): the writer thread's wake-up, so a burst after a quiet spell is written before the ring fills.
    private let onHalfFull: (@Sendable () -> Void)?
    // Producer only.
    private var scratch: LineBuffer
    private var cachedHead: UInt64 = 0
    /// The tail position at which to look whether the ring is half full.
    private var nudgeAt: UInt64

    /// `capacity` is rounded up to a power of two (at least 4 KiB); a line longer than `lineLimit` bytes is
    /// dropped (request fields are bounded by their capture limits, so only unusually long strings in the
    /// record, which come from configuration, can make one that long).
    public init(format: AccessLogFormat, capacity: Int = 256 * 1024, lineLimit: Int = 16 * 1024,
                onHalfFull: (@Sendable () -> Void)? = nil)
    {
        var c = 4096
        while c < capacity { c <<= 1 }
        self.format = format
        self.capacity = c
        mask = UInt64(c - 1)
        self.onHalfFull = onHalfFull
        nudgeAt = UInt64(c / 2)
        unsafe ring = UnsafeMutableRawPointer.allocate(byteCount: c, alignment: 64)
        scratch = LineBuffer(capacity: min(max(lineLimit, 256), c))
    }

    deinit { unsafe ring.deallocate() }

    // MARK: Producer (the owning reactor)

    /// Composes the line for `record` and the request captured in `slot` of `capture` (nil: a line without
    /// request fields) and publishes it; false when it was dropped because the ring (or the line buffer) lacked
    /// room. Allocates nothing.
    @discardableResult
    public func append(_ record: borrowing AccessLogRecord, capture: RequestCapture?, slot: Int) -> Bool {
        scratch.reset()
        AccessLogLine.write(format, record, capture, slot, into: &scratch)
        let n = UInt64(scratch.count)
        let t = tail.load(ordering: .relaxed)
        if scratch.overflowed || !hasRoom(n, tail: t) {
            droppedLines.store(droppedLines.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            return false
        }
        unsafe scratch.copy(into: ring, ringCapacity: capacity, at: Int(t & mask))
        tail.store(t + n, ordering: .releasing)
        appendedLines.store(appendedLines.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        if t + n >= nudgeAt, let onHalfFull { nudge(tail: t + n, onHalfFull) }
        return true
    }

    /// The tail passed the mark: wake the writer when half the ring is still unwritten, and look again a
    /// quarter later (one wake-up per quarter at most); otherwise look again when it could be.
    private func nudge(tail t: UInt64, _ onHalfFull: @Sendable () -> Void) {
        cachedHead = head.load(ordering: .acquiring)
        let half = UInt64(capacity / 2)
        if t - cachedHead >= half {
            onHalfFull()
            nudgeAt = t + UInt64(capacity / 4)
        } else {
            nudgeAt = cachedHead + half
        }
    }

    private func hasRoom(_ n: UInt64, tail t: UInt64) -> Bool {
        if UInt64(capacity) - (t - cachedHead) >= n { return true }
        cachedHead = head.load(ordering: .acquiring)
        return UInt64(capacity) - (t - cachedHead) >= n
    }

    // MARK: Consumer (the writer thread)

    /// Calls `body` with the bytes published and not yet consumed, oldest first: the second span is non-empty
    /// when they wrap around the ring's end. Only whole lines are ever published. The spans are valid only
    /// during the call; the bytes stay until `consume` frees them.
    public func withPublished<R>(_ body: (Span<UInt8>, Span<UInt8>) -> R) -> R {
        let t = tail.load(ordering: .acquiring)
        let h = head.load(ordering: .relaxed)
        let n = Int(t - h)
        let offset = Int(h & mask)
        let first = min(n, capacity - offset)
        // SAFETY: offset + first <= capacity and n - first <= capacity - first; the bytes are in [head, tail),
        // which the producer does not touch until head moves past them (after this call returns).
        let a = unsafe UnsafeBufferPointer(start: (ring + offset).assumingMemoryBound(to: UInt8.self), count: first)
        let b = unsafe UnsafeBufferPointer(start: ring.assumingMemoryBound(to: UInt8.self), count: n - first)
        return unsafe body(Span(_unsafeElements: a), Span(_unsafeElements: b))
    }

    /// Lines among the oldest `count` published bytes (counted by their newlines, with memchr: the writer
    /// counts every byte it writes).
    public func newlines(inFirst count: Int) -> Int {
        let h = head.load(ordering: .relaxed)
        precondition(count >= 0 && UInt64(count) <= tail.load(ordering: .acquiring) - h, "counted more than published")
        var lines = 0
        var offset = Int(h & mask)
        var left = count
        while left > 0 {
            let n = min(left, capacity - offset)
            // SAFETY: [offset, offset + n) lies inside the ring and inside [head, tail), which the producer does
            // not touch until head moves past it.
            var p = unsafe UnsafeRawPointer(ring + offset)
            let end = unsafe p + n
            while let hit = unsafe memchr(p, 10, unsafe end - p) {
                lines += 1
                unsafe p = UnsafeRawPointer(hit) + 1
                if unsafe p >= end { break }
            }
            left -= n
            offset = 0
        }
        return lines
    }

    /// Frees the oldest `count` published bytes (after they were written).
    public func consume(_ count: Int) {
        let h = head.load(ordering: .relaxed)
        precondition(count >= 0 && UInt64(count) <= tail.load(ordering: .acquiring) - h, "consumed more than published")
        head.store(h + UInt64(count), ordering: .releasing)
    }

    // MARK: Counters (any thread)

    /// Bytes published and not yet consumed.
    public var pendingBytes: Int {
        // Head first: it never passes a tail already published, so the later tail is at least as far.
        let h = head.load(ordering: .acquiring)
        return Int(tail.load(ordering: .acquiring) - h)
    }
    /// Lines published.
    public var lines: UInt64 { appendedLines.load(ordering: .relaxed) }
    /// Lines dropped because the ring was full (or the line too long).
    public var dropped: UInt64 { droppedLines.load(ordering: .relaxed) }
}
