import Glibc

/// Reads the config argument: a file, or a directory whose `*.yaml` / `*.yml` entries (not hidden, not
/// recursing; Kubernetes ConfigMap volumes keep their data in `..data` symlinked entries, which are followed) are
/// read in name order. Paths are reported as reached from the argument (`dir/file.yaml`).
public enum ConfigFiles {
    public struct ReadError: Error, Sendable, Equatable {
        public var path: String
        public var message: String
    }

    /// Whether a directory entry named `name` is read as configuration: `*.yaml` or `*.yml`, not hidden. The
    /// file watcher asks the same, so a change it reloads for is one `read` sees.
    public static func isConfigurationEntry(_ name: String) -> Bool {
        !name.hasPrefix(".") && (name.hasSuffix(".yaml") || name.hasSuffix(".yml"))
    }

    /// (path, text) for each file, in order.
    public static func read(_ path: String) throws(ReadError) -> [(path: String, text: String)] {
        var st = stat()
        // SAFETY: `st` lives on this frame; the path is a NUL-terminated copy for the call.
        guard unsafe stat(path, &st) == 0 else { throw ReadError(path: path, message: errnoText()) }
        if (st.st_mode & S_IFMT) != S_IFDIR { return [(path, try readFile(path))] }
        var names: [String] = []
        // SAFETY: the DIR handle is used only until closedir below; each entry's name is copied before the next
        // readdir call invalidates it.
        guard let dir = unsafe opendir(path) else { throw ReadError(path: path, message: errnoText()) }
        while let entry = unsafe readdir(dir) {
            // SAFETY: `entry` is valid until the next readdir; d_name is NUL-terminated within its array.
            let name = unsafe withUnsafeBytes(of: entry.pointee.d_name) { raw in
                unsafe String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if isConfigurationEntry(name) { names.append(name) }
        }
        // SAFETY: closes the handle opened above, once.
        unsafe closedir(dir)
        let base = path.hasSuffix("/") ? path : path + "/"
        var out: [(path: String, text: String)] = []
        for name in names.sorted() {
            let p = base + name
            out.append((p, try readFile(p)))
        }
        return out
    }

    /// How long a file must have gone unmodified before it is taken as written whole.
    public static let settleNanos: UInt64 = 20_000_000
    /// How long `readFile` waits for a file to settle before refusing it.
    public static let settleLimitNanos: UInt64 = 1_000_000_000

    /// Reads a file whole, and only once its writer is done with it. A file rewritten in place (truncated,
    /// then written, perhaps in several writes) can be caught part-written, and its first part can parse as a
    /// valid configuration that lacks the rest. So the file's size and modification time are taken before and
    /// after reading, and the bytes are kept only when nothing moved and the file was last modified at least
    /// `settleNanos` ago; otherwise it is read again after a pause (`pause`, nanoseconds; tests inject it), for
    /// up to `settleLimitNanos` in all. Writing a new file and renaming it over the old one (as ConfigMaps
    /// and careful editors do) never shows a part-written file; a writer that pauses longer than
    /// `settleNanos` between two writes of one file still can.
    static func readFile(_ path: String, pause: (UInt64) -> Void = ConfigFiles.pauseNanos,
                         now clock: () -> UInt64 = ConfigFiles.realtimeNanos) throws(ReadError) -> String {
        var waited: UInt64 = 0
        while true {
            // SAFETY: the descriptor is closed before the next iteration or return.
            let fd = unsafe open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw ReadError(path: path, message: errnoText()) }
            let bytes: [UInt8], before: Stamp, after: Stamp
            do {
                (bytes, before, after) = try readAll(fd, path: path)
            } catch {
                close(fd)  // once: this path leaves the loop
                throw error
            }
            close(fd)
            let now = clock()
            let unchanged = before == after && UInt64(bytes.count) == after.size
            // A modification time ahead of the clock (a copied file, a clock step) cannot say how old the
            // file is: then only an unchanged read counts.
            let age = after.modified <= now ? now - after.modified : UInt64.max
            if unchanged && age >= settleNanos { return String(decoding: bytes, as: UTF8.self) }
            if waited >= settleLimitNanos {
                throw ReadError(path: path, message: "the file kept changing for \(settleLimitNanos / 1_000_000) ms while being read (being written?)")
            }
            let wait = unchanged ? settleNanos - age : 1_000_000
            pause(wait)
            waited += wait
        }
    }

    /// Size and modification time (nanoseconds since the epoch) of an open file.
    struct Stamp: Equatable {
        var size: UInt64
        var modified: UInt64
    }

    private static func stamp(_ fd: Int32, path: String) throws(ReadError) -> Stamp {
        var st = stat()
        // SAFETY: `st` lives on this frame.
        guard unsafe fstat(fd, &st) == 0 else { throw ReadError(path: path, message: errnoText()) }
        return Stamp(size: UInt64(max(0, st.st_size)), modified: nanos(st.st_mtim))
    }

    /// The whole file from its start, with its stamp before and after reading.
    private static func readAll(_ fd: Int32, path: String) throws(ReadError) -> ([UInt8], Stamp, Stamp) {
        let before = try stamp(fd, path: path)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(before.size))
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            // SAFETY: `chunk` is valid for its count during the call; read writes at most that many bytes.
            let n = unsafe chunk.withUnsafeMutableBytes { unsafe Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ReadError(path: path, message: errnoText())
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return (bytes, before, try stamp(fd, path: path))
    }

    /// The wall clock in nanoseconds since the epoch (file modification times are on it); tests inject their own.
    static func realtimeNanos() -> UInt64 {
        var ts = timespec()
        // SAFETY: `ts` lives on this frame.
        unsafe clock_gettime(CLOCK_REALTIME, &ts)
        return nanos(ts)
    }

    /// Nanoseconds since the epoch (a time before it counts as the epoch).
    private static func nanos(_ t: timespec) -> UInt64 {
        UInt64(max(0, t.tv_sec)) * 1_000_000_000 + UInt64(max(0, t.tv_nsec))
    }

    static func pauseNanos(_ nanos: UInt64) {
        var ts = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
        // SAFETY: `ts` lives on this frame; an early wake-up (a signal) only shortens the pause.
        unsafe _ = nanosleep(&ts, nil)
    }

    /// An environment variable's value ($POD_NAMESPACE for the default namespace), nil when unset.
    public static func environment(_ name: String) -> String? {
        // SAFETY: getenv's result is copied at once; nothing in the process sets variables concurrently.
        guard let p = unsafe getenv(name) else { return nil }
        return unsafe String(cString: p)
    }

    private static func errnoText() -> String {
        // SAFETY: strerror returns a static or thread-local NUL-terminated string, copied at once.
        unsafe String(cString: strerror(errno))
    }
}
