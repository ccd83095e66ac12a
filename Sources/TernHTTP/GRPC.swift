// gRPC over HTTP/2, what a proxy needs of it (gRPC's PROTOCOL-HTTP2.md): the status of a local reply sent to a gRPC
// client, and the deadline a `grpc-timeout` field sets.

public enum GRPC {
    /// The gRPC status a local reply with HTTP status `status` carries (Envoy's `httpToGrpcStatus`, which gRPC's
    /// http-grpc-status-mapping.md also gives): 400 → 13 INTERNAL, 401 → 16 UNAUTHENTICATED, 403 → 7
    /// PERMISSION_DENIED, 404 → 12 UNIMPLEMENTED, 429, 502, 503 and 504 → 14 UNAVAILABLE, anything else → 2 UNKNOWN.
    public static func status(forHTTP status: Int) -> Int {
        switch status {
        case 400: 13
        case 401: 16
        case 403: 7
        case 404: 12
        case 429, 502, 503, 504: 14
        default: 2
        }
    }

    /// The nanoseconds a `grpc-timeout` value asks for (`TimeoutValue TimeoutUnit`: 1 to 8 digits, then H, M, S,
    /// m, u or n), or nil when it is not one (then, as in Envoy, the field sets no deadline).
    public static func timeoutNanos<C: BidirectionalCollection<UInt8>>(_ value: C) -> UInt64? {
        guard value.count >= 2, value.count <= 9, let unit = value.last else { return nil }
        var n: UInt64 = 0
        for d in value.dropLast() {
            guard d >= 0x30 && d <= 0x39 else { return nil }
            n = n * 10 + UInt64(d - 0x30)
        }
        let per: UInt64
        switch unit {
        case UInt8(ascii: "H"): per = 3_600_000_000_000
        case UInt8(ascii: "M"): per = 60_000_000_000
        case UInt8(ascii: "S"): per = 1_000_000_000
        case UInt8(ascii: "m"): per = 1_000_000
        case UInt8(ascii: "u"): per = 1_000
        case UInt8(ascii: "n"): per = 1
        default: return nil
        }
        // 99,999,999 hours fits: about 3.6e20 ns overflows UInt64, so saturate.
        let (product, overflow) = n.multipliedReportingOverflow(by: per)
        return overflow ? .max : product
    }

    /// Whether a Content-Type value is gRPC's: exactly `application/grpc`, or it followed by `+` (`+proto`,
    /// `+json`), as Envoy tells gRPC requests (`request_protocol` "grpc" in Istio's metrics) from other ones;
    /// `application/grpc-web` is not.
    public static func isGRPC<C: Collection<UInt8>>(contentType: C) -> Bool {
        let prefix = "application/grpc".utf8
        guard contentType.starts(with: prefix) else { return false }
        let rest = contentType.dropFirst(prefix.count)
        return rest.isEmpty || rest.first == UInt8(ascii: "+")
    }

    /// The `grpc-status` of an HTTP/1.1 trailer section (`name: value` lines), nil when it has none or it is not a
    /// number.
    public static func status(inTrailerSection section: [UInt8]) -> Int? {
        field(statusName, inTrailerSection: section).flatMap(decimal)
    }

    /// The `grpc-message` of an HTTP/1.1 trailer section, without the spaces around it; nil when it has none.
    public static func message(inTrailerSection section: [UInt8]) -> ArraySlice<UInt8>? {
        field(messageName, inTrailerSection: section).map(trimmed)
    }

    /// The `grpc-message` of an HTTP/2 head or trailers (`fields`, a range of the session's), nil when none.
    public static func message(_ session: HTTP2Session, _ fields: Range<Int>) -> ArraySlice<UInt8>? {
        for i in fields where session.name(i).elementsEqual(messageName) { return session.value(i) }
        return nil
    }

    private static func field(_ name: [UInt8], inTrailerSection section: [UInt8]) -> ArraySlice<UInt8>? {
        var at = 0
        while at < section.count {
            guard let cr = section[at...].firstIndex(of: 0x0D) else { return nil }
            let line = section[at..<cr]
            if line.count > name.count, let colon = line.firstIndex(of: UInt8(ascii: ":")),
               colon - at == name.count, zip(line, name).allSatisfy({ $0 | 0x20 == $1 }) {
                return section[(colon + 1)..<cr]
            }
            at = cr + 2
        }
        return nil
    }

    private static func trimmed(_ v: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var v = v
        while let f = v.first, f == 0x20 || f == 0x09 { v.removeFirst() }
        while let l = v.last, l == 0x20 || l == 0x09 { v.removeLast() }
        return v
    }

    private static let messageName: [UInt8] = Array("grpc-message".utf8)

    /// The `grpc-status` among HTTP/2 fields `fields` of `session` (lower-case names), nil when absent.
    public static func status(_ session: HTTP2Session, _ fields: Range<Int>) -> Int? {
        for i in fields where session.name(i).elementsEqual(statusName) { return decimal(session.value(i)) }
        return nil
    }

    private static let statusName: [UInt8] = Array("grpc-status".utf8)

    private static func decimal<C: Collection<UInt8>>(_ bytes: C) -> Int? {
        var n = 0, digits = 0
        for b in bytes where b != 0x20 && b != 0x09 {
            guard b >= 0x30 && b <= 0x39, digits < 9 else { return nil }
            n = n * 10 + Int(b - 0x30)
            digits += 1
        }
        return digits > 0 ? n : nil
    }
}
