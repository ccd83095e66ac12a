import TernCore

/// An incremental, strict parser of HTTP/1.1 request and response heads that reads in place.
///
/// The caller keeps the bytes of a message in one buffer starting at its first byte and calls `parse` each time
/// more arrived, passing the whole buffer again; the parser resumes where it stopped (`scanned`) and never looks
/// back further than the start of the current line. When the head is complete, `head` holds ranges into that
/// buffer (see `HTTP1Head`); nothing is copied and, once `fields` has its reserved capacity, nothing is allocated.
/// Call `reset()` before the next message and pass a buffer that starts at it.
///
/// ```
///              skip CRLF (requests, §2.2)
///                  ┌──┐
///                  │  ▼
///   reset ──▶ ┌───────────┐ start-line CRLF  ┌────────────┐  CRLF (empty line)  ┌──────────┐
///             │ startLine │ ───────────────▶ │ fieldLines │ ──────────────────▶ │ complete │
///             └───────────┘                  └────────────┘                     └──────────┘
///                   │                          │  ▲   field-line CRLF              framing decided (§6.3),
///                   │                          └──┘                                keep-alive (§9.3)
///                   │ any refused byte, line or limit                │
///                   └──────────────────────────────▶ ┌────────┐ ◀────┘
///                                                     │ failed │  (sticky: every later call throws again)
///                                                     └────────┘
/// ```
///
/// Bytes are scanned once, in order; each line is checked when its CRLF arrives, and limits are checked byte by
/// byte while scanning. So the outcome does not depend on how the bytes were split into reads.
///
/// Rules, RFC 9112 unless marked, each refused with the `HTTPParseError` named:
/// - §2.2 Lines end in CRLF. A bare CR is refused (`bareCR`). A bare LF is refused too (`bareLF`): §2.2 lets a
///   recipient accept LF alone, but a proxy that accepts what its upstream refuses, or the reverse, is how
///   requests get smuggled, so Tern accepts only the form every implementation agrees on. Empty lines before a
///   request-line are skipped (§2.2 SHOULD); before a status-line they are refused.
/// - §3 request-line = method SP request-target SP HTTP-version, single spaces; method a token (RFC 9110 §9.1).
/// - §3.2 target forms: origin ("/..."), absolute ("scheme://..."), authority (CONNECT only, "host:port"), asterisk
///   (OPTIONS only). Target bytes are VCHAR without "#"; longer than `maxURIBytes` is 414.
/// - §2.3 HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive; anything but 1.0 and 1.1 is 505.
/// - §4 status-line = HTTP-version SP 3DIGIT SP reason; a missing SP before an empty reason is accepted (the reason
///   is never interpreted).
/// - §5.1 field-name ":" OWS field-value OWS; whitespace before the colon is refused (MUST, 400).
/// - §5.2 obs-fold (a line starting with SP or HTAB) is refused, including between start-line and first field
///   (§2.2).
/// - RFC 9110 §5.5 NUL, CTLs other than HTAB, and DEL are refused in values; names are tokens.
/// - §3.2 an HTTP/1.1 request has exactly one Host; more than one is 400 in any version.
/// - §6.1, §6.3 Transfer-Encoding: codings are tokens from the registry (chunked, gzip, deflate, compress,
///   x-gzip, x-compress) without parameters, else 501; chunked at most once (§7.1) and, in requests, last (400);
///   in a response whose final coding is not chunked, the body ends at close (§6.3 rule 4). With Content-Length
///   as well: refused (§6.3 rule 3 lets a server choose; a proxy must not). In HTTP/1.0: refused (§6.1, "faulty").
/// - RFC 9110 §8.6 Content-Length: 1*DIGIT, no sign, no spaces inside; a list or repeated field of identical
///   values is accepted as that value; differing values are refused.
/// - §6.3 responses: to HEAD, 1xx, 204 and 304 have no body; 2xx to CONNECT becomes a tunnel; else chunked,
///   Content-Length or until close.
/// - §9.3 keep-alive: HTTP/1.1 unless "close"; HTTP/1.0 only with "keep-alive"; never after a close-delimited body.
/// - Limits: head bytes over `maxHeaderBytes` or more than `maxHeaderCount` fields is 431.
public struct HTTP1Parser: Sendable {
    public enum Kind: Sendable { case request, response }

    /// Envoy-like defaults: max_request_headers_kb 60, max_headers_count 100; 16 KiB request-targets.
    public struct Limits: Sendable {
        public var maxHeaderBytes: Int
        public var maxHeaderCount: Int
        public var maxURIBytes: Int

        public init(maxHeaderBytes: Int = 60 * 1024, maxHeaderCount: Int = 100, maxURIBytes: Int = 16 * 1024) {
            precondition(maxHeaderBytes > 0 && maxHeaderCount > 0 && maxURIBytes > 0, "limits must be positive")
            self.maxHeaderBytes = maxHeaderBytes
            self.maxHeaderCount = maxHeaderCount
            self.maxURIBytes = maxURIBytes
        }
    }

    public enum Progress: Equatable, Sendable {
        /// The head is incomplete; the first `scanned` bytes were examined and must be passed again, unchanged,
        /// followed by more.
        case needMore(scanned: Int)
        /// The head is `head.length` bytes long; the body, if any, follows.
        case complete
    }

    private enum State: Sendable {
        var isStartLine: Bool {
            if case .startLine = self { return true }
            return false
        }

        /// Request-lines: spaces seen on the current line and where the target starts, for the 414 check while
        /// the line is still arriving.
        case startLine(spaces: Int, targetStart: Int)
        case fieldLines
        case complete
        case failed(HTTPParseError)
    }

    /// What the field lines said about framing and connection, gathered line by line (RFC 9112 §6.3, §9).
    private struct Facts: Sendable {
        var contentLength: UInt64? = nil
        var transferEncoding = false
        var chunkedCount = 0
        var chunkedLast = false
        var hostCount = 0
        var close = false
        var keepAlive = false
        var upgradeOption = false
        var upgradeField = false
        /// Every Upgrade field offered only "h2c" (RFC 7540 §3.2's cleartext HTTP/2 upgrade, removed in RFC 9113).
        var upgradeOnlyH2C = true
        var expectContinue = false
        /// An absolute-form target's authority (RFC 9112 §3.2.2: it replaces the Host field).
        var targetAuthority: Range<Int>? = nil
    }

    public let kind: Kind
    public let limits: Limits
    /// Responses: set before parsing the response to a HEAD request (its head may announce a body that is absent).
    public var respondingToHEAD = false
    /// Responses: set before parsing the response to a CONNECT request (a 2xx turns the connection into a tunnel).
    public var respondingToCONNECT = false
    /// The head parsed so far; complete after `parse` returned `.complete`.
    public private(set) var head = HTTP1Head()

    private var state: State = .startLine(spaces: 0, targetStart: 0)
    private var lineStart = 0
    private var scanned = 0
    /// The current line holds a control byte (or DEL): its parser must look at every byte to name the error.
    private var lineHasControl = false
    /// The request-line's target (bytes after its first SP) holds a byte `isTargetChar` refuses.
    private var targetHasInvalidByte = false
    private var facts = Facts()

    public init(kind: Kind, limits: Limits = Limits()) {
        self.kind = kind
        self.limits = limits
        // Room for the fields of a typical head; one with more grows the table once (up to the limit), and the
        // table is kept across messages. A table for the full limit (100 fields, 4 KiB) per parser made a
        // connection cost kilobytes while it waited.
        head.fields.reserveCapacity(min(limits.maxHeaderCount, 32))
    }

    /// Prepares for the next message on the connection, keeping the field table's storage.
    /// The request-line was rewritten in place with its target's path `delta` bytes shorter, right-aligned: the
    /// path ends where it ended and what came before it in the line (method, space, an absolute-form target's
    /// scheme and authority) moved `delta` bytes right (`PathNormalization`). Every later range is unchanged.
    public mutating func startLineShortened(by delta: Int) {
        head.startLineOffset += delta
        head.methodBytes = (head.methodBytes.lowerBound + delta)..<(head.methodBytes.upperBound + delta)
        head.target = (head.target.lowerBound + delta)..<head.target.upperBound
        if head.hostFromTarget, let h = head.host { head.host = (h.lowerBound + delta)..<(h.upperBound + delta) }
    }

    public mutating func reset() {
        head.fields.removeAll(keepingCapacity: true)
        let fields = head.fields
        head = HTTP1Head()
        head.fields = fields
        state = .startLine(spaces: 0, targetStart: 0)
        lineStart = 0
        scanned = 0
        lineHasControl = false
        targetHasInvalidByte = false
        facts = Facts()
        respondingToHEAD = false
        respondingToCONNECT = false
    }

    /// Parses more of the head. `bytes` starts at the first byte of the message and holds every byte passed before.
    /// After an error, every later call throws it again until `reset()`.
    public mutating func parse(_ bytes: borrowing Span<UInt8>) throws(HTTPParseError) -> Progress {
        switch state {
        case .complete: return .complete
        case .failed(let error): throw error
        case .startLine, .fieldLines: break
        }
        precondition(bytes.count >= scanned, "the buffer must still hold every byte passed before")
        do {
            return try scan(bytes)
        } catch {
            state = .failed(error)
            throw error
        }
    }

    // MARK: Scanning (RFC 9112 §2.2)

    private mutating func scan(_ bytes: borrowing Span<UInt8>) throws(HTTPParseError) -> Progress {
        var i = scanned
        let maxHead = limits.maxHeaderBytes
        let end = min(bytes.count, maxHead)
        while i < end {
            if kind == .response || !state.isStartLine {
                // Outside a request-line only CR, LF and the bytes no line may hold need a look: skip the rest
                // eight at a time. A control byte is only noted here; the line's parser names the error.
                i = HTTPGrammar.firstSpecial(bytes, from: i, end: end)
                if i == end { break }
            }
            let b = bytes[i]
            if b == HTTPGrammar.cr {
                guard i + 1 < bytes.count else { break }  // the LF decides; wait for it
                guard bytes[i + 1] == HTTPGrammar.lf else { throw HTTPParseError(.bareCR) }
                if i + 1 >= maxHead { throw HTTPParseError(.headTooLarge) }
                try completeLine(bytes, end: i)
                i += 2
                lineStart = i
                lineHasControl = false
                if case .complete = state {
                    scanned = i
                    return .complete
                }
                continue
            }
            if b == HTTPGrammar.lf { throw HTTPParseError(.bareLF) }
            if kind == .request, case .startLine(var spaces, var targetStart) = state {
                // A request-line, byte by byte up to its CR or LF: the spaces tell where the target starts, so a
                // target over the limit is refused (414) while it is still arriving.
                while i < end {
                    if spaces == 1 {
                        // Inside the target: skip its ordinary bytes eight at a time (none of them is SP).
                        let j = HTTPGrammar.firstNonTarget(bytes, from: i, end: end)
                        if j - targetStart > limits.maxURIBytes { throw HTTPParseError(.uriTooLong) }
                        i = j
                        if i == end { break }
                    }
                    let c = bytes[i]
                    if c == HTTPGrammar.cr || c == HTTPGrammar.lf { break }
                    if c == HTTPGrammar.sp {
                        spaces += 1
                        if spaces == 1 { targetStart = i + 1 }
                    } else if spaces == 1 {
                        if i - targetStart >= limits.maxURIBytes { throw HTTPParseError(.uriTooLong) }
                        // Checked here, in the one pass over the target; refused in order by parseRequestLine.
                        if !HTTPGrammar.isTargetChar(c) { targetHasInvalidByte = true }
                    }
                    i += 1
                }
                state = .startLine(spaces: spaces, targetStart: targetStart)
                continue
            }
            lineHasControl = true  // a control byte or DEL outside a request-line: named by the line's parser
            i += 1
        }
        if i >= maxHead && bytes.count > maxHead { throw HTTPParseError(.headTooLarge) }
        scanned = i
        return .needMore(scanned: i)
    }

    /// Handles the line `lineStart..<end` (its CRLF at `end`).
    private mutating func completeLine(_ bytes: borrowing Span<UInt8>, end: Int) throws(HTTPParseError) {
        switch state {
        case .startLine:
            if end == lineStart {
                // RFC 9112 §2.2: a server SHOULD ignore empty lines before the request-line.
                guard kind == .request else { throw HTTPParseError(.emptyStartLine) }
                state = .startLine(spaces: 0, targetStart: 0)
                return
            }
            head.startLineOffset = lineStart
            switch kind {
            case .request: try parseRequestLine(bytes, lineStart..<end)
            case .response: try parseStatusLine(bytes, lineStart..<end)
            }
            state = .fieldLines
        case .fieldLines:
            if end == lineStart {
                head.length = end + 2
                try decideFraming()
                state = .complete
            } else {
                try parseFieldLine(bytes, lineStart..<end)
            }
        case .complete, .failed:
            preconditionFailure("completeLine after the head ended")
        }
    }

    // MARK: Start lines (RFC 9112 §3, §4)

    private mutating func parseRequestLine(_ bytes: borrowing Span<UInt8>, _ line: Range<Int>)
        throws(HTTPParseError)
    {
        var sp1 = line.lowerBound
        while sp1 < line.upperBound, bytes[sp1] != HTTPGrammar.sp { sp1 += 1 }
        guard sp1 < line.upperBound, sp1 > line.lowerBound else { throw HTTPParseError(.malformedRequestLine) }
        var sp2 = sp1 + 1
        while sp2 < line.upperBound, bytes[sp2] != HTTPGrammar.sp { sp2 += 1 }
        // One SP each side of a non-empty target, and none after it: "GET  / HTTP/1.1", "GET / HTTP/1.1 " fail.
        guard sp2 < line.upperBound, sp2 > sp1 + 1 else { throw HTTPParseError(.malformedRequestLine) }
        let methodRange = line.lowerBound..<sp1
        let target = (sp1 + 1)..<sp2
        for i in methodRange where !HTTPGrammar.isTokenChar(bytes[i]) { throw HTTPParseError(.invalidMethod) }
        if target.count > limits.maxURIBytes { throw HTTPParseError(.uriTooLong) }
        // The scan saw every target byte (and any after a second SP, which the checks below refuse anyway).
        if targetHasInvalidByte {
            for i in target where !HTTPGrammar.isTargetChar(bytes[i]) { throw HTTPParseError(.invalidTarget) }
        }
        for i in (sp2 + 1)..<line.upperBound where bytes[i] == HTTPGrammar.sp {
            throw HTTPParseError(.malformedRequestLine)
        }
        head.version = try parseVersion(bytes, (sp2 + 1)..<line.upperBound)
        head.methodBytes = methodRange
        head.method = Self.method(bytes, methodRange)
        head.target = target
        head.targetForm = try targetForm(bytes, target, method: head.method)
        if head.targetForm == .absolute {
            // scheme "://" authority [ path-abempty ] [ "?" query ]: the authority runs to the first "/", "?" or
            // "#"; it must name a host, and userinfo (RFC 9110 §4.2.4: never sent) is refused.
            var start = target.lowerBound
            while bytes[start] != HTTPGrammar.colon { start += 1 }
            start += 3
            var end = start
            while end < target.upperBound, bytes[end] != 0x2F, bytes[end] != 0x3F, bytes[end] != 0x23 {
                if bytes[end] == 0x40 { throw HTTPParseError(.invalidTarget) }
                end += 1
            }
            guard end > start, bytes[start] != HTTPGrammar.colon else { throw HTTPParseError(.invalidTarget) }
            // It becomes the Host: checked as a Host field is.
            if !HTTPGrammar.allHostChars(bytes, start..<end) { throw HTTPParseError(.invalidHost) }
            facts.targetAuthority = start..<end
        }
    }

    private mutating func parseStatusLine(_ bytes: borrowing Span<UInt8>, _ line: Range<Int>)
        throws(HTTPParseError)
    {
        let lo = line.lowerBound
        guard line.count >= 12, bytes[lo + 8] == HTTPGrammar.sp else { throw HTTPParseError(.malformedStatusLine) }
        head.version = try parseVersion(bytes, lo..<(lo + 8))
        var status = 0
        for i in (lo + 9)..<(lo + 12) {
            guard HTTPGrammar.isDigit(bytes[i]) else { throw HTTPParseError(.malformedStatusLine) }
            status = status * 10 + Int(bytes[i] - 0x30)
        }
        guard status >= 100, status <= 599 else { throw HTTPParseError(.malformedStatusLine) }
        head.status = status
        if line.count == 12 {
            head.reason = line.upperBound..<line.upperBound
            return
        }
        guard bytes[lo + 12] == HTTPGrammar.sp else { throw HTTPParseError(.malformedStatusLine) }
        head.reason = (lo + 13)..<line.upperBound
        for i in head.reason where !HTTPGrammar.isFieldValueChar(bytes[i]) { throw HTTPParseError(.invalidReason) }
    }

    /// HTTP-version (RFC 9112 §2.3): malformed is 400; well-formed but not 1.0 or 1.1 is 505.
    private func parseVersion(_ bytes: borrowing Span<UInt8>, _ range: Range<Int>) throws(HTTPParseError)
        -> HTTPVersion
    {
        let lo = range.lowerBound
        guard range.count == 8, bytes[lo] == 0x48, bytes[lo + 1] == 0x54, bytes[lo + 2] == 0x54,
            bytes[lo + 3] == 0x50, bytes[lo + 4] == 0x2F, HTTPGrammar.isDigit(bytes[lo + 5]),
            bytes[lo + 6] == 0x2E, HTTPGrammar.isDigit(bytes[lo + 7])
        else { throw HTTPParseError(.malformedVersion) }
        switch (bytes[lo + 5], bytes[lo + 7]) {
        case (0x31, 0x31): return .http11
        case (0x31, 0x30): return .http10
        default: throw HTTPParseError(.unsupportedVersion)
        }
    }

    private static func method(_ bytes: borrowing Span<UInt8>, _ range: Range<Int>) -> HTTPMethod {
        // Methods are case-sensitive (RFC 9110 §9.1): "get" is an unknown method, not GET.
        func equals(_ literal: StaticBytes) -> Bool {
            guard range.count == literal.count else { return false }
            for (j, i) in range.enumerated() where bytes[i] != literal[j] { return false }
            return true
        }
        switch range.count {
        case 3: return equals(Names.GET) ? .get : equals(Names.PUT) ? .put : .other
        case 4: return equals(Names.POST) ? .post : equals(Names.HEAD) ? .head : .other
        case 5: return equals(Names.PATCH) ? .patch : equals(Names.TRACE) ? .trace : .other
        case 6: return equals(Names.DELETE) ? .delete : .other
        case 7: return equals(Names.OPTIONS) ? .options : equals(Names.CONNECT) ? .connect : .other
        default: return .other
        }
    }

    /// RFC 9112 §3.2: the form must match the method; CONNECT takes only authority-form and authority-form only
    /// CONNECT, "*" only OPTIONS.
    private func targetForm(_ bytes: borrowing Span<UInt8>, _ target: Range<Int>, method: HTTPMethod)
        throws(HTTPParseError) -> RequestTargetForm
    {
        let first = bytes[target.lowerBound]
        if method == .connect {
            // authority-form = uri-host ":" port (§3.2.3), the port mandatory.
            var colon = target.upperBound
            for i in target where bytes[i] == HTTPGrammar.colon { colon = i }
            guard colon > target.lowerBound, colon + 1 < target.upperBound else {
                throw HTTPParseError(.targetFormMismatch)
            }
            for i in target.lowerBound..<colon where !HTTPGrammar.isHostChar(bytes[i]) {
                throw HTTPParseError(.targetFormMismatch)
            }
            for i in (colon + 1)..<target.upperBound where !HTTPGrammar.isDigit(bytes[i]) {
                throw HTTPParseError(.targetFormMismatch)
            }
            return .authority
        }
        if first == 0x2F { return .origin }
        if target.count == 1, first == 0x2A {
            guard method == .options else { throw HTTPParseError(.targetFormMismatch) }
            return .asterisk
        }
        // absolute-form: scheme ":" hier-part, scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 §3.1).
        var i = target.lowerBound
        guard HTTPGrammar.lowercased(first) >= 0x61, HTTPGrammar.lowercased(first) <= 0x7A else {
            throw HTTPParseError(.targetFormMismatch)
        }
        while i < target.upperBound {
            let b = bytes[i]
            if b == HTTPGrammar.colon { break }
            let l = HTTPGrammar.lowercased(b)
            guard (l >= 0x61 && l <= 0x7A) || HTTPGrammar.isDigit(b) || b == 0x2B || b == 0x2D || b == 0x2E else {
                throw HTTPParseError(.targetFormMismatch)
            }
            i += 1
        }
        // "://" required: every scheme a proxy forwards has an authority, and without it "host:443" would pass
        // as a URI with scheme "host" (authority-form belongs to CONNECT alone).
        guard i + 2 < target.upperBound, bytes[i + 1] == 0x2F, bytes[i + 2] == 0x2F else {
            throw HTTPParseError(.targetFormMismatch)
        }
        return .absolute
    }

    // MARK: Field lines (RFC 9112 §5, RFC 9110 §5)

    private mutating func parseFieldLine(_ bytes: borrowing Span<UInt8>, _ line: Range<Int>)
        throws(HTTPParseError)
    {
        let first = bytes[line.lowerBound]
        if HTTPGrammar.isWhitespace(first) { throw HTTPParseError(.obsoleteLineFolding) }
        let colon = HTTPGrammar.fieldNameEnd(bytes, from: line.lowerBound, end: line.upperBound)
        guard colon < line.upperBound else { throw HTTPParseError(.missingColon) }
        if bytes[colon] != HTTPGrammar.colon {
            throw HTTPParseError(HTTPGrammar.isWhitespace(bytes[colon]) ? .whitespaceBeforeColon : .invalidFieldName)
        }
        guard colon > line.lowerBound else { throw HTTPParseError(.invalidFieldName) }
        let name = line.lowerBound..<colon
        let value = HTTPGrammar.trimmedValue(bytes, from: colon + 1, end: line.upperBound)
        if lineHasControl {
            for i in value where !HTTPGrammar.isFieldValueChar(bytes[i]) { throw HTTPParseError(.invalidFieldValue) }
        }
        guard head.fields.count < limits.maxHeaderCount else { throw HTTPParseError(.tooManyFields) }
        let known = Self.knownField(bytes, name)
        head.fields.append(HTTP1Head.Field(name: name, value: value, known: known))
        switch known {
        case .contentLength: try noteContentLength(bytes, value)
        case .transferEncoding: try noteTransferEncoding(bytes, value)
        case .host:
            facts.hostCount += 1
            if !HTTPGrammar.allHostChars(bytes, value) { throw HTTPParseError(.invalidHost) }
            head.host = value
        case .connection: try noteConnection(bytes, value)
        case .upgrade:
            facts.upgradeField = true
            if !HTTPGrammar.equalsIgnoringCase(bytes, value, Names.h2c) { facts.upgradeOnlyH2C = false }
        case .expect: if HTTPGrammar.equalsIgnoringCase(bytes, value, Names.continue100) { facts.expectContinue = true }
        case .te, .trailer, .keepAlive, .proxyConnection, .xForwardedFor, .xForwardedProto, .xRequestID,
            .xForwardedClientCert, .xEnvoy, .userAgent, .traceparent, .tracestate, .b3, .xB3, .other:
            break
        }
    }

    /// Which known field `name` (a range of `bytes`) names, ASCII case-insensitively (HTTP/2 heads use it too).
    static func knownField(_ bytes: borrowing Span<UInt8>, _ name: Range<Int>) -> KnownField {
        func eq(_ literal: StaticBytes) -> Bool { HTTPGrammar.equalsIgnoringCase(bytes, name, literal) }
        // The first letter rules out most names before any comparison (most fields are none of these).
        let first = HTTPGrammar.lowercased(bytes[name.lowerBound])
        if first == 0x78 { return knownX(bytes, name) }  // "x-…"
        switch (name.count, first) {
        case (2, 0x74): return eq(Names.te) ? .te : .other
        case (2, 0x62): return eq(Names.b3) ? .b3 : .other
        case (10, 0x75): return eq(Names.userAgent) ? .userAgent : .other
        case (10, 0x74): return eq(Names.tracestate) ? .tracestate : .other
        case (11, 0x74): return eq(Names.traceparent) ? .traceparent : .other
        case (4, 0x68): return eq(Names.host) ? .host : .other
        case (6, 0x65): return eq(Names.expect) ? .expect : .other
        case (7, 0x75): return eq(Names.upgrade) ? .upgrade : .other
        case (7, 0x74): return eq(Names.trailer) ? .trailer : .other
        case (10, 0x63): return eq(Names.connection) ? .connection : .other
        case (10, 0x6B): return eq(Names.keepAlive) ? .keepAlive : .other
        case (14, 0x63): return eq(Names.contentLength) ? .contentLength : .other
        case (16, 0x70): return eq(Names.proxyConnection) ? .proxyConnection : .other
        case (17, 0x74): return eq(Names.transferEncoding) ? .transferEncoding : .other
        default: return .other
        }
    }

    /// Names starting with "x".
    private static func knownX(_ bytes: borrowing Span<UInt8>, _ name: Range<Int>) -> KnownField {
        func eq(_ literal: StaticBytes) -> Bool { HTTPGrammar.equalsIgnoringCase(bytes, name, literal) }
        switch name.count {
        case 12 where eq(Names.xRequestID): return .xRequestID
        case 15 where eq(Names.xForwardedFor): return .xForwardedFor
        case 17 where eq(Names.xForwardedProto): return .xForwardedProto
        case 23 where eq(Names.xForwardedClientCert): return .xForwardedClientCert
        default:
            if isPrefixed(bytes, name, Names.xB3Prefix) { return .xB3 }
            return isPrefixed(bytes, name, Names.xEnvoyPrefix) ? .xEnvoy : .other
        }
    }

    /// Whether a field name is longer than `prefix` and starts with it ("x-envoy-", "x-b3-"; any case).
    private static func isPrefixed(_ bytes: borrowing Span<UInt8>, _ name: Range<Int>, _ prefix: StaticBytes) -> Bool {
        name.count > prefix.count
            && HTTPGrammar.equalsIgnoringCase(bytes, name.lowerBound..<(name.lowerBound + prefix.count), prefix)
    }

    /// RFC 9110 §8.6: Content-Length = 1*DIGIT. A list ("5, 5") or repeated field of one value is that value;
    /// anything else, including "+5", "5 5", "0x5", an empty value or an empty list element, is refused.
    private mutating func noteContentLength(_ bytes: borrowing Span<UInt8>, _ value: Range<Int>)
        throws(HTTPParseError)
    {
        var cursor = value.lowerBound
        while let element = HTTPGrammar.nextListElement(bytes, &cursor, end: value.upperBound) {
            guard !element.isEmpty else { throw HTTPParseError(.invalidContentLength) }
            var n: UInt64 = 0
            for i in element {
                let b = bytes[i]
                guard HTTPGrammar.isDigit(b) else { throw HTTPParseError(.invalidContentLength) }
                let (times10, o1) = n.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times10.addingReportingOverflow(UInt64(b - 0x30))
                guard !o1, !o2, sum <= UInt64(Int64.max) else { throw HTTPParseError(.invalidContentLength) }
                n = sum
            }
            if let previous = facts.contentLength, previous != n { throw HTTPParseError(.conflictingContentLength) }
            facts.contentLength = n
        }
    }

    /// RFC 9112 §6.1, §7: transfer-coding tokens, case-insensitive, from the registry and without parameters.
    private mutating func noteTransferEncoding(_ bytes: borrowing Span<UInt8>, _ value: Range<Int>)
        throws(HTTPParseError)
    {
        facts.transferEncoding = true
        var cursor = value.lowerBound
        while let element = HTTPGrammar.nextListElement(bytes, &cursor, end: value.upperBound) {
            guard !element.isEmpty else { throw HTTPParseError(.invalidTransferEncoding) }
            for i in element where !HTTPGrammar.isTokenChar(bytes[i]) {
                // Parameters (";q=1"), spaces inside, quotes: no registered coding takes them.
                throw HTTPParseError(.unknownTransferCoding)
            }
            func eq(_ literal: StaticBytes) -> Bool { HTTPGrammar.equalsIgnoringCase(bytes, element, literal) }
            if eq(Names.chunked) {
                facts.chunkedCount += 1
                if facts.chunkedCount > 1 { throw HTTPParseError(.chunkedTwice) }
                facts.chunkedLast = true
            } else if eq(Names.gzip) || eq(Names.deflate) || eq(Names.compress) || eq(Names.xGzip)
                || eq(Names.xCompress)
            {
                facts.chunkedLast = false
            } else {
                throw HTTPParseError(.unknownTransferCoding)
            }
        }
    }

    /// RFC 9110 §7.6.1: Connection is a list of tokens; "close", "keep-alive" and "upgrade" matter here.
    private mutating func noteConnection(_ bytes: borrowing Span<UInt8>, _ value: Range<Int>)
        throws(HTTPParseError)
    {
        var cursor = value.lowerBound
        while let element = HTTPGrammar.nextListElement(bytes, &cursor, end: value.upperBound) {
            if element.isEmpty { continue }  // RFC 9110 §5.6.1: empty elements are ignored
            for i in element where !HTTPGrammar.isTokenChar(bytes[i]) { throw HTTPParseError(.invalidConnection) }
            if HTTPGrammar.equalsIgnoringCase(bytes, element, Names.close) {
                facts.close = true
            } else if HTTPGrammar.equalsIgnoringCase(bytes, element, Names.keepAlive) {
                facts.keepAlive = true
            } else if HTTPGrammar.equalsIgnoringCase(bytes, element, Names.upgrade) {
                facts.upgradeOption = true
            }
        }
    }

    // MARK: Framing and persistence (RFC 9112 §6.3, §9.3)

    private mutating func decideFraming() throws(HTTPParseError) {
        let http11 = head.version == .http11
        if kind == .request {
            if facts.hostCount > 1 { throw HTTPParseError(.multipleHost) }
            if http11, facts.hostCount == 0 { throw HTTPParseError(.missingHost) }
        }
        if facts.transferEncoding {
            if facts.contentLength != nil { throw HTTPParseError(.contentLengthWithTransferEncoding) }
            if !http11 { throw HTTPParseError(.transferEncodingInHTTP10) }
            if kind == .request, !facts.chunkedLast { throw HTTPParseError(.chunkedNotFinal) }
        }
        var keepAlive = http11 ? !facts.close : (facts.keepAlive && !facts.close)
        let framing: BodyFraming
        switch kind {
        case .request:
            framing =
                facts.transferEncoding ? .chunked : facts.contentLength.map { .contentLength($0) } ?? .none
            head.expectContinue = http11 && facts.expectContinue
        case .response:
            let status = head.status
            if respondingToHEAD || status < 200 || status == 204 || status == 304
                || (respondingToCONNECT && status < 300)
            {
                framing = .none
            } else if facts.transferEncoding {
                framing = facts.chunkedLast ? .chunked : .untilClose
            } else if let length = facts.contentLength {
                framing = .contentLength(length)
            } else {
                framing = .untilClose
            }
            if framing == .untilClose { keepAlive = false }
        }
        head.framing = framing
        head.keepAlive = keepAlive
        // An h2c upgrade is not honoured (as Envoy strips it): the request goes on as HTTP/1.1 and its Upgrade
        // field, hop-by-hop, is removed.
        head.upgrade = http11 && facts.upgradeField && facts.upgradeOption && !facts.upgradeOnlyH2C
        if facts.hostCount != 1 { head.host = nil }
        // RFC 9112 §3.2.2: a proxy receiving an absolute-form target ignores the Host field and uses the target's
        // authority instead (Envoy does so): routing, reporting and the forwarded Host all take it.
        if let authority = facts.targetAuthority {
            head.host = authority
            head.hostFromTarget = true
        }
    }
}

/// Lowercase literals the parser compares against, built once.
private enum Names {
    static let GET = StaticBytes("GET"), PUT = StaticBytes("PUT"), POST = StaticBytes("POST")
    static let HEAD = StaticBytes("HEAD"), PATCH = StaticBytes("PATCH"), TRACE = StaticBytes("TRACE")
    static let DELETE = StaticBytes("DELETE"), OPTIONS = StaticBytes("OPTIONS"), CONNECT = StaticBytes("CONNECT")
    static let te = StaticBytes("te"), host = StaticBytes("host"), expect = StaticBytes("expect")
    static let upgrade = StaticBytes("upgrade"), trailer = StaticBytes("trailer")
    static let connection = StaticBytes("connection"), keepAlive = StaticBytes("keep-alive")
    static let contentLength = StaticBytes("content-length"), proxyConnection = StaticBytes("proxy-connection")
    static let transferEncoding = StaticBytes("transfer-encoding")
    static let chunked = StaticBytes("chunked"), gzip = StaticBytes("gzip"), deflate = StaticBytes("deflate")
    static let compress = StaticBytes("compress"), xGzip = StaticBytes("x-gzip")
    static let xCompress = StaticBytes("x-compress")
    static let close = StaticBytes("close"), continue100 = StaticBytes("100-continue"), h2c = StaticBytes("h2c")
    static let xForwardedFor = StaticBytes("x-forwarded-for"), xForwardedProto = StaticBytes("x-forwarded-proto")
    static let xRequestID = StaticBytes("x-request-id"), xForwardedClientCert = StaticBytes("x-forwarded-client-cert")
    static let xEnvoyPrefix = StaticBytes("x-envoy-"), xB3Prefix = StaticBytes("x-b3-")
    static let userAgent = StaticBytes("user-agent"), traceparent = StaticBytes("traceparent")
    static let tracestate = StaticBytes("tracestate"), b3 = StaticBytes("b3")
}
