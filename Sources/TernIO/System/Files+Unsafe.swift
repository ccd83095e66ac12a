// Whole-file reads and writes for the command line (`tern cert`): small files (certificates, keys) read at once,
// and files written so that a reader never sees one half-written and a key is never readable by others, even
// for an instant.
import Glibc

extension System {
    /// Reads a file whole; refuses one larger than `limit` bytes (EFBIG).
    public static func readFile(_ path: String, limit: Int = 1 << 20) throws(IOError) -> [UInt8] {
        let fd = Int32(try syscallOrThrow("open") { unsafe Int(open(path, O_RDONLY | O_CLOEXEC)) })
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: limit + 1)
        var total = 0
        while total <= limit {
            // SAFETY: the pointer covers bytes[total...limit], inside the array alive for the call.
            let n = unsafe bytes.withUnsafeMutableBytes { buf in
                syscallResult { unsafe Glibc.read(fd, buf.baseAddress! + total, limit + 1 - total) }
            }
            if n < 0 { throw IOError("read", errno: Int32(-n)) }
            if n == 0 { break }
            total += n
        }
        if total > limit { throw IOError("read", errno: EFBIG) }
        return Array(bytes[0..<total])
    }

    /// Whether something exists at `path` (a broken symbolic link counts: it would still be replaced).
    public static func pathExists(_ path: String) -> Bool {
        var st = stat()
        // SAFETY: `st` lives on this frame.
        return unsafe lstat(path, &st) == 0
    }

    /// Creates `path` and any missing parents with `mode` (an existing directory is fine).
    public static func makeDirectories(_ path: String, mode: UInt32) throws(IOError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/") {
            prefix += part
            if unsafe mkdir(prefix, mode_t(mode)) != 0 {
                let e = Glibc.errno
                var st = stat()
                // SAFETY: `st` lives on this frame.
                guard e == EEXIST, unsafe stat(prefix, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
                    throw IOError("mkdir", errno: e == EEXIST ? ENOTDIR : e)
                }
            }
            prefix += "/"
        }
    }

    /// Writes `bytes` as the file `path`: into a new file in the same directory, created with `mode` (so a key
    /// is never readable by others, not even between creation and a chmod), flushed to disk, then moved into
    /// place in one step. With `replace` false an existing file is left alone and EEXIST thrown.
    public static func writeFile(_ path: String, _ bytes: [UInt8], mode: UInt32, replace: Bool) throws(IOError) {
        let temporary = path + ".tmp-\(getpid())"
        let fd = Int32(try syscallOrThrow("open") {
            unsafe Int(open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(mode)))
        })
        do throws(IOError) {
            defer { close(fd) }
            var offset = 0
            while offset < bytes.count {
                // SAFETY: offset < bytes.count, so the pointer and length stay inside the array alive for the call.
                let n = unsafe bytes.withUnsafeBytes { buf in
                    syscallResult { unsafe Glibc.write(fd, buf.baseAddress! + offset, buf.count - offset) }
                }
                if n < 0 { throw IOError("write", errno: Int32(-n)) }
                offset += n
            }
            _ = try syscallOrThrow("fsync") { Int(fsync(fd)) }
        } catch {
            unsafe unlink(temporary)
            throw error
        }
        do throws(IOError) {
            if replace {
                _ = try syscallOrThrow("rename") { unsafe Int(rename(temporary, path)) }
            } else {
                // link() fails with EEXIST rather than replacing, atomically.
                _ = try syscallOrThrow("link") { unsafe Int(link(temporary, path)) }
                unsafe unlink(temporary)
            }
        } catch {
            unsafe unlink(temporary)
            throw error
        }
    }
}
