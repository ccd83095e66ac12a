// Process signals for the main thread. SIGTERM and SIGINT are blocked before any reactor thread starts
// (threads inherit the mask) and read from a signalfd, so no handler ever runs on a reactor. SIGPIPE is
// ignored: a splice into a socket the peer closed must fail with EPIPE, not kill the process.
internal import CTernLinux
import Glibc

public struct SignalSource: ~Copyable {
    let fd: Int32

    /// Waits up to `milliseconds` for a signal; returns its number, or nil on timeout.
    public func wait(milliseconds: Int32) -> Int32? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        // SAFETY: p is a local pollfd alive for the call.
        let r = unsafe Glibc.poll(&p, 1, milliseconds)
        guard r > 0 else { return nil }
        var info = signalfd_siginfo()
        // SAFETY: info is a local signalfd_siginfo and the length read is its size.
        let n = unsafe Glibc.read(fd, &info, MemoryLayout<signalfd_siginfo>.size)
        guard n == MemoryLayout<signalfd_siginfo>.size else { return nil }
        return Int32(info.ssi_signo)
    }

    deinit { System.close(fd) }
}

public enum Signals {
    public static func ignoreBrokenPipe() {
        _ = signal(SIGPIPE, SIG_IGN)
    }

    /// Blocks SIGTERM, SIGINT, SIGHUP and SIGUSR1 in the calling thread (and the threads it starts later)
    /// and returns a source to read them from.
    public static func takeOver() -> SignalSource? {
        let list: [Int32] = [SIGTERM, SIGINT, SIGHUP, SIGUSR1]
        // SAFETY: the array outlives the call and its count is passed.
        let fd = unsafe list.withUnsafeBufferPointer { unsafe CTernLinux_signalfd_for($0.baseAddress!, Int32($0.count)) }
        return fd < 0 ? nil : SignalSource(fd: fd)
    }

    public static func sleep(milliseconds: Int) {
        var ts = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        // SAFETY: ts is a local timespec alive for the call.
        _ = unsafe nanosleep(&ts, nil)
    }

    /// SIGTERM and SIGINT stop the process (after a drain).
    public static func isStop(_ sig: Int32) -> Bool { sig == SIGTERM || sig == SIGINT }

    public static func name(_ sig: Int32) -> String {
        switch sig {
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        case SIGHUP: return "SIGHUP"
        case SIGUSR1: return "SIGUSR1"
        default: return "signal \(sig)"
        }
    }
}
