import ArgumentParser
import TernCore
import TernTLS

/// The flags (issue 5). Every bad value gets one line naming the flag and what it accepts, and exit status 64.
struct LoadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tern-load",
        abstract: "Load an HTTP/1.1 or HTTP/2 server and measure its latency honestly (open loop with --rate, HDR histograms).",
        discussion: """
            Closed loop (default): each connection sends its next request when the last completes.
            Open loop (--rate R): R requests per second spread over the connections; latency counts from each
            request's intended send time, so a stalling server cannot hide its stall (coordinated omission).
            --compare A B: measures two targets in alternating 250 ms slices and reports the latency B adds.
            --h2: HTTP/2 (h2c with prior knowledge for http://, h2 by ALPN for https://), --streams requests at once
            on each connection (each a client of its own, as a connection is without --h2).
            """
    )

    @Argument(help: "http:// URLs to load; connections are spread over them. The host is an IP literal or localhost.")
    var urls: [String] = []

    @Option(help: "Open connections (each carries one request at a time).")
    var connections = 10

    @Option(help: "Reactor threads, one pinned per CPU (default: the CPUs of the affinity mask, at most --connections).")
    var cores: Int?

    @Option(help: "How long to measure, as 10s, 250ms or 1m (default 10s).")
    var duration: String?

    @Option(help: "How long to load before measuring (not counted; default 0s, with --compare one A and one B slice).")
    var warmup: String?

    @Option(help: "Measure this many requests instead of a --duration.")
    var requests: Int?

    @Option(help: "Open loop: requests per second over all connections.")
    var rate: Int?

    @Option(help: "Request method.")
    var method = "GET"

    @Option(name: .customLong("header"), help: "A request header, 'Name: value'. Repeatable.")
    var headers: [String] = []

    @Option(help: "Request body.")
    var body: String?

    @Option(name: .customLong("body-file"), help: "Request body from this file.")
    var bodyFile: String?

    @Option(help: "A request (or connect) that takes longer fails as a timeout.")
    var timeout = "10s"

    @Option(name: .customLong("io-backend"), help: "auto, io_uring or epoll.")
    var ioBackend = "auto"

    @Flag(help: "Print one JSON document on stdout instead of the table.")
    var json = false

    @Option(name: .customLong("hdr-log"), help: "Write the histograms to this file in HdrHistogram's log format (1.3).")
    var hdrLog: String?

    @Option(help: "Write an SVG of latency by percentile to this file.")
    var plot: String?

    @Option(parsing: .upToNextOption, help: "Compare two URLs, A then B: the latency B adds over A.")
    var compare: [String] = []

    @Option(help: "https: CA bundle (PEM) the server's certificate must verify against (default: the system's).")
    var cacert: String?

    @Option(help: "https: client certificate chain (PEM) for mutual TLS; needs --key.")
    var cert: String?

    @Option(help: "https: private key (PEM) of --cert.")
    var key: String?

    @Flag(help: "https: do not verify the server's certificate.")
    var insecure = false

    @Flag(help: "A new connection for every request (with https, a handshake for each).")
    var reconnect = false

    @Flag(name: .customLong("no-resume"), help: "https: every handshake in full (by default a connection resumes the session of the one before it).")
    var noResume = false

    @Flag(name: .customLong("h2"), help: "HTTP/2: h2c with prior knowledge for http:// URLs, h2 by ALPN for https://.")
    var http2 = false

    @Option(help: "--h2: requests in flight at once on each connection, each as its own stream (default 1; h2load's -m).")
    var streams: Int?

    func settings() throws(ValidationError) -> LoadSettings {
        var s = LoadSettings()
        let texts: [String]
        if !compare.isEmpty {
            guard compare.count == 2 else {
                throw ValidationError("--compare takes exactly two URLs (A, then B), got \(compare.count)")
            }
            guard urls.isEmpty else { throw ValidationError("--compare takes the URLs itself; got more: \(urls.joined(separator: " "))") }
            texts = compare
            s.compare = true
        } else {
            guard !urls.isEmpty else { throw ValidationError("give at least one URL to load (http://IP:PORT/PATH), or --compare URL_A URL_B") }
            texts = urls
        }
        for t in texts {
            switch Target.parse(t) {
            case .success(let target): s.targets.append(target)
            case .failure(let e): throw ValidationError(e.description)
            }
        }
        s.reconnect = reconnect
        s.resume = !noResume
        if let streams {
            guard http2 else { throw ValidationError("--streams is for HTTP/2: give --h2 too") }
            guard streams >= 1 && streams <= 1000 else {
                throw ValidationError("--streams must be a whole number from 1 to 1000, got \(streams)")
            }
            s.streams = streams
        }
        if http2 {
            guard compare.isEmpty else { throw ValidationError("--compare measures HTTP/1.1 only: drop --h2 or --compare") }
            guard !reconnect else { throw ValidationError("--reconnect is for HTTP/1.1: HTTP/2 connections carry many requests") }
            s.http2 = true
        }
        if s.targets.contains(where: \.tls) {
            guard s.targets.allSatisfy(\.tls) else { throw ValidationError("URLs must be all http:// or all https://") }
            guard (cert == nil) == (key == nil) else { throw ValidationError("--cert and --key go together") }
            var t = TLSClientSettings()
            t.caFile = cacert
            t.certificateFile = cert
            t.keyFile = key
            t.insecureSkipVerify = insecure
            t.alpn = http2 ? ["h2"] : ["http/1.1"]
            do throws(TLSSetupError) {
                s.tlsContext = try TLSContext.client(t)
            } catch {
                throw ValidationError(error.description)
            }
        } else if cacert != nil || cert != nil || key != nil || insecure || noResume {
            throw ValidationError("--cacert, --cert, --key, --insecure and --no-resume are for https:// URLs")
        }
        guard connections >= 1 && connections <= 1_000_000 else {
            throw ValidationError("--connections must be a whole number from 1 to 1000000, got \(connections)")
        }
        s.connections = connections
        if let c = cores, c < 1 || c > 1024 { throw ValidationError("--cores must be a whole number from 1 to 1024, got \(c)") }
        s.cores = cores
        if let requests {
            guard duration == nil else { throw ValidationError("--requests and --duration exclude each other: give one") }
            guard requests >= 1 else { throw ValidationError("--requests must be a positive whole number, got \(requests)") }
            s.stop = .requests(UInt64(requests))
        } else if let duration {
            s.stop = .duration(try Self.duration(duration, flag: "--duration").nanoseconds)
        }
        if let warmup {
            s.warmupNanos = try Self.duration(warmup, flag: "--warmup", allowZero: true).nanoseconds
        } else if s.compare {
            // Whichever target goes first would otherwise take the run's start-up transient (connections' first
            // requests, cold caches) in its slice alone: in A/A pairs A's p99.9 came out about twice B's.
            s.warmupNanos = 2 * LoadSettings.compareSliceNanos
        }
        s.timeoutNanos = try Self.duration(timeout, flag: "--timeout").nanoseconds
        if let rate {
            guard rate >= 1 else { throw ValidationError("--rate must be a positive whole number of requests per second, got \(rate)") }
            s.mode = .openLoop(rate: UInt64(rate))
        }
        guard !method.isEmpty, method.utf8.allSatisfy(Self.isTokenByte) else {
            throw ValidationError("--method must be an HTTP method token such as GET or POST, got '\(method)'")
        }
        s.method = method
        for h in headers {
            guard let colon = h.firstIndex(of: ":") else { throw ValidationError("--header must be 'Name: value', got '\(h)'") }
            let name = String(h[..<colon])
            let value = String(h[h.index(after: colon)...]).trimmingSpaces()
            guard !name.isEmpty, name.utf8.allSatisfy(Self.isTokenByte) else {
                throw ValidationError("--header name must be a token (letters, digits, -), got '\(name)'")
            }
            guard value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                throw ValidationError("--header value must not contain control characters: '\(h)'")
            }
            let lower = name.lowercased()
            guard lower != "content-length" && lower != "transfer-encoding" else {
                throw ValidationError("--header \(name) is not allowed: tern-load frames the body itself (Content-Length from --body)")
            }
            s.headers.append((name, value))
        }
        if body != nil && bodyFile != nil { throw ValidationError("--body and --body-file exclude each other: give one") }
        if let body { s.body = Array(body.utf8) }
        if let bodyFile {
            switch Files.read(bodyFile) {
            case .success(let bytes): s.body = bytes
            case .failure(let e): throw ValidationError("--body-file cannot be read: \(e)")
            }
        }
        guard let backend = BackendChoice(rawValue: ioBackend) else {
            throw ValidationError("--io-backend must be auto, io_uring or epoll, got '\(ioBackend)'")
        }
        s.ioBackend = backend
        s.json = json
        s.hdrLogPath = hdrLog
        s.plotPath = plot
        return s
    }

    private static func duration(_ text: String, flag: String, allowZero: Bool = false) throws(ValidationError) -> TernDuration {
        guard let d = TernDuration(parsing: text), allowZero || d.nanoseconds > 0 else {
            throw ValidationError("\(flag) must be a duration such as 10s, 250ms or 1m\(allowZero ? "" : ", above zero"), got '\(text)'")
        }
        return d
    }

    /// tchar (RFC 9110 §5.6.2).
    private static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(b)
        }
    }

    func validate() throws {
        _ = try settings()
    }

    func run() throws {
        let status = LoadRun.run(try settings())
        if status != 0 { throw ExitCode(status) }
    }
}

extension String {
    func trimmingSpaces() -> String {
        let bytes = Array(utf8)
        var a = 0, b = bytes.count
        while a < b && (bytes[a] == 0x20 || bytes[a] == 0x09) { a += 1 }
        while b > a && (bytes[b - 1] == 0x20 || bytes[b - 1] == 0x09) { b -= 1 }
        return String(decoding: bytes[a..<b], as: UTF8.self)
    }
}
