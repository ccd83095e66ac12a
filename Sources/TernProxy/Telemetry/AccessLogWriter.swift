// The access-log writer (ARCHITECTURE.md §8): one thread beside the reactors that moves every reactor's
// AccessLogShard ring to the log file (or stdout). Reactors never wait for it: when it falls behind, their
// rings fill and they drop lines (each shard counts its drops). It wakes at least every 100 ms, sooner when
// the rings fill faster (paced so the fullest would be a quarter full at the next round), writes each ring's
// published bytes with one writev (two spans when they wrap), and frees them only once written, so a failed
// write is retried on the next round rather than lost.
//
// SIGUSR1 (logrotate's `postrotate`): the main thread calls `reopen()`; the thread writes what the rings hold
// to the old file, then opens the path again and closes the old descriptor. Lines published after the new
// file appears go to it. At exit, after the reactors have stopped, `stop()` writes everything left.
import Synchronization
import TernIO
import TernTelemetry

/// The log file could not be opened at start.
public struct AccessLogWriterError: Error, CustomStringConvertible {
    public var path: String
    public var errno: Int32
    public var description: String {
        "cannot open access log \(path): \(Errno.name(errno)) (\(Errno.message(errno)))"
    }
}

public final class AccessLogWriter: @unchecked Sendable {
    // @unchecked Sendable: `fd`, `reopensDone` and `reportedDrops` belong to the writer thread (set before it
    // starts); `thread` to the thread that calls start and stop; the rest are atomics or immutable.

    /// The file appended to, or "-" for stdout.
    public let path: String
    public let shards: [AccessLogShard]
    private let intervalMillis: Int32
    private let wakeup: ThreadWakeup
    private let stopRequested = Atomic<Bool>(false)
    private let exited = Atomic<Bool>(false)
    private let reopenRequests = Atomic<UInt64>(0)
    private let written = Atomic<UInt64>(0)
    private let errors = Atomic<UInt64>(0)
    private let reopens = Atomic<UInt64>(0)
    private var fd: Int32
    private var reopensDone: UInt64 = 0
    private var reportedDrops: UInt64 = 0
    private var lastDropReport: UInt64 = 0
    private var thread: ReactorThread? = nil

    private static let stdout: Int32 = 1

    /// One ring per reactor in `format`, each waking the writer when half full, and the writer over them.
    public static func start(format: AccessLogFormat, reactors: Int, path: String) throws(AccessLogWriterError) -> AccessLogWriter {
        guard let wakeup = ThreadWakeup() else { throw AccessLogWriterError(path: path, errno: Errno.EAGAIN) }
        let shards = (0..<reactors).map { _ in AccessLogShard(format: format, onHalfFull: { wakeup.ring() }) }
        return try start(shards: shards, path: path, wakeup: wakeup)
    }

    /// Opens `path` for appending (created with mode 0644; "-" is stdout) and starts the writer thread over
    /// `shards` (one per reactor). Throws when the file cannot be opened or no thread can be started.
    /// `wakeup` is the one the shards ring when half full (`AccessLogShard(onHalfFull:)`); nil: a new one.
    /// `start(format:reactors:path:)` builds shards wired so.
    public static func start(shards: [AccessLogShard], path: String, intervalMillis: Int32 = 100,
                             wakeup: ThreadWakeup? = nil) throws(AccessLogWriterError) -> AccessLogWriter
    {
        let fd = path == "-" ? stdout : System.openForAppend(path)
        guard fd >= 0 else { throw AccessLogWriterError(path: path, errno: -fd) }
        guard let wakeup = wakeup ?? ThreadWakeup() else {
            if fd != stdout { System.close(fd) }
            throw AccessLogWriterError(path: path, errno: Errno.EAGAIN)
        }
        let writer = AccessLogWriter(path: path, fd: fd, shards: shards, wakeup: wakeup, intervalMillis: intervalMillis)
        guard let t = ReactorThread.start(name: "tern-accesslog", { writer.run() }) else {
            if fd != stdout { System.close(fd) }
            throw AccessLogWriterError(path: path, errno: Errno.EAGAIN)
        }
        writer.thread = t
        return writer
    }

    private init(path: String, fd: Int32, shards: [AccessLogShard], wakeup: ThreadWakeup, intervalMillis: Int32) {
        self.path = path
        self.fd = fd
        self.shards = shards
        self.wakeup = wakeup
        self.intervalMillis = max(intervalMillis, 1)
    }

    /// Asks the thread to write what is buffered to the current file, then open the path again (SIGUSR1, after
    /// logrotate moved the file). Returns at once; `reopenCount` counts the reopens done. Nothing for stdout.
    public func reopen() {
        reopenRequests.add(1, ordering: .releasing)
        wakeup.ring()
    }

    /// Writes everything the rings hold and stops the thread; call it after the reactors have stopped, so no
    /// line is lost. Waits at most `timeoutMillis` (a stdout pipe nobody reads must not hold the exit forever);
    /// false when the thread had not finished by then. Idempotent.
    @discardableResult
    public func stop(timeoutMillis: Int = 5000) -> Bool {
        guard let t = thread else { return true }
        stopRequested.store(true, ordering: .releasing)
        wakeup.ring()
        let deadline = System.monotonicNanos() + UInt64(timeoutMillis) * 1_000_000
        while !exited.load(ordering: .acquiring) {
            if System.monotonicNanos() >= deadline { return false }
            Signals.sleep(milliseconds: 1)
        }
        t.join()
        thread = nil
        return true
    }

    /// Lines written to the file (counted by their newlines).
    public var linesWritten: UInt64 { written.load(ordering: .relaxed) }
    /// Failed writes and failed reopens.
    public var writeErrors: UInt64 { errors.load(ordering: .relaxed) }
    /// Reopens done.
    public var reopenCount: UInt64 { reopens.load(ordering: .relaxed) }
    /// Lines the reactors dropped because their ring was full, over all shards.
    public var linesDropped: UInt64 { shards.reduce(0) { $0 &+ $1.dropped } }

    // MARK: The thread

    private func run() {
        var lastRound = System.monotonicNanos()
        while true {
            let stopping = stopRequested.load(ordering: .acquiring)
            let requested = reopenRequests.load(ordering: .acquiring)
            if requested != reopensDone {
                // What was logged before the request belongs to the old file.
                _ = drainAll(final: false)
                reopenFile()
                reopensDone = requested
            }
            let fullest = drainAll(final: stopping)
            reportDrops()
            if stopping { break }
            let now = System.monotonicNanos()
            let wait = Self.nextWait(fullest: fullest, elapsedNanos: now &- lastRound, intervalMillis: intervalMillis)
            lastRound = now
            wakeup.wait(milliseconds: wait)
        }
        if fd != Self.stdout { System.close(fd) }
        exited.store(true, ordering: .releasing)
    }

    /// How long to sleep after a round that found the fullest ring `fullest` full (0…1) after `elapsedNanos`:
    /// long enough for it to fill to a quarter at the rate it filled since the last round, so a ring is
    /// drained long before it fills (its reactor would drop lines), and never longer than the interval.
    /// At 8,000 JSON lines a second into a 256 KiB ring that is about every 18 ms; with no traffic, the interval.
    public static func nextWait(fullest: Double, elapsedNanos: UInt64, intervalMillis: Int32) -> Int32 {
        guard fullest > 0 else { return intervalMillis }
        let millis = Double(elapsedNanos) / 1e6 * 0.25 / fullest
        return Int32(min(max(millis, 1), Double(intervalMillis)))
    }

    /// Writes every shard's published bytes; returns the largest share of its ring that one of them held.
    private func drainAll(final: Bool) -> Double {
        var fullest = 0.0
        for shard in shards { fullest = max(fullest, Double(drain(shard, final: final)) / Double(shard.capacity)) }
        return fullest
    }

    /// Writes what `shard` has published (partial writes continued; EAGAIN waited for briefly). Returns the
    /// bytes it held. On a write error the bytes stay for the next round; at the final drain they are given up.
    private func drain(_ shard: AccessLogShard, final: Bool) -> Int {
        let held = shard.pendingBytes
        var left = held
        var waits = 0
        while left > 0 {
            let n = shard.withPublished { a, b in System.writev(fd, a, b) }
            if n > 0 {
                let lines = shard.newlines(inFirst: n)
                shard.consume(n)
                written.add(UInt64(lines), ordering: .relaxed)
                left -= n
                continue
            }
            if n == -Int(Errno.EAGAIN) && waits < (final ? 20 : 1) {
                // A non-blocking stdout that is full: wait a little, then leave the rest for the next round.
                waits += 1
                _ = System.waitWritable(fd, timeoutMillis: 100)
                continue
            }
            if n < 0 && n != -Int(Errno.EAGAIN) {
                errors.add(1, ordering: .relaxed)
                let e = Int32(-n)
                Log.warn("access log: write to \(path) failed: \(Errno.name(e)) (\(Errno.message(e)))\(final ? "; \(left) bytes lost" : "")")
            }
            break
        }
        return held
    }

    private func reopenFile() {
        guard path != "-" else { return }
        let new = System.openForAppend(path)
        guard new >= 0 else {
            errors.add(1, ordering: .relaxed)
            Log.warn("access log: cannot reopen \(path): \(Errno.name(-new)) (\(Errno.message(-new))); still writing to the old file")
            return
        }
        System.close(fd)
        fd = new
        reopens.add(1, ordering: .relaxed)
        Log.info("access log reopened path=\(path)")
    }

    /// Logs dropped lines, at most every 10 s (the count is also a metric).
    private func reportDrops() {
        let dropped = linesDropped
        guard dropped != reportedDrops else { return }
        let now = System.monotonicNanos()
        guard now &- lastDropReport >= 10_000_000_000 || lastDropReport == 0 else { return }
        Log.warn("access log: \(dropped - reportedDrops) lines dropped (reactor rings full; \(dropped) in all)")
        reportedDrops = dropped
        lastDropReport = now
    }
}
