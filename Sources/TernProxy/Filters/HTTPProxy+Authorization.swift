// AuthorizationPolicy on an inbound side (`--upstream` with `--config`: the configuration's policies for this
// workload, TernConfig/AuthorizationTable.swift): each request is decided once its head is read and its path
// normalised, before anything goes upstream. Denied: 403 "RBAC: access denied" (Envoy's RBAC filter; a gRPC
// client gets it as PERMISSION_DENIED), counted. A dry-run policy's would-be denial is counted and logged at debug.
// The peer's address and its SPIFFE ID (from a verified client certificate) are the connection's, found once.
// Nothing is allocated: the table is read in place, a repeated field's values are joined in a kept scratch array.
import TernConfig
import TernHTTP
import TernIO

/// How an inbound side takes a connection, by the PeerAuthentication mode of its port.
enum InboundTransport {
    /// TLS (STRICT; or any listener with `--tls-cert` that is not an inbound side).
    case tls
    /// PERMISSIVE with TLS configured: TLS if the first bytes begin a handshake, else plaintext.
    case sniff
    /// DISABLE, or no TLS configured and not STRICT; or a listener without `--tls-cert`.
    case plaintext
    /// STRICT without TLS configured: closed.
    case refuse
}

extension HTTPProxy {
    /// Whether listener `l` is an inbound side's: every listener of a process with `--upstream` and `--config`
    /// (`policies`), or an `--inbound` listener beside outbound ones.
    func isInbound(_ l: Int) -> Bool { policies != nil || (l < listenerInbound.count && listenerInbound[l]) }

    /// The table whose security policies apply to listener `l`'s connections (nil: none, an outbound listener).
    func securityTable(_ l: Int) -> RouteTable? {
        if let policies { return policies.current }
        guard l < listenerInbound.count && listenerInbound[l], let routes else { return nil }
        return routes.current
    }

    /// How listener `listener` takes a new connection: on an inbound side, as the workload's PeerAuthentication
    /// says for `port`, the app's port the connection is for (which `portLevelMtls` names).
    func inboundTransport(_ listener: Int, port: UInt16) -> InboundTransport {
        // (A TCP listener terminating TLS relays what it decrypts: always TLS. PeerAuthentication on TCP: not yet.)
        if listener < listenerRelaysTCP.count && listenerRelaysTCP[listener] { return tls != nil ? .tls : .plaintext }
        guard let table = securityTable(listener) else {
            // An outbound listener beside inbound ones takes its app's plaintext; TLS is the inbound side's.
            return tls != nil && !listenerInbound.contains(true) ? .tls : .plaintext
        }
        switch table.peerAuthentication.mode(port: port) {
        case .STRICT: return tls != nil ? .tls : .refuse
        case .DISABLE: return .plaintext
        case .PERMISSIVE, .UNSET: return tls != nil ? .sniff : .plaintext
        }
    }

    /// A socket address as policies compare it.
    static func ipAddress(_ a: SocketAddress) -> IPAddress? {
        a.ipv4.map { IPAddress(v4: $0) } ?? a.ipv6.map { IPAddress(v6High: $0.high, low: $0.low) }
    }

    /// Looks up the denial counters of `table`'s policies (when a table is bound: never per request).
    func bindDenials(_ table: AuthorizationTable) {
        guard denialTable !== table else { return }
        denialTable = table
        denialCounters = (table.policyNames + [PolicyDenials.noAllowMatched]).map { counters.policyDenials.counters($0) }
    }

    /// The denial counters of policy `i` of `table` (-1: no ALLOW policy matched); a table not bound yet (swapped in
    /// within this loop iteration) is bound now.
    private func denials(_ i: Int32, _ table: AuthorizationTable) -> (enforced: SharedCounter, dryRun: SharedCounter) {
        if denialTable !== table { bindDenials(table) }
        return i >= 0 && Int(i) < denialCounters.count - 1 ? denialCounters[Int(i)] : denialCounters[denialCounters.count - 1]
    }

    /// Whether the request may go on; false after answering it 403.
    func authorized(_ x: XID, _ head: HTTP1Head, _ reactor: Reactor<Backend>) -> Bool {
        let id = exchanges[x].downstream
        guard let policies = securityTable(downstreams[id].listener) else { return true }
        let table = policies.authorization
        guard !table.isEmpty else { return true }
        let facts = AuthorizationFacts(source: downstreams[id].peerIP, destination: downstreams[id].localIP,
                                       destinationPort: downstreams[id].destinationPort,
                                       principal: downstreams[id].principal, serverName: downstreams[id].serverName)
        let decision = bytes.authorize(table, facts, head, held: exchanges[x].request.held, scratch: &authorizationScratch)
        if decision.dryRunAllowed == false && decision.allowed {
            counters.authorizationDryRunDenied.add(1, ordering: .relaxed)
            denials(decision.dryRunPolicy, table).dryRun.add()
            Log.debug("authorization: dry-run policy \(decision.dryRunPolicy >= 0 ? table.policyNames[Int(decision.dryRunPolicy)] : PolicyDenials.noAllowMatched) would deny")
        }
        guard !decision.allowed else { return true }
        counters.authorizationDenied.add(1, ordering: .relaxed)
        denials(decision.policy, table).enforced.add()
        Log.debug("authorization: denied by \(decision.policy >= 0 ? table.policyNames[Int(decision.policy)] : "no ALLOW policy matching")")
        _ = routeFailed(x, .accessDenied, reactor)
        return false
    }
}
