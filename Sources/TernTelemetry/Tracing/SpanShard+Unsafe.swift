// One reactor's finished spans on their way to the exporter thread: a single-producer, single-consumer ring.
// The reactor (the only producer) writes a record into the slot at `head` and then publishes head + 1
// (release); the exporter (the only consumer) reads up to the head it loaded (acquire) and then publishes its
// tail (release), which hands the slots back. Neither side waits: a full ring drops the span and counts it.
import Synchronization

@safe public final class SpanShard: @unchecked Sendable {
    // SAFETY: `slots` holds `capacity` records from init to deinit; slot i is initialised by the producer's
    // first lap (head < capacity) and assigned on later laps, so slots below min(head, capacity) are the
    // initialised ones (deinit deinitialises exactly those). Slot i is written only by the producer while
    // head - tail < capacity (the consumer is done with it: it published a tail past it) and read only by the
    // consumer while tail < head (the producer published it, so it is initialised). Every index is masked.
    // Left uninitialised until used, the ring's pages are backed only as spans fill them.
    // @unchecked Sendable: the two sides touch disjoint slots, ordered by the acquire/release pairs above;
    // `cachedTail` is the producer's alone.
    private let slots: UnsafeMutablePointer<SpanRecord>
    public let capacity: Int
    private let mask: Int
    /// Records published by the producer (monotonic; the slot is head & mask).
    private let head = Atomic<Int>(0)
    /// Records the consumer is done with (monotonic).
    private let tail = Atomic<Int>(0)
    /// The producer's last look at `tail`: it reloads only when the ring looks full.
    private var cachedTail = 0
    /// Spans the producer found no room for (single writer, relaxed).
    public let dropped = Atomic<UInt64>(0)
    /// Spans recorded (single writer, relaxed).
    public let recorded = Atomic<UInt64>(0)

    /// A ring of `capacity` records, rounded up to a power of two (at least 2).
    public init(capacity: Int = 4096) {
        var c = 2
        while c < capacity { c <<= 1 }
        self.capacity = c
        mask = c - 1
        unsafe slots = UnsafeMutablePointer<SpanRecord>.allocate(capacity: c)
    }

    deinit {
        unsafe slots.deinitialize(count: min(head.load(ordering: .acquiring), capacity))
        unsafe slots.deallocate()
    }

    /// Records a finished span (the owning reactor only); false when the ring was full and it was dropped.
    /// Copies the record and retains its two strings; allocates nothing.
    @discardableResult
    public func record(_ span: SpanRecord) -> Bool {
        let h = head.load(ordering: .relaxed)
        if h &- cachedTail >= capacity {
            cachedTail = tail.load(ordering: .acquiring)
            if h &- cachedTail >= capacity {
                dropped.store(dropped.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
                return false
            }
        }
        if h < capacity {
            unsafe (slots + h).initialize(to: span)
        } else {
            unsafe slots[h & mask] = span
        }
        head.store(h &+ 1, ordering: .releasing)
        recorded.store(recorded.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        return true
    }

    /// Records waiting for the consumer (any thread; a snapshot).
    public var waiting: Int {
        let t = tail.load(ordering: .relaxed)
        return max(head.load(ordering: .relaxed) &- t, 0)
    }

    /// Hands up to `limit` waiting records, oldest first, to `body` (the consumer only) and frees their slots;
    /// returns how many.
    @discardableResult
    public func drain(limit: Int = .max, _ body: (SpanRecord) -> Void) -> Int {
        let t = tail.load(ordering: .relaxed)
        let h = head.load(ordering: .acquiring)
        let n = min(h &- t, limit)
        guard n > 0 else { return 0 }
        for i in 0..<n { body(unsafe slots[(t &+ i) & mask]) }
        tail.store(t &+ n, ordering: .releasing)
        return n
    }
}
