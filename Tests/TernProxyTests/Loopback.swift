// Loopback sockets for the tests that run a handler in a reactor loop on its own thread and play its clients and
// upstreams from the test thread: every wait is bounded by a deadline.
import Glibc
import Testing
import TernIO

enum Loopback {
    /// Five seconds from now (monotonic nanoseconds): how long any one wait of these tests may take.
    static var deadline: UInt64 { System.monotonicNanos() + 5_000_000_000 }

    /// Polls `condition` until it holds (true) or five seconds pass (false).
    static func eventually(_ condition: () -> Bool) -> Bool {
        let end = deadline
        while !condition() {
            if System.monotonicNanos() >= end { return false }
            usleep(1_000)
        }
        return true
    }

    /// A listening socket on 127.0.0.1 and a free port.
    static func listener() throws -> (fd: Int32, address: SocketAddress) {
        let fd = try System.listen(on: try #require(SocketAddress(parsing: "127.0.0.1:0")), reusePort: false)
        return (fd, try System.localAddress(fd))
    }

    /// The next connection on `listener` (waiting up to five seconds).
    static func accept(_ listener: Int32) throws -> BlockingSocket {
        #expect(System.poll(listener, events: Int16(POLLIN), timeoutMillis: 5_000), "nothing to accept")
        return BlockingSocket(adopting: try #require(System.accept(listener)))
    }

    /// Exactly `count` bytes from `socket` (before the deadline), or fewer when it closed.
    static func receive(_ socket: borrowing BlockingSocket, count: Int) throws -> [UInt8] {
        let end = deadline
        var got: [UInt8] = []
        while got.count < count {
            let piece = try socket.receive(max: count - got.count, deadline: end)
            if piece.isEmpty { break }
            got += piece
        }
        return got
    }
}
