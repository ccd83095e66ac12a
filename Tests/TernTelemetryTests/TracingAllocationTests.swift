import TernTelemetry
import TernTestSupport
import Testing

/// A reactor's whole tracing path allocates nothing: reading a head's trace fields, the child context and
/// sampling, writing the forwarded fields, filling a span and recording it in the shard. Counted under the
/// malloc counter (Tools/scripts/test.sh's `--filter AllocationTests` run, which requires it: `MallocCounter`).
@Suite struct TracingAllocationTests {
    @Test func recordingSpansAllocatesNothing() throws {
        let counter = try MallocCounter.load()
        let head = Array(("GET /details/0 HTTP/1.1\r\nhost: details:9080\r\n"
            + "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
            + "tracestate: rojo=00f067aa0ba902b7,congo=t61rcWkgMzE\r\n"
            + "x-b3-traceid: 4bf92f3577b34da6a3ce929d0e0e4736\r\nX-B3-SpanId: 00f067aa0ba902b7\r\nx-b3-sampled: 1\r\n"
            + "b3: 4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1\r\n\r\n").utf8)
        // (name, value) ranges of each field line, as a parsed head gives them.
        var fields: [(Range<Int>, Range<Int>)] = []
        var lineStart = 0
        for i in 0..<(head.count - 1) where head[i] == 0x0D && head[i + 1] == 0x0A {
            if let colon = head[lineStart..<i].firstIndex(of: 0x3A), lineStart > 0 {
                fields.append((lineStart..<colon, (colon + 2)..<i))
            }
            lineStart = i + 2
        }
        #expect(fields.count == 7)
        let capture = RequestCapture(slots: 4)
        capture.set(2, .method, "GET")
        capture.set(2, .path, "/details/0")
        capture.set(2, .authority, "details:9080")
        capture.set(2, .requestID, "3f2b1e0c-1d2e-4f5a-8b9c-0d1e2f3a4b5c")
        capture.set(2, .traceState, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        // Rendered once per route and cluster, as the proxy does (heap strings, not literals).
        let operation = ["details.default.svc.cluster.local", "9080/*"].joined(separator: ":")
        let cluster = ["outbound", "9080", "", "details.default.svc.cluster.local"].joined(separator: "|")
        let shard = SpanShard(capacity: 4096)
        let sampler = TraceSampler(percent: 1.0)
        var random = TestRandom(0x7465_726e)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: TraceContext.maxFieldBytes, alignment: 1)
        defer { out.deallocate() }
        var written = 0
        var checksum: UInt64 = 0

        func once(_ i: Int) {
            var headers = TraceHeaders()
            // By index: a for-in over an array of tuples allocates in unoptimised builds (the test's own cost).
            for f in fields.indices { headers.add(name: fields[f].0, value: fields[f].1, in: head.span) }
            let context = headers.context.child(sampler: sampler, using: &random)
            capture.withBytes(2, .traceState) { ts in
                written += context.writeFields(into: out, traceState: ts) ?? 0
            }
            context.writeFields(traceStateFrom: capture, slot: 2) { checksum &+= UInt64($0) }
            var span = SpanRecord(context: context, kind: .client, startMicros: 1_700_000_000_000_000 + UInt64(i))
            span.setRequest(from: capture, slot: 2)
            span.operation = operation
            span.upstreamCluster = cluster
            span.responseCode = 200
            span.durationMicros = 250
            span.requestBytes = 100
            span.responseBytes = 2000
            span.responseFlags = []
            shard.record(span)
        }

        once(0)
        shard.drain { _ in }
        let perRequest = written
        #expect(perRequest == 197)  // traceparent, tracestate and b3 (single wins over multi)
        let before = counter?.count()
        for i in 1...1_000 { once(i) }
        var drained = 0
        shard.drain { r in if r.traceIDLow == 0xa3ce_929d_0e0e_4736 && r.operation == operation { drained += 1 } }
        let after = counter?.count()
        #expect(drained == 1_000)
        #expect(written == 1_001 * perRequest && checksum > 0)
        #expect(shard.dropped.load(ordering: .relaxed) == 0)
        if let before, let after {
            #expect(after - before == 0, "\(after - before) allocations for 1,000 spans")
        }
    }
}
