import TernCore
import TernHTTP
import TernIO

/// A connection to an upstream endpoint (one slot of `HTTPProxy.upstreams`): connecting, idle in its endpoint's
/// pool (a receive stays armed so a close by the upstream is noticed at once), bound to one exchange's attempt,
/// or closing until its operations in flight complete. HTTP/1.1 carries one exchange at a time on it; an
/// HTTP/2 connection (`h2`) carries many streams, each of which has a slot of its own, with transport `.h2stream`
/// and no socket, bound to its exchange as an HTTP/1.1 connection would be (Upstream/HTTPProxy+H2Upstream+Unsafe.swift).
struct UpstreamConnection {
    enum State { case connecting, idle, bound, closing }

    var fd: Int32
    /// Its endpoint's index in the cluster runtime's pools (`UpstreamPools`).
    var endpoint: Int
    var transport = Transport.plain
    var state = State.connecting
    /// The exchange it serves, while bound (or connecting for).
    var exchange: XID? = nil
    var inflight = 0
    var receiving = false
    var sending = false
    /// It served an exchange before this one (a request that finds it closed may be sent again).
    var reused = false
    var connectTimer: TimerWheel.ID? = nil
    /// Which splice of this socket is in flight (its op, to cancel it), or 0.
    var splice: UInt8 = 0
    /// Lazy, as the downstream timers: set when the connection first goes idle.
    var poolTimer: TimerWheel.ID? = nil
    var idleSince: UInt64 = 0
    /// Closed to make room at the descriptor cap (`HTTPProxy.closingForRoom` counts it until its socket closes).
    var closingForRoom = false
    /// The SNI hash it was made with under auto SNI (`UpstreamAttempt.serverName`); 0 otherwise.
    var serverName: UInt64 = 0
    /// Its TLS session was offered to its pool for resumption (`keepResumption`).
    var sessionKept = false
    /// Its TLS handshake finished and the server's certificate passed every check (its session may be resumed).
    var verified = false
    /// The pool's `tlsGeneration` when its handshake began.
    var tlsGeneration: UInt32 = 0
    /// The cluster it counts against (`tcp.maxConnections`), and its rule's connection settings: how long it may
    /// stay idle (0: for ever), when it must stop serving (`maxConnectionDuration`; 0: never), and the requests it
    /// may still carry (`maxRequestsPerConnection`; Int.max: no limit).
    var circuit: ClusterCircuit? = nil
    var idleTimeout: UInt64 = 0
    var expires: UInt64 = 0
    var requestsLeft = Int.max
    /// Made to speak HTTP/2 (its session, once connected, in `h2`); a stream's state, for a `.h2stream` slot.
    var http2 = false
    var h2: H2UpLink? = nil
    var h2s = H2UpStream()

    init(fd: Int32, endpoint: Int) {
        self.fd = fd
        self.endpoint = endpoint
    }
}

typealias UID = Slab<UpstreamConnection>.ID

/// An HTTP/2 connection to an upstream: its session and open streams.
final class H2UpLink: H2Connection {
    /// Open streams: the HTTP/2 stream id (0 until its head is submitted) and the stream's slot.
    var streams: [(id: Int32, connection: UID)] = []
    /// Streams opened on it so far.
    var opened = 0
    /// The peer said GOAWAY (or the connection failed): no new stream goes on it.
    var goingAway = false
    /// The connection ended for good: its streams ended with it.
    var ended = false
    /// Its session sent GOAWAY for the upstream's error, and its streams were failed for it.
    var endedForError = false
    /// Streams it may carry at once: the cluster's `maxConcurrentStreams` (the peer's SETTINGS may lower it).
    var maxConcurrent = Int.max
    /// Keepalive PINGs (`http2KeepAlive`): every `pingInterval` (0: none), answered within `pingTimeout` of the
    /// last sent (`pingSentAt`) or of the last bytes heard (`lastHeard`: a peer that sends is alive, as Envoy
    /// extends the timeout on any frame), else the connection is closed.
    var pingInterval: UInt64 = 0
    var pingTimeout: UInt64 = 0
    var pingSentAt: UInt64 = 0
    var lastHeard: UInt64 = 0

    override init(session: HTTP2Session) {
        super.init(session: session)
        streams.reserveCapacity(16)
    }

    func connection(of stream: Int32) -> UID? {
        for s in streams where s.id == stream { return s.connection }
        return nil
    }
}

/// An upstream HTTP/2 stream's state, in its slot: the request the engine writes (HTTP/1.1) going out as HEADERS
/// and DATA, and the response coming back written as HTTP/1.1 bytes for the engine.
struct H2UpStream {
    var parent: UID? = nil
    var stream: Int32 = 0
    // The request: the engine's bytes in `send.out` (a spare buffer) until its head is read and submitted, then
    // its body's there until nghttp2 frames it.
    var parser: Int32 = -1
    var headSubmitted = false
    var send = H2Send()
    // The response, as HTTP/1.1 bytes in up to `H2Wire.upstreamBuffers` spare buffers, handed to the engine a
    // buffer at a time as it asks; `dataBytes`: the DATA payload bytes in each (its window's share).
    var buffers = InlineArray<6, Int32>(repeating: -1)
    var lengths = InlineArray<6, Int>(repeating: 0)
    var dataBytes = InlineArray<6, Int>(repeating: 0)
    var count = 0
    /// The response's final head came (its body is chunked unless it had a Content-Length: `chunked`), and its end.
    var headSeen = false
    var chunked = false
    /// Content-Length bytes still to come (`UInt64.max`: not a Content-Length body). Once all have come, the last
    /// of them waits for the stream's end, so that trailers after them are kept before the engine sees the body
    /// complete.
    var lengthLeft = UInt64.max
    /// The chunk still open at the end of the last buffer (where its size line starts; -1: none), and its size.
    var openChunk = -1
    var openChunkSize = 0
    var responseEnded = false
    /// The engine asked for bytes; the stream is on the reactor's ready list; DATA bytes it took (its window reopens
    /// by them when it asks again).
    var wanting = false
    var queued = false
    var consumable = 0
    /// The stream is gone on the HTTP/2 side: refused (never processed: GOAWAY, REFUSED_STREAM), or reset or closed
    /// before its response ended.
    var gone = false
    var refused = false
    /// Refused before any of its request was submitted (its connection went away first): sent again uncounted.
    var notSent = false
    var failed = false
    var starved = false
}
