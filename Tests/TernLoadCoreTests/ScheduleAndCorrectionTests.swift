import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import TernLoadCore

@Suite struct SendWaitTests {
    @Test func sleepsUntilTheSpinWindowThenPolls() {
        let spin = SendWait.spinNanos
        #expect(spin == 100_000)
        // A send due in 1 ms: sleep 900 µs, then poll for the last 100 µs.
        #expect(SendWait.before(nextDue: 1_001_000, now: 1_000) == .sleep(900_000))
        // At the window's edge and inside it, and when the send is overdue: poll.
        #expect(SendWait.before(nextDue: 1_000 + spin, now: 1_000) == .poll)
        #expect(SendWait.before(nextDue: 1_000 + spin + 1, now: 1_000) == .sleep(1))
        #expect(SendWait.before(nextDue: 50_000, now: 1_000) == .poll)
        #expect(SendWait.before(nextDue: 500, now: 1_000) == .poll)
        // Nothing due: block on the other deadlines.
        #expect(SendWait.before(nextDue: nil, now: 1_000) == .idle)
    }
}

@Suite struct OpenLoopScheduleTests {
    @Test func spreadsRequestsEvenlyOverConnections() {
        // 1,000 req/s over 4 connections: every 1 ms one request, connection i at i ms, every 4 ms.
        let s = OpenLoopSchedule(rate: 1000, connections: 4)
        #expect(s.intendedOffset(connection: 0, request: 0) == 0)
        #expect(s.intendedOffset(connection: 1, request: 0) == 1_000_000)
        #expect(s.intendedOffset(connection: 3, request: 0) == 3_000_000)
        #expect(s.intendedOffset(connection: 0, request: 1) == 4_000_000)
        #expect(s.intendedOffset(connection: 2, request: 10) == 42_000_000)
        #expect(s.connectionInterval == 4_000_000)
    }

    @Test func roundsDownWithoutDrift() {
        // 3 req/s on one connection: 0, 333333333, 666666666, 1000000000 ns, never drifting.
        let s = OpenLoopSchedule(rate: 3, connections: 1)
        #expect((0...3).map { s.intendedOffset(connection: 0, request: UInt64($0)) } == [0, 333_333_333, 666_666_666, 1_000_000_000])
        #expect(s.intendedOffset(connection: 0, request: 3_000) == 1_000_000_000_000)
    }

    @Test func dueCountMatchesTheOffsets() {
        let s = OpenLoopSchedule(rate: 1000, connections: 4)
        #expect(s.dueCount(connection: 0, elapsed: 0) == 1)
        #expect(s.dueCount(connection: 1, elapsed: 999_999) == 0)
        #expect(s.dueCount(connection: 1, elapsed: 1_000_000) == 1)
        #expect(s.dueCount(connection: 0, elapsed: 3_999_999) == 1)
        #expect(s.dueCount(connection: 0, elapsed: 4_000_000) == 2)
        let odd = OpenLoopSchedule(rate: 3, connections: 2)
        for c in 0..<2 {
            for k in 0..<50 as Range<UInt64> {
                let t = odd.intendedOffset(connection: c, request: k)
                #expect(odd.dueCount(connection: c, elapsed: t) == k + 1)
                if t > 0 { #expect(odd.dueCount(connection: c, elapsed: t - 1) == k) }
            }
        }
    }
}

/// A discrete-event model of a load run against a server with a known service time, driven by a virtual
/// clock: exactly what tern-load's loop does with the schedule and the recorder, minus the sockets.
struct SimulatedRun {
    /// Service time of a request that starts being served at `t` (ns).
    let service: (UInt64) -> UInt64

    /// Closed loop: each connection sends its next request when the last completes.
    func closedLoop(connections: Int, duration: UInt64) -> LatencyRecorder {
        var rec = LatencyRecorder()
        for _ in 0..<connections {
            var now: UInt64 = 0
            while now < duration {
                let done = now + service(now)
                rec.record(intended: now, sent: now, completed: done)
                now = done
            }
        }
        return rec
    }

    /// Open loop at `rate` over `connections`: a request is sent at its intended time or, if the connection
    /// is still waiting for the previous response, as soon as that arrives.
    func openLoop(rate: UInt64, connections: Int, duration: UInt64) -> LatencyRecorder {
        let schedule = OpenLoopSchedule(rate: rate, connections: connections)
        var rec = LatencyRecorder()
        for c in 0..<connections {
            var free: UInt64 = 0
            var k: UInt64 = 0
            while true {
                let intended = schedule.intendedOffset(connection: c, request: k)
                if intended >= duration { break }
                let sent = max(intended, free)
                let done = sent + service(sent)
                rec.record(intended: intended, sent: sent, completed: done)
                free = done
                k += 1
            }
        }
        return rec
    }
}

@Suite struct CoordinatedOmissionTests {
    let ms: UInt64 = 1_000_000
    let second: UInt64 = 1_000_000_000

    @Test func fixedServiceTimeGivesThatLatencyEverywhere() {
        let run = SimulatedRun(service: { _ in 2 * 1_000_000 })
        let open = run.openLoop(rate: 100, connections: 2, duration: 10 * second)
        #expect(open.count == 1000)
        for h in [open.corrected, open.uncorrected] {
            #expect(h.valueAtPercentile(50) == 2000)
            #expect(h.valueAtPercentile(99.99) == 2000)
            #expect(h.max == 2000)
        }
    }

    @Test func aOneSecondStallShowsInTheOpenLoopTailButNotInTheClosedLoopUncorrected() {
        // 1 ms per request, except that nothing is served between t = 5 s and t = 6 s.
        let stall = { (t: UInt64) -> UInt64 in
            t >= 5 * 1_000_000_000 && t < 6 * 1_000_000_000 ? 6 * 1_000_000_000 - t + 1_000_000 : 1_000_000
        }
        let run = SimulatedRun(service: stall)

        // Closed loop, one connection, 10 s: 5,000 requests at 1 ms before the stall, one that waits it out
        // (1,001 ms), 3,999 at 1 ms after. The stall is one sample among 9,000: invisible below p99.99.
        let closed = run.closedLoop(connections: 1, duration: 10 * second)
        #expect(closed.count == 9000)
        #expect(closed.uncorrected.valueAtPercentile(99) == 1000)
        #expect(closed.uncorrected.valueAtPercentile(99.9) == 1000)
        #expect(closed.uncorrected.max >= 1_000_000)

        // Open loop at 500 req/s (a request every 2 ms, served in 1 ms), 5,000 requests. The 500 scheduled
        // during the stall complete at 6.001 s + j ms: latencies 1,001 ms down to 502 ms. They leave a
        // backlog of 500 that drains at 1 ms per 2 ms, so the next 500 see 501 ms down to 2 ms. Sorted:
        // 4,000 at 1 ms, then one each of 2 … 1,001 ms. p90 is rank 4,500 → 501 ms; p95 → 751 ms;
        // p99 → 951 ms (within the histogram's 0.1 %).
        let open = run.openLoop(rate: 500, connections: 1, duration: 10 * second)
        #expect(open.count == 5000)
        #expect(open.corrected.valueAtPercentile(50) == 1000)
        func near(_ v: UInt64, _ ms: UInt64) -> Bool { v >= ms * 999 && v <= ms * 1001 }
        #expect(near(open.corrected.valueAtPercentile(90), 501))
        #expect(near(open.corrected.valueAtPercentile(95), 751))
        #expect(near(open.corrected.valueAtPercentile(99), 951))
        #expect(near(open.corrected.max, 1001))
        // Measured from when each request actually left, the same run hides the stall again: requests queued
        // behind it leave when it ends and take 1 ms.
        #expect(open.uncorrected.valueAtPercentile(99) == 1000)
    }

    @Test func recordersMergeAcrossReactors() {
        var a = LatencyRecorder()
        var b = LatencyRecorder()
        a.record(intended: 0, sent: 0, completed: 1 * ms)
        b.record(intended: 0, sent: 5 * ms, completed: 10 * ms)
        a.merge(b)
        #expect(a.count == 2)
        #expect(a.corrected.max == 10_000 || a.corrected.valuesAreEquivalent(a.corrected.max, 10_000))
        #expect(a.uncorrected.valuesAreEquivalent(a.uncorrected.max, 5_000))
    }
}

@Suite struct ReportTests {
    func sampleReport(targetRate: UInt64?) -> RunReport {
        var rec = LatencyRecorder()
        for i in 1...1000 as ClosedRange<UInt64> { rec.record(intended: 0, sent: 0, completed: i * 1000) }
        return RunReport(recorder: rec, durationSeconds: 2, targetRate: targetRate,
                         errors: ErrorCounts(connect: 1, timeout: 2, reset: 3, status4xx: 4, status5xx: 5),
                         bytesSent: 10, bytesReceived: 20)
    }

    @Test func jsonHasTheDocumentedFields() throws {
        let doc = try JSONSerialization.jsonObject(with: Data(sampleReport(targetRate: 500).json.utf8)) as! [String: Any]
        #expect(Set(doc.keys) == ["requests", "duration_s", "requests_per_second", "target_rate", "latency_us",
                                  "latency_uncorrected_us", "errors", "bytes_sent", "bytes_received"])
        #expect(doc["requests"] as? Int == 1000)
        #expect(doc["requests_per_second"] as? Double == 500)
        #expect(doc["target_rate"] as? Int == 500)
        let latency = doc["latency_us"] as! [String: Any]
        #expect(Set(latency.keys) == ["p50", "p75", "p90", "p99", "p99_9", "p99_99", "max"])
        #expect((latency["p50"] as! Int) >= 499 && (latency["p50"] as! Int) <= 501)
        let errors = doc["errors"] as! [String: Int]
        #expect(errors == ["connect": 1, "timeout": 2, "reset": 3, "status_4xx": 4, "status_5xx": 5])
        let closed = try JSONSerialization.jsonObject(with: Data(sampleReport(targetRate: nil).json.utf8)) as! [String: Any]
        #expect(closed["target_rate"] is NSNull)
    }

    @Test func comparisonReportsAddedLatency() throws {
        var fast = LatencyRecorder(), slow = LatencyRecorder()
        for _ in 0..<100 {
            fast.record(intended: 0, sent: 0, completed: 1_000_000)
            slow.record(intended: 0, sent: 0, completed: 1_250_000)
        }
        let report = ComparisonReport(
            a: RunReport(recorder: fast, durationSeconds: 1, targetRate: nil, errors: ErrorCounts(), bytesSent: 0, bytesReceived: 0),
            b: RunReport(recorder: slow, durationSeconds: 1, targetRate: nil, errors: ErrorCounts(), bytesSent: 0, bytesReceived: 0))
        let doc = try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as! [String: Any]
        #expect(Set(doc.keys) == ["a", "b", "added_latency_us"])
        let added = doc["added_latency_us"] as! [String: Int]
        #expect(added["p50"] == 250)
        #expect(added["max"] == 250)
    }

    @Test func numbersAreJSONNumbers() {
        #expect(RunReport.number(2) == "2.000")
        #expect(RunReport.number(0.0005) == "0.001")
        #expect(RunReport.number(-1.5) == "-1.500")
        #expect(RunReport.number(.nan) == "0")
    }
}

@Suite struct PlotTests {
    @Test func svgIsWellFormedWithOneCurvePerSeries() throws {
        var a = LatencyRecorder(), b = LatencyRecorder()
        for i in 1...10_000 as ClosedRange<UInt64> {
            a.record(intended: 0, sent: 0, completed: i * 100)
            b.record(intended: 0, sent: 0, completed: i * 150)
        }
        let svg = PercentilePlot.svg(series: [("direct", a.corrected), ("through <tern>", b.corrected)], title: "added latency")
        let doc = try XMLDocument(data: Data(svg.utf8))
        #expect(doc.rootElement()?.name == "svg")
        #expect(try doc.nodes(forXPath: "//*[local-name()='polyline']").count == 2)
        #expect(svg.contains("through &lt;tern&gt;"))
    }
}

@Suite struct CompareAndDueTests {
    @Test func slicesAlternateAFirstAndSplitTheWindow() {
        let s = CompareSlices(start: 1_000, length: 250)
        #expect(s.target(at: 1_000) == 0)
        #expect(s.target(at: 1_249) == 0)
        #expect(s.target(at: 1_250) == 1)
        #expect(s.target(at: 1_500) == 0)
        // Window [1,100, 2,050): A has [1,100,1,250) + [1,500,1,750) + [2,000,2,050) = 150 + 250 + 50.
        #expect(s.time(of: 0, from: 1_100, to: 2_050) == 450)
        #expect(s.time(of: 1, from: 1_100, to: 2_050) == 500)
        #expect(s.time(of: 0, from: 2_000, to: 2_000) == 0)
    }

    @Test func dueHeapPopsInTimeOrder() {
        var heap = DueHeap(capacity: 64)
        var generator = SystemRandomNumberGenerator()
        var pushed: [UInt64] = []
        for c in 0..<64 {
            let at = UInt64.random(in: 0..<1_000, using: &generator)
            pushed.append(at)
            heap.push(at: at, client: c)
        }
        var popped: [UInt64] = []
        while let top = heap.top {
            #expect(pushed[top.client] == top.at)
            popped.append(top.at)
            heap.pop()
        }
        #expect(popped == pushed.sorted())
    }
}
