// The process side of a run: picks the backend and the cores, starts one pinned reactor thread per core with
// its share of the connections, publishes the start once every connection is up, shows progress, turns
// SIGINT into "stop now and report what was measured", merges the reactors' histograms and writes the reports.
import Synchronization
import TernCore
import TernIO
import TernLoadCore

enum LoadRun {
    /// Runs the load; returns the exit status (0, or 1 for a runtime failure, with one line on stderr).
    static func run(_ settings: LoadSettings) -> Int32 {
        Signals.ignoreBrokenPipe()
        // Before any thread starts: reactors inherit the blocked mask, SIGINT is read here.
        guard let signals = Signals.takeOver() else {
            System.writeStderr("tern-load: cannot set up signal handling")
            return 1
        }
        let limits = System.raiseOpenFileLimit()
        let socketsNeeded = UInt64(settings.connections * (settings.compare ? 2 : 1))
        if socketsNeeded + 64 > limits.soft {
            System.writeStderr("tern-load: \(socketsNeeded) sockets need more descriptors than the open-file limit allows (\(limits.soft)); raise it with ulimit -n or use fewer --connections")
            return 1
        }
        let kind: IOBackendKind
        switch resolveBackend(settings.ioBackend) {
        case .success(let k): kind = k
        case .failure(let e):
            System.writeStderr("tern-load: \(e.description)")
            return 1
        }
        let cpus = resolveCores(settings.cores, connections: settings.connections)
        let plans = plan(settings, reactors: cpus.count)
        let clock = RunClock()
        let links = plans.map { _ in ReactorLink() }
        var backendSettings = BackendSettings()
        let perReactor = (settings.connections + cpus.count - 1) / cpus.count * (settings.compare ? 2 : 1)
        // Received bytes are read in place and the buffer is returned at once, so a buffer per connection (up to
        // 4,096 per reactor) covers a batch of responses; the provided-buffer ring cycles through every buffer,
        // so this is also the resident memory they take.
        var buffers = 256
        while buffers < min(perReactor, 4096) { buffers *= 2 }
        backendSettings.bufferCount = buffers

        var threads: [ReactorThread] = []
        for (r, cpu) in cpus.enumerated() {
            let plan = plans[r], link = links[r], bs = backendSettings
            let body: @Sendable () -> Void = {
                _ = System.pinCurrentThread(to: cpu)
                Files.setTimerSlack(nanos: 1)
                switch kind {
                case .io_uring: runReactor(URingBackend.self, plan: plan, link: link, clock: clock, settings: bs)
                case .epoll: runReactor(EpollBackend.self, plan: plan, link: link, clock: clock, settings: bs)
                }
            }
            guard let t = ReactorThread.start(name: "tern-load-r\(r)", body) else {
                System.writeStderr("tern-load: cannot start reactor thread \(r)")
                clock.stop.store(true, ordering: .relaxed)
                threads.forEach { $0.join() }
                return 1
            }
            threads.append(t)
        }

        // Connect first, so the schedule starts with every connection ready (connect time is not latency).
        var interrupted = false
        let connectDeadline = System.monotonicNanos() + settings.timeoutNanos
        while !links.allSatisfy({ $0.connected.load(ordering: .acquiring) || $0.exited.load(ordering: .acquiring) }) {
            if let sig = signals.wait(milliseconds: 5), Signals.isStop(sig) { interrupted = true; break }
            if System.monotonicNanos() > connectDeadline { break }
        }
        let start = System.monotonicNanos()
        let startEpoch = Files.wallClockSeconds()
        var intervals = IntervalLog(reactors: cpus.count, compare: settings.compare)
        intervals.offsetSeconds = Double(settings.warmupNanos) / 1e9
        clock.start.store(start, ordering: .releasing)
        if interrupted { clock.stop.store(true, ordering: .relaxed) }

        // Progress once a second on a terminal; SIGINT stops the run.
        let progress = Files.stderrIsTerminal && !interrupted
        var stoppedAt: UInt64? = interrupted ? start : nil
        var lastShown = start, lastCompleted: UInt64 = 0, shown = false
        while !links.allSatisfy({ $0.exited.load(ordering: .acquiring) }) {
            if let sig = signals.wait(milliseconds: 100), Signals.isStop(sig), stoppedAt == nil {
                interrupted = true
                stoppedAt = System.monotonicNanos()
                clock.stop.store(true, ordering: .relaxed)
            }
            if settings.hdrLogPath != nil { intervals.take(from: links) }
            let now = System.monotonicNanos()
            if progress && stoppedAt == nil && now - lastShown >= 1_000_000_000 {
                let completed = links.reduce(0) { $0 + $1.completed.load(ordering: .relaxed) }
                let failed = links.reduce(0) { $0 + $1.failed.load(ordering: .relaxed) }
                let rate = Double(completed - lastCompleted) * 1e9 / Double(now - lastShown)
                let elapsed = Double(now - start) / 1e9
                let phase = now < start + settings.warmupNanos ? "  (warming up)" : ""
                Files.printStderr("\r\u{1B}[K  \(RunReport.number(elapsed)) s  \(Int(rate.rounded())) req/s  \(completed) requests  \(failed) errors\(phase)")
                lastShown = now
                lastCompleted = completed
                shown = true
            }
        }
        threads.forEach { $0.join() }
        if shown { Files.printStderr("\r\u{1B}[K") }
        if let f = links.compactMap({ $0.failure.withLock { $0 } }).first {
            System.writeStderr("tern-load: \(f)")
            return 1
        }
        let results = links.compactMap { $0.result.withLock { $0 } }
        if interrupted { System.writeStderr("tern-load: interrupted: results so far") }

        // The measured window: from the end of the warm-up to the planned end, the interruption, or (for a
        // request count) the last response.
        let measureStart = start + settings.warmupNanos
        var measureEnd: UInt64
        switch settings.stop {
        case .duration(let d): measureEnd = measureStart + d
        case .requests: measureEnd = max(results.map(\.lastCompletion).max() ?? measureStart, measureStart)
        }
        if let stoppedAt { measureEnd = min(measureEnd, max(stoppedAt, measureStart)) }
        intervals.take(from: links)
        intervals.finish(measuredSeconds: Double(measureEnd - measureStart) / 1e9)
        let outcome = Outcome(settings: settings, results: results, start: start, measureStart: measureStart,
                              measureEnd: measureEnd, startEpoch: startEpoch, backend: kind, cores: cpus.count,
                              intervalLog: intervals.lines)
        return outcome.write()
    }

    private static func runReactor<B: IOBackend>(_ type: B.Type, plan: ReactorPlan, link: ReactorLink, clock: RunClock,
                                                 settings: BackendSettings) {
        do {
            let backend = try B(settings: settings)
            let client = LoadClient(backend: backend, plan: plan, link: link, clock: clock)
            let result = try client.run()
            link.result.withLock { $0 = result }
        } catch {
            link.failure.withLock { $0 = "reactor: \(error)" }
        }
        link.exited.store(true, ordering: .releasing)
    }

    /// auto: io_uring when it can be set up here, else epoll (container seccomp profiles often refuse io_uring).
    static func resolveBackend(_ choice: BackendChoice) -> Result<IOBackendKind, TargetError> {
        switch choice {
        case .epoll: return .success(.epoll)
        case .io_uring, .auto:
            do {
                _ = try URingBackend(settings: BackendSettings())
                return .success(.io_uring)
            } catch {
                if choice == .auto { return .success(.epoll) }
                return .failure(TargetError("--io-backend io_uring: io_uring cannot be set up: \(error)"))
            }
        }
    }

    /// One reactor per CPU of the inherited affinity mask (capped by a cgroup CPU quota) or `--cores`, never
    /// more than there are connections.
    static func resolveCores(_ requested: Int?, connections: Int) -> [Int] {
        let cpus = System.affinityCPUs()
        var n = requested ?? cpus.count
        if requested == nil, let quota = System.cgroupCPUQuota() { n = min(n, quota) }
        n = max(1, min(n, connections))
        return (0..<n).map { cpus[$0 % cpus.count] }
    }

    /// Contiguous ranges of connections per reactor, and --requests split the same way.
    static func plan(_ settings: LoadSettings, reactors: Int) -> [ReactorPlan] {
        var plans: [ReactorPlan] = []
        var first = 0
        for r in 0..<reactors {
            let n = settings.connections / reactors + (r < settings.connections % reactors ? 1 : 0)
            var quota: UInt64? = nil
            if case .requests(let total) = settings.stop {
                quota = total / UInt64(reactors) + (UInt64(r) < total % UInt64(reactors) ? 1 : 0)
            }
            plans.append(ReactorPlan(settings: settings, clients: first..<(first + n), requestQuota: quota))
            first += n
        }
        return plans
    }
}
