// Locality-aware balancing (DestinationRule `loadBalancer.localityLbSetting`), as Istio configures Envoy for a
// sidecar whose locality is `--locality region/zone/subzone`:
//
// - `distribute`: for the first rule whose `from` matches the sidecar's locality, each endpoint locality gets the
//   weight of the `to` pattern it matches first (shared, in proportion to their endpoint weights, by the localities
//   one pattern matches; Istio's `applyLocalityWeights`), and endpoints in localities no pattern matches get none.
//   Envoy then picks a locality by weight and an endpoint in it by weight; here each endpoint's weight is that
//   product, the same distribution.
// - failover (the default, when the cluster has outlier detection and no `distribute`): endpoints are ranked by
//   proximity, as Istio's `applyLocalityFailover`: 0 same region, zone and subzone; 1 same region and zone; 2 same
//   region; 3 another region; 4 another region when a `failover` rule names the sidecar's region and a `to` that is
//   not the endpoint's. Ranks are made contiguous (Envoy's priorities). Traffic goes to the nearest rank while its
//   endpoints are in service, and spills to the next as they are ejected, with Envoy's overprovisioning factor of
//   1.4 (a rank with 5 of 10 endpoints in service keeps 70 % of the traffic).
// - `failoverPriority` (with outlier detection and no `distribute`), Istio's `applyFailoverPriorities`: endpoints
//   are ranked by how many of the listed labels, in order, they share with this sidecar (`--labels`; a `key=value`
//   entry compares with that value instead of the sidecar's): all of N labels rank 0, the first N-1 rank 1, ...,
//   none rank N; a label neither side has counts as shared. Both sides' labels include the topology labels of
//   their locality (`topology.kubernetes.io/region`, `topology.kubernetes.io/zone`, `topology.istio.io/subzone`) and
//   an endpoint's `network` as `topology.istio.io/network`, as Istio augments them. With `failover` rules too (and
//   a locality), each label rank is split by the locality failover ranks within it. No labels at all, or a DNS
//   cluster (Istio leaves its endpoints out of label ranks): the `failover` ranks alone, if any.
//
// Ranks are at most eight (Envoy's priorities are more): further ones share the eighth.
import TernConfig

/// A locality `region/zone/subzone` (absent parts empty).
struct Locality: Equatable, Sendable {
    var region = "", zone = "", subzone = ""

    init(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        region = parts.count > 0 ? parts[0] : ""
        zone = parts.count > 1 ? parts[1] : ""
        subzone = parts.count > 2 ? parts[2] : ""
    }

    var isEmpty: Bool { region.isEmpty }

    /// Istio's `LocalityMatch`: a pattern's region is `*` or equal; its zone and subzone `*`, absent or equal.
    func matches(_ pattern: String) -> Bool {
        let p = Locality(pattern)
        return (p.region == "*" || p.region == region) && (p.zone == "*" || p.zone.isEmpty || p.zone == zone)
            && (p.subzone == "*" || p.subzone.isEmpty || p.subzone == subzone)
    }
}

/// Each endpoint's balancing weight and rank (0: nearest) for one cluster and this sidecar's locality.
struct LocalityPlan: Equatable {
    var weights: [UInt64]
    var ranks: [UInt8]
    var rankCount = 1

    /// At most this many ranks (a retry's ranks tried are a byte of bits; picks count per rank on the stack).
    static let maxRanks = 8

    /// The plan for `cluster` seen from a sidecar at `proxy` with workload `labels` (no locality and no labels:
    /// endpoints weighted as written, one rank).
    init(_ cluster: Cluster, proxy: Locality, labels: [String: String] = [:]) {
        let endpoints = cluster.endpoints
        weights = endpoints.map { UInt64($0.weight) }
        ranks = [UInt8](repeating: 0, count: endpoints.count)
        let setting = cluster.policy.loadBalancer?.locality
        guard setting?.enabled != false, !endpoints.isEmpty else { return }
        if let setting, !setting.distribute.isEmpty {
            if !proxy.isEmpty { distribute(setting.distribute, endpoints, proxy) }
        } else if cluster.policy.outlierDetection != nil {
            let failover = setting?.failover ?? []
            if let priority = setting?.failoverPriority, !priority.isEmpty {
                let own = Self.augmented(labels, proxy, network: nil)
                // Istio ranks by labels only when the sidecar has some (its topology labels count), and not the
                // endpoints of a DNS cluster (its cluster builder leaves them out); `failover` rules still apply.
                let dns = cluster.resolution == .DNS || cluster.resolution == .DNS_ROUND_ROBIN
                var raw = own.isEmpty || dns ? [Int](repeating: 0, count: endpoints.count)
                    : endpoints.map { Self.labelRank($0, priority, own) }
                if !failover.isEmpty && !proxy.isEmpty {
                    for i in endpoints.indices { raw[i] = raw[i] * 5 + Self.localityRank(endpoints[i], failover, proxy) }
                }
                compact(raw)
            } else if !proxy.isEmpty {
                compact(endpoints.map { Self.localityRank($0, failover, proxy) })
            }
        }
    }

    /// Labels with the topology labels of `locality` and `network` added (Istio's `AugmentLabels`: the locality's
    /// replace any written; the network only where none is).
    static func augmented(_ labels: [String: String], _ locality: Locality, network: String?) -> [String: String] {
        var out = labels
        if !locality.region.isEmpty { out["topology.kubernetes.io/region"] = locality.region }
        if !locality.zone.isEmpty { out["topology.kubernetes.io/zone"] = locality.zone }
        if !locality.subzone.isEmpty { out["topology.istio.io/subzone"] = locality.subzone }
        if let network, !network.isEmpty, out["topology.istio.io/network", default: ""].isEmpty {
            out["topology.istio.io/network"] = network
        }
        return out
    }

    /// Istio's rank by `failoverPriority` labels: N minus the index of the first label whose value differs from the
    /// sidecar's (or from the entry's own value, `key=value`); 0 when all agree.
    private static func labelRank(_ e: Endpoint, _ priority: [String], _ own: [String: String]) -> Int {
        let theirs = augmented(e.labels, Locality(e.locality), network: e.network)
        for (j, entry) in priority.enumerated() {
            let parts = entry.split(separator: "=", omittingEmptySubsequences: false)
            let key = String(parts[0])
            let wanted = parts.count == 2 ? String(parts[1]) : own[key, default: ""]
            if theirs[key, default: ""] != wanted { return priority.count - j }
        }
        return 0
    }

    /// Istio's `applyLocalityFailover` rank: 0 same region, zone and subzone; 1 same region and zone; 2 same
    /// region; 3 another region; 4 another region when a `failover` rule from this region names another.
    private static func localityRank(_ e: Endpoint, _ failover: [(from: String, to: String)], _ proxy: Locality) -> Int {
        let l = Locality(e.locality)
        let r = l.region == proxy.region ? (l.zone == proxy.zone ? (l.subzone == proxy.subzone ? 0 : 1) : 2) : 3
        if r == 3, let rule = failover.first(where: { $0.from == proxy.region }), rule.to != l.region { return 4 }
        return r
    }

    /// Ranks from raw priorities, made contiguous as Istio makes Envoy's (the eighth and beyond share the eighth).
    private mutating func compact(_ raw: [Int]) {
        let present = Set(raw).sorted()
        rankCount = min(present.count, Self.maxRanks)
        for i in raw.indices { ranks[i] = UInt8(min(present.firstIndex(of: raw[i])!, Self.maxRanks - 1)) }
    }

    private mutating func distribute(_ rules: [LoadBalancerSettings.LocalityLbSetting.Distribute], _ endpoints: [Endpoint],
                                     _ proxy: Locality) {
        guard let rule = rules.first(where: { proxy.matches($0.from) }) else { return }
        // Localities (by text) and the sum of their endpoints' weights.
        var sums: [String: UInt64] = [:]
        for e in endpoints { sums[e.locality, default: 0] += UInt64(e.weight) }
        var weightOf: [String: UInt64] = [:]
        var unmatched = Set(sums.keys)
        for (pattern, share) in rule.to {
            let matched = unmatched.filter { Locality($0).matches(pattern) }
            let total = matched.reduce(UInt64(0)) { $0 + sums[$1]! }
            guard total > 0 else { continue }
            for l in matched {
                unmatched.remove(l)
                // Istio: ceil(the locality's weight × the pattern's share / what the pattern matched).
                let w = (sums[l]! * UInt64(share) + total - 1) / total
                if w > 0 { weightOf[l] = w }
            }
        }
        // Envoy picks a locality by its weight, then an endpoint in it by weight: scaled so integers keep the ratio.
        for i in endpoints.indices {
            let l = endpoints[i].locality
            guard let lw = weightOf[l], let sum = sums[l], sum > 0 else {
                weights[i] = 0
                continue
            }
            weights[i] = max(1, lw * UInt64(endpoints[i].weight) * 1_000_000 / sum)
        }
    }

    /// The rank requests go to, from the endpoints in service per rank (`inService(i)`): Envoy's priority load
    /// with its overprovisioning factor 1.4, drawn with `random`. Nil: nothing in service anywhere.
    func chooseRank(random: UInt64, inService: (Int) -> Bool) -> Int? {
        // At most `maxRanks`: counted on the stack (no allocation per pick).
        var total = InlineArray<8, Int>(repeating: 0), healthy = InlineArray<8, Int>(repeating: 0)
        for i in ranks.indices where weights[i] > 0 {
            total[Int(ranks[i])] += 1
            if inService(i) { healthy[Int(ranks[i])] += 1 }
        }
        var health = InlineArray<8, Int>(repeating: 0)
        var sum = 0
        for r in 0..<rankCount where total[r] > 0 {
            health[r] = min(100, 140 * healthy[r] / total[r])
            sum += health[r]
        }
        guard sum > 0 else { return nil }
        // Loads in rank order; when the ranks together are less than fully healthy, scaled up to 100 %.
        let scale = min(sum, 100)
        var draw = Int(random % 10_000)
        var remaining = 10_000
        for r in 0..<rankCount {
            let load = min(remaining, health[r] * 10_000 / scale)
            if draw < load { return r }
            draw -= load
            remaining -= load
        }
        return (0..<rankCount).last { health[$0] > 0 }
    }
}
