// The HTTP/1.1 codec and proxy path, per request, after warm-up: allocations (exact, the claim: none in steady
// state) and wall-clock time (reported, never gated: the machines are shared). The parser's time per head gives
// its throughput in bytes per nanosecond, that is GB/s.
import Benchmark
import Glibc
import Synchronization
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernProxy
import TernTelemetry

/// A typical service-to-service request head (about 400 bytes, 9 fields), as a mesh forwards them.
let typicalHead = Array((
    "GET /api/v1/carts/8f14e45f/items?limit=20&offset=40 HTTP/1.1\r\n"
    + "Host: cart.shop.svc.cluster.local\r\n"
    + "User-Agent: checkout/2.14.1 (okhttp/4.12.0)\r\n"
    + "Accept: application/json\r\n"
    + "Accept-Encoding: gzip\r\n"
    + "Authorization: Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjaGVja291dCJ9.c2lnbmF0dXJl\r\n"
    + "x-request-id: 3f2a9c1e-7b4d-4e8a-9f6c-2d1b0a9e8c7f\r\n"
    + "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    + "Content-Type: application/json\r\n"
    + "\r\n").utf8)

/// A blocking loopback socket pair helper and an upstream that answers every request with a 100-byte body.
enum Sockets {
    static func listener() -> (Int32, SocketAddress) {
        let l = try! System.listen(on: SocketAddress(parsing: "127.0.0.1:0")!)
        return (l, try! System.localAddress(l))
    }

    static func connect(_ address: SocketAddress) -> Int32 {
        let c = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var s = address.storage
        _ = withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(c, $0, address.length) } }
        var one: Int32 = 1
        setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
        return c
    }

    /// Reads one response with a 100-byte body (head ends at CRLFCRLF) into `buffer`; false at end of stream.
    static func readResponse(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ capacity: Int) -> Bool {
        var have = 0
        while true {
            let n = read(fd, buffer + have, capacity - have)
            if n <= 0 { return false }
            have += n
            let bytes = UnsafeRawBufferPointer(start: buffer, count: have)
            var i = 3
            while i < have {
                if bytes[i] == 10 && bytes[i - 1] == 13 && bytes[i - 2] == 10 && bytes[i - 3] == 13 {
                    if have >= i + 1 + 100 { return true }
                    break
                }
                i += 1
            }
        }
    }
}

/// A mesh of `count` services, each with a ServiceEntry and a VirtualService of three routes (header match,
/// prefix match, default), as YAML.
func meshYAML(_ count: Int) -> String {
    var out = ""
    for i in 0..<count {
        out += """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: svc\(i), namespace: bench}
        spec:
          hosts: [svc\(i)]
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: STATIC
          endpoints: [{address: 127.0.0.\(1 + i % 200), ports: {http: 8080}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: svc\(i), namespace: bench}
        spec:
          hosts: [svc\(i)]
          http:
          - match: [{headers: {x-canary: {exact: "yes"}}}]
            route: [{destination: {host: svc\(i)}}]
          - match: [{uri: {prefix: /api/v2/}}]
            route: [{destination: {host: svc\(i)}}]
          - route: [{destination: {host: svc\(i)}}]
        ---

        """
    }
    return out
}

func compileMesh(_ count: Int) -> RouteTable {
    let set = ConfigLoader.load(yaml: meshYAML(count), file: "mesh.yaml", namespace: "bench")
    return try! RouteTable.compile(set, namespace: "bench")
}

/// One request head to route: Host of the service in the middle of the mesh, a path the second route takes.
func routedHead(_ count: Int) -> (HTTP1Head, [UInt8]) {
    let raw = Array("GET /api/v2/items?limit=5 HTTP/1.1\r\nHost: svc\(count / 2).bench.svc.cluster.local\r\nAccept: */*\r\n\r\n".utf8)
    var parser = HTTP1Parser(kind: .request)
    _ = try! raw.withUnsafeBytes { try parser.parse($0) }
    return (parser.head, raw)
}

/// Routing for the rig's `--config` variant: the upstream as the one endpoint of service `api`, reached through a
/// route that rewrites the path with uriRegexRewrite (two groups swapped, the query kept) and sets the Host.
func regexRewriteMesh(upstreamPort: UInt16) -> RouteTable {
    let yaml = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: api, namespace: bench}
        spec:
          hosts: [api]
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: STATIC
          endpoints: [{address: 127.0.0.1, ports: {http: \(upstreamPort)}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: api, namespace: bench}
        spec:
          hosts: [api]
          http:
          - match: [{uri: {prefix: /svc/}}]
            rewrite:
              uriRegexRewrite: {match: '^/svc/([^/]+)/(.*)$', rewrite: '/\\2/\\1'}
              authority: internal.api
            route: [{destination: {host: api}}]
        """
    let set = ConfigLoader.load(yaml: yaml, file: "bench.yaml", namespace: "bench")
    return try! RouteTable.compile(set, namespace: "bench")
}

/// What a rig's proxy does beside forwarding: Istio's metrics recorded, routing by Istio configuration, spans,
/// access-log lines.
struct RigOptions {
    var metrics = false
    var routed = false
    /// Every request traced (sampling 100 %: a span per request into the reactor's ring, no exporter).
    var tracing = false
    /// An access-log line per request, written to /dev/null by the writer thread.
    var accessLog = false
    /// Routed through a uriRegexRewrite route (`regexRewriteMesh`) instead.
    var regexRewrite = false
}

/// A ServiceEntry and VirtualService routing Host `upstream` to the rig's upstream, by header and then by path.
func rigMesh(port: UInt16) -> RouteTable {
    let yaml = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: upstream, namespace: bench}
        spec:
          hosts: [upstream]
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: STATIC
          endpoints: [{address: 127.0.0.1, ports: {http: \(port)}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: upstream, namespace: bench}
        spec:
          hosts: [upstream]
          http:
          - match: [{headers: {x-canary: {exact: "yes"}}}]
            route: [{destination: {host: upstream}}]
          - match: [{uri: {prefix: /small}}]
            route: [{destination: {host: upstream}, weight: 100}]
        """
    let set = ConfigLoader.load(yaml: yaml, file: "rig.yaml", namespace: "bench")
    return try! RouteTable.compile(set, namespace: "bench")
}

/// A reactor that only reads the published route table at each loop iteration, as the proxy does, and says
/// which epoch it serves.
final class SnapshotProbe<B: IOBackend>: ReactorHandler {
    typealias Backend = B
    let reader: SnapshotReader<RouteTable>
    let serving: Atomic<UInt64>
    let control: ReactorControl
    init(_ reader: SnapshotReader<RouteTable>, _ control: ReactorControl) {
        self.reader = reader
        self.control = control
        serving = Atomic(reader.currentEpoch)
    }
    func iteration(_ reactor: Reactor<B>) {
        if reader.refresh() { serving.store(reader.currentEpoch, ordering: .releasing) }
    }
    func handle(_ completion: Completion, _ reactor: Reactor<B>) {}
    func timerFired(_ token: Token, _ reactor: Reactor<B>) {}
    var finished: Bool { control.stopRequested.load(ordering: .acquiring) }
}

/// Two idle reactors (the worst case: each must be woken) serving route tables published from this thread.
final class PublishRig<B: IOBackend>: @unchecked Sendable {
    let tables = [compileMesh(100), compileMesh(100)]
    let cell: SnapshotCell<RouteTable>
    let controls = [ReactorControl(), ReactorControl()]
    var probes: [SnapshotProbe<B>?] = [nil, nil]
    var threads: [ReactorThread] = []
    var next = 1

    init() {
        cell = SnapshotCell(tables[0], readers: 2)
        let ready = Atomic<Int>(0)
        for r in 0..<2 {
            let control = controls[r]
            let reader = cell.reader(r)
            let probe = SnapshotProbe<B>(reader, control)
            probes[r] = probe
            nonisolated(unsafe) let p = probe
            threads.append(ReactorThread.start(name: "bench-r\(r)") {
                let backend = try! B(settings: BackendSettings())
                let reactor = Reactor(index: r, backend: backend, control: control, timerCapacity: 16)
                ready.add(1, ordering: .releasing)
                do { try reactor.run(p) } catch { fatalError("\(error)") }
            }!)
        }
        while ready.load(ordering: .acquiring) < 2 {}
        usleep(10_000)
    }

    /// Publishes the other table, wakes the reactors and waits until both serve it.
    func swap() {
        cell.publish(tables[next])
        next ^= 1
        controls.forEach { $0.wake() }
        let epoch = cell.currentEpoch
        while !probes.allSatisfy({ $0!.serving.load(ordering: .acquiring) >= epoch }) {}
        _ = cell.reclaim()
    }

    func stop() {
        controls.forEach { $0.requestStop() }
        threads.forEach { $0.join() }
    }
}

/// Tern's HTTP proxy on its own reactor thread between a client (the benchmark thread) and an upstream thread.
final class ProxyRig<B: IOBackend>: @unchecked Sendable {
    let control = ReactorControl()
    let upstreamListener: Int32
    let proxyListener: Int32
    let proxyAddress: SocketAddress
    var threads: [ReactorThread] = []
    var writer: AccessLogWriter? = nil
    let client: Int32
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: 65536, alignment: 16)
    let request: [UInt8]

    init(_ options: RigOptions = RigOptions()) {
        let (ul, ua) = Sockets.listener()
        var routes: SnapshotCell<RouteTable>? = nil
        if options.regexRewrite {
            routes = SnapshotCell(regexRewriteMesh(upstreamPort: ua.port), readers: 1)
            request = Array("GET /svc/users/list?page=2 HTTP/1.1\r\nHost: api\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n".utf8)
        } else {
            if options.routed { routes = SnapshotCell(rigMesh(port: ua.port), readers: 1) }
            request = Array("GET /small HTTP/1.1\r\nHost: upstream\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n".utf8)
        }
        upstreamListener = ul
        (proxyListener, proxyAddress) = Sockets.listener()
        let listener = RelayListener(fd: proxyListener, upstream: ua)
        let control = self.control
        // Tern's listeners are non-blocking; this thread blocks.
        _ = fcntl(ul, F_SETFL, fcntl(ul, F_GETFL) & ~O_NONBLOCK)
        threads.append(ReactorThread.start(name: "bench-upstream") {
            let fd = accept(ul, nil, nil)
            let buf = UnsafeMutableRawPointer.allocate(byteCount: 65536, alignment: 16)
            let body = String(repeating: "x", count: 100)
            let response = Array("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n\(body)".utf8)
            while true {
                let n = read(fd, buf, 65536)
                if n <= 0 { break }
                _ = response.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            }
            close(fd)
        }!)
        let telemetry = options.metrics ? Telemetry(reactors: 1, workload: WorkloadLabels(), reporter: .source) : nil
        let rigRoutes = routes
        var reporting = ProxyReporting()
        if options.tracing {
            reporting.spans = SpanShard(capacity: 4096)
            reporting.sampler = TraceSampler(percent: 100)
        }
        if options.accessLog {
            let writer = try! AccessLogWriter.start(shards: [AccessLogShard(format: .json)], path: "/dev/null")
            reporting.accessLog = writer.shards[0]
            self.writer = writer
        }
        let rigReporting = reporting
        threads.append(ReactorThread.start(name: "bench-proxy") {
            let backend = try! B(settings: BackendSettings())
            let reactor = Reactor(index: 0, backend: backend, control: control, timerCapacity: 4096)
            let proxy = HTTPProxy<B>(listeners: [listener], settings: HTTPSettings(), relay: RelaySettings(),
                                     counters: RelayCounters(), capacity: 256, bufferPool: backend.buffers,
                                     routes: rigRoutes?.reader(0), telemetry: telemetry, reactorIndex: 0,
                                     reporting: rigReporting)
            try! reactor.run(proxy)
        }!)
        client = Sockets.connect(proxyAddress)
    }

    var count = 0

    func roundTrip() {
        _ = request.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
        if !Sockets.readResponse(client, buffer, 65536) {
            let text = String(decoding: UnsafeRawBufferPointer(start: buffer, count: 300), as: UTF8.self)
            fatalError("proxy closed the connection after \(count) requests: \(text)")
        }
        count += 1
    }

    func stop() {
        close(client)
        control.requestStop()
        threads.forEach { $0.join() }
        writer?.stop()
        close(upstreamListener)
        buffer.deallocate()
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.mallocCountTotal, .wallClock],
        warmupIterations: 100,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 1_000
    )

    for count in [1, 100, 10_000] {
        // Compiled once, before any sample: each sample then measures selections only.
        let table = compileMesh(count)
        Benchmark("Route selection, \(count) VirtualServices (host lookup + first matching route + destination)") { benchmark in
            let (head, raw) = routedHead(count)
            benchmark.startMeasurement()
            for i in benchmark.scaledIterations {
                let span = raw.span
                let view = RequestView(http1: head, bytes: span)
                let match = table.select(host: span.extracting(head.host!), port: 80, request: view)
                blackHole(table.pickDestination(match, random: UInt64(i)))
            }
        }
    }

    Benchmark("Compile 10,000 VirtualServices and ServiceEntries (30,000 routes)",
              configuration: .init(metrics: [.wallClock, .peakMemoryResident, .mallocCountTotal], warmupIterations: 0,
                                   scalingFactor: .one, maxDuration: .seconds(60), maxIterations: 3)) { benchmark in
        let yaml = meshYAML(10_000)
        benchmark.startMeasurement()
        let set = ConfigLoader.load(yaml: yaml, file: "mesh.yaml", namespace: "bench")
        blackHole(try RouteTable.compile(set, namespace: "bench"))
    }

    Benchmark("HTTP1 parse typical request head (\(typicalHead.count) B)") { benchmark in
        var parser = HTTP1Parser(kind: .request)
        for _ in benchmark.scaledIterations {
            parser.reset()
            blackHole(try typicalHead.withUnsafeBytes { try parser.parse($0) })
        }
    }

    if getenv("TERN_BENCH_DEBUG") != nil {
        Log.shared.level = .debug
        Log.shared.start()
    }

    Benchmark("HTTP proxy request, epoll (client → Tern → upstream → client)") { benchmark in
        let rig = ProxyRig<EpollBackend>()
        for _ in 0..<1000 { rig.roundTrip() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { rig.roundTrip() }
        benchmark.stopMeasurement()
        rig.stop()
    }

    Benchmark("HTTP proxy request routed by --config, uriRegexRewrite, epoll (client → Tern → upstream → client)") { benchmark in
        let rig = ProxyRig<EpollBackend>(RigOptions(regexRewrite: true))
        for _ in 0..<1000 { rig.roundTrip() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { rig.roundTrip() }
        benchmark.stopMeasurement()
        rig.stop()
    }

    Benchmark("HTTP proxy request, io_uring (client → Tern → upstream → client)") { benchmark in
        guard (try? URingBackend(settings: BackendSettings())) != nil else { return }
        let rig = ProxyRig<URingBackend>()
        for _ in 0..<1000 { rig.roundTrip() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { rig.roundTrip() }
        benchmark.stopMeasurement()
        rig.stop()
    }

    Benchmark("HTTP proxy request, io_uring, routed by Istio config, metrics on") { benchmark in
        guard (try? URingBackend(settings: BackendSettings())) != nil else { return }
        let rig = ProxyRig<URingBackend>(RigOptions(metrics: true, routed: true))
        for _ in 0..<1000 { rig.roundTrip() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { rig.roundTrip() }
        benchmark.stopMeasurement()
        rig.stop()
    }

    Benchmark("HTTP proxy request, io_uring, routed, metrics + access log + every request traced") { benchmark in
        guard (try? URingBackend(settings: BackendSettings())) != nil else { return }
        let rig = ProxyRig<URingBackend>(RigOptions(metrics: true, routed: true, tracing: true, accessLog: true))
        for _ in 0..<1000 { rig.roundTrip() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { rig.roundTrip() }
        benchmark.stopMeasurement()
        rig.stop()
    }

    Benchmark("Config publish until both (idle) reactors serve it, epoll",
              configuration: .init(metrics: [.wallClock], warmupIterations: 20, scalingFactor: .one,
                                   maxDuration: .seconds(3), maxIterations: 2_000)) { benchmark in
        let rig = PublishRig<EpollBackend>()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { rig.swap() }
        benchmark.stopMeasurement()
        rig.stop()
    }

    Benchmark("Config publish until both (idle) reactors serve it, io_uring",
              configuration: .init(metrics: [.wallClock], warmupIterations: 20, scalingFactor: .one,
                                   maxDuration: .seconds(3), maxIterations: 2_000)) { benchmark in
        guard (try? URingBackend(settings: BackendSettings())) != nil else { return }
        let rig = PublishRig<URingBackend>()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { rig.swap() }
        benchmark.stopMeasurement()
        rig.stop()
    }
}
