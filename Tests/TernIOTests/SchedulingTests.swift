import Glibc
import TernIO
import Testing

@Suite struct SchedulingTests {
    /// The config service's reloads run at SCHED_IDLE, on a thread of their own: the caller keeps SCHED_OTHER
    /// (the policy as the kernel reports it for the calling thread) and gets the body's result.
    @Test func idlePriorityHoldsOnlyForTheBody() {
        let idle: Int32 = 5  // SCHED_IDLE (declared only under _GNU_SOURCE)
        let other: Int32 = 0  // SCHED_OTHER
        #expect(sched_getscheduler(0) == other)
        var calls = 0
        let inside = System.atIdlePriority {
            calls += 1
            return sched_getscheduler(0)
        }
        #expect(inside == idle && calls == 1)
        #expect(sched_getscheduler(0) == other)
    }
}
