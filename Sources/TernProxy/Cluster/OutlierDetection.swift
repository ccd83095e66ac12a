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
    /// In the cluster of the bound table (an endpoint that left it counts nothing and is not ejected).
    let live = Atomic<Bool>(true)
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
        returnToService(until)
        return false
    }

    /// Ends the ejection that lasts until `until` (once: the caller whose swap succeeds), as Envoy's un-ejection:
    /// out of the cluster's ejected hosts, its counters started afresh.
    func returnToService(_ until: UInt64) {
        guard ejectedUntil.compareExchange(expected: until, desired: 0, ordering: .acquiringAndReleasing).exchanged else { return }
        consecutive5xx.store(0, ordering: .relaxed)
        consecutiveGateway.store(0, ordering: .relaxed)
        consecutiveLocal.store(0, ordering: .relaxed)
        cluster.ejected.subtract(1, ordering: .relaxed)
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
        /// By cluster name, then address.
        var hosts: [String: [String: OutlierHost]] = [:]
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
        state.withLock { s in
            if let h = s.hosts[cluster.name]?[address] {
                h.live.store(true, ordering: .relaxed)
                return h
            }
            let h = OutlierHost(cluster: cluster, address: address)
            s.hosts[cluster.name, default: [:]][address] = h
            return h
        }
    }

    /// The cluster's endpoints in the bound table are `addresses` (none: the cluster left, or lost its outlier
    /// detection): the records of the others are returned to service, stop counting, and are dropped, as Envoy
    /// forgets a removed host. Idempotent: every reactor binds the same table.
    func keep(_ cluster: String, addresses: Set<String>) {
        state.withLock { s in
            guard let hosts = s.hosts[cluster] else { return }
            for (address, h) in hosts where !addresses.contains(address) {
                h.live.store(false, ordering: .relaxed)
                let until = h.ejectedUntil.load(ordering: .acquiring)
                if until != 0 { h.returnToService(until) }
                s.hosts[cluster]?[address] = nil
            }
        }
    }

    /// Per cluster: hosts ejected now (those whose time is up returned to service first), ejections enforced and
    /// refused by `maxEjectionPercent` (the metrics).
    public func figures(now: UInt64) -> [(cluster: String, active: Int, enforced: Int, overflow: Int)] {
        state.withLock { s in
            for hosts in s.hosts.values { for h in hosts.values { _ = h.isEjected(now: now) } }
            return s.clusters.values.sorted { $0.name < $1.name }.map {
                ($0.name, $0.ejected.load(ordering: .relaxed), $0.enforced.load(ordering: .relaxed), $0.overflow.load(ordering: .relaxed))
            }
        }
    }

    /// Whether endpoint `address` of cluster `cluster` is ejected now (the admin page's `failed_outlier_check`).
    public func isEjected(cluster: String, address: String, now: UInt64) -> Bool {
        let h = state.withLock { $0.hosts[cluster]?[address] }
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
        guard host.live.load(ordering: .relaxed) else { return false }
        switch outcome {
        case .status(let status):
            let error = errorCodes.isEmpty ? status >= 500 : errorCodes.contains(status)
            return count(error: error, gateway: status == 502 || status == 503 || status == 504, host, now)
        case .connectFailed, .timeout, .reset:
            // Envoy reports a reset before the response as a failed connection: a 503 without the split.
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
        // Detected: the run starts over whether or not the ejection is allowed (Envoy).
        counter.store(0, ordering: .relaxed)
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
        // The multiplier decays by one per whole interval the host has been in service since its last ejection
        // ended, and grows only while base × multiplier stays below Envoy's cap plus the base (11 with the defaults).
        var m = host.multiplier.load(ordering: .relaxed)
        let since = host.multiplierSince.load(ordering: .relaxed)
        if m > 0 && interval > 0 && now > since {
            let intervals = (now - since) / interval
            m = intervals >= UInt64(m) ? 0 : m - UInt32(intervals)
        }
        let cap = max(300_000_000_000, baseEjection)
        if UInt64(m) &* baseEjection < cap &+ baseEjection { m += 1 }
        let until = max(1, now &+ ejectionTime(multiplier: m))
        guard host.ejectedUntil.compareExchange(expected: 0, desired: until, ordering: .acquiringAndReleasing).exchanged else { return false }
        host.multiplier.store(m, ordering: .relaxed)
        host.multiplierSince.store(until, ordering: .relaxed)
        host.consecutive5xx.store(0, ordering: .relaxed)
        host.consecutiveGateway.store(0, ordering: .relaxed)
        host.consecutiveLocal.store(0, ordering: .relaxed)
        cluster.ejected.add(1, ordering: .relaxed)
        cluster.enforced.add(1, ordering: .relaxed)
        return true
    }
}
