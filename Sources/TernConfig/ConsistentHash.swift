/// Consistent hashing tables, built once per RouteTable (they are part of the snapshot) so a pick is a lookup.
/// Hashes are 64-bit FNV-1a with a splitmix finaliser: stable across processes and runs, which Envoy's
/// xxHash also is; the exact endpoint for a key differs from Envoy's.
public struct HashRing: Sendable {
    /// Sorted by hash: (hash, endpoint index).
    public let points: [(hash: UInt64, endpoint: Int32)]

    /// Envoy's ring hash: each endpoint gets about minimumRingSize × weight / Σweights points (at least one),
    /// each at hash("address:port_n").
    public init(endpoints: [Endpoint], minimumRingSize: UInt64) {
        var points: [(hash: UInt64, endpoint: Int32)] = []
        let total = endpoints.reduce(UInt64(0)) { $0 + UInt64(max($1.weight, 1)) }
        for (i, e) in endpoints.enumerated() where total > 0 {
            let share = max(1, minimumRingSize * UInt64(max(e.weight, 1)) / total)
            for n in 0..<share {
                points.append((stableHash("\(e.address):\(e.port)_\(n)"), Int32(i)))
            }
        }
        points.sort { $0.hash < $1.hash || ($0.hash == $1.hash && $0.endpoint < $1.endpoint) }
        self.points = points
    }

    /// The endpoint owning `hash`: the first point at or after it, wrapping.
    public func endpoint(for hash: UInt64) -> Int? {
        guard !points.isEmpty else { return nil }
        var lo = 0
        var hi = points.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if points[mid].hash < hash { lo = mid + 1 } else { hi = mid }
        }
        return Int(points[lo == points.count ? 0 : lo].endpoint)
    }
}

/// Maglev (Eisenbud et al., NSDI 2016 §3.4): a lookup table of prime size where each endpoint fills slots in its
/// own permutation order; adding an endpoint moves about 1/N of the keys. Weights are honoured by letting an
/// endpoint take a turn only while its filled share stays within its weight share.
public struct MaglevTable: Sendable {
    public let slots: [Int32]

    public init(endpoints: [Endpoint], tableSize: UInt64) {
        let m = Int(tableSize)
        guard !endpoints.isEmpty, m > 0 else {
            slots = []
            return
        }
        let n = endpoints.count
        var offset = [Int](repeating: 0, count: n)
        var skip = [Int](repeating: 1, count: n)
        for (i, e) in endpoints.enumerated() {
            let key = "\(e.address):\(e.port)"
            offset[i] = Int(stableHash(key) % UInt64(m))
            skip[i] = m > 1 ? Int(stableHash(key + "#skip") % UInt64(m - 1)) + 1 : 1
        }
        let maxWeight = Double(endpoints.map { max($0.weight, 1) }.max() ?? 1)
        var next = [Int](repeating: 0, count: n)
        var table = [Int32](repeating: -1, count: m)
        var taken = [Int](repeating: 0, count: n)
        var filled = 0
        var round = 0.0
        while filled < m {
            round += 1
            for i in 0..<n where filled < m {
                // Weighted turns: endpoint i fills a slot only while its count stays within its weight's share.
                if Double(taken[i]) >= Double(max(endpoints[i].weight, 1)) / maxWeight * round { continue }
                var c = (offset[i] + next[i] * skip[i]) % m
                while table[c] >= 0 {
                    next[i] += 1
                    c = (offset[i] + next[i] * skip[i]) % m
                }
                table[c] = Int32(i)
                next[i] += 1
                taken[i] += 1
                filled += 1
            }
        }
        slots = table
    }

    public func endpoint(for hash: UInt64) -> Int? {
        slots.isEmpty ? nil : Int(slots[Int(hash % UInt64(slots.count))])
    }
}

/// 64-bit FNV-1a then splitmix64's finaliser (FNV alone clusters short keys that differ in one character).
func stableHash(_ s: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in s.utf8 {
        h ^= UInt64(b)
        h &*= 0x100_0000_01b3
    }
    return mix(h)
}

@inline(__always)
func mix(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9e37_79b9_7f4a_7c15
    z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
    z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
    return z ^ (z >> 31)
}
