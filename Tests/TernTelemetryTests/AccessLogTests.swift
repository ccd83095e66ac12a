import Glibc
import TernTelemetry
import TernTestSupport
import Testing

/// A request as a proxy captures it, in slot `slot` of `capture`.
func capture(_ capture: RequestCapture, slot: Int, _ fields: [CapturedField: [UInt8]]) {
    capture.clear(slot)
    for (field, bytes) in fields { bytes.withUnsafeBytes { capture.set(slot, field, $0) } }
}

func knownRecord() -> AccessLogRecord {
    var r = AccessLogRecord()
    r.startMicros = 1_795_937_932_123_456  // 2026-11-29T07:38:52.123456Z
    r.durationMicros = 12_999
    r.upstreamServiceMicros = 10_999
    r.responseCode = 200
    r.bytesReceived = 17
    r.bytesSent = 1234
    r.protocol = .http11
    r.upstreamHost = "10.0.0.7:8080"
    r.upstreamCluster = "outbound|80||cart.shop.svc.cluster.local"
    r.routeName = "default"
    r.responseCodeDetails = "via_upstream"
    r.upstreamLocalAddress = "10.0.0.1:40000"
    return r
}

func knownCapture() -> RequestCapture {
    let c = RequestCapture(slots: 4)
    capture(c, slot: 2, [
        .method: Array("GET".utf8), .path: Array("/cart/items?id=1".utf8), .authority: Array("cart.shop".utf8),
        .userAgent: Array("curl/8.5.0".utf8), .requestID: Array("abc-123".utf8),
        .downstreamRemote: Array("127.0.0.1:51000".utf8), .downstreamLocal: Array("127.0.0.1:15006".utf8),
    ])
    return c
}

/// Starts a plain thread (the tests' stand-in for a reactor or the writer thread).
final class TestThread: @unchecked Sendable {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    private var handle = pthread_t()

    init(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body))
        let rc = pthread_create(&handle, nil, { arg in
            Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed")
    }

    func join() { pthread_join(handle, nil) }
}

@Suite struct AccessLogTests {
    static let jsonKeys = [
        "start_time", "route_name", "method", "path", "protocol", "response_code", "response_flags",
        "response_code_details", "connection_termination_details", "bytes_received", "bytes_sent", "duration",
        "upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority", "upstream_host",
        "upstream_cluster", "upstream_local_address", "downstream_local_address", "downstream_remote_address",
        "requested_server_name", "downstream_tls_version", "downstream_tls_cipher", "upstream_transport_failure_reason",
        "grpc_status", "grpc_message",
    ]

    @Test func textLineIsIstiosDefaultFormat() throws {
        let line = try #require(AccessLogLine.render(.text, knownRecord(), capture: knownCapture(), slot: 2))
        #expect(line == """
            [2026-11-29T07:38:52.123Z] "GET /cart/items?id=1 HTTP/1.1" 200 - via_upstream - "-" 17 1234 12 10 "-" \
            "curl/8.5.0" "abc-123" "cart.shop" "10.0.0.7:8080" outbound|80||cart.shop.svc.cluster.local \
            10.0.0.1:40000 127.0.0.1:15006 127.0.0.1:51000 - default

            """)
    }

    @Test func jsonLineHasIstiosKeysTypedValuesAndNulls() throws {
        let line = try #require(AccessLogLine.render(.json, knownRecord(), capture: knownCapture(), slot: 2))
        #expect(line == """
            {"start_time":"2026-11-29T07:38:52.123Z","route_name":"default","method":"GET","path":"/cart/items?id=1",\
            "protocol":"HTTP/1.1","response_code":200,"response_flags":"-","response_code_details":"via_upstream",\
            "connection_termination_details":null,"bytes_received":17,"bytes_sent":1234,"duration":12,\
            "upstream_service_time":10,"x_forwarded_for":null,"user_agent":"curl/8.5.0","request_id":"abc-123",\
            "authority":"cart.shop","upstream_host":"10.0.0.7:8080",\
            "upstream_cluster":"outbound|80||cart.shop.svc.cluster.local","upstream_local_address":"10.0.0.1:40000",\
            "downstream_local_address":"127.0.0.1:15006","downstream_remote_address":"127.0.0.1:51000",\
            "requested_server_name":null,"downstream_tls_version":null,"downstream_tls_cipher":null,\
            "upstream_transport_failure_reason":null,"grpc_status":null,"grpc_message":null}

            """)
        let v = try LogJSON.parse(String(line.dropLast()))
        #expect(v.keys == Self.jsonKeys)
        #expect(v["response_code"] == .number(200))
        #expect(v["x_forwarded_for"] == .null)
    }

    @Test func aGRPCMessageIsEscapedAndCutAt128Bytes() throws {
        var r = knownRecord()
        r.grpcStatus = 5
        r.grpcMessage.set(Array("not \"found\"\n".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 200))
        let line = try #require(AccessLogLine.render(.json, r, capture: knownCapture(), slot: 2))
        let v = try LogJSON.parse(String(line.dropLast()))
        #expect(v["grpc_status"] == .number(5))
        #expect(v["grpc_message"] == .string("not \"found\"\n" + String(repeating: "x", count: 128 - 12)))
    }

    @Test func failedRequestWithoutUpstreamAnswer() throws {
        var r = AccessLogRecord()
        r.startMicros = 951_782_400_000_000
        r.responseCode = 503
        r.flags = [.upstreamConnectionFailure, .upstreamRetryLimitExceeded]
        r.protocol = .http10
        r.upstreamHost = "127.0.0.1:9"
        r.responseCodeDetails = "upstream_reset_before_response_started{connection_failure}"
        r.upstreamTransportFailureReason = "delayed_connect_error:_Connection_refused"
        let v = try LogJSON.parse(try #require(AccessLogLine.render(.json, r)))
        #expect(v["response_flags"] == .string("UF,URX"))
        #expect(v["upstream_service_time"] == .null)
        #expect(v["protocol"] == .string("HTTP/1.0"))
        #expect(v["method"] == .null && v["downstream_remote_address"] == .null)
        #expect(v["upstream_transport_failure_reason"] == .string("delayed_connect_error:_Connection_refused"))
        let text = try #require(AccessLogLine.render(.text, r))
        #expect(text == """
            [2000-02-29T00:00:00.000Z] "- - HTTP/1.0" 503 UF,URX upstream_reset_before_response_started{connection_failure} \
            - "delayed_connect_error:_Connection_refused" 0 0 0 - "-" "-" "-" "-" "127.0.0.1:9" - - - - - -

            """)
    }

    @Test func tcpLinesHaveNoMethodPathOrProtocol() throws {
        let c = knownCapture()  // an HTTP request's fields left in the slot must not show
        var r = AccessLogRecord()
        r.startMicros = 0
        r.durationMicros = 5_000
        r.protocol = .tcp
        r.bytesReceived = 10
        r.bytesSent = 20
        r.upstreamHost = "10.0.0.7:9000"
        r.upstreamCluster = "outbound|9000||db"
        let text = try #require(AccessLogLine.render(.text, r, capture: c, slot: 2))
        #expect(text == """
            [1970-01-01T00:00:00.000Z] "- - -" 0 - - - "-" 10 20 5 - "-" "-" "-" "-" "10.0.0.7:9000" outbound|9000||db \
            - 127.0.0.1:15006 127.0.0.1:51000 - -

            """)
        let v = try LogJSON.parse(try #require(AccessLogLine.render(.json, r, capture: c, slot: 2)))
        #expect(v["method"] == .null && v["path"] == .null && v["protocol"] == .null)
        #expect(v["user_agent"] == .null && v["authority"] == .null)
        #expect(v["response_code"] == .number(0) && v["bytes_sent"] == .number(20))
        #expect(v["downstream_remote_address"] == .string("127.0.0.1:51000"))
    }

    /// Every control character, quote, backslash, DEL, valid multi-byte characters and each kind of invalid
    /// UTF-8 (stray continuation, overlong, surrogate, above U+10FFFF, cut sequences, F5–FF) in request fields
    /// and record strings: each JSON line is valid JSON and valid UTF-8, and each value decodes to the input
    /// with every maximal invalid subpart replaced by U+FFFD (what Swift's own decoder does).
    @Test func jsonEscapingSurvivesNastyBytes() throws {
        let nasty: [[UInt8]] = [
            Array(0..<0x20) + [0x22, 0x5C, 0x2F, 0x7F, 0x41],
            Array("é€𝄞 \"quoted\" back\\slash".utf8),
            [0x80, 0x41, 0xBF],  // stray continuations
            [0xC0, 0xAF, 0xC1, 0xBF],  // overlong '/' and DEL
            [0xE0, 0x80, 0xAF],  // overlong 3-byte
            [0xED, 0xA0, 0x80, 0xED, 0xBF, 0xBF],  // surrogates
            [0xF4, 0x90, 0x80, 0x80],  // above U+10FFFF
            [0xF0, 0x9D, 0x84],  // a 4-byte character cut at the end
            [0xE2, 0x82, 0x41, 0xC3],  // cut in the middle, then cut at the end
            [0xF5, 0xF8, 0xFE, 0xFF, 0x00],
            Array("\u{2028}\u{2029}\u{FEFF}".utf8),
            [],
        ]
        let c = RequestCapture(slots: 1)
        for bytes in nasty {
            let fields: [CapturedField] = [.method, .path, .authority, .userAgent, .forwardedFor, .requestID]
            capture(c, slot: 0, Dictionary(uniqueKeysWithValues: fields.map { ($0, bytes) }))
            var r = knownRecord()
            r.routeName = String(decoding: bytes, as: UTF8.self)
            let line = try #require(AccessLogLine.render(.json, r, capture: c, slot: 0))
            #expect(line.hasSuffix("}\n") && line.dropLast().allSatisfy { $0 != "\n" })
            let v = try LogJSON.parse(Array(line.utf8.dropLast()))
            func expected(_ limit: Int) -> LogJSON {
                bytes.isEmpty ? .null : .string(String(decoding: bytes.prefix(limit), as: UTF8.self))
            }
            let keys: [(String, CapturedField)] = [
                ("method", .method), ("path", .path), ("authority", .authority), ("user_agent", .userAgent),
                ("x_forwarded_for", .forwardedFor), ("request_id", .requestID),
            ]
            for (key, field) in keys { #expect(v[key] == expected(field.limit), "\(key) of \(bytes)") }
            #expect(v["route_name"] == expected(Int.max), "route_name of \(bytes)")
            // Text lines stay one line, with control characters as \xHH.
            let text = try #require(AccessLogLine.render(.text, r, capture: c, slot: 0))
            #expect(text.utf8.filter { $0 < 0x20 || $0 == 0x7F } == [0x0A])
        }
        capture(c, slot: 0, [.userAgent: [0x01, 0x1B, 0x7F, 0x0A]])
        let text = try #require(AccessLogLine.render(.text, knownRecord(), capture: c, slot: 0))
        #expect(text.contains(#""\x01\x1b\x7f\x0a""#))
    }

    @Test func everyCapturedFieldKeepsItsWholeLimitWithoutTouchingItsNeighbours() {
        // Each field of two adjacent slots filled to its limit with its own byte: a field laid over a neighbour
        // (or a slot over the next) would read back another field's bytes.
        let c = RequestCapture(slots: 2)
        for slot in 0..<2 {
            for field in CapturedField.allCases {
                let bytes = [UInt8](repeating: UInt8(0x41 + field.rawValue + 16 * slot), count: field.limit + 7)
                bytes.withUnsafeBytes { c.set(slot, field, $0) }
            }
        }
        for slot in 0..<2 {
            for field in CapturedField.allCases {
                let expected = [UInt8](repeating: UInt8(0x41 + field.rawValue + 16 * slot), count: field.limit)
                #expect(Array(c.string(slot, field).utf8) == expected, "slot \(slot) \(field)")
            }
        }
    }

    @Test func startTimesAreRFC3339InUTCWithMilliseconds() {
        let known: [(UInt64, String)] = [
            (0, "1970-01-01T00:00:00.000Z"),
            (999, "1970-01-01T00:00:00.000Z"),
            (1_795_937_932_123_000, "2026-11-29T07:38:52.123Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00.000Z"),
            (951_782_399_999_000, "2000-02-28T23:59:59.999Z"),
            (951_868_800_000_000, "2000-03-01T00:00:00.000Z"),
            (946_684_799_999_999, "1999-12-31T23:59:59.999Z"),
            (1_735_689_599_999_000, "2024-12-31T23:59:59.999Z"),
            (1_735_689_600_000_000, "2025-01-01T00:00:00.000Z"),
            (4_107_499_200_500_000, "2100-02-28T12:00:00.500Z"),
            (4_107_542_400_000_000, "2100-03-01T00:00:00.000Z"),
            (68_191_628_009_000, "1972-02-29T06:07:08.009Z"),
        ]
        for (micros, text) in known { #expect(AccessLogLine.startTime(micros) == text) }
    }

    /// Every day from 1970 to 2400 against a calendar counted day by day.
    @Test func everyDayMatchesACountedCalendar() {
        var year = 1970, month = 1, day = 1
        func daysIn(_ y: Int, _ m: Int) -> Int {
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
            return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]
        }
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        var mismatches = 0
        for d in 0..<157_000 {
            let expected = "\(year)-\(two(month))-\(two(day))T23:59:59.999Z"
            let micros = UInt64(d) * 86_400_000_000 + 86_399_999_999
            if AccessLogLine.startTime(micros) != expected { mismatches += 1 }
            day += 1
            if day > daysIn(year, month) {
                day = 1
                month += 1
                if month > 12 {
                    month = 1
                    year += 1
                }
            }
        }
        #expect(mismatches == 0)
        #expect(year == 2399)
    }

    // MARK: The ring

    /// Takes everything published (as the writer would after writing it).
    static func take(_ shard: AccessLogShard, wrapped: inout Bool) -> [UInt8] {
        let bytes = shard.withPublished { a, b in
            if !b.isEmpty { wrapped = true }
            var out: [UInt8] = []
            for i in a.indices { out.append(a[i]) }
            for i in b.indices { out.append(b[i]) }
            return out
        }
        // What the writer counts as lines written, for the whole and for a partial write (across the wrap too).
        #expect(shard.newlines(inFirst: bytes.count) == bytes.filter { $0 == 10 }.count)
        #expect(shard.newlines(inFirst: bytes.count / 2) == bytes.prefix(bytes.count / 2).filter { $0 == 10 }.count)
        #expect(shard.newlines(inFirst: 0) == 0)
        shard.consume(bytes.count)
        return bytes
    }

    @Test func ringWrapsAroundWithLinesIntact() throws {
        let shard = AccessLogShard(format: .json, capacity: 4096)
        #expect(shard.capacity == 4096)
        let c = knownCapture()
        var r = knownRecord()
        var wrapped = false
        var all: [UInt8] = []
        var expected: [UInt8] = []
        for i in 0..<200 {
            r.bytesSent = UInt64(i)
            expected += Array(try #require(AccessLogLine.render(.json, r, capture: c, slot: 2)).utf8)
            #expect(shard.append(r, capture: c, slot: 2))
            if i % 3 == 2 { all += Self.take(shard, wrapped: &wrapped) }
        }
        all += Self.take(shard, wrapped: &wrapped)
        #expect(wrapped)
        #expect(all == expected)
        #expect(shard.lines == 200 && shard.dropped == 0 && shard.pendingBytes == 0)
    }

    @Test func theProducerNudgesOnceWhenHalfFullThenEveryQuarter() throws {
        final class Count: @unchecked Sendable { var n = 0 }
        let nudges = Count()
        let shard = AccessLogShard(format: .text, capacity: 4096, onHalfFull: { nudges.n += 1 })
        let r = knownRecord()
        let size = try #require(AccessLogLine.render(.text, r)).utf8.count
        var held = 0
        func append() {
            #expect(shard.append(r, capture: nil, slot: 0))
            held += size
        }
        while held + size < 2048 { append() }
        #expect(nudges.n == 0)
        append()  // past half
        #expect(nudges.n == 1)
        let mark = held
        while held + size < mark + 1024 { append() }
        #expect(nudges.n == 1)
        append()  // a quarter further, still unwritten
        #expect(nudges.n == 2)
        // Written out: no nudge until half the ring is unwritten again.
        shard.consume(shard.pendingBytes)
        held = 0
        while held + size < 2048 { append() }
        #expect(nudges.n == 2)
        append()
        #expect(nudges.n == 3)
    }

    @Test func fullRingDropsAndCounts() throws {
        let shard = AccessLogShard(format: .text, capacity: 4096)
        let r = knownRecord()
        let size = try #require(AccessLogLine.render(.text, r)).utf8.count
        var accepted = 0
        for _ in 0..<100 where shard.append(r, capture: nil, slot: 0) { accepted += 1 }
        #expect(accepted == 4096 / size)
        #expect(shard.dropped == UInt64(100 - accepted))
        #expect(shard.lines == UInt64(accepted))
        #expect(shard.pendingBytes == accepted * size)
        // Freeing one line's bytes makes room for exactly one more.
        shard.consume(size)
        #expect(shard.append(r, capture: nil, slot: 0))
        #expect(!shard.append(r, capture: nil, slot: 0))
        #expect(shard.dropped == UInt64(100 - accepted + 1))
    }

    @Test func lineLongerThanItsLimitIsDropped() {
        let shard = AccessLogShard(format: .json, capacity: 8192, lineLimit: 1024)
        var r = knownRecord()
        #expect(shard.append(r, capture: nil, slot: 0))
        r.upstreamCluster = String(repeating: "c", count: 1100)
        #expect(!shard.append(r, capture: nil, slot: 0))
        #expect(shard.dropped == 1 && shard.lines == 1)
        #expect(AccessLogLine.render(.json, r, limit: 1024) == nil)
    }

    /// A producer thread moves 100,000 lines through a 16 KiB ring to this thread, retrying when it is full:
    /// every line arrives once, whole and in order.
    @Test func producerAndConsumerOnTwoThreads() throws {
        let shard = AccessLogShard(format: .text, capacity: 16 * 1024)
        let total = 100_000
        let producer = TestThread {
            var r = AccessLogRecord()
            for i in 0..<total {
                r.bytesSent = UInt64(i)
                while !shard.append(r, capture: nil, slot: 0) { sched_yield() }
            }
        }
        // Every line is this prefix, bytes_sent, then this suffix.
        let prefix = Array(#"[1970-01-01T00:00:00.000Z] "- - HTTP/1.1" 0 - - - "-" 0 "#.utf8)
        let suffix = Array(#" 0 - "-" "-" "-" "-" "-" - - - - - -"#.utf8)
        var next = 0
        var line: [UInt8] = []
        line.reserveCapacity(256)
        var bad = 0
        func scan(_ span: Span<UInt8>) {
            for i in span.indices {
                let byte = span[i]
                if byte != 10 {
                    line.append(byte)
                    continue
                }
                var v = 0
                var j = prefix.count
                while j < line.count, line[j] >= 0x30, line[j] <= 0x39 {
                    v = v * 10 + Int(line[j] - 0x30)
                    j += 1
                }
                if v != next || !line.starts(with: prefix) || line.count - j != suffix.count || !line[j...].elementsEqual(suffix) {
                    bad += 1
                }
                next += 1
                line.removeAll(keepingCapacity: true)
            }
        }
        while next < total && bad == 0 {
            let n = shard.withPublished { a, b in
                scan(a)
                scan(b)
                return a.count + b.count
            }
            shard.consume(n)
            if n == 0 { sched_yield() }
        }
        producer.join()
        #expect(bad == 0)
        #expect(next == total)
        #expect(line.isEmpty && shard.pendingBytes == 0)
        #expect(shard.lines == UInt64(total))
    }
}

/// Composing and publishing access-log lines allocates nothing. Counted under the malloc counter
/// (Tools/scripts/test.sh runs `TERN_REQUIRE_MALLOC_COUNTER=1 LD_PRELOAD=count_malloc.so swift test --filter
/// AllocationTests`, which matches this suite's name); a plain `swift test` checks the lines only.
@Suite struct AccessLogAllocationTests {
    @Test func formattingAndAppendingAllocateNothing() throws {
        let counter = try MallocCounter.load()
        let json = AccessLogShard(format: .json)
        let text = AccessLogShard(format: .text)
        let c = knownCapture()
        capture(c, slot: 1, [.method: Array("POST".utf8), .path: [0x2F, 0x22, 0x01, 0xC3, 0xA9, 0xFF], .userAgent: Array("x\\y".utf8)])
        var r = knownRecord()
        // Strings as the proxy holds them: built at run time, on the heap.
        let cluster = "outbound|\(80 + Int.random(in: 0..<1))||cart.shop.svc.cluster.local"
        let details = ["via_upstream", "route_not_found"].map { "\($0)" }
        r.upstreamCluster = cluster
        r.flags = [.upstreamConnectionFailure, .upstreamRetryLimitExceeded]

        func once(_ i: Int) -> Bool {
            r.bytesSent = UInt64(i)
            r.startMicros &+= 1_234_567
            r.responseCodeDetails = details[i & 1]
            r.upstreamServiceMicros = i & 2 == 0 ? nil : UInt64(i)
            let shard = i & 1 == 0 ? json : text
            let ok = shard.append(r, capture: c, slot: 1 + (i & 1))
            let n = shard.withPublished { a, b in a.count + b.count }
            shard.consume(n)
            return ok
        }
        _ = once(0)
        _ = once(1)  // first use of the lazily built tables (flag names, capture offsets)
        let before = counter?.count()
        var appended = 0
        for i in 0..<1_000 where once(i) { appended += 1 }
        let after = counter?.count()
        #expect(appended == 1_000)
        #expect(json.dropped == 0 && text.dropped == 0)
        if let counter, let before, let after {
            #expect(after - before == 0, "\(after - before) allocations in 1,000 lines")
            // The counter is live: an array that allocates is seen.
            let control = [Int](repeating: appended, count: 1 + appended % 7)
            #expect(counter.count() > after && control.count > 0)
        }
    }
}
