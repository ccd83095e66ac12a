import Testing
import TernHTTP

/// Renders a forwarding plan as the text that would go on the wire, with the caller's pieces filled in.
private func render(_ raw: String, kind: HTTP1Parser.Kind, head: HEADFlag = .no,
                    _ plan: (HTTP1Head, borrowing Span<UInt8>, (HTTP1Forwarding.Piece) -> Void) -> Void) throws -> (String, pieces: Int) {
    let bytes = Array(raw.utf8)
    var parser = HTTP1Parser(kind: kind)
    parser.respondingToHEAD = head == .yes
    #expect(try parser.parse(bytes.span) == .complete)
    var out = ""
    var pieces = 0
    plan(parser.head, bytes.span) { piece in
        pieces += 1
        switch piece {
        case .bytes(let r): out += String(decoding: bytes[r], as: UTF8.self)
        case .literal(let s): out += s.description
        case .clientAddress: out += "10.0.0.7"
        case .requestID: out += "00000000-0000-4000-8000-000000000000"
        case .routeTarget: out += "/rewritten"
        case .routeFields: out += "x-route: 1\r\n"
        case .traceFields: out += "traceparent: 00-new\r\n"
        }
    }
    return (out, pieces)
}

private enum HEADFlag { case yes, no }

private func forwardRequest(_ raw: String, trusted: Bool = false) throws -> String {
    try render(raw, kind: .request) { head, bytes, emit in
        HTTP1Forwarding.request(head, bytes, options: .init(trustedClient: trusted), emit: emit)
    }.0
}

private func forwardResponse(_ raw: String, _ p: HTTP1Forwarding.Persistence = .keepAlive) throws -> String {
    try render(raw, kind: .response) { head, bytes, emit in
        HTTP1Forwarding.response(head, bytes, persistence: p, emit: emit)
    }.0
}

@Suite struct HTTP1ForwardingTests {
    @Test func plainRequestKeepsItsLinesAndGainsForwardingFields() throws {
        let out = try forwardRequest("GET /a?b HTTP/1.1\r\nHost: svc\r\nAccept: */*\r\n\r\n")
        #expect(out == "GET /a?b HTTP/1.1\r\nHost: svc\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.7\r\n"
            + "x-forwarded-proto: http\r\nx-request-id: 00000000-0000-4000-8000-000000000000\r\n\r\n")
    }

    @Test func unchangedLinesComeOutAsOnePiece() throws {
        let (_, pieces) = try render("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nx-request-id: r\r\n\r\n", kind: .request) {
            HTTP1Forwarding.request($0, $1, options: .init(), emit: $2)
        }
        // start-line (2), the kept lines (1), XFF (3), XFP (1), final CRLF (1).
        #expect(pieces == 8)
    }

    @Test func hopByHopFieldsAndTheFieldsConnectionNamesAreRemoved() throws {
        let out = try forwardRequest("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: 5\r\n"
            + "X-Hop: secret\r\nProxy-Connection: close\r\nTE: deflate\r\nUpgrade: h2c\r\nX-Keep: 1\r\nx-request-id: r1\r\n\r\n")
        #expect(out == "GET / HTTP/1.1\r\nHost: a\r\nX-Keep: 1\r\nx-request-id: r1\r\nx-forwarded-for: 10.0.0.7\r\n"
            + "x-forwarded-proto: http\r\n\r\n")
    }

    @Test func teTrailersGoesOnAsEnvoySanitizesIt() throws {
        // gRPC servers require "te: trailers"; any other TE value is hop-by-hop and goes.
        let out = try forwardRequest("POST /s/M HTTP/1.1\r\nHost: a\r\nTE: Trailers\r\nContent-Length: 0\r\nx-request-id: r1\r\n\r\n")
        #expect(out == "POST /s/M HTTP/1.1\r\nHost: a\r\nTE: Trailers\r\nContent-Length: 0\r\nx-request-id: r1\r\n"
            + "x-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: http\r\n\r\n")
        let gzip = try forwardRequest("GET / HTTP/1.1\r\nHost: a\r\nTE: trailers, gzip\r\nx-request-id: r1\r\n\r\n")
        #expect(!gzip.contains("TE:"))
    }

    @Test func tracedRequestsLoseEveryReceivedTraceFieldAndGainTheProxys() throws {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\ntraceparent: 00-old\r\nTraceState: k=v\r\nb3: 1-2\r\nX-B3-TraceId: 1\r\n"
            + "x-b3-spanid: 2\r\nx-b3-sampled: 1\r\nUser-Agent: ua\r\nx-request-id: r\r\n\r\n"
        let traced = try render(raw, kind: .request) {
            HTTP1Forwarding.request($0, $1, options: .init(replaceTrace: true), emit: $2)
        }.0
        #expect(traced == "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: ua\r\nx-request-id: r\r\ntraceparent: 00-new\r\n"
            + "x-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: http\r\n\r\n")
        // Not traced: every field passes.
        let untouched = try forwardRequest(raw)
        #expect(untouched.contains("traceparent: 00-old\r\nTraceState: k=v\r\nb3: 1-2\r\nX-B3-TraceId: 1\r\nx-b3-spanid: 2\r\n"))
        var parser = HTTP1Parser(kind: .request)
        let bytes = Array(raw.utf8)
        #expect(try parser.parse(bytes.span) == .complete)
        #expect(parser.head.fields.map(\.known) == [.host, .traceparent, .tracestate, .b3, .xB3, .xB3, .xB3, .userAgent, .xRequestID])
    }

    @Test func dechunkedResponseLosesTransferEncodingOnly() throws {
        let out = try render("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n", kind: .response) {
            HTTP1Forwarding.response($0, $1, persistence: .close, dechunk: true, emit: $2)
        }.0
        #expect(out == "HTTP/1.1 200 OK\r\nX-A: 1\r\nconnection: close\r\n\r\n")
    }

    @Test func http10RequestGoesUpstreamAsHTTP11() throws {
        let out = try forwardRequest("GET / HTTP/1.0\r\nX-Request-Id: abc\r\n\r\n")
        #expect(out.hasPrefix("GET / HTTP/1.1\r\nX-Request-Id: abc\r\n"))
    }

    @Test func forwardedForIsAppendedToAndUntrustedFieldsAreStripped() throws {
        let raw = "POST /p HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\n"
            + "X-Forwarded-Proto: https\r\nX-Envoy-Retry-On: 5xx\r\nx-envoy-original-path: /x\r\nX-Forwarded-Client-Cert: By=x\r\n"
            + "Content-Length: 2\r\nX-Request-Id: kept\r\n\r\nhi"
        #expect(try forwardRequest(raw) == "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX-Request-Id: kept\r\n"
            + "x-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.7\r\nx-forwarded-proto: http\r\n\r\n")
        #expect(try forwardRequest(raw, trusted: true) == "POST /p HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n"
            + "X-Envoy-Retry-On: 5xx\r\nx-envoy-original-path: /x\r\nX-Forwarded-Client-Cert: By=x\r\nContent-Length: 2\r\n"
            + "X-Request-Id: kept\r\nx-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.7\r\n\r\n")
    }

    @Test func upgradeRequestKeepsUpgradeAndSaysSo() throws {
        let out = try forwardRequest("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            + "Sec-WebSocket-Key: k\r\nx-request-id: r\r\n\r\n")
        #expect(out == "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nx-request-id: r\r\n"
            + "connection: upgrade\r\nx-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: http\r\n\r\n")
    }

    @Test func chunkedRequestKeepsItsFraming() throws {
        let out = try forwardRequest("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nx-request-id: r\r\n\r\n")
        #expect(out.contains("Transfer-Encoding: chunked\r\n"))
    }

    @Test func responseStatesTheConnectionsFate() throws {
        let raw = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nServer: s\r\n\r\n"
        #expect(try forwardResponse(raw) == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: s\r\n\r\n")
        #expect(try forwardResponse(raw, .close) == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: s\r\nconnection: close\r\n\r\n")
        #expect(try forwardResponse(raw, .keepAliveHTTP10) == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: s\r\nconnection: keep-alive\r\n\r\n")
    }

    @Test func anAbsoluteFormTargetsAuthorityReplacesHost() throws {
        // RFC 9112 §3.2.2, as Envoy: the Host field is ignored (and not forwarded); the target goes on in origin
        // form and its authority as Host.
        let raw = "GET http://b.example:8080/x?y HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\nx-request-id: r\r\n\r\n"
        let bytes = Array(raw.utf8)
        var parser = HTTP1Parser(kind: .request)
        #expect(try parser.parse(bytes.span) == .complete)
        #expect(parser.head.hostFromTarget && String(decoding: bytes[parser.head.host!], as: UTF8.self) == "b.example:8080")
        #expect(try forwardRequest(raw) == "GET /x?y HTTP/1.1\r\nAccept: */*\r\nx-request-id: r\r\nhost: b.example:8080\r\n"
            + "x-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: http\r\n\r\n")
        #expect(try forwardRequest("GET http://b.example HTTP/1.1\r\nHost: b.example\r\nx-request-id: r\r\n\r\n")
            .hasPrefix("GET / HTTP/1.1\r\nx-request-id: r\r\nhost: b.example\r\n"))
        #expect(try forwardRequest("GET http://b.example?q HTTP/1.1\r\nHost: b.example\r\nx-request-id: r\r\n\r\n")
            .hasPrefix("GET /?q HTTP/1.1\r\n"))
        // A route that rewrites the authority sends its own Host (among its fields) instead.
        let routed = try render(raw, kind: .request) { head, bytes, emit in
            HTTP1Forwarding.request(head, bytes, options: .init(routeFields: true, routeSetsHost: true), emit: emit)
        }.0
        #expect(!routed.contains("host: b.example") && !routed.contains("Host: a.example") && routed.contains("x-route: 1"))
    }

    @Test func identicalContentLengthsGoOnOnce() throws {
        // Repeated lines: the first kept where it was, the others left out.
        let lines = try forwardRequest("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-A: 1\r\nContent-Length: 3\r\n"
            + "x-request-id: r\r\n\r\nabc")
        #expect(lines == "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-A: 1\r\nx-request-id: r\r\n"
            + "x-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: http\r\n\r\n")
        // A list of identical values: written anew with one, in its place.
        let list = try forwardRequest("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 , 3\r\nX-A: 1\r\nx-request-id: r\r\n\r\nabc")
        #expect(list.hasPrefix("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\nX-A: 1\r\nx-request-id: r\r\n"))
        #expect(try forwardResponse("HTTP/1.1 200 OK\r\nContent-Length: 2,2\r\nContent-Length: 2\r\nServer: s\r\n\r\n")
                == "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nServer: s\r\n\r\n")
    }

    @Test func aTunnelResponseSaysNothingOfTheConnection() throws {
        // A 2xx to CONNECT: the connection becomes the tunnel, neither kept for requests nor closed.
        let out = try render("HTTP/1.1 200 Connection Established\r\nConnection: close\r\n\r\n", kind: .response) { head, bytes, emit in
            HTTP1Forwarding.response(head, bytes, persistence: .tunnel, emit: emit)
        }.0
        #expect(out == "HTTP/1.1 200 Connection Established\r\n\r\n")
    }

    @Test func emptyReasonAndNoFields() throws {
        #expect(try forwardResponse("HTTP/1.1 204 \r\n\r\n") == "HTTP/1.1 204 \r\n\r\n")
        #expect(try forwardResponse("HTTP/1.1 204\r\n\r\n") == "HTTP/1.1 204\r\n\r\n")
    }

    @Test func switchingProtocolsKeepsUpgrade() throws {
        let out = try forwardResponse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n", .close)
        #expect(out == "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\nconnection: upgrade\r\n\r\n")
    }

    @Test func routeChangesTheTargetAndFieldsButNeverTheFraming() throws {
        let raw = "POST /old/x?q HTTP/1.1\r\nHost: a\r\nX-Drop: 1\r\nContent-Length: 2\r\nX-Keep: 2\r\nx-request-id: r\r\n\r\nhi"
        let out = try render(raw, kind: .request) { head, bytes, emit in
            HTTP1Forwarding.request(head, bytes, options: .init(rewriteTarget: true, routeFields: true),
                                    drop: { r in r.lowerBound == 33 || r.lowerBound == 44 }, emit: emit)  // X-Drop and Content-Length
        }.0
        #expect(out == "POST /rewritten HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX-Keep: 2\r\nx-request-id: r\r\n"
            + "x-route: 1\r\nx-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: http\r\n\r\n")
        let response = try render("HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 0\r\n\r\n", kind: .response) { head, bytes, emit in
            HTTP1Forwarding.response(head, bytes, persistence: .keepAlive, routeFields: true, drop: { r in r.count == 6 }, emit: emit)
        }.0
        #expect(response == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nx-route: 1\r\n\r\n")
    }

    @Test func interimResponseNeverCloses() throws {
        #expect(try forwardResponse("HTTP/1.1 100 Continue\r\n\r\n", .close) == "HTTP/1.1 100 Continue\r\n\r\n")
    }
}
