import Testing
import TernHTTP

@Suite struct HTTP1ParserTests {
    @Test func tableHasEnoughCases() {
        #expect(HeadCase.all.count + ChunkCase.all.count >= 80)
    }

    /// Each case parsed whole, then split in two at every offset, then byte by byte: the same outcome each time.
    @Test(arguments: HeadCase.all)
    func tableCaseGivesItsOutcomeHoweverSplit(_ c: HeadCase) {
        let whole = parseHead(c.bytes, side: c.side, cuts: [])
        switch (c.expected, whole) {
        case (.ok(let expected), .head(let got, _)): #expect(got == expected)
        case (.fail(let status), .error(let got, _)): #expect(got == status)
        case (.incomplete, .incomplete): break
        default: Issue.record("expected \(c.expected), got \(whole)")
        }
        for cut in everyOffset(c.bytes.count) {
            let split = parseHead(c.bytes, side: c.side, cuts: [cut])
            if split != whole {
                Issue.record("split at \(cut): \(split), whole: \(whole)")
                break
            }
        }
        #expect(parseHead(c.bytes, side: c.side, cuts: Array(1..<max(c.bytes.count, 1))) == whole)
    }

    @Test func rangesPointIntoTheCallersBuffer() throws {
        let bytes = Array("\r\nPOST /a?b=1 HTTP/1.1\r\nHost: a.example\r\nX-Empty:\r\nContent-Length:  12 \r\n\r\nbody".utf8)
        var parser = HTTP1Parser(kind: .request)
        #expect(try parser.parse(bytes.span) == .complete)
        let head = parser.head
        func text(_ r: Range<Int>) -> String { String(decoding: bytes[r], as: UTF8.self) }
        #expect(head.startLineOffset == 2)
        #expect(text(head.methodBytes) == "POST")
        #expect(text(head.target) == "/a?b=1")
        #expect(head.fields.map { text($0.name) } == ["Host", "X-Empty", "Content-Length"])
        #expect(head.fields.map { text($0.value) } == ["a.example", "", "12"])
        #expect(head.fields.map(\.known) == [.host, .other, .contentLength])
        #expect(head.host.map(text) == "a.example")
        #expect(text(head.length..<bytes.count) == "body")
        #expect(head.framing == .contentLength(12))
    }

    @Test func reasonPhraseIsARange() throws {
        let bytes = Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".utf8)
        var parser = HTTP1Parser(kind: .response)
        #expect(try parser.parse(bytes.span) == .complete)
        #expect(String(decoding: bytes[parser.head.reason], as: UTF8.self) == "Not Found")
        #expect(parser.head.status == 404)
    }

    @Test func needMoreReportsWhatWasScanned() throws {
        let bytes = Array("GET / HTTP/1.1\r\nHost: a\r".utf8)
        var parser = HTTP1Parser(kind: .request)
        // The CR waits for its LF, so it is not counted as scanned.
        #expect(try parser.parse(bytes.span) == .needMore(scanned: bytes.count - 1))
    }

    @Test func errorIsStickyUntilReset() throws {
        var parser = HTTP1Parser(kind: .request)
        let bad = Array("GET / HTTP/1.1\nHost: a\r\n\r\n".utf8)
        #expect(throws: HTTPParseError(.bareLF)) { try parser.parse(bad.span) }
        #expect(throws: HTTPParseError(.bareLF)) { try parser.parse(bad.span) }
        parser.reset()
        let good = Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
        #expect(try parser.parse(good.span) == .complete)
    }

    @Test func pipelinedRequestsParseAfterReset() throws {
        let bytes = Array("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".utf8)
        var parser = HTTP1Parser(kind: .request)
        let span = bytes.span
        #expect(try parser.parse(span) == .complete)
        let first = parser.head.length
        #expect(parser.head.keepAlive)
        parser.reset()
        #expect(try parser.parse(span.extracting(first..<bytes.count)) == .complete)
        #expect(!parser.head.keepAlive)
        #expect(String(decoding: bytes[(first + parser.head.target.lowerBound)..<(first + parser.head.target.upperBound)],
                       as: UTF8.self) == "/2")
    }

    @Test func smugglingCasesNameTheirReason() {
        func reason(_ raw: String) -> HTTPParseError.Reason? {
            if case .error(_, let reason) = parseHead(Array(raw.utf8), side: .request, cuts: []) { return reason }
            return nil
        }
        let h = "POST / HTTP/1.1\r\nHost: a\r\n"
        #expect(reason(h + "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n") == .contentLengthWithTransferEncoding)
        #expect(reason(h + "Transfer-Encoding : chunked\r\n\r\n") == .whitespaceBeforeColon)
        #expect(reason(h + "X: a\r\n b\r\n\r\n") == .obsoleteLineFolding)
        #expect(reason(h + "Content-Length: 1, 2\r\n\r\n") == .conflictingContentLength)
        #expect(reason(h + "Transfer-Encoding: chunked, chunked\r\n\r\n") == .chunkedTwice)
        #expect(reason(h + "Transfer-Encoding: gzip\r\n\r\n") == .chunkedNotFinal)
        #expect(reason(h + "X: a\rb\r\n\r\n") == .bareCR)
    }

    @Test func limitsAreConfigurable() {
        let limits = HTTP1Parser.Limits(maxHeaderBytes: 64, maxHeaderCount: 2, maxURIBytes: 8)
        let long = Array("GET /123456789 HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
        #expect(parseHead(long, side: .request, cuts: [], limits: limits) == .error(414, .uriTooLong))
        let many = Array("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n".utf8)
        #expect(parseHead(many, side: .request, cuts: [], limits: limits) == .error(431, .tooManyFields))
        let big = Array("GET / HTTP/1.1\r\nHost: a\r\nA: \(String(repeating: "x", count: 40))\r\n\r\n".utf8)
        #expect(parseHead(big, side: .request, cuts: [], limits: limits) == .error(431, .headTooLarge))
        // A head of exactly maxHeaderBytes is accepted.
        let exact = Array("GET / HTTP/1.1\r\nHost: a\r\nA: \(String(repeating: "x", count: 32))\r\n\r\n".utf8)
        #expect(exact.count == 64)
        #expect(parseHead(exact, side: .request, cuts: [], limits: limits) != .error(431, .headTooLarge))
    }

    @Test func rawBufferEntryPointMatches() throws {
        let bytes = Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
        var parser = HTTP1Parser(kind: .request)
        let progress = try bytes.withUnsafeBytes { buffer throws(HTTPParseError) in try parser.parse(buffer) }
        #expect(progress == .complete)
        #expect(parser.head.length == bytes.count)
    }

    @Test func resetKeepsTheFieldTableStorage() throws {
        var parser = HTTP1Parser(kind: .request)
        #expect(parser.head.fields.capacity >= 32)
        // A head with more fields than the table was reserved for grows it once; it keeps that size after.
        let many = Array(("GET / HTTP/1.1\r\nHost: a\r\n" + (0..<60).map { "F\($0): v\r\n" }.joined() + "\r\n").utf8)
        #expect(try parser.parse(many.span) == .complete)
        #expect(parser.head.fields.count == 61)
        parser.reset()
        let capacity = parser.head.fields.capacity
        #expect(capacity >= 61)
        let bytes = Array("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\n\r\n".utf8)
        for head in [bytes, many, bytes] {
            #expect(try parser.parse(head.span) == .complete)
            parser.reset()
            #expect(parser.head.fields.capacity == capacity)
        }
    }
}
