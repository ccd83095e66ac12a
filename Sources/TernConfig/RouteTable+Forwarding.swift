// The per-request facts of every forwarding route, flattened once per table: each (route, destination) pair's
// weight, clusters by port, and what forwarding changes in the heads, rendered: the route's and the
// destination's Istio `headers` operations together (route first, as Envoy applies them), a rewritten authority
// and a `rewrite.uri`. A request's exchange keeps the index of its pair (an entry) instead of copies of the
// strings and arrays of `Route` and `WeightedCluster`, each of which costs a reference count to copy: the proxy
// writes the lines with one copy from `bytes`, compares received field names with `names`, and reads only
// trivial values per request (counted with callgrind: Benchmarks/README.md).

/// The forwarding facts of a table's routes: one entry per (forwarding route, destination).
public final class Forwarding: Sendable {
    /// One destination of one forwarding route: ranges in `bytes` (field lines "name: value\r\n", the rewritten
    /// path), in `names` (the lowercase names of received fields each head loses: removed, or set anew) and in
    /// `ports`.
    public struct Entry: Sendable {
        public var weight: UInt64
        public var requestLines: Range<Int>
        public var responseLines: Range<Int>
        public var requestDrops: Range<Int>
        public var responseDrops: Range<Int>
        /// `rewrite.uri` (empty: none).
        public var uri: Range<Int>
        /// The route rewrites the path with a compiled `uriRegexRewrite`.
        public var regex: Bool
        /// The route names a `uriRegexRewrite` that did not compile (validation refuses those: never silent).
        public var brokenRegex: Bool
        /// The route rewrites the authority (`rewrite.authority`: a "host" line among `requestLines`).
        public var rewritesHost: Bool
        var ports: Range<Int>

        public var editsRequest: Bool { !requestLines.isEmpty || !requestDrops.isEmpty }
        public var editsResponse: Bool { !responseLines.isEmpty || !responseDrops.isEmpty }
    }

    /// A forwarding route's destinations (entries [first, first + count)), their total weight, and the prefix
    /// length each of its matchers matches (`prefixes`, a range in `prefixLengths`).
    struct RouteEntries: Sendable {
        var first: Int
        var count: Int
        var totalWeight: UInt64
        var prefixes: Range<Int>
    }

    public let bytes: [UInt8]
    public let names: [Range<Int>]
    public let entries: [Entry]
    /// (service port, cluster index) of every entry, in `Entry.ports` ranges.
    let ports: [(port: UInt16, cluster: Int32)]
    /// Per virtual host, the index in `routes` of its first route; per route in that flat order, its entries
    /// (nil: not a forwarding route).
    let firstRoute: [Int]
    let routes: [RouteEntries?]
    /// `Route.matchedPrefixLength` of each matcher of each forwarding route.
    let prefixLengths: [Int]

    init(_ virtualHosts: [VirtualHost]) {
        var b = Builder()
        var firstRoute: [Int] = []
        var routes: [RouteEntries?] = []
        var prefixLengths: [Int] = []
        for vh in virtualHosts {
            firstRoute.append(routes.count)
            for route in vh.routes {
                guard case .forward(let destinations, let total) = route.action else {
                    routes.append(nil)
                    continue
                }
                let start = prefixLengths.count
                for m in route.matchers.indices {
                    prefixLengths.append(route.matchedPrefixLength(RouteMatch(virtualHost: 0, route: 0, matcher: Int32(m))))
                }
                routes.append(RouteEntries(first: b.entries.count, count: destinations.count, totalWeight: total,
                                           prefixes: start..<prefixLengths.count))
                for d in destinations { b.entries.append(b.render(route, d)) }
            }
        }
        bytes = b.bytes
        names = b.names
        entries = b.entries
        ports = b.ports
        self.firstRoute = firstRoute
        self.routes = routes
        self.prefixLengths = prefixLengths
    }

    /// `Route.matchedPrefixLength(match)` of the forwarding route `match` selected, read from the flat facts.
    public func matchedPrefixLength(_ match: RouteMatch) -> Int {
        guard match.virtualHost >= 0, match.route >= 0, let r = routes[firstRoute[Int(match.virtualHost)] + Int(match.route)],
              match.matcher >= 0, Int(match.matcher) < r.prefixes.count else { return 1 }
        return prefixLengths[r.prefixes.lowerBound + Int(match.matcher)]
    }

    /// Picks the entry of one of the destinations of the forwarding route `match` selected, by relative weight
    /// from a uniformly random `random` (as `RouteTable.pickDestination`); nil for other routes, or when every
    /// weight is 0.
    public func pick(_ match: RouteMatch, random: UInt64) -> Int? {
        guard match.virtualHost >= 0, match.route >= 0,
              let r = routes[firstRoute[Int(match.virtualHost)] + Int(match.route)] else { return nil }
        return RouteTable.weightedIndex(count: r.count, total: r.totalWeight, random: random) { entries[r.first + $0].weight }
            .map { r.first + $0 }
    }

    /// Whether the route `match` selected forwards (rather than redirecting, answering or being unsupported).
    public func forwards(_ match: RouteMatch) -> Bool {
        match.virtualHost >= 0 && match.route >= 0 && routes[firstRoute[Int(match.virtualHost)] + Int(match.route)] != nil
    }

    /// The cluster of entry `entry` for a request addressed to `port`, as `WeightedCluster.cluster(port:)`.
    public func cluster(_ entry: Int, port: UInt16) -> Int? {
        let p = entries[entry].ports
        return WeightedCluster.cluster(count: p.count, port: port) { ports[p.lowerBound + $0] }
    }

    /// Whether `name` (a received field name) is among `names[which]`, ASCII case-insensitively.
    public func drops(_ name: borrowing Span<UInt8>, _ which: Range<Int>) -> Bool {
        for i in which {
            let n = names[i]
            guard n.count == name.count else { continue }
            var same = true
            for k in 0..<n.count {
                if asciiLower(name[k]) != bytes[n.lowerBound + k] {
                    same = false
                    break
                }
            }
            if same { return true }
        }
        return false
    }

    private struct Builder {
        var bytes: [UInt8] = []
        var names: [Range<Int>] = []
        var entries: [Entry] = []
        var ports: [(port: UInt16, cluster: Int32)] = []

        mutating func render(_ route: Route, _ destination: WeightedCluster) -> Entry {
            var start = bytes.count
            if let host = route.rewrite?.authority { line("host", host) }
            lines(route.requestHeaders)
            lines(destination.requestHeaders)
            let requestLines = start..<bytes.count
            start = bytes.count
            lines(route.responseHeaders)
            lines(destination.responseHeaders)
            let responseLines = start..<bytes.count
            start = names.count
            if route.rewrite?.authority != nil { name("host") }
            drops(route.requestHeaders)
            drops(destination.requestHeaders)
            let requestDrops = start..<names.count
            start = names.count
            drops(route.responseHeaders)
            drops(destination.responseHeaders)
            let responseDrops = start..<names.count
            start = bytes.count
            if let uri = route.rewrite?.uri { bytes.append(contentsOf: uri.utf8) }
            let uri = start..<bytes.count
            start = ports.count
            ports.append(contentsOf: destination.clusters)
            return Entry(weight: destination.weight, requestLines: requestLines, responseLines: responseLines,
                         requestDrops: requestDrops, responseDrops: responseDrops, uri: uri,
                         regex: route.uriRegexRewrite != nil,
                         brokenRegex: route.rewrite?.uriRegexRewrite != nil && route.uriRegexRewrite == nil,
                         rewritesHost: route.rewrite?.authority != nil,
                         ports: start..<ports.count)
        }

        mutating func lines(_ ops: HeaderOperations) {
            for (n, v) in ops.set { line(n, v) }
            for (n, v) in ops.add { line(n, v) }
        }

        mutating func line(_ n: String, _ v: String) {
            bytes.append(contentsOf: n.utf8)
            bytes.append(contentsOf: ": ".utf8)
            bytes.append(contentsOf: v.utf8)
            bytes.append(contentsOf: "\r\n".utf8)
        }

        /// A set replaces the received field of its name, a remove drops it.
        mutating func drops(_ ops: HeaderOperations) {
            for n in ops.remove { name(n) }
            for (n, _) in ops.set { name(n) }
        }

        mutating func name(_ n: String) {
            let start = bytes.count
            // ASCII lowercase, as received names are compared (field names are ASCII tokens).
            bytes.append(contentsOf: n.utf8.map(asciiLower))
            names.append(start..<bytes.count)
        }
    }
}
