import Testing
import TernHTTP

/// A chunked body and what it decodes to (RFC 9112 §7.1 and the chunk-size and extension tricks of the
/// smuggling research cited in HeadCase).
struct ChunkCase: Sendable, CustomTestStringConvertible {
    let name: String
    let bytes: [UInt8]
    let expected: BodyOutcome
    var testDescription: String { name }

    /// `raw` decodes to `data`; the body ends `rest` bytes before the end of `raw`.
    static func ok(_ name: String, _ raw: String, _ data: String, rest: Int = 0) -> ChunkCase {
        let bytes = Array(raw.utf8)
        return ChunkCase(name: name, bytes: bytes, expected: .body(Array(data.utf8), end: bytes.count - rest))
    }

    static func fail(_ name: String, _ raw: String, _ status: Int = 400) -> ChunkCase {
        ChunkCase(name: name, bytes: Array(raw.utf8), expected: .error(status))
    }

    static func incomplete(_ name: String, _ raw: String, _ data: String) -> ChunkCase {
        ChunkCase(name: name, bytes: Array(raw.utf8), expected: .incomplete(Array(data.utf8)))
    }

    static let all: [ChunkCase] = [
        ok("one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello"),
        ok("two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"),
        ok("empty body", "0\r\n\r\n", ""),
        ok("upper-case hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789"),
        ok("lower-case hex", "a\r\n0123456789\r\n0\r\n\r\n", "0123456789"),
        ok("leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello"),
        ok("data containing CRLF", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n"),
        ok("extension with token value", "5;name=value\r\nhello\r\n0\r\n\r\n", "hello"),
        ok("extension without value", "5;foo\r\nhello\r\n0\r\n\r\n", "hello"),
        ok("several extensions", "5;a;b=c;d=\"e\"\r\nhello\r\n0;last\r\n\r\n", "hello"),
        ok("quoted extension with space", "5;a=\"b c\"\r\nhello\r\n0\r\n\r\n", "hello"),
        ok("quoted-pair in extension", "5;a=\"\\\"x\"\r\nhello\r\n0\r\n\r\n", "hello"),
        ok("BWS around ; and =", "5 ; a = b\r\nhello\r\n0\r\n\r\n", "hello"),
        ok("trailer field", "5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n", "hello"),
        ok("two trailer fields", "0\r\nA: 1\r\nB:\r\n\r\n", ""),
        ok("next message follows", "1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "x", rest: 16),
        fail("chunk-size overflow ffffffffffffffffff", "ffffffffffffffffff\r\n"),
        fail("chunk-size 2^63", "8000000000000000\r\n"),
        incomplete("chunk-size 2^63 - 1 accepted", "7fffffffffffffff\r\nabc", "abc"),
        fail("bad hex digit", "g\r\nhello\r\n"),
        fail("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
        fail("plus sign", "+5\r\nhello\r\n0\r\n\r\n"),
        fail("minus sign", "-5\r\nhello\r\n0\r\n\r\n"),
        fail("empty chunk-size", "\r\nhello\r\n"),
        fail("space before chunk-size", " 5\r\nhello\r\n0\r\n\r\n"),
        fail("whitespace after size without ;", "5 \r\nhello\r\n0\r\n\r\n"),
        fail("missing CRLF after data", "5\r\nhelloX0\r\n\r\n"),
        fail("data longer than the size", "3\r\nhello\r\n0\r\n\r\n"),
        fail("bare LF after chunk-size", "5\nhello\r\n0\r\n\r\n"),
        fail("bare LF after data", "5\r\nhello\n0\r\n\r\n"),
        fail("bare CR after chunk-size", "5\rhello\r\n0\r\n\r\n"),
        fail("bare LF ending the body", "0\r\n\n"),
        fail("NUL in extension name", "5;a\u{0}b\r\nhello\r\n0\r\n\r\n"),
        fail("control in quoted extension", "5;a=\"\u{1}\"\r\nhello\r\n0\r\n\r\n"),
        fail("extension without name", "5;=x\r\nhello\r\n0\r\n\r\n"),
        fail("extension value with a non-token", "5;a=b@c\r\nhello\r\n0\r\n\r\n"),
        fail("extension line too long", "5;a=\(String(repeating: "b", count: 5000))\r\nhello\r\n0\r\n\r\n"),
        fail("trailer folded", "0\r\nA: 1\r\n 2\r\n\r\n"),
        fail("trailer without colon", "0\r\nA\r\n\r\n"),
        fail("trailer with space before colon", "0\r\nA : 1\r\n\r\n"),
        fail("trailer with NUL", "0\r\nA: \u{0}\r\n\r\n"),
        fail("trailer ended by bare LF", "0\r\nA: 1\n\r\n"),
        incomplete("body cut inside data", "5\r\nhel", "hel"),
        incomplete("body cut before the trailer end", "5\r\nhello\r\n0\r\n", "hello"),
    ]
}

@Suite struct ChunkedDecoderTests {
    /// Each case decoded whole, split in two at every offset, and byte by byte: the same outcome each time.
    @Test(arguments: ChunkCase.all)
    func tableCaseGivesItsOutcomeHoweverSplit(_ c: ChunkCase) {
        let whole = decodeChunked(c.bytes, cuts: [])
        #expect(whole == c.expected)
        for cut in everyOffset(c.bytes.count) {
            let split = decodeChunked(c.bytes, cuts: [cut])
            if split != whole {
                Issue.record("split at \(cut): \(split), whole: \(whole)")
                break
            }
        }
        #expect(decodeChunked(c.bytes, cuts: Array(1..<max(c.bytes.count, 1))) == whole)
    }

    @Test func dataRangesAreSlicesOfThePiece() throws {
        let bytes = Array("5\r\nhello\r\n0\r\n\r\n".utf8)
        var decoder = ChunkedDecoder()
        let first = try decoder.decode(bytes.span)
        #expect(first.event == .data(3..<8) && first.consumed == 8)
        // The last chunk's line is reported where it ends: the trailer section (here empty) follows.
        let second = try decoder.decode(bytes.span.extracting(8..<bytes.count))
        #expect(second.event == .lastChunk && second.consumed == 5)
        let third = try decoder.decode(bytes.span.extracting(13..<bytes.count))
        #expect(third.event == .end && third.consumed == 2)
        #expect(decoder.isDone)
    }

    @Test func theTrailerSectionStartsAfterTheLastChunk() throws {
        let bytes = Array("3\r\nabc\r\n0;ext=1\r\nX-T: 1\r\nContent-Length: 9\r\n\r\nNEXT".utf8)
        var decoder = ChunkedDecoder()
        var at = 0
        var events: [ChunkedDecoder.Event] = []
        while true {
            let out = try decoder.decode(bytes.span.extracting(at..<bytes.count))
            events.append(out.event)
            at += out.consumed
            if out.event == .lastChunk { #expect(String(decoding: bytes[..<at], as: UTF8.self).hasSuffix("0;ext=1\r\n")) }
            if out.event == .end { break }
        }
        #expect(events == [.data(3..<6), .lastChunk, .end])
        #expect(String(decoding: bytes[at...], as: UTF8.self) == "NEXT")
    }

    @Test func resetStartsTheNextBody() throws {
        var decoder = ChunkedDecoder()
        let body = Array("0\r\n\r\n".utf8)
        #expect(try decoder.decode(body.span).event == .lastChunk)
        #expect(try decoder.decode(body.span.extracting(3..<5)).event == .end)
        decoder.reset()
        #expect(!decoder.isDone)
        #expect(try decoder.decode(body.span).event == .lastChunk)
    }
}
