/// How an open-loop reactor waits for its next due send.
///
/// A thread that sleeps until a send is due wakes 50-150 µs late (timer slack, the scheduler), and a late
/// send is latency the server did not cause. So the last `spinNanos` before a send are polled: the loop asks
/// the backend for completions without blocking until the send is due, which gets sends out 2-7 µs after
/// their due time at the median.
///
/// Polling must not take the CPU from a server that shares it: on a two-core machine the load and the origin
/// share one. At 16,000 req/s (a send every 62.5 µs) the loop polls all the time; without giving way, the
/// origin nginx on the same CPU answered at a 610-980 µs p50 and a 5 ms p99 instead of 53 µs and 250-360 µs,
/// because the scheduler let the poll loop run out its slice before the woken server. So each poll that
/// finds nothing yields the CPU (sched_yield), which costs one syscall when no other thread wants it.
public enum SendWait: Equatable, Sendable {
    /// No send is due soon: block in the backend for up to this many nanoseconds (other deadlines may cut it).
    case sleep(UInt64)
    /// A send is due within `spinNanos`: poll without blocking, and yield the CPU after a poll that found
    /// nothing.
    case poll
    /// No send is pending (closed loop, or every client busy): block until the other deadlines.
    case idle

    /// How long before a due send the loop stops sleeping and polls.
    public static let spinNanos: UInt64 = 100_000

    /// The wait at `now` given the earliest due send (nil when none is pending).
    public static func before(nextDue: UInt64?, now: UInt64) -> SendWait {
        guard let next = nextDue else { return .idle }
        return next > now + spinNanos ? .sleep(next - now - spinNanos) : .poll
    }
}
