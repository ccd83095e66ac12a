// Per-reactor metric storage (ARCHITECTURE.md §8): fixed blocks of 64-bit counters, each written by one reactor
// thread only (a relaxed load and store: no read-modify-write, no lock, nothing contended) and read by the scrape
// with relaxed loads. Series are found by a 64-bit key in an open-addressed table that only grows; a key is
// published (release) after its counters exist, so a scrape that sees the key sees counters that belong to it.
import Glibc
import Synchronization

/// A fixed block of counters with one writer.
@safe public final class CounterBlock: @unchecked Sendable {
    // SAFETY: `words` is allocated zeroed in init, freed in deinit, and only indexed below `count`.
    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    public let count: Int

    public init(count: Int) {
        self.count = count
        // calloc: untouched pages stay unbacked, so a large table costs memory only as series appear. An
        // Atomic<UInt64> is laid out as a UInt64, and all-zero bytes are its zero.
        unsafe words = calloc(max(count, 1), MemoryLayout<Atomic<UInt64>>.stride)!
            .bindMemory(to: Atomic<UInt64>.self, capacity: max(count, 1))
    }

    deinit { unsafe free(words) }

    /// Adds to word `i` (the owning reactor only).
    @inlinable @inline(__always)
    public func add(_ i: Int, _ value: UInt64) {
        precondition(i >= 0 && i < count)
        addUnchecked(i, value)
    }

    @usableFromInline @inline(__always)
    func addUnchecked(_ i: Int, _ value: UInt64) {
        let w = unsafe words + i
        unsafe w.pointee.store(w.pointee.load(ordering: .relaxed) &+ value, ordering: .relaxed)
    }

    /// Sets word `i` (a gauge; the owning reactor only).
    @inlinable @inline(__always)
    public func set(_ i: Int, _ value: UInt64) {
        precondition(i >= 0 && i < count)
        setUnchecked(i, value)
    }

    @usableFromInline @inline(__always)
    func setUnchecked(_ i: Int, _ value: UInt64) {
        unsafe (words + i).pointee.store(value, ordering: .relaxed)
    }

    /// Reads word `i` (any thread).
    public func load(_ i: Int) -> UInt64 {
        precondition(i >= 0 && i < count)
        return unsafe (words + i).pointee.load(ordering: .relaxed)
    }

    /// Publishes word `i` (a series key) after the words before it were written.
    func publish(_ i: Int, _ value: UInt64) {
        precondition(i >= 0 && i < count)
        unsafe (words + i).pointee.store(value, ordering: .releasing)
    }

    /// Reads a published word (any thread).
    func acquire(_ i: Int) -> UInt64 {
        precondition(i >= 0 && i < count)
        return unsafe (words + i).pointee.load(ordering: .acquiring)
    }
}

/// Series of one metric shape (`stride` words each, word 0 the key) in an open-addressed table of
/// `capacity` slots, filled to three quarters at most. Keys are never 0 and never removed.
public final class SeriesTable: Sendable {
    public let stride: Int
    public let capacity: Int
    @usableFromInline let block: CounterBlock
    /// Slots taken (written by the owning reactor; read by anyone).
    private let used = Atomic<Int>(0)
    /// Series that found the table full and were not recorded.
    public let overflowed = Atomic<UInt64>(0)

    public init(stride: Int, capacity: Int) {
        precondition(stride >= 2)
        var c = 16
        while c < capacity { c <<= 1 }
        self.stride = stride
        self.capacity = c
        block = CounterBlock(count: stride * c)
    }

    /// The slot of `key`, taken now if the series is new; nil when the table is full (the owning reactor only).
    @inlinable
    public func slot(_ key: UInt64) -> Int? {
        precondition(key != 0)
        let mask = capacity - 1
        var i = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
        while true {
            let k = block.load(i * stride)
            if k == key { return i }
            if k == 0 { return take(i, key) }
            i = (i + 1) & mask
        }
    }

    @usableFromInline
    func take(_ i: Int, _ key: UInt64) -> Int? {
        let n = used.load(ordering: .relaxed)
        guard n + 1 <= capacity * 3 / 4 else {
            overflowed.store(overflowed.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            return nil
        }
        used.store(n + 1, ordering: .relaxed)
        block.publish(i * stride, key)
        return i
    }

    /// Adds `value` to word `word` of series `slot` (the owning reactor only).
    @inlinable @inline(__always)
    public func add(_ slot: Int, _ word: Int, _ value: UInt64) {
        precondition(word > 0 && word < stride)
        block.add(slot * stride + word, value)
    }

    /// Every series: its key and words 1..<stride (any thread).
    public func forEach(_ body: (UInt64, _ words: [UInt64]) -> Void) {
        for i in 0..<capacity {
            let key = block.acquire(i * stride)
            if key == 0 { continue }
            var words = [UInt64](repeating: 0, count: stride - 1)
            for w in 1..<stride { words[w - 1] = block.load(i * stride + w) }
            body(key, words)
        }
    }
}
