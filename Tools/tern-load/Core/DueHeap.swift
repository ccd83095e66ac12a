/// Open loop: connections waiting for their next due send, earliest first. A binary heap whose capacity is
/// reserved once (one entry per connection at most), so pushing never allocates on the request path.
public struct DueHeap {
    public struct Entry: Equatable, Sendable {
        public var at: UInt64
        public var client: Int
    }

    private var entries: [Entry]

    public init(capacity: Int) { entries = []; entries.reserveCapacity(capacity) }

    public var top: Entry? { entries.first }

    public mutating func push(at: UInt64, client: Int) {
        entries.append(Entry(at: at, client: client))
        var i = entries.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if entries[parent].at <= entries[i].at { break }
            entries.swapAt(parent, i)
            i = parent
        }
    }

    /// Removes the top entry (there must be one).
    public mutating func pop() {
        entries.swapAt(0, entries.count - 1)
        entries.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < entries.count && entries[l].at < entries[m].at { m = l }
            if r < entries.count && entries[r].at < entries[m].at { m = r }
            if m == i { return }
            entries.swapAt(i, m)
            i = m
        }
    }
}
