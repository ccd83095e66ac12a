import ArgumentParser
import TernConfig
import TernIO

/// `tern validate PATH`: runs the config service's decode, validate and compile stages offline. Every error and
/// warning goes to stderr as `FILE:LINE: Kind ns/name: field.path: reason`; exit 1 on any error, else 0.
struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check Istio configuration (a file, or a directory of *.yaml / *.yml): decode, validate and compile it as the proxy will, and report every problem."
    )

    @Argument(help: "A YAML file (multi-document) or a directory of *.yaml / *.yml files, read in name order.")
    var path: String

    @Option(help: "Namespace of resources that name none (default: $POD_NAMESPACE, else default).")
    var namespace: String?

    func runValidate() -> Int32 {
        var environment: [String: String] = [:]
        if let ns = ConfigFiles.environment("POD_NAMESPACE") { environment["POD_NAMESPACE"] = ns }
        let ns = ConfigLoader.defaultNamespace(flag: namespace, environment: environment)
        let set = ConfigLoader.load(path: path, namespace: ns)
        for d in set.diagnostics { System.writeStderr(d.description) }
        if set.hasErrors {
            System.writeStderr("tern validate: \(set.errors.count) error(s), \(set.warnings.count) warning(s); not applied")
            return 1
        }
        do {
            let table = try RouteTable.compile(set, namespace: ns)
            for d in table.compileWarnings { System.writeStderr(d.description) }
            let routes = table.virtualHosts.reduce(0) { $0 + $1.routes.count }
            System.writeStderr(
                "tern validate: ok: \(set.resources.count) resource(s), \(table.virtualHosts.count) virtual host(s), \(routes) route(s), \(table.clusters.count) cluster(s), \(set.warnings.count + table.compileWarnings.count) warning(s)")
            return 0
        } catch {
            for d in error.diagnostics { System.writeStderr(d.description) }
            return 1
        }
    }
}
