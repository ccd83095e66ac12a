// Transport: what sits between a connection's socket operations and its codec (ARCHITECTURE.md §1).
//
// Today every connection is plaintext: the bytes the kernel delivers are the bytes the codec parses, and what
// the codec sends goes to the socket as it is, so a body or tunnel may be spliced socket → pipe → socket
// without passing through user space. The TLS issue adds a `.tls` case holding a TLS session slot (an I/O-free
// state machine: ciphertext in, plaintext and ciphertext-to-send out); its received bytes must be decrypted
// and its sends encrypted, so `allowsSplice` is false for it and bodies and tunnels go through buffers.

/// How a connection's bytes reach its codec.
enum Transport: Equatable {
    /// Plaintext in kernel buffers: received bytes are the codec's bytes; splicing is allowed.
    case plain

    /// Whether bytes may move socket → pipe → socket without the codec seeing them (spliced bodies, tunnels
    /// handed to the TCP relay): only when what the kernel holds is the plaintext.
    var allowsSplice: Bool {
        switch self {
        case .plain: true
        }
    }
}
