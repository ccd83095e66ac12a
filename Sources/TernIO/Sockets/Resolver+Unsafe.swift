// Host names for the threads beside the reactors (the span exporter's collector): getaddrinfo, which reads
// /etc/hosts and asks DNS and may block for the resolver's timeouts. Never called on a reactor thread.
import Glibc

extension SocketAddress {
    /// The TCP addresses `host` (a name or an IP literal, IPv6 without brackets) has, with `port`; empty when
    /// it does not resolve.
    public static func resolve(host: String, port: UInt16) -> [SocketAddress] {
        // SAFETY: a zeroed addrinfo with two fields set; its pointers stay nil.
        var hints = unsafe addrinfo()
        unsafe hints.ai_family = AF_UNSPEC
        unsafe hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        // SAFETY: host and service are C strings alive for the call; `list` is freed below with freeaddrinfo.
        let rc = unsafe getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0 else { return [] }
        defer { unsafe freeaddrinfo(list) }
        var out: [SocketAddress] = []
        var next = unsafe list
        while let entry = unsafe next {
            let family = unsafe entry.pointee.ai_family
            let length = Int(unsafe entry.pointee.ai_addrlen)
            if let addr = unsafe entry.pointee.ai_addr, family == AF_INET || family == AF_INET6 {
                var storage = sockaddr_storage()
                // SAFETY: ai_addr points at ai_addrlen bytes of a sockaddr of that family, which fits a
                // sockaddr_storage (the copy is capped at its size).
                unsafe withUnsafeMutableBytes(of: &storage) { dst in
                    unsafe dst.baseAddress!.copyMemory(from: addr, byteCount: min(length, dst.count))
                }
                out.append(SocketAddress(storage: storage))
            }
            unsafe next = entry.pointee.ai_next
        }
        return out
    }
}
