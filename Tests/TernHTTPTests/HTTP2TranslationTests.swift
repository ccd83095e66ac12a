import Testing
@testable import TernHTTP

/// Heads crossing between HTTP/2 and HTTP/1.1 (RFC 9113 §8.2-8.3): written out, then read back by the other side's
/// own codec (HTTP1Parser, or an nghttp2 peer).
@Suite struct HTTP2TranslationTests {
    typealias Side = HTTP2SessionTests.Side

    /// The HTTP/1.1 request a server session writes for an HTTP/2 request with `fields`.
    func http1(_ fields: [(String, String)], body: [UInt8]? = nil) -> (text: String, framing: HTTP2Translation.Framing?, error: HTTP2Translation.Malformed?) {
        let client = Side(.client), server = Side(.server)
        var out: [UInt8] = []
        var framing: HTTP2Translation.Framing? = nil, error: HTTP2Translation.Malformed? = nil
        server.onHead = { _, f, end in
            switch HTTP2Translation.http1Request(server.session, f, endStream: end, into: &out) {
            case .success(let x): framing = x
            case .failure(let e): error = e
            }
        }
        _ = HTTP2SessionTests.request(client, fields, body: body)
        HTTP2SessionTests.settle(client, server)
        return (String(decoding: out, as: UTF8.self), framing, error)
    }

    @Test func anHTTP2RequestBecomesAnHTTP1RequestHead() throws {
        let r = http1([(":method", "GET"), (":scheme", "https"), (":authority", "svc:8080"), (":path", "/a?b=1"),
                       ("cookie", "a=1"), ("x-a", "1"), ("cookie", "b=2"), ("te", "trailers")])
        // Host first from :authority, the cookie crumbs joined at the first one's place, no body.
        #expect(r.text == "GET /a?b=1 HTTP/1.1\r\nhost: svc:8080\r\ncookie: a=1; b=2\r\nx-a: 1\r\nte: trailers\r\n\r\n")
        #expect(r.framing == HTTP2Translation.Framing.none)
        var parser = HTTP1Parser(kind: .request)
        let bytes = Array(r.text.utf8)
        #expect(try parser.parse(bytes.span) == .complete)
        #expect(parser.head.framing == .none && parser.head.host != nil)
    }

    @Test func aBodyIsFramedByItsLengthOrChunked() {
        let post = [(":method", "POST"), (":scheme", "http"), (":authority", "svc"), (":path", "/up")]
        let chunked = http1(post, body: Array("hello".utf8))
        #expect(chunked.text == "POST /up HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n")
        #expect(chunked.framing == .chunked)
        let sized = http1(post + [("content-length", "5")], body: Array("hello".utf8))
        #expect(sized.text == "POST /up HTTP/1.1\r\nhost: svc\r\ncontent-length: 5\r\n\r\n")
        #expect(sized.framing == .contentLength(5))
    }

    @Test func connectAndAuthorityRules() {
        let connect = http1([(":method", "CONNECT"), (":authority", "db:5432")])
        #expect(connect.text == "CONNECT db:5432 HTTP/1.1\r\nhost: db:5432\r\n\r\n")
        // Host without :authority stands in for it; both naming different hosts is malformed (RFC 9113 §8.3.1).
        #expect(http1([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("host", "h")]).text
                == "GET / HTTP/1.1\r\nhost: h\r\n\r\n")
        #expect(http1([(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/"), ("host", "b")]).error
                == .hostDiffers)
    }

    @Test func anHTTP2ResponseBecomesAnHTTP1ResponseHead() {
        func http1Response(status: String, _ fields: [(String, String)], body: Bool, toHEAD: Bool = false) -> String {
            let client = Side(.client), server = Side(.server)
            var out: [UInt8] = []
            client.onHead = { _, f, end in
                _ = HTTP2Translation.http1Response(client.session, f, endStream: end, toHEAD: toHEAD, into: &out)
            }
            var request = HTTP2SessionTests.get
            if toHEAD { request[0] = (":method", "HEAD") }
            let id = HTTP2SessionTests.request(client, request)
            HTTP2SessionTests.settle(client, server)
            server.session.beginHead()
            server.session.addField(":status".utf8, status.utf8)
            for (n, v) in fields { server.session.addField(n.utf8, v.utf8) }
            if body { server.bodies[id] = [1, 2, 3] }
            server.session.submitResponse(stream: id, hasBody: body)
            HTTP2SessionTests.settle(client, server)
            return String(decoding: out, as: UTF8.self)
        }
        #expect(http1Response(status: "200", [("content-type", "text/plain")], body: false)
                == "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 0\r\n\r\n")
        #expect(http1Response(status: "200", [], body: true) == "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        #expect(http1Response(status: "200", [("content-length", "3")], body: true) == "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n")
        #expect(http1Response(status: "204", [], body: false) == "HTTP/1.1 204 No Content\r\n\r\n")
        #expect(http1Response(status: "200", [("content-length", "3")], body: false, toHEAD: true) == "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n")
    }

    @Test func anHTTP1ResponseLosesItsConnectionSpecificFieldsOnTheWayToHTTP2() throws {
        let bytes = Array(("HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\n"
            + "Content-Type: text/plain\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\n\r\n").utf8)
        var parser = HTTP1Parser(kind: .response)
        #expect(try parser.parse(bytes.span) == .complete)
        let client = Side(.client), server = Side(.server)
        let id = HTTP2SessionTests.request(client, HTTP2SessionTests.get)
        HTTP2SessionTests.settle(client, server)
        server.session.beginHead()
        let hasBody = HTTP2Translation.http2Response(parser.head, bytes, into: server.session)
        #expect(hasBody)
        server.bodies[id] = Array("body".utf8)
        server.session.submitResponse(stream: id, hasBody: true)
        HTTP2SessionTests.settle(client, server)
        // Lower-cased, and the connection-specific fields gone (those the Connection field names too).
        #expect(client.log.first == "head 1 [\":status: 200\", \"content-type: text/plain\", \"set-cookie: a=1\"]")
    }

    @Test func anHTTP1RequestBecomesAnHTTP2Request() throws {
        func h2(_ text: String) throws -> String? {
            let bytes = Array(text.utf8)
            var parser = HTTP1Parser(kind: .request)
            guard try parser.parse(bytes.span) == .complete else { return nil }
            let client = Side(.client), server = Side(.server)
            client.session.beginHead()
            HTTP2Translation.http2Request(parser.head, bytes, scheme: "http", into: client.session)
            _ = client.session.submitRequest(hasBody: false)
            HTTP2SessionTests.settle(client, server)
            return server.log.first
        }
        #expect(try h2("GET /p?q HTTP/1.1\r\nHost: svc\r\nTE: trailers\r\nConnection: close\r\nUser-Agent: u\r\n\r\n")
                == "head 1 end [\":method: GET\", \":scheme: http\", \":authority: svc\", \":path: /p?q\", \"te: trailers\", \"user-agent: u\"]")
        // An absolute-form target: its authority and its path; a `te` other than "trailers" is dropped.
        #expect(try h2("GET http://svc:8080/p?q HTTP/1.1\r\nHost: other\r\nTE: gzip\r\n\r\n")
                == "head 1 end [\":method: GET\", \":scheme: http\", \":authority: svc:8080\", \":path: /p?q\"]")
        #expect(try h2("OPTIONS http://svc HTTP/1.1\r\nHost: svc\r\n\r\n")
                == "head 1 end [\":method: OPTIONS\", \":scheme: http\", \":authority: svc\", \":path: *\"]")
        #expect(try h2("GET http://svc HTTP/1.1\r\nHost: svc\r\n\r\n")
                == "head 1 end [\":method: GET\", \":scheme: http\", \":authority: svc\", \":path: /\"]")
        #expect(try h2("CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n")
                == "head 1 end [\":method: CONNECT\", \":authority: db:5432\"]")
    }

    @Test func trailerSectionsCrossBothWaysWithoutTheFieldsTrailersMayNotCarry() {
        #expect(HTTP2Translation.forbiddenInTrailers(Array("Content-Length".utf8)))
        #expect(HTTP2Translation.forbiddenInTrailers(Array("host".utf8)))
        #expect(HTTP2Translation.forbiddenInTrailers(Array("transfer-encoding".utf8)))
        #expect(!HTTP2Translation.forbiddenInTrailers(Array("grpc-status".utf8)))
        // HTTP/1.1 → HTTP/2: an engine's chunked trailer section becomes trailers a peer reads, names lower-cased.
        let client = Side(.client), server = Side(.server)
        let id = HTTP2SessionTests.request(client, HTTP2SessionTests.get)
        HTTP2SessionTests.settle(client, server)
        server.session.beginHead()
        server.session.addField(":status".utf8, "200".utf8)
        server.bodies[id] = Array("x".utf8)
        server.trailers.insert(id)
        #expect(server.session.submitResponse(stream: id, hasBody: true))
        server.session.beginHead()
        let section = Array("Grpc-Status: 0\r\ncontent-length: 5\r\ngrpc-message:  all good \r\n\r\n".utf8)
        #expect(HTTP2Translation.http2Trailers(section, into: server.session) == 2)
        #expect(server.session.submitTrailers(stream: id))
        var trailers: [String] = []
        client.onHead = { _, f, end in if end { trailers = client.fields(f) } }
        HTTP2SessionTests.settle(client, server)
        #expect(trailers == ["grpc-status: 0", "grpc-message: all good"])
        // HTTP/2 → HTTP/1.1: trailers received become a chunked body's end, without forbidden fields.
        let c2 = Side(.client), s2 = Side(.server)
        let post = [(":method", "POST"), (":scheme", "http"), (":authority", "svc"), (":path", "/p")]
        let id2 = HTTP2SessionTests.request(c2, post, body: Array("abc".utf8), trailers: true)
        HTTP2SessionTests.settle(c2, s2)
        c2.session.beginHead()
        c2.session.addField("x-sum".utf8, "6".utf8)
        c2.session.addField("host".utf8, "evil".utf8)
        #expect(c2.session.submitTrailers(stream: id2))
        var out: [UInt8] = []
        s2.onHead = { _, f, end in
            if end && s2.fields(f).first?.hasPrefix(":") == false { HTTP2Translation.http1Trailers(s2.session, f, into: &out) }
        }
        HTTP2SessionTests.settle(c2, s2)
        #expect(String(decoding: out, as: UTF8.self) == "0\r\nx-sum: 6\r\n\r\n")
    }
}
