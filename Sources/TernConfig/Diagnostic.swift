/// One problem found in configuration, positioned as users need it:
/// `FILE:LINE: Kind namespace/name: spec.http[0].route[1].weight: reason` (warnings say `warning:` after the line).
public struct Diagnostic: Sendable, Equatable, CustomStringConvertible {
    public enum Severity: Sendable, Equatable { case error, warning }

    public var severity: Severity
    public var file: String
    /// 1-based line of the offending key (or list item).
    public var line: Int
    /// `Kind namespace/name`, or empty before the resource is known (a YAML syntax error, a bad envelope).
    public var resource: String
    /// The field path from the resource root, e.g. `spec.http[0].route[1].weight`; empty for whole-file problems.
    public var path: String
    public var message: String

    public init(_ severity: Severity, file: String, line: Int, resource: String, path: String, message: String) {
        self.severity = severity
        self.file = file
        self.line = line
        self.resource = resource
        self.path = path
        self.message = message
    }

    public var description: String {
        var s = line > 0 ? "\(file):\(line): " : "\(file): "
        if severity == .warning { s += "warning: " }
        if !resource.isEmpty { s += resource + ": " }
        if !path.isEmpty { s += path + ": " }
        return s + message
    }
}

/// The outcome of loading configuration: every error and warning at once. A config with any error is never applied.
public struct ConfigError: Error, Sendable {
    public var diagnostics: [Diagnostic]
    public init(_ diagnostics: [Diagnostic]) { self.diagnostics = diagnostics }
}
