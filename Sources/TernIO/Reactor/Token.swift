/// The 64-bit user data every operation carries (ARCHITECTURE.md §3):
///
///     63      56 55 54 53         32 31                    0
///     +---------+--+--+-------------+-----------------------+
///     | op kind |I |L | generation  |         slot          |
///     +---------+--+--+-------------+-----------------------+
///
/// The slot and generation come from the owner's `Slab`, so a completion that arrives after its slot was
/// freed and reused carries an old generation and is dropped. Handlers own all 256 op kinds (the TCP relay
/// 0–31, the HTTP engine from 32: room for TLS, HTTP/2 and per-try timers). Bit I marks the backends' own
/// operations (wake-ups, cancels, file updates: their kind in the op byte), bit L the poll that heads a linked
/// splice (the twin of a handler's token); neither reaches a handler.
public struct Token: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var raw: UInt64

    /// Bits of the generation a token keeps (`Slab` wraps its generations at this width).
    public static let generationMask: UInt32 = 0x3F_FFFF
    static let internalBit: UInt64 = 1 << 55
    static let linkBit: UInt64 = 1 << 54

    public init(raw: UInt64) { self.raw = raw }

    public init(op: UInt8, slot: UInt32, generation: UInt32) {
        raw = UInt64(op) << 56 | UInt64(generation & Token.generationMask) << 32 | UInt64(slot)
    }

    public var op: UInt8 { UInt8(truncatingIfNeeded: raw >> 56) }
    public var generation: UInt32 { UInt32(truncatingIfNeeded: raw >> 32) & Token.generationMask }
    public var slot: UInt32 { UInt32(truncatingIfNeeded: raw) }

    /// True for the backends' internal operations (their own kinds and link heads).
    public var isInternal: Bool { raw & (Token.internalBit | Token.linkBit) != 0 }

    /// The internal twin of a token (same op, slot and generation, bit L set): the poll heading a linked splice.
    var linkHead: Token { Token(raw: raw | Token.linkBit) }

    /// A backend's own operation of kind `kind` (bit I set), carrying `value` in the slot bits.
    static func internalOp(_ kind: UInt8, _ value: UInt32 = 0) -> Token {
        Token(raw: UInt64(kind) << 56 | Token.internalBit | UInt64(value))
    }

    /// Whether this is the backend's own operation of kind `kind`.
    func isInternal(_ kind: UInt8) -> Bool { raw & Token.internalBit != 0 && op == kind }

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

    /// A completion naming pooled buffer `buffer` (a handler handing bytes it produced itself, such as TLS
    /// plaintext, to code written for received bytes).
    public init(token: Token, result: Int32, buffer: UInt16) {
        self.init(token: token, result: result, flags: Completion.flagBuffer | UInt32(buffer) << 16)
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
