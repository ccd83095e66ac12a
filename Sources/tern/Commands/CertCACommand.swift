import ArgumentParser
import TernControl
import TernIO
import TernTLS

/// `tern cert ca`: a self-signed root CA, or an intermediate (Istio's plug-in CA files) signed by a given root.
struct CertCACommand: CertSubcommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Make a self-signed root CA (root-cert.pem, root-key.pem), or with --root-cert and --root-key an intermediate CA signed by that root (Istio's plug-in CA files: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem). Either directory is a --ca for `tern cert issue`."
    )

    @Option(name: .customLong("out"), help: "Directory to write the CA's files into (created, mode 0700, if missing).")
    var out: String

    @Option(name: .customLong("trust-domain"), help: "The mesh's trust domain, written as the CA certificate's organization (O), where `tern cert issue` reads it (default: cluster.local; for an intermediate, the root's organization when it is a trust domain).")
    var trustDomain: String?

    @Option(help: "How long the CA certificate is valid (an intermediate never outlives its root).")
    var ttl: String = "87600h"

    @Option(name: .customLong("key-type"), help: "The CA's key: ec-p256 or rsa-2048 (Istio's self-signed root uses rsa-2048).")
    var keyType: String = "ec-p256"

    @Option(name: .customLong("root-cert"), help: "Make an intermediate signed by this root certificate (PEM); needs --root-key.")
    var rootCert: String?

    @Option(name: .customLong("root-key"), help: "The private key (PEM) of --root-cert.")
    var rootKey: String?

    @Flag(help: "Replace a CA's files that already exist in --out (without it, tern cert ca writes nothing when any file it would write, or another CA's key, is there).")
    var force = false

    func validate() throws {
        _ = try CertFiles.ttl(ttl, limit: 1000 * 365 * 86_400, limitText: "1000 years (8760000h)")
        _ = try CertFiles.keyType(keyType)
        try CertFiles.checkTrustDomain(trustDomain)
        if let trustDomain, let problem = CertificateAuthority.caTrustDomainProblem(trustDomain) {
            throw ValidationError("--trust-domain \(problem), got '\(trustDomain)'")
        }
        if (rootCert == nil) != (rootKey == nil) { throw ValidationError("--root-cert and --root-key go together") }
        if out.isEmpty { throw ValidationError("--out must be a directory, got ''") }
    }

    func runCert() throws(CertFailure) -> Int32 {
        let seconds = (try? CertFiles.ttl(ttl, limit: Int.max, limitText: "")) ?? 0
        let type = (try? CertFiles.keyType(keyType)) ?? .ecP256
        let now = CertFiles.now
        let intermediate = rootCert != nil
        // Key first, so that it is the one named when the whole CA is there.
        let layout = intermediate
            ? [CAFiles.caKey, CAFiles.caCertificate, CAFiles.certificateChain, CAFiles.rootCertificate]
            : [CAFiles.rootKey, CAFiles.rootCertificate]
        if !force {
            // The other layout's key: two CAs in one directory (and `--ca` would take the plug-in one).
            let other = CertFiles.path(out, intermediate ? CAFiles.rootKey : CAFiles.caKey)
            if System.pathExists(other) {
                throw CertFailure("\(other) exists: \(out) holds another CA; tern cert ca never mixes two in one directory without --force (nothing written)")
            }
            // Any file of its own: a root-cert.pem is the trust bundle of all the CA issued, as precious as the key.
            if let existing = layout.map({ CertFiles.path(out, $0) }).first(where: { System.pathExists($0) }) {
                throw CertFailure("\(existing) exists: tern cert ca never overwrites a CA's files without --force (nothing written)")
            }
        }
        var files: [(String, [UInt8], Bool)]
        let made: X509Certificate
        if let rootCert, let rootKey {
            let roots = try CertFiles.certificates(rootCert)
            let key = try CertFiles.key(rootKey)
            // The root's organization is the trust domain unless it is not one (or --trust-domain says otherwise).
            let fromRoot = roots[0].organization.flatMap { (try? SPIFFEID.validate(trustDomain: $0)) != nil ? $0 : nil }
            let root: CertificateAuthority
            guard roots[0].facts?.selfSigned == true else {
                throw CertFailure("\(rootCert) is not a self-signed root certificate")
            }
            do {
                root = try CertificateAuthority(certificate: roots[0], key: key, chain: [], roots: roots,
                                                trustDomain: trustDomain ?? (fromRoot == nil ? "cluster.local" : nil),
                                                now: now, names: (rootCert, rootKey, rootCert))
                let (certificate, caKey) = try CertificateAuthority.makeIntermediate(
                    root: roots[0], rootKey: key, trustDomain: root.trustDomain, ttlSeconds: seconds, keyType: type, now: now)
                made = certificate
                files = [
                    (CAFiles.caCertificate, certificate.pem, false), (CAFiles.caKey, caKey.pem, true),
                    (CAFiles.rootCertificate, CertFiles.pem(roots), false),
                    (CAFiles.certificateChain, CertFiles.pem([certificate] + roots), false),
                ]
            } catch {
                throw CertFailure(error)
            }
        } else {
            do {
                let (certificate, key) = try CertificateAuthority.makeRoot(
                    trustDomain: trustDomain ?? "cluster.local", ttlSeconds: seconds, keyType: type, now: now)
                made = certificate
                files = [(CAFiles.rootCertificate, certificate.pem, false), (CAFiles.rootKey, key.pem, true)]
            } catch {
                throw CertFailure(error)
            }
        }
        precondition(Set(files.map(\.0)) == Set(layout), "the files written are the ones checked")
        try CertFiles.makeDirectory(out, mode: 0o700)
        // Keys first: a refusal (another `tern cert ca` got there first) leaves the directory as it was.
        files.sort { $0.2 && !$1.2 }
        for (name, bytes, secret) in files {
            try CertFiles.write(CertFiles.path(out, name), bytes, secret: secret, replace: force || !secret)
        }
        let facts = made.facts
        print("\(intermediate ? "intermediate" : "root") CA \(made.subject), \(facts?.key ?? ""), valid until \(made.notAfterText): \(files.map { CertFiles.path(out, $0.0) }.joined(separator: ", "))")
        return 0
    }
}
