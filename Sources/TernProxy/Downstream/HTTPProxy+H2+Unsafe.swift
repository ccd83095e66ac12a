// HTTP/2 from clients (issue 17): a client connection whose first bytes are the HTTP/2 connection preface (h2c with
// prior knowledge on an HTTP listener, or h2 inside TLS) is served by an HTTP/2 session (TernHTTP's
// `HTTP2Session`, over nghttp2), and each of its streams is handed to the engine as a connection of its own, with
// transport `.h2stream` and an exchange of its own: the engine routes, filters, retries and reports it as it does
// an HTTP/1.1 request, and never learns the difference.
//
// - Requests: a stream's head is written as an HTTP/1.1 request head (`HTTP2Translation.http1Request`) into a
//   spare buffer and handed to `clientReceived` as if received; its DATA payloads are gathered into spare buffers
//   and handed over, a buffer at a time, as the engine asks for more (framed as one chunk when the body has no
//   Content-Length). A stream's receive window (65,535 bytes) reopens only as the engine takes what it was given,
//   so a slow upstream holds a client stream to what fits three buffers.
// - Responses: what the engine sends to the stream (HTTP/1.1 bytes) is copied into a spare buffer, its head read
//   with a response parser and submitted as HEADERS (`HTTP2Translation.http2Response`), its body (de-chunked)
//   read by nghttp2 as the stream's window allows; the engine hears its send is done once nghttp2 took the bytes.
// - Frames go out through the connection's own transport (plain or TLS), one spare buffer at a time.
// - A stream's end (the engine closes its connection after the response: keep-alive is off on a stream) frees
//   its slots; the client resetting it, or the connection closing, ends its exchange as a client disconnect.
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

/// An HTTP/2 client connection's session and its open streams.
final class H2Link: H2Connection {
    /// Open streams: the HTTP/2 stream id and the stream's own connection (at most the streams the session
    /// allows at once, so a scan is short).
    var streams: [(id: Int32, connection: DID)] = []
    /// Its streams were ended with it (`h2Close`).
    var ended = false
    /// Streams ended on this connection, and those a client reset before their response, within a second of
    /// opening (Envoy's premature resets, CVE-2023-44487), or made the session reset (a protocol, flow-control or
    /// closed-stream error of the client's: CVE-2025-8671, MadeYouReset); the stream the client reset last (its
    /// close that follows is not counted again).
    var streamsEnded = 0
    var prematureResets = 0
    var lastClientReset: Int32 = 0
    /// The connection is ended for a protocol failure or a reset flood: its streams end with it at once (a
    /// drain or an idle close waits for them).
    var abort = false

    override init(session: HTTP2Session) {
        super.init(session: session)
        streams.reserveCapacity(16)
    }

    func connection(of stream: Int32) -> DID? {
        for s in streams where s.id == stream { return s.connection }
        return nil
    }
}

/// An HTTP/2 stream's state, in the slot of the connection the engine sees for it.
struct H2StreamState {
    var parent: DID? = nil
    var stream: Int32 = 0
    /// When the stream opened (monotonic nanoseconds): a reset within `H2Wire.prematureLifetime` is premature.
    var openedAt: UInt64 = 0
    // The request, as HTTP/1.1 bytes for the engine: its head (a spare buffer), then its body's bytes gathered
    // in a spare buffer until the engine asks.
    var head: Int32 = -1
    var headLength = 0
    /// Body bytes gathered, in up to four spare buffers (a stream's window, 65,535 bytes, fills three), the
    /// first handed over first.
    var bodies = InlineArray<4, Int32>(repeating: -1)
    var bodyLengths = InlineArray<4, Int>(repeating: 0)
    var bodyCount = 0
    var chunked = false
    /// Content-Length bytes still to come (`UInt64.max`: not a Content-Length body). Once all have come, the last
    /// of them waits for the stream's end, so that trailers after them are kept before the engine sees the body
    /// complete.
    var lengthLeft = UInt64.max
    /// END_STREAM came from the client; the end of a chunked body was handed over.
    var requestEnded = false
    var lastChunkSent = false
    /// The engine asked for bytes; the stream is on the reactor's `h2Ready` list.
    var wanting = false
    var queued = false
    /// DATA bytes the engine was given: the stream's window reopens by them when it asks again.
    var consumable = 0
    // The response, as the engine writes it (HTTP/1.1): its head parsed in `send.out`, then its body bytes there
    // until nghttp2 frames them.
    var parser: Int32 = -1
    var headSubmitted = false
    var send = H2Send()
    /// The stream is gone on the HTTP/2 side (closed, or reset by either end).
    var gone = false
    /// The engine ended the stream's connection after a complete response (`lingerClose`): a response whose
    /// length was its connection's close ends with END_STREAM, not a reset.
    var graceful = false
    /// The stream waits for a spare buffer (on `HTTPProxy.h2Starved`), to send into (`send.starvedSend`) or to end
    /// its body in.
    var starved = false
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
enum H2Wire {
    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let lastChunk: [UInt8] = Array("0\r\n\r\n".utf8)
    static let crlf: [UInt8] = [0x0D, 0x0A]
    /// Bytes kept at the front of a stream's body buffer for the chunk-size line written before it.
    static let chunkRoom = 16
    /// Envoy's premature-reset rule (its runtime defaults): once a connection has ended this many streams, and
    /// more than half of them were reset by the client within a second of opening (or made the session reset
    /// them for a protocol error), it is closed with GOAWAY ENHANCE_YOUR_CALM.
    static let prematureResetMinimumStreams = 500
    /// Spare buffers one HTTP/2 connection's streams may hold at once (1 MiB with 32 KiB buffers).
    static let buffersPerConnection = 32
    static let status: [UInt8] = Array(":status".utf8), notImplemented: [UInt8] = Array("501".utf8)
    static let headersTooLarge: [UInt8] = Array("431".utf8)
    static let method: [UInt8] = Array(":method".utf8), connect: [UInt8] = Array("CONNECT".utf8)
    static let prematureLifetime: UInt64 = 1_000_000_000
    /// Rounds over the ready streams in one loop iteration (`h2Iteration`).
    static let roundsPerIteration = 16
    /// Trailer-section arrays a reactor keeps for its streams to reuse (`HTTPProxy.h2TrailerArrays`), and the
    /// largest kept.
    static let trailerArraysKept = 256
    static let trailerArrayCapacity = 1024
    /// Arrays made at once when none is kept, and the capacity each starts with (a gRPC status and message).
    static let trailerArraysMadeAtOnce = 8
    static let trailerArrayFirstCapacity = 256
}

extension HTTPProxy {
    // MARK: - The connection

    /// Whether a connection's first bytes (`count` of pooled buffer `buffer`) begin the HTTP/2 preface (all of
    /// them, when fewer than it).
    /// Whether received bytes begin a TLS handshake record (content type 22, major version 3): a PERMISSIVE inbound
    /// connection's first bytes (Filters/HTTPProxy+Authorization.swift), looked at as the HTTP/2 preface is.
    func tlsRecordFirst(_ buffer: UInt16, _ count: Int) -> Bool {
        guard count >= 1 else { return false }
        let b = unsafe pool.bytes(buffer, length: min(count, 2))
        let first = unsafe b[0], second: UInt8 = count < 2 ? 0x03 : unsafe b[1]
        return first == 0x16 && second == 0x03
    }

    func h2Preface(_ buffer: UInt16, _ count: Int) -> Bool {
        let n = min(count, H2Wire.preface.count)
        guard n >= 4 else { return false }
        let b = unsafe pool.bytes(buffer, length: n)
        for i in 0..<n where unsafe b[i] != H2Wire.preface[i] { return false }
        return true
    }

    /// Turns client connection `id` into an HTTP/2 connection and feeds it its first bytes.
    func h2Begin(_ id: DID, _ c: Completion, _ reactor: Reactor<Backend>) {
        var settings = HTTP2Session.Settings()
        // A stream's window stays HTTP/2's initial 65,535 (a smaller one would race what a client sends before
        // our SETTINGS arrive; a larger one would not fit the buffers a stream gathers its body in).
        settings.initialStreamWindow = 65_535
        settings.connectionWindow = self.settings.http2ConnectionWindow
        settings.maxConcurrentStreams = self.settings.http2MaxConcurrentStreams
        settings.maxFrameSize = self.settings.http2MaxFrameSize
        settings.maxHeaderListSize = UInt32(self.settings.limits.maxHeaderBytes)
        let session: HTTP2Session
        do throws(HTTP2SessionError) {
            session = try HTTP2Session(role: .server, settings: settings)
        } catch {
            // nghttp2 missing (loaded by the first session) or out of memory: this connection cannot be served,
            // the process and its other connections go on.
            Log.error("HTTP/2 connection refused: \(error.description)")
            release(c.bufferID, reactor)
            return closeDownstream(id, reset: true, reactor)
        }
        let link = H2Link(session: session)
        link.shares = h2Shares
        unsafe session.bodySource = { [unowned self] stream, buffer in unsafe self.h2BodyRead(id, stream, buffer) }
        downstreams[id].h2 = link
        downstreams[id].keepAlive = false
        cancel(&downstreams[id].headerTimer, reactor)
        counters.h2Connections.add(1, ordering: .relaxed)
        if draining {
            // Its preface came after the drain began: it is drained as the others were.
            session.beginDrain()
            h2DrainTimer(reactor)
        }
        h2Received(id, c, reactor)
    }

    /// Bytes (or the end) from an HTTP/2 client connection.
    func h2Received(_ id: DID, _ c: Completion, _ reactor: Reactor<Backend>) {
        guard let link = downstreams[id].h2 else { return release(c.bufferID, reactor) }
        if downstreams[id].phase == .lingering {
            // After GOAWAY: read and drop until the client closes, or the linger timer ends it.
            release(c.bufferID, reactor)
            return c.result > 0 ? receiveFromClient(id, reactor) : closeDownstream(id, reset: false, reactor)
        }
        if downstreams[id].phase != .open {
            release(c.bufferID, reactor)
            return finishDownstreamIfQuiet(id, reactor)
        }
        guard c.result > 0, let buffer = c.bufferID else {
            release(c.bufferID, reactor)
            return h2Close(id, reset: c.result < 0, reactor)
        }
        let input = unsafe pool.bytes(buffer, length: Int(c.result))
        let ok = unsafe link.session.receive(input)
        // Before the events: a head that came with a flood or a failure opens no stream (the connection is closing).
        if ok, let what = link.session.flood, !link.abort {
            Log.debug("HTTP/2 connection: a flood of \(what): GOAWAY ENHANCE_YOUR_CALM")
            counters.h2Floods.add(1, ordering: .relaxed)
            link.closing = true
            link.abort = true
        }
        if !ok {
            Log.debug("HTTP/2 connection failed: \(link.session.failure ?? "?")")
            h2CountFailure(link.session)
            link.closing = true
            link.abort = true
        }
        unsafe h2Events(id, link, input, reactor)
        release(buffer, reactor)
        if link.abort && link.out >= 0 && downstreams.isCurrent(id) {
            // Ended while a send is still out (a client that floods and does not read may never take it): no
            // GOAWAY can follow it in time; the connection is reset now, not left holding its buffer.
            return h2Close(id, reset: true, reactor)
        }
        h2Flush(id, reactor)
        if downstreams.isCurrent(id) && downstreams[id].phase == .open && !link.closing { receiveFromClient(id, reactor) }
    }

    /// What the session's last call produced, stream by stream.
    private func h2Events(_ id: DID, _ link: H2Link, _ input: UnsafeRawBufferPointer, _ reactor: Reactor<Backend>) {
        // Handling an event may flush the connection, and a flush may add events (a stream closing as its last
        // frame goes out): they join this loop, which alone handles and clears them.
        guard !link.inEvents else { return }
        link.inEvents = true
        defer { link.inEvents = false }
        var i = 0
        while i < link.session.events.count {
            let e = link.session.events[i]
            i += 1
            switch e {
            case .head(let stream, let fields, let endStream):
                h2Open(id, link, stream, fields, endStream: endStream, reactor)
            case .trailers(let stream, let fields):
                // Request trailers end the body; they are kept beside it for an HTTP/2 upstream (an HTTP/1.1 one
                // goes without, as with Envoy's HTTP/1 codec).
                if let v = link.connection(of: stream) {
                    let x = downstreams[v].exchange
                    if exchanges.isCurrent(x) && downstreams[v].phase == .open {
                        h2KeepTrailers(link.session, fields, in: &exchanges[x].requestTrailers)
                    }
                    h2RequestEnded(v, reactor)
                }
            case .data(let stream, let range):
                guard let v = link.connection(of: stream) else {
                    link.session.consume(stream: stream, range.count)
                    continue
                }
                unsafe h2Gather(v, UnsafeRawBufferPointer(rebasing: input[range]), reactor)
            case .endStream(let stream):
                if let v = link.connection(of: stream) { h2RequestEnded(v, reactor) }
            case .reset(let stream, _), .closed(let stream, _):
                h2CountReset(link, e)
                guard let v = link.connection(of: stream) else { continue }
                downstreams[v].h2s.gone = true
                // nghttp2 reads nothing more of a closed stream: unless its whole response was taken (the engine
                // hears so at the next iteration), the client gave up on it, or the session reset it, and the
                // exchange ends as a client disconnect.
                let s = downstreams[v].h2s
                if !(s.send.body.ended && s.requestEnded && s.send.start == s.send.end) { closeDownstream(v, reset: false, reactor) }
            case .goaway:
                break
            }
        }
        link.session.clearEvents()
        if link.session.drain == .acknowledged {
            // The drain notice's PING came back: every stream opened before the notice was read has arrived.
            link.session.finishDrain()
            if link.streams.isEmpty { link.closing = true }
        }
        if link.streamsEnded >= H2Wire.prematureResetMinimumStreams && link.prematureResets * 2 > link.streamsEnded
            && !link.closing {
            Log.debug("HTTP/2 connection: \(link.prematureResets) of \(link.streamsEnded) streams reset early: GOAWAY ENHANCE_YOUR_CALM")
            counters.h2ResetFloods.add(1, ordering: .relaxed)
            link.session.goaway(code: HTTP2ErrorCode.enhanceYourCalm)
            link.closing = true
            link.abort = true
        }
    }

    /// Counts a stream's end, and whether it was a premature reset: the client reset it within a second of opening,
    /// before its response ended, or the session reset it for a protocol error (PROTOCOL_ERROR, which Tern's own
    /// resets of streams it cannot serve do not use).
    private func h2CountReset(_ link: H2Link, _ e: HTTP2Event) {
        switch e {
        case .reset(let stream, _):
            link.lastClientReset = stream
            guard let v = link.connection(of: stream) else { return }
            if !downstreams[v].h2s.headSubmitted && System.monotonicNanos() &- downstreams[v].h2s.openedAt < H2Wire.prematureLifetime {
                link.prematureResets += 1
            }
        case .closed(let stream, let code):
            link.streamsEnded += 1
            // Closed by the session for the client's error (Tern's own resets use other codes, or
            // PROTOCOL_ERROR for a head it refused, which is the client's error too).
            let clients = code == HTTP2ErrorCode.protocolError || code == HTTP2ErrorCode.flowControlError
                || code == HTTP2ErrorCode.streamClosed
            if clients && stream != link.lastClientReset { link.prematureResets += 1 }
        default:
            break
        }
    }

    /// Sends what the session has to send, a spare buffer at a time, through the connection's transport.
    func h2Flush(_ id: DID, _ reactor: Reactor<Backend>) {
        guard downstreams.isCurrent(id), let link = downstreams[id].h2, link.out < 0, !link.flushing else { return }
        guard downstreams[id].phase == .open else { return }
        link.flushing = true
        defer { link.flushing = false }
        guard let b = h2TakeBuffer(reactor) else {
            if !link.starved {
                link.starved = true
                h2Starved.append(id)
            }
            return
        }
        let room = unsafe pool.mutableBytes(b, length: pool.size)
        var n = 0
        while true {
            n = unsafe link.fill(room, from: n)
            // Streams that closed as their last frames went into the buffer; handling them may queue more frames
            // (a GOAWAY), which go into this buffer too.
            // (Inside `h2Events` already, the loop there handles them.)
            guard !link.session.events.isEmpty && !link.inEvents else { break }
            unsafe h2Events(id, link, UnsafeRawBufferPointer(start: nil, count: 0), reactor)
            guard downstreams.isCurrent(id) else { return release(b, reactor) }
        }
        if link.session.endedForError && !link.abort {
            // nghttp2 ended the session for the client's protocol error (its GOAWAY is in this buffer): the
            // connection closes once that is out, its open streams with it, whatever they wait for.
            Log.debug("HTTP/2 connection: a protocol error of the client's: GOAWAY and the close")
            counters.h2ProtocolErrors.add(1, ordering: .relaxed)
            link.closing = true
            link.abort = true
        }
        guard n > 0 else {
            release(b, reactor)
            // All said (a GOAWAY last): the connection ends once its streams have, at once when it is aborted,
            // unless `h2Close` is ending it already.
            if (link.closing || link.session.isDone) && !link.ended && (link.abort || link.streams.isEmpty) {
                h2Finish(id, reactor)
            }
            return
        }
        link.out = Int32(b)
        let entry = Int(id.index)
        toClient.reset(entry)
        _ = unsafe toClient.append(entry, UnsafeRawBufferPointer(rebasing: room[0..<n]))
        sendToClient(id, reactor)
    }

    /// The connection's frames went out (`result` bytes of them).
    func h2Sent(_ id: DID, _ result: Int32, _ reactor: Reactor<Backend>) {
        guard let link = downstreams[id].h2 else { return }
        if downstreams[id].phase == .closing { return finishDownstreamIfQuiet(id, reactor) }
        if result < 0 { return h2Close(id, reset: true, reactor) }
        let entry = Int(id.index)
        toClient.advance(entry, by: Int(result))
        if toClient.remaining(entry) > 0 { return sendToClient(id, reactor) }
        if link.out >= 0 {
            release(UInt16(link.out), reactor)
            link.out = -1
        }
        h2Flush(id, reactor)
    }

    /// Ends the connection and every stream on it.
    func h2Close(_ id: DID, reset: Bool, _ reactor: Reactor<Backend>) {
        guard let link = downstreams[id].h2 else { return }
        link.closing = true
        link.ended = true
        for s in link.streams where downstreams.isCurrent(s.connection) {
            downstreams[s.connection].h2s.gone = true
            closeDownstream(s.connection, reset: false, reactor)
        }
        if downstreams.isCurrent(id) { closeDownstream(id, reset: reset, reactor) }
    }

    /// The connection said all it had to (GOAWAY last): its streams end, and it closes as an HTTP/1.1 connection
    /// does, reading what the client still sends for a while (so the close is no reset that could destroy the
    /// GOAWAY before the client read it).
    func h2Finish(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let link = downstreams[id].h2 else { return }
        link.closing = true
        link.ended = true
        for s in link.streams where downstreams.isCurrent(s.connection) {
            downstreams[s.connection].h2s.gone = true
            closeDownstream(s.connection, reset: false, reactor)
        }
        if downstreams.isCurrent(id) && downstreams[id].phase == .open { lingerClose(id, reactor) }
    }

    /// The connection's slots are freed: its output buffer goes back.
    func h2Free(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let link = downstreams[id].h2 else { return }
        if link.out >= 0 { release(UInt16(link.out), reactor) }
        link.out = -1
        unsafe link.session.bodySource = nil
        downstreams[id].h2 = nil
    }

    /// Whether a request head's method is CONNECT.
    private func h2IsConnect(_ link: H2Link, _ fields: Range<Int>) -> Bool {
        let f = link.session.fields, b = link.session.headerBytes
        for i in fields where b[f[i].name].elementsEqual(H2Wire.method) { return b[f[i].value].elementsEqual(H2Wire.connect) }
        return false
    }

    /// Whether the client's connection is TLS (an HTTP/2 stream's: its connection's).
    func clientIsSecure(_ id: DID) -> Bool {
        switch downstreams[id].transport {
        case .tls: true
        case .plain: false
        case .h2stream: downstreams[id].h2s.parent.map { downstreams.isCurrent($0) && downstreams[$0].transport == .tls } ?? false
        }
    }

    /// Says GOAWAY (NO_ERROR, with the last stream processed) and closes once it is out: an idle connection.
    func h2GoAway(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let link = downstreams[id].h2 else { return }
        idle.remove(id, downstreams)
        link.session.goaway(code: HTTP2ErrorCode.noError)
        link.closing = true
        h2Flush(id, reactor)
    }

    /// The drain (SIGTERM), in Envoy's two steps: every HTTP/2 connection is told to open no new stream (GOAWAY
    /// with the last stream id 2^31-1, and a PING); streams the client opened before it read that are still served.
    /// Once the PING comes back (one round trip: every such stream has arrived), or at the latest after
    /// `settings.drainNoticeWait`, the final GOAWAY names the last stream processed; the streams open finish, and the
    /// connection closes when it has none (or at the drain timeout).
    func h2Drain(_ reactor: Reactor<Backend>) {
        downstreams.forEachID { id in
            guard let link = downstreams[id].h2, !link.closing else { return }
            link.session.beginDrain()
            h2Flush(id, reactor)
        }
        h2DrainTimer(reactor)
    }

    /// Arms the drain's second step (`h2DrainNoticeExpired`) `settings.drainNoticeWait` from now.
    private func h2DrainTimer(_ reactor: Reactor<Backend>) {
        _ = reactor.timers.schedule(Token(op: Op.h2Drain.rawValue, slot: 0, generation: 0),
                                    at: deadline(after: settings.drainNoticeWait))
    }

    /// The drain's second step on every HTTP/2 connection whose client has not answered the notice's PING yet.
    func h2DrainNoticeExpired(_ reactor: Reactor<Backend>) {
        downstreams.forEachID { id in
            guard let link = downstreams[id].h2, !link.closing, link.session.drain != .final else { return }
            link.session.finishDrain()
            if link.streams.isEmpty { link.closing = true }
            h2Flush(id, reactor)
        }
    }

    // MARK: - Requests

    /// A new stream: its own connection and exchange, and its head written as HTTP/1.1 for the engine.
    private func h2Open(_ id: DID, _ link: H2Link, _ stream: Int32, _ fields: Range<Int>, endStream: Bool,
                        _ reactor: Reactor<Backend>) {
        if let v = link.connection(of: stream) {
            // A second head on a stream the engine has: interim heads are not sent by clients; trailers come as
            // `.trailers`. Reset it.
            Log.debug("HTTP/2 stream \(stream): a second head")
            link.session.reset(stream: stream, code: HTTP2ErrorCode.protocolError)
            return closeDownstream(v, reset: false, reactor)
        }
        // (Draining, streams that arrive before the final GOAWAY are served: the client opened them before it
        // read the notice. nghttp2 ignores those above the final GOAWAY's last stream.)
        if link.closing {
            return link.session.reset(stream: stream, code: HTTP2ErrorCode.refusedStream)
        }
        if !h2MayOpen(link) {
            // Streams the reactor holds already take too many of its receive buffers: refused, so the client may
            // send it again (on this connection once its streams move, or elsewhere).
            Log.debug("HTTP/2 stream \(stream): the reactor's streams hold their share of buffers: REFUSED_STREAM")
            return link.session.reset(stream: stream, code: HTTP2ErrorCode.refusedStream)
        }
        idle.remove(id, downstreams)
        if h2IsConnect(link, fields) {
            // CONNECT over HTTP/2 (a tunnel on a stream) is not served yet: 501, as to an unknown method.
            link.session.beginHead()
            link.session.addField(H2Wire.status, H2Wire.notImplemented)
            _ = link.session.submitResponse(stream: stream, hasBody: false)
            return
        }
        h2Scratch.removeAll(keepingCapacity: true)
        let framing: HTTP2Translation.Framing
        switch HTTP2Translation.http1Request(link.session, fields, endStream: endStream, into: &h2Scratch) {
        case .success(let f): framing = f
        case .failure(let why):
            Log.debug("HTTP/2 stream \(stream): malformed request head (\(why))")
            counters.h2ProtocolErrors.add(1, ordering: .relaxed)
            return link.session.reset(stream: stream, code: HTTP2ErrorCode.protocolError)
        }
        guard h2Scratch.count <= pool.size else {
            // Beyond a buffer once written as HTTP/1.1 (the header list is limited to --max-request-headers-kb): 431.
            link.session.beginHead()
            link.session.addField(H2Wire.status, H2Wire.headersTooLarge)
            _ = link.session.submitResponse(stream: stream, hasBody: false)
            return
        }
        // (A head's buffer is handed to the engine at the next iteration: not counted in the connection's share,
        // which nghttp2's limit of concurrent streams bounds already.)
        guard let head = h2TakeBuffer(reactor) else {
            // No buffer free: refused, so the client may try again.
            return link.session.reset(stream: stream, code: HTTP2ErrorCode.refusedStream)
        }
        guard let x = exchanges.insert(Exchange(downstream: DID(index: 0, generation: 0))) else {
            release(head, reactor)
            return link.session.reset(stream: stream, code: HTTP2ErrorCode.refusedStream)
        }
        guard let v = downstreams.insert(DownstreamConnection(fd: -1, listener: downstreams[id].listener, exchange: x)) else {
            exchanges.remove(x)
            release(head, reactor)
            return link.session.reset(stream: stream, code: HTTP2ErrorCode.refusedStream)
        }
        exchanges[x].downstream = v
        exchanges[x].http2 = true
        unsafe h2Scratch.withUnsafeBytes { unsafe pool.mutableBytes(head, length: $0.count).copyMemory(from: $0) }
        downstreams[v].transport = .h2stream
        downstreams[v].keepAlive = false
        downstreams[v].spoke = true
        downstreams[v].h2s.parent = id
        downstreams[v].h2s.stream = stream
        downstreams[v].h2s.openedAt = System.monotonicNanos()
        downstreams[v].h2s.head = Int32(head)
        downstreams[v].h2s.headLength = h2Scratch.count
        downstreams[v].h2s.chunked = framing == .chunked
        if case .contentLength(let n) = framing { downstreams[v].h2s.lengthLeft = n }
        downstreams[v].h2s.requestEnded = endStream
        link.streams.append((stream, v))
        downstreams[v].mutualTLS = downstreams[id].mutualTLS
        downstreams[v].peerIP = downstreams[id].peerIP
        downstreams[v].principal = downstreams[id].principal
        downstreams[v].clientCertHash = downstreams[id].clientCertHash
        downstreams[v].peerID = downstreams[id].peerID
        downstreams[v].localIP = downstreams[id].localIP
        downstreams[v].serverName = downstreams[id].serverName
        downstreams[v].destinationPort = downstreams[id].destinationPort
        downstreams[v].originalDestination = downstreams[id].originalDestination
        bytes.copyClientAddress(from: Int(id.index), to: Int(v.index))
        if let capture {
            // The connection's fields (addresses, TLS version, cipher, server name) are the stream's too.
            let px = Int(downstreams[id].exchange.index), sx = Int(x.index)
            func copy(_ f: CapturedField) { unsafe capture.withBytes(px, f) { unsafe capture.set(sx, f, $0) } }
            copy(.downstreamRemote)
            copy(.downstreamLocal)
            copy(.tlsVersion)
            copy(.tlsCipher)
            copy(.serverName)
        }
        counters.h2Streams.add(1, ordering: .relaxed)
        h2StreamCount += 1
        receiveFromClient(v, reactor)
    }

    /// DATA for a stream: gathered in its body buffer until the engine asks.
    private func h2Gather(_ v: DID, _ data: UnsafeRawBufferPointer, _ reactor: Reactor<Backend>) {
        guard let parent = downstreams[v].h2s.parent, let link = downstreams[parent].h2 else { return }
        if unsafe downstreams[v].phase != .open || data.isEmpty {
            // Nobody reads it any more: the window reopens at once.
            link.session.consume(stream: downstreams[v].h2s.stream, data.count)
            return
        }
        if downstreams[v].h2s.lengthLeft != .max {
            downstreams[v].h2s.lengthLeft -= min(downstreams[v].h2s.lengthLeft, UInt64(data.count))
        }
        var rest = unsafe data
        while unsafe !rest.isEmpty {
            let last = downstreams[v].h2s.bodyCount - 1
            // Room in the last buffer: its chunk-size line before the data, and CRLF and the last chunk after.
            let room = last < 0 ? 0 : pool.size - H2Wire.chunkRoom - downstreams[v].h2s.bodyLengths[last] - 8
            if room <= 0 {
                guard downstreams[v].h2s.bodyCount < 4, let b = h2TakeBuffer(reactor, link) else {
                    // Beyond the stream's window (nghttp2 ends the connection first), or no buffer free: what is
                    // left of this DATA is off the connection all the same.
                    link.session.consumeConnection(rest.count)
                    link.session.reset(stream: downstreams[v].h2s.stream, code: HTTP2ErrorCode.internalError)
                    return closeDownstream(v, reset: false, reactor)
                }
                downstreams[v].h2s.bodies[last + 1] = Int32(b)
                downstreams[v].h2s.bodyLengths[last + 1] = 0
                downstreams[v].h2s.bodyCount += 1
                continue
            }
            let k = min(room, rest.count)
            let at = H2Wire.chunkRoom + downstreams[v].h2s.bodyLengths[last]
            let buffer = unsafe pool.mutableBytes(UInt16(downstreams[v].h2s.bodies[last]), length: pool.size)
            unsafe (buffer.baseAddress! + at).copyMemory(from: rest.baseAddress!, byteCount: k)
            downstreams[v].h2s.bodyLengths[last] += k
            unsafe rest = unsafe UnsafeRawBufferPointer(rebasing: rest[k...])
        }
        h2Ready(v)
    }

    /// The client's END_STREAM (or trailers) for a stream.
    private func h2RequestEnded(_ v: DID, _ reactor: Reactor<Backend>) {
        downstreams[v].h2s.requestEnded = true
        h2Ready(v)
    }

    /// The engine asks a stream for bytes (`receiveFromClient`).
    func h2Wants(_ v: DID, _ reactor: Reactor<Backend>) {
        downstreams[v].h2s.wanting = true
        h2Ready(v)
    }

    private func h2Ready(_ v: DID) {
        guard !downstreams[v].h2s.queued else { return }
        downstreams[v].h2s.queued = true
        h2ReadyList.append(v)
    }

    /// Once per loop iteration: streams with bytes for an engine that asked, sends to report (in rounds), and, once
    /// spare buffers are free, connections and streams that waited for one. What is still ready after the rounds
    /// goes to the next iteration (kicked by a timer due at once).
    func h2Iteration(_ reactor: Reactor<Backend>) {
        // Rounds over the streams ready at each round's start: what a round adds (a response the engine sent, a
        // send to report) goes in the next, so a request's hand-offs finish in this pass, not a timer tick
        // (1 ms) later each; a bounded number of rounds, so a stream that cannot progress never spins.
        var rounds = 0
        repeat {
            h2IterateReady(reactor)
            if !h2uReadyList.isEmpty { h2uIterateReady(reactor) }
            rounds += 1
        } while (!h2ReadyList.isEmpty || !h2uReadyList.isEmpty) && rounds < H2Wire.roundsPerIteration
        if !h2uStarved.isEmpty { h2uServeStarved(reactor) }
        // Then what waited for a spare buffer (those just released by the streams above included).
        if !h2Starved.isEmpty && reactor.backend.buffers.spareAvailable > Self.tlsRecordReserve {
            // Those waiting now; any that must wait again join the list behind them.
            let count = h2Starved.count
            for k in 0..<count {
                let id = h2Starved[k]
                guard downstreams.isCurrent(id) else { continue }
                if let link = downstreams[id].h2 {
                    link.starved = false
                    h2Flush(id, reactor)
                } else if downstreams[id].transport == .h2stream {
                    downstreams[id].h2s.starved = false
                    if downstreams[id].h2s.send.starvedSend {
                        downstreams[id].h2s.send.starvedSend = false
                        h2Send(id, reactor)
                    } else {
                        h2Ready(id)
                    }
                }
            }
            h2Starved.removeSubrange(0..<count)
        }
        if (!h2ReadyList.isEmpty || !h2uReadyList.isEmpty) && !h2KickArmed {
            h2KickArmed = reactor.timers.schedule(Token(op: Op.h2Kick.rawValue, slot: 0, generation: 0),
                                                  at: System.monotonicNanos()) != nil
        }
    }

    /// The streams on `h2ReadyList` when it begins; those it adds wait for the next iteration.
    private func h2IterateReady(_ reactor: Reactor<Backend>) {
        let count = h2ReadyList.count
        var i = 0
        while i < count {
            let v = h2ReadyList[i]
            i += 1
            guard downstreams.isCurrent(v), downstreams[v].transport == .h2stream else { continue }
            downstreams[v].h2s.queued = false
            if downstreams[v].h2s.send.releaseOut {
                downstreams[v].h2s.send.releaseOut = false
                let s = downstreams[v].h2s
                if s.send.out >= 0 && s.headSubmitted && s.send.start == s.send.end {
                    release(UInt16(s.send.out), reactor)
                    h2GaveBuffer(s.parent)
                    downstreams[v].h2s.send.out = -1
                    downstreams[v].h2s.send.start = 0
                    downstreams[v].h2s.send.end = 0
                }
            }
            if downstreams[v].h2s.send.reportSent {
                downstreams[v].h2s.send.reportSent = false
                let n = downstreams[v].h2s.send.unreported
                downstreams[v].h2s.send.unreported = 0
                clientSent(v, Int32(n), reactor)
                guard downstreams.isCurrent(v), downstreams[v].transport == .h2stream else { continue }
            }
            if downstreams[v].h2s.wanting && !downstreams[v].h2s.starved { h2Deliver(v, reactor) }
        }
        h2ReadyList.removeSubrange(0..<count)
    }

    /// Counts a session nghttp2 gave up on (either side): as a flood when it failed for one, else as a protocol error.
    func h2CountFailure(_ session: HTTP2Session) {
        if session.failedForFlood {
            counters.h2Floods.add(1, ordering: .relaxed)
        } else {
            counters.h2ProtocolErrors.add(1, ordering: .relaxed)
        }
    }

    /// Whether `link` may start another stream. Each stream under way may keep one of the reactor's receive buffers
    /// while its client's window is closed (the engine's bytes wait for it), so streams whose clients read nothing
    /// could otherwise take every one, and then nothing at all is read (other clients, closes): once streams are
    /// under way for half the receive buffers, only a connection with none under way starts one (so each
    /// connection is still served), and past three quarters none does.
    private func h2MayOpen(_ link: H2Link) -> Bool {
        let streams = h2StreamCount, buffers = pool.count
        if streams < buffers / 2 { return true }
        return streams < buffers * 3 / 4 && link.streams.isEmpty
    }

    /// A spare buffer for HTTP/2's own use, leaving TLS its reserve of record buffers, and for a stream of
    /// `link`, within the connection's share (nil: none to spare).
    func h2TakeBuffer(_ reactor: Reactor<Backend>, _ link: H2Connection? = nil) -> UInt16? {
        if let link, link.buffersHeld >= H2Wire.buffersPerConnection || h2Shares.held >= h2Shares.limit { return nil }
        guard reactor.backend.buffers.spareAvailable > Self.tlsRecordReserve, let b = reactor.backend.takeBuffer() else {
            return nil
        }
        if let link { link.buffersHeld += 1 }
        return b
    }

    /// A stream of `parent` no longer holds one of its buffers (handed to the engine, or released).
    private func h2GaveBuffer(_ parent: DID?) {
        guard let parent, downstreams.isCurrent(parent), let link = downstreams[parent].h2 else { return }
        link.buffersHeld -= 1
    }

    /// A stream waits for a spare buffer: it goes on once one is free.
    private func h2Starve(_ v: DID) {
        guard !downstreams[v].h2s.starved else { return }
        downstreams[v].h2s.starved = true
        h2Starved.append(v)
    }

    /// Hands the engine what a stream has: its head, then its body as it came, then its end.
    private func h2Deliver(_ v: DID, _ reactor: Reactor<Backend>) {
        guard let parent = downstreams[v].h2s.parent, let link = downstreams[parent].h2 else { return }
        let stream = downstreams[v].h2s.stream
        if downstreams[v].h2s.consumable > 0 {
            // The engine took what it was given before: the client may send that much more on the stream.
            link.session.consumeStream(stream, downstreams[v].h2s.consumable)
            downstreams[v].h2s.consumable = 0
            h2Flush(parent, reactor)
            guard downstreams.isCurrent(v), downstreams[v].transport == .h2stream else { return }
        }
        let token = token(.clientReceive, v)
        if downstreams[v].h2s.head >= 0 {
            let b = UInt16(downstreams[v].h2s.head), n = downstreams[v].h2s.headLength
            downstreams[v].h2s.head = -1
            downstreams[v].h2s.wanting = false
            return clientReceived(v, Completion(token: token, result: Int32(n), buffer: b), reactor)
        }
        let ended = downstreams[v].h2s.requestEnded, chunked = downstreams[v].h2s.chunked
        // The last of a Content-Length body waits for the stream's end (trailers may come before it). (Whether the
        // upstream speaks HTTP/2, and so could carry them, may not be known yet: it waits whatever the upstream.)
        if downstreams[v].h2s.bodyCount == 1 && downstreams[v].h2s.lengthLeft == 0 && !ended { return }
        if downstreams[v].h2s.bodyCount > 0 {
            let b = UInt16(downstreams[v].h2s.bodies[0]), n = downstreams[v].h2s.bodyLengths[0]
            let count = downstreams[v].h2s.bodyCount
            for i in 1..<4 {
                downstreams[v].h2s.bodies[i - 1] = downstreams[v].h2s.bodies[i]
                downstreams[v].h2s.bodyLengths[i - 1] = downstreams[v].h2s.bodyLengths[i]
            }
            downstreams[v].h2s.bodies[3] = -1
            downstreams[v].h2s.bodyCount = count - 1
            h2GaveBuffer(parent)
            downstreams[v].h2s.consumable = n
            // Off the connection (into the stream's own buffers, bounded by its window): the connection's window
            // reopens now, so a stream whose body waits for its response holds no other stream back.
            link.session.consumeConnection(n)
            // The last chunk goes with the last buffer.
            let last = count == 1
            let buffer = unsafe pool.mutableBytes(b, length: pool.size)
            var length = n
            if chunked {
                // One chunk of what came: its size line (hex digits, CRLF) written just before the data, all moved
                // to the front, then CRLF, and the last chunk if the stream ended.
                var digits = 1
                while n >> (4 * digits) > 0 { digits += 1 }
                let lineStart = H2Wire.chunkRoom - digits - 2
                for d in 0..<digits {
                    let nibble = (n >> (4 * (digits - 1 - d))) & 0xF
                    unsafe buffer[lineStart + d] = UInt8(nibble < 10 ? 0x30 + nibble : 0x57 + nibble)
                }
                unsafe buffer[H2Wire.chunkRoom - 2] = 0x0D
                unsafe buffer[H2Wire.chunkRoom - 1] = 0x0A
                length = digits + 2 + n
                unsafe buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + lineStart, byteCount: length)
                unsafe buffer[length] = 0x0D
                unsafe buffer[length + 1] = 0x0A
                length += 2
                if ended && last {
                    for (k, c) in H2Wire.lastChunk.enumerated() { unsafe buffer[length + k] = c }
                    length += H2Wire.lastChunk.count
                    downstreams[v].h2s.lastChunkSent = true
                }
            } else {
                unsafe buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + H2Wire.chunkRoom, byteCount: n)
            }
            downstreams[v].h2s.wanting = false
            return clientReceived(v, Completion(token: token, result: Int32(length), buffer: b), reactor)
        }
        guard ended else { return }  // nothing yet: delivered when it comes
        if chunked && !downstreams[v].h2s.lastChunkSent {
            guard let b = h2TakeBuffer(reactor) else { return h2Starve(v) }
            downstreams[v].h2s.lastChunkSent = true
            unsafe H2Wire.lastChunk.withUnsafeBytes { unsafe pool.mutableBytes(b, length: $0.count).copyMemory(from: $0) }
            downstreams[v].h2s.wanting = false
            return clientReceived(v, Completion(token: token, result: Int32(H2Wire.lastChunk.count), buffer: b), reactor)
        }
        // The request is all there and the engine reads on (a lingering close, or a client that ended mid-request):
        // the end of the stream, as a socket's would be.
        downstreams[v].h2s.wanting = false
        clientReceived(v, Completion(token: token, result: 0), reactor)
    }

    // MARK: - Responses

    /// The engine sends to a stream (`sendToClient`): its HTTP/1.1 bytes become HEADERS and DATA.
    func h2Send(_ v: DID, _ reactor: Reactor<Backend>) {
        guard let parent = downstreams[v].h2s.parent, let link = downstreams[parent].h2 else { return }
        let stream = downstreams[v].h2s.stream
        if downstreams[v].h2s.send.out < 0 {
            guard let b = h2TakeBuffer(reactor, link) else {
                // The engine's bytes stay where they are until a buffer is free.
                downstreams[v].h2s.send.starvedSend = true
                return h2Starve(v)
            }
            downstreams[v].h2s.send.out = Int32(b)
            downstreams[v].h2s.send.start = 0
            downstreams[v].h2s.send.end = 0
        }
        let buffer = unsafe pool.mutableBytes(UInt16(downstreams[v].h2s.send.out), length: pool.size)
        let (from, copied) = unsafe downstreams[v].h2s.send.take(toClient, Int(v.index), into: buffer)
        if !downstreams[v].h2s.headSubmitted {
            guard unsafe h2ResponseHead(v, link, stream, buffer, reactor) else { return }
            if !downstreams[v].h2s.headSubmitted && downstreams[v].h2s.send.end == pool.size {
                // A response head larger than a buffer (the engine's heads may be up to 60 KiB): the stream cannot
                // carry it. Reset.
                Log.debug("HTTP/2 stream \(stream): response head over \(pool.size) bytes: reset")
                link.session.reset(stream: stream, code: HTTP2ErrorCode.internalError)
                closeDownstream(v, reset: false, reactor)
                return h2Flush(parent, reactor)
            }
        } else {
            downstreams[v].h2s.send.end = unsafe downstreams[v].h2s.send.body.absorb(buffer, from: from, end: downstreams[v].h2s.send.end)
            h2TrailerStatus(v)
        }
        downstreams[v].h2s.send.unreported = copied
        if downstreams[v].h2s.send.isDrained {
            // Nothing waits for nghttp2 (a head, framing, or the body's end): the send is done.
            downstreams[v].h2s.send.start = 0
            downstreams[v].h2s.send.end = 0
            downstreams[v].h2s.send.reportSent = true
            h2Ready(v)
        }
        if downstreams[v].h2s.headSubmitted { link.session.resume(stream: stream) }
        h2Flush(parent, reactor)
    }

    /// Reads response heads from the front of the stream's `out` (interim ones are sent as they come), submits
    /// the final one, and leaves the body bytes after it. False when the stream was reset instead.
    private func h2ResponseHead(_ v: DID, _ link: H2Link, _ stream: Int32, _ buffer: UnsafeMutableRawBufferPointer,
                                _ reactor: Reactor<Backend>) -> Bool {
        let x = downstreams[v].exchange
        while true {
            if downstreams[v].h2s.parser < 0 {
                let p = responseParsers.take()
                responseParsers.parsers[Int(p)].respondingToHEAD = exchanges[x].method == .head
                downstreams[v].h2s.parser = p
            }
            let p = Int(downstreams[v].h2s.parser)
            let bytes = unsafe UnsafeRawBufferPointer(rebasing: buffer[0..<downstreams[v].h2s.send.end])
            let progress: HTTP1Parser.Progress
            do {
                progress = try unsafe bytes.withMemoryRebound(to: UInt8.self) { try unsafe responseParsers.parsers[p].parse($0.span) }
            } catch {
                // The engine writes the heads it sends: a head it cannot have written. Reset.
                bug("HTTP/2 stream: response head the engine wrote does not parse: \(error)")
                link.session.reset(stream: stream, code: HTTP2ErrorCode.internalError)
                closeDownstream(v, reset: false, reactor)
                return false
            }
            guard progress == .complete else { return true }  // the rest of the head comes with the next send
            // (What the rest needs of the head, read before the parser is reset: a copy of the head alive across
            // the reset would share its field array, and the reset would then allocate a new one.)
            let (hasBody, interim, length, framing) = unsafe h2SubmitResponseHead(link, stream, p, bytes)
            // The head's bytes are done with: what follows moves to the front.
            let rest = downstreams[v].h2s.send.end - length
            unsafe buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + length, byteCount: rest)
            downstreams[v].h2s.send.end = rest
            responseParsers.parsers[p].reset()
            responseParsers.parsers[p].respondingToHEAD = exchanges[x].method == .head
            if interim { continue }
            responseParsers.give(downstreams[v].h2s.parser)
            downstreams[v].h2s.parser = -1
            downstreams[v].h2s.headSubmitted = true
            if framing == .chunked { h2LendTrailers(&downstreams[v].h2s.send.body) }
            downstreams[v].h2s.send.body.begin(framing)
            if !hasBody { downstreams[v].h2s.send.body.ended = true }
            downstreams[v].h2s.send.end = unsafe downstreams[v].h2s.send.body.absorb(buffer, from: 0, end: downstreams[v].h2s.send.end)
            h2TrailerStatus(v)
            return true
        }
    }

    /// Submits the response head parser `p` holds (read from `bytes`) on `stream`: whether a body follows, whether
    /// it was interim, its length and its body's framing.
    private func h2SubmitResponseHead(_ link: H2Link, _ stream: Int32, _ p: Int, _ bytes: UnsafeRawBufferPointer)
        -> (hasBody: Bool, interim: Bool, length: Int, framing: BodyFraming) {
        let head = responseParsers.parsers[p].head
        link.session.beginHead()
        let hasBody = unsafe HTTP2Translation.http2Response(head, bytes, into: link.session)
        let interim = head.isInterim && head.status != 101
        _ = link.session.submitResponse(stream: stream, hasBody: hasBody, interim: interim)
        return (hasBody, interim, head.length, head.framing)
    }

    /// nghttp2 frames a stream's body: the bytes waiting in its `out`, and its end once the response ended.
    func h2BodyRead(_ parent: DID, _ stream: Int32, _ into: UnsafeMutableRawBufferPointer) -> HTTP2BodyRead {
        guard downstreams.isCurrent(parent), let link = downstreams[parent].h2, let v = link.connection(of: stream) else {
            // A stream whose connection the engine has closed after its response: it ends here.
            return .bytes(0, end: true)
        }
        guard downstreams[v].h2s.send.out >= 0 else {
            // Nothing waiting (its buffer went back once drained): the body goes on when the engine sends more.
            return downstreams[v].h2s.send.body.ended ? link.endBody(stream, downstreams[v].h2s.send.body, 0) : .wait
        }
        let buffer = unsafe pool.bytes(UInt16(downstreams[v].h2s.send.out), length: pool.size)
        let (n, drained) = unsafe downstreams[v].h2s.send.read(buffer, into: into)
        if drained {
            // Nothing waits in `out`: it goes back (at the next iteration), so a stream whose response waits holds
            // no buffer.
            downstreams[v].h2s.send.releaseOut = true
            h2Ready(v)
            if downstreams[v].h2s.send.unreported > 0 || n > 0 { downstreams[v].h2s.send.reportSent = true }
            if downstreams[v].h2s.send.body.ended { return link.endBody(stream, downstreams[v].h2s.send.body, n) }
        }
        return n == 0 ? .wait : .bytes(n, end: false)
    }

    /// A gRPC response's trailers came through the engine (from an HTTP/1.1 upstream's chunked body, or an HTTP/2
    /// one's written as such): its `grpc-status` is the exchange's.
    /// Trailers the upstream sent beside a body whose framing could not carry them (an HTTP/2 upstream's response
    /// with a Content-Length) join its end here, before the exchange may end.
    private func h2TrailerStatus(_ v: DID) {
        guard downstreams[v].h2s.send.body.ended else { return }
        let x = downstreams[v].exchange
        if !downstreams[v].h2s.send.body.hasTrailers && exchanges.isCurrent(x) && !exchanges[x].responseTrailers.isEmpty {
            h2TakeBackTrailers(&downstreams[v].h2s.send.body)
            swap(&downstreams[v].h2s.send.body.trailers, &exchanges[x].responseTrailers)
        }
        guard downstreams[v].h2s.send.body.hasTrailers else { return }
        guard exchanges.isCurrent(x), exchanges[x].report.grpc,
              let g = GRPC.status(inTrailerSection: downstreams[v].h2s.send.body.trailers) else { return }
        exchanges[x].report.grpcStatus = Int16(clamping: g)
        if let m = GRPC.message(inTrailerSection: downstreams[v].h2s.send.body.trailers) { exchanges[x].report.grpcMessage.set(m) }
    }

    // MARK: - A stream's end

    /// The engine is done with a stream's connection (`lingerClose` after a response; `closeDownstream`): the
    /// stream ends there, reset unless both sides ended.
    func h2StreamClose(_ v: DID, _ reactor: Reactor<Backend>) {
        guard let parent = downstreams[v].h2s.parent, downstreams.isCurrent(parent), let link = downstreams[parent].h2 else {
            return
        }
        let stream = downstreams[v].h2s.stream
        // Body bytes gathered and never handed over: off the connection all the same.
        var gathered = 0
        for i in 0..<downstreams[v].h2s.bodyCount { gathered += downstreams[v].h2s.bodyLengths[i] }
        link.session.consumeConnection(gathered)
        let drained = downstreams[v].h2s.send.start == downstreams[v].h2s.send.end
        var endsByClose = false
        if downstreams[v].h2s.graceful && downstreams[v].h2s.headSubmitted && downstreams[v].h2s.send.body.framing == .untilClose
            && drained && !downstreams[v].h2s.send.body.broken {
            // A response whose end was its connection's close: END_STREAM (nghttp2 asks for the rest of the body
            // and, the stream's slot gone, hears it ended).
            downstreams[v].h2s.send.body.ended = true
            endsByClose = true
            link.session.resume(stream: stream)
        }
        if !downstreams[v].h2s.gone {
            if !downstreams[v].h2s.send.body.ended || !downstreams[v].h2s.headSubmitted || !drained || downstreams[v].h2s.send.body.broken {
                // Cut short (by a timeout, an upstream failure, the stop), or bytes nghttp2 has not taken yet: the
                // client must not take what it got for the whole response.
                link.session.reset(stream: stream, code: HTTP2ErrorCode.cancel)
            } else if !downstreams[v].h2s.requestEnded && !endsByClose {
                // A complete response before the whole request: the client may stop sending (RFC 9113 §8.1).
                link.session.reset(stream: stream, code: HTTP2ErrorCode.noError)
            }
        }
        if let i = link.streams.firstIndex(where: { $0.connection == v }) { link.streams.remove(at: i) }
        if link.streams.isEmpty {
            downstreams[parent].idleSince = System.monotonicNanos()
            // Idle as a keep-alive connection between requests is: the first to go at the descriptor cap.
            if !link.closing && downstreams[parent].phase == .open { idle.append(parent, downstreams) }
            // Draining, the connection's last stream ended: it closes once its frames are out.
            if draining && link.session.drain == .final { link.closing = true }
        }
        h2Flush(parent, reactor)
    }

    /// A stream's connection slot is freed: its buffers go back.
    func h2StreamFree(_ v: DID, _ reactor: Reactor<Backend>) {
        let parent = downstreams[v].h2s.parent
        if downstreams[v].h2s.head >= 0 { release(UInt16(downstreams[v].h2s.head), reactor) }
        if downstreams[v].h2s.send.out >= 0 {
            release(UInt16(downstreams[v].h2s.send.out), reactor)
            h2GaveBuffer(parent)
        }
        for i in 0..<downstreams[v].h2s.bodyCount {
            release(UInt16(downstreams[v].h2s.bodies[i]), reactor)
            h2GaveBuffer(parent)
        }
        if downstreams[v].h2s.parser >= 0 { responseParsers.give(downstreams[v].h2s.parser) }
        h2TakeBackTrailers(&downstreams[v].h2s.send.body)
        downstreams[v].h2s = H2StreamState()
    }
}
