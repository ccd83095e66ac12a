import TernLoadCore

/// --hdr-log: merges the reactors' shards of each one-second interval as they arrive and encodes an interval
/// as soon as every reactor has handed it over, so a long run keeps a line of text per interval rather than
/// its histograms.
struct IntervalLog {
    let reactors: Int
    /// Tag prefixes per report: "" alone, "a-" and "b-" with --compare.
    let prefixes: [String]
    private var pending: [Int: (recorders: [LatencyRecorder], shards: Int, final: Bool)] = [:]
    private(set) var lines: [String] = []
    /// Seconds from the log's StartTime to the start of the measurement (the warm-up).
    var offsetSeconds = 0.0

    init(reactors: Int, compare: Bool) {
        self.reactors = reactors
        prefixes = compare ? ["a-", "b-"] : [""]
    }

    mutating func take(from links: [ReactorLink]) {
        for link in links {
            for shard in link.intervals.withLock({ shards in
                defer { shards.removeAll() }
                return shards
            }) {
                var entry = pending[shard.index] ?? (shard.recorders.map { _ in LatencyRecorder() }, 0, false)
                for (i, r) in shard.recorders.enumerated() { entry.recorders[i].merge(r) }
                entry.shards += 1
                entry.final = entry.final || shard.final
                pending[shard.index] = entry
                if entry.shards == reactors && !entry.final { encode(shard.index, length: Double(LoadSettings.hdrLogIntervalNanos) / 1e9) }
            }
        }
    }

    /// Encodes what is left once the reactors have stopped (the last, partial interval); `measuredSeconds` is
    /// the length of the measurement.
    mutating func finish(measuredSeconds: Double) {
        for index in pending.keys.sorted() {
            let interval = Double(LoadSettings.hdrLogIntervalNanos) / 1e9
            encode(index, length: max(0, min(interval, measuredSeconds - Double(index) * interval)))
        }
    }

    private mutating func encode(_ index: Int, length: Double) {
        guard let entry = pending.removeValue(forKey: index) else { return }
        for (r, recorder) in entry.recorders.enumerated() {
            let start = offsetSeconds + Double(index) * Double(LoadSettings.hdrLogIntervalNanos) / 1e9
            lines.append(HistogramLog.line(.init(tag: prefixes[r] + "corrected", startSeconds: start, lengthSeconds: length,
                                                 histogram: recorder.corrected)))
            lines.append(HistogramLog.line(.init(tag: prefixes[r] + "uncorrected", startSeconds: start, lengthSeconds: length,
                                                 histogram: recorder.uncorrected)))
        }
    }
}
