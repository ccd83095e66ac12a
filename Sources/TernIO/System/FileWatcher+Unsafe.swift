import Glibc

/// Notices changes to a configuration file or directory with inotify, without a thread: the owner polls
/// `changed()` (one non-blocking read) from its own loop. The directory is watched rather than the file, so
/// every way a file gets replaced is seen: written in place (close after write), written elsewhere and
/// renamed over it (as editors do), or a Kubernetes ConfigMap volume swapping its `..data` symlink.
///
/// Only changes to names that can be configuration count: for a watched file, that file's name; for a watched
/// directory, the entries its owner reads (`directoryEntries`: `ConfigFiles.isConfigurationEntry`); and in
/// both, ConfigMap's `..`-prefixed entries and events on the directory itself. Anything else in the
/// directory (an editor's swap file, Tern's own log written next to its configuration) is ignored: each of
/// a log's lines used to set off a reload, whose own log line set off the next.
public final class FileWatcher {
    private let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 4096)
    /// The file's name when a file is watched; nil when a directory is.
    private let fileName: String?
    /// For a watched directory: whether a change to an entry of this name counts.
    private let directoryEntries: (String) -> Bool

    /// Watches `path` (a file: its directory; a directory: itself, counting changes to the entries
    /// `directoryEntries` accepts). Nil when inotify is unavailable.
    public init?(path: String, directoryEntries: @escaping (String) -> Bool) {
        self.directoryEntries = directoryEntries
        var isDirectory = false
        var st = stat()
        if unsafe stat(path, &st) == 0 { isDirectory = (st.st_mode & S_IFMT) == S_IFDIR }
        let directory: String
        if isDirectory {
            directory = path
            fileName = nil
        } else if let slash = path.lastIndex(of: "/") {
            directory = slash == path.startIndex ? "/" : String(path[..<slash])
            fileName = String(path[path.index(after: slash)...])
        } else {
            directory = "."
            fileName = path
        }
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0 { return nil }
        // IN_MODIFY too: every write of a file being rewritten in place counts as a change, so a debounce
        // measured from the last change never reads it half-written (or truncated, which parses as empty).
        let mask = UInt32(IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB
                          | IN_DELETE_SELF | IN_MOVE_SELF)
        // SAFETY: the path string is bridged to a C string alive for the call.
        if unsafe inotify_add_watch(fd, directory, mask) < 0 {
            System.close(fd)
            return nil
        }
    }

    deinit { System.close(fd) }

    /// Whether anything that can be configuration changed since the last call (events are drained).
    public func changed() -> Bool {
        var any = false
        while true {
            // SAFETY: the read writes at most buffer.count bytes into the array's own storage.
            let n = unsafe buffer.withUnsafeMutableBytes { unsafe Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return any }
            // inotify_event records: wd, mask, cookie, len (4 bytes each), then len bytes of NUL-padded name.
            var at = 0
            while at + 16 <= n {
                // SAFETY: at + 16 <= n <= buffer.count, so the 4 bytes at at + 12 are inside the array.
                let length = unsafe buffer.withUnsafeBytes { unsafe Int($0.loadUnaligned(fromByteOffset: at + 12, as: UInt32.self)) }
                let nameBytes = buffer[(at + 16)..<min(n, at + 16 + length)].prefix { $0 != 0 }
                if !any && counts(name: String(decoding: nameBytes, as: UTF8.self)) { any = true }
                at += 16 + length
            }
        }
    }

    /// Whether a change to `name` (in the watched directory; "" for the directory itself or a queue
    /// overflow) can change the configuration.
    func counts(name: String) -> Bool {
        if name.isEmpty || name.hasPrefix("..") { return true }
        if let fileName { return name == fileName }
        return directoryEntries(name)
    }
}
