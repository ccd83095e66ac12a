import Glibc

/// Notices changes to a configuration file or directory with inotify, without a thread: the owner polls
/// `changed()` (one non-blocking read) from its own loop. The directory is watched rather than the file, so
/// every way a file gets replaced is seen: written in place (close after write), written elsewhere and
/// renamed over it (as editors do), or a Kubernetes ConfigMap volume swapping its `..data` symlink.
public final class FileWatcher {
    private let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 4096)

    /// Watches `path` (a file: its directory; a directory: itself). Nil when inotify is unavailable.
    public init?(path: String) {
        var isDirectory = false
        var st = stat()
        if unsafe stat(path, &st) == 0 { isDirectory = (st.st_mode & S_IFMT) == S_IFDIR }
        let directory: String
        if isDirectory {
            directory = path
        } else if let slash = path.lastIndex(of: "/") {
            directory = slash == path.startIndex ? "/" : String(path[..<slash])
        } else {
            directory = "."
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

    /// Whether anything changed in the watched directory since the last call (events are drained).
    public func changed() -> Bool {
        var any = false
        while true {
            // SAFETY: the read writes at most buffer.count bytes into the array's own storage.
            let n = unsafe buffer.withUnsafeMutableBytes { unsafe Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return any }
            any = true
        }
    }
}
