// AuthorizationPolicy on an inbound side (`--upstream` with `--config`: the configuration's policies for this
// workload, TernConfig/AuthorizationTable.swift): each request is decided once its head is read and its path
// normalised, before anything goes upstream. Denied: 403 "RBAC: access denied" (Envoy's RBAC filter; a gRPC
// client gets it as PERMISSION_DENIED), counted. A dry-run policy's would-be denial is counted and logged at debug.
// The peer's address and its SPIFFE ID (from a verified client certificate) are the connection's, found once.
// Nothing is allocated: the table is read in place, a repeated field's values are joined in a kept scratch array.
import TernConfig
import TernHTTP
import TernIO

extension HTTPProxy {
    /// Whether the request may go on; false after answering it 403.
    func authorized(_ x: XID, _ head: HTTP1Head, _ reactor: Reactor<Backend>) -> Bool {
        guard let policies else { return true }
        let table = policies.current.authorization
        guard !table.isEmpty else { return true }
        let id = exchanges[x].downstream
        let listener = downstreams[id].listener
        let facts = AuthorizationFacts(source: downstreams[id].peerIP,
                                       destinationPort: listener < listenerUpstreamPorts.count ? listenerUpstreamPorts[listener] : 0,
                                       principal: downstreams[id].principal)
        let decision = bytes.authorize(table, facts, head, held: exchanges[x].request.held, scratch: &authorizationScratch)
        if decision.dryRunAllowed == false && decision.allowed {
            counters.authorizationDryRunDenied.add(1, ordering: .relaxed)
            Log.debug("authorization: dry-run policy \(table.policyNames[Int(max(decision.dryRunPolicy, 0))]) would deny")
        }
        guard !decision.allowed else { return true }
        counters.authorizationDenied.add(1, ordering: .relaxed)
        Log.debug("authorization: denied by \(decision.policy >= 0 ? table.policyNames[Int(decision.policy)] : "no ALLOW policy matching")")
        _ = routeFailed(x, .accessDenied, reactor)
        return false
    }
}
