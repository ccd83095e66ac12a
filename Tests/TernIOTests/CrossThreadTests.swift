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

    func bugReportsCountFromManyThreads() {
        let before = Bugs.count.load(ordering: .relaxed)
        Bugs.reporter.withLock { $0 = { _ in } }
        // bug() traps in debug builds, so exercise what it shares: the counter and the reporter.
        let threads = (0..<4).compactMap { _ in
            ReactorThread.start(name: "test-bug") {
                for _ in 0..<100 {
                    Bugs.count.add(1, ordering: .relaxed)
                    let r = Bugs.reporter.withLock { $0 }
                    r?("x")
                }
            }
        }
        threads.forEach { $0.join() }
        let after = Bugs.count.load(ordering: .relaxed)
        #expect(after - before == 400)
    }
}

@Suite(.serialized) struct CrossThreadTests {
    @Test func epollLoopStopsOnRequest() throws {
        try CrossThreadChecks<EpollBackend>().drainAndStopFromAnotherThreadEndTheLoop()
    }

    @Test(.enabled(if: Backends.uringAvailable, "io_uring cannot be set up on this kernel"))
    func uringLoopStopsOnRequest() throws {
        try CrossThreadChecks<URingBackend>().drainAndStopFromAnotherThreadEndTheLoop()
    }

    @Test func bugCounterFromManyThreads() {
        CrossThreadChecks<EpollBackend>().bugReportsCountFromManyThreads()
    }
}
