// Circuit breakers (DestinationRule `connectionPool`) as Envoy's cluster resource manager keeps them: per cluster,
// for the whole process, not per reactor. Each cluster has one `ClusterCircuit` of atomics shared by the reactors:
// connections open to it, requests waiting for a connection (pending), requests on a connection (active), and
// retries under way, each against its limit; a reactor takes a unit by adding one and gives it back if that went
// past the limit (as Envoy's `canCreate` then `inc`, two reactors racing for the last unit may both be refused,
// never both admitted). No lock on the request path: the registry's lock is taken when a table is bound.
//
// What each limit does when reached (Envoy's connection pool and router):
// - connections (`tcp.maxConnections`, `--max-upstream-connections`): an HTTP request waits for one of the pool's
//   connections instead (counted `upstream_cx_overflow`); a pool that has no connection at all on this reactor
//   opens one anyway, so that its queue cannot wait for ever on connections other reactors hold (Envoy's rule).
//   A TCP connection routed to the cluster is closed at once, flag UO.
// - pending (`http.http1MaxPendingRequests`, `--max-pending-requests`): a request that would wait beyond it is
//   answered 503 UO (`upstream_rq_pending_overflow`).
// - active requests (`http.http2MaxRequests`, `--max-requests`; HTTP/1.1 too, despite the name): a request given
//   a connection beyond it is answered 503 UO (`upstream_rq_pending_overflow`, as Envoy counts it).
// - retries (`http.maxRetries`, `--max-retries`, or the retry budget `trafficPolicy.retryBudget`: a share of the
//   active and pending requests, at least `minRetryConcurrency`): a retry beyond it is not made; the client gets
//   the response or failure of the try before it, flag UO (`upstream_rq_retry_overflow`). A retry holds its unit
//   from its decision until the request ends or is retried again, as Envoy's retry state does.
//
// Connections are charged to the cluster that opened them. Tern's HTTP/1.1 pools are per endpoint, so two
// clusters naming one endpoint (a service and its subsets) share connections; one made for one cluster and
// reused by the other stays the first one's.
import Synchronization
import TernConfig
import TernCore

/// One cluster's limits and connection settings, from its DestinationRule `connectionPool` (after Istio's merge
/// of the policy blocks) and the flags where it says nothing.
struct CircuitLimits: Equatable {
    /// Connections of HTTP routes, and of TCP routes (no flag default: unlimited unless the rule sets it).
    var maxConnections = Int.max
    var maxTCPConnections = Int.max
    var maxPending = Int.max
    var maxRequests = Int.max
    var maxRetries = Int.max
    /// `retryBudget.percent` in hundredths of a percent (-1: no budget, `maxRetries` decides).
    var budgetBasisPoints = -1
    var minRetryConcurrency = 3
    /// Per connection: the connect timeout, how long it may stay idle in the pool (0: for ever), how many
    /// requests it carries (0: no limit) and how long it may live (0: no limit); TCP keepalive (0: the system's).
    var connectTimeout: UInt64 = 0
    var idleTimeout: UInt64 = 0
    var maxRequestsPerConnection = 0
    var maxConnectionDuration: UInt64 = 0
    /// Streams one HTTP/2 connection carries at once (`http.maxConcurrentStreams`; Int.max: the peer's limit).
    var maxConcurrentStreams = Int.max
    var keepalive = false
    var keepaliveTime = 0, keepaliveInterval = 0, keepaliveProbes = 0
    /// HTTP/2 keepalive PINGs (`http.http2KeepAlive`): every `pingInterval` (0: none), the connection closed when
    /// one is not answered within `pingTimeout`.
    var pingInterval: UInt64 = 0
    var pingTimeout: UInt64 = 0
    /// TCP routes: a relayed connection with no bytes either way for this long is closed (0: never).
    var tcpIdleTimeout: UInt64 = 0
}

/// The defaults where no DestinationRule speaks: the `--max-*` flags, process-wide per cluster, and the upstream
/// idle timeout (part of the relay's settings so that HTTP and TCP routing compute the same limits).
public struct CircuitDefaults: Sendable, Equatable {
    /// `--max-upstream-connections` (HTTP clusters; a TCP cluster has no limit unless its rule sets one, as in
    /// Istio, whose defaults are all unlimited).
    public var maxConnections = 1024
    /// `--max-pending-requests`.
    public var maxPending = 1024
    /// `--max-requests`, `--max-retries` (0: no limit, Istio's default).
    public var maxRequests = 0
    public var maxRetries = 0
    /// `--upstream-idle-timeout`: an idle pooled HTTP connection is closed after this long (0: never).
    public var upstreamIdleTimeout = TernDuration.seconds(3600)
    public init() {}
}

extension CircuitLimits {
    /// The limits of a cluster whose merged policy has `pool` (nil: none) and retry budget `budget`, with the
    /// process's defaults and timeouts (`relay`). As Istio, a zero in a limit field means "not set".
    init(_ pool: ConnectionPoolSettings?, budget: RetryBudget?, relay: RelaySettings) {
        let defaults = relay.circuits
        func limit(_ set: Int?, _ flag: Int) -> Int {
            if let set, set > 0 { return set }
            return flag > 0 ? flag : Int.max
        }
        maxConnections = limit(pool?.maxConnections, defaults.maxConnections)
        maxTCPConnections = limit(pool?.maxConnections, 0)
        maxPending = limit(pool?.http1MaxPendingRequests, defaults.maxPending)
        maxRequests = limit(pool?.http2MaxRequests, defaults.maxRequests)
        maxRetries = limit(pool?.maxRetries, defaults.maxRetries)
        if let budget {
            budgetBasisPoints = Int((budget.percent * 100).rounded())
            minRetryConcurrency = budget.minRetryConcurrency
        }
        connectTimeout = (pool?.connectTimeout ?? relay.connectTimeout).nanoseconds
        // http.idleTimeout, else tcp.idleTimeout, else the flag; 0s: never.
        idleTimeout = (pool?.idleTimeout ?? pool?.tcpIdleTimeout ?? defaults.upstreamIdleTimeout).nanoseconds
        maxRequestsPerConnection = pool?.maxRequestsPerConnection ?? 0
        maxConnectionDuration = pool?.maxConnectionDuration?.nanoseconds ?? 0
        maxConcurrentStreams = limit(pool?.maxConcurrentStreams, 0)
        pingInterval = pool?.http2KeepAliveInterval?.nanoseconds ?? 0
        pingTimeout = pool?.http2KeepAliveTimeout?.nanoseconds ?? Self.defaultPingTimeout
        keepalive = pool?.tcpKeepalive ?? false
        keepaliveTime = Self.seconds(pool?.tcpKeepaliveTime)
        keepaliveInterval = Self.seconds(pool?.tcpKeepaliveInterval)
        keepaliveProbes = pool?.tcpKeepaliveProbes ?? 0
        tcpIdleTimeout = (pool?.tcpIdleTimeout ?? relay.idleTimeout).nanoseconds
    }

    /// How long a keepalive PING may go unanswered when `http2KeepAlive` names no timeout (Envoy requires one;
    /// gRPC's clients wait 20 s).
    static let defaultPingTimeout: UInt64 = 20_000_000_000

    /// Whole seconds, at least one (TCP_KEEPIDLE and TCP_KEEPINTVL count seconds); 0 for none.
    private static func seconds(_ d: TernDuration?) -> Int {
        guard let d else { return 0 }
        return max(1, Int((d.nanoseconds + 999_999_999) / 1_000_000_000))
    }
}

/// How connections to a cluster are made and kept (its rule's `connectionPool`, or the flags).
struct ConnectionSettings {
    var connectTimeout: UInt64
    /// 0: never.
    var idleTimeout: UInt64
    var tcpIdleTimeout: UInt64
    /// 0: no limit.
    var maxRequestsPerConnection: Int
    var maxConnectionDuration: UInt64
    /// Int.max: no limit but the peer's.
    var maxConcurrentStreams: Int
    var keepalive: Bool
    var keepaliveTime: Int, keepaliveInterval: Int, keepaliveProbes: Int
    /// HTTP/2 keepalive PINGs: 0 interval, none.
    var pingInterval: UInt64, pingTimeout: UInt64
}

/// One cluster's circuit breakers for the whole process: counts, limits and overflow counters (Envoy's
/// `upstream_cx_overflow`, `upstream_rq_pending_overflow`, `upstream_rq_retry_overflow`).
final class ClusterCircuit: Sendable {
    let name: String
    let connections = Atomic<Int>(0)
    let pending = Atomic<Int>(0)
    let requests = Atomic<Int>(0)
    let retries = Atomic<Int>(0)
    let cxOverflow = Atomic<Int>(0)
    let pendingOverflow = Atomic<Int>(0)
    let retryOverflow = Atomic<Int>(0)
    private let maxConnections = Atomic<Int>(Int.max)
    private let maxPending = Atomic<Int>(Int.max)
    private let maxRequests = Atomic<Int>(Int.max)
    private let maxRetries = Atomic<Int>(Int.max)
    private let budgetBasisPoints = Atomic<Int>(-1)
    private let minRetryConcurrency = Atomic<Int>(3)
    private let maxTCPConnections = Atomic<Int>(Int.max)
    private let connectTimeout = Atomic<UInt64>(5_000_000_000)
    private let idleTimeout = Atomic<UInt64>(0)
    private let tcpIdleTimeout = Atomic<UInt64>(0)
    private let maxRequestsPerConnection = Atomic<Int>(0)
    private let maxConnectionDuration = Atomic<UInt64>(0)
    private let maxConcurrentStreams = Atomic<Int>(Int.max)
    private let keepalive = Atomic<Bool>(false)
    private let keepaliveTime = Atomic<Int>(0)
    private let keepaliveInterval = Atomic<Int>(0)
    private let keepaliveProbes = Atomic<Int>(0)
    private let pingInterval = Atomic<UInt64>(0)
    private let pingTimeout = Atomic<UInt64>(0)

    /// The epoch of the table whose limits it has (written under the registry's lock).
    let epoch = Atomic<UInt64>(0)

    init(name: String) { self.name = name }

    /// Nothing is held of it.
    var idle: Bool {
        connections.load(ordering: .relaxed) == 0 && pending.load(ordering: .relaxed) == 0
            && requests.load(ordering: .relaxed) == 0 && retries.load(ordering: .relaxed) == 0
    }

    /// Read when a connection to the cluster is made (a few loads; nothing shared is written).
    var connectionSettings: ConnectionSettings {
        ConnectionSettings(connectTimeout: connectTimeout.load(ordering: .relaxed), idleTimeout: idleTimeout.load(ordering: .relaxed),
                           tcpIdleTimeout: tcpIdleTimeout.load(ordering: .relaxed),
                           maxRequestsPerConnection: maxRequestsPerConnection.load(ordering: .relaxed),
                           maxConnectionDuration: maxConnectionDuration.load(ordering: .relaxed),
                           maxConcurrentStreams: maxConcurrentStreams.load(ordering: .relaxed),
                           keepalive: keepalive.load(ordering: .relaxed),
                           keepaliveTime: keepaliveTime.load(ordering: .relaxed), keepaliveInterval: keepaliveInterval.load(ordering: .relaxed),
                           keepaliveProbes: keepaliveProbes.load(ordering: .relaxed),
                           pingInterval: pingInterval.load(ordering: .relaxed), pingTimeout: pingTimeout.load(ordering: .relaxed))
    }

    /// The limits of the table bound last (every reactor binding it writes the same values).
    func configure(_ l: CircuitLimits) {
        maxConnections.store(l.maxConnections, ordering: .relaxed)
        maxPending.store(l.maxPending, ordering: .relaxed)
        maxRequests.store(l.maxRequests, ordering: .relaxed)
        maxRetries.store(l.maxRetries, ordering: .relaxed)
        budgetBasisPoints.store(l.budgetBasisPoints, ordering: .relaxed)
        minRetryConcurrency.store(l.minRetryConcurrency, ordering: .relaxed)
        maxTCPConnections.store(l.maxTCPConnections, ordering: .relaxed)
        connectTimeout.store(l.connectTimeout, ordering: .relaxed)
        idleTimeout.store(l.idleTimeout, ordering: .relaxed)
        tcpIdleTimeout.store(l.tcpIdleTimeout, ordering: .relaxed)
        maxRequestsPerConnection.store(l.maxRequestsPerConnection, ordering: .relaxed)
        maxConnectionDuration.store(l.maxConnectionDuration, ordering: .relaxed)
        maxConcurrentStreams.store(l.maxConcurrentStreams, ordering: .relaxed)
        keepalive.store(l.keepalive, ordering: .relaxed)
        keepaliveTime.store(l.keepaliveTime, ordering: .relaxed)
        keepaliveInterval.store(l.keepaliveInterval, ordering: .relaxed)
        keepaliveProbes.store(l.keepaliveProbes, ordering: .relaxed)
        pingInterval.store(l.pingInterval, ordering: .relaxed)
        pingTimeout.store(l.pingTimeout, ordering: .relaxed)
    }

    /// A TCP route's connection counts in `connections` against `tcp.maxConnections` only.
    enum Resource { case connection, tcpConnection, pending, request, retry }

    /// Takes one unit of `resource` unless that would pass its limit (then nothing is taken).
    func take(_ resource: Resource) -> Bool {
        switch resource {
        case .connection: Self.take(connections, maxConnections.load(ordering: .relaxed))
        case .tcpConnection: Self.take(connections, maxTCPConnections.load(ordering: .relaxed))
        case .pending: Self.take(pending, maxPending.load(ordering: .relaxed))
        case .request: Self.take(requests, maxRequests.load(ordering: .relaxed))
        case .retry: Self.take(retries, retryLimit)
        }
    }

    /// Takes a connection whatever the limit (a pool with none opens one: see the file's comment); false when
    /// that went past the limit.
    func forceConnection() -> Bool {
        connections.wrappingAdd(1, ordering: .relaxed).newValue <= maxConnections.load(ordering: .relaxed)
    }

    func give(_ resource: Resource) {
        switch resource {
        case .connection, .tcpConnection: connections.subtract(1, ordering: .relaxed)
        case .pending: pending.subtract(1, ordering: .relaxed)
        case .request: requests.subtract(1, ordering: .relaxed)
        case .retry: retries.subtract(1, ordering: .relaxed)
        }
    }

    /// Whether a connection may open now (Envoy's `canCreate`: asked before queueing).
    var connectionsLeft: Bool { connections.load(ordering: .relaxed) < maxConnections.load(ordering: .relaxed) }

    /// Concurrent retries allowed now: with a retry budget, its share of the requests active and pending (at least
    /// `minRetryConcurrency`), as Envoy's retry budget; else `maxRetries`.
    private var retryLimit: Int {
        let bp = budgetBasisPoints.load(ordering: .relaxed)
        guard bp >= 0 else { return maxRetries.load(ordering: .relaxed) }
        let load = requests.load(ordering: .relaxed) + pending.load(ordering: .relaxed)
        return max(minRetryConcurrency.load(ordering: .relaxed), load * bp / 10_000)
    }

    private static func take(_ counter: borrowing Atomic<Int>, _ limit: Int) -> Bool {
        if counter.wrappingAdd(1, ordering: .relaxed).newValue <= limit { return true }
        counter.subtract(1, ordering: .relaxed)
        return false
    }

    /// Whether each limit is reached now (Envoy's `circuit_breakers.default.*_open` gauges).
    var open: (connections: Bool, pending: Bool, requests: Bool, retries: Bool) {
        (connections.load(ordering: .relaxed) >= maxConnections.load(ordering: .relaxed),
         pending.load(ordering: .relaxed) >= maxPending.load(ordering: .relaxed),
         requests.load(ordering: .relaxed) >= maxRequests.load(ordering: .relaxed),
         retries.load(ordering: .relaxed) >= retryLimit)
    }
}

/// Every cluster's circuit, for all reactors, by cluster name. Looked up when a table is bound (under a lock,
/// never on the request path).
public final class CircuitRegistry: Sendable {
    private let circuits = Mutex([String: ClusterCircuit]())
    /// The newest table epoch bound (written under the lock above).
    private let newest = Atomic<UInt64>(0)

    public init() {}

    /// The record of cluster `name`, given the limits of the table of epoch `epoch` (a core binding an older table
    /// than another already did leaves the newer limits in place).
    func circuit(_ name: String, _ limits: CircuitLimits, epoch: UInt64 = 0) -> ClusterCircuit {
        circuits.withLock { all in
            let c = all[name] ?? ClusterCircuit(name: name)
            all[name] = c
            if epoch >= c.epoch.load(ordering: .relaxed) {
                c.epoch.store(epoch, ordering: .relaxed)
                c.configure(limits)
            }
            return c
        }
    }

    /// The bound table's clusters are `names`: the others are forgotten once nothing holds a unit of them, so a
    /// mesh whose clusters churn keeps only its own, and a cluster in use keeps one record whichever table each
    /// core binds meanwhile.
    func keep(_ names: Set<String>, epoch: UInt64 = 0) {
        circuits.withLock { all in
            // (A core binding an older table than another already did prunes nothing: the newer table's clusters
            // may not be in use yet.)
            guard epoch >= newest.load(ordering: .relaxed) else { return }
            newest.store(epoch, ordering: .relaxed)
            all = all.filter { names.contains($0.key) || !$0.value.idle }
        }
    }

    /// Per cluster: what is in use now and the overflow counters (the metrics).
    public func figures() -> [CircuitFigures] {
        circuits.withLock { all in
            all.values.sorted { $0.name < $1.name }.map { c in
                let open = c.open
                return CircuitFigures(
                    cluster: c.name, connections: c.connections.load(ordering: .relaxed), pending: c.pending.load(ordering: .relaxed),
                    requests: c.requests.load(ordering: .relaxed), retries: c.retries.load(ordering: .relaxed),
                    cxOverflow: c.cxOverflow.load(ordering: .relaxed), pendingOverflow: c.pendingOverflow.load(ordering: .relaxed),
                    retryOverflow: c.retryOverflow.load(ordering: .relaxed),
                    open: [open.connections, open.pending, open.requests, open.retries])
            }
        }
    }
}

/// One cluster's circuit-breaker figures at one moment.
public struct CircuitFigures: Sendable {
    public var cluster: String
    public var connections, pending, requests, retries: Int
    public var cxOverflow, pendingOverflow, retryOverflow: Int
    /// Limits reached: connections, pending, requests, retries.
    public var open: [Bool]
}

/// The units of its cluster's circuit an exchange holds.
struct CircuitCharges: OptionSet {
    let rawValue: UInt8
    static let pending = CircuitCharges(rawValue: 1)
    static let request = CircuitCharges(rawValue: 2)
    static let retry = CircuitCharges(rawValue: 4)
}
