import TernCore
import TernIO
import TernTLS

/// Everything a run needs, checked (LoadCommand builds it from the flags).
struct LoadSettings: Sendable {
    enum Mode: Sendable, Equatable {
        /// Each connection sends its next request when the last completes.
        case closedLoop
        /// `rate` requests per second over all connections (OpenLoopSchedule).
        case openLoop(rate: UInt64)
    }

    /// What ends the measurement.
    enum Stop: Sendable, Equatable {
        case duration(UInt64)
        case requests(UInt64)
    }

    var targets: [Target] = []
    /// `--compare`: two targets measured in alternating slices; otherwise connections are spread over the targets.
    var compare = false
    var connections = 10
    var cores: Int? = nil
    var mode = Mode.closedLoop
    var stop = Stop.duration(10_000_000_000)
    var warmupNanos: UInt64 = 0
    var timeoutNanos: UInt64 = 10_000_000_000
    var method = "GET"
    var headers: [(name: String, value: String)] = []
    var body: [UInt8] = []
    var ioBackend = BackendChoice.auto
    var json = false
    var hdrLogPath: String? = nil
    var plotPath: String? = nil
    /// https targets: the client context (--cacert, --cert/--key, --insecure), built once for every reactor.
    var tlsContext: TLSContext? = nil
    /// `--reconnect`: a new connection for every request (with https, a handshake each; resumed unless
    /// `--no-resume`).
    var reconnect = false
    var resume = true
    /// `--h2`: HTTP/2 (h2c with prior knowledge for http://, by ALPN for https://), `--streams` requests at once
    /// on each connection.
    var http2 = false
    var streams = 1

    var targetRate: UInt64? {
        if case .openLoop(let rate) = mode { return rate }
        return nil
    }

    /// How long each `--compare` slice lasts: short enough that both targets see the same conditions, long
    /// enough that the switch (idle keep-alive connections taking over) is a small part of it.
    static let compareSliceNanos: UInt64 = 250_000_000

    /// --hdr-log: the length of each interval of the log.
    static let hdrLogIntervalNanos: UInt64 = 1_000_000_000
}

enum BackendChoice: String, Sendable, CaseIterable {
    case auto, io_uring, epoll
}

/// One `http://` or `https://` URL: where to connect and what goes on the request line and in Host.
struct Target: Sendable, Equatable {
    var url: String
    var address: SocketAddress
    /// The Host field: the authority as written in the URL.
    var authority: String
    /// origin-form request-target: path and query.
    var path: String
    /// https: TLS, with this server name (SNI, and the name its certificate must carry).
    var tls = false
    var serverName: String? = nil

    /// Parses `http[s]://HOST[:PORT][/PATH][?QUERY]`, HOST an IPv4 literal, a bracketed IPv6 literal or
    /// `localhost`; the reason it is refused otherwise.
    static func parse(_ text: String) -> Result<Target, TargetError> {
        let lower = text.lowercased()
        let tls = lower.hasPrefix("https://")
        guard tls || lower.hasPrefix("http://") else {
            return .failure(TargetError("\(text): a URL must start with http:// or https://"))
        }
        var rest = Substring(text.dropFirst(tls ? 8 : 7))
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = String(rest[..<end])
        var path = String(rest[end...])
        if path.isEmpty { path = "/" } else if path.hasPrefix("?") { path = "/" + path }
        if authority.contains("@") {
            return .failure(TargetError("\(text): user information in URLs is not supported"))
        }
        guard path.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return .failure(TargetError("\(text): the path must be printable ASCII without spaces (percent-encode the rest)"))
        }
        var host = authority
        var port = tls ? "443" : "80"
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                return .failure(TargetError("\(text): unterminated IPv6 literal"))
            }
            host = String(authority[...close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { port = String(after.dropFirst()) } else if !after.isEmpty {
                return .failure(TargetError("\(text): expected :PORT after the IPv6 literal"))
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            port = String(authority[authority.index(after: colon)...])
        }
        let ip = host.lowercased() == "localhost" ? "127.0.0.1" : host
        guard let address = SocketAddress(parsing: "\(ip):\(port)"), address.port != 0 else {
            if SocketAddress(parsing: "\(ip):80") == nil {
                return .failure(TargetError("\(text): the host must be an IP literal or localhost (no name resolution yet), got '\(host)'"))
            }
            return .failure(TargetError("\(text): the port must be from 1 to 65535, got '\(port)'"))
        }
        var name = host
        if name.hasPrefix("[") { name = String(name.dropFirst().dropLast()) }
        return .success(Target(url: text, address: address, authority: authority, path: path, tls: tls,
                               serverName: tls ? name : nil))
    }
}

struct TargetError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

extension LoadSettings {
    /// --h2: the fields of the request sent to `target`, built once (pseudo-header fields first; names lower-cased;
    /// Host becomes `:authority`; connection-specific fields are not sent in HTTP/2).
    func http2Head(for target: Target) -> [(name: [UInt8], value: [UInt8])] {
        let host = headers.last { $0.name.lowercased() == "host" }?.value ?? target.authority
        var fields: [(name: [UInt8], value: [UInt8])] = [
            (Array(":method".utf8), Array(method.utf8)), (Array(":scheme".utf8), Array((target.tls ? "https" : "http").utf8)),
            (Array(":authority".utf8), Array(host.utf8)), (Array(":path".utf8), Array(target.path.utf8)),
        ]
        let names = Set(headers.map { $0.name.lowercased() })
        if !names.contains("user-agent") { fields.append((Array("user-agent".utf8), Array("tern-load".utf8))) }
        let dropped: Set<String> = ["host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]
        for h in headers where !dropped.contains(h.name.lowercased()) {
            fields.append((Array(h.name.lowercased().utf8), Array(h.value.utf8)))
        }
        if !body.isEmpty || ["POST", "PUT", "PATCH"].contains(method) {
            fields.append((Array("content-length".utf8), Array(String(body.count).utf8)))
        }
        return fields
    }

    /// The bytes of the request sent to `target`, built once: every request of the run reuses them.
    func requestBytes(for target: Target) -> [UInt8] {
        var head = "\(method) \(target.path) HTTP/1.1\r\n"
        let names = Set(headers.map { $0.name.lowercased() })
        if !names.contains("host") { head += "Host: \(target.authority)\r\n" }
        if !names.contains("user-agent") { head += "User-Agent: tern-load\r\n" }
        for h in headers { head += "\(h.name): \(h.value)\r\n" }
        if !body.isEmpty || ["POST", "PUT", "PATCH"].contains(method) { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        return Array(head.utf8) + body
    }
}
