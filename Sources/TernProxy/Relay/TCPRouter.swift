import TernConfig
import TernCore
import TernIO

/// One reactor's choice of upstream for each relayed TCP connection.
///
/// With `--upstream`, a listener's connections all go to its upstream. With `--config`, the listener's port is
/// the destination port Istio routes TCP by: it selects a VirtualService `tcp` route, or the service itself
/// (`RouteTable.tcpListenerRouting`, looked up once per table and listener; only when a route in question
/// matches on destinationSubnets is the route chosen per connection, from its destination IP); each connection
/// then gets a weighted destination, the cluster for the port, and an endpoint from that cluster's load
/// balancer (open connections count as its outstanding requests, also across swaps: `LoadBalancers`). Nothing
/// here allocates per connection: a new table is bound in `refresh`, once per loop iteration, and applies to
/// connections accepted from then on.
final class TCPRouter {
    /// Where a connection went: an index into `addresses`, and how its balancer counts it (nil: not counted),
    /// to report its end to, whatever table is bound by then.
    struct Pick {
        var address: Int32 = -1
        var outstanding: OutstandingRequest? = nil
        /// With `--config`, the cluster and the endpoint in it (indexes in the table bound when it was picked);
        /// -1 with `--upstream`.
        var cluster: Int32 = -1
        var endpoint: Int32 = -1
        /// With `--config`: the cluster's circuit breakers, holding one connection of it until `finished`, and
        /// whose connection settings (connect and idle timeouts, keepalive) the connection follows.
        var circuit: ClusterCircuit? = nil
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
    private var addressIndex: [SocketAddress: Int32] = [:]
    private var listenerRoutes: [TCPListenerRouting] = []
    /// Per listener: its connections are routed by the server name of their ClientHello (`RouteTable.sniRoute`).
    private(set) var routesBySNI: [Bool] = []
    private var balancers = LoadBalancers()
    /// Per cluster of the bound table, per endpoint: its index in `addresses`, -1 when it has no address.
    private var clusterAddresses: [[Int32]] = []
    private var random: SplitMix
    /// The epoch of the table bound: the reader may be shared with an HTTP proxy on the same reactor (listeners
    /// of both kinds), which refreshes it first.
    private var boundEpoch: UInt64 = 0
    /// Each cluster's circuit breakers (by cluster index of the bound table), shared with every reactor.
    private var circuits: [ClusterCircuit] = []
    private let registry: CircuitRegistry?
    private let relay: RelaySettings

    init(listeners: [RelayListener], routes: SnapshotReader<RouteTable>?, circuits: CircuitRegistry? = nil,
         relay: RelaySettings = RelaySettings()) {
        self.routes = routes
        registry = circuits
        self.relay = relay
        balancers = LoadBalancers(locality: Locality(relay.locality), labels: relay.labels)
        addresses = routes == nil ? listeners.map(\.upstream) : []
        listenerPorts = listeners.map { (try? System.localAddress($0.fd))?.port ?? 0 }
        var system = SystemRandomNumberGenerator()
        random = SplitMix(seed: system.next())
        if let routes {
            bind(routes.current, epoch: routes.currentEpoch)
            boundEpoch = routes.currentEpoch
        }
    }

    /// Picks up a newly published table (once per loop iteration). Open connections need nothing: their
    /// picks stay valid (`LoadBalancers` keeps counting them where they started). `reader: false`: the table the
    /// reader holds now, without looking for a newer one (an owner that just bound it binds the same).
    func refresh(reader: Bool = true) {
        guard let routes else { return }
        if reader { _ = routes.refresh() }
        guard routes.currentEpoch != boundEpoch else { return }
        bind(routes.current, epoch: routes.currentEpoch)
        boundEpoch = routes.currentEpoch
    }

    /// The name of the cluster a pick went to (the access log), "" when it went to none.
    func clusterName(_ pick: Pick) -> String {
        pick.outstanding.map { balancers.clusterName(of: $0) } ?? ""
    }

    private func bind(_ table: RouteTable, epoch: UInt64 = 0) {
        balancers.bind(table)
        if let registry {
            circuits = table.clusters.map {
                registry.circuit($0.name, CircuitLimits($0.policy.connectionPool, budget: $0.retryBudget, relay: relay), epoch: epoch)
            }
            registry.keep(Set(table.clusters.map(\.name)), epoch: epoch)
        }
        listenerRoutes = listenerPorts.map { table.tcpListenerRouting(port: $0) }
        routesBySNI = listenerPorts.map { table.routesBySNI(port: $0) }
        clusterAddresses = table.clusters.map { cluster in
            cluster.endpoints.map { e in e.socketAddress.map(index) ?? -1 }
        }
    }

    private func index(_ address: SocketAddress) -> Int32 {
        if let i = addressIndex[address] { return i }
        addresses.append(address)
        addressIndex[address] = Int32(addresses.count - 1)
        return Int32(addresses.count - 1)
    }

    /// The upstream for a new connection on listener `listener`, counted as started at its endpoint.
    /// `clientAddress` gives the client's address, asked only when the cluster hashes by it
    /// (consistentHash.useSourceIp: a client keeps its endpoint, as with HTTP, where the same IP text is hashed;
    /// composed on the stack, nothing allocated per connection). `destinationIP` gives the address
    /// the connection was made to (its original destination when iptables redirected it), asked only when a
    /// route for the listener's port matches on destinationSubnets.
    func choose(listener: Int, clientAddress: () -> SocketAddress? = { nil }, destinationIP: () -> IPAddress? = { nil }) -> Choice {
        guard let routes else { return .upstream(Pick(address: Int32(listener))) }
        let chosen: TCPListenerRoute?
        switch listenerRoutes[listener] {
        case .fixed(let route): chosen = route
        case .byDestination(let hosts):
            chosen = routes.current.tcpListenerRoute(virtualHosts: hosts, port: listenerPorts[listener], destination: destinationIP())
        }
        return choose(chosen, listener: listener, clientAddress: clientAddress)
    }

    /// The upstream for a TLS connection on listener `listener` whose ClientHello names `serverName` (lower-cased;
    /// empty: none), counted as started at its endpoint: by `RouteTable.sniRoute`.
    func choose(listener: Int, serverName: borrowing Span<UInt8>, clientAddress: () -> SocketAddress? = { nil },
                destinationIP: () -> IPAddress? = { nil }) -> Choice {
        guard let routes else { return .upstream(Pick(address: Int32(listener))) }
        let chosen = routes.current.sniRoute(port: listenerPorts[listener], name: serverName, destination: destinationIP())
        return choose(chosen, listener: listener, clientAddress: clientAddress)
    }

    private func choose(_ chosen: TCPListenerRoute?, listener: Int, clientAddress: () -> SocketAddress?) -> Choice {
        guard let routes else { return .upstream(Pick(address: Int32(listener))) }
        let table = routes.current
        let port = listenerPorts[listener]
        guard let route = chosen else { return .none(flag: "NR") }
        guard let destination = table.pickTCPDestination(route, random: random.next()),
              let cluster = destination.cluster(port: port) else { return .none(flag: "NC") }
        var hashKey: UInt64? = nil
        if table.hashesSourceIP(cluster: cluster), let address = clientAddress() {
            address.withText(withPort: false) { hashKey = RouteTable.sourceHash($0) }
        }
        guard let e = balancers.pick(cluster: cluster, table: table, random: random.next(), hashKey: hashKey),
              clusterAddresses[cluster][e] >= 0
        else { return .none(flag: "UH") }
        // The cluster's connection limit (tcp.maxConnections): beyond it the connection is closed, flag UO, as
        // Envoy's TCP proxy does.
        let circuit = cluster < circuits.count ? circuits[cluster] : nil
        if let circuit, !circuit.take(.tcpConnection) {
            circuit.cxOverflow.add(1, ordering: .relaxed)
            return .none(flag: "UO")
        }
        let outstanding = balancers.requestStarted(cluster: cluster, endpoint: e)
        return .upstream(Pick(address: clusterAddresses[cluster][e], outstanding: outstanding, cluster: Int32(cluster),
                              endpoint: Int32(e), circuit: circuit))
    }

    /// A connection ended: its endpoint has one outstanding connection less, on the balancer that counted it,
    /// whatever table is bound now, and its cluster one connection less. Once per connection.
    func finished(_ pick: Pick) {
        if let outstanding = pick.outstanding { balancers.requestFinished(outstanding) }
        pick.circuit?.give(.tcpConnection)
    }
}

extension IPAddress {
    /// The IP of a socket address, as route matching compares it. No allocation.
    init?(_ address: SocketAddress) {
        if let v4 = address.ipv4 {
            self.init(v4: v4)
        } else if let v6 = address.ipv6 {
            self.init(v6High: v6.high, low: v6.low)
        } else {
            return nil
        }
    }
}
