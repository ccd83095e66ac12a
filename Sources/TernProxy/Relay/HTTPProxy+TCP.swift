// TCP listeners that terminate TLS (`--listen tcp:ADDR --tls-cert …`). The splice relay cannot serve them: a TLS
// connection's bytes must be decrypted, and the TLS glue belongs to the HTTP engine (Transport/HTTPProxy+TLS.swift).
// So the HTTP engine accepts them, and relays each connection's decrypted stream as a tunnel that no request
// opened (Exchange/HTTPProxy+Tunnel.swift):
//
//   accept ──▶ handshake (--tls-handshake-timeout) ──▶ route (TCPRouter, as the relay routes) ──▶ a new upstream
//   connection (--connect-timeout; TLS origination if a DestinationRule asks) ──▶ tunnel, buffer by buffer
//
// Routing is the relay's: `tcp` routes by port and destination subnets, or `tls` routes by the server name the
// client asked for in its handshake. The upstream connection is always a new one, never a pooled HTTP one. The
// tunnel passes half-closes on (a TLS client's close_notify or FIN shuts the upstream's write side; the upstream's
// FIN sends close_notify and shuts the client's), resets on a reset, and closes after `--idle-timeout` without a
// byte either way. The connection reports as Istio's TCP connections do: istio_tcp_* (opened once the handshake is
// done, with `connection_security_policy` mutual_tls when the client's certificate verified) and one TCP
// access-log line when it closes, with the TLS fields; a failed handshake is counted by reason instead
// (tern_tls_handshake_failures_total), as no TCP connection to the service was opened.
import TernConfig
import TernCore
import TernIO
import TernTelemetry

extension HTTPProxy {
    /// A connection accepted on a TLS-terminating TCP listener: its handshake starts; nothing is read for the
    /// upstream until the tunnel starts.
    func relayAccepted(_ id: DID, _ reactor: Reactor<Backend>) {
        let x = downstreams[id].exchange
        downstreams[id].relaysTCP = true
        exchanges[x].headStart = System.monotonicNanos()
        beginExchange(x)
        // The slot may have carried an HTTP request before: its values must not show in this connection's line.
        capture?.beginRequest(Int(x.index))
        tlsSocketReceive(.client(id), reactor)
    }

    /// The handshake is done: the connection is opened as a TCP connection, routed, and its upstream connected.
    func relayHandshakeDone(_ id: DID, _ reactor: Reactor<Backend>) {
        guard let router = relayRouter else { return bug("a relayed TCP connection without a router") }
        let x = downstreams[id].exchange, fd = downstreams[id].fd
        exchanges[x].active = true
        exchanges[x].lastActivity = System.monotonicNanos()
        metrics?.tcp(service: 0, opened: 1, mutualTLS: downstreams[id].mutualTLS)
        let i = downstreams[id].listener
        let choice: TCPRouter.Choice
        if i < router.routesBySNI.count && router.routesBySNI[i] {
            let name = Array((tls?.sessions.serverName(Int(id.index)) ?? "").lowercased().utf8)
            choice = router.choose(listener: i, serverName: name.span, clientAddress: { try? System.peerAddress(fd) },
                                   destinationIP: { System.originalDestination(fd).flatMap(IPAddress.init) })
        } else {
            choice = router.choose(listener: i, clientAddress: { try? System.peerAddress(fd) },
                                   destinationIP: { System.originalDestination(fd).flatMap(IPAddress.init) })
        }
        switch choice {
        case .none(let flag):
            Log.debug("TLS connection not routed: \(flag)")
            exchanges[x].report.flags = ResponseFlags(name: flag.description) ?? []
            relayClose(x, reactor)
        case .upstream(let pick):
            exchanges[x].relayed = pick
            // With --upstream the pick is the listener's own upstream, whose pool has the listener's index.
            let e = pick.cluster < 0 ? Int(pick.address)
                : Int(pick.cluster) < clusterEndpoints.count && Int(pick.endpoint) < clusterEndpoints[Int(pick.cluster)].count
                    ? clusterEndpoints[Int(pick.cluster)][Int(pick.endpoint)] : -1
            guard e >= 0 else {
                exchanges[x].report.flags = .noHealthyUpstream
                return relayClose(x, reactor)
            }
            exchanges[x].attempt.endpoint = e
            pools.exchangeStarted(e)
            exchanges[x].request.state = .waiting
            exchanges[x].response.state = .idle
            connect(for: x, reactor)
        }
    }

    /// The upstream connection is made (and its own handshake done, with TLS origination): the tunnel starts,
    /// its idle timeout with it.
    func relayConnected(_ x: XID, _ reactor: Reactor<Backend>) {
        exchanges[x].lastActivity = System.monotonicNanos()
        // Its cluster's tcp.idleTimeout (else --idle-timeout; 0: none) and tcp.maxConnectionDuration, as for a
        // connection the TCP relay carries.
        let c = exchanges[x].relayed?.circuit?.connectionSettings
        exchanges[x].timeout = c?.tcpIdleTimeout ?? relay.idleTimeout.nanoseconds
        exchanges[x].requestEnd = c.map { $0.maxConnectionDuration > 0 ? saturatingAdd(exchanges[x].lastActivity, $0.maxConnectionDuration) : 0 } ?? 0
        startTunnel(x, reactor)
        armExchangeTimer(x, at: relayDue(x), reactor)
    }

    /// When a relayed connection closes unless bytes move: its idle timeout (held in `timeout`) from its last
    /// activity, or the end of its maximum duration (held in `requestEnd`).
    func relayDue(_ x: XID) -> UInt64 {
        var due = exchanges[x].timeout > 0 ? saturatingAdd(exchanges[x].lastActivity, exchanges[x].timeout) : UInt64.max
        if exchanges[x].requestEnd > 0 { due = min(due, exchanges[x].requestEnd) }
        return due
    }

    /// The exchange timer of a relayed connection: its idle timeout or its maximum duration.
    func relayTimerFired(_ x: XID, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        guard downstreams[id].phase == .open else { return }
        let due = relayDue(x)
        guard System.monotonicNanos() >= due else { return due == UInt64.max ? () : armExchangeTimer(x, at: due, reactor) }
        Log.debug("relayed TLS connection idle for its idle timeout, or at its maximum duration: closing")
        relayClose(x, reactor)
    }

    /// What would answer an HTTP request with a local reply (no upstream, a connect failure, a TLS origination
    /// failure) ends a relayed connection: closed with the reply's flag, as Envoy's TCP proxy closes. Once the
    /// tunnel runs, a failure is the upstream connection breaking (a send failed): the client is reset, as the
    /// relay resets the other side of a connection that broke.
    func relayFailed(_ x: XID, _ reply: LocalReply, _ reactor: Reactor<Backend>) {
        Log.debug("relayed TLS connection failed (\(reply.flag)): closing")
        exchanges[x].report.flags.formUnion(reply.responseFlags)
        guard exchanges[x].request.state == .tunnel else { return relayClose(x, reactor) }
        detachUpstream(x, reusable: false, reactor)
        closeDownstream(exchanges[x].downstream, reset: true, reactor)
    }

    /// Tern ends a relayed connection: the upstream connection closes, and the client's is closed as an HTTP
    /// connection is after its last response (close_notify, the write side shut, what the client still sends
    /// read and dropped until it closes or `lingerTimeout` passes); reported once it is gone.
    func relayClose(_ x: XID, _ reactor: Reactor<Backend>) {
        detachUpstream(x, reusable: false, reactor)
        lingerClose(exchanges[x].downstream, reactor)
    }

    /// Bytes a tunnel forwards, counted for a relayed connection (istio_tcp_*_bytes_total and its log line).
    func relayCounted(_ x: XID, toUpstream: Bool, _ n: Int) {
        guard n > 0 else { return }
        if toUpstream {
            exchanges[x].report.requestWire &+= UInt64(n)
            metrics?.tcp(service: 0, received: UInt64(n), mutualTLS: downstreams[exchanges[x].downstream].mutualTLS)
        } else {
            // (`report.responseWire` counts them as they are sent, as for every response.)
            metrics?.tcp(service: 0, sent: UInt64(n), mutualTLS: downstreams[exchanges[x].downstream].mutualTLS)
        }
    }

    /// The report of a relayed connection, once, as it closes: istio_tcp_connections_closed_total and a TCP
    /// access-log line (for connections whose handshake was done), and its endpoint's outstanding count.
    func recordRelayed(_ x: XID) {
        let id = exchanges[x].downstream
        if let pick = exchanges[x].relayed {
            relayRouter?.finished(pick)
        }
        defer { exchanges[x].relayed = nil }
        guard exchanges[x].active else { return }
        metrics?.tcp(service: 0, closed: 1, mutualTLS: downstreams[id].mutualTLS)
        guard let log = reporting.accessLog else { return }
        var r = AccessLogRecord()
        r.protocol = .tcp
        r.startMicros = exchanges[x].report.startWall
        r.durationMicros = (System.monotonicNanos() &- exchanges[x].headStart) / 1000
        r.flags = exchanges[x].report.flags
        r.bytesReceived = exchanges[x].report.requestWire
        r.bytesSent = exchanges[x].report.responseWire
        let e = exchanges[x].attempt.endpoint
        if e >= 0, exchanges[x].relayed != nil { r.upstreamHost = pools.slots[e].name }
        if let pick = exchanges[x].relayed, let router = relayRouter {
            r.upstreamCluster = pick.cluster < 0 ? (e >= 0 ? pools.slots[e].name : "") : router.clusterName(pick)
        }
        r.upstreamTransportFailureReason = exchanges[x].report.transportFailure
        log.append(r, capture: capture, slot: Int(x.index))
    }
}
