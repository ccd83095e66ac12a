// libFuzzer target for the HTTP/2 ingest: an HTTP2Session fed untrusted bytes, as a server (a client's connection)
// or as a client (an upstream's answers to four requests of its own), and HTTP2Translation's checks of each head
// received, as the proxy applies them. The bytes go in over several `receive` calls; after each, every event is
// walked (every field and DATA range read), heads are translated and sometimes answered or reset, DATA consumed,
// the events cleared and the output drained. Besides "never crash", it checks that every event's ranges lie
// within their buffers, that a flooded session hands nothing more on (the later reads give no events; after
// `receive` says false nothing more is fed, as the proxy then closes), and that the header arena stays within 16
// header lists' worth plus one field. nghttp2 is the system's libnghttp2.so.14, loaded by the first session (a
// target that cannot load it stops at the first input) and not instrumented: coverage is that of Tern's code.
// Input: a control byte (bit 0: client; bit 1: no client preface put in front of a server's bytes; bits 2-4: cuts
// less one), two bytes choosing what is done with each head, a byte seeding the cut offsets; the rest is the stream.
import TernHTTP

let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
/// What a body ends with when it has trailers (an HTTP/1.1 trailer section, as the engine hands it over).
let trailerSection = Array("grpc-status: 0\r\ngrpc-message: ok\r\nContent-Length: 3\r\nX-Trailer: t\r\n\r\n".utf8)

/// Small enough limits that the fuzzer reaches them.
let settings: HTTP2Session.Settings = {
    var s = HTTP2Session.Settings()
    s.maxConcurrentStreams = 16
    s.initialStreamWindow = 4096
    s.connectionWindow = 65_535
    s.maxHeaderListSize = 4096
    return s
}()

final class Harness {
    let session: HTTP2Session
    let role: HTTP2Session.Role
    /// What is done with each head: three bits a head, taken in turn.
    var actions: UInt16
    /// Body bytes still to give per stream, and the streams whose bodies end with trailers.
    var bodies: [Int32: Int] = [:]
    var trailers: Set<Int32> = []
    /// The client's requests to HEAD (their responses have no body).
    var headRequests: Set<Int32> = []
    var scratch: [UInt8] = []
    /// Bytes read through every range, so that no read is left out.
    var seen = 0

    init(role: HTTP2Session.Role, actions: UInt16) {
        do {
            session = try HTTP2Session(role: role, settings: settings)
        } catch {
            fatalError("no HTTP/2 session (is libnghttp2.so.14 installed?): \(error)")
        }
        self.role = role
        self.actions = actions
        session.bodySource = { [unowned self] stream, buffer in self.body(stream, buffer) }
    }

    func nextAction() -> UInt16 {
        let a = actions & 7
        actions = actions >> 3 | actions << 13
        return a
    }

    func body(_ stream: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> HTTP2BodyRead {
        guard let left = bodies[stream] else { return .bytes(0, end: true) }
        let n = min(left, buffer.count)
        for i in 0..<n { buffer[i] = UInt8(truncatingIfNeeded: i) }
        if n < left {
            bodies[stream] = left - n
            return .bytes(n, end: false)
        }
        bodies[stream] = nil
        if trailers.contains(stream) {
            session.beginHead()
            if HTTP2Translation.http2Trailers(trailerSection, into: session) > 0, session.submitTrailers(stream: stream) {
                return .endWithTrailers(n)
            }
        }
        return .bytes(n, end: true)
    }

    /// The client's requests: GET (1), HEAD (3), POST with a body and trailers (5), GET with a body (7).
    func request(_ method: String, body: Int?, trailers: Bool = false) {
        session.beginHead()
        session.addField(":method".utf8, method.utf8)
        session.addField(":scheme".utf8, "http".utf8)
        session.addField(":authority".utf8, "svc.ns:8080".utf8)
        session.addField(":path".utf8, "/pkg.Svc/Call?q=1".utf8)
        session.addField("te".utf8, "trailers".utf8)
        guard let id = session.submitRequest(hasBody: body != nil) else { fatalError("no request submitted") }
        if let body { bodies[id] = body }
        if trailers { self.trailers.insert(id) }
        if method == "HEAD" { headRequests.insert(id) }
    }

    func respond(_ stream: Int32, status: Int, body: Int?, trailers: Bool = false, interim: Bool = false) {
        session.beginHead()
        session.addStatus(status)
        session.addField("content-type".utf8, "application/grpc".utf8)
        if interim {
            session.submitResponse(stream: stream, hasBody: false, interim: true)
            return
        }
        if let body { bodies[stream] = body }
        if trailers { self.trailers.insert(stream) }
        session.submitResponse(stream: stream, hasBody: body != nil)
    }

    /// Checks and reads the fields `fields` of a head or trailers.
    func readFields(_ fields: Range<Int>) {
        precondition(fields.lowerBound >= 0 && fields.upperBound <= session.fields.count,
                     "head fields \(fields) beyond the \(session.fields.count) fields")
        for i in fields {
            let f = session.fields[i]
            precondition(f.name.lowerBound >= 0 && f.name.upperBound <= session.headerBytes.count
                         && f.value.lowerBound >= 0 && f.value.upperBound <= session.headerBytes.count,
                         "field \(i) (\(f.name), \(f.value)) beyond the \(session.headerBytes.count) header bytes")
            for b in session.name(i) { seen &+= Int(b) }
            for b in session.value(i) { seen &+= Int(b) }
        }
    }

    /// Handles the events `receive` (with `input`) or `nextOutput` (no input) made, then clears them.
    func walk(_ input: [UInt8]) {
        var i = 0
        while i < session.events.count {
            let event = session.events[i]
            i += 1
            switch event {
            case .head(let stream, let fields, let endStream):
                readFields(fields)
                scratch.removeAll(keepingCapacity: true)
                if role == .server {
                    _ = HTTP2Translation.http1Request(session, fields, endStream: endStream, into: &scratch)
                } else {
                    _ = HTTP2Translation.http1Response(session, fields, endStream: endStream,
                                                       toHEAD: headRequests.contains(stream), into: &scratch)
                }
                for b in scratch { seen &+= Int(b) }
                act(stream)
            case .trailers(let stream, let fields):
                readFields(fields)
                scratch.removeAll(keepingCapacity: true)
                HTTP2Translation.http1Trailers(session, fields, into: &scratch)
                seen &+= GRPC.status(session, fields) ?? 0
                if role == .server && nextAction() == 3 { respond(stream, status: 200, body: 10) }
            case .data(let stream, let bytes):
                precondition(bytes.lowerBound >= 0 && bytes.upperBound <= input.count,
                             "DATA \(bytes) beyond the \(input.count) bytes received")
                for b in input[bytes] { seen &+= Int(b) }
                session.consume(stream: stream, bytes.count)
            case .endStream, .reset, .closed, .goaway:
                break
            }
        }
        session.clearEvents()
    }

    /// What is done with a head: nothing (0, 1), answered (server: 2 no body, 3 a body, 4 a body and trailers,
    /// 5 an interim 100 and then 204), or reset (6, 7).
    func act(_ stream: Int32) {
        switch nextAction() {
        case 2 where role == .server: respond(stream, status: 200, body: nil)
        case 3 where role == .server: respond(stream, status: 200, body: 5000)
        case 4 where role == .server: respond(stream, status: 200, body: 100, trailers: true)
        case 5 where role == .server:
            respond(stream, status: 100, body: nil, interim: true)
            respond(stream, status: 204, body: nil)
        case 6: session.reset(stream: stream, code: HTTP2ErrorCode.cancel)
        case 7: session.reset(stream: stream, code: HTTP2ErrorCode.refusedStream)
        default: break
        }
    }

    /// Takes all the output (the events sends make, streams closing, handled as they come).
    func drain() {
        while true {
            let out = session.nextOutput()
            walk([])
            if out.isEmpty { return }
            seen &+= out.count
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count >= 4 else { return 0 }
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    let control = input[0]
    let role: HTTP2Session.Role = control & 1 == 0 ? .server : .client
    let h = Harness(role: role, actions: UInt16(input[1]) | UInt16(input[2]) << 8)
    var stream = role == .server && control & 2 == 0 ? preface : []
    stream += input[4...]
    if role == .client {
        h.request("GET", body: nil)
        h.request("HEAD", body: nil)
        h.request("POST", body: 300, trailers: true)
        h.request("GET", body: 20)
        h.drain()
    }
    // The cut offsets: 1 to 8 of them, from an xorshift seeded by the fourth byte and the length.
    var offsets = [0]
    var x = UInt32(input[3]) &* 0x9E37_79B9 &+ UInt32(stream.count) | 1
    for _ in 0...Int(control >> 2 & 7) {
        x ^= x << 13
        x ^= x >> 17
        x ^= x << 5
        offsets.append(Int(x % UInt32(stream.count + 1)))
    }
    offsets.append(stream.count)
    offsets.sort()
    // The header arena: 16 header lists' worth, and the field that went past it (within one list's limit).
    let limit = 17 * Int(settings.maxHeaderListSize)
    for (from, to) in zip(offsets, offsets.dropFirst()) where from < to {
        let piece = Array(stream[from..<to])
        let floodedBefore = h.session.flood != nil
        let ok = piece.withUnsafeBytes { h.session.receive($0) }
        // Once flooded, the session reads nothing more: no event of a later read.
        precondition(!floodedBefore || h.session.events.isEmpty, "events after a flood: \(h.session.events)")
        precondition(h.session.headerBytes.count <= limit, "\(h.session.headerBytes.count) header bytes kept")
        h.walk(piece)
        h.drain()
        h.seen &+= h.session.isDone ? 1 : 0
        // Beyond saving: what is queued is sent and the connection closes (nothing more is fed, as the proxy does).
        if !ok {
            precondition(h.session.failure != nil, "receive failed without a reason")
            break
        }
    }
    h.seen &+= h.session.headsTooLarge
    return 0
}
