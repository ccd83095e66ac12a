// A reactor's TLS sessions, one per connection slot: an SSL object and the `tern_tls_io` its BIO reads from and
// writes to. The caller points the input at ciphertext it received (a pooled receive buffer) and the output at
// memory to write records into (a pooled buffer it will send), then calls `handshake`, `read`, `write` or
// `shutdown`; nothing here makes a system call or keeps a byte of its own beyond what OpenSSL holds.
import CTernOpenSSL
import Glibc

@safe public final class TLSSessions {
    public let capacity: Int
    private let ssl: UnsafeMutablePointer<OpaquePointer?>
    private let io: UnsafeMutablePointer<tern_tls_io>
    /// Each open session's context (a retained `Unmanaged`, 0 when none), kept alive while the session lives (a
    /// reload may drop it meanwhile).
    private let contexts: UnsafeMutablePointer<UInt>

    /// Slots are calloc'd (all zero is a closed slot), so memory is committed only for slots used: a reactor
    /// sized for a million connections holds none for those it never has.
    public init(capacity: Int) {
        self.capacity = capacity
        // SAFETY: owned until deinit; every index is checked against capacity; zero bytes are valid values of
        // all three (nil, an empty tern_tls_io, no context).
        unsafe ssl = calloc(capacity, MemoryLayout<OpaquePointer?>.stride)!.bindMemory(to: OpaquePointer?.self, capacity: capacity)
        unsafe io = calloc(capacity, MemoryLayout<tern_tls_io>.stride)!.bindMemory(to: tern_tls_io.self, capacity: capacity)
        unsafe contexts = calloc(capacity, MemoryLayout<UInt>.stride)!.bindMemory(to: UInt.self, capacity: capacity)
    }

    deinit {
        for i in 0..<capacity { close(i) }
        unsafe free(ssl)
        unsafe free(io)
        unsafe free(contexts)
    }

    @inline(__always)
    private func check(_ i: Int) { precondition(i >= 0 && i < capacity, "TLS session index out of range") }

    private func session(_ i: Int) -> OpaquePointer {
        check(i)
        guard let s = unsafe ssl[i] else { preconditionFailure("no TLS session open in slot \(i)") }
        return unsafe s
    }

    public func isOpen(_ i: Int) -> Bool {
        check(i)
        return unsafe ssl[i] != nil
    }

    /// Opens a session in slot `i`: a server session, or a client one that sends `serverName` as SNI and, with
    /// `verifyName`, requires the server's certificate to name it (a DNS subjectAltName, or the subject's CN for
    /// old certificates, as OpenSSL's host check does). False when OpenSSL is out of memory.
    public func open(_ i: Int, _ context: TLSContext, serverName: String? = nil, verifyName: String? = nil, resume: TLSResumption? = nil) -> Bool {
        check(i)
        precondition(unsafe ssl[i] == nil, "TLS session slot \(i) already open")
        tern_ERR_clear_error()
        guard let s = unsafe tern_SSL_new(context.ctx) else { return false }
        unsafe io[i] = tern_tls_io()
        guard let bio = unsafe tern_tls_bio_new(io + i) else {
            unsafe tern_SSL_free(s)
            return false
        }
        unsafe tern_SSL_set_bio(s, bio, bio)
        if context.isServer {
            unsafe tern_SSL_set_accept_state(s)
        } else {
            if let serverName, !serverName.isEmpty, !isIPAddress(serverName) { _ = unsafe tern_set_host_name(s, serverName) }
            if let verifyName, context.verifiesPeer {
                if isIPAddress(verifyName) {
                    _ = unsafe tern_X509_VERIFY_PARAM_set1_ip_asc(tern_SSL_get0_param(s), verifyName)
                } else {
                    _ = unsafe tern_SSL_set1_host(s, verifyName)
                }
            }
            // A copy each time: OpenSSL changes the session a connection resumes, and one TLSResumption serves
            // every connection until a newer session replaces it.
            if let resume, let session = unsafe resume.session, let copy = unsafe tern_SSL_SESSION_dup(session) {
                _ = unsafe tern_SSL_set_session(s, copy)
                unsafe tern_SSL_SESSION_free(copy)
            }
            unsafe tern_SSL_set_connect_state(s)
        }
        unsafe ssl[i] = s
        unsafe contexts[i] = UInt(bitPattern: Unmanaged.passRetained(context).toOpaque())
        return true
    }

    private func isIPAddress(_ s: String) -> Bool {
        var a = in6_addr()
        return unsafe (inet_pton(AF_INET, s, &a) == 1 || inet_pton(AF_INET6, s, &a) == 1)
    }

    /// Frees slot `i`'s session (no alert is sent: `shutdown` first for a clean close).
    public func close(_ i: Int) {
        check(i)
        if let s = unsafe ssl[i] {
            unsafe tern_SSL_free(s)
            unsafe ssl[i] = nil
            unsafe io[i] = tern_tls_io()
            if let p = unsafe UnsafeRawPointer(bitPattern: contexts[i]) { unsafe Unmanaged<TLSContext>.fromOpaque(p).release() }
            unsafe contexts[i] = 0
        }
    }

    // MARK: - Where bytes come from and go

    /// Ciphertext for the next calls to read from (the memory must stay valid until it is consumed or replaced).
    public func setInput(_ i: Int, _ bytes: UnsafeRawBufferPointer) {
        check(i)
        unsafe io[i].in = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
        unsafe io[i].in_len = bytes.count
        unsafe io[i].in_pos = 0
    }

    /// Input bytes not yet taken by OpenSSL.
    public func inputLeft(_ i: Int) -> Int {
        check(i)
        return unsafe io[i].in_len - io[i].in_pos
    }

    /// The peer's stream ended: reads past the input report the end instead of asking for more.
    public func setEndOfInput(_ i: Int) {
        check(i)
        unsafe io[i].eof = 1
    }

    /// Memory for the next records to be written into; `outputCount` says how much of it they filled.
    public func setOutput(_ i: Int, _ bytes: UnsafeMutableRawBufferPointer?) {
        check(i)
        unsafe io[i].out = bytes?.baseAddress?.assumingMemoryBound(to: UInt8.self)
        unsafe io[i].out_cap = bytes?.count ?? 0
        unsafe io[i].out_len = 0
    }

    public func outputCount(_ i: Int) -> Int {
        check(i)
        return unsafe io[i].out_len
    }

    /// Whether OpenSSL holds decrypted bytes or an unprocessed record (a read may return without new input).
    public func hasBuffered(_ i: Int) -> Bool { unsafe tern_SSL_has_pending(session(i)) == 1 }

    // MARK: - Operations

    public func handshake(_ i: Int) -> TLSStep {
        let s = unsafe session(i)
        tern_ERR_clear_error()
        let r = unsafe tern_SSL_do_handshake(s)
        if r == 1 { return .done(0) }
        let step = unsafe step(s, r)
        // The stream ended before the handshake did (without close_notify, OpenSSL calls that a clean end).
        return step == .closed ? .failed(TLSFailure(.closedEarly, "the peer closed the connection during the handshake")) : step
    }

    /// Decrypts into `buffer`: `.done(n)` with n > 0 bytes, `.closed` at close_notify.
    public func read(_ i: Int, into buffer: UnsafeMutableRawBufferPointer) -> TLSStep {
        let s = unsafe session(i)
        tern_ERR_clear_error()
        var n = 0
        let r = unsafe tern_SSL_read_ex(s, buffer.baseAddress, buffer.count, &n)
        return r == 1 ? .done(n) : unsafe step(s, 0)
    }

    /// Encrypts all of `bytes` (one record per 16 KiB) into the output, or asks for room (`.wantWrite`: call again
    /// with the same bytes once the output has room).
    public func write(_ i: Int, _ bytes: UnsafeRawBufferPointer) -> TLSStep {
        let s = unsafe session(i)
        tern_ERR_clear_error()
        var n = 0
        let r = unsafe tern_SSL_write_ex(s, bytes.baseAddress, bytes.count, &n)
        return r == 1 ? .done(n) : unsafe step(s, 0)
    }

    /// Writes close_notify into the output (`.done` once written; the peer's is not waited for).
    public func shutdown(_ i: Int) -> TLSStep {
        let s = unsafe session(i)
        tern_ERR_clear_error()
        let r = unsafe tern_SSL_shutdown(s)
        return r >= 0 ? .done(0) : unsafe step(s, r)
    }

    private func step(_ s: OpaquePointer, _ r: Int32) -> TLSStep {
        let e = unsafe tern_SSL_get_error(s, r)
        switch e {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        case SSL_ERROR_ZERO_RETURN: return .closed
        default: return .failed(unsafe failure(s, e))
        }
    }

    private func failure(_ s: OpaquePointer, _ code: Int32) -> TLSFailure {
        let packed = tern_ERR_peek_last_error()
        let verify = unsafe tern_SSL_get_verify_result(s)
        let reason = ERR_GET_REASON(packed)
        var detail = packed == 0 ? (code == SSL_ERROR_SYSCALL ? "unexpected end of stream" : "TLS error \(code)") : openSSLErrors()
        if verify != X509_V_OK, let text = unsafe tern_X509_verify_cert_error_string(verify) {
            detail += " (\(unsafe String(cString: text)))"
        }
        let kind: TLSFailureReason
        switch reason {
        case SSL_R_HTTP_REQUEST, SSL_R_HTTPS_PROXY_REQUEST: kind = .httpRequest
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE: kind = .noCertificate
        case SSL_R_CERTIFICATE_VERIFY_FAILED:
            switch Int32(verify) {
            case X509_V_ERR_CERT_HAS_EXPIRED: kind = .certificateExpired
            case X509_V_ERR_CERT_NOT_YET_VALID: kind = .certificateNotYetValid
            case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH: kind = .sanMismatch
            default: kind = .certificateVerifyFailed
            }
        case SSL_R_NO_SHARED_CIPHER, SSL_R_UNSUPPORTED_PROTOCOL, SSL_R_NO_PROTOCOLS_AVAILABLE,
             SSL_R_TLSV1_ALERT_PROTOCOL_VERSION, SSL_R_NO_SHARED_GROUPS:
            kind = .noSharedParameters
        case SSL_R_UNEXPECTED_EOF_WHILE_READING: kind = .closedEarly
        case 1000..<1200: kind = .peerAlert  // SSL_R_SSLV3_ALERT_* and SSL_R_TLSV1_ALERT_*: SSL_AD_REASON_OFFSET + alert
        case 0: kind = code == SSL_ERROR_SYSCALL ? .closedEarly : .internalError
        case Int32(ERR_R_MALLOC_FAILURE), Int32(ERR_R_INTERNAL_ERROR): kind = .internalError
        default: kind = .protocolError
        }
        return TLSFailure(kind, detail)
    }

    // MARK: - What the handshake settled

    /// "TLSv1.3", "TLSv1.2".
    public func version(_ i: Int) -> String { unsafe String(cString: tern_SSL_get_version(session(i))) }

    /// The cipher suite's standard (RFC) name, as Envoy logs it ("TLS_AES_128_GCM_SHA256").
    public func cipher(_ i: Int) -> String {
        guard let c = unsafe tern_SSL_get_current_cipher(session(i)), let name = unsafe tern_SSL_CIPHER_standard_name(c) else { return "" }
        return unsafe String(cString: name)
    }

    /// The server name the client asked for (SNI), if any.
    public func serverName(_ i: Int) -> String? {
        guard let p = unsafe tern_servername(session(i)) else { return nil }
        return unsafe String(cString: p)
    }

    /// The protocol ALPN settled on, if any.
    public func alpn(_ i: Int) -> String? {
        var p: UnsafePointer<UInt8>? = nil
        var n: UInt32 = 0
        unsafe tern_SSL_get0_alpn_selected(session(i), &p, &n)
        guard let p = unsafe p, n > 0 else { return nil }
        return unsafe String(decoding: UnsafeBufferPointer(start: p, count: Int(n)), as: UTF8.self)
    }

    /// Whether the handshake resumed an earlier session.
    public func resumed(_ i: Int) -> Bool { unsafe tern_SSL_session_reused(session(i)) == 1 }

    /// Whether the peer presented a certificate (verified, when the context verifies peers).
    public func peerPresentedCertificate(_ i: Int) -> Bool {
        guard let cert = unsafe tern_SSL_get0_peer_certificate(session(i)) else { return false }
        _ = unsafe cert
        return true
    }

    /// Whether the peer presented a certificate and it verified (mutual TLS).
    public func peerVerified(_ i: Int) -> Bool {
        let s = unsafe session(i)
        guard unsafe tern_SSL_get0_peer_certificate(s) != nil else { return false }
        return unsafe tern_SSL_get_verify_result(s) == X509_V_OK
    }

    /// Whether the peer's certificate has one of `names` as a subjectAltName: a URI when the name has a scheme
    /// ("spiffe://…"), a DNS name otherwise.
    public func peerMatches(_ i: Int, anyOf names: [String]) -> Bool {
        guard let cert = unsafe tern_SSL_get0_peer_certificate(session(i)) else { return false }
        for name in names {
            let isURI = name.contains("://")
            var copy = name
            let found = copy.withUTF8 { unsafe tern_cert_has_san(cert, isURI ? GEN_URI : GEN_DNS, $0.baseAddress, $0.count) == 1 }
            if found { return true }
        }
        return false
    }

    /// The peer's SPIFFE ID (`spiffe://…`): its certificate's only URI subjectAltName when that is a well-formed
    /// SPIFFE ID with a path; nil otherwise (none, several, or not one).
    public func peerSPIFFEID(_ i: Int) -> String? {
        guard let cert = unsafe tern_SSL_get0_peer_certificate(session(i)) else { return nil }
        var buffer = [UInt8](repeating: 0, count: SPIFFEID.maximumLength + 1)
        var count: Int32 = 0
        let n = unsafe buffer.withUnsafeMutableBufferPointer { unsafe tern_cert_sole_uri(cert, $0.baseAddress, $0.count, &count) }
        guard count == 1, n > 0, n <= SPIFFEID.maximumLength else { return nil }
        let text = String(decoding: buffer[0..<n], as: UTF8.self)
        guard let id = try? SPIFFEID(parsing: text), !id.path.isEmpty else { return nil }
        return id.description
    }

    /// The peer's leaf certificate (a reference of its own, kept past the session), if it presented one.
    public func peerCertificate(_ i: Int) -> X509Certificate? {
        guard let cert = unsafe tern_SSL_get0_peer_certificate(session(i)) else { return nil }
        return unsafe X509Certificate(retaining: cert)
    }

    /// The first URI subjectAltName of the peer's certificate (a SPIFFE ID), if any.
    public func peerURI(_ i: Int) -> String? {
        guard let cert = unsafe tern_SSL_get0_peer_certificate(session(i)) else { return nil }
        var buffer = [UInt8](repeating: 0, count: 2048)
        let n = unsafe buffer.withUnsafeMutableBufferPointer { unsafe tern_cert_first_uri(cert, $0.baseAddress, $0.count) }
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }

    /// The session to resume the next connection to the same upstream with (client side), after the handshake: a
    /// copy, since OpenSSL marks a connection's own session not resumable when the connection is freed without
    /// a close_notify both ways (as pooled upstream connections usually end).
    public func resumption(_ i: Int) -> TLSResumption? {
        guard let s = unsafe tern_SSL_get_session(session(i)), unsafe tern_SSL_SESSION_is_resumable(s) == 1,
              let copy = unsafe tern_SSL_SESSION_dup(s) else { return nil }
        return unsafe TLSResumption(owning: copy)
    }
}

/// A client session to resume (a TLS 1.3 ticket or TLS 1.2 session), held per upstream pool.
@safe public final class TLSResumption: @unchecked Sendable {
    let session: OpaquePointer?
    init(owning s: OpaquePointer) { unsafe session = s }
    deinit { if let s = unsafe session { unsafe tern_SSL_SESSION_free(s) } }
}
