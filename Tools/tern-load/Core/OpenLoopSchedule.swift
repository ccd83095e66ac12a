/// When each request of an open-loop run is meant to be sent (wrk2's model, which corrects coordinated
/// omission): `rate` requests per second spread evenly over `connections`, so connection i sends its k-th
/// request (k from 0) at
///
///     start + (i + k × connections) / rate seconds
///
/// A request's latency is measured from that intended time, not from when it actually left: a server that
/// stalls delays every request scheduled during the stall, and each of them counts the wait. Integer
/// nanosecond arithmetic, so tests can state exact expectations.
public struct OpenLoopSchedule: Equatable, Sendable {
    /// Requests per second over all connections.
    public let rate: UInt64
    public let connections: UInt64

    public init(rate: UInt64, connections: Int) {
        precondition(rate > 0 && connections > 0, "rate and connections must be positive")
        self.rate = rate
        self.connections = UInt64(connections)
    }

    /// Nanoseconds after the start at which connection `connection` sends its `request`-th request.
    public func intendedOffset(connection: Int, request: UInt64) -> UInt64 {
        let slot = UInt64(connection) + request * connections
        let (hi, lo) = slot.multipliedFullWidth(by: 1_000_000_000)
        return rate.dividingFullWidth((hi, lo)).quotient
    }

    /// How many of connection `connection`'s requests are due `elapsed` nanoseconds after the start.
    public func dueCount(connection: Int, elapsed: UInt64) -> UInt64 {
        // slot ≤ elapsed × rate / 1e9, and slot = connection + k × connections.
        let (hi, lo) = elapsed.multipliedFullWidth(by: rate)
        let maxSlot = UInt64(1_000_000_000).dividingFullWidth((hi, lo)).quotient
        let first = UInt64(connection)
        var due = maxSlot >= first ? (maxSlot - first) / connections + 1 : 0
        // Integer division in intendedOffset rounds down: count a request due once its offset is reached.
        while intendedOffset(connection: connection, request: due) <= elapsed { due += 1 }
        while due > 0 && intendedOffset(connection: connection, request: due - 1) > elapsed { due -= 1 }
        return due
    }

    /// The interval between two requests of one connection, in nanoseconds.
    public var connectionInterval: UInt64 { connections * 1_000_000_000 / rate }
}
