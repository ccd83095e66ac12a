/// A short byte string kept inline (no allocation), cut at `capacity` bytes: what a report keeps of a value it
/// logs later (a gRPC response's `grpc-message`).
public struct ShortText: Sendable {
    public static let capacity = 128
    private var storage = InlineArray<128, UInt8>(repeating: 0)
    public private(set) var count = 0

    public init() {}

    public var isEmpty: Bool { count == 0 }

    /// Replaces the text with `bytes` (as much of them as fits).
    public mutating func set<C: Collection<UInt8>>(_ bytes: C) {
        count = 0
        append(bytes)
    }

    /// Adds `bytes` (as much of them as fits).
    public mutating func append<C: Collection<UInt8>>(_ bytes: C) {
        for b in bytes {
            guard count < Self.capacity else { return }
            storage[count] = b
            count += 1
        }
    }

    public subscript(_ i: Int) -> UInt8 {
        precondition(i >= 0 && i < count, "ShortText index out of range")
        return storage[i]
    }
}
