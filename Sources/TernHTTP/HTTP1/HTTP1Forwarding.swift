import TernCore

/// What a proxy sends instead of a received head: the same bytes where nothing changes, a few literals where
/// something does (RFC 9110 §7.6: hop-by-hop fields; Envoy's X-Forwarded-* and x-request-id conventions).
///
/// The plan is a sequence of `Piece`s handed to `emit` in order; the caller turns them into iovecs that point into
/// the receive buffer, so unchanged field lines are never copied (ARCHITECTURE.md §4). Consecutive kept lines
/// come out as one piece. Nothing is allocated.
public enum HTTP1Forwarding {
    public enum Piece: Sendable {
        /// Bytes of the received message, unchanged.
        case bytes(Range<Int>)
        case literal(StaticString)
        /// The downstream peer's address as text (for X-Forwarded-For); the caller holds it.
        case clientAddress
        /// A fresh x-request-id (a UUIDv4, 36 characters); the caller makes it when asked.
        case requestID
        /// The request-target a route rewrote (`RequestOptions.rewriteTarget`), in place of the received one.
        case routeTarget
        /// Field lines a route adds or sets, each ending in CRLF (`routeFields`), just before the empty line.
        case routeFields
        /// The trace context fields the proxy's span passes on (`RequestOptions.replaceTrace`), each ending in CRLF.
        case traceFields
    }

    /// How a request is rewritten for the upstream.
    public struct RequestOptions: Sendable {
        /// The client is trusted (`--xff-trusted-hops` above 0): its x-envoy-* fields, X-Forwarded-Client-Cert and
        /// X-Forwarded-Proto are kept. Untrusted clients' are removed, as Envoy does for external requests.
        public var trustedClient = false
        /// A route rewrites the target: `.routeTarget` replaces it.
        public var rewriteTarget = false
        /// A route adds or sets fields: `.routeFields` comes before the empty line.
        public var routeFields = false
        /// The proxy traces the request: every received traceparent, tracestate, b3 and x-b3-* field is removed
        /// and `.traceFields` (the proxy's span as the new parent) comes before the empty line.
        public var replaceTrace = false
        /// The route rewrites the authority (its "host" line is among `.routeFields`): the target's authority of
        /// an absolute-form request is then not sent as Host.
        public var routeSetsHost = false
        /// The client connection is TLS: X-Forwarded-Proto is https.
        public var secure = false
        /// The proxy sends its own `x-envoy-attempt-count` (among `.routeFields`): a trusted client's is dropped
        /// (Envoy overwrites it).
        public var setsAttemptCount = false
        public init(trustedClient: Bool = false, rewriteTarget: Bool = false, routeFields: Bool = false,
                    replaceTrace: Bool = false, routeSetsHost: Bool = false, secure: Bool = false,
                    setsAttemptCount: Bool = false)
        {
            self.setsAttemptCount = setsAttemptCount
            self.secure = secure
            self.trustedClient = trustedClient
            self.rewriteTarget = rewriteTarget
            self.routeFields = routeFields
            self.replaceTrace = replaceTrace
            self.routeSetsHost = routeSetsHost
        }
    }

    /// The request as the upstream gets it: always HTTP/1.1; hop-by-hop fields removed (Connection and the
    /// fields it names, Keep-Alive, Proxy-Connection, TE, and Upgrade unless upgrading, when
    /// "connection: upgrade" is sent instead); the client's address appended to X-Forwarded-For (Envoy with
    /// use_remote_address); X-Forwarded-Proto set to http (https from a TLS client); x-request-id added when absent. Content-Length and
    /// Transfer-Encoding pass unchanged: the body is forwarded in the framing it arrived in, which the parser
    /// has already checked to be unambiguous.
    ///
    /// A route may remove fields (`drop` says which, by name; Content-Length and Transfer-Encoding are never
    /// dropped, the body's framing depends on them), rewrite the target and add fields (see `RequestOptions`).
    public static func request(_ head: HTTP1Head, _ bytes: borrowing Span<UInt8>, options: RequestOptions,
                               drop: (Range<Int>) -> Bool = { _ in false }, emit: (Piece) -> Void)
    {
        // "METHOD SP request-target SP", then our version.
        if options.rewriteTarget {
            emit(.bytes(head.startLineOffset..<head.target.lowerBound))
            emit(.routeTarget)
            emit(.literal(" HTTP/1.1\r\n"))
        } else if head.hostFromTarget, let authority = head.host {
            // An absolute-form target goes on in origin form (its authority becomes the Host field below), as
            // Envoy sends it: the path and query after the authority, "/" when the path is empty.
            emit(.bytes(head.startLineOffset..<head.target.lowerBound))
            let rest = authority.upperBound..<head.target.upperBound
            if rest.isEmpty || bytes[rest.lowerBound] != 0x2F { emit(.literal("/")) }
            if !rest.isEmpty { emit(.bytes(rest)) }
            emit(.literal(" HTTP/1.1\r\n"))
        } else {
            emit(.bytes(head.startLineOffset..<(head.target.upperBound + 1)))
            emit(.literal("HTTP/1.1\r\n"))
        }
        var hasRequestID = false
        var keptProto = false
        var lengthSent = false
        var run: Int? = nil
        for i in head.fields.indices {
            let field = head.fields[i]
            let keep: Bool
            switch field.known {
            case .connection, .keepAlive, .proxyConnection: keep = false
            // TE is hop-by-hop, but "trailers" goes on, as Envoy sanitizes it: gRPC servers require it.
            case .te: keep = HTTPGrammar.equalsIgnoringCase(bytes, field.value, Self.trailers)
            case .upgrade: keep = head.upgrade
            case .xForwardedFor: keep = false  // re-added below with the client's address appended
            case .xForwardedProto:
                keep = options.trustedClient
                keptProto = keptProto || keep
            case .xEnvoy:
                keep = options.trustedClient
                    && !(options.setsAttemptCount && HTTPGrammar.equalsIgnoringCase(bytes, field.name, Self.attemptCount))
            case .xForwardedClientCert: keep = options.trustedClient
            case .xRequestID:
                keep = true
                hasRequestID = true
            case .contentLength:
                keep = oneContentLength(head, bytes, field, sent: &lengthSent, run: &run, emit)
            case .transferEncoding:
                keep = true
            case .traceparent, .tracestate, .b3, .xB3:
                keep = !options.replaceTrace && !drop(field.name)
            case .host:
                // Ignored, and not forwarded, when an absolute-form target names the authority (RFC 9112 §3.2.2).
                keep = !head.hostFromTarget && !drop(field.name)
            case .expect, .trailer, .userAgent:
                keep = !drop(field.name)
            case .other:
                keep = !namedByConnection(head, bytes, field.name) && !drop(field.name)
            }
            emitRun(head, i, keep: keep, run: &run, emit)
        }
        if let start = run { emit(.bytes(start..<(head.length - 2))) }
        if head.hostFromTarget, !options.routeSetsHost, let authority = head.host {
            emit(.literal("host: "))
            emit(.bytes(authority))
            emit(.literal("\r\n"))
        }
        if options.replaceTrace { emit(.traceFields) }
        if options.routeFields { emit(.routeFields) }
        if head.upgrade { emit(.literal("connection: upgrade\r\n")) }
        emit(.literal("x-forwarded-for: "))
        for field in head.fields where field.known == .xForwardedFor && !field.value.isEmpty {
            emit(.bytes(field.value))
            emit(.literal(", "))
        }
        emit(.clientAddress)
        emit(.literal("\r\n"))
        if !keptProto { emit(.literal(options.secure ? "x-forwarded-proto: https\r\n" : "x-forwarded-proto: http\r\n")) }
        if !hasRequestID {
            emit(.literal("x-request-id: "))
            emit(.requestID)
            emit(.literal("\r\n"))
        }
        emit(.literal("\r\n"))
    }

    /// Content-Length goes on once, with one value (RFC 9110 §8.6: a recipient may replace identical repeats,
    /// in several lines or a list, with one; forwarding them would let a peer that reads them differently frame
    /// the body differently). The parser has checked that every value is the same. True when the line is kept
    /// as received (the first one, a single value); otherwise the line is left out and, for the first, a
    /// "content-length" line with its first value is emitted in its place.
    private static func oneContentLength(_ head: HTTP1Head, _ bytes: borrowing Span<UInt8>, _ field: HeadField,
                                         sent: inout Bool, run: inout Int?, _ emit: (Piece) -> Void) -> Bool {
        if sent { return false }
        sent = true
        var cursor = field.value.lowerBound
        guard let first = HTTPGrammar.nextListElement(bytes, &cursor, end: field.value.upperBound),
              first.upperBound < field.value.upperBound else { return true }
        // A list: the run of kept lines ends before this one, which is written anew.
        if let start = run {
            emit(.bytes(start..<field.name.lowerBound))
            run = nil
        }
        emit(.literal("content-length: "))
        emit(.bytes(first))
        emit(.literal("\r\n"))
        return false
    }

    /// How a response is rewritten for the client.
    public enum Persistence: Sendable {
        /// The client connection stays open after this response (HTTP/1.1 default: nothing to add).
        case keepAlive
        /// The client is HTTP/1.0 and asked for keep-alive: say so ("connection: keep-alive").
        case keepAliveHTTP10
        /// The client connection closes after this response ("connection: close").
        case close
        /// The response (a 2xx to CONNECT) turns the connection into a tunnel: no connection field, the
        /// connection is neither kept for another request nor closed (RFC 9110 §9.3.6).
        case tunnel
    }

    /// The response as the client gets it: status-line as HTTP/1.1, hop-by-hop fields removed as for requests
    /// (Upgrade kept on a 101, with "connection: upgrade"), and the connection's fate stated.
    /// A route may remove fields (`drop`, by name; never the framing ones) and add some (`routeFields`).
    /// `dechunk`: the body goes to an HTTP/1.0 client, which cannot read chunked framing (RFC 9112 §6.1): the
    /// Transfer-Encoding field is removed, the caller forwards the chunks' data only and the connection's
    /// close ends the body (`persistence` must then be `.close`).
    public static func response(_ head: HTTP1Head, _ bytes: borrowing Span<UInt8>, persistence: Persistence,
                                routeFields: Bool = false, dechunk: Bool = false,
                                drop: (Range<Int>) -> Bool = { _ in false }, emit: (Piece) -> Void)
    {
        // status-line = HTTP-version SP status-code SP reason: the version is always 8 bytes.
        let lineEnd = head.fields.first?.name.lowerBound ?? (head.length - 2)
        emit(.literal("HTTP/1.1 "))
        emit(.bytes((head.startLineOffset + 9)..<lineEnd))
        let switching = head.status == 101
        var lengthSent = false
        var run: Int? = nil
        for i in head.fields.indices {
            let field = head.fields[i]
            let keep: Bool
            switch field.known {
            case .connection, .keepAlive, .proxyConnection, .te: keep = false
            case .upgrade: keep = switching
            case .other: keep = !namedByConnection(head, bytes, field.name) && !drop(field.name)
            // A 2xx to CONNECT has no content (RFC 9110 §9.3.6): framing fields it carries are not passed on.
            case .contentLength:
                keep = persistence != .tunnel && oneContentLength(head, bytes, field, sent: &lengthSent, run: &run, emit)
            case .transferEncoding: keep = !dechunk && persistence != .tunnel
            default: keep = !drop(field.name)
            }
            emitRun(head, i, keep: keep, run: &run, emit)
        }
        if let start = run { emit(.bytes(start..<(head.length - 2))) }
        if routeFields { emit(.routeFields) }
        if switching {
            emit(.literal("connection: upgrade\r\n"))
        } else if !head.isInterim {
            switch persistence {
            case .keepAlive: break
            case .keepAliveHTTP10: emit(.literal("connection: keep-alive\r\n"))
            case .close: emit(.literal("connection: close\r\n"))
            case .tunnel: break
            }
        }
        emit(.literal("\r\n"))
    }

    /// Extends or ends the run of kept field lines at field `i` (a line runs to the next one's start).
    private static func emitRun(_ head: HTTP1Head, _ i: Int, keep: Bool, run: inout Int?, _ emit: (Piece) -> Void) {
        let start = head.fields[i].name.lowerBound
        if keep {
            if run == nil { run = start }
        } else if let s = run {
            emit(.bytes(s..<start))
            run = nil
        }
    }

    /// Whether a Connection field names `name` (RFC 9110 §7.6.1: those fields are hop-by-hop too).
    static let attemptCount = StaticBytes("x-envoy-attempt-count")
    static let trailers = StaticBytes("trailers")

    private static func namedByConnection(_ head: HTTP1Head, _ bytes: borrowing Span<UInt8>, _ name: Range<Int>) -> Bool {
        for field in head.fields where field.known == .connection {
            var cursor = field.value.lowerBound
            while let element = HTTPGrammar.nextListElement(bytes, &cursor, end: field.value.upperBound) {
                if HTTPGrammar.equalsIgnoringCase(bytes, element, name) { return true }
            }
        }
        return false
    }
}
