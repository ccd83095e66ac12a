import TernHTTP
import TernIO
import TernProxy
import TernTelemetry
import TernTestSupport
import Testing

/// Runs `once` once to warm up, then 1,000 times counted: the allocations those made, nil when the counter
/// is not preloaded (an error instead where the run requires it: `MallocCounter.load`).
private func allocations(_ once: () -> Void) throws -> UInt? {
    let counter = try MallocCounter.load()
    once()
    let before = counter?.count()
    for _ in 0..<1_000 { once() }
    guard let counter, let before else { return nil }
    return counter.count() - before
}

/// Reading a parsed head's trace fields and capturing its tracestate allocates nothing (counted under
/// Tools/scripts/test.sh's `--filter AllocationTests` run with the malloc counter preloaded).
@Suite struct RequestTracingAllocationTests {
    @Test func readingAHeadAllocatesNothing() throws {
        let raw = Array(("GET /a HTTP/1.1\r\nHost: h\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
            + "tracestate: a=1\r\nb3: 4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1\r\nx-b3-sampled: 1\r\n\r\n").utf8)
        var parser = HTTP1Parser(kind: .request)
        #expect(try parser.parse(raw.span) == .complete)
        let head = parser.head
        let capture = RequestCapture(slots: 1)
        var random = SplitMixForTests(seed: 3)
        var spans: UInt64 = 0
        func once() {
            let headers = TraceHeaders(head: head, bytes: raw.span, capture: capture, slot: 0)
            spans &+= headers.context.child(sampler: TraceSampler(percent: 100), using: &random).spanID & 1
        }
        let counted = try allocations(once)
        #expect(capture.string(0, .traceState) == "a=1")
        if let counted { #expect(counted == 0, "\(counted) allocations for 1,000 heads") }
    }
}

/// What runs per accepted connection: the client's address as text for X-Forwarded-For, the access log's
/// downstream address and a source-IP hash, composed on the stack (`SocketAddress.withText`) instead of
/// `ip`/`description` Strings. Counted like the suite above.
@Suite struct AddressTextAllocationTests {
    @Test func anAcceptedConnectionsAddressTextAllocatesNothing() throws {
        let capture = RequestCapture(slots: 1)
        let addresses = [try #require(SocketAddress(parsing: "10.1.2.3:40000")), try #require(SocketAddress(parsing: "[fd00::5]:7000"))]
        var total = 0
        func once() {
            for i in 0..<addresses.count {  // index loop: a for-in iterator is a heap box in a debug build
                addresses[i].withText(withPort: true) { capture.set(0, .downstreamRemote, $0) }
                addresses[i].withText(withPort: false) { total &+= $0.count }
            }
        }
        let counted = try allocations(once)
        #expect(capture.string(0, .downstreamRemote) == "[fd00::5]:7000")
        #expect(total == 1_001 * ("10.1.2.3".count + "fd00::5".count))
        if let counted { #expect(counted == 0, "\(counted) allocations for 2,000 addresses") }
    }

    /// Comparing and hashing addresses (endpoint tables are looked up by address on every configuration swap)
    /// allocates nothing; they compared two formatted descriptions, four Strings per comparison.
    @Test func comparingAndHashingAddressesAllocatesNothing() throws {
        let addresses = [try #require(SocketAddress(parsing: "10.1.2.3:40000")), try #require(SocketAddress(parsing: "10.1.2.3:40001")),
                         try #require(SocketAddress(parsing: "[fd00::5]:7000"))]
        var equal = 0
        var hashes = 0
        func once() {
            for i in 0..<addresses.count {  // index loops: a for-in iterator is a heap box in a debug build
                for j in 0..<addresses.count where addresses[i] == addresses[j] { equal += 1 }
                var h = Hasher()
                addresses[i].hash(into: &h)
                hashes &+= h.finalize() & 1
            }
        }
        let counted = try allocations(once)
        #expect(equal == 1_001 * 3)
        if let counted { #expect(counted == 0, "\(counted) allocations for 9,000 comparisons and 3,000 hashes") }
    }
}
