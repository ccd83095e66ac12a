import TernCore

/// A hashed timer wheel (Varghese and Lauck): `slotCount` slots of one `tick` each. A timer goes into the
/// slot of its deadline tick and fires when the hand passes that slot in the right revolution; scheduling
/// and cancelling are O(1), expiring is O(timers due + slots passed). One per reactor (connect, idle and
/// back-off timers); single-threaded.
///
/// The earliest deadline is cached, so asking when to wake costs nothing per loop iteration; after the earliest
/// timer itself fired or was cancelled it is found again from the hand forward, slot by slot (a few timers
/// when the next is near, as under load), and by one pass over all timers only when none is due within a
/// revolution. (A pass over all of them every time cost 10% of a reactor holding 10,000 connections under a
/// slowloris attack, whose 408s fire a timer every millisecond.)
public final class TimerWheel {
    public struct ID: Equatable, Sendable {
        fileprivate var slab: Slab<Entry>.ID
    }

    fileprivate struct Entry {
        var deadline: UInt64
        var token: Token
        var slot: Int
        var previous: UInt32
        var next: UInt32
    }

    private static let none = UInt32.max
    public let tick: UInt64
    private let slotCount: Int
    private var heads: [UInt32]
    private let entries: Slab<Entry>
    /// The last tick whose slot has been expired.
    private var currentTick: UInt64
    private var due: [Token] = []
    /// The earliest deadline of any timer; valid unless `earliestStale`.
    private var earliest = UInt64.max
    private var earliestStale = false

    public init(capacity: Int, tickNanos: UInt64 = 1_000_000, slotCount: Int = 1024, now: UInt64) {
        tick = tickNanos
        self.slotCount = slotCount
        heads = [UInt32](repeating: Self.none, count: slotCount)
        entries = Slab(capacity: capacity)
        currentTick = now / tickNanos
        due.reserveCapacity(256)
    }

    public var count: Int { entries.count }

    /// Schedules `token` to fire at `deadline` (monotonic nanoseconds); nil when the wheel is full.
    public func schedule(_ token: Token, at deadline: UInt64) -> ID? {
        var t = deadline / tick
        if deadline % tick != 0 { t += 1 }  // never fire early
        if t <= currentTick { t = currentTick + 1 }
        let slot = Int(t % UInt64(slotCount))
        let head = heads[slot]
        guard let id = entries.insert(Entry(deadline: deadline, token: token, slot: slot, previous: Self.none, next: head))
        else { return nil }
        if let h = entries.id(at: head) { entries[h].previous = id.index }
        heads[slot] = id.index
        if !earliestStale { earliest = min(earliest, deadline) }
        return ID(slab: id)
    }

    /// Cancels a timer; a no-op when it already fired or was cancelled.
    public func cancel(_ id: ID) {
        guard entries.isCurrent(id.slab) else { return }
        unlink(id.slab)
    }

    private func unlink(_ id: Slab<Entry>.ID) {
        let e = entries[id]
        if e.deadline <= earliest { earliestStale = true }
        if let p = entries.id(at: e.previous) { entries[p].next = e.next } else { heads[e.slot] = e.next }
        if let n = entries.id(at: e.next) { entries[n].previous = e.previous }
        entries.remove(id)
    }

    /// Nanoseconds until `expire` will fire the next timer (the end of the tick its deadline falls in); nil
    /// when no timer is set.
    public func nanosUntilNext(now: UInt64) -> UInt64? {
        if entries.count == 0 { return nil }
        if earliestStale {
            earliest = nearestInOneRevolution() ?? earliestOfAll()
            earliestStale = false
        }
        var t = earliest / tick
        if earliest % tick != 0 { t += 1 }
        let due = t.multipliedReportingOverflow(by: tick)
        if due.overflow { return UInt64.max }
        return due.partialValue <= now ? 0 : due.partialValue - now
    }

    /// The earliest deadline among the timers due within one revolution of the hand, found slot by slot from
    /// the hand: the first slot holding a timer of this revolution holds the earliest (later slots hold later
    /// ticks; timers of later revolutions are skipped). Under load the next timer is a slot or two away, so
    /// this visits a few timers, not all of them; nil when none is due within the revolution.
    private func nearestInOneRevolution() -> UInt64? {
        var nearest = UInt64.max
        for k in 1...UInt64(slotCount) {
            let t = currentTick + k
            var i = heads[Int(t % UInt64(slotCount))]
            while let id = entries.id(at: i) {
                let d = entries[id].deadline
                // The tick it was placed for: its deadline's, rounded up (or the next tick, when already due).
                if (d / tick + (d % tick == 0 ? 0 : 1)) <= t { nearest = min(nearest, d) }
                i = entries[id].next
            }
            if nearest != UInt64.max { return nearest }
        }
        return nil
    }

    /// The earliest deadline of all timers (one pass over them): only when none is due within a revolution.
    private func earliestOfAll() -> UInt64 {
        var e = UInt64.max
        for head in heads {
            var i = head
            while let id = entries.id(at: i) {
                e = min(e, entries[id].deadline)
                i = entries[id].next
            }
        }
        return e
    }

    /// Fires every timer due at `now`, calling `fire` with its token. Due timers are unlinked first and
    /// fired afterwards, so `fire` may schedule and cancel timers freely.
    public func expire(now: UInt64, _ fire: (Token) -> Void) {
        let nowTick = now / tick
        if nowTick <= currentTick { return }
        let steps = min(nowTick - currentTick, UInt64(slotCount))
        for step in 1...steps {
            let slot = Int((currentTick + step) % UInt64(slotCount))
            var i = heads[slot]
            while let id = entries.id(at: i) {
                let e = entries[id]
                i = e.next
                if e.deadline <= now {
                    unlink(id)
                    due.append(e.token)
                }
            }
        }
        currentTick = nowTick
        for token in due { fire(token) }
        due.removeAll(keepingCapacity: true)
    }
}
