import Synchronization
import TernCore

/// What a reactor runs: a protocol handler written once and specialised per backend.
public protocol ReactorHandler: AnyObject {
    associatedtype Backend: IOBackend
    /// Called once per loop iteration before waiting (drain control requests here).
    func iteration(_ reactor: Reactor<Backend>)
    /// A completion for one of the handler's tokens.
    func handle(_ completion: Completion, _ reactor: Reactor<Backend>)
    /// A timer scheduled with the handler's token fired.
    func timerFired(_ token: Token, _ reactor: Reactor<Backend>)
    /// The loop exits once this is true (checked after `iteration`).
    var finished: Bool { get }
}

/// Requests from other threads to one reactor: flags set with release and read once per iteration, plus
/// a wake-up of the backend. This is the whole cross-thread surface of a reactor.
public final class ReactorControl: Sendable {
    /// Stop accepting and finish open work (SIGTERM).
    public let drainRequested = Atomic<Bool>(false)
    /// Close everything now (drain timeout).
    public let stopRequested = Atomic<Bool>(false)
    /// Set by the reactor thread when its loop has exited.
    public let exited = Atomic<Bool>(false)
    /// Loop iterations so far (metrics; relaxed, single writer).
    public let iterations = Atomic<UInt64>(0)
    /// Completions handled and operations submitted so far (metrics; relaxed, single writer).
    public let completions = Atomic<UInt64>(0)
    public let submissions = Atomic<UInt64>(0)
    /// Live connections on this reactor (single writer).
    public let activeConnections = Atomic<Int>(0)
    /// The running reactor's wake-up eventfd, or -1 when it is not running. An atomic rather than a lock:
    /// the thread sanitizer can check it (it cannot see Synchronization.Mutex's futex on Linux).
    @usableFromInline let wakeFD = Atomic<Int32>(-1)
    /// Wake-ups in progress on other threads; the reactor waits for none to be left before its backend
    /// (and so the eventfd) goes away, so a waker never writes into a descriptor number reused meanwhile.
    @usableFromInline let wakersActive = Atomic<Int>(0)

    public init() {}

    public func requestDrain() {
        drainRequested.store(true, ordering: .releasing)
        wake()
    }

    public func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        wake()
    }

    /// Wakes the reactor so it runs an iteration now (a new route table to pick up, a flag to read).
    public func wake() {
        wakersActive.add(1, ordering: .sequentiallyConsistent)
        let fd = wakeFD.load(ordering: .sequentiallyConsistent)
        if fd >= 0 { Waker(eventFD: fd).wake() }
        wakersActive.subtract(1, ordering: .sequentiallyConsistent)
    }
}

/// One event loop on one thread: a backend, a timer wheel and a pipe pool, all owned by that thread.
public final class Reactor<Backend: IOBackend> {
    public let index: Int
    public let backend: Backend
    public let timers: TimerWheel
    public let pipes: PipePool
    public let control: ReactorControl

    public init(index: Int, backend: Backend, control: ReactorControl, timerCapacity: Int = 1 << 20) {
        self.index = index
        self.backend = backend
        self.control = control
        timers = TimerWheel(capacity: timerCapacity, now: System.monotonicNanos())
        pipes = PipePool()
        control.wakeFD.store(backend.waker.eventFD, ordering: .releasing)
    }

    /// Runs the loop until the handler is finished. Submissions made while handling completions are
    /// flushed by the next `wait` (one batch per iteration).
    /// Inlinable so the loop is specialised for each handler type where it is started: handler calls are then
    /// direct calls, not generic dispatch with metadata look-ups on every completion.
    @inlinable
    public func run<H: ReactorHandler>(_ handler: H) throws(IOError) where H.Backend == Backend {
        defer {
            control.wakeFD.store(-1, ordering: .sequentiallyConsistent)
            while control.wakersActive.load(ordering: .sequentiallyConsistent) > 0 {}
            control.exited.store(true, ordering: .releasing)
        }
        while true {
            handler.iteration(self)
            if handler.finished { return }
            let now = System.monotonicNanos()
            let timeout = timers.nanosUntilNext(now: now)
            let n = try backend.wait(timeoutNanos: timeout)
            for i in 0..<n {
                handler.handle(backend.completion(at: i), self)
            }
            timers.expire(now: System.monotonicNanos()) { token in handler.timerFired(token, self) }
            // Single writer: a load and a store, no locked read-modify-write.
            control.iterations.store(control.iterations.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            control.completions.store(backend.completions, ordering: .relaxed)
            control.submissions.store(backend.submissions, ordering: .relaxed)
        }
    }
}
