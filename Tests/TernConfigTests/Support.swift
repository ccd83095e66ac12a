import TernConfig
import TernHTTP
import Testing

/// The canary from issue 4, as written there (Tests/Fixtures/config/canary.yaml, shared with test_validate.py).
let canaryYAML: String = {
    let path = "/" + #filePath.split(separator: "/").dropLast(2).joined(separator: "/") + "/Fixtures/config/canary.yaml"
    guard let files = try? ConfigFiles.read(path) else {
        Issue.record("cannot read \(path)")
        return ""
    }
    return files[0].text
}()

/// Loads YAML and compiles it, failing the test on any error.
func compile(_ yaml: String, namespace: String = "default") throws -> RouteTable {
    let set = ConfigLoader.load(yaml: yaml, namespace: namespace)
    #expect(set.errors.map(\.description) == [])
    return try RouteTable.compile(set, namespace: namespace)
}

/// The error and warning lines for YAML loaded as `f.yaml`.
func diagnostics(_ yaml: String, namespace: String = "default") -> [String] {
    ConfigLoader.load(yaml: yaml, file: "f.yaml", namespace: namespace).diagnostics.map(\.description)
}

/// Parses a request head and selects a route for it.
func select(_ table: RouteTable, _ request: String, host: String? = nil, port: UInt16 = 80,
            scheme: RequestView.Scheme = .http) throws -> RouteMatch {
    let bytes = Array(request.utf8)
    var parser = HTTP1Parser(kind: .request)
    #expect(try parser.parse(bytes.span) == .complete)
    let head = parser.head
    let span = bytes.span
    let view = RequestView(http1: head, bytes: span, scheme: scheme)
    if let host {
        let h = Array(host.utf8)
        return table.select(host: h.span, port: port, request: view)
    }
    let hostRange = head.host ?? 0..<0
    return table.select(host: span.extracting(hostRange), port: port, request: view)
}

func get(_ path: String, host: String = "cart", headers: [String] = [], method: String = "GET") -> String {
    "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n"
}

func destination(_ table: RouteTable, _ m: RouteMatch, random: UInt64 = 0) -> WeightedCluster? {
    table.pickDestination(m, random: random)
}

/// A parsed head for bytes that must be a complete request.
struct HTTP1ParserBox {
    let head: HTTP1Head
    init(_ bytes: [UInt8]) {
        var parser = HTTP1Parser(kind: .request)
        _ = try? parser.parse(bytes.span)
        head = parser.head
    }
}

/// A seeded generator (splitmix64) so statistical tests see the same draws on every run and never flake.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

extension RequestView {
    /// The view the HTTP/1.1 codec builds (TernProxy's `RequestView(http1:bytes:)`; this target does not link the engine).
    @_lifetime(copy bytes)
    init(http1 head: borrowing HTTP1Head, bytes: Span<UInt8>, scheme: Scheme = .http) {
        self.init(bytes: bytes, fields: head.fields, method: head.methodBytes, target: head.target,
                  targetHasAuthority: head.targetForm == .absolute, scheme: scheme)
    }
}
