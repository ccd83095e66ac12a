// What goes into a certificate, and the signing of one (tern_cert_sign does the OpenSSL work).
import CTernOpenSSL
import Glibc
import TernTLS

/// The fields of a certificate to sign. The shim adds what every certificate gets: version 3, a random serial,
/// basicConstraints (critical), a subjectKeyIdentifier, an authorityKeyIdentifier unless self-signed, SHA-256.
public struct CertificateTemplate: Sendable {
    public var organization: String? = nil
    public var commonName: String? = nil
    public var uris: [String] = []
    public var dnsNames: [String] = []
    /// nil: the subjectAltName is critical exactly when the subject is empty (RFC 5280 §4.2.1.6); true or false
    /// force it, to make a certificate that breaks the rule.
    public var subjectAltNameCritical: Bool? = nil
    public var isCA = false
    /// nil: no keyUsage extension. Critical when present.
    public var keyUsage: KeyUsage? = nil
    /// nil: no extendedKeyUsage extension.
    public var extendedKeyUsage: ExtendedKeyUsage? = nil
    /// Seconds since the epoch.
    public var notBefore: Int
    public var notAfter: Int

    public init(notBefore: Int, notAfter: Int) {
        self.notBefore = notBefore
        self.notAfter = notAfter
    }

    /// A certificate for `key`, signed by `issuer` with its key, or self-signed by `key` when `issuer` is nil.
    public func sign(key: PrivateKey, issuer: (certificate: X509Certificate, key: PrivateKey)?) throws(CAError) -> X509Certificate {
        try PrivateKey.loadOpenSSL()
        let keyUsageText = keyUsage.map { "critical," + $0.names.joined(separator: ",") }
        let extendedText = extendedKeyUsage.map { $0.names.filter { $0 != "others" }.joined(separator: ",") }
        // SAFETY: every strdup'd string is freed below, after the call that reads them; the arrays of pointers live
        // until then too.
        let uriPointers: [UnsafePointer<CChar>?] = unsafe uris.map { unsafe UnsafePointer(strdup($0)) }
        let dnsPointers: [UnsafePointer<CChar>?] = unsafe dnsNames.map { unsafe UnsafePointer(strdup($0)) }
        let strings: [UnsafeMutablePointer<CChar>?] = unsafe [organization, commonName, keyUsageText, extendedText].map { unsafe $0.map { unsafe strdup($0) } ?? nil }
        defer {
            for unsafe p in unsafe uriPointers + dnsPointers { unsafe free(UnsafeMutablePointer(mutating: p)) }
            for unsafe p in unsafe strings { unsafe free(p) }
        }
        let signed: OpaquePointer? = unsafe uriPointers.withUnsafeBufferPointer { u in
            unsafe dnsPointers.withUnsafeBufferPointer { d in
                var spec = unsafe tern_cert_spec(
                    organization: strings[0], common_name: strings[1], uris: u.baseAddress, uri_count: u.count,
                    dns_names: d.baseAddress, dns_count: d.count, is_ca: isCA ? 1 : 0, key_usage: strings[2],
                    extended_key_usage: strings[3], not_before: Int64(notBefore), not_after: Int64(notAfter),
                    san_critical: subjectAltNameCritical.map { $0 ? 1 : 0 } ?? -1)
                return unsafe tern_cert_sign(&spec, key.evp, issuer?.certificate.x509, issuer?.key.evp ?? key.evp)
            }
        }
        withExtendedLifetime((key, issuer?.certificate, issuer?.key)) {}
        guard let signed = unsafe signed else { throw CAError("cannot sign a certificate: \(openSSLErrors())") }
        return unsafe X509Certificate(owning: signed)
    }
}
