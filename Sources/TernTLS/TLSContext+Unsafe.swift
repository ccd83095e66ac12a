// TLS contexts: one SSL_CTX per TLS policy (a listener's certificate and client CA, an upstream's origination
// settings), built off the reactors (at start and on reload) and shared by all of them. SSL_new from a shared
// context is thread-safe; nothing on a context changes once it is built.
import CTernOpenSSL
import Glibc
import Synchronization

/// Session-ticket keys of the whole process (`tern_ticket_keys`): every server context issues and accepts
/// tickets with them, so a ticket from any reactor, or from before a certificate reload, resumes. Rotated every
/// `rotationInterval`; the previous two keys are still accepted (a ticket lives at most three intervals).
@safe public final class TicketKeys: @unchecked Sendable {
    public static let shared = TicketKeys()
    public static let rotationNanos: UInt64 = 3600 * 1_000_000_000
    let keys: UnsafeMutablePointer<tern_ticket_keys>
    private let lastRotation = Atomic<UInt64>(0)

    private init() {
        // SAFETY: one allocation for the life of the process (a static); written only by the C rotation.
        unsafe keys = UnsafeMutablePointer<tern_ticket_keys>.allocate(capacity: 1)
        unsafe keys.initialize(to: tern_ticket_keys())
        // Made by the first server context, which loaded OpenSSL; without it (never, in practice) no key is made
        // and the ticket callback refuses to issue tickets (its cipher is nil).
        guard (try? TLSContext.loadOpenSSL()) != nil else { return }
        unsafe keys.pointee.cipher = tern_EVP_CIPHER_fetch(nil, "AES-256-CBC", nil)
        // Three rotations: three valid keys from the start.
        for _ in 0..<3 { _ = unsafe tern_ticket_keys_rotate(keys) }
    }

    /// The generation of the current key (tests).
    public var generation: UInt { unsafe keys.pointee.generation }

    /// Rotates when `rotationNanos` passed since the last rotation (the first call only notes the time). Any
    /// thread may call it; one wins a rotation.
    public func rotateIfDue(now: UInt64) {
        let last = lastRotation.load(ordering: .relaxed)
        if last == 0 {
            _ = lastRotation.compareExchange(expected: 0, desired: now, ordering: .relaxed)
            return
        }
        guard now &- last >= Self.rotationNanos else { return }
        guard lastRotation.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged else { return }
        rotate()
    }

    /// Rotates now (tests).
    public func rotate() {
        guard unsafe keys.pointee.cipher != nil else { return }
        _ = unsafe tern_ticket_keys_rotate(keys)
    }
}

/// OpenSSL's error queue as text (and emptied). Public for TernControl's certificate authority.
public func openSSLErrors() -> String {
    var parts: [String] = []
    var buffer = [CChar](repeating: 0, count: 256)
    while true {
        let e = tern_ERR_get_error()
        if e == 0 { break }
        unsafe buffer.withUnsafeMutableBufferPointer { unsafe tern_ERR_error_string_n(e, $0.baseAddress, $0.count) }
        parts.append(unsafe buffer.withUnsafeBufferPointer { unsafe String(cString: $0.baseAddress!) })
    }
    return parts.isEmpty ? "unknown OpenSSL error" : parts.joined(separator: "; ")
}

/// Protocol versions Tern speaks (TLS 1.2 is the minimum, as Istio's).
public enum TLSVersion: Sendable, Hashable {
    case tls12, tls13
    var code: Int32 { self == .tls12 ? TLS1_2_VERSION : TLS1_3_VERSION }
}

/// How a client context checks the server it connects to.
public struct TLSClientSettings: Sendable, Hashable {
    /// CA bundle (PEM) to verify the server against; nil: the system's roots (/etc/ssl/certs), as Istio's SIMPLE
    /// mode without caCertificates.
    public var caFile: String? = nil
    /// Client certificate chain and key (PEM) for mutual TLS.
    public var certificateFile: String? = nil
    public var keyFile: String? = nil
    /// Do not verify the server's certificate at all (DestinationRule insecureSkipVerify).
    public var insecureSkipVerify = false
    /// ALPN protocols offered, in order of preference.
    public var alpn: [String] = []
    /// The newest protocol version offered (TLS 1.2 for peers or tests that need it).
    public var maximumVersion = TLSVersion.tls13
    public init() {}
}

/// An immutable SSL_CTX with what its callbacks read (ALPN list), shared by every reactor.
@safe public final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer
    public let isServer: Bool
    /// Whether peers must present a certificate that verifies (server: `--tls-client-ca`).
    public let verifiesPeer: Bool
    private let alpnBytes: UnsafeMutablePointer<UInt8>?
    private let alpnList: UnsafeMutablePointer<tern_alpn_list>?
    /// The first certificate's notAfter, in seconds since the epoch (nil: unknown).
    public let certificateNotAfter: Int?

    private init(ctx: OpaquePointer, isServer: Bool, verifiesPeer: Bool, alpn: [String], notAfter: Int?) {
        unsafe self.ctx = ctx
        self.isServer = isServer
        self.verifiesPeer = verifiesPeer
        certificateNotAfter = notAfter
        let wire = alpn.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
        if wire.isEmpty {
            unsafe alpnBytes = nil
            unsafe alpnList = nil
        } else {
            // SAFETY: owned until deinit, which runs only once no session of this context is left (sessions keep
            // a reference to the context).
            let bytes = UnsafeMutablePointer<UInt8>.allocate(capacity: wire.count)
            unsafe bytes.initialize(from: wire, count: wire.count)
            let list = UnsafeMutablePointer<tern_alpn_list>.allocate(capacity: 1)
            unsafe list.initialize(to: tern_alpn_list(protocols: bytes, length: UInt32(wire.count)))
            unsafe alpnBytes = bytes
            unsafe alpnList = list
            if isServer {
                unsafe tern_ctx_set_alpn_select(ctx, list)
            } else {
                _ = unsafe tern_SSL_CTX_set_alpn_protos(ctx, bytes, UInt32(wire.count))
            }
        }
    }

    deinit {
        unsafe tern_SSL_CTX_free(ctx)
        unsafe alpnBytes?.deallocate()
        unsafe alpnList?.deallocate()
    }

    /// Istio's default cipher suites for TLS 1.2 (ECDHE with AES-GCM and ChaCha20-Poly1305); TLS 1.3 uses
    /// OpenSSL's (AES-GCM and ChaCha20-Poly1305).
    static let cipherList = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

    /// Loads OpenSSL (once per process: a sidecar without TLS never does). Public for TernControl.
    public static func loadOpenSSL() throws(TLSSetupError) {
        var error = [CChar](repeating: 0, count: 256)
        let ok = unsafe error.withUnsafeMutableBufferPointer { unsafe tern_openssl_load($0.baseAddress, $0.count) }
        guard ok == 1 else { throw TLSSetupError(unsafe error.withUnsafeBufferPointer { unsafe String(cString: $0.baseAddress!) }) }
    }

    private static func base(server: Bool) throws(TLSSetupError) -> OpaquePointer {
        try loadOpenSSL()
        tern_ERR_clear_error()
        guard let ctx = unsafe tern_SSL_CTX_new(server ? tern_TLS_server_method() : tern_TLS_client_method()) else {
            throw TLSSetupError("cannot create a TLS context: \(openSSLErrors())")
        }
        _ = unsafe tern_ctx_set_min_version(ctx, TLS1_2_VERSION)
        _ = unsafe tern_SSL_CTX_set_cipher_list(ctx, cipherList)
        _ = unsafe tern_ctx_set_groups(ctx, "X25519:P-256:P-384")
        // Records are not kept in per-connection buffers while idle (an idle TLS connection holds no record
        // buffer); a retried write may come from another address (the caller's staging moves between buffers).
        _ = unsafe tern_ctx_set_mode(ctx, Int(SSL_MODE_RELEASE_BUFFERS) | Int(SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER))
        unsafe tern_ctx_set_hardening_options(ctx)
        return unsafe ctx
    }

    private static func loadChain(_ ctx: OpaquePointer, certificate: String, key: String) throws(TLSSetupError) -> Int? {
        guard unsafe tern_SSL_CTX_use_certificate_chain_file(ctx, certificate) == 1 else {
            throw TLSSetupError("\(certificate): not a usable PEM certificate chain: \(openSSLErrors())")
        }
        guard unsafe tern_SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1 else {
            throw TLSSetupError("\(key): not a usable PEM private key: \(openSSLErrors())")
        }
        guard unsafe tern_SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSSetupError("\(key): the private key does not match the certificate in \(certificate): \(openSSLErrors())")
        }
        guard let cert = unsafe tern_SSL_CTX_get0_certificate(ctx) else { return nil }
        var seconds: Int? = nil
        if let notAfter = unsafe tern_X509_get0_notAfter(cert) {
            var tm = unsafe Glibc.tm()
            if unsafe tern_ASN1_TIME_to_tm(notAfter, &tm) == 1 { seconds = unsafe timegm(&tm) }
        }
        return seconds
    }

    /// A server context: the certificate chain (leaf first) and its key, RSA or ECDSA; with `clientCA`, a client
    /// certificate that verifies against it is required. Tickets use the process's shared keys; OpenSSL's own
    /// session cache stays off (its lock is shared by every reactor).
    public static func server(certificate: String, key: String, clientCA: String? = nil, alpn: [String] = ["http/1.1"],
                              maximumVersion: TLSVersion = .tls13) throws(TLSSetupError) -> TLSContext {
        let ctx = try unsafe base(server: true)
        do throws(TLSSetupError) {
            _ = unsafe tern_ctx_set_max_version(ctx, maximumVersion.code)
            let notAfter = try unsafe loadChain(ctx, certificate: certificate, key: key)
            if let clientCA {
                guard unsafe tern_SSL_CTX_load_verify_locations(ctx, clientCA, nil) == 1 else {
                    throw TLSSetupError("\(clientCA): not a usable PEM CA bundle: \(openSSLErrors())")
                }
                if let names = unsafe tern_SSL_load_client_CA_file(clientCA) { unsafe tern_SSL_CTX_set_client_CA_list(ctx, names) }
                unsafe tern_SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
                // Resumption with client verification needs a session id context (else OpenSSL fails the
                // handshake of every client that offers a ticket); derived from the CA, so a ticket issued under
                // one CA does not resume under another.
                var context = Array("tern-mtls:".utf8) + Self.digest(ofFile: clientCA)
                context = Array(context.prefix(32))
                _ = unsafe tern_SSL_CTX_set_session_id_context(ctx, context, UInt32(context.count))
            }
            _ = unsafe tern_ctx_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_OFF))
            _ = unsafe tern_SSL_CTX_set_num_tickets(ctx, 1)
            unsafe tern_ctx_use_ticket_keys(ctx, TicketKeys.shared.keys)
            return unsafe TLSContext(ctx: ctx, isServer: true, verifiesPeer: clientCA != nil, alpn: alpn, notAfter: notAfter)
        } catch {
            unsafe tern_SSL_CTX_free(ctx)
            throw error
        }
    }

    /// 16 bytes identifying a file's contents (FNV-1a over it, twice seeded), for session id contexts.
    static func digest(ofFile path: String) -> [UInt8] {
        var a: UInt64 = 0xcbf2_9ce4_8422_2325, b: UInt64 = 0x8422_2325_cbf2_9ce4
        if let f = unsafe fopen(path, "rb") {
            defer { unsafe fclose(f) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = unsafe buffer.withUnsafeMutableBytes { unsafe fread($0.baseAddress, 1, $0.count, f) }
                if n == 0 { break }
                for i in 0..<n {
                    a = (a ^ UInt64(buffer[i])) &* 0x100_0000_01b3
                    b = (b ^ UInt64(buffer[i])) &* 0x100_0000_01b3 &+ 1
                }
            }
        }
        return (0..<16).map { i in UInt8(truncatingIfNeeded: (i < 8 ? a : b) >> UInt64(56 - 8 * (i % 8))) }
    }

    /// A client context (origination). Server names are checked per session (`TLSSessions.open`).
    public static func client(_ settings: TLSClientSettings) throws(TLSSetupError) -> TLSContext {
        let ctx = try unsafe base(server: false)
        do throws(TLSSetupError) {
            _ = unsafe tern_ctx_set_max_version(ctx, settings.maximumVersion.code)
            var notAfter: Int? = nil
            if let cert = settings.certificateFile, let key = settings.keyFile {
                notAfter = try unsafe loadChain(ctx, certificate: cert, key: key)
            }
            if !settings.insecureSkipVerify {
                if let ca = settings.caFile {
                    guard unsafe tern_SSL_CTX_load_verify_locations(ctx, ca, nil) == 1 else {
                        throw TLSSetupError("\(ca): not a usable PEM CA bundle: \(openSSLErrors())")
                    }
                } else {
                    guard unsafe tern_SSL_CTX_load_verify_locations(ctx, nil, "/etc/ssl/certs") == 1 else {
                        throw TLSSetupError("/etc/ssl/certs: the system's CA certificates cannot be read: \(openSSLErrors())")
                    }
                }
                unsafe tern_SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
            }
            _ = unsafe tern_ctx_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE))
            return unsafe TLSContext(ctx: ctx, isServer: false, verifiesPeer: !settings.insecureSkipVerify, alpn: settings.alpn, notAfter: notAfter)
        } catch {
            unsafe tern_SSL_CTX_free(ctx)
            throw error
        }
    }
}
