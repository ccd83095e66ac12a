// Plain pthreads for reactors (ARCHITECTURE.md §3: no Swift concurrency on reactor threads).
internal import CTernLinux
import Glibc

/// A joinable OS thread running one closure. Sendable: the handle is a plain pthread_t that any one thread may
/// join (the span exporter is stopped from the main thread).
public struct ReactorThread: Sendable {
    private let handle: pthread_t

    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Starts a thread running `body`; nil when the system refuses another thread.
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) -> ReactorThread? {
        let box = unsafe Unmanaged.passRetained(Box({
            _ = unsafe name.withCString { unsafe CTernLinux_set_thread_name($0) }
            body()
        }))
        var handle = pthread_t()
        // SAFETY: the retained box is released by the thread itself after running the body.
        let rc = unsafe pthread_create(&handle, nil, { arg in
            let box = unsafe Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            box.body()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            unsafe box.release()
            return nil
        }
        return ReactorThread(handle: handle)
    }

    private init(handle: pthread_t) { self.handle = handle }

    /// Waits for the thread to finish.
    public func join() {
        _ = pthread_join(handle, nil)
    }
}
