// TernControl (ARCHITECTURE.md §2, layer 3): the control plane. For now its certificate authority: the mesh's root
// and intermediate CAs and the workload certificates they issue, whose one URI subjectAltName is the workload's
// SPIFFE ID, shaped as Istio's CA makes them (docs/mesh-ca.md). `tern cert` is its command line; the network CA of
// the next step will issue through the same `CertificateAuthority`. And the pod's side of joining the mesh:
// `Interception`, the iptables rules that send a namespace's TCP to the sidecar (docs/interception.md), behind
// `tern iptables`.
//
// It works on PEM bytes and OpenSSL objects (through CTernOpenSSL and TernTLS's `X509Certificate`) and on rule
// text; reading and writing the files and running iptables are the caller's (the `tern` CLI, through TernIO). It
// never touches a socket and never starts a process.

/// A certificate authority's failure: what is wrong, naming the file or flag it concerns.
public struct CAError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
