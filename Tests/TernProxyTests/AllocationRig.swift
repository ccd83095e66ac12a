// What the allocation tests of the whole proxy share (ProxyAllocationTests, HTTP2ProxyAllocationTests): the handler
// that samples the reactor thread's malloc count after every event, loopback sockets, and an HTTP/1.1 upstream
// on a thread of its own that answers every request head with a 100-byte response.
import Glibc
import Synchronization
import TernIO
import TernTestSupport

/// Runs the engine's handler and, after every event it handles, stores how many mallocs the reactor thread
/// has made so far.
final class CountingHandler<Inner: ReactorHandler>: ReactorHandler {
    typealias Backend = Inner.Backend
    let inner: Inner
    let counter: MallocCounter?
    let mallocs = Atomic<UInt>(0)

    init(_ inner: Inner, counter: MallocCounter?) {
        self.inner = inner
        self.counter = counter
    }

    private func sample() { if let counter { mallocs.store(counter.count(), ordering: .releasing) } }
    func iteration(_ reactor: Reactor<Backend>) {
        inner.iteration(reactor)
        sample()
    }
    func handle(_ completion: Completion, _ reactor: Reactor<Backend>) {
        inner.handle(completion, reactor)
        sample()
    }
    func timerFired(_ token: Token, _ reactor: Reactor<Backend>) {
        inner.timerFired(token, reactor)
        sample()
    }
    var finished: Bool { inner.finished }
}

enum RigSockets {
    static func listener() throws -> (Int32, SocketAddress) {
        let l = try System.listen(on: SocketAddress(parsing: "127.0.0.1:0")!)
        return (l, try System.localAddress(l))
    }

    static func connect(_ address: SocketAddress) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var s = address.storage
        _ = withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, address.length) } }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }
}

/// The upstream's 100-byte body, and its responses.
let testBody = String(repeating: "x", count: 100)
let upstreamResponse = Array("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n\(testBody)".utf8)
/// A gRPC response as an HTTP/1.1 upstream would send it: chunked, its status in the trailer section.
let grpcChunkedResponse = Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/grpc\r\n\r\n64\r\n\(testBody)\r\n0\r\ngrpc-status: 0\r\n\r\n".utf8)
let unavailableResponse = Array("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n\(testBody)".utf8)

/// HTTP/1.1 upstreams, each on a thread of its own.
enum TestUpstream {
    /// An upstream on `ul`: accepts connections one after the other until its listener is shut down, and answers
    /// each complete request with the 100-byte `response` (`failEveryOther`: every other one 503).
    static func http1(_ ul: Int32, name: String, failEveryOther: Bool, concurrent: Bool = false,
                      response: [UInt8] = upstreamResponse) -> ReactorThread {
        _ = fcntl(ul, F_SETFL, fcntl(ul, F_GETFL) & ~O_NONBLOCK)
        return ReactorThread.start(name: name) {
            var served: [ReactorThread] = []
            var answered = 0  // over every connection (a retry comes on a new one)
            while true {
                let fd = accept(ul, nil, nil)
                if fd < 0 {
                    if errno == EINTR { continue }
                    break
                }
                // `concurrent` (the mirror's upstream): each connection on a thread of its own, so a second
                // connection Tern opens while the first is busy is served too.
                if concurrent {
                    if let t = ReactorThread.start(name: name, {
                        var own = 0
                        serve(fd, failEveryOther: failEveryOther, response: response, answered: &own)
                    }) { served.append(t) }
                } else {
                    serve(fd, failEveryOther: failEveryOther, response: response, answered: &answered)
                }
            }
            served.forEach { $0.join() }
        }!
    }

    /// Answers each complete request (a head, and the body its Content-Length announces) on `fd` until the peer
    /// closes it.
    static func serve(_ fd: Int32, failEveryOther: Bool, response ok: [UInt8] = upstreamResponse, answered: inout Int) {
        var buf = [UInt8](repeating: 0, count: 65536)
        var have = 0
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress! + have, $0.count - have) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            have += n
            var start = 0
            var i = 3
            while i < have {
                if buf[i] == 10 && buf[i - 1] == 13 && buf[i - 2] == 10 && buf[i - 3] == 13 {
                    let end = i + 1 + contentLength(buf[start...i])
                    guard end <= have else { break }  // the rest of the body comes with the next read
                    answered += 1
                    let response = failEveryOther && answered % 2 == 1 ? unavailableResponse : ok
                    _ = response.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    start = end
                    i = start + 3
                } else {
                    i += 1
                }
            }
            if start > 0 {
                buf.withUnsafeMutableBytes { _ = memmove($0.baseAddress!, $0.baseAddress! + start, have - start) }
                have -= start
            }
        }
        close(fd)
    }

    /// The value of a head's Content-Length field (0 without one).
    static func contentLength(_ head: ArraySlice<UInt8>) -> Int {
        let name = Array("\r\ncontent-length:".utf8)
        var i = head.startIndex
        while i + name.count <= head.endIndex {
            if zip(head[i..<(i + name.count)], name).allSatisfy({ ($0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0) == $1 }) {
                var value = 0, j = i + name.count
                while j < head.endIndex && head[j] == 0x20 { j += 1 }
                while j < head.endIndex, head[j] >= 0x30, head[j] <= 0x39 {
                    value = value * 10 + Int(head[j] - 0x30)
                    j += 1
                }
                return value
            }
            i += 1
        }
        return 0
    }
}
