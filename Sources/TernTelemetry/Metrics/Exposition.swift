// The scrape: every reactor's shard summed into Prometheus text (exposition format 0.0.4), with the
// labels of Istio's standard metrics, plus families the caller adds (Tern's own).

/// A metric family the caller renders through the same exposition (Tern's own metrics).
public struct MetricFamily: Sendable {
    public enum Kind: String, Sendable { case counter, gauge }
    public var name: String
    public var help: String
    public var kind: Kind
    public var samples: [(labels: [(String, String)], value: Double)]
    public init(name: String, help: String, kind: Kind, samples: [(labels: [(String, String)], value: Double)]) {
        self.name = name
        self.help = help
        self.kind = kind
        self.samples = samples
    }
}

/// The process's metrics: one shard per reactor, the service registry, and the constant labels.
public final class Telemetry: Sendable {
    public let shards: [MetricsShard]
    public let services = ServiceRegistry()
    public let peers = PeerRegistry()
    public let workload: WorkloadLabels
    public let reporter: Reporter

    public init(reactors: Int, workload: WorkloadLabels, reporter: Reporter, seriesCapacity: Int = 1024) {
        shards = (0..<reactors).map { _ in MetricsShard(capacity: seriesCapacity) }
        self.workload = workload
        self.reporter = reporter
    }

    /// Every HTTP series summed across shards, by key.
    public func httpSeries() -> [UInt64: [UInt64]] { sum(\.http) }
    /// Every TCP series summed across shards, by key.
    public func tcpSeries() -> [UInt64: [UInt64]] { sum(\.tcp) }

    private func sum(_ table: KeyPath<MetricsShard, SeriesTable>) -> [UInt64: [UInt64]] {
        var all: [UInt64: [UInt64]] = [:]
        for shard in shards {
            shard[keyPath: table].forEach { key, words in
                if var w = all[key] {
                    for i in w.indices { w[i] &+= words[i] }
                    all[key] = w
                } else {
                    all[key] = words
                }
            }
        }
        return all
    }

    /// Series that were not recorded because a shard's table was full.
    public var seriesOverflowed: UInt64 {
        shards.reduce(0) { $0 &+ $1.http.overflowed.load(ordering: .relaxed) &+ $1.tcp.overflowed.load(ordering: .relaxed) }
    }

    /// The labels every series of `key` carries, in Istio's order.
    public func labels(_ key: SeriesKey) -> [(String, String)] {
        // An inbound series is the destination's whatever the process's reporter (a sidecar in one process reports
        // both sides); its service field is the peer's id, whose principal and namespace are the source's.
        let reporter: Reporter = key.inbound ? .destination : self.reporter
        let s = key.inbound ? ServiceRegistry.Service.unknown : services.service(key.service)
        let me = workload
        let unknown = WorkloadLabels()
        var source = reporter == .source ? me : unknown
        var destination = reporter == .destination ? me : unknown
        if reporter == .source { destination.canonicalService = s.name == "unknown" ? "unknown" : s.name }
        if key.inbound, let principal = peers.principal(key.service) {
            source.principal = "spiffe://" + principal
            // "<trust domain>/ns/<namespace>/sa/<account>": the namespace, as Istio reads it from the peer.
            let parts = principal.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count >= 5, parts[1] == "ns" { source.namespace = String(parts[2]) }
        }
        var l: [(String, String)] = [
            ("reporter", reporter.rawValue),
            ("source_workload", source.workload),
            ("source_canonical_service", source.canonicalService),
            ("source_canonical_revision", source.canonicalRevision),
            ("source_workload_namespace", source.namespace),
            ("source_principal", source.principal),
            ("source_app", source.app),
            ("source_version", source.version),
            ("source_cluster", source.cluster),
            ("destination_workload", destination.workload),
            ("destination_workload_namespace", destination.namespace),
            ("destination_principal", destination.principal),
            ("destination_app", destination.app),
            ("destination_version", destination.version),
            ("destination_service", s.host),
            ("destination_canonical_service", destination.canonicalService),
            ("destination_canonical_revision", destination.canonicalRevision),
            ("destination_service_name", s.name),
            ("destination_service_namespace", s.namespace),
            ("destination_cluster", destination.cluster),
            ("request_protocol", key.requestProtocol.label),
        ]
        if key.requestProtocol != .tcp {
            l.append(("response_code", String(key.code)))
            l.append(("grpc_response_status", key.grpcStatus.map { String($0) } ?? ""))
            l.append(("response_flags", key.flags.description))
        } else {
            l.append(("response_flags", key.flags.description))
        }
        // As Istio reports it: the destination's side knows whether its client connection was mutual TLS; the
        // source's does not.
        l.append(("connection_security_policy", reporter == .destination ? (key.mutualTLS ? "mutual_tls" : "none") : "unknown"))
        return l
    }

    /// Prometheus text: Istio's standard metrics, then `extra`.
    public func prometheusText(extra: [MetricFamily] = []) -> String {
        var out = PrometheusWriter()
        let http = httpSeries().sorted { $0.key < $1.key }
        let tcp = tcpSeries().sorted { $0.key < $1.key }
        out.family("istio_requests_total", "Requests proxied, by destination, response code and flags.", "counter")
        for (key, w) in http { out.sample("istio_requests_total", labels(SeriesKey(raw: key)), Double(w[HTTPWords.requests - 1])) }
        out.histogram("istio_request_duration_milliseconds", "Time from the request's first byte to the response's last.",
                      http, bucketsAt: HTTPWords.duration, sumAt: HTTPWords.durationSum, sumScale: 0.001, labels)
        out.histogram("istio_request_bytes", "Bytes received from the downstream per request (head and body).",
                      http, bucketsAt: HTTPWords.requestBytes, sumAt: HTTPWords.requestBytesSum, sumScale: 1, labels)
        out.histogram("istio_response_bytes", "Bytes sent to the downstream per response (head and body).",
                      http, bucketsAt: HTTPWords.responseBytes, sumAt: HTTPWords.responseBytesSum, sumScale: 1, labels)
        let tcpFamilies: [(String, String, Int)] = [
            ("istio_tcp_sent_bytes_total", "Bytes sent to the downstream on TCP connections.", TCPWords.sent),
            ("istio_tcp_received_bytes_total", "Bytes received from the downstream on TCP connections.", TCPWords.received),
            ("istio_tcp_connections_opened_total", "TCP connections opened.", TCPWords.opened),
            ("istio_tcp_connections_closed_total", "TCP connections closed.", TCPWords.closed),
        ]
        for (name, help, word) in tcpFamilies {
            out.family(name, help, "counter")
            for (key, w) in tcp { out.sample(name, labels(SeriesKey(raw: key)), Double(w[word - 1])) }
        }
        for f in extra {
            out.family(f.name, f.help, f.kind.rawValue)
            for s in f.samples { out.sample(f.name, s.labels, s.value) }
        }
        return out.text
    }
}

/// Builds exposition text: HELP and TYPE once per family before its samples, escaped label values.
public struct PrometheusWriter {
    var text = ""

    mutating func family(_ name: String, _ help: String, _ type: String) {
        text += "# HELP \(name) \(Self.escape(help, quotes: false))\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{"
            for (i, (k, v)) in labels.enumerated() {
                if i > 0 { text += "," }
                text += "\(k)=\"\(Self.escape(v, quotes: true))\""
            }
            text += "}"
        }
        text += " \(Self.number(value))\n"
    }

    mutating func histogram(_ name: String, _ help: String, _ series: [(key: UInt64, value: [UInt64])],
                            bucketsAt: Int, sumAt: Int, sumScale: Double, _ labels: (SeriesKey) -> [(String, String)])
    {
        family(name, help, "histogram")
        for (key, w) in series {
            let l = labels(SeriesKey(raw: key))
            var cumulative: UInt64 = 0
            for b in 0..<Buckets.count {
                cumulative &+= w[bucketsAt + b - 1]
                let le = b < Buckets.bounds.count ? Self.number(Buckets.bounds[b]) : "+Inf"
                sample(name + "_bucket", l + [("le", le)], Double(cumulative))
            }
            sample(name + "_sum", l, Double(w[sumAt - 1]) * sumScale)
            sample(name + "_count", l, Double(cumulative))
        }
    }

    /// A sample value as the exposition writes it (integers without a fraction).
    public static func number(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }

    static func escape(_ s: String, quotes: Bool) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\"" where quotes: out += "\\\""
            default: out.append(c)
            }
        }
        return out
    }
}
