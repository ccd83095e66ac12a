// The route tables that exchanges on this reactor were routed with. An exchange keeps its route as indexes
// (`RoutedRoute`), not as copies of the route's header operations and rewrites: copying those strings and arrays
// cost about 80 reference-count operations per request with header edits (callgrind, Benchmarks/README.md). The indexes are
// read against the table they were taken from, which this reactor keeps for as long as an exchange routed with
// it is live, counted per table: a swapped-out table is let go when its last exchange finishes, so a long
// tunnel or stream holds one table, never the tables published after it.
import TernConfig
import TernCore

/// Where a routed exchange's route lives: the table (a slot of `RoutedTables`), the route the request selected,
/// and the destination picked for it (its entry in the table's `Forwarding`).
struct RoutedRoute {
    var table: Int32
    var match: RouteMatch
    var entry: Int32
}

/// How a route rewrites the request path (the query and fragment always stay); the rewrite itself is read from
/// the route.
enum TargetRewrite: Equatable {
    case none
    /// `rewrite.uri`: replaces the first `prefix` bytes of the path (the prefix the route matched), or all of it
    /// when `prefix` is -1.
    case path(prefix: Int)
    /// `rewrite.uriRegexRewrite`: every match in the path replaced.
    case regex
}

/// This reactor's route tables in use: the current one and those older ones that live exchanges were routed
/// with, each kept (`SnapshotReader.keep`: one reference, which holds back no other table) and counted by the
/// exchanges routed with it. A table let go is released by the publisher's thread, never on the reactor.
struct RoutedTables {
    typealias Reader = SnapshotReader<RouteTable>
    private var kept: [Reader.Kept?] = []
    private var counts: [Int] = []
    private var current = -1

    /// Tables kept, the current one included.
    var heldCount: Int { kept.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }

    /// The reader's current table becomes the one new exchanges are routed with; the previous one is let go
    /// unless an exchange still uses it. Runs when a snapshot is bound, never per request.
    mutating func bind(_ reader: Reader) {
        if current >= 0 && counts[current] == 0 { letGo(current, reader) }
        let k = reader.keep()
        if let free = kept.firstIndex(where: { $0 == nil }) {
            current = free
            kept[free] = k
            counts[free] = 0
        } else {
            current = kept.count
            kept.append(k)
            counts.append(0)
        }
    }

    /// An exchange is routed with the current table: its slot, counted until `finished`.
    mutating func started() -> Int32 {
        counts[current] += 1
        return Int32(current)
    }

    /// An exchange routed with the table in `slot` ended.
    mutating func finished(_ slot: Int32, _ reader: Reader) {
        let i = Int(slot)
        counts[i] -= 1
        if counts[i] < 0 { bug("route table \(i) finished more exchanges than it started") }
        if counts[i] == 0 && i != current { letGo(i, reader) }
    }

    /// Whether `slot` holds the table new exchanges are routed with (the one the balancers and cluster indexes
    /// of the engine describe).
    func isCurrent(_ slot: Int32) -> Bool { Int(slot) == current }

    func table(_ slot: Int32, _ reader: Reader) -> RouteTable {
        guard let k = kept[Int(slot)] else { fatalError("route table slot \(slot) read after its last exchange") }
        return reader.value(k)
    }

    private mutating func letGo(_ i: Int, _ reader: Reader) {
        if let k = kept[i] { reader.release(k) }
        kept[i] = nil
    }
}
