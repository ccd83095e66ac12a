// Span batches as a collector takes them (../shared/reference/istio.md §6). Runs on the exporter thread and
// allocates freely; the reactors never call it.
//
// Zipkin v2 (POST /api/v2/spans): a JSON array of spans; ids lowercase hex (the trace id 16 digits when it came
// as a 64-bit B3 id, else 32); timestamp and duration in microseconds, duration ≥ 1; name lowercase.
// OTLP/HTTP JSON (POST /v1/traces): resourceSpans → resource.attributes (service.name), scopeSpans → scope
// {name: "tern"}, spans; ids hex (trace id always 32 digits); kind an integer (2 server, 3 client); nanosecond
// times as decimal strings; status code 2 on error.
//
// Span name: Envoy reports a route's decorator operation, which Istio sets to `host:port/path*` of the route's
// destination (pilot's getRouteOperation: `details.default.svc.cluster.local:9080/*`): low cardinality, and
// what Istio users see in Jaeger and Zipkin today. The proxy renders it once per route (`SpanRecord.operation`);
// without one the name is `authority/*`.
//
// Tags (Envoy's names, HttpTracerUtility): component=proxy, guid:x-request-id, http.method, http.protocol,
// http.status_code, http.url (http://authority/path), request_size, response_flags, response_size,
// upstream_cluster, and error=true when no response was sent or it was a 5xx. OTLP carries the same keys as
// string attributes, as Envoy's OpenTelemetry tracer does.

/// A collector's wire format.
public enum SpanFormat: String, Sendable, CaseIterable {
    case zipkin, otlp

    /// The format a collector path implies: OTLP for `…/v1/traces`, Zipkin otherwise (`/api/v2/spans`).
    public init(collectorPath path: String) {
        self = path.hasSuffix("/v1/traces") ? .otlp : .zipkin
    }
}

/// Encodes batches of spans for one collector.
public struct SpanEncoder: Sendable {
    public var format: SpanFormat
    /// localEndpoint.serviceName (Zipkin), service.name (OTLP): Istio uses `app.namespace`.
    public var serviceName: String

    public init(format: SpanFormat, serviceName: String) {
        self.format = format
        self.serviceName = serviceName
    }

    public var contentType: String { "application/json" }

    /// The request body for `spans`.
    public func encode(_ spans: [SpanRecord]) -> [UInt8] {
        var w = JSONWriter()
        w.bytes.reserveCapacity(256 + spans.count * 700)
        switch format {
        case .zipkin: zipkin(spans, &w)
        case .otlp: otlp(spans, &w)
        }
        return w.bytes
    }

    /// The span name: the operation, else `authority/*`; lowercase.
    public static func name(_ span: SpanRecord) -> String {
        let name = span.operation.isEmpty ? span.authority.string + "/*" : span.operation
        return lowercasedASCII(name)
    }

    /// The tags, in a fixed order.
    public static func tags(_ span: SpanRecord) -> [(String, String)] {
        var t: [(String, String)] = [("component", "proxy")]
        if !span.requestID.isEmpty { t.append(("guid:x-request-id", span.requestID.string)) }
        t.append(("http.method", span.method.string))
        t.append(("http.protocol", span.httpProtocol.text))
        t.append(("http.status_code", String(span.responseCode)))
        t.append(("http.url", "http://" + span.authority.string + span.path.string))
        t.append(("request_size", String(span.requestBytes)))
        t.append(("response_flags", span.responseFlags.description))
        t.append(("response_size", String(span.responseBytes)))
        t.append(("upstream_cluster", span.upstreamCluster.isEmpty ? "-" : span.upstreamCluster))
        if span.isError { t.append(("error", "true")) }
        return t
    }

    private func zipkin(_ spans: [SpanRecord], _ w: inout JSONWriter) {
        let service = Self.lowercasedASCII(serviceName)
        w.raw("[")
        for (i, s) in spans.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"traceId\":\"")
            if !s.shortTraceID || s.traceIDHigh != 0 { w.hex(s.traceIDHigh) }
            w.hex(s.traceIDLow)
            w.raw("\",\"id\":\"")
            w.hex(s.spanID)
            w.raw("\"")
            if s.parentSpanID != 0 {
                w.raw(",\"parentId\":\"")
                w.hex(s.parentSpanID)
                w.raw("\"")
            }
            w.raw(s.kind == .client ? ",\"kind\":\"CLIENT\",\"name\":" : ",\"kind\":\"SERVER\",\"name\":")
            w.string(Self.name(s))
            w.raw(",\"timestamp\":")
            w.decimal(s.startMicros)
            w.raw(",\"duration\":")
            w.decimal(max(s.durationMicros, 1))
            w.raw(",\"localEndpoint\":{\"serviceName\":")
            w.string(service)
            w.raw("}")
            if s.debug { w.raw(",\"debug\":true") }
            w.raw(",\"tags\":{")
            for (j, (k, v)) in Self.tags(s).enumerated() {
                if j > 0 { w.raw(",") }
                w.string(k)
                w.raw(":")
                w.string(v)
            }
            w.raw("}}")
        }
        w.raw("]")
    }

    private func otlp(_ spans: [SpanRecord], _ w: inout JSONWriter) {
        w.raw("{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":")
        w.string(serviceName)
        w.raw("}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"tern\"},\"spans\":[")
        for (i, s) in spans.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"traceId\":\"")
            w.hex(s.traceIDHigh)
            w.hex(s.traceIDLow)
            w.raw("\",\"spanId\":\"")
            w.hex(s.spanID)
            w.raw("\"")
            if s.parentSpanID != 0 {
                w.raw(",\"parentSpanId\":\"")
                w.hex(s.parentSpanID)
                w.raw("\"")
            }
            w.raw(",\"name\":")
            w.string(Self.name(s))
            w.raw(s.kind == .client ? ",\"kind\":3" : ",\"kind\":2")
            let start = s.startMicros &* 1000
            w.raw(",\"startTimeUnixNano\":\"")
            w.decimal(start)
            w.raw("\",\"endTimeUnixNano\":\"")
            w.decimal(start &+ max(s.durationMicros, 1) &* 1000)
            w.raw("\",\"attributes\":[")
            for (j, (k, v)) in Self.tags(s).enumerated() {
                if j > 0 { w.raw(",") }
                w.raw("{\"key\":")
                w.string(k)
                w.raw(",\"value\":{\"stringValue\":")
                w.string(v)
                w.raw("}}")
            }
            w.raw("]")
            if s.isError { w.raw(",\"status\":{\"code\":2}") }
            w.raw("}")
        }
        w.raw("]}]}]}")
    }

    static func lowercasedASCII(_ s: String) -> String {
        String(decoding: s.utf8.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self)
    }
}

/// Appends JSON text to a byte array.
struct JSONWriter {
    var bytes: [UInt8] = []

    mutating func raw(_ text: String) { bytes.append(contentsOf: text.utf8) }

    /// A JSON string (RFC 8259 §7): quotes, backslashes and control characters escaped; `text` is valid
    /// UTF-8 (a String), so every other byte goes as it is.
    mutating func string(_ text: String) {
        bytes.append(0x22)
        for b in text.utf8 {
            switch b {
            case 0x22: bytes.append(contentsOf: [0x5C, 0x22])
            case 0x5C: bytes.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: bytes.append(contentsOf: [0x5C, 0x6E])
            case 0x0D: bytes.append(contentsOf: [0x5C, 0x72])
            case 0x09: bytes.append(contentsOf: [0x5C, 0x74])
            case 0x00..<0x20:
                bytes.append(contentsOf: [0x5C, 0x75, 0x30, 0x30])
                TraceContext.hex(UInt64(b), 2) { bytes.append($0) }
            default: bytes.append(b)
            }
        }
        bytes.append(0x22)
    }

    /// 16 lowercase hex digits.
    mutating func hex(_ v: UInt64) { TraceContext.hex(v, 16) { bytes.append($0) } }

    mutating func decimal(_ v: UInt64) { bytes.append(contentsOf: String(v).utf8) }
}
