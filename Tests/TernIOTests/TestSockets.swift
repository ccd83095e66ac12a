// Blocking loopback sockets for driving the backends from tests.
import CTernLinux
import Glibc
import TernIO
import TernTestSupport

enum TestSockets {
    /// A listening socket on 127.0.0.1 with a kernel-chosen port.
    static func listener() throws -> (fd: Int32, address: SocketAddress) {
        let fd = try System.listen(on: SocketAddress(parsing: "127.0.0.1:0")!)
        return (fd, try System.localAddress(fd))
    }

    /// A blocking client socket connected to `address`.
    static func connect(_ address: SocketAddress) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var storage = address.storage
        let r = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, address.length) }
        }
        precondition(r == 0, "connect failed: \(errno)")
        return fd
    }

    /// A connected pair: (accepted server side, non-blocking; client side, blocking).
    static func pair() throws -> (server: Int32, client: Int32) {
        let (l, address) = try listener()
        defer { close(l) }
        let client = connect(address)
        let server = CTernLinux_accept_nonblocking(l)
        precondition(server >= 0)
        return (server, client)
    }

    static func write(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, bytes.count - off) }
            precondition(n > 0)
            off += n
        }
    }

    /// Reads exactly `count` bytes (blocking socket).
    static func read(_ fd: Int32, count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var off = 0
        while off < count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + off, count - off) }
            if n <= 0 { break }
            off += n
        }
        return Array(out[0..<off])
    }
}

/// Runs a backend's loop until `until` holds or five seconds pass, collecting every completion.
final class Harness<B: IOBackend> {
    let backend: B
    var seen: [Completion] = []

    init(bufferCount: Int = 16) throws {
        var s = BackendSettings()
        s.ringDepth = 64
        s.bufferCount = bufferCount
        s.bufferSize = 4096
        backend = try B(settings: s)
    }

    @discardableResult
    func run(timeoutSeconds: UInt64 = 5, until: ([Completion]) -> Bool) throws -> [Completion] {
        let deadline = System.monotonicNanos() + timeoutSeconds * 1_000_000_000
        while !until(seen) {
            let now = System.monotonicNanos()
            if now >= deadline { break }
            let n = try backend.wait(timeoutNanos: min(deadline - now, 50_000_000))
            for i in 0..<n { seen.append(backend.completion(at: i)) }
        }
        return seen
    }

    func completions(for token: Token) -> [Completion] { seen.filter { $0.token == token } }

    /// Waits for the first completion of `token`.
    func first(_ token: Token) throws -> Completion? {
        try run { $0.contains { $0.token == token } }
        return completions(for: token).first
    }
}

/// The backends to run each reactor test on. io_uring tests are left out (with a note) where a ring cannot be set
/// up, except where CI requires io_uring (TERN_REQUIRE_IO_URING=1): there they run, and a ring that cannot be set
/// up fails them instead of turning them into skips.
enum Backends {
    static var uringAvailable: Bool {
        TestRequirement.isSet("TERN_REQUIRE_IO_URING") || (try? URingBackend(settings: BackendSettings())) != nil
    }
}
