import Glibc
import Testing
import TernControl
import TernTLS

/// The mesh CA: keys, roots, intermediates and workload certificates, checked with TernTLS's strict verification.
struct CertificateAuthorityTests {
    static let now = Int(time(nil))

    static func root(_ domain: String = "cluster.local", _ type: KeyType = .ecP256) throws -> CertificateAuthority {
        let (cert, key) = try CertificateAuthority.makeRoot(trustDomain: domain, ttlSeconds: 86_400 * 365, keyType: type, now: now)
        return try CertificateAuthority(certificate: cert, key: key, chain: [], roots: [cert], trustDomain: nil, now: now,
                                        names: ("root-cert.pem", "root-key.pem", "root-cert.pem"))
    }

    static func intermediate(under root: CertificateAuthority) throws -> CertificateAuthority {
        let (cert, key) = try CertificateAuthority.makeIntermediate(
            root: root.certificate, rootKey: root.key, trustDomain: root.trustDomain, ttlSeconds: 86_400 * 30, keyType: .ecP256, now: now)
        return try CertificateAuthority(certificate: cert, key: key, chain: [cert, root.certificate], roots: root.roots,
                                        trustDomain: nil, now: now, names: ("ca-cert.pem", "ca-key.pem", "root-cert.pem"))
    }

    @Test(arguments: [(KeyType.ecP256, "EC P-256"), (.rsa2048, "RSA 2048")])
    func keysOfBothTypesAreMadeAndReadBack(_ type: KeyType, _ description: String) throws {
        let key = try PrivateKey.generate(type)
        let pem = String(decoding: key.pem, as: UTF8.self)
        #expect(pem.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        let back = try PrivateKey(pem: key.pem)
        #expect(back.pem == key.pem)
        let ca = try Self.root("cluster.local", type)
        #expect(ca.certificate.facts?.key == description)
    }

    @Test func aRootIsIstiosSelfSignedCAShape() throws {
        let ca = try Self.root()
        let facts = try #require(ca.certificate.facts)
        #expect(ca.certificate.subject == "O=cluster.local")
        #expect(ca.trustDomain == "cluster.local")
        #expect(facts.isCA && facts.selfSigned)
        #expect(facts.keyUsage == [.keyCertSign, .cRLSign])
        #expect(ca.intermediates.isEmpty)
        #expect(X509Certificate.verify(ca.certificate, roots: [ca.certificate]) == .verified)
    }

    @Test func aWorkloadCertificateVerifiesAgainstItsRoot() throws {
        let ca = try Self.root()
        let issued = try ca.issue(namespace: "default", serviceAccount: "web", ttlSeconds: 3600, keyType: .ecP256, now: Self.now)
        #expect(issued.id.description == "spiffe://cluster.local/ns/default/sa/web")
        #expect(issued.certificate.uris == ["spiffe://cluster.local/ns/default/sa/web"])
        #expect(issued.certificate.subject == "")
        let facts = try #require(issued.certificate.facts)
        #expect(!facts.isCA && facts.hasBasicConstraints)
        #expect(facts.keyUsage == [.digitalSignature, .keyEncipherment])
        #expect(facts.extendedKeyUsage == [.serverAuth, .clientAuth])
        #expect(facts.notBefore == Self.now - 120 && facts.notAfter == Self.now + 3600)
        #expect(issued.chain.count == 1)
        #expect(issued.key.matches(issued.certificate))
        #expect(X509Certificate.verify(issued.certificate, roots: issued.roots, purpose: .tlsClient) == .verified)
        #expect(X509Certificate.verify(issued.certificate, roots: issued.roots, purpose: .tlsServer) == .verified)
        let id = X509SVID.validate(issued.certificate, roots: issued.roots, trustDomain: "cluster.local", purpose: .tlsClient)
        #expect(id == .success(issued.id))
    }

    @Test func anRSAWorkloadCertificateThroughAnIntermediateVerifies() throws {
        let root = try Self.root()
        let ca = try Self.intermediate(under: root)
        #expect(ca.certificate.subject == "O=cluster.local, CN=Intermediate CA")
        #expect(ca.intermediates.count == 1)
        let issued = try ca.issue(namespace: "shop", serviceAccount: "cart.v2", ttlSeconds: 3600, keyType: .rsa2048, now: Self.now)
        #expect(issued.certificate.facts?.key == "RSA 2048")
        #expect(issued.chain.count == 2)
        let rest = Array(issued.chain.dropFirst())
        #expect(X509Certificate.verify(issued.certificate, intermediates: rest, roots: root.roots) == .verified)
        // Without the intermediate there is no path to the root.
        if case .verified = X509Certificate.verify(issued.certificate, roots: root.roots) { Issue.record("verified without its intermediate") }
        let id = X509SVID.validate(issued.certificate, intermediates: rest, roots: root.roots, trustDomain: "cluster.local")
        #expect(id == .success(issued.id))
    }

    @Test func aWorkloadCertificateNeverOutlivesItsCA() throws {
        let root = try Self.root()
        let ca = try Self.intermediate(under: root)
        let issued = try ca.issue(namespace: "default", serviceAccount: "web", ttlSeconds: 86_400 * 60, keyType: .ecP256, now: Self.now)
        #expect(issued.shortened)
        #expect(issued.certificate.facts?.notAfter == ca.notAfter)
    }

    @Test func anUnrelatedRootInTheBundleDoesNotLimitTheCA() throws {
        // A rotation bundle: the CA's root and another that ends sooner (or has ended already). Only the chain
        // verification builds, to the CA's own root, bounds the CA.
        let root = try Self.root()
        let (soon, _) = try CertificateAuthority.makeRoot(trustDomain: "cluster.local", ttlSeconds: 3600, keyType: .ecP256, now: Self.now)
        let (gone, _) = try CertificateAuthority.makeRoot(trustDomain: "cluster.local", ttlSeconds: 3600, keyType: .ecP256, now: Self.now - 7200)
        let (cert, key) = try CertificateAuthority.makeIntermediate(
            root: root.certificate, rootKey: root.key, trustDomain: "cluster.local", ttlSeconds: 86_400 * 30, keyType: .ecP256, now: Self.now)
        let expected = try #require(cert.facts?.notAfter)
        for bundle in [[soon, root.certificate], [root.certificate, soon], [gone, soon, root.certificate]] {
            let ca = try CertificateAuthority(certificate: cert, key: key, chain: [cert, root.certificate], roots: bundle,
                                              trustDomain: nil, now: Self.now, names: ("ca-cert.pem", "ca-key.pem", "root-cert.pem"))
            #expect(ca.notAfter == expected)
            let issued = try ca.issue(namespace: "default", serviceAccount: "web", ttlSeconds: 86_400, keyType: .ecP256, now: Self.now)
            #expect(!issued.shortened)
        }
        // The root itself as the CA, beside an unrelated root that ends sooner.
        let selfSigned = try CertificateAuthority(certificate: root.certificate, key: root.key, chain: [], roots: [soon, root.certificate],
                                                  trustDomain: nil, now: Self.now, names: ("root-cert.pem", "root-key.pem", "root-cert.pem"))
        #expect(selfSigned.notAfter == root.notAfter)
        // The CA's own root ending first still bounds it.
        let (short, shortKey) = try CertificateAuthority.makeRoot(trustDomain: "cluster.local", ttlSeconds: 7200, keyType: .ecP256, now: Self.now)
        let (under, underKey) = try CertificateAuthority.makeIntermediate(
            root: short, rootKey: shortKey, trustDomain: "cluster.local", ttlSeconds: 86_400, keyType: .ecP256, now: Self.now)
        let bounded = try CertificateAuthority(certificate: under, key: underKey, chain: [under, short], roots: [root.certificate, short],
                                               trustDomain: nil, now: Self.now, names: ("ca-cert.pem", "ca-key.pem", "root-cert.pem"))
        #expect(bounded.notAfter == short.facts?.notAfter)
    }

    @Test func aTrustDomainLongerThanAnOrganizationIsRefusedForACA() throws {
        let long = String(repeating: "a", count: 65)
        try SPIFFEID.validate(trustDomain: long)
        #expect(throws: CAError.self) {
            try CertificateAuthority.makeRoot(trustDomain: long, ttlSeconds: 3600, keyType: .ecP256, now: Self.now)
        }
        #expect(CertificateAuthority.caTrustDomainProblem(String(repeating: "a", count: 64)) == nil)
        _ = try CertificateAuthority.makeRoot(trustDomain: String(repeating: "a", count: 64), ttlSeconds: 3600, keyType: .ecP256, now: Self.now)
    }

    @Test func aKeyThatIsNotTheCertificatesIsRefused() throws {
        let ca = try Self.root()
        let other = try PrivateKey.generate(.ecP256)
        #expect(throws: CAError.self) {
            try CertificateAuthority(certificate: ca.certificate, key: other, chain: [], roots: [ca.certificate],
                                     trustDomain: nil, now: Self.now, names: ("c", "k", "r"))
        }
    }

    @Test func namesThatWouldMakeABadIdentityAreRefused() throws {
        let ca = try Self.root()
        for (ns, sa) in [("Default", "web"), ("de fault", "web"), ("-ns", "web"), ("ns", ".."), ("ns", "a/b"), ("", "web"), ("ns", "web%41")] {
            #expect(throws: CAError.self) { try ca.issue(namespace: ns, serviceAccount: sa, ttlSeconds: 60, keyType: .ecP256, now: Self.now) }
        }
        #expect(KubernetesName.serviceAccountProblem("cart.v2") == nil)
        #expect(KubernetesName.namespaceProblem(String(repeating: "a", count: 64)) != nil)
    }

    @Test func chainPEMRoundTrips() throws {
        let root = try Self.root()
        let ca = try Self.intermediate(under: root)
        let pem = ca.certificate.pem + root.certificate.pem
        let back = try X509Certificate.chain(pem: pem)
        #expect(back.map(\.sha256Fingerprint) == [ca.certificate.sha256Fingerprint, root.certificate.sha256Fingerprint])
        #expect(throws: TLSSetupError.self) { try X509Certificate.chain(pem: Array("no PEM here".utf8)) }
        // More than the first read's room: every one of them, in order.
        for count in [63, 64, 65, 200] {
            let many = try X509Certificate.chain(pem: Array((0..<count).map { $0 % 2 == 0 ? ca.certificate.pem : root.certificate.pem }.joined()))
            #expect(many.count == count)
            #expect(many.last?.sha256Fingerprint == (count % 2 == 1 ? ca : root).certificate.sha256Fingerprint)
        }
        #expect(throws: TLSSetupError.self) { try X509Certificate.chain(pem: Array("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".utf8)) }
    }
}
