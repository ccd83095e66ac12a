/// An immutable map from host names (ASCII, compared case-insensitively) to an index, looked up from request
/// bytes without allocating: open addressing over FNV-1a hashes, keys stored lowercased in one byte arena.
struct HostIndex: Sendable {
    private var slots: [Int32]  // -1 empty, else entry index
    private var entries: [(start: Int32, count: Int32, hash: UInt64, value: Int32)] = []
    private var arena: [UInt8] = []
    private var mask: Int

    init(expected: Int) {
        var capacity = 8
        while capacity < expected * 2 { capacity <<= 1 }
        slots = [Int32](repeating: -1, count: capacity)
        mask = capacity - 1
    }

    var count: Int { entries.count }

    /// Adds `key` unless present; returns whether it was added (first claim wins).
    @discardableResult
    mutating func insert(_ key: String, value: Int) -> Bool {
        let bytes = Array(key.utf8).map(asciiLower)
        if lookup(bytes.span, in: 0..<bytes.count) != nil { return false }
        if (entries.count + 1) * 2 > slots.count { grow() }
        let h = Self.hash(bytes.span, 0..<bytes.count)
        entries.append((Int32(arena.count), Int32(bytes.count), h, Int32(value)))
        arena += bytes
        place(entries.count - 1, hash: h)
        return true
    }

    private mutating func place(_ entry: Int, hash: UInt64) {
        var i = Int(truncatingIfNeeded: hash) & mask
        while slots[i] >= 0 { i = (i + 1) & mask }
        slots[i] = Int32(entry)
    }

    private mutating func grow() {
        slots = [Int32](repeating: -1, count: slots.count * 2)
        mask = slots.count - 1
        for (n, e) in entries.enumerated() { place(n, hash: e.hash) }
    }

    /// The value for `bytes[range]`, compared ASCII case-insensitively.
    func lookup(_ bytes: Span<UInt8>, in range: Range<Int>) -> Int? {
        let h = Self.hash(bytes, range)
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let e = Int(slots[i])
            if e < 0 { return nil }
            let entry = entries[e]
            if entry.hash == h, Int(entry.count) == range.count {
                var equal = true
                var j = Int(entry.start)
                for k in range {
                    if asciiLower(bytes[k]) != arena[j] {
                        equal = false
                        break
                    }
                    j += 1
                }
                if equal { return Int(entry.value) }
            }
            i = (i + 1) & mask
        }
    }

    static func hash(_ bytes: Span<UInt8>, _ range: Range<Int>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for k in range {
            h ^= UInt64(asciiLower(bytes[k]))
            h &*= 0x100_0000_01b3
        }
        return h
    }
}
