import TernConfig
import TernHTTP
import TernTestSupport
import Testing

// The fixtures shared with other test targets (`canaryYAML`, `compile`, `get`, `HTTP1ParserBox`, `SplitMix64`)
// are in TernTestSupport; what only these tests use is here.

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

func destination(_ table: RouteTable, _ m: RouteMatch, random: UInt64 = 0) -> WeightedCluster? {
    table.pickDestination(m, random: random)
}

extension RequestView {
    /// The view the HTTP/1.1 codec builds (TernProxy's `RequestView(http1:bytes:)`; this target does not link the engine).
    @_lifetime(copy bytes)
    init(http1 head: borrowing HTTP1Head, bytes: Span<UInt8>, scheme: Scheme = .http) {
        self.init(bytes: bytes, fields: head.fields, method: head.methodBytes, target: head.target,
                  targetHasAuthority: head.targetForm == .absolute, scheme: scheme, authority: head.host)
    }
}
