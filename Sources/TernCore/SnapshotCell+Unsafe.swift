import Synchronization

/// Publishes immutable snapshots (a compiled route table) from one publisher to the reactors without a lock
/// or reference counting on the request path, and frees a replaced snapshot once no reactor can still read
/// it (quiescent-state reclamation, ARCHITECTURE.md §5).
///
/// - `publish`: retain the new snapshot, store its pointer (release), then store epoch e+1 (release); the old
///   one goes on the retire list tagged e+1.
/// - Each reader (one per reactor, `SnapshotReader`) loads the epoch once per loop iteration (acquire) and, if it
///   changed, the pointer. Requests pin the snapshot they started with, counted in the reader (no atomics).
///   The reader reports, in its own padded atomic, the **oldest** epoch it still uses: its current one or any
///   still pinned. Reporting the newest would free a table a slow request still reads.
/// - `reclaim` (publisher side) releases every retired snapshot whose tag is at most the minimum of the
///   reports, on the publisher's thread.
public final class SnapshotCell<Value: AnyObject & Sendable>: Sendable {
    /// The current snapshot as the bits of a retained `Unmanaged<Value>`.
    private let pointer: Atomic<UInt>
    private let epoch = Atomic<UInt64>(1)
    private let reports: [Report]
    private let retired = Mutex<[(tag: UInt64, bits: UInt)]>([])
    private let freed = Atomic<Int>(0)

    /// One reader's oldest epoch in use, alone on its cache line so readers never contend.
    private final class Report: Sendable {
        let oldest = Atomic<UInt64>(0)  // 0: not started; blocks reclamation until the first refresh
        /// Fills the rest of a 64-byte line (each report is its own allocation, 16 bytes of object header first).
        let padding: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
    }

    public init(_ initial: Value, readers: Int) {
        precondition(readers > 0, "a snapshot cell needs readers")
        pointer = Atomic(UInt(bitPattern: unsafe Unmanaged.passRetained(initial).toOpaque()))
        reports = (0..<readers).map { _ in Report() }
    }

    deinit {
        let bits = pointer.load(ordering: .acquiring)
        Self.release(bits)
        for r in retired.withLock({ $0 }) { Self.release(r.bits) }
    }

    private static func release(_ bits: UInt) {
        // SAFETY: bits come from passRetained in init or publish and are released exactly once.
        unsafe Unmanaged<Value>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).release()
    }

    /// The epoch of the current snapshot (starts at 1).
    public var currentEpoch: UInt64 { epoch.load(ordering: .acquiring) }

    /// Snapshots freed so far (replaced ones whose readers all moved on).
    public var freedCount: Int { freed.load(ordering: .relaxed) }

    /// Snapshots replaced but not yet freed (a gauge).
    public var retiredCount: Int { retired.withLock { $0.count } }

    /// Replaces the current snapshot (publisher side; one publisher at a time). Readers see it at their next
    /// refresh; the caller wakes idle reactors so they report promptly.
    public func publish(_ value: Value) {
        let bits = UInt(bitPattern: unsafe Unmanaged.passRetained(value).toOpaque())
        retired.withLock { list in
            let old = pointer.exchange(bits, ordering: .acquiringAndReleasing)
            let next = epoch.load(ordering: .relaxed) + 1
            epoch.store(next, ordering: .releasing)
            list.append((next, old))
        }
        reclaim()
    }

    /// Frees the retired snapshots no reader can still use; returns how many were freed.
    @discardableResult
    public func reclaim() -> Int {
        var oldest = UInt64.max
        for r in reports { oldest = min(oldest, r.oldest.load(ordering: .acquiring)) }
        let free: [UInt] = retired.withLock { list in
            let done = list.filter { $0.tag <= oldest }.map(\.bits)
            list.removeAll { $0.tag <= oldest }
            return done
        }
        for bits in free { Self.release(bits) }
        freed.add(free.count, ordering: .relaxed)
        return free.count
    }

    /// The reader for reactor `index`; each is used by one thread only.
    public func reader(_ index: Int) -> SnapshotReader<Value> {
        precondition(index >= 0 && index < reports.count, "reader index out of range")
        return SnapshotReader(cell: self, index: index)
    }

    fileprivate func load() -> (UInt64, UInt) {
        let e = epoch.load(ordering: .acquiring)
        return (e, pointer.load(ordering: .acquiring))
    }

    fileprivate func report(_ index: Int, _ oldest: UInt64) {
        reports[index].oldest.store(oldest, ordering: .releasing)
    }
}

/// One reactor's view of a `SnapshotCell`: the snapshot it serves new requests from, and pin counts for
/// snapshots that requests in flight started with. Not thread-safe: owned by its reactor.
public final class SnapshotReader<Value: AnyObject & Sendable> {
    /// A request's hold on the snapshot it started with; `unpin` it when the request ends.
    public struct Pin: Equatable {
        public let epoch: UInt64
    }

    private let cell: SnapshotCell<Value>
    private let index: Int
    private var epoch: UInt64 = 0
    private var bits: UInt = 0
    /// Snapshots pinned by requests, oldest first: (epoch, bits, count). Short: one per swap a slow request spans.
    private var pinned: [(epoch: UInt64, bits: UInt, count: Int)] = []

    fileprivate init(cell: SnapshotCell<Value>, index: Int) {
        self.cell = cell
        self.index = index
        pinned.reserveCapacity(8)
        refresh()
    }

    /// Picks up a newer snapshot, if one was published; call once per loop iteration. True when it changed.
    @discardableResult
    public func refresh() -> Bool {
        let (e, b) = cell.load()
        if e == epoch { return false }
        epoch = e
        bits = b
        report()
        return true
    }

    private func report() {
        var oldest = epoch
        if let first = pinned.first { oldest = min(oldest, first.epoch) }
        cell.report(index, oldest)
    }

    /// The snapshot new requests use. Valid until the next `refresh`, unless pinned.
    public var current: Value { value(bits) }

    public var currentEpoch: UInt64 { epoch }

    private func value(_ bits: UInt) -> Value {
        // SAFETY: the cell keeps every snapshot this reader reported as in use (current or pinned) retained.
        unsafe Unmanaged<Value>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).takeUnretainedValue()
    }

    /// Pins the current snapshot for a request.
    public func pin() -> Pin {
        if let last = pinned.indices.last, pinned[last].epoch == epoch {
            pinned[last].count += 1
        } else {
            pinned.append((epoch, bits, 1))
        }
        return Pin(epoch: epoch)
    }

    /// The snapshot a pin holds.
    public func value(_ pin: Pin) -> Value {
        for p in pinned where p.epoch == pin.epoch { return value(p.bits) }
        preconditionFailure("snapshot pin not held")
    }

    public func unpin(_ pin: Pin) {
        guard let i = pinned.firstIndex(where: { $0.epoch == pin.epoch }) else { preconditionFailure("snapshot pin not held") }
        pinned[i].count -= 1
        if pinned[i].count == 0 {
            pinned.remove(at: i)
            if i == 0 { report() }
        }
    }
}
