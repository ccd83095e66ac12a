// Transport: what sits between a connection's socket operations and its codec (ARCHITECTURE.md §1).
//
// A plaintext connection's bytes are the bytes the kernel delivers, and what the codec sends goes to the socket
// as it is, so a body or tunnel may be spliced socket → pipe → socket without passing through user space. A TLS
// connection has a session in its slot of the reactor's `TLSIO` (an I/O-free state machine: ciphertext in,
// plaintext and ciphertext-to-send out, HTTPProxy+TLS.swift); its received bytes must be decrypted and its
// sends encrypted, so `allowsSplice` is false for it and bodies and tunnels go through buffers.

/// How a connection's bytes reach its codec.
enum Transport: Equatable {
    /// Plaintext in kernel buffers: received bytes are the codec's bytes; splicing is allowed.
    case plain
    /// TLS: the session and `TLSLink` in the connection's slot of the reactor's `TLSIO`.
    case tls
    /// An HTTP/2 stream seen by the engine as a connection of its own (Downstream/HTTPProxy+H2+Unsafe.swift): its
    /// request arrives as HTTP/1.1 bytes its connection's session wrote, and its response goes back through it.
    case h2stream

    /// Whether bytes may move socket → pipe → socket without the codec seeing them (spliced bodies, tunnels
    /// handed to the TCP relay): only when what the kernel holds is the plaintext.
    var allowsSplice: Bool {
        switch self {
        case .plain: true
        case .tls, .h2stream: false
        }
    }
}
