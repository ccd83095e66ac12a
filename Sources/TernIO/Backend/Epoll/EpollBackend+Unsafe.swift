// The epoll backend: the same completions as io_uring, emulated (ARCHITECTURE.md §3). Each operation is
// tried at once with a non-blocking syscall; only on EAGAIN does it wait, edge-triggered, for readiness of
// its descriptor, and it is retried when that readiness arrives. Completions produced meanwhile are queued
// and handed out by the next `wait`, so handlers never re-enter. Container runtimes often block io_uring
// with seccomp, so this is the common case in production: it must be just as careful.
//
// SAFETY, for every `unsafe` in this file that carries no note of its own: `states` and `events` are
// allocated in init and freed only in deinit; `state(fd)` checks the descriptor against the table size
// before forming the pointer; a parked send keeps the caller's bytes pointer, valid until its completion by
// the IOBackend contract; locals passed by address (pollfd, epoll_event, timespec) outlive the call.
internal import CTernLinux
import Glibc
import TernCore

@safe public final class EpollBackend: IOBackend {
    public static let kind = IOBackendKind.epoll
    public static let speculativeIOIsCheap = true
    /// Iterations that may hand out immediate completions without asking epoll, before epoll gets a turn
    /// (bounds how long ready descriptors can wait behind a busy connection).
    private static let roundsBetweenPolls = 8
    /// Set when the kernel (or a seccomp profile) refuses epoll_pwait2 (5.11+): use epoll_wait from then on.
    private var pwait2Refused = false
    private var roundsSincePoll = 0

    /// What waits on one side (read or write) of a descriptor.
    @safe private struct Waiter {
        enum Kind: UInt8 { case none = 0, accept, receive, send, sendMessage, connect, splice, poll }
        var kind: Kind = .none
        var token: UInt64 = 0
        var source: Int32 = -1
        var destination: Int32 = -1
        var count: Int = 0
        var bytes: UnsafeRawPointer? = nil
    }

    private struct DescriptorState {
        var inEpoll = false
        /// An edge arrived while nothing waited on that side: a caller's "known not ready" may predate it.
        var unattendedRead = false
        var unattendedWrite = false
        var read = Waiter()
        var write = Waiter()
    }

    private let epfd: Int32
    private let wakeFD: Int32
    public let buffers: BufferPool
    private let tableSize: Int
    /// Per-descriptor state, calloc'd so untouched entries cost no memory (a zeroed entry is "nothing waits").
    private let states: UnsafeMutablePointer<DescriptorState>
    private let events: UnsafeMutablePointer<epoll_event>
    private static let maxEvents = 256
    /// How many accepts or receives one readiness event may run before others get a turn.
    private static let multishotBudget = 16

    private var ready: [Completion] = []
    private var queued: [Completion] = []
    /// Descriptors whose read side used up its budget and must run again next iteration.
    private var again: [Int32] = []
    private var againRunning: [Int32] = []
    private var starvedReceives: [Int32] = []

    public private(set) var submissions: UInt64 = 0
    public private(set) var completions: UInt64 = 0

    public init(settings: BackendSettings) throws(IOError) {
        let fd = epoll_create1(Int32(EPOLL_CLOEXEC))
        if fd < 0 { throw IOError("epoll_create1", errno: Glibc.errno) }
        epfd = fd
        wakeFD = CTernLinux_eventfd(1)
        var ev = unsafe epoll_event()
        unsafe ev.events = EPOLLIN.rawValue | EPOLLET.rawValue
        unsafe ev.data.fd = wakeFD
        unsafe _ = epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, &ev)
        buffers = BufferPool(count: settings.bufferCount, size: settings.bufferSize, spare: settings.spareBuffers,
                             receiveLength: settings.receiveLength)
        tableSize = max(Int(min(System.openFileLimit(), 1 << 20)), 1024)
        // SAFETY: both allocations are owned until deinit; descriptor indexes are checked against tableSize.
        unsafe states = calloc(tableSize, MemoryLayout<DescriptorState>.stride)!
            .bindMemory(to: DescriptorState.self, capacity: tableSize)
        unsafe events = .allocate(capacity: Self.maxEvents)
        ready.reserveCapacity(4096)
        queued.reserveCapacity(4096)
        again.reserveCapacity(256)
        againRunning.reserveCapacity(256)
        starvedReceives.reserveCapacity(64)
    }

    deinit {
        System.close(epfd)
        System.close(wakeFD)
        unsafe free(states)
        unsafe events.deallocate()
    }

    @inline(__always)
    private func state(_ fd: Int32) -> UnsafeMutablePointer<DescriptorState> {
        precondition(fd >= 0 && Int(fd) < tableSize, "descriptor beyond the open-file limit")
        // SAFETY: bounds checked above; states lives until deinit.
        return unsafe states + Int(fd)
    }

    private func emit(_ token: UInt64, _ result: Int, flags: UInt32 = 0) {
        queued.append(Completion(token: Token(raw: token), result: Int32(truncatingIfNeeded: result), flags: flags))
    }

    /// Adds the descriptor to the epoll set once, for both directions, edge-triggered.
    private func watch(_ fd: Int32) {
        let s = unsafe state(fd)
        if unsafe s.pointee.inEpoll { return }
        var ev = unsafe epoll_event()
        unsafe ev.events = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
        unsafe ev.data.fd = fd
        let r = unsafe epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev)
        if r == 0 || Glibc.errno == EEXIST { unsafe s.pointee.inEpoll = true }
    }

    private func park(_ fd: Int32, write: Bool, _ waiter: Waiter) {
        watch(fd)
        if write {
            unsafe state(fd).pointee.write = waiter
            unsafe state(fd).pointee.unattendedWrite = false
        } else {
            unsafe state(fd).pointee.read = waiter
            unsafe state(fd).pointee.unattendedRead = false
        }
    }

    // MARK: - Operations: try now, wait on EAGAIN

    public func accept(listener: Int32, multishot: Bool, token: Token) {
        submissions &+= 1
        unsafe park(listener, write: false, Waiter(kind: .accept, token: token.raw, count: multishot ? Self.multishotBudget : 1))
        runRead(listener)
    }

    public func receive(fd: Int32, token: Token, multishot: Bool) {
        submissions &+= 1
        // count is the budget per readiness event; 1 means single-shot.
        unsafe park(fd, write: false, Waiter(kind: .receive, token: token.raw, count: multishot ? Self.multishotBudget : 1))
        runRead(fd)
    }

    public func send(fd: Int32, vectors: IOVecTable, index: Int, token: Token) {
        submissions &+= 1
        let message = unsafe vectors.message(index)
        // SAFETY: the caller keeps the entry and the bytes it names unchanged until this token's completion.
        let r = syscallResult { unsafe Glibc.sendmsg(fd, message, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
        if r == -Int(EAGAIN) {
            park(fd, write: true, unsafe Waiter(kind: .sendMessage, token: token.raw, source: fd, bytes: UnsafeRawPointer(message)))
        } else {
            emit(token.raw, r)
        }
    }

    public func send(fd: Int32, bytes: UnsafeRawBufferPointer, token: Token) {
        submissions &+= 1
        let r = syscallResult { unsafe Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
        if r == -Int(EAGAIN) {
            park(fd, write: true, unsafe Waiter(kind: .send, token: token.raw, source: fd, count: bytes.count, bytes: bytes.baseAddress))
        } else {
            emit(token.raw, r)
        }
    }

    public func connect(fd: Int32, to address: SocketAddress, token: Token) {
        submissions &+= 1
        let r = unsafe address.withSockAddr { (sa, len) in syscallResult { unsafe Int(Glibc.connect(fd, sa, len)) } }
        if r == -Int(EINPROGRESS) || r == -Int(EAGAIN) {
            unsafe park(fd, write: true, Waiter(kind: .connect, token: token.raw))
        } else {
            emit(token.raw, r)
        }
    }

    public func splice(from source: Int32, to destination: Int32, count: Int, waitFor: Readiness?, token: Token) {
        submissions &+= 1
        let r = spliceNow(source, destination, count)
        if r == -Int(EAGAIN), let waitFor {
            let w = unsafe Waiter(kind: .splice, token: token.raw, source: source, destination: destination, count: count)
            switch waitFor {
            case .readable(let fd): park(fd, write: false, w)
            case .writable(let fd): park(fd, write: true, w)
            }
        } else {
            emit(token.raw, r)
        }
    }

    private func spliceNow(_ source: Int32, _ destination: Int32, _ count: Int) -> Int {
        Int(CTernLinux_splice_nonblocking(source, destination, count))
    }

    public func poll(_ readiness: Readiness, knownNotReady: Bool, token: Token) {
        submissions &+= 1
        let s = unsafe state(readiness.fd)
        let edgeSinceThen: Bool
        switch readiness {
        case .readable: edgeSinceThen = unsafe s.pointee.unattendedRead
        case .writable: edgeSinceThen = unsafe s.pointee.unattendedWrite
        }
        if knownNotReady && !edgeSinceThen {
            // The caller's last non-blocking call on this descriptor said EAGAIN and no edge has been reported
            // since with nobody waiting, so the next readiness is an edge epoll will report.
            switch readiness {
            case .readable(let fd): unsafe park(fd, write: false, Waiter(kind: .poll, token: token.raw))
            case .writable(let fd): unsafe park(fd, write: true, Waiter(kind: .poll, token: token.raw))
            }
            return
        }
        // Edge-triggered epoll reports changes only: ask the kernel for the current state first.
        var p = pollfd()
        p.fd = readiness.fd
        switch readiness {
        case .readable: p.events = Int16(POLLIN) | CTernLinux_POLLRDHUP
        case .writable: p.events = Int16(POLLOUT)
        }
        let r = syscallResult { unsafe Int(Glibc.poll(&p, 1, 0)) }
        if r > 0 {
            emit(token.raw, Int(p.revents))
            return
        }
        switch readiness {
        case .readable(let fd): unsafe park(fd, write: false, Waiter(kind: .poll, token: token.raw))
        case .writable(let fd): unsafe park(fd, write: true, Waiter(kind: .poll, token: token.raw))
        }
    }

    public func cancel(fd: Int32, token: Token) {
        guard fd >= 0, Int(fd) < tableSize else { return }
        let s = unsafe state(fd)
        if unsafe s.pointee.read.kind != .none && s.pointee.read.token == token.raw {
            unsafe s.pointee.read = Waiter()
            emit(token.raw, -Int(ECANCELED))
        }
        if unsafe s.pointee.write.kind != .none && s.pointee.write.token == token.raw {
            unsafe s.pointee.write = Waiter()
            emit(token.raw, -Int(ECANCELED))
        }
    }

    public func register(fd: Int32) {}

    public func unregister(fd: Int32) {
        guard fd >= 0, Int(fd) < tableSize else { return }
        let s = unsafe state(fd)
        if unsafe s.pointee.inEpoll {
            _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil)
        }
        unsafe s.pointee = DescriptorState()
        if let i = starvedReceives.firstIndex(of: fd) { starvedReceives.remove(at: i) }
    }

    public func releaseBuffer(_ id: UInt16) {
        if buffers.isSpare(id) { return buffers.putSpare(id) }
        buffers.put(id)
        // Receives that found the pool empty wait here; a returned buffer lets them run again.
        while buffers.available > 0, let fd = starvedReceives.popLast() {
            runRead(fd)
        }
    }

    // MARK: - Readiness

    /// Runs what waits on the read side of `fd`.
    private func runRead(_ fd: Int32) {
        let s = unsafe state(fd)
        let w = unsafe s.pointee.read
        switch w.kind {
        case .none:
            unsafe s.pointee.unattendedRead = true
            return
        case .accept:
            // count is the budget per readiness event; 1 means single-shot.
            for _ in 0..<w.count {
                let r = Int(CTernLinux_accept_nonblocking(fd))
                if r >= 0 && w.count == 1 {
                    unsafe s.pointee.read = Waiter()
                    emit(w.token, r)
                    return
                } else if r >= 0 {
                    emit(w.token, r, flags: Completion.flagMore)
                } else if r == -Int(EAGAIN) {
                    return
                } else if r == -Int(ECONNABORTED) {
                    continue
                } else {
                    // EMFILE, ENFILE and the like end the multishot accept, as on io_uring; the owner backs off
                    // and re-arms it.
                    unsafe s.pointee.read = Waiter()
                    emit(w.token, r)
                    return
                }
            }
            again.append(fd)
        case .receive:
            for _ in 0..<w.count {
                guard let id = buffers.take() else {
                    starvedReceives.append(fd)
                    return
                }
                let r = syscallResult {
                    unsafe Glibc.recv(fd, buffers.pointer(id), buffers.receiveLength, Int32(MSG_DONTWAIT))
                }
                if r > 0 && w.count == 1 {
                    unsafe s.pointee.read = Waiter()
                    emit(w.token, r, flags: Completion.flagBuffer | UInt32(id) << 16)
                    return
                } else if r > 0 {
                    emit(w.token, r, flags: Completion.flagMore | Completion.flagBuffer | UInt32(id) << 16)
                    continue
                }
                buffers.put(id)
                if r == -Int(EAGAIN) { return }
                unsafe s.pointee.read = Waiter()
                emit(w.token, r)
                return
            }
            again.append(fd)
        case .splice:
            let r = spliceNow(w.source, w.destination, w.count)
            if r == -Int(EAGAIN) { return }
            unsafe s.pointee.read = Waiter()
            emit(w.token, r)
        case .poll:
            unsafe s.pointee.read = Waiter()
            emit(w.token, Int(POLLIN))
        case .send, .sendMessage, .connect:
            unsafe s.pointee.read = Waiter()
            bug("write-side operation parked on the read side")
        }
    }

    /// Runs what waits on the write side of `fd`.
    private func runWrite(_ fd: Int32) {
        let s = unsafe state(fd)
        let w = unsafe s.pointee.write
        switch w.kind {
        case .none:
            unsafe s.pointee.unattendedWrite = true
            return
        case .send:
            let r = syscallResult { unsafe Glibc.send(fd, w.bytes, w.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            if r == -Int(EAGAIN) { return }
            unsafe s.pointee.write = Waiter()
            emit(w.token, r)
        case .sendMessage:
            let r = syscallResult {
                unsafe Glibc.sendmsg(fd, w.bytes?.assumingMemoryBound(to: msghdr.self), Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            }
            if r == -Int(EAGAIN) { return }
            unsafe s.pointee.write = Waiter()
            emit(w.token, r)
        case .connect:
            unsafe s.pointee.write = Waiter()
            let e = System.socketError(fd)
            emit(w.token, -Int(e))
        case .splice:
            let r = spliceNow(w.source, w.destination, w.count)
            if r == -Int(EAGAIN) { return }
            unsafe s.pointee.write = Waiter()
            emit(w.token, r)
        case .poll:
            unsafe s.pointee.write = Waiter()
            emit(w.token, Int(POLLOUT))
        case .accept, .receive:
            unsafe s.pointee.write = Waiter()
            bug("read-side operation parked on the write side")
        }
    }

    // MARK: - Completion

    public func wait(timeoutNanos: UInt64?) throws(IOError) -> Int {
        ready.removeAll(keepingCapacity: true)
        swap(&ready, &queued)
        if !ready.isEmpty && again.isEmpty && roundsSincePoll < Self.roundsBetweenPolls {
            // Completions produced by the handler's own submissions are ready: hand them out without a
            // syscall, giving epoll a turn every few rounds.
            roundsSincePoll += 1
            completions &+= UInt64(ready.count)
            return ready.count
        }
        roundsSincePoll = 0
        if !again.isEmpty {
            swap(&again, &againRunning)
            for fd in againRunning { runRead(fd) }
            againRunning.removeAll(keepingCapacity: true)
        }
        let mustNotBlock = !ready.isEmpty || !queued.isEmpty || !again.isEmpty
        var ts = timespec()
        var timeout: UnsafeMutablePointer<timespec>? = nil
        let n: Int = unsafe withUnsafeMutablePointer(to: &ts) { tsp in
            if mustNotBlock {
                unsafe timeout = tsp
            } else if let t = timeoutNanos {
                unsafe tsp.pointee.tv_sec = Int(t / 1_000_000_000)
                unsafe tsp.pointee.tv_nsec = Int(t % 1_000_000_000)
                unsafe timeout = tsp
            }
            if !pwait2Refused {
                let r = syscallResult { unsafe Int(epoll_pwait2(epfd, events, Int32(Self.maxEvents), timeout, nil)) }
                if r != -Int(ENOSYS) && r != -Int(EPERM) { return r }
                pwait2Refused = true
            }
            // Millisecond resolution, rounded up so a timer is never woken for early.
            let ms: Int32 = mustNotBlock ? 0 : timeoutNanos.map { Int32(min(($0 + 999_999) / 1_000_000, 3_600_000)) } ?? -1
            return syscallResult { unsafe Int(epoll_wait(epfd, events, Int32(Self.maxEvents), ms)) }
        }
        if n < 0 { throw IOError("epoll_wait", errno: Int32(-n)) }
        for i in 0..<n {
            // SAFETY: epoll_pwait2 filled the first n events.
            let ev = unsafe events[i]
            let fd = unsafe ev.data.fd
            let flags = unsafe ev.events
            if fd == wakeFD {
                var value: UInt64 = 0
                unsafe _ = Glibc.read(wakeFD, &value, 8)
                continue
            }
            let errOrHup = EPOLLERR.rawValue | EPOLLHUP.rawValue
            if flags & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue | errOrHup) != 0 { runRead(fd) }
            if flags & (EPOLLOUT.rawValue | errOrHup) != 0 { runWrite(fd) }
        }
        ready.append(contentsOf: queued)
        queued.removeAll(keepingCapacity: true)
        completions &+= UInt64(ready.count)
        return ready.count
    }

    public func completion(at index: Int) -> Completion { ready[index] }

    public var waker: Waker { Waker(eventFD: wakeFD) }
}
