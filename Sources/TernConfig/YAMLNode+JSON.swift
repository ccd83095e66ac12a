import TernCore

extension YAMLNode {
    /// The node as JSON text, as Kubernetes reads YAML: plain scalars that are integers, numbers, booleans or null
    /// keep that type, everything else is a string. Keys keep their order. For /config_dump.
    ///
    /// It recurses once per level and writes every alias out in full: for a tree `YAMLReader` accepted, both are
    /// bounded (nesting at most `YAMLReader.maximumDepth`, expansion within `YAMLExpansion`'s limits), so the text
    /// is at most about six times the expanded scalar bytes (an escaped control byte) plus a few bytes per node.
    public var json: String {
        var out = ""
        write(into: &out)
        return out
    }

    private func write(into out: inout String) {
        switch kind {
        case .scalar(let s, let style):
            if style == .plain {
                if isNull {
                    out += "null"
                    return
                }
                if ["true", "True", "TRUE"].contains(s) {
                    out += "true"
                    return
                }
                if ["false", "False", "FALSE"].contains(s) {
                    out += "false"
                    return
                }
                if Int64(s) != nil || (Double(s).map { $0.isFinite } ?? false) && s.first != "." && s.last != "." {
                    out += s
                    return
                }
            }
            JSONText.quote(s, into: &out)
        case .sequence(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(into: &out)
            }
            out += "]"
        case .mapping(let pairs):
            out += "{"
            for (i, pair) in pairs.enumerated() {
                if i > 0 { out += "," }
                JSONText.quote(pair.key.scalar ?? "", into: &out)
                out += ":"
                pair.value.write(into: &out)
            }
            out += "}"
        }
    }
}
