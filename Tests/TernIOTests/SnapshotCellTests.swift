// Snapshot publication under concurrent readers (ARCHITECTURE.md §5): readers on their own threads look up,
// pin and unpin while a publisher swaps thousands of times; every replaced snapshot is freed exactly once and
// never while a reader can still see it. Also run under the thread sanitizer (Tools/scripts/test.sh).
import Synchronization
import Testing
import TernCore
import TernIO

let snapshotsFreed = Atomic<Int>(0)

final class Table: Sendable {
    let version: Int
    let alive = Atomic<Bool>(true)
    init(_ version: Int) { self.version = version }
    deinit {
        alive.store(false, ordering: .releasing)
        snapshotsFreed.add(1, ordering: .relaxed)
    }
}

final class ReaderOutcome: Sendable {
    let reads = Atomic<Int>(0)
    let violations = Atomic<Int>(0)
}

@Suite(.serialized) struct SnapshotCellTests {
    @Test func readersNeverSeeAFreedSnapshotAndEveryReplacedOneIsFreed() throws {
        let before = snapshotsFreed.load(ordering: .relaxed)
        let readers = 4, swaps = 5_000
        let cell = SnapshotCell(Table(0), readers: readers)
        let done = Atomic<Bool>(false)
        let outcome = ReaderOutcome()
        var threads: [ReactorThread] = []
        for r in 0..<readers {
            let thread = ReactorThread.start(name: "reader\(r)") {
                let reader = cell.reader(r)
                var held: [SnapshotReader<Table>.Pin] = []
                var last = 0
                var i = 0
                while !done.load(ordering: .acquiring) {
                    reader.refresh()
                    let t = reader.current
                    // Versions only move forward, and what a reader holds is alive.
                    if t.version < last || !t.alive.load(ordering: .acquiring) { outcome.violations.add(1, ordering: .relaxed) }
                    last = t.version
                    // Requests that span swaps: hold a pin for a while, then let it go.
                    if i % 7 == 0 { held.append(reader.pin()) }
                    if i % 11 == 0, !held.isEmpty {
                        let p = held.removeFirst()
                        if !reader.value(p).alive.load(ordering: .acquiring) { outcome.violations.add(1, ordering: .relaxed) }
                        reader.unpin(p)
                    }
                    i += 1
                    outcome.reads.add(1, ordering: .relaxed)
                }
                for p in held { reader.unpin(p) }
                reader.refresh()
            }
            threads.append(try #require(thread))
        }
        for v in 1...swaps { cell.publish(Table(v)) }
        done.store(true, ordering: .releasing)
        threads.forEach { $0.join() }
        cell.reclaim()
        #expect(outcome.violations.load(ordering: .relaxed) == 0)
        #expect(outcome.reads.load(ordering: .relaxed) > 0)
        #expect(cell.retiredCount == 0)
        #expect(cell.freedCount == swaps)
        // Every snapshot but the current one was freed, once.
        #expect(snapshotsFreed.load(ordering: .relaxed) - before == swaps)
        #expect(cell.currentEpoch == UInt64(swaps + 1))
    }

    @Test func aPinnedSnapshotOutlivesItsReplacement() {
        let before = snapshotsFreed.load(ordering: .relaxed)
        let cell = SnapshotCell(Table(0), readers: 1)
        let reader = cell.reader(0)
        let pin = reader.pin()
        cell.publish(Table(1))
        reader.refresh()
        #expect(reader.current.version == 1)
        #expect(cell.reclaim() == 0)  // the pinned version 0 is still in use
        #expect(reader.value(pin).version == 0)
        reader.unpin(pin)
        #expect(cell.reclaim() == 1)
        #expect(snapshotsFreed.load(ordering: .relaxed) - before == 1)
    }

    /// A kept snapshot (unlike a pinned one) holds back no other: the snapshots published after it are freed
    /// while it is kept; it is freed by `reclaim` once released, never by the release itself.
    @Test func aKeptSnapshotHoldsBackNoOtherAndIsFreedByReclaim() {
        let before = snapshotsFreed.load(ordering: .relaxed)
        let cell = SnapshotCell(Table(0), readers: 1)
        let reader = cell.reader(0)
        let kept = reader.keep()
        for v in 1...3 {
            cell.publish(Table(v))
            reader.refresh()
        }
        cell.reclaim()
        #expect(snapshotsFreed.load(ordering: .relaxed) - before == 2, "versions 1 and 2 freed while 0 is kept")
        #expect(cell.retiredCount == 0)
        #expect(reader.value(kept).version == 0 && reader.value(kept).alive.load(ordering: .acquiring))
        reader.release(kept)
        #expect(snapshotsFreed.load(ordering: .relaxed) - before == 2, "not freed by the release")
        cell.reclaim()
        #expect(snapshotsFreed.load(ordering: .relaxed) - before == 3)
        #expect(reader.current.version == 3)
    }
}
