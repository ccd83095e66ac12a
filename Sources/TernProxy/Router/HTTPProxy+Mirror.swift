// Mirroring (VirtualService `mirror`, `mirrorPercentage`, `mirrors`), as Envoy's shadow policies: fire and forget.
// A request drawn for a mirror is copied, as it was forwarded, with `-shadow` appended to its Host, and sent to an
// endpoint of the mirror's cluster on a connection of the mirror's own; its response is read only to its end (so
// the connection can carry the next mirror) and dropped. The client never waits for it and never sees it.
//
// Bounded: a reactor carries at most `mirrorSlots` mirror connections (busy or idle), each with one region of
// memory for the request and its response head (MirrorMemory), and a mirror is bounded in time by its route's
// timeout (else the stream idle timeout). A slow or dead mirror therefore holds a fixed amount of memory and
// descriptors, and costs the main request one copy of its bytes: when every slot is busy, further mirrors are
// dropped and counted, never queued. A request is mirrored only when all of it is held as it goes upstream (its
// body arrived with its head, or was gathered whole within `--per-request-buffer-kb`); a body that streams is not
// mirrored (counted), since a copy of it would have to wait for the slower of the two upstreams.
//
// The mirror cluster's circuit breakers apply (a request unit while it is in flight, a connection unit per
// connection: beyond them the mirror is dropped). Not done: mirrors to clusters with TLS origination (dropped and
// counted), outlier detection of mirror endpoints, and metrics of the mirror cluster beyond the counters below.
import TernConfig
import TernCore
import TernHTTP
import TernIO

/// A connection carrying mirrored requests, one at a time.
struct MirrorConnection {
    enum State { case connecting, sending, awaiting, idle, closing }
    var fd: Int32
    /// The endpoint's pool (its address; idle mirror connections are kept per endpoint) and address.
    var endpoint: Int
    var address: SocketAddress
    var state = State.connecting
    var inflight = 0
    var receiving = false
    var circuit: ClusterCircuit? = nil
    /// The circuit whose request unit its mirror in flight holds (the mirror's cluster: a connection to an
    /// endpoint two clusters name may have been opened for the other one).
    var requestCircuit: ClusterCircuit? = nil
    var holdsRequest = false
    /// The request's length and how much of it was sent.
    var length = 0
    var sent = 0
    /// The response arrived whole before the send's completion did (often both come in one batch), and whether
    /// the connection may carry another request: decided once the send completes.
    var answeredEarly = false
    var earlyReusable = false
    var timer: TimerWheel.ID? = nil

    init(fd: Int32, endpoint: Int, address: SocketAddress) {
        self.fd = fd
        self.endpoint = endpoint
        self.address = address
    }
}

typealias MID = Slab<MirrorConnection>.ID

extension HTTPProxy {
    /// Mirror connections a reactor keeps at most (busy and idle together), and idle ones per endpoint; the room for
    /// a mirror's response head.
    static var mirrorSlots: Int { 64 }
    static var idleMirrorsPerEndpoint: Int { 4 }
    static var mirrorHeadCapacity: Int { 16 << 10 }

    /// At routing: which of the route's mirrors this request goes to (each drawn by its percentage), and the port
    /// that picks their clusters. At most eight mirrors of a route act (Istio sets no limit; more are dropped).
    func drawMirrors(_ x: XID, _ targets: Range<Int>, _ forwarding: Forwarding, port: UInt16) {
        exchanges[x].mirrorDraws = 0
        guard !targets.isEmpty else { return }
        exchanges[x].mirrorPort = port
        for (i, t) in targets.enumerated() {
            let share = forwarding.mirrorTargets[t].perMillion
            guard share > 0, share >= 1_000_000 || random.next() % 1_000_000 < UInt64(share) else { continue }
            guard i < 8 else {
                counters.mirrorsDropped.add(1, ordering: .relaxed)
                continue
            }
            exchanges[x].mirrorDraws |= 1 << UInt8(i)
        }
    }

    /// The router takes the request (after the fault filter, as Envoy's router shadows it): each mirror it was
    /// drawn for gets a copy of it as it is forwarded, composed once in `mirrorVecs`. Only a request held whole (no
    /// body, or a Content-Length body all here) is mirrored.
    func mirrorRequest(_ x: XID, _ reactor: Reactor<Backend>) {
        let draws = exchanges[x].mirrorDraws
        exchanges[x].mirrorDraws = 0
        let head = requestParsers.parsers[Int(exchanges[x].request.parser)].head
        let whole = exchanges[x].request.body == .none || bodyHeldWhole(x)
        // (Upgrades and CONNECT are not mirrored: a shadow tunnel would be neither fire nor forget.)
        guard let routes, let routed = exchanges[x].routed, routedTables.isCurrent(routed.table), whole, !draining,
              !exchanges[x].upgrade, exchanges[x].method != .connect,
              composeRequestHead(x, head, into: mirrorVecs, entry: 0, reactor)
        else {
            counters.mirrorsDropped.add(draws.nonzeroBitCount, ordering: .relaxed)
            return
        }
        if case .length(let n) = exchanges[x].request.body {
            let bodyStart = exchanges[x].request.held.start + head.length
            guard bytes.append(mirrorVecs, 0, exchanges[x].request.held, bodyStart..<bodyStart + Int(n)) else {
                mirrorVecs.reset(0)
                counters.mirrorsDropped.add(draws.nonzeroBitCount, ordering: .relaxed)
                return
            }
        }
        let table = routes.current
        let forwarding = table.forwarding
        let targets = forwarding.entries[Int(routed.entry)].mirrors
        let timeout = exchanges[x].timeout > 0 ? exchanges[x].timeout : settings.streamIdleTimeout.nanoseconds
        let now = System.monotonicNanos()
        for i in 0..<min(targets.count, 8) where draws & (1 << UInt8(i)) != 0 {
            guard let c = forwarding.mirrorCluster(targets.lowerBound + i, port: exchanges[x].mirrorPort), c < clusterEndpoints.count,
                  let picked = balancers.pick(cluster: c, table: table, random: random.next(), now: now),
                  clusterEndpoints[c][picked] >= 0
            else {
                counters.mirrorsDropped.add(1, ordering: .relaxed)
                continue
            }
            sendMirror(to: clusterEndpoints[c][picked], circuit: clusterCircuits[c], head: exchanges[x].method == .head,
                       deadline: saturatingAdd(now, timeout), reactor)
        }
        mirrorVecs.reset(0)
    }

    /// Sends one mirror of the request composed in `mirrorVecs` to endpoint `e`, on an idle mirror
    /// connection to it or a new one; dropped (counted) when its cluster's limits, the slots or the descriptors
    /// do not allow it.
    private func sendMirror(to e: Int, circuit: ClusterCircuit, head: Bool, deadline: UInt64, _ reactor: Reactor<Backend>) {
        guard pools.slots[e].tlsKey == nil, circuit.take(.request) else {
            counters.mirrorsDropped.add(1, ordering: .relaxed)
            return
        }
        var m: MID? = nil
        while m == nil, e < mirrorIdle.count, let idle = mirrorIdle[e].popLast() {
            guard mirrors.isCurrent(idle), mirrors[idle].state == .idle else { continue }
            if mirrors[idle].address == pools.slots[e].address {
                mirrorIdleCount -= 1
                m = idle
            } else {
                closeMirror(idle, reactor)  // (its pool went to another address)
            }
        }
        if m == nil { m = openMirror(to: e, circuit: circuit, reactor) }
        guard let m, let length = mirrorMemory.copyShadow(Int(m.index), from: mirrorVecs, entry: 0, suffix: settings.shadowHostSuffix) else {
            circuit.give(.request)
            counters.mirrorsDropped.add(1, ordering: .relaxed)
            if let m, mirrors[m].state != .connecting { closeMirror(m, reactor) }
            return
        }
        counters.mirrors.add(1, ordering: .relaxed)
        mirrors[m].holdsRequest = true
        mirrors[m].requestCircuit = circuit
        mirrors[m].length = length
        mirrors[m].sent = 0
        mirrors[m].answeredEarly = false
        // Each slot's response reader (its parser's field table) is made once and kept.
        let slot = Int(m.index)
        if mirrorReaders[slot] == nil {
            mirrorReaders[slot] = MirrorResponse()
            counters.mirrorSlotsMade.add(1, ordering: .relaxed)
        }
        mirrorReaders[slot]!.reset(headRequest: head)
        cancel(&mirrors[m].timer, reactor)
        mirrors[m].timer = reactor.timers.schedule(mirrorToken(.mirrorTimer, m), at: deadline)
        if mirrors[m].state == .idle {
            mirrors[m].state = .sending
            sendMirrorBytes(m, reactor)
        }
    }

    /// A new mirror connection to endpoint `e` (connecting); nil when the slots, the descriptors or the cluster's
    /// connection limit leave no room (a mirror never waits for a connection).
    private func openMirror(to e: Int, circuit: ClusterCircuit, _ reactor: Reactor<Backend>) -> MID? {
        guard counters.descriptors.load(ordering: .relaxed) - Self.evictionMargin < relay.descriptorCap,
              circuit.take(.connection) else { return nil }
        let address = pools.slots[e].address
        guard let fd = try? System.tcpSocket(family: address.family) else {
            circuit.give(.connection)
            return nil
        }
        guard let m = mirrors.insert(MirrorConnection(fd: fd, endpoint: e, address: address)) else {
            System.close(fd)
            circuit.give(.connection)
            return nil
        }
        counters.descriptors.add(1, ordering: .relaxed)
        mirrors[m].circuit = circuit
        System.setNoDelay(fd)
        reactor.backend.register(fd: fd)
        mirrors[m].inflight += 1
        reactor.backend.connect(fd: fd, to: address, token: mirrorToken(.mirrorConnect, m))
        return m
    }

    private func sendMirrorBytes(_ m: MID, _ reactor: Reactor<Backend>) {
        let slot = Int(m.index)
        mirrors[m].inflight += 1
        mirrorMemory.send(slot, from: mirrors[m].sent, to: mirrors[m].length, fd: mirrors[m].fd, backend: reactor.backend,
                          token: mirrorToken(.mirrorSend, m))
        receiveMirror(m, reactor)
    }

    private func receiveMirror(_ m: MID, _ reactor: Reactor<Backend>) {
        guard !mirrors[m].receiving else { return }
        mirrors[m].receiving = true
        mirrors[m].inflight += 1
        reactor.backend.receive(fd: mirrors[m].fd, token: mirrorToken(.mirrorReceive, m), multishot: false)
    }

    /// A completion of a mirror connection's operation.
    func mirrorCompleted(_ op: Op, _ c: Completion, _ reactor: Reactor<Backend>) {
        let m = MID(index: c.token.slot, generation: c.token.generation)
        guard mirrors.isCurrent(m) else {
            if let b = c.bufferID { reactor.backend.releaseBuffer(b) }
            return
        }
        mirrors[m].inflight -= 1
        if op == .mirrorReceive { mirrors[m].receiving = false }
        if mirrors[m].state == .closing {
            if let b = c.bufferID { reactor.backend.releaseBuffer(b) }
            return finishMirrorIfQuiet(m, reactor)
        }
        switch op {
        case .mirrorConnect:
            guard c.result >= 0 else { return mirrorFailed(m, "connect: \(Errno.name(-c.result))", reactor) }
            if mirrors[m].holdsRequest {
                mirrors[m].state = .sending
                sendMirrorBytes(m, reactor)
            } else {
                closeMirror(m, reactor)
            }
        case .mirrorSend:
            guard c.result > 0 else { return mirrorFailed(m, "send: \(Errno.name(-c.result))", reactor) }
            mirrors[m].sent += Int(c.result)
            if mirrors[m].sent < mirrors[m].length { return sendMirrorBytes(m, reactor) }
            if mirrors[m].answeredEarly { return mirrorDone(m, reusable: mirrors[m].earlyReusable, reactor) }
            mirrors[m].state = .awaiting
        default:
            let count = Int(c.result)
            guard let b = c.bufferID, count > 0 else {
                if let b = c.bufferID { reactor.backend.releaseBuffer(b) }
                // Closed by the upstream: the end of a body delimited by the close, or of an idle connection.
                if mirrors[m].state == .idle { return closeMirror(m, reactor) }
                if let r = mirrorReaders[Int(m.index)], r.inBody && r.body == .untilClose { return mirrorDone(m, reusable: false, reactor) }
                return mirrorFailed(m, "closed before the response ended", reactor)
            }
            let outcome: MirrorResponse.Outcome
            if mirrors[m].state == .idle {
                outcome = .failed  // bytes nobody asked for
            } else {
                outcome = mirrorMemory.feed(Int(m.index), &mirrorReaders[Int(m.index)]!, buffers: reactor.backend.buffers, id: b, count: count)
            }
            reactor.backend.releaseBuffer(b)
            switch outcome {
            case .more: receiveMirror(m, reactor)
            case .failed: mirrorFailed(m, "malformed response", reactor)
            case .done(let reusable):
                if mirrors[m].state == .sending {
                    // Answered before the send completed: done once it has (a send cut short fails the mirror).
                    mirrors[m].answeredEarly = true
                    mirrors[m].earlyReusable = reusable
                } else {
                    mirrorDone(m, reusable: reusable, reactor)
                }
            }
        }
    }

    /// The mirror's time is up (its route's timeout, or the stream idle timeout), or an idle connection's.
    func mirrorTimerFired(_ token: Token, _ reactor: Reactor<Backend>) {
        let m = MID(index: token.slot, generation: token.generation)
        guard mirrors.isCurrent(m) else { return }
        mirrors[m].timer = nil
        if mirrors[m].state == .idle { return closeMirror(m, reactor) }
        mirrorFailed(m, "no response in time", reactor)
    }

    private func mirrorFailed(_ m: MID, _ why: String, _ reactor: Reactor<Backend>) {
        Log.debug("mirrored request to \(mirrors[m].address) failed: \(why)")
        counters.mirrorsFailed.add(1, ordering: .relaxed)
        closeMirror(m, reactor)
    }

    /// The mirror's response ended: the connection waits for the next mirror to its endpoint, or closes.
    private func mirrorDone(_ m: MID, reusable: Bool, _ reactor: Reactor<Backend>) {
        counters.mirrorsAnswered.add(1, ordering: .relaxed)
        releaseMirrorRequest(m)
        let e = mirrors[m].endpoint
        if e < mirrorIdle.count { mirrorIdle[e].removeAll { !mirrors.isCurrent($0) || mirrors[$0].state != .idle } }
        // At most half the slots idle, so that idle connections to some endpoints never leave no slot for others.
        guard reusable, !draining, pools.slots[e].live, pools.slots[e].configured, pools.slots[e].address == mirrors[m].address,
              e < mirrorIdle.count, mirrorIdle[e].count < Self.idleMirrorsPerEndpoint,
              mirrorIdleCount < Self.mirrorSlots / 2 else { return closeMirror(m, reactor) }
        mirrors[m].state = .idle
        mirrorIdleCount += 1
        mirrorIdle[e].append(m)
        cancel(&mirrors[m].timer, reactor)
        let idle = mirrors[m].circuit?.connectionSettings.idleTimeout ?? 0
        if idle > 0 { mirrors[m].timer = reactor.timers.schedule(mirrorToken(.mirrorTimer, m), at: saturatingAdd(System.monotonicNanos(), idle)) }
        // Armed while idle, so that a close by the upstream is seen at once.
        receiveMirror(m, reactor)
    }

    private func releaseMirrorRequest(_ m: MID) {
        guard mirrors[m].holdsRequest else { return }
        mirrors[m].holdsRequest = false
        mirrors[m].requestCircuit?.give(.request)
        mirrors[m].requestCircuit = nil
    }

    func closeMirror(_ m: MID, _ reactor: Reactor<Backend>) {
        guard mirrors[m].state != .closing else { return }
        if mirrors[m].state == .idle { mirrorIdleCount -= 1 }  // (its stale entry is skipped where it was listed)
        releaseMirrorRequest(m)
        mirrors[m].state = .closing
        cancel(&mirrors[m].timer, reactor)
        if mirrors[m].inflight > 0 {
            let fd = mirrors[m].fd
            reactor.backend.cancel(fd: fd, token: mirrorToken(.mirrorReceive, m))
            reactor.backend.cancel(fd: fd, token: mirrorToken(.mirrorSend, m))
            reactor.backend.cancel(fd: fd, token: mirrorToken(.mirrorConnect, m))
            _ = System.shutdown(fd, write: false, read: true)
        }
        finishMirrorIfQuiet(m, reactor)
    }

    private func finishMirrorIfQuiet(_ m: MID, _ reactor: Reactor<Backend>) {
        guard mirrors[m].inflight == 0 else { return }
        reactor.backend.unregister(fd: mirrors[m].fd)
        System.close(mirrors[m].fd)
        counters.descriptors.subtract(1, ordering: .relaxed)
        mirrors[m].circuit?.give(.connection)
        mirrors[m].circuit = nil
        mirrors.remove(m)
    }

    /// Draining or stopping: mirrors are best effort, so every mirror connection closes now.
    func closeAllMirrors(_ reactor: Reactor<Backend>) {
        mirrors.forEachID { closeMirror($0, reactor) }
        for e in mirrorIdle.indices { mirrorIdle[e].removeAll() }
        mirrorIdleCount = 0
    }

    /// Idle mirror connections to endpoints a new table no longer names close.
    func closeIdleMirrors(of endpoints: [Int], _ reactor: Reactor<Backend>) {
        for e in endpoints {
            while e < mirrorIdle.count, let m = mirrorIdle[e].popLast() {
                if mirrors.isCurrent(m) { closeMirror(m, reactor) }
            }
        }
    }

    func mirrorToken(_ op: Op, _ m: MID) -> Token { Token(op: op.rawValue, slot: m.index, generation: m.generation) }
}
