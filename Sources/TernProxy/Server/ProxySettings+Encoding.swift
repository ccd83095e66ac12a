// The proxy's settings as plain `key=value` arguments, for the lean serving process.
//
// `tern proxy` parses and validates its flags with swift-argument-parser, which links FoundationEssentials.
// Merely linking them costs a serving process about 2 MiB of resident memory for its whole life (measured
// here, idle, static standard library: 9.8 MiB with them linked, 7.6 MiB without, even when no parsing
// code runs). So once the flags are valid, `tern proxy` executes `tern-engine __serve-proxy key=value ...`
// (same PID, same descriptors), a binary that links no argument parser and decodes these arguments.
import TernCore
import TernIO

extension ProxySettings {
    /// The hidden first argument of the lean serving process.
    public static let serveCommand = "__serve-proxy"

    /// The settings as `key=value` arguments; `init(decoding:)` reverses it exactly.
    public func encoded() -> [String] {
        var out: [String] = []
        for a in listen { out.append("listen=\(a)") }
        for a in upstreams { out.append("upstream=\(a)") }
        if let cores { out.append("cores=\(cores)") }
        out.append("io-backend=\(ioBackend.rawValue)")
        out.append("ring-depth=\(backend.ringDepth)")
        out.append("sqpoll=\(backend.sqpoll ? 1 : 0)")
        out.append("connect-timeout-ns=\(relay.connectTimeout.nanoseconds)")
        out.append("idle-timeout-ns=\(relay.idleTimeout.nanoseconds)")
        out.append("drain-timeout-ns=\(drainTimeout.nanoseconds)")
        out.append("max-connections=\(relay.maxConnections)")
        out.append("log-level=\(logLevel)")
        return out
    }

    /// Decodes `encoded()` output. These arguments come from `tern proxy` itself, never from a user, so
    /// anything unexpected is an internal error.
    public init(decoding arguments: [String]) throws(ProxyError) {
        self.init()
        for argument in arguments {
            guard let eq = argument.firstIndex(of: "=") else { throw ProxyError(description: "malformed argument '\(argument)'") }
            let key = String(argument[..<eq])
            let value = String(argument[argument.index(after: eq)...])
            func number() throws(ProxyError) -> UInt64 {
                guard let n = UInt64(value) else { throw ProxyError(description: "\(key): not a number: '\(value)'") }
                return n
            }
            func address() throws(ProxyError) -> SocketAddress {
                guard let a = SocketAddress(parsing: value) else { throw ProxyError(description: "\(key): not an address: '\(value)'") }
                return a
            }
            switch key {
            case "listen": listen.append(try address())
            case "upstream": upstreams.append(try address())
            case "cores": cores = Int(try number())
            case "io-backend":
                guard let b = IOBackendChoice(rawValue: value) else { throw ProxyError(description: "io-backend: '\(value)'") }
                ioBackend = b
            case "ring-depth": backend.ringDepth = UInt32(truncatingIfNeeded: try number())
            case "sqpoll": backend.sqpoll = try number() == 1
            case "connect-timeout-ns": relay.connectTimeout = TernDuration(nanoseconds: try number())
            case "idle-timeout-ns": relay.idleTimeout = TernDuration(nanoseconds: try number())
            case "drain-timeout-ns": drainTimeout = TernDuration(nanoseconds: try number())
            case "max-connections": relay.maxConnections = Int(try number())
            case "log-level":
                guard let l = LogLevel(name: value) else { throw ProxyError(description: "log-level: '\(value)'") }
                logLevel = l
            default: throw ProxyError(description: "unknown setting '\(key)'")
            }
        }
        guard !listen.isEmpty, listen.count == upstreams.count else {
            throw ProxyError(description: "listen and upstream do not pair")
        }
    }
}
