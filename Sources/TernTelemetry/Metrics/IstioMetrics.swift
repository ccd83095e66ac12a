// Istio's standard metrics (../shared/reference/istio.md §2), kept per reactor and summed at scrape time.
//
// A series is identified by a 64-bit key: the destination service (an id from the process's ServiceRegistry,
// which config provides, never request bytes), the response code, the response flags and the protocol. Every
// other label is constant for the process (reporter, this workload's identity) or unknown until peer identity
// exists (mTLS), so the number of series is bounded by configuration.
import Synchronization

/// Where a metric's protocol label comes from.
public enum RequestProtocol: UInt64, Sendable {
    case http = 0, grpc = 1, tcp = 2
    public var label: String {
        switch self {
        case .http: "http"
        case .grpc: "grpc"
        case .tcp: "tcp"
        }
    }
}

/// The key of one series: flags in bits 0–28, response code in 29–38, protocol in 39–40, service in 41–55 (for an
/// inbound series, the peer: an id of the process's PeerRegistry), inbound in 56 (reported as the destination,
/// whatever the process's reporter), gRPC status plus one in 57–61 (0: none), mutual TLS in 62, bit 63 always set
/// (a key is never 0).
public struct SeriesKey: Hashable, Sendable {
    public let raw: UInt64

    @inlinable
    public init(service: UInt32, code: Int, flags: ResponseFlags, protocol p: RequestProtocol, mutualTLS: Bool = false,
                grpcStatus: Int = -1, inbound: Bool = false) {
        let c = UInt64(code >= 0 && code <= 999 ? code : 0)
        let g = UInt64(grpcStatus >= 0 && grpcStatus < 31 ? grpcStatus + 1 : 0)
        raw = (1 << 63) | (mutualTLS ? 1 << 62 : 0) | (g << 57) | (inbound ? 1 << 56 : 0) | (UInt64(service & 0x7FFF) << 41) | (p.rawValue << 39)
            | (c << 29) | UInt64(flags.rawValue)
    }

    public init(raw: UInt64) { self.raw = raw }

    public var service: UInt32 { UInt32((raw >> 41) & 0x7FFF) }
    /// Received by a sidecar's inbound side: reported as the destination, `service` being the peer's id.
    public var inbound: Bool { (raw >> 56) & 1 == 1 }
    /// The response's gRPC status (nil: none, or not gRPC).
    public var grpcStatus: Int? {
        let g = Int((raw >> 57) & 0x1F)
        return g == 0 ? nil : g - 1
    }
    /// The client connection was mutual TLS (a client certificate verified): Istio's connection_security_policy
    /// `mutual_tls` on the destination's side.
    public var mutualTLS: Bool { (raw >> 62) & 1 == 1 }
    public var code: Int { Int((raw >> 29) & 0x3FF) }
    public var flags: ResponseFlags { ResponseFlags(rawValue: UInt32(raw & 0x1FFF_FFFF)) }
    public var requestProtocol: RequestProtocol { RequestProtocol(rawValue: (raw >> 39) & 3) ?? .http }
}

/// Envoy's default histogram buckets, used by Istio for durations (milliseconds) and sizes (bytes).
public enum Buckets {
    public static let bounds: [Double] = [
        0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
    ]
    /// The bounds in thousandths (microseconds for durations, millibytes for sizes), to index in integers.
    @usableFromInline static let thousandths: [UInt64] = bounds.map { UInt64($0 * 1000) }
    /// Buckets per histogram: one per bound and +Inf.
    public static var count: Int { bounds.count + 1 }

    /// The bucket (0..<count) of a value given in thousandths of the unit: the first bound not below it.
    @inlinable
    public static func index(thousandths v: UInt64) -> Int {
        var i = 0
        let t = thousandths
        while i < t.count && v > t[i] { i += 1 }
        return i
    }
}

/// Word offsets of an HTTP series and of a TCP series.
public enum HTTPWords {
    public static let requests = 1
    public static let duration = 2
    public static var durationSum: Int { duration + Buckets.count }
    public static var requestBytes: Int { durationSum + 1 }
    public static var requestBytesSum: Int { requestBytes + Buckets.count }
    public static var responseBytes: Int { requestBytesSum + 1 }
    public static var responseBytesSum: Int { responseBytes + Buckets.count }
    public static var stride: Int { responseBytesSum + 1 }
}

public enum TCPWords {
    public static let opened = 1, closed = 2, sent = 3, received = 4
    public static let stride = 5
}

/// Live gauges per upstream endpoint (admin /clusters), kept by each reactor; a scrape sums them (each
/// reactor's own count may wrap below zero for a moment; the sum does not).
public enum EndpointWords {
    public static let activeRequests = 1, connections = 2
    public static let stride = 3
}

/// The key of an endpoint's gauges: its address and port hashed (FNV-1a), bit 63 set.
public enum EndpointKey {
    public static func make(address: String, port: UInt16) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in address.utf8 {
            h ^= UInt64(b)
            h &*= 0x100_0000_01b3
        }
        h ^= UInt64(port)
        h &*= 0x100_0000_01b3
        return h | (1 << 63)
    }
}

/// One reactor's metrics. Only that reactor writes; scrapes read.
public final class MetricsShard: Sendable {
    public let http: SeriesTable
    public let tcp: SeriesTable
    public let endpoints: SeriesTable
    /// Gauges and counters of the reactor itself, indexed by `ReactorWord`.
    public let reactor: CounterBlock

    public init(capacity: Int = 1024) {
        http = SeriesTable(stride: HTTPWords.stride, capacity: capacity)
        tcp = SeriesTable(stride: TCPWords.stride, capacity: max(capacity / 4, 16))
        endpoints = SeriesTable(stride: EndpointWords.stride, capacity: capacity)
        reactor = CounterBlock(count: ReactorWord.count)
    }

    /// One finished HTTP request: exactly one istio_requests_total increment.
    @inlinable
    public func request(_ key: SeriesKey, durationMicros: UInt64, requestBytes: UInt64, responseBytes: UInt64) {
        guard let s = http.slot(key.raw) else { return }
        http.add(s, HTTPWords.requests, 1)
        http.add(s, HTTPWords.duration + Buckets.index(thousandths: durationMicros), 1)
        http.add(s, HTTPWords.durationSum, durationMicros)
        http.add(s, HTTPWords.requestBytes + Buckets.index(thousandths: requestBytes &* 1000), 1)
        http.add(s, HTTPWords.requestBytesSum, requestBytes)
        http.add(s, HTTPWords.responseBytes + Buckets.index(thousandths: responseBytes &* 1000), 1)
        http.add(s, HTTPWords.responseBytesSum, responseBytes)
    }

    /// A TCP connection's events: opened, closed, bytes sent to and received from the downstream. `mutualTLS`: the
    /// connection's client presented a verified certificate to a TLS listener (`connection_security_policy`).
    @inlinable
    public func tcp(service: UInt32, opened: UInt64 = 0, closed: UInt64 = 0, sent: UInt64 = 0, received: UInt64 = 0,
                    mutualTLS: Bool = false) {
        let key = SeriesKey(service: service, code: 0, flags: [], protocol: .tcp, mutualTLS: mutualTLS)
        guard let s = tcp.slot(key.raw) else { return }
        if opened != 0 { tcp.add(s, TCPWords.opened, opened) }
        if closed != 0 { tcp.add(s, TCPWords.closed, closed) }
        if sent != 0 { tcp.add(s, TCPWords.sent, sent) }
        if received != 0 { tcp.add(s, TCPWords.received, received) }
    }
}

extension MetricsShard {
    /// Adds `delta` (may be negative) to an endpoint gauge.
    @inlinable
    public func endpoint(_ key: UInt64, _ word: Int, _ delta: Int) {
        guard let s = endpoints.slot(key) else { return }
        endpoints.add(s, word, UInt64(bitPattern: Int64(delta)))
    }
}

/// Words of `MetricsShard.reactor`.
public enum ReactorWord {
    /// Gauges set by the proxy: its upstream connections, and how many of them idle in the pools.
    public static let upstreamConnections = 0, idleUpstreamConnections = 1
    /// Counters: requests with an Origin a route's CORS policy allows, and with one it does not (Envoy's
    /// `cors.origin_valid` and `cors.origin_invalid`).
    public static let corsOriginValid = 2, corsOriginInvalid = 3
    public static let count = 4
}

/// The destination services metrics name, each given a small id once (at config apply and snapshot bind,
/// never per request). Id 0 is the unknown service.
public final class ServiceRegistry: Sendable {
    public struct Service: Hashable, Sendable {
        public var host: String
        public var name: String
        public var namespace: String
        public init(host: String, name: String, namespace: String) {
            self.host = host
            self.name = name
            self.namespace = namespace
        }
        public static let unknown = Service(host: "unknown", name: "unknown", namespace: "unknown")

        /// `details.default.svc.cluster.local` → name `details`, namespace `default`; other hosts name
        /// themselves and have the namespace given.
        public init(host: String, namespace: String) {
            let parts = host.split(separator: ".", omittingEmptySubsequences: false)
            if parts.count >= 3 && parts[2] == "svc" {
                self.init(host: host, name: String(parts[0]), namespace: String(parts[1]))
            } else {
                self.init(host: host, name: host, namespace: namespace)
            }
        }
    }

    private let ids = SeriesIDs<Service>(zero: .unknown)

    public init() {}

    /// The id of `service`, given now if new. Ids beyond the key's 15 bits share id 0.
    public func id(_ service: Service) -> UInt32 { ids.id(service) }

    public func service(_ id: UInt32) -> Service { ids.value(id) ?? .unknown }

}

/// The peers an inbound side has seen, by principal (a SPIFFE ID without `spiffe://`), as the ids inbound series
/// carry: given once per connection (at its handshake), never per request. Id 0 is no principal (plaintext, or a
/// certificate without one); ids beyond the key's 15 bits share it.
public final class PeerRegistry: Sendable {
    private let ids = SeriesIDs<String>(zero: "")

    public init() {}

    public func id(_ principal: String) -> UInt32 { ids.id(principal) }

    /// The principal of `id` (nil: none).
    public func principal(_ id: UInt32) -> String? { id > 0 ? ids.value(id) : nil }
}

/// Values numbered for a series key's 15-bit field, in the order first seen (id 0: `zero`; values beyond the field
/// share it). Shared by the reactors; used when a table is bound or a connection's handshake ends, never per request.
final class SeriesIDs<Value: Hashable & Sendable>: Sendable {
    private let state: Mutex<(list: [Value], ids: [Value: UInt32])>

    init(zero: Value) { state = Mutex(([zero], [zero: 0])) }

    func id(_ value: Value) -> UInt32 {
        state.withLock { s in
            if let id = s.ids[value] { return id }
            guard s.list.count < 0x7FFF else { return 0 }
            let id = UInt32(s.list.count)
            s.list.append(value)
            s.ids[value] = id
            return id
        }
    }

    /// The value of `id` (nil: never given).
    func value(_ id: UInt32) -> Value? {
        state.withLock { s in Int(id) < s.list.count ? s.list[Int(id)] : nil }
    }
}

/// This workload's identity, for the source_* labels (reporter source) or destination_* labels (reporter
/// destination). Values that are not known are "unknown", as Istio writes them.
public struct WorkloadLabels: Sendable, Equatable {
    public var workload = "unknown"
    public var namespace = "unknown"
    public var principal = "unknown"
    public var app = "unknown"
    public var version = "unknown"
    public var canonicalService = "unknown"
    public var canonicalRevision = "latest"
    public var cluster = "unknown"
    public init() {}
}

/// Whose view the metrics are from: the client's sidecar (`source`, outbound) or the server's
/// (`destination`, inbound).
public enum Reporter: String, Sendable, CaseIterable {
    case source, destination
}
