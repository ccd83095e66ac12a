/// The receives an io_uring backend has armed, by token, so that one the kernel ended with -ENOBUFS (its
/// provided-buffer ring ran dry) can be armed again on the same descriptor once buffers return.
///
/// Indexed by the token's op and slot rather than hashed: HTTP arms a single-shot receive per read on each side,
/// so this is touched twice per proxied request, and a Dictionary insert and remove there cost a hash each. A
/// table grows to the highest slot seen for its op (amortised, never in steady state) and an entry is live
/// only while its full token (generation included) matches.
struct ArmedReceives {
    struct Entry {
        var token: UInt64 = 0
        var fd: Int32 = -1
        var multishot = false
        var armed = false
    }

    /// Per op kind (the handlers' 256; the backends' own ops never receive), per slot.
    private var byOp = [[Entry]](repeating: [], count: 256)

    init() {}

    mutating func arm(_ token: Token, fd: Int32, multishot: Bool) {
        let op = Int(token.op), slot = Int(token.slot)
        precondition(!token.isInternal, "a receive under a backend's internal token")
        if slot >= byOp[op].count {
            byOp[op].append(contentsOf: repeatElement(Entry(), count: max(slot + 1 - byOp[op].count, byOp[op].count)))
        }
        byOp[op][slot] = Entry(token: token.raw, fd: fd, multishot: multishot, armed: true)
    }

    /// The receive armed under `token` (generation included), now forgotten; nil when none is.
    mutating func disarm(_ token: Token) -> (fd: Int32, multishot: Bool)? {
        let op = Int(token.op), slot = Int(token.slot)
        guard op < byOp.count, slot < byOp[op].count else { return nil }
        let e = byOp[op][slot]
        guard e.armed, e.token == token.raw else { return nil }
        byOp[op][slot].armed = false
        return (e.fd, e.multishot)
    }
}
