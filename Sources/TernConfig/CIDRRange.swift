/// An IP range as Istio's `destinationSubnets` write it: `a.b.c.d/xx`, an IPv6 address with `/xx`, or a bare
/// address, which stands for itself alone (/32, /128). Host bits below the prefix are accepted and cleared,
/// as Envoy's CidrRange does (`10.1.2.3/8` is `10.0.0.0/8`). An IPv4 range never contains an IPv6 address
/// (`::ffff:10.0.0.1` included), nor the other way round.
public struct CIDRRange: Sendable, Equatable {
    /// The range's first address (host bits cleared).
    public let base: IPAddress
    public let prefixLength: Int
    private let maskHigh: UInt64
    private let maskLow: UInt64

    /// Why a subnet was refused, in words for `tern validate`.
    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case notAnAddress(String)
        case prefixOutOfRange(String, maximum: Int)

        public var description: String {
            switch self {
            case .notAnAddress(let s):
                "\"\(s)\" is not an IP address or subnet (write a.b.c.d, a.b.c.d/xx, or an IPv6 address with an optional /xx)"
            case .prefixOutOfRange(let s, let maximum):
                "\"\(s)\": the prefix length must be a number from 0 to \(maximum)"
            }
        }
    }

    public init(_ address: IPAddress, prefixLength: Int) {
        precondition((0...(address.isV6 ? 128 : 32)).contains(prefixLength), "prefix length out of range")
        self.prefixLength = prefixLength
        // Smart shifts: by 64 or more they give 0, so /0 masks nothing in and /64 keeps all of `high`.
        if address.isV6 {
            maskHigh = UInt64.max << (64 - min(prefixLength, 64))
            maskLow = prefixLength <= 64 ? 0 : UInt64.max << (128 - prefixLength)
        } else {
            maskHigh = 0
            maskLow = UInt64(UInt32.max) << (32 - prefixLength) & UInt64(UInt32.max)
        }
        var base = address
        base.high &= maskHigh
        base.low &= maskLow
        self.base = base
    }

    /// Parses `address` or `address/prefix`; the prefix is decimal without sign or leading zero, as Go's
    /// `netip.ParsePrefix` (Istio's validation) wants it.
    public init(parsing text: String) throws(ParseError) {
        let slash = text.utf8.firstIndex(of: UInt8(ascii: "/"))
        let addressText = slash.map { String(text[..<$0]) } ?? text
        guard let address = IPAddress(parsing: addressText) else { throw .notAnAddress(text) }
        let maximum = address.isV6 ? 128 : 32
        guard let slash else {
            self.init(address, prefixLength: maximum)
            return
        }
        let digits = text.utf8[text.utf8.index(after: slash)...]
        let decimal = !digits.isEmpty && digits.count <= 3 && digits.allSatisfy { $0 >= 48 && $0 <= 57 }
            && (digits.count == 1 || digits.first != UInt8(ascii: "0"))
        guard decimal, let n = Int(Substring(digits)), n <= maximum else {
            throw .prefixOutOfRange(text, maximum: maximum)
        }
        self.init(address, prefixLength: n)
    }

    /// Whether `address` lies in the range: same family, equal under the mask. No allocation.
    @inline(__always)
    public func contains(_ address: IPAddress) -> Bool {
        address.isV6 == base.isV6 && address.high & maskHigh == base.high && address.low & maskLow == base.low
    }
}
