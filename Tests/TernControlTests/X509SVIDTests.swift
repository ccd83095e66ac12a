import Glibc
import Testing
import TernControl
import TernTLS

/// The X.509-SVID rule on certificates made wrong on purpose (CertificateTemplate signs whatever it is given).
struct X509SVIDTests {
    static let now = Int(time(nil))
    static let root = try! CertificateAuthorityTests.root()

    /// A leaf signed by `ca` (the test root by default) from `template`'s fields.
    static func leaf(_ edit: (inout CertificateTemplate) -> Void, by ca: CertificateAuthority = root) throws -> X509Certificate {
        var t = CertificateTemplate(notBefore: now - 60, notAfter: now + 3600)
        t.uris = ["spiffe://cluster.local/ns/default/sa/web"]
        t.keyUsage = [.digitalSignature, .keyEncipherment]
        t.extendedKeyUsage = [.serverAuth, .clientAuth]
        edit(&t)
        return try t.sign(key: PrivateKey.generate(.ecP256), issuer: (ca.certificate, ca.key))
    }

    static func reason(_ leaf: X509Certificate, roots: [X509Certificate] = [root.certificate], trustDomain: String = "cluster.local") -> X509SVIDRejection.Reason? {
        switch X509SVID.validate(leaf, roots: roots, trustDomain: trustDomain, purpose: .tlsClient) {
        case .success: return nil
        case .failure(let rejection): return rejection.reason
        }
    }

    @Test func aWellFormedSVIDIsAccepted() throws {
        let cert = try Self.leaf { _ in }
        #expect(Self.reason(cert) == nil)
        #expect(try X509SVID.identity(of: cert, trustDomain: "cluster.local").get().description == "spiffe://cluster.local/ns/default/sa/web")
    }

    @Test func aCALeafIsRefused() throws {
        // OpenSSL verifies this chain: only the SVID rule stops a CA certificate from being a peer's identity.
        let cert = try Self.leaf { $0.isCA = true; $0.commonName = "web"; $0.keyUsage = [.digitalSignature, .keyCertSign] }
        #expect(X509Certificate.verify(cert, roots: [Self.root.certificate]) == .verified)
        #expect(Self.reason(cert) == .certificateAuthority)
    }

    @Test func twoURISANsAreRefused() throws {
        let cert = try Self.leaf { $0.uris.append("spiffe://cluster.local/ns/default/sa/other") }
        #expect(Self.reason(cert) == .multipleURISANs)
    }

    @Test func noURISANIsRefused() throws {
        let cert = try Self.leaf { $0.uris = []; $0.dnsNames = ["web.default.svc.cluster.local"]; $0.commonName = "web" }
        #expect(Self.reason(cert) == .noURISAN)
    }

    @Test func aMalformedSPIFFEIDIsRefused() throws {
        for uri in ["spiffe://cluster.local/ns/../sa/web", "spiffe://Cluster.local/ns/a/sa/b", "spiffe://cluster.local",
                    "spiffe://cluster.local:443/ns/a/sa/b", "https://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/b?x"] {
            let cert = try Self.leaf { $0.uris = [uri] }
            #expect(Self.reason(cert) == .invalidSPIFFEID, "\(uri)")
        }
    }

    @Test func anotherTrustDomainIsRefused() throws {
        let cert = try Self.leaf { $0.uris = ["spiffe://other.domain/ns/default/sa/web"] }
        #expect(Self.reason(cert) == .trustDomainMismatch)
        #expect(Self.reason(cert, trustDomain: "other.domain") == nil)
    }

    @Test func aKeyUsageWithoutDigitalSignatureIsRefused() throws {
        #expect(Self.reason(try Self.leaf { $0.keyUsage = [.keyEncipherment] }) == .noDigitalSignature)
        #expect(Self.reason(try Self.leaf { $0.keyUsage = nil }) == .noDigitalSignature)
    }

    @Test func anExpiredCertificateIsRefused() throws {
        let cert = try Self.leaf { $0.notBefore = Self.now - 7200; $0.notAfter = Self.now - 3600 }
        #expect(Self.reason(cert) == .certificateExpired)
        let future = try Self.leaf { $0.notBefore = Self.now + 3600; $0.notAfter = Self.now + 7200 }
        #expect(Self.reason(future) == .certificateNotYetValid)
    }

    @Test func aCertificateFromAnotherRootIsRefused() throws {
        // Same subject (O=cluster.local) and trust domain, another key.
        let other = try CertificateAuthorityTests.root()
        let cert = try Self.leaf({ _ in }, by: other)
        #expect(Self.reason(cert) == .certificateVerifyFailed)
        #expect(Self.reason(cert, roots: [other.certificate]) == nil)
    }

    @Test func aLeafThatMaySignCertificatesOrCRLsIsRefused() throws {
        // CA:FALSE, so not a CA; keyCertSign or cRLSign still make it no X.509-SVID (X509-SVID.md §4.3, §5.2).
        for usage: KeyUsage in [[.digitalSignature, .keyCertSign], [.digitalSignature, .cRLSign],
                                [.digitalSignature, .keyEncipherment, .keyCertSign, .cRLSign]] {
            let cert = try Self.leaf { $0.keyUsage = usage }
            #expect(cert.facts?.isCA == false)
            #expect(Self.reason(cert) == .leafSigningUsage, "\(usage.names)")
            if case .failure(let rejection) = X509SVID.identity(of: cert, trustDomain: "cluster.local") {
                #expect(rejection.reason == .leafSigningUsage)
                #expect(rejection.detail.contains(usage.contains(.keyCertSign) ? "keyCertSign" : "cRLSign"), "\(rejection.detail)")
            } else {
                Issue.record("identity accepted a leaf with \(usage.names)")
            }
        }
        // cRLSign on a CA:FALSE certificate with a subject gets past OpenSSL's strict chain checks (which refuse
        // keyCertSign without CA:TRUE, and cRLSign with an empty subject): only the SVID rule stops it.
        let crl = try Self.leaf { $0.keyUsage = [.digitalSignature, .cRLSign]; $0.commonName = "web" }
        #expect(Self.reason(crl) == .leafSigningUsage)
        #expect(X509Certificate.verify(crl, roots: [Self.root.certificate]) == .verified)
    }

    @Test func anEmptySubjectWithANonCriticalSANFailsStrictVerification() throws {
        let cert = try Self.leaf { $0.subjectAltNameCritical = false }
        #expect(cert.subject == "")
        #expect(Self.reason(cert) == .certificateVerifyFailed)
        guard case .failed(_, let reason, let depth) = X509Certificate.verify(cert, roots: [Self.root.certificate]) else {
            Issue.record("a non-critical SAN with an empty subject verified")
            return
        }
        #expect(depth == 0 && reason.lowercased().contains("critical"), "\(reason)")
        // The same leaf with its SAN critical (the default for an empty subject) is accepted; with a subject, a
        // non-critical SAN is fine.
        #expect(Self.reason(try Self.leaf { $0.subjectAltNameCritical = true }) == nil)
        #expect(Self.reason(try Self.leaf { $0.commonName = "web"; $0.subjectAltNameCritical = false }) == nil)
    }

    @Test func thousandsOfURISANsAreCountedInOnePass() throws {
        // Read before the chain is verified, so a hostile peer chooses the count: one decoding, not one per name.
        let many = (0..<5000).map { "spiffe://cluster.local/ns/default/sa/w\($0)" }
        let cert = try Self.leaf { $0.uris = many; $0.dnsNames = ["a.example", "b.example"] }
        // (One pass is how `soleURI` reads them: the shim counts the URI names of one decoding. No timing here:
        // the count and the refusal are what is asserted.)
        var rejection: X509SVIDRejection?
        if case .failure(let r) = X509SVID.identity(of: cert, trustDomain: "cluster.local") { rejection = r }
        #expect(rejection?.reason == .multipleURISANs)
        #expect(rejection?.detail.contains("5000 URI") == true)
        #expect(cert.soleURI.count == 5000 && cert.soleURI.uri == nil)
        #expect(cert.uris == many)
        #expect(cert.dnsNames == ["a.example", "b.example"])
    }

    @Test func reasonsAreMetricLabels() {
        for r in X509SVIDRejection.Reason.allCases {
            #expect(r.rawValue.allSatisfy { $0 == "_" || ($0 >= "a" && $0 <= "z") })
        }
    }
}
