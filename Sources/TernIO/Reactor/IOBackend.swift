/// The completion-style API both backends implement (ARCHITECTURE.md §3). Code above the reactor is
/// written once against it and specialised per backend through generics (`Reactor<Backend>`), never through
/// an existential.
///
/// Every operation is submitted with a `Token` and finishes with exactly one `Completion` for that token,
/// except the multishot ones (`accept`, `receive`), which produce completions with `more` set until one
/// without it ends them. Submissions are batched and flushed once per loop iteration by `wait`. A backend
/// belongs to the reactor thread that created it; only `wake()` may be called from other threads.
///
/// Contract shared by both backends:
/// - `splice` and `send` move what they can and complete with the byte count; a short count is normal.
///   A `splice` may complete with -EAGAIN when readiness was spurious: resubmit it.
/// - An operation on a descriptor must finish (or be cancelled and its completion seen) before the
///   descriptor is closed; `shutdown(2)` on a socket makes its pending waits finish promptly.
/// - Buffers named by `Completion.bufferID` belong to the handler until `releaseBuffer`.
/// - When the buffer pool is empty a receive waits (on io_uring, -ENOBUFS re-arms it once buffers return);
///   nothing is allocated.
public protocol IOBackend: AnyObject, SendableMetatype {
    /// Which backend this is, for logs and the admin endpoint.
    static var kind: IOBackendKind { get }

    /// Creates the backend on the calling thread (the reactor thread: io_uring binds a single-issuer ring
    /// to the thread that first submits).
    init(settings: BackendSettings) throws(IOError)

    /// Accept on a listening socket: each completion's result is a new non-blocking socket. Multishot
    /// keeps accepting (the kernel may take the whole backlog at once); single-shot takes one connection,
    /// which lets a caller short of descriptors take exactly what it can serve.
    func accept(listener: Int32, multishot: Bool, token: Token)
    /// Receive into pooled buffers: result is the byte count (0 at end of stream). Multishot keeps receiving
    /// (the buffers pile up until the handler releases them); single-shot takes one buffer's worth, which
    /// lets a handler that forwards what it reads hold one buffer per direction (backpressure).
    func receive(fd: Int32, token: Token, multishot: Bool)
    /// Sends from `bytes`, which must stay valid until the completion arrives.
    func send(fd: Int32, bytes: UnsafeRawBufferPointer, token: Token)
    /// Sends what entry `index` of `vectors` names (sendmsg(2)); the entry and the bytes it names must stay
    /// unchanged until the completion arrives. A short count is normal: `advance` and send again.
    func send(fd: Int32, vectors: IOVecTable, index: Int, token: Token)
    /// Connects a non-blocking socket: result 0 or -errno.
    func connect(fd: Int32, to address: SocketAddress, token: Token)
    /// Splices up to `count` bytes from `source` to `destination` (one of them a pipe) once `waitFor` is
    /// ready; with `waitFor` nil it tries once and completes with -EAGAIN when nothing can move.
    func splice(from source: Int32, to destination: Int32, count: Int, waitFor: Readiness?, token: Token)
    /// Completes once the descriptor is ready (or has an error or hang-up): result is the poll mask.
    /// `knownNotReady`: the caller just saw EAGAIN on it, so the backend may skip checking the current state.
    func poll(_ readiness: Readiness, knownNotReady: Bool, token: Token)
    /// Cancels the operation with `token` on `fd`; it completes with -ECANCELED unless it already finished.
    func cancel(fd: Int32, token: Token)
    /// Adds a descriptor to the registered-file table (io_uring), so its operations skip the fd lookup.
    func register(fd: Int32)
    /// Removes a descriptor before it is closed.
    func unregister(fd: Int32)

    /// Received-data buffers (the provided-buffer ring on io_uring).
    var buffers: BufferPool { get }
    /// Returns a buffer to the pool (and to the kernel on io_uring).
    func releaseBuffer(_ id: UInt16)

    /// Flushes queued submissions, waits up to `timeoutNanos` (nil: until something completes) and
    /// returns how many completions are ready; read them with `completion(at:)`.
    func wait(timeoutNanos: UInt64?) throws(IOError) -> Int
    /// The i-th ready completion of the last `wait`.
    func completion(at index: Int) -> Completion
    /// Wakes a waiting `wait`; the one part of a backend other threads may use.
    var waker: Waker { get }

    /// True when trying an operation that may find nothing to do is cheap (one non-blocking syscall on
    /// epoll), false when it costs a round trip (an io_uring splice always runs in an io-wq worker).
    static var speculativeIOIsCheap: Bool { get }

    /// Operations submitted and completions reaped so far (metrics).
    var submissions: UInt64 { get }
    var completions: UInt64 { get }
}

extension IOBackend {
    /// A spare buffer for the caller to fill (`BufferPool.takeSpare`), released with `releaseBuffer`.
    public func takeBuffer() -> UInt16? { buffers.takeSpare() }

    /// Multishot receive (see `receive(fd:token:multishot:)`).
    public func receive(fd: Int32, token: Token) { receive(fd: fd, token: token, multishot: true) }
}

/// The backends, as named by `--io-backend`.
public enum IOBackendKind: String, Sendable, CaseIterable {
    case io_uring
    case epoll
}

/// Settings a backend is created with.
public struct BackendSettings: Sendable {
    /// io_uring submission queue depth (`--ring-depth`); the completion queue is twice as deep.
    public var ringDepth: UInt32 = 1024
    /// Use a kernel submission-polling thread (`--sqpoll`).
    public var sqpoll = false
    /// Number and size of pooled receive buffers per reactor.
    public var bufferCount = 256
    public var bufferSize = 16 * 1024
    /// The most one receive puts in a buffer (nil: `bufferSize`): `BufferPool.receiveLength`.
    public var receiveLength: Int? = nil
    /// Buffers beyond the receive buffers that the handler fills itself (TLS plaintext and records): 0 unless
    /// something needs them.
    public var spareBuffers = 0

    public init() {}
}
