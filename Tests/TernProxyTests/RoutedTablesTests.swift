import TernConfig
import TernCore
import Testing
@testable import TernProxy

/// The route tables a reactor keeps for its exchanges: the current one, and a replaced one only while an exchange
/// routed with it lives (each exchange reads its route's edits from the table it was routed with); one let go is
/// released by the publisher's `reclaim`, never on the reactor's thread.
@Suite struct RoutedTablesTests {
    /// Publishes a new table and has the reader (the reactor) take it, as a loop iteration does.
    func swap(_ cell: SnapshotCell<RouteTable>, _ reader: SnapshotReader<RouteTable>, _ tables: inout RoutedTables,
              _ table: RouteTable) {
        cell.publish(table)
        reader.refresh()
        tables.bind(reader)
    }

    @Test func aReplacedTableIsKeptWhileItsExchangesLiveAndFreedByThePublisher() {
        let cell = SnapshotCell(RouteTable.empty(), readers: 1)
        let reader = cell.reader(0)
        var tables = RoutedTables()
        tables.bind(reader)
        weak var first: RouteTable?
        do {
            let table = RouteTable.empty()
            first = table
            swap(cell, reader, &tables, table)
        }
        let a = tables.started(), b = tables.started()
        #expect(first != nil && tables.table(a, reader) === first && tables.table(b, reader) === first)
        swap(cell, reader, &tables, RouteTable.empty())
        cell.reclaim()
        #expect(first != nil, "the cell let it go; the exchanges still keep it")
        #expect(tables.heldCount == 2)
        let c = tables.started()
        #expect(tables.table(c, reader) !== first && c != a)
        tables.finished(a, reader)
        #expect(tables.heldCount == 2)
        tables.finished(b, reader)
        #expect(tables.heldCount == 1, "let go with its last exchange")
        #expect(first != nil, "not freed on the reactor's thread")
        cell.reclaim()
        #expect(first == nil, "freed by the publisher's reclaim")
        // The freed slot is reused; the current table is never let go while current.
        swap(cell, reader, &tables, RouteTable.empty())
        #expect(tables.heldCount == 2, "the second table still has an exchange")
        let d = tables.started()
        #expect(d == a)
        tables.finished(c, reader)
        tables.finished(d, reader)
        #expect(tables.heldCount == 1)
    }

    @Test func aReplacedTableWithoutExchangesIsLetGoAtTheSwap() {
        let cell = SnapshotCell(RouteTable.empty(), readers: 1)
        let reader = cell.reader(0)
        var tables = RoutedTables()
        tables.bind(reader)
        let s = tables.started()
        tables.finished(s, reader)
        #expect(tables.heldCount == 1, "the current table stays")
        weak var old: RouteTable?
        do {
            let table = RouteTable.empty()
            old = table
            swap(cell, reader, &tables, table)
        }
        swap(cell, reader, &tables, RouteTable.empty())
        #expect(tables.heldCount == 1)
        cell.reclaim()
        #expect(old == nil)
    }
}
