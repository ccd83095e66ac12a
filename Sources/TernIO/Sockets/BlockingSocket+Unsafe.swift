// Sockets and files for the threads beside the reactors (admin and health listeners, the span exporter, the
// access-log writer): every call is bounded by a deadline, so a slow or dead peer costs those threads time and
// never a reactor anything. The reactors themselves never use these.
internal import CTernLinux
import Glibc

/// A connected TCP socket used with deadlines (non-blocking underneath; each call polls until its deadline).
/// Closed when it goes out of scope.
public struct BlockingSocket: ~Copyable {
    public let fd: Int32

    /// Takes ownership of a connected socket (an accepted one, for example).
    public init(adopting fd: Int32) { self.fd = fd }

    deinit { System.close(fd) }

    /// Connects to `address`, waiting at most `timeoutMillis`.
    public static func connect(to address: SocketAddress, timeoutMillis: Int32) throws(IOError) -> BlockingSocket {
        let fd = try System.tcpSocket(family: address.family)
        let socket = BlockingSocket(adopting: fd)
        let r = unsafe address.withSockAddr { (sa, len) in syscallResult { unsafe Int(Glibc.connect(fd, sa, len)) } }
        if r < 0 {
            guard Int32(-r) == EINPROGRESS else { throw IOError("connect \(address)", errno: Int32(-r)) }
            guard System.poll(fd, events: Int16(POLLOUT), timeoutMillis: timeoutMillis) else {
                throw IOError("connect \(address)", errno: ETIMEDOUT)
            }
            let e = System.socketError(fd)
            if e != 0 { throw IOError("connect \(address)", errno: e) }
        }
        _ = System.setNoDelay(fd)
        return socket
    }

    /// Sends all of `bytes` before the deadline (monotonic nanoseconds).
    public func send(_ bytes: [UInt8], deadline: UInt64) throws(IOError) {
        var offset = 0
        while offset < bytes.count {
            // SAFETY: offset < bytes.count, so the pointer and length stay inside the array alive for the call.
            let n = unsafe bytes.withUnsafeBytes { buf in
                syscallResult { unsafe Glibc.send(fd, buf.baseAddress! + offset, buf.count - offset, Int32(MSG_NOSIGNAL)) }
            }
            if n >= 0 {
                offset += n
                continue
            }
            guard Int32(-n) == EAGAIN else { throw IOError("send", errno: Int32(-n)) }
            guard System.poll(fd, events: Int16(POLLOUT), timeoutMillis: Self.millisLeft(deadline)) else {
                throw IOError("send", errno: ETIMEDOUT)
            }
        }
    }

    /// Receives up to `max` bytes, waiting until the deadline; an empty array means the peer closed.
    public func receive(max: Int, deadline: UInt64) throws(IOError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max)
        while true {
            // SAFETY: the pointer and length cover the array, alive for the call.
            let n = unsafe bytes.withUnsafeMutableBytes { buf in
                syscallResult { unsafe Glibc.recv(fd, buf.baseAddress!, buf.count, 0) }
            }
            if n >= 0 {
                bytes.removeLast(max - n)
                return bytes
            }
            guard Int32(-n) == EAGAIN else { throw IOError("recv", errno: Int32(-n)) }
            guard System.poll(fd, events: Int16(POLLIN), timeoutMillis: Self.millisLeft(deadline)) else {
                throw IOError("recv", errno: ETIMEDOUT)
            }
        }
    }

    static func millisLeft(_ deadline: UInt64) -> Int32 {
        let now = System.monotonicNanos()
        guard deadline > now else { return 0 }
        return Int32(min((deadline - now + 999_999) / 1_000_000, UInt64(Int32.max)))
    }
}

extension System {
    /// Waits until `fd` is ready for `events` (POLLIN, POLLOUT) or `timeoutMillis` pass; true when ready.
    public static func poll(_ fd: Int32, events: Int16, timeoutMillis: Int32) -> Bool {
        var p = pollfd(fd: fd, events: events, revents: 0)
        // SAFETY: p is a local pollfd alive for the call; the count is 1.
        let r = syscallResult { unsafe Int(Glibc.poll(&p, 1, timeoutMillis)) }
        return r > 0
    }

    /// Waits until one of `fds` is readable or `timeoutMillis` pass; returns the readable ones.
    public static func pollReadable(_ fds: [Int32], timeoutMillis: Int32) -> [Int32] {
        var polls = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        // SAFETY: the pointer and count cover the array, alive for the call.
        let r = unsafe polls.withUnsafeMutableBufferPointer { p in
            syscallResult { unsafe Int(Glibc.poll(p.baseAddress!, nfds_t(p.count), timeoutMillis)) }
        }
        guard r > 0 else { return [] }
        return polls.filter { $0.revents != 0 }.map(\.fd)
    }

    /// Waits until one of `polls` is ready for its events (POLLIN, POLLOUT) or `timeoutMillis` pass, and sets
    /// each one's `revents`; false when none is ready.
    public static func poll(_ polls: inout [PollRequest], timeoutMillis: Int32) -> Bool {
        var raw = polls.map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
        // SAFETY: the pointer and count cover the array, alive for the call.
        let r = unsafe raw.withUnsafeMutableBufferPointer { p in
            syscallResult { unsafe Int(Glibc.poll(p.baseAddress!, nfds_t(p.count), timeoutMillis)) }
        }
        for i in polls.indices { polls[i].revents = r > 0 ? raw[i].revents : 0 }
        return r > 0
    }

    /// Receives what a non-blocking socket has, up to `max` bytes, appended to `into`: the count, 0 when the
    /// peer closed, -EAGAIN when nothing is there yet, another negative errno on failure.
    public static func receiveAvailable(_ fd: Int32, max: Int, into bytes: inout [UInt8]) -> Int {
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: max))
        // SAFETY: the pointer and length cover the `max` bytes just appended, alive for the call.
        let n = unsafe bytes.withUnsafeMutableBytes { buf in
            syscallResult { unsafe Glibc.recv(fd, buf.baseAddress! + start, max, 0) }
        }
        bytes.removeLast(max - Swift.max(n, 0))
        return n
    }

    /// Sends what a non-blocking socket takes of `bytes[from...]`: the count, or a negative errno (-EAGAIN: full).
    public static func sendAvailable(_ fd: Int32, _ bytes: [UInt8], from: Int) -> Int {
        guard from < bytes.count else { return 0 }
        // SAFETY: from < bytes.count, so the pointer and length stay inside the array alive for the call.
        return unsafe bytes.withUnsafeBytes { buf in
            syscallResult { unsafe Glibc.send(fd, buf.baseAddress! + from, buf.count - from, Int32(MSG_NOSIGNAL)) }
        }
    }

    /// Accepts a connection on a non-blocking listener; the new socket is non-blocking and close-on-exec.
    public static func accept(_ listener: Int32) -> Int32? {
        let r = CTernLinux_accept_nonblocking(listener)
        return r >= 0 ? r : nil
    }

    /// Opens (creating it, mode 0644) a file to append to; a negative errno on failure.
    public static func openForAppend(_ path: String) -> Int32 {
        Int32(syscallResult { unsafe Int(open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)) })
    }

    /// Wall-clock time in microseconds since the Unix epoch (access-log start times, span timestamps).
    public static func wallClockMicros() -> UInt64 {
        var ts = timespec()
        // SAFETY: ts is a local timespec alive for the call.
        unsafe clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000 &+ UInt64(ts.tv_nsec) / 1000
    }

    /// Sends SIGTERM to this process (admin /quitquitquit takes the same path as a SIGTERM from outside).
    public static func terminateSelf() {
        _ = Glibc.kill(getpid(), SIGTERM)
    }

    /// An environment variable, or nil.
    public static func environment(_ name: String) -> String? {
        guard let p = unsafe getenv(name) else { return nil }
        return unsafe String(cString: p)
    }
}

/// One descriptor to `System.poll`: the events waited for, and those that came.
public struct PollRequest: Sendable {
    public var fd: Int32
    public var events: Int16
    public var revents: Int16 = 0
    public init(fd: Int32, events: Int16) {
        self.fd = fd
        self.events = events
    }
    public static var readable: Int16 { Int16(POLLIN) }
    public static var writable: Int16 { Int16(POLLOUT) }
    /// Ready to read, or closed or failed (a read then says which).
    public var isReadable: Bool { revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 }
    public var isWritable: Bool { revents & Int16(POLLOUT | POLLHUP | POLLERR) != 0 }
}
