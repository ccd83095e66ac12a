// The per-request half of the table: host lookup, route matching, weighted choice and hash keys. Nothing here
// allocates, locks or retains beyond what reading the table's arrays costs (checked by the allocation test).

extension RouteTable {
    /// Selects the virtual host for `host` (a Host or :authority value, with or without `:port`; an exact name or
    /// its Kubernetes short forms, then wildcards, longest suffix first, then `*`) and its first route whose
    /// matchers accept the request (routes in order, first match wins). `port` is the port the request
    /// addressed, for `port` matches and multi-port services. `reactor`: the calling reactor's index, whose copy
    /// of each regex it matches with (`RouteTable.compile(_:namespace:reactors:)`).
    public func select(host: Span<UInt8>, port: UInt16, request: borrowing RequestView, reactor: Int = 0) -> RouteMatch {
        guard let vh = virtualHost(for: host) else { return .noHost }
        let routes = virtualHosts[vh].routes
        for r in 0..<routes.count {
            let matchers = routes[r].matchers
            if matchers.isEmpty { return RouteMatch(virtualHost: Int32(vh), route: Int32(r)) }
            for m in 0..<matchers.count where matches(matchers[m], host: host, port: port, request: request, reactor: reactor) {
                return RouteMatch(virtualHost: Int32(vh), route: Int32(r), matcher: Int32(m))
            }
        }
        return RouteMatch(virtualHost: Int32(vh), route: -1)
    }

    /// The virtual host index for a Host value, nil when none matches (404, NR).
    public func virtualHost(for host: Span<UInt8>) -> Int? {
        var end = host.count
        // Drop ":port" (after "]" for an IPv6 literal) and a trailing dot.
        if end > 0, host[0] == UInt8(ascii: "[") {
            var i = 0
            while i < end, host[i] != UInt8(ascii: "]") { i += 1 }
            end = min(end, i + 1)
        } else {
            var i = end - 1
            while i >= 0, host[i] != UInt8(ascii: ":") { i -= 1 }
            if i >= 0 { end = i }
        }
        if end > 0, host[end - 1] == UInt8(ascii: ".") { end -= 1 }
        if end == 0 { return catchAll }
        if let vh = exactHosts.lookup(host, in: 0..<end) { return vh }
        if wildcardHosts.count > 0 {
            var i = 0
            while i < end {
                if host[i] == UInt8(ascii: "."), i + 1 < end, let vh = wildcardHosts.lookup(host, in: (i + 1)..<end) {
                    return vh
                }
                i += 1
            }
        }
        return catchAll
    }

    func matches(_ m: RequestMatcher, host: Span<UInt8>, port: UInt16, request: borrowing RequestView,
                 reactor: Int) -> Bool {
        if let p = m.port, p != port { return false }
        let bytes = request.bytes
        if let u = m.uri, !Self.check(u, bytes, request.path, reactor) { return false }
        if let mm = m.method, !Self.check(mm, bytes, request.method, reactor) { return false }
        if let a = m.authority, !Self.check(a, host, 0..<host.count, reactor) { return false }
        if let s = m.scheme {
            let ok: Bool
            switch (s, request.scheme) {
            case (.present, _): ok = true
            case (.regex(let r), .http): ok = r.matches(Self.http.span, reactor: reactor)
            case (.regex(let r), .https): ok = r.matches(Self.https.span, reactor: reactor)
            case (.exact(let v), .http), (.exactIgnoringCase(let v), .http): ok = v == Self.http
            case (.exact(let v), .https), (.exactIgnoringCase(let v), .https): ok = v == Self.https
            case (.prefix(let v), .http), (.prefixIgnoringCase(let v), .http): ok = Self.http.starts(with: v)
            case (.prefix(let v), .https), (.prefixIgnoringCase(let v), .https): ok = Self.https.starts(with: v)
            }
            if !ok { return false }
        }
        for i in 0..<m.headers.count {
            guard let v = request.header(m.headers[i].name), Self.check(m.headers[i].matcher, bytes, v, reactor) else {
                return false
            }
        }
        for i in 0..<m.withoutHeaders.count {
            if let v = request.header(m.withoutHeaders[i].name), Self.check(m.withoutHeaders[i].matcher, bytes, v, reactor) {
                return false
            }
        }
        for i in 0..<m.queryParams.count {
            guard let v = request.queryParameter(m.queryParams[i].name), Self.check(m.queryParams[i].matcher, bytes, v, reactor)
            else { return false }
        }
        return true
    }

    static let http: [UInt8] = Array("http".utf8)
    static let https: [UInt8] = Array("https".utf8)

    static func check(_ m: Matcher, _ bytes: Span<UInt8>, _ range: Range<Int>, _ reactor: Int) -> Bool {
        switch m {
        case .present:
            return true
        case .exact(let v):
            return range.count == v.count && equal(bytes, range.lowerBound, v, ignoringCase: false)
        case .prefix(let v):
            return range.count >= v.count && equal(bytes, range.lowerBound, v, ignoringCase: false)
        case .exactIgnoringCase(let v):
            return range.count == v.count && equal(bytes, range.lowerBound, v, ignoringCase: true)
        case .prefixIgnoringCase(let v):
            return range.count >= v.count && equal(bytes, range.lowerBound, v, ignoringCase: true)
        case .regex(let r):
            return r.matches(bytes.extracting(range), reactor: reactor)
        }
    }

    @inline(__always)
    static func equal(_ bytes: Span<UInt8>, _ start: Int, _ v: [UInt8], ignoringCase: Bool) -> Bool {
        for k in 0..<v.count {
            let c = ignoringCase ? asciiLower(bytes[start + k]) : bytes[start + k]
            if c != v[k] { return false }
        }
        return true
    }

    /// Picks one of a forwarding route's destinations by relative weight from a uniformly random `random`
    /// (the caller's generator): destination i with probability weight_i / Σ weights. nil for other actions or
    /// when every weight is 0.
    public func pickDestination(_ match: RouteMatch, random: UInt64) -> WeightedCluster? {
        guard match.virtualHost >= 0, match.route >= 0 else { return nil }
        guard case .forward(let destinations, let total) = virtualHosts[Int(match.virtualHost)]
            .routes[Int(match.route)].action else { return nil }
        return Self.pick(destinations, total: total, random: random)
    }

    static func pick(_ destinations: [WeightedCluster], total: UInt64, random: UInt64) -> WeightedCluster? {
        weightedIndex(count: destinations.count, total: total, random: random) { destinations[$0].weight }
            .map { destinations[$0] }
    }

    /// Index i of `count` choices with probability weight(i) / `total` from a uniformly random `random`; nil when
    /// there is none or every weight is 0. Shared by `pickDestination` and `Forwarding.pick`.
    static func weightedIndex(count: Int, total: UInt64, random: UInt64, weight: (Int) -> UInt64) -> Int? {
        guard count > 0, total > 0 else { return nil }
        if count == 1 { return 0 }
        // Unbiased scaling of a 64-bit random into [0, total): the high word of random × total.
        var r = random.multipliedFullWidth(by: total).high
        // Index loops: a for-in over these structs allocates an iterator box in unoptimised builds.
        for i in 0..<count {
            let w = weight(i)
            if r < w { return i }
            r -= w
        }
        return count - 1
    }

    /// The consistent-hash key of a request for `cluster`'s policy: the header's, cookie's or query
    /// parameter's value, or `sourceAddress` (the client's IP as bytes, any fixed encoding). nil when the policy
    /// hashes nothing or the request lacks the value (the load balancer then picks at random, as Envoy does).
    public func hashKey(cluster: Int, request: borrowing RequestView, sourceAddress: Span<UInt8>) -> UInt64? {
        let key: HashSource
        switch clusters[cluster].loadBalancing {
        case .ringHash(let k, _), .maglev(let k, _): key = k
        default: return nil
        }
        let bytes = request.bytes
        switch key {
        case .sourceIP:
            return Self.sourceHash(sourceAddress)
        case .header(let name):
            return request.header(name).map { Self.hash(bytes, $0) }
        case .queryParameter(let name):
            return request.queryParameter(name).map { Self.hash(bytes, $0) }
        case .cookie(let name):
            guard let cookies = request.header(Self.cookieName) else { return nil }
            return Self.cookieValue(name, bytes, cookies).map { Self.hash(bytes, $0) }
        }
    }

    /// Whether `cluster` hashes connections by the client's IP (consistentHash.useSourceIp): the only key a TCP
    /// connection has, so a TCP route asks for the client's address only then (a header, cookie or query
    /// parameter key means nothing to a TCP connection: it is balanced at random, as Envoy's TCP proxy does).
    public func hashesSourceIP(cluster: Int) -> Bool {
        switch clusters[cluster].loadBalancing {
        case .ringHash(.sourceIP, _), .maglev(.sourceIP, _): true
        default: false
        }
    }

    /// The consistent-hash key of a client address (its IP as bytes, any fixed encoding: HTTP and TCP both hash
    /// its text), for clusters that hash by it (`hashesSourceIP`).
    public static func sourceHash(_ sourceAddress: Span<UInt8>) -> UInt64 {
        hash(sourceAddress, 0..<sourceAddress.count)
    }

    static let cookieName: [UInt8] = Array("cookie".utf8)

    /// The value of cookie `name` in a Cookie field value (`a=1; b=2`).
    static func cookieValue(_ name: [UInt8], _ bytes: Span<UInt8>, _ range: Range<Int>) -> Range<Int>? {
        var i = range.lowerBound
        while i < range.upperBound {
            while i < range.upperBound, bytes[i] == UInt8(ascii: " ") { i += 1 }
            var end = i
            while end < range.upperBound, bytes[end] != UInt8(ascii: ";") { end += 1 }
            var eq = i
            while eq < end, bytes[eq] != UInt8(ascii: "=") { eq += 1 }
            if eq < end, eq - i == name.count, equal(bytes, i, name, ignoringCase: false) { return (eq + 1)..<end }
            i = end + 1
        }
        return nil
    }

    static func hash(_ bytes: Span<UInt8>, _ range: Range<Int>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for k in range {
            h ^= UInt64(bytes[k])
            h &*= 0x100_0000_01b3
        }
        return mix(h)
    }
}

extension RouteTable {
    /// The first TCP route of a virtual host that applies to a connection to `port` at `destination` (its
    /// destination IP; nil when unknown: a match on destinationSubnets then does not hold). A route applies when
    /// it has no match or when any of its matches holds (`TCPRouteMatch.holds`); nil when none applies.
    public func selectTCP(virtualHost: Int, port: UInt16, destination: IPAddress? = nil) -> Int? {
        let routes = virtualHosts[virtualHost].tcpRoutes
        for r in 0..<routes.count {
            let matches = routes[r].matches
            if matches.isEmpty { return r }
            for m in 0..<matches.count where matches[m].holds(port: port, destination: destination) { return r }
        }
        return nil
    }

    /// A weighted destination of TCP route `route` of `virtualHost`, as `pickDestination` does for HTTP.
    public func pickTCPDestination(virtualHost: Int, route: Int, random: UInt64) -> WeightedCluster? {
        let r = virtualHosts[virtualHost].tcpRoutes[route]
        return Self.pick(r.destinations, total: r.totalWeight, random: random)
    }

    /// How connections to a listener on `port` are routed, as Istio's outbound listener for a service port
    /// decides: each ServiceEntry (in the order read) with a port numbered `port` names a service; the first of
    /// their hosts, in that order, whose virtual host has a TCP route applying to the connection
    /// (`selectTCP`) or is the service itself (`VirtualHost.serviceDestination`) routes it. When no route of
    /// those virtual hosts matches on destinationSubnets, the choice is the same for every connection and made
    /// here (`.fixed`); else it is made per connection from its destination IP (`tcpListenerRoute(virtualHosts:
    /// port:destination:)`). Looked up once per table and listener, not per connection (it allocates).
    public func tcpListenerRouting(port: UInt16) -> TCPListenerRouting {
        var hosts: [Int] = []
        for r in resources {
            guard case .serviceEntry(let se) = r.spec, se.ports.contains(where: { $0.number == port }) else { continue }
            for host in se.hosts where !host.hasPrefix("*") {
                let name = Array(host.utf8)
                if let vh = virtualHost(for: name.span), !hosts.contains(vh) { hosts.append(vh) }
            }
        }
        let byDestination = hosts.contains { vh in
            virtualHosts[vh].tcpRoutes.contains { route in
                route.matches.contains { !$0.destinationSubnets.isEmpty && ($0.port == nil || $0.port == port) }
            }
        }
        if byDestination { return .byDestination(virtualHosts: hosts) }
        return .fixed(tcpListenerRoute(virtualHosts: hosts, port: port, destination: nil))
    }

    /// The route of a connection to `port` at `destination` over the virtual hosts `tcpListenerRouting` named,
    /// in order; nil when none has a route for it nor a service (Envoy's NR: the connection is closed). No
    /// allocation.
    public func tcpListenerRoute(virtualHosts hosts: [Int], port: UInt16,
                                 destination: IPAddress?) -> TCPListenerRoute? {
        for i in 0..<hosts.count {
            let vh = hosts[i]
            if let route = selectTCP(virtualHost: vh, port: port, destination: destination) {
                return .route(virtualHost: vh, route: route)
            }
            if virtualHosts[vh].serviceDestination != nil { return .service(virtualHost: vh) }
        }
        return nil
    }

    /// The route of one connection to `port` at `destination`, looked up from scratch (allocates: a listener
    /// binds `tcpListenerRouting` once per table instead).
    public func tcpListenerRoute(port: UInt16, destination: IPAddress? = nil) -> TCPListenerRoute? {
        switch tcpListenerRouting(port: port) {
        case .fixed(let route): route
        case .byDestination(let hosts): tcpListenerRoute(virtualHosts: hosts, port: port, destination: destination)
        }
    }

    /// A destination for a connection `tcpListenerRoute` routed (a weighted pick for a route; the service for
    /// the default); nil when every weight is 0. No allocation.
    public func pickTCPDestination(_ route: TCPListenerRoute, random: UInt64) -> WeightedCluster? {
        switch route {
        case .route(let vh, let r): return pickTCPDestination(virtualHost: vh, route: r, random: random)
        case .service(let vh): return virtualHosts[vh].serviceDestination
        case .tlsRoute(let vh, let r):
            let route = virtualHosts[vh].tlsRoutes[r]
            return Self.pick(route.destinations, total: route.totalWeight, random: random)
        }
    }
}

/// What a TCP connection is routed by (`RouteTable.tcpListenerRoute`), as indexes into its table.
public enum TCPListenerRoute: Sendable, Equatable {
    /// A TCP route of a VirtualService (or a ServiceEntry's default route).
    case route(virtualHost: Int, route: Int)
    /// No TCP route applies: the service the ServiceEntry declares.
    case service(virtualHost: Int)
    /// A VirtualService `tls` route chosen by server name (`RouteTable.sniRoute`).
    case tlsRoute(virtualHost: Int, route: Int)
}

/// How a TCP listener's connections are routed (`RouteTable.tcpListenerRouting`), as indexes into its table.
public enum TCPListenerRouting: Sendable, Equatable {
    /// The same way for every connection; nil: nowhere (NR).
    case fixed(TCPListenerRoute?)
    /// By each connection's destination IP (a route matches on destinationSubnets), over these virtual hosts.
    case byDestination(virtualHosts: [Int])
}
