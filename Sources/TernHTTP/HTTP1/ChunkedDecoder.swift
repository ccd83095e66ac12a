/// Decodes the chunked transfer coding (RFC 9112 §7.1) one piece of input at a time, without copying.
///
/// ```
///  ┌──────────▶ sizeStart ─hex─▶ size ─CR─▶ sizeLF ─LF─┬─(size > 0)─▶ data ─▶ dataCR ─CR─▶ dataLF ─LF─┐
///  │                               │  ▲                 │                                            │
///  │                     BWS / ";" ▼  │ CR              └─(size = 0)─▶ trailerLineStart ─CR─▶ endLF ─LF─▶ done
///  │                     extension states                              │  ▲
///  │                     (§7.1.1: token or quoted-string)    field-line ▼  │ CRLF  (§7.1.2)
///  └───────────────────────────────────────────────────────────────────────┘ trailerName ─:─▶ trailerValue
/// ```
///
/// Pieces are independent: `decode` reads a piece from its start, returns what it found and how many bytes of the
/// piece it consumed; the caller passes the rest (or the next piece) to the following call. Data is returned as
/// ranges of the piece, one per call, so a body can be forwarded or spliced in place. Every byte is examined once,
/// in order, so the outcome does not depend on how the input was split.
///
/// Refused with 400: a chunk-size that is not 1*HEXDIG or exceeds 2^63 − 1; whitespace not followed by ";";
/// extensions that are not `;name[=token|quoted-string]`, or contain NUL or other controls; a chunk not followed
/// by CRLF; a bare CR or bare LF anywhere (RFC 9112 §2.2, rejected as in the head parser); trailer fields that are
/// not `token ":" field-value` or that fold (§5.2). Size lines over `maxChunkLineBytes` are 400, trailer sections
/// over `maxTrailerBytes` 431.
public struct ChunkedDecoder: Sendable {
    public struct Limits: Sendable {
        public var maxChunkLineBytes: Int
        public var maxTrailerBytes: Int

        public init(maxChunkLineBytes: Int = 4096, maxTrailerBytes: Int = 60 * 1024) {
            self.maxChunkLineBytes = maxChunkLineBytes
            self.maxTrailerBytes = maxTrailerBytes
        }
    }

    public enum Event: Equatable, Sendable {
        /// Body bytes at this range of the piece.
        case data(Range<Int>)
        /// The piece was consumed; pass the next one.
        case needMore
        /// The last chunk's line ended (`consumed` is just after it): what follows, to `end`, is the trailer
        /// section (RFC 9112 §7.1.2), which a proxy may drop.
        case lastChunk
        /// The last chunk and trailer section ended; bytes after `consumed` belong to the next message.
        case end
    }

    public struct Output: Equatable, Sendable {
        public var event: Event
        /// Bytes of the piece consumed by this call; pass the rest again.
        public var consumed: Int
    }

    private enum State: Sendable {
        case sizeStart, size
        /// After the size or an extension: ";", CR, or BWS.
        case afterSize
        /// After BWS: more BWS or ";" only (BWS belongs before ";", RFC 9112 §7.1.1).
        case beforeSemicolon
        case extNameStart, extName
        /// After BWS following a name: "=" or ";".
        case extAfterName
        case extValueStart, extToken, extQuoted, extQuotedPair
        case sizeLF
        case data(remaining: UInt64)
        case dataCR, dataLF
        case trailerLineStart, trailerName, trailerValue, trailerLF
        case endLF
        case done
        case failed(HTTPParseError)
    }

    public let limits: Limits
    private var state: State = .sizeStart
    private var size: UInt64 = 0
    private var lineBytes = 0
    private var trailerBytes = 0

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Prepares for the next chunked body.
    public mutating func reset() {
        state = .sizeStart
        size = 0
        lineBytes = 0
        trailerBytes = 0
    }

    public var isDone: Bool {
        if case .done = state { return true }
        return false
    }

    public mutating func decode(_ piece: borrowing Span<UInt8>) throws(HTTPParseError) -> Output {
        do {
            return try step(piece)
        } catch {
            state = .failed(error)
            throw error
        }
    }

    private mutating func step(_ piece: borrowing Span<UInt8>) throws(HTTPParseError) -> Output {
        typealias G = HTTPGrammar
        var i = 0
        while i < piece.count {
            let b = piece[i]
            switch state {
            case .failed(let error):
                throw error
            case .done:
                return Output(event: .end, consumed: i)
            case .data(let remaining):
                let n = Int(min(remaining, UInt64(piece.count - i)))
                state = remaining == UInt64(n) ? .dataCR : .data(remaining: remaining - UInt64(n))
                return Output(event: .data(i..<(i + n)), consumed: i + n)
            case .dataCR:
                guard b == G.cr else { throw HTTPParseError(.missingChunkCRLF) }
                state = .dataLF
            case .dataLF:
                guard b == G.lf else { throw HTTPParseError(.missingChunkCRLF) }
                state = .sizeStart
                size = 0
                lineBytes = 0
            case .sizeLF:
                guard b == G.lf else { throw HTTPParseError(.bareCR) }
                if size == 0 {
                    state = .trailerLineStart
                    return Output(event: .lastChunk, consumed: i + 1)
                }
                state = .data(remaining: size)
            case .sizeStart, .size:
                try countLineByte(b)
                if let digit = G.hexValue(b) {
                    guard size <= UInt64(Int64.max) >> 4 else { throw HTTPParseError(.chunkSizeOverflow) }
                    size = size << 4 | digit
                    state = .size
                } else if case .size = state {
                    try afterSizeOrExtension(b)
                } else {
                    throw HTTPParseError(.invalidChunkSize)
                }
            case .afterSize:
                try countLineByte(b)
                try afterSizeOrExtension(b)
            case .beforeSemicolon:
                try countLineByte(b)
                if b == G.semicolon {
                    state = .extNameStart
                } else if !G.isWhitespace(b) {
                    throw HTTPParseError(.invalidChunkExtension)
                }
            case .extNameStart:
                try countLineByte(b)
                if G.isTokenChar(b) {
                    state = .extName
                } else if !G.isWhitespace(b) {
                    throw HTTPParseError(.invalidChunkExtension)
                }
            case .extName:
                try countLineByte(b)
                if G.isTokenChar(b) { break }
                if b == 0x3D {
                    state = .extValueStart
                } else if G.isWhitespace(b) {
                    state = .extAfterName
                } else {
                    try afterSizeOrExtension(b)
                }
            case .extAfterName:
                try countLineByte(b)
                if b == 0x3D {
                    state = .extValueStart
                } else if b == G.semicolon {
                    state = .extNameStart
                } else if !G.isWhitespace(b) {
                    throw HTTPParseError(.invalidChunkExtension)
                }
            case .extValueStart:
                try countLineByte(b)
                if G.isTokenChar(b) {
                    state = .extToken
                } else if b == 0x22 {
                    state = .extQuoted
                } else if !G.isWhitespace(b) {
                    throw HTTPParseError(.invalidChunkExtension)
                }
            case .extToken:
                try countLineByte(b)
                if !G.isTokenChar(b) { try afterSizeOrExtension(b) }
            case .extQuoted:
                try countLineByte(b)
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (RFC 9110 §5.6.4)
                if b == 0x22 {
                    state = .afterSize
                } else if b == 0x5C {
                    state = .extQuotedPair
                } else if !G.isFieldValueChar(b) {
                    throw HTTPParseError(.invalidChunkExtension)
                }
            case .extQuotedPair:
                try countLineByte(b)
                guard G.isFieldValueChar(b) else { throw HTTPParseError(.invalidChunkExtension) }
                state = .extQuoted
            case .trailerLineStart:
                try countTrailerByte()
                if b == G.cr {
                    state = .endLF
                } else if G.isTokenChar(b) {
                    state = .trailerName
                } else if G.isWhitespace(b) {
                    throw HTTPParseError(.obsoleteLineFolding)
                } else if b == G.lf {
                    throw HTTPParseError(.bareLF)
                } else {
                    throw HTTPParseError(.invalidTrailer)
                }
            case .trailerName:
                try countTrailerByte()
                if b == G.colon {
                    state = .trailerValue
                } else if G.isWhitespace(b) {
                    throw HTTPParseError(.whitespaceBeforeColon)
                } else if !G.isTokenChar(b) {
                    throw HTTPParseError(.invalidTrailer)
                }
            case .trailerValue:
                try countTrailerByte()
                if b == G.cr {
                    state = .trailerLF
                } else if b == G.lf {
                    throw HTTPParseError(.bareLF)
                } else if !G.isFieldValueChar(b) {
                    throw HTTPParseError(.invalidTrailer)
                }
            case .trailerLF:
                guard b == G.lf else { throw HTTPParseError(.bareCR) }
                state = .trailerLineStart
            case .endLF:
                guard b == G.lf else { throw HTTPParseError(.bareCR) }
                state = .done
                return Output(event: .end, consumed: i + 1)
            }
            i += 1
        }
        switch state {
        case .done: return Output(event: .end, consumed: 0)
        case .failed(let error): throw error
        default: return Output(event: .needMore, consumed: piece.count)
        }
    }

    /// The bytes that may follow a chunk-size or a complete extension: ";", BWS or the CR ending the line.
    private mutating func afterSizeOrExtension(_ b: UInt8) throws(HTTPParseError) {
        switch b {
        case HTTPGrammar.semicolon: state = .extNameStart
        case HTTPGrammar.sp, HTTPGrammar.htab: state = .beforeSemicolon
        case HTTPGrammar.cr: state = .sizeLF
        case HTTPGrammar.lf: throw HTTPParseError(.bareLF)
        default:
            if case .size = state { throw HTTPParseError(.invalidChunkSize) }
            throw HTTPParseError(.invalidChunkExtension)
        }
    }

    private mutating func countLineByte(_ b: UInt8) throws(HTTPParseError) {
        lineBytes += 1
        if lineBytes > limits.maxChunkLineBytes { throw HTTPParseError(.chunkLineTooLong) }
    }

    private mutating func countTrailerByte() throws(HTTPParseError) {
        trailerBytes += 1
        if trailerBytes > limits.maxTrailerBytes { throw HTTPParseError(.trailersTooLarge) }
    }
}
