// Request heads as the tests of TernConfig and TernProxy write them: the text, and its parsed head.
import TernHTTP

/// An HTTP/1.1 request head for `path` with Host `host` and the extra field lines `headers`.
public func get(_ path: String, host: String = "cart", headers: [String] = [], method: String = "GET") -> String {
    "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n"
}

/// A parsed head for bytes that must be a complete request.
public struct HTTP1ParserBox {
    public let head: HTTP1Head
    public init(_ bytes: [UInt8]) {
        var parser = HTTP1Parser(kind: .request)
        _ = try? parser.parse(bytes.span)
        head = parser.head
    }
}
