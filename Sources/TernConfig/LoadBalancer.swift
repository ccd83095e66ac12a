/// One reactor's load-balancing state for one cluster, kept outside the snapshot so it survives a swap: the
/// round-robin position and smooth-weight credits, and the outstanding requests per endpoint (LEAST_REQUEST).
/// Not shared between threads (a reactor owns its balancers); nothing allocates on `pick` or the counters.
/// After a new table is published the reactor calls `rebind` (this allocates once, off the request path).
public struct LoadBalancer: Sendable {
    /// The cluster's name (`outbound|80|beta|cart.shop.svc.cluster.local`): stable across tables.
    public private(set) var clusterName: String
    private var cluster: Int
    private var position: UInt64 = 0
    /// Outstanding requests per endpoint index of the bound table.
    public private(set) var outstanding: [Int32]
    /// Smooth weighted round robin credits (nginx's algorithm), used when weights differ.
    private var credits: [Int64]
    private var keys: [String]

    public init(table: RouteTable, cluster: Int) {
        let c = table.clusters[cluster]
        clusterName = c.name
        self.cluster = cluster
        outstanding = [Int32](repeating: 0, count: c.endpoints.count)
        credits = [Int64](repeating: 0, count: c.endpoints.count)
        keys = c.endpoints.map { "\($0.address):\($0.port)" }
    }

    /// Binds to `cluster` of a newly published table, keeping the position and the outstanding count of every
    /// endpoint that is still there (by address and port).
    public mutating func rebind(table: RouteTable, cluster: Int) {
        let c = table.clusters[cluster]
        let newKeys = c.endpoints.map { "\($0.address):\($0.port)" }
        var old: [String: Int32] = [:]
        for (k, n) in zip(keys, outstanding) { old[k, default: 0] += n }
        outstanding = newKeys.map { old[$0] ?? 0 }
        credits = [Int64](repeating: 0, count: newKeys.count)
        keys = newKeys
        clusterName = c.name
        self.cluster = cluster
    }

    /// A balancer for every cluster of a newly published `table`: the one at the same index in `old` rebound
    /// (its state kept by endpoint address), a new one beyond. Allocates: once per swap, off the request path.
    public static func rebound(_ old: [LoadBalancer], to table: RouteTable) -> [LoadBalancer] {
        var next: [LoadBalancer] = []
        next.reserveCapacity(table.clusters.count)
        for c in table.clusters.indices {
            if c < old.count {
                var b = old[c]
                b.rebind(table: table, cluster: c)
                next.append(b)
            } else {
                next.append(LoadBalancer(table: table, cluster: c))
            }
        }
        return next
    }

    /// An endpoint index of the bound cluster in `table`, nil when it has none (or when `table` is not the one
    /// this balancer was last bound to and the endpoint count changed: call `rebind` after every swap). `random` is a fresh uniformly
    /// random number from the caller; `hashKey` the request's consistent-hash key (`RouteTable.hashKey`), if any.
    public mutating func pick(table: RouteTable, random: UInt64, hashKey: UInt64? = nil) -> Int? {
        guard cluster < table.clusters.count else { return nil }
        let c = table.clusters[cluster]
        let n = c.endpoints.count
        guard n > 0, n == outstanding.count else { return nil }
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
            var b = weightedRandom(c.endpoints, mix(random ^ 0x5bd1_e995))
            if b == a { b = (a + 1 + Int(mix(random) % UInt64(n - 1))) % n }
            return outstanding[b] < outstanding[a] ? b : a
        case .ringHash(_, let ring):
            guard let h = hashKey else { return weightedRandom(c.endpoints, random) }
            return ring.endpoint(for: h)
        case .maglev(_, let table):
            guard let h = hashKey else { return weightedRandom(c.endpoints, random) }
            return table.endpoint(for: h)
        }
    }

    /// Count a request sent to `endpoint` (LEAST_REQUEST reads these).
    public mutating func requestStarted(endpoint: Int) {
        if endpoint < outstanding.count { outstanding[endpoint] += 1 }
    }

    /// Count a request to `endpoint` finished (answered, failed or abandoned).
    public mutating func requestFinished(endpoint: Int) {
        if endpoint < outstanding.count, outstanding[endpoint] > 0 { outstanding[endpoint] -= 1 }
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
