// The span exporter (ARCHITECTURE.md §8: spans exported in batches off the request path): one thread that
// empties every reactor's span ring, encodes a batch (Zipkin v2 or OTLP JSON) and POSTs it to the collector
// over a socket with deadlines. The reactors only ever append to their ring; a slow, failing or dead collector
// costs this thread time and the spans of the failed batch (counted), never a reactor anything.
//
//   every 10 ms:  ≥ batchThreshold spans waiting, or flushInterval since the last batch and any waiting
//                   → drain up to maxBatch spans (every ring, round robin) → encode → POST
//                   2xx: exported += n          else: dropped += n, batchesFailed += 1, back off
//   backing off:  nothing is drained (rings that fill drop and count their spans); the wait doubles from
//                 250 ms up to 4 s per consecutive failure and resets on success
//   stop():       one last flush of what waits, bounded by one request deadline (skipped while the collector
//                 fails: a batch in flight already costs up to one), then the thread ends; spans left are dropped
//
// One HTTP/1.1 request per connection (`connection: close`), Content-Length framed; only the status line of
// the answer is read. Connect waits at most connectTimeout, the whole exchange at most requestTimeout.
import Synchronization
import TernCore
import TernIO
import TernTelemetry

public final class SpanExporter: Sendable {
    public struct Timing: Sendable {
        public var flushIntervalMillis: UInt64 = 200
        public var batchThreshold = 256
        public var maxBatch = 2048
        public var connectTimeoutMillis: UInt64 = 1000
        public var requestTimeoutMillis: UInt64 = 2000
        public var minBackoffMillis: UInt64 = 250
        public var maxBackoffMillis: UInt64 = 4000
        public var tickMillis = 10
        public init() {}
    }

    /// One ring per reactor: reactor i records into `shards[i]`.
    public let shards: [SpanShard]
    public let settings: TracingSettings
    public let timing: Timing
    /// Spans the collector accepted.
    public let spansExported = Atomic<UInt64>(0)
    /// Spans of batches that failed (the rings count their own drops: `spansDropped` adds both).
    public let spansFailed = Atomic<UInt64>(0)
    public let batchesSent = Atomic<UInt64>(0)
    public let batchesFailed = Atomic<UInt64>(0)
    private let stopping = Atomic<Bool>(false)
    private let thread = Mutex<ReactorThread?>(nil)

    public init(reactors: Int, settings: TracingSettings, timing: Timing = Timing()) {
        shards = (0..<max(reactors, 1)).map { _ in SpanShard(capacity: settings.ringCapacity) }
        self.settings = settings
        self.timing = timing
    }

    /// Spans lost: rings that were full, and batches the collector did not take.
    public var spansDropped: UInt64 {
        shards.reduce(spansFailed.load(ordering: .relaxed)) { $0 &+ $1.dropped.load(ordering: .relaxed) }
    }

    /// Starts the exporter thread.
    public func start() throws(SetupError) {
        let exporter = self
        guard let t = ReactorThread.start(name: "tern-spans", { exporter.run() }) else {
            throw SetupError(description: "cannot start the span exporter thread")
        }
        thread.withLock { $0 = t }
    }

    /// Sends what the rings hold (bounded by one request deadline) and ends the thread; returns within two
    /// request deadlines at worst (a batch in flight, then the last). Call after the reactors stopped, so
    /// their last spans are in the rings.
    public func stop() {
        stopping.store(true, ordering: .releasing)
        let t = thread.withLock { $0.take() }
        t?.join()
    }

    /// Tern's own metric families for the exporter (the admin endpoint's /stats/prometheus).
    public func metricFamilies() -> [MetricFamily] {
        [
            MetricFamily(name: "tern_tracing_spans_exported_total", help: "Spans the trace collector accepted.",
                         kind: .counter, samples: [([], Double(spansExported.load(ordering: .relaxed)))]),
            MetricFamily(name: "tern_tracing_spans_dropped_total",
                         help: "Spans lost: a reactor's span ring was full, or the collector did not take their batch.",
                         kind: .counter, samples: [([], Double(spansDropped))]),
            MetricFamily(name: "tern_tracing_batches_failed_total", help: "Span batches the collector did not accept.",
                         kind: .counter, samples: [([], Double(batchesFailed.load(ordering: .relaxed)))]),
        ]
    }

    // MARK: - The exporter thread

    private func run() {
        var state = State()
        var lastFlush = System.monotonicNanos()
        while !stopping.load(ordering: .acquiring) {
            Signals.sleep(milliseconds: timing.tickMillis)
            let now = System.monotonicNanos()
            guard now >= state.backoffUntil else { continue }
            let waiting = shards.reduce(0) { $0 + $1.waiting }
            guard waiting > 0,
                  waiting >= timing.batchThreshold || now &- lastFlush >= timing.flushIntervalMillis * 1_000_000
            else { continue }
            lastFlush = now
            _ = flush(&state, deadline: now + timing.requestTimeoutMillis * 1_000_000)
        }
        // The last spans: as many batches as fit in one request deadline, unless the collector is failing
        // (then stopping would only wait for it once more).
        let deadline = System.monotonicNanos() + timing.requestTimeoutMillis * 1_000_000
        while state.failures == 0 && shards.contains(where: { $0.waiting > 0 }) && System.monotonicNanos() < deadline {
            guard flush(&state, deadline: deadline) else { break }
        }
        var left: UInt64 = 0
        for shard in shards { left &+= UInt64(shard.drain { _ in }) }
        if left > 0 {
            add(spansFailed, left)
            Log.debug("tracing: \(left) spans not exported at exit")
        }
    }

    /// What the thread keeps between batches.
    private struct State {
        var batch: [SpanRecord] = []
        var next = 0
        var address: SocketAddress? = nil
        var failures = 0
        var backoffUntil: UInt64 = 0
    }

    /// Drains one batch and sends it; false when it failed.
    private func flush(_ state: inout State, deadline: UInt64) -> Bool {
        state.batch.removeAll(keepingCapacity: true)
        // Round robin over the rings, so a busy reactor does not starve the others' spans.
        var empty = 0
        while state.batch.count < timing.maxBatch && empty < shards.count {
            let shard = shards[state.next % shards.count]
            state.next &+= 1
            let n = shard.drain(limit: min(64, timing.maxBatch - state.batch.count)) { state.batch.append($0) }
            empty = n == 0 ? empty + 1 : 0
        }
        let n = UInt64(state.batch.count)
        guard n > 0 else { return true }
        let body = settings.encoder.encode(state.batch)
        switch post(body, &state, deadline: deadline) {
        case .success:
            add(spansExported, n)
            add(batchesSent, 1)
            if state.failures > 0 { Log.info("tracing: collector \(settings.collector) accepts spans again") }
            state.failures = 0
            state.backoffUntil = 0
            return true
        case .failure(let why):
            add(spansFailed, n)
            add(batchesFailed, 1)
            if state.failures == 0 {
                Log.warn("tracing: \(n) spans not exported to \(settings.collector): \(why); retrying with backoff")
            } else {
                Log.debug("tracing: \(n) spans not exported: \(why)")
            }
            state.failures += 1
            state.address = nil  // resolve again: the collector may have moved
            let wait = min(timing.minBackoffMillis << UInt64(min(state.failures - 1, 16)), timing.maxBackoffMillis)
            state.backoffUntil = System.monotonicNanos() + wait * 1_000_000
            return false
        }
    }

    private enum Outcome {
        case success
        case failure(String)
    }

    private func add(_ counter: borrowing Atomic<UInt64>, _ n: UInt64) {
        counter.store(counter.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// POSTs `body` to the collector before `deadline`.
    private func post(_ body: [UInt8], _ state: inout State, deadline: UInt64) -> Outcome {
        let collector = settings.collector
        if state.address == nil {
            state.address = SocketAddress(parsing: collector.authority)
                ?? SocketAddress.resolve(host: collector.host, port: collector.port).first
        }
        guard let address = state.address else { return .failure("\(collector.host) does not resolve") }
        let left = Self.millisLeft(deadline)
        guard left > 0 else { return .failure("no time left") }
        var request = Array("POST \(collector.path) HTTP/1.1\r\nhost: \(collector.authority)\r\n".utf8)
        request += Array("content-type: \(settings.encoder.contentType)\r\ncontent-length: \(body.count)\r\n".utf8)
        request += Array("user-agent: tern\r\nconnection: close\r\n\r\n".utf8)
        request += body
        do {
            let socket = try BlockingSocket.connect(to: address, timeoutMillis: min(Int32(timing.connectTimeoutMillis), left))
            try socket.send(request, deadline: deadline)
            var answer: [UInt8] = []
            while !answer.contains(0x0A) && answer.count < 1024 {
                let got = try socket.receive(max: 1024, deadline: deadline)
                if got.isEmpty { break }
                answer += got
            }
            guard let code = Self.status(answer) else {
                return .failure(answer.isEmpty ? "connection closed without an answer" : "not an HTTP answer")
            }
            return code >= 200 && code < 300 ? .success : .failure("HTTP \(code)")
        } catch {
            return .failure("\(error)")
        }
    }

    /// Milliseconds until a monotonic deadline, for calls that take a timeout rather than a deadline.
    private static func millisLeft(_ deadline: UInt64) -> Int32 {
        let now = System.monotonicNanos()
        guard deadline > now else { return 0 }
        return Int32(min((deadline - now) / 1_000_000, UInt64(Int32.max)))
    }

    /// The status code of "HTTP/1.x NNN …".
    static func status(_ answer: [UInt8]) -> Int? {
        guard answer.count >= 12, answer.starts(with: Array("HTTP/1.".utf8)), answer[8] == 0x20 else { return nil }
        var code = 0
        for b in answer[9..<12] {
            guard b >= 0x30 && b <= 0x39 else { return nil }
            code = code * 10 + Int(b - 0x30)
        }
        return code
    }
}
