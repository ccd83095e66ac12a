// The only place in Tern that calls libc directly (anchors.md §4 rules 1 and 3). Every wrapper reads errno
// straight after the call, inside an @inline(never) function so no ARC traffic can run in between, retries
// EINTR, and returns either the result or a negative errno (the io_uring convention), so both backends
// report failures the same way.
internal import CTernLinux
import Glibc

/// Runs `body` (a libc call returning -1 and setting errno on failure), retrying EINTR.
/// Returns the non-negative result or -errno.
@inline(never)
func syscallResult(_ body: () -> Int) -> Int {
    while true {
        let r = body()
        if r >= 0 { return r }
        let e = Glibc.errno
        if e == EINTR { continue }
        return -Int(e)
    }
}

/// Like `syscallResult`, but throws `IOError(call:errno:)` on failure.
@inline(__always)
func syscallOrThrow(_ call: String, _ body: () -> Int) throws(IOError) -> Int {
    let r = syscallResult(body)
    if r < 0 { throw IOError(call, errno: Int32(-r)) }
    return r
}

/// errno names and messages for logs and error lines.
public enum Errno {
    public static let EAGAIN = Glibc.EAGAIN
    public static let ECANCELED = Glibc.ECANCELED
    public static let EMFILE = Glibc.EMFILE
    public static let ENFILE = Glibc.ENFILE
    public static let ECONNRESET = Glibc.ECONNRESET
    public static let EPERM = Glibc.EPERM
    public static let ENOSYS = Glibc.ENOSYS
    public static let EADDRINUSE = Glibc.EADDRINUSE
    public static func name(_ e: Int32) -> String {
        switch e {
        case EPERM: return "EPERM"
        case ENOENT: return "ENOENT"
        case EINTR: return "EINTR"
        case EBADF: return "EBADF"
        case EAGAIN: return "EAGAIN"
        case ENOMEM: return "ENOMEM"
        case EACCES: return "EACCES"
        case EFAULT: return "EFAULT"
        case EBUSY: return "EBUSY"
        case EINVAL: return "EINVAL"
        case ENFILE: return "ENFILE"
        case EMFILE: return "EMFILE"
        case EPIPE: return "EPIPE"
        case ENOSYS: return "ENOSYS"
        case ENOBUFS: return "ENOBUFS"
        case EADDRINUSE: return "EADDRINUSE"
        case EADDRNOTAVAIL: return "EADDRNOTAVAIL"
        case ENETUNREACH: return "ENETUNREACH"
        case ECONNABORTED: return "ECONNABORTED"
        case ECONNRESET: return "ECONNRESET"
        case ENOTCONN: return "ENOTCONN"
        case ETIMEDOUT: return "ETIMEDOUT"
        case ECONNREFUSED: return "ECONNREFUSED"
        case EHOSTUNREACH: return "EHOSTUNREACH"
        case EALREADY: return "EALREADY"
        case EINPROGRESS: return "EINPROGRESS"
        case ECANCELED: return "ECANCELED"
        case EOPNOTSUPP: return "EOPNOTSUPP"
        default: return "errno \(e)"
        }
    }

    public static func message(_ e: Int32) -> String {
        // SAFETY: strerror returns a pointer to a static or thread-local NUL-terminated string that stays
        // valid until the next strerror call on this thread; it is copied into a String at once.
        guard let p = unsafe strerror(e) else { return "unknown error" }
        return unsafe String(cString: p)
    }
}

/// Thin, typed wrappers over the socket, file and process calls TernIO needs outside the backends.
public enum System {
    public static func close(_ fd: Int32) {
        // close is not retried on EINTR: on Linux the descriptor is released regardless.
        _ = Glibc.close(fd)
    }

    public static func shutdown(_ fd: Int32, write: Bool, read: Bool) -> Int {
        let how: Int32 = read && write ? Int32(SHUT_RDWR) : (write ? Int32(SHUT_WR) : Int32(SHUT_RD))
        return syscallResult { Int(Glibc.shutdown(fd, how)) }
    }

    /// A non-blocking, close-on-exec TCP socket of the address family.
    public static func tcpSocket(family: Int32) throws(IOError) -> Int32 {
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        return Int32(try syscallOrThrow("socket") { Int(Glibc.socket(family, type, 0)) })
    }

    public static func setIntOption(_ fd: Int32, level: Int32, name: Int32, value: Int32) -> Int {
        var v = value
        // SAFETY: &v is a local Int32 alive for the call; the length passed is its size.
        return syscallResult {
            unsafe Int(setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)))
        }
    }

    /// SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT where given (0: the system's value), as
    /// a DestinationRule's `tcpKeepalive` asks.
    public static func setKeepalive(_ fd: Int32, idle: Int, interval: Int, probes: Int) {
        _ = setIntOption(fd, level: SOL_SOCKET, name: SO_KEEPALIVE, value: 1)
        if idle > 0 { _ = setIntOption(fd, level: Int32(IPPROTO_TCP), name: TCP_KEEPIDLE, value: Int32(clamping: idle)) }
        if interval > 0 { _ = setIntOption(fd, level: Int32(IPPROTO_TCP), name: TCP_KEEPINTVL, value: Int32(clamping: interval)) }
        if probes > 0 { _ = setIntOption(fd, level: Int32(IPPROTO_TCP), name: TCP_KEEPCNT, value: Int32(clamping: probes)) }
    }

    /// TCP_NODELAY: proxied bytes go out at once (Nagle would add up to 40 ms to small writes).
    @discardableResult
    public static func setNoDelay(_ fd: Int32) -> Int {
        setIntOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
    }

    /// SO_LINGER {1, 0}: the next close sends RST, which is how a reset is propagated to the other side.
    @discardableResult
    public static func setLingerReset(_ fd: Int32) -> Int {
        let r = CTernLinux_set_linger_reset(fd)
        return Int(r)
    }

    /// The pending error of a socket (SO_ERROR), as a positive errno or 0.
    public static func socketError(_ fd: Int32) -> Int32 {
        var value: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        // SAFETY: value and len are locals alive for the call; len states value's size.
        let r = syscallResult { unsafe Int(getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &len)) }
        return r < 0 ? Int32(-r) : value
    }

    /// Binds a listening socket with SO_REUSEADDR and SO_REUSEPORT (one socket per reactor, ARCHITECTURE.md §3).
    /// The listen backlog Tern asks for (the kernel caps it at net.core.somaxconn).
    public static let listenBacklog: Int32 = 4096

    /// `reusePort` false: a port another socket holds is refused (EADDRINUSE), as the admin, health and
    /// Prometheus listeners need: with SO_REUSEPORT a second sidecar would share them and answer for the first.
    public static func listen(on address: SocketAddress, backlog: Int32 = listenBacklog, reusePort: Bool = true) throws(IOError) -> Int32 {
        let fd = try boundSocket(address, reusePort: reusePort)
        let listened = syscallResult { Int(Glibc.listen(fd, backlog)) }
        if listened < 0 {
            close(fd)
            throw IOError("listen \(address)", errno: Int32(-listened))
        }
        return fd
    }

    /// Throws when another socket already listens on `address` (EADDRINUSE), whoever holds it: a probe binds
    /// it without SO_REUSEPORT (which Tern's own listeners set so each reactor has one; another process of the
    /// same user setting it too would silently share the port) and is closed at once. TIME_WAIT connections do
    /// not count (SO_REUSEADDR). A process binding the address in the instant between this check and Tern's own
    /// binds is not seen.
    public static func checkNotListening(_ address: SocketAddress) throws(IOError) {
        close(try boundSocket(address, reusePort: false))
    }

    /// A TCP socket bound to `address` (SO_REUSEADDR; SO_REUSEPORT when asked; IPv6 only for an IPv6 address),
    /// not yet listening.
    private static func boundSocket(_ address: SocketAddress, reusePort: Bool) throws(IOError) -> Int32 {
        let fd = try tcpSocket(family: address.family)
        _ = setIntOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
        if reusePort && setIntOption(fd, level: SOL_SOCKET, name: SO_REUSEPORT, value: 1) < 0 {
            close(fd)
            throw IOError("setsockopt(SO_REUSEPORT)", errno: Glibc.errno)
        }
        if address.family == AF_INET6 {
            // An explicit [::] listener takes IPv6 only; 0.0.0.0 is a listener of its own.
            _ = setIntOption(fd, level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY, value: 1)
        }
        let bound = unsafe address.withSockAddr { (sa, len) in syscallResult { unsafe Int(Glibc.bind(fd, sa, len)) } }
        if bound < 0 {
            close(fd)
            throw IOError("bind \(address)", errno: Int32(-bound))
        }
        return fd
    }

    /// Binds a socket about to connect to the source address `address` (port 0: any): a sidecar's inbound side
    /// sends intercepted connections on to the app from 127.0.0.6, as Istio's does, so its own iptables rules let
    /// them through.
    public static func bindSource(_ fd: Int32, _ address: SocketAddress) throws(IOError) {
        let bound = unsafe address.withSockAddr { (sa, len) in syscallResult { unsafe Int(Glibc.bind(fd, sa, len)) } }
        if bound < 0 { throw IOError("bind \(address)", errno: Int32(-bound)) }
    }

    /// The local address a socket is bound to (learns the port chosen for port 0).
    public static func localAddress(_ fd: Int32) throws(IOError) -> SocketAddress {
        try socketName(fd, peer: false)
    }

    /// The address of a connected socket's peer.
    public static func peerAddress(_ fd: Int32) throws(IOError) -> SocketAddress {
        try socketName(fd, peer: true)
    }

    /// The address an accepted connection was made to: the destination it had before an iptables REDIRECT or
    /// DNAT sent it here (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST: how a sidecar learns where intercepted traffic
    /// was going), else, when netfilter translated nothing, the socket's local address. nil when neither can be
    /// read. Two system calls at most, no allocation.
    public static func originalDestination(_ fd: Int32) -> SocketAddress? {
        guard let local = try? localAddress(fd) else { return nil }
        var storage = sockaddr_storage()
        // SAFETY: storage is a local alive for the call; the shim writes at most a sockaddr_in6 into it.
        let r = unsafe CTernLinux_original_destination(fd, local.family == AF_INET6 ? 1 : 0, &storage)
        return r == 0 ? SocketAddress(storage: storage) : local
    }

    private static func socketName(_ fd: Int32, peer: Bool) throws(IOError) -> SocketAddress {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        // SAFETY: storage and len are locals alive for the call; len states storage's size.
        let r = unsafe withUnsafeMutablePointer(to: &storage) { p in
            unsafe p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                syscallResult { unsafe Int(peer ? getpeername(fd, sa, &len) : getsockname(fd, sa, &len)) }
            }
        }
        if r < 0 { throw IOError(peer ? "getpeername" : "getsockname", errno: Int32(-r)) }
        return SocketAddress(storage: storage)
    }

    /// A non-blocking pipe; returns (read end, write end).
    public static func pipe() -> (Int32, Int32)? {
        var fds: [Int32] = [-1, -1]
        // SAFETY: the array holds the two ints pipe2 writes.
        let r = unsafe fds.withUnsafeMutableBufferPointer { unsafe CTernLinux_pipe_nonblocking($0.baseAddress!) }
        return r < 0 ? nil : (fds[0], fds[1])
    }

    /// Asks for a pipe capacity (F_SETPIPE_SZ); returns the capacity in force afterwards.
    public static func setPipeCapacity(_ fd: Int32, _ bytes: Int) -> Int {
        let r = CTernLinux_pipe_set_capacity(fd, Int32(bytes))
        return r > 0 ? Int(r) : pipeCapacity(fd)
    }

    /// The capacity in bytes of a pipe (F_GETPIPE_SZ).
    public static func pipeCapacity(_ fd: Int32) -> Int {
        Int(CTernLinux_pipe_capacity(fd))
    }

    /// Peeks at a socket without taking bytes: >0 data waits, 0 end of stream, -EAGAIN nothing yet,
    /// another negative errno when the socket failed (ECONNRESET).
    public static func peek(_ fd: Int32) -> Int {
        var byte: UInt8 = 0
        // SAFETY: byte is a local one-byte buffer and the length passed is 1.
        return syscallResult { unsafe Glibc.recv(fd, &byte, 1, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT)) }
    }

    /// Reads and drops what a non-blocking socket holds now, up to 64 KiB (a connection about to be closed after
    /// a reply: unread bytes would make the close a reset).
    public static func discardReadable(_ fd: Int32) {
        // SAFETY: the scratch space lives for the closure and the length passed is its size.
        unsafe withUnsafeTemporaryAllocation(byteCount: 4096, alignment: 8) { scratch in
            for _ in 0..<16 {
                let n = syscallResult { unsafe Glibc.recv(fd, scratch.baseAddress, 4096, Int32(MSG_DONTWAIT)) }
                if n <= 0 { return }
            }
        }
    }

    /// Copies what the socket holds (up to `buffer.count` bytes) into `buffer` without consuming it (MSG_PEEK,
    /// non-blocking): the byte count, 0 at end of stream, or -errno (-EAGAIN: nothing yet).
    public static func peek(_ fd: Int32, into buffer: inout [UInt8]) -> Int {
        // SAFETY: the pointer is the array's own storage, valid for buffer.count bytes during the closure.
        unsafe buffer.withUnsafeMutableBytes { p in
            syscallResult { unsafe Glibc.recv(fd, p.baseAddress, p.count, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT)) }
        }
    }

    /// Whether this process can read the file at `path`.
    public static func isReadable(_ path: String) -> Bool {
        unsafe Glibc.access(path, R_OK) == 0
    }

    /// Sends what fits now on a non-blocking socket; the bytes sent or -errno.
    public static func sendNow(_ fd: Int32, _ bytes: Span<UInt8>) -> Int {
        // SAFETY: the pointer is valid for bytes.count bytes during the closure.
        unsafe bytes.withUnsafeBufferPointer { p in
            syscallResult { unsafe Glibc.send(fd, p.baseAddress, p.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL)) }
        }
    }

    /// Bytes waiting in a pipe (FIONREAD).
    public static func bytesReadable(_ fd: Int32) -> Int {
        var n: Int32 = 0
        // SAFETY: n is a local Int32, the size FIONREAD writes.
        let r = syscallResult { unsafe Int(ioctl(fd, UInt(FIONREAD), &n)) }
        return r < 0 ? 0 : Int(n)
    }

    /// Raises the open-file soft limit to the hard limit; returns (soft, hard) after the change.
    @discardableResult
    public static func raiseOpenFileLimit() -> (soft: UInt64, hard: UInt64) {
        var lim = rlimit()
        // SAFETY: lim is a local rlimit alive for both calls.
        guard unsafe getrlimit(RLIMIT_NOFILE_VALUE, &lim) == 0 else { return (0, 0) }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max
            unsafe _ = setrlimit(RLIMIT_NOFILE_VALUE, &lim)
            unsafe _ = getrlimit(RLIMIT_NOFILE_VALUE, &lim)
        }
        return (UInt64(lim.rlim_cur), UInt64(lim.rlim_max))
    }

    private static var RLIMIT_NOFILE_VALUE: __rlimit_resource_t {
        __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    }

    /// Makes malloc give every block of 64 KiB or more a mapping of its own, for the life of the process.
    ///
    /// The descriptor tables, buffer pools, slabs, I/O vector tables and metric shards are allocated at start for
    /// the most they may hold, on the promise that pages never touched cost no memory. That holds only for blocks
    /// malloc maps on their own: a block carved from one of its heaps is cleared by calloc, and its pages stay
    /// resident once written. glibc maps blocks from 128 KiB, but raises that threshold to the size of any mapped
    /// block freed (up to 32 MiB), and the io_uring probe at start frees a 4 MiB buffer pool: every table under
    /// 4 MiB then came from a heap (measured idle on io_uring: 180 KiB more anonymous memory with one reactor,
    /// 350 KiB with two).
    /// Setting the threshold turns the raise off; 64 KiB also maps the descriptor tables of a 20,000-descriptor
    /// limit. Nothing on the request path allocates: the mappings are made at start, on reloads and for large admin
    /// responses.
    public static func keepLargeAllocationsMapped() {
        _ = mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    }

    /// The current open-file soft limit.
    public static func openFileLimit() -> UInt64 {
        var lim = rlimit()
        // SAFETY: lim is a local rlimit alive for the call.
        guard unsafe getrlimit(RLIMIT_NOFILE_VALUE, &lim) == 0 else { return 1024 }
        return UInt64(lim.rlim_cur)
    }

    /// Reads a small file whole (proc and cgroup files); nil when it cannot be read.
    public static func readSmallFile(_ path: String, limit: Int = 4096) -> String? {
        let fd = syscallResult { unsafe Int(open(path, O_RDONLY | O_CLOEXEC)) }
        if fd < 0 { return nil }
        defer { close(Int32(fd)) }
        var bytes = [UInt8](repeating: 0, count: limit)
        var total = 0
        while total < limit {
            // SAFETY: the pointer covers bytes[total..<limit], inside the array alive for the call.
            let n = unsafe bytes.withUnsafeMutableBytes { buf in
                syscallResult { unsafe Glibc.read(Int32(fd), buf.baseAddress! + total, limit - total) }
            }
            if n <= 0 { break }
            total += n
        }
        return String(decoding: bytes[0..<total], as: UTF8.self)
    }

    /// Monotonic clock in nanoseconds.
    @inline(__always)
    public static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        // SAFETY: ts is a local timespec alive for the call.
        unsafe clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Writes all of `bytes` to a blocking fd (the log writer thread only). Returns false on error.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            // SAFETY: offset < bytes.count, so the pointer and length stay inside the caller's buffer.
            let n = syscallResult { unsafe Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    /// Writes a line to stderr directly (usage errors, before logging starts).
    public static func writeStderr(_ text: String) {
        var bytes = Array(text.utf8)
        bytes.append(10)
        _ = unsafe bytes.withUnsafeBytes { unsafe writeAll(2, $0) }
    }

    /// The path of an executable installed in the same directory as the running one.
    public static func siblingExecutable(named name: String) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        // SAFETY: readlink writes at most count - 1 bytes into the buffer, which outlives the call.
        let n = unsafe buffer.withUnsafeMutableBufferPointer { unsafe readlink("/proc/self/exe", $0.baseAddress!, $0.count - 1) }
        guard n > 0 else { return name }
        let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = path.lastIndex(of: "/") else { return name }
        return String(path[...slash]) + name
    }

    /// Replaces this process with `path` run with `arguments` (argv[0] is the path's last component).
    /// Returns only on failure, with the error.
    public static func exec(path: String, arguments: [String]) -> IOError {
        let argv0 = String(path.split(separator: "/").last ?? Substring(path))
        let all = [argv0] + arguments
        // SAFETY: strdup'd copies live until execv replaces the image, or are freed below on failure;
        // the array ends with the NULL execv requires.
        var cArgs: [UnsafeMutablePointer<CChar>?] = unsafe all.map { unsafe strdup($0) }
        unsafe cArgs.append(nil)
        let r = unsafe cArgs.withUnsafeMutableBufferPointer { unsafe execv(path, $0.baseAddress!) }
        let e = Glibc.errno
        for unsafe p in unsafe cArgs { unsafe free(p) }
        _ = r
        return IOError("execv", errno: e)
    }

    /// The CPUs in the affinity mask this process inherited (so `taskset -c 1 tern` stays on CPU 1).
    public static func affinityCPUs() -> [Int] {
        var cpus = [Int32](repeating: 0, count: 1024)
        // SAFETY: the buffer holds 1024 ints and that is the capacity passed.
        let n = unsafe cpus.withUnsafeMutableBufferPointer { unsafe CTernLinux_affinity_cpus($0.baseAddress!, 1024) }
        if n <= 0 { return [0] }
        return cpus[0..<Int(n)].map(Int.init)
    }

    /// Pins the calling thread to one CPU.
    public static func pinCurrentThread(to cpu: Int) -> Int32 {
        CTernLinux_pin_to_cpu(Int32(cpu))
    }

    /// Runs `body` at SCHED_IDLE priority and waits for it: it gets a CPU only when no other thread there wants
    /// one (a reactor waking preempts it at once), and a sliver of time when all are busy, so it is delayed
    /// rather than starved. For work beside the reactors that must never hold one of them up.
    ///
    /// `body` runs on a thread of its own ("tern-idle"), because a thread without CAP_SYS_NICE (a sidecar
    /// running as uid 1337) may lower its priority but not raise it back. On the calling thread when no
    /// thread can be started.
    public static func atIdlePriority<R>(_ body: () -> R) -> R {
        withoutActuallyEscaping(body) { body in
            let run = IdleRun(body)
            guard let thread = ReactorThread.start(name: "tern-idle", {
                _ = CTernLinux_set_thread_idle(1)
                run.result = run.body()
            }) else { return body() }
            thread.join()
            return run.result!
        }
    }

    /// The CPU count the process's cgroup CPU quota allows (rounded up), or nil when there is none.
    /// cgroup v2 keeps it in `cpu.max` ("QUOTA PERIOD" or "max PERIOD"); cgroup v1 in the cpu controller's
    /// `cpu.cfs_quota_us` (-1: none) and `cpu.cfs_period_us`. /proc/self/cgroup names the group's path.
    public static func cgroupCPUQuota() -> Int? {
        let lines = (readSmallFile("/proc/self/cgroup") ?? "").split(separator: "\n")
        for line in lines {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            let path = parts[2] == "/" ? "" : String(parts[2])
            if parts[0] == "0" && parts[1].isEmpty {
                for dir in ["/sys/fs/cgroup\(path)", "/sys/fs/cgroup/unified\(path)"] {
                    guard let text = readSmallFile(dir + "/cpu.max") else { continue }
                    let n = unsafe text.withCString { unsafe CTernLinux_parse_cpu_max($0) }
                    if n > 0 { return Int(n) }
                }
            } else if parts[1].split(separator: ",").contains("cpu") {
                for dir in ["/sys/fs/cgroup/cpu\(path)", "/sys/fs/cgroup/cpu,cpuacct\(path)"] {
                    guard let q = readSmallFile(dir + "/cpu.cfs_quota_us"), let p = readSmallFile(dir + "/cpu.cfs_period_us"),
                        let quota = Int(q.filter { !$0.isWhitespace }), let period = Int(p.filter { !$0.isWhitespace }),
                        quota > 0, period > 0
                    else { continue }
                    return max(1, (quota + period - 1) / period)
                }
            }
        }
        return nil
    }
}

/// The body `System.atIdlePriority` hands to its thread, and the result it hands back.
/// @unchecked Sendable: the caller waits in join for the thread, which orders both accesses.
private final class IdleRun<R>: @unchecked Sendable {
    let body: () -> R
    var result: R? = nil
    init(_ body: @escaping () -> R) { self.body = body }
}
