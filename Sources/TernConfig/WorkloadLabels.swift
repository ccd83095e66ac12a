// A workload's labels as `--labels` takes them (`k=v,k2=v2`), checked as Kubernetes checks label keys and values.

/// Kubernetes label syntax.
public enum WorkloadLabels {
    /// The labels in `text` (`key=value` pairs separated by commas), or why they are not labels.
    public static func parse(_ text: String) -> Result<[String: String], LabelError> {
        var out: [String: String] = [:]
        for pair in text.split(separator: ",", omittingEmptySubsequences: false) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2 else { return .failure(LabelError("'\(pair)' is not key=value")) }
            let key = String(kv[0]), value = String(kv[1])
            if let why = keyProblem(key) { return .failure(LabelError("label key '\(key)': \(why)")) }
            if let why = valueProblem(value) { return .failure(LabelError("label '\(key)' value '\(value)': \(why)")) }
            guard out[key] == nil else { return .failure(LabelError("label key '\(key)' given twice")) }
            out[key] = value
        }
        return .success(out)
    }

    /// The locality (`region/zone/subzone`, trailing empty parts left out) the topology labels among `labels` give,
    /// or nil when they hold none of `topology.kubernetes.io/region`, `topology.kubernetes.io/zone` and
    /// `topology.istio.io/subzone` (Istio takes a proxy's locality from these labels first).
    public static func locality(_ labels: [String: String]) -> String? {
        let parts = ["topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"].map { labels[$0] }
        guard parts.contains(where: { $0 != nil }) else { return nil }
        var text = parts.map { $0 ?? "" }
        while text.count > 1 && text.last == "" { text.removeLast() }
        return text.joined(separator: "/")
    }

    /// Why `key` is not a label key (an optional DNS-subdomain prefix and `/`, then a name), or nil.
    public static func keyProblem(_ key: String) -> String? {
        let parts = key.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        if parts.count == 2 {
            let prefix = parts[0]
            guard !prefix.isEmpty, prefix.utf8.count <= 253 else { return "the prefix must be 1 to 253 characters" }
            for label in prefix.split(separator: ".", omittingEmptySubsequences: false) {
                let b = Array(label.utf8)
                guard let first = b.first, let last = b.last, b.count <= 63, isLowerAlnum(first), isLowerAlnum(last),
                      b.allSatisfy({ isLowerAlnum($0) || $0 == UInt8(ascii: "-") }) else {
                    return "the prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
                }
            }
        }
        let name = String(parts[parts.count - 1])
        guard !name.isEmpty else { return "the name must not be empty" }
        return nameProblem(name)
    }

    /// Why `value` is not a label value (empty, or what a name may be), or nil.
    public static func valueProblem(_ value: String) -> String? { value.isEmpty ? nil : nameProblem(value) }

    /// At most 63 characters: letters, digits, '-', '_' and '.', beginning and ending with a letter or digit.
    private static func nameProblem(_ s: String) -> String? {
        let b = Array(s.utf8)
        guard b.count <= 63 else { return "at most 63 characters" }
        guard let first = b.first, let last = b.last, isAlnum(first), isAlnum(last),
              b.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") })
        else { return "letters, digits, '-', '_' and '.', beginning and ending with a letter or digit" }
        return nil
    }

    private static func isLowerAlnum(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
    }

    private static func isAlnum(_ c: UInt8) -> Bool {
        isLowerAlnum(c) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
    }
}

/// Why a `--labels` value was refused.
public struct LabelError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
