import TernConfig
import TernHTTP

extension RequestView {
    /// The routing view of an HTTP/1.1 request head parsed in place in `bytes` (the HTTP/1.1 codec's side of the
    /// protocol-neutral view: TernConfig never sees `HTTP1Head`).
    @_lifetime(copy bytes)
    public init(http1 head: borrowing HTTP1Head, bytes: Span<UInt8>, scheme: Scheme = .http) {
        self.init(bytes: bytes, fields: head.fields, method: head.methodBytes, target: head.target,
                  targetHasAuthority: head.targetForm == .absolute, scheme: scheme, authority: head.host)
    }
}
