// Private keys of the mesh CA and its workloads: made by OpenSSL (tern_key_generate), kept as EVP_PKEY, written and
// read as PEM.
import CTernOpenSSL
import TernTLS

/// The kinds of key `tern cert` makes. Istio's workload keys are RSA 2048 unless ECDSA is asked for; Tern's default
/// is ECDSA P-256 (faster to make, sign and verify, and what Istio's `ECC_SIGNATURE_ALGORITHM=ECDSA` gives).
public enum KeyType: String, CaseIterable, Sendable {
    case ecP256 = "ec-p256"
    case rsa2048 = "rsa-2048"
    var code: Int32 { self == .ecP256 ? Int32(TERN_KEY_EC_P256) : Int32(TERN_KEY_RSA_2048) }
}

/// A private key (an OpenSSL EVP_PKEY, freed with this object).
@safe public final class PrivateKey: @unchecked Sendable {
    // Unchecked Sendable: the key is never changed after it is made or read.
    private let pointer: OpaquePointer

    private init(owning key: OpaquePointer) { unsafe pointer = key }
    deinit { unsafe tern_EVP_PKEY_free(pointer) }

    /// The OpenSSL EVP_PKEY, alive as long as this object.
    @unsafe var evp: OpaquePointer { unsafe pointer }

    /// A new key from OpenSSL's random generator.
    public static func generate(_ type: KeyType) throws(CAError) -> PrivateKey {
        try loadOpenSSL()
        guard let key = unsafe tern_key_generate(type.code) else {
            throw CAError("cannot make a \(type.rawValue) key: \(openSSLErrors())")
        }
        return unsafe PrivateKey(owning: key)
    }

    /// The first private key of PEM text (PKCS #8, or traditional RSA or EC; not encrypted).
    public convenience init(pem: [UInt8]) throws(CAError) {
        try PrivateKey.loadOpenSSL()
        // SAFETY: the bytes live for the call; OpenSSL copies what it keeps.
        guard let key = unsafe pem.withUnsafeBufferPointer({ unsafe tern_key_read_pem($0.baseAddress, $0.count) }) else {
            throw CAError("not a readable PEM private key (an unencrypted PKCS #8, RSA or EC key): \(openSSLErrors())")
        }
        unsafe self.init(owning: key)
    }

    /// PEM text, PKCS #8 unencrypted ("-----BEGIN PRIVATE KEY-----").
    public var pem: [UInt8] { unsafe OpenSSLText.read { unsafe tern_key_pem(pointer, $0, $1) } }

    /// Whether this is the private half of `certificate`'s public key.
    public func matches(_ certificate: X509Certificate) -> Bool {
        let ok = unsafe tern_X509_check_private_key(certificate.x509, pointer) == 1
        tern_ERR_clear_error()
        return withExtendedLifetime(certificate) { ok }
    }

    static func loadOpenSSL() throws(CAError) {
        do {
            try TLSContext.loadOpenSSL()
        } catch {
            throw CAError(error.description)
        }
    }
}
