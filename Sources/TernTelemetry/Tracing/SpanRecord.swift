// One finished span as a reactor records it: fixed size, the request's few strings copied into inline storage
// (cut at their bounds), so recording copies bytes and retains at most two strings the proxy rendered once per
// route or cluster; nothing is allocated per request. The exporter thread turns records into JSON
// (SpanEncoding.swift).

/// Whose side of the call the span describes: `client` for the sidecar of the caller (reporter=source,
/// outbound), `server` for the sidecar of the callee (reporter=destination, inbound).
public enum SpanKind: UInt8, Sendable {
    case client, server

    public init(reporter: Reporter) { self = reporter == .source ? .client : .server }
}

/// The HTTP version a span reports as `http.protocol`.
public enum SpanProtocol: UInt8, Sendable {
    case http10, http11, http2

    public var text: String {
        switch self {
        case .http10: "HTTP/1.0"
        case .http11: "HTTP/1.1"
        case .http2: "HTTP/2"
        }
    }
}

/// Up to `capacity` bytes of text kept inline (no allocation); longer text is cut.
public struct FixedText<let capacity: Int>: Sendable {
    private var storage: InlineArray<capacity, UInt8>
    public private(set) var count = 0

    public init() { storage = InlineArray(repeating: 0) }

    public init(_ text: String) {
        self.init()
        set(text)
    }

    public var isEmpty: Bool { count == 0 }

    public mutating func removeAll() { count = 0 }

    /// Appends a byte; false (nothing kept) once full.
    @discardableResult
    @inline(__always)
    public mutating func append(_ b: UInt8) -> Bool {
        guard count < capacity else { return false }
        storage[count] = b
        count += 1
        return true
    }

    /// Replaces the text with `bytes`, cut at `capacity`.
    public mutating func set(_ bytes: borrowing Span<UInt8>) {
        count = 0
        let n = Swift.min(bytes.count, capacity)
        for i in 0..<n { storage[i] = bytes[i] }
        count = n
    }

    /// Replaces the text with `text`'s UTF-8, cut at `capacity` (no allocation).
    public mutating func set(_ text: String) {
        count = 0
        for b in text.utf8 where !append(b) { break }
    }

    /// Replaces the text with a captured request field.
    public mutating func set(_ capture: RequestCapture, slot: Int, _ field: CapturedField) {
        count = 0
        capture.forEachByte(slot, field) { append($0) }
    }

    @inline(__always)
    public subscript(i: Int) -> UInt8 {
        precondition(i >= 0 && i < count)
        return storage[i]
    }

    public func forEach(_ body: (UInt8) -> Void) {
        for i in 0..<count { body(storage[i]) }
    }

    /// The text as a String; bytes that are no valid UTF-8 (a cut character) become U+FFFD. Allocates: the
    /// exporter thread and tests only.
    public var string: String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        forEach { bytes.append($0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A finished span.
public struct SpanRecord: Sendable {
    public var traceIDHigh: UInt64 = 0
    public var traceIDLow: UInt64 = 0
    public var spanID: UInt64 = 0
    /// 0: a root span.
    public var parentSpanID: UInt64 = 0
    /// Wall clock, microseconds since the Unix epoch.
    public var startMicros: UInt64 = 0
    public var durationMicros: UInt64 = 0
    /// Bytes received from the downstream and sent to it (Envoy's request_size and response_size tags).
    public var requestBytes: UInt64 = 0
    public var responseBytes: UInt64 = 0
    public var responseFlags = ResponseFlags()
    /// 0: no response was sent.
    public var responseCode: UInt16 = 0
    public var kind = SpanKind.client
    public var httpProtocol = SpanProtocol.http11
    public var debug = false
    /// The trace id is 64 bits wide (came as 16 hex digits in B3): Zipkin gets 16 digits.
    public var shortTraceID = false
    /// The span name: Istio's route decorator, `host:port/path*` (`details.default.svc.cluster.local:9080/*`),
    /// rendered once per route by the proxy; empty: `authority/*` is used. Passing it only retains.
    public var operation = ""
    /// The upstream cluster (`outbound|9080||details.default.svc.cluster.local`, or the upstream address),
    /// rendered once per cluster by the proxy.
    public var upstreamCluster = ""
    public var method = FixedText<16>()
    /// The path and query, cut at 128 bytes.
    public var path = FixedText<128>()
    public var authority = FixedText<96>()
    public var requestID = FixedText<64>()

    public init() {}

    /// A span for the proxy's context `context` (`TraceContext.child`), starting at `startMicros`.
    public init(context: TraceContext, kind: SpanKind, startMicros: UInt64) {
        traceIDHigh = context.traceIDHigh
        traceIDLow = context.traceIDLow
        spanID = context.spanID
        parentSpanID = context.parentSpanID
        shortTraceID = context.shortTraceID
        debug = context.debug
        self.kind = kind
        self.startMicros = startMicros
    }

    /// Copies method, path, authority and request id from a request's capture slot.
    public mutating func setRequest(from capture: RequestCapture, slot: Int) {
        method.set(capture, slot: slot, .method)
        path.set(capture, slot: slot, .path)
        authority.set(capture, slot: slot, .authority)
        requestID.set(capture, slot: slot, .requestID)
    }

    /// Envoy's rule: the span is an error when no response was sent or it was a 5xx.
    public var isError: Bool { responseCode == 0 || (responseCode >= 500 && responseCode <= 599) }
}
