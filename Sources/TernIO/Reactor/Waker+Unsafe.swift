import Glibc

/// Wakes a reactor blocked in `wait` from another thread by writing its eventfd. The eventfd lives as long
/// as the backend, and a waker is used only while the reactor runs (ReactorControl drops it on exit).
public struct Waker: Sendable {
    let eventFD: Int32

    public func wake() {
        var one: UInt64 = 1
        // SAFETY: `one` is a local 8-byte value alive for the call; an eventfd write takes exactly 8 bytes.
        unsafe _ = Glibc.write(eventFD, &one, 8)
    }
}
