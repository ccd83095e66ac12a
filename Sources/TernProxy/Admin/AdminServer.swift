// The admin, health and Prometheus listeners (../shared/reference/istio.md §7): one thread beside the reactors,
// one short request per connection ("connection: close"), every read and write bounded by a deadline, so a
// slow client costs this thread a little time and the reactors nothing. Each endpoint reads state the reactors
// publish (metric shards, relaxed counters) or the main thread sets (AdminState); none touches a reactor.
import Synchronization
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

/// Process state the endpoints read and change.
public final class AdminState: Sendable {
    public enum ServerState: Int, Sendable {
        case initializing = 0, live, draining
        var name: String {
            switch self {
            case .initializing: "INITIALIZING"
            case .live: "LIVE"
            case .draining: "DRAINING"
            }
        }
    }

    /// A cluster as /clusters shows it; endpoint keys find their live counts in the metric shards.
    public struct ClusterView: Sendable {
        public var name: String
        public var endpoints: [(address: String, port: UInt16, weight: UInt32, key: UInt64)]
    }

    private let stateValue = Atomic<Int>(ServerState.initializing.rawValue)
    /// POST /healthcheck/fail: readiness answers 503 until /healthcheck/ok.
    let healthFailed = Atomic<Bool>(false)
    let configVersion = Atomic<Int>(0)
    let configApplied = Atomic<Int>(0)
    let configRejected = Atomic<Int>(0)
    /// Side-listener connections closed to admit a newer one (a port at its connection cap).
    let sideConnectionsEvicted = Atomic<Int>(0)
    /// The configuration being served, kept to be rendered when /config_dump asks (a reload no longer pays
    /// for a JSON rendering nobody may read: about an eighth of its CPU).
    private let config = Mutex<(version: Int, table: RouteTable?, clusters: [ClusterView], updated: UInt64)>((0, nil, [], 0))
    let startWallMicros = System.wallClockMicros()
    let startNanos = System.monotonicNanos()

    public init() {}

    public var state: ServerState {
        get { ServerState(rawValue: stateValue.load(ordering: .acquiring)) ?? .initializing }
        set { stateValue.store(newValue.rawValue, ordering: .releasing) }
    }

    /// Ready: live, not draining, and not failed by /healthcheck/fail.
    public var ready: Bool { state == .live && !healthFailed.load(ordering: .relaxed) }

    /// A configuration was applied: its version, dump and clusters become what the endpoints show.
    func applied(version: Int, table: RouteTable) {
        configVersion.store(version, ordering: .relaxed)
        configApplied.add(1, ordering: .relaxed)
        let clusters = table.clusters.map { c in
            ClusterView(name: c.name, endpoints: c.endpoints.map { e in
                (e.address, e.port, e.weight, EndpointKey.make(address: e.address, port: e.port))
            })
        }
        config.withLock { $0 = (version, table, clusters, System.wallClockMicros()) }
    }

    func rejected() { configRejected.add(1, ordering: .relaxed) }

    var configDump: String {
        let (version, table, updated) = config.withLock { ($0.version, $0.table, $0.updated) }
        guard let table else { return "" }
        return Self.dump(version: version, table: table, updated: updated)
    }
    var clusters: [ClusterView] { config.withLock { $0.clusters } }

    /// /config_dump: the active resources as written, with their version and when it was applied
    /// (`updated`, wall-clock microseconds).
    static func dump(version: Int, table: RouteTable, updated: UInt64) -> String {
        var out = "{\n  \"version\": \(version),\n  \"last_updated\": \(JSONText.quote(AccessLogLine.startTime(updated))),\n"
        out += "  \"namespace\": \(JSONText.quote(table.namespace)),\n  \"resources\": ["
        for (i, r) in table.resources.enumerated() {
            out += i == 0 ? "\n" : ",\n"
            out += "    {\"kind\": \(JSONText.quote(r.kind)), \"name\": \(JSONText.quote(r.name)), \"namespace\": \(JSONText.quote(r.namespace)), "
            out += "\"file\": \(JSONText.quote(r.file)), \"line\": \(r.line), \"resource\": \(r.document.json)}"
        }
        out += table.resources.isEmpty ? "],\n" : "\n  ],\n"
        out += "  \"clusters\": ["
        for (i, c) in table.clusters.enumerated() {
            out += i == 0 ? "\n" : ",\n"
            out += "    {\"name\": \(JSONText.quote(c.name)), \"endpoints\": ["
            out += c.endpoints.map { "{\"address\": \(JSONText.quote($0.address)), \"port\": \($0.port), \"weight\": \($0.weight)}" }.joined(separator: ", ")
            out += "]}"
        }
        out += table.clusters.isEmpty ? "]\n}\n" : "\n  ]\n}\n"
        return out
    }
}

/// What /server_info and /listeners report (fixed at start).
public struct ServerInfo: Sendable {
    public var version: String
    public var ioBackend: String
    public var cores: Int
    public var ringDepth: Int
    public var listeners: [(kind: String, address: String)]
    public var options: [(String, String)]
}

final class AdminServer: @unchecked Sendable {
    enum Kind: String { case admin, health, prometheus }
    struct Listener {
        var fd: Int32
        var kind: Kind
        var address: SocketAddress
    }

    private let listeners: [Listener]
    private let state: AdminState
    private let telemetry: Telemetry
    private let info: ServerInfo
    private let controls: [ReactorControl]
    private let counters: RelayCounters
    private let extra: @Sendable () -> [MetricFamily]
    private let stopRequested = Atomic<Bool>(false)
    private var thread: ReactorThread? = nil

    /// Binds the listeners; a taken default address is a warning, a taken explicit one an error (nil).
    static func bind(_ settings: TelemetrySettings) -> [Listener]? {
        var out: [Listener] = []
        let wanted: [(Kind, TelemetrySettings.Address)] = [(.admin, settings.admin), (.health, settings.health), (.prometheus, settings.prometheus)]
        for (kind, setting) in wanted {
            guard let address = setting.address else { continue }
            do {
                let fd = try System.listen(on: address, backlog: 128, reusePort: false)
                out.append(Listener(fd: fd, kind: kind, address: (try? System.localAddress(fd)) ?? address))
            } catch {
                let why = "cannot listen on \(address) for --\(kind.rawValue): \(Errno.name(error.errno)) (\(Errno.message(error.errno)))"
                if case .required = setting {
                    Log.error(why)
                    out.forEach { System.close($0.fd) }
                    return nil
                }
                Log.warn("\(why); running without it")
            }
        }
        return out
    }

    init(listeners: [Listener], state: AdminState, telemetry: Telemetry, info: ServerInfo, controls: [ReactorControl],
         counters: RelayCounters, extra: @escaping @Sendable () -> [MetricFamily])
    {
        self.listeners = listeners
        self.state = state
        self.telemetry = telemetry
        self.info = info
        self.controls = controls
        self.counters = counters
        self.extra = extra
    }

    func start() -> Bool {
        guard !listeners.isEmpty else { return true }
        thread = ReactorThread.start(name: "tern-admin") { [self] in run() }
        return thread != nil
    }

    func stop() {
        stopRequested.store(true, ordering: .releasing)
        thread?.join()
        thread = nil
        listeners.forEach { System.close($0.fd) }
    }

    /// A side connection in progress: its head as received, then its response as it is sent.
    struct Client {
        var fd: Int32
        var kind: Kind
        var listener: Int
        var input: [UInt8] = []
        var output: [UInt8] = []
        var sent = 0
        /// Accept + `clientDeadline`: a connection that has not been answered and sent its response by then is
        /// closed.
        var deadline: UInt64
    }

    /// Connections each side listener holds at once; past it, the oldest is closed to admit the new one (a
    /// port full of idle or slow connections must not keep a readiness probe out).
    static let connectionsPerListener = 64
    static let clientDeadline: UInt64 = 2_000_000_000
    static let maxHead = 16384

    /// The side listeners' loop: every connection of every listener served at once, non-blocking, each under
    /// its deadline, so slow or idle clients on one port delay neither the others nor a probe.
    private func run() {
        var clients: [Client] = []
        var polls: [PollRequest] = []
        /// A listener whose accept failed (descriptors exhausted) is not polled until then: it stays readable,
        /// and polling it would spin.
        var resting = [UInt64](repeating: 0, count: listeners.count)
        while !stopRequested.load(ordering: .acquiring) {
            let now = System.monotonicNanos()
            clients.removeAll { c in
                guard now >= c.deadline else { return false }
                // A response cut short is said so (its client sees the content-length unmet).
                if !c.output.isEmpty {
                    Log.warn("\(c.kind.rawValue): a response cut at its deadline after \(c.sent) of \(c.output.count) bytes")
                }
                System.close(c.fd)
                return true
            }
            polls.removeAll(keepingCapacity: true)
            for (i, l) in listeners.enumerated() {
                polls.append(PollRequest(fd: l.fd, events: now >= resting[i] ? PollRequest.readable : 0))
            }
            for c in clients {
                polls.append(PollRequest(fd: c.fd, events: c.output.isEmpty ? PollRequest.readable : PollRequest.writable))
            }
            var wait: Int32 = 100
            if let next = clients.map(\.deadline).min() { wait = min(wait, Int32((next - now) / 1_000_000) + 1) }
            guard System.poll(&polls, timeoutMillis: wait) else { continue }
            // Clients first (their indexes are those of `polls` after the listeners), health probes before the
            // rest (a burst of scrapes or admin requests renders first otherwise), then new connections.
            var done: [Int] = []
            for pass in 0..<2 {
                for i in clients.indices where (clients[i].kind == .health) == (pass == 0) {
                    let p = polls[listeners.count + i]
                    if clients[i].output.isEmpty ? p.isReadable : p.isWritable {
                        if !progress(&clients[i]) { done.append(i) }
                    }
                }
            }
            done.sort()
            for i in done.reversed() {
                System.close(clients[i].fd)
                clients.remove(at: i)
            }
            for (li, l) in listeners.enumerated() where polls[li].isReadable {
                // A few per wake-up, so one listener cannot starve the others.
                for n in 0..<16 {
                    guard let fd = System.accept(l.fd) else {
                        // Readable yet nothing accepted: descriptors ran out (or the connection went); rest a while.
                        if n == 0 { resting[li] = System.monotonicNanos() + 100_000_000 }
                        break
                    }
                    // Full: the oldest connection that has sent nothing goes first, else the oldest.
                    if clients.filter({ $0.listener == li }).count >= Self.connectionsPerListener,
                       let oldest = clients.firstIndex(where: { $0.listener == li && $0.input.isEmpty && $0.output.isEmpty })
                        ?? clients.firstIndex(where: { $0.listener == li })
                    {
                        System.close(clients[oldest].fd)
                        clients.remove(at: oldest)
                        state.sideConnectionsEvicted.add(1, ordering: .relaxed)
                    }
                    clients.append(Client(fd: fd, kind: l.kind, listener: li, deadline: System.monotonicNanos() + Self.clientDeadline))
                }
            }
        }
        for c in clients { System.close(c.fd) }
    }

    /// Reads or writes what `c`'s socket is ready for; false when the connection is finished (answered, closed
    /// by the peer, failed).
    private func progress(_ c: inout Client) -> Bool {
        if !c.output.isEmpty {
            let n = System.sendAvailable(c.fd, c.output, from: c.sent)
            if n == -Errno.EAGAIN { return true }
            guard n > 0 else { return false }
            c.sent += n
            guard c.sent >= c.output.count else { return true }
            _ = System.shutdown(c.fd, write: true, read: false)
            return false
        }
        let n = System.receiveAvailable(c.fd, max: 4096, into: &c.input)
        if n == -Errno.EAGAIN { return true }
        guard n > 0 else { return false }
        // The proxy's own parser, as strict here as on the data path (the health and Prometheus listeners face
        // the pod's network); a head it refuses, or one over 16 KiB, gets 400.
        var parser = HTTP1Parser(kind: .request, limits: .init(maxHeaderBytes: Self.maxHead, maxHeaderCount: 100, maxURIBytes: 8192))
        let response: Response
        do {
            guard try parser.parse(c.input.span) == .complete else {
                if c.input.count < Self.maxHead { return true }
                throw HTTPParseError(.headTooLarge)
            }
            response = Self.request(parser.head, c.input).map { handle($0, c.kind) } ?? Response(status: 400, body: "bad request\n")
        } catch {
            response = Response(status: 400, body: "bad request\n")
        }
        var text = "HTTP/1.1 \(response.status) \(Self.reason(response.status))\r\ncontent-type: \(response.contentType)\r\n"
        text += "content-length: \(response.body.utf8.count)\r\ncache-control: no-cache, max-age=0\r\nconnection: close\r\n\r\n"
        text += response.body
        c.output = Array(text.utf8)
        return progress(&c)
    }

    // MARK: - One request

    struct Request {
        var method: String
        var path: String
        var query: [String: String]
        /// The Host, Origin and Sec-Fetch-Site fields (nil: absent): what tells a browser's request from a tool's.
        var host: String? = nil
        var origin: String? = nil
        var fetchSite: String? = nil
    }

    struct Response {
        var status: Int
        var contentType = "text/plain; charset=utf-8"
        var body: String
    }

    /// The method, path and query of a parsed head; nil for a target not in origin form ("/path?query").
    static func request(_ head: HTTP1Head, _ bytes: [UInt8]) -> Request? {
        guard bytes[head.target.lowerBound] == UInt8(ascii: "/") else { return nil }
        let method = String(decoding: bytes[head.startLineOffset..<(head.target.lowerBound - 1)], as: UTF8.self)
        let target = String(decoding: bytes[head.target], as: UTF8.self)
        let split = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var query: [String: String] = [:]
        if split.count == 2 {
            for item in split[1].split(separator: "&") {
                let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query[percentDecoded(kv[0])] = kv.count == 2 ? percentDecoded(kv[1]) : ""
            }
        }
        var request = Request(method: method, path: String(split[0]), query: query)
        for f in head.fields {
            let name = String(decoding: bytes[f.name], as: UTF8.self).lowercased()
            let value = String(decoding: bytes[f.value], as: UTF8.self)
            switch name {
            case "host": request.host = request.host ?? value
            case "origin": request.origin = request.origin ?? value
            case "sec-fetch-site": request.fetchSite = request.fetchSite ?? value.lowercased()
            default: break
            }
        }
        return request
    }

    /// Why the admin listener refuses a request a browser may have been made to send (nil: it does not).
    /// Every request needs a Host that is an IP literal or `localhost` (a page whose DNS name was rebound to
    /// 127.0.0.1 sends its own name); one that changes the proxy (POST) also needs no Origin but a loopback
    /// one, and no Sec-Fetch-Site of `cross-site` or `same-site`. Tools (`curl -X POST
    /// 127.0.0.1:15000/quitquitquit` in a preStop hook, kubectl port-forward) send none of these.
    static func refusal(_ r: Request, changes: Bool) -> String? {
        guard let host = r.host, let hostname = authorityHost(host), isLiteralOrLocalhost(hostname) else {
            return "the admin listener answers requests for an IP address or localhost only (Host: \(r.host ?? "none"))"
        }
        guard changes else { return nil }
        if let site = r.fetchSite, site == "cross-site" || site == "same-site" {
            return "a cross-site request from a browser cannot change the proxy (Sec-Fetch-Site: \(site))"
        }
        if let origin = r.origin {
            // "scheme://host[:port]"; "null" (an opaque origin) and anything else is not loopback.
            var authority = Substring(origin)
            if let colon = origin.firstIndex(of: ":"), origin[colon...].hasPrefix("://") {
                authority = origin[origin.index(colon, offsetBy: 3)...]
            }
            guard let name = authorityHost(String(authority)), isLoopback(name) else {
                return "a request from a web page of another origin cannot change the proxy (Origin: \(origin))"
            }
        }
        return nil
    }

    /// The host of an authority `host[:port]` or `[v6][:port]`, lowercased; nil when malformed.
    static func authorityHost(_ authority: String) -> String? {
        var a = Substring(authority.lowercased())
        if let slash = a.firstIndex(of: "/") { a = a[..<slash] }
        if a.hasPrefix("[") {
            guard let close = a.firstIndex(of: "]") else { return nil }
            return String(a[a.index(after: a.startIndex)..<close])
        }
        if let colon = a.lastIndex(of: ":") { a = a[..<colon] }
        return a.isEmpty ? nil : String(a)
    }

    static func isLiteralOrLocalhost(_ host: String) -> Bool {
        host == "localhost" || IPAddress(parsing: host) != nil
    }

    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" { return true }
        guard let ip = IPAddress(parsing: host) else { return false }
        // 127.0.0.0/8, ::1, and ::ffff:127.0.0.0/104.
        if !ip.isV6 { return ip.low >> 24 == 127 }
        return ip.high == 0 && (ip.low == 1 || (ip.low >> 32 == 0xFFFF && (ip.low >> 24) & 0xFF == 127))
    }

    static func percentDecoded(_ s: Substring) -> String {
        var out: [UInt8] = []
        var i = s.utf8.startIndex
        let u = s.utf8
        while i < u.endIndex {
            let b = u[i]
            if b == 37, let h1 = u.index(i, offsetBy: 1, limitedBy: u.endIndex), h1 < u.endIndex,
               let h2 = u.index(i, offsetBy: 2, limitedBy: u.endIndex), h2 < u.endIndex,
               let v = UInt8(String(decoding: [u[h1], u[h2]], as: UTF8.self), radix: 16)
            {
                out.append(v)
                i = u.index(i, offsetBy: 3)
            } else {
                out.append(b == 43 ? 32 : b)
                i = u.index(after: i)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 400: "Bad Request"
        case 404: "Not Found"
        case 403: "Forbidden"
        case 405: "Method Not Allowed"
        default: "Service Unavailable"
        }
    }

    func handle(_ r: Request, _ kind: Kind) -> Response {
        switch kind {
        case .health:
            guard r.path == "/healthz/ready" else { return Response(status: 404, body: "not found\n") }
            return state.ready ? Response(status: 200, body: "") : Response(status: 503, body: "not ready: \(state.state.name.lowercased())\n")
        case .prometheus:
            guard r.path == "/stats/prometheus" else { return Response(status: 404, body: "not found\n") }
            return prometheus()
        case .admin:
            return admin(r)
        }
    }

    private static let mutations: Set<String> = ["/quitquitquit", "/drain_listeners", "/healthcheck/fail", "/healthcheck/ok"]

    private func admin(_ r: Request) -> Response {
        let changes = Self.mutations.contains(r.path) || (r.path == "/logging" && !r.query.isEmpty)
        if let why = Self.refusal(r, changes: changes || r.method == "POST") {
            Log.warn("admin: refused \(r.method) \(r.path): \(why)")
            return Response(status: 403, body: why + "\n")
        }
        if changes {
            // Envoy: a change must be a POST; a GET changes nothing.
            guard r.method == "POST" else { return Response(status: 400, body: "\(r.path) changes the proxy: use POST\n") }
        }
        switch r.path {
        case "/", "/help":
            return Response(status: 200, body: Self.help)
        case "/ready":
            let s = state.state
            return Response(status: s == .live ? 200 : 503, body: "\(s.name)\n")
        case "/stats":
            switch r.query["format"] {
            case "prometheus": return prometheus()
            case "json": return Response(status: 200, contentType: "application/json", body: statsJSON(filter: r.query["filter"]))
            case nil: return Response(status: 200, body: stats(filter: r.query["filter"]).map { "\($0.0): \($0.1)\n" }.joined())
            case let f?: return Response(status: 400, body: "unknown format '\(f)': json or prometheus\n")
            }
        case "/stats/prometheus":
            return prometheus()
        case "/config_dump":
            let dump = state.configDump
            return Response(status: 200, contentType: "application/json", body: dump.isEmpty ? "{\"version\": 0, \"resources\": [], \"clusters\": []}\n" : dump)
        case "/clusters":
            return clusters(json: r.query["format"] == "json")
        case "/listeners":
            if r.query["format"] == "json" {
                let items = info.listeners.map { "{\"name\": \(JSONText.quote($0.kind)), \"local_address\": \(JSONText.quote($0.address))}" }
                return Response(status: 200, contentType: "application/json", body: "{\"listener_statuses\": [\(items.joined(separator: ", "))]}\n")
            }
            return Response(status: 200, body: info.listeners.map { "\($0.kind)::\($0.address)\n" }.joined())
        case "/server_info":
            return Response(status: 200, contentType: "application/json", body: serverInfo())
        case "/quitquitquit":
            Log.info("admin: /quitquitquit: exiting")
            System.terminateSelf()
            return Response(status: 200, body: "OK\n")
        case "/drain_listeners":
            Log.info("admin: /drain_listeners: listeners closed, open connections finish")
            state.state = .draining
            controls.forEach { $0.requestDrain() }
            return Response(status: 200, body: "OK\n")
        case "/healthcheck/fail":
            state.healthFailed.store(true, ordering: .relaxed)
            Log.info("admin: health check forced to fail")
            return Response(status: 200, body: "OK\n")
        case "/healthcheck/ok":
            state.healthFailed.store(false, ordering: .relaxed)
            Log.info("admin: health check restored")
            return Response(status: 200, body: "OK\n")
        case "/logging":
            if let name = r.query["level"] {
                guard let level = LogLevel(name: name) else {
                    return Response(status: 400, body: "unknown level '\(name)': trace, debug, info, warn or error\n")
                }
                Log.shared.level = level
                Log.info("admin: log level set to \(level)")
            }
            return Response(status: 200, body: "active loggers:\n  tern: \(Log.shared.level)\n")
        default:
            return Response(status: 404, body: "invalid path. admin commands are:\n" + Self.help)
        }
    }

    static let help = """
        admin commands are:
          /: this help
          /clusters: upstream clusters, their endpoints, health and active requests (?format=json)
          /config_dump: the configuration being served, with its version (JSON)
          /drain_listeners (POST): stop accepting; open connections finish
          /healthcheck/fail (POST): readiness answers 503
          /healthcheck/ok (POST): readiness restored
          /listeners: bound listeners (?format=json)
          /logging: the log level; POST /logging?level=debug changes it
          /quitquitquit (POST): drain and exit (as SIGTERM)
          /ready: LIVE (200), INITIALIZING or DRAINING (503)
          /server_info: version, state, io backend, cores, ring depth, uptime (JSON)
          /stats: counters and gauges (?format=json|prometheus, ?filter=REGEX)
          /stats/prometheus: Prometheus text

        """

    private func prometheus() -> Response {
        Response(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: telemetry.prometheusText(extra: extra()))
    }

    /// Flat `name: value` statistics, Envoy's /stats shape: Tern's own metrics and Istio's request counters.
    private func stats(filter: String?) -> [(String, String)] {
        var out: [(String, String)] = []
        for f in extra() {
            for s in f.samples {
                let labels = s.labels.map { "\($0.0)=\($0.1)" }.joined(separator: ".")
                out.append((labels.isEmpty ? f.name : "\(f.name).\(labels)", PrometheusWriter.number(s.value)))
            }
        }
        var byCode: [String: UInt64] = [:]
        for (key, words) in telemetry.httpSeries() {
            let k = SeriesKey(raw: key)
            let host = k.inbound ? "inbound" : telemetry.services.service(k.service).host
            let name = "istio_requests_total.\(host).\(k.code).\(k.flags.description)"
            byCode[name, default: 0] &+= words[HTTPWords.requests - 1]
        }
        for (k, v) in byCode.sorted(by: { $0.key < $1.key }) { out.append((k, String(v))) }
        out.sort { $0.0 < $1.0 }
        guard let filter, !filter.isEmpty else { return out }
        // Envoy's admin filter: RE2, matching anywhere in the name, with no program-size limit.
        guard case .success(let re) = CompiledRegex.compile(filter, maxProgramSize: nil) else { return [] }
        return out.filter { re.occurs(in: $0.0) }
    }

    private func statsJSON(filter: String?) -> String {
        let items = stats(filter: filter).map { "{\"name\": \(JSONText.quote($0.0)), \"value\": \($0.1)}" }
        return "{\"stats\": [\(items.joined(separator: ", "))]}\n"
    }

    private func clusters(json: Bool) -> Response {
        var active: [UInt64: (requests: Int64, connections: Int64)] = [:]
        for shard in telemetry.shards {
            shard.endpoints.forEach { key, words in
                var v = active[key] ?? (0, 0)
                v.requests &+= Int64(bitPattern: words[EndpointWords.activeRequests - 1])
                v.connections &+= Int64(bitPattern: words[EndpointWords.connections - 1])
                active[key] = v
            }
        }
        let views = state.clusters
        let now = System.monotonicNanos()
        if json {
            let items = views.map { c in
                let hosts = c.endpoints.map { e in
                    let a = active[e.key] ?? (0, 0)
                    let ejected = counters.outliers.isEjected(cluster: c.name, address: "\(e.address):\(e.port)", now: now)
                    return "{\"address\": {\"socket_address\": {\"address\": \(JSONText.quote(e.address)), \"port_value\": \(e.port)}}, "
                        + "\"weight\": \(e.weight), \"health_status\": {\"eds_health_status\": \"HEALTHY\", \"failed_outlier_check\": \(ejected)}, "
                        + "\"stats\": [{\"name\": \"rq_active\", \"value\": \(a.requests)}, {\"name\": \"cx_active\", \"value\": \(a.connections)}]}"
                }
                return "{\"name\": \(JSONText.quote(c.name)), \"host_statuses\": [\(hosts.joined(separator: ", "))]}"
            }
            return Response(status: 200, contentType: "application/json", body: "{\"cluster_statuses\": [\(items.joined(separator: ", "))]}\n")
        }
        var out = ""
        for c in views {
            for e in c.endpoints {
                let a = active[e.key] ?? (0, 0)
                let host = e.address.contains(":") ? "[\(e.address)]:\(e.port)" : "\(e.address):\(e.port)"
                let prefix = "\(c.name)::\(host)::"
                out += "\(prefix)rq_active::\(a.requests)\n\(prefix)cx_active::\(a.connections)\n\(prefix)weight::\(e.weight)\n"
                // Envoy's flag for an endpoint outlier detection ejected; no active health checking.
                let ejected = counters.outliers.isEjected(cluster: c.name, address: "\(e.address):\(e.port)", now: now)
                out += "\(prefix)health_flags::\(ejected ? "/failed_outlier_check" : "healthy")\n"
            }
        }
        return Response(status: 200, body: out)
    }

    private func serverInfo() -> String {
        let uptime = (System.monotonicNanos() - state.startNanos) / 1_000_000_000
        var out = "{\n  \"version\": \(JSONText.quote(info.version)),\n  \"state\": \(JSONText.quote(state.state.name)),\n"
        out += "  \"io_backend\": \(JSONText.quote(info.ioBackend)),\n  \"cores\": \(info.cores),\n  \"ring_depth\": \(info.ringDepth),\n"
        out += "  \"uptime_current_epoch\": \"\(uptime)s\",\n  \"uptime_all_epochs\": \"\(uptime)s\",\n"
        out += "  \"command_line_options\": {"
        out += info.options.map { "\(JSONText.quote($0.0)): \(JSONText.quote($0.1))" }.joined(separator: ", ")
        out += "}\n}\n"
        return out
    }
}
