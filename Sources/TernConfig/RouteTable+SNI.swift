// Routing TLS connections by their ClientHello's server name without terminating them (issue 16), as Istio's
// outbound listeners for TLS and HTTPS service ports do with Envoy's tls_inspector and filter chains matched on
// server_names: VirtualService `tls` routes (`match.sniHosts`, `port`, `destinationSubnets`) first, in order,
// then the ServiceEntry hosts declaring that port with protocol TLS or HTTPS (the common egress case). An exact
// name is preferred to a wildcard one (`*.example.com`), as Envoy's server_names matching is.

/// One server-name pattern and where connections whose ClientHello names it go.
public struct SNIRoute: Sendable {
    /// Lower-cased; for a wildcard (`*.example.com`) the suffix after the `*` (`.example.com`), empty for `*`.
    public var pattern: [UInt8]
    public var wildcard: Bool
    /// nil: any port (a VirtualService match without one).
    public var port: UInt16?
    /// Empty: any destination address.
    public var destinationSubnets: [CIDRRange]
    public var route: TCPListenerRoute

    /// Whether `name` (lower-cased) matches the pattern. No allocation.
    func matches(_ name: borrowing Span<UInt8>) -> Bool {
        if !wildcard {
            guard name.count == pattern.count else { return false }
            for i in 0..<pattern.count where name[i] != pattern[i] { return false }
            return true
        }
        // "*.example.com" needs at least one character before ".example.com"; "*" matches everything, a
        // ClientHello without SNI too.
        guard name.count > pattern.count else { return pattern.isEmpty }
        let offset = name.count - pattern.count
        for i in 0..<pattern.count where name[offset + i] != pattern[i] { return false }
        return true
    }

    func applies(port p: UInt16, destination: IPAddress?) -> Bool {
        if let port, port != p { return false }
        if destinationSubnets.isEmpty { return true }
        guard let destination else { return false }
        for i in 0..<destinationSubnets.count where destinationSubnets[i].contains(destination) { return true }
        return false
    }
}

extension RouteTable {
    /// Whether connections to a listener on `port` are routed by server name: a ServiceEntry declares the port
    /// with protocol TLS or HTTPS, or a VirtualService tls route matches on it.
    public func routesBySNI(port: UInt16) -> Bool { sniPorts.contains(port) }

    /// The route of a TLS connection to `port` whose ClientHello names `name` (lower-cased; empty: no SNI, which
    /// only a `*` pattern takes), at `destination`; nil when none (Envoy closes it: no filter chain matches). An
    /// exact name first (in configuration order), then the most specific wildcard (the longest suffix; ties in
    /// configuration order), as Envoy's server_names matching. No allocation.
    public func sniRoute(port: UInt16, name: borrowing Span<UInt8>, destination: IPAddress?) -> TCPListenerRoute? {
        for i in 0..<sniRoutes.count where !sniRoutes[i].wildcard {
            if sniRoutes[i].applies(port: port, destination: destination) && sniRoutes[i].matches(name) { return sniRoutes[i].route }
        }
        var best = -1
        for i in 0..<sniRoutes.count where sniRoutes[i].wildcard {
            guard sniRoutes[i].applies(port: port, destination: destination), sniRoutes[i].matches(name) else { continue }
            if best < 0 || sniRoutes[i].pattern.count > sniRoutes[best].pattern.count { best = i }
        }
        return best >= 0 ? sniRoutes[best].route : nil
    }
}

extension RouteCompiler {
    /// The SNI routes of the table and the ports they apply to (see `RouteTable.sniRoute`).
    mutating func compileSNI(hostOwner: [String: Int]) -> (routes: [SNIRoute], ports: [UInt16]) {
        var routes: [SNIRoute] = []
        var ports = Set<UInt16>()
        // Virtual hosts made here for wildcard ServiceEntry hosts (one each, however many TLS ports declare them).
        var wildcardOwner: [String: Int] = [:]
        func pattern(_ host: String) -> ([UInt8], Bool) {
            let lower = host.lowercased()
            if lower == "*" { return ([], true) }
            if lower.hasPrefix("*.") { return (Array(lower.utf8.dropFirst()), true) }
            return (Array(lower.utf8), false)
        }
        for (vh, host) in virtualHosts.enumerated() {
            guard hostOwner[host.name] == vh else { continue }
            for (r, route) in host.tlsRoutes.enumerated() {
                for m in route.sniMatches {
                    if let p = m.port { ports.insert(p) }
                    for name in m.sniHosts {
                        let (bytes, wildcard) = pattern(name)
                        routes.append(SNIRoute(pattern: bytes, wildcard: wildcard, port: m.port,
                                               destinationSubnets: m.destinationSubnets, route: .tlsRoute(virtualHost: vh, route: r)))
                    }
                }
            }
        }
        for r in resources {
            guard case .serviceEntry(let se) = r.spec else { continue }
            for port in se.ports where ["TLS", "HTTPS"].contains(port.protocol?.uppercased() ?? "") {
                ports.insert(port.number)
                for host in se.hosts {
                    var owner = hostOwner[host] ?? wildcardOwner[host]
                    if owner == nil && host.hasPrefix("*") {
                        // A wildcard host has no virtual host for HTTP here; for SNI it is a service like any
                        // other (Envoy: a filter chain for server_names *.example.com to its cluster), when it has
                        // endpoints to go to: not with resolution NONE (the original destination, which the relay
                        // does not follow yet) nor DNS without endpoints (the name to resolve would be the pattern).
                        let resolvesItself = se.resolution == .NONE
                            || (se.endpoints.isEmpty && (se.resolution == .DNS || se.resolution == .DNS_ROUND_ROBIN))
                        guard !resolvesItself else { continue }
                        let d = Destination(host: host, subset: nil, port: nil, mark: Mark(line: 0, path: ""))
                        virtualHosts.append(VirtualHost(name: host, source: r.label, routes: [], tcpRoutes: [],
                                                        serviceDestination: weightedCluster(d, weight: 1, headers: nil)))
                        owner = virtualHosts.count - 1
                        wildcardOwner[host] = owner
                    }
                    guard let vh = owner, virtualHosts[vh].serviceDestination != nil else { continue }
                    let (bytes, wildcard) = pattern(host)
                    routes.append(SNIRoute(pattern: bytes, wildcard: wildcard, port: port.number, destinationSubnets: [],
                                           route: .service(virtualHost: vh)))
                }
            }
        }
        return (routes, ports.sorted())
    }
}
