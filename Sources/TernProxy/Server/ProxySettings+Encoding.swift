// The proxy's settings as plain `key=value` arguments, for the lean serving process.
//
// `tern proxy` parses and validates its flags with swift-argument-parser, which links FoundationEssentials.
// Merely linking them costs a serving process about 2 MiB of resident memory for its whole life (measured
// here, idle, static standard library: 9.8 MiB with them linked, 7.6 MiB without, even when no parsing
// code runs). So once the flags are valid, `tern proxy` executes `tern-engine __serve-proxy key=value ...`
// (same PID, same descriptors), a binary that links no argument parser and decodes these arguments.
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

extension ProxySettings {
    /// The hidden first argument of the lean serving process.
    public static let serveCommand = "__serve-proxy"

    /// The settings as `key=value` arguments; `init(decoding:)` reverses it exactly.
    public func encoded() -> [String] {
        var out: [String] = []
        for a in listen { out.append("listen=\(a)") }
        if !listenKinds.isEmpty { out.append("listen-kinds=\(listenKinds.map(\.rawValue).joined(separator: ","))") }
        for a in upstreams { out.append("upstream=\(a)") }
        for a in inbound { out.append("inbound=\(a)") }
        if let inboundApp { out.append("inbound-app=\(inboundApp)") }
        if let cores { out.append("cores=\(cores)") }
        out.append("io-backend=\(ioBackend.rawValue)")
        out.append("ring-depth=\(backend.ringDepth)")
        out.append("sqpoll=\(backend.sqpoll ? 1 : 0)")
        out.append("connect-timeout-ns=\(relay.connectTimeout.nanoseconds)")
        out.append("idle-timeout-ns=\(relay.idleTimeout.nanoseconds)")
        out.append("drain-timeout-ns=\(drainTimeout.nanoseconds)")
        out.append("max-connections=\(relay.maxConnections)")
        out.append("max-pending-requests=\(relay.circuits.maxPending)")
        out.append("max-upstream-connections=\(relay.circuits.maxConnections)")
        out.append("max-requests=\(relay.circuits.maxRequests)")
        out.append("max-retries=\(relay.circuits.maxRetries)")
        if !relay.locality.isEmpty { out.append("locality=\(relay.locality)") }
        if !relay.labels.isEmpty {
            // (Label names and values hold neither `,` nor `=`: `tern proxy` checks them.)
            out.append("labels=\(relay.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))")
        }
        out.append("upstream-idle-timeout-ns=\(relay.circuits.upstreamIdleTimeout.nanoseconds)")
        out.append("log-level=\(logLevel)")
        if let configPath {
            out.append("config=\(configPath)")
            out.append("namespace=\(namespace)")
            out.append("service-account=\(serviceAccount)")
            out.append("root-namespace=\(rootNamespace)")
        }
        let t = telemetry
        out.append("admin=\(TelemetrySettings.encode(t.admin))")
        out.append("health=\(TelemetrySettings.encode(t.health))")
        out.append("prometheus=\(TelemetrySettings.encode(t.prometheus))")
        out.append("metrics=\(t.metrics ? 1 : 0)")
        out.append("workload=\(t.workload.workload)")
        out.append("workload-namespace=\(t.workload.namespace)")
        if let r = t.reporter { out.append("reporter=\(r.rawValue)") }
        if let a = t.accessLog { out.append("access-log=\(a)") }
        out.append("access-log-format=\(t.accessLogFormat)")
        if let c = t.traceCollector { out.append("trace-collector=\(c)") }
        out.append("trace-sampling=\(t.traceSampling)")
        if let credentialsDir { out.append("credentials-dir=\(credentialsDir)") }
        if let identity {
            out.append("identity-dir=\(identity.directory)")
            if let td = identity.trustDomain { out.append("trust-domain=\(td)") }
        }
        if let tls {
            out.append("tls-cert=\(tls.certificate)")
            out.append("tls-key=\(tls.key)")
            if let ca = tls.clientCA { out.append("tls-client-ca=\(ca)") }
        }
        if let http {
            out.append("http=1")
            out.append("tls-handshake-timeout-ns=\(http.tlsHandshakeTimeout.nanoseconds)")
            out.append("max-request-headers-bytes=\(http.limits.maxHeaderBytes)")
            out.append("max-request-headers-count=\(http.limits.maxHeaderCount)")
            out.append("max-uri-bytes=\(http.limits.maxURIBytes)")
            out.append("xff-trusted-hops=\(http.xffTrustedHops)")
            out.append("upstream-timeout-ns=\(http.upstreamTimeout.nanoseconds)")
            out.append("request-header-timeout-ns=\(http.requestHeaderTimeout.nanoseconds)")
            out.append("first-byte-timeout-ns=\(http.firstByteTimeout.nanoseconds)")
            out.append("max-head-memory-bytes=\(http.maxHeadMemoryBytes)")
            out.append("per-request-buffer-bytes=\(http.perRequestBufferBytes)")
            out.append("accept-http-10=\(http.acceptHTTP10 ? 1 : 0)")
            out.append("path-normalization=\(PathNormalization.allCases.firstIndex(of: http.pathNormalization) ?? 1)")
            out.append("shadow-host-suffix=\(http.shadowHostSuffix ? 1 : 0)")
            out.append("allow-any-outbound=\(http.allowAnyOutbound ? 1 : 0)")
            for p in http.inboundHTTP2Ports { out.append("inbound-http2-port=\(p)") }
            out.append("stream-idle-timeout-ns=\(http.streamIdleTimeout.nanoseconds)")
            out.append("max-idle-upstream=\(http.maxIdleUpstream)")
            out.append("http2-max-concurrent-streams=\(http.http2MaxConcurrentStreams)")
            out.append("http2-connection-window=\(http.http2ConnectionWindow)")
            out.append("http2-max-frame-size=\(http.http2MaxFrameSize)")
        }
        return out
    }

    /// Decodes `encoded()` output. These arguments come from `tern proxy` itself, never from a user, so
    /// anything unexpected is an internal error.
    public init(decoding arguments: [String]) throws(SetupError) {
        self.init()
        for argument in arguments {
            guard let eq = argument.firstIndex(of: "=") else { throw SetupError(description: "malformed argument '\(argument)'") }
            let key = String(argument[..<eq])
            let value = String(argument[argument.index(after: eq)...])
            func number() throws(SetupError) -> UInt64 {
                guard let n = UInt64(value) else { throw SetupError(description: "\(key): not a number: '\(value)'") }
                return n
            }
            func address() throws(SetupError) -> SocketAddress {
                guard let a = SocketAddress(parsing: value) else { throw SetupError(description: "\(key): not an address: '\(value)'") }
                return a
            }
            switch key {
            case "listen": listen.append(try address())
            case "listen-kinds":
                listenKinds = try value.split(separator: ",").map { k throws(SetupError) -> ListenerKind in
                    guard let kind = ListenerKind(rawValue: String(k)) else { throw SetupError(description: "listen-kinds: '\(value)'") }
                    return kind
                }
            case "upstream": upstreams.append(try address())
            case "inbound": inbound.append(try address())
            case "inbound-app": inboundApp = try address()
            case "cores": cores = Int(try number())
            case "io-backend":
                guard let b = IOBackendChoice(rawValue: value) else { throw SetupError(description: "io-backend: '\(value)'") }
                ioBackend = b
            case "ring-depth": backend.ringDepth = UInt32(truncatingIfNeeded: try number())
            case "sqpoll": backend.sqpoll = try number() == 1
            case "connect-timeout-ns": relay.connectTimeout = TernDuration(nanoseconds: try number())
            case "idle-timeout-ns": relay.idleTimeout = TernDuration(nanoseconds: try number())
            case "drain-timeout-ns": drainTimeout = TernDuration(nanoseconds: try number())
            case "max-connections": relay.maxConnections = Int(try number())
            case "max-pending-requests": relay.circuits.maxPending = Int(try number())
            case "max-upstream-connections": relay.circuits.maxConnections = Int(try number())
            case "max-requests": relay.circuits.maxRequests = Int(try number())
            case "max-retries": relay.circuits.maxRetries = Int(try number())
            case "locality": relay.locality = value
            case "labels":
                for pair in value.split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                    relay.labels[String(kv[0])] = kv.count == 2 ? String(kv[1]) : ""
                }
            case "upstream-idle-timeout-ns": relay.circuits.upstreamIdleTimeout = TernDuration(nanoseconds: try number())
            case "log-level":
                guard let l = LogLevel(name: value) else { throw SetupError(description: "log-level: '\(value)'") }
                logLevel = l
            case "http": http = HTTPSettings()
            case "config": configPath = value
            case "namespace": namespace = value
            case "service-account": serviceAccount = value
            case "root-namespace": rootNamespace = value
            case "admin", "health", "prometheus":
                guard let a = TelemetrySettings.decode(value) else { throw SetupError(description: "\(key): '\(value)'") }
                if key == "admin" { telemetry.admin = a } else if key == "health" { telemetry.health = a } else { telemetry.prometheus = a }
            case "metrics": telemetry.metrics = try number() == 1
            case "workload":
                telemetry.workload.workload = value
                telemetry.workload.canonicalService = value
            case "workload-namespace": telemetry.workload.namespace = value
            case "reporter":
                guard let r = Reporter(rawValue: value) else { throw SetupError(description: "reporter: '\(value)'") }
                telemetry.reporter = r
            case "access-log": telemetry.accessLog = value
            case "access-log-format": telemetry.accessLogFormat = value
            case "trace-collector": telemetry.traceCollector = value
            case "credentials-dir": credentialsDir = value
            case "identity-dir": identity = MeshIdentityFiles(directory: value, trustDomain: identity?.trustDomain)
            case "trust-domain": identity = MeshIdentityFiles(directory: identity?.directory ?? "", trustDomain: value)
            case "tls-cert": tls = TLSServerFiles(certificate: value, key: tls?.key ?? "", clientCA: tls?.clientCA)
            case "tls-key": tls = TLSServerFiles(certificate: tls?.certificate ?? "", key: value, clientCA: tls?.clientCA)
            case "tls-client-ca": tls = TLSServerFiles(certificate: tls?.certificate ?? "", key: tls?.key ?? "", clientCA: value)
            case "trace-sampling":
                guard let p = Double(value) else { throw SetupError(description: "trace-sampling: '\(value)'") }
                telemetry.traceSampling = p
            default:
                guard http != nil else { throw SetupError(description: "unknown setting '\(key)'") }
                try decodeHTTP(key, try number())
            }
        }
        guard !listen.isEmpty || !inbound.isEmpty, listen.count == upstreams.count || (configPath != nil && upstreams.isEmpty) else {
            throw SetupError(description: "listen and upstream do not pair")
        }
    }

    private mutating func decodeHTTP(_ key: String, _ n: UInt64) throws(SetupError) {
        guard var h = http else { return }
        let i = Int(truncatingIfNeeded: n)
        switch key {
        case "max-request-headers-bytes": h.limits = .init(maxHeaderBytes: i, maxHeaderCount: h.limits.maxHeaderCount, maxURIBytes: h.limits.maxURIBytes)
        case "max-request-headers-count": h.limits = .init(maxHeaderBytes: h.limits.maxHeaderBytes, maxHeaderCount: i, maxURIBytes: h.limits.maxURIBytes)
        case "max-uri-bytes": h.limits = .init(maxHeaderBytes: h.limits.maxHeaderBytes, maxHeaderCount: h.limits.maxHeaderCount, maxURIBytes: i)
        case "xff-trusted-hops": h.xffTrustedHops = i
        case "upstream-timeout-ns": h.upstreamTimeout = TernDuration(nanoseconds: n)
        case "request-header-timeout-ns": h.requestHeaderTimeout = TernDuration(nanoseconds: n)
        case "first-byte-timeout-ns": h.firstByteTimeout = TernDuration(nanoseconds: n)
        case "max-head-memory-bytes": h.maxHeadMemoryBytes = i
        case "per-request-buffer-bytes": h.perRequestBufferBytes = i
        case "accept-http-10": h.acceptHTTP10 = n == 1
        case "path-normalization":
            guard n < PathNormalization.allCases.count else { throw SetupError(description: "path-normalization \(n) is not a mode") }
            h.pathNormalization = PathNormalization.allCases[Int(n)]
        case "shadow-host-suffix": h.shadowHostSuffix = n == 1
        case "allow-any-outbound": h.allowAnyOutbound = n == 1
        case "inbound-http2-port": h.inboundHTTP2Ports.append(UInt16(truncatingIfNeeded: n))
        case "stream-idle-timeout-ns": h.streamIdleTimeout = TernDuration(nanoseconds: n)
        case "max-idle-upstream": h.maxIdleUpstream = i
        case "http2-max-concurrent-streams": h.http2MaxConcurrentStreams = UInt32(truncatingIfNeeded: n)
        case "http2-connection-window": h.http2ConnectionWindow = UInt32(truncatingIfNeeded: n)
        case "http2-max-frame-size": h.http2MaxFrameSize = UInt32(truncatingIfNeeded: n)
        case "tls-handshake-timeout-ns": h.tlsHandshakeTimeout = TernDuration(nanoseconds: n)
        default: throw SetupError(description: "unknown setting '\(key)'")
        }
        http = h
    }
}
