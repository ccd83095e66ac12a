// PeerAuthentication resolved for one workload, as Istio composes it (pilot/pkg/security/authn
// ComposePeerAuthentication): the mesh-wide policy (root namespace, no selector), then the namespace's (no
// selector), then the workload's (a selector that matches; selector policies in the root namespace are ignored),
// each `UNSET` or absent mode keeping its parent's; within a scope the first in reading order stands in for the
// oldest. A workload policy's `portLevelMtls` sets the mode of single ports (`UNSET` there keeps the workload's).
// No policy at all: PERMISSIVE.

public struct PeerAuthenticationPolicy: Sendable, Equatable {
    /// The workload's mode (never UNSET).
    public var mode: PeerAuthentication.Mode
    /// Ports whose mode differs (workload ports, as the connection's original destination port names them).
    public var ports: [UInt16: PeerAuthentication.Mode]
    /// The policies that decided, `namespace/name`, mesh first (for /config_dump and logs).
    public var sources: [String]

    public static let permissive = PeerAuthenticationPolicy(mode: .PERMISSIVE, ports: [:], sources: [])

    /// The mode for connections to `port`.
    public func mode(port: UInt16) -> PeerAuthentication.Mode { ports[port] ?? mode }

    public static func resolve(_ resources: [Resource], workload: SecurityWorkload) -> PeerAuthenticationPolicy {
        var mesh: (String, PeerAuthentication)? = nil
        var namespace: (String, PeerAuthentication)? = nil
        var own: (String, PeerAuthentication)? = nil
        for r in resources {
            guard case .peerAuthentication(let p) = r.spec else { continue }
            let label = "\(r.namespace)/\(r.name)"
            let selects = p.selector.map { !$0.isEmpty } ?? false
            if r.namespace == workload.rootNamespace && !selects {
                if mesh == nil { mesh = (label, p) }
            } else if r.namespace == workload.namespace && !selects {
                if namespace == nil { namespace = (label, p) }
            } else if selects && r.namespace == workload.namespace
                        && workload.isSelected(by: p.selector, in: r.namespace, peerAuthentication: true) {
                if own == nil { own = (label, p) }
            }
        }
        var out = PeerAuthenticationPolicy.permissive
        for level in [mesh, namespace, own] {
            guard let (label, p) = level else { continue }
            out.sources.append(label)
            if let m = p.mode, m != .UNSET { out.mode = m }
        }
        if let (_, p) = own {
            for (port, m) in p.portLevel where m != .UNSET && m != out.mode { out.ports[port] = m }
        }
        return out
    }
}
