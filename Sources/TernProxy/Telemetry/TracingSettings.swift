// What `--trace-collector`, `--trace-sampling` and `--trace-format` configure, checked once at start, and their
// `key=value` form for the serving process (ProxySettings+Encoding.swift).
import TernCore
import TernTelemetry

/// A collector's address, `http://host[:port]/path` (plain HTTP; the port defaults to 80).
public struct CollectorURL: Sendable, Equatable, CustomStringConvertible {
    /// A DNS name or an IP literal (IPv6 without its brackets).
    public var host: String
    public var port: UInt16
    /// Starts with "/".
    public var path: String

    public init?(parsing text: String) {
        guard text.hasPrefix("http://") else { return nil }
        let rest = text.dropFirst(7)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        path = slash == rest.endIndex ? "/" : String(rest[slash...])
        guard !authority.isEmpty, !authority.contains("@"), path.allSatisfy({ $0.isASCII && $0 > " " && $0 != "\u{7f}" }) else { return nil }
        var hostPart = authority
        var portPart: Substring? = nil
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                portPart = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
            guard !hostPart.contains(":") else { return nil }
        }
        guard !hostPart.isEmpty, hostPart.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-._:".contains($0)) }) else { return nil }
        host = String(hostPart)
        if let portPart {
            guard !portPart.isEmpty, portPart.count <= 5, portPart.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let p = UInt16(portPart), p > 0
            else { return nil }
            port = p
        } else {
            port = 80
        }
    }

    /// The Host field: `host:port`, IPv6 in brackets.
    public var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public var description: String { "http://\(authority)\(path)" }
}

/// Tracing for `tern proxy --http`: where spans go, in which format, and how many requests start a trace.
public struct TracingSettings: Sendable, Equatable {
    public var collector: CollectorURL
    /// Percent of requests without a sampling decision that are sampled (0…100; Istio's default 1).
    public var samplingPercent = 1.0
    public var format: SpanFormat
    /// Zipkin's localEndpoint.serviceName, OTLP's service.name (Istio: `app.namespace`).
    public var serviceName = "tern"
    /// Spans each reactor's ring holds for the exporter.
    public var ringCapacity = 4096

    /// Settings for `collector`, the format implied by its path (OTLP for `…/v1/traces`, else Zipkin).
    public init(collector: CollectorURL) {
        self.collector = collector
        format = SpanFormat(collectorPath: collector.path)
    }

    /// Checks the flags as a user wrote them; the error names the flag.
    public init(collector: String, sampling: Double? = nil, format: String? = nil, serviceName: String? = nil) throws(SetupError) {
        guard let url = CollectorURL(parsing: collector) else {
            throw SetupError(description: "--trace-collector: '\(collector)' is not an http://host:port/path URL")
        }
        self.init(collector: url)
        if let sampling {
            guard sampling.isFinite, sampling >= 0, sampling <= 100 else {
                throw SetupError(description: "--trace-sampling: \(sampling) is not a percentage (0 to 100)")
            }
            samplingPercent = sampling
        }
        if let format {
            guard let f = SpanFormat(rawValue: format) else {
                throw SetupError(description: "--trace-format: '\(format)' is not one of zipkin, otlp")
            }
            self.format = f
        }
        if let serviceName {
            guard !serviceName.isEmpty, serviceName.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw SetupError(description: "--trace-service-name: '\(serviceName)' is empty or not printable ASCII")
            }
            self.serviceName = serviceName
        }
    }

    /// The sampler reactors use.
    public var sampler: TraceSampler { TraceSampler(percent: samplingPercent) }

    /// The encoder the exporter uses.
    public var encoder: SpanEncoder { SpanEncoder(format: format, serviceName: serviceName) }

    /// Keys of `encoded()`.
    public static let encodedKeys: Set<String> = ["trace-collector", "trace-sampling", "trace-format", "trace-service-name", "trace-ring"]

    /// `key=value` arguments; `init(decoding:)` reverses them exactly.
    public func encoded() -> [String] {
        ["trace-collector=\(collector)", "trace-sampling=\(samplingPercent)", "trace-format=\(format.rawValue)",
         "trace-service-name=\(serviceName)", "trace-ring=\(ringCapacity)"]
    }

    /// Decodes the values of `encoded()` by key (every key of `encodedKeys` present).
    public init(decoding values: [String: String]) throws(SetupError) {
        guard let c = values["trace-collector"], let s = values["trace-sampling"].flatMap(Double.init),
              let f = values["trace-format"], let n = values["trace-service-name"],
              let r = values["trace-ring"].flatMap(Int.init), r > 0
        else { throw SetupError(description: "trace settings incomplete: \(values)") }
        try self.init(collector: c, sampling: s, format: f, serviceName: n)
        ringCapacity = r
    }
}
