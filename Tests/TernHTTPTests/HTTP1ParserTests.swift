import Testing
import TernHTTP

@Suite struct HTTP1ParserTests {
    @Test func parsesASimpleRequest() throws {
        let bytes = Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
        var parser = HTTP1Parser(kind: .request)
        #expect(try parser.parse(bytes.span) == .complete)
        #expect(parser.head.method == .get)
        #expect(parser.head.length == bytes.count)
    }
}
