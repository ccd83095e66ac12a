import Glibc

/// Reads the config argument: a file, or a directory whose `*.yaml` / `*.yml` entries (not hidden, not
/// recursing; Kubernetes ConfigMap volumes keep their data in `..data` symlinked entries, which are followed) are
/// read in name order. Paths are reported as reached from the argument (`dir/file.yaml`).
public enum ConfigFiles {
    public struct ReadError: Error, Sendable, Equatable {
        public var path: String
        public var message: String
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
            if name.hasPrefix(".") { continue }
            if name.hasSuffix(".yaml") || name.hasSuffix(".yml") { names.append(name) }
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

    private static func readFile(_ path: String) throws(ReadError) -> String {
        // SAFETY: the FILE handle is closed before returning; fread writes at most the chunk's count.
        guard let f = unsafe fopen(path, "rb") else { throw ReadError(path: path, message: errnoText()) }
        // SAFETY: closes the handle opened above, once.
        defer { unsafe fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            // SAFETY: `chunk` is valid for its count during the call; fread writes at most that many bytes.
            let n = unsafe chunk.withUnsafeMutableBytes { unsafe fread($0.baseAddress, 1, $0.count, f) }
            if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
            if n < chunk.count {
                // SAFETY: `f` is open until the deferred fclose.
                if unsafe ferror(f) != 0 { throw ReadError(path: path, message: errnoText()) }
                break
            }
        }
        return String(decoding: bytes, as: UTF8.self)
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
