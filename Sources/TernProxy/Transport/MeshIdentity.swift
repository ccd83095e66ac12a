// The workload's mesh identity (`--identity-dir`): Istio's file-mounted certificates (cert-chain.pem, key.pem,
// root-cert.pem, as `tern cert issue` writes them). Loaded and checked off the reactors, at start and whenever the
// files change; what the reactors read of it travels with the TLS policies it builds: the server context of an
// inbound side (client certificates required, chaining to the root) and the client contexts of automatic mTLS.
// A peer's certificate must be an X.509-SVID of the trust domain (TernTLS/X509SVID.swift); so must our own.
import TernCore
import TernIO
import TernTLS

/// Where the identity's files are (`--identity-dir`) and the trust domain peers must belong to (`--trust-domain`;
/// nil: the workload certificate's own).
public struct MeshIdentityFiles: Sendable, Hashable {
    public var directory: String
    public var trustDomain: String?

    public init(directory: String, trustDomain: String? = nil) {
        self.directory = directory
        self.trustDomain = trustDomain
    }

    private func file(_ name: String) -> String { directory.hasSuffix("/") ? directory + name : directory + "/" + name }
    /// The workload certificate, then the intermediates up to (not including) the root.
    public var certificateChain: String { file("cert-chain.pem") }
    public var key: String { file("key.pem") }
    /// The mesh's root(s): peers' chains must end at one of them.
    public var root: String { file("root-cert.pem") }
    /// Every file, for watching.
    public var paths: [String] { [certificateChain, key, root] }

    /// The server files of an inbound side: our chain and key, and client certificates required to chain to the root.
    public var serverFiles: TLSServerFiles { TLSServerFiles(certificate: certificateChain, key: key, clientCA: root) }
}

/// A loaded identity: our SPIFFE ID, the trust domain, and the workload certificate's validity.
public final class MeshIdentity: Sendable {
    public let files: MeshIdentityFiles
    public let id: SPIFFEID
    public let trustDomain: String
    /// Seconds since the epoch.
    public let notBefore: Int
    public let notAfter: Int
    /// `By=<our SPIFFE ID>;` as X-Forwarded-Client-Cert begins.
    let forwardedBy: [UInt8]

    init(files: MeshIdentityFiles, id: SPIFFEID, trustDomain: String, notBefore: Int, notAfter: Int) {
        self.files = files
        self.id = id
        self.trustDomain = trustDomain
        self.notBefore = notBefore
        self.notAfter = notAfter
        forwardedBy = Array("By=\(id);".utf8)
    }

    /// Reads and checks the files: the chain's leaf must be an X.509-SVID (of `--trust-domain` when given), valid
    /// now (an expired or not yet valid certificate is never presented), and chain to `root-cert.pem`. The key is
    /// checked against the certificate when a context is built from them.
    public static func load(_ files: MeshIdentityFiles, now: Int) throws(TLSSetupError) -> MeshIdentity {
        func read(_ path: String) throws(TLSSetupError) -> [X509Certificate] {
            let bytes: [UInt8]
            do {
                bytes = try System.readFile(path)
            } catch {
                throw TLSSetupError("\(path): cannot be read: \(error)")
            }
            let chain = try X509Certificate.chain(pem: bytes)
            guard !chain.isEmpty else { throw TLSSetupError("\(path): holds no PEM certificate") }
            return chain
        }
        let chain = try read(files.certificateChain)
        let roots = try read(files.root)
        let leaf = chain[0]
        let trustDomain: String
        if let td = files.trustDomain {
            trustDomain = td
        } else {
            guard let uri = leaf.soleURI.uri, let id = try? SPIFFEID(parsing: uri) else {
                throw TLSSetupError("\(files.certificateChain): the workload certificate has no single SPIFFE ID (a URI subjectAltName spiffe://TRUST-DOMAIN/ns/NS/sa/SA) to take the trust domain from; give --trust-domain")
            }
            trustDomain = id.trustDomain
        }
        let id: SPIFFEID
        switch X509SVID.validate(leaf, intermediates: Array(chain.dropFirst()), roots: roots, trustDomain: trustDomain, purpose: .any) {
        case .success(let found): id = found
        case .failure(let rejection):
            throw TLSSetupError("\(files.certificateChain): not a usable workload certificate of trust domain \(trustDomain) (checked against \(files.root)): \(rejection.description)")
        }
        guard let facts = leaf.facts else { throw TLSSetupError("\(files.certificateChain): the certificate's dates cannot be decoded") }
        if facts.notAfter <= now {
            throw TLSSetupError("\(files.certificateChain): \(id) expired at \(leaf.notAfterText); an expired certificate is never presented")
        }
        if facts.notBefore > now {
            throw TLSSetupError("\(files.certificateChain): \(id) is not valid before \(leaf.notBeforeText)")
        }
        return MeshIdentity(files: files, id: id, trustDomain: trustDomain, notBefore: facts.notBefore, notAfter: facts.notAfter)
    }

    /// Past half its lifetime (when Istio's agent rotates it) at `now`.
    public func pastHalfLife(now: Int) -> Bool { now >= notBefore + (notAfter - notBefore) / 2 }

    /// Whether it may still be presented at `now`.
    public func presentable(now: Int) -> Bool { now < notAfter }

    /// The peer certificate of a finished handshake checked as an X.509-SVID of the trust domain (its chain was
    /// verified against the root during a full handshake) and valid at `now`: a resumed session carries the
    /// certificate of the handshake it resumes, which may have expired since. Its SPIFFE ID, or the handshake
    /// failure to report.
    public func peerIdentity(_ leaf: X509Certificate?, now: Int) -> Result<SPIFFEID, TLSFailure> {
        guard let leaf else { return .failure(TLSFailure(.noCertificate, "the peer presented no certificate")) }
        switch X509SVID.identity(of: leaf, trustDomain: trustDomain) {
        case .success(let id):
            guard let facts = leaf.facts else { return .failure(TLSFailure(.invalidSVID, "\(id): the certificate's dates cannot be decoded")) }
            if facts.notAfter <= now { return .failure(TLSFailure(.certificateExpired, "\(id): the certificate expired at \(leaf.notAfterText)")) }
            if facts.notBefore > now { return .failure(TLSFailure(.certificateNotYetValid, "\(id): the certificate is not valid before \(leaf.notBeforeText)")) }
            return .success(id)
        case .failure(let r): return .failure(TLSFailure(.invalidSVID, "the peer's certificate is not an X.509-SVID of \(trustDomain): \(r.description)"))
        }
    }

    /// The seconds since the epoch, for validity checks (once per connection, not per request).
    static var nowSeconds: Int { Int(System.wallClockMicros() / 1_000_000) }
}
