// Publishes the route tables the reactors serve from (`--config`), and resolves the tables' DNS endpoints on a
// thread of its own, beside the reactors: getaddrinfo blocks, so no reactor ever waits for a name.
//
// The configuration, as compiled, is the template; what the reactors read is `template.resolved(answers)`. A
// reload (main thread) replaces the template, a changed answer (resolver thread) the answers; either publishes
// a new table, under one lock, so the cell has one publisher at a time (SnapshotCell's rule). A lookup runs
// outside the lock, and an answer that did not change publishes nothing.
import Synchronization
import TernConfig
import TernCore
import TernIO

final class RoutePublisher: Sendable {
    private struct State {
        var template: RouteTable
        var refresh: DNSRefresh
        /// Woken after each publish, so an idle reactor picks the table up (and reports) at once.
        var reactors: [ReactorControl] = []
    }

    let cell: SnapshotCell<RouteTable>
    private let state: Mutex<State>
    private let stopRequested = Atomic<Bool>(false)
    private let exited = Atomic<Bool>(false)

    /// A publisher whose first table is `template` with no DNS answer yet (its DNS endpoints left out).
    init(template: RouteTable, readers: Int, refresh: DNSRefresh = DNSRefresh()) {
        var refresh = refresh
        refresh.track(template.dnsNames, now: System.monotonicNanos())
        cell = SnapshotCell(template.resolved(refresh.answers), readers: readers)
        state = Mutex(State(template: template, refresh: refresh))
    }

    /// The reactors to wake after each publish (they are created after the first table).
    func attach(_ reactors: [ReactorControl]) {
        state.withLock { $0.reactors = reactors }
    }

    /// A new configuration (main thread): published at once with the answers known. A name it adds is looked
    /// up straight away; until its answer arrives its endpoints are left out (503 UH).
    func apply(_ template: RouteTable) {
        let reactors = state.withLock { s in
            s.template = template
            s.refresh.track(template.dnsNames, now: System.monotonicNanos())
            cell.publish(template.resolved(s.refresh.answers))
            return s.reactors
        }
        reactors.forEach { $0.wake() }
    }

    /// Starts the resolver thread; false when the system refuses a thread.
    func start() -> Bool {
        ReactorThread.start(name: "tern-dns") { [self] in
            resolve()
            exited.store(true, ordering: .releasing)
        } != nil
    }

    /// Waits until every name of the current configuration has been looked up once, or `timeout` passes: at
    /// start, so the first connections already find their DNS endpoints (Envoy warms DNS clusters before it
    /// serves). False on timeout.
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
        let deadline = System.monotonicNanos() + timeout.nanoseconds
        while !exited.load(ordering: .acquiring) && System.monotonicNanos() < deadline { Signals.sleep(milliseconds: 5) }
    }

    /// The resolver thread: looks up each name when it is due, one at a time, and publishes when an answer changes.
    private func resolve() {
        var failing: Set<String> = []
        while !stopRequested.load(ordering: .acquiring) {
            let now = System.monotonicNanos()
            guard let next = state.withLock({ $0.refresh.next() }), next.due <= now else {
                // Nothing due: sleep until the next name is, at most 100 ms (a reload may add names meanwhile).
                let wait = state.withLock { $0.refresh.next() }.map { $0.due > now ? ($0.due - now) / 1_000_000 : 0 } ?? 100
                Signals.sleep(milliseconds: Int(min(max(wait, 1), 100)))
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
                if changed { cell.publish(s.template.resolved(s.refresh.answers)) }
                return (changed, s.refresh.answers[name], changed ? s.reactors : [])
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
                Log.info("dns \(name): \(answer.joined(separator: ",")); route table republished")
            }
        }
    }
}
