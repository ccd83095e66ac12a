// TernTLS (ARCHITECTURE.md §2, layer 2): TLS sessions that never touch a socket. Ciphertext goes in through memory
// the caller points at (the reactor's pooled receive buffers), plaintext comes out into memory it names, and the
// records to send are written into memory it names (pooled buffers it then sends): OpenSSL 3 through a custom BIO
// over those buffers (docs/architecture.md, "TLS"). Contexts (`TLSContext`) are built off the reactors and shared
// by them; sessions (`TLSSessions`) belong to one reactor.

/// Why a handshake or a session failed, as a class for metrics and logs (`tern_tls_handshake_failures_total`).
public enum TLSFailureReason: String, Sendable, CaseIterable {
    /// Plaintext HTTP sent to a TLS port.
    case httpRequest = "http_request"
    /// A client certificate was required and none was sent.
    case noCertificate = "no_certificate"
    /// The peer's certificate chain did not verify (unknown CA, bad signature, not a CA where one is needed).
    case certificateVerifyFailed = "certificate_verify_failed"
    case certificateExpired = "certificate_expired"
    case certificateNotYetValid = "certificate_not_yet_valid"
    /// The certificate does not name the host or identity it must (subjectAltNames).
    case sanMismatch = "san_mismatch"
    /// The peer's certificate verified but is not an X.509-SVID of the mesh's trust domain (no single well-formed
    /// SPIFFE ID, another trust domain, a CA, no digitalSignature usage).
    case invalidSVID = "invalid_svid"
    /// Our own workload certificate (`--identity-dir`) expired with no replacement: it is never presented, so the
    /// connection is closed (inbound) or not made (outbound).
    case identityExpired = "identity_expired"
    /// No protocol version or cipher suite in common.
    case noSharedParameters = "no_shared_parameters"
    /// The peer sent a fatal alert.
    case peerAlert = "peer_alert"
    /// The peer closed the connection before the handshake finished.
    case closedEarly = "closed_early"
    /// Bytes that are not TLS, or TLS that breaks the protocol.
    case protocolError = "protocol_error"
    /// The handshake did not finish within `--tls-handshake-timeout`.
    case timeout = "timeout"
    /// Out of memory, or an error inside OpenSSL.
    case internalError = "internal"
}

/// A failed TLS operation: its class, and OpenSSL's own words (`detail`, as Envoy reports a transport failure).
public struct TLSFailure: Error, Sendable, Equatable {
    public var reason: TLSFailureReason
    /// OpenSSL's error as text ("error:0A000086:SSL routines::certificate verify failed"), plus the X.509
    /// verification error when there was one.
    public var detail: String
    public init(_ reason: TLSFailureReason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }
}

/// What one call into a session did.
public enum TLSStep: Equatable, Sendable {
    /// Finished: the handshake is complete, or `n` plaintext bytes were read or written.
    case done(Int)
    /// It needs more ciphertext: give it input and call again.
    case wantRead
    /// Its output memory is full: send what it wrote, give it room and call again with the same arguments.
    case wantWrite
    /// The peer ended the session (close_notify, or the end of the stream where that is allowed).
    case closed
    case failed(TLSFailure)
}

/// A setup error (a certificate or key that cannot be used), with the file it concerns.
public struct TLSSetupError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
