// The whole HTTP request path allocates nothing in steady state: a real HTTPProxy on its own reactor thread,
// real loopback sockets, a client and an upstream on other threads; the reactor thread's own malloc calls are
// counted (the per-thread counter of Tools/malloc-count/count_malloc.c), over 10,000 requests after 1,000
// warm-up ones. Counted in Tools/scripts/test.sh's `--filter AllocationTests` run, where a missing counter
// fails the test (TernTestSupport's MallocCounter); a plain `swift test` checks the responses only.
import Glibc
import Synchronization
import TernConfig
import TernCore
import TernIO
import TernTelemetry
import TernTestSupport
import Testing
import TernProxy

/// Tern's HTTP proxy on a reactor thread between this thread (the client) and an upstream thread.
private final class ProxyRig<B: IOBackend>: @unchecked Sendable {
    let control = ReactorControl()
    var threads: [ReactorThread] = []
    var writer: AccessLogWriter? = nil
    let upstreamListener: Int32
    let mirrorListener: Int32
    let counters = RelayCounters()
    let client: Int32
    /// The requests sent in turn, each with the body length of its response, and whether that response must carry
    /// an allowed CORS origin's field.
    let requests: [(bytes: [UInt8], bodyLength: Int, cors: Bool)]
    private var sent = 0
    private let handler: CountingHandler<HTTPProxy<B>>
    var buffer = [UInt8](repeating: 0, count: 65536)

    /// `failEveryOther`: the upstream answers every other request it gets 503 (the route retries on 5xx: each client
    /// request's first try gets the 503, its retry the 200). `cors`: the requests alternate between one from an
    /// origin the route's corsPolicy allows (the upstream's response gets its fields) and a preflight the policy
    /// answers. `mirroring`: the route mirrors every request to a second upstream.
    init(counter: MallocCounter?, routed: Bool, telemetry telemetryOn: Bool, failEveryOther: Bool = false,
         cors: Bool = false, mirroring: Bool = false) throws {
        let (ul, ua) = try RigSockets.listener()
        upstreamListener = ul
        let (pl, pa) = try RigSockets.listener()
        threads.append(TestUpstream.http1(ul, name: "test-upstream", failEveryOther: failEveryOther))
        // The mirror's upstream (mirroring: every request is mirrored to it, on a connection of its own).
        let (ml, ma) = try RigSockets.listener()
        mirrorListener = ml
        if mirroring { threads.append(TestUpstream.http1(ml, name: "test-mirror", failEveryOther: false, concurrent: true)) }
        var routes: SnapshotCell<RouteTable>? = nil
        if routed {
            // The route the requests take matches by regex and rewrites the path with uriRegexRewrite, with the
            // reactor's copy of each regex; the rewrite's pattern is one-pass, so RE2 finds its group without
            // allocating (CompiledRegex says which patterns allocate).
            let yaml = """
                apiVersion: networking.istio.io/v1
                kind: ServiceEntry
                metadata: {name: upstream, namespace: test}
                spec:
                  hosts: [upstream]
                  ports: [{number: 80, name: http, protocol: HTTP}]
                  resolution: STATIC
                  endpoints: [{address: 127.0.0.1, ports: {http: \(ua.port)}}]
                ---
                apiVersion: networking.istio.io/v1
                kind: VirtualService
                metadata: {name: upstream, namespace: test}
                spec:
                  hosts: [upstream]
                  http:
                  - match: [{headers: {x-canary: {exact: "yes"}}}]
                    route: [{destination: {host: upstream}}]
                  - match: [{uri: {prefix: /cors}}]
                    corsPolicy:
                      allowOrigins: [{exact: "https://app.example"}, {regex: "https://[a-z]+\\\\.example"}]
                      allowMethods: [GET, POST]
                      allowHeaders: ["*"]
                      exposeHeaders: [x-a]
                      maxAge: 1h
                      allowCredentials: true
                    route: [{destination: {host: upstream}}]
                  - match: [{uri: {regex: "/sm[a-z]+"}}]
                    name: small
                    rewrite: {uriRegexRewrite: {match: '^/([a-z]+)$', rewrite: '/v1/\\1'}}
                    headers: {request: {set: {x-routed: small}}, response: {add: {x-served-by: tern}}}
                    route: [{destination: {host: upstream}, weight: 100}]
                \(failEveryOther ? "    retries: {attempts: 1, retryOn: 5xx, backoff: 1ms}" : "")
                \(mirroring ? "    mirror: {host: mirror}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: mirror, namespace: test}\nspec:\n  hosts: [mirror]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1, ports: {http: \(ma.port)}}]" : "")
                \(failEveryOther ? "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: upstream, namespace: test}\nspec:\n  host: upstream\n  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 5}}" : "")
                """
            routes = SnapshotCell(try RouteTable.compile(ConfigLoader.load(yaml: yaml, namespace: "test"), namespace: "test"),
                                  readers: 1)
        }
        if cors {
            requests = [
                (Array("GET /cors HTTP/1.1\r\nHost: upstream\r\nOrigin: https://shop.example\r\nAccept: */*\r\n\r\n".utf8), 100, true),
                (Array("OPTIONS /cors HTTP/1.1\r\nHost: upstream\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: x-a, x-b\r\n\r\n".utf8), 0, true),
            ]
        } else {
            requests = [(Array("GET /small?page=2 HTTP/1.1\r\nHost: upstream\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n".utf8), 100, false)]
        }
        let telemetry = telemetryOn ? Telemetry(reactors: 1, workload: WorkloadLabels(), reporter: .source) : nil
        var reporting = ProxyReporting()
        if telemetryOn {
            reporting.spans = SpanShard(capacity: 1 << 16)
            reporting.sampler = TraceSampler(percent: 100)
            let writer = try AccessLogWriter.start(shards: [AccessLogShard(format: .json)], path: "/dev/null")
            reporting.accessLog = writer.shards[0]
            self.writer = writer
        }
        let listener = RelayListener(fd: pl, upstream: ua)
        // The backend (a ring created with SINGLE_ISSUER belongs to the thread that first submits) and the
        // proxy are made on the reactor thread; the handler is handed back to read its count.
        let control = self.control
        nonisolated(unsafe) var made: CountingHandler<HTTPProxy<B>>? = nil
        let started = Atomic<Bool>(false)
        let rigRoutes = routes, rigReporting = reporting, rigCounters = counters
        threads.append(ReactorThread.start(name: "test-proxy") {
            let backend = try! B(settings: BackendSettings())
            let reactor = Reactor(index: 0, backend: backend, control: control, timerCapacity: 4096)
            let proxy = HTTPProxy<B>(listeners: [listener], settings: HTTPSettings(), relay: RelaySettings(),
                                     counters: rigCounters, capacity: 256, bufferPool: backend.buffers,
                                     routes: rigRoutes?.reader(0), telemetry: telemetry, reactorIndex: 0,
                                     reporting: rigReporting)
            let handler = CountingHandler(proxy, counter: counter)
            made = handler
            started.store(true, ordering: .releasing)
            try! reactor.run(handler)
        }!)
        while !started.load(ordering: .acquiring) { sched_yield() }
        handler = made!
        client = RigSockets.connect(pa)
    }

    /// The reactor thread's malloc calls so far (as of the last event it handled).
    var reactorMallocs: UInt { handler.mallocs.load(ordering: .acquiring) }

    /// One request and its whole response; false when the proxy answered otherwise or closed.
    func roundTrip() -> Bool {
        let (request, bodyLength, cors) = requests[sent % requests.count]
        sent += 1
        _ = request.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
        var have = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(client, $0.baseAddress! + have, $0.count - have) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            have += n
            var i = 3
            while i < have {
                if buffer[i] == 10 && buffer[i - 1] == 13 && buffer[i - 2] == 10 && buffer[i - 3] == 13 {
                    guard have >= i + 1 + bodyLength else { break }
                    if cors && !hasAllowOrigin(before: i) { return false }
                    // "HTTP/1.1 200"
                    return buffer[9] == UInt8(ascii: "2") && buffer[10] == UInt8(ascii: "0") && buffer[11] == UInt8(ascii: "0")
                }
                i += 1
            }
        }
    }

    /// Whether the response head in `buffer[0..<end]` carries an access-control-allow-origin field.
    private func hasAllowOrigin(before end: Int) -> Bool {
        let field = Array("\r\naccess-control-allow-origin: https://".utf8)
        guard end >= field.count else { return false }
        for start in 0...(end - field.count) where buffer[start..<(start + field.count)].elementsEqual(field) { return true }
        return false
    }

    func stop() {
        close(client)
        control.requestStop()
        // Wakes the upstream thread from accept (close alone would not), so the join cannot hang whatever the
        // proxy did with its upstream connections.
        shutdown(upstreamListener, Int32(SHUT_RDWR))
        shutdown(mirrorListener, Int32(SHUT_RDWR))
        threads.forEach { $0.join() }
        writer?.stop()
        close(upstreamListener)
        close(mirrorListener)
    }
}

@Suite struct ProxyAllocationTests {
    func run<B: IOBackend>(_: B.Type, routed: Bool, telemetry: Bool, retrying: Bool = false, cors: Bool = false,
                           mirroring: Bool = false) throws {
        #if DEBUG
        // Unoptimised code allocates per request (unspecialised generics, iterator boxes): the count means
        // something only in a release build (Tools/scripts/test.sh builds one for this suite).
        if TestRequirement.isSet("TERN_REQUIRE_MALLOC_COUNTER") {
            Issue.record("ProxyAllocationTests counts only in a release build (swift test -c release)")
        }
        let counter: MallocCounter? = nil
        #else
        let counter = try MallocCounter.load()
        #endif
        let rig = try ProxyRig<B>(counter: counter, routed: routed, telemetry: telemetry, failEveryOther: retrying, cors: cors,
                                  mirroring: mirroring)
        defer { rig.stop() }
        // Retried requests back off (up to 1 ms each): fewer of them.
        let warm = retrying ? 500 : 1_000, counted = retrying ? 2_000 : 10_000
        var failed: [Int] = []
        for i in 0..<warm where !rig.roundTrip() { failed.append(i) }
        let before = rig.reactorMallocs
        let slotsBefore = rig.counters.mirrorSlotsMade.load(ordering: .relaxed)
        for i in warm..<(warm + counted) where !rig.roundTrip() { failed.append(i) }
        // One more exchange, so the tail of the last counted one (its send completion, the connection back to
        // the pool, the report) has run before the second sample: both samples fall at the same phase.
        if !rig.roundTrip() { failed.append(warm + counted) }
        let after = rig.reactorMallocs
        // A mirror connection slot is given its memory (request region, response parser: two allocations) the first
        // time it is used, at most 64 per reactor, never again: slots first used in the window are discounted.
        let slots = rig.counters.mirrorSlotsMade.load(ordering: .relaxed) - slotsBefore
        #expect(failed.isEmpty, "requests not answered 200: \(failed.prefix(10))")
        if mirroring {
            // Every request was mirrored and its mirror answered (bar the last few still on their way).
            #expect(rig.counters.mirrorsAnswered.load(ordering: .relaxed) >= warm + counted - 8)
        }
        if counter != nil {
            #expect(before > 0, "the reactor thread's count was sampled")
            // (A slot's first use may straddle a sample: its count and its two allocations land on either side.)
            let expected = 2 * slots, got = Int(after - before)
            #expect(got == expected || (mirroring && abs(got - expected) == 2),
                    "\(got) allocations on the reactor thread over \(counted) requests (\(slots) mirror slots first used)")
        }
    }

    @Test func plainRequestsOverEpollAllocateNothing() throws {
        try run(EpollBackend.self, routed: false, telemetry: false)
    }

    @Test func routedRequestsWithEveryTelemetryFeatureOverEpollAllocateNothing() throws {
        try run(EpollBackend.self, routed: true, telemetry: true)
    }

    /// Every other try answered 503 and retried (retryOn 5xx), with outlier detection counting every try: the retry
    /// (a new connection, the request sent again from the held bytes, the back-off timer) and the counting allocate
    /// nothing either.
    /// Each request is also mirrored (a copy composed, sent on a mirror connection, its response read and dropped).
    @Test func mirroredRequestsOverEpollAllocateNothing() throws {
        try run(EpollBackend.self, routed: true, telemetry: false, mirroring: true)
    }

    @Test func retriedRequestsOverEpollAllocateNothing() throws {
        try run(EpollBackend.self, routed: true, telemetry: true, retrying: true)
    }

    /// CORS (Filters/HTTPProxy+CORS.swift): every other request comes from an origin the route's regex allows (its
    /// response gets the policy's fields), the others are preflights the policy answers (the request's headers
    /// echoed); neither allocates.
    @Test func corsRequestsAndPreflightsOverEpollAllocateNothing() throws {
        try run(EpollBackend.self, routed: true, telemetry: true, cors: true)
    }

    @Test(.enabled(if: TestRequirement.isSet("TERN_REQUIRE_IO_URING") || (try? URingBackend(settings: BackendSettings())) != nil,
                   "io_uring cannot be set up here"))
    func routedRequestsWithEveryTelemetryFeatureOverIOURingAllocateNothing() throws {
        try run(URingBackend.self, routed: true, telemetry: true)
    }
}
