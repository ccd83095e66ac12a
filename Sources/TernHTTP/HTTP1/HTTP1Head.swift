import TernCore

/// A parsed HTTP/1.x request or response head that refers to the bytes it was parsed from.
///
/// Every `Range<Int>` is a range of byte offsets into the buffer handed to `HTTP1Parser.parse`, which starts at the
/// first byte of the message: nothing is copied, so the caller reads `buffer[range]` and forwards unchanged fields
/// with iovecs pointing at them (ARCHITECTURE.md §4). The head is valid as long as those bytes stay where they are.
public struct HTTP1Head: Sendable {
    /// A field line: name and value ranges, the value trimmed of OWS (RFC 9112 §5.1). TernCore's protocol-neutral
    /// field, so routing reads the parser's field table as it is (no copy).
    public typealias Field = HeadField

    public var method: HTTPMethod = .other
    /// Requests: the method token.
    public var methodBytes: Range<Int> = 0..<0
    /// Requests: the request-target as received.
    public var target: Range<Int> = 0..<0
    public var targetForm: RequestTargetForm = .origin
    public var version: HTTPVersion = .http11
    /// Responses: the status code (100–599).
    public var status: Int = 0
    /// Responses: the reason-phrase, possibly empty. Never interpreted (RFC 9112 §4).
    public var reason: Range<Int> = 0..<0
    /// Field lines in order, at most `Limits.maxHeaderCount`. The array's capacity is reserved by the parser (for
    /// 32 fields, grown once by a head with more) and kept across messages, so appending never allocates in
    /// steady state.
    public var fields: [Field] = []
    /// Requests: the Host field value, if exactly one was present; for an absolute-form target, the target's
    /// authority (RFC 9112 §3.2.2: it replaces the Host field, which is then ignored: `hostFromTarget`).
    public var host: Range<Int>? = nil
    public var hostFromTarget = false
    /// Where the start-line begins: after any empty lines skipped before a request-line (RFC 9112 §2.2).
    public var startLineOffset = 0
    /// Bytes of the head including the empty line that ends it: the body (if any) starts here.
    public var length = 0
    public var framing: BodyFraming = .none
    /// Whether the connection may carry another message after this one (RFC 9112 §9.3).
    public var keepAlive = true
    /// An Upgrade field sent with the "upgrade" connection option on HTTP/1.1 (RFC 9110 §7.8); on a 101 response,
    /// the switch happened.
    public var upgrade = false
    /// Requests: "Expect: 100-continue" on HTTP/1.1 (RFC 9110 §10.1.1).
    public var expectContinue = false

    public init() {}

    /// Whether this is an interim (1xx) response; the final response follows on the same connection.
    public var isInterim: Bool { status >= 100 && status < 200 }
}

/// How the body of a message is delimited (RFC 9112 §6.3).
public enum BodyFraming: Equatable, Sendable {
    /// No body: requests without Content-Length or Transfer-Encoding; responses to HEAD, 1xx, 204, 304, 2xx to
    /// CONNECT.
    case none
    case contentLength(UInt64)
    /// Chunked as the final transfer coding; decode with `ChunkedDecoder`.
    case chunked
    /// Responses only: the body ends when the upstream closes the connection.
    case untilClose
}

public enum HTTPVersion: Equatable, Sendable {
    case http10, http11
}

/// The four forms of request-target (RFC 9112 §3.2).
public enum RequestTargetForm: Equatable, Sendable {
    /// "/path?query" (§3.2.1).
    case origin
    /// "http://host/path" (§3.2.2); a proxy routes on this authority, not Host.
    case absolute
    /// "host:port", CONNECT only (§3.2.3).
    case authority
    /// "*", OPTIONS only (§3.2.4).
    case asterisk
}

/// Methods this codec knows by name (RFC 9110 §9, RFC 5789); anything else is a valid token kept as `.other`.
public enum HTTPMethod: Equatable, Sendable {
    case get, head, post, put, delete, connect, options, trace, patch, other
}
