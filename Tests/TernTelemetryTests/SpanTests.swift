import Glibc
import TernTelemetry
import Testing

/// Runs `body` on a new OS thread; join with `pthread_join`.
func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var t = pthread_t()
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    let rc = pthread_create(&t, nil, { p in
        Unmanaged<Box>.fromOpaque(p!).takeRetainedValue().body()
        return nil
    }, box)
    precondition(rc == 0)
    return t
}

func span(_ id: UInt64, operation: String = "") -> SpanRecord {
    var r = SpanRecord()
    r.spanID = id
    r.operation = operation
    return r
}

@Suite struct SpanShardTests {
    @Test func ringWrapsAndKeepsOrder() {
        let shard = SpanShard(capacity: 3)
        #expect(shard.capacity == 4)
        var seen: [UInt64] = []
        var next: UInt64 = 1
        for _ in 0..<50 {
            for _ in 0..<3 {
                #expect(shard.record(span(next)))
                next += 1
            }
            #expect(shard.waiting == 3)
            shard.drain(limit: 2) { seen.append($0.spanID) }
            shard.drain { seen.append($0.spanID) }
            #expect(shard.waiting == 0)
        }
        #expect(seen == Array(1..<next))
        #expect(shard.recorded.load(ordering: .relaxed) == 150 && shard.dropped.load(ordering: .relaxed) == 0)
    }

    @Test func recordsStaySmall() {
        // 4,096 per reactor: under 2 MiB, backed only as the ring fills.
        #expect(MemoryLayout<SpanRecord>.stride <= 512, "\(MemoryLayout<SpanRecord>.stride)")
    }

    @Test func fullRingDropsAndCounts() {
        let shard = SpanShard(capacity: 8)
        for i in 1...8 { #expect(shard.record(span(UInt64(i)))) }
        for i in 9...12 { #expect(!shard.record(span(UInt64(i)))) }
        #expect(shard.dropped.load(ordering: .relaxed) == 4 && shard.recorded.load(ordering: .relaxed) == 8)
        var seen: [UInt64] = []
        #expect(shard.drain(limit: 3) { seen.append($0.spanID) } == 3)
        #expect(shard.record(span(13)))
        shard.drain { seen.append($0.spanID) }
        #expect(seen == [1, 2, 3, 4, 5, 6, 7, 8, 13])
        #expect(shard.drain { _ in } == 0)
    }

    @Test func producerAndConsumerOnTwoThreads() {
        let shard = SpanShard(capacity: 64)
        let total: UInt64 = 100_000
        let names = (0..<4).map { "cluster-\($0)-" + String(repeating: "x", count: 40) }  // heap strings
        let producer = startThread {
            var i: UInt64 = 1
            while i <= total {
                if shard.record(span(i, operation: names[Int(i % 4)])) { i += 1 } else { sched_yield() }
            }
        }
        var expected: UInt64 = 1
        var wrong = 0
        let deadline = time(nil) + 60
        while expected <= total && time(nil) < deadline {
            let n = shard.drain(limit: 17) { r in
                if r.spanID != expected || r.operation != names[Int(expected % 4)] { wrong += 1 }
                expected += 1
            }
            if n == 0 { sched_yield() }
        }
        pthread_join(producer, nil)
        #expect(expected == total + 1)
        #expect(wrong == 0)
        // The producer waited instead of dropping only because it retried: drops are what it saw full.
        #expect(shard.recorded.load(ordering: .relaxed) == total)
    }
}

@Suite struct SpanEncodingTests {
    func sample() -> SpanRecord {
        var r = SpanRecord(context: TraceContext(traceIDHigh: 0x4bf9_2f35_77b3_4da6, traceIDLow: 0xa3ce_929d_0e0e_4736,
                                                 spanID: 0x1234_5678_9abc_def0, parentSpanID: 0x00f0_67aa_0ba9_02b7),
                           kind: .client, startMicros: 1_700_000_000_123_456)
        r.durationMicros = 2_500
        r.responseCode = 200
        r.requestBytes = 120
        r.responseBytes = 3_400
        r.operation = "Details.default.svc.cluster.local:9080/*"
        r.upstreamCluster = "outbound|9080||details.default.svc.cluster.local"
        r.method.set("GET")
        r.path.set("/details/0?q=\"a\"\n")
        r.authority.set("details:9080")
        r.requestID.set("3f2b1e0c-1d2e-4f5a-8b9c-0d1e2f3a4b5c")
        return r
    }

    @Test func zipkinSpanExactly() {
        let body = SpanEncoder(format: .zipkin, serviceName: "Productpage.default").encode([sample()])
        let expected = #"[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","id":"123456789abcdef0","parentId":"00f067aa0ba902b7","#
            + #""kind":"CLIENT","name":"details.default.svc.cluster.local:9080/*","timestamp":1700000000123456,"duration":2500,"#
            + #""localEndpoint":{"serviceName":"productpage.default"},"tags":{"component":"proxy","#
            + #""guid:x-request-id":"3f2b1e0c-1d2e-4f5a-8b9c-0d1e2f3a4b5c","http.method":"GET","http.protocol":"HTTP/1.1","#
            + #""http.status_code":"200","http.url":"http://details:9080/details/0?q=\"a\"\n","request_size":"120","#
            + #""response_flags":"-","response_size":"3400","upstream_cluster":"outbound|9080||details.default.svc.cluster.local"}}]"#
        #expect(String(decoding: body, as: UTF8.self) == expected)
        let json = try? JSON.parse(body)
        #expect(json?[0]?["tags"]?["http.url"]?.string == "http://details:9080/details/0?q=\"a\"\n")
    }

    @Test func zipkinRulesParsedBack() throws {
        var root = sample()
        root.parentSpanID = 0
        root.kind = .server
        root.durationMicros = 0
        root.responseCode = 503
        root.responseFlags = .upstreamConnectionFailure
        root.operation = ""
        root.requestID.removeAll()
        var short = sample()
        short.traceIDHigh = 0
        short.shortTraceID = true
        short.responseCode = 0
        short.debug = true
        short.path.set("/cafe" + String(repeating: "\u{e9}", count: 100))  // cut inside a character
        let json = try JSON.parse(SpanEncoder(format: .zipkin, serviceName: "svc").encode([root, short]))
        let spans = try #require(json.array)
        #expect(spans.count == 2)
        #expect(spans[0]["parentId"] == nil && spans[0]["kind"]?.string == "SERVER")
        #expect(spans[0]["duration"]?.number == "1")
        #expect(spans[0]["name"]?.string == "details:9080/*")
        #expect(spans[0]["tags"]?["error"]?.string == "true" && spans[0]["tags"]?["response_flags"]?.string == "UF")
        #expect(spans[0]["tags"]?["http.status_code"]?.string == "503" && spans[0]["tags"]?["guid:x-request-id"] == nil)
        #expect(spans[0]["debug"] == nil)
        #expect(spans[1]["traceId"]?.string == "a3ce929d0e0e4736")
        #expect(spans[1]["tags"]?["error"]?.string == "true" && spans[1]["debug"] == .bool(true))
        #expect(spans[1]["tags"]?["http.url"]?.string?.hasSuffix("\u{fffd}") == true)
        #expect(try JSON.parse(SpanEncoder(format: .zipkin, serviceName: "svc").encode([])) == .array([]))
    }

    @Test func otlpParsedBack() throws {
        var root = sample()
        root.parentSpanID = 0
        root.kind = .server
        root.responseCode = 500
        var short = sample()
        short.traceIDHigh = 0
        short.shortTraceID = true
        let body = SpanEncoder(format: .otlp, serviceName: "productpage.default").encode([sample(), root, short])
        let json = try JSON.parse(body)
        let rs = try #require(json["resourceSpans"]?[0])
        #expect(rs["resource"]?["attributes"]?[0] == .object([("key", .string("service.name")),
                                                             ("value", .object([("stringValue", .string("productpage.default"))]))]))
        let scope = try #require(rs["scopeSpans"]?[0])
        #expect(scope["scope"]?["name"]?.string == "tern")
        let spans = try #require(scope["spans"]?.array)
        #expect(spans.count == 3)
        let s = spans[0]
        #expect(s["traceId"]?.string == "4bf92f3577b34da6a3ce929d0e0e4736" && s["spanId"]?.string == "123456789abcdef0")
        #expect(s["parentSpanId"]?.string == "00f067aa0ba902b7" && s["kind"]?.number == "3")
        #expect(s["name"]?.string == "details.default.svc.cluster.local:9080/*")
        #expect(s["startTimeUnixNano"]?.string == "1700000000123456000" && s["endTimeUnixNano"]?.string == "1700000000125956000")
        #expect(s["status"] == nil)
        let attributes = try #require(s["attributes"]?.array)
        let byKey = Dictionary(uniqueKeysWithValues: attributes.map { ($0["key"]!.string!, $0["value"]!["stringValue"]!.string!) })
        #expect(byKey["http.method"] == "GET" && byKey["http.status_code"] == "200" && byKey["component"] == "proxy")
        #expect(byKey["upstream_cluster"] == "outbound|9080||details.default.svc.cluster.local")
        #expect(byKey["guid:x-request-id"] == "3f2b1e0c-1d2e-4f5a-8b9c-0d1e2f3a4b5c")
        #expect(spans[1]["parentSpanId"] == nil && spans[1]["kind"]?.number == "2")
        #expect(spans[1]["status"]?["code"]?.number == "2")
        #expect(spans[2]["traceId"]?.string == "0000000000000000a3ce929d0e0e4736")
    }

    @Test func formatFollowsTheCollectorPath() {
        #expect(SpanFormat(collectorPath: "/api/v2/spans") == .zipkin)
        #expect(SpanFormat(collectorPath: "/v1/traces") == .otlp)
        #expect(SpanFormat(collectorPath: "/otel/v1/traces") == .otlp)
        #expect(SpanFormat(collectorPath: "/") == .zipkin)
    }

    @Test func fixedTextCutsAtItsCapacity() {
        var t = FixedText<4>("abcdef")
        #expect(t.string == "abcd" && t.count == 4)
        t.set("x")
        #expect(t.string == "x")
        var full = FixedText<2>("ab")
        let appended = full.append(0x41)
        #expect(!appended && full.string == "ab")
        var r = SpanRecord()
        let capture = RequestCapture(slots: 1)
        capture.set(0, .method, "POST")
        capture.set(0, .path, "/" + String(repeating: "p", count: 300))
        capture.set(0, .authority, "a.b")
        capture.set(0, .requestID, "rid")
        r.setRequest(from: capture, slot: 0)
        #expect(r.method.string == "POST" && r.path.count == 128 && r.authority.string == "a.b" && r.requestID.string == "rid")
        #expect(SpanKind(reporter: .source) == .client && SpanKind(reporter: .destination) == .server)
    }
}
