// What HTTP/2 connections on both sides share (issue 17): the session, the spare buffer frames go out in, the
// frames that did not fit it, and the spare buffers its streams hold; and the engine's HTTP/1.1 body bytes read
// back as an HTTP/2 body (`H2BodyOut`). Downstream/HTTPProxy+H2+Unsafe.swift serves clients,
// Upstream/HTTPProxy+H2Upstream+Unsafe.swift talks to upstreams.
import TernCore
import TernHTTP
import TernIO

/// The spare buffers all HTTP/2 connections of a reactor hold for their streams: at most half the spare pool, so
/// that streams whose peers read nothing (or send nothing) leave the rest to new heads, frames and TLS records.
final class H2Shares {
    var held = 0
    let limit: Int
    init(limit: Int) { self.limit = limit }
}

/// An HTTP/2 connection's session and output, either side.
class H2Connection {
    let session: HTTP2Session
    /// The spare buffer being sent (-1: none).
    var out: Int32 = -1
    /// Frames nghttp2 gave that did not fit the buffer being filled: sent next (capacity kept).
    var overflow: [UInt8] = []
    /// The connection is closing: no stream is opened on it any more, and it closes once its output is out.
    var closing = false
    /// Waiting for a spare buffer.
    var starved = false
    /// Spare buffers its streams hold (request or response bodies a peer's windows can keep waiting): at most
    /// `H2Wire.buffersPerConnection`, so one connection cannot take the reactor's spare buffers from everyone else,
    /// and, all connections of the reactor together, at most `H2Shares.limit` (`shares`).
    var buffersHeld = 0 {
        didSet { shares?.held += buffersHeld - oldValue }
    }
    /// What every HTTP/2 connection of the reactor holds (set when the connection is made).
    var shares: H2Shares? = nil
    /// A buffer is being filled (a stream closed meanwhile does not flush again inside it); the session's events
    /// are being handled.
    var flushing = false
    var inEvents = false

    init(session: HTTP2Session) {
        self.session = session
    }

    /// Fills `room` from `filled` on with the frames waiting (those that did not fit last time first, then the
    /// session's), keeping what does not fit for next time. Returns how far it is filled.
    func fill(_ room: UnsafeMutableRawBufferPointer, from filled: Int) -> Int {
        var n = filled
        if !overflow.isEmpty {
            let k = min(overflow.count, room.count - n)
            unsafe overflow.withUnsafeBytes { unsafe (room.baseAddress! + n).copyMemory(from: $0.baseAddress!, byteCount: k) }
            overflow.removeSubrange(0..<k)
            n += k
        }
        while n < room.count && overflow.isEmpty {
            let chunk = unsafe session.nextOutput()
            if unsafe chunk.isEmpty { break }
            let k = min(chunk.count, room.count - n)
            unsafe (room.baseAddress! + n).copyMemory(from: chunk.baseAddress!, byteCount: k)
            n += k
            if k < chunk.count { unsafe overflow.append(contentsOf: chunk[k...]) }
        }
        return n
    }
}

/// What the engine sends into an HTTP/2 stream (a response to a client, a request to an upstream), as HTTP/1.1
/// bytes: copied into a spare buffer (`out`), its head read there, then its body's bytes, de-framed, waiting in
/// [start, end) until nghttp2 frames them.
struct H2Send {
    var out: Int32 = -1
    var start = 0
    var end = 0
    var body = H2BodyOut()
    /// Bytes of the engine's send to report once nghttp2 has taken them (`reportSent`: at the next iteration).
    var unreported = 0
    var reportSent = false
    /// `out` was drained by nghttp2 and goes back to the pool at the next iteration (a stream whose message
    /// waits holds no buffer).
    var releaseOut = false
    /// The engine's bytes wait for a spare buffer to be copied into.
    var starvedSend = false

    /// Nothing waits for nghttp2.
    var isDrained: Bool { start == end }

    /// Moves what nghttp2 has not taken yet to the front of `buffer` (`out`'s bytes) and copies after it as much of
    /// entry `entry` of `table` as fits. Returns where the new bytes begin and how many were copied.
    mutating func take(_ table: IOVecTable, _ entry: Int, into buffer: UnsafeMutableRawBufferPointer) -> (from: Int, copied: Int) {
        if start > 0 {
            unsafe buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: end - start)
            end -= start
            start = 0
        }
        let from = end
        let copied = unsafe table.copy(entry, into: UnsafeMutableRawBufferPointer(rebasing: buffer[from...]))
        end += copied
        return (from, copied)
    }

    /// Gives nghttp2 up to `into.count` of the waiting bytes of `buffer`. Returns how many, and whether nothing waits
    /// any more (then the buffer is empty from its start).
    mutating func read(_ buffer: UnsafeRawBufferPointer, into: UnsafeMutableRawBufferPointer) -> (n: Int, drained: Bool) {
        let n = min(end - start, into.count)
        if n > 0 {
            unsafe into.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: n)
            start += n
        }
        guard start == end else { return (n, false) }
        start = 0
        end = 0
        return (n, true)
    }
}

extension HTTPProxy {
    /// Lends `body` (about to begin a chunked body) an array for its trailer section from those kept, so that the
    /// trailers it may carry are stored without allocating.
    func h2LendTrailers(_ body: inout H2BodyOut) {
        guard body.trailers.capacity == 0 else { return }
        body.trailers = h2TakeTrailerArray()
    }

    /// An array for a trailer section from those kept. When none is left, `H2Wire.trailerArraysMadeAtOnce` are made
    /// at once, so that streams with trailers overlapping a little more than before (a stream freed an iteration after
    /// the next began) find one without allocating in steady state.
    private func h2TakeTrailerArray() -> [UInt8] {
        if h2TrailerArrays.isEmpty {
            for _ in 0..<H2Wire.trailerArraysMadeAtOnce {
                var array: [UInt8] = []
                array.reserveCapacity(H2Wire.trailerArrayFirstCapacity)
                h2TrailerArrays.append(array)
            }
        }
        return h2TrailerArrays.removeLast()
    }

    /// Takes back the array `body` kept its trailer section in (its stream ends), emptied with its capacity: at most
    /// `H2Wire.trailerArraysKept` of them, each at most `H2Wire.trailerArrayCapacity` bytes (a larger one is freed).
    func h2TakeBackTrailers(_ body: inout H2BodyOut) {
        h2TakeBackTrailers(&body.trailers)
    }

    func h2TakeBackTrailers(_ trailers: inout [UInt8]) {
        guard trailers.capacity > 0 else { return }
        var array: [UInt8] = []
        swap(&array, &trailers)
        guard array.capacity <= H2Wire.trailerArrayCapacity && h2TrailerArrays.count < H2Wire.trailerArraysKept else { return }
        array.removeAll(keepingCapacity: true)
        h2TrailerArrays.append(array)
    }

    /// Keeps HTTP/2 trailers `fields` of `session` in `trailers` (an exchange's `requestTrailers` or
    /// `responseTrailers`, in an array lent from those kept) as an HTTP/1.1 trailer section.
    func h2KeepTrailers(_ session: HTTP2Session, _ fields: Range<Int>, in trailers: inout [UInt8]) {
        if trailers.capacity == 0 { trailers = h2TakeTrailerArray() }
        trailers.removeAll(keepingCapacity: true)
        HTTP2Translation.http1TrailerSection(session, fields, into: &trailers)
        // (Only its empty line: none at all.)
        if trailers.count <= 2 { trailers.removeAll(keepingCapacity: true) }
    }

    /// The exchange's kept trailers go back (its request is finished).
    func h2TakeBackExchangeTrailers(_ x: XID) {
        h2TakeBackTrailers(&exchanges[x].requestTrailers)
        h2TakeBackTrailers(&exchanges[x].responseTrailers)
    }
}

extension H2Connection {
    /// The end of a body nghttp2 is reading for `stream`: with its trailers (a chunked body's trailer section,
    /// fields a trailer section may carry) when it has any.
    /// `kept`: trailers kept beside the body (an exchange's), sent when the body itself has none.
    func endBody(_ stream: Int32, _ body: H2BodyOut, _ n: Int, kept: [UInt8] = []) -> HTTP2BodyRead {
        guard body.hasTrailers || !kept.isEmpty else { return .bytes(n, end: true) }
        session.beginHead()
        guard HTTP2Translation.http2Trailers(body.hasTrailers ? body.trailers : kept, into: session) > 0,
              session.submitTrailers(stream: stream) else {
            return .bytes(n, end: true)
        }
        return .endWithTrailers(n)
    }
}

/// A message body the engine writes as HTTP/1.1 (a response to a client stream, a request to an upstream
/// stream), read back as an HTTP/2 body: its framing's bytes removed, a chunked body's trailer section kept to be
/// sent as HTTP/2 trailers.
struct H2BodyOut {
    var framing = BodyFraming.none
    /// Content-Length bytes still to come.
    var remaining: UInt64 = 0
    var decoder = ChunkedDecoder()
    /// The body's end was read (what waits in the buffer is the last of it).
    var ended = false
    /// The chunking could not be read (the stream is reset, never ended).
    var broken = false
    /// Past the last chunk: the trailer section's bytes as they came (its field lines and the empty line), once
    /// there are any (an array only for a body that has trailers).
    var inTrailers = false
    var trailers: [UInt8] = []

    /// Begins a body of `framing` (the trailer array keeps its capacity: see `HTTPProxy.h2LendTrailers`).
    mutating func begin(_ framing: BodyFraming) {
        self.framing = framing
        remaining = 0
        ended = false
        broken = false
        inTrailers = false
        trailers.removeAll(keepingCapacity: true)
        switch framing {
        case .none: ended = true
        case .contentLength(let n):
            remaining = n
            ended = n == 0
        case .chunked: decoder.reset()
        case .untilClose: break
        }
    }

    /// Whether the trailer section holds a field (more than its empty line).
    var hasTrailers: Bool { trailers.count > 2 }

    /// Takes the body bytes in `buffer[from..<end]`: counted, or de-chunked in place (the data moves down over its
    /// framing; trailer bytes are copied out). Returns where the data ends.
    mutating func absorb(_ buffer: UnsafeMutableRawBufferPointer, from: Int, end: Int) -> Int {
        switch framing {
        case .none:
            return from
        case .contentLength:
            let take = min(UInt64(end - from), remaining)
            remaining -= take
            if remaining == 0 { ended = true }
            return from + Int(take)
        case .untilClose:
            return end
        case .chunked:
            var read = from, write = from
            while read < end && !ended {
                let piece = unsafe UnsafeRawBufferPointer(rebasing: buffer[read..<end])
                let output: ChunkedDecoder.Output
                do {
                    output = try unsafe piece.withMemoryRebound(to: UInt8.self) { try unsafe decoder.decode($0.span) }
                } catch {
                    broken = true
                    break
                }
                switch output.event {
                case .data(let r):
                    unsafe (buffer.baseAddress! + write).copyMemory(from: buffer.baseAddress! + read + r.lowerBound, byteCount: r.count)
                    write += r.count
                case .lastChunk:
                    inTrailers = true
                case .end, .needMore:
                    // (A section that is only its empty line is not kept: a body without trailers stores nothing.)
                    let emptyLine = unsafe piece[0..<output.consumed].allSatisfy { $0 == 0x0D || $0 == 0x0A }
                    if inTrailers && !(trailers.isEmpty && emptyLine) {
                        unsafe trailers.append(contentsOf: piece[0..<output.consumed])
                    }
                    if output.event == .end { ended = true }
                }
                read += output.consumed
                if output.consumed == 0 && output.event == .needMore { break }
            }
            return write
        }
    }
}
