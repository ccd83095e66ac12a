/// `--compare`: time is cut into slices of `length` from `start`, and targets A (0) and B (1) take turns,
/// A first. A request belongs to the slice its due time falls in.
public struct CompareSlices: Equatable, Sendable {
    public let start: UInt64
    public let length: UInt64

    public init(start: UInt64, length: UInt64) {
        precondition(length > 0, "slices must have a length")
        self.start = start
        self.length = length
    }

    /// The target whose slice holds time `t` (monotonic nanoseconds, not before `start`).
    public func target(at t: UInt64) -> Int { Int(((t - start) / length) % 2) }

    /// How much of [from, to) falls in target `target`'s slices (the time its requests per second divide by).
    public func time(of target: Int, from: UInt64, to: UInt64) -> UInt64 {
        guard to > from else { return 0 }
        var total: UInt64 = 0
        var k = (from - start) / length
        while start + k * length < to {
            let a = max(start + k * length, from), b = min(start + (k + 1) * length, to)
            if Int(k % 2) == target && b > a { total += b - a }
            k += 1
        }
        return total
    }
}
