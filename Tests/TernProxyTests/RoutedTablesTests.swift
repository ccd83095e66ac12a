import TernConfig
import Testing
@testable import TernProxy

/// The route tables a reactor keeps for its exchanges: the current one, and a replaced one only while an exchange
/// routed with it lives (each exchange reads its route's edits from the table it was routed with).
@Suite struct RoutedTablesTests {
    @Test func aReplacedTableIsKeptWhileItsExchangesLiveAndNoLonger() {
        var tables = RoutedTables()
        let second = RouteTable.empty(), third = RouteTable.empty()
        // The first table is held by nothing but `tables` (as a reactor's bound table, once the snapshot cell let
        // it go): it must be deallocated when its last exchange ends.
        weak var first: RouteTable?
        do {
            let table = RouteTable.empty()
            first = table
            tables.bind(table)
        }
        let a = tables.started(), b = tables.started()
        #expect(first != nil && tables[a] === first && tables[b] === first)
        tables.bind(second)
        #expect(tables.heldCount == 2, "the first table still has two exchanges")
        let c = tables.started()
        #expect(tables[c] === second && c != a)
        tables.finished(a)
        #expect(tables.heldCount == 2)
        #expect(first != nil)
        tables.finished(b)
        #expect(tables.heldCount == 1, "let go with its last exchange")
        #expect(first == nil, "deallocated")
        tables.bind(third)
        #expect(tables.heldCount == 2, "the second still has an exchange")
        let d = tables.started()
        #expect(d == a, "the freed slot is reused")
        tables.finished(c)
        tables.bind(RouteTable.empty())
        #expect(tables.heldCount == 2, "the third still has an exchange")
        tables.finished(d)
        #expect(tables.heldCount == 1)
    }

    @Test func theCurrentTableIsKeptWithoutExchanges() {
        var tables = RoutedTables()
        let table = RouteTable.empty()
        tables.bind(table)
        let s = tables.started()
        tables.finished(s)
        #expect(tables.heldCount == 1 && tables[s] === table)
    }
}
