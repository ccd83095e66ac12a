// One cluster's balancer in the cluster runtime (ARCHITECTURE.md §1, per reactor), kept across route-table swaps
// by `LoadBalancers`.
#if canImport(Glibc)
import Glibc
#endif
import TernConfig
import TernIO

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
    /// This sidecar's locality (`--locality`) and workload labels (`--labels`), and the bound cluster's weights
    /// and ranks for them (LocalityPlan.swift).
    private let proxyLocality: Locality
    private let proxyLabels: [String: String]
    private var plan: LocalityPlan
    /// Slow start (`warmup`, ROUND_ROBIN and LEAST_REQUEST only): its settings, when each slot's endpoint joined the
    /// cluster (0: with the balancer, not warming), and until when some endpoint warms (0: none).
    private var warmup: LoadBalancerSettings.Warmup? = nil
    private var slotJoined: [UInt64]
    private var warmUntil: UInt64 = 0

    init(table: RouteTable, cluster: Int, registry: OutlierRegistry? = nil, locality: Locality = Locality(""),
         labels: [String: String] = [:]) {
        let c = table.clusters[cluster]
        clusterName = c.name
        operation = "\(c.host):\(c.port)/*"
        self.cluster = cluster
        slotKeys = c.endpoints.map(Self.key)
        slots = (0..<Int32(c.endpoints.count)).map { $0 }
        counts = [Int32](repeating: 0, count: c.endpoints.count)
        credits = [Int64](repeating: 0, count: c.endpoints.count)
        slotJoined = [UInt64](repeating: 0, count: c.endpoints.count)
        proxyLocality = locality
        proxyLabels = labels
        plan = LocalityPlan(c, proxy: locality, labels: labels)
        bindWarmup(c)
        bindOutlier(table, registry)
    }

    /// Takes the cluster's slow-start settings (Istio applies them to ROUND_ROBIN and LEAST_REQUEST).
    private mutating func bindWarmup(_ c: Cluster) {
        switch c.loadBalancing {
        case .roundRobin, .leastRequest: warmup = c.policy.loadBalancer?.warmup
        default: warmup = nil
        }
        warmUntil = 0
        guard let w = warmup else { return }
        for t in slotJoined where t > 0 { warmUntil = max(warmUntil, t &+ w.duration.nanoseconds) }
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
        // An endpoint new to the cluster joins now: with slow start, its weight grows from here.
        let now = System.monotonicNanos()
        for i in c.endpoints.indices where next[i] < 0 {
            let key = Self.key(c.endpoints[i])
            if let s = free.popLast() {
                slotKeys[Int(s)] = key
                slotJoined[Int(s)] = now
                next[i] = s
            } else {
                slotKeys.append(key)
                counts.append(0)
                slotJoined.append(now)
                next[i] = Int32(slotKeys.count - 1)
            }
        }
        slots = next
        credits = [Int64](repeating: 0, count: c.endpoints.count)
        plan = LocalityPlan(c, proxy: proxyLocality, labels: proxyLabels)
        bindWarmup(c)
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
    /// `avoidRanks`: locality ranks (bits) a retry tried already (`retryRemoteLocalities`): left out of the rank
    /// choice, as Envoy's previous_priorities, unless nothing else is in service.
    mutating func pick(table: RouteTable, random: UInt64, hashKey: UInt64? = nil, now: UInt64 = 0, avoidRanks: UInt8 = 0) -> Int? {
        guard cluster >= 0, cluster < table.clusters.count else { return nil }
        // The cluster's fields are read in place: a copy of the whole `Cluster` cost some 360 instructions a pick.
        let n = table.clusters[cluster].endpoints.count
        guard n > 0, n == slots.count else { return nil }
        let ejections = outlierCluster.map { $0.ejected.load(ordering: .relaxed) > 0 } ?? false
        let clock = warmUntil > 0 && now == 0 ? System.monotonicNanos() : now
        if warmUntil > 0 && clock >= warmUntil { warmUntil = 0 }
        if ejections || plan.rankCount > 1 || warmUntil > 0 {
            return pickAmong(table.clusters[cluster].loadBalancing, random: random, hashKey: hashKey, now: clock, ejections: ejections, avoidRanks: avoidRanks)
        }
        if n == 1 { return plan.weights[0] > 0 ? 0 : nil }
        switch table.clusters[cluster].loadBalancing {
        case .roundRobin:
            return roundRobin(n)
        case .random:
            return weightedRandom(n, random, clock, .all)
        case .leastRequest:
            // Power of two choices (Envoy's LEAST_REQUEST with choice_count 2): two random candidates (weighted),
            // the one with fewer outstanding requests wins; ties go to the first.
            guard let a = weightedRandom(n, random, clock, .all) else { return nil }
            var b = weightedRandom(n, SplitMix.mix(random ^ 0x5bd1_e995), clock, .all) ?? a
            if b == a { b = (a + 1 + Int(SplitMix.mix(random) % UInt64(n - 1))) % n }
            if plan.weights[b] == 0 { return a }
            return counts[Int(slots[b])] < counts[Int(slots[a])] ? b : a
        case .ringHash(_, let ring):
            guard let h = hashKey else { return weightedRandom(n, random, clock, .all) }
            // (An endpoint a locality `distribute` gives no weight is passed over, as if not in the ring.)
            if let i = ring.endpoint(for: h), plan.weights[i] > 0 { return i }
            return rehashed(h, .all, clock) { ring.endpoint(for: $0) } ?? weightedRandom(n, h, clock, .all)
        case .maglev(_, let table):
            guard let h = hashKey else { return weightedRandom(n, random, clock, .all) }
            if let i = table.endpoint(for: h), plan.weights[i] > 0 { return i }
            return rehashed(h, .all, clock) { table.endpoint(for: $0) } ?? weightedRandom(n, h, clock, .all)
        }
    }

    /// A pick when some endpoints are out (ejected), ranked (locality failover) or warming: the rank requests go
    /// to (Envoy's priority load over the endpoints in service), then, in it, round robin goes on to the next
    /// endpoint admitted (by weight), random and least-request choose among the admitted by weight, and a consistent
    /// hash whose endpoint is out moves on to another hash of the key (Envoy rebuilds its ring without the host;
    /// the keys of the others stay put either way). Below `minHealthPercent` of a rank in service the rank panics
    /// and its ejected endpoints are admitted too, as Envoy's panic threshold; nil (503 UH) when nothing is in
    /// service and panic is off.
    private mutating func pickAmong(_ balancing: LoadBalancingPolicy, random: UInt64, hashKey: UInt64?, now: UInt64, ejections: Bool,
                                    avoidRanks: UInt8) -> Int? {
        let n = slots.count
        var rank = 0
        if plan.rankCount > 1 {
            // A hashed request draws its rank from its key, so it keeps to one rank (Envoy hashes the priority too).
            let draw = hashKey.map { SplitMix.mix($0) } ?? SplitMix.mix(random ^ 0x2545_f491)
            let chosen = avoidRanks == 0 ? nil : plan.chooseRank(random: draw) { i in
                avoidRanks & (1 << self.plan.ranks[i]) == 0 && (!ejections || !self.ejected(i, now))
            }
            guard let r = chosen ?? plan.chooseRank(random: draw, inService: { !ejections || !ejected($0, now) }) else {
                return panicking(rank: nil, now) ? pickAny(balancing, random: random, now: now, rank: nil) : nil
            }
            rank = r
        }
        var total = 0, healthy = 0
        for i in 0..<n where Int(plan.ranks[i]) == rank && plan.weights[i] > 0 {
            total += 1
            if !ejections || !ejected(i, now) { healthy += 1 }
        }
        if healthy < total && panicking(rank: rank, now) { return pickAny(balancing, random: random, now: now, rank: rank) }
        guard healthy > 0 else { return nil }  // 503 UH: every host is ejected and panic is off
        return pickAdmitted(balancing, random: random, hashKey: hashKey, now: now, Admit(rank: rank, inServiceOnly: ejections))
    }

    /// Which endpoints a pick may choose: those of one rank (-1: any) with weight, and only those in service.
    struct Admit {
        var rank: Int
        var inServiceOnly: Bool
        static let all = Admit(rank: -1, inServiceOnly: false)
    }

    private func admits(_ a: Admit, _ i: Int, _ now: UInt64) -> Bool {
        (a.rank < 0 || Int(plan.ranks[i]) == a.rank) && plan.weights[i] > 0 && (!a.inServiceOnly || !ejected(i, now))
    }

    /// The locality rank of endpoint index `i` of the bound cluster (0: nearest; 0 without locality failover).
    func rank(of i: Int) -> UInt8 { i >= 0 && i < plan.ranks.count ? plan.ranks[i] : 0 }

    /// Whether the rank (nil: all of the cluster) has fewer endpoints in service than `minHealthPercent` asks.
    private func panicking(rank: Int?, _ now: UInt64) -> Bool {
        let panicBelow = Int(outlier?.minHealthPercent ?? 0)
        guard panicBelow > 0 else { return false }
        var total = 0, healthy = 0
        for i in 0..<slots.count where rank == nil || Int(plan.ranks[i]) == rank! {
            total += 1
            if !ejected(i, now) { healthy += 1 }
        }
        return healthy * 100 < panicBelow * total
    }

    /// Panic: balance over every endpoint of the rank (nil: of the cluster) with weight, ejected or not.
    private mutating func pickAny(_ balancing: LoadBalancingPolicy, random: UInt64, now: UInt64, rank: Int?) -> Int? {
        pickAdmitted(balancing, random: random, hashKey: nil, now: now, Admit(rank: rank ?? -1, inServiceOnly: false))
    }

    private mutating func pickAdmitted(_ balancing: LoadBalancingPolicy, random: UInt64, hashKey: UInt64?, now: UInt64,
                                       _ admit: Admit) -> Int? {
        let n = slots.count
        switch balancing {
        case .roundRobin:
            return smoothRoundRobin(n, admit, now)
        case .random:
            return weightedRandom(n, random, now, admit)
        case .leastRequest:
            guard let a = weightedRandom(n, random, now, admit) else { return nil }
            guard let b = weightedRandom(n, SplitMix.mix(random ^ 0x5bd1_e995), now, admit) else { return a }
            return counts[Int(slots[b])] < counts[Int(slots[a])] ? b : a
        case .ringHash(_, let ring):
            // A key whose endpoints are all out keeps to one endpoint of those admitted (drawn by the key).
            return rehashed(hashKey, admit, now) { ring.endpoint(for: $0) } ?? weightedRandom(n, hashKey ?? random, now, admit)
        case .maglev(_, let table):
            return rehashed(hashKey, admit, now) { table.endpoint(for: $0) } ?? weightedRandom(n, hashKey ?? random, now, admit)
        }
    }

    /// Endpoint `i`'s weight at `now`: its plan's (locality `distribute` applied), times Envoy's slow-start factor
    /// while it warms: max(minimumPercent, (time since it joined / duration)^(1 / aggression)).
    private func weight(_ i: Int, _ now: UInt64) -> UInt64 {
        let w = plan.weights[i]
        guard warmUntil > 0, let wu = warmup else { return w }
        // In 1/1024ths while something warms, so that a fraction of a weight of 1 still counts.
        let joined = slotJoined[Int(slots[i])]
        let window = wu.duration.nanoseconds
        guard joined > 0, now < joined &+ window, window > 0 else { return w << 10 }
        let t = Double(now &- joined) / Double(window)
        let factor = Swift.max(wu.minimumPercent / 100, pow(t, 1 / wu.aggression))
        return Swift.max(1, UInt64(Double(w << 10) * factor))
    }

    /// A consistent hash's endpoint for `key` when admitted, else for the key rehashed (up to eight times).
    private func rehashed(_ key: UInt64?, _ admit: Admit, _ now: UInt64, _ lookup: (UInt64) -> Int?) -> Int? {
        guard var k = key else { return nil }
        for _ in 0..<8 {
            if let i = lookup(k), admits(admit, i, now) { return i }
            k = SplitMix.mix(k)
        }
        return nil
    }

    /// By weight at `now` among the `n` endpoints `admit` admits; nil when it admits none (or all weigh 0).
    private func weightedRandom(_ n: Int, _ random: UInt64, _ now: UInt64, _ admit: Admit) -> Int? {
        // Index loops: a for-in over structs allocates an iterator box in unoptimised builds.
        var total: UInt64 = 0
        for i in 0..<n where admits(admit, i, now) { total += weight(i, now) }
        guard total > 0 else { return nil }
        var r = random.multipliedFullWidth(by: total).high
        var last: Int? = nil
        for i in 0..<n where admits(admit, i, now) {
            let w = weight(i, now)
            if r < w { return i }
            r -= w
            if w > 0 { last = i }
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

    private mutating func roundRobin(_ n: Int) -> Int? {
        let w0 = plan.weights[0]
        var equal = w0 > 0
        for i in 1..<n where plan.weights[i] != w0 {
            equal = false
            break
        }
        if equal {
            let i = Int(position % UInt64(n))
            position &+= 1
            return i
        }
        return smoothRoundRobin(n, .all, 0)
    }

    /// Smooth weighted round robin over the endpoints `admit` admits: each pick adds every weight to its credit,
    /// the largest credit wins and pays the total; the sequence interleaves (5,1,1 → a a b a c a a) instead of
    /// bursting. An endpoint of weight 0 (a locality `distribute` gives none) is never picked.
    private mutating func smoothRoundRobin(_ n: Int, _ admit: Admit, _ now: UInt64) -> Int? {
        var total: Int64 = 0
        var best = -1
        for i in 0..<n where admits(admit, i, now) {
            let w = Int64(weight(i, now))
            credits[i] += w
            total += w
            if best < 0 || credits[i] > credits[best] { best = i }
        }
        guard best >= 0 else { return nil }
        credits[best] -= total
        position &+= 1
        return best
    }
}
