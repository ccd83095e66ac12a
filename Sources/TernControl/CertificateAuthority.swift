import TernTLS

/// The files of a CA directory and of a workload's certificate directory, named as Istio names them: a self-signed
/// CA (istiod's `istio-ca-secret`: root-cert.pem, root-key.pem), a plug-in CA (`cacerts`: ca-cert.pem, ca-key.pem,
/// cert-chain.pem, root-cert.pem) and file-mounted workload certificates (cert-chain.pem, key.pem, root-cert.pem).
public enum CAFiles {
    public static let rootCertificate = "root-cert.pem"
    public static let rootKey = "root-key.pem"
    public static let caCertificate = "ca-cert.pem"
    public static let caKey = "ca-key.pem"
    public static let certificateChain = "cert-chain.pem"
    public static let workloadKey = "key.pem"
}

/// A CA that can issue: its certificate and key, the intermediates between it and the root (itself included, when it
/// is not the root), the roots, and the trust domain of the identities it issues.
public final class CertificateAuthority: Sendable {
    public let certificate: X509Certificate
    public let key: PrivateKey
    /// The CA's own certificate and the intermediates above it, leaf-ward first, roots left out; empty for a root.
    public let intermediates: [X509Certificate]
    public let roots: [X509Certificate]
    public let trustDomain: String
    /// The earliest notAfter of the chain from the CA to the root it verifies against: no certificate it issues
    /// outlives it.
    public let notAfter: Int

    /// Istio's allowance for clocks behind the CA's: certificates start two minutes before they are made.
    public static let clockSkewSeconds = 120
    /// The longest workload certificate Istio's CA issues (MAX_WORKLOAD_CERT_TTL, 90 days).
    public static let maximumWorkloadTTLSeconds = 90 * 24 * 3600
    /// The common name (CN) of an intermediate's subject, beside O=<trust domain> (a root and an intermediate must not
    /// share a subject, or OpenSSL takes the intermediate for self-issued).
    public static let intermediateCommonName = "Intermediate CA"
    /// The longest trust domain a CA can carry: it is the subject's organization (O), which X.520 (RFC 5280
    /// ub-organization-name) limits to 64 characters, though a SPIFFE trust domain may have 255.
    public static let maximumCATrustDomainLength = 64

    /// Why `trustDomain` cannot be written into a CA certificate, or nil.
    public static func caTrustDomainProblem(_ trustDomain: String) -> String? {
        let n = trustDomain.utf8.count
        guard n > maximumCATrustDomainLength else { return nil }
        return "is \(n) characters long; a CA's trust domain is its certificate's organization (O), at most \(maximumCATrustDomainLength) characters (X.520)"
    }

    /// A CA from its parts, checked: the key is the certificate's, the certificate is a CA that may sign
    /// certificates, it chains to a root through `chain` under strict X.509 rules (the root's self-signature
    /// included), and it has not expired. The
    /// trust domain is `trustDomain` or, without one, the certificate's organization (O), as Istio's self-signed
    /// CA writes it. `names` name the files in messages.
    public init(certificate: X509Certificate, key: PrivateKey, chain: [X509Certificate], roots: [X509Certificate],
                trustDomain: String?, now: Int, names: (certificate: String, key: String, root: String)) throws(CAError) {
        guard key.matches(certificate) else {
            throw CAError("\(names.key) is not the private key of \(names.certificate)")
        }
        guard let facts = certificate.facts else { throw CAError("\(names.certificate): its dates or extensions cannot be decoded") }
        guard facts.isCA, facts.keyUsage.map({ $0.contains(.keyCertSign) }) ?? true else {
            throw CAError("\(names.certificate) is not a CA certificate (it needs basicConstraints CA:TRUE and keyUsage keyCertSign)")
        }
        var above = chain.filter { $0.facts?.selfSigned != true }
        if facts.selfSigned {
            above = []
        } else if above.first?.sha256Fingerprint != certificate.sha256Fingerprint {
            above.insert(certificate, at: 0)
        }
        // A root CA is checked against itself in the bundle: beside another root of the same subject (a rotation
        // bundle), OpenSSL may take that one for the issuer of a root without an authorityKeyIdentifier.
        let anchors = facts.selfSigned ? roots.filter { $0.sha256Fingerprint == certificate.sha256Fingerprint } : roots
        // The roots come from a file: a root's own signature is checked too (OpenSSL trusts an anchor's unchecked).
        let (result, built) = X509Certificate.verifiedChain(certificate, intermediates: Array(above.dropFirst()), roots: anchors,
                                                            checkRootSignature: true)
        if case .failed(_, let reason, let depth) = result {
            throw CAError("\(names.certificate) does not verify against \(names.root): \(reason) (certificate \(depth) of the chain)")
        }
        // The chain verification built (the CA, the intermediates it went through, the one root it ends at): another
        // root of a rotation bundle, or a spare certificate in cert-chain.pem, does not cut the CA's life short.
        let end = built.compactMap { $0.facts?.notAfter }.min() ?? facts.notAfter
        let domain = trustDomain ?? certificate.organization ?? ""
        do {
            try SPIFFEID.validate(trustDomain: domain)
        } catch {
            throw trustDomain != nil
                ? CAError("--trust-domain '\(domain)': \(error)")
                : CAError("\(names.certificate): its subject's organization (O) '\(domain)' is not a trust domain (\(error)); pass --trust-domain")
        }
        self.certificate = certificate
        self.key = key
        self.intermediates = above
        self.roots = roots
        self.trustDomain = domain
        notAfter = end
        if end <= now { throw CAError("\(names.certificate): the CA's chain expired (notAfter \(end) in seconds since the epoch)") }
    }

    /// A self-signed root as Istio's self-signed CA makes one: subject O=<trust domain>, CA:TRUE (critical),
    /// keyUsage keyCertSign and cRLSign (critical).
    public static func makeRoot(trustDomain: String, ttlSeconds: Int, keyType: KeyType, now: Int) throws(CAError) -> (certificate: X509Certificate, key: PrivateKey) {
        if let problem = caTrustDomainProblem(trustDomain) { throw CAError("trust domain '\(trustDomain)' \(problem)") }
        let key = try PrivateKey.generate(keyType)
        var template = CertificateTemplate(notBefore: now - clockSkewSeconds, notAfter: now + ttlSeconds)
        template.organization = trustDomain
        template.isCA = true
        template.keyUsage = [.keyCertSign, .cRLSign]
        return (try template.sign(key: key, issuer: nil), key)
    }

    /// An intermediate CA signed by `root` (O=<trust domain>, CN=Intermediate CA), living at most as long as it.
    public static func makeIntermediate(root: X509Certificate, rootKey: PrivateKey, trustDomain: String, ttlSeconds: Int,
                                        keyType: KeyType, now: Int) throws(CAError) -> (certificate: X509Certificate, key: PrivateKey) {
        if let problem = caTrustDomainProblem(trustDomain) { throw CAError("trust domain '\(trustDomain)' \(problem)") }
        let key = try PrivateKey.generate(keyType)
        let rootEnd = root.facts?.notAfter ?? now
        var template = CertificateTemplate(notBefore: now - clockSkewSeconds, notAfter: min(now + ttlSeconds, rootEnd))
        template.organization = trustDomain
        template.commonName = intermediateCommonName
        template.isCA = true
        template.keyUsage = [.keyCertSign, .cRLSign]
        return (try template.sign(key: key, issuer: (root, rootKey)), key)
    }

    /// A workload certificate as Istio's CA issues one: an empty subject, exactly one URI subjectAltName
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>` (critical, since the subject is empty),
    /// CA:FALSE, keyUsage digitalSignature and keyEncipherment, extendedKeyUsage serverAuth and clientAuth, from two
    /// minutes ago for `ttlSeconds` but never past the CA's own end.
    public func issue(namespace: String, serviceAccount: String, ttlSeconds: Int, keyType: KeyType, now: Int) throws(CAError) -> WorkloadCertificate {
        if let problem = KubernetesName.namespaceProblem(namespace) { throw CAError("namespace '\(namespace)' \(problem)") }
        if let problem = KubernetesName.serviceAccountProblem(serviceAccount) { throw CAError("service account '\(serviceAccount)' \(problem)") }
        let id: SPIFFEID
        do {
            id = try SPIFFEID.workload(trustDomain: trustDomain, namespace: namespace, serviceAccount: serviceAccount)
        } catch {
            throw CAError("spiffe://\(trustDomain)/ns/\(namespace)/sa/\(serviceAccount) is not a SPIFFE ID: \(error)")
        }
        let key = try PrivateKey.generate(keyType)
        let wanted = now + ttlSeconds
        var template = CertificateTemplate(notBefore: now - Self.clockSkewSeconds, notAfter: min(wanted, notAfter))
        template.uris = [id.description]
        template.keyUsage = [.digitalSignature, .keyEncipherment]
        template.extendedKeyUsage = [.serverAuth, .clientAuth]
        let leaf = try template.sign(key: key, issuer: (certificate, self.key))
        return WorkloadCertificate(id: id, certificate: leaf, key: key, chain: [leaf] + intermediates, roots: roots,
                                   shortened: wanted > notAfter)
    }
}

/// What `CertificateAuthority.issue` made: the files of Istio's file-mounted certificates.
public struct WorkloadCertificate: Sendable {
    public var id: SPIFFEID
    public var certificate: X509Certificate
    public var key: PrivateKey
    /// cert-chain.pem: the leaf, then the intermediates up to (not including) the root.
    public var chain: [X509Certificate]
    /// root-cert.pem.
    public var roots: [X509Certificate]
    /// The certificate ends with the CA's chain, earlier than the TTL asked for.
    public var shortened: Bool
}
