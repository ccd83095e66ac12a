import Histogram

/// Latencies of one reactor's requests, in microseconds, in two HdrHistograms (3 significant digits, up to an
/// hour):
/// - `corrected`: from each request's intended send time (open loop) to the end of its response; in a
///   closed loop, where nothing is scheduled, the intended time is the actual send time;
/// - `uncorrected`: from when the request actually left to the end of its response (what wrk reports).
/// Reactors record into their own recorder; the results are merged once at the end.
public struct LatencyRecorder: Sendable {
    static let highestMicroseconds: UInt64 = 3_600_000_000

    public private(set) var corrected = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: highestMicroseconds,
                                                   numberOfSignificantValueDigits: .three)
    public private(set) var uncorrected = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: highestMicroseconds,
                                                     numberOfSignificantValueDigits: .three)

    /// Records one response; times are monotonic nanoseconds. A latency below 1 µs counts as 1 µs; one
    /// beyond an hour counts as an hour.
    public mutating func record(intended: UInt64, sent: UInt64, completed: UInt64) {
        corrected.record(Self.clampMicros(completed &- min(intended, completed)))
        uncorrected.record(Self.clampMicros(completed &- min(sent, completed)))
    }

    private static func clampMicros(_ nanos: UInt64) -> UInt64 {
        max(1, min(nanos / 1_000, highestMicroseconds))
    }

    public mutating func merge(_ other: LatencyRecorder) {
        corrected.add(other.corrected)
        uncorrected.add(other.uncorrected)
    }

    public var count: UInt64 { corrected.totalCount }

    public init() {}
}
