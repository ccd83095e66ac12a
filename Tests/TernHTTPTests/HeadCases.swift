import Testing
import TernHTTP

/// A message and what Tern must make of it. Sources: RFC 9112 (§ in the name) and request-smuggling research
/// (Linhart et al. 2005, Kettle "HTTP Desync Attacks" 2019 and "Browser-Powered Desync" 2022, Kallus et al.
/// "HTTP Garden" 2024): CL.TE, TE.CL and TE.TE obfuscations.
struct HeadCase: Sendable, CustomTestStringConvertible {
    enum Expected: Sendable, Equatable {
        case ok(Summary)
        case fail(Int)
        case incomplete
    }

    let name: String
    let side: Side
    let bytes: [UInt8]
    let expected: Expected

    var testDescription: String { name }
}

private let host = "Host: a.example\r\n"

private func req(_ name: String, _ raw: String, _ expected: HeadCase.Expected) -> HeadCase {
    HeadCase(name: name, side: .request, bytes: Array(raw.utf8), expected: expected)
}

private func resp(
    _ name: String, _ raw: String, toHEAD: Bool = false, toCONNECT: Bool = false, _ expected: HeadCase.Expected
) -> HeadCase {
    HeadCase(name: name, side: .response(toHEAD: toHEAD, toCONNECT: toCONNECT), bytes: Array(raw.utf8), expected: expected)
}

/// A request head with `fields` after the Host field.
private func post(_ fields: String, version: String = "HTTP/1.1") -> String {
    "POST /upload \(version)\r\n\(host)\(fields)\r\n"
}

private func ok(
    _ framing: BodyFraming, keepAlive: Bool = true, method: HTTPMethod = .get, form: RequestTargetForm = .origin,
    version: HTTPVersion = .http11, upgrade: Bool = false, expectContinue: Bool = false
) -> HeadCase.Expected {
    .ok(Summary(
        framing: framing, keepAlive: keepAlive, method: method, form: form, version: version, upgrade: upgrade,
        expectContinue: expectContinue))
}

private func okPost(_ framing: BodyFraming, keepAlive: Bool = true, version: HTTPVersion = .http11)
    -> HeadCase.Expected
{
    ok(framing, keepAlive: keepAlive, method: .post, version: version)
}

private func okResponse(
    _ status: Int, _ framing: BodyFraming, keepAlive: Bool = true, version: HTTPVersion = .http11,
    upgrade: Bool = false
) -> HeadCase.Expected {
    .ok(Summary(framing: framing, keepAlive: keepAlive, method: .other, version: version, status: status,
                upgrade: upgrade))
}

extension HeadCase {
    static let requests: [HeadCase] = [
        // Plain requests and framing (RFC 9112 §6.3).
        req("GET, no body", "GET / HTTP/1.1\r\n\(host)\r\n", ok(.none)),
        req("Content-Length with body after the head", post("Content-Length: 5\r\n") + "hello", okPost(.contentLength(5))),
        req("Content-Length 0", post("Content-Length: 0\r\n"), okPost(.contentLength(0))),
        req("Content-Length with leading zeros (1*DIGIT)", post("Content-Length: 005\r\n"), okPost(.contentLength(5))),
        req("Content-Length with tab OWS", post("Content-Length:\t5\t\r\n"), okPost(.contentLength(5))),
        req("chunked", post("Transfer-Encoding: chunked\r\n") + "0\r\n\r\n", okPost(.chunked)),
        req("chunked in upper case", post("Transfer-Encoding: CHUNKED\r\n"), okPost(.chunked)),
        req("gzip then chunked", post("Transfer-Encoding: gzip, chunked\r\n"), okPost(.chunked)),
        req("codings over two field lines", post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
            okPost(.chunked)),
        req("tab before chunked is OWS", post("Transfer-Encoding:\tchunked\r\n"), okPost(.chunked)),
        // RFC 9110 §8.6: identical Content-Length values.
        req("CL list of one value 5, 5", post("Content-Length: 5, 5\r\n"), okPost(.contentLength(5))),
        req("CL repeated with one value", post("Content-Length: 5\r\nContent-Length: 5\r\n"), okPost(.contentLength(5))),
        req("CL differing lines 5 / 6", post("Content-Length: 5\r\nContent-Length: 6\r\n"), .fail(400)),
        req("CL differing list 5, 6", post("Content-Length: 5, 6\r\n"), .fail(400)),
        req("CL +5", post("Content-Length: +5\r\n"), .fail(400)),
        req("CL -1", post("Content-Length: -1\r\n"), .fail(400)),
        req("CL 5 5 (space inside)", post("Content-Length: 5 5\r\n"), .fail(400)),
        req("CL 0x5", post("Content-Length: 0x5\r\n"), .fail(400)),
        req("CL empty", post("Content-Length:\r\n"), .fail(400)),
        req("CL trailing comma", post("Content-Length: 5,\r\n"), .fail(400)),
        req("CL overflow", post("Content-Length: 99999999999999999999\r\n"), .fail(400)),
        req("CL above Int64.max", post("Content-Length: 9223372036854775808\r\n"), .fail(400)),
        req("CL with vertical tab", post("Content-Length: \u{0B}5\r\n"), .fail(400)),
        // CL.TE and TE.CL (Kettle 2019).
        req("CL.TE: both present", post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n"), .fail(400)),
        req("TE.CL: both present, TE first", post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"), .fail(400)),
        req("TE gzip with CL", post("Transfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n"), .fail(400)),
        // TE.TE obfuscations.
        req("TE xchunked", post("Transfer-Encoding: xchunked\r\n"), .fail(501)),
        req("TE chunked-false", post("Transfer-Encoding: chunked-false\r\n"), .fail(501)),
        req("TE with space before colon", post("Transfer-Encoding : chunked\r\n"), .fail(400)),
        req("TE chunked, identity", post("Transfer-Encoding: chunked, identity\r\n"), .fail(501)),
        req("TE identity", post("Transfer-Encoding: identity\r\n"), .fail(501)),
        req("TE gzip alone: chunked not final", post("Transfer-Encoding: gzip\r\n"), .fail(400)),
        req("TE chunked, gzip: chunked not final", post("Transfer-Encoding: chunked, gzip\r\n"), .fail(400)),
        req("TE chunked then gzip lines", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"), .fail(400)),
        req("TE chunked twice in a list", post("Transfer-Encoding: chunked, chunked\r\n"), .fail(400)),
        req("TE chunked twice in two lines", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            .fail(400)),
        req("TE \\x0bchunked", post("Transfer-Encoding:\u{0B}chunked\r\n"), .fail(400)),
        req("TE \\x0cchunked", post("Transfer-Encoding:\u{0C}chunked\r\n"), .fail(400)),
        req("TE folded onto the next line", post("Transfer-Encoding:\r\n\tchunked\r\n"), .fail(400)),
        req("TE folded with SP", post("Transfer-Encoding: gzip,\r\n chunked\r\n"), .fail(400)),
        req("TE with a parameter", post("Transfer-Encoding: chunked;q=1\r\n"), .fail(501)),
        req("TE quoted", post("Transfer-Encoding: \"chunked\"\r\n"), .fail(501)),
        req("TE empty", post("Transfer-Encoding:\r\n"), .fail(400)),
        req("TE trailing comma", post("Transfer-Encoding: chunked,\r\n"), .fail(400)),
        req("TE with NUL", post("Transfer-Encoding: chunked\u{0}\r\n"), .fail(400)),
        req("TE name with a NUL", post("Transfer-Encoding\u{0}: chunked\r\n"), .fail(400)),
        req("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .fail(400)),
        req("Transfer_Encoding is just another field", post("Transfer_Encoding: chunked\r\n"), okPost(.none)),
        req("TE with CR inside the value", post("Transfer-Encoding: chun\rked\r\n"), .fail(400)),
        // Field syntax (RFC 9112 §5).
        req("field name with space", post("Foo Bar: x\r\n"), .fail(400)),
        req("field name with tab before colon", post("Foo\t: x\r\n"), .fail(400)),
        req("field name with slash", post("Foo/Bar: x\r\n"), .fail(400)),
        req("empty field name", post(": x\r\n"), .fail(400)),
        req("field line without colon", post("Foo\r\n"), .fail(400)),
        req("obs-fold continuation", post("X-A: a\r\n b\r\n"), .fail(400)),
        req("whitespace before the first field (§2.2)", "GET / HTTP/1.1\r\n \(host)\r\n", .fail(400)),
        req("bare CR in a value", post("X-A: a\rb\r\n"), .fail(400)),
        req("bare CR ending a line", "GET / HTTP/1.1\r\(host)\r\n", .fail(400)),
        req("NUL in a value", post("X-A: a\u{0}b\r\n"), .fail(400)),
        req("SOH in a value", post("X-A: \u{1}\r\n"), .fail(400)),
        req("DEL in a value", post("X-A: a\u{7F}\r\n"), .fail(400)),
        req("obs-text in a value is allowed", post("X-A: caf\u{E9}\r\n"), okPost(.none)),
        req("empty value is allowed", post("X-A:\r\n"), okPost(.none)),
        // Line endings (RFC 9112 §2.2): bare LF refused.
        req("LF-only line endings", "GET / HTTP/1.1\nHost: a\n\n", .fail(400)),
        req("LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n", .fail(400)),
        req("LF ending a field line", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", .fail(400)),
        req("leading CRLF skipped", "\r\nGET / HTTP/1.1\r\n\(host)\r\n", ok(.none)),
        req("several leading CRLFs skipped", "\r\n\r\n\r\nGET / HTTP/1.1\r\n\(host)\r\n", ok(.none)),
        req("leading bare LF", "\nGET / HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        // Host (RFC 9112 §3.2).
        req("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", .fail(400)),
        req("two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", .fail(400)),
        req("two Host fields in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", .fail(400)),
        req("empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", ok(.none)),
        req("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", .fail(400)),
        req("Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", .fail(400)),
        req("Host with port and IPv6", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", ok(.none)),
        // Versions (RFC 9112 §2.3) and persistence (§9.3).
        req("HTTP/1.0 without Host closes", "GET / HTTP/1.0\r\n\r\n", ok(.none, keepAlive: false, version: .http10)),
        req("HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            ok(.none, keepAlive: true, version: .http10)),
        req("HTTP/1.1 Connection: close", "GET / HTTP/1.1\r\n\(host)Connection: close\r\n\r\n", ok(.none, keepAlive: false)),
        req("Connection list with close", "GET / HTTP/1.1\r\n\(host)Connection: foo, , Close\r\n\r\n",
            ok(.none, keepAlive: false)),
        req("Connection with a non-token", "GET / HTTP/1.1\r\n\(host)Connection: a b\r\n\r\n", .fail(400)),
        req("WebSocket upgrade", "GET /ws HTTP/1.1\r\n\(host)Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
            ok(.none, upgrade: true)),
        req("h2c upgrade not honoured (as Envoy)", "GET / HTTP/1.1\r\n\(host)Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            ok(.none, upgrade: false)),
        req("Upgrade without the connection option", "GET /ws HTTP/1.1\r\n\(host)Upgrade: websocket\r\n\r\n",
            ok(.none, upgrade: false)),
        req("Upgrade in HTTP/1.0 ignored", "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            ok(.none, keepAlive: false, version: .http10, upgrade: false)),
        req("Expect 100-continue", post("Expect: 100-Continue\r\nContent-Length: 3\r\n"),
            ok(.contentLength(3), method: .post, expectContinue: true)),
        req("Expect 100-continue in HTTP/1.0 ignored", "POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
            ok(.none, keepAlive: false, method: .post, version: .http10, expectContinue: false)),
        req("HTTP/2.0", "GET / HTTP/2.0\r\n\(host)\r\n", .fail(505)),
        req("HTTP/1.2", "GET / HTTP/1.2\r\n\(host)\r\n", .fail(505)),
        req("HTTP/0.9 request-line", "GET /\r\n\r\n", .fail(400)),
        req("lower-case version", "GET / http/1.1\r\n\(host)\r\n", .fail(400)),
        req("HTTP/1.10", "GET / HTTP/1.10\r\n\(host)\r\n", .fail(400)),
        req("HTTP/1", "GET / HTTP/1\r\n\(host)\r\n", .fail(400)),
        // Request-line (RFC 9112 §3).
        req("two spaces after the method", "GET  / HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("two spaces before the version", "GET /  HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("trailing space", "GET / HTTP/1.1 \r\n\(host)\r\n", .fail(400)),
        req("leading space", " GET / HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("tab as separator", "GET\t/ HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("space inside the target", "GET /a b HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("NUL in the target", "GET /a\u{0}b HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("fragment in the target", "GET /a#b HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("non-ASCII in the target", "GET /caf\u{E9} HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("method with a non-token char", "G(T / HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("lower-case method is another method", "get / HTTP/1.1\r\n\(host)\r\n", ok(.none, method: .other)),
        req("extension method", "PROPFIND /d HTTP/1.1\r\n\(host)\r\n", ok(.none, method: .other)),
        req("absolute-form, Host differs (accepted)", "GET http://b.example/x?y HTTP/1.1\r\n\(host)\r\n",
            ok(.none, form: .absolute)),
        req("absolute-form without //", "GET http:x HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("absolute-form without a host", "GET http:///x HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("absolute-form with only a port", "GET http://:80/x HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("absolute-form with userinfo", "GET http://u:p@b.example/x HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("authority-form outside CONNECT", "GET a.example:443 HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("CONNECT authority-form", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
            ok(.none, method: .connect, form: .authority)),
        req("CONNECT with origin-form", "CONNECT / HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("CONNECT without a port", "CONNECT a.example HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("CONNECT with userinfo", "CONNECT u@a.example:443 HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("OPTIONS *", "OPTIONS * HTTP/1.1\r\n\(host)\r\n", ok(.none, method: .options, form: .asterisk)),
        req("GET *", "GET * HTTP/1.1\r\n\(host)\r\n", .fail(400)),
        req("known methods", "DELETE /x HTTP/1.1\r\n\(host)\r\n", ok(.none, method: .delete)),
        // Limits (Envoy-like defaults): 414 and 431.
        req("target of 16 KiB", "GET /\(String(repeating: "a", count: 16 * 1024 - 1)) HTTP/1.1\r\n\(host)\r\n", ok(.none)),
        req("target over 16 KiB", "GET /\(String(repeating: "a", count: 16 * 1024)) HTTP/1.1\r\n\(host)\r\n", .fail(414)),
        req("target over 16 KiB, line not ended", "GET /\(String(repeating: "a", count: 20 * 1024))", .fail(414)),
        req("100 fields", "GET / HTTP/1.1\r\n\(host)\(String(repeating: "X-A: b\r\n", count: 99))\r\n", ok(.none)),
        req("101 fields", "GET / HTTP/1.1\r\n\(host)\(String(repeating: "X-A: b\r\n", count: 100))\r\n", .fail(431)),
        req("head over 60 KiB", "GET / HTTP/1.1\r\n\(host)X-A: \(String(repeating: "b", count: 61 * 1024))\r\n\r\n",
            .fail(431)),
        // Incomplete heads.
        req("no empty line yet", "GET / HTTP/1.1\r\n\(host)", .incomplete),
        req("ends in CR", "GET / HTTP/1.1\r\n\(host)\r", .incomplete),
        req("only leading CRLFs", "\r\n\r\n", .incomplete),
    ]

    static let responses: [HeadCase] = [
        resp("200 with Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", okResponse(200, .contentLength(5))),
        resp("200 chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", okResponse(200, .chunked)),
        resp("200 delimited by close", "HTTP/1.1 200 OK\r\n\r\nbody until close",
             okResponse(200, .untilClose, keepAlive: false)),
        resp("HTTP/1.0 200 delimited by close", "HTTP/1.0 200 OK\r\n\r\n",
             okResponse(200, .untilClose, keepAlive: false, version: .http10)),
        resp("HTTP/1.0 keep-alive with length", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
             okResponse(200, .contentLength(0), keepAlive: true, version: .http10)),
        resp("Connection: close with length", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
             okResponse(200, .contentLength(2), keepAlive: false)),
        resp("204 has no body", "HTTP/1.1 204 No Content\r\n\r\n", okResponse(204, .none)),
        resp("304 with Content-Length has no body", "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
             okResponse(304, .none)),
        resp("100 Continue", "HTTP/1.1 100 Continue\r\n\r\n", okResponse(100, .none)),
        resp("103 Early Hints", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", okResponse(103, .none)),
        resp("101 Switching Protocols", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
             okResponse(101, .none, upgrade: true)),
        resp("response to HEAD with Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", toHEAD: true,
             okResponse(200, .none)),
        resp("response to HEAD, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", toHEAD: true,
             okResponse(200, .none)),
        resp("2xx to CONNECT is a tunnel", "HTTP/1.1 200 Connection Established\r\n\r\n", toCONNECT: true,
             okResponse(200, .none)),
        resp("407 to CONNECT has a body", "HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n", toCONNECT: true,
             okResponse(407, .contentLength(0))),
        resp("gzip not chunked: until close (§6.3 rule 4)", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
             okResponse(200, .untilClose, keepAlive: false)),
        resp("no reason phrase", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", okResponse(200, .contentLength(0))),
        resp("empty reason phrase", "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", okResponse(404, .contentLength(0))),
        resp("both CL and TE (502 downstream)", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
             .fail(400)),
        resp("differing Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n", .fail(400)),
        resp("unknown coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n", .fail(501)),
        resp("obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\n\r\n", .fail(400)),
        resp("NUL in the reason", "HTTP/1.1 200 O\u{0}K\r\n\r\n", .fail(400)),
        resp("two-digit status", "HTTP/1.1 20 OK\r\n\r\n", .fail(400)),
        resp("status below 100", "HTTP/1.1 099 Odd\r\n\r\n", .fail(400)),
        resp("status with a letter", "HTTP/1.1 2x0 OK\r\n\r\n", .fail(400)),
        resp("HTTP/2.0 status-line", "HTTP/2.0 200 OK\r\n\r\n", .fail(505)),
        resp("empty line before the status-line", "\r\nHTTP/1.1 200 OK\r\n\r\n", .fail(400)),
        resp("bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", .fail(400)),
        resp("TE in HTTP/1.0 response", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", .fail(400)),
    ]

    static let all = requests + responses
}
