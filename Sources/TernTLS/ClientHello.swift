// Reading a TLS ClientHello without consuming it (SNI routing without termination, as Envoy's tls_inspector): the
// first bytes a client sent, peeked from its socket, are walked record by record (a ClientHello may span
// several TLS records and TCP segments) to the server_name extension. Pure: no OpenSSL, no allocation.

/// What the first bytes of a connection say.
public enum ClientHelloResult: Equatable, Sendable {
    /// A whole ClientHello; `nameLength` bytes of its server name were written to the output (0: it has no SNI).
    case complete(nameLength: Int)
    /// A ClientHello so far, cut short: wait for more bytes.
    case incomplete
    /// Not a TLS ClientHello (or a malformed one).
    case notTLS
}

public enum ClientHello {
    /// The longest server name kept (RFC 6066: a host name, at most 255 bytes in DNS).
    public static let maxNameLength = 255

    /// Reads the ClientHello at the start of `bytes` and writes its server name (host_name, lower-cased) into
    /// `name`, which must hold `maxNameLength` bytes.
    public static func serverName(in bytes: borrowing Span<UInt8>, into name: inout MutableSpan<UInt8>) -> ClientHelloResult {
        var r = HandshakeReader()
        // Handshake header: ClientHello (1), a 24-bit length.
        guard let type = r.byte(bytes) else { return r.verdict }
        guard type == 1 else { return .notTLS }
        guard let length = r.number(3, bytes) else { return r.verdict }
        // A ClientHello above 64 KiB is not one a proxy routes (Envoy's inspector stops at 64 KiB).
        guard length >= 38, length <= 65536 else { return .notTLS }
        let end = length + 4
        // legacy_version, random.
        guard r.skip(2 + 32, bytes) else { return r.verdict }
        // legacy_session_id <0..32>.
        guard let session = r.number(1, bytes) else { return r.verdict }
        guard session <= 32, r.skip(session, bytes) else { return r.verdict(session <= 32) }
        // cipher_suites <2..2^16-2>.
        guard let suites = r.number(2, bytes) else { return r.verdict }
        guard suites >= 2, suites % 2 == 0, r.skip(suites, bytes) else { return r.verdict(suites >= 2 && suites % 2 == 0) }
        // legacy_compression_methods <1..2^8-1>.
        guard let methods = r.number(1, bytes) else { return r.verdict }
        guard methods >= 1, r.skip(methods, bytes) else { return r.verdict(methods >= 1) }
        if r.position == end { return .complete(nameLength: 0) }  // no extensions (TLS 1.2 and before allow it)
        guard let extensionsLength = r.number(2, bytes) else { return r.verdict }
        guard r.position + extensionsLength == end else { return .notTLS }
        while r.position < end {
            guard let type = r.number(2, bytes), let size = r.number(2, bytes) else { return r.verdict }
            guard r.position + size <= end else { return .notTLS }
            guard type == 0 else {
                guard r.skip(size, bytes) else { return r.verdict }
                continue
            }
            // server_name: ServerNameList <1..2^16-1>, each name_type (1) and a name <1..2^16-1>.
            guard let listLength = r.number(2, bytes) else { return r.verdict }
            guard listLength + 2 == size else { return .notTLS }
            let listEnd = r.position + listLength
            var found = 0
            while r.position < listEnd {
                guard let nameType = r.number(1, bytes), let n = r.number(2, bytes) else { return r.verdict }
                guard n >= 1, r.position + n <= listEnd else { return .notTLS }
                if nameType == 0 && found == 0 {
                    guard n <= maxNameLength else { return .notTLS }
                    for i in 0..<n {
                        guard var b = r.byte(bytes) else { return r.verdict }
                        if b >= 0x41 && b <= 0x5A { b |= 0x20 }
                        // A host name is letters, digits, '-', '.', '_' (no NUL, no control bytes).
                        guard b > 0x20 && b < 0x7F else { return .notTLS }
                        name[i] = b
                    }
                    found = n
                } else {
                    guard r.skip(n, bytes) else { return r.verdict }
                }
            }
            // What follows the server_name extension is not needed to route.
            return .complete(nameLength: found)
        }
        return .complete(nameLength: 0)
    }
}

/// The handshake bytes of a run of TLS records, read in order across record boundaries: each record must be a
/// handshake record (22) of TLS 1.0 to 1.3's framing with a length of at most 2^14 (+ the spare RFC 8446 allows
/// old peers); bytes that are not are `notTLS`, and running out of bytes is `incomplete`.
struct HandshakeReader {
    /// Where the next record header starts, and how much of the current record's payload is left.
    private var next = 0
    private var inRecord = 0
    private var offset = 0
    /// Handshake bytes read so far.
    private(set) var position = 0
    private var bad = false

    /// Why the last read failed.
    var verdict: ClientHelloResult { bad ? .notTLS : .incomplete }

    /// `verdict` after a check: `.notTLS` when `ok` is false.
    func verdict(_ ok: Bool) -> ClientHelloResult { ok ? verdict : .notTLS }

    mutating func byte(_ bytes: borrowing Span<UInt8>) -> UInt8? {
        if inRecord == 0 {
            guard next + 5 <= bytes.count else { return nil }
            let type = bytes[next], major = bytes[next + 1], minor = bytes[next + 2]
            let length = Int(bytes[next + 3]) << 8 | Int(bytes[next + 4])
            guard type == 22, major == 3, minor <= 4, length >= 1, length <= 16384 + 2048 else {
                bad = true
                return nil
            }
            offset = next + 5
            inRecord = length
            next = offset + length
        }
        guard offset < bytes.count else { return nil }
        let b = bytes[offset]
        offset += 1
        inRecord -= 1
        position += 1
        return b
    }

    /// A big-endian number of `width` bytes.
    mutating func number(_ width: Int, _ bytes: borrowing Span<UInt8>) -> Int? {
        var v = 0
        for _ in 0..<width {
            guard let b = byte(bytes) else { return nil }
            v = v << 8 | Int(b)
        }
        return v
    }

    mutating func skip(_ n: Int, _ bytes: borrowing Span<UInt8>) -> Bool {
        for _ in 0..<n where byte(bytes) == nil { return false }
        return true
    }
}
