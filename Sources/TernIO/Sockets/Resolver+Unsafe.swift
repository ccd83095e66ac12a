// Host names for the threads beside the reactors (the span exporter's collector, the DNS resolver of ServiceEntry
// endpoints): getaddrinfo, which reads /etc/hosts and asks DNS and may block for the resolver's timeouts. Never
// called on a reactor thread.
internal import CTernLinux
import Glibc

/// A lookup that found no address: getaddrinfo's EAI_* code and its text (`Name or service not known`, …).
public struct NameResolutionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The negative EAI_* code; for EAI_SYSTEM, the errno is in `description`.
    public var code: Int32
    public var description: String
}

extension SocketAddress {
    /// The TCP addresses `host` (a name or an IP literal, IPv6 without brackets) has, with `port`; empty when
    /// it does not resolve.
    public static func resolve(host: String, port: UInt16) -> [SocketAddress] {
        (try? lookup(host: host, port: port)) ?? []
    }

    /// The TCP addresses `host` has, with `port`, in getaddrinfo's order (RFC 6724), IPv4 and IPv6 (no
    /// AI_ADDRCONFIG, which would drop IPv4 answers in a network namespace with only loopback); why not when it
    /// has none.
    public static func lookup(host: String, port: UInt16) throws(NameResolutionError) -> [SocketAddress] {
        // SAFETY: a zeroed addrinfo with two fields set; its pointers stay nil.
        var hints = unsafe addrinfo()
        unsafe hints.ai_family = AF_UNSPEC
        unsafe hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        // SAFETY: host and service are C strings alive for the call; `list` is freed below with freeaddrinfo.
        let rc = unsafe getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0 else {
            let e = Glibc.errno
            throw NameResolutionError(code: rc, description: rc == EAI_SYSTEM ? "\(Errno.name(e)) (\(Errno.message(e)))" : message(rc))
        }
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
        if out.isEmpty { throw NameResolutionError(code: EAI_NONAME, description: message(EAI_NONAME)) }
        return out
    }

    private static func message(_ code: Int32) -> String {
        // SAFETY: gai_strerror returns a static NUL-terminated string; it is copied at once.
        guard let p = unsafe gai_strerror(code) else { return "getaddrinfo error \(code)" }
        return unsafe String(cString: p)
    }
}
