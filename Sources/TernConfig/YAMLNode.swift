/// A YAML document as the decoder sees it: scalars (with their style, so `"yes"` stays a string and `yes` can be
/// told apart), sequences and mappings, each with the 1-based line it starts on for error messages.
public struct YAMLNode: Sendable {
    public enum ScalarStyle: Sendable, Equatable { case plain, quoted }

    public indirect enum Kind: Sendable {
        case scalar(String, ScalarStyle)
        case sequence([YAMLNode])
        /// Keys in document order; keys are scalars (a non-scalar key is a decode error).
        case mapping([(key: YAMLNode, value: YAMLNode)])
    }

    public var kind: Kind
    public var line: Int

    public init(_ kind: Kind, line: Int) {
        self.kind = kind
        self.line = line
    }

    /// The text of a scalar, nil otherwise.
    public var scalar: String? {
        if case .scalar(let s, _) = kind { return s }
        return nil
    }

    /// A plain scalar YAML reads as null (`~`, `null`, empty).
    public var isNull: Bool {
        if case .scalar(let s, .plain) = kind { return s.isEmpty || s == "~" || s == "null" || s == "Null" || s == "NULL" }
        return false
    }

    /// What the node is, as error messages name it.
    public var typeName: String {
        switch kind {
        case .scalar(let s, let style):
            if style == .quoted { return "string" }
            if isNull { return "null" }
            if Int64(s) != nil { return "integer" }
            if Double(s) != nil { return "number" }
            if ["true", "false", "True", "False", "TRUE", "FALSE"].contains(s) { return "boolean" }
            return "string"
        case .sequence: return "list"
        case .mapping: return "map"
        }
    }
}

/// One `---` document of a file, with where it came from.
public struct YAMLDocument: Sendable {
    public var file: String
    public var root: YAMLNode
}

/// A YAML syntax error, positioned.
public struct YAMLError: Error, Sendable, Equatable {
    public var file: String
    public var line: Int
    public var message: String
}
