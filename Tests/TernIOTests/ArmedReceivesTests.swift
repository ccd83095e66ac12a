import Testing
@testable import TernIO

@Suite struct ArmedReceivesTests {
    @Test func aReceiveIsFoundOnceByItsWholeToken() throws {
        var armed = ArmedReceives()
        let t = Token(op: 3, slot: 7, generation: 2)
        armed.arm(t, fd: 42, multishot: true)
        // Same op and slot, another generation: a later connection in that slot, not this receive.
        let later = armed.disarm(Token(op: 3, slot: 7, generation: 3))
        #expect(later == nil)
        let first = armed.disarm(t)
        let got = try #require(first)
        #expect(got.fd == 42 && got.multishot)
        let again = armed.disarm(t)
        #expect(again == nil, "disarmed twice")
    }

    @Test func opsAndSlotsAreIndependentAndTablesGrow() throws {
        var armed = ArmedReceives()
        let client = Token(op: 1, slot: 5, generation: 0), upstream = Token(op: 2, slot: 5, generation: 0)
        let far = Token(op: 1, slot: 100_000, generation: 9)
        armed.arm(client, fd: 10, multishot: false)
        armed.arm(upstream, fd: 11, multishot: false)
        armed.arm(far, fd: 12, multishot: true)
        let fds = [armed.disarm(upstream)?.fd, armed.disarm(client)?.fd, armed.disarm(far)?.fd]
        #expect(fds == [11, 10, 12])
        let never = armed.disarm(Token(op: 4, slot: 0, generation: 0))
        #expect(never == nil, "an op never armed")
        // Re-arming a slot replaces what it held.
        armed.arm(client, fd: 20, multishot: true)
        armed.arm(client, fd: 21, multishot: false)
        let last = armed.disarm(client)
        let got = try #require(last)
        #expect(got.fd == 21 && !got.multishot)
    }
}
