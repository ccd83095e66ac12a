// TernControl (ARCHITECTURE.md §2, layer 3): the control plane. For now its certificate authority: the mesh's root
// and intermediate CAs and the workload certificates they issue, whose one URI subjectAltName is the workload's
// SPIFFE ID, shaped as Istio's CA makes them (docs/mesh-ca.md). `tern cert` is its command line; the network CA of
// the next step will issue through the same `CertificateAuthority`.
//
// It works on PEM bytes and OpenSSL objects (through CTernOpenSSL and TernTLS's `X509Certificate`); reading and
// writing the files is the caller's (the `tern` CLI, through TernIO). It never touches a socket.

/// A certificate authority's failure: what is wrong, naming the file or flag it concerns.
public struct CAError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
