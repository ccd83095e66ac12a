// Logging that never blocks a reactor: a line is formatted on the calling thread and appended to a
// bounded in-memory queue; one writer thread empties the queue into stderr with blocking writes. When
// stderr is a pipe nobody drains, the queue fills and further lines are dropped and counted instead of
// stalling the caller. One line per event, never per byte.
internal import CTernLinux
import Glibc
import Synchronization
import TernCore

public enum LogLevel: Int, Comparable, Sendable, CaseIterable, CustomStringConvertible {
    case trace = 0, debug, info, warn, error

    /// The name flags, log lines and the admin endpoint use. Spelled out: a case name taken from `"\(level)"`
    /// goes through reflection (Mirror, the runtime's demangler and metadata instantiation), which was a fifth of
    /// the engine's start-up instructions and ran again for every line logged.
    public var description: String {
        switch self {
        case .trace: "trace"
        case .debug: "debug"
        case .info: "info"
        case .warn: "warn"
        case .error: "error"
        }
    }

    public init?(name: String) {
        switch name {
        case "trace": self = .trace
        case "debug": self = .debug
        case "info": self = .info
        case "warn": self = .warn
        case "error": self = .error
        default: return nil
        }
    }

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

public final class Log: Sendable {
    public static let shared = Log()

    private struct Queue {
        var bytes: [UInt8] = []
        var dropped = 0
    }

    private static let queueLimit = 1 << 20
    private let levelValue = Atomic<Int>(LogLevel.info.rawValue)
    private let queue = Mutex(Queue())
    /// Held while a batch is taken and written, by the writer thread or a final flush, so a flush at
    /// exit returns only after every line taken so far is on stderr. Reactors never take it.
    private let writing = Mutex(())
    /// Lines dropped because the queue was full (exported as a metric).
    public let droppedLines = Atomic<Int>(0)
    private let wakeFD: Int32
    private let started = Atomic<Bool>(false)
    private let outputFD: Int32 = 2

    private init() {
        wakeFD = CTernLinux_eventfd(0)
    }

    public var level: LogLevel {
        get { LogLevel(rawValue: levelValue.load(ordering: .relaxed)) ?? .info }
        set { levelValue.store(newValue.rawValue, ordering: .relaxed) }
    }

    /// Starts the writer thread and routes `bug()` reports here. Idempotent.
    public func start() {
        guard started.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        Bugs.reporter.withLock { $0 = { message in Log.shared.log(.error, message) } }
        let log = self
        let thread = ReactorThread.start(name: "tern-log") { log.writerLoop() }
        _ = thread  // runs for the life of the process
    }

    public func enabled(_ level: LogLevel) -> Bool { level.rawValue >= levelValue.load(ordering: .relaxed) }

    public static func trace(_ m: @autoclosure () -> String) { shared.log(.trace, m()) }
    public static func debug(_ m: @autoclosure () -> String) { shared.log(.debug, m()) }
    public static func info(_ m: @autoclosure () -> String) { shared.log(.info, m()) }
    public static func warn(_ m: @autoclosure () -> String) { shared.log(.warn, m()) }
    public static func error(_ m: @autoclosure () -> String) { shared.log(.error, m()) }

    public func log(_ level: LogLevel, _ message: @autoclosure () -> String) {
        guard enabled(level) else { return }
        let line = "\(Self.timestamp()) \(level) \(message())\n"
        let accepted = queue.withLock { q -> Bool in
            if q.bytes.count + line.utf8.count > Self.queueLimit {
                q.dropped += 1
                return false
            }
            q.bytes.append(contentsOf: line.utf8)
            return true
        }
        if !accepted {
            droppedLines.add(1, ordering: .relaxed)
            return
        }
        if started.load(ordering: .relaxed) {
            var one: UInt64 = 1
            // SAFETY: `one` is a local 8-byte value; eventfd writes take exactly 8 bytes.
            unsafe _ = Glibc.write(wakeFD, &one, 8)
        } else {
            flush()
        }
    }

    /// Writes everything queued, on the calling thread (at exit, or before the writer started).
    public func flush() {
        writing.withLock { _ in flushLocked() }
    }

    private func flushLocked() {
        let (bytes, dropped) = queue.withLock { q -> ([UInt8], Int) in
            let out = (q.bytes, q.dropped)
            q.bytes = []
            q.dropped = 0
            return out
        }
        var all = bytes
        if dropped > 0 {
            all.append(contentsOf: "\(Self.timestamp()) warn log dropped=\(dropped) lines (stderr full)\n".utf8)
        }
        if all.isEmpty { return }
        unsafe _ = all.withUnsafeBytes { unsafe System.writeAll(outputFD, $0) }
    }

    private func writerLoop() {
        while true {
            var value: UInt64 = 0
            // SAFETY: `value` is a local 8-byte buffer; a blocking eventfd read fills exactly 8 bytes.
            let r = unsafe Glibc.read(wakeFD, &value, 8)
            if r < 0 && Glibc.errno != EINTR { return }
            flush()
        }
    }

    /// UTC time as 2026-11-29T02:15:41.123Z.
    static func timestamp() -> String {
        var ts = timespec()
        var tm = unsafe tm()
        // SAFETY: ts and tm are locals alive for the calls.
        unsafe clock_gettime(CLOCK_REALTIME, &ts)
        var secs = ts.tv_sec
        unsafe _ = gmtime_r(&secs, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return unsafe "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T"
            + "\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(pad(Int32(ts.tv_nsec / 1_000_000), 3))Z"
    }
}
