// Publishes the route tables the reactors serve from (`--config`), and resolves the tables' DNS endpoints on a
// thread of its own, beside the reactors: getaddrinfo blocks, so no reactor ever waits for a name.
//
// The configuration, as compiled, is the template; what the reactors read is `template.resolved(answers)`. A
// reload (main thread) replaces the template, a changed answer (resolver thread) the answers; either publishes
// a new table, under one lock, so the cell has one publisher at a time (SnapshotCell's rule). A lookup runs
// outside the lock, and an answer that did not change publishes nothing.
//
// Like Envoy, which warms a DNS cluster (first resolution) before the configuration that uses it takes over, a
// configuration that brings new names is published once each of them has been looked up, or after `warmup`,
// whichever comes first: until then the previous table keeps serving, so a service moving to a new name has no
// gap of 503s.
import Synchronization
import TernConfig
import TernCore
import TernIO

final class RoutePublisher: Sendable {
    /// How long the first table, and each configuration with new names, waits for their first answers.
    static let warmup = TernDuration.seconds(2)

    private struct State {
        var template: RouteTable
        var refresh: DNSRefresh
        /// Woken after each publish, so an idle reactor picks the table up (and reports) at once.
        var reactors: [ReactorControl] = []
        /// Since when a template waits for the first answers of its new names (nil: the template is published).
        var waitingSince: UInt64? = nil
    }

    let cell: SnapshotCell<RouteTable>
    /// The reactors reading the cell: a table published here is compiled with that many copies of each regex.
    let readers: Int
    private let state: Mutex<State>
    private let doorbell: ThreadWakeup?
    private let stopRequested = Atomic<Bool>(false)
    private let exited = Atomic<Bool>(false)

    /// A publisher whose first table is `template` with no DNS answer yet (its DNS endpoints left out).
    init(template: RouteTable, readers: Int, refresh: DNSRefresh = DNSRefresh()) {
        var refresh = refresh
        refresh.track(template.dnsNames, now: System.monotonicNanos())
        cell = SnapshotCell(template.resolved(refresh.answers), readers: readers)
        self.readers = readers
        state = Mutex(State(template: template, refresh: refresh))
        doorbell = ThreadWakeup()
    }

    /// The reactors to wake after each publish (they are created after the first table).
    func attach(_ reactors: [ReactorControl]) {
        state.withLock { $0.reactors = reactors }
    }

    /// A new configuration (main thread): published at once with the answers known, or, when it brings names
    /// not looked up yet, by the resolver thread once they have been (at most `warmup` later).
    func apply(_ template: RouteTable) {
        let now = System.monotonicNanos()
        let reactors: [ReactorControl] = state.withLock { s in
            s.template = template
            s.refresh.track(template.dnsNames, now: now)
            if s.refresh.unasked > 0 {
                s.waitingSince = s.waitingSince ?? now
                return []
            }
            return publish(&s)
        }
        reactors.forEach { $0.wake() }
        doorbell?.ring()
    }

    /// Main loop: publishes a configuration that has waited `warmup` for its new names (a lookup still in
    /// progress on the resolver thread cannot be interrupted).
    func publishIfOverdue() {
        let now = System.monotonicNanos()
        let reactors: [ReactorControl] = state.withLock { s in
            guard let since = s.waitingSince, now - since >= Self.warmup.nanoseconds else { return [] }
            Log.warn("dns: \(s.refresh.unasked) new names still being looked up after \(Self.warmup); configuration applied without them")
            return publish(&s)
        }
        reactors.forEach { $0.wake() }
    }

    /// Publishes the template with the answers known; returns the reactors to wake. Called with the lock held.
    private func publish(_ s: inout State) -> [ReactorControl] {
        cell.publish(s.template.resolved(s.refresh.answers))
        s.waitingSince = nil
        return s.reactors
    }

    /// Starts the resolver thread; false when the system refuses a thread.
    func start() -> Bool {
        ReactorThread.start(name: "tern-dns") { [self] in
            resolve()
            exited.store(true, ordering: .releasing)
        } != nil
    }

    /// Waits until every name of the current configuration has been looked up once, or `timeout` passes: at
    /// start, so the first connections already find their DNS endpoints. False on timeout.
    func waitForFirstAnswers(timeout: TernDuration) -> Bool {
        let deadline = System.monotonicNanos() + timeout.nanoseconds
        while state.withLock({ $0.refresh.unasked }) > 0 {
            if System.monotonicNanos() >= deadline { return false }
            Signals.sleep(milliseconds: 2)
        }
        return true
    }

    /// Asks the resolver thread to stop and waits for it up to `timeout`: a lookup in progress cannot be
    /// interrupted, and the process does not wait for a slow name server to exit.
    func stop(timeout: TernDuration) {
        stopRequested.store(true, ordering: .releasing)
        doorbell?.ring()
        let deadline = System.monotonicNanos() + timeout.nanoseconds
        while !exited.load(ordering: .acquiring) && System.monotonicNanos() < deadline { Signals.sleep(milliseconds: 5) }
    }

    /// The resolver thread: looks up each name when it is due, one at a time, and publishes when an answer
    /// changes (or when a waiting configuration has had all its new names looked up).
    private func resolve() {
        var failing: Set<String> = []
        while !stopRequested.load(ordering: .acquiring) {
            let now = System.monotonicNanos()
            let upcoming = state.withLock { $0.refresh.next() }
            guard let next = upcoming, next.due <= now else {
                // Nothing due: sleep until the next name is, or until rung (a reload, a stop). Without a
                // doorbell (no eventfd), poll every 100 ms.
                let millis = upcoming.map { ($0.due - now + 999_999) / 1_000_000 } ?? 60_000
                if let doorbell {
                    doorbell.wait(milliseconds: Int32(min(millis, 60_000)))
                } else {
                    Signals.sleep(milliseconds: Int(min(millis, 100)))
                }
                continue
            }
            let name = next.name
            var addresses: [String]? = nil
            var failure = ""
            do {
                addresses = try SocketAddress.lookup(host: name, port: 0).map(\.ip)
            } catch {
                failure = error.description
            }
            let (changed, answer, reactors) = state.withLock { s in
                let changed = s.refresh.record(name, addresses, now: System.monotonicNanos())
                // A waiting configuration goes out once its last new name has been looked up; otherwise a
                // changed answer republishes the current one.
                let due = s.waitingSince == nil ? changed : s.refresh.unasked == 0
                return (changed, s.refresh.answers[name], due ? publish(&s) : [])
            }
            reactors.forEach { $0.wake() }
            if addresses == nil {
                // Said once when a name starts failing; the retries (1 s, 2 s, … up to the refresh interval) at debug.
                let first = failing.insert(name).inserted
                let line = "dns \(name): \(failure); " + (answer.map { "keeping the last answer \($0.joined(separator: ","))" }
                    ?? "no answer yet: its endpoints are left out (503 UH)")
                if first { Log.warn(line) } else { Log.debug(line) }
                continue
            }
            failing.remove(name)
            if changed, let answer {
                Log.info("dns \(name): \(answer.joined(separator: ","))")
            }
        }
    }
}
