import Testing
import TernIO

@Suite struct TimerWheelTests {
    let ms: UInt64 = 1_000_000

    @Test func firesInDeadlineOrderAndNotEarly() {
        let wheel = TimerWheel(capacity: 16, now: 0)
        _ = wheel.schedule(Token(raw: 2), at: 20 * ms)
        _ = wheel.schedule(Token(raw: 1), at: 10 * ms)
        var fired: [UInt64] = []
        wheel.expire(now: 9 * ms) { fired.append($0.raw) }
        #expect(fired.isEmpty)
        wheel.expire(now: 10 * ms) { fired.append($0.raw) }
        #expect(fired == [1])
        wheel.expire(now: 25 * ms) { fired.append($0.raw) }
        #expect(fired == [1, 2])
        #expect(wheel.count == 0)
    }

    @Test func cancelledTimerNeverFires() {
        let wheel = TimerWheel(capacity: 16, now: 0)
        let id = wheel.schedule(Token(raw: 7), at: 5 * ms)!
        wheel.cancel(id)
        wheel.cancel(id)  // twice is harmless
        var fired = 0
        wheel.expire(now: 100 * ms) { _ in fired += 1 }
        #expect(fired == 0)
    }

    @Test func timersBeyondOneRevolutionWaitForTheirRound() {
        let wheel = TimerWheel(capacity: 16, slotCount: 8, now: 0)
        _ = wheel.schedule(Token(raw: 1), at: 20 * ms)  // 2.5 revolutions of 8 ms
        var fired = 0
        wheel.expire(now: 12 * ms) { _ in fired += 1 }
        #expect(fired == 0)
        #expect(wheel.nanosUntilNext(now: 12 * ms) == 8 * ms)
        wheel.expire(now: 20 * ms) { _ in fired += 1 }
        #expect(fired == 1)
    }

    @Test func nanosUntilNextPointsAtTheEarliestTimer() {
        let wheel = TimerWheel(capacity: 16, now: 0)
        #expect(wheel.nanosUntilNext(now: 0) == nil)
        _ = wheel.schedule(Token(raw: 1), at: 30 * ms)
        let early = wheel.schedule(Token(raw: 2), at: 7 * ms)!
        #expect(wheel.nanosUntilNext(now: 2 * ms) == 5 * ms)
        // A deadline inside a tick is reported at the end of that tick, when expire can fire it.
        _ = wheel.schedule(Token(raw: 3), at: 4 * ms + 300)
        #expect(wheel.nanosUntilNext(now: 2 * ms) == 3 * ms)
        // Cancelling the earliest moves the answer to the next one.
        wheel.cancel(early)
        #expect(wheel.nanosUntilNext(now: 2 * ms) == 3 * ms)
        var fired: [UInt64] = []
        wheel.expire(now: 5 * ms) { fired.append($0.raw) }
        #expect(fired == [3])
        #expect(wheel.nanosUntilNext(now: 5 * ms) == 25 * ms)
    }

    @Test func fireMayScheduleAndCancelOtherTimers() {
        let wheel = TimerWheel(capacity: 16, now: 0)
        let other = wheel.schedule(Token(raw: 2), at: 5 * ms)!
        _ = wheel.schedule(Token(raw: 1), at: 5 * ms)
        var fired: [UInt64] = []
        wheel.expire(now: 5 * ms) { token in
            fired.append(token.raw)
            if token.raw == 1 {
                wheel.cancel(other)
                _ = wheel.schedule(Token(raw: 3), at: 9 * ms)
            }
        }
        // Both were due and unlinked before either fired, so cancelling the second is a no-op.
        #expect(Set(fired) == [1, 2])
        wheel.expire(now: 10 * ms) { fired.append($0.raw) }
        #expect(fired.last == 3)
    }

    /// After the earliest fires or is cancelled the next is found from the hand forward: against a plain list
    /// of deadlines, random timers over several revolutions (some past due, some far away), cancelled and fired
    /// in turns, always give the same answer.
    @Test func nextTimerMatchesTheEarliestDeadlineThroughFiresAndCancels() {
        var rng = SystemRandomNumberGenerator()
        let slotCount = 16
        let wheel = TimerWheel(capacity: 512, slotCount: slotCount, now: 0)
        var live: [UInt64: (TimerWheel.ID, UInt64)] = [:]
        var now: UInt64 = 0
        var next: UInt64 = 1
        for round in 0..<400 {
            for _ in 0..<3 {
                let deadline = round % 7 == 0 ? now &- min(now, UInt64.random(in: 0...3 * ms, using: &rng))
                    : now + UInt64.random(in: 0...(UInt64(slotCount) * 5 * ms), using: &rng)
                if let id = wheel.schedule(Token(raw: next), at: deadline) { live[next] = (id, deadline) }
                next += 1
            }
            if round % 3 == 0, let k = live.keys.randomElement(using: &rng) {
                wheel.cancel(live[k]!.0)
                live[k] = nil
            }
            now += UInt64.random(in: 0...(2 * ms), using: &rng)
            wheel.expire(now: now) { live[$0.raw] = nil }
            let earliest = live.values.map(\.1).min()
            let got = wheel.nanosUntilNext(now: now)
            if let earliest {
                let endOfTick = (earliest + ms - 1) / ms * ms
                #expect(got == (endOfTick <= now ? 0 : endOfTick - now), "round \(round)")
            } else {
                #expect(got == nil)
            }
        }
    }
}
