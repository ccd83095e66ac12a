// The exchange report: metrics, span and access-log line, once per exchange.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    /// Reports the exchange once: one istio_requests_total increment and its histograms, and its span when
    /// the request is sampled.
    func recordExchange(_ x: XID) {
        guard !exchanges[x].report.recorded else { return }
        exchanges[x].report.recorded = true
        if downstreams[exchanges[x].downstream].relaysTCP { return recordRelayed(x) }
        let micros = (System.monotonicNanos() &- exchanges[x].headStart) / 1000
        if exchanges[x].report.grpc && exchanges[x].report.grpcStatus < 0 && exchanges[x].report.status > 0 {
            // A gRPC response without a status (an HTTP error from a server or proxy that is not gRPC's, or cut
            // short): its HTTP status mapped, as Envoy's gRPC status formatter and Istio's label fall back to.
            exchanges[x].report.grpcStatus = Int16(GRPC.status(forHTTP: exchanges[x].report.status))
        }
        if let metrics {
            let id = exchanges[x].downstream
            let inbound = isInbound(downstreams[id].listener)
            let key = SeriesKey(service: inbound ? downstreams[id].peerID : exchanges[x].report.service, code: exchanges[x].report.status,
                                flags: exchanges[x].report.flags, protocol: exchanges[x].report.grpc ? .grpc : .http,
                                mutualTLS: downstreams[id].mutualTLS, grpcStatus: Int(exchanges[x].report.grpcStatus),
                                inbound: inbound)
            metrics.request(key, durationMicros: micros, requestBytes: exchanges[x].report.requestWire, responseBytes: exchanges[x].report.responseWire)
        }
        if let spans = reporting.spans, let capture, exchanges[x].report.trace.sampled == true {
            var span = SpanRecord(context: exchanges[x].report.trace, kind: reporting.spanKind, startMicros: exchanges[x].report.startWall)
            span.setRequest(from: capture, slot: Int(x.index))
            span.durationMicros = max(micros, 1)
            span.responseCode = UInt16(clamping: exchanges[x].report.status)
            span.responseFlags = exchanges[x].report.flags
            span.requestBytes = exchanges[x].report.requestWire
            span.responseBytes = exchanges[x].report.responseWire
            span.httpProtocol = exchanges[x].http2 ? .http2 : exchanges[x].http10 ? .http10 : .http11
            // Named through the balancer that counted the request: its slot stays put while the request is
            // outstanding, so a table swapped in meanwhile (its clusters numbered anew) cannot rename it.
            if let outstanding = exchanges[x].attempt.outstanding {
                span.operation = balancers.operation(of: outstanding)
                span.upstreamCluster = balancers.clusterName(of: outstanding)
            } else if exchanges[x].cluster < 0, exchanges[x].attempt.endpoint >= 0 {
                span.operation = pools.slots[exchanges[x].attempt.endpoint].name
                span.upstreamCluster = pools.slots[exchanges[x].attempt.endpoint].name
            } else {
                span.operation = "-"
                span.upstreamCluster = "-"
            }
            _ = spans.record(span)
        }
        if let log = reporting.accessLog {
            var r = AccessLogRecord()
            r.startMicros = exchanges[x].report.startWall
            r.durationMicros = micros
            let up = exchanges[x].report.upstreamStart, head = exchanges[x].report.upstreamHead
            r.upstreamServiceMicros = up > 0 && head >= up ? (head - up) / 1000 : nil
            r.responseCode = exchanges[x].report.status
            r.flags = exchanges[x].report.flags
            r.bytesReceived = exchanges[x].report.requestWire &- min(exchanges[x].report.requestHeadLength, exchanges[x].report.requestWire)
            r.bytesSent = exchanges[x].report.responseWire &- min(exchanges[x].report.responseHeads, exchanges[x].report.responseWire)
            r.protocol = exchanges[x].http2 ? .http2 : exchanges[x].http10 ? .http10 : .http11
            r.grpcStatus = Int(exchanges[x].report.grpcStatus)
            r.grpcMessage = exchanges[x].report.grpcMessage
            let e = exchanges[x].attempt.endpoint
            if e >= 0 { r.upstreamHost = pools.slots[e].name }
            if let outstanding = exchanges[x].attempt.outstanding {
                r.upstreamCluster = balancers.clusterName(of: outstanding)
            }
            r.routeName = exchanges[x].report.routeName
            r.upstreamTransportFailureReason = exchanges[x].report.transportFailure
            if exchanges[x].report.cutAtDrainTimeout {
                // Whatever had been answered so far, Tern cut the exchange.
                r.responseCodeDetails = "downstream_local_disconnect(drain_timeout)"
            } else if let reply = exchanges[x].report.answeredBy {
                r.responseCodeDetails = exchanges[x].report.failedAfterResponseStarted ? reply.detailsAfterResponseStarted : reply.details
            } else if exchanges[x].report.status != 0 {
                r.responseCodeDetails = "via_upstream"
            } else if exchanges[x].report.flags.contains(.downstreamConnectionTermination) {
                r.responseCodeDetails = "downstream_remote_disconnect"
            }
            log.append(r, capture: capture, slot: Int(x.index))
        }
    }
}
