// A reactor's listening sockets and the policy for accepting on them, shared by the TCP relay and the HTTP
// proxy: multishot accept while descriptors are plentiful, one at a time when short, paused at the cap
// (connections wait in the listen backlog), back-off after EMFILE/ENFILE, and closing on drain.
import TernCore
import TernIO

final class Acceptor<Backend: IOBackend> {
    private struct Listener {
        var fd: Int32
        var armed = false
        var closed = false
        /// Accepting is paused because the descriptor cap was reached.
        var paused = false
        var backoffNanos: UInt64 = 0
    }

    private var listeners: [Listener]
    /// Token op kinds the owner reserves for accept completions and back-off timers (slot = listener index).
    let acceptOp: UInt8
    let backoffOp: UInt8
    private let counters: RelayCounters

    init(fds: [Int32], acceptOp: UInt8, backoffOp: UInt8, counters: RelayCounters) {
        listeners = fds.map { Listener(fd: $0) }
        self.acceptOp = acceptOp
        self.backoffOp = backoffOp
        self.counters = counters
    }

    var allClosed: Bool { listeners.allSatisfy { $0.closed } }

    /// Once per loop iteration: pauses accepting at the descriptor cap and resumes below it.
    func update(atCap: Bool, headroom: Int, draining: Bool, _ reactor: Reactor<Backend>) {
        for i in listeners.indices where !listeners[i].closed {
            if atCap && listeners[i].armed && !listeners[i].paused {
                listeners[i].paused = true
                reactor.backend.cancel(fd: listeners[i].fd, token: token(i))
            } else if !atCap && !draining && !listeners[i].armed && listeners[i].backoffNanos == 0 {
                listeners[i].paused = false
                arm(i, headroom: headroom, reactor)
            }
        }
    }

    private func token(_ i: Int) -> Token { Token(op: acceptOp, slot: UInt32(i), generation: 0) }

    /// Arms accepting. Multishot only while the descriptor headroom exceeds a full listen backlog: the
    /// kernel may accept the whole backlog in one go, and a connection accepted without a descriptor left
    /// for its upstream socket can only wait. Short of that, one connection at a time.
    private func arm(_ i: Int, headroom: Int, _ reactor: Reactor<Backend>) {
        listeners[i].armed = true
        reactor.backend.accept(listener: listeners[i].fd, multishot: headroom > Int(System.listenBacklog), token: token(i))
    }

    func closeAll(_ reactor: Reactor<Backend>) {
        for i in listeners.indices where !listeners[i].closed {
            if listeners[i].armed {
                // The final accept completion (-ECANCELED) closes the socket.
                reactor.backend.cancel(fd: listeners[i].fd, token: token(i))
            } else {
                close(i, reactor)
            }
        }
    }

    private func close(_ i: Int, _ reactor: Reactor<Backend>) {
        listeners[i].closed = true
        reactor.backend.unregister(fd: listeners[i].fd)
        System.close(listeners[i].fd)
    }

    /// An accept completion: the new socket and its listener's index, or nil when there is none to serve
    /// (an error, handled here with a back-off, or a connection arriving while draining, closed here).
    func accepted(_ c: Completion, draining: Bool, _ reactor: Reactor<Backend>) -> (fd: Int32, listener: Int)? {
        let i = Int(c.token.slot)
        if !c.more { listeners[i].armed = false }
        if c.result < 0 {
            if draining || c.result == -Errno.ECANCELED {
                if !listeners[i].armed && !listeners[i].closed && draining { close(i, reactor) }
                return nil
            }
            if listeners[i].paused { return nil }
            // Out of descriptors (EMFILE/ENFILE) or memory: back off, then re-arm. Connections wait in the
            // listen backlog meanwhile; service resumes as descriptors are freed.
            counters.acceptExhausted.add(1, ordering: .relaxed)
            let next = listeners[i].backoffNanos == 0 ? 10_000_000 : min(listeners[i].backoffNanos * 2, 1_000_000_000)
            if listeners[i].backoffNanos == 0 {
                Log.warn("accept failed on \(listeners[i].fd): \(Errno.name(-c.result)); backing off")
            }
            listeners[i].backoffNanos = next
            if !listeners[i].armed {
                _ = reactor.timers.schedule(Token(op: backoffOp, slot: UInt32(i), generation: 0), at: System.monotonicNanos() + next)
            }
            return nil
        }
        listeners[i].backoffNanos = 0
        if draining {
            System.close(c.result)
            if !listeners[i].armed && !listeners[i].closed { close(i, reactor) }
            return nil
        }
        return (c.result, i)
    }

    /// The back-off timer of a listener fired: accept again.
    func backoffFired(_ token: Token, headroom: Int, _ reactor: Reactor<Backend>) {
        let i = Int(token.slot)
        listeners[i].backoffNanos = 0
        if !listeners[i].closed { arm(i, headroom: headroom, reactor) }
    }
}
