/// The names Kubernetes allows for what a workload identity is made of (apimachinery's validation): a namespace is
/// a DNS-1123 label, a service account a DNS-1123 subdomain. Both are also valid SPIFFE path segments, and neither
/// can be `.` or `..`.
public enum KubernetesName {
    /// Why `name` is not a namespace name, or nil.
    public static func namespaceProblem(_ name: String) -> String? {
        label(name, limit: 63) ? nil
            : "must be a Kubernetes namespace name (a DNS-1123 label: up to 63 lower-case letters, digits and '-', starting and ending with a letter or digit)"
    }

    /// Why `name` is not a service account name, or nil.
    public static func serviceAccountProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        let ok = !bytes.isEmpty && bytes.count <= 253
            && name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label(String($0), limit: 63) }
        return ok ? nil
            : "must be a Kubernetes service account name (a DNS-1123 subdomain: up to 253 lower-case letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit)"
    }

    private static func label(_ name: String, limit: Int) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= limit else { return false }
        func alphanumeric(_ b: UInt8) -> Bool {
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
        }
        return alphanumeric(bytes.first!) && alphanumeric(bytes.last!)
            && bytes.allSatisfy { alphanumeric($0) || $0 == UInt8(ascii: "-") }
    }
}
