// The io_uring backend (ARCHITECTURE.md §3). One ring per reactor, created on the reactor thread because
// IORING_SETUP_SINGLE_ISSUER binds the ring to its first submitter. Submissions are queued in the SQ and
// flushed once per loop iteration by `wait`, which also reaps completions in a batch and advances the CQ
// once (liburing examples/proxy.c explains why batching the advance is cheaper).
//
// SAFETY, for every `unsafe` in this file that carries no note of its own: `ring`, `bufferRing`, `cqeBatch`,
// `wakeValue` and the descriptor-indexed tables are allocated in init and freed only in deinit, so they
// outlive every call made through them; an SQE pointer comes from io_uring_get_sqe and is filled before the
// next submit (the only thing that hands it to the kernel); table indexes are descriptors checked against
// the table size first (`fixed`, `register`, `connect`); CQE pointers are read before io_uring_cq_advance.
// Memory named in an SQE (send bytes, connect addresses, the wake buffer, fdValues) stays valid until its
// completion: the caller's by the IOBackend contract, the rest owned here.
internal import CTernLinux
import Glibc

@safe public final class URingBackend: IOBackend {
    public static let kind = IOBackendKind.io_uring
    public static let speculativeIOIsCheap = false

    /// Internal operation kinds (Token.internalOp).
    private enum Internal: UInt8 {
        case wake = 1, cancel = 2, filesUpdate = 3
    }

    private let ring: UnsafeMutablePointer<io_uring>
    public let buffers: BufferPool
    private let bufferRing: UnsafeMutablePointer<io_uring_buf_ring>
    private let bufferRingEntries: Int
    private let cqeBatch: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    private static let batchSize = 256
    private var ready: [Completion] = []

    /// Descriptor-indexed tables (calloc'd, so untouched entries cost no memory).
    private let tableSize: Int
    private let fixedTableSize: Int
    /// fdValues[fd] is the value IORING_OP_FILES_UPDATE installs at index fd: fd itself, or -1 to remove.
    private let fdValues: UnsafeMutablePointer<Int32>
    private let isFixed: UnsafeMutablePointer<UInt8>
    /// The address IORING_OP_CONNECT reads for a socket (the kernel copies it when the op is issued).
    private let connectAddresses: UnsafeMutablePointer<sockaddr_storage>

    private let wakeFD: Int32
    private let wakeValue: UnsafeMutablePointer<UInt64>
    /// Receives by token, so one that ended with -ENOBUFS can be re-armed when buffers return.
    private var armedReceives = ArmedReceives()
    private var starvedReceives: [(fd: Int32, token: Token, multishot: Bool)] = []
    /// Completions produced here rather than by the kernel (a cancelled starved receive), handed out by the
    /// next `wait`.
    private var pendingCompletions: [Completion] = []

    public private(set) var submissions: UInt64 = 0
    public private(set) var completions: UInt64 = 0

    public init(settings: BackendSettings) throws(IOError) {
        let depth = settings.ringDepth
        // SAFETY: ring is allocated here and freed in deinit (or on the failure paths below).
        unsafe ring = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
        unsafe ring.initialize(to: io_uring())
        var params = io_uring_params()
        params.cq_entries = depth * 2
        var attempts: [(UInt32, String)] = []
        let cq = UInt32(IORING_SETUP_CQSIZE) | UInt32(IORING_SETUP_SUBMIT_ALL)
        if settings.sqpoll {
            attempts.append((cq | UInt32(IORING_SETUP_SQPOLL) | UInt32(IORING_SETUP_SINGLE_ISSUER), "SQPOLL|SINGLE_ISSUER"))
            attempts.append((cq | UInt32(IORING_SETUP_SQPOLL), "SQPOLL"))
        } else {
            attempts.append((cq | UInt32(IORING_SETUP_SINGLE_ISSUER) | UInt32(IORING_SETUP_DEFER_TASKRUN), "SINGLE_ISSUER|DEFER_TASKRUN"))
            attempts.append((cq | UInt32(IORING_SETUP_SINGLE_ISSUER), "SINGLE_ISSUER"))
            attempts.append((cq, "plain"))
        }
        var rc: Int32 = -EINVAL
        var chosen = ""
        for (flags, name) in attempts {
            params = io_uring_params()
            params.cq_entries = depth * 2
            params.flags = flags
            if settings.sqpoll { params.sq_thread_idle = 1000 }
            unsafe rc = io_uring_queue_init_params(depth, ring, &params)
            chosen = name
            if rc != -EINVAL { break }
        }
        if rc < 0 {
            unsafe ring.deallocate()
            throw IOError("io_uring_setup", errno: -rc)
        }
        Log.debug("io_uring ring: depth \(depth), setup \(chosen)")

        // Every opcode the reactor relies on must exist (multishot accept needs 5.19, provided-buffer rings 5.19).
        for (op, name) in [
            (IORING_OP_SPLICE, "IORING_OP_SPLICE"), (IORING_OP_POLL_ADD, "IORING_OP_POLL_ADD"),
            (IORING_OP_ACCEPT, "IORING_OP_ACCEPT"), (IORING_OP_RECV, "IORING_OP_RECV"),
            (IORING_OP_SEND, "IORING_OP_SEND"), (IORING_OP_CONNECT, "IORING_OP_CONNECT"),
            (IORING_OP_FILES_UPDATE, "IORING_OP_FILES_UPDATE"), (IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL"),
        ] where unsafe CTernLinux_ring_supports(ring, Int32(op.rawValue)) != 1 {
            unsafe io_uring_queue_exit(ring)
            unsafe ring.deallocate()
            throw IOError("io_uring lacks \(name)", errno: ENOSYS)
        }

        // Descriptor tables cover every descriptor the process may open (the registered-file table at most
        // 65536 of them: beyond that an fd is simply used unregistered).
        let limit = Int(min(System.openFileLimit(), 1 << 20))
        tableSize = max(limit, 64)
        let wantedFixed = min(tableSize, 65536)
        unsafe fdValues = calloc(tableSize, MemoryLayout<Int32>.stride)!.bindMemory(to: Int32.self, capacity: tableSize)
        unsafe isFixed = calloc(tableSize, 1)!.bindMemory(to: UInt8.self, capacity: tableSize)
        unsafe connectAddresses = calloc(tableSize, MemoryLayout<sockaddr_storage>.stride)!
            .bindMemory(to: sockaddr_storage.self, capacity: tableSize)
        // Registered files are an optimisation: without a table (the kernel refuses one larger than
        // RLIMIT_NOFILE, or lacks memory) every op names the plain descriptor.
        let sparse = unsafe io_uring_register_files_sparse(ring, UInt32(wantedFixed))
        fixedTableSize = sparse < 0 ? 0 : wantedFixed
        unsafe _ = io_uring_register_ring_fd(ring)

        // Provided-buffer ring, group 0 (liburing 2.3 lacks io_uring_setup_buf_ring: allocate and register).
        buffers = BufferPool(count: settings.bufferCount, size: settings.bufferSize, spare: settings.spareBuffers,
                             receiveLength: settings.receiveLength)
        bufferRingEntries = settings.bufferCount
        var ringMemory: UnsafeMutableRawPointer? = nil
        let bytes = bufferRingEntries * Int(CTernLinux_buf_ring_entry_size())
        unsafe _ = posix_memalign(&ringMemory, Int(sysconf(Int32(_SC_PAGESIZE))), bytes)
        unsafe memset(ringMemory!, 0, bytes)
        unsafe bufferRing = ringMemory!.bindMemory(to: io_uring_buf_ring.self, capacity: 1)
        var reg = io_uring_buf_reg()
        reg.ring_addr = UInt64(UInt(bitPattern: ringMemory))
        reg.ring_entries = UInt32(bufferRingEntries)
        reg.bgid = 0
        let registered = unsafe io_uring_register_buf_ring(ring, &reg, 0)
        if registered < 0 {
            unsafe io_uring_queue_exit(ring)
            throw IOError("io_uring_register_buf_ring", errno: -registered)
        }
        let mask = io_uring_buf_ring_mask(UInt32(bufferRingEntries))
        for id in 0..<bufferRingEntries {
            unsafe io_uring_buf_ring_add(bufferRing, buffers.pointer(UInt16(id)), UInt32(buffers.receiveLength), UInt16(id), mask, Int32(id))
        }
        unsafe io_uring_buf_ring_advance(bufferRing, Int32(bufferRingEntries))

        unsafe cqeBatch = .allocate(capacity: Self.batchSize)
        ready.reserveCapacity(4096)
        starvedReceives.reserveCapacity(64)

        wakeFD = CTernLinux_eventfd(1)
        unsafe wakeValue = .allocate(capacity: 1)
        unsafe wakeValue.initialize(to: 0)
        armWake()
    }

    deinit {
        unsafe io_uring_queue_exit(ring)
        unsafe ring.deallocate()
        unsafe free(bufferRing)
        unsafe free(fdValues)
        unsafe free(isFixed)
        unsafe free(connectAddresses)
        unsafe cqeBatch.deallocate()
        unsafe wakeValue.deallocate()
        System.close(wakeFD)
    }

    // MARK: - Submission

    /// The next free SQE; flushes the queue to the kernel when it is full (proxy.c's get_sqe).
    private func sqe() -> UnsafeMutablePointer<io_uring_sqe> {
        while true {
            if let s = unsafe io_uring_get_sqe(ring) {
                submissions &+= 1
                return unsafe s
            }
            unsafe _ = io_uring_submit(ring)
        }
    }

    /// Makes room for `n` consecutive SQEs (a linked pair must not straddle a flush).
    private func reserve(_ n: UInt32) {
        if unsafe io_uring_sq_space_left(ring) < n { _ = unsafe io_uring_submit(ring) }
    }

    /// Whether `fd` is in the registered-file table.
    @inline(__always)
    private func fixed(_ fd: Int32) -> Bool {
        fd >= 0 && Int(fd) < fixedTableSize && (unsafe isFixed[Int(fd)]) != 0
    }

    @inline(__always)
    private func markFixed(_ s: UnsafeMutablePointer<io_uring_sqe>, _ fd: Int32) {
        if fixed(fd) { unsafe CTernLinux_sqe_add_flags(s, CTernLinux_IOSQE_FIXED_FILE()) }
    }

    private func armWake() {
        let s = unsafe sqe()
        // SAFETY: wakeValue lives until deinit; the read writes its 8 bytes.
        unsafe io_uring_prep_read(s, wakeFD, wakeValue, 8, 0)
        unsafe s.pointee.user_data = Token.internalOp(Internal.wake.rawValue).raw
    }

    public func accept(listener: Int32, multishot: Bool, token: Token) {
        let s = unsafe sqe()
        let flags = Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        if multishot {
            unsafe io_uring_prep_multishot_accept(s, listener, nil, nil, flags)
        } else {
            unsafe io_uring_prep_accept(s, listener, nil, nil, flags)
        }
        unsafe markFixed(s, listener)
        unsafe s.pointee.user_data = token.raw
    }

    public func receive(fd: Int32, token: Token, multishot: Bool) {
        armedReceives.arm(token, fd: fd, multishot: multishot)
        let s = unsafe sqe()
        if multishot {
            unsafe io_uring_prep_recv_multishot(s, fd, nil, 0, 0)
        } else {
            unsafe io_uring_prep_recv(s, fd, nil, 0, 0)
        }
        unsafe CTernLinux_sqe_set_buf_group(s, 0)
        unsafe markFixed(s, fd)
        unsafe s.pointee.user_data = token.raw
    }

    public func send(fd: Int32, bytes: UnsafeRawBufferPointer, token: Token) {
        let s = unsafe sqe()
        // SAFETY: the caller keeps `bytes` valid until this token's completion (IOBackend contract).
        unsafe io_uring_prep_send(s, fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
        unsafe markFixed(s, fd)
        unsafe s.pointee.user_data = token.raw
    }

    public func send(fd: Int32, vectors: IOVecTable, index: Int, token: Token) {
        let s = unsafe sqe()
        // SAFETY: the caller keeps the entry and the bytes it names unchanged until this token's completion.
        unsafe io_uring_prep_sendmsg(s, fd, vectors.message(index), UInt32(MSG_NOSIGNAL))
        unsafe markFixed(s, fd)
        unsafe s.pointee.user_data = token.raw
    }

    public func connect(fd: Int32, to address: SocketAddress, token: Token) {
        precondition(Int(fd) < tableSize, "descriptor beyond the open-file limit")
        // SAFETY: fd < tableSize; the slot stays untouched until this connect is issued (one op per socket).
        unsafe connectAddresses[Int(fd)] = address.storage
        let s = unsafe sqe()
        let sa = unsafe UnsafeRawPointer(connectAddresses + Int(fd)).assumingMemoryBound(to: sockaddr.self)
        unsafe io_uring_prep_connect(s, fd, sa, address.length)
        unsafe markFixed(s, fd)
        unsafe s.pointee.user_data = token.raw
    }

    public func splice(from source: Int32, to destination: Int32, count: Int, waitFor: Readiness?, token: Token) {
        // IORING_OP_SPLICE always runs in an io-wq worker; with SPLICE_F_NONBLOCK it never parks that worker
        // on an empty socket. A poll heads the link so the splice is issued only once the socket is ready;
        // its CQE is skipped on success, and the splice's CQE answers for both.
        reserve(2)
        if let waitFor {
            let head = unsafe sqe()
            switch waitFor {
            case .readable(let fd): unsafe io_uring_prep_poll_add(head, fd, UInt32(POLLIN))
            case .writable(let fd): unsafe io_uring_prep_poll_add(head, fd, UInt32(POLLOUT))
            }
            unsafe markFixed(head, waitFor.fd)
            unsafe CTernLinux_sqe_add_flags(head, CTernLinux_IOSQE_IO_LINK() | CTernLinux_IOSQE_CQE_SKIP_SUCCESS())
            unsafe head.pointee.user_data = token.linkHead.raw
        }
        let s = unsafe sqe()
        var flags = CTernLinux_SPLICE_F_NONBLOCK | CTernLinux_SPLICE_F_MOVE
        if fixed(source) { flags |= CTernLinux_SPLICE_F_FD_IN_FIXED() }
        unsafe io_uring_prep_splice(s, source, -1, destination, -1, UInt32(min(count, Int(UInt32.max))), flags)
        unsafe markFixed(s, destination)
        unsafe s.pointee.user_data = token.raw
    }

    public func poll(_ readiness: Readiness, knownNotReady: Bool, token: Token) {
        let s = unsafe sqe()
        switch readiness {
        case .readable(let fd): unsafe io_uring_prep_poll_add(s, fd, UInt32(POLLIN) | UInt32(UInt16(bitPattern: CTernLinux_POLLRDHUP)))
        case .writable(let fd): unsafe io_uring_prep_poll_add(s, fd, UInt32(POLLOUT))
        }
        unsafe markFixed(s, readiness.fd)
        unsafe s.pointee.user_data = token.raw
    }

    public func cancel(fd: Int32, token: Token) {
        // Cancel both the operation and the poll that may head it (a linked splice).
        cancelUserData(token.raw)
        cancelUserData(token.linkHead.raw)
        if let i = starvedReceives.firstIndex(where: { $0.token == token }) {
            starvedReceives.remove(at: i)
            _ = armedReceives.disarm(token)
            pendingCompletions.append(Completion(token: token, result: -ECANCELED))
        }
    }

    private func cancelUserData(_ target: UInt64) {
        let s = unsafe sqe()
        unsafe io_uring_prep_cancel64(s, target, 0)
        unsafe CTernLinux_sqe_add_flags(s, CTernLinux_IOSQE_CQE_SKIP_SUCCESS())
        unsafe s.pointee.user_data = Token.internalOp(Internal.cancel.rawValue).raw
    }

    public func register(fd: Int32) {
        guard fd >= 0, Int(fd) < fixedTableSize else { return }
        updateFixed(fd, value: fd)
    }

    public func unregister(fd: Int32) {
        guard fixed(fd) else { return }
        updateFixed(fd, value: -1)
    }

    /// Queues IORING_OP_FILES_UPDATE for index fd. It runs inline at submission, in SQ order, so operations
    /// queued after it in the same batch already see the new table entry.
    private func updateFixed(_ fd: Int32, value: Int32) {
        unsafe fdValues[Int(fd)] = value
        unsafe isFixed[Int(fd)] = value >= 0 ? 1 : 0
        let s = unsafe sqe()
        // SAFETY: fdValues lives until deinit and fd < fixedTableSize ≤ tableSize.
        unsafe io_uring_prep_files_update(s, fdValues + Int(fd), 1, fd)
        unsafe CTernLinux_sqe_add_flags(s, CTernLinux_IOSQE_CQE_SKIP_SUCCESS())
        unsafe s.pointee.user_data = Token.internalOp(Internal.filesUpdate.rawValue).raw
    }

    public func releaseBuffer(_ id: UInt16) {
        if buffers.isSpare(id) { return buffers.putSpare(id) }
        let mask = io_uring_buf_ring_mask(UInt32(bufferRingEntries))
        unsafe io_uring_buf_ring_add(bufferRing, buffers.pointer(id), UInt32(buffers.receiveLength), id, mask, 0)
        unsafe io_uring_buf_ring_advance(bufferRing, 1)
        buffers.noteReturned()
        // -ENOBUFS ended these receives; buffers are back, so re-arm them (ENOBUFS policy).
        while let starved = starvedReceives.popLast() {
            receive(fd: starved.fd, token: starved.token, multishot: starved.multishot)
        }
    }

    // MARK: - Completion

    public func wait(timeoutNanos: UInt64?) throws(IOError) -> Int {
        ready.removeAll(keepingCapacity: true)
        if !pendingCompletions.isEmpty {
            ready.append(contentsOf: pendingCompletions)
            pendingCompletions.removeAll(keepingCapacity: true)
        }
        var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
        var ts = __kernel_timespec()
        let rc: Int32
        if let t = ready.isEmpty ? timeoutNanos : 0 {
            ts.tv_sec = Int64(t / 1_000_000_000)
            ts.tv_nsec = Int64(t % 1_000_000_000)
            unsafe rc = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, nil)
        } else {
            unsafe rc = io_uring_submit_and_wait_timeout(ring, &cqe, 1, nil, nil)
        }
        if rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY {
            throw IOError("io_uring_enter", errno: -rc)
        }
        while true {
            let n = Int(unsafe io_uring_peek_batch_cqe(ring, cqeBatch, UInt32(Self.batchSize)))
            if n == 0 { break }
            for i in 0..<n {
                // SAFETY: peek_batch_cqe filled the first n entries with CQEs valid until cq_advance below.
                let c = unsafe cqeBatch[i]!.pointee
                reap(Completion(token: Token(raw: c.user_data), result: c.res, flags: c.flags))
            }
            unsafe io_uring_cq_advance(ring, UInt32(n))
            completions &+= UInt64(n)
            if n < Self.batchSize { break }
        }
        return ready.count
    }

    private func reap(_ c: Completion) {
        if c.token.isInternal {
            if c.token.isInternal(Internal.wake.rawValue) { armWake() }
            return  // failed link heads, cancels, file-table updates: their owner's completion follows
        }
        if c.bufferID != nil { buffers.noteTaken() }
        if !c.more, let r = armedReceives.disarm(c.token) {
            if c.result == -ENOBUFS {
                // The provided-buffer ring ran dry and the receive ended: park it until a buffer returns
                // (releaseBuffer re-arms it). The handler never sees this completion.
                armedReceives.arm(c.token, fd: r.fd, multishot: r.multishot)
                starvedReceives.append((r.fd, c.token, r.multishot))
                return
            }
        }
        ready.append(c)
    }

    public func completion(at index: Int) -> Completion { ready[index] }

    public var waker: Waker { Waker(eventFD: wakeFD) }
}
