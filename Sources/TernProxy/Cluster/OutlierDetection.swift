// Outlier detection (DestinationRule `outlierDetection`) as Envoy's detector runs it, for the whole process: an
// endpoint's consecutive errors are counted, and it is ejected, by whichever reactor sees its responses.
//
// Counting takes no lock: each endpoint of each cluster has one record of atomics (`OutlierHost`), shared by the
// reactors, as Envoy's detector keeps per-host atomic counters that its workers increment. Per-reactor counts
// merged on an interval could not count *consecutive* errors across reactors (a success on one reactor must
// reset the count another is adding to). The ejection itself is decided by the reactor whose error crosses the
// threshold, with a compare-and-swap on the record's `ejectedUntil` (so one ejection happens, once), and every
// reactor's balancer reads that word when it picks: a decision is visible to all reactors at once, as a newly
// published table is. Records are looked up by cluster name and endpoint address when a table is bound (a lock,
// off the request path), so an ejection outlives a configuration reload that keeps the endpoint.
//
// Where Envoy sweeps every `interval` (un-ejecting hosts whose time is up, and lowering the ejection multiplier
// of hosts that stayed in service), Tern does the same lazily: a host whose time is up is returned to service by
// the first pick that sees it, and the multiplier drops by one per whole interval since the host came back, when
// it is next ejected. What a client sees is the same; a host comes back at its time, not at the next sweep.
import Synchronization
import TernConfig
import TernCore

/// One endpoint of one cluster, for the whole process.
final class OutlierHost: Sendable {
    let consecutive5xx = Atomic<UInt32>(0)
    let consecutiveGateway = Atomic<UInt32>(0)
    let consecutiveLocal = Atomic<UInt32>(0)
    /// When its ejection ends (monotonic nanoseconds); 0: in service.
    let ejectedUntil = Atomic<UInt64>(0)
    /// Ejections in a row (the multiplier of the next ejection time), and since when it stands (it decays by one
    /// per interval in service).
    let multiplier = Atomic<UInt32>(0)
    let multiplierSince = Atomic<UInt64>(0)
    let cluster: OutlierCluster
    /// `address:port`, as the admin page shows it.
    let address: String

    init(cluster: OutlierCluster, address: String) {
        self.cluster = cluster
        self.address = address
    }

    /// Whether it is ejected at `now`; one whose time is up is returned to service here (once: the reactor whose
    /// swap succeeds counts it out of its cluster's ejected hosts).
    func isEjected(now: UInt64) -> Bool {
        let until = ejectedUntil.load(ordering: .acquiring)
        if until == 0 { return false }
        if now < until { return true }
        if ejectedUntil.compareExchange(expected: until, desired: 0, ordering: .acquiringAndReleasing).exchanged {
            multiplierSince.store(now, ordering: .relaxed)
            cluster.ejected.subtract(1, ordering: .relaxed)
        }
        return false
    }
}

/// One cluster's outlier figures for the whole process: its hosts ejected now, its size (the bound table's
/// endpoints), and Envoy's counters.
final class OutlierCluster: Sendable {
    let name: String
    let ejected = Atomic<Int>(0)
    let hosts = Atomic<Int>(0)
    /// `ejections_enforced_total`, and ejections `maxEjectionPercent` refused (`ejections_overflow`).
    let enforced = Atomic<Int>(0)
    let overflow = Atomic<Int>(0)

    init(name: String) { self.name = name }
}

/// Every cluster's and endpoint's outlier record, for all reactors. Looked up when a table is bound (under a
/// lock, never on the request path); the records themselves are atomics.
public final class OutlierRegistry: Sendable {
    private struct State {
        var clusters: [String: OutlierCluster] = [:]
        var hosts: [String: OutlierHost] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    func cluster(_ name: String) -> OutlierCluster {
        state.withLock { s in
            if let c = s.clusters[name] { return c }
            let c = OutlierCluster(name: name)
            s.clusters[name] = c
            return c
        }
    }

    func host(_ cluster: OutlierCluster, address: String) -> OutlierHost {
        let key = cluster.name + "|" + address
        return state.withLock { s in
            if let h = s.hosts[key] { return h }
            let h = OutlierHost(cluster: cluster, address: address)
            s.hosts[key] = h
            return h
        }
    }

    /// Per cluster: hosts ejected now, ejections enforced and refused by `maxEjectionPercent` (the metrics).
    public func figures() -> [(cluster: String, active: Int, enforced: Int, overflow: Int)] {
        state.withLock { s in
            s.clusters.values.sorted { $0.name < $1.name }.map {
                ($0.name, $0.ejected.load(ordering: .relaxed), $0.enforced.load(ordering: .relaxed), $0.overflow.load(ordering: .relaxed))
            }
        }
    }

    /// Whether endpoint `address` of cluster `cluster` is ejected now (the admin page's `failed_outlier_check`).
    public func isEjected(cluster: String, address: String, now: UInt64) -> Bool {
        let h = state.withLock { $0.hosts[cluster + "|" + address] }
        return h?.isEjected(now: now) ?? false
    }
}

/// What an upstream try came to, as the detector counts it (Envoy's `Outlier::Result` and response codes).
enum OutlierOutcome {
    /// A response head with this status.
    case status(Int)
    /// The connection could not be made (a locally originated failure; 503 without the split).
    case connectFailed
    /// No response in time (locally originated; 504 without the split).
    case timeout
    /// The upstream reset or closed the connection before the response (500, as Envoy counts it).
    case reset
    /// The connection was made (with the split: ends a run of locally originated failures).
    case connected
}

extension OutlierSettings {
    /// Counts one outcome on `host` and ejects it when a threshold is crossed and `maxEjectionPercent` allows
    /// (at least one host of a cluster can always be ejected, as in Envoy). Returns true when it ejected the host.
    func record(_ outcome: OutlierOutcome, on host: OutlierHost, errorCodes: [Int], now: UInt64) -> Bool {
        switch outcome {
        case .status(let status):
            let error = errorCodes.isEmpty ? status >= 500 : errorCodes.contains(status)
            return count(error: error, gateway: status == 502 || status == 503 || status == 504, host, now)
        case .reset:
            return count(error: true, gateway: false, host, now)
        case .connectFailed, .timeout:
            if split { return bump(host.consecutiveLocal, consecutiveLocal, host, now) }
            return count(error: true, gateway: true, host, now)  // 503 or 504
        case .connected:
            if split { Self.reset(host.consecutiveLocal) }
            return false
        }
    }

    private func count(error: Bool, gateway: Bool, _ host: OutlierHost, _ now: UInt64) -> Bool {
        var ejected = false
        if error {
            ejected = bump(host.consecutive5xx, consecutive5xx, host, now)
        } else {
            Self.reset(host.consecutive5xx)
        }
        if gateway {
            ejected = bump(host.consecutiveGateway, consecutiveGateway, host, now) || ejected
        } else {
            Self.reset(host.consecutiveGateway)
        }
        return ejected
    }

    /// A success: the run is over (stored only when it changes, so a healthy host's record stays unwritten).
    private static func reset(_ counter: borrowing Atomic<UInt32>) {
        if counter.load(ordering: .relaxed) != 0 { counter.store(0, ordering: .relaxed) }
    }

    private func bump(_ counter: borrowing Atomic<UInt32>, _ threshold: UInt32, _ host: OutlierHost, _ now: UInt64) -> Bool {
        guard threshold > 0 else { return false }
        let n = counter.wrappingAdd(1, ordering: .relaxed).newValue
        guard n >= threshold, host.ejectedUntil.load(ordering: .relaxed) == 0 else { return false }
        return eject(host, now)
    }

    private func eject(_ host: OutlierHost, _ now: UInt64) -> Bool {
        let cluster = host.cluster
        let ejected = cluster.ejected.load(ordering: .relaxed), hosts = max(1, cluster.hosts.load(ordering: .relaxed))
        // Envoy: allowed while the share ejected, this one included, stays within maxEjectionPercent, and always
        // for the first.
        guard ejected == 0 || (ejected + 1) * 100 <= Int(maxEjectionPercent) * hosts else {
            cluster.overflow.add(1, ordering: .relaxed)
            return false
        }
        // The multiplier decays by one per whole interval the host has been in service since it last changed.
        var m = host.multiplier.load(ordering: .relaxed)
        let since = host.multiplierSince.load(ordering: .relaxed)
        if m > 0 && interval > 0 && now > since {
            let intervals = (now - since) / interval
            m = intervals >= UInt64(m) ? 0 : m - UInt32(intervals)
        }
        m += 1
        let until = max(1, now &+ ejectionTime(multiplier: m))
        guard host.ejectedUntil.compareExchange(expected: 0, desired: until, ordering: .acquiringAndReleasing).exchanged else { return false }
        host.multiplier.store(m, ordering: .relaxed)
        host.multiplierSince.store(now, ordering: .relaxed)
        host.consecutive5xx.store(0, ordering: .relaxed)
        host.consecutiveGateway.store(0, ordering: .relaxed)
        host.consecutiveLocal.store(0, ordering: .relaxed)
        cluster.ejected.add(1, ordering: .relaxed)
        cluster.enforced.add(1, ordering: .relaxed)
        return true
    }
}
