// An IPv4 or IPv6 socket address, parsed from the IP-literal forms users write (`1.2.3.4:80`, `[::1]:80`).
import Glibc

public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    /// sockaddr_in or sockaddr_in6, stored in a sockaddr_storage.
    public private(set) var storage: sockaddr_storage

    public init(storage: sockaddr_storage) { self.storage = storage }

    public var family: Int32 { Int32(storage.ss_family) }

    public var length: socklen_t {
        family == AF_INET6
            ? socklen_t(MemoryLayout<sockaddr_in6>.size) : socklen_t(MemoryLayout<sockaddr_in>.size)
    }

    /// Parses `IPv4:port` or `[IPv6]:port`; nil when `text` is not such a literal or the port is not 0–65535.
    public init?(parsing text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }  // IPv6 must be bracketed
        }
        guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), portText.count <= 5,
            let port = UInt16(portText)
        else { return nil }
        var storage = sockaddr_storage()
        let hostString = String(host)
        let ok: Bool = unsafe withUnsafeMutablePointer(to: &storage) { p in
            if text.hasPrefix("[") {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6; p is a local.
                return unsafe p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    unsafe sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                    unsafe sin6.pointee.sin6_port = port.bigEndian
                    return unsafe inet_pton(AF_INET6, hostString, &sin6.pointee.sin6_addr) == 1
                }
            } else {
                // SAFETY: as above, for sockaddr_in.
                return unsafe p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    unsafe sin.pointee.sin_family = sa_family_t(AF_INET)
                    unsafe sin.pointee.sin_port = port.bigEndian
                    return unsafe inet_pton(AF_INET, hostString, &sin.pointee.sin_addr) == 1
                }
            }
        }
        guard ok else { return nil }
        self.storage = storage
    }

    public var port: UInt16 {
        var s = storage
        // SAFETY: the family tells which sockaddr type the storage holds; s is a local copy.
        return unsafe withUnsafePointer(to: &s) { p in
            if family == AF_INET6 {
                return unsafe p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { unsafe UInt16(bigEndian: $0.pointee.sin6_port) }
            }
            return unsafe p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { unsafe UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    /// The IPv4 address as a number (`a.b.c.d` is a<<24 | b<<16 | c<<8 | d); nil for IPv6. No allocation.
    public var ipv4: UInt32? {
        guard family == AF_INET else { return nil }
        var s = storage
        // SAFETY: the family says the storage holds a sockaddr_in; s is a local copy.
        return unsafe withUnsafePointer(to: &s) { p in
            unsafe p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                unsafe UInt32(bigEndian: $0.pointee.sin_addr.s_addr)
            }
        }
    }

    /// The IPv6 address as two numbers, its first and last 64 bits; nil for IPv4. No allocation.
    public var ipv6: (high: UInt64, low: UInt64)? {
        guard family == AF_INET6 else { return nil }
        var s = storage
        // SAFETY: the family says the storage holds a sockaddr_in6; s is a local copy, and sin6_addr is 16 bytes,
        // read as two unaligned 8-byte loads.
        return unsafe withUnsafePointer(to: &s) { p in
            unsafe p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                unsafe withUnsafeBytes(of: sin6.pointee.sin6_addr) { raw in
                    (UInt64(bigEndian: unsafe raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                     UInt64(bigEndian: unsafe raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
                }
            }
        }
    }

    /// The IP part as text (`127.0.0.1`, `::1`).
    public var ip: String { text(withPort: false) }

    /// `IP:PORT`, with IPv6 in brackets, as in the `listening` log line.
    public var description: String { text(withPort: true) }

    private func text(withPort: Bool) -> String {
        var bytes: [UInt8] = []
        withText(withPort: withPort) { span in
            for i in span.indices { bytes.append(span[i]) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The address as text (`127.0.0.1`, `::1`; `withPort`: `127.0.0.1:80`, `[::1]:80`) composed on the stack and
    /// handed to `body`: the paths that run per accepted connection use it as is, allocating nothing; `ip` and
    /// `description` make Strings of it.
    /// Not generic: callers live in other modules, where a generic would run unspecialised.
    public func withText(withPort: Bool, _ body: (borrowing Span<UInt8>) -> Void) {
        var s = storage
        let v6 = family == AF_INET6
        let port = self.port
        // SAFETY: 80 bytes hold "[", the longest IPv6 text (INET6_ADDRSTRLEN, 46 with its NUL), "]:" and five
        // digits; inet_ntop writes at most INET6_ADDRSTRLEN bytes from offset 1; every store below stays inside.
        // `s` is a local copy alive for the call, read as the family says.
        // A tuple on the stack rather than withUnsafeTemporaryAllocation, which a debug build puts on the heap.
        var storage80: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        unsafe withUnsafeMutableBytes(of: &storage80) { buffer in
            let p = buffer.baseAddress!
            var n = 0
            if v6 && withPort {
                unsafe p.storeBytes(of: UInt8(ascii: "["), as: UInt8.self)
                n = 1
            }
            let text = unsafe (p + n).assumingMemoryBound(to: CChar.self)
            unsafe withUnsafePointer(to: &s) { sa in
                if v6 {
                    unsafe sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                        var a = unsafe sin6.pointee.sin6_addr
                        unsafe _ = inet_ntop(AF_INET6, &a, text, socklen_t(INET6_ADDRSTRLEN))
                    }
                } else {
                    unsafe sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                        var a = unsafe sin.pointee.sin_addr
                        unsafe _ = inet_ntop(AF_INET, &a, text, socklen_t(INET6_ADDRSTRLEN))
                    }
                }
            }
            n += unsafe strlen(text)
            if withPort {
                if v6 {
                    unsafe p.storeBytes(of: UInt8(ascii: "]"), toByteOffset: n, as: UInt8.self)
                    n += 1
                }
                unsafe p.storeBytes(of: UInt8(ascii: ":"), toByteOffset: n, as: UInt8.self)
                n += 1
                var digits = 1
                var rest = port / 10
                while rest != 0 {
                    digits += 1
                    rest /= 10
                }
                var v = port
                var i = n + digits - 1
                while i >= n {  // not a stride: its iterator is a heap box in a debug build
                    unsafe p.storeBytes(of: UInt8(truncatingIfNeeded: v % 10) &+ 0x30, toByteOffset: i, as: UInt8.self)
                    v /= 10
                    i -= 1
                }
                n += digits
            }
            unsafe body(UnsafeBufferPointer(start: p.assumingMemoryBound(to: UInt8.self), count: n).span)
        }
    }

    /// Calls `body` with a sockaddr pointer and length valid for the duration of the call.
    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var s = storage
        // SAFETY: s is a local copy alive for the call; length matches the stored family.
        return unsafe withUnsafePointer(to: &s) { p in
            unsafe p.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe body($0, length) }
        }
    }

    /// Equal when family, address and port are (what `description` shows; IPv6 flow labels and scope ids
    /// are not compared). Compared as numbers, nothing allocated: tables of endpoints are looked up by address
    /// on every configuration swap (it compared the two descriptions, a microsecond and four Strings each, so
    /// binding 10,000 endpoints held a reactor for 51 s).
    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        guard a.family == b.family, a.port == b.port else { return false }
        if let x = a.ipv4, let y = b.ipv4 { return x == y }
        if let x = a.ipv6, let y = b.ipv6 { return x == y }
        return a.description == b.description  // neither IPv4 nor IPv6: nothing Tern connects to
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(family)
        hasher.combine(port)
        if let v4 = ipv4 {
            hasher.combine(v4)
        } else if let v6 = ipv6 {
            hasher.combine(v6.high)
            hasher.combine(v6.low)
        } else {
            hasher.combine(description)
        }
    }
}
