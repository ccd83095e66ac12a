import Testing
@testable import TernHTTP

/// HTTP/2 sessions over nghttp2, a client and a server talking through memory: heads, bodies, trailers, flow
/// control held by the reader, resets, GOAWAY, and a connection that does not start with the preface.
@Suite struct HTTP2SessionTests {
    /// A session and the body it sends per stream (what its `bodySource` reads from).
    final class Side {
        let session: HTTP2Session
        var bodies: [Int32: [UInt8]] = [:]
        var trailers: Set<Int32> = []
        /// Everything it received, with the fields of each head as (name, value) strings.
        var log: [String] = []

        init(_ role: HTTP2Session.Role, _ settings: HTTP2Session.Settings = .init()) {
            session = try! HTTP2Session(role: role, settings: settings)
            session.bodySource = { [unowned self] stream, buffer in
                guard var body = self.bodies[stream] else { return .wait }
                let n = min(buffer.count, body.count)
                buffer.copyBytes(from: body[0..<n])
                body.removeFirst(n)
                self.bodies[stream] = body
                guard body.isEmpty else { return .bytes(n, end: false) }
                self.bodies[stream] = nil
                return self.trailers.contains(stream) ? .endWithTrailers(n) : .bytes(n, end: true)
            }
        }

        func fields(_ r: Range<Int>) -> [String] {
            r.map { "\(String(decoding: session.name($0), as: UTF8.self)): \(String(decoding: session.value($0), as: UTF8.self))" }
        }

        /// Takes `bytes` in and logs the events; returns receive's answer.
        @discardableResult
        func take(_ bytes: [UInt8]) -> Bool {
            let ok = bytes.withUnsafeBytes { session.receive($0) }
            logEvents(bytes)
            return ok
        }

        /// Called for each head and trailers received, before their fields are cleared.
        var onHead: ((Int32, Range<Int>, Bool) -> Void)? = nil

        func logEvents(_ bytes: [UInt8]) {
            for e in session.events {
                switch e {
                case .head(let s, let f, let end): onHead?(s, f, end)
                case .trailers(let s, let f): onHead?(s, f, true)
                default: break
                }
                switch e {
                case .head(let s, let f, let end): log.append("head \(s)\(end ? " end" : "") \(fields(f))")
                case .trailers(let s, let f): log.append("trailers \(s) \(fields(f))")
                case .data(let s, let r): log.append("data \(s) \(String(decoding: bytes[r], as: UTF8.self).count)")
                case .endStream(let s): log.append("end \(s)")
                case .reset(let s, let c): log.append("reset \(s) \(c)")
                case .closed(let s, let c): log.append("closed \(s) \(c)")
                case .goaway(let s, let c): log.append("goaway \(s) \(c)")
                }
            }
            session.clearEvents()
        }

        /// All output waiting.
        func output() -> [UInt8] {
            var out: [UInt8] = []
            while true {
                let chunk = session.nextOutput()
                logEvents([])
                if chunk.isEmpty { return out }
                out.append(contentsOf: chunk)
            }
        }
    }

    /// Passes output both ways until neither side has any.
    static func settle(_ a: Side, _ b: Side) {
        for _ in 0..<100 {
            let ab = a.output(), ba = b.output()
            if ab.isEmpty && ba.isEmpty { return }
            if !ab.isEmpty { b.take(ab) }
            if !ba.isEmpty { a.take(ba) }
        }
        Issue.record("the sessions did not settle")
    }

    static func request(_ client: Side, _ fields: [(String, String)], body: [UInt8]? = nil, trailers: Bool = false) -> Int32 {
        client.session.beginHead()
        for (n, v) in fields { client.session.addField(n.utf8, v.utf8) }
        let id = client.session.submitRequest(hasBody: body != nil)!
        if let body { client.bodies[id] = body }
        if trailers { client.trailers.insert(id) }
        return id
    }

    static let get = [(":method", "GET"), (":scheme", "http"), (":authority", "svc"), (":path", "/a"), ("x-a", "1")]

    @Test func aRequestAndItsResponseGoThroughWithTheirFields() {
        let client = Side(.client), server = Side(.server)
        let id = Self.request(client, Self.get)
        #expect(id == 1)
        Self.settle(client, server)
        #expect(server.log == ["head 1 end [\":method: GET\", \":scheme: http\", \":authority: svc\", \":path: /a\", \"x-a: 1\"]"])
        server.session.beginHead()
        server.session.addField(":status".utf8, "200".utf8)
        server.session.addField("content-type".utf8, "text/plain".utf8)
        server.bodies[1] = Array("hello".utf8)
        #expect(server.session.submitResponse(stream: 1, hasBody: true))
        Self.settle(client, server)
        #expect(client.log == ["head 1 [\":status: 200\", \"content-type: text/plain\"]", "data 1 5", "end 1", "closed 1 0"])
        #expect(server.log.last == "closed 1 0")
    }

    @Test func bodiesAndTrailersGoBothWays() {
        let client = Side(.client), server = Side(.server)
        let post = [(":method", "POST"), (":scheme", "http"), (":authority", "svc"), (":path", "/pkg.Svc/Call"),
                    ("content-type", "application/grpc"), ("te", "trailers")]
        let id = Self.request(client, post, body: [UInt8](repeating: 7, count: 1000), trailers: true)
        Self.settle(client, server)
        // The body ended without END_STREAM: the trailers end the stream.
        client.session.beginHead()
        client.session.addField("x-checksum".utf8, "7".utf8)
        #expect(client.session.submitTrailers(stream: id))
        Self.settle(client, server)
        #expect(server.log == ["head 1 \(post.map { "\($0.0): \($0.1)" })", "data 1 1000", "trailers 1 [\"x-checksum: 7\"]"])
        // A gRPC answer: head, message, trailers with the status.
        server.session.beginHead()
        server.session.addField(":status".utf8, "200".utf8)
        server.bodies[id] = [0, 0, 0, 0, 2, 8, 1]
        server.trailers.insert(id)
        server.session.submitResponse(stream: id, hasBody: true)
        Self.settle(client, server)
        server.session.beginHead()
        server.session.addField("grpc-status".utf8, "0".utf8)
        server.session.submitTrailers(stream: id)
        Self.settle(client, server)
        #expect(client.log == ["head 1 [\":status: 200\"]", "data 1 7", "trailers 1 [\"grpc-status: 0\"]", "closed 1 0"])
    }

    @Test func aReaderThatDoesNotConsumeHoldsTheSenderToItsWindow() {
        var small = HTTP2Session.Settings()
        small.initialStreamWindow = 16_384
        small.connectionWindow = 65_535
        let client = Side(.client), server = Side(.server, small)
        // (Until the server's SETTINGS arrive, a client may use the default window of 65,535 bytes.)
        Self.settle(client, server)
        let id = Self.request(client, [(":method", "POST"), (":scheme", "http"), (":authority", "svc"), (":path", "/up")],
                         body: [UInt8](repeating: 1, count: 100_000))
        Self.settle(client, server)
        func received() -> Int { server.log.compactMap { $0.hasPrefix("data 1 ") ? Int($0.dropFirst(7)) : nil }.reduce(0, +) }
        // The stream window, and not a byte more, until the server says what it passed on.
        #expect(received() == 16_384)
        #expect(client.session.sendWindow(stream: id) == 0)
        server.session.consume(stream: id, 16_384)
        Self.settle(client, server)
        #expect(received() == 32_768)
        // Consumed as it arrives: the whole body, and the stream ends.
        var consumed = 16_384
        for _ in 0..<20 where received() < 100_000 {
            let r = received()
            server.session.consume(stream: id, r - consumed)
            consumed = r
            Self.settle(client, server)
        }
        #expect(received() == 100_000 && server.log.last == "end 1")
    }

    @Test func aResetAndAGoawayReachThePeer() {
        let client = Side(.client), server = Side(.server)
        let id = Self.request(client, Self.get)
        Self.settle(client, server)
        client.session.reset(stream: id, code: HTTP2ErrorCode.cancel)
        Self.settle(client, server)
        #expect(server.log.suffix(2) == ["reset 1 8", "closed 1 8"])
        _ = Self.request(client, Self.get)
        Self.settle(client, server)
        server.session.goaway(code: HTTP2ErrorCode.noError)
        Self.settle(client, server)
        #expect(client.log.contains("goaway 3 0"))
        #expect(server.session.drain == .final)
        // A graceful drain (Envoy's two steps) starts with the notice and a PING: a stream the client opens before
        // it reads the notice is still served; once the PING comes back, the final GOAWAY names it.
        let drained = Side(.server), c2 = Side(.client)
        _ = Self.request(c2, Self.get)
        Self.settle(c2, drained)
        drained.session.beginDrain()
        #expect(drained.session.drain == .notice)
        let late = Self.request(c2, Self.get)
        Self.settle(c2, drained)
        #expect(c2.log.contains("goaway 2147483647 0"))
        #expect(drained.log.contains { $0.hasPrefix("head \(late) ") })
        #expect(drained.session.drain == .acknowledged)
        drained.session.finishDrain()
        Self.settle(c2, drained)
        #expect(c2.log.last == "goaway \(late) 0" && drained.session.drain == .final)
    }

    @Test func aFloodThenAFrameOfAWrongSizeInOneReadEndsTheSessionWithoutAnAbort() {
        // FuzzHTTP2's first crasher (Tools/fuzz/crashers/FuzzHTTP2-crash-6945783b…): SETTINGS, HEADERS on stream 1,
        // two empty DATA frames (the flood), then a SETTINGS ACK with a 67-byte payload, in one read. nghttp2 1.52,
        // terminated from inside a callback, went on parsing and abort()ed on its own assertion.
        let hex = "0000000400000000000000130104000000018286418847722f522e3c07814485607fe47007000000000000000001000000000000000001000043040105000000"
        var bytes = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            bytes.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        let server = Side(.server)
        #expect(server.take(bytes))
        #expect(server.session.flood == "frames with an empty payload")
        // Its GOAWAY ENHANCE_YOUR_CALM goes out, naming stream 1.
        let out = server.output()
        let goaway = HTTP2Session.goawayFrame(lastStream: 1, code: HTTP2ErrorCode.enhanceYourCalm)
        #expect(out.count >= goaway.count && Array(out.suffix(goaway.count)) == goaway)
    }

    @Test func moreHeadBytesInOneReadThanSixteenListsEndTheSessionAsAFlood() {
        // Heads within the limit one by one, but more than 16 lists' worth decoded from one read (an HPACK bomb over
        // many streams): the session fails, counted as a flood, and its last words are GOAWAY ENHANCE_YOUR_CALM.
        var small = HTTP2Session.Settings()
        small.maxHeaderListSize = 4096
        small.maxConcurrentStreams = 100
        let client = Side(.client), server = Side(.server, small)
        Self.settle(client, server)
        let fields = Self.get + (0..<3).map { ("x-\($0)", String(repeating: "v", count: 1200)) }
        for _ in 0..<20 { _ = Self.request(client, fields) }
        #expect(!server.take(client.output()))
        #expect(server.session.failedForFlood && server.session.flood == nil)
        let out = server.output()
        #expect(out.count == 17 && out[3] == 0x7 && Array(out.suffix(4)) == [0, 0, 0, 0xb], "\(out)")
        #expect(server.session.isDone)
    }

    @Test func aKeepalivePingIsOutstandingUntilItsAnswerComes() {
        let client = Side(.client), server = Side(.server)
        Self.settle(client, server)
        client.session.ping()
        #expect(client.session.pingOutstanding)
        // (The answer to another PING does not count.)
        server.session.ping()
        Self.settle(client, server)
        #expect(!client.session.pingOutstanding && !server.session.pingOutstanding)
    }

    @Test func aHeaderListOverTheLimitIsDroppedAsItArrivesAndItsStreamReset() {
        var small = HTTP2Session.Settings()
        small.maxHeaderListSize = 4096
        let client = Side(.client), server = Side(.server, small)
        Self.settle(client, server)
        let big = Self.request(client, Self.get + (0..<10).map { ("x-\($0)", String(repeating: "v", count: 1000)) })
        Self.settle(client, server)
        // No head reached the caller, its fields are gone, and the stream was reset.
        #expect(!server.log.contains { $0.hasPrefix("head") })
        #expect(server.session.headsTooLarge == 1 && server.session.fields.isEmpty)
        #expect(client.log.contains("reset \(big) 2") || client.log.contains("closed \(big) 2"))
        // The connection goes on.
        let next = Self.request(client, Self.get)
        Self.settle(client, server)
        #expect(server.log.last == "head \(next) end [\":method: GET\", \":scheme: http\", \":authority: svc\", \":path: /a\", \"x-a: 1\"]")
    }

    @Test func aConnectionThatDoesNotStartWithThePrefaceFails() {
        let server = Side(.server)
        #expect(!server.take(Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)))
        #expect(server.session.failure != nil)
    }
}
