/// A pipe used to splice bytes between two sockets without copying them through user space.
public struct Pipe: Equatable, Sendable {
    public var readEnd: Int32
    public var writeEnd: Int32
    public var capacity: Int
}

/// A reactor's pipes (ARCHITECTURE.md §4). Pipes are created lazily, taken by a relay direction only while
/// bytes move and returned as soon as the pipe is empty, so an idle connection holds none: that keeps a
/// sidecar running as an unprivileged user (Istio's uid 1337) inside the per-user pipe memory quota, which
/// otherwise bites after about a thousand pipes.
///
/// Policy: `acquire` reuses an idle pipe or creates one; when creation fails (EMFILE, ENFILE) it hands out
/// one of a small reserve created at start, so that when descriptors run out some connections still move
/// bytes, finish and free descriptors for the rest (without it, every connection could hold its sockets
/// while waiting for a pipe that can never be made). Only when the reserve is used up too does it return
/// nil (counted); the caller retries after a short back-off. At most `maxIdle` empty pipes are kept;
/// beyond that, and for any pipe returned with bytes still in it (HAProxy's rule: never reuse a dirty
/// pipe), the pipe is closed. Single-threaded: owned by one reactor.
public final class PipePool {
    private var idle: [Pipe] = []
    private var reserve: [Pipe] = []
    private let reserveTarget: Int
    public let maxIdle: Int
    public private(set) var created = 0
    public private(set) var inUse = 0
    public private(set) var failures = 0

    /// Capacity asked of each new pipe. 1 MiB pipes (the unprivileged maximum, fs.pipe-max-size) move
    /// sixteen times more per splice than the 64 KiB default: measured here, CPU per GB relayed fell from
    /// about 0.9 s to 0.2 s. When the per-user quota refuses, the pipe keeps the size the kernel gave it.
    public let preferredCapacity: Int

    /// `maxIdle` is small because the per-user pipe quota counts capacity, used or not: eight idle 1 MiB
    /// pipes are an eighth of the default soft quota (fs.pipe-user-pages-soft, 64 MiB).
    public init(maxIdle: Int = 8, preferredCapacity: Int = 1 << 20, reserve: Int = 2) {
        self.maxIdle = maxIdle
        self.preferredCapacity = preferredCapacity
        reserveTarget = reserve
        idle.reserveCapacity(maxIdle)
        self.reserve.reserveCapacity(reserve)
        for _ in 0..<reserve {
            if let p = makePipe() { self.reserve.append(p) }
        }
    }

    deinit {
        for p in idle { closePipe(p) }
        for p in reserve { closePipe(p) }
    }

    private func makePipe() -> Pipe? {
        guard let (r, w) = System.pipe() else { return nil }
        created += 1
        let capacity = preferredCapacity > 65536 ? System.setPipeCapacity(w, preferredCapacity) : System.pipeCapacity(w)
        return Pipe(readEnd: r, writeEnd: w, capacity: max(capacity, 4096))
    }

    public func acquire() -> Pipe? {
        if let p = idle.popLast() {
            inUse += 1
            return p
        }
        guard let p = makePipe() ?? reserve.popLast() else {
            failures += 1
            return nil
        }
        inUse += 1
        return p
    }

    /// Returns a pipe; `holdsData` when bytes may remain in it (the connection ended mid-transfer).
    public func release(_ pipe: Pipe, holdsData: Bool) {
        inUse -= 1
        if holdsData {
            closePipe(pipe)
        } else if reserve.count < reserveTarget {
            reserve.append(pipe)
        } else if idle.count >= maxIdle {
            closePipe(pipe)
        } else {
            idle.append(pipe)
        }
    }

    private func closePipe(_ p: Pipe) {
        System.close(p.readEnd)
        System.close(p.writeEnd)
    }
}

