import ArgumentParser
import TernControl
import TernIO
import TernTLS

/// `tern cert issue`: a workload certificate for a namespace and service account, written as Istio mounts one.
struct CertIssueCommand: CertSubcommand {
    static let configuration = CommandConfiguration(
        commandName: "issue",
        abstract: "Issue a workload certificate whose one URI SAN is spiffe://<trust domain>/ns/<namespace>/sa/<service account>, written as Istio mounts them: cert-chain.pem (leaf, then intermediates), key.pem (0600), root-cert.pem."
    )

    @Option(help: "The CA directory (`tern cert ca --out`, or Istio's plug-in CA files).")
    var ca: String

    @Option(help: "The workload's Kubernetes namespace.")
    var namespace: String

    @Option(name: .customLong("service-account"), help: "The workload's Kubernetes service account.")
    var serviceAccount: String

    @Option(name: .customLong("out"), help: "Directory to write the workload's files into (created if missing); files there are replaced, as a rotation replaces them, but never a CA's directory (one holding ca-key.pem or root-key.pem).")
    var out: String

    @Option(help: "How long the certificate is valid, at most 2160h (Istio's 90-day MAX_WORKLOAD_CERT_TTL), and never past the CA's own end.")
    var ttl: String = "24h"

    @Option(name: .customLong("key-type"), help: "ec-p256 or rsa-2048 (Istio's default for workloads is rsa-2048).")
    var keyType: String = "ec-p256"

    @Option(name: .customLong("trust-domain"), help: "The trust domain of the SPIFFE ID (default: the CA certificate's organization, O).")
    var trustDomain: String?

    func validate() throws {
        _ = try CertFiles.ttl(ttl, limit: CertificateAuthority.maximumWorkloadTTLSeconds, limitText: "2160h (90 days)")
        _ = try CertFiles.keyType(keyType)
        try CertFiles.checkTrustDomain(trustDomain)
        if let problem = KubernetesName.namespaceProblem(namespace) {
            throw ValidationError("--namespace \(problem), got '\(namespace)'")
        }
        if let problem = KubernetesName.serviceAccountProblem(serviceAccount) {
            throw ValidationError("--service-account \(problem), got '\(serviceAccount)'")
        }
        if out.isEmpty { throw ValidationError("--out must be a directory, got ''") }
    }

    func runCert() throws(CertFailure) -> Int32 {
        let seconds = (try? CertFiles.ttl(ttl, limit: Int.max, limitText: "")) ?? 0
        let type = (try? CertFiles.keyType(keyType)) ?? .ecP256
        let now = CertFiles.now
        // A CA's directory is never a workload's: its cert-chain.pem and root-cert.pem would be replaced. (A
        // workload's own files are replaced freely: that is rotation.)
        for key in [CAFiles.caKey, CAFiles.rootKey] where System.pathExists(CertFiles.path(out, key)) {
            throw CertFailure("\(CertFiles.path(out, key)) exists: \(out) is a CA directory, and a workload's files would overwrite the CA's; choose another --out (nothing written)")
        }
        let authority = try CertFiles.loadCA(ca, trustDomain: trustDomain, now: now)
        let issued: WorkloadCertificate
        do {
            issued = try authority.issue(namespace: namespace, serviceAccount: serviceAccount, ttlSeconds: seconds,
                                         keyType: type, now: now)
        } catch {
            throw CertFailure(error)
        }
        try CertFiles.makeDirectory(out, mode: 0o755)
        // The key first, so that a reader that sees the new chain finds its key already there.
        try CertFiles.write(CertFiles.path(out, CAFiles.workloadKey), issued.key.pem, secret: true)
        try CertFiles.write(CertFiles.path(out, CAFiles.certificateChain), CertFiles.pem(issued.chain), secret: false)
        try CertFiles.write(CertFiles.path(out, CAFiles.rootCertificate), CertFiles.pem(issued.roots), secret: false)
        let shortened = issued.shortened ? " (shortened to the CA's own end)" : ""
        print("\(issued.id) valid until \(issued.certificate.notAfterText)\(shortened): \(CertFiles.path(out, CAFiles.certificateChain)), \(CertFiles.path(out, CAFiles.workloadKey)), \(CertFiles.path(out, CAFiles.rootCertificate))")
        return 0
    }
}
