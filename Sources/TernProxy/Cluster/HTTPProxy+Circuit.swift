// The HTTP router's side of the circuit breakers (Cluster/CircuitBreakers.swift): the units an exchange takes of its
// cluster's circuit as it waits for a connection, is given one, and is retried, and gives back as it moves on or
// ends. Nothing here allocates or locks: each take or give is one atomic add on the cluster's shared record.
import TernCore
import TernIO
import TernTelemetry

extension HTTPProxy {
    /// The exchange is given a connection: it takes a unit of its cluster's active requests (`http2MaxRequests`),
    /// leaving the queue if it waited. False when the cluster is at its limit: it was answered 503 UO (counted as
    /// Envoy counts it, in `upstream_rq_pending_overflow`).
    func admitRequest(_ x: XID, _ reactor: Reactor<Backend>) -> Bool {
        discharge(x, .pending)
        guard let circuit = exchanges[x].circuit, !exchanges[x].charges.contains(.request) else { return true }
        guard circuit.take(.request) else {
            circuit.pendingOverflow.add(1, ordering: .relaxed)
            Log.debug("cluster \(circuit.name): requests in flight at their limit (UO)")
            fail(x, .overflow, reactor)
            return false
        }
        exchanges[x].charges.insert(.request)
        return true
    }

    /// The exchange is about to wait for a connection: it takes a unit of its cluster's pending requests
    /// (`http1MaxPendingRequests`); false (counted, and the caller answers 503 UO) when none is left.
    func admitPending(_ x: XID) -> Bool {
        guard let circuit = exchanges[x].circuit, !exchanges[x].charges.contains(.pending) else { return true }
        guard circuit.take(.pending) else {
            circuit.pendingOverflow.add(1, ordering: .relaxed)
            Log.debug("cluster \(circuit.name): pending requests at their limit (UO)")
            return false
        }
        exchanges[x].charges.insert(.pending)
        return true
    }

    /// A retry is about to be made: it takes a unit of its cluster's retries (`maxRetries`, or the retry budget),
    /// after giving back the one an earlier retry of the same request held. False when none is left: the retry is
    /// not made, the request is flagged UO and counted (`upstream_rq_retry_overflow`).
    func admitRetry(_ x: XID) -> Bool {
        discharge(x, .retry)
        guard let circuit = exchanges[x].circuit else { return true }
        guard circuit.take(.retry) else {
            circuit.retryOverflow.add(1, ordering: .relaxed)
            exchanges[x].report.flags.insert(.upstreamOverflow)
            Log.debug("cluster \(circuit.name): retries at their limit (UO): not retried")
            return false
        }
        exchanges[x].charges.insert(.retry)
        return true
    }

    /// Gives back the units of `what` the exchange holds.
    func discharge(_ x: XID, _ what: CircuitCharges) {
        let held = exchanges[x].charges.intersection(what)
        guard !held.isEmpty else { return }
        exchanges[x].charges.subtract(held)
        guard let circuit = exchanges[x].circuit else { return }
        if held.contains(.pending) { circuit.give(.pending) }
        if held.contains(.request) { circuit.give(.request) }
        if held.contains(.retry) { circuit.give(.retry) }
    }

    /// The exchange ended: everything it held goes back, and it leaves its cluster's circuit.
    func leaveCircuit(_ x: XID) {
        discharge(x, [.pending, .request, .retry])
        exchanges[x].circuit = nil
    }

    /// Whether exchange `x` may open a connection to endpoint `e` now: within its cluster's connections, or, at
    /// the limit, when this reactor has no connection at all to `e` (one is opened anyway, or the requests waiting
    /// here would wait for connections other reactors hold; Envoy's rule). The check and the charge are two steps,
    /// as Envoy's: cores racing for the last connection may each open one.
    func mayConnect(_ x: XID, _ e: Int) -> Bool {
        guard let circuit = exchanges[x].circuit, !circuit.connectionsLeft else { return true }
        return pools.slots[e].connections == 0
    }

    /// A connection is opened for exchange `x`: charged to its cluster (whatever the limit: `mayConnect` decided),
    /// with the cluster's connection settings. Returns the connect timeout.
    func chargeConnection(_ u: UID, for x: XID) -> UInt64 {
        guard let circuit = exchanges[x].circuit else {
            upstreams[u].idleTimeout = relay.circuits.upstreamIdleTimeout.nanoseconds
            // A relayed TCP connection (TLS terminated here): its cluster's connect timeout and keepalive; its
            // connection unit is the TCP router's.
            guard let c = exchanges[x].relayed?.circuit?.connectionSettings else { return relay.connectTimeout.nanoseconds }
            if c.keepalive { System.setKeepalive(upstreams[u].fd, idle: c.keepaliveTime, interval: c.keepaliveInterval, probes: c.keepaliveProbes) }
            return c.connectTimeout
        }
        _ = circuit.forceConnection()
        let c = circuit.connectionSettings
        upstreams[u].circuit = circuit
        upstreams[u].idleTimeout = c.idleTimeout
        upstreams[u].requestsLeft = c.maxRequestsPerConnection > 0 ? c.maxRequestsPerConnection : Int.max
        if c.maxConnectionDuration > 0 { upstreams[u].expires = saturatingAdd(System.monotonicNanos(), c.maxConnectionDuration) }
        if c.keepalive { System.setKeepalive(upstreams[u].fd, idle: c.keepaliveTime, interval: c.keepaliveInterval, probes: c.keepaliveProbes) }
        return c.connectTimeout
    }

    /// Whether upstream connection `u` may carry another request (`maxRequestsPerConnection`, `maxConnectionDuration`).
    func mayServeAgain(_ u: UID) -> Bool {
        upstreams[u].requestsLeft > 0 && (upstreams[u].expires == 0 || System.monotonicNanos() < upstreams[u].expires)
    }
}
