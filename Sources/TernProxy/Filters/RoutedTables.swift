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
/// with, each with the number of such exchanges.
struct RoutedTables {
    private var tables: [RouteTable?] = []
    private var counts: [Int] = []
    private var current = -1

    /// Tables held, the current one included.
    var heldCount: Int { tables.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }

    /// `table` becomes the one new exchanges are routed with; the previous one is let go unless an exchange
    /// still uses it. Runs when a snapshot is bound, never per request.
    mutating func bind(_ table: RouteTable) {
        if current >= 0 && counts[current] == 0 { tables[current] = nil }
        if let free = tables.firstIndex(where: { $0 == nil }) {
            current = free
            tables[free] = table
            counts[free] = 0
        } else {
            current = tables.count
            tables.append(table)
            counts.append(0)
        }
    }

    /// An exchange is routed with the current table: its slot, counted until `finished`.
    mutating func started() -> Int32 {
        counts[current] += 1
        return Int32(current)
    }

    /// An exchange routed with the table in `slot` ended.
    mutating func finished(_ slot: Int32) {
        let i = Int(slot)
        counts[i] -= 1
        if counts[i] < 0 { bug("route table \(i) finished more exchanges than it started") }
        if counts[i] == 0 && i != current { tables[i] = nil }
    }

    subscript(slot: Int32) -> RouteTable {
        guard let t = tables[Int(slot)] else { fatalError("route table slot \(slot) read after its last exchange") }
        return t
    }
}
