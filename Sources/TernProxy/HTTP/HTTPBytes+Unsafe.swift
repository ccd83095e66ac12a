// The HTTP proxy's memory (ARCHITECTURE.md §4): where received bytes are held while a head is parsed and
// forwarded, and the small per-connection bytes a forwarded head gains. Every raw pointer of the HTTP proxy
// lives in this file; the state machine in HTTPProxy.swift sees only offsets.
//
// Received bytes stay in the pooled receive buffer they arrived in; a head is parsed and forwarded from there
// with iovecs. Only a head split across reads is copied, into an assembly buffer taken from a small pool
// (allocated on first need, kept for reuse: no allocation in steady state). A head still incomplete after a
// receive is moved out of the pooled buffer (`park`), into a small assembly buffer while it fits one: the
// reactor's few hundred receive buffers are shared by every connection, and clients that send a head slowly
// must not hold them (a slow-loris attack would otherwise leave none for anyone).
import Glibc
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

/// Field names and values the engine compares received bytes with (arrays made once: a literal per call would
/// allocate).
struct FieldNames {
    let contentType: [UInt8] = Array("content-type".utf8)
    let applicationGRPC: [UInt8] = Array("application/grpc".utf8)
    let grpcStatus: [UInt8] = Array("grpc-status".utf8)
    let grpcMessage: [UInt8] = Array("grpc-message".utf8)
    let grpcTimeout: [UInt8] = Array("grpc-timeout".utf8)
    let envoyRateLimited: [UInt8] = Array("x-envoy-ratelimited".utf8)
    let origin: [UInt8] = Array("origin".utf8)
    let accessControlRequestMethod: [UInt8] = Array("access-control-request-method".utf8)
    let accessControlRequestHeaders: [UInt8] = Array("access-control-request-headers".utf8)
}

/// Bytes received on one socket and not yet consumed: a range of one pooled buffer or of an assembly buffer.
struct Held {
    /// The pooled receive buffer holding the bytes, or -1.
    var buffer: Int32 = -1
    /// The assembly buffer holding the bytes, or -1.
    var assembly: Int32 = -1
    /// Unconsumed bytes: [start, end) of that buffer.
    var start = 0
    var end = 0

    var isEmpty: Bool { start == end }
    var holdsStorage: Bool { buffer >= 0 || assembly >= 0 }
    var count: Int { end - start }
}

/// Why received bytes could not be added to a head in progress.
enum HeadRefusal: Error {
    /// Beyond the largest head (431).
    case tooLarge
    /// A request head would need memory beyond the reactor's budget for heads in progress (503, OM).
    case overBudget
}

@safe final class HTTPBytes {
    private let pool: BufferPool
    let names = FieldNames()
    let assemblySize: Int
    /// The size of a small assembly buffer: where a partial head waits for its next bytes.
    static let smallAssemblySize = 2048
    private var assemblies: [UnsafeMutableRawPointer] = unsafe []
    private var assemblyIsSmall: [Bool] = []
    /// A large assembly taken for a request head in progress (counted in `largeInUse` until given back).
    private var assemblyIsBudgeted: [Bool] = []
    private var freeAssemblies: [Int32] = []
    private var freeSmall: [Int32] = []
    /// Large assembly buffers holding request heads in progress, and how many they may be (`--max-head-memory-mb`:
    /// memory for heads is accounted, and a head past it is refused rather than allocated for). Large buffers
    /// for other uses (responses composed, response heads) are not counted.
    private(set) var largeInUse = 0
    let headBudget: Int

    /// Per connection slot: the client's address as text (for X-Forwarded-For) and a request id.
    private let scratch: UnsafeMutableRawPointer
    private let scratchCount: Int
    static let scratchSize = 128
    private static let addressLength = 0, addressStart = 1, requestIDStart = 64
    private var rng: SplitMix
    /// Every local reply, rendered once at start: (offset, length) per `LocalReply` case in `replies`.
    private let replies: UnsafeMutableRawPointer
    private var replySpans: [(Int, Int)] = []

    init(pool: BufferPool, assemblySize: Int, slots: Int, headMemory: Int = 64 << 20) {
        self.pool = pool
        self.assemblySize = assemblySize
        headBudget = max(1, headMemory / assemblySize)
        scratchCount = slots
        // SAFETY: owned until deinit; indexes are checked against scratchCount.
        unsafe scratch = calloc(slots, Self.scratchSize)!
        // Index 2 × case + (close ? 1 : 0).
        let rendered = LocalReply.allCases.flatMap { [Array($0.wire(close: false).utf8), Array($0.wire(close: true).utf8)] }
        // SAFETY: owned until deinit; filled once here and only read afterwards.
        let block = unsafe malloc(max(rendered.reduce(0) { $0 + $1.count }, 1))!
        var offset = 0
        var spans: [(Int, Int)] = []
        for r in rendered {
            unsafe r.withUnsafeBytes { unsafe (block + offset).copyMemory(from: $0.baseAddress!, byteCount: r.count) }
            spans.append((offset, r.count))
            offset += r.count
        }
        unsafe replies = block
        replySpans = spans
        var system = SystemRandomNumberGenerator()
        rng = SplitMix(seed: system.next())
        unsafe assemblies.reserveCapacity(64)
        assemblyIsSmall.reserveCapacity(64)
        assemblyIsBudgeted.reserveCapacity(64)
        freeAssemblies.reserveCapacity(64)
        freeSmall.reserveCapacity(64)
    }

    deinit {
        for unsafe a in unsafe assemblies { unsafe free(a) }
        unsafe free(scratch)
        unsafe free(replies)
    }

    /// Appends a whole local reply to entry `entry`.
    func append(_ table: IOVecTable, _ entry: Int, _ reply: LocalReply, close: Bool) -> Bool {
        let (offset, count) = replySpans[2 * reply.rawValue + (close ? 1 : 0)]
        return unsafe table.append(entry, UnsafeRawBufferPointer(start: replies + offset, count: count))
    }

    private func base(_ h: Held) -> UnsafeMutableRawPointer {
        if h.assembly >= 0 { return unsafe assemblies[Int(h.assembly)] }
        precondition(h.buffer >= 0, "no storage held")
        return unsafe UnsafeMutableRawPointer(mutating: pool.bytes(UInt16(h.buffer), length: 0).baseAddress!)
    }

    private func view(_ h: Held, _ range: Range<Int>) -> UnsafeRawBufferPointer {
        precondition(range.lowerBound >= 0 && range.upperBound <= (h.assembly >= 0 ? capacity(h.assembly) : pool.size), "range outside held storage")
        // SAFETY: the range lies inside the held buffer (checked above), which stays allocated while held.
        return unsafe UnsafeRawBufferPointer(start: base(h) + range.lowerBound, count: range.count)
    }

    /// Adds `count` bytes received into pooled buffer `id` to `held` and returns the pooled buffers no longer
    /// needed (their bytes were copied into an assembly buffer) for the caller to release. The first bytes of
    /// a message stay in the buffer they arrived in; a head split across reads is gathered in an assembly
    /// buffer. Throws, changing nothing, when the bytes would not fit (`tooLarge`), or when a request head
    /// (`budgeted`) would need a large assembly buffer beyond the reactor's head memory (`overBudget`).
    func take(buffer id: UInt16, count: Int, into held: inout Held, budgeted: Bool = false) throws(HeadRefusal) -> (UInt16?, UInt16?) {
        if !held.holdsStorage {
            held = Held(buffer: Int32(id), assembly: -1, start: 0, end: count)
            return (nil, nil)
        }
        let total = held.count + count
        guard total <= assemblySize else { throw .tooLarge }
        var released: UInt16? = nil
        if held.assembly < 0 || total > capacity(held.assembly) {
            // (A large assembly is never outgrown: it holds the largest head.)
            if budgeted && total > Self.smallAssemblySize && largeInUse >= headBudget { throw .overBudget }
            // Into an assembly buffer big enough: from a pooled buffer, or out of a small one outgrown.
            let a = takeAssembly(small: total <= Self.smallAssemblySize, budgeted: budgeted)
            unsafe assemblies[Int(a)].copyMemory(from: base(held) + held.start, byteCount: held.count)
            if held.assembly >= 0 { giveBack(held.assembly) } else { released = UInt16(held.buffer) }
            held = Held(buffer: -1, assembly: a, start: 0, end: held.count)
        } else if held.start > 0 {
            // Unconsumed bytes to the front.
            let p = unsafe assemblies[Int(held.assembly)]
            unsafe p.copyMemory(from: p + held.start, byteCount: held.count)
            held.end = held.count
            held.start = 0
        }
        let src = unsafe pool.bytes(id, length: count)
        unsafe (assemblies[Int(held.assembly)] + held.end).copyMemory(from: src.baseAddress!, byteCount: count)
        held.end += count
        return (released, id)
    }

    /// Moves held bytes into a large assembly buffer, taken from the head budget (`overBudget` when it is spent),
    /// so that bytes appended up to `assemblySize` never need another; returns the pooled buffer they were in,
    /// to release. For a request body gathered whole for retries.
    func holdLarge(_ held: inout Held) throws(HeadRefusal) -> UInt16? {
        if held.assembly >= 0 && !assemblyIsSmall[Int(held.assembly)] { return nil }
        if largeInUse >= headBudget { throw .overBudget }
        let a = takeAssembly(small: false, budgeted: true)
        unsafe assemblies[Int(a)].copyMemory(from: base(held) + held.start, byteCount: held.count)
        var released: UInt16? = nil
        if held.assembly >= 0 { giveBack(held.assembly) } else { released = UInt16(held.buffer) }
        held = Held(buffer: -1, assembly: a, start: 0, end: held.count)
        return released
    }

    /// Moves held bytes out of their pooled receive buffer into an assembly buffer (a small one when they fit)
    /// and returns the pooled buffer to release; nil when they were not in one. For a head still incomplete
    /// after a receive: its connection then holds none of the reactor's shared receive buffers while it waits.
    func park(_ held: inout Held, budgeted: Bool = true) throws(HeadRefusal) -> UInt16? {
        guard held.buffer >= 0, held.assembly < 0 else { return nil }
        if budgeted && held.count > Self.smallAssemblySize && largeInUse >= headBudget { throw .overBudget }
        let a = takeAssembly(small: held.count <= Self.smallAssemblySize, budgeted: budgeted)
        unsafe assemblies[Int(a)].copyMemory(from: base(held) + held.start, byteCount: held.count)
        let released = UInt16(held.buffer)
        held = Held(buffer: -1, assembly: a, start: 0, end: held.count)
        return released
    }

    private func capacity(_ a: Int32) -> Int { assemblyIsSmall[Int(a)] ? Self.smallAssemblySize : assemblySize }

    private func takeAssembly(small: Bool = false, budgeted: Bool = false) -> Int32 {
        let a: Int32
        if small, let free = freeSmall.popLast() {
            a = free
        } else if !small, let free = freeAssemblies.popLast() {
            a = free
        } else {
            // SAFETY: owned by `assemblies` until deinit.
            let memory = unsafe malloc(small ? Self.smallAssemblySize : assemblySize)!
            unsafe assemblies.append(memory)
            assemblyIsSmall.append(small)
            assemblyIsBudgeted.append(false)
            a = unsafe Int32(assemblies.count - 1)
        }
        if budgeted && !small {
            assemblyIsBudgeted[Int(a)] = true
            largeInUse += 1
        }
        return a
    }

    /// An assembly buffer no longer used: kept for reuse. Its memory is never returned to the allocator while
    /// the proxy runs: a send of a connection being torn down may still be reading it (its cancellation is
    /// asynchronous), and freed memory could then carry another client's bytes.
    private func giveBack(_ a: Int32) {
        if assemblyIsBudgeted[Int(a)] {
            assemblyIsBudgeted[Int(a)] = false
            largeInUse -= 1
        }
        if assemblyIsSmall[Int(a)] { freeSmall.append(a) } else { freeAssemblies.append(a) }
    }

    /// Drops the held bytes' storage. Returns a pooled buffer to release, if one was held.
    func drop(_ held: inout Held) -> UInt16? {
        if held.assembly >= 0 { giveBack(held.assembly) }
        let b: UInt16? = held.buffer >= 0 ? UInt16(held.buffer) : nil
        held = Held()
        return b
    }

    /// Parses (more of) the head that starts at `held.start`.
    func parse(_ parser: inout HTTP1Parser, _ held: Held) throws(HTTPParseError) -> HTTP1Parser.Progress {
        try unsafe parser.parse(view(held, held.start..<held.end))
    }

    /// Decodes chunked framing over held bytes [from, held.end); offsets in the output are relative to `from`.
    func decode(_ decoder: inout ChunkedDecoder, _ held: Held, from: Int) throws(HTTPParseError) -> ChunkedDecoder.Output {
        try unsafe decoder.decode(view(held, from..<held.end))
    }

    /// Plans a forwarded head with `plan` over the held head and appends its pieces to entry `entry` of
    /// `table`; the client's address and a generated request id come from the connection's scratch `slot`, and
    /// the request id is also captured for the exchange in `captureSlot`. False when the entry ran out of
    /// segments.
    func appendHead(_ table: IOVecTable, _ entry: Int, _ held: Held, slot: Int,
                    _ plan: (HTTP1Head, borrowing Span<UInt8>, (HTTP1Forwarding.Piece) -> Void) -> Void,
                    head: HTTP1Head, extras: Held = Held(), target: Range<Int> = 0..<0,
                    fields: Range<Int> = 0..<0, trace: Range<Int> = 0..<0, capture: RequestCapture? = nil,
                    captureSlot: Int = 0, newRequestID: Bool = true) -> Bool
    {
        let whole = unsafe view(held, held.start..<held.end)
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self)
        // A flag on self rather than a local captured by the closure: a captured local var would be boxed on the
        // heap, one allocation per head.
        appendFailed = false
        // Both closures are written as arguments: a closure stored in a local first is an escaping one, and its
        // captures went to a heap context, one allocation per forwarded head (two per request).
        unsafe plan(head, bytes.span) { piece in
            switch piece {
            case .bytes(let r):
                unsafe add(table, entry, UnsafeRawBufferPointer(rebasing: whole[r]))
            case .literal(let s):
                unsafe add(table, entry, UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
            case .clientAddress:
                let n = Int(unsafe scratchPointer(slot).load(fromByteOffset: Self.addressLength, as: UInt8.self))
                unsafe add(table, entry, UnsafeRawBufferPointer(start: scratchPointer(slot) + Self.addressStart, count: n))
            case .requestID:
                let p = unsafe scratchPointer(slot) + Self.requestIDStart
                // Made once per request: its mirror and its retries carry the same id (Envoy's HCM sets it once).
                if newRequestID { unsafe writeUUIDv4(p) }
                unsafe add(table, entry, UnsafeRawBufferPointer(start: p, count: 36))
                // The id the upstream gets is the one the access log and the span report.
                unsafe capture?.set(captureSlot, .requestID, UnsafeRawBufferPointer(start: p, count: 36))
            case .routeTarget:
                unsafe add(table, entry, view(extras, target))
            case .routeFields:
                unsafe add(table, entry, view(extras, fields))
            case .traceFields:
                unsafe add(table, entry, view(extras, trace))
            }
        }
        return !appendFailed
    }

    private var appendFailed = false

    private func add(_ table: IOVecTable, _ entry: Int, _ b: UnsafeRawBufferPointer) {
        if unsafe !table.append(entry, b) { appendFailed = true }
    }

    /// Copies what the access log and spans report of a request into `capture`: method, target, Host,
    /// User-Agent, the received X-Forwarded-For and x-request-id (the first of each).
    func capture(_ head: HTTP1Head, held: Held, into capture: RequestCapture, slot: Int) {
        let whole = unsafe view(held, held.start..<held.end)
        unsafe capture.set(slot, .method, UnsafeRawBufferPointer(rebasing: whole[head.startLineOffset..<(head.target.lowerBound - 1)]))
        unsafe capture.set(slot, .path, UnsafeRawBufferPointer(rebasing: whole[head.target]))
        if let host = head.host {
            unsafe capture.set(slot, .authority, UnsafeRawBufferPointer(rebasing: whole[host]))
        } else {
            capture.clear(slot, .authority)
        }
        capture.clear(slot, .userAgent)
        capture.clear(slot, .forwardedFor)
        capture.clear(slot, .requestID)
        for i in head.fields.indices {
            let f = head.fields[i]
            let field: CapturedField
            switch f.known {
            case .userAgent: field = .userAgent
            case .xForwardedFor: field = .forwardedFor
            case .xRequestID: field = .requestID
            default: continue
            }
            if capture.length(slot, field) == 0 { unsafe capture.set(slot, field, UnsafeRawBufferPointer(rebasing: whole[f.value])) }
        }
    }

    /// The trace context of the held request head; its tracestate values go to `capture`.
    func traceHeaders(_ head: HTTP1Head, held: Held, capture: RequestCapture?, slot: Int) -> TraceHeaders {
        let whole = unsafe view(held, held.start..<held.end)
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        return TraceHeaders(head: head, bytes: bytes, capture: capture, slot: slot)
    }

    /// Selects the route for the request whose head is held (its Host, the port it was addressed to), reading
    /// the head in place, with reactor `reactor`'s copies of the table's regexes.
    func select(_ table: RouteTable, head: HTTP1Head, held: Held, port: UInt16, reactor: Int) -> RouteMatch {
        let whole = unsafe view(held, held.start..<held.end)
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        let view = RequestView(http1: head, bytes: bytes)
        guard let host = head.host else { return .noHost }
        return table.select(host: bytes.extracting(host), port: port, request: view, reactor: reactor)
    }

    /// Whether the held request is a gRPC one: its Content-Type is `application/grpc`, alone or followed by `+` or
    /// `;` (as Envoy's `Grpc::Common::isGrpcRequestHeaders` reads it).
    func isGRPC(_ head: HTTP1Head, held: Held) -> Bool {
        let whole = unsafe view(held, held.start..<held.end)
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        let request = RequestView(http1: head, bytes: bytes)
        guard let v = request.header(names.contentType) else { return false }
        let want = names.applicationGRPC
        guard v.count >= want.count else { return false }
        for i in 0..<want.count where bytes[v.lowerBound + i] | 0x20 != want[i] | 0x20 { return false }
        if v.count == want.count { return true }
        let next = bytes[v.lowerBound + want.count]
        return next == UInt8(ascii: "+") || next == UInt8(ascii: ";")
    }

    /// The value of the first field of a held head named `lowercaseName` as a decimal number (nil: absent, or
    /// not a number of at most 9 digits), and whether such a field is present at all.
    /// The nanoseconds a held request head's `grpc-timeout` asks for (nil: none, or not a valid value, which sets
    /// no deadline, as in Envoy).
    func grpcTimeout(_ head: HTTP1Head, held: Held) -> UInt64? {
        let whole = unsafe view(held, held.start..<held.end)
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        let request = RequestView(http1: head, bytes: bytes)
        guard let v = request.header(names.grpcTimeout) else { return nil }
        return unsafe GRPC.timeoutNanos(UnsafeRawBufferPointer(rebasing: whole[v]))
    }

    /// The AuthorizationPolicies' decision for a held request head on a connection with `facts`.
    func authorize(_ table: AuthorizationTable, _ facts: AuthorizationFacts, _ head: HTTP1Head, held: Held,
                   scratch: inout [UInt8]) -> AuthorizationDecision {
        let whole = unsafe view(held, held.start..<held.end)
        // SAFETY: the view lies inside the held buffer (checked by `view`), which stays allocated while held.
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        return table.evaluate(facts, request: RequestView(http1: head, bytes: bytes), scratch: &scratch)
    }

    /// The value of the first field of a held head named `lowercaseName`, copied into `text` (left as it is when
    /// there is none).
    func textField(_ head: HTTP1Head, held: Held, _ lowercaseName: [UInt8], into text: inout ShortText) {
        let whole = unsafe view(held, held.start..<held.end)
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        let request = RequestView(http1: head, bytes: bytes)
        guard let v = request.header(lowercaseName) else { return }
        unsafe text.set(UnsafeRawBufferPointer(rebasing: whole[v]))
    }

    func decimalField(_ head: HTTP1Head, held: Held, _ lowercaseName: [UInt8]) -> (present: Bool, value: Int?) {
        let whole = unsafe view(held, held.start..<held.end)
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        for i in 0..<head.fields.count where head.fields[i].name.count == lowercaseName.count {
            let name = head.fields[i].name
            var same = true
            for k in 0..<name.count where bytes[name.lowerBound + k] | 0x20 != lowercaseName[k] | 0x20 {
                same = false
                break
            }
            guard same else { continue }
            let v = head.fields[i].value
            guard !v.isEmpty, v.count <= 9 else { return (true, nil) }
            var n = 0
            for k in v {
                let d = bytes[k]
                guard d >= 48 && d <= 57 else { return (true, nil) }
                n = n * 10 + Int(d - 48)
            }
            return (true, n)
        }
        return (false, nil)
    }

    /// The consistent-hash key of the held request for `cluster` (`RouteTable.hashKey`), the source address
    /// being the client's IP as text (kept per slot for X-Forwarded-For).
    func hashKey(_ table: RouteTable, cluster: Int, head: HTTP1Head, held: Held, slot: Int) -> UInt64? {
        let whole = unsafe view(held, held.start..<held.end)
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        let request = RequestView(http1: head, bytes: bytes)
        let p = unsafe scratchPointer(slot)
        let n = Int(unsafe p.load(fromByteOffset: Self.addressLength, as: UInt8.self))
        let source = unsafe UnsafeRawBufferPointer(start: p + Self.addressStart, count: n).assumingMemoryBound(to: UInt8.self).span
        return table.hashKey(cluster: cluster, request: request, sourceAddress: source)
    }

    /// Writes a response of Tern's own making (a route's directResponse or redirect) into an assembly buffer
    /// and returns it held, to be sent from there and dropped after: its bytes live as long as the send. Nil
    /// when it does not fit.
    /// `smallOnly`: nil rather than a large assembly (what an exchange keeps for its whole life, such as the CORS
    /// lines of its response: a client's long Origin must not pin a large buffer that no budget counts).
    func compose(smallOnly: Bool = false, _ build: (inout ResponseWriter) -> Void) -> Held? {
        // A small assembly first (what most heads' extras need: a few field lines), a large one when that overflows
        // (`build` writes again from the start).
        var small = true
        while true {
            let a = takeAssembly(small: small)
            var w = unsafe ResponseWriter(base: assemblies[Int(a)], capacity: small ? Self.smallAssemblySize : assemblySize)
            build(&w)
            if !w.overflowed { return Held(buffer: -1, assembly: a, start: 0, end: w.count) }
            giveBack(a)
            if !small || smallOnly { return nil }
            small = false
        }
    }

    /// Bytes of the held request head (for a redirect's Location: its Host and path).
    func copy(_ range: Range<Int>, from held: Held, into w: inout ResponseWriter) {
        unsafe w.append(view(held, (held.start + range.lowerBound)..<(held.start + range.upperBound)))
    }

    /// Normalises the path of the request whose head `parser` parsed from `held` (Istio's path normalisation,
    /// `mode`), in place: the normal path, never longer, ends where the received one ended, and what came before it
    /// in the request-line moves right by the bytes saved (`HTTP1Parser.startLineShortened`), so the fields stay
    /// where they are. `scratch` keeps its capacity (no allocation once grown).
    func normalizePath(_ parser: inout HTTP1Parser, held: Held, mode: PathNormalization, scratch: inout [UInt8]) -> PathNormalization.Outcome {
        let head = parser.head
        guard mode != .none, head.targetForm == .origin || head.targetForm == .absolute else { return .unchanged }
        let path = pathExtent(head, held: held)
        guard !path.isEmpty else { return .unchanged }
        let line = unsafe base(held) + held.start
        // SAFETY: the path lies inside the held head (its ranges are the parser's over these bytes).
        let received = unsafe UnsafeRawBufferPointer(start: line + path.lowerBound, count: path.count)
        let outcome = unsafe received.withMemoryRebound(to: UInt8.self) { unsafe mode.normalize($0.span, into: &scratch) }
        guard outcome == .normalized else { return outcome }
        let delta = path.count - scratch.count
        guard delta >= 0 else {
            bug("path normalisation lengthened a path")
            return .unchanged
        }
        let start = head.startLineOffset
        // SAFETY: both ranges lie inside the request-line of the held head; memmove allows the overlap.
        unsafe (line + start + delta).copyMemory(from: line + start, byteCount: path.lowerBound - start)
        unsafe scratch.withUnsafeBytes { unsafe (line + path.lowerBound + delta).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        parser.startLineShortened(by: delta)
        return .normalized
    }

    /// The path of the request-target in the held head (`RequestView.pathExtent`), in the head's coordinates.
    func pathExtent(_ head: HTTP1Head, held: Held) -> Range<Int> {
        let t = head.target
        let v = unsafe view(held, (held.start + t.lowerBound)..<(held.start + t.upperBound))
        // SAFETY: the view lies inside the held buffer (checked by `view`), which stays allocated while held.
        let path = RequestView.pathExtent(of: unsafe v.assumingMemoryBound(to: UInt8.self).span)
        return (t.lowerBound + path.lowerBound)..<(t.lowerBound + path.upperBound)
    }

    /// Writes a redirect's Location for the request whose head is held (`HTTPRedirect.writeLocation`).
    /// Allocates nothing.
    func writeLocation(_ redirect: HTTPRedirect, _ head: HTTP1Head, _ held: Held, port: UInt16, matchedPrefix: Int,
                       into w: inout ResponseWriter)
    {
        let whole = unsafe view(held, held.start..<held.end)
        // SAFETY: the view lies inside the held buffer (checked by `view`), which stays allocated while held.
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        let target = bytes.extracting(head.target)
        if let host = head.host {
            redirect.writeLocation(host: bytes.extracting(host), target: target, requestPort: port,
                                   matchedPrefix: matchedPrefix) { piece in w.append(piece) }
        } else {
            redirect.writeLocation(host: nil, target: target, requestPort: port,
                                   matchedPrefix: matchedPrefix) { piece in w.append(piece) }
        }
    }

    /// Writes the target part `range` of the held head (a path, then maybe its query and fragment) with the path
    /// rewritten by `regex` with reactor `reactor`'s copy (`RegexRewrite.apply(target:reactor:_:)`). Allocates
    /// nothing but what RE2 may to find groups (`CompiledRegex`).
    func rewrite(_ range: Range<Int>, from held: Held, with regex: RegexRewrite, reactor: Int, into w: inout ResponseWriter) {
        let v = unsafe view(held, (held.start + range.lowerBound)..<(held.start + range.upperBound))
        // SAFETY: the view lies inside the held buffer (checked by `view`), which stays allocated while held.
        let target = unsafe v.assumingMemoryBound(to: UInt8.self).span
        regex.apply(target: target, reactor: reactor) { piece in w.append(piece) }
    }

    /// The name of a Host value in the held head (without its port, without the brackets of an IPv6 literal,
    /// lower-cased) hashed (FNV-1a, never 0), and the name as text when `text` (auto SNI: the text is made once per
    /// name, the hash per request).
    func hostName(_ host: Range<Int>, held: Held, text: Bool) -> (hash: UInt64, name: String?) {
        let v = unsafe view(held, (held.start + host.lowerBound)..<(held.start + host.upperBound))
        var end = v.count
        // "name:port": the port goes; "[v6]:port" and "[v6]": the brackets and port go.
        if let colon = unsafe v.lastIndex(of: 0x3A), unsafe !v.contains(0x5D) || (colon > 0 && v[colon - 1] == 0x5D) { end = colon }
        var start = 0
        if end > 1, unsafe v[0] == 0x5B, unsafe v[end - 1] == 0x5D {
            start = 1
            end -= 1
        }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        var bytes: [UInt8] = []
        if text { bytes.reserveCapacity(end - start) }
        for i in start..<end {
            var b = unsafe v[i]
            if b >= 0x41 && b <= 0x5A { b |= 0x20 }
            hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3
            if text { bytes.append(b) }
        }
        return (hash == 0 ? 1 : hash, text ? String(decoding: bytes, as: UTF8.self) : nil)
    }

    /// The port at the end of a Host value in the held head ("name:8080", "[::1]:8080"), if any.
    func port(in host: Range<Int>, held: Held) -> UInt16? {
        let v = unsafe view(held, (held.start + host.lowerBound)..<(held.start + host.upperBound))
        var i = v.count
        var value = 0
        var scale = 1
        while i > 0 {
            let b = unsafe v[i - 1]
            if b == 0x3A { return i < v.count && value <= 65535 ? UInt16(value) : nil }
            guard b >= 0x30 && b <= 0x39, scale <= 10000 else { return nil }
            value += Int(b - 0x30) * scale
            scale *= 10
            i -= 1
        }
        return nil
    }

    /// Appends held bytes [range) to entry `entry`.
    func append(_ table: IOVecTable, _ entry: Int, _ held: Held, _ range: Range<Int>) -> Bool {
        unsafe table.append(entry, view(held, range))
    }

    /// Appends bytes of a route table (a large directResponse body) to entry `entry`.
    ///
    /// SAFETY: the caller keeps the table that owns `bytes` (`RoutedTables`) until the send is over; a table is
    /// immutable, so the array's storage neither moves nor changes while it is kept.
    func appendTableBytes(_ table: IOVecTable, _ entry: Int, _ bytes: [UInt8]) -> Bool {
        unsafe bytes.withUnsafeBytes { unsafe table.append(entry, $0) }
    }

    /// Appends a literal to entry `entry`.
    func append(_ table: IOVecTable, _ entry: Int, _ literal: StaticString) -> Bool {
        unsafe table.append(entry, UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    private func scratchPointer(_ slot: Int) -> UnsafeMutableRawPointer {
        precondition(slot >= 0 && slot < scratchCount, "scratch slot out of range")
        return unsafe scratch + slot * Self.scratchSize
    }

    /// Records the client's address text for slot `slot` (at accept, once per connection).
    func setClientAddress(_ slot: Int, _ text: borrowing Span<UInt8>) {
        // SAFETY: the buffer is the span's own memory, valid for the call.
        unsafe text.withUnsafeBufferPointer { utf8 in
            let p = unsafe scratchPointer(slot)
            let n = min(utf8.count, Self.requestIDStart - Self.addressStart)
            unsafe p.storeBytes(of: UInt8(n), toByteOffset: Self.addressLength, as: UInt8.self)
            if n > 0 { unsafe (p + Self.addressStart).copyMemory(from: utf8.baseAddress!, byteCount: n) }
        }
    }

    /// Copies slot `from`'s client address to slot `to` (an HTTP/2 stream's slot gets its connection's).
    func copyClientAddress(from: Int, to: Int) {
        let source = unsafe scratchPointer(from), target = unsafe scratchPointer(to)
        unsafe target.storeBytes(of: source.load(fromByteOffset: Self.addressLength, as: UInt8.self), toByteOffset: Self.addressLength, as: UInt8.self)
        unsafe (target + Self.addressStart).copyMemory(from: source + Self.addressStart, byteCount: Self.requestIDStart - Self.addressStart)
    }

    func setClientAddress(_ slot: Int, _ text: String) {
        var text = text
        // SAFETY: the buffer is the string's own UTF-8, valid for the call.
        text.withUTF8 { unsafe setClientAddress(slot, $0.span) }
    }

    /// Writes a random (version 4, RFC 9562 §5.4) UUID as 36 lowercase hex characters with dashes.
    private func writeUUIDv4(_ p: UnsafeMutableRawPointer) {
        var hi = rng.next()
        var lo = rng.next()
        hi = (hi & ~0xF000) | 0x4000                   // version 4 (bits 48–51 of the UUID)
        lo = (lo & ~(0xC << 60)) | (0x8 << 60)         // variant 10
        let hex: StaticString = "0123456789abcdef"
        var out = 0
        for i in 0..<32 {
            if i == 8 || i == 12 || i == 16 || i == 20 {
                unsafe p.storeBytes(of: 0x2D, toByteOffset: out, as: UInt8.self)
                out += 1
            }
            let word = i < 16 ? hi : lo
            let nibble = Int((word >> UInt64(60 - 4 * (i % 16))) & 0xF)
            unsafe p.storeBytes(of: hex.utf8Start[nibble], toByteOffset: out, as: UInt8.self)
            out += 1
        }
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a fast generator for request ids, seeded from getrandom.
struct SplitMix {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    /// `TERN_RANDOM_SEED`, read once at start: set, every random draw (weighted routing, load-balancer choices,
    /// fault percentages, retry jitter) is reproducible from run to run, for tests; unset, seeds come from the
    /// system.
    static let fixedSeed: UInt64? = System.environment("TERN_RANDOM_SEED").flatMap { UInt64($0) }

    /// A generator for one user (`stream`: a reactor's index and what draws from it), from the fixed seed when
    /// one is set, else from the system.
    static func seeded(stream: UInt64) -> SplitMix {
        if let seed = fixedSeed { return SplitMix(seed: mix(seed ^ mix(stream))) }
        var system = SystemRandomNumberGenerator()
        return SplitMix(seed: system.next())
    }
    mutating func next() -> UInt64 {
        let z = Self.mix(state)
        state &+= 0x9E37_79B9_7F4A_7C15
        return z
    }

    /// The output for state `x` before its step: the golden-ratio increment then the finaliser. Also a stateless
    /// mixer for deriving a second, independent-looking number from one (`LoadBalancer`'s second choice).
    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Appends bytes to an assembly buffer without allocating; notes overflow instead of writing past the end.
@safe struct ResponseWriter {
    private let base: UnsafeMutableRawPointer
    private let capacity: Int
    private(set) var count = 0
    private(set) var overflowed = false

    init(base: UnsafeMutableRawPointer, capacity: Int) {
        unsafe self.base = base
        self.capacity = capacity
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard !overflowed, count + bytes.count <= capacity else {
            overflowed = true
            return
        }
        // SAFETY: count + bytes.count <= capacity, the assembly buffer's size.
        let n = bytes.count
        if n > 0 { unsafe (base + count).copyMemory(from: bytes.baseAddress!, byteCount: n) }
        count += n
    }

    mutating func append(_ literal: StaticString) {
        unsafe append(UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    mutating func append(byte: UInt8) {
        guard !overflowed, count < capacity else {
            overflowed = true
            return
        }
        // SAFETY: count < capacity, the assembly buffer's size.
        unsafe (base + count).storeBytes(of: byte, as: UInt8.self)
        count += 1
    }

    mutating func append(_ string: String) {
        // Native strings (those of the route table) lend their UTF-8 in place; others are copied out first.
        if let done: Void = unsafe string.utf8.withContiguousStorageIfAvailable({ unsafe append(UnsafeRawBufferPointer($0)) }) {
            return done
        }
        var s = string
        s.withUTF8 { unsafe append(UnsafeRawBufferPointer($0)) }
    }

    mutating func append(_ bytes: [UInt8]) {
        unsafe bytes.withUnsafeBytes { unsafe append($0) }
    }

    mutating func append(_ bytes: [UInt8], _ range: Range<Int>) {
        unsafe bytes.withUnsafeBytes { unsafe append(UnsafeRawBufferPointer(rebasing: $0[range])) }
    }

    mutating func append(_ bytes: borrowing Span<UInt8>) {
        // SAFETY: the span's memory is valid for the call; `append` copies `count` bytes out of it.
        unsafe bytes.withUnsafeBytes { unsafe append($0) }
    }

    mutating func append(decimal value: Int) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var v = max(value, 0)
        var n = 0
        unsafe withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                unsafe d[9 - n] = UInt8(0x30 + v % 10)
                v /= 10
                n += 1
            } while v > 0 && n < 10
            unsafe append(UnsafeRawBufferPointer(rebasing: d[(10 - n)...]))
        }
    }
}

extension HTTPBytes {
    /// Calls `body` with the value (in the held head's coordinates) of each field of the held head named
    /// `lowercaseName` whose value is not empty, in order.
    func forEachValue(_ head: HTTP1Head, held: Held, named lowercaseName: [UInt8], _ body: (Range<Int>) -> Void) {
        let whole = unsafe view(held, held.start..<held.end)
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        for i in 0..<head.fields.count where head.fields[i].name.count == lowercaseName.count && !head.fields[i].value.isEmpty {
            let name = head.fields[i].name
            var same = true
            for k in 0..<name.count where bytes[name.lowerBound + k] | 0x20 != lowercaseName[k] | 0x20 {
                same = false
                break
            }
            if same { body(head.fields[i].value) }
        }
    }

    /// Whether the CORS policy `policy` of `forwarding` allows the origin at `value` of `held` (relative to its
    /// start, as the line `HTTPProxy.applyCORS` composed holds it).
    func allowsOrigin(_ held: Held, value: Range<Int>, _ forwarding: Forwarding, _ policy: Int, reactor: Int) -> Bool {
        let whole = unsafe view(held, held.start..<held.end)
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        return forwarding.allowsOrigin(policy, bytes.extracting(value), reactor: reactor)
    }

    /// Whether the route drops (removes, or sets anew) the received field whose name is at `name` in the held
    /// bytes (relative to their start, as `appendHead`'s plan names fields): one of `forwarding.names[which]`.
    func drops(_ held: Held, name: Range<Int>, _ forwarding: Forwarding, _ which: Range<Int>) -> Bool {
        let whole = unsafe view(held, held.start..<held.end)
        let bytes = unsafe whole.assumingMemoryBound(to: UInt8.self).span
        return forwarding.drops(bytes.extracting(name), which)
    }
}
