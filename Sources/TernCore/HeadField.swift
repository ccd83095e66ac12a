/// A field line of a message head as ranges into the bytes it was received in (or decoded into): the one head
/// type both the codecs (TernHTTP) and routing (TernConfig's `RequestView`) read. It lives here because those
/// two layer-2 targets never import each other (ARCHITECTURE.md §2); it holds offsets only, no protocol logic,
/// so an HTTP/1.1 head parsed in place and an HTTP/2 header block decoded into a buffer both describe their
/// fields with it.
public struct HeadField: Equatable, Sendable {
    public var name: Range<Int>
    public var value: Range<Int>
    /// The fields a codec acts on or a proxy must treat specially; `.other` for the rest.
    public var known: KnownField

    @inlinable
    public init(name: Range<Int>, value: Range<Int>, known: KnownField) {
        self.name = name
        self.value = value
        self.known = known
    }
}

/// Field names a codec recognises (ASCII case-insensitive, RFC 9110 §5.1): the same names in HTTP/1.1 and
/// HTTP/2 (which writes them lowercase).
public enum KnownField: Equatable, Sendable {
    case contentLength, transferEncoding, host, connection, upgrade, expect, te, trailer, keepAlive
    case proxyConnection
    /// Fields a proxy rewrites or strips (Envoy's conventions): X-Forwarded-For, X-Forwarded-Proto, X-Request-Id,
    /// X-Forwarded-Client-Cert and any x-envoy-* field.
    case xForwardedFor, xForwardedProto, xRequestID, xForwardedClientCert, xEnvoy
    /// Fields the access log and tracing read: User-Agent, W3C traceparent and tracestate, B3 single (`b3`) and
    /// any B3 multi field (a name starting with "x-b3-").
    case userAgent, traceparent, tracestate, b3, xB3
    case other
}
