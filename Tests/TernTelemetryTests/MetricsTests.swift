import TernTelemetry
import Testing

@Suite struct MetricsTests {
    @Test func flagsRenderInEnvoyOrder() {
        #expect(ResponseFlags().description == "-")
        #expect(ResponseFlags.upstreamConnectionFailure.description == "UF")
        let both: ResponseFlags = [.upstreamRetryLimitExceeded, .upstreamConnectionFailure]
        #expect(both.description == "UF,URX")
        var bytes: [UInt8] = []
        both.write { bytes.append($0) }
        #expect(String(decoding: bytes, as: UTF8.self) == "UF,URX")
        #expect(ResponseFlags(name: "NR") == .noRouteFound)
        #expect(ResponseFlags(name: "XX") == nil)
        #expect(ResponseFlags.names.count == 29)
    }

    @Test func keysRoundTrip() {
        let k = SeriesKey(service: 77, code: 503, flags: [.upstreamConnectionFailure, .noRouteFound], protocol: .grpc)
        #expect(k.service == 77 && k.code == 503 && k.flags == [.upstreamConnectionFailure, .noRouteFound])
        #expect(k.requestProtocol == .grpc)
        #expect(SeriesKey(service: 0, code: 0, flags: [], protocol: .http).raw != 0)
        #expect(SeriesKey(service: 1, code: 1200, flags: [], protocol: .http).code == 0)
        #expect(k.grpcStatus == nil)
        let g = SeriesKey(service: 0x7FFF, code: 200, flags: [.upstreamConnectionFailure], protocol: .grpc, mutualTLS: true, grpcStatus: 14)
        #expect(g.grpcStatus == 14 && g.service == 0x7FFF && g.code == 200 && g.mutualTLS && g.requestProtocol == .grpc && !g.inbound)
        // The inbound bit beside a full service field, neither spilling into the other.
        let i = SeriesKey(service: 0x7FFF, code: 200, flags: [], protocol: .http, inbound: true)
        #expect(i.inbound && i.service == 0x7FFF && i.grpcStatus == nil)
        #expect(SeriesKey(service: 0xFFFF, code: 200, flags: [], protocol: .http).inbound == false)
        #expect(SeriesKey(service: 1, code: 200, flags: [], protocol: .grpc, grpcStatus: 0).grpcStatus == 0)
        #expect(SeriesKey(service: 1, code: 200, flags: [], protocol: .grpc, grpcStatus: 0) != SeriesKey(service: 1, code: 200, flags: [], protocol: .grpc))
    }

    @Test func bucketIndexIsFirstBoundNotBelow() {
        #expect(Buckets.index(thousandths: 0) == 0)
        #expect(Buckets.index(thousandths: 500) == 0)  // 0.5 ms: le="0.5"
        #expect(Buckets.index(thousandths: 501) == 1)
        #expect(Buckets.index(thousandths: 1000) == 1)
        #expect(Buckets.index(thousandths: 3_600_000_000) == 18)
        #expect(Buckets.index(thousandths: 3_600_000_001) == 19)  // +Inf
    }

    @Test func shardsSumAndTablesStopAtCapacity() {
        let t = Telemetry(reactors: 2, workload: WorkloadLabels(), reporter: .source, seriesCapacity: 16)
        let svc = t.services.id(.init(host: "cart.shop.svc.cluster.local", namespace: "x"))
        #expect(svc == 1)
        #expect(t.services.service(svc).name == "cart" && t.services.service(svc).namespace == "shop")
        let ok = SeriesKey(service: svc, code: 200, flags: [], protocol: .http)
        t.shards[0].request(ok, durationMicros: 700, requestBytes: 100, responseBytes: 5000)
        t.shards[1].request(ok, durationMicros: 3000, requestBytes: 0, responseBytes: 0)
        t.shards[1].request(ok, durationMicros: 3000, requestBytes: 0, responseBytes: 0)
        let sums = t.httpSeries()
        #expect(sums.count == 1)
        let w = sums[ok.raw]!
        #expect(w[HTTPWords.requests - 1] == 3)
        #expect(w[HTTPWords.duration - 1 + 1] == 1)  // 0.7 ms: le="1"
        #expect(w[HTTPWords.duration - 1 + 2] == 2)  // 3 ms: le="5"
        #expect(w[HTTPWords.durationSum - 1] == 6700)
        #expect(w[HTTPWords.requestBytesSum - 1] == 100)
        // 16 slots, filled to 12 at most.
        for code in 300..<320 { t.shards[0].request(SeriesKey(service: svc, code: code, flags: [], protocol: .http), durationMicros: 1, requestBytes: 1, responseBytes: 1) }
        #expect(t.httpSeries().count == 12)
        #expect(t.seriesOverflowed == 9)
    }

    @Test func exposition() {
        let t = Telemetry(reactors: 1, workload: WorkloadLabels(), reporter: .source)
        let svc = t.services.id(.init(host: "a\"b", name: "n", namespace: "ns"))
        t.shards[0].request(SeriesKey(service: svc, code: 503, flags: .upstreamConnectionFailure, protocol: .http), durationMicros: 2500, requestBytes: 10, responseBytes: 20)
        t.shards[0].tcp(service: svc, opened: 1, sent: 5)
        let text = t.prometheusText(extra: [MetricFamily(name: "tern_x", help: "h", kind: .gauge, samples: [([("reactor", "0")], 1.5)])])
        #expect(text.contains("# TYPE istio_requests_total counter\n"))
        #expect(text.contains("destination_service=\"a\\\"b\""))
        #expect(text.contains("response_code=\"503\""))
        #expect(text.contains("response_flags=\"UF\""))
        #expect(text.contains("le=\"+Inf\"} 1\n"))
        #expect(text.contains("istio_request_duration_milliseconds_sum{"))
        #expect(text.contains("} 2.5\n"))
        #expect(text.contains("istio_tcp_sent_bytes_total{"))
        #expect(text.contains("tern_x{reactor=\"0\"} 1.5\n"))
        #expect(text.hasSuffix("\n"))
    }
}

@Suite struct CaptureTests {
    @Test func fieldsAreKeptCutAndCleared() {
        let c = RequestCapture(slots: 4)
        c.set(2, .method, "GET")
        c.set(2, .path, String(repeating: "p", count: 2000))
        c.set(3, .method, "POST")
        #expect(c.string(2, .method) == "GET")
        #expect(c.length(2, .path) == CapturedField.path.limit)
        #expect(c.string(3, .method) == "POST")
        #expect(c.length(2, .userAgent) == 0)
        c.clear(2)
        #expect(c.length(2, .method) == 0 && c.length(2, .path) == 0)
        #expect(c.string(3, .method) == "POST")
    }
}
