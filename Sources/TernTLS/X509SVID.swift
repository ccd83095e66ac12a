import CTernOpenSSL

/// The X.509-SVID rule (SPIFFE X509-SVID.md §2–§5, and what Istio's sidecars require of a mesh peer): a peer's leaf
/// certificate is an identity only if
/// - it has exactly one URI subjectAltName, and it is a well-formed SPIFFE ID with a path (§2: a leaf's ID is
///   never the trust domain's own) in the expected trust domain;
/// - it is not a CA: basicConstraints CA:TRUE is refused (§4.1; OpenSSL itself accepts a CA certificate as a leaf);
/// - its keyUsage is present and has digitalSignature (§4.3), and has neither keyCertSign nor cRLSign (§4.3: a leaf
///   MUST NOT sign certificates or CRLs; §5.2: validators MUST check it; OpenSSL's strict checks see keyCertSign
///   on a CA:FALSE certificate but not cRLSign, and `identity(of:)` runs on chains verified without them);
/// - it chains to the mesh's root under OpenSSL's strict checks (`X509Certificate.verify`).
/// The leaf's own rules are checked first, so a certificate that breaks one reports that and not the chain.
public enum X509SVID {
    /// The leaf rules alone, for a certificate whose chain the handshake already verified: its SPIFFE ID, or why
    /// it is not an SVID of `trustDomain`.
    public static func identity(of leaf: X509Certificate, trustDomain: String) -> Result<SPIFFEID, X509SVIDRejection> {
        // One pass over the subjectAltNames, whatever their number: this runs before the chain is verified.
        let (count, sole) = leaf.soleURI
        guard count > 0 else { return .failure(X509SVIDRejection(.noURISAN, "the certificate has no URI subjectAltName")) }
        guard count == 1, let uri = sole else {
            return .failure(X509SVIDRejection(.multipleURISANs, "the certificate has \(count) URI subjectAltNames; an X.509-SVID has exactly one"))
        }
        let id: SPIFFEID
        do {
            id = try SPIFFEID(parsing: uri)
        } catch {
            return .failure(X509SVIDRejection(.invalidSPIFFEID, "\(quoted(uri)): \(error)"))
        }
        guard !id.path.isEmpty else {
            return .failure(X509SVIDRejection(.invalidSPIFFEID, "\(id): a workload's SPIFFE ID needs a path"))
        }
        guard id.trustDomain == trustDomain else {
            return .failure(X509SVIDRejection(.trustDomainMismatch, "\(id) is not in trust domain \(trustDomain)"))
        }
        guard let facts = leaf.facts else {
            return .failure(X509SVIDRejection(.malformed, "the certificate's dates or extensions cannot be decoded"))
        }
        guard !facts.isCA else {
            return .failure(X509SVIDRejection(.certificateAuthority, "\(id): the certificate is a CA (basicConstraints CA:TRUE)"))
        }
        guard let usage = facts.keyUsage, usage.contains(.digitalSignature) else {
            return .failure(X509SVIDRejection(.noDigitalSignature, "\(id): keyUsage lacks digitalSignature"))
        }
        let signing = usage.intersection([.keyCertSign, .cRLSign])
        guard signing.isEmpty else {
            return .failure(X509SVIDRejection(.leafSigningUsage, "\(id): a leaf's keyUsage must not have \(signing.names.joined(separator: " or "))"))
        }
        return .success(id)
    }

    /// The whole rule: the leaf rules, then the chain from `leaf` through `intermediates` (what the peer sent after
    /// its leaf) to one of `roots`, checked for `purpose` (`.tlsClient` on a server's side of the handshake).
    public static func validate(_ leaf: X509Certificate, intermediates: [X509Certificate] = [], roots: [X509Certificate],
                                trustDomain: String, purpose: VerifyPurpose = .any) -> Result<SPIFFEID, X509SVIDRejection> {
        let id: SPIFFEID
        switch identity(of: leaf, trustDomain: trustDomain) {
        case .success(let found): id = found
        case .failure(let rejection): return .failure(rejection)
        }
        switch X509Certificate.verify(leaf, intermediates: intermediates, roots: roots, purpose: purpose) {
        case .verified:
            return .success(id)
        case .failed(let code, let reason, let depth):
            let kind: X509SVIDRejection.Reason
            switch Int32(code) {
            case X509_V_ERR_CERT_HAS_EXPIRED: kind = .certificateExpired
            case X509_V_ERR_CERT_NOT_YET_VALID: kind = .certificateNotYetValid
            default: kind = .certificateVerifyFailed
            }
            return .failure(X509SVIDRejection(kind, "\(id): \(reason) (certificate \(depth) of the chain)"))
        }
    }

    private static func quoted(_ s: String) -> String {
        s.utf8.count > 80 ? "\"\(s.prefix(80))…\"" : "\"\(s)\""
    }
}

/// Why a certificate is not an acceptable X.509-SVID: a class (`reason`, a metric label) and the detail for logs.
public struct X509SVIDRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        case noURISAN = "no_uri_san"
        case multipleURISANs = "multiple_uri_sans"
        case invalidSPIFFEID = "invalid_spiffe_id"
        case trustDomainMismatch = "trust_domain_mismatch"
        case certificateAuthority = "ca_certificate"
        case noDigitalSignature = "no_digital_signature"
        case leafSigningUsage = "leaf_signing_usage"
        case malformed = "malformed_certificate"
        /// The same labels as `TLSFailureReason`'s for a chain that fails during a handshake.
        case certificateExpired = "certificate_expired"
        case certificateNotYetValid = "certificate_not_yet_valid"
        case certificateVerifyFailed = "certificate_verify_failed"
    }

    public var reason: Reason
    public var detail: String
    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { "\(reason.rawValue): \(detail)" }
}
