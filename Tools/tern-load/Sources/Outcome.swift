import Histogram
import TernIO
import TernLoadCore

/// What a run measured, merged over the reactors, and the reports it is written as: the table or the JSON
/// document on stdout, the plot and the HdrHistogram log in files.
struct Outcome {
    var settings: LoadSettings
    var results: [ReactorResult]
    var start: UInt64
    var measureStart: UInt64
    var measureEnd: UInt64
    var startEpoch: Double
    var backend: IOBackendKind
    var cores: Int
    /// --hdr-log: the encoded interval lines.
    var intervalLog: [String]

    /// Per target (one unless --compare): the merged recorder and its report.
    func merged() -> [(recorder: LatencyRecorder, report: RunReport)] {
        let targets = settings.compare ? 2 : 1
        return (0..<targets).map { t in
            var recorder = LatencyRecorder()
            var errors = ErrorCounts()
            var sent: UInt64 = 0, received: UInt64 = 0
            for r in results {
                recorder.merge(r.recorders[t])
                errors.add(r.errors[t])
                sent += r.bytesSent[t]
                received += r.bytesReceived[t]
            }
            let seconds = Double(settings.compare ? timeIn(target: t) : measureEnd - measureStart) / 1e9
            let report = RunReport(recorder: recorder, durationSeconds: seconds, targetRate: settings.targetRate,
                                   errors: errors, bytesSent: sent, bytesReceived: received)
            return (recorder, report)
        }
    }

    /// With --compare, the part of the measured window that went to target `t`.
    func timeIn(target t: Int) -> UInt64 {
        CompareSlices(start: start, length: LoadSettings.compareSliceNanos).time(of: t, from: measureStart, to: measureEnd)
    }

    /// Writes every report asked for; returns the exit status.
    func write() -> Int32 {
        let runs = merged()
        let names = settings.compare ? ["A: \(settings.targets[0].url)", "B: \(settings.targets[1].url)"]
            : [settings.targets.map(\.url).joined(separator: " ")]
        var status: Int32 = 0
        if let path = settings.plotPath {
            var series: [(name: String, histogram: Histogram<UInt64>)] = []
            if settings.compare {
                series = zip(names, runs).map { ($0, $1.recorder.corrected) }
            } else {
                series = [("latency", runs[0].recorder.corrected)]
                if settings.targetRate != nil { series.append(("uncorrected (from actual send)", runs[0].recorder.uncorrected)) }
            }
            let title = settings.compare ? "tern-load: added latency, B over A" : "tern-load: \(names[0])"
            if let e = Files.write(path, PercentilePlot.svg(series: series, title: title)) {
                System.writeStderr("tern-load: --plot \(e)")
                status = 1
            }
        }
        if let path = settings.hdrLogPath {
            let text = HistogramLog.header(startEpochSeconds: startEpoch) + intervalLog.joined()
            if let e = Files.write(path, text) {
                System.writeStderr("tern-load: --hdr-log \(e)")
                status = 1
            }
        }
        if settings.json {
            let doc = settings.compare ? ComparisonReport(a: runs[0].report, b: runs[1].report).json : runs[0].report.json
            Files.printStdout(doc + "\n")
            return status
        }
        let mode = settings.targetRate.map { "open loop at \($0) req/s" } ?? "closed loop"
        var out = "tern-load: \(mode), \(settings.connections) connections, \(cores) core\(cores == 1 ? "" : "s"), \(backend.rawValue)\n"
        if settings.compare {
            out += ComparisonReport(a: runs[0].report, b: runs[1].report).table(nameA: names[0], nameB: names[1])
        } else {
            out += "\(names[0])\n" + runs[0].report.table
        }
        Files.printStdout(out)
        return status
    }
}
