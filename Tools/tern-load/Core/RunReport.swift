import Histogram

/// Latency at the percentiles a report shows, in microseconds.
public struct LatencyPercentiles: Equatable, Sendable {
    public var p50: Int64, p75: Int64, p90: Int64, p99: Int64, p99_9: Int64, p99_99: Int64, max: Int64

    public static let labels = ["p50", "p75", "p90", "p99", "p99_9", "p99_99", "max"]
    static let percents: [Double] = [50, 75, 90, 99, 99.9, 99.99, 100]

    public init(p50: Int64, p75: Int64, p90: Int64, p99: Int64, p99_9: Int64, p99_99: Int64, max: Int64) {
        (self.p50, self.p75, self.p90, self.p99, self.p99_9, self.p99_99, self.max) = (p50, p75, p90, p99, p99_9, p99_99, max)
    }

    public init(_ h: Histogram<UInt64>) {
        func at(_ p: Double) -> Int64 { h.totalCount == 0 ? 0 : Int64(h.valueAtPercentile(p)) }
        self.init(p50: at(50), p75: at(75), p90: at(90), p99: at(99), p99_9: at(99.9), p99_99: at(99.99),
                  max: h.totalCount == 0 ? 0 : Int64(h.max))
    }

    public var values: [Int64] { [p50, p75, p90, p99, p99_9, p99_99, max] }

    /// b − a at each percentile: the latency b adds on top of a (negative where b was faster).
    public static func added(from a: LatencyPercentiles, to b: LatencyPercentiles) -> LatencyPercentiles {
        let d = zip(a.values, b.values).map { $1 - $0 }
        return LatencyPercentiles(p50: d[0], p75: d[1], p90: d[2], p99: d[3], p99_9: d[4], p99_99: d[5], max: d[6])
    }

    public var json: String {
        "{" + zip(Self.labels, values).map { "\"\($0)\": \($1)" }.joined(separator: ", ") + "}"
    }
}

/// Failed requests by kind.
public struct ErrorCounts: Equatable, Sendable {
    public var connect = 0, timeout = 0, reset = 0, status4xx = 0, status5xx = 0

    public init(connect: Int = 0, timeout: Int = 0, reset: Int = 0, status4xx: Int = 0, status5xx: Int = 0) {
        (self.connect, self.timeout, self.reset, self.status4xx, self.status5xx) = (connect, timeout, reset, status4xx, status5xx)
    }

    public mutating func add(_ o: ErrorCounts) {
        connect += o.connect
        timeout += o.timeout
        reset += o.reset
        status4xx += o.status4xx
        status5xx += o.status5xx
    }

    public var json: String {
        "{\"connect\": \(connect), \"timeout\": \(timeout), \"reset\": \(reset), \"status_4xx\": \(status4xx), \"status_5xx\": \(status5xx)}"
    }
}

/// What one run measured: the document `--json` prints (its field names are the documented interface).
public struct RunReport: Sendable {
    public var requests: UInt64
    public var durationSeconds: Double
    /// Requests per second asked for with --rate; nil in a closed loop.
    public var targetRate: UInt64?
    public var latency: LatencyPercentiles
    public var uncorrected: LatencyPercentiles
    public var errors: ErrorCounts
    public var bytesSent: UInt64
    public var bytesReceived: UInt64

    public init(recorder: LatencyRecorder, durationSeconds: Double, targetRate: UInt64?, errors: ErrorCounts,
         bytesSent: UInt64, bytesReceived: UInt64) {
        requests = recorder.count
        self.durationSeconds = durationSeconds
        self.targetRate = targetRate
        latency = LatencyPercentiles(recorder.corrected)
        uncorrected = LatencyPercentiles(recorder.uncorrected)
        self.errors = errors
        self.bytesSent = bytesSent
        self.bytesReceived = bytesReceived
    }

    public var requestsPerSecond: Double { durationSeconds > 0 ? Double(requests) / durationSeconds : 0 }

    public var json: String {
        """
        {"requests": \(requests), "duration_s": \(Self.number(durationSeconds)), \
        "requests_per_second": \(Self.number(requestsPerSecond)), \
        "target_rate": \(targetRate.map(String.init) ?? "null"), \
        "latency_us": \(latency.json), "latency_uncorrected_us": \(uncorrected.json), \
        "errors": \(errors.json), "bytes_sent": \(bytesSent), "bytes_received": \(bytesReceived)}
        """
    }

    /// A JSON number with three decimals (no exponent, no locale).
    public static func number(_ x: Double) -> String {
        guard x.isFinite else { return "0" }
        let scaled = Int64((x * 1000).rounded())
        let sign = scaled < 0 ? "-" : ""
        let a = scaled.magnitude
        let frac = String(a % 1000)
        return "\(sign)\(a / 1000).\(String(repeating: "0", count: 3 - frac.count))\(frac)"
    }

    /// The human-readable table.
    public var table: String {
        var out = "requests \(requests) in \(Self.number(durationSeconds)) s: \(Self.number(requestsPerSecond)) req/s"
        if let targetRate { out += " (target \(targetRate))" }
        out += "\n\n  percentile   latency (µs)   uncorrected (µs)\n"
        for (i, label) in LatencyPercentiles.labels.enumerated() {
            out += "  " + Self.pad(label, 10) + " " + Self.pad(String(latency.values[i]), 14, right: true)
                + " " + Self.pad(String(uncorrected.values[i]), 18, right: true) + "\n"
        }
        out += "\n  errors: connect \(errors.connect), timeout \(errors.timeout), reset \(errors.reset), "
            + "4xx \(errors.status4xx), 5xx \(errors.status5xx)\n  bytes: sent \(bytesSent), received \(bytesReceived)\n"
        return out
    }

    public static func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: Swift.max(0, width - s.count))
        return right ? fill + s : s + fill
    }
}

/// `--compare URL_A URL_B`: both runs and the latency B adds over A.
public struct ComparisonReport: Sendable {
    public var a: RunReport
    public var b: RunReport

    public init(a: RunReport, b: RunReport) {
        self.a = a
        self.b = b
    }

    public var added: LatencyPercentiles { .added(from: a.latency, to: b.latency) }

    public var json: String { "{\"a\": \(a.json), \"b\": \(b.json), \"added_latency_us\": \(added.json)}" }
}

extension ComparisonReport {
    /// Both tables, then the added latency per percentile (corrected figures: what a user waits).
    public func table(nameA: String, nameB: String) -> String {
        var out = "\(nameA)\n\(a.table)\n\(nameB)\n\(b.table)\n  added latency, B over A\n"
        out += "  percentile         A (µs)         B (µs)     added (µs)\n"
        for (i, label) in LatencyPercentiles.labels.enumerated() {
            out += "  " + RunReport.pad(label, 10) + " " + RunReport.pad(String(a.latency.values[i]), 14, right: true)
                + " " + RunReport.pad(String(b.latency.values[i]), 14, right: true)
                + " " + RunReport.pad(String(added.values[i]), 14, right: true) + "\n"
        }
        return out
    }
}

