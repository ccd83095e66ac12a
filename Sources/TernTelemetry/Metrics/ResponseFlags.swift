/// Envoy's response flags (../shared/reference/istio.md §3): why a request ended as it did, for the
/// `response_flags` metric label and access-log field. Rendered in Envoy's order, joined by commas; `-` when none.
public struct ResponseFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue & Self.mask }

    /// Envoy's short names, in the order Envoy writes them (bit i is names[i]).
    public static let names: [String] = [
        "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI",
        "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
    ]
    static let mask: UInt32 = (1 << 29) - 1

    public static let failedLocalHealthCheck = ResponseFlags(rawValue: 1 << 0)
    public static let noHealthyUpstream = ResponseFlags(rawValue: 1 << 1)
    public static let upstreamRequestTimeout = ResponseFlags(rawValue: 1 << 2)
    public static let localReset = ResponseFlags(rawValue: 1 << 3)
    public static let upstreamRemoteReset = ResponseFlags(rawValue: 1 << 4)
    public static let upstreamConnectionFailure = ResponseFlags(rawValue: 1 << 5)
    public static let upstreamConnectionTermination = ResponseFlags(rawValue: 1 << 6)
    public static let upstreamOverflow = ResponseFlags(rawValue: 1 << 7)
    public static let noRouteFound = ResponseFlags(rawValue: 1 << 8)
    public static let delayInjected = ResponseFlags(rawValue: 1 << 9)
    public static let faultInjected = ResponseFlags(rawValue: 1 << 10)
    public static let rateLimited = ResponseFlags(rawValue: 1 << 11)
    public static let downstreamConnectionTermination = ResponseFlags(rawValue: 1 << 14)
    public static let upstreamRetryLimitExceeded = ResponseFlags(rawValue: 1 << 15)
    public static let streamIdleTimeout = ResponseFlags(rawValue: 1 << 16)
    public static let invalidEnvoyRequestHeaders = ResponseFlags(rawValue: 1 << 17)
    public static let downstreamProtocolError = ResponseFlags(rawValue: 1 << 18)
    public static let durationTimeout = ResponseFlags(rawValue: 1 << 22)
    public static let upstreamProtocolError = ResponseFlags(rawValue: 1 << 23)
    public static let noClusterFound = ResponseFlags(rawValue: 1 << 24)
    public static let dnsResolutionFailed = ResponseFlags(rawValue: 1 << 26)
    public static let downstreamRemoteReset = ResponseFlags(rawValue: 1 << 28)

    /// The flag with Envoy's short name `name` (`UF`), or nil.
    public init?(name: String) {
        guard let i = Self.names.firstIndex(of: name) else { return nil }
        self.init(rawValue: 1 << UInt32(i))
    }

    /// "UF,URX" in Envoy's order; "-" when no flag is set.
    public var description: String {
        if rawValue == 0 { return "-" }
        var parts: [String] = []
        for i in Self.names.indices where rawValue & (1 << UInt32(i)) != 0 { parts.append(Self.names[i]) }
        return parts.joined(separator: ",")
    }

    /// Writes the same text as `description` through `byte`, without allocating (access-log lines).
    @inlinable
    public func write(_ byte: (UInt8) -> Void) {
        if rawValue == 0 {
            byte(UInt8(ascii: "-"))
            return
        }
        var first = true
        var bits = rawValue
        while bits != 0 {
            let i = bits.trailingZeroBitCount
            bits &= bits - 1
            if !first { byte(UInt8(ascii: ",")) }
            first = false
            for b in Self.names[i].utf8 { byte(b) }
        }
    }
}
