// The exchange report: metrics, span and access-log line, once per exchange.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    /// Reports the exchange once: one istio_requests_total increment and its histograms, and its span when
    /// the request is sampled.
    func recordExchange(_ id: DID) {
        guard !downstreams[id].exchange.report.recorded else { return }
        downstreams[id].exchange.report.recorded = true
        let micros = (System.monotonicNanos() &- downstreams[id].headStart) / 1000
        if let metrics {
            let key = SeriesKey(service: downstreams[id].exchange.report.service, code: downstreams[id].exchange.report.status, flags: downstreams[id].exchange.report.flags, protocol: .http)
            metrics.request(key, durationMicros: micros, requestBytes: downstreams[id].exchange.report.requestWire, responseBytes: downstreams[id].exchange.report.responseWire)
        }
        if let spans = reporting.spans, let capture, downstreams[id].exchange.report.trace.sampled == true {
            var span = SpanRecord(context: downstreams[id].exchange.report.trace, kind: reporting.spanKind, startMicros: downstreams[id].exchange.report.startWall)
            span.setRequest(from: capture, slot: Int(id.index))
            span.durationMicros = max(micros, 1)
            span.responseCode = UInt16(clamping: downstreams[id].exchange.report.status)
            span.responseFlags = downstreams[id].exchange.report.flags
            span.requestBytes = downstreams[id].exchange.report.requestWire
            span.responseBytes = downstreams[id].exchange.report.responseWire
            span.httpProtocol = downstreams[id].exchange.http10 ? .http10 : .http11
            // Named through the balancer that counted the request: its slot stays put while the request is
            // outstanding, so a table swapped in meanwhile (its clusters numbered anew) cannot rename it.
            if let outstanding = downstreams[id].exchange.attempt.outstanding {
                span.operation = balancers.operation(of: outstanding)
                span.upstreamCluster = balancers.clusterName(of: outstanding)
            } else if routes == nil, downstreams[id].exchange.attempt.endpoint >= 0 {
                span.operation = pools.slots[downstreams[id].exchange.attempt.endpoint].name
                span.upstreamCluster = pools.slots[downstreams[id].exchange.attempt.endpoint].name
            } else {
                span.operation = "-"
                span.upstreamCluster = "-"
            }
            _ = spans.record(span)
        }
        if let log = reporting.accessLog {
            var r = AccessLogRecord()
            r.startMicros = downstreams[id].exchange.report.startWall
            r.durationMicros = micros
            let up = downstreams[id].exchange.report.upstreamStart, head = downstreams[id].exchange.report.upstreamHead
            r.upstreamServiceMicros = up > 0 && head >= up ? (head - up) / 1000 : nil
            r.responseCode = downstreams[id].exchange.report.status
            r.flags = downstreams[id].exchange.report.flags
            r.bytesReceived = downstreams[id].exchange.report.requestWire &- min(downstreams[id].exchange.report.requestHeadLength, downstreams[id].exchange.report.requestWire)
            r.bytesSent = downstreams[id].exchange.report.responseWire &- min(downstreams[id].exchange.report.responseHeads, downstreams[id].exchange.report.responseWire)
            r.protocol = downstreams[id].exchange.http10 ? .http10 : .http11
            let e = downstreams[id].exchange.attempt.endpoint
            if e >= 0 { r.upstreamHost = pools.slots[e].name }
            if let outstanding = downstreams[id].exchange.attempt.outstanding {
                r.upstreamCluster = balancers.clusterName(of: outstanding)
            }
            r.routeName = downstreams[id].exchange.report.routeName
            if let reply = downstreams[id].exchange.report.answeredBy {
                r.responseCodeDetails = reply.details
            } else if downstreams[id].exchange.report.status != 0 {
                r.responseCodeDetails = "via_upstream"
            } else if downstreams[id].exchange.report.flags.contains(.downstreamConnectionTermination) {
                r.responseCodeDetails = "downstream_remote_disconnect"
            }
            log.append(r, capture: capture, slot: Int(id.index))
        }
    }
}
