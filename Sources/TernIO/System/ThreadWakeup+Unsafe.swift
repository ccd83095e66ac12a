// A wake-up for a thread beside the reactors (the access-log writer, the DNS resolver) that sleeps with a timeout between rounds
// of work: another thread rings it (stop, reopen) so it does not wait out the timeout. An eventfd; the counter
// it holds is read back to zero by `wait`, so rings while the thread was busy make one early wake-up.
internal import CTernLinux
import Glibc

public final class ThreadWakeup: Sendable {
    let fd: Int32

    /// Nil when the system has no eventfd left (EMFILE).
    public init?() {
        let fd = CTernLinux_eventfd(1)
        guard fd >= 0 else { return nil }
        self.fd = fd
    }

    deinit { System.close(fd) }

    /// Wakes the thread in `wait` (any thread; never blocks).
    public func ring() {
        var one: UInt64 = 1
        // SAFETY: `one` is a local 8-byte value alive for the call; an eventfd write takes exactly 8 bytes.
        _ = unsafe Glibc.write(fd, &one, 8)
    }

    /// Sleeps until rung or `milliseconds` pass; true when rung.
    @discardableResult
    public func wait(milliseconds: Int32) -> Bool {
        guard System.poll(fd, events: Int16(POLLIN), timeoutMillis: milliseconds) else { return false }
        var value: UInt64 = 0
        // SAFETY: `value` is a local 8-byte buffer; a non-blocking eventfd read fills exactly 8 bytes or fails.
        _ = unsafe Glibc.read(fd, &value, 8)
        return true
    }
}
