import Glibc
import Synchronization
import TernHTTP
import TernIO
import TernProxy
import TernTelemetry
import Testing

/// A loopback HTTP collector on its own thread: records each request (head and body) and answers with the
/// next status of `statuses` (the last one repeats), or never answers when `silent`.
final class TestCollector: Sendable {
    struct Request: Sendable {
        var head: String
        var body: [UInt8]
    }

    let listener: Int32
    let port: UInt16
    private let statuses: [Int]
    private let silent: Bool
    private let state = Mutex<(requests: [Request], answered: Int)>(([], 0))
    private let stopping = Atomic<Bool>(false)
    private let thread = Mutex<ReactorThread?>(nil)

    init(statuses: [Int] = [202], silent: Bool = false) throws {
        listener = try System.listen(on: SocketAddress(parsing: "127.0.0.1:0")!)
        port = try System.localAddress(listener).port
        self.statuses = statuses
        self.silent = silent
        let me = self
        let t = ReactorThread.start(name: "test-collector") { me.serve() }
        thread.withLock { $0 = t }
    }

    var url: String { "http://127.0.0.1:\(port)" }
    var requests: [Request] { state.withLock { $0.requests } }

    private func serve() {
        while !stopping.load(ordering: .relaxed) {
            if silent {
                // Never accepts: the kernel completes connections into the backlog and takes the request's
                // bytes, and no answer ever comes.
                Signals.sleep(milliseconds: 20)
                continue
            }
            guard System.poll(listener, events: Int16(POLLIN), timeoutMillis: 20), let fd = System.accept(listener) else { continue }
            let socket = BlockingSocket(adopting: fd)
            var bytes: [UInt8] = []
            let deadline = System.monotonicNanos() + 5_000_000_000
            var request: Request? = nil
            while request == nil, let more = try? socket.receive(max: 65536, deadline: deadline), !more.isEmpty {
                bytes += more
                request = Self.complete(bytes)
            }
            guard let request else { continue }
            let status = state.withLock { s -> Int in
                s.requests.append(request)
                s.answered += 1
                return statuses[min(s.answered - 1, statuses.count - 1)]
            }
            try? socket.send(Array("HTTP/1.1 \(status) Whatever\r\ncontent-length: 0\r\n\r\n".utf8), deadline: deadline)
        }
    }

    /// A whole request (head and Content-Length body) in `bytes`, or nil.
    static func complete(_ bytes: [UInt8]) -> Request? {
        let end = Array("\r\n\r\n".utf8)
        guard bytes.count >= 4, let i = (0...(bytes.count - 4)).first(where: { Array(bytes[$0..<($0 + 4)]) == end }) else { return nil }
        let head = String(decoding: bytes[0..<i], as: UTF8.self)
        let length = head.split(separator: "\r\n").compactMap { line -> Int? in
            let parts = line.split(separator: ":", maxSplits: 1)
            return parts.count == 2 && parts[0].lowercased() == "content-length" ? Int(parts[1].trimmingPrefix(" ")) : nil
        }.first ?? 0
        guard bytes.count >= i + 4 + length else { return nil }
        return Request(head: head, body: Array(bytes[(i + 4)..<(i + 4 + length)]))
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        thread.withLock { $0.take() }?.join()
        System.close(listener)
    }
}

/// Waits until `condition` holds or `seconds` pass; whether it held.
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = System.monotonicNanos() + UInt64(seconds * 1e9)
    while System.monotonicNanos() < deadline {
        if condition() { return true }
        Signals.sleep(milliseconds: 5)
    }
    return condition()
}

func testSpan(_ id: UInt64) -> SpanRecord {
    var s = SpanRecord(context: TraceContext(traceIDHigh: 0xabc, traceIDLow: id, spanID: id, parentSpanID: 7), kind: .client,
                       startMicros: 1_700_000_000_000_000)
    s.durationMicros = 10
    s.responseCode = 200
    s.operation = "svc:80/*"
    s.method.set("GET")
    return s
}

/// Occurrences of `needle` in `bytes`.
func count(_ needle: String, in bytes: [UInt8]) -> Int {
    let n = Array(needle.utf8)
    guard bytes.count >= n.count else { return 0 }
    return (0...(bytes.count - n.count)).filter { bytes[$0] == n[0] && Array(bytes[$0..<($0 + n.count)]) == n }.count
}

func fastTiming() -> SpanExporter.Timing {
    var t = SpanExporter.Timing()
    t.flushIntervalMillis = 50
    t.connectTimeoutMillis = 300
    t.requestTimeoutMillis = 500
    t.minBackoffMillis = 50
    t.maxBackoffMillis = 200
    return t
}

@Suite(.serialized) struct SpanExporterTests {
    @Test func zipkinBatchesReachTheCollector() throws {
        let collector = try TestCollector()
        defer { collector.stop() }
        let settings = try TracingSettings(collector: collector.url + "/api/v2/spans", sampling: 100)
        let exporter = SpanExporter(reactors: 2, settings: settings)
        try exporter.start()
        for i in 1...300 { exporter.shards[i % 2].record(testSpan(UInt64(i))) }
        #expect(eventually { exporter.spansExported.load(ordering: .relaxed) == 300 })
        exporter.stop()
        let requests = collector.requests
        let spans = requests.reduce(0) { $0 + count("\"traceId\"", in: $1.body) }
        #expect(spans == 300)
        let first = try #require(requests.first)
        #expect(first.head.hasPrefix("POST /api/v2/spans HTTP/1.1\r\nhost: 127.0.0.1:\(collector.port)\r\n"))
        #expect(first.head.contains("content-type: application/json\r\n"))
        #expect(first.body.first == UInt8(ascii: "[") && first.body.last == UInt8(ascii: "]"))
        #expect(exporter.spansDropped == 0 && exporter.batchesFailed.load(ordering: .relaxed) == 0)
    }

    @Test func otlpForV1Traces() throws {
        let collector = try TestCollector(statuses: [200])
        defer { collector.stop() }
        let exporter = SpanExporter(reactors: 1, settings: try TracingSettings(collector: collector.url + "/v1/traces"))
        #expect(exporter.settings.format == .otlp)
        try exporter.start()
        exporter.shards[0].record(testSpan(1))
        #expect(eventually { exporter.spansExported.load(ordering: .relaxed) == 1 })
        exporter.stop()
        let body = try #require(collector.requests.first?.body)
        #expect(String(decoding: body, as: UTF8.self).hasPrefix("{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\""))
    }

    @Test func stopSendsWhatWaits() throws {
        let collector = try TestCollector()
        defer { collector.stop() }
        var timing = SpanExporter.Timing()
        timing.flushIntervalMillis = 60_000  // only stop() sends
        let exporter = SpanExporter(reactors: 3, settings: try TracingSettings(collector: collector.url + "/api/v2/spans"), timing: timing)
        try exporter.start()
        for i in 1...30 { exporter.shards[i % 3].record(testSpan(UInt64(i))) }
        exporter.stop()
        #expect(exporter.spansExported.load(ordering: .relaxed) == 30)
        #expect(collector.requests.reduce(0) { $0 + count("\"traceId\"", in: $1.body) } == 30)
    }

    @Test func deadCollectorLosesBatchesNotTime() throws {
        // A port nothing listens on: connections are refused.
        let probe = try System.listen(on: SocketAddress(parsing: "127.0.0.1:0")!)
        let port = try System.localAddress(probe).port
        System.close(probe)
        let exporter = SpanExporter(reactors: 1, settings: try TracingSettings(collector: "http://127.0.0.1:\(port)/api/v2/spans"),
                                    timing: fastTiming())
        try exporter.start()
        let started = System.monotonicNanos()
        for i in 1...100 { exporter.shards[0].record(testSpan(UInt64(i))) }
        #expect(System.monotonicNanos() - started < 100_000_000)  // recording never waits for the exporter
        #expect(eventually { exporter.batchesFailed.load(ordering: .relaxed) >= 1 })
        #expect(eventually { exporter.spansDropped == 100 })
        // It keeps trying, with backoff.
        exporter.shards[0].record(testSpan(101))
        #expect(eventually { exporter.batchesFailed.load(ordering: .relaxed) >= 2 })
        let stopping = System.monotonicNanos()
        exporter.stop()
        #expect(System.monotonicNanos() - stopping < 2_000_000_000)
        #expect(exporter.spansExported.load(ordering: .relaxed) == 0)
        #expect(exporter.spansDropped == 101)
    }

    @Test func collectorThatNeverAnswersCostsOneDeadline() throws {
        let collector = try TestCollector(silent: true)
        defer { collector.stop() }
        let exporter = SpanExporter(reactors: 1, settings: try TracingSettings(collector: collector.url + "/api/v2/spans"),
                                    timing: fastTiming())
        try exporter.start()
        let started = System.monotonicNanos()
        exporter.shards[0].record(testSpan(1))
        #expect(eventually { exporter.batchesFailed.load(ordering: .relaxed) == 1 })
        let took = System.monotonicNanos() - started
        #expect(took >= 400_000_000 && took < 3_000_000_000, "\(took / 1_000_000) ms")
        exporter.stop()
        #expect(exporter.spansDropped == 1)
    }

    @Test func failedBatchIsDroppedAndTheNextOneTriesAgain() throws {
        let collector = try TestCollector(statuses: [503, 202])
        defer { collector.stop() }
        let exporter = SpanExporter(reactors: 1, settings: try TracingSettings(collector: collector.url + "/api/v2/spans"),
                                    timing: fastTiming())
        try exporter.start()
        exporter.shards[0].record(testSpan(1))
        #expect(eventually { exporter.batchesFailed.load(ordering: .relaxed) == 1 })
        exporter.shards[0].record(testSpan(2))
        #expect(eventually { exporter.spansExported.load(ordering: .relaxed) == 1 })
        exporter.stop()
        #expect(exporter.spansDropped == 1 && exporter.batchesSent.load(ordering: .relaxed) == 1)
        let families = exporter.metricFamilies()
        #expect(families.map(\.name) == ["tern_tracing_spans_exported_total", "tern_tracing_spans_dropped_total", "tern_tracing_batches_failed_total"])
        #expect(families.map { $0.samples[0].value } == [1, 1, 1])
    }

    @Test func fullRingsDropAndCount() throws {
        let exporter = SpanExporter(reactors: 2, settings: try TracingSettings(collector: "http://127.0.0.1:9/x"))
        // Not started: nothing drains.
        for i in 1...(exporter.settings.ringCapacity + 5) { exporter.shards[0].record(testSpan(UInt64(i))) }
        #expect(exporter.spansDropped == 5)
    }
}

@Suite struct TracingSettingsTests {
    @Test func collectorURLs() {
        let u = CollectorURL(parsing: "http://zipkin.istio-system:9411/api/v2/spans")
        #expect(u?.host == "zipkin.istio-system" && u?.port == 9411 && u?.path == "/api/v2/spans")
        #expect(CollectorURL(parsing: "http://127.0.0.1")?.port == 80)
        #expect(CollectorURL(parsing: "http://127.0.0.1")?.path == "/")
        let v6 = CollectorURL(parsing: "http://[::1]:4318/v1/traces")
        #expect(v6?.host == "::1" && v6?.authority == "[::1]:4318" && v6?.description == "http://[::1]:4318/v1/traces")
        for bad in ["https://a:1/x", "a:1/x", "http://", "http://:80/", "http://a:0/", "http://a:99999/", "http://a:x/",
                    "http://u@a/", "http://a b/", "http://a/x y", "http://[::1/x", "http://::1:80/"]
        {
            #expect(CollectorURL(parsing: bad) == nil, "\(bad)")
        }
    }

    @Test func flagsAreCheckedAndRoundTrip() throws {
        let s = try TracingSettings(collector: "http://127.0.0.1:9411/api/v2/spans", sampling: 12.5, format: "otlp", serviceName: "app.ns")
        #expect(s.format == .otlp && s.samplingPercent == 12.5 && s.serviceName == "app.ns")
        #expect(s.sampler == TraceSampler(percent: 12.5))
        var values: [String: String] = [:]
        for a in s.encoded() {
            let eq = a.firstIndex(of: "=")!
            values[String(a[..<eq])] = String(a[a.index(after: eq)...])
        }
        #expect(Set(values.keys) == TracingSettings.encodedKeys)
        #expect(try TracingSettings(decoding: values) == s)
        #expect(try TracingSettings(collector: "http://a:1/v1/traces").format == .otlp)
        #expect(try TracingSettings(collector: "http://a:1/api/v2/spans").samplingPercent == 1.0)
        #expect(throws: SetupError.self) { try TracingSettings(collector: "zipkin:9411") }
        #expect(throws: SetupError.self) { try TracingSettings(collector: "http://a:1/", sampling: 101) }
        #expect(throws: SetupError.self) { try TracingSettings(collector: "http://a:1/", sampling: .nan) }
        #expect(throws: SetupError.self) { try TracingSettings(collector: "http://a:1/", format: "jaeger") }
    }

    @Test func namesResolve() {
        #expect(!SocketAddress.resolve(host: "localhost", port: 9411).isEmpty)
        #expect(SocketAddress.resolve(host: "127.0.0.1", port: 9411).first?.description == "127.0.0.1:9411")
        #expect(SocketAddress.resolve(host: "no-such-host.invalid", port: 1).isEmpty)
    }
}

@Suite struct RequestTracingTests {
    @Test func headFieldsAreReadAndTracestateCaptured() throws {
        let raw = Array(("GET /a HTTP/1.1\r\nHost: h\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
            + "tracestate: a=1\r\nX-B3-Sampled: 1\r\nuser-agent: u\r\ntracestate: b=2\r\n\r\n").utf8)
        var parser = HTTP1Parser(kind: .request)
        #expect(try parser.parse(raw.span) == .complete)
        let capture = RequestCapture(slots: 2)
        capture.set(1, .traceState, "stale")
        let headers = TraceHeaders(head: parser.head, bytes: raw.span, capture: capture, slot: 1)
        let c = headers.context
        #expect(c.hasIDs && c.spanID == 0x00f0_67aa_0ba9_02b7 && c.forwardsTraceState && c.styles == [.w3c, .b3Multi])
        #expect(capture.string(1, .traceState) == "a=1,b=2")
        var random = SplitMixForTests(seed: 1)
        let child = c.child(sampler: TraceSampler(percent: 0), using: &random)
        var out: [UInt8] = []
        child.writeFields(traceStateFrom: capture, slot: 1) { out.append($0) }
        let text = String(decoding: out, as: UTF8.self)
        #expect(text.hasPrefix("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"))
        #expect(text.contains("-01\r\ntracestate: a=1,b=2\r\nx-b3-traceid: 4bf92f3577b34da6a3ce929d0e0e4736\r\n"))
        #expect(text.hasSuffix("x-b3-parentspanid: 00f067aa0ba902b7\r\nx-b3-sampled: 1\r\n"))
    }
}

struct SplitMixForTests: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
