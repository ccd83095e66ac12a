// What other threads may do to a running reactor: request a drain and a stop, wake it, read its counters.
// Also run under the thread sanitizer (Tools/scripts/test.sh).
import Synchronization
import Testing
import TernCore
import TernIO

/// A handler that only watches the control flags, as the relay does.
final class ControlWatcher<B: IOBackend>: ReactorHandler {
    typealias Backend = B
    var drained = false
    var stopped = false
    let outcome: Outcome
    init(outcome: Outcome) { self.outcome = outcome }
    func iteration(_ reactor: Reactor<B>) {
        drained = drained || reactor.control.drainRequested.load(ordering: .acquiring)
        stopped = stopped || reactor.control.stopRequested.load(ordering: .acquiring)
    }
    func handle(_ completion: Completion, _ reactor: Reactor<B>) {}
    func timerFired(_ token: Token, _ reactor: Reactor<B>) { outcome.timerFired.store(true, ordering: .releasing) }
    var finished: Bool { drained && stopped }
}

final class Outcome: Sendable {
    let error = Mutex<String?>(nil)
    let timerFired = Atomic<Bool>(false)
}

struct CrossThreadChecks<B: IOBackend> {
    func drainAndStopFromAnotherThreadEndTheLoop() throws {
        let control = ReactorControl()
        let outcome = Outcome()
        let thread = try #require(ReactorThread.start(name: "test-reactor") {
            do {
                let reactor = Reactor(index: 0, backend: try B(settings: BackendSettings()), control: control)
                let handler = ControlWatcher<B>(outcome: outcome)
                _ = reactor.timers.schedule(Token(op: 1, slot: 0, generation: 0), at: System.monotonicNanos() + 1_000_000)
                try reactor.run(handler)
            } catch {
                outcome.error.withLock { $0 = "\(error)" }
            }
        })
        // Wait (bounded) until the loop is running and its timer fired, then ask from this thread.
        let deadline = System.monotonicNanos() + 5_000_000_000
        while !outcome.timerFired.load(ordering: .acquiring) && System.monotonicNanos() < deadline {
            Signals.sleep(milliseconds: 1)
        }
        control.requestDrain()
        control.requestStop()
        thread.join()
        #expect(outcome.error.withLock { $0 } == nil)
        let exited = control.exited.load(ordering: .acquiring)
        let fired = outcome.timerFired.load(ordering: .acquiring)
        #expect(exited)
        #expect(fired, "the reactor's timer wheel fired while it ran")
    }

    /// Calls TernCore's `bug()` itself from several threads at once: every call is counted in `Bugs.count` and
    /// reaches the installed reporter with its file and line, none lost to a race.
    func bugReportsCountFromManyThreads() throws {
        let threads = 4
        let calls = 250
        let seen = ReportTally()
        let saved = Bugs.reporter.withLock { $0 }
        // Reports from elsewhere (another test's bug()) are not this test's: only marked ones are tallied. Any
        // unmarked bug() meanwhile still shows, as a count above threads × calls.
        Bugs.reporter.withLock {
            $0 = { message in
                if message.contains("CrossThreadTests.swift:") && message.hasSuffix(": counted from many threads") {
                    seen.reports.add(1, ordering: .relaxed)
                }
            }
        }
        // bug() traps in a debug build after counting and reporting; this test wants it to return.
        let trapped = Bugs.trapsInDebug.exchange(false, ordering: .relaxed)
        defer {
            Bugs.trapsInDebug.store(trapped, ordering: .relaxed)
            Bugs.reporter.withLock { $0 = saved }
        }
        let before = Bugs.count.load(ordering: .relaxed)
        let started = (0..<threads).compactMap { _ in
            ReactorThread.start(name: "test-bug") {
                // All threads call at once, so their adds and reports overlap.
                seen.ready.add(1, ordering: .relaxed)
                let deadline = System.monotonicNanos() + 5_000_000_000
                while seen.ready.load(ordering: .relaxed) < threads && System.monotonicNanos() < deadline {}
                for _ in 0..<calls { bug("counted from many threads") }
            }
        }
        started.forEach { $0.join() }
        try #require(started.count == threads, "only \(started.count) threads started")
        #expect(Bugs.count.load(ordering: .relaxed) - before == threads * calls)
        #expect(seen.reports.load(ordering: .relaxed) == threads * calls)
    }
}

/// What the bug reporter saw, shared with the threads that call `bug()`.
final class ReportTally: Sendable {
    let reports = Atomic<Int>(0)
    let ready = Atomic<Int>(0)
}

@Suite(.serialized) struct CrossThreadTests {
    @Test func epollLoopStopsOnRequest() throws {
        try CrossThreadChecks<EpollBackend>().drainAndStopFromAnotherThreadEndTheLoop()
    }

    @Test(.enabled(if: Backends.uringAvailable, "io_uring cannot be set up on this kernel"))
    func uringLoopStopsOnRequest() throws {
        try CrossThreadChecks<URingBackend>().drainAndStopFromAnotherThreadEndTheLoop()
    }

    @Test func bugCounterFromManyThreads() throws {
        try CrossThreadChecks<EpollBackend>().bugReportsCountFromManyThreads()
    }

    /// Turning the trap off is for that test only: by default `bug()` still stops a debug build.
    @Test func bugTrapsInADebugBuildByDefault() async {
        let traps = Bugs.trapsInDebug.load(ordering: .relaxed)
        #expect(traps)
        #if DEBUG
        await #expect(processExitsWith: .failure) { bug("trapped in a child process") }
        #endif
    }
}
