// tern-load over HTTP/2 (--h2): one client HTTP2Session (TernHTTP, over nghttp2) per connection, whose frames are
// gathered into a buffer allocated once per connection (a send names it until it completes). The connection's
// streams are the requests of its lanes (LoadClient). Every raw pointer of tern-load's HTTP/2 is in this file.
import Glibc
import TernHTTP
import TernIO
import TernTLS

@safe final class H2LoadConnection {
    let session: HTTP2Session
    /// What the session has to send, gathered: [sentCount, length) not yet on the wire.
    private let out: UnsafeMutableRawPointer
    static let capacity = 64 * 1024
    private(set) var length = 0
    private(set) var sentCount = 0
    /// Output nghttp2 gave that did not fit the buffer (a very large head), sent after what is there.
    private var carry: [UInt8] = []
    /// The server said GOAWAY (or the connection is lost): no new stream goes on this connection.
    var goingAway = false
    /// Its events are being walked (LoadClient.h2Events): a flush inside leaves new ones to that walk.
    var inEvents = false
    /// The request body every stream sends, and how far each stream with a body still open got.
    private let body: [UInt8]
    private var uploads: [(stream: Int32, sent: Int)] = []

    init(body: [UInt8], streams: Int) throws(HTTP2SessionError) {
        self.body = body
        var settings = HTTP2Session.Settings()
        // Responses are consumed as they arrive: large windows, so that flow control never paces the load
        // (h2load's defaults are larger still).
        settings.initialStreamWindow = 1 << 20
        settings.connectionWindow = 16 << 20
        session = try HTTP2Session(role: .client, settings: settings)
        // SAFETY: owned until deinit; every access below stays within [0, capacity).
        unsafe out = malloc(Self.capacity)!
        uploads.reserveCapacity(streams)
        unsafe session.bodySource = { [unowned self] stream, buffer in unsafe self.nextBody(stream, buffer) }
    }

    /// Submits the head `addField` built (after `session.beginHead()`): its stream, nil when nghttp2 refused it.
    func submit() -> Int32? {
        guard let id = session.submitRequest(hasBody: !body.isEmpty) else { return nil }
        if !body.isEmpty { uploads.append((id, 0)) }
        return id
    }

    /// Stream `stream` ended or was reset: its body is no longer asked for.
    func forget(_ stream: Int32) {
        if let i = uploads.firstIndex(where: { $0.stream == stream }) { uploads.remove(at: i) }
    }

    private func nextBody(_ stream: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> HTTP2BodyRead {
        guard let i = uploads.firstIndex(where: { $0.stream == stream }) else { return .bytes(0, end: true) }
        let from = uploads[i].sent
        let n = min(buffer.count, body.count - from)
        unsafe body.withUnsafeBytes { unsafe buffer.baseAddress!.copyMemory(from: $0.baseAddress! + from, byteCount: n) }
        uploads[i].sent += n
        let end = uploads[i].sent == body.count
        if end { uploads.remove(at: i) }
        return .bytes(n, end: end)
    }

    deinit { unsafe free(out) }

    /// Whether gathered bytes wait to go out.
    var pending: Bool { sentCount < length }

    /// Gathers what the session has to send (once the last gathering is all sent); the count now waiting.
    func fill() -> Int {
        guard sentCount >= length else { return length - sentCount }
        length = 0
        sentCount = 0
        if !carry.isEmpty {
            let n = min(carry.count, Self.capacity)
            unsafe carry.withUnsafeBytes { unsafe out.copyMemory(from: $0.baseAddress!, byteCount: n) }
            carry.removeFirst(n)
            length = n
            if !carry.isEmpty { return length }
        }
        while length < Self.capacity {
            let chunk = unsafe session.nextOutput()
            guard chunk.count > 0 else { break }
            let room = Self.capacity - length
            let n = min(room, chunk.count)
            unsafe (out + length).copyMemory(from: chunk.baseAddress!, byteCount: n)
            length += n
            if n < chunk.count {
                unsafe carry.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[n...]))
                break
            }
        }
        return length
    }

    /// Sends the gathered bytes not yet sent.
    func send<B: IOBackend>(on backend: B, fd: Int32, token: Token) {
        precondition(sentCount < length, "nothing to send")
        unsafe backend.send(fd: fd, bytes: UnsafeRawBufferPointer(start: out + sentCount, count: length - sentCount), token: token)
    }

    /// A send moved `n` bytes.
    func sent(_ n: Int) { sentCount = min(length, sentCount + n) }

    /// https: the gathered bytes, all of them, written into the socket's TLS records (they count as sent then).
    func write(to tls: TLSClientIO, _ s: Int) -> TLSStep {
        let step = unsafe tls.write(s, bytes: UnsafeRawBufferPointer(start: out + sentCount, count: length - sentCount))
        sentCount = length
        return step
    }

    /// Bytes received in pooled buffer `id` (its first `length`), read in place.
    func receive(_ pool: BufferPool, _ id: UInt16, length: Int) -> Bool {
        unsafe session.receive(pool.bytes(id, length: length))
    }

    /// https: a piece of plaintext, read in place.
    func receive(_ piece: borrowing Span<UInt8>) -> Bool {
        unsafe piece.withUnsafeBytes { unsafe session.receive($0) }
    }
}
