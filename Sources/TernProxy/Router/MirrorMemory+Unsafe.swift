// The bytes of mirrored requests (Router/HTTPProxy+Mirror.swift) and the reading of their responses: raw memory,
// kept apart from the safe code that drives mirror connections.
import TernCore
import TernHTTP
import TernIO

/// One region per mirror connection slot, allocated the first time the slot carries a mirror and kept for the
/// reactor's life, so that mirroring allocates nothing in steady state: the request as it is sent (a copy of what
/// the client's request was forwarded as, its Host given `-shadow`), then room for the response head.
@safe final class MirrorMemory {
    let requestCapacity: Int
    let headCapacity: Int
    /// (Made once: an array literal in a function would be allocated per call.)
    static let suffix: [UInt8] = Array("-shadow".utf8)
    static let hostName: [UInt8] = Array("host:".utf8)
    private var regions: [UnsafeMutableRawPointer?]

    init(slots: Int, requestCapacity: Int, headCapacity: Int) {
        self.requestCapacity = requestCapacity
        self.headCapacity = headCapacity
        unsafe regions = [UnsafeMutableRawPointer?](repeating: nil, count: slots)
    }

    deinit {
        // SAFETY: each region came from allocate below and is freed once, here.
        for unsafe r in unsafe regions { unsafe r?.deallocate() }
    }

    private func region(_ slot: Int) -> UnsafeMutableRawPointer {
        // SAFETY: slot < regions.count (slots of the mirror slab); a region is made once and lives as long as self.
        if let r = unsafe regions[slot] { return unsafe r }
        let r = UnsafeMutableRawPointer.allocate(byteCount: requestCapacity + headCapacity, alignment: 16)
        unsafe regions[slot] = unsafe r
        return unsafe r
    }

    /// Copies what entry `entry` of `vectors` names (a request composed for its upstream) into slot `slot`, with
    /// `-shadow` appended to the Host field's host (before its port) when `shadow`, as Envoy marks a mirrored
    /// request. Returns its length; nil when it does not fit or has no Host field.
    func copyShadow(_ slot: Int, from vectors: IOVecTable, entry: Int, suffix shadow: Bool) -> Int? {
        let n = vectors.remaining(entry)
        let added = shadow ? Self.suffix.count : 0
        guard n + Self.suffix.count <= requestCapacity else { return nil }
        let base = unsafe region(slot)
        // SAFETY: the region holds requestCapacity ≥ n + 7 bytes; the copy writes at most n.
        let copied = unsafe vectors.copy(entry, into: UnsafeMutableRawBufferPointer(start: base, count: n))
        guard copied == n else { return nil }
        // SAFETY: the first n bytes of the region were just written; the span lives only for this call.
        let bytes = unsafe base.assumingMemoryBound(to: UInt8.self)
        guard let at = unsafe Self.shadowInsertion(UnsafeBufferPointer(start: bytes, count: n).span) else { return nil }
        guard added > 0 else { return n }
        // SAFETY: the tail [at, n) moves 7 bytes on, within the region's n + 7 ≤ requestCapacity bytes.
        unsafe (base + at + added).copyMemory(from: base + at, byteCount: n - at)
        for i in 0..<added { unsafe bytes[at + i] = Self.suffix[i] }
        return n + added
    }

    /// Where `-shadow` goes in the request head `head`: after the Host field's host, before its port (an IPv6
    /// literal's port follows its bracket). nil: no Host field.
    static func shadowInsertion(_ head: borrowing Span<UInt8>) -> Int? {
        let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), space = UInt8(ascii: " "), tab = UInt8(ascii: "\t")
        let name = Self.hostName
        func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
        var i = 0
        // Each field line starts after a CRLF; the head ends at an empty line.
        while i + 1 < head.count {
            guard head[i] == cr, head[i + 1] == lf else {
                i += 1
                continue
            }
            let line = i + 2
            i = line
            if line < head.count, head[line] == cr { return nil }  // the end of the head
            guard line + name.count <= head.count else { return nil }
            var same = true
            for k in 0..<name.count where same {
                // ASCII case-insensitive ("host" is letters; the colon compares as is).
                same = (k == name.count - 1 ? head[line + k] : head[line + k] | 0x20) == name[k]
            }
            guard same else { continue }
            var start = line + name.count
            while start < head.count, head[start] == space || head[start] == tab { start += 1 }
            var end = start
            while end < head.count, head[end] != cr { end += 1 }
            while end > start, head[end - 1] == space || head[end - 1] == tab { end -= 1 }
            // host [":" port]; an IPv6 literal is bracketed, so its colons are not a port's.
            var j = end
            while j > start, isDigit(head[j - 1]) { j -= 1 }
            if j > start + 1, j < end, head[j - 1] == UInt8(ascii: ":"),
               head[start] != UInt8(ascii: "[") || head[j - 2] == UInt8(ascii: "]") {
                return j - 1
            }
            return end
        }
        return nil
    }

    /// Sends the request bytes of slot `slot` from `from` to `to` on `fd` (the region stays as it is until the
    /// send completes: a slot carries one request at a time).
    func send<B: IOBackend>(_ slot: Int, from: Int, to: Int, fd: Int32, backend: B, token: Token) {
        // SAFETY: from ≤ to ≤ requestCapacity, within the slot's region, which lives as long as self.
        unsafe backend.send(fd: fd, bytes: UnsafeRawBufferPointer(start: region(slot) + from, count: to - from), token: token)
    }

    /// Feeds `count` received bytes of pooled buffer `id` to the response reader of slot `slot`.
    func feed(_ slot: Int, _ reader: inout MirrorResponse, buffers: BufferPool, id: UInt16, count: Int) -> MirrorResponse.Outcome {
        // SAFETY: the pooled buffer holds `count` received bytes until the caller releases it, after this call; the
        // head area is the slot's region past the request, `headCapacity` bytes.
        let piece = unsafe buffers.bytes(id, length: count)
        let head = unsafe UnsafeMutableRawBufferPointer(start: region(slot) + requestCapacity, count: headCapacity)
        return unsafe reader.feed(piece, headArea: head)
    }
}

/// Reads a mirrored request's response only far enough to know where it ends (so the connection can carry the
/// next mirror): its head, parsed in the slot's head area, then its body, counted or decoded and dropped.
struct MirrorResponse {
    enum Outcome: Equatable {
        case more
        /// Ended; `reusable`: the connection may carry another request.
        case done(reusable: Bool)
        case failed
    }
    var parser: HTTP1Parser
    var decoder = ChunkedDecoder()
    /// Response head bytes gathered in the head area.
    var headBytes = 0
    var inBody = false
    var body = BodyFraming.none
    var keepAlive = true
    /// The request was HEAD (its response has no body whatever its head says).
    var headRequest = false

    init() { parser = HTTP1Parser(kind: .response) }

    mutating func reset(headRequest: Bool) {
        parser.reset()
        parser.respondingToHEAD = headRequest
        decoder.reset()
        headBytes = 0
        inBody = false
        body = .none
        keepAlive = true
        self.headRequest = headRequest
    }

    mutating func feed(_ piece: UnsafeRawBufferPointer, headArea: UnsafeMutableRawBufferPointer) -> Outcome {
        var rest = unsafe piece
        while true {
            if !inBody {
                let take = min(rest.count, headArea.count - headBytes)
                if take > 0 {
                    // SAFETY: headBytes + take ≤ headArea.count; take ≤ rest.count.
                    unsafe (headArea.baseAddress! + headBytes).copyMemory(from: rest.baseAddress!, byteCount: take)
                }
                headBytes += take
                unsafe rest = UnsafeRawBufferPointer(rebasing: rest[take...])
                let progress: HTTP1Parser.Progress
                do {
                    progress = try unsafe parser.parse(UnsafeRawBufferPointer(rebasing: headArea[..<headBytes]))
                } catch {
                    return .failed
                }
                guard case .complete = progress else {
                    return headBytes == headArea.count ? .failed : .more
                }
                let head = parser.head
                // Bytes past the head came in with it: the body's first, or the next head after a 1xx.
                let after = head.length
                let extra = headBytes - after
                if head.isInterim && head.status != 101 {
                    // SAFETY: [after, headBytes) lies in the head area; moved to its start.
                    if extra > 0 { unsafe headArea.baseAddress!.copyMemory(from: headArea.baseAddress! + after, byteCount: extra) }
                    headBytes = extra
                    parser.reset()
                    parser.respondingToHEAD = headRequest
                    continue  // the moved bytes are parsed again, then whatever else this receive brought
                }
                if head.status == 101 { return .failed }  // a mirror never upgrades
                inBody = true
                keepAlive = head.keepAlive
                body = headRequest || head.status == 204 || head.status == 304 ? .none : head.framing
                if extra > 0 {
                    // SAFETY: [after, headBytes) lies in the head area (and, filled first, rest is what the area
                    // could not take).
                    let first = unsafe UnsafeRawBufferPointer(start: headArea.baseAddress! + after, count: extra)
                    let outcome = unsafe consume(first)
                    let restEmpty = unsafe rest.isEmpty
                    if outcome == .more && !restEmpty { return unsafe consume(rest) }
                    // Ended with more bytes in this receive than the response had: the connection is not reused.
                    return restEmpty || outcome == .failed || outcome == .more ? outcome : .done(reusable: false)
                }
            }
            return unsafe consume(rest)
        }
    }

    /// Body bytes: counted (Content-Length), decoded (chunked) or ignored (until close). An end with bytes left
    /// over (an upstream answering more than was asked) makes the connection unusable.
    private mutating func consume(_ piece: UnsafeRawBufferPointer) -> Outcome {
        switch body {
        case .none:
            return .done(reusable: keepAlive && (unsafe piece.isEmpty))
        case .contentLength(let n):
            let take = UInt64(piece.count)
            if take < n {
                body = .contentLength(n - take)
                return .more
            }
            return .done(reusable: keepAlive && take == n)
        case .chunked:
            var rest = unsafe piece
            while unsafe !rest.isEmpty {
                let out: ChunkedDecoder.Output
                do {
                    out = try unsafe decoder.decode(rest)
                } catch {
                    return .failed
                }
                unsafe rest = UnsafeRawBufferPointer(rebasing: rest[out.consumed...])
                if out.event == .end { return .done(reusable: keepAlive && (unsafe rest.isEmpty)) }
                if out.event == .needMore { break }
            }
            return .more
        case .untilClose:
            return .more
        }
    }
}
