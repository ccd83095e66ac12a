// HTTP/2 and HTTP/1.1 heads for a proxy that speaks one to the client and the other to the upstream (RFC 9113
// §8.2-8.3, RFC 9112): what changes as a head crosses, both ways.
//
// - HTTP/2 → HTTP/1.1: the pseudo-header fields become the request-line (or status-line) and Host; `cookie` fields
//   split into crumbs are joined with "; " (RFC 9113 §8.2.3); a body without Content-Length is sent chunked. nghttp2
//   has already refused what RFC 9113 makes malformed (connection-specific fields, `te` other than "trailers",
//   upper-case names, pseudo-header fields out of place, a Content-Length the DATA frames contradict).
// - HTTP/1.1 → HTTP/2: names are lower-cased; connection-specific fields (Connection, Keep-Alive,
//   Proxy-Connection, Transfer-Encoding, Upgrade, and those Connection names) are dropped, `te` is kept only as
//   "trailers"; Host becomes `:authority`.
import TernCore

public enum HTTP2Translation {
    /// How a body crossing to HTTP/1.1 is framed.
    public enum Framing: Equatable, Sendable {
        case none
        case contentLength(UInt64)
        case chunked
    }

    /// Why an HTTP/2 head cannot be written as HTTP/1.1 (the stream is answered 400, or reset).
    public enum Malformed: Error, Equatable, Sendable {
        /// Neither `:authority` nor Host.
        case noAuthority
        /// `:authority` and Host name different hosts (RFC 9113 §8.3.1).
        case hostDiffers
        /// A `:status` that is not three digits, or missing.
        case badStatus
        case badContentLength
    }

    // MARK: HTTP/2 → HTTP/1.1

    /// Appends the HTTP/1.1 request head (request-line, Host first, the fields, the framing, the empty line) for
    /// the HTTP/2 request head `fields` of `session` (an `HTTP2Event.head` range). `endStream`: its HEADERS ended
    /// the stream (no body).
    public static func http1Request(_ session: HTTP2Session, _ fields: Range<Int>, endStream: Bool,
                                    into out: inout [UInt8]) -> Result<Framing, Malformed> {
        let f = session.fields, b = session.headerBytes
        var method: Range<Int>? = nil, authority: Range<Int>? = nil, path: Range<Int>? = nil
        var host: Range<Int>? = nil, length: UInt64? = nil, cookies = 0
        for i in fields {
            let field = f[i]
            if b[field.name.lowerBound] == colon {
                switch field.name.count {
                case 7 where b[field.name].elementsEqual(Names.method): method = field.value
                case 10 where b[field.name].elementsEqual(Names.authority): authority = field.value
                case 5 where b[field.name].elementsEqual(Names.path): path = field.value
                default: break
                }
                continue
            }
            switch field.known {
            case .host: host = field.value
            case .contentLength:
                guard let n = decimal(b[field.value]), length == nil || length == n else { return .failure(.badContentLength) }
                length = n
            default: if b[field.name].elementsEqual(Names.cookie) { cookies += 1 }
            }
        }
        guard let method, let target = authority ?? host else { return .failure(.noAuthority) }
        if let authority, let host, !equalsIgnoringCase(b[authority], b[host]) { return .failure(.hostDiffers) }
        let connect = b[method].elementsEqual(Names.connect)
        out.append(contentsOf: b[method])
        out.append(space)
        out.append(contentsOf: connect || path == nil ? b[target] : b[path!])
        out.append(contentsOf: Names.http11Line)
        out.append(contentsOf: Names.hostColon)
        out.append(contentsOf: b[target])
        out.append(contentsOf: crlf)
        var cookieWritten = false
        for i in fields {
            let field = f[i]
            if b[field.name.lowerBound] == colon || field.known == .host { continue }
            if cookies > 1 && b[field.name].elementsEqual(Names.cookie) {
                // The crumbs, joined in order into one field (RFC 9113 §8.2.3), at the first one's place.
                if cookieWritten { continue }
                cookieWritten = true
                out.append(contentsOf: Names.cookie)
                out.append(contentsOf: colonSpace)
                var first = true
                for j in fields where !(b[f[j].name.lowerBound] == colon) && b[f[j].name].elementsEqual(Names.cookie) {
                    if !first { out.append(contentsOf: semicolonSpace) }
                    out.append(contentsOf: b[f[j].value])
                    first = false
                }
                out.append(contentsOf: crlf)
                continue
            }
            line(b[field.name], b[field.value], into: &out)
        }
        let framing: Framing
        if let length {
            framing = .contentLength(length)
        } else if endStream || connect {
            framing = .none
        } else {
            out.append(contentsOf: Names.chunkedLine)
            framing = .chunked
        }
        out.append(contentsOf: crlf)
        return .success(framing)
    }

    /// Appends the HTTP/1.1 response head for the HTTP/2 response head `fields` of `session` (`:status`, then its
    /// fields). A response to HEAD, a 1xx, 204 or 304 has no body; otherwise one without Content-Length is sent
    /// chunked, or, when its HEADERS ended the stream, with `content-length: 0`.
    public static func http1Response(_ session: HTTP2Session, _ fields: Range<Int>, endStream: Bool, toHEAD: Bool,
                                     into out: inout [UInt8]) -> Result<Framing, Malformed> {
        let f = session.fields, b = session.headerBytes
        var status = -1, length: UInt64? = nil
        for i in fields where b[f[i].name].elementsEqual(Names.status) {
            guard f[i].value.count == 3, let s = decimal(b[f[i].value]), s >= 100 else { return .failure(.badStatus) }
            status = Int(s)
        }
        guard status >= 100 else { return .failure(.badStatus) }
        out.append(contentsOf: Names.http11)
        out.append(space)
        appendDecimal(status, into: &out)
        out.append(space)
        out.append(contentsOf: HTTPReason.phraseBytes(status))
        out.append(contentsOf: crlf)
        for i in fields where b[f[i].name.lowerBound] != colon {
            if f[i].known == .contentLength {
                guard let n = decimal(b[f[i].value]) else { return .failure(.badContentLength) }
                length = n
            }
            line(b[f[i].name], b[f[i].value], into: &out)
        }
        let framing: Framing
        if toHEAD || status < 200 || status == 204 || status == 304 {
            framing = .none
        } else if let length {
            framing = .contentLength(length)
        } else if endStream {
            out.append(contentsOf: Names.contentLengthZeroLine)
            framing = .none
        } else {
            out.append(contentsOf: Names.chunkedLine)
            framing = .chunked
        }
        out.append(contentsOf: crlf)
        return .success(framing)
    }

    /// Appends HTTP/2 trailers `fields` of `session` as the end of a chunked body: the last chunk, the trailer
    /// fields, the empty line.
    public static func http1Trailers(_ session: HTTP2Session, _ fields: Range<Int>, into out: inout [UInt8]) {
        out.append(contentsOf: Names.lastChunk)
        http1TrailerSection(session, fields, into: &out)
    }

    /// Appends HTTP/2 trailers `fields` of `session` as an HTTP/1.1 trailer section (its field lines, leaving out
    /// those a trailer section must not carry, then the empty line): what a body whose framing cannot carry them (a
    /// Content-Length) keeps beside it for an HTTP/2 peer.
    public static func http1TrailerSection(_ session: HTTP2Session, _ fields: Range<Int>, into out: inout [UInt8]) {
        let f = session.fields, b = session.headerBytes
        for i in fields where b[f[i].name.lowerBound] != colon && !forbiddenInTrailers(b[f[i].name]) {
            line(b[f[i].name], b[f[i].value], into: &out)
        }
        out.append(contentsOf: crlf)
    }

    /// Adds the fields of an HTTP/1.1 trailer section (`name: value` lines, each ending in CRLF, as a chunked body's
    /// decoder checked them; the empty line that ends the section may be there) to the head `session` is building,
    /// names lower-cased, leaving out those a trailer section must not carry (RFC 9110 §6.5.1: framing, routing,
    /// authentication, request modifiers, response control, content metadata) and connection-specific ones.
    /// Returns how many fields it added.
    @discardableResult
    public static func http2Trailers(_ section: [UInt8], into session: HTTP2Session) -> Int {
        var added = 0, at = 0
        while at < section.count {
            guard let colonAt = section[at...].firstIndex(of: colon),
                  let cr = section[at...].firstIndex(of: 0x0D), colonAt < cr else { break }
            let name = section[at..<colonAt]
            var lo = colonAt + 1, hi = cr
            while lo < hi && (section[lo] == space || section[lo] == tab) { lo += 1 }
            while hi > lo && (section[hi - 1] == space || section[hi - 1] == tab) { hi -= 1 }
            if !forbiddenInTrailers(name) {
                session.addFieldLowercasingName(name, section[lo..<hi])
                added += 1
            }
            at = cr + 2
        }
        return added
    }

    /// Whether a field may not be sent in trailers (RFC 9110 §6.5.1, and the connection-specific fields HTTP/2
    /// forbids everywhere, RFC 9113 §8.2.2), whatever the letter case.
    public static func forbiddenInTrailers<C: Collection<UInt8>>(_ name: C) -> Bool {
        let lower = name.lazy.map(lowercased)
        for f in Names.forbiddenTrailers where f.count == name.count && f.elementsEqual(lower) { return true }
        return false
    }

    /// Appends a field line: `name: value` and CRLF.
    private static func line(_ name: ArraySlice<UInt8>, _ value: ArraySlice<UInt8>, into out: inout [UInt8]) {
        out.append(contentsOf: name)
        out.append(contentsOf: colonSpace)
        out.append(contentsOf: value)
        out.append(contentsOf: crlf)
    }

    /// Appends `n` (not negative) in decimal, without allocating.
    static func appendDecimal(_ n: Int, into out: inout [UInt8]) {
        var divisor = 1
        while n / divisor >= 10 { divisor *= 10 }
        while divisor > 0 {
            out.append(UInt8(0x30 + (n / divisor) % 10))
            divisor /= 10
        }
    }

    // MARK: HTTP/1.1 → HTTP/2

    /// Adds the HTTP/2 form of an HTTP/1.1 request head (parsed from `bytes`) to the head `session` is building
    /// (after `beginHead`): `:method`, `:scheme` (`scheme`), `:authority` (the Host, or an absolute-form target's
    /// authority), `:path` (origin form; an absolute-form target's path, `/` when it has none, `*` for an OPTIONS
    /// without one; `*`), then the fields. CONNECT carries
    /// `:method` and `:authority` only.
    @_specialize(exported: true, where B == UnsafeRawBufferPointer)
    @_specialize(exported: true, where B == [UInt8])
    public static func http2Request<B: RandomAccessCollection<UInt8>>(_ head: HTTP1Head, _ bytes: B, scheme: String,
                                                                      into session: HTTP2Session) where B.Index == Int {
        session.addField(Names.method, bytes[head.methodBytes])
        let connect = head.method == .connect
        if !connect { session.addField(Names.scheme, scheme.utf8) }
        if let host = head.host { session.addField(Names.authority, bytes[host]) }
        if !connect {
            var path = head.target
            if head.targetForm == .absolute {
                // "http://authority/path?q": the path from the first "/" after "//" (none: "/").
                let t = bytes[head.target]
                let afterScheme = (t.firstIndex(of: slash).map { $0 + 2 }) ?? t.startIndex
                if let p = t[min(afterScheme, t.endIndex)...].firstIndex(where: { $0 == slash || $0 == question }) {
                    path = p..<head.target.upperBound
                } else {
                    path = head.target.upperBound..<head.target.upperBound
                }
            }
            if path.isEmpty {
                // An OPTIONS to an absolute URI with no path asks about the server: "*" (RFC 9112 §3.2.4).
                session.addField(Names.path, head.method == .options ? Names.asterisk : Names.slashPath)
            } else if bytes[path.lowerBound] == question {
                session.addField(Names.path, Names.slashPath + Array(bytes[path]))
            } else {
                session.addField(Names.path, bytes[path])
            }
        }
        addFields(head, bytes, into: session)
    }

    /// Adds the HTTP/2 form of an HTTP/1.1 response head to the head `session` is building: `:status`, then the
    /// fields. Returns whether a body follows (`hasBody` for `submitResponse`).
    @_specialize(exported: true, where B == UnsafeRawBufferPointer)
    @_specialize(exported: true, where B == [UInt8])
    public static func http2Response<B: RandomAccessCollection<UInt8>>(_ head: HTTP1Head, _ bytes: B,
                                                                       into session: HTTP2Session) -> Bool where B.Index == Int {
        session.addStatus(head.status)
        addFields(head, bytes, into: session)
        switch head.framing {
        case .none, .contentLength(0): return false
        case .contentLength, .chunked, .untilClose: return true
        }
    }

    /// The fields of an HTTP/1.1 head fit for HTTP/2: lower-cased, without connection-specific fields (and those
    /// Connection names), Host (it is `:authority`), a `te` other than "trailers", or a Content-Length on a 1xx or
    /// 204.
    private static func addFields<B: RandomAccessCollection<UInt8>>(_ head: HTTP1Head, _ bytes: B,
                                                                    into session: HTTP2Session) where B.Index == Int {
        for field in head.fields {
            switch field.known {
            case .connection, .keepAlive, .proxyConnection, .transferEncoding, .upgrade, .host:
                continue
            case .te:
                guard equalsIgnoringCase(bytes[field.value], Names.trailers) else { continue }
            case .contentLength:
                // Kept (a response to HEAD announces its length too), but not on 1xx and 204, which have none.
                if head.status >= 100 && head.status < 200 || head.status == 204 { continue }
            default:
                if namedByConnection(field.name, head, bytes) { continue }
            }
            session.addFieldLowercasingName(bytes[field.name], bytes[field.value])
        }
    }

    /// Whether a Connection field of `head` lists the field name `name` (RFC 9110 §7.6.1).
    private static func namedByConnection<B: RandomAccessCollection<UInt8>>(_ name: Range<Int>, _ head: HTTP1Head,
                                                                           _ bytes: B) -> Bool where B.Index == Int {
        for c in head.fields where c.known == .connection {
            var start = c.value.lowerBound
            for i in c.value.lowerBound...c.value.upperBound where i == c.value.upperBound || bytes[i] == comma {
                var lo = start, hi = i
                while lo < hi && (bytes[lo] == space || bytes[lo] == tab) { lo += 1 }
                while hi > lo && (bytes[hi - 1] == space || bytes[hi - 1] == tab) { hi -= 1 }
                if equalsIgnoringCase(bytes[lo..<hi], bytes[name]) { return true }
                start = i + 1
            }
        }
        return false
    }

    // MARK: Bytes

    private static func equalsIgnoringCase<A: Collection<UInt8>, B: Collection<UInt8>>(_ a: A, _ b: B) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { lowercased($0) == lowercased($1) }
    }

    private static func lowercased(_ c: UInt8) -> UInt8 { c >= 0x41 && c <= 0x5A ? c | 0x20 : c }

    private static func decimal<C: Collection<UInt8>>(_ digits: C) -> UInt64? {
        guard !digits.isEmpty, digits.count <= 18 else { return nil }
        var n: UInt64 = 0
        for d in digits {
            guard d >= 0x30 && d <= 0x39 else { return nil }
            n = n * 10 + UInt64(d - 0x30)
        }
        return n
    }

    private static let colon = UInt8(ascii: ":"), space = UInt8(ascii: " "), tab = UInt8(ascii: "\t")
    private static let comma = UInt8(ascii: ","), slash = UInt8(ascii: "/"), question = UInt8(ascii: "?")
    private static let crlf: [UInt8] = [0x0D, 0x0A]
    private static let colonSpace: [UInt8] = [0x3A, 0x20]
    private static let semicolonSpace: [UInt8] = [0x3B, 0x20]

    private enum Names {
        static let method = Array(":method".utf8), scheme = Array(":scheme".utf8)
        static let authority = Array(":authority".utf8), path = Array(":path".utf8), status = Array(":status".utf8)
        static let cookie = Array("cookie".utf8), connect = Array("CONNECT".utf8), trailers = Array("trailers".utf8)
        static let http11 = Array("HTTP/1.1".utf8), http11Line = Array(" HTTP/1.1\r\n".utf8)
        static let hostColon = Array("host: ".utf8), chunkedLine = Array("transfer-encoding: chunked\r\n".utf8)
        static let contentLengthZeroLine = Array("content-length: 0\r\n".utf8), lastChunk = Array("0\r\n".utf8)
        static let slashPath = Array("/".utf8), asterisk = Array("*".utf8)
        static let forbiddenTrailers: [[UInt8]] = [
            "content-length", "transfer-encoding", "host", "te", "trailer", "connection", "keep-alive",
            "proxy-connection", "upgrade", "authorization", "proxy-authorization", "proxy-authenticate",
            "www-authenticate", "cookie", "set-cookie", "cache-control", "expect", "max-forwards", "pragma", "range",
            "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range", "age", "expires",
            "date", "location", "retry-after", "vary", "warning", "content-encoding", "content-type", "content-range",
        ].map { Array($0.utf8) }
    }
}
