/// The three stages of loading configuration (STYLE.md): decode each document (`ResourceDecoder`), validate the
/// set across resources (`ConfigValidator`), compile (`RouteTable.compile`). `load` runs the first two and
/// returns the resources with every diagnostic; a caller applies the result only when it has no error.
public struct ConfigSet: Sendable {
    public var resources: [Resource]
    public var diagnostics: [Diagnostic]
    public var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }
    public var errors: [Diagnostic] { diagnostics.filter { $0.severity == .error } }
    public var warnings: [Diagnostic] { diagnostics.filter { $0.severity == .warning } }
}

public enum ConfigLoader {
    /// The namespace a resource without one belongs to: `--namespace`, else $POD_NAMESPACE, else `default`.
    public static func defaultNamespace(flag: String?, environment: [String: String]) -> String {
        if let flag, !flag.isEmpty { return flag }
        if let ns = environment["POD_NAMESPACE"], !ns.isEmpty { return ns }
        return "default"
    }

    /// Reads PATH (a file or a directory of *.yaml / *.yml, sorted) and decodes and validates everything in it.
    public static func load(path: String, namespace: String) -> ConfigSet {
        let files: [(path: String, text: String)]
        do {
            files = try ConfigFiles.read(path)
        } catch {
            return ConfigSet(resources: [], diagnostics: [
                Diagnostic(.error, file: error.path, line: 0, resource: "", path: "", message: error.message),
            ])
        }
        return load(files: files, namespace: namespace)
    }

    /// Decodes and validates in-memory files (path, text), in order.
    public static func load(files: [(path: String, text: String)], namespace: String) -> ConfigSet {
        var resources: [Resource] = []
        var diagnostics: [Diagnostic] = []
        // Alias expansion is bounded for the configuration as a whole: many files each under the limit would
        // otherwise add up to what one file may not expand to.
        var expansion = YAMLExpansion()
        for (path, text) in files {
            // A file rewritten in place is empty between its truncation and the write that follows, and a reload
            // that reads it then would publish a configuration without its resources (every request 404 until
            // the next reload). Refused instead, so the running configuration keeps serving; a file meant to
            // hold nothing can say so with a comment.
            if text.isEmpty {
                diagnostics.append(Diagnostic(.error, file: path, line: 0, resource: "", path: "",
                                              message: "the file is empty (being rewritten?); a file meant to hold no resources needs at least a comment"))
                continue
            }
            let documents: [YAMLDocument]
            do {
                documents = try YAMLReader.documents(text, file: path, expansion: &expansion)
            } catch {
                diagnostics.append(Diagnostic(.error, file: error.file, line: error.line, resource: "", path: "",
                                              message: error.message))
                continue
            }
            let decoder = ResourceDecoder(file: path, defaultNamespace: namespace)
            for document in documents where !document.root.isNull {
                if let r = decoder.decode(document.root) { resources.append(r) }
            }
            diagnostics += decoder.diagnostics
        }
        diagnostics += ConfigValidator(resources: resources).check()
        // Reported in reading order: by file (as read), then line; stable, so one line keeps decode order.
        var fileOrder: [String: Int] = [:]
        for (i, f) in files.enumerated() where fileOrder[f.path] == nil { fileOrder[f.path] = i }
        diagnostics = diagnostics.enumerated().sorted { a, b in
            let fa = fileOrder[a.element.file] ?? -1
            let fb = fileOrder[b.element.file] ?? -1
            if fa != fb { return fa < fb }
            if a.element.line != b.element.line { return a.element.line < b.element.line }
            return a.offset < b.offset
        }.map(\.element)
        return ConfigSet(resources: resources, diagnostics: diagnostics)
    }

    /// Loads text as one file (tests, config pushed by other means).
    public static func load(yaml: String, file: String = "config.yaml", namespace: String = "default") -> ConfigSet {
        load(files: [(file, yaml)], namespace: namespace)
    }
}

/// Checks that need the whole set: duplicate names, subsets that no DestinationRule defines, destination hosts no
/// ServiceEntry declares (a warning, as in Istio: such a route answers 503 NC), destination ports the service
/// does not have.
struct ConfigValidator {
    let resources: [Resource]

    func check() -> [Diagnostic] {
        var out: [Diagnostic] = []
        var seen: [String: Resource] = [:]
        var serviceHosts: [String: ServiceEntry] = [:]
        var serviceOwner: [String: String] = [:]
        var routeOwner: [String: String] = [:]
        var subsetsByHost: [String: Set<String>] = [:]
        for r in resources {
            let key = "\(r.kind)/\(r.namespace)/\(r.name)"
            if let first = seen[key] {
                out.append(Diagnostic(.error, file: r.file, line: r.nameLine, resource: r.label, path: "metadata.name",
                                      message: "duplicate name (first defined at \(first.file):\(first.nameLine))"))
            } else {
                seen[key] = r
            }
            switch r.spec {
            case .serviceEntry(let se):
                for (h, mark) in zip(se.hosts, se.hostMarks) {
                    if let first = serviceOwner[h] {
                        out.append(Diagnostic(.warning, file: r.file, line: mark.line, resource: r.label, path: mark.path,
                                              message: "host \(h) is already declared by \(first); this declaration is ignored"))
                    } else {
                        serviceHosts[h] = se
                        serviceOwner[h] = r.label
                    }
                }
            case .virtualService(let vs):
                if !vs.gateways.isEmpty, !vs.gateways.contains("mesh") { continue }  // not for sidecars
                for (h, mark) in zip(vs.hosts, vs.hostMarks) {
                    // (A host the VirtualService names twice is an error of its own.)
                    if let first = routeOwner[h], first != r.label {
                        out.append(Diagnostic(.warning, file: r.file, line: mark.line, resource: r.label, path: mark.path,
                                              message: "host \(h) is already routed by \(first); this VirtualService is not used for it"))
                    } else {
                        routeOwner[h] = r.label
                    }
                }
            case .destinationRule(let dr):
                subsetsByHost[dr.host, default: []].formUnion(dr.subsets.map(\.name))
            default:
                break
            }
        }
        func checkDestination(_ d: Destination, _ r: Resource, wildcardHosts: [String]) {
            if let subset = d.subset, !(subsetsByHost[d.host]?.contains(subset) ?? false) {
                let m = d.subsetMark ?? d.mark
                out.append(Diagnostic(.error, file: r.file, line: m.line, resource: r.label, path: m.path,
                                      message: "subset \"\(subset)\" is not defined by any DestinationRule for host \(d.host)"))
            }
            if let se = serviceHosts[d.host] ?? wildcardService(d.host, serviceHosts) {
                if let p = d.port, !se.ports.contains(where: { $0.number == p }) {
                    let m = d.portMark ?? d.mark
                    out.append(Diagnostic(.error, file: r.file, line: m.line, resource: r.label, path: m.path,
                                          message: "host \(d.host) has no port \(p)"))
                }
            } else {
                out.append(Diagnostic(.warning, file: r.file, line: d.mark.line, resource: r.label, path: d.mark.path,
                                      message: "no ServiceEntry declares host \(d.host); requests routed here get 503 (NC)"))
            }
        }
        for r in resources {
            guard case .destinationRule(let dr) = r.spec, !dr.host.hasPrefix("*") else { continue }
            guard let se = serviceHosts[dr.host] ?? wildcardService(dr.host, serviceHosts) else {
                out.append(Diagnostic(.warning, file: r.file, line: dr.hostMark.line, resource: r.label,
                                      path: dr.hostMark.path,
                                      message: "no ServiceEntry declares host \(dr.host); this rule applies to nothing yet"))
                continue
            }
            // A subset that selects none of the declared endpoints answers 503 (UH) at run time.
            guard se.resolution == .STATIC || !se.endpoints.isEmpty else { continue }
            for subset in dr.subsets where !se.endpoints.contains(where: { e in
                subset.labels.allSatisfy { e.labels[$0.key] == $0.value }
            }) {
                out.append(Diagnostic(.warning, file: r.file, line: subset.mark.line, resource: r.label,
                                      path: subset.mark.path,
                                      message: "subset \(subset.name) selects no endpoint of \(dr.host); requests routed to it get 503 (UH)"))
            }
        }
        for r in resources {
            guard case .virtualService(let vs) = r.spec else { continue }
            for route in vs.http {
                for d in route.route { checkDestination(d.destination, r, wildcardHosts: vs.hosts) }
                for m in route.mirrors { checkDestination(m.destination, r, wildcardHosts: vs.hosts) }
            }
            for route in vs.tcp + vs.tls {
                for d in route.route { checkDestination(d.destination, r, wildcardHosts: vs.hosts) }
            }
        }
        return out
    }

    private func wildcardService(_ host: String, _ services: [String: ServiceEntry]) -> ServiceEntry? {
        var rest = Substring(host)
        while let dot = rest.firstIndex(of: ".") {
            rest = rest[rest.index(after: dot)...]
            if let se = services["*." + rest] { return se }
        }
        return services["*"]
    }
}
