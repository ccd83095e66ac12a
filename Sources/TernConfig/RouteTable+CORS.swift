// A route's CORS policy (VirtualService `corsPolicy`) as Istio hands it to Envoy's CORS filter, flattened once per
// table into trivial values read per request (the pattern of `Forwarding`): the origin matchers, whether one of
// them allows every origin, and the values of the fields it answers with, as ranges of `Forwarding.bytes`. Istio's
// translation (`TranslateCORSPolicy`): the lists joined with "," (no space), `maxAge` in whole seconds,
// `unmatchedPreflights: IGNORE` as `forward_not_matching_preflights: false` (FORWARD, and by default, true), and
// the filter enabled for every request. What the proxy does with them is in TernProxy's
// Filters/HTTPProxy+CORS.swift.
import TernCore

/// One route's CORS policy as trivial values (`Forwarding.cors`).
public struct CORSFacts: Sendable, Equatable {
    /// Its `allowOrigins` matchers: a range of `Forwarding.originMatchers`.
    var origins: Range<Int>
    /// A matcher accepts the string "*" (`exact: "*"`, a regex such as `.*`): every origin is allowed, as Envoy's
    /// filter checks `match("*")` before the origin itself. The request's origin is echoed even then, never "*".
    public var anyOrigin: Bool
    public var allowCredentials: Bool
    /// An origin that matches no matcher in a preflight: forwarded upstream (FORWARD, Istio's default), else
    /// answered here without `access-control-allow-origin` (IGNORE).
    public var forwardsUnmatchedPreflights: Bool
    /// Field values in `Forwarding.bytes` (empty: the field is not sent): `allowMethods` and `allowHeaders` joined,
    /// `exposeHeaders` joined, `maxAge` in decimal seconds.
    public var allowMethods: Range<Int>
    public var allowHeaders: Range<Int>
    public var exposeHeaders: Range<Int>
    public var maxAge: Range<Int>
    /// `allowMethods` (or `allowHeaders`) is exactly "*": a preflight's `Access-Control-Request-Method`
    /// (`-Request-Headers`) is echoed in its place, as Envoy's filter does.
    public var echoesMethod: Bool
    public var echoesHeaders: Bool
}

extension Forwarding {
    /// Whether the route policy `policy` (an index in `cors`) allows `origin` (the request's Origin value, as
    /// Envoy reads it: several fields joined with ","): exact, prefix or whole-string regex, case-sensitive
    /// (Istio's StringMatch as Envoy's string matcher). No allocation.
    /// `reactor`: the calling reactor's index, whose copy of each regex is matched with (`CompiledRegex`).
    public func allowsOrigin(_ policy: Int, _ origin: Span<UInt8>, reactor: Int) -> Bool {
        let p = cors[policy]
        if p.anyOrigin { return true }
        for i in p.origins where RouteTable.check(originMatchers[i], origin, 0..<origin.count, reactor) { return true }
        return false
    }

    /// What a table builder renders of a route's CORS policy.
    struct CORSBuilder {
        var facts: [CORSFacts] = []
        var matchers: [Matcher] = []

        /// The (lowercase) names of the fields policy `i` sets on a response to an origin it allows, replacing
        /// any the upstream or the route sent.
        func fieldNames(_ i: Int) -> [String] {
            ["access-control-allow-origin"] + (facts[i].allowCredentials ? ["access-control-allow-credentials"] : [])
                + (facts[i].exposeHeaders.isEmpty ? [] : ["access-control-expose-headers"])
        }

        /// The index of `route`'s policy, rendered into `bytes` (-1: none).
        mutating func add(_ route: Route, into bytes: inout [UInt8]) -> Int32 {
            guard let policy = route.corsPolicy else { return -1 }
            func value(_ s: String) -> Range<Int> {
                let start = bytes.count
                bytes.append(contentsOf: s.utf8)
                return start..<bytes.count
            }
            let start = matchers.count
            matchers.append(contentsOf: route.corsOrigins)
            let star: [UInt8] = [UInt8(ascii: "*")]
            let methods = policy.allowMethods.joined(separator: ",")
            let headers = policy.allowHeaders.joined(separator: ",")
            facts.append(CORSFacts(
                origins: start..<matchers.count,
                anyOrigin: route.corsOrigins.contains { RouteTable.check($0, star.span, 0..<1, 0) },
                allowCredentials: policy.allowCredentials ?? false,
                forwardsUnmatchedPreflights: policy.unmatchedPreflights != "IGNORE",
                allowMethods: value(methods), allowHeaders: value(headers),
                exposeHeaders: value(policy.exposeHeaders.joined(separator: ",")),
                maxAge: value(policy.maxAge.map { String($0.nanoseconds / 1_000_000_000) } ?? ""),
                echoesMethod: methods == "*", echoesHeaders: headers == "*"))
            return Int32(facts.count - 1)
        }
    }
}
