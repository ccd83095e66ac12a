// Route filters: the request routed from the Istio route table (or to the listener's upstream),
// answered by the route itself (directResponse, redirect, 404 NR, 503 NC/UH), or given its header edits and
// rewrites. Runs once per request head, on the reactor that accepted the connection.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension HTTPProxy {
    /// Chooses where a request goes from the route table: the endpoint's pool index, or nil after answering
    /// it (404 NR, 503 NC, 503 UH, 501 for route actions not applied yet). The route is read in place and kept
    /// as indexes (`RoutedRoute`): copying it would retain each of its strings and arrays.
    func route(_ x: XID, _ head: HTTP1Head, _ reactor: Reactor<Backend>) -> Int? {
        let id = exchanges[x].downstream
        let listener = downstreams[id].listener
        guard let routes, !listenerInbound[listener] else {
            // The listener's upstream (`--upstream`, `--inbound-app`), or an intercepted connection's original
            // destination.
            exchanges[x].circuit = listenerCircuits[listener]
            guard downstreams[id].originalDestination != nil else { return listener }
            return passthroughPool(id, inbound: true)
        }
        dropHeld(&exchanges[x].cors, reactor)
        exchanges[x].corsPreflight = false
        let table = routes.current
        let port = hostPort(head, x) ?? 80
        let match = bytes.select(table, head: head, held: exchanges[x].request.held, port: port, reactor: reactorIndex)
        guard match.found else {
            // A Host no service of the configuration names, on a connection iptables redirected: Istio's
            // outboundTrafficPolicy decides (ALLOW_ANY: on to where it was going; REGISTRY_ONLY: 502).
            guard downstreams[id].originalDestination != nil else { return routeFailed(x, .routeNotFound, reactor) }
            guard settings.allowAnyOutbound, let passthrough = passthroughCircuit else { return routeFailed(x, .registryOnly, reactor) }
            exchanges[x].circuit = passthrough
            return passthroughPool(id, inbound: false)
        }
        let v = Int(match.virtualHost), r = Int(match.route)
        if capture != nil, let name = table.virtualHosts[v].routes[r].name { exchanges[x].report.routeName = name }
        let forwarding = table.forwarding
        // A forwarding route is read from the table's flat `Forwarding` (trivial values only); the others, rare,
        // from the route itself.
        if !forwarding.forwards(match) {
            switch table.virtualHosts[v].routes[r].action {
            case .forward:
                bug("a forwarding route missing from the table's forwarding facts")
                return routeFailed(x, .unsupportedRoute, reactor)
            case .directResponse(let status, let body):
                exchanges[x].report.status = status
                if body.count > Self.inlineBodyLimit {
                    // Sent from the table's own bytes (respondFromRoute): the table is kept until the exchange ends.
                    exchanges[x].routed = RoutedRoute(table: routedTables.started(), match: match, entry: -1)
                }
                respondFromRoute(x, head, RouteResponse(status: status, direct: true, body: body,
                                                        fields: table.virtualHosts[v].routes[r].responseHeaders),
                                 port: port, reactor)
                return nil
            case .redirect(let redirect):
                exchanges[x].report.status = redirect.redirectCode
                respondFromRoute(x, head, RouteResponse(status: redirect.redirectCode, redirect: redirect,
                                                        matchedPrefix: table.virtualHosts[v].routes[r].matchedPrefixLength(match),
                                                        fields: table.virtualHosts[v].routes[r].responseHeaders),
                                 port: port, reactor)
                return nil
            case .unsupported:
                return routeFailed(x, .unsupportedRoute, reactor)
            }
        }
        guard let entry = forwarding.pick(match, random: random.next()) else { return routeFailed(x, .clusterNotFound, reactor) }
        // The CORS filter comes before the router: a preflight it answers needs no cluster.
        if forwarding.entries[entry].cors >= 0 && applyCORS(x, head, table, match, entry: entry, reactor) { return nil }
        guard let cluster = forwarding.cluster(entry, port: port) else { return routeFailed(x, .clusterNotFound, reactor) }
        let facts = forwarding.entries[entry]
        if facts.timeout >= 0 { exchanges[x].timeout = UInt64(facts.timeout) }
        if exchanges[x].report.grpc, let deadline = bytes.grpcTimeout(head, held: exchanges[x].request.held) {
            // A gRPC client's deadline is the request's timeout, capped by the route's own, as Istio configures
            // Envoy (max_grpc_timeout: the VirtualService's timeout; 0, no cap, when it sets none). A deadline of 0
            // means none: the route's cap, if any.
            let cap = facts.timeout > 0 ? UInt64(facts.timeout) : 0
            exchanges[x].timeout = cap == 0 ? deadline : deadline == 0 ? cap : min(deadline, cap)
        }
        if !facts.fault.isEmpty { exchanges[x].fault = facts.fault }
        exchanges[x].retry = facts.retry
        exchanges[x].retriesLeft = facts.retry.retries
        drawMirrors(x, facts.mirrors, forwarding, port: port)
        // A rewrite that did not compile (validation makes that impossible) is never ignored silently.
        if facts.brokenRegex { return routeFailed(x, .unsupportedRoute, reactor) }
        // Consistent hashing (DestinationRule consistentHash): the request's header, cookie, query parameter or
        // source address, read in place; nil (a random pick, as Envoy) for other policies or a missing value.
        let hashKey = bytes.hashKey(table, cluster: cluster, head: head, held: exchanges[x].request.held, slot: Int(id.index))
        guard let e = balancers.pick(cluster: cluster, table: table, random: random.next(), hashKey: hashKey,
                                     now: exchanges[x].lastActivity),
              clusterEndpoints[cluster][e] >= 0 else { return routeFailed(x, .noHealthyUpstream, reactor) }
        exchanges[x].attempt.outstanding = balancers.requestStarted(cluster: cluster, endpoint: e)
        exchanges[x].cluster = Int32(cluster)
        exchanges[x].circuit = clusterCircuits[cluster]
        exchanges[x].tried = 1 << UInt64(e & 63)
        if facts.retry.remoteLocalities {
            exchanges[x].triedRanks = 1 << balancers.rank(cluster: cluster, endpoint: e)
            exchanges[x].excludedRanks = 0
        }
        exchanges[x].routed = RoutedRoute(table: routedTables.started(), match: match, entry: Int32(entry))
        exchanges[x].request.edited = facts.editsRequest
        exchanges[x].response.edited = facts.editsResponse
        exchanges[x].routeSetsHost = facts.rewritesHost
        if facts.regex {
            exchanges[x].targetRewrite = .regex
        } else if !facts.uri.isEmpty {
            exchanges[x].targetRewrite = .path(prefix: forwarding.matchedPrefixLength(match))
        } else {
            exchanges[x].targetRewrite = .none
        }
        if cluster < clusterServices.count { exchanges[x].report.service = clusterServices[cluster] }
        let endpoint = clusterEndpoints[cluster][e]
        setServerName(x, endpoint: endpoint, head)
        return endpoint
    }

    /// The pool of connection `id`'s original destination, held by the connection (an HTTP/2 stream's by its
    /// connection) from its first request on: later requests find it without a lookup, and it is not made and
    /// freed again between them.
    func passthroughPool(_ id: DID, inbound: Bool) -> Int {
        var holder = id
        if downstreams[id].transport == .h2stream, let parent = downstreams[id].h2s.parent, downstreams.isCurrent(parent) { holder = parent }
        if downstreams[holder].passthroughPool >= 0 { return Int(downstreams[holder].passthroughPool) }
        guard let original = downstreams[id].originalDestination else { return -1 }
        let e = pools.passthrough(original, inbound: inbound)
        pools.exchangeStarted(e)
        downstreams[holder].passthroughPool = Int32(e)
        return e
    }

    /// With TLS origination and no fixed SNI, the request's Host names the server of the connection that carries
    /// it (Envoy's auto SNI): its hash goes with the attempt, its text into the endpoint pool's names.
    func setServerName(_ x: XID, endpoint: Int, _ head: HTTP1Head) {
        exchanges[x].attempt.serverName = 0
        guard pools.slots[endpoint].tlsKey != nil, pools.slots[endpoint].tls?.sni == nil, let host = head.host else { return }
        let held = exchanges[x].request.held
        let (hash, _) = bytes.hostName(host, held: held, text: false)
        exchanges[x].attempt.serverName = hash
        if pools.slots[endpoint].serverNames[hash] == nil {
            // Bounded: a client naming endless hosts (a wildcard route) starts the table over.
            if pools.slots[endpoint].serverNames.count >= 256 { pools.slots[endpoint].serverNames.removeAll(keepingCapacity: true) }
            pools.slots[endpoint].serverNames[hash] = bytes.hostName(host, held: held, text: true).name
        }
    }

    /// Writes the field lines the exchange's route adds or sets on the request (`response`: false) or the
    /// response head (a rewritten Host among them), rendered in the table the exchange was routed with.
    func writeRouteFields(_ x: XID, response: Bool, _ w: inout ResponseWriter) {
        guard let routes, let routed = exchanges[x].routed else { return }
        let forwarding = routedTables.table(routed.table, routes).forwarding
        let e = forwarding.entries[Int(routed.entry)]
        // (With an allowed CORS origin, without the lines of the fields the policy sets.)
        w.append(forwarding.bytes, response ? (exchanges[x].cors.holdsStorage ? e.corsResponseLines : e.responseLines) : e.requestLines)
    }

    /// What the exchange's route drops from the request's (`response`: false) or response's received fields: the
    /// table's forwarding facts and the range of names in them (nil: nothing). Taken once per head, then asked
    /// per field (`HTTPBytes.drops`).
    func routeDrops(_ x: XID, response: Bool) -> (Forwarding, Range<Int>)? {
        guard let routes, let routed = exchanges[x].routed else { return nil }
        let forwarding = routedTables.table(routed.table, routes).forwarding
        let e = forwarding.entries[Int(routed.entry)]
        // (With an allowed CORS origin, the CORS fields the upstream sent too.)
        let which = response ? (exchanges[x].cors.holdsStorage ? e.corsResponseDrops : e.responseDrops) : e.requestDrops
        return which.isEmpty ? nil : (forwarding, which)
    }

    /// The bytes a route adds to a request head: the rewritten target (`target`) and the field lines it adds
    /// or sets (`fields`), and the trace context fields of the proxy's span (`trace`), in one assembly buffer.
    /// Nil when they do not fit.
    func composeRequestExtras(_ x: XID, _ head: HTTP1Head, _ target: inout Range<Int>, _ fields: inout Range<Int>,
                                      _ trace: inout Range<Int>) -> Held? {
        // The fields read, not the whole session: copying a Session retains every reference it holds.
        let rewriteTarget = exchanges[x].targetRewrite, held = exchanges[x].request.held
        let edited = exchanges[x].request.edited, context = exchanges[x].report.trace, tries = exchanges[x].tries
        let id = exchanges[x].downstream
        var targetEnd = 0
        var fieldsEnd = 0
        let extras = bytes.compose { w in
            if rewriteTarget != .none, let routes, let routed = exchanges[x].routed {
                // The rewritten target is origin-form: the path (of an absolute-form target, what follows the
                // authority), rewritten, then the query and fragment as received. The rewrite is the route's,
                // read in place.
                let t = head.target
                let path = bytes.pathExtent(head, held: held)
                let table = routedTables.table(routed.table, routes)
                let v = Int(routed.match.virtualHost), r = Int(routed.match.route)
                switch rewriteTarget {
                case .path(let prefix):
                    let forwarding = table.forwarding
                    w.append(forwarding.bytes, forwarding.entries[Int(routed.entry)].uri)
                    let from = prefix >= 0 ? min(path.lowerBound + prefix, path.upperBound) : path.upperBound
                    bytes.copy(from..<t.upperBound, from: held, into: &w)
                case .regex:
                    if let regex = table.virtualHosts[v].routes[r].uriRegexRewrite {
                        bytes.rewrite(path.lowerBound..<t.upperBound, from: held, with: regex, reactor: reactorIndex, into: &w)
                    }
                case .none:
                    break
                }
            }
            targetEnd = w.count
            if edited { writeRouteFields(x, response: false, &w) }
            if routes != nil {
                w.append("x-envoy-attempt-count: ")
                w.append(decimal: Int(tries))
                w.append("\r\n")
            }
            if !downstreams[id].clientCertHash.isEmpty, let mesh = tlsPolicy?.current.mesh {
                // A mesh peer's request, as Istio's sidecar hands it to the app (Envoy's APPEND_FORWARD with
                // subject, URI and DNS): who forwarded it (us), the peer certificate's hash, its subject (empty
                // in a mesh certificate) and SPIFFE ID. A client's own field was removed (an untrusted client's).
                w.append("x-forwarded-client-cert: ")
                w.append(mesh.forwardedBy)
                w.append("Hash=")
                w.append(downstreams[id].clientCertHash)
                w.append(";Subject=\"\";URI=spiffe://")
                w.append(downstreams[id].principal)
                w.append("\r\n")
            }
            fieldsEnd = w.count
            if let capture, reporting.spans != nil {
                context.withTraceparentLine { w.append($0) }
                context.writeFieldsAfterTraceparent(traceStateFrom: capture, slot: Int(x.index)) { w.append(byte: $0) }
            }
        }
        guard let extras else { return nil }
        target = 0..<targetEnd
        fields = targetEnd..<fieldsEnd
        trace = fieldsEnd..<extras.end
        return extras
    }

    /// Whether a route's response operations set or remove field `name` (lowercase, as decoded): a response the
    /// route makes itself (directResponse, redirect) then leaves out its own field of that name, as Envoy
    /// applies a route's response header changes to its direct responses too.
    static func replaces(_ ops: HeaderOperations, _ name: String) -> Bool {
        for i in 0..<ops.set.count where ops.set[i].name == name { return true }
        for i in 0..<ops.remove.count where ops.remove[i] == name { return true }
        return false
    }

    /// "name: value" lines for a route's set and add operations.
    static func lines(_ ops: HeaderOperations, _ w: inout ResponseWriter) {
        for i in 0..<ops.set.count { line(ops.set[i].name, ops.set[i].value, &w) }
        for i in 0..<ops.add.count { line(ops.add[i].name, ops.add[i].value, &w) }
    }

    static func line(_ name: String, _ value: String, _ w: inout ResponseWriter) {
        w.append(name)
        w.append(": ")
        w.append(value)
        w.append("\r\n")
    }

    /// The port in the request's Host, if it names one.
    func hostPort(_ head: HTTP1Head, _ x: XID) -> UInt16? {
        guard let host = head.host else { return nil }
        return bytes.port(in: host, held: exchanges[x].request.held)
    }

    /// Answers a request that cannot be routed; one without a body leaves the connection usable.
    func routeFailed(_ x: XID, _ reply: LocalReply, _ reactor: Reactor<Backend>) -> Int? {
        Log.debug("request not routed: \(reply.flag)")
        if exchanges[x].request.body == .none {
            let head = requestParsers.parsers[Int(exchanges[x].request.parser)].head
            exchanges[x].request.held.start += head.length
            exchanges[x].request.state = .done
        }
        fail(x, reply, reactor)
        return nil
    }

    /// Reports a routed request finished to the balancer and endpoint that counted it, also when the table it
    /// was routed with has been replaced since (the balancers keep its slot until then). Once per request.
    func requestFinished(_ x: XID) {
        if exchanges[x].requestTrailers.capacity > 0 || exchanges[x].responseTrailers.capacity > 0 { h2TakeBackExchangeTrailers(x) }
        if exchanges[x].circuit != nil { leaveCircuit(x) }
        if exchanges[x].report.activeKey != 0 {
            metrics?.endpoint(exchanges[x].report.activeKey, EndpointWords.activeRequests, -1)
            exchanges[x].report.activeKey = 0
        }
        let e = exchanges[x].attempt.endpoint
        if e >= 0 {
            exchanges[x].attempt.endpoint = -1
            pools.exchangeFinished(e)
        }
        if let routes, let routed = exchanges[x].routed {
            exchanges[x].routed = nil
            routedTables.finished(routed.table, routes)
        }
        guard let outstanding = exchanges[x].attempt.outstanding else { return }
        balancers.requestFinished(outstanding)
        exchanges[x].attempt.outstanding = nil
    }
}
