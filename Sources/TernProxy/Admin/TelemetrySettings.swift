// Settings of what Tern reports and where it can be asked (issue 6): metrics, the admin, health and Prometheus
// listeners, the access log and tracing.
import TernIO
import TernTelemetry

public struct TelemetrySettings: Sendable {
    /// Where a side listener binds. A default address that is taken is a warning (two sidecars on one machine
    /// must start); an address given explicitly that is taken is fatal.
    public enum Address: Sendable, Equatable {
        case off
        case preferred(SocketAddress)
        case required(SocketAddress)

        public var address: SocketAddress? {
            switch self {
            case .off: nil
            case .preferred(let a), .required(let a): a
            }
        }
    }

    public var admin = Address.preferred(SocketAddress(parsing: "127.0.0.1:15000")!)
    public var health = Address.preferred(SocketAddress(parsing: "0.0.0.0:15021")!)
    public var prometheus = Address.preferred(SocketAddress(parsing: "0.0.0.0:15090")!)
    /// Istio's standard metrics recorded per request (`--metrics off` stops recording; the endpoints stay).
    public var metrics = true
    /// This workload's identity for the metric labels, and whose view they are (nil: `source` when routing by
    /// configuration, an outbound sidecar; `destination` with `--upstream`, in front of one local service).
    public var workload = WorkloadLabels()
    public var reporter: Reporter? = nil
    /// `--access-log PATH` or `-` (stdout); nil: off.
    public var accessLog: String? = nil
    public var accessLogFormat = "json"
    /// `--trace-collector URL`; nil: no spans (trace headers still pass through untouched).
    public var traceCollector: String? = nil
    /// `--trace-sampling PERCENT` for requests that arrive without a sampling decision (Istio's default: 1).
    public var traceSampling = 1.0

    public init() {}

    /// `off`, `pref:ADDR` or `req:ADDR` (for the lean serving process's arguments).
    static func encode(_ a: Address) -> String {
        switch a {
        case .off: "off"
        case .preferred(let s): "pref:\(s)"
        case .required(let s): "req:\(s)"
        }
    }

    static func decode(_ text: String) -> Address? {
        if text == "off" { return .off }
        if text.hasPrefix("pref:"), let a = SocketAddress(parsing: String(text.dropFirst(5))) { return .preferred(a) }
        if text.hasPrefix("req:"), let a = SocketAddress(parsing: String(text.dropFirst(4))) { return .required(a) }
        return nil
    }
}
