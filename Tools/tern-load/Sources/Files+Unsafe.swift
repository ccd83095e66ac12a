import Glibc
import TernIO

/// The few file and terminal calls tern-load makes outside the reactors (flags, reports, the progress line).
enum Files {
    /// Reads a whole file (`--body-file`); the errno text when it cannot.
    static func read(_ path: String) -> Result<[UInt8], FileError> {
        guard let f = unsafe fopen(path, "rb") else { return .failure(FileError(path: path, errno: errno)) }
        defer { unsafe _ = fclose(f) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            // SAFETY: fread writes at most chunk.count bytes into the array, which outlives the call.
            let n = unsafe chunk.withUnsafeMutableBytes { unsafe fread($0.baseAddress, 1, $0.count, f) }
            out += chunk[0..<n]
            if n < chunk.count {
                if unsafe ferror(f) != 0 { return .failure(FileError(path: path, errno: errno)) }
                return .success(out)
            }
        }
    }

    /// Writes (replaces) a file with `text`.
    static func write(_ path: String, _ text: String) -> FileError? {
        guard let f = unsafe fopen(path, "wb") else { return FileError(path: path, errno: errno) }
        let bytes = Array(text.utf8)
        // SAFETY: the array outlives the call and its count is passed.
        let n = unsafe bytes.withUnsafeBytes { unsafe fwrite($0.baseAddress, 1, $0.count, f) }
        let closed = unsafe fclose(f)
        return n == bytes.count && closed == 0 ? nil : FileError(path: path, errno: errno)
    }

    /// Writes to stdout without a newline added and flushes (the report, or the JSON document).
    static func printStdout(_ text: String) {
        let bytes = Array(text.utf8)
        // SAFETY: the array outlives the call and its count is passed.
        _ = unsafe bytes.withUnsafeBytes { unsafe System.writeAll(1, $0) }
    }

    /// Writes to stderr as is (the progress line rewrites itself with a carriage return).
    static func printStderr(_ text: String) {
        let bytes = Array(text.utf8)
        // SAFETY: as above.
        _ = unsafe bytes.withUnsafeBytes { unsafe System.writeAll(2, $0) }
    }

    /// Asks the kernel to wake this thread within `nanos` of a timeout instead of its default 50 µs slack
    /// (epoll_pwait2 rounds a wake-up up by the slack: a send due at t would leave at t + 50 µs). Best effort:
    /// false when the kernel refuses.
    @discardableResult
    static func setTimerSlack(nanos: UInt64) -> Bool {
        write("/proc/thread-self/timerslack_ns", "\(nanos)\n") == nil
    }

    static var stderrIsTerminal: Bool { isatty(2) == 1 }

    /// Seconds since the epoch (the HdrHistogram log's StartTime).
    static func wallClockSeconds() -> Double {
        var ts = timespec()
        // SAFETY: ts is a local timespec alive for the call.
        unsafe clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

struct FileError: Error, CustomStringConvertible {
    var path: String
    var errno: Int32
    var description: String {
        // SAFETY: strerror returns a NUL-terminated static or thread-local string, copied at once.
        let message = unsafe strerror(errno).map { unsafe String(cString: $0) } ?? "error \(errno)"
        return "\(path): \(message)"
    }
}
