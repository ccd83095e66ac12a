import TernConfig
import TernCore
import TernIO

/// One reactor's choice of upstream for each relayed TCP connection.
///
/// With `--upstream`, a listener's connections all go to its upstream. With `--config`, the listener's port is
/// the destination port Istio routes TCP by: it selects a VirtualService `tcp` route, or the service itself
/// (`RouteTable.tcpListenerRoute`, looked up once per table and listener); each connection then gets a weighted
/// destination, the cluster for the port, and an endpoint from that cluster's load balancer (open connections
/// count as its outstanding requests). Nothing here allocates per connection: a new table is bound in
/// `refresh`, once per loop iteration, and applies to connections accepted from then on.
final class TCPRouter {
    /// Where a connection went: an index into `addresses`, and the balancer (cluster, endpoint, table epoch)
    /// to report its end to.
    struct Pick {
        var address: Int32 = -1
        var cluster: Int32 = -1
        var endpoint: Int32 = -1
        var epoch: UInt64 = 0
    }

    enum Choice {
        case upstream(Pick)
        /// No upstream, with Envoy's response flag: NR (no route for the port), NC (the destination host has no
        /// ServiceEntry), UH (its cluster has no usable endpoint, e.g. a DNS name with no answer yet).
        case none(flag: StaticString)
    }

    private let routes: SnapshotReader<RouteTable>?
    /// Each listener's port (the destination port routes match).
    private let listenerPorts: [UInt16]
    /// Addresses connections are made to: the listeners' upstreams, or every endpoint a bound table named.
    private(set) var addresses: [SocketAddress]
    private var addressIndex: [String: Int32] = [:]
    private var listenerRoutes: [TCPListenerRoute?] = []
    private var balancers: [LoadBalancer] = []
    /// Per cluster of the bound table, per endpoint: its index in `addresses`, -1 when it has no address.
    private var clusterAddresses: [[Int32]] = []
    private var random: SplitMix

    init(listeners: [RelayListener], routes: SnapshotReader<RouteTable>?) {
        self.routes = routes
        addresses = routes == nil ? listeners.map(\.upstream) : []
        listenerPorts = listeners.map { (try? System.localAddress($0.fd))?.port ?? 0 }
        var system = SystemRandomNumberGenerator()
        random = SplitMix(seed: system.next())
        if let routes { bind(routes.current) }
    }

    /// Picks up a newly published table (once per loop iteration); true when it did: then `rebased` moves the
    /// picks of open connections onto it.
    func refresh() -> Bool {
        guard let routes else { return false }
        let old = routes.currentEpoch
        guard routes.refresh() else { return false }
        bind(routes.current)
        previousEpoch = old
        return true
    }

    /// The name of the cluster a pick went to (the access log), "" when it is unknown or no longer bound.
    func clusterName(_ pick: Pick) -> String {
        let c = Int(pick.cluster)
        guard c >= 0, c < balancers.count else { return "" }
        return balancers[c].clusterName
    }

    /// The previous table's clusters and endpoints as indexes of the bound one's (-1: gone), for `rebased`.
    private var previousEpoch: UInt64 = 0
    private var clusterMap: [Int32] = []
    private var endpointMaps: [[Int32]] = []

    private func bind(_ table: RouteTable) {
        let oldNames = balancers.map(\.clusterName)
        let oldAddresses = clusterAddresses
        balancers = LoadBalancer.rebound(balancers, to: table)
        listenerRoutes = listenerPorts.map { table.tcpListenerRoute(port: $0) }
        clusterAddresses = table.clusters.map { cluster in
            cluster.endpoints.map { e in e.socketAddress.map(index) ?? -1 }
        }
        // A cluster is the same across tables by name, an endpoint by address (as the balancers keep them).
        var byName: [String: Int32] = [:]
        for (i, c) in table.clusters.enumerated() where byName[c.name] == nil { byName[c.name] = Int32(i) }
        clusterMap = oldNames.map { byName[$0] ?? -1 }
        endpointMaps = oldAddresses.enumerated().map { (c, addresses) in
            let to = clusterMap[c]
            return addresses.map { a in
                guard to >= 0, a >= 0, let e = clusterAddresses[Int(to)].firstIndex(of: a) else { return -1 }
                return Int32(e)
            }
        }
    }

    /// An open connection's pick after a swap: the same endpoint in the newly bound table, so its end is counted
    /// there (the balancers carried its outstanding count over); nothing to count when the endpoint is gone.
    func rebased(_ pick: Pick) -> Pick {
        guard pick.cluster >= 0, let routes else { return pick }
        var p = pick
        p.epoch = routes.currentEpoch
        let c = Int(pick.cluster)
        if pick.epoch != previousEpoch || c >= clusterMap.count || clusterMap[c] < 0
            || Int(pick.endpoint) >= endpointMaps[c].count || endpointMaps[c][Int(pick.endpoint)] < 0 {
            p.cluster = -1
            return p
        }
        p.cluster = clusterMap[c]
        p.endpoint = endpointMaps[c][Int(pick.endpoint)]
        return p
    }

    private func index(_ address: SocketAddress) -> Int32 {
        let key = address.description
        if let i = addressIndex[key] { return i }
        addresses.append(address)
        addressIndex[key] = Int32(addresses.count - 1)
        return Int32(addresses.count - 1)
    }

    /// The upstream for a new connection on listener `listener`, counted as started at its endpoint.
    func choose(listener: Int) -> Choice {
        guard let routes else { return .upstream(Pick(address: Int32(listener))) }
        guard let route = listenerRoutes[listener] else { return .none(flag: "NR") }
        let table = routes.current
        guard let destination = table.pickTCPDestination(route, random: random.next()),
              let cluster = destination.cluster(port: listenerPorts[listener]) else { return .none(flag: "NC") }
        guard let e = balancers[cluster].pick(table: table, random: random.next()), clusterAddresses[cluster][e] >= 0
        else { return .none(flag: "UH") }
        balancers[cluster].requestStarted(endpoint: e)
        return .upstream(Pick(address: clusterAddresses[cluster][e], cluster: Int32(cluster), endpoint: Int32(e),
                              epoch: routes.currentEpoch))
    }

    /// A connection ended: its endpoint has one outstanding connection less (when the table it was picked from
    /// is still bound; a swap rebinds the balancers, whose counts start again from the new table).
    func finished(_ pick: Pick) {
        let c = Int(pick.cluster)
        guard c >= 0, let routes, routes.currentEpoch == pick.epoch, c < balancers.count else { return }
        balancers[c].requestFinished(endpoint: Int(pick.endpoint))
    }
}
