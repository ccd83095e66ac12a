// Child processes for the command line (`tern iptables` runs iptables-restore and iptables-save): spawned with
// posix_spawn, fed and drained through pipes in one poll loop (so neither side blocks on a full pipe), and never
// waited for without a deadline. Not for reactor threads: it blocks the calling thread until the child is done.
internal import CTernLinux
import Glibc

extension System {
    /// What a finished child left: its exit status (128 + the signal's number when a signal ended it, as shells
    /// report it) and everything it wrote to stdout and stderr.
    public struct ProcessResult: Sendable {
        public var status: Int32
        public var output: [UInt8]
        public var errors: [UInt8]
    }

    /// The first executable file called `name` in $PATH's directories, then the sbin and bin directories (which
    /// `sudo` and cron often leave out of PATH, and where iptables lives); nil when there is none. A name with a
    /// slash is checked as it is.
    public static func findExecutable(_ name: String) -> String? {
        if name.contains("/") { return unsafe access(name, X_OK) == 0 ? name : nil }
        // SAFETY: getenv's string stays valid until the environment changes; it is copied into a String at once.
        let path = unsafe getenv("PATH").map { unsafe String(cString: $0) } ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        for directory in directories where !directory.isEmpty {
            let candidate = directory + "/" + name
            var st = stat()
            // SAFETY: `st` lives on this frame.
            if unsafe stat(candidate, &st) == 0, st.st_mode & S_IFMT == S_IFREG, unsafe access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        return nil
    }

    /// Runs the executable at `path` with `arguments` (argv[0] is `path`) and this process's environment, writes
    /// `input` to its stdin then closes it, and collects its stdout and stderr. A child still running
    /// `timeoutMillis` after the start is killed (SIGKILL) and reaped, and ETIMEDOUT thrown. SIGPIPE must be
    /// ignored (`Signals.ignoreBrokenPipe()`): a child that exits without reading its input would raise it.
    public static func run(_ path: String, _ arguments: [String], input: [UInt8] = [],
                           timeoutMillis: Int = 30_000) throws(IOError) -> ProcessResult {
        let stdin = try makePipe()
        let stdout = try makePipe()
        let stderr = try makePipe()
        var pid: pid_t = 0
        var actions = unsafe posix_spawn_file_actions_t()
        // SAFETY: `actions` lives on this frame and is destroyed below, after posix_spawn has used it.
        _ = unsafe posix_spawn_file_actions_init(&actions)
        // The child's ends become its 0, 1 and 2 (dup2 clears close-on-exec on the copies); every pipe end was
        // made close-on-exec, so nothing else of ours reaches the child.
        _ = unsafe posix_spawn_file_actions_adddup2(&actions, stdin.read, 0)
        _ = unsafe posix_spawn_file_actions_adddup2(&actions, stdout.write, 1)
        _ = unsafe posix_spawn_file_actions_adddup2(&actions, stderr.write, 2)
        // SAFETY: strdup'd copies live until the free below, after posix_spawn has copied them into the child;
        // the array ends with the NULL posix_spawn requires. `environ` is the process's own environment block.
        var argv: [UnsafeMutablePointer<CChar>?] = unsafe ([path] + arguments).map { unsafe strdup($0) }
        unsafe argv.append(nil)
        let spawned = unsafe argv.withUnsafeMutableBufferPointer { unsafe posix_spawn(&pid, path, &actions, nil, $0.baseAddress!, environ) }
        for unsafe p in unsafe argv { unsafe free(p) }
        _ = unsafe posix_spawn_file_actions_destroy(&actions)
        close(stdin.read)
        close(stdout.write)
        close(stderr.write)
        guard spawned == 0 else {
            close(stdin.write)
            close(stdout.read)
            close(stderr.read)
            throw IOError("posix_spawn \(path)", errno: spawned)
        }
        var result = ProcessResult(status: 0, output: [], errors: [])
        let deadline = monotonicNanos() + UInt64(timeoutMillis) * 1_000_000
        let timedOut = drain(input: input, to: stdin.write, stdout.read, stderr.read, into: &result, until: deadline)
        if timedOut { _ = kill(pid, SIGKILL) }
        var status: Int32 = 0
        // SAFETY: `status` lives on this frame. Both output pipes are at end of file (or the child was killed),
        // so the child has exited or is about to: this wait is short.
        _ = syscallResult { unsafe Int(waitpid(pid, &status, 0)) }
        if timedOut { throw IOError("\(path) (killed after \(timeoutMillis) ms)", errno: ETIMEDOUT) }
        // WIFEXITED and WEXITSTATUS are macros: the low 7 bits hold the signal, zero for a normal exit whose
        // status is the next byte.
        let signal = status & 0x7F
        result.status = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
        return result
    }

    /// A close-on-exec pipe.
    private static func makePipe() throws(IOError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        // SAFETY: `fds` holds the two ints pipe2 writes and outlives the call.
        let r = unsafe fds.withUnsafeMutableBufferPointer { unsafe CTernLinux_pipe_cloexec($0.baseAddress!) }
        if r < 0 { throw IOError("pipe2", errno: -r) }
        return (fds[0], fds[1])
    }

    /// Writes `input` to `inputFD` and reads `outputFD` and `errorFD` to their ends, whichever is ready, closing
    /// each of the three when done with it. Returns true when `deadline` (monotonic ns) came first.
    private static func drain(input: [UInt8], to inputFD: Int32, _ outputFD: Int32, _ errorFD: Int32,
                              into result: inout ProcessResult, until deadline: UInt64) -> Bool {
        var fds = [pollfd(fd: inputFD, events: Int16(POLLOUT), revents: 0),
                   pollfd(fd: outputFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: errorFD, events: Int16(POLLIN), revents: 0)]
        var written = 0
        if input.isEmpty {
            close(inputFD)
            fds[0].fd = -1  // poll ignores negative descriptors
        } else {
            // Non-blocking, so that a write larger than the pipe's free space cannot stall the loop while the
            // child waits for us to read its output.
            _ = fcntl(inputFD, F_SETFL, O_NONBLOCK)
        }
        var chunk = [UInt8](repeating: 0, count: 65_536)
        defer {
            for p in fds where p.fd >= 0 { close(p.fd) }
        }
        while fds[1].fd >= 0 || fds[2].fd >= 0 {
            let now = monotonicNanos()
            if now >= deadline { return true }
            let wait = Int32(min((deadline - now) / 1_000_000 + 1, 1_000))
            // SAFETY: `fds` holds the three pollfd entries whose count is passed, alive for the call.
            let ready = syscallResult { unsafe fds.withUnsafeMutableBufferPointer { unsafe Int(Glibc.poll($0.baseAddress!, 3, wait)) } }
            if ready <= 0 { continue }
            if fds[0].fd >= 0, fds[0].revents != 0 {
                // SAFETY: written < input.count, so the pointer and length stay inside `input`, alive for the call.
                let n = unsafe input.withUnsafeBytes { buf in
                    syscallResult { unsafe Glibc.write(inputFD, buf.baseAddress! + written, buf.count - written) }
                }
                if n > 0 { written += n }
                // Done, or the child closed its end (EPIPE): either way it gets no more.
                if (n < 0 && n != -Int(EAGAIN)) || written == input.count {
                    close(inputFD)
                    fds[0].fd = -1
                }
            }
            for k in 1...2 where fds[k].fd >= 0 && fds[k].revents != 0 {
                let fd = fds[k].fd
                // SAFETY: the read fills at most chunk.count bytes of `chunk`, alive for the call.
                let n = unsafe chunk.withUnsafeMutableBytes { buf in syscallResult { unsafe Glibc.read(fd, buf.baseAddress!, buf.count) } }
                if n <= 0 {
                    close(fd)
                    fds[k].fd = -1
                } else if k == 1 {
                    result.output += chunk[0..<n]
                } else {
                    result.errors += chunk[0..<n]
                }
            }
        }
        return false
    }
}
