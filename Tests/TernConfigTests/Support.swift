import TernConfig
import TernHTTP
import Testing

/// The canary from issue 4, as written there.
let canaryYAML = """
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: cart, namespace: shop}
    spec:
      hosts: [cart]
      ports: [{number: 80, name: http, protocol: HTTP}]
      resolution: STATIC
      endpoints:
      - {address: 127.0.0.1, ports: {http: 9001}, labels: {track: stable}}
      - {address: 127.0.0.1, ports: {http: 9002}, labels: {track: beta}}
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: cart, namespace: shop}
    spec:
      hosts: [cart]
      http:
      - match: [{headers: {x-beta: {exact: "yes"}}}]
        route: [{destination: {host: cart, subset: beta}}]
      - route:
        - {destination: {host: cart, subset: stable}, weight: 80}
        - {destination: {host: cart, subset: beta}, weight: 20}
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: cart, namespace: shop}
    spec:
      host: cart
      trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
      subsets:
      - {name: stable, labels: {track: stable}}
      - {name: beta, labels: {track: beta}}
    """

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
    let view = RequestView(head: head, bytes: span, scheme: scheme)
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
