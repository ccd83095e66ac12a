// Late completions for the reactor handlers' tests (ARCHITECTURE.md §3: a completion that arrives for a slot after
// it was freed and given to a new connection carries the old generation, and must be dropped). A handler (the TCP
// relay, the HTTP proxy) runs in a real reactor loop on its own thread, fed by real sockets; between events the
// test thread has it handed completions it makes up (a failed connect, a failed send), or arms single-shot receives
// on spare sockets under tokens it chooses, so that their completions hold real pooled buffers, as a backend would
// hand them over. Each such completion is recorded with what was around it: the pool's free buffers and the test's
// description of the state it must leave alone, just before and just after the handler took it.
import Synchronization
import Testing
import TernCore
import TernIO

/// A completion the injector handed to the handler, and what it saw around it (on the reactor thread).
struct LateDelivery: Sendable {
    var token: Token
    var result: Int32
    /// It held a pooled buffer (the bytes of a late receive).
    var hadBuffer: Bool
    /// Free receive buffers just before the handler took it and just after.
    var freeBuffersBefore: Int
    var freeBuffersAfter: Int
    /// The test's `observe` just before and just after.
    var before: String
    var after: String
}

/// The handler as the reactor's handler, plus what the test thread asks for between events. Everything else is
/// passed through unchanged, so the handler sees the loop exactly as `tern` runs it.
final class LateCompletionInjector<Handler: ReactorHandler & SendableMetatype>: ReactorHandler {
    typealias Backend = Handler.Backend
    let handler: Handler
    private let shared: LateCompletions<Handler>
    private let observe: (Handler) -> String
    /// Tokens of the receives armed for the test: their completions are recorded as late ones. (A token the
    /// handler has in flight itself is told apart only by which completes first: the test sends to the spare
    /// socket alone.)
    private var lateReceives: [Token] = []

    init(_ handler: Handler, shared: LateCompletions<Handler>, observe: @escaping (Handler) -> String) {
        self.handler = handler
        self.shared = shared
        self.observe = observe
    }

    func iteration(_ reactor: Reactor<Backend>) {
        handler.iteration(reactor)
        shared.running.store(true, ordering: .releasing)
        for task in shared.takeTasks() { task(self, reactor) }
    }

    func handle(_ c: Completion, _ reactor: Reactor<Backend>) {
        if let i = lateReceives.firstIndex(of: c.token) {
            lateReceives.remove(at: i)
            shared.record(deliver(c, reactor))
        } else {
            handler.handle(c, reactor)
        }
    }

    func timerFired(_ token: Token, _ reactor: Reactor<Backend>) { handler.timerFired(token, reactor) }

    var finished: Bool { handler.finished }

    /// Hands `c` to the handler as the backend would.
    func deliver(_ c: Completion, _ reactor: Reactor<Backend>) -> LateDelivery {
        let before = observe(handler)
        let free = reactor.backend.buffers.available
        handler.handle(c, reactor)
        return LateDelivery(token: c.token, result: c.result, hadBuffer: c.bufferID != nil, freeBuffersBefore: free,
                            freeBuffersAfter: reactor.backend.buffers.available, before: before, after: observe(handler))
    }

    /// Fires the timer under `token` at the handler as the reactor's wheel would.
    func fire(_ token: Token, _ reactor: Reactor<Backend>) -> LateDelivery {
        let before = observe(handler)
        let free = reactor.backend.buffers.available
        handler.timerFired(token, reactor)
        return LateDelivery(token: token, result: 0, hadBuffer: false, freeBuffersBefore: free,
                            freeBuffersAfter: reactor.backend.buffers.available, before: before, after: observe(handler))
    }

    /// Arms a single-shot receive on `fd` under `token`; its completion goes to the handler as a late one.
    func armLateReceive(fd: Int32, token: Token, _ reactor: Reactor<Backend>) {
        lateReceives.append(token)
        reactor.backend.receive(fd: fd, token: token, multishot: false)
    }
}

/// What the test thread and the reactor thread share (atomics and locks: the handler itself never leaves its
/// thread), and the test thread's side of it.
final class LateCompletions<Handler: ReactorHandler & SendableMetatype>: Sendable {
    typealias Task = @Sendable (LateCompletionInjector<Handler>, Reactor<Handler.Backend>) -> Void

    let control = ReactorControl()
    /// Set on the reactor thread: its loop is running, or it could not start (`error`).
    let running = Atomic<Bool>(false)
    let error = Mutex<String?>(nil)
    private let tasks = Mutex<[Task]>([])
    private let deliveries = Mutex<[LateDelivery]>([])
    private let thread = Mutex<ReactorThread?>(nil)

    private init() {}

    /// Starts a reactor thread: its backend is made there with `settings` (io_uring binds a ring to the thread that
    /// first submits), its handler by `make`, run under an injector that describes the handler's state with
    /// `observe`. Returns once the loop runs.
    static func start(settings: BackendSettings, make: @escaping @Sendable (Handler.Backend) -> Handler,
                      observe: @escaping @Sendable (Handler) -> String) throws -> LateCompletions
    {
        let shared = LateCompletions()
        let started = try #require(ReactorThread.start(name: "test-reactor") {
            do {
                let backend = try Handler.Backend(settings: settings)
                let reactor = Reactor(index: 0, backend: backend, control: shared.control, timerCapacity: 64)
                try reactor.run(LateCompletionInjector(make(backend), shared: shared, observe: observe))
            } catch {
                shared.error.withLock { $0 = "\(error)" }
            }
        })
        shared.thread.withLock { $0 = started }
        try #require(Loopback.eventually { shared.running.load(ordering: .acquiring) || shared.error.withLock { $0 } != nil })
        let startError = shared.error.withLock { $0 }
        try #require(startError == nil, "the reactor did not start")
        return shared
    }

    /// Stops the loop and joins its thread. A loop that does not end within the deadline (a handler that lost
    /// count of its operations never finishes) is reported, and its thread left behind rather than waited for.
    func stop() {
        control.requestStop()
        guard Loopback.eventually({ control.exited.load(ordering: .acquiring) }) else {
            Issue.record("the reactor did not stop")
            return
        }
        thread.withLock { $0 }?.join()
        let error = self.error.withLock { $0 }
        #expect(error == nil, "the reactor loop failed")
    }

    /// Runs `body` on the reactor thread between two events and returns its result; nil when the reactor did not
    /// get to it before the deadline.
    func onReactor<T: Sendable>(_ body: @escaping @Sendable (Handler, Reactor<Handler.Backend>) -> T) -> T? {
        onInjector { injector, reactor in body(injector.handler, reactor) }
    }

    /// Hands the handler `completion` as if the backend had just reaped it.
    func deliver(_ completion: Completion) -> LateDelivery? {
        onInjector { injector, reactor in injector.deliver(completion, reactor) }
    }

    /// Fires the timer under `token` at the handler, as if its deadline had just passed.
    func fire(_ token: Token) -> LateDelivery? {
        onInjector { injector, reactor in injector.fire(token, reactor) }
    }

    /// Arms a single-shot receive on `fd` under `token`: once the test sends to `fd`'s peer, the completion, its
    /// bytes in a pooled buffer, goes to the handler (see `delivery(of:)`).
    func armReceive(fd: Int32, token: Token) -> Bool {
        onInjector { injector, reactor in injector.armLateReceive(fd: fd, token: token, reactor) } != nil
    }

    /// The record of the late receive under `token`, once its completion went to the handler (nil: not before
    /// the deadline).
    func delivery(of token: Token) -> LateDelivery? {
        var found: LateDelivery? = nil
        _ = Loopback.eventually {
            found = deliveries.withLock { d in
                guard let i = d.firstIndex(where: { $0.token == token }) else { return nil }
                return d.remove(at: i)
            }
            return found != nil
        }
        return found
    }

    // MARK: - The reactor thread's side

    func takeTasks() -> [Task] { tasks.withLock { t in defer { t = [] }; return t } }
    func record(_ delivery: LateDelivery) { deliveries.withLock { $0.append(delivery) } }

    private final class Outcome<T: Sendable>: Sendable {
        let value = Mutex<T?>(nil)
    }

    private func onInjector<T: Sendable>(_ body: @escaping @Sendable (LateCompletionInjector<Handler>, Reactor<Handler.Backend>) -> T) -> T? {
        let outcome = Outcome<T>()
        tasks.withLock { $0.append { injector, reactor in
            let result = body(injector, reactor)
            outcome.value.withLock { $0 = result }
        } }
        control.wake()
        var result: T? = nil
        _ = Loopback.eventually {
            result = outcome.value.withLock { $0 }
            return result != nil
        }
        return result
    }
}
