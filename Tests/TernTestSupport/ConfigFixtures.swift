// Configuration the TernConfig and TernProxy tests both compile: the canary, YAML compiled with its errors
// checked, and the tables the allocation tests count against (the table's half in TernConfigTests, the
// balancers' half in TernProxyTests, so both halves count the same work).
// No `import Testing` here: this is a plain library target, built by every `swift build` (a release build
// without tests too), where the Testing module is not on the search path.
import TernConfig

/// The canary from issue 4, as written there (Tests/Fixtures/config/canary.yaml, shared with test_validate.py).
public let canaryYAML = configFixture("canary.yaml")

/// The text of Tests/Fixtures/config/`name` (fixtures the integration tests read too).
public func configFixture(_ name: String) -> String {
    let path = "/" + #filePath.split(separator: "/").dropLast(2).joined(separator: "/") + "/Fixtures/config/" + name
    guard let files = try? ConfigFiles.read(path) else { preconditionFailure("the test fixture \(path) cannot be read") }
    return files[0].text
}

/// The errors of YAML a test expected to be valid.
public struct UnexpectedConfigErrors: Error, CustomStringConvertible {
    public let description: String
}

/// Loads YAML and compiles it; any error in it is thrown (and fails the test).
public func compile(_ yaml: String, namespace: String = "default") throws -> RouteTable {
    let set = ConfigLoader.load(yaml: yaml, namespace: namespace)
    guard set.errors.isEmpty else {
        throw UnexpectedConfigErrors(description: set.errors.map(\.description).joined(separator: "\n"))
    }
    return try RouteTable.compile(set, namespace: namespace)
}

/// TCP routing's configuration (TernConfigTests' TCPRoutingTests; the balancers' TCP allocation test in
/// TernProxyTests).
public enum TCPRoutingConfig {
    /// A TCP service on port 9000 with subsets v1 and v2, a second service sharing nothing, and `extra`.
    public static func yaml(_ extra: String = "") -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: echo, namespace: ns}
        spec:
          hosts: [echo]
          ports: [{number: 9000, name: tcp, protocol: TCP}, {number: 9001, name: tcp-admin, protocol: TCP}]
          resolution: STATIC
          endpoints:
          - {address: 10.0.0.1, labels: {version: v1}}
          - {address: 10.0.0.2, labels: {version: v2}}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: db, namespace: ns}
        spec:
          hosts: [db]
          ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
          resolution: STATIC
          endpoints: [{address: 10.0.1.1}]
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: echo, namespace: ns}
        spec:
          host: echo
          subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
        ---

        """ + extra
    }

    /// A VirtualService splitting port 9000 80/20 between the subsets v1 and v2.
    public static let split = """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: echo, namespace: ns}
        spec:
          hosts: [echo]
          tcp:
          - match: [{port: 9000, sourceLabels: {app: client}}]
            route:
            - {destination: {host: echo, subset: v1}, weight: 80}
            - {destination: {host: echo, subset: v2}, weight: 20}

        """
}

/// What routing an HTTP request allocates nothing over: the canary and 100 more VirtualServices matching by regex,
/// query parameter, header presence and case-insensitive prefix (one route with a uriRegexRewrite), a
/// consistent-hash subset of cart, and six requests (one for a host nothing routes). Counted in two halves:
/// TernConfigTests' `routeSelectionAllocatesNothing` (the table) and TernProxyTests'
/// `balancingRoutedRequestsAllocatesNothing` (the balancers).
public enum RouteSelectionWorkload {
    public static func table() throws -> RouteTable {
        var yaml = canaryYAML
        for i in 0..<100 {
            yaml += "\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v\(i), namespace: shop}\nspec:\n  hosts: [v\(i).example.com]\n  http:\n  - match: [{uri: {regex: \"/api/v[0-9]+/.*\"}, queryParams: {q: {prefix: a}}}, {headers: {x-a: {}}, ignoreUriCase: true, uri: {prefix: /X}}]\n    directResponse: {status: 204}\n  - rewrite: {uriRegexRewrite: {match: '/([a-z]+)/([0-9]+)', rewrite: '/\\2/\\1/\\0'}}\n    route: [{destination: {host: cart, subset: beta}}]\n"
        }
        yaml += "\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: h, namespace: shop}\nspec:\n  host: cart.shop.svc.cluster.local\n  subsets: [{name: x, labels: {track: beta}, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}}]\n"
        return try compile(yaml, namespace: "shop")
    }

    public static let requests: [[UInt8]] = [
        get("/", host: "cart", headers: ["x-beta: yes"]),
        get("/cart/items?id=1", host: "cart.shop.svc.cluster.local:80", headers: ["x-beta: no", "x-user: u1"]),
        get("/api/v2/things?q=abc", host: "v57.example.com"),
        get("/x/y", host: "v99.example.com", headers: ["X-A: 1"]),
        get("/items/42", host: "v42.example.com"),
        get("/", host: "nowhere"),
    ].map { Array($0.utf8) }
}
