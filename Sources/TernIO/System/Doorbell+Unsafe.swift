// A wake-up for a thread beside the reactors that sleeps until its next deadline (the DNS resolver): another
// thread rings, the sleeper returns at once instead of at its timeout. An eventfd, so rings made before the wait
// are not lost (they are counted until read).
internal import CTernLinux
import Glibc

public final class Doorbell: Sendable {
    private let fd: Int32

    /// Nil when the system refuses an eventfd.
    public init?() {
        let fd = CTernLinux_eventfd(1)
        guard fd >= 0 else { return nil }
        self.fd = fd
    }

    deinit { System.close(fd) }

    /// Wakes the thread in `wait`, or makes its next `wait` return at once.
    public func ring() {
        var one: UInt64 = 1
        // SAFETY: `one` is a local 8-byte value alive for the call; an eventfd write takes exactly 8 bytes.
        unsafe _ = Glibc.write(fd, &one, 8)
    }

    /// Sleeps until rung or `timeoutMillis` pass; true when rung (the rings so far are consumed).
    @discardableResult
    public func wait(timeoutMillis: Int32) -> Bool {
        guard System.poll(fd, events: Int16(POLLIN), timeoutMillis: timeoutMillis) else { return false }
        var value: UInt64 = 0
        // SAFETY: `value` is a local 8-byte buffer; a (non-blocking) eventfd read fills exactly 8 bytes.
        unsafe _ = Glibc.read(fd, &value, 8)
        return true
    }
}
