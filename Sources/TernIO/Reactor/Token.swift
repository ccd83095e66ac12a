/// The 64-bit user data every operation carries (ARCHITECTURE.md §3):
///
///     63      56 55          32 31                    0
///     +---------+--------------+-----------------------+
///     | op kind |  generation  |         slot          |
///     +---------+--------------+-----------------------+
///
/// The slot and generation come from the owner's `Slab`, so a completion that arrives after its slot was
/// freed and reused carries an old generation and is dropped. Op kinds with the top bit set are the
/// backends' own (wake-ups, cancels, the poll that heads a linked splice) and never reach a handler.
public struct Token: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var raw: UInt64

    public init(raw: UInt64) { self.raw = raw }

    public init(op: UInt8, slot: UInt32, generation: UInt32) {
        precondition(op < 0x40, "op kinds from 0x40 up are reserved for backends")
        raw = UInt64(op) << 56 | UInt64(generation & 0xFF_FFFF) << 32 | UInt64(slot)
    }

    public var op: UInt8 { UInt8(truncatingIfNeeded: raw >> 56) }
    public var generation: UInt32 { UInt32(truncatingIfNeeded: raw >> 32) & 0xFF_FFFF }
    public var slot: UInt32 { UInt32(truncatingIfNeeded: raw) }

    /// True for the backends' internal operations.
    public var isInternal: Bool { op & 0x80 != 0 }

    /// The internal twin of a token (same slot and generation, top bit set): the poll heading a linked splice.
    var linkHead: Token { Token(raw: raw | (0x80 << 56)) }

    /// A backend's own operation: op 0xC0 | kind, apart from link heads (0x80 | op, op < 0x40).
    static func internalOp(_ kind: UInt8, _ value: UInt32 = 0) -> Token {
        Token(raw: UInt64(0xC0 | kind) << 56 | UInt64(value))
    }

    public var description: String { "op=\(op) slot=\(slot) gen=\(generation)" }
}

/// One finished operation, in io_uring's terms on both backends: `result` is a byte count, an accepted fd,
/// 0, or a negative errno; `flags` carry IORING_CQE_F_BUFFER (bit 0, the buffer id in the top 16 bits) and
/// IORING_CQE_F_MORE (bit 1: a multishot operation is still armed).
public struct Completion: Sendable {
    public var token: Token
    public var result: Int32
    public var flags: UInt32

    public init(token: Token, result: Int32, flags: UInt32 = 0) {
        self.token = token
        self.result = result
        self.flags = flags
    }

    static let flagBuffer: UInt32 = 1
    static let flagMore: UInt32 = 2

    /// A multishot operation (accept, receive) stays armed; when false it ended and must be re-armed.
    public var more: Bool { flags & Completion.flagMore != 0 }
    /// The pooled buffer holding received bytes; the handler must release it.
    public var bufferID: UInt16? { flags & Completion.flagBuffer != 0 ? UInt16(truncatingIfNeeded: flags >> 16) : nil }
}

/// What a waiting operation waits for.
public enum Readiness: Sendable, Equatable {
    case readable(Int32)
    case writable(Int32)

    public var fd: Int32 {
        switch self {
        case .readable(let fd), .writable(let fd): return fd
        }
    }
}
