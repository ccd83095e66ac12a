// Configuration the TernConfig and TernProxy tests both compile: the canary, and YAML compiled with its errors
// checked.
import TernConfig
import Testing

/// The canary from issue 4, as written there (Tests/Fixtures/config/canary.yaml, shared with test_validate.py).
public let canaryYAML: String = {
    let path = "/" + #filePath.split(separator: "/").dropLast(2).joined(separator: "/") + "/Fixtures/config/canary.yaml"
    guard let files = try? ConfigFiles.read(path) else {
        Issue.record("cannot read \(path)")
        return ""
    }
    return files[0].text
}()

/// Loads YAML and compiles it, failing the test on any error.
public func compile(_ yaml: String, namespace: String = "default") throws -> RouteTable {
    let set = ConfigLoader.load(yaml: yaml, namespace: namespace)
    #expect(set.errors.map(\.description) == [])
    return try RouteTable.compile(set, namespace: namespace)
}
