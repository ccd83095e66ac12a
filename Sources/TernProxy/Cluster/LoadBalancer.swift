// One cluster's balancer in the cluster runtime (ARCHITECTURE.md §1, per reactor), kept across route-table swaps
// by `LoadBalancers`.
import TernConfig

/// One reactor's load-balancing state for one cluster, kept outside the snapshot so it survives a swap: the
/// round-robin position and smooth-weight credits, and the outstanding requests per endpoint (LEAST_REQUEST).
/// Not shared between threads (a reactor owns its balancers); nothing allocates on `pick` or the counters.
/// After a new table is published the reactor calls `rebind` (this allocates once, off the request path).
///
/// Outstanding requests are counted per endpoint *slot*, not per index of the bound table: a slot belongs to one
/// endpoint (address and port) for as long as that endpoint is in the bound table or has requests outstanding,
/// so a request that started before a swap is still counted after it, and its finish (`requestFinished(slot:)`)
/// lands on the endpoint it was counted on whatever the table then in use. Invariant: every slot's count is the
/// number of `requestStarted` results for it not yet finished; a slot is reused only at count zero.
struct LoadBalancer: Sendable {
    /// The cluster's name (`outbound|80|beta|cart.shop.svc.cluster.local`): stable across tables.
    private(set) var clusterName: String
    /// Istio's span name for requests to the cluster: its destination's `host:port`, then the path pattern.
    private(set) var operation: String
    /// The bound cluster's index in the bound table; -1 when retired (`retire`).
    private var cluster: Int
    private var position: UInt64 = 0
    /// The bound cluster's endpoint index → its slot in `counts`.
    private var slots: [Int32]
    /// Outstanding requests per slot.
    private var counts: [Int32]
    /// Each slot's endpoint (`address:port`), "" for a free slot.
    private var slotKeys: [String]
    /// Smooth weighted round robin credits (nginx's algorithm), used when weights differ.
    private var credits: [Int64]
    /// Outlier detection (Cluster/OutlierDetection.swift): the cluster's settings (nil: none), its error codes, its
    /// process-wide record, and each slot's endpoint record.
    private(set) var outlier: OutlierSettings? = nil
    private var outlierCodes: [Int] = []
    private var outlierCluster: OutlierCluster? = nil
    private var outlierHosts: [OutlierHost?] = []

    init(table: RouteTable, cluster: Int, registry: OutlierRegistry? = nil) {
        let c = table.clusters[cluster]
        clusterName = c.name
        operation = "\(c.host):\(c.port)/*"
        self.cluster = cluster
        slotKeys = c.endpoints.map(Self.key)
        slots = (0..<Int32(c.endpoints.count)).map { $0 }
        counts = [Int32](repeating: 0, count: c.endpoints.count)
        credits = [Int64](repeating: 0, count: c.endpoints.count)
        bindOutlier(table, registry)
    }

    /// Takes the cluster's outlier settings from the bound table and the records of its endpoints' slots.
    private mutating func bindOutlier(_ table: RouteTable, _ registry: OutlierRegistry?) {
        let c = table.clusters[cluster]
        guard let registry, let d = c.policy.outlierDetection else {
            // (Outlier detection removed from the cluster: what it had ejected returns.)
            if let oc = outlierCluster { registry?.keep(oc.name, addresses: []) }
            outlier = nil
            outlierCodes = []
            outlierCluster = nil
            outlierHosts = []
            return
        }
        outlier = OutlierSettings(d)
        outlierCodes = d.errorCodes
        let oc = registry.cluster(c.name)
        oc.hosts.store(c.endpoints.count, ordering: .relaxed)
        outlierCluster = oc
        outlierHosts = slotKeys.map { $0.isEmpty ? nil : registry.host(oc, address: $0) }
        registry.keep(c.name, addresses: Set(c.endpoints.map(Self.key)))
    }

    mutating func detectsOutliers() -> Bool { outlier != nil }

    /// Counts what a try to the endpoint in `slot` came to (`requestStarted`'s slot); true when it ejected it.
    /// (Mutating only so that it runs on the balancer in place: through an array's getter the whole struct would be
    /// copied, its arrays retained.)
    mutating func record(slot: Int32, _ outcome: OutlierOutcome, now: UInt64) -> Bool {
        guard let outlier, slot >= 0, Int(slot) < outlierHosts.count, let host = outlierHosts[Int(slot)] else { return false }
        return outlier.record(outcome, on: host, errorCodes: outlierCodes, now: now)
    }

    /// Whether endpoint index `i` of the bound cluster is ejected at `now`.
    private func ejected(_ i: Int, _ now: UInt64) -> Bool {
        let s = Int(slots[i])
        guard s < outlierHosts.count, let h = outlierHosts[s] else { return false }
        return h.isEjected(now: now)
    }

    private static func key(_ e: Endpoint) -> String { "\(e.address):\(e.port)" }

    /// Outstanding requests per endpoint index of the bound cluster (allocates: for tests and admin pages).
    var outstanding: [Int32] { slots.map { counts[Int($0)] } }

    /// All outstanding requests this balancer counts, those of endpoints no longer in the table included.
    var totalOutstanding: Int { counts.reduce(0) { $0 + Int($1) } }

    /// Binds to `cluster` of a newly published table, keeping the position and every endpoint's slot (by address
    /// and port, so its outstanding count carries over). Endpoints that left the table keep their slot while
    /// requests to them are outstanding; the others' slots are freed for reuse.
    mutating func rebind(table: RouteTable, cluster: Int, registry: OutlierRegistry? = nil) {
        let c = table.clusters[cluster]
        var byKey: [String: Int32] = [:]
        for s in slotKeys.indices where !slotKeys[s].isEmpty && byKey[slotKeys[s]] == nil { byKey[slotKeys[s]] = Int32(s) }
        var used = [Bool](repeating: false, count: slotKeys.count)
        var next = [Int32](repeating: -1, count: c.endpoints.count)
        for i in c.endpoints.indices {
            if let s = byKey[Self.key(c.endpoints[i])], !used[Int(s)] {
                next[i] = s
                used[Int(s)] = true
            }
        }
        var free: [Int32] = []
        for s in slotKeys.indices where !used[s] && counts[s] == 0 {
            slotKeys[s] = ""
            free.append(Int32(s))
        }
        for i in c.endpoints.indices where next[i] < 0 {
            let key = Self.key(c.endpoints[i])
            if let s = free.popLast() {
                slotKeys[Int(s)] = key
                next[i] = s
            } else {
                slotKeys.append(key)
                counts.append(0)
                next[i] = Int32(slotKeys.count - 1)
            }
        }
        slots = next
        credits = [Int64](repeating: 0, count: c.endpoints.count)
        clusterName = c.name
        operation = "\(c.host):\(c.port)/*"
        self.cluster = cluster
        bindOutlier(table, registry)
    }

    /// Unbinds from every table (the cluster left the configuration): `pick` answers nil, and the slots with
    /// requests outstanding stay until those requests finish.
    mutating func retire(registry: OutlierRegistry? = nil) {
        if let oc = outlierCluster { registry?.keep(oc.name, addresses: []) }
        cluster = -1
        slots = []
        credits = []
        for s in slotKeys.indices where counts[s] == 0 { slotKeys[s] = "" }
    }

    /// An endpoint index of the bound cluster in `table`, nil when it has none (or when `table` is not the one
    /// this balancer was last bound to and the endpoint count changed: call `rebind` after every swap). `random`
    /// is a fresh uniformly random number from the caller; `hashKey` the request's consistent-hash key
    /// (`RouteTable.hashKey`), if any.
    mutating func pick(table: RouteTable, random: UInt64, hashKey: UInt64? = nil, now: UInt64 = 0) -> Int? {
        guard cluster >= 0, cluster < table.clusters.count else { return nil }
        let c = table.clusters[cluster]
        let n = c.endpoints.count
        guard n > 0, n == slots.count else { return nil }
        if let oc = outlierCluster, oc.ejected.load(ordering: .relaxed) > 0 {
            // Some host of the cluster is ejected (its time may be up: `ejected` returns it to service then).
            var healthy = 0
            for i in 0..<n where !ejected(i, now) { healthy += 1 }
            let panicBelow = Int(outlier?.minHealthPercent ?? 0)
            if healthy < n {
                if healthy * 100 < panicBelow * n {
                    // Panic (minHealthPercent): balance over every host, ejected or not, as Envoy.
                } else if healthy == 0 {
                    return nil  // 503 UH: every host is ejected and panic is off
                } else {
                    return pickInService(c, random: random, hashKey: hashKey, now: now)
                }
            }
        }
        if n == 1 { return 0 }
        switch c.loadBalancing {
        case .roundRobin:
            return roundRobin(c.endpoints)
        case .random:
            return weightedRandom(c.endpoints, random)
        case .leastRequest:
            // Power of two choices (Envoy's LEAST_REQUEST with choice_count 2): two random candidates (weighted),
            // the one with fewer outstanding requests wins; ties go to the first.
            let a = weightedRandom(c.endpoints, random)
            var b = weightedRandom(c.endpoints, SplitMix.mix(random ^ 0x5bd1_e995))
            if b == a { b = (a + 1 + Int(SplitMix.mix(random) % UInt64(n - 1))) % n }
            return counts[Int(slots[b])] < counts[Int(slots[a])] ? b : a
        case .ringHash(_, let ring):
            guard let h = hashKey else { return weightedRandom(c.endpoints, random) }
            return ring.endpoint(for: h)
        case .maglev(_, let table):
            guard let h = hashKey else { return weightedRandom(c.endpoints, random) }
            return table.endpoint(for: h)
        }
    }

    /// A pick among the hosts in service only (some are ejected): round robin goes on to the next one in service,
    /// random and least-request choose among them by weight, a consistent hash whose host is ejected moves on to
    /// another hash of the key (Envoy rebuilds its ring without the host; the keys of the others stay put either
    /// way).
    private mutating func pickInService(_ c: Cluster, random: UInt64, hashKey: UInt64?, now: UInt64) -> Int? {
        let n = c.endpoints.count
        switch c.loadBalancing {
        case .roundRobin:
            for _ in 0..<n {
                let i = Int(position % UInt64(n))
                position &+= 1
                if !ejected(i, now) { return i }
            }
            return nil
        case .random:
            return weightedRandom(c.endpoints, random) { !ejected($0, now) }
        case .leastRequest:
            guard let a = weightedRandom(c.endpoints, random, { !ejected($0, now) }) else { return nil }
            guard let b = weightedRandom(c.endpoints, SplitMix.mix(random ^ 0x5bd1_e995), { !ejected($0, now) }) else { return a }
            return counts[Int(slots[b])] < counts[Int(slots[a])] ? b : a
        case .ringHash(_, let ring):
            return rehashed(hashKey, now) { ring.endpoint(for: $0) } ?? weightedRandom(c.endpoints, random) { !ejected($0, now) }
        case .maglev(_, let table):
            return rehashed(hashKey, now) { table.endpoint(for: $0) } ?? weightedRandom(c.endpoints, random) { !ejected($0, now) }
        }
    }

    /// A consistent hash's endpoint for `key` when it is in service, else for the key rehashed (up to eight times).
    private func rehashed(_ key: UInt64?, _ now: UInt64, _ lookup: (UInt64) -> Int?) -> Int? {
        guard var k = key else { return nil }
        for _ in 0..<8 {
            if let i = lookup(k), !ejected(i, now) { return i }
            k = SplitMix.mix(k)
        }
        return nil
    }

    /// By weight among the endpoints `inService` admits; nil when it admits none.
    private func weightedRandom(_ endpoints: [Endpoint], _ random: UInt64, _ inService: (Int) -> Bool) -> Int? {
        var total: UInt64 = 0
        for i in 0..<endpoints.count where inService(i) { total += UInt64(endpoints[i].weight) }
        guard total > 0 else { return nil }
        var r = random.multipliedFullWidth(by: total).high
        var last: Int? = nil
        for i in 0..<endpoints.count where inService(i) {
            let w = UInt64(endpoints[i].weight)
            if r < w { return i }
            r -= w
            last = i
        }
        return last
    }

    /// Counts a request sent to `endpoint` (an index of the bound cluster; LEAST_REQUEST reads these) and
    /// returns the slot to report it finished with, whatever table is bound by then. -1 for an index out of range.
    mutating func requestStarted(endpoint: Int) -> Int32 {
        guard endpoint >= 0, endpoint < slots.count else { return -1 }
        let s = slots[endpoint]
        counts[Int(s)] += 1
        return s
    }

    /// Counts a request finished (answered, failed or abandoned); `slot` is what `requestStarted` returned.
    mutating func requestFinished(slot: Int32) {
        let s = Int(slot)
        if s >= 0, s < counts.count, counts[s] > 0 { counts[s] -= 1 }
    }

    private mutating func roundRobin(_ endpoints: [Endpoint]) -> Int {
        let n = endpoints.count
        let w0 = endpoints[0].weight
        var equal = true
        for i in 1..<n where endpoints[i].weight != w0 {
            equal = false
            break
        }
        if equal {
            let i = Int(position % UInt64(n))
            position &+= 1
            return i
        }
        // Smooth weighted round robin: each pick adds every weight to its credit, the largest credit wins and
        // pays the total; the sequence interleaves (5,1,1 → a a b a c a a) instead of bursting.
        var total: Int64 = 0
        var best = 0
        for i in 0..<n {
            let w = Int64(endpoints[i].weight)
            credits[i] += w
            total += w
            if credits[i] > credits[best] { best = i }
        }
        credits[best] -= total
        position &+= 1
        return best
    }

    private func weightedRandom(_ endpoints: [Endpoint], _ random: UInt64) -> Int {
        // Index loops: a for-in over structs allocates an iterator box in unoptimised builds.
        var total: UInt64 = 0
        for i in 0..<endpoints.count { total += UInt64(endpoints[i].weight) }
        var r = random.multipliedFullWidth(by: total).high
        for i in 0..<endpoints.count {
            let w = UInt64(endpoints[i].weight)
            if r < w { return i }
            r -= w
        }
        return endpoints.count - 1
    }
}
