import ArgumentParser
import TernControl
import TernCore
import TernIO
import TernTLS

/// `tern cert`: the mesh CA on the command line (docs/mesh-ca.md). Usage errors are thrown by each subcommand's
/// `validate()` (exit 64, one line naming the flag); failures at run time print one line naming the file and the
/// reason and exit 1.
struct CertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cert",
        abstract: "The mesh CA: make a root or intermediate CA, issue workload certificates with SPIFFE identities, inspect certificates.",
        subcommands: [CertCACommand.self, CertIssueCommand.self, CertInspectCommand.self]
    )
}

/// A `tern cert` subcommand: runs and returns the exit status.
protocol CertSubcommand: ParsableCommand {
    func runCert() throws(CertFailure) -> Int32
}

extension CertSubcommand {
    /// Runs, turning a failure into its line on stderr and exit 1.
    func runAndReport() -> Int32 {
        do {
            return try runCert()
        } catch {
            System.writeStderr("tern cert \(Self.configuration.commandName ?? ""): \(error.message)")
            return 1
        }
    }
}

/// A failure at run time: one line for stderr.
struct CertFailure: Error {
    var message: String
    init(_ message: String) { self.message = message }
    init(_ error: CAError) { message = error.description }
}

/// The files `tern cert` reads and writes, with the messages that name them.
enum CertFiles {
    static func path(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    static func read(_ path: String) throws(CertFailure) -> [UInt8] {
        do {
            return try System.readFile(path)
        } catch {
            throw CertFailure("cannot read \(path): \(Errno.name(error.errno)) (\(Errno.message(error.errno)))")
        }
    }

    static func certificates(_ path: String) throws(CertFailure) -> [X509Certificate] {
        let bytes = try read(path)
        do {
            return try X509Certificate.chain(pem: bytes)
        } catch {
            throw CertFailure("\(path): \(error.description)")
        }
    }

    static func key(_ path: String) throws(CertFailure) -> PrivateKey {
        let bytes = try read(path)
        do {
            return try PrivateKey(pem: bytes)
        } catch {
            throw CertFailure("\(path): \(error.description)")
        }
    }

    /// Certificates are written 0644, keys 0600 (created so, never loosened and tightened after).
    static func write(_ path: String, _ bytes: [UInt8], secret: Bool, replace: Bool = true) throws(CertFailure) {
        do {
            try System.writeFile(path, bytes, mode: secret ? 0o600 : 0o644, replace: replace)
        } catch {
            throw CertFailure("cannot write \(path): \(error.call): \(Errno.name(error.errno)) (\(Errno.message(error.errno)))")
        }
    }

    static func makeDirectory(_ path: String, mode: UInt32) throws(CertFailure) {
        do {
            try System.makeDirectories(path, mode: mode)
        } catch {
            throw CertFailure("cannot create \(path): \(Errno.name(error.errno)) (\(Errno.message(error.errno)))")
        }
    }

    static func pem(_ certificates: [X509Certificate]) -> [UInt8] { certificates.flatMap(\.pem) }

    /// The CA of a directory `tern cert ca` (or Istio) wrote: a plug-in CA (ca-cert.pem, ca-key.pem,
    /// cert-chain.pem, root-cert.pem) when ca-key.pem is there, else a self-signed one (root-cert.pem,
    /// root-key.pem).
    static func loadCA(_ directory: String, trustDomain: String?, now: Int) throws(CertFailure) -> CertificateAuthority {
        let pluggedIn = System.pathExists(path(directory, CAFiles.caKey))
        if !pluggedIn && !System.pathExists(path(directory, CAFiles.rootKey)) {
            throw CertFailure("\(directory): no CA there (neither \(CAFiles.caCertificate) with \(CAFiles.caKey), nor \(CAFiles.rootCertificate) with \(CAFiles.rootKey))")
        }
        let certificateName = path(directory, pluggedIn ? CAFiles.caCertificate : CAFiles.rootCertificate)
        let keyName = path(directory, pluggedIn ? CAFiles.caKey : CAFiles.rootKey)
        let rootName = path(directory, CAFiles.rootCertificate)
        let certificate = try certificates(certificateName)[0]
        let key = try key(keyName)
        let roots = try certificates(rootName)
        let chain = pluggedIn ? try certificates(path(directory, CAFiles.certificateChain)) : []
        do {
            return try CertificateAuthority(certificate: certificate, key: key, chain: chain, roots: roots,
                                            trustDomain: trustDomain, now: now,
                                            names: (certificateName, keyName, rootName))
        } catch {
            throw CertFailure(error)
        }
    }

    /// Seconds since the epoch.
    static var now: Int { Int(System.wallClockMicros() / 1_000_000) }

    /// A `--ttl` value in whole seconds, from 1 s to `limit`.
    static func ttl(_ text: String, limit: Int, limitText: String) throws(ValidationError) -> Int {
        guard let d = TernDuration(parsing: text), d.nanoseconds >= 1_000_000_000 else {
            throw ValidationError("--ttl must be a duration of at least 1s such as 24h or 87600h, got '\(text)'")
        }
        let seconds = Int(d.nanoseconds / 1_000_000_000)
        guard seconds <= limit else { throw ValidationError("--ttl must be at most \(limitText), got '\(text)'") }
        return seconds
    }

    static func keyType(_ text: String) throws(ValidationError) -> KeyType {
        guard let type = KeyType(rawValue: text) else {
            throw ValidationError("--key-type must be ec-p256 or rsa-2048, got '\(text)'")
        }
        return type
    }

    static func checkTrustDomain(_ text: String?) throws(ValidationError) {
        guard let text else { return }
        do {
            try SPIFFEID.validate(trustDomain: text)
        } catch {
            throw ValidationError("--trust-domain must be a SPIFFE trust domain (lower-case letters, digits, '.', '-' and '_'), got '\(text)': \(error)")
        }
    }
}
