// X.509 certificates outside a handshake: read from PEM, described (`tern cert inspect`), verified against a root
// (the X.509-SVID rule, `X509SVID`), and signed by TernControl's certificate authority, which reaches the OpenSSL
// object through `x509`.
import CTernOpenSSL
import Glibc

/// One certificate (an OpenSSL X509, reference-counted by OpenSSL, freed with this object).
@safe public final class X509Certificate: @unchecked Sendable {
    // Unchecked Sendable: nothing here writes to the X509 after it is made or read; OpenSSL's lazily computed
    // extension cache is filled under its own lock.
    private let pointer: OpaquePointer

    /// Takes over one reference to `x509`.
    @unsafe public init(owning x509: OpaquePointer) { unsafe pointer = x509 }

    /// Takes a reference of its own to `x509` (a handshake's peer certificate, which its session owns).
    @unsafe public init(retaining x509: OpaquePointer) {
        _ = unsafe tern_X509_up_ref(x509)
        unsafe pointer = x509
    }

    deinit { unsafe tern_X509_free(pointer) }

    /// The OpenSSL X509, alive as long as this object.
    @unsafe public var x509: OpaquePointer { unsafe pointer }

    /// Every certificate of PEM text, in order (a chain file: leaf first). Throws when there is none, or a PEM
    /// block is not a readable certificate.
    public static func chain(pem: [UInt8]) throws(TLSSetupError) -> [X509Certificate] {
        try TLSContext.loadOpenSSL()
        var capacity = 64
        while true {
            var found = unsafe [OpaquePointer?](repeating: nil, count: capacity)
            // SAFETY: `found` has `capacity` slots and lives for the call; the C side writes at most that many.
            let n = unsafe pem.withUnsafeBufferPointer { p in
                unsafe found.withUnsafeMutableBufferPointer { out in
                    unsafe tern_cert_read_pem(p.baseAddress, p.count, out.baseAddress, capacity)
                }
            }
            guard n >= 0 else { throw TLSSetupError("not a readable PEM certificate: \(openSSLErrors())") }
            guard n > 0 else { throw TLSSetupError("holds no PEM certificate") }
            let certificates = unsafe found[0..<n].map { unsafe X509Certificate(owning: $0!) }
            // A full array may not be all of them: read again with room for twice as many (these are freed).
            if n < capacity { return certificates }
            capacity *= 2
        }
    }

    /// PEM text ("-----BEGIN CERTIFICATE-----…").
    public var pem: [UInt8] { unsafe Self.text { unsafe tern_cert_pem(pointer, $0, $1) } }

    /// The subject as one line ("O=cluster.local, CN=Intermediate CA"); "" when empty (Istio's workload
    /// certificates have none).
    public var subject: String { String(decoding: unsafe Self.text { unsafe tern_cert_name_text(pointer, 0, $0, $1) }, as: UTF8.self) }
    public var issuer: String { String(decoding: unsafe Self.text { unsafe tern_cert_name_text(pointer, 1, $0, $1) }, as: UTF8.self) }

    /// The subject's first organization (O), if any: where Istio's CA certificates carry the trust domain.
    public var organization: String? {
        var buffer = [UInt8](repeating: 0, count: 256)
        // SAFETY: the C side copies at most buffer.count bytes into the buffer, alive for the call.
        let n = unsafe buffer.withUnsafeMutableBufferPointer { unsafe tern_cert_subject_entry(pointer, NID_organizationName, $0.baseAddress, $0.count) }
        guard n >= 0, n <= buffer.count else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }

    /// URI subjectAltNames (SPIFFE IDs), in order. One longer than `maximumNameLength` bytes is cut there (and
    /// so no longer a valid SPIFFE ID).
    public var uris: [String] { names(GEN_URI) }
    /// DNS subjectAltNames, in order.
    public var dnsNames: [String] { names(GEN_DNS) }

    /// Longest subjectAltName read whole: one byte more than a SPIFFE ID may have.
    static let maximumNameLength = SPIFFEID.maximumLength + 1

    private func names(_ type: Int32) -> [String] {
        // One decoding of the extension for all of them (records: a 4-byte big-endian length, then the bytes).
        let records = unsafe Self.text { unsafe tern_cert_sans(pointer, type, $0, $1) }
        var out: [String] = []
        var i = 0
        while i + 4 <= records.count {
            let n = records[i..<i + 4].reduce(0) { $0 << 8 | Int($1) }
            let start = i + 4
            guard n <= records.count - start else { break }
            out.append(String(decoding: records[start..<start + min(n, Self.maximumNameLength)], as: UTF8.self))
            i = start + n
        }
        return out
    }

    /// The URI subjectAltNames counted, and the one there is when there is exactly one (cut at
    /// `maximumNameLength` bytes): one pass over the extension, whatever a hostile certificate holds.
    public var soleURI: (count: Int, uri: String?) {
        var buffer = [UInt8](repeating: 0, count: Self.maximumNameLength)
        var count: Int32 = 0
        // SAFETY: the C side copies at most buffer.count bytes into the buffer, alive for the call.
        let n = unsafe buffer.withUnsafeMutableBufferPointer { unsafe tern_cert_sole_uri(pointer, $0.baseAddress, $0.count, &count) }
        guard n >= 0 else { return (Int(count), nil) }
        return (Int(count), String(decoding: buffer[0..<min(n, buffer.count)], as: UTF8.self))
    }

    /// notBefore and notAfter as ISO 8601 in UTC ("2026-12-07 20:28:48Z").
    public var notBeforeText: String { String(decoding: unsafe Self.text { unsafe tern_cert_time_text(pointer, 0, $0, $1) }, as: UTF8.self) }
    public var notAfterText: String { String(decoding: unsafe Self.text { unsafe tern_cert_time_text(pointer, 1, $0, $1) }, as: UTF8.self) }

    /// The serial number in hexadecimal.
    public var serialNumber: String { String(decoding: unsafe Self.text { unsafe tern_cert_serial_hex(pointer, $0, $1) }, as: UTF8.self) }

    /// SHA-256 of the DER certificate, as "AB:CD:…" (what `openssl x509 -fingerprint -sha256` prints).
    public var sha256Fingerprint: String { hex(sha256, digits: "0123456789ABCDEF", separator: ":") }

    /// SHA-256 of the DER certificate in lower-case hexadecimal without separators (the `Hash` of Envoy's
    /// X-Forwarded-Client-Cert).
    public var sha256Hex: String { hex(sha256, digits: "0123456789abcdef", separator: "") }

    /// SHA-256 of the DER certificate (empty when OpenSSL cannot compute it).
    public var sha256: [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        // SAFETY: X509_digest writes at most EVP_MAX_MD_SIZE (64) bytes; SHA-256 writes 32, the buffer's size.
        let ok = unsafe digest.withUnsafeMutableBufferPointer { unsafe tern_X509_digest(pointer, tern_EVP_sha256(), $0.baseAddress, &length) }
        guard ok == 1 else { return [] }
        return Array(digest.prefix(Int(length)))
    }

    private func hex(_ bytes: [UInt8], digits: String, separator: String) -> String {
        let d = Array(digits.utf8)
        return bytes.map { String(decoding: [d[Int($0 >> 4)], d[Int($0 & 15)]], as: UTF8.self) }.joined(separator: separator)
    }

    /// What the certificate says of itself; nil when its dates or extensions cannot be decoded.
    public var facts: CertificateFacts? {
        var f = tern_cert_facts()
        guard unsafe tern_cert_get_facts(pointer, &f) == 1 else { return nil }
        let group = unsafe withUnsafeBytes(of: f.key_group) { raw in
            unsafe String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let key: String
        switch f.key_kind {
        case 1: key = "EC " + (group == "prime256v1" ? "P-256" : group == "secp384r1" ? "P-384" : group)
        case 2: key = "RSA \(f.key_bits)"
        default: key = "other (\(f.key_bits) bits)"
        }
        return CertificateFacts(
            isCA: f.is_ca != 0, hasBasicConstraints: f.has_basic_constraints != 0, selfSigned: f.self_signed != 0,
            keyUsage: f.has_key_usage != 0 ? KeyUsage(rawValue: f.key_usage) : nil,
            extendedKeyUsage: f.has_extended_key_usage != 0 ? ExtendedKeyUsage(rawValue: f.extended_key_usage) : nil,
            notBefore: Int(f.not_before), notAfter: Int(f.not_after), key: key)
    }

    /// Verifies `leaf` against a store holding exactly `roots`, through `intermediates` (the rest of a chain), with
    /// OpenSSL's strict X.509 checks (X509_V_FLAG_X509_STRICT: an empty subject needs a critical subjectAltName, a
    /// CA needs key usage and key identifiers, …) and the current time. OpenSSL does not check a self-signed
    /// root's own signature (it is trusted by being in `roots`) unless `checkRootSignature` is set.
    public static func verify(_ leaf: X509Certificate, intermediates: [X509Certificate] = [], roots: [X509Certificate],
                              purpose: VerifyPurpose = .any, checkRootSignature: Bool = false) -> VerifyResult {
        run(leaf, intermediates: intermediates, roots: roots, purpose: purpose, checkRootSignature: checkRootSignature,
            wantChain: false).result
    }

    /// As `verify`, with the chain verification built when it verifies: `leaf`, the intermediates it went through
    /// and the one root it ended at (not every root of `roots`, nor intermediates it did not need).
    public static func verifiedChain(_ leaf: X509Certificate, intermediates: [X509Certificate] = [], roots: [X509Certificate],
                                     purpose: VerifyPurpose = .any, checkRootSignature: Bool = false) -> (result: VerifyResult, chain: [X509Certificate]) {
        run(leaf, intermediates: intermediates, roots: roots, purpose: purpose, checkRootSignature: checkRootSignature,
            wantChain: true)
    }

    private static func run(_ leaf: X509Certificate, intermediates: [X509Certificate], roots: [X509Certificate],
                            purpose: VerifyPurpose, checkRootSignature: Bool, wantChain: Bool) -> (result: VerifyResult, chain: [X509Certificate]) {
        let untrusted: [OpaquePointer?] = unsafe intermediates.map { unsafe $0.pointer }
        let anchors: [OpaquePointer?] = unsafe roots.map { unsafe $0.pointer }
        let flags = checkRootSignature ? UInt(X509_V_FLAG_CHECK_SS_SIGNATURE) : 0
        var depth: Int32 = 0
        var built: OpaquePointer? = nil
        // SAFETY: both arrays live for the call; the certificates they point at are kept alive by `intermediates`
        // and `roots`; OpenSSL takes references of its own for its store and copies nothing it keeps.
        let code = unsafe untrusted.withUnsafeBufferPointer { u in
            unsafe anchors.withUnsafeBufferPointer { r in
                guard wantChain else {
                    return unsafe tern_cert_verify(leaf.pointer, u.baseAddress, u.count, r.baseAddress, r.count, purpose.code,
                                                   flags, &depth, nil)
                }
                return unsafe tern_cert_verify(leaf.pointer, u.baseAddress, u.count, r.baseAddress, r.count, purpose.code,
                                               flags, &depth, &built)
            }
        }
        withExtendedLifetime((leaf, intermediates, roots)) {}
        var chain: [X509Certificate] = []
        if let stack = unsafe built {
            // SAFETY: the stack holds one reference of ours to each certificate (X509_STORE_CTX_get1_chain), each
            // handed to an X509Certificate; the stack itself is freed here, once, after the last read.
            let count = unsafe tern_OPENSSL_sk_num(stack)
            for i in 0..<count {
                if let x509 = unsafe tern_OPENSSL_sk_value(stack, i) { chain.append(unsafe X509Certificate(owning: OpaquePointer(x509))) }
            }
            unsafe tern_OPENSSL_sk_free(stack)
        }
        if code == X509_V_OK { return (.verified, chain) }
        let text = unsafe tern_X509_verify_cert_error_string(Int(code)).map { unsafe String(cString: $0) } ?? "error \(code)"
        return (.failed(code: Int(code), reason: text, depth: Int(depth)), [])
    }

    @unsafe private static func text(_ write: (UnsafeMutablePointer<UInt8>?, Int) -> Int) -> [UInt8] {
        unsafe OpenSSLText.read(write)
    }
}

/// Text the shim's functions write as tern_cert_pem does (PEM, names, serial numbers): their length returned, the
/// bytes copied only when they fit (so a caller with too small a buffer calls again with one large enough).
public enum OpenSSLText {
    /// What `write(buffer, capacity)` writes; empty when it fails (-1).
    @unsafe public static func read(_ write: (UnsafeMutablePointer<UInt8>?, Int) -> Int) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            // SAFETY: the C side copies at most buffer.count bytes into the buffer, alive for the call.
            let n = unsafe buffer.withUnsafeMutableBufferPointer { unsafe write($0.baseAddress, $0.count) }
            if n < 0 { return [] }
            if n <= buffer.count { return Array(buffer[0..<n]) }
            buffer = [UInt8](repeating: 0, count: n)
        }
    }
}

/// What a certificate says of itself (`X509Certificate.facts`).
public struct CertificateFacts: Sendable, Equatable {
    /// basicConstraints CA:TRUE.
    public var isCA: Bool
    public var hasBasicConstraints: Bool
    /// Issued by itself: subject and issuer the same, and the key identifiers (when present) match, as OpenSSL's
    /// EXFLAG_SS says; its signature is not checked (`X509Certificate.verify(checkRootSignature:)` does that).
    public var selfSigned: Bool
    /// nil: no keyUsage extension (any use allowed).
    public var keyUsage: KeyUsage?
    /// nil: no extendedKeyUsage extension.
    public var extendedKeyUsage: ExtendedKeyUsage?
    /// Seconds since the epoch.
    public var notBefore: Int
    public var notAfter: Int
    /// "EC P-256", "RSA 2048".
    public var key: String
}

/// The keyUsage bits (RFC 5280 §4.2.1.3), as OpenSSL's KU_* values.
public struct KeyUsage: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let digitalSignature = KeyUsage(rawValue: UInt32(KU_DIGITAL_SIGNATURE))
    public static let nonRepudiation = KeyUsage(rawValue: UInt32(KU_NON_REPUDIATION))
    public static let keyEncipherment = KeyUsage(rawValue: UInt32(KU_KEY_ENCIPHERMENT))
    public static let dataEncipherment = KeyUsage(rawValue: UInt32(KU_DATA_ENCIPHERMENT))
    public static let keyAgreement = KeyUsage(rawValue: UInt32(KU_KEY_AGREEMENT))
    public static let keyCertSign = KeyUsage(rawValue: UInt32(KU_KEY_CERT_SIGN))
    public static let cRLSign = KeyUsage(rawValue: UInt32(KU_CRL_SIGN))

    /// The names OpenSSL's configuration uses ("digitalSignature, keyEncipherment").
    public var names: [String] {
        let all: [(KeyUsage, String)] = [
            (.digitalSignature, "digitalSignature"), (.nonRepudiation, "nonRepudiation"),
            (.keyEncipherment, "keyEncipherment"), (.dataEncipherment, "dataEncipherment"),
            (.keyAgreement, "keyAgreement"), (.keyCertSign, "keyCertSign"), (.cRLSign, "cRLSign"),
        ]
        return all.filter { contains($0.0) }.map(\.1)
    }
}

/// The extendedKeyUsage purposes Tern cares about, as OpenSSL's XKU_* values.
public struct ExtendedKeyUsage: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let serverAuth = ExtendedKeyUsage(rawValue: UInt32(XKU_SSL_SERVER))
    public static let clientAuth = ExtendedKeyUsage(rawValue: UInt32(XKU_SSL_CLIENT))

    public var names: [String] {
        var out: [String] = []
        if contains(.serverAuth) { out.append("serverAuth") }
        if contains(.clientAuth) { out.append("clientAuth") }
        if !subtracting([.serverAuth, .clientAuth]).isEmpty { out.append("others") }
        return out
    }
}

/// What a verified chain must be good for (OpenSSL's X509_PURPOSE_*).
public enum VerifyPurpose: Sendable {
    /// No purpose check beyond the chain's own rules.
    case any
    /// A client certificate (the peer of a server side): extendedKeyUsage, if present, has clientAuth.
    case tlsClient
    /// A server certificate.
    case tlsServer
    var code: Int32 {
        switch self {
        case .any: return 0
        case .tlsClient: return X509_PURPOSE_SSL_CLIENT
        case .tlsServer: return X509_PURPOSE_SSL_SERVER
        }
    }
}

/// How a verification went: OpenSSL's X509_V_ERR_* code and its text on failure, with the depth of the
/// certificate it concerns (0: the leaf).
public enum VerifyResult: Sendable, Equatable {
    case verified
    case failed(code: Int, reason: String, depth: Int)
}
