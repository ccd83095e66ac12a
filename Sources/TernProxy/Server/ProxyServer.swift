// The proxy process: resolves the backend and cores, binds every listener once per reactor
// (SO_REUSEPORT), starts one pinned reactor thread per core, and runs the process life on the main
// thread: SIGTERM/SIGINT stop accepting, open connections get --drain-timeout to finish, the rest are
// closed, and the process exits 0.
import Synchronization
import TernConfig
import TernCore
import TernIO
import TernTLS
import TernTelemetry

/// What a listener accepts: TCP connections to relay, or HTTP/1.1 to proxy. One process may run both.
public enum ListenerKind: String, Sendable {
    case tcp, http
    /// As the start-up line names it (`listening kind=proxy|http addr=…`).
    var announced: String { self == .tcp ? "proxy" : "http" }
}

public struct ProxySettings: Sendable {
    public var listen: [SocketAddress] = []
    /// Each listener's kind, by position (`--listen tcp:ADDR`, `--listen http:ADDR`); one not given is HTTP when
    /// `http` is set, TCP otherwise (`--listen ADDR`).
    public var listenKinds: [ListenerKind] = []
    public var upstreams: [SocketAddress] = []
    public var cores: Int? = nil
    public var ioBackend = IOBackendChoice.auto
    public var backend = BackendSettings()
    public var relay = RelaySettings()
    /// The HTTP engine's settings (`--http`, any `--listen http:ADDR`, or `--tls-cert`, whose TCP listeners the
    /// engine relays); nil: every listener relays TCP through the splice relay.
    public var http: HTTPSettings? = nil
    /// Istio configuration to route by (`--config`, a file or directory) instead of `--upstream`, and the
    /// namespace of resources that name none (`--namespace`).
    public var configPath: String? = nil
    public var namespace = "default"
    /// The workload's service account (`--service-account`) and Istio's root namespace (`--root-namespace`), with
    /// `namespace` and `relay.labels` what AuthorizationPolicy and PeerAuthentication selectors are resolved for.
    public var serviceAccount = "default"
    public var rootNamespace = "istio-system"

    /// `--config` beside `--upstream`: an inbound side, whose configuration gives only the security policies it
    /// enforces; requests still go to each listener's upstream.
    public var policiesOnly: Bool { configPath != nil && !upstreams.isEmpty }

    /// The workload policies are resolved for.
    public var workload: SecurityWorkload {
        SecurityWorkload(namespace: namespace, labels: relay.labels, serviceAccount: serviceAccount, rootNamespace: rootNamespace)
    }
    public var drainTimeout = TernDuration.seconds(5)
    public var logLevel = LogLevel.info
    /// Metrics, the admin, health and Prometheus listeners, access log and tracing.
    public var telemetry = TelemetrySettings()
    /// TLS termination on every listener (`--tls-cert`, `--tls-key`, `--tls-client-ca`): HTTP listeners speak
    /// HTTPS, TCP listeners relay the decrypted stream (through the HTTP engine, so `http` is set with it).
    public var tls: TLSServerFiles? = nil
    /// `--credentials-dir`: where DestinationRule `credentialName` secrets are (DIR/NAME/tls.crt, tls.key, ca.crt).
    public var credentialsDir: String? = nil
    /// `--inbound ADDR` (repeatable): a sidecar's inbound listeners beside its outbound ones (`--listen` with
    /// `--config`), under the bound table's PeerAuthentication and AuthorizationPolicy; their requests go to
    /// `--inbound-app`, or, when it is nil, to each connection's original destination (iptables REDIRECT).
    public var inbound: [SocketAddress] = []
    public var inboundApp: SocketAddress? = nil
    /// `--identity-dir` (and `--trust-domain`): the workload's mesh identity. On an inbound side it terminates
    /// mutual TLS (`tls` is set from it: peers must present X.509-SVIDs chaining to its root); with `--config` it
    /// originates mutual TLS to mesh endpoints (ISTIO_MUTUAL, automatic mTLS).
    public var identity: MeshIdentityFiles? = nil
    public init() {}

    /// The ports of the TCP listeners (a port 0 one routes by the port it gets, unknown here: left out).
    public var tcpListenerPorts: Set<UInt16> {
        Set(listen.indices.filter { kind($0) == .tcp }.map { listen[$0].port }.filter { $0 != 0 })
    }

    /// The kind of listener `i`.
    public func kind(_ i: Int) -> ListenerKind {
        i < listenKinds.count ? listenKinds[i] : (http != nil ? .http : .tcp)
    }

    /// The ALPN protocols TLS listeners offer: h2 and http/1.1 when every listener speaks HTTP (a connection is
    /// served as HTTP/2 when it begins with the HTTP/2 preface); http/1.1 alone when a TCP listener shares the
    /// certificate (its decrypted stream is relayed as it is).
    public var serverALPN: [String] {
        // (Beside `--inbound` listeners, TLS is theirs alone: HTTP.)
        !inbound.isEmpty || (0..<listen.count).allSatisfy { kind($0) == .http } ? ["h2", "http/1.1"] : ["http/1.1"]
    }
}

public enum IOBackendChoice: String, Sendable, CaseIterable {
    case auto, io_uring, epoll
}

/// A startup failure, reported as one line and exit status 1.
public struct SetupError: Error, CustomStringConvertible {
    public var description: String
}

/// How reactor threads report that they are up, or why they are not.
final class Startup: Sendable {
    let ready = Atomic<Int>(0)
    let failure = Mutex<String?>(nil)
}

public final class ProxyServer {
    private let settings: ProxySettings
    public let counters = RelayCounters()
    /// What the admin endpoints read and change.
    public let admin = AdminState()
    /// Tern's version, for /server_info.
    public static let version = "0.6.0"

    public init(settings: ProxySettings) {
        self.settings = settings
    }

    /// Which backend `choice` resolves to on this machine, and why when io_uring is not used.
    public static func resolveBackend(_ choice: IOBackendChoice, settings: BackendSettings) throws(SetupError) -> (IOBackendKind, String?) {
        switch choice {
        case .epoll:
            return (.epoll, nil)
        case .io_uring:
            do {
                _ = try URingBackend(settings: settings)
                return (.io_uring, nil)
            } catch {
                throw SetupError(description: "--io-backend io_uring: io_uring cannot be set up: \(error)")
            }
        case .auto:
            do {
                _ = try URingBackend(settings: settings)
                return (.io_uring, nil)
            } catch {
                return (.epoll, "io_uring unavailable (\(error)), falling back to epoll")
            }
        }
    }

    /// The reactor count and CPUs: the CPUs of the inherited affinity mask, capped by a cgroup CPU quota,
    /// or `--cores N` (reactors then take the first N CPUs of the mask, wrapping when N exceeds it).
    public static func resolveCores(_ requested: Int?) -> [Int] {
        let cpus = System.affinityCPUs()
        var n = requested ?? cpus.count
        if requested == nil, let quota = System.cgroupCPUQuota() { n = min(n, quota) }
        return (0..<max(n, 1)).map { cpus[$0 % cpus.count] }
    }

    /// Runs until SIGTERM or SIGINT; returns the process exit status. Every line logged is on stderr
    /// before it returns.
    public func run() -> Int32 {
        defer { Log.shared.flush() }
        // Before anything large is allocated or freed: tables sized for the most they may hold must stay unbacked
        // until used (System.keepLargeAllocationsMapped says why).
        System.keepLargeAllocationsMapped()
        // Signals first: every thread started afterwards (the log writer, the reactors) inherits the mask.
        Signals.ignoreBrokenPipe()
        guard let signals = Signals.takeOver() else {
            Log.error("cannot set up signal handling")
            return 1
        }
        Log.shared.level = settings.logLevel
        Log.shared.start()
        let limits = System.raiseOpenFileLimit()
        let kind: IOBackendKind
        do {
            let (k, why) = try Self.resolveBackend(settings.ioBackend, settings: settings.backend)
            kind = k
            if let why { Log.warn(why) }
        } catch {
            Log.error(error.description)
            return 1
        }
        let cpus = Self.resolveCores(settings.cores)
        // The workload's mesh identity: checked before anything uses it (a bad or expired one exits 1 naming it).
        if let files = settings.identity {
            do throws(TLSSetupError) {
                let identity = try MeshIdentity.load(files, now: MeshIdentity.nowSeconds)
                self.identity = identity
                counters.tls.configured.store(true, ordering: .relaxed)
                Log.info("identity: \(identity.id) (trust domain \(identity.trustDomain)) from \(files.directory), valid \((identity.notAfter - MeshIdentity.nowSeconds) / 60) more minutes")
            } catch {
                Log.error("identity: \(error.description)")
                Log.shared.flush()
                return 1
            }
        }
        var publisher: RoutePublisher? = nil
        if let path = settings.configPath {
            guard let table = Self.loadConfig(path, namespace: settings.namespace, reactors: cpus.count, workload: settings.workload) else {
                Log.error("configuration \(path) refused; not starting")
                Log.shared.flush()
                return 1
            }
            if settings.http != nil {
                // TLS origination: the contexts its DestinationRules need, before any reactor binds the table.
                guard let o = Self.originations(table, credentialsDir: settings.credentialsDir, identity: identity,
                                                tcpPorts: settings.tcpListenerPorts) else {
                    Log.error("configuration \(path) refused; not starting")
                    Log.shared.flush()
                    return 1
                }
                originationCell = SnapshotCell(o, readers: cpus.count)
                lastOriginations = o
                if !o.policies.isEmpty { counters.tls.configured.store(true, ordering: .relaxed) }
            }
            if !settings.policiesOnly && settings.inbound.isEmpty, let r = table.resources.first(where: { if case .authorizationPolicy = $0.spec { true } else { false } }) {
                // (As in Istio, a sidecar's outbound side never applies its own workload's policies.)
                Log.warn("\(r.file):\(r.line): \(r.label): AuthorizationPolicy applies to requests an inbound side receives (--http --upstream APP with --config); this process has none, so no policy is enforced here")
            }
            publisher = RoutePublisher(template: table, readers: cpus.count)
            template = table
            admin.applied(version: 1, table: table)
            Log.info("config applied version=1 resources=\(table.resources.count) path=\(path)")
        }
        let routes = publisher?.cell
        defer { publisher?.stop(timeout: .milliseconds(500)) }
        // TLS termination: the server context is built here, before any listener opens (a bad file exits 1 naming
        // it), and published to the reactors as route tables are; OpenSSL is not touched at all without it.
        var tlsCell: SnapshotCell<TLSServerPolicy>? = nil
        if let files = settings.tls {
            do {
                let context = try files.context(alpn: settings.serverALPN)
                tlsCell = SnapshotCell(TLSServerPolicy(context: context, mesh: identity), readers: cpus.count)
                counters.tls.configured.store(true, ordering: .relaxed)
                Log.info("tls: serving \(files.certificate)\(files.clientCA.map { " (client certificates verified against \($0)\(identity != nil ? ", X.509-SVIDs of \(identity!.trustDomain) required" : ""))" } ?? "")")
                // (A workload certificate lives a day: its lifetime is watched apart, `watchIdentityLifetime`.)
                if identity == nil { warnIfExpiring(context, files.certificate) }
            } catch {
                Log.error("tls: \(error.description)")
                Log.shared.flush()
                return 1
            }
        }

        // Bind every listener once per reactor. Port 0 is resolved by the first bind; the others reuse it.
        var perReactor = [[RelayListener]](repeating: [], count: cpus.count)
        var perReactorTCP = [[RelayListener]](repeating: [], count: cpus.count)
        var bound: [(kind: String, address: SocketAddress)] = []
        // (`--inbound` listeners after the `--listen` ones: HTTP, an inbound side's.)
        for (i, address) in (settings.listen + settings.inbound).enumerated() {
            var address = address
            let inbound = i >= settings.listen.count
            // The reactors' listeners share the address (SO_REUSEPORT), and so would another process's: one that
            // holds it already is found first, and Tern exits rather than split its traffic.
            if address.port != 0 {
                do {
                    try System.checkNotListening(address)
                } catch {
                    let holder = error.errno == Errno.EADDRINUSE ? ", another socket listens on it (another process, or an earlier --listen of this one)" : ""
                    Log.error("cannot listen on \(address): \(Errno.name(error.errno)) (\(Errno.message(error.errno)))\(holder)")
                    Log.shared.flush()
                    return 1
                }
            }
            for r in 0..<cpus.count {
                do {
                    let fd = try System.listen(on: address)
                    if r == 0 {
                        address = try System.localAddress(fd)
                        bound.append((inbound ? "inbound" : settings.kind(i).announced, address))
                    }
                    if inbound {
                        // Port 0: each connection's original destination.
                        let app = settings.inboundApp ?? SocketAddress(parsing: "0.0.0.0:0") ?? address
                        perReactor[r].append(RelayListener(fd: fd, upstream: app, inbound: true))
                        continue
                    }
                    let upstream = i < settings.upstreams.count ? settings.upstreams[i] : address
                    if settings.kind(i) == .tcp && settings.tls != nil && settings.inbound.isEmpty {
                        // TLS terminated, then relayed by the HTTP engine (Relay/HTTPProxy+TCP.swift).
                        perReactor[r].append(RelayListener(fd: fd, upstream: upstream, relaysTCP: true))
                    } else if settings.kind(i) == .tcp && settings.http != nil {
                        perReactorTCP[r].append(RelayListener(fd: fd, upstream: upstream))
                    } else {
                        perReactor[r].append(RelayListener(fd: fd, upstream: upstream))
                    }
                } catch {
                    Log.error("cannot listen on \(address): \(Errno.name(error.errno)) (\(Errno.message(error.errno)))")
                    Log.shared.flush()
                    return 1
                }
            }
        }
        Log.info("tern proxy starting backend=\(kind.rawValue) cores=\(cpus.count) cpus=\(cpus.map(String.init).joined(separator: ",")) ring-depth=\(settings.backend.ringDepth) nofile=\(limits.soft)")

        var relaySettings = settings.relay
        // The cap counts the sockets of client and upstream connections (RelaySettings.descriptorCap); pipes
        // are held only while bytes move. Keep 64 descriptors for listeners, eventfds and logs, 16 per reactor
        // for pipes (each pipe pool also keeps a reserve made at start, so some connections always progress when
        // descriptors run out) and 16 per reactor beyond the cap for upstream sockets and shed connections.
        // The backends index descriptors up to 2^20 (the kernel's default nr_open); a "nofile infinity" limit
        // must not size anything beyond that.
        let usable = Int(min(limits.soft, 1 << 20))
        // Each side listener holds up to 64 connections (AdminServer.connectionsPerListener).
        let t = settings.telemetry
        let side = [t.admin, t.health, t.prometheus].filter { $0.address != nil }.count * AdminServer.connectionsPerListener
        relaySettings.descriptorCap = max(64, usable - 64 - side - (2 * settings.listen.count + 32) * cpus.count)
        let controls = cpus.map { _ in ReactorControl() }
        if let publisher {
            publisher.attach(controls)
            guard publisher.start() else {
                Log.error("cannot start the DNS resolver thread")
                return 1
            }
            // DNS endpoints are looked up before the reactors start, so the first connections find them (as Envoy
            // warms DNS clusters before it serves); bounded, so a slow name server cannot hold the listeners.
            if !publisher.waitForFirstAnswers(timeout: .seconds(2)) {
                Log.warn("dns: some names are still being looked up after 2s; their endpoints are left out until they answer")
            }
        }
        let startup = Startup()
        let reporter = settings.telemetry.reporter ?? (settings.configPath != nil && !settings.policiesOnly ? .source : .destination)
        var workload = settings.telemetry.workload
        // Our own principal in the metrics (source_principal as a source, destination_principal as a destination),
        // as Istio reports the workload's SPIFFE ID.
        if let identity { workload.principal = identity.id.description }
        let telemetry = Telemetry(reactors: cpus.count, workload: workload, reporter: reporter)
        let metrics = settings.telemetry.metrics ? telemetry : nil
        guard let sideListeners = AdminServer.bind(settings.telemetry) else {
            Log.shared.flush()
            return 1
        }
        // Spans: one ring per reactor, drained and sent by the exporter thread.
        var exporter: SpanExporter? = nil
        var tracing: TracingSettings? = nil
        if let collector = settings.telemetry.traceCollector {
            do {
                let t = try TracingSettings(collector: collector, sampling: settings.telemetry.traceSampling)
                let e = SpanExporter(reactors: cpus.count, settings: t)
                try e.start()
                tracing = t
                exporter = e
                Log.info("tracing to \(t.collector) format=\(t.format.rawValue) sampling=\(t.samplingPercent)%")
            } catch {
                Log.error(error.description)
                Log.shared.flush()
                return 1
            }
        }
        defer { exporter?.stop() }
        // Access log: one ring per reactor, written out by the writer thread. Its deferred stop runs after the
        // reactors are joined, so every line is written.
        var accessLog: AccessLogWriter? = nil
        if let path = settings.telemetry.accessLog {
            let format = AccessLogFormat(rawValue: settings.telemetry.accessLogFormat) ?? .json
            do {
                accessLog = try AccessLogWriter.start(format: format, reactors: cpus.count, path: path)
            } catch {
                Log.error(error.description)
                Log.shared.flush()
                return 1
            }
        }
        defer { accessLog?.stop() }
        // Connections each reactor may hold: as many as the process has descriptors, since the kernel need not
        // spread connections evenly over the reactors (slabs reserve address space and touch it as they fill).
        let capacity = max(min(Int(limits.soft), 1 << 20), 1024)
        var threads: [ReactorThread] = []
        for (r, cpu) in cpus.enumerated() {
            let listeners = perReactor[r], tcpListeners = perReactorTCP[r]
            let control = controls[r]
            let relay = relaySettings
            // The drain's notice waits a quarter of --drain-timeout (1 s to half of it) for clients to answer its PING.
            let http: HTTPSettings? = settings.http.map { h in
                var h = h
                let drain = settings.drainTimeout.nanoseconds
                h.drainNoticeWait = TernDuration(nanoseconds: min(drain / 2, max(1_000_000_000, drain / 4)))
                return h
            }
            // HTTP: a 16 KiB response and its head fit one 32 KiB buffer, so it moves in one receive and one
            // send instead of two of each. Buffers are committed as first used (address space, not memory).
            var backendSettings = settings.backend
            if http != nil { backendSettings.bufferSize = 32 * 1024 }
            // TLS termination: 64 KiB buffers, of which a receive fills 62 KiB, so that the four records of a
            // buffer's worth of plaintext (and the room kept for records OpenSSL writes itself) fit one buffer: a
            // bulk transfer then takes half as many rounds of receive, encrypt and send as with 32 KiB (one 1 GiB
            // download: 2.5-3.0 Gbit/s with 32 KiB, 3.3-4.4 with 64 KiB, HAProxy 3.0-3.9 in the same runs;
            // Benchmarks/README.md, "TLS"). Address space until used.
            if tlsCell != nil {
                backendSettings.bufferSize = 64 * 1024
                backendSettings.receiveLength = 62 * 1024
            }
            // TLS decrypts into, and writes records into, spare buffers, and HTTP/2 connections write their frames and
            // their streams' requests into them: as many again as the receive buffers (address space until used).
            if http != nil || tlsCell != nil || originationCell != nil { backendSettings.spareBuffers = backendSettings.bufferCount }
            let originations = originationCell
            let tls = tlsCell
            let backend = backendSettings
            let counters = self.counters
            let policiesOnly = settings.policiesOnly
            var reporting = ProxyReporting()
            if let exporter, let tracing {
                reporting.spans = exporter.shards[r]
                reporting.sampler = tracing.sampler
                reporting.spanKind = SpanKind(reporter: reporter)
            }
            reporting.accessLog = accessLog?.shards[r]
            let reactorReporting = reporting
            let body: @Sendable () -> Void = {
                if System.pinCurrentThread(to: cpu) != 0 { Log.warn("cannot pin reactor \(r) to CPU \(cpu)") }
                let error: IOError?
                switch kind {
                case .io_uring:
                    error = Self.runReactor(URingBackend.self, index: r, listeners: listeners, tcpListeners: tcpListeners, control: control, backend: backend, relay: relay, http: http, routes: routes, policiesOnly: policiesOnly, counters: counters, capacity: capacity, startup: startup, telemetry: metrics, reporting: reactorReporting, tls: tls, originations: originations)
                case .epoll:
                    error = Self.runReactor(EpollBackend.self, index: r, listeners: listeners, tcpListeners: tcpListeners, control: control, backend: backend, relay: relay, http: http, routes: routes, policiesOnly: policiesOnly, counters: counters, capacity: capacity, startup: startup, telemetry: metrics, reporting: reactorReporting, tls: tls, originations: originations)
                }
                if let error {
                    startup.failure.withLock { $0 = $0 ?? "reactor \(r): \(error)" }
                    control.exited.store(true, ordering: .releasing)
                }
            }
            guard let t = ReactorThread.start(name: "tern-r\(r)", body) else {
                Log.error("cannot start reactor thread \(r)")
                return 1
            }
            threads.append(t)
        }
        // Wait until every reactor is up (or one failed) before announcing the listeners.
        while startup.ready.load(ordering: .acquiring) < cpus.count && startup.failure.withLock({ $0 }) == nil {
            Signals.sleep(milliseconds: 1)
        }
        if let f = startup.failure.withLock({ $0 }) {
            Log.error(f)
            controls.forEach { $0.requestStop() }
            threads.forEach { $0.join() }
            Log.shared.flush()
            return 1
        }
        // Watching starts before the listeners are announced: a change made once they are is seen.
        let watcher = settings.configPath.flatMap { FileWatcher(path: $0, directoryEntries: ConfigFiles.isConfigurationEntry) }
        if settings.configPath != nil && watcher == nil { Log.warn("cannot watch the configuration (inotify); SIGHUP reloads it") }
        // (With a mesh identity, its three files: they give the server context too.)
        let tlsPaths = settings.identity?.paths ?? settings.tls?.paths ?? []
        let tlsWatchers = tlsPaths.compactMap { FileWatcher(path: $0, directoryEntries: { _ in false }) }
        if !tlsPaths.isEmpty && tlsWatchers.count != tlsPaths.count { Log.warn("cannot watch the TLS files (inotify); SIGHUP reloads them") }
        var tlsReloadDue: UInt64? = nil
        for b in bound { Log.info("listening kind=\(b.kind) addr=\(b.address)") }
        let info = ServerInfo(
            version: Self.version, ioBackend: kind.rawValue, cores: cpus.count,
            ringDepth: Int(settings.backend.ringDepth),
            listeners: bound.map { ($0.kind, $0.address.description) } + sideListeners.map { ($0.kind.rawValue, $0.address.description) },
            options: settings.encoded().map { item in
                let parts = item.split(separator: "=", maxSplits: 1)
                return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
            })
        let adminServer = AdminServer(listeners: sideListeners, state: admin, telemetry: telemetry, info: info, controls: controls,
                                      counters: counters) { [admin, counters, exporter, accessLog] in
            Self.ternMetrics(controls: controls, telemetry: telemetry, admin: admin, counters: counters)
                + (exporter?.metricFamilies() ?? []) + (accessLog.map(Self.accessLogMetrics) ?? [])
        }
        guard adminServer.start() else {
            Log.error("cannot start the admin thread")
            controls.forEach { $0.requestStop() }
            threads.forEach { $0.join() }
            return 1
        }
        defer { adminServer.stop() }
        for l in sideListeners { Log.info("listening kind=\(l.kind.rawValue) addr=\(l.address)") }
        // Ready: the listeners are bound and, with --config, the first configuration is applied.
        admin.state = .live

        // Process life: wait for a signal, or for a reactor that died; reload the configuration when its
        // files change (debounced: 200 ms after the last change, so a half-written set is not read).
        var exitStatus: Int32 = 0
        var reloadDue: UInt64? = nil
        while true {
            if let watcher, watcher.changed() { reloadDue = System.monotonicNanos() + 200_000_000 }
            if let due = reloadDue, System.monotonicNanos() >= due, let publisher, let path = settings.configPath {
                reloadDue = nil
                reload(publisher, path: path)
            }
            if tlsWatchers.contains(where: { $0.changed() }) { tlsReloadDue = System.monotonicNanos() + 200_000_000 }
            if let due = tlsReloadDue, System.monotonicNanos() >= due {
                tlsReloadDue = nil
                if settings.identity != nil {
                    reloadIdentity(tlsCell, publisher)
                } else if let tlsCell, let files = settings.tls {
                    reloadTLS(tlsCell, files)
                }
            }
            if identity != nil { watchIdentityLifetime() }
            tlsCell?.reclaim()
            originationCell?.reclaim()
            if let sig = signals.wait(milliseconds: reloadDue == nil && tlsReloadDue == nil ? 200 : 50) {
                guard Signals.isStop(sig) else {
                    if Signals.name(sig) == "SIGHUP" && (settings.configPath != nil || tlsCell != nil) {
                        if let publisher, let path = settings.configPath { reload(publisher, path: path) }
                        if settings.identity != nil {
                            reloadIdentity(tlsCell, publisher)
                        } else if let tlsCell, let files = settings.tls {
                            reloadTLS(tlsCell, files)
                        }
                        continue
                    }
                    if Signals.name(sig) == "SIGUSR1" {
                        // Log rotation: the access log file is reopened at its path.
                        if let accessLog {
                            accessLog.reopen()
                            Log.info("received SIGUSR1: reopening the access log \(accessLog.path)")
                        } else {
                            Log.info("received SIGUSR1: no access log to reopen")
                        }
                        continue
                    }
                    Log.info("received \(Signals.name(sig)): nothing to do")
                    continue
                }
                Log.info("received \(Signals.name(sig)): draining (timeout \(settings.drainTimeout))")
                // Readiness turns 503 first, so load balancers stop sending before the listeners close.
                admin.state = .draining
                break
            }
            if let f = startup.failure.withLock({ $0 }) {
                Log.error(f)
                exitStatus = 1
                break
            }
            publisher?.publishIfOverdue()
            if let cell = routes {
                // Tables are freed here and by each publish; the total covers both.
                cell.reclaim()
                if cell.freedCount != tablesFreed {
                    tablesFreed = cell.freedCount
                    Log.info("route tables freed: \(tablesFreed) in all, \(cell.retiredCount) waiting")
                }
            }
        }
        controls.forEach { $0.requestDrain() }
        let deadline = System.monotonicNanos() + settings.drainTimeout.nanoseconds
        while !controls.allSatisfy({ $0.exited.load(ordering: .acquiring) }) && System.monotonicNanos() < deadline {
            if let sig = signals.wait(milliseconds: 10), Signals.isStop(sig) {
                Log.info("received \(Signals.name(sig)) while draining: closing now")
                break
            }
        }
        let open = counters.active.load(ordering: .relaxed)
        if open > 0 { Log.info("drain finished with \(open) connections open: closing them") }
        controls.forEach { $0.requestStop() }
        threads.forEach { $0.join() }
        Log.info("tern proxy stopped")
        Log.shared.flush()
        return exitStatus
    }

    /// Reads and compiles the configuration, each regex once per reactor; logs every error (and warning) as
    /// FILE:LINE: … and returns nil when there is any error.
    static func loadConfig(_ path: String, namespace: String, reactors: Int, workload: SecurityWorkload) -> RouteTable? {
        do {
            let (table, warnings) = try RouteTable.load(path: path, namespace: namespace, reactors: reactors, workload: workload)
            for w in warnings { Log.warn(w.description) }
            return table
        } catch {
            for d in error.diagnostics { Log.error(d.description) }
            return nil
        }
    }

    private var version = 1
    /// TLS origination contexts (HTTP with --config), published before each route table.
    private var originationCell: SnapshotCell<TLSOriginations>? = nil
    /// What was published to it last.
    private var lastOriginations: TLSOriginations? = nil
    /// The configuration applied last (before DNS answers): published again when the identity rotates, so the
    /// reactors bind the new contexts.
    private var template: RouteTable? = nil
    /// The workload's mesh identity (`--identity-dir`) being served, and what was said of its lifetime.
    private var identity: MeshIdentity? = nil
    private var warnedHalfLife = false
    private var warnedExpired = false

    /// Builds the TLS origination contexts `table` needs; logs its warnings, or the error and returns nil.
    /// `reuse`: contexts to keep (the mesh's, for the same identity: their pools' sessions stay resumable).
    /// `tcpPorts`: the ports of the process's TCP listeners (the clusters they reach cannot originate TLS yet).
    static func originations(_ table: RouteTable, credentialsDir: String?, identity: MeshIdentity? = nil, tcpPorts: Set<UInt16> = [],
                             reuse: [TLSOriginationKey: TLSClientPolicy]? = nil) -> TLSOriginations? {
        do throws(TLSSetupError) {
            let (o, warnings) = try TLSOriginations.build(table, credentialsDir: credentialsDir, identity: identity, reuse: reuse)
            if let problem = TLSOriginations.tcpMeshRefusal(table, ports: tcpPorts) { throw TLSSetupError(problem) }
            for w in warnings { Log.warn(w) }
            for w in TLSOriginations.tcpMeshWarnings(table, trustDomain: identity?.trustDomain, ports: tcpPorts) { Log.warn(w) }
            return o
        } catch {
            Log.error(error.description)
            return nil
        }
    }
    private var tablesFreed = 0

    /// SIGHUP: reads the configuration again; a valid one is published to every reactor (which picks it up
    /// at its next loop iteration: in-flight requests finish on the table they started with), an invalid one
    /// is refused whole with every error logged, and the old one keeps serving.
    private func reload(_ publisher: RoutePublisher, path: String) {
        // Reading and compiling run at idle priority: the main thread shares its CPU with a reactor, which
        // must not wait a millisecond for a table it does not have yet.
        System.atIdlePriority { reloadNow(publisher, path: path) }
    }

    private func reloadNow(_ publisher: RoutePublisher, path: String) {
        let started = System.monotonicNanos()
        guard let table = Self.loadConfig(path, namespace: settings.namespace, reactors: publisher.readers, workload: settings.workload) else {
            admin.rejected()
            Log.warn("config rejected path=\(path): the running configuration (version \(version)) keeps serving")
            return
        }
        if let cell = originationCell {
            // The table's TLS contexts go out first: a reactor that binds the table finds them.
            guard let o = Self.originations(table, credentialsDir: settings.credentialsDir, identity: identity,
                                            tcpPorts: settings.tcpListenerPorts,
                                            reuse: lastOriginations?.policies.filter { $0.key.mesh }) else {
                admin.rejected()
                Log.warn("config rejected path=\(path): the running configuration (version \(version)) keeps serving")
                return
            }
            if !o.policies.isEmpty { counters.tls.configured.store(true, ordering: .relaxed) }
            cell.publish(o)
            lastOriginations = o
        }
        version += 1
        template = table
        publisher.apply(table)
        admin.applied(version: version, table: table)
        let micros = (System.monotonicNanos() - started) / 1000
        Log.info("config applied version=\(version) resources=\(table.resources.count) path=\(path) took=\(micros)us")
    }

    /// The TLS files changed (or SIGHUP): a new server context for new handshakes; connections already
    /// established keep theirs. A file that cannot be used is refused with an error line, and the old context
    /// keeps serving.
    private func reloadTLS(_ cell: SnapshotCell<TLSServerPolicy>, _ files: TLSServerFiles) {
        System.atIdlePriority {
            do throws(TLSSetupError) {
                let context = try files.context(alpn: settings.serverALPN)
                cell.publish(TLSServerPolicy(context: context))
                counters.tls.reloads.add()
                Log.info("tls: reloaded \(files.certificate): new handshakes use it")
                warnIfExpiring(context, files.certificate)
            } catch {
                counters.tls.reloadsRefused.add()
                Log.error("tls: reload refused: \(error.description); the previous certificate keeps serving")
            }
        }
    }

    /// The identity's files changed (or SIGHUP): read and checked again; a usable identity replaces the old one
    /// for new handshakes both ways (the inbound side's server context, then the origination contexts, with the
    /// configuration published again so every reactor binds them); connections already up keep theirs. One that
    /// cannot be used (unreadable, not an X.509-SVID, expired, a key that does not match) is refused with an error
    /// line, and the old identity keeps serving until it expires.
    private func reloadIdentity(_ tlsCell: SnapshotCell<TLSServerPolicy>?, _ publisher: RoutePublisher?) {
        guard let files = settings.identity else { return }
        System.atIdlePriority {
            do throws(TLSSetupError) {
                let next = try MeshIdentity.load(files, now: MeshIdentity.nowSeconds)
                // Every context is built before any is published: a key that does not match refuses them all.
                let server = try tlsCell.map { _ throws(TLSSetupError) in
                    TLSServerPolicy(context: try files.serverFiles.context(alpn: settings.serverALPN), mesh: next)
                }
                var origination: TLSOriginations? = nil
                if originationCell != nil, let template {
                    let others = (lastOriginations?.policies ?? [:]).filter { !$0.key.mesh }
                    let (o, _) = try TLSOriginations.build(template, credentialsDir: settings.credentialsDir, identity: next, reuse: others)
                    origination = o
                }
                if let tlsCell, let server { tlsCell.publish(server) }
                if let cell = originationCell, let origination, let publisher, let template {
                    cell.publish(origination)
                    lastOriginations = origination
                    publisher.apply(template)
                }
                identity = next
                warnedHalfLife = false
                warnedExpired = false
                counters.tls.reloads.add()
                Log.info("identity: rotated to \(next.id), valid \((next.notAfter - MeshIdentity.nowSeconds) / 60) more minutes: new handshakes use it")
            } catch {
                counters.tls.reloadsRefused.add()
                Log.error("identity: rotation refused: \(error.description); the previous certificate keeps serving")
            }
        }
    }

    /// Past half its lifetime with no replacement, the identity is warned about once (Istio's agent would have
    /// rotated it); once expired, it is never presented again, and that is said once.
    private func watchIdentityLifetime() {
        guard let identity, !warnedExpired else { return }
        let now = MeshIdentity.nowSeconds
        if !identity.presentable(now: now) {
            warnedExpired = true
            Log.error("identity: \(identity.id) expired and no replacement was written to \(identity.files.directory): it is no longer presented, so mutual TLS fails both ways until one is")
        } else if !warnedHalfLife && identity.pastHalfLife(now: now) {
            warnedHalfLife = true
            Log.warn("identity: \(identity.id) is past half its lifetime with no replacement (expires in \((identity.notAfter - now) / 60) minutes)")
        }
    }

    /// A certificate already expired, or expiring within a day, is served (clients decide) with a warning.
    private func warnIfExpiring(_ context: TLSContext, _ path: String) {
        guard let notAfter = context.certificateNotAfter else { return }
        let now = Int(System.wallClockMicros() / 1_000_000)
        if notAfter <= now {
            Log.warn("tls: \(path) expired \((now - notAfter) / 3600) hours ago; clients will refuse it")
        } else if notAfter - now < 86_400 {
            Log.warn("tls: \(path) expires in \((notAfter - now) / 60) minutes")
        }
    }

    /// Tern's own metrics (beside Istio's): per reactor loop iterations, completions and connections; pools;
    /// the configuration's version with applied and rejected counts; series not recorded.
    static func ternMetrics(controls: [ReactorControl], telemetry: Telemetry, admin: AdminState, counters: RelayCounters) -> [MetricFamily] {
        func perReactor(_ value: (Int) -> Double) -> [(labels: [(String, String)], value: Double)] {
            controls.indices.map { ([("reactor", String($0))], value($0)) }
        }
        func one(_ v: Double) -> [(labels: [(String, String)], value: Double)] { [([], v)] }
        let shards = telemetry.shards
        return [
            MetricFamily(name: "tern_reactor_loop_iterations_total", help: "Reactor loop iterations.", kind: .counter,
                         samples: perReactor { Double(controls[$0].iterations.load(ordering: .relaxed)) }),
            MetricFamily(name: "tern_reactor_completions_total", help: "I/O completions (io_uring CQEs or epoll events) handled.", kind: .counter,
                         samples: perReactor { Double(controls[$0].completions.load(ordering: .relaxed)) }),
            MetricFamily(name: "tern_reactor_submissions_total", help: "I/O operations submitted (io_uring SQEs; epoll: operations started).", kind: .counter,
                         samples: perReactor { Double(controls[$0].submissions.load(ordering: .relaxed)) }),
            MetricFamily(name: "tern_active_connections", help: "Client connections open, per reactor (HTTP connections and their tunnels alike).", kind: .gauge,
                         samples: perReactor { Double(controls[$0].activeConnections.load(ordering: .relaxed)) }),
            MetricFamily(name: "tern_upstream_connections", help: "Upstream connections open (HTTP pools), per reactor.", kind: .gauge,
                         samples: perReactor { Double(shards[$0].reactor.load(ReactorWord.upstreamConnections)) }),
            MetricFamily(name: "tern_upstream_idle_connections", help: "Idle pooled upstream connections, per reactor.", kind: .gauge,
                         samples: perReactor { Double(shards[$0].reactor.load(ReactorWord.idleUpstreamConnections)) }),
            MetricFamily(name: "tern_connections_accepted_total", help: "Client connections accepted.", kind: .counter,
                         samples: one(Double(counters.accepted.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_config_version", help: "Version of the configuration being served (0: none).", kind: .gauge,
                         samples: one(Double(admin.configVersion.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_config_applied_total", help: "Configurations applied.", kind: .counter,
                         samples: one(Double(admin.configApplied.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_config_rejected_total", help: "Configurations rejected (the previous one kept serving).", kind: .counter,
                         samples: one(Double(admin.configRejected.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_idle_connections_evicted_total", help: "Client connections waiting for a request closed, oldest first, to make room at the descriptor cap.", kind: .counter,
                         samples: one(Double(counters.idleEvicted.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_connections_shed_total", help: "HTTP connections answered 503 and closed at once: the descriptor cap had been reached for 1s with no idle connection to close.", kind: .counter,
                         samples: one(Double(counters.shed.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_request_heads_refused_total", help: "Request heads answered 503 (OM) because heads in progress held their reactor's --max-head-memory-mb.", kind: .counter,
                         samples: one(Double(counters.headsOverBudget.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_fault_delays_injected_total", help: "Requests a VirtualService fault delayed (DI), as Envoy's fault.delays_injected.", kind: .counter,
                         samples: one(Double(counters.faultDelays.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_fault_aborts_injected_total", help: "Requests a VirtualService fault aborted (FI), as Envoy's fault.aborts_injected.", kind: .counter,
                         samples: one(Double(counters.faultAborts.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_cors_origin_valid_total", help: "Requests whose Origin a route's corsPolicy allows, as Envoy's cors.origin_valid.", kind: .counter,
                         samples: one(Double(shards.reduce(0) { $0 + $1.reactor.load(ReactorWord.corsOriginValid) }))),
            MetricFamily(name: "tern_cors_origin_invalid_total", help: "Requests with an Origin a route's corsPolicy does not allow, as Envoy's cors.origin_invalid.", kind: .counter,
                         samples: one(Double(shards.reduce(0) { $0 + $1.reactor.load(ReactorWord.corsOriginInvalid) }))),
            MetricFamily(name: "tern_http2_connections_total", help: "Client connections served as HTTP/2 (h2c with prior knowledge, or h2 by ALPN).", kind: .counter,
                         samples: one(Double(counters.h2Connections.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_http2_streams_total", help: "HTTP/2 streams served as requests.", kind: .counter,
                         samples: one(Double(counters.h2Streams.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_http2_upstream_connections_total", help: "HTTP/2 connections made to upstreams (clusters whose protocol is HTTP/2).", kind: .counter,
                         samples: one(Double(counters.h2UpstreamConnections.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_http2_upstream_streams_total", help: "Requests sent to upstreams as HTTP/2 streams.", kind: .counter,
                         samples: one(Double(counters.h2UpstreamStreams.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_authorization_denied_total", help: "Requests an AuthorizationPolicy denied (403 RBAC: access denied) on an inbound side (--upstream with --config).", kind: .counter,
                         samples: one(Double(counters.authorizationDenied.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_authorization_dry_run_denied_total", help: "Requests an istio.io/dry-run AuthorizationPolicy would have denied (allowed all the same).", kind: .counter,
                         samples: one(Double(counters.authorizationDryRunDenied.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_peer_authentication_refused_total", help: "Connections an inbound side closed at once because its PeerAuthentication is STRICT and it has no TLS certificate (--tls-cert) to offer.", kind: .counter,
                         samples: one(Double(counters.peerAuthenticationRefused.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_inbound_without_destination_total", help: "Connections to an --inbound listener without --inbound-app that iptables had not redirected (no original destination to send them to): closed.", kind: .counter,
                         samples: one(Double(counters.inboundWithoutDestination.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_outbound_direct_refused_total", help: "Connections another host made straight to a sidecar's outbound listener (one with --inbound beside it), not redirected by iptables: closed.", kind: .counter,
                         samples: one(Double(counters.outboundDirectRefused.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_http2_floods_total", help: "HTTP/2 connections (clients' or upstreams') closed for a flood: empty frames, PRIORITY or WINDOW_UPDATE frames beyond Envoy's limits, CONTINUATION frames beyond nghttp2's, PING or SETTINGS frames whose acknowledgements the peer does not read, or more header bytes at once than 16 heads' limit.", kind: .counter,
                         samples: one(Double(counters.h2Floods.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_http2_keepalive_timeouts_total", help: "HTTP/2 upstream connections closed because a keepalive PING (DestinationRule http2KeepAlive) was not answered within its timeout.", kind: .counter,
                         samples: one(Double(counters.h2PingTimeouts.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_http2_protocol_errors_total", help: "HTTP/2 connections that broke the protocol (nghttp2 ended the session) and streams reset for a malformed request head.", kind: .counter,
                         samples: one(Double(counters.h2ProtocolErrors.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_http2_reset_floods_total", help: "HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM for resetting more than half of 500 or more streams early (Envoy's premature-reset rule).", kind: .counter,
                         samples: one(Double(counters.h2ResetFloods.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_retries_total", help: "Requests tried again under a route's retry policy, as Envoy's upstream_rq_retry.", kind: .counter,
                         samples: one(Double(counters.retries.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_retry_limit_exceeded_total", help: "Requests answered (flag URX) when their retry policy would have retried but no retries were left, as Envoy's upstream_rq_retry_limit_exceeded.", kind: .counter,
                         samples: one(Double(counters.retryLimitExceeded.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_mirrored_requests_total", help: "Requests sent to a VirtualService mirror (fire and forget).", kind: .counter,
                         samples: one(Double(counters.mirrors.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_mirror_requests_answered_total", help: "Mirrored requests whose whole response came back (and was dropped).", kind: .counter,
                         samples: one(Double(counters.mirrorsAnswered.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_mirror_requests_dropped_total", help: "Mirrors drawn but not sent: a body that streamed, every mirror connection busy, a limit of the mirror cluster, no endpoint, or TLS origination to it.", kind: .counter,
                         samples: one(Double(counters.mirrorsDropped.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_mirror_requests_failed_total", help: "Mirrored requests that got no whole response: connect failure, reset, malformed response, or no response within the route's timeout.", kind: .counter,
                         samples: one(Double(counters.mirrorsFailed.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_upstream_descriptor_waits_total", help: "HTTP requests whose upstream socket could not be opened for lack of descriptors (EMFILE/ENFILE) and waited for one.", kind: .counter,
                         samples: one(Double(counters.upstreamDescriptorWaits.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_open_descriptors", help: "Sockets held by client and upstream connections, against the descriptor cap.", kind: .gauge,
                         samples: one(Double(counters.descriptors.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_side_connections_evicted_total", help: "Connections to the admin, health and Prometheus listeners closed to admit a newer one (a listener at its cap of 64).", kind: .counter,
                         samples: one(Double(admin.sideConnectionsEvicted.load(ordering: .relaxed)))),
            MetricFamily(name: "tern_metric_series_overflowed_total", help: "Requests not recorded because a reactor's series table was full.", kind: .counter,
                         samples: one(Double(telemetry.seriesOverflowed))),
        ] + tlsMetrics(counters.tls) + outlierMetrics(counters.outliers) + circuitMetrics(counters.circuits)
            + denialMetrics(counters.policyDenials)
    }

    /// AuthorizationPolicy denials by policy (`namespace/name`; "(no ALLOW policy matched)" when ALLOW policies
    /// exist and none matched), enforced and dry-run. Present once a policy has denied something.
    static func denialMetrics(_ d: PolicyDenials) -> [MetricFamily] {
        let figures = d.figures().filter { $0.enforced > 0 || $0.dryRun > 0 }
        guard !figures.isEmpty else { return [] }
        return [
            MetricFamily(name: "tern_authorization_policy_denied_total", help: "Requests denied (403 RBAC: access denied), by the AuthorizationPolicy that decided.", kind: .counter,
                         samples: figures.map { ([("policy", $0.policy)], Double($0.enforced)) }),
            MetricFamily(name: "tern_authorization_policy_dry_run_denied_total", help: "Requests an istio.io/dry-run AuthorizationPolicy would have denied, by policy.", kind: .counter,
                         samples: figures.map { ([("policy", $0.policy)], Double($0.dryRun)) }),
        ]
    }

    /// Outlier detection per cluster, under Envoy's names (what Istio users scrape): hosts ejected now, ejections
    /// enforced, and ejections `maxEjectionPercent` refused.
    static func outlierMetrics(_ registry: OutlierRegistry) -> [MetricFamily] {
        let figures = registry.figures(now: System.monotonicNanos())
        guard !figures.isEmpty else { return [] }
        func per(_ value: ((cluster: String, active: Int, enforced: Int, overflow: Int)) -> Int) -> [(labels: [(String, String)], value: Double)] {
            figures.map { ([("cluster_name", $0.cluster)], Double(value($0))) }
        }
        return [
            MetricFamily(name: "envoy_cluster_outlier_detection_ejections_active", help: "Hosts of the cluster ejected now.", kind: .gauge,
                         samples: per { $0.active }),
            MetricFamily(name: "envoy_cluster_outlier_detection_ejections_enforced_total", help: "Ejections enforced.", kind: .counter,
                         samples: per { $0.enforced }),
            MetricFamily(name: "envoy_cluster_outlier_detection_ejections_overflow", help: "Ejections maxEjectionPercent refused.", kind: .counter,
                         samples: per { $0.overflow }),
        ]
    }

    /// Circuit breakers per cluster, under Envoy's names (what Istio users scrape and alert on): overflows of each
    /// limit, what is in use now against them, and whether each is reached (`circuit_breakers.default.*_open`).
    static func circuitMetrics(_ registry: CircuitRegistry) -> [MetricFamily] {
        let figures = registry.figures()
        guard !figures.isEmpty else { return [] }
        func per(_ value: (CircuitFigures) -> Int) -> [(labels: [(String, String)], value: Double)] {
            figures.map { ([("cluster_name", $0.cluster)], Double(value($0))) }
        }
        func open(_ i: Int) -> [(labels: [(String, String)], value: Double)] { per { $0.open[i] ? 1 : 0 } }
        return [
            MetricFamily(name: "envoy_cluster_upstream_cx_overflow", help: "Times the cluster's connection limit (tcp.maxConnections) was reached: an HTTP request waited instead, a TCP connection was closed (UO).", kind: .counter,
                         samples: per { $0.cxOverflow }),
            MetricFamily(name: "envoy_cluster_upstream_rq_pending_overflow", help: "Requests answered 503 UO because the cluster's pending (http1MaxPendingRequests) or in-flight (http2MaxRequests) limit was reached.", kind: .counter,
                         samples: per { $0.pendingOverflow }),
            MetricFamily(name: "envoy_cluster_upstream_rq_retry_overflow", help: "Retries not made because the cluster's retry limit (maxRetries or retryBudget) was reached.", kind: .counter,
                         samples: per { $0.retryOverflow }),
            MetricFamily(name: "envoy_cluster_upstream_cx_active", help: "Connections open to the cluster (HTTP pools and TCP routes).", kind: .gauge,
                         samples: per { $0.connections }),
            MetricFamily(name: "envoy_cluster_upstream_rq_pending_active", help: "Requests waiting for a connection to the cluster.", kind: .gauge,
                         samples: per { $0.pending }),
            MetricFamily(name: "envoy_cluster_upstream_rq_active", help: "Requests on a connection to the cluster.", kind: .gauge,
                         samples: per { $0.requests }),
            MetricFamily(name: "envoy_cluster_circuit_breakers_default_cx_open", help: "1 while the cluster's connection limit is reached.", kind: .gauge,
                         samples: open(0)),
            MetricFamily(name: "envoy_cluster_circuit_breakers_default_rq_pending_open", help: "1 while the cluster's pending-request limit is reached.", kind: .gauge,
                         samples: open(1)),
            MetricFamily(name: "envoy_cluster_circuit_breakers_default_rq_open", help: "1 while the cluster's in-flight request limit is reached.", kind: .gauge,
                         samples: open(2)),
            MetricFamily(name: "envoy_cluster_circuit_breakers_default_rq_retry_open", help: "1 while the cluster's retry limit is reached.", kind: .gauge,
                         samples: open(3)),
        ]
    }

    /// TLS handshakes by side (downstream: terminated by Tern; upstream: originated), resumed ones, failures by
    /// side and reason (TLSFailureReason), and certificate reloads. Present only where TLS is configured.
    static func tlsMetrics(_ tls: TLSCounters) -> [MetricFamily] {
        let sides = TLSCounters.Side.allCases
        guard tls.configured.load(ordering: .relaxed) else { return [] }
        return [
            MetricFamily(name: "tern_tls_certificate_reloads_total", help: "TLS certificate reloads applied (--tls-cert and its files changed).", kind: .counter,
                         samples: [([], Double(tls.reloads.count))]),
            MetricFamily(name: "tern_tls_certificate_reloads_refused_total", help: "TLS certificate reloads refused (a file could not be used; the previous certificate kept serving).", kind: .counter,
                         samples: [([], Double(tls.reloadsRefused.count))]),
            MetricFamily(name: "tern_tls_handshakes_total", help: "TLS handshakes completed, by side (downstream: clients of Tern's TLS listeners; upstream: connections Tern originates).", kind: .counter,
                         samples: sides.map { ([("side", $0.label)], Double(tls.handshakes($0))) }),
            MetricFamily(name: "tern_tls_resumed_handshakes_total", help: "TLS handshakes that resumed a session (ticket), by side.", kind: .counter,
                         samples: sides.map { ([("side", $0.label)], Double(tls.resumedHandshakes($0))) }),
            MetricFamily(name: "tern_tls_handshake_failures_total", help: "TLS handshakes that failed, by side and reason.", kind: .counter,
                         samples: sides.flatMap { side in
                             TLSFailureReason.allCases.map { ([("side", side.label), ("reason", $0.rawValue)], Double(tls.failures(side, $0))) }
                         }),
        ]
    }

    /// The access log's own counters.
    static func accessLogMetrics(_ w: AccessLogWriter) -> [MetricFamily] {
        [
            MetricFamily(name: "tern_access_log_lines_total", help: "Access-log lines written.", kind: .counter,
                         samples: [([], Double(w.linesWritten))]),
            MetricFamily(name: "tern_access_log_dropped_total", help: "Access-log lines dropped: a reactor's ring was full.",
                         kind: .counter, samples: [([], Double(w.linesDropped))]),
            MetricFamily(name: "tern_access_log_write_errors_total", help: "Failed writes to the access log (retried).",
                         kind: .counter, samples: [([], Double(w.writeErrors))]),
        ]
    }

    private static func runReactor<B: IOBackend>(
        _ type: B.Type, index: Int, listeners: [RelayListener], tcpListeners: [RelayListener], control: ReactorControl,
        backend: BackendSettings,
        relay: RelaySettings, http: HTTPSettings?, routes: SnapshotCell<RouteTable>?, policiesOnly: Bool = false, counters: RelayCounters,
        capacity: Int, startup: Startup, telemetry: Telemetry?, reporting: ProxyReporting,
        tls: SnapshotCell<TLSServerPolicy>?, originations: SnapshotCell<TLSOriginations>?
    ) -> IOError? {
        do {
            let b = try B(settings: backend)
            // A connection holds at most three timers at once (connect + socket retry while connecting; idle +
            // a pipe retry per direction afterwards); listeners hold one back-off each.
            let reactor = Reactor(index: index, backend: b, control: control, timerCapacity: 4 * capacity + 64)
            if let http {
                // A session holds at most five timers at once; an upstream connection one.
                // Listeners of both kinds: the HTTP proxy's relay (which splices its tunnels) also accepts on the TCP
                // ones.
                // With `--upstream`, a configuration gives only the policies of an inbound side.
                let reader = routes?.reader(index), inbound = policiesOnly
                let handler = HTTPProxy<B>(listeners: listeners, tcpListeners: tcpListeners, settings: http, relay: relay, counters: counters,
                                           capacity: capacity, bufferPool: b.buffers, routes: inbound ? nil : reader,
                                           policies: inbound ? reader : nil,
                                           telemetry: telemetry, reactorIndex: index, reporting: reporting, tls: tls?.reader(index),
                                           originations: originations?.reader(index))
                startup.ready.add(1, ordering: .releasing)
                try reactor.run(handler)
            } else {
                let handler = TCPRelay<B>(listeners: listeners, settings: relay, counters: counters, capacity: capacity,
                                          metrics: telemetry?.shards[index], routes: routes?.reader(index),
                                          accessLog: reporting.accessLog)
                startup.ready.add(1, ordering: .releasing)
                try reactor.run(handler)
            }
            return nil
        } catch {
            return error
        }
    }
}
