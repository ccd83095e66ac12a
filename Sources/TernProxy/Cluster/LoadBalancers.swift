// The cluster runtime's balancer state (ARCHITECTURE.md §1: cluster runtime, engine-owned, per reactor): each
// reactor's load balancers with the requests they count, kept across route-table swaps. The table itself stays
// pure (TernConfig holds no mutable per-reactor state); what a pick reads from it (clusters, endpoints, weights,
// consistent-hash rings and Maglev tables) is built once per table there, the position, credits and
// outstanding counts that change per request live here.
import TernConfig

/// One reactor's load balancers, one per cluster of the table it serves, kept across swaps by cluster name (a new
/// table may number its clusters differently), with the requests they count until each one finishes.
///
/// A request counted by `requestStarted` is reported finished with the `OutstandingRequest` it returned, on
/// whatever table is bound by then: its balancer and endpoint slot stay put while the request is outstanding
/// (`LoadBalancer`'s slots), even when the cluster or the endpoint left the configuration meanwhile. So a swap
/// neither loses a finish (a count that never comes down would steer LEAST_REQUEST away from that endpoint for
/// good) nor lands it on another endpoint that now has the old index.
///
/// Not shared between threads; `pick`, `requestStarted` and `requestFinished` allocate nothing, `bind` runs
/// once per published table, off the request path.
struct LoadBalancers: Sendable {
    /// Balancers by slot. A slot keeps its cluster (by name) while the bound table has that cluster or requests
    /// it counted are outstanding; then it is free (`inUse` false) for a cluster a later table brings.
    private var balancers: [LoadBalancer] = []
    /// Each slot's cluster name, kept after the slot is freed until it is reused (`clusterName(of:)`).
    private var names: [String] = []
    private var inUse: [Bool] = []
    /// The bound table's cluster index → balancer slot.
    private var slots: [Int32] = []

    init() {}

    /// Outlier records shared by every reactor (nil: no outlier detection, as in tests of balancing alone), and
    /// this sidecar's locality (`--locality`) and labels (`--labels`), which locality-aware balancing ranks
    /// endpoints by.
    private var registry: OutlierRegistry? = nil
    private var locality = Locality("")
    private var labels: [String: String] = [:]

    init(registry: OutlierRegistry? = nil, locality: Locality = Locality(""), labels: [String: String] = [:]) {
        self.registry = registry
        self.locality = locality
        self.labels = labels
    }

    init(table: RouteTable) { bind(table) }

    /// Binds every balancer to the clusters of a newly published table: a cluster already known (by name)
    /// keeps its balancer, position and counts; a new one gets a fresh balancer; one that left keeps its
    /// balancer, retired, until its outstanding requests finish.
    mutating func bind(_ table: RouteTable) {
        var byName: [String: Int32] = [:]
        for s in names.indices where inUse[s] { byName[names[s]] = Int32(s) }
        var used = [Bool](repeating: false, count: balancers.count)
        var next = [Int32](repeating: -1, count: table.clusters.count)
        for c in table.clusters.indices {
            if let s = byName[table.clusters[c].name], !used[Int(s)] {
                balancers[Int(s)].rebind(table: table, cluster: c, registry: registry)
                next[c] = s
                used[Int(s)] = true
            }
        }
        var free: [Int32] = []
        for s in balancers.indices where !used[s] {
            balancers[s].retire(registry: registry)
            if balancers[s].totalOutstanding == 0 {
                inUse[s] = false
                free.append(Int32(s))
            }
        }
        for c in table.clusters.indices where next[c] < 0 {
            let b = LoadBalancer(table: table, cluster: c, registry: registry, locality: locality, labels: labels)
            if let s = free.popLast() {
                balancers[Int(s)] = b
                names[Int(s)] = b.clusterName
                inUse[Int(s)] = true
                next[c] = s
            } else {
                balancers.append(b)
                names.append(b.clusterName)
                inUse.append(true)
                next[c] = Int32(balancers.count - 1)
            }
        }
        slots = next
    }

    /// An endpoint index of cluster `cluster` in `table` (the bound table), as `LoadBalancer.pick`.
    mutating func pick(cluster: Int, table: RouteTable, random: UInt64, hashKey: UInt64? = nil, now: UInt64 = 0,
                       avoidRanks: UInt8 = 0) -> Int? {
        guard cluster >= 0, cluster < slots.count else { return nil }
        return balancers[Int(slots[cluster])].pick(table: table, random: random, hashKey: hashKey, now: now, avoidRanks: avoidRanks)
    }

    /// The locality rank of endpoint `endpoint` of `cluster` (bound table indexes). Mutating: read in place.
    mutating func rank(cluster: Int, endpoint: Int) -> UInt8 {
        guard cluster >= 0, cluster < slots.count else { return 0 }
        return balancers[Int(slots[cluster])].rank(of: endpoint)
    }

    /// Counts what a try of `request` came to for outlier detection; true when that ejected its endpoint.
    /// Whether the cluster that counted `request` has outlier detection (mutating: read in place, see `record`).
    mutating func detectsOutliers(_ request: OutstandingRequest) -> Bool {
        let b = Int(request.balancer)
        return b < balancers.count && balancers[b].detectsOutliers()
    }

    mutating func record(_ request: OutstandingRequest, _ outcome: OutlierOutcome, now: UInt64) -> Bool {
        let b = Int(request.balancer)
        guard b < balancers.count else { return false }
        return balancers[b].record(slot: request.endpoint, outcome, now: now)
    }

    /// Counts a request sent to `endpoint` of `cluster` (indexes of the bound table) until `requestFinished`.
    mutating func requestStarted(cluster: Int, endpoint: Int) -> OutstandingRequest? {
        guard cluster >= 0, cluster < slots.count else { return nil }
        let b = slots[cluster]
        let e = balancers[Int(b)].requestStarted(endpoint: endpoint)
        return e < 0 ? nil : OutstandingRequest(balancer: b, endpoint: e)
    }

    /// Counts the request finished, on the balancer and endpoint that counted it, whatever table is bound now.
    /// Call it exactly once per `requestStarted` result.
    mutating func requestFinished(_ request: OutstandingRequest) {
        let b = Int(request.balancer)
        guard b < balancers.count else { return }
        balancers[b].requestFinished(slot: request.endpoint)
    }

    /// The name of the cluster that counted `request` (for reports; still right after it finished, until a
    /// later table brings a new cluster into its freed slot).
    func clusterName(of request: OutstandingRequest) -> String {
        let b = Int(request.balancer)
        return b < names.count ? names[b] : ""
    }

    /// The span operation of the cluster that counted `request` (`LoadBalancer.operation`), valid as long as
    /// `clusterName(of:)`.
    func operation(of request: OutstandingRequest) -> String {
        let b = Int(request.balancer)
        return b < balancers.count ? balancers[b].operation : ""
    }

    /// Outstanding requests per endpoint index of `cluster` in the bound table (allocates: tests, admin pages).
    func outstanding(cluster: Int) -> [Int32] {
        guard cluster >= 0, cluster < slots.count else { return [] }
        return balancers[Int(slots[cluster])].outstanding
    }

    /// Every request counted and not finished, on all balancers (retired ones included).
    var totalOutstanding: Int { balancers.reduce(0) { $0 + $1.totalOutstanding } }
}

/// A request a `LoadBalancers` counts, to report finished: which balancer and endpoint slot counted it (both
/// stable across swaps while the request is outstanding).
struct OutstandingRequest: Sendable, Equatable {
    let balancer: Int32
    let endpoint: Int32
}
