import ArgumentParser
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernProxy
import TernTLS
import TernTelemetry

struct ProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Relay TCP connections (or, with --http, proxy HTTP/1.1) from each --listen address to the --upstream at the same position, or as Istio configuration (--config) routes them."
    )

    @Flag(help: "Proxy HTTP/1.1 instead of relaying TCP: keep-alive both sides, pooled upstream connections, Envoy-style local replies.")
    var http = false

    @Option(name: .customLong("config"), help: "Route by Istio configuration (a YAML file, or a directory of *.yaml/*.yml) instead of --upstream: HTTP requests by Host with --http, TCP connections by the listener's port without; reloaded on change and on SIGHUP.")
    var config: String?

    @Option(name: .customLong("service-account"), help: "This workload's service account (a pod's in Istio), for AuthorizationPolicy and PeerAuthentication selectors and the workload's identity (default: default).")
    var serviceAccount = "default"

    @Option(name: .customLong("root-namespace"), help: "Istio's root namespace (MeshConfig rootNamespace): policies there without a selector apply to every workload (default: istio-system).")
    var rootNamespace = "istio-system"

    @Option(name: .customLong("namespace"), help: "--config: namespace of resources that name none (default: $POD_NAMESPACE, else default).")
    var namespace: String?

    @Option(name: .customLong("max-request-headers-kb"), help: "--http: largest request head in KiB (beyond: 431).")
    var maxRequestHeadersKB: Int = 60

    @Option(name: .customLong("max-request-headers-count"), help: "--http: most request header fields (beyond: 431).")
    var maxRequestHeadersCount: Int = 100

    @Option(name: .customLong("max-uri-kb"), help: "--http: longest request-target in KiB (beyond: 414).")
    var maxURIKB: Int = 16

    @Option(name: .customLong("xff-trusted-hops"), help: "--http: proxies in front of Tern whose forwarding fields are trusted (Envoy's xff_num_trusted_hops).")
    var xffTrustedHops: Int = 0

    @Option(name: .customLong("upstream-timeout"), help: "--http: from the end of a request to the end of its response (504 UT beyond); 0 disables. Default 15s with --upstream; with --config none, as Istio's, unless a route sets `timeout`.")
    var upstreamTimeout: String?

    @Option(name: .customLong("request-header-timeout"), help: "--http: from the first byte of a request head to its end (408 beyond).")
    var requestHeaderTimeout: String = "10s"

    @Option(name: .customLong("outbound-traffic-policy"), help: "--config: what a request whose Host names no service gets on a connection iptables redirected (Istio's MeshConfig outboundTrafficPolicy): ALLOW_ANY sends it on to its original destination (Istio's default), REGISTRY_ONLY answers 502.")
    var outboundTrafficPolicy = "ALLOW_ANY"

    @Option(name: .customLong("path-normalization"), help: "--http: how request paths are normalised before routing, AuthorizationPolicy and forwarding, as Istio's MeshConfig pathNormalization: BASE (RFC 3986 dot segments, backslashes, unreserved %XX decoded; Istio's default), MERGE_SLASHES, DECODE_AND_MERGE_SLASHES or NONE. A %00 is refused (400).")
    var pathNormalization = "BASE"

    @Flag(name: .customLong("accept-http-10"), help: "--http: proxy HTTP/1.0 requests (they need a Host field); without it they are answered 426 Upgrade Required, as Envoy and Istio answer them by default.")
    var acceptHTTP10 = false

    @Flag(name: .customLong("no-shadow-host-suffix"), help: "--http: mirrored requests keep the request's Host as it is (Istio 1.28+'s DISABLE_SHADOW_HOST_SUFFIX=true); by default -shadow is appended to it, as Envoy does.")
    var noShadowHostSuffix = false

    @Option(name: .customLong("http2-max-concurrent-streams"), help: "--http: streams an HTTP/2 client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; Envoy's max_concurrent_streams).")
    var http2MaxConcurrentStreams: Int = 100

    @Option(name: .customLong("http2-connection-window-kb"), help: "--http: KiB of request bodies an HTTP/2 client connection may have in flight across its streams (Envoy's initial_connection_window_size; a stream's own window is 64 KiB).")
    var http2ConnectionWindowKB: Int = 512

    @Option(name: .customLong("http2-max-frame-size"), help: "--http: the largest HTTP/2 frame payload a client may send (SETTINGS_MAX_FRAME_SIZE, 16384 to 16777215).")
    var http2MaxFrameSize: Int = 16_384

    @Option(name: .customLong("max-head-memory-mb"), help: "--http: MiB each reactor gives request heads that arrive in pieces (beyond: 503, flag OM).")
    var maxHeadMemoryMB: Int = 64

    @Option(name: .customLong("per-request-buffer-kb"), help: "--config: a request body up to this many KiB is held whole before it goes upstream, so a retry can send it again (Envoy's per_request_buffer_limit); larger bodies stream and are not retried.")
    var perRequestBufferKB: Int = 64

    @Option(name: .customLong("first-byte-timeout"), help: "--http: a client connection that sends no byte within this of its accept is closed (the idle timeout covers the time between its requests after that).")
    var firstByteTimeout: String = "10s"

    @Option(name: .customLong("stream-idle-timeout"), help: "--http: an exchange with no bytes moving this long is ended.")
    var streamIdleTimeout: String = "5m"

    @Option(name: .customLong("max-pending-requests"), help: "--http: requests waiting for a connection to one cluster (upstream), for the whole process, where no DestinationRule sets http1MaxPendingRequests (beyond: 503 UO).")
    var maxPendingRequests: Int = 1024

    @Option(name: .customLong("max-upstream-connections"), help: "--http: connections to one cluster (upstream), for the whole process, where no DestinationRule sets tcp.maxConnections (beyond: requests wait for one).")
    var maxUpstreamConnections: Int = 1024

    @Option(name: .customLong("locality"), help: "This sidecar's locality, region/zone/subzone (Istio's topology labels): DestinationRule localityLbSetting ranks and weighs endpoints by it (failover to the nearest, distribute).")
    var locality: String?

    @Option(name: .customLong("labels"), help: "This workload's labels, k=v,... (a pod's labels in Istio): DestinationRule localityLbSetting failoverPriority ranks endpoints by the labels they share with it; topology.kubernetes.io/region and zone and topology.istio.io/subzone give the locality.")
    var labels: String?

    @Option(name: .customLong("max-requests"), help: "--http: requests in flight to one cluster (upstream), for the whole process, where no DestinationRule sets http2MaxRequests (beyond: 503 UO; 0: no limit).")
    var maxRequests: Int = 0

    @Option(name: .customLong("max-retries"), help: "--http: retries under way to one cluster (upstream), for the whole process, where no DestinationRule sets maxRetries or a retryBudget (beyond: not retried, flag UO; 0: no limit).")
    var maxRetries: Int = 0

    @Option(name: .customLong("max-idle-upstream"), help: "--http: idle keep-alive connections kept to each upstream, per core.")
    var maxIdleUpstream: Int = 64

    @Option(name: .customLong("upstream-idle-timeout"), help: "--http: an idle pooled upstream connection closes after this long.")
    var upstreamIdleTimeout: String = "1h"

    @Option(name: .customLong("tls-cert"), help: "Terminate TLS on every --listen listener with this PEM certificate chain (leaf first); needs --tls-key. Reloaded when the file changes.")
    var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: "PEM private key (RSA or ECDSA) of --tls-cert.")
    var tlsKey: String?

    @Option(name: .customLong("tls-client-ca"), help: "Require a client certificate that verifies against this PEM CA bundle (mutual TLS).")
    var tlsClientCA: String?

    @Option(name: .customLong("tls-handshake-timeout"), help: "From the accept of a TLS connection to the end of its handshake (closed beyond).")
    var tlsHandshakeTimeout: String = "10s"

    @Option(name: .customLong("identity-dir"), help: "The workload's mesh identity: DIR/cert-chain.pem, key.pem and root-cert.pem, as Istio mounts them and `tern cert issue` writes them; watched and rotated. An inbound side (--http --upstream APP, with --config) then terminates mutual TLS: peers present X.509-SVIDs of the trust domain chaining to the root, their SPIFFE ID is the source principal, and the app gets X-Forwarded-Client-Cert. With --config alone, requests to endpoints labelled security.istio.io/tlsMode: istio (or under DestinationRule tls mode ISTIO_MUTUAL) go over mutual TLS with it.")
    var identityDir: String?

    @Option(name: .customLong("trust-domain"), help: "--identity-dir: the mesh's trust domain; peers' SPIFFE IDs must be in it (default: the workload certificate's).")
    var trustDomain: String?

    @Option(name: .customLong("credentials-dir"), help: "--config: where DestinationRule tls credentialName secrets are, DIR/NAME/tls.crt, tls.key and ca.crt (a mounted Kubernetes TLS secret).")
    var credentialsDir: String?

    @Option(name: .customLong("listen"), help: "Address to accept on, IP:PORT or [IPv6]:PORT (port 0 picks one), optionally with its kind: tcp:ADDR relays TCP, http:ADDR proxies HTTP/1.1 (without one: http with --http, tcp without). Repeatable; one process may have both kinds.")
    var listen: [String] = []

    @Option(name: .customLong("upstream"), help: "Address to relay to, paired with --listen by position. Repeatable.")
    var upstream: [String] = []

    @Option(name: .customLong("inbound"), help: "A sidecar's inbound listener (Istio's 15006), IP:PORT, beside the outbound --listen ones --config routes: HTTP requests for the local app, under the workload's PeerAuthentication and AuthorizationPolicy (mutual TLS with --identity-dir), sent to --inbound-app, or without it to the original destination of each connection `tern iptables` redirected, from 127.0.0.6. Repeatable.")
    var inbound: [String] = []

    @Option(name: .customLong("inbound-ports"), help: "An inbound side's app ports and their protocols, PORT/PROTOCOL[,...] (PORT is the app's, the original destination's or --inbound-app's or --upstream's): HTTP2 or GRPC ports are spoken to in HTTP/2 (h2c), HTTP ones in HTTP/1.1 (the default for ports not named). Repeatable.")
    var inboundPorts: [String] = []

    @Option(name: .customLong("inbound-app"), help: "--inbound: the app's address, IP:PORT, where inbound requests go (default: each redirected connection's original destination).")
    var inboundApp: String?

    @Option(help: "Reactor threads, one pinned per CPU (default: the CPUs of the inherited affinity mask, capped by the cgroup CPU quota).")
    var cores: Int?

    @Option(name: .customLong("io-backend"), help: "auto, io_uring or epoll (auto falls back to epoll when io_uring cannot be set up).")
    var ioBackend: String = "auto"

    @Option(name: .customLong("ring-depth"), help: "io_uring submission queue depth, a power of two from 8 to 32768.")
    var ringDepth: Int = 1024

    @Flag(help: "Use an io_uring kernel submission-polling thread.")
    var sqpoll = false

    @Option(name: .customLong("connect-timeout"), help: "Upstream connect timeout.")
    var connectTimeout: String = "5s"

    @Option(name: .customLong("idle-timeout"), help: "Close a connection with no bytes in either direction for this long.")
    var idleTimeout: String = "1h"

    @Option(name: .customLong("drain-timeout"), help: "On SIGTERM or SIGINT, how long open connections may finish before they are closed.")
    var drainTimeout: String = "5s"

    @Option(name: .customLong("max-connections"), help: "Process-wide cap on open proxied connections; beyond it new ones are closed at once (0: unlimited).")
    var maxConnections: Int = 0

    @Option(name: .customLong("log-level"), help: "trace, debug, info, warn or error.")
    var logLevel: String = "info"

    @Option(name: .customLong("admin"), help: "Admin listener (/stats, /config_dump, /clusters, /ready, …), ADDR or off (default: 127.0.0.1:15000; a taken default is a warning, a taken explicit address fatal).")
    var admin: String?

    @Option(name: .customLong("health"), help: "Health listener for /healthz/ready, ADDR or off (default: 0.0.0.0:15021).")
    var health: String?

    @Option(name: .customLong("prometheus"), help: "Prometheus listener for /stats/prometheus, ADDR or off (default: 0.0.0.0:15090).")
    var prometheus: String?

    @Option(name: .customLong("metrics"), help: "Record Istio's standard metrics per request: on or off.")
    var metrics: String = "on"

    @Option(name: .customLong("workload"), help: "This workload's name for the metric labels (default: $ISTIO_META_WORKLOAD_NAME, else unknown).")
    var workload: String?

    @Option(name: .customLong("reporter"), help: "Metric reporter label: source (outbound) or destination (inbound) (default: source with --config, destination with --upstream).")
    var reporter: String?

    @Option(name: .customLong("access-log"), help: "Write an access log line per request or TCP connection to PATH, or - for stdout (default: off). SIGUSR1 reopens the file.")
    var accessLog: String?

    @Option(name: .customLong("access-log-format"), help: "Access log format: json (Istio's JSON keys) or text (Istio's default text line).")
    var accessLogFormat: String = "json"

    @Option(name: .customLong("trace-collector"), help: "--http: export spans to http://HOST:PORT/api/v2/spans (Zipkin v2 JSON) or http://HOST:PORT/v1/traces (OTLP/HTTP JSON) (default: off).")
    var traceCollector: String?

    @Option(name: .customLong("trace-sampling"), help: "--http: percentage of requests without a sampling decision that are traced (0 to 100).")
    var traceSampling: Double = 1.0

    /// Checks every flag and builds the settings; each failure names the flag and what it accepts.
    func settings() throws(ValidationError) -> ProxySettings {
        var s = ProxySettings()
        if listen.isEmpty && inbound.isEmpty { throw ValidationError("--listen is required (IP:PORT or [IPv6]:PORT)") }
        if !inbound.isEmpty {
            guard config != nil && upstream.isEmpty else {
                throw ValidationError("--inbound is the inbound side of a sidecar whose outbound side --config routes: it needs --config and no --upstream (--upstream with --config is an inbound side alone)")
            }
            guard tlsCert == nil && tlsKey == nil && tlsClientCA == nil else {
                throw ValidationError("--inbound listeners take mutual TLS from --identity-dir; --tls-cert, --tls-key and --tls-client-ca are for a proxy outside a mesh")
            }
            for a in inbound {
                guard let address = SocketAddress(parsing: a) else {
                    throw ValidationError("--inbound must be IP:PORT or [IPv6]:PORT with a port from 0 to 65535, got '\(a)'")
                }
                s.inbound.append(address)
            }
        }
        if let inboundApp {
            guard !inbound.isEmpty else { throw ValidationError("--inbound-app is where --inbound listeners send requests: it needs --inbound") }
            guard let a = SocketAddress(parsing: inboundApp), a.port != 0 else {
                throw ValidationError("--inbound-app must be IP:PORT or [IPv6]:PORT with a port from 1 to 65535, got '\(inboundApp)'")
            }
            if let v6 = a.ipv6, !(v6.high == 0 && v6.low == 1) {
                // (Under `tern iptables --ipv6` it would need ::6 on lo to be reached without being redirected back.)
                throw ValidationError("--inbound-app: an IPv6 app other than [::1] is not supported yet, got '\(inboundApp)'")
            }
            s.inboundApp = a
        }
        if let config {
            // With --upstream the configuration gives only the AuthorizationPolicies an inbound side enforces.
            guard upstream.isEmpty || http else {
                throw ValidationError("--config with --upstream (an inbound side enforcing AuthorizationPolicy) needs --http")
            }
            if !upstream.isEmpty && (listen.contains { $0.hasPrefix("tcp:") } || (!http && listen.allSatisfy { !$0.hasPrefix("http:") })) {
                throw ValidationError("--config with --upstream (an inbound side) takes HTTP listeners only: AuthorizationPolicy on TCP connections is not enforced yet")
            }
            if !upstream.isEmpty && listen.count != upstream.count {
                throw ValidationError("--listen and --upstream pair by position: got \(listen.count) --listen and \(upstream.count) --upstream")
            }
            s.configPath = config
            let pod = ConfigFiles.environment("POD_NAMESPACE")
            s.namespace = ConfigLoader.defaultNamespace(flag: namespace, environment: pod.map { ["POD_NAMESPACE": $0] } ?? [:])
            s.serviceAccount = serviceAccount
            s.rootNamespace = rootNamespace
        } else if listen.count != upstream.count {
            throw ValidationError("--listen and --upstream pair by position: got \(listen.count) --listen and \(upstream.count) --upstream")
        }
        for l in listen {
            var kind: ListenerKind = http ? .http : .tcp
            var text = Substring(l)
            if let k = [ListenerKind.tcp, .http].first(where: { text.hasPrefix($0.rawValue + ":") }) {
                kind = k
                text = text.dropFirst(k.rawValue.count + 1)
            }
            guard let a = SocketAddress(parsing: String(text)) else {
                throw ValidationError("--listen must be IP:PORT or [IPv6]:PORT with a port from 0 to 65535, optionally after tcp: or http:, got '\(l)'")
            }
            s.listen.append(a)
            s.listenKinds.append(kind)
        }
        for u in upstream {
            guard let a = SocketAddress(parsing: u), a.port != 0 else {
                throw ValidationError("--upstream must be IP:PORT or [IPv6]:PORT with a port from 1 to 65535, got '\(u)'")
            }
            s.upstreams.append(a)
        }
        if let c = cores, c < 1 || c > 1024 { throw ValidationError("--cores must be a whole number from 1 to 1024, got \(c)") }
        s.cores = cores
        guard let backend = IOBackendChoice(rawValue: ioBackend) else {
            throw ValidationError("--io-backend must be auto, io_uring or epoll, got '\(ioBackend)'")
        }
        s.ioBackend = backend
        guard ringDepth >= 8 && ringDepth <= 32768 && ringDepth & (ringDepth - 1) == 0 else {
            throw ValidationError("--ring-depth must be a power of two from 8 to 32768, got \(ringDepth)")
        }
        s.backend.ringDepth = UInt32(ringDepth)
        s.backend.sqpoll = sqpoll
        s.relay.connectTimeout = try duration(connectTimeout, flag: "--connect-timeout")
        s.relay.idleTimeout = try duration(idleTimeout, flag: "--idle-timeout")
        s.drainTimeout = try duration(drainTimeout, flag: "--drain-timeout", allowZero: true)
        guard maxConnections >= 0 else { throw ValidationError("--max-connections must be 0 (unlimited) or a positive whole number, got \(maxConnections)") }
        s.relay.maxConnections = maxConnections
        // Circuit-breaker defaults (per cluster, process-wide); relay settings, as TCP routes apply DestinationRule
        // limits too.
        func positive(_ v: Int, _ flag: String) throws(ValidationError) -> Int {
            guard v >= 1 && v <= 1 << 30 else { throw ValidationError("\(flag) must be a whole number from 1 to \(1 << 30), got \(v)") }
            return v
        }
        func limit(_ v: Int, _ flag: String) throws(ValidationError) -> Int {
            guard v >= 0 && v <= 1 << 30 else { throw ValidationError("\(flag) must be 0 (no limit) or a whole number up to \(1 << 30), got \(v)") }
            return v
        }
        if let locality {
            let parts = locality.split(separator: "/", omittingEmptySubsequences: false)
            guard !locality.isEmpty, parts.count <= 3, !parts[0].isEmpty, !locality.contains("*") else {
                throw ValidationError("--locality must be region, region/zone or region/zone/subzone, got '\(locality)'")
            }
            s.relay.locality = locality
        }
        if let labels {
            switch WorkloadLabels.parse(labels) {
            case .success(let l): s.relay.labels = l
            case .failure(let e): throw ValidationError("--labels: \(e)")
            }
            // Istio takes a proxy's locality from its topology labels first.
            if let fromLabels = WorkloadLabels.locality(s.relay.labels) {
                if let locality, locality != fromLabels {
                    throw ValidationError("--locality '\(locality)' disagrees with the topology labels of --labels ('\(fromLabels)')")
                }
                s.relay.locality = fromLabels
            }
        }
        s.relay.circuits.maxPending = try positive(maxPendingRequests, "--max-pending-requests")
        s.relay.circuits.maxConnections = try positive(maxUpstreamConnections, "--max-upstream-connections")
        s.relay.circuits.maxRequests = try limit(maxRequests, "--max-requests")
        s.relay.circuits.maxRetries = try limit(maxRetries, "--max-retries")
        s.relay.circuits.upstreamIdleTimeout = try duration(upstreamIdleTimeout, flag: "--upstream-idle-timeout")
        guard let level = LogLevel(name: logLevel) else {
            throw ValidationError("--log-level must be trace, debug, info, warn or error, got '\(logLevel)'")
        }
        s.logLevel = level
        // HTTP settings (the --http flags) apply to every HTTP listener, given by --http or by http:ADDR.
        if http || s.listenKinds.contains(.http) || !s.inbound.isEmpty { s.http = try httpSettings() }
        if let credentialsDir {
            guard s.configPath != nil else { throw ValidationError("--credentials-dir holds DestinationRule credentials: it needs --config") }
            s.credentialsDir = credentialsDir
        }
        if let trustDomain {
            guard identityDir != nil else { throw ValidationError("--trust-domain is the trust domain of --identity-dir: it needs --identity-dir") }
            guard let id = try? SPIFFEID(parsing: "spiffe://" + trustDomain), id.trustDomain == trustDomain, id.path.isEmpty else {
                throw ValidationError("--trust-domain must be a trust domain such as cluster.local (lower-case letters, digits, '.', '-' and '_'), got '\(trustDomain)'")
            }
        }
        if let identityDir {
            guard tlsCert == nil && tlsKey == nil && tlsClientCA == nil else {
                throw ValidationError("--identity-dir gives the certificate, key and CA of mutual TLS between sidecars: it excludes --tls-cert, --tls-key and --tls-client-ca")
            }
            guard s.http != nil else {
                throw ValidationError("--identity-dir needs HTTP listeners (--http, --listen http:ADDR or --inbound): mutual TLS for TCP listeners is not supported yet")
            }
            let files = MeshIdentityFiles(directory: identityDir, trustDomain: trustDomain)
            s.identity = files
            if s.configPath == nil || s.policiesOnly || !s.inbound.isEmpty {
                // An inbound side: its listeners (the `--inbound` ones beside outbound ones) terminate mutual TLS
                // with the identity.
                s.tls = files.serverFiles
                s.http?.tlsHandshakeTimeout = try duration(tlsHandshakeTimeout, flag: "--tls-handshake-timeout")
            }
        }
        switch (tlsCert, tlsKey) {
        case _ where identityDir != nil:
            break
        case (let cert?, let key?):
            // TCP listeners terminating TLS are served by the HTTP engine, which holds the TLS code: it runs with
            // its settings even when no listener speaks HTTP (every listener's kind is explicit by now).
            if s.http == nil { s.http = try httpSettings() }
            s.tls = TLSServerFiles(certificate: cert, key: key, clientCA: tlsClientCA)
            s.http?.tlsHandshakeTimeout = try duration(tlsHandshakeTimeout, flag: "--tls-handshake-timeout")
        case (nil, nil):
            if tlsClientCA != nil { throw ValidationError("--tls-client-ca needs --tls-cert and --tls-key") }
        default:
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        s.telemetry = try telemetrySettings(namespace: s.namespace)
        return s
    }

    private func telemetrySettings(namespace: String) throws(ValidationError) -> TelemetrySettings {
        var t = TelemetrySettings()
        func side(_ value: String?, _ flag: String, _ fallback: TelemetrySettings.Address) throws(ValidationError) -> TelemetrySettings.Address {
            guard let value else { return fallback }
            if value == "off" { return .off }
            guard let a = SocketAddress(parsing: value) else {
                throw ValidationError("\(flag) must be IP:PORT, [IPv6]:PORT or off, got '\(value)'")
            }
            return .required(a)
        }
        t.admin = try side(admin, "--admin", t.admin)
        t.health = try side(health, "--health", t.health)
        t.prometheus = try side(prometheus, "--prometheus", t.prometheus)
        switch metrics {
        case "on": t.metrics = true
        case "off": t.metrics = false
        default: throw ValidationError("--metrics must be on or off, got '\(metrics)'")
        }
        if let reporter {
            guard let r = Reporter(rawValue: reporter) else { throw ValidationError("--reporter must be source or destination, got '\(reporter)'") }
            t.reporter = r
        }
        let name = workload ?? ConfigFiles.environment("ISTIO_META_WORKLOAD_NAME") ?? "unknown"
        guard !name.isEmpty, !name.contains(where: { $0 == "\n" || $0 == "=" }) else {
            throw ValidationError("--workload must be a name, got '\(name)'")
        }
        t.workload.workload = name
        t.workload.canonicalService = name
        t.workload.namespace = namespace
        if let accessLog {
            guard !accessLog.isEmpty else { throw ValidationError("--access-log must be a file path or -, got ''") }
            t.accessLog = accessLog
        }
        guard accessLogFormat == "json" || accessLogFormat == "text" else {
            throw ValidationError("--access-log-format must be json or text, got '\(accessLogFormat)'")
        }
        t.accessLogFormat = accessLogFormat
        guard traceSampling >= 0 && traceSampling <= 100 else {
            throw ValidationError("--trace-sampling must be a percentage from 0 to 100, got \(traceSampling)")
        }
        t.traceSampling = traceSampling
        if let traceCollector {
            guard http || listen.contains(where: { $0.hasPrefix("http:") }) else {
                throw ValidationError("--trace-collector traces HTTP requests: it needs an HTTP listener (--http, or --listen http:ADDR)")
            }
            do {
                _ = try TracingSettings(collector: traceCollector, sampling: traceSampling)
            } catch {
                throw ValidationError("\(error.description) (…/api/v2/spans for Zipkin v2 JSON, …/v1/traces for OTLP/HTTP JSON)")
            }
            t.traceCollector = traceCollector
        }
        return t
    }

    private func httpSettings() throws(ValidationError) -> HTTPSettings {
        var h = HTTPSettings()
        func positive(_ v: Int, _ flag: String, max: Int) throws(ValidationError) -> Int {
            guard v >= 1 && v <= max else { throw ValidationError("\(flag) must be a whole number from 1 to \(max), got \(v)") }
            return v
        }
        h.limits = .init(maxHeaderBytes: try positive(maxRequestHeadersKB, "--max-request-headers-kb", max: 8192) * 1024,
                         maxHeaderCount: try positive(maxRequestHeadersCount, "--max-request-headers-count", max: 10_000),
                         maxURIBytes: try positive(maxURIKB, "--max-uri-kb", max: 8192) * 1024)
        guard xffTrustedHops >= 0 && xffTrustedHops <= 64 else { throw ValidationError("--xff-trusted-hops must be from 0 to 64, got \(xffTrustedHops)") }
        h.xffTrustedHops = xffTrustedHops
        // Istio writes Envoy's route timeout as 0 (none) unless the VirtualService sets one: with --config the
        // flag is only a default when given.
        h.upstreamTimeout = try upstreamTimeout.map { v throws(ValidationError) in try duration(v, flag: "--upstream-timeout", allowZero: true) }
            ?? (config == nil ? .seconds(15) : .zero)
        h.requestHeaderTimeout = try duration(requestHeaderTimeout, flag: "--request-header-timeout")
        h.firstByteTimeout = try duration(firstByteTimeout, flag: "--first-byte-timeout")
        h.maxHeadMemoryBytes = try positive(maxHeadMemoryMB, "--max-head-memory-mb", max: 1 << 20) << 20
        guard perRequestBufferKB >= 0 && perRequestBufferKB <= 1024 else { throw ValidationError("--per-request-buffer-kb must be from 0 to 1024, got \(perRequestBufferKB)") }
        h.perRequestBufferBytes = perRequestBufferKB << 10
        h.acceptHTTP10 = acceptHTTP10
        guard let normalization = PathNormalization(rawValue: pathNormalization.uppercased()) else {
            throw ValidationError("--path-normalization must be NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES, got \(pathNormalization)")
        }
        h.pathNormalization = normalization
        h.shadowHostSuffix = !noShadowHostSuffix
        for item in inboundPorts.flatMap({ $0.split(separator: ",") }) {
            let parts = item.split(separator: "/", maxSplits: 1)
            guard let port = UInt16(parts[0]), port > 0 else {
                throw ValidationError("--inbound-ports takes PORT/PROTOCOL with a port from 1 to 65535, got '\(item)'")
            }
            switch parts.count == 2 ? parts[1].uppercased() : "TCP" {
            case "HTTP": break
            case "HTTP2", "GRPC": h.inboundHTTP2Ports.append(port)
            case "TCP": throw ValidationError("--inbound-ports \(item): TCP ports (the default protocol) are not served by an inbound side yet; its listeners speak HTTP: name HTTP, HTTP2 or GRPC")
            default: throw ValidationError("--inbound-ports \(item): the protocol must be HTTP, HTTP2, GRPC or TCP")
            }
        }
        if !inboundPorts.isEmpty && inbound.isEmpty && (config == nil || upstream.isEmpty) {
            throw ValidationError("--inbound-ports describes an inbound side's app: it needs --inbound, or --upstream with --config")
        }
        switch outboundTrafficPolicy.uppercased() {
        case "ALLOW_ANY": h.allowAnyOutbound = true
        case "REGISTRY_ONLY": h.allowAnyOutbound = false
        default: throw ValidationError("--outbound-traffic-policy must be ALLOW_ANY or REGISTRY_ONLY, got '\(outboundTrafficPolicy)'")
        }
        h.streamIdleTimeout = try duration(streamIdleTimeout, flag: "--stream-idle-timeout")
        guard maxIdleUpstream >= 0 && maxIdleUpstream <= 1 << 20 else { throw ValidationError("--max-idle-upstream must be from 0 to 1048576, got \(maxIdleUpstream)") }
        h.maxIdleUpstream = maxIdleUpstream
        h.http2MaxConcurrentStreams = UInt32(try positive(http2MaxConcurrentStreams, "--http2-max-concurrent-streams", max: Int(Int32.max)))
        guard http2ConnectionWindowKB >= 64 && http2ConnectionWindowKB <= (Int(Int32.max) >> 10) else {
            throw ValidationError("--http2-connection-window-kb must be from 64 to \(Int(Int32.max) >> 10), got \(http2ConnectionWindowKB)")
        }
        h.http2ConnectionWindow = UInt32(http2ConnectionWindowKB << 10)
        guard http2MaxFrameSize >= 16_384 && http2MaxFrameSize <= 16_777_215 else {
            throw ValidationError("--http2-max-frame-size must be from 16384 to 16777215, got \(http2MaxFrameSize)")
        }
        h.http2MaxFrameSize = UInt32(http2MaxFrameSize)
        return h
    }

    private func duration(_ text: String, flag: String, allowZero: Bool = false) throws(ValidationError) -> TernDuration {
        guard let d = TernDuration(parsing: text), allowZero || d.nanoseconds > 0 else {
            throw ValidationError("\(flag) must be a duration such as 5s, 250ms or 1h30m\(allowZero ? "" : ", above zero"), got '\(text)'")
        }
        return d
    }

    func validate() throws {
        _ = try settings()
    }

    mutating func runProxy() -> Int32 {
        guard let s = try? settings() else { return 64 }
        // Hand over to tern-engine, installed next to this binary, which links no argument parser (see
        // ProxySettings+Encoding.swift); same PID, same stderr. Without it, serve from here.
        let engine = System.siblingExecutable(named: "tern-engine")
        let error = System.exec(path: engine, arguments: [ProxySettings.serveCommand] + s.encoded())
        System.writeStderr("tern: warning: cannot run \(engine) (\(error)); serving from this process, which uses about 2 MiB more memory")
        return ProxyServer(settings: s).run()
    }
}
