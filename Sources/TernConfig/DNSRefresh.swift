import TernCore

/// What the DNS resolver knows and when it asks again, for the names a configuration's DNS endpoints use: the
/// last good answer per name and each name's next lookup. Pure (the clock is passed in, the lookups are the
/// caller's), so the policy is tested without a resolver; owned by the resolver's thread.
///
/// - A name is asked as soon as it is tracked, then every `interval` (Istio's MeshConfig `dnsRefreshRate`,
///   60 s by default: getaddrinfo reports no TTL to follow).
/// - A failed lookup keeps the last good answer, and the name is asked again sooner: 1 s, 2 s, 4 s, … up to
///   `interval` (as Envoy's `dns_failure_refresh_rate` back-off does).
/// - An answer with IPv4 addresses keeps only those; IPv6 ones are used when there is no IPv4 one (Envoy's
///   `V4_PREFERRED`: Tern cannot tell whether the pod has IPv6, which Istio decides the lookup family from).
/// - `record` says whether the answer used for routing changed (another address set, or another first
///   address, which DNS_ROUND_ROBIN uses), so the caller publishes a new table only then.
public struct DNSRefresh: Sendable {
    /// Istio's default `dnsRefreshRate` (pkg/config/mesh/mesh.go).
    public static let defaultInterval = TernDuration.seconds(60)
    /// The first retry after a failure; it doubles up to `interval`.
    public static let firstRetry = TernDuration.seconds(1)

    public let interval: TernDuration
    /// Host name → IP literals of its last good answer (IPv4 first choice, as received otherwise).
    public private(set) var answers: [String: [String]] = [:]
    private var schedule: [String: (due: UInt64, failures: Int)] = [:]

    public init(interval: TernDuration = DNSRefresh.defaultInterval) {
        self.interval = interval
    }

    /// The names being refreshed.
    public var names: Set<String> { Set(schedule.keys) }

    /// Names not looked up even once yet (neither answered nor failed).
    public var unasked: Int { schedule.filter { answers[$0.key] == nil && $0.value.failures == 0 }.count }

    /// Follows a configuration's names: a new one is due at once, one no longer used is forgotten with its
    /// answer, the others keep their answer and schedule. True when an answer was forgotten.
    @discardableResult
    public mutating func track(_ names: [String], now: UInt64) -> Bool {
        let wanted = Set(names)
        for n in names where schedule[n] == nil { schedule[n] = (now, 0) }
        for n in Array(schedule.keys) where !wanted.contains(n) { schedule[n] = nil }
        let before = answers.count
        answers = answers.filter { wanted.contains($0.key) }
        return answers.count != before
    }

    /// The name to look up next and when it is due (the earliest; ties by name, so the order is stable).
    public func next() -> (name: String, due: UInt64)? {
        var best: (name: String, due: UInt64)?
        for (n, s) in schedule {
            if let b = best, b.due < s.due || (b.due == s.due && b.name < n) { continue }
            best = (n, s.due)
        }
        return best
    }

    /// Records a lookup of `name` finished at `now`: its addresses (IP literals), or nil when it failed. A
    /// failure or an empty answer keeps the last good answer. Returns true when the answer changed; a name no
    /// longer tracked (the configuration changed during the lookup) is ignored.
    public mutating func record(_ name: String, _ addresses: [String]?, now: UInt64) -> Bool {
        guard let s = schedule[name] else { return false }
        let usable = addresses.map(Self.preferred) ?? []
        guard !usable.isEmpty else {
            let delay = min(Self.firstRetry.nanoseconds << UInt64(min(s.failures, 20)), interval.nanoseconds)
            schedule[name] = (now + delay, s.failures + 1)
            return false
        }
        schedule[name] = (now + interval.nanoseconds, 0)
        let old = answers[name] ?? []
        answers[name] = usable
        return Set(old) != Set(usable) || old.first != usable.first
    }

    /// IPv4 addresses if there are any, else the IPv6 ones; each once, in the order given.
    static func preferred(_ addresses: [String]) -> [String] {
        var seen: Set<String> = []
        let unique = addresses.filter { IPAddress(parsing: $0) != nil && seen.insert($0).inserted }
        let v4 = unique.filter { IPAddress(parsing: $0)?.isV6 == false }
        return v4.isEmpty ? unique : v4
    }
}
