// One HTTP/2 connection's protocol state over nghttp2 1.52, I/O-free as the HTTP/1.1 parser is: the bytes received
// go in (`receive`), the frames to send come out (`nextOutput`), and what happened comes out as events (from either
// call: a stream closes as its last frame is sent, too), which the caller handles and clears (`clearEvents`) before
// it calls `receive` again. Nothing here makes a system call.
//
// No per-request allocation once warm: header fields of the heads received are copied into one byte arena per
// session and described by ranges, events go into an array kept across calls, and heads to send are built in a
// second arena. DATA payloads are not copied on the way in: an event gives their range in the input. Going out,
// nghttp2 copies body bytes into its frame buffer as it frames them (once), reading them through `bodySource`.
//
// Flow control is the caller's: automatic WINDOW_UPDATEs are off, and a stream's (and the connection's) window
// opens only as the caller reports bytes consumed (`consume`), so a slow reader on the other side holds at most a
// window of memory per stream.
import CTernNghttp2
import TernCore

/// What the peer did, in the order it happened.
public enum HTTP2Event: Equatable, Sendable {
    /// A head: a request (server), or a response, interim (1xx) or final (client). `fields` are indexes into
    /// `HTTP2Session.fields` (pseudo-header fields first, as nghttp2 checks); `endStream`: no body follows.
    case head(stream: Int32, fields: Range<Int>, endStream: Bool)
    /// Trailers: header fields after the body; they end the stream.
    case trailers(stream: Int32, fields: Range<Int>)
    /// Body bytes: `bytes` of the input `receive` was given.
    case data(stream: Int32, bytes: Range<Int>)
    /// The body ended (END_STREAM on a DATA frame).
    case endStream(stream: Int32)
    /// The peer reset the stream (RST_STREAM with this error code).
    case reset(stream: Int32, code: UInt32)
    /// The stream is closed, for whatever reason (after its events; `code` 0 for a clean close).
    case closed(stream: Int32, code: UInt32)
    /// The peer is going away: streams above `lastStream` were not processed and may be retried elsewhere.
    case goaway(lastStream: Int32, code: UInt32)
}

/// What `bodySource` gives for a stream's body when nghttp2 asks for up to `count` bytes.
public enum HTTP2BodyRead: Equatable, Sendable {
    /// `count` bytes were written; `end`: the body ends with them (with trailers to follow: `endWithTrailers`).
    case bytes(Int, end: Bool)
    /// `count` bytes were written and the body ends; trailers follow (`submitTrailers`), which end the stream.
    case endWithTrailers(Int)
    /// Nothing yet: the stream waits until `resume(stream)`.
    case wait
}

/// Why no HTTP/2 session could be made: nghttp2 could not be loaded (the first session loads it), or it could not
/// allocate one.
public struct HTTP2SessionError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// HTTP/2 error codes (RFC 9113 §7).
public enum HTTP2ErrorCode {
    public static let noError: UInt32 = 0x0
    public static let protocolError: UInt32 = 0x1
    public static let internalError: UInt32 = 0x2
    public static let flowControlError: UInt32 = 0x3
    public static let streamClosed: UInt32 = 0x5
    public static let refusedStream: UInt32 = 0x7
    public static let cancel: UInt32 = 0x8
    public static let enhanceYourCalm: UInt32 = 0xb
}

@safe public final class HTTP2Session {
    public enum Role: Sendable { case server, client }

    /// What this side announces in its SETTINGS, and its receive windows.
    public struct Settings: Sendable, Equatable {
        /// Streams the peer may open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
        public var maxConcurrentStreams: UInt32 = 100
        /// Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE).
        public var initialStreamWindow: UInt32 = 65_535
        /// The connection's receive window.
        public var connectionWindow: UInt32 = 1 << 20
        /// The largest frame payload the peer may send (SETTINGS_MAX_FRAME_SIZE, 16,384 to 16,777,215).
        public var maxFrameSize: UInt32 = 16_384
        /// The largest header list the peer may send, by RFC 9113's measure (SETTINGS_MAX_HEADER_LIST_SIZE).
        public var maxHeaderListSize: UInt32 = 60 * 1024
        public init() {}
    }

    public let role: Role
    public let settings: Settings
    /// nghttp2's session (set once at init; nil only if its creation failed, and then `init` threw).
    private var created: OpaquePointer? = nil
    private var session: OpaquePointer { unsafe created! }
    /// The input of the `receive` call in progress (data events' ranges are offsets into it).
    private var input: UnsafeRawBufferPointer? = nil

    /// Events since `clearEvents`: handle them and clear them before calling `receive` again (data events point
    /// into the input of the `receive` call that made them).
    public private(set) var events: [HTTP2Event] = []
    /// The fields of the heads in `events` (and of a head still arriving), in TernCore's protocol-neutral form
    /// (what routing reads of an HTTP/1.1 head too), with ranges into `headerBytes`.
    public private(set) var fields: [HeadField] = []
    /// The bytes `fields` point into.
    public private(set) var headerBytes: [UInt8] = []
    /// Where the head still arriving begins in `fields` (nil: none), and its size so far by RFC 9113's measure
    /// (names and values plus 32 per field); beyond `settings.maxHeaderListSize` its stream is reset and its
    /// fields dropped (nghttp2 announces the limit but does not enforce it: an HPACK bomb would fill memory).
    private var headStart: Int? = nil
    private var headSize = 0
    /// Heads refused for their size since the session began.
    public private(set) var headsTooLarge = 0
    /// Why `receive` failed (nghttp2's error name), after a failure.
    public private(set) var failure: String? = nil
    /// The peer flooded the session with frames that cost work and carry nothing (Envoy's limits, which nghttp2
    /// 1.52 does not have): what it sent. The session has queued GOAWAY ENHANCE_YOUR_CALM and reads nothing more.
    public private(set) var flood: String? = nil
    // Envoy's counters: frames with an empty payload in a row (DATA or HEADERS without END_STREAM, padding not
    // counted as payload), PRIORITY frames and WINDOW_UPDATE frames (every one whose header arrives, on closed
    // streams too), the streams the peer opened and the DATA frames sent.
    private var emptyInARow = 0
    private var priorityFrames = 0
    private var windowUpdates = 0
    private var peerStreams = 0
    private var dataFramesSent = 0

    /// Called as nghttp2 frames a stream's body: write up to the buffer's count of bytes into it.
    public var bodySource: ((Int32, UnsafeMutableRawBufferPointer) -> HTTP2BodyRead)? = nil

    // Heads to send: names and values appended to `outBytes`, described by `outFields`, turned into nghttp2's
    // name/value array (copied by nghttp2 at submit) when submitted.
    private var outBytes: [UInt8] = []
    private var outFields: [(name: Range<Int>, value: Range<Int>)] = []
    private var nv: UnsafeMutablePointer<nghttp2_nv>
    private var nvCapacity = 16

    /// Why nghttp2 could not be loaded (nil: it was). Computed by the first session, once per process (a Swift
    /// global's lazy initialisation: later sessions pay one load of its once-flag, not a dlopen).
    private static let loadFailure: String? = {
        // SAFETY: `error` is a local array alive for the call; the shim writes at most `count` bytes into it,
        // terminated, and reads it back only after.
        var error = [CChar](repeating: 0, count: 256)
        let ok = unsafe error.withUnsafeMutableBufferPointer { unsafe tern_nghttp2_load($0.baseAddress, $0.count) }
        return ok == 1 ? nil : unsafe error.withUnsafeBufferPointer { unsafe String(cString: $0.baseAddress!) }
    }()

    /// A session for one connection. A server session expects the client's connection preface first; both send
    /// their SETTINGS with their first output. The first session of the process loads nghttp2.
    public init(role: Role, settings: Settings = Settings()) throws(HTTP2SessionError) {
        if let failure = Self.loadFailure { throw HTTP2SessionError(failure) }
        self.role = role
        self.settings = settings
        var callbacks: OpaquePointer? = nil
        guard unsafe tern_nghttp2_session_callbacks_new(&callbacks) == 0, let cbs = unsafe callbacks else {
            throw HTTP2SessionError("nghttp2 cannot allocate its callbacks: out of memory")
        }
        defer { unsafe tern_nghttp2_session_callbacks_del(cbs) }
        unsafe Self.install(cbs)
        var option: OpaquePointer? = nil
        guard unsafe tern_nghttp2_option_new(&option) == 0, let opt = unsafe option else {
            throw HTTP2SessionError("nghttp2 cannot allocate its options: out of memory")
        }
        defer { unsafe tern_nghttp2_option_del(opt) }
        // Windows open only as the caller consumes (`consume`).
        unsafe tern_nghttp2_option_set_no_auto_window_update(opt, 1)
        unsafe tern_nghttp2_option_set_peer_max_concurrent_streams(opt, 100)
        unsafe tern_nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024)
        // SETTINGS entries in one frame, and frames (SETTINGS and PING acknowledgements) queued and unsent: floods
        // of either end the connection (nghttp2's flood protection, NGHTTP2_ERR_FLOODED).
        unsafe tern_nghttp2_option_set_max_settings(opt, 32)
        unsafe tern_nghttp2_option_set_max_outbound_ack(opt, 1000)
        unsafe nv = UnsafeMutablePointer<nghttp2_nv>.allocate(capacity: 16)
        var made: OpaquePointer? = nil
        let me = unsafe Unmanaged.passUnretained(self).toOpaque()
        // nghttp2's blocks come from the shim's per-thread free lists (mem.c), so a stream reuses what the streams
        // before it freed instead of calling malloc.
        let rc = role == .server ? unsafe tern_nghttp2_session_server_new3(&made, cbs, me, opt, tern_nghttp2_mem())
            : unsafe tern_nghttp2_session_client_new3(&made, cbs, me, opt, tern_nghttp2_mem())
        guard rc == 0, let s = unsafe made else {
            throw HTTP2SessionError("nghttp2 cannot make a session: \(unsafe String(cString: tern_nghttp2_strerror(rc)))")
        }
        unsafe created = s
        tern_nghttp2_mem_hold()
        var iv = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: settings.maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: settings.initialStreamWindow),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_FRAME_SIZE.rawValue), value: settings.maxFrameSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: settings.maxHeaderListSize),
        ]
        if role == .client {
            iv.append(nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0))
        }
        unsafe iv.withUnsafeBufferPointer { b in
            _ = unsafe tern_nghttp2_submit_settings(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), b.baseAddress, b.count)
        }
        // The connection window beyond the 65,535 bytes every connection starts with.
        _ = unsafe tern_nghttp2_session_set_local_window_size(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Int32(clamping: settings.connectionWindow))
    }

    deinit {
        if let s = unsafe created {
            unsafe tern_nghttp2_session_del(s)
            // (The thread's last session gone, its cached blocks go back to malloc.)
            tern_nghttp2_mem_release()
        }
        unsafe lastWordsOut?.deallocate()
        unsafe nv.deallocate()
    }

    // MARK: Receiving

    /// Processes `bytes` received, adding events. False when the connection is beyond saving (`failure` says why):
    /// send what `nextOutput` still gives (a GOAWAY, when nghttp2 queued one), then close.
    public func receive(_ bytes: UnsafeRawBufferPointer) -> Bool {
        assert(events.isEmpty, "HTTP/2 events not cleared before receive")
        unsafe input = bytes
        defer { unsafe input = nil }
        let floodedBefore = flood != nil
        let n = unsafe tern_nghttp2_session_mem_recv(session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        // A flood in this read stopped nghttp2 where it was found (`flooded`): not a failure, its GOAWAY is queued.
        if n < 0 && !floodedBefore && flood != nil { return true }
        guard n >= 0 else {
            let code = Int32(n)
            failure = unsafe String(cString: tern_nghttp2_strerror(code))
            // The peer gets GOAWAY: ENHANCE_YOUR_CALM for a flood (CONTINUATION frames beyond nghttp2's bound,
            // acknowledgements it does not read, heads beyond the arena's cap), else PROTOCOL_ERROR. After a fatal
            // error nghttp2 sends nothing more: the frame is written here (it needs no state but the last stream).
            let calm = code == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS.rawValue || code == NGHTTP2_ERR_FLOODED.rawValue
                || code == NGHTTP2_ERR_CALLBACK_FAILURE.rawValue
            failedForFlood = calm
            let why = calm ? HTTP2ErrorCode.enhanceYourCalm : HTTP2ErrorCode.protocolError
            if code <= NGHTTP2_ERR_FATAL.rawValue {
                if code != NGHTTP2_ERR_BAD_CLIENT_MAGIC.rawValue && code != NGHTTP2_ERR_FLOODED.rawValue {
                    // (Not to a peer that does not speak HTTP/2, nor to one that reads nothing.)
                    lastWords = Self.goawayFrame(lastStream: unsafe tern_nghttp2_session_get_last_proc_stream_id(session), code: why)
                }
                broken = true
            } else {
                _ = unsafe tern_nghttp2_session_terminate_session(session, why)
            }
            return false
        }
        return true
    }

    /// A GOAWAY with an error code went out (nghttp2 ended the session for the peer's protocol error, or a flood
    /// did): nothing more is served on the connection, which closes once that frame is out (RFC 9113 §5.4.1).
    public private(set) var endedForError = false
    /// The session failed for a flood (`failure` says of what): counted as one.
    public private(set) var failedForFlood = false
    /// nghttp2 failed fatally: it is not called again, and `nextOutput` gives `lastWords` (a GOAWAY) once.
    private var broken = false
    private var lastWords: [UInt8] = []
    private var lastWordsOut: UnsafeMutableRawBufferPointer? = nil

    /// A GOAWAY frame (RFC 9113 §6.8) with no debug data.
    static func goawayFrame(lastStream: Int32, code: UInt32) -> [UInt8] {
        var f: [UInt8] = [0, 0, 8, 0x7, 0, 0, 0, 0, 0]
        for shift in stride(from: 24, through: 0, by: -8) { f.append(UInt8(truncatingIfNeeded: UInt32(bitPattern: lastStream) >> UInt32(shift))) }
        for shift in stride(from: 24, through: 0, by: -8) { f.append(UInt8(truncatingIfNeeded: code >> UInt32(shift))) }
        return f
    }

    /// Forgets the events handled, and the fields of their heads (those of a head still arriving, whose
    /// CONTINUATION frames may come in a later `receive`, are kept).
    public func clearEvents() {
        events.removeAll(keepingCapacity: true)
        // An arena grown far past one head's limit (many heads in one receive) is not kept for the session's life.
        if headStart == nil && headerBytes.capacity > 4 * Int(settings.maxHeaderListSize) {
            headerBytes = []
            fields = []
        }
        guard let start = headStart else {
            fields.removeAll(keepingCapacity: true)
            headerBytes.removeAll(keepingCapacity: true)
            return
        }
        let base = start < fields.count ? fields[start].name.lowerBound : headerBytes.count
        if base > 0 {
            headerBytes.removeSubrange(0..<base)
            for i in start..<fields.count {
                fields[i].name = (fields[i].name.lowerBound - base)..<(fields[i].name.upperBound - base)
                fields[i].value = (fields[i].value.lowerBound - base)..<(fields[i].value.upperBound - base)
            }
        }
        fields.removeSubrange(0..<start)
        headStart = 0
    }

    /// The name of field `i` (an index from an event's range) as bytes.
    public func name(_ i: Int) -> ArraySlice<UInt8> { headerBytes[fields[i].name] }
    /// The value of field `i` as bytes.
    public func value(_ i: Int) -> ArraySlice<UInt8> { headerBytes[fields[i].value] }

    // MARK: Sending

    /// The next bytes to send (valid until the next call or until the session goes), empty when there are none.
    public func nextOutput() -> UnsafeRawBufferPointer {
        if broken {
            guard !lastWords.isEmpty else { return unsafe UnsafeRawBufferPointer(start: nil, count: 0) }
            // (Kept until the session goes: the caller may read it until its next call.)
            let out = UnsafeMutableRawBufferPointer.allocate(byteCount: lastWords.count, alignment: 1)
            unsafe out.copyBytes(from: lastWords)
            lastWords = []
            unsafe lastWordsOut = out
            return UnsafeRawBufferPointer(out)
        }
        var data: UnsafePointer<UInt8>? = nil
        let n = unsafe tern_nghttp2_session_mem_send(session, &data)
        guard n > 0, let d = unsafe data else {
            if n < 0 { failure = unsafe String(cString: tern_nghttp2_strerror(Int32(n))) }
            return unsafe UnsafeRawBufferPointer(start: nil, count: 0)
        }
        return unsafe UnsafeRawBufferPointer(start: d, count: n)
    }

    /// Whether the session still wants to read or write; when neither, the connection is done.
    public var isDone: Bool {
        broken ? lastWords.isEmpty
            : unsafe tern_nghttp2_session_want_read(session) == 0 && tern_nghttp2_session_want_write(session) == 0
    }

    /// Starts a head to send: add its fields (`addField`), pseudo-header fields first, then submit it.
    public func beginHead() {
        outBytes.removeAll(keepingCapacity: true)
        outFields.removeAll(keepingCapacity: true)
    }

    /// Adds a field (a lower-case name) to the head being built.
    public func addField<N: Collection<UInt8>, V: Collection<UInt8>>(_ name: N, _ value: V) {
        let n = outBytes.count
        outBytes.append(contentsOf: name)
        let v = outBytes.count
        outBytes.append(contentsOf: value)
        outFields.append((n..<v, v..<outBytes.count))
    }

    /// Adds a field whose name is lower-cased as it is copied (HTTP/2 field names are lower case).
    public func addFieldLowercasingName<N: Collection<UInt8>, V: Collection<UInt8>>(_ name: N, _ value: V) {
        let n = outBytes.count
        outBytes.append(contentsOf: name)
        let v = outBytes.count
        unsafe outBytes.withUnsafeMutableBufferPointer { b in
            for i in n..<v where unsafe b[i] >= 0x41 && b[i] <= 0x5A { unsafe b[i] |= 0x20 }
        }
        outBytes.append(contentsOf: value)
        outFields.append((n..<v, v..<outBytes.count))
    }

    /// Adds `:status` with a three-digit status (100 to 999) to the head being built, without allocating.
    public func addStatus(_ status: Int) {
        let n = outBytes.count
        outBytes.append(contentsOf: statusName)
        let v = outBytes.count
        outBytes.append(UInt8(0x30 + (status / 100) % 10))
        outBytes.append(UInt8(0x30 + (status / 10) % 10))
        outBytes.append(UInt8(0x30 + status % 10))
        outFields.append((n..<v, v..<outBytes.count))
    }

    /// Sends the head built as a request on a new stream (client); the body, if `hasBody`, is read through
    /// `bodySource`. Returns the stream's id, or nil when no stream can be opened (out of ids, or going away).
    public func submitRequest(hasBody: Bool) -> Int32? {
        let id = unsafe withNameValues { nva, count in
            hasBody ? unsafe withBodyProvider { unsafe tern_nghttp2_submit_request(session, nil, nva, count, $0, nil) }
                : unsafe tern_nghttp2_submit_request(session, nil, nva, count, nil, nil)
        }
        return id > 0 ? id : nil
    }

    /// Sends the head built as the response (or an interim 1xx head, with `interim`) on `stream` (server).
    @discardableResult
    public func submitResponse(stream: Int32, hasBody: Bool, interim: Bool = false) -> Bool {
        let rc = unsafe withNameValues { nva, count in
            if interim {
                return unsafe tern_nghttp2_submit_headers(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, nil, nva, count, nil)
            }
            return hasBody ? unsafe withBodyProvider { unsafe tern_nghttp2_submit_response(session, stream, nva, count, $0) }
                : unsafe tern_nghttp2_submit_response(session, stream, nva, count, nil)
        }
        return rc == 0
    }

    /// Sends the head built as trailers on `stream`, ending it (after its body: `bodySource` said
    /// `endWithTrailers`).
    @discardableResult
    public func submitTrailers(stream: Int32) -> Bool {
        unsafe withNameValues { nva, count in unsafe tern_nghttp2_submit_trailer(session, stream, nva, count) } == 0
    }

    /// Resets `stream` with `code` (RST_STREAM).
    public func reset(stream: Int32, code: UInt32) {
        _ = unsafe tern_nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, code)
    }

    /// Sends GOAWAY with the last stream this side processed and `code`: no stream above it will be served.
    public func goaway(code: UInt32 = HTTP2ErrorCode.noError) {
        let last = unsafe tern_nghttp2_session_get_last_proc_stream_id(session)
        _ = unsafe tern_nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, code, nil, 0)
        drain = .final
    }

    /// A graceful close (Envoy's two-step GOAWAY): `notice` sent GOAWAY with the last stream id 2^31-1 (open no new
    /// streams, those on their way are still served) and a PING; `acknowledged` its PING came back, so every stream
    /// the client opened before it read the notice has arrived; `final` the GOAWAY with the last stream processed
    /// went (also after any `goaway`).
    public enum Drain: Sendable { case none, notice, acknowledged, final }
    public private(set) var drain = Drain.none

    /// The PING sent with the drain notice (its acknowledgement tells that notice from any other PING).
    private static let drainPing: [UInt8] = Array("terndrn1".utf8)

    /// Begins a graceful close (server): the notice and its PING. Call `finishDrain` once `drain` is
    /// `acknowledged`, or when the client has had long enough to answer.
    public func beginDrain() {
        guard drain == .none else { return }
        guard role == .server else { return goaway() }
        _ = unsafe tern_nghttp2_submit_shutdown_notice(session)
        unsafe Self.drainPing.withUnsafeBufferPointer { p in
            _ = unsafe tern_nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), p.baseAddress)
        }
        drain = .notice
    }

    /// A keepalive PING is out and not answered yet.
    public private(set) var pingOutstanding = false
    private static let keepalivePing: [UInt8] = Array("ternkeep".utf8)

    /// Sends a keepalive PING (`pingOutstanding` until its acknowledgement comes).
    public func ping() {
        unsafe Self.keepalivePing.withUnsafeBufferPointer { p in
            _ = unsafe tern_nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), p.baseAddress)
        }
        pingOutstanding = true
    }

    /// Ends a graceful close: GOAWAY NO_ERROR with the last stream processed (nothing above it is served).
    public func finishDrain() {
        guard drain != .final else { return }
        goaway()
    }

    /// Envoy's defaults: `max_consecutive_inbound_frames_with_empty_payload` (1),
    /// `max_inbound_priority_frames_per_stream` (100), `max_inbound_window_update_frames_per_data_frame_sent` (10).
    public static let maxEmptyFramesInARow = 1
    public static let maxPriorityFramesPerStream = 100
    public static let maxWindowUpdatesPerDataFrameSent = 10

    /// Ends the session for a flood: GOAWAY ENHANCE_YOUR_CALM queued, nothing more read. The callback that found
    /// it then fails, so that nghttp2 stops at once (`receive` does not count that as a failure): nghttp2 1.52,
    /// terminated from inside a callback, resets its inbound state after the frame and parses the rest of the read,
    /// and a frame of a wrong size there trips its assertion that all input is ignored (abort(), the whole process;
    /// nghttp2 added the missing checks in 1.68 and 1.69).
    private func flooded(_ what: String) {
        guard flood == nil else { return }
        flood = what
        _ = unsafe tern_nghttp2_session_terminate_session(session, 0xb)
    }

    /// Counts a DATA or HEADERS frame received (`payload`: its length without padding) against the limit of empty
    /// frames in a row.
    fileprivate func countReceived(payload: Int, flags: UInt8) {
        if payload == 0 && flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) == 0 {
            emptyInARow += 1
            if emptyInARow > Self.maxEmptyFramesInARow { flooded("frames with an empty payload") }
        } else {
            emptyInARow = 0
        }
    }

    /// Counts a frame whose header arrived against the PRIORITY and WINDOW_UPDATE limits.
    fileprivate func countBegun(type: UInt8) {
        switch UInt32(type) {
        case NGHTTP2_PRIORITY.rawValue:
            priorityFrames += 1
            if priorityFrames > Self.maxPriorityFramesPerStream * (1 + peerStreams) { flooded("PRIORITY frames") }
        case NGHTTP2_WINDOW_UPDATE.rawValue:
            windowUpdates += 1
            if windowUpdates > 5 + 2 * (peerStreams + Self.maxWindowUpdatesPerDataFrameSent * dataFramesSent) {
                flooded("WINDOW_UPDATE frames")
            }
        default:
            break
        }
    }

    /// The streams the peer lets this side open at once (its SETTINGS_MAX_CONCURRENT_STREAMS; until its SETTINGS
    /// arrive, HTTP/2's recommended 100).
    public var peerMaxConcurrentStreams: UInt32 {
        unsafe tern_nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
    }

    /// Whether a request may be submitted now (client): stream ids are left and no GOAWAY came or went.
    public var canOpenStream: Bool { unsafe tern_nghttp2_session_check_request_allowed(session) != 0 }

    /// The body of `stream` has more to give: nghttp2 asks `bodySource` again.
    public func resume(stream: Int32) { _ = unsafe tern_nghttp2_session_resume_data(session, stream) }

    /// `count` bytes of `stream`'s body were passed on: the peer may send that much more on the stream and the
    /// connection.
    public func consume(stream: Int32, _ count: Int) {
        guard count > 0 else { return }
        _ = unsafe tern_nghttp2_session_consume(session, stream, count)
    }

    /// `count` bytes received on the connection were taken off it: the peer may send that much more on the
    /// connection (the stream's window is left as it is).
    public func consumeConnection(_ count: Int) {
        guard count > 0 else { return }
        _ = unsafe tern_nghttp2_session_consume_connection(session, count)
    }

    /// `count` bytes of `stream`'s body were passed on: the peer may send that much more on the stream (its
    /// connection-level share was given back with `consumeConnection`).
    public func consumeStream(_ stream: Int32, _ count: Int) {
        guard count > 0 else { return }
        _ = unsafe tern_nghttp2_session_consume_stream(session, stream, count)
    }

    /// How many body bytes this side may send on `stream` now (the smaller of its window and the connection's).
    public func sendWindow(stream: Int32) -> Int {
        Int(min(unsafe tern_nghttp2_session_get_stream_remote_window_size(session, stream),
                unsafe tern_nghttp2_session_get_remote_window_size(session)))
    }

    // MARK: nghttp2's name/value arrays and data providers

    private func withNameValues(_ body: (UnsafePointer<nghttp2_nv>, Int) -> Int32) -> Int32 {
        if outFields.count > nvCapacity {
            unsafe nv.deallocate()
            nvCapacity = outFields.count
            unsafe nv = UnsafeMutablePointer<nghttp2_nv>.allocate(capacity: nvCapacity)
        }
        return unsafe outBytes.withUnsafeMutableBufferPointer { b in
            let base = b.baseAddress!
            for (i, f) in outFields.enumerated() {
                unsafe nv[i] = nghttp2_nv(name: base + f.name.lowerBound, value: base + f.value.lowerBound,
                                          namelen: f.name.count, valuelen: f.value.count,
                                          flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
            }
            return unsafe body(nv, outFields.count)
        }
    }

    private func withBodyProvider(_ body: (UnsafePointer<nghttp2_data_provider>) -> Int32) -> Int32 {
        var provider = unsafe nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: { session, stream, buf, length, flags, _, user in
            let me = unsafe Unmanaged<HTTP2Session>.fromOpaque(user!).takeUnretainedValue()
            guard let source = unsafe me.bodySource else { return ssize_t(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
            switch unsafe source(stream, UnsafeMutableRawBufferPointer(start: buf, count: length)) {
            case .wait:
                return ssize_t(NGHTTP2_ERR_DEFERRED.rawValue)
            case .bytes(let n, let end):
                if end { unsafe flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
                return n
            case .endWithTrailers(let n):
                unsafe flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue | NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                return n
            }
        })
        return unsafe body(&provider)
    }

    // MARK: Callbacks

    private static func me(_ user: UnsafeMutableRawPointer?) -> HTTP2Session {
        unsafe Unmanaged<HTTP2Session>.fromOpaque(user!).takeUnretainedValue()
    }

    private static func install(_ cbs: OpaquePointer) {
        unsafe tern_nghttp2_session_callbacks_set_on_begin_headers_callback(cbs) { _, frame, user in
            let me = unsafe HTTP2Session.me(user)
            let category = unsafe frame!.pointee.headers.cat
            if category == NGHTTP2_HCAT_REQUEST || category == NGHTTP2_HCAT_RESPONSE { me.peerStreams += 1 }
            // After a flood no head is taken (its fields are refused, and its stream reset).
            guard me.flood == nil else { return 0 }
            me.headStart = me.fields.count
            me.headSize = 0
            return 0
        }
        unsafe tern_nghttp2_session_callbacks_set_on_header_callback(cbs) { _, _, name, nameLength, value, valueLength, _, user in
            let me = unsafe HTTP2Session.me(user)
            guard me.headStart != nil else { return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue }  // refused
            me.headSize += nameLength + valueLength + 32
            if me.headSize > Int(me.settings.maxHeaderListSize) {
                // Too large: its fields go, and nghttp2 resets the stream (INTERNAL_ERROR) and skips the rest.
                if let start = me.headStart, start < me.fields.count {
                    me.headerBytes.removeSubrange(me.fields[start].name.lowerBound...)
                    me.fields.removeSubrange(start...)
                }
                me.headStart = nil
                me.headsTooLarge += 1
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue
            }
            let n = me.headerBytes.count
            unsafe me.headerBytes.append(contentsOf: UnsafeBufferPointer(start: name, count: nameLength))
            let v = me.headerBytes.count
            unsafe me.headerBytes.append(contentsOf: UnsafeBufferPointer(start: value, count: valueLength))
            let known = unsafe HTTP1Parser.knownField(UnsafeBufferPointer(start: name, count: nameLength).span, 0..<nameLength)
            me.fields.append(HeadField(name: n..<v, value: v..<me.headerBytes.count, known: known))
            // Heads within the limit one by one, but many of them in one receive (an HPACK bomb over many streams):
            // beyond 16 heads' worth at once the connection ends.
            if me.headerBytes.count > 16 * Int(me.settings.maxHeaderListSize) { return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue }
            return 0
        }
        unsafe tern_nghttp2_session_callbacks_set_on_begin_frame_callback(cbs) { _, hd, user in
            let me = unsafe HTTP2Session.me(user)
            unsafe me.countBegun(type: hd!.pointee.type)
            return me.flood == nil ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE.rawValue  // (nghttp2 stops: `flooded`)
        }
        unsafe tern_nghttp2_session_callbacks_set_on_frame_send_callback(cbs) { _, frame, user in
            let me = unsafe HTTP2Session.me(user)
            switch unsafe UInt32(frame!.pointee.hd.type) {
            case NGHTTP2_DATA.rawValue: me.dataFramesSent += 1
            case NGHTTP2_GOAWAY.rawValue: if unsafe frame!.pointee.goaway.error_code != 0 { me.endedForError = true }
            default: break
            }
            return 0
        }
        unsafe tern_nghttp2_session_callbacks_set_on_frame_recv_callback(cbs) { _, frame, user in
            let me = unsafe HTTP2Session.me(user)
            let hd = unsafe frame!.pointee.hd
            // (After a flood nothing more is read, and what triggered it is not handed on.)
            guard me.flood == nil else { return 0 }
            switch UInt32(hd.type) {
            case NGHTTP2_DATA.rawValue:
                let padding = unsafe frame!.pointee.data.padlen
                me.countReceived(payload: hd.length - padding, flags: hd.flags)
            case NGHTTP2_HEADERS.rawValue:
                let padding = unsafe frame!.pointee.headers.padlen
                me.countReceived(payload: hd.length - padding, flags: hd.flags)
            default: break
            }
            guard me.flood == nil else { return NGHTTP2_ERR_CALLBACK_FAILURE.rawValue }  // (nghttp2 stops: `flooded`)
            let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            switch UInt32(hd.type) {
            case NGHTTP2_HEADERS.rawValue:
                guard let start = me.headStart else { break }  // refused for its size
                me.headStart = nil
                let range = start..<me.fields.count
                let category = unsafe frame!.pointee.headers.cat
                // A HEADERS frame after the head: trailers, unless it carries a status (a final response after an
                // interim one).
                let isHead = category != NGHTTP2_HCAT_HEADERS
                    || me.fields[range].contains { me.headerBytes[$0.name].elementsEqual(statusName) }
                me.events.append(isHead ? .head(stream: hd.stream_id, fields: range, endStream: endStream)
                    : .trailers(stream: hd.stream_id, fields: range))
            case NGHTTP2_DATA.rawValue:
                if endStream { me.events.append(.endStream(stream: hd.stream_id)) }
            case NGHTTP2_RST_STREAM.rawValue:
                me.events.append(.reset(stream: hd.stream_id, code: unsafe frame!.pointee.rst_stream.error_code))
            case NGHTTP2_PING.rawValue:
                guard hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0 else { break }
                unsafe withUnsafeBytes(of: frame!.pointee.ping.opaque_data) { echoed in
                    let drainPing = unsafe echoed.elementsEqual(HTTP2Session.drainPing)
                    if me.drain == .notice && drainPing { me.drain = .acknowledged }
                    if unsafe echoed.elementsEqual(HTTP2Session.keepalivePing) { me.pingOutstanding = false }
                }
            case NGHTTP2_GOAWAY.rawValue:
                let g = unsafe frame!.pointee.goaway
                unsafe me.events.append(.goaway(lastStream: g.last_stream_id, code: g.error_code))
            default:
                break
            }
            return 0
        }
        unsafe tern_nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs) { _, _, stream, data, length, user in
            let me = unsafe HTTP2Session.me(user)
            // (After a flood nothing more is handed on; nghttp2 stopped at the frame that made it.)
            guard me.flood == nil, let input = unsafe me.input, let base = input.baseAddress, let d = unsafe data else { return 0 }
            let offset = unsafe UnsafeRawPointer(d) - base
            // nghttp2 hands DATA payloads out of the input as it is (not copied).
            precondition(offset >= 0 && offset + length <= input.count, "DATA payload outside the input")
            me.events.append(.data(stream: stream, bytes: offset..<(offset + length)))
            return 0
        }
        unsafe tern_nghttp2_session_callbacks_set_on_stream_close_callback(cbs) { _, stream, code, user in
            let me = unsafe HTTP2Session.me(user)
            me.events.append(.closed(stream: stream, code: code))
            return 0
        }
    }
}

private let statusName: [UInt8] = Array(":status".utf8)
