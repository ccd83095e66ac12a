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
/// - A reader may also **keep** a snapshot (`SnapshotReader.keep`): a reference of its own, taken once and
///   counted by the reader's owner, which holds back nothing but that snapshot (a pin holds back every later
///   one too). Its release is handed back to the publisher side (a list the reader only try-locks) and done by
///   `reclaim`, so a snapshot is never freed on a reader's thread.
public final class SnapshotCell<Value: AnyObject & Sendable>: Sendable {
    /// The current snapshot as the bits of a retained `Unmanaged<Value>`.
    private let pointer: Atomic<UInt>
    private let epoch = Atomic<UInt64>(1)
    private let reports: [Report]
    private let retired = Mutex<[(tag: UInt64, bits: UInt)]>([])
    private let freed = Atomic<Int>(0)

    /// One reader's oldest epoch in use, alone on its cache line so readers never contend, and the kept
    /// snapshots its reader handed back.
    private final class Report: Sendable {
        let oldest = Atomic<UInt64>(0)  // 0: not started; blocks reclamation until the first refresh
        /// Fills the rest of a 64-byte line (each report is its own allocation, 16 bytes of object header first).
        let padding: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
        /// Kept snapshots the reader handed back, released by `reclaim`. The reader only ever tries the lock
        /// (never waits for it): a release that finds it taken is handed back at a later refresh.
        let handedBack = Mutex<[UInt]>({ var a: [UInt] = []; a.reserveCapacity(16); return a }())

        /// Reader side: false when the consumer holds the lock just now.
        func push(_ bits: UInt) -> Bool {
            handedBack.withLockIfAvailable { $0.append(bits) } != nil
        }

        /// Consumer side.
        func drain(_ body: (UInt) -> Void) {
            let all = handedBack.withLock { list in
                defer { list.removeAll(keepingCapacity: true) }
                return list
            }
            for bits in all { body(bits) }
        }
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
        for r in reports { r.drain { Self.release($0) } }
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
        var handedBack: [UInt] = []
        let free: [UInt] = retired.withLock { list in
            let done = list.filter { $0.tag <= oldest }.map(\.bits)
            list.removeAll { $0.tag <= oldest }
            for r in reports { r.drain { handedBack.append($0) } }
            return done
        }
        for bits in free { Self.release(bits) }
        for bits in handedBack { Self.release(bits) }
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

    fileprivate func handBack(_ index: Int, _ bits: UInt) -> Bool {
        reports[index].push(bits)
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
    /// Kept snapshots whose release found the hand-back ring full: handed back at the next refresh.
    private var toHandBack: [UInt] = []

    /// A snapshot kept by the reader's owner (`keep`), until `release`.
    public struct Kept: Equatable {
        fileprivate let bits: UInt
    }

    fileprivate init(cell: SnapshotCell<Value>, index: Int) {
        self.cell = cell
        self.index = index
        pinned.reserveCapacity(8)
        refresh()
    }

    /// Picks up a newer snapshot, if one was published; call once per loop iteration. True when it changed.
    @discardableResult
    public func refresh() -> Bool {
        while let bits = toHandBack.last, cell.handBack(index, bits) { toHandBack.removeLast() }
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

    /// Keeps the current snapshot alive until `release`, whatever is published meanwhile, without holding back
    /// the freeing of any other snapshot (as a pin would). One reference count now; the matching release is
    /// done by the publisher's `reclaim`, not on this thread.
    public func keep() -> Kept {
        // SAFETY: bits are the current snapshot's, which the cell keeps retained while this reader reports it.
        _ = unsafe Unmanaged<Value>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).retain()
        return Kept(bits: bits)
    }

    /// The snapshot `kept` holds.
    public func value(_ kept: Kept) -> Value { value(kept.bits) }

    /// Ends a `keep`: the reference goes to the publisher's thread, which releases it at its next `reclaim`.
    public func release(_ kept: Kept) {
        if !cell.handBack(index, kept.bits) { toHandBack.append(kept.bits) }
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
