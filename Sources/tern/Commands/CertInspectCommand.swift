import ArgumentParser
import TernControl
import TernIO
import TernTLS

/// `tern cert inspect`: what a certificate file holds and whether it verifies against a root.
struct CertInspectCommand: CertSubcommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Describe each certificate of a PEM file (subject, issuer, SPIFFE IDs, DNS names, validity, CA or not, key) and, with --root or a root-cert.pem beside it, whether it verifies against that root (exit 1 when it does not)."
    )

    @Argument(help: "A PEM file of one certificate or a chain (leaf first).")
    var file: String

    @Option(help: "Verify the chain against the roots in this PEM file (default: root-cert.pem beside FILE, if there is one).")
    var root: String?

    func runCert() throws(CertFailure) -> Int32 {
        let chain = try CertFiles.certificates(file)
        let now = CertFiles.now
        print("\(file): \(chain.count) certificate\(chain.count == 1 ? "" : "s")")
        for (i, certificate) in chain.enumerated() { describe(i, certificate, now: now) }
        let directory = file.lastIndex(of: "/").map { String(file[...$0]) } ?? "./"
        let beside = directory + CAFiles.rootCertificate
        guard let rootFile = root ?? (System.pathExists(beside) ? beside : nil) else {
            print("verify: not checked (no --root, and no \(CAFiles.rootCertificate) beside \(file))")
            return 0
        }
        let roots = try CertFiles.certificates(rootFile)
        switch X509Certificate.verify(chain[0], intermediates: Array(chain.dropFirst()), roots: roots) {
        case .verified:
            print("verify: ok against \(rootFile)")
            return 0
        case .failed(_, let reason, let depth):
            print("verify: FAILED against \(rootFile): \(reason) (certificate \(depth))")
            System.writeStderr("tern cert inspect: \(file) does not verify against \(rootFile): \(reason) (certificate \(depth))")
            return 1
        }
    }

    private func describe(_ index: Int, _ certificate: X509Certificate, now: Int) {
        func line(_ label: String, _ value: String) { print("  " + (label + ":").padding(20) + value) }
        print("certificate \(index)")
        // Names come from the certificate, whoever made it: shown escaped, never as terminal control sequences.
        let subject = Self.printable(certificate.subject)
        line("subject", subject.isEmpty ? "(empty)" : subject)
        line("issuer", Self.printable(certificate.issuer))
        let uris = certificate.uris
        if uris.isEmpty { line("spiffe id", "(none)") }
        for uri in uris {
            do {
                _ = try SPIFFEID(parsing: uri)
                line("spiffe id", uri)
            } catch {
                line("uri", "\(Self.printable(uri)) (not a SPIFFE ID: \(error))")
            }
        }
        let dns = certificate.dnsNames.map(Self.printable)
        line("dns names", dns.isEmpty ? "(none)" : dns.joined(separator: ", "))
        guard let facts = certificate.facts else {
            line("extensions", "cannot be decoded")
            return
        }
        line("not before", certificate.notBeforeText + (facts.notBefore > now ? " (not yet valid)" : ""))
        line("not after", certificate.notAfterText + " (" + Self.remaining(facts.notAfter - now) + ")")
        line("ca", facts.isCA ? "yes" + (facts.selfSigned ? " (self-signed root)" : "") : "no")
        line("key", facts.key)
        line("key usage", facts.keyUsage.map { $0.names.joined(separator: ", ") } ?? "(no extension)")
        line("extended key usage", facts.extendedKeyUsage.map { $0.names.joined(separator: ", ") } ?? "(no extension)")
        line("serial", certificate.serialNumber)
        line("sha256", certificate.sha256Fingerprint)
    }

    /// `text` with every control or format character (C0, DEL, C1 such as CSI, bidirectional overrides, line
    /// separators) written as `\u{XX}`, so that what a certificate holds cannot drive the terminal or fake a line.
    static func printable(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator, .privateUse, .surrogate, .unassigned:
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// "valid for 23 more hours", "valid for 87599 more hours (3649 days)", "expired 2 hours ago".
    static func remaining(_ seconds: Int) -> String {
        let s = abs(seconds)
        let (n, unit) = s >= 7200 ? (s / 3600, "hours") : s >= 120 ? (s / 60, "minutes") : (s, "seconds")
        let days = s >= 172_800 ? " (\(s / 86_400) days)" : ""
        return seconds > 0 ? "valid for \(n) more \(unit)\(days)" : "expired \(n) \(unit)\(days) ago"
    }
}

extension String {
    fileprivate func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}
