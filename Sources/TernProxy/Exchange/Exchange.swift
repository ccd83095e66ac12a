// An exchange: one request and its response, from the request head to the end of the response (or the start
// of a tunnel). Each has two sides of one type, `ExchangeSide`:
//
//   request   head ──▶ waiting (for an upstream) ──▶ sending ──▶ body ◀──▶ sending ──▶ done
//   response  idle ──▶ head ──▶ sending ──▶ body ◀──▶ sending ──▶ done       (1xx: head again; 101/CONNECT: tunnel)
//
// Bytes move in received buffers: a side holds at most one buffer of unforwarded bytes and re-arms its
// single-shot receive only once that buffer has been sent on (backpressure: a slow reader stalls its writer
// through TCP flow control, and memory per exchange is bounded by two buffers). Heads are parsed in place and
// forwarded with iovecs; a head split across reads is gathered in an assembly buffer first. A Content-Length
// body of at least `HTTPProxy.spliceThreshold` bytes is spliced through a pipe instead, where both transports
// allow it.
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

/// What of a body's received bytes is consumed (`end`) and forwarded (up to `forwardEnd`, then the empty line
/// that ends a chunked body when its trailer section was dropped).
struct BodyExtent {
    var end: Int
    var forwardEnd: Int
    var closesTrailers: Bool
}

/// What is left of a message body to forward.
enum MessageBody: Equatable {
    case none
    case length(UInt64)
    case chunked
    case untilClose
}

enum RequestState { case head, waiting, sending, body, splicing, done, tunnel }
enum ResponseState { case idle, head, sending, body, splicing, done, reply, tunnel }

/// One direction of an exchange: the request (client → upstream) or the response (upstream → client). The
/// engine runs the same steps on both (hold received bytes, parse the head, frame the body, send, splice).
struct ExchangeSide<State> {
    var state: State
    /// Received bytes not yet forwarded. For the request side of an HTTP/1.1 connection these are the
    /// connection's bytes: a pipelined request that follows stays here until its turn.
    var held = Held()
    /// Where, in the held bytes, the part being sent ends (consumed once the send completes).
    var sentTo = 0
    var body = MessageBody.none
    var decoder = ChunkedDecoder()
    /// A chunked body's trailer section is being received: its bytes are dropped (as Envoy's HTTP/1 codec drops
    /// trailers unless told otherwise), and its end is sent as the empty line alone.
    var inTrailers = false
    /// This side's HTTP/1.1 parser (an index in the engine's parser pool), taken when the connection opened.
    var parser: Int32 = -1
    /// A spliced body: the pipe and the bytes in it.
    var pipe: Pipe? = nil
    var piped = 0
    /// The route changes this side's head fields (read from the route: `Exchange.routed`), and the bytes it
    /// adds, held in an assembly buffer until the head that carries them has been sent.
    var edited = false
    var extras = Held()

    init(state: State) { self.state = state }
}

/// One exchange (a slot of `HTTPProxy.exchanges`, keyed by its own id, not its connection's): its operations
/// on upstream connections and its timer carry that id. An HTTP/1.1 connection answers its requests in order
/// and takes one exchange slot when it opens, used by request after request until it closes; an HTTP/2
/// connection will take one per stream.
struct Exchange {
    /// The client connection it belongs to.
    var downstream: DID
    /// A request head was received and not yet answered to its end.
    var active = false
    var request = ExchangeSide(state: RequestState.head)
    var response = ExchangeSide(state: ResponseState.idle)
    var http10 = false
    /// The request came on an HTTP/2 stream (Downstream/HTTPProxy+H2+Unsafe.swift).
    var http2 = false
    var method = HTTPMethod.get
    var upgrade = false
    /// The response head (or a local response) went to the client: no local response can be sent any more.
    var responseStarted = false
    /// The head being sent to the client is an interim (1xx) one of this length.
    var interimLength = 0
    /// The head being sent to the client is a 101 or a 2xx to CONNECT: a tunnel follows.
    var tunnelNext = false
    /// A chunked response to an HTTP/1.0 client: only the chunks' data is forwarded, ended by the close.
    var dechunk = false
    /// The response's trailer section goes on to the client (`keepsTrailers`, decided at its final head).
    var keepTrailers = false
    /// HTTP/2 trailers of a body whose HTTP/1.1 framing cannot carry them (a Content-Length; a request's always),
    /// kept beside it as an HTTP/1.1 trailer section for an HTTP/2 peer (`HTTPProxy.h2KeepTrailers`): the client's
    /// for an HTTP/2 upstream, the upstream's for an HTTP/2 client. Empty (no storage) for most exchanges.
    var requestTrailers: [UInt8] = []
    var responseTrailers: [UInt8] = []
    /// The local response being sent, and one waiting for an interim response to finish.
    var reply: LocalReply? = nil
    var pendingReply: LocalReply? = nil
    /// The route it was routed with (nil: none, or `--upstream`), and how that route rewrites the path.
    var routed: RoutedRoute? = nil
    var targetRewrite = TargetRewrite.none
    /// The route rewrites the authority (so an absolute-form target's authority is not sent as Host).
    var routeSetsHost = false
    /// The upstream closed its side of a tunnel.
    var upstreamEOF = false
    /// The exchange's one timer, set for the earliest of its deadlines (`due`): the upstream timeout (from the
    /// end of the request) and the stream idle timeout (from the last byte moved). Lazy, as the connection's
    /// timers: when it fires it checks both and sets itself again for the next, so a request moving bytes costs
    /// no timer operation.
    var timer: TimerWheel.ID? = nil
    var due: UInt64 = 0
    /// When the first byte of the request head arrived (request duration, and the request header timeout).
    var headStart: UInt64 = 0
    var lastActivity: UInt64 = 0
    /// When the request was first completely sent upstream: the upstream timeout runs from there, across
    /// retries (0: not yet).
    var requestEnd: UInt64 = 0
    /// The upstream timeout of the exchange in nanoseconds (the route's `timeout`, else `--upstream-timeout`);
    /// 0: none.
    var timeout: UInt64 = 0
    /// The route's fault injection, and the end of an injected delay while one holds the request (0: none).
    var fault = FaultFacts()
    var delayUntil: UInt64 = 0
    /// CORS (Filters/HTTPProxy+CORS.swift): the field lines a response to an allowed origin gets (the origin
    /// echoed, credentials, exposed headers), composed from the request head in an assembly buffer that is kept
    /// until the exchange ends (empty: none); and the request is a preflight the filter answers (after the route's
    /// fault, when it has one).
    var cors = Held()
    var corsPreflight = false
    /// Retries (Router/HTTPProxy+Retry.swift): the route's policy, the retries it has left, the tries made (the
    /// first included: `x-envoy-attempt-count`), the cluster the endpoint was picked from (-1: none, or a table
    /// that is no longer the bound one), the endpoints tried (bits by their index in the cluster, modulo 64), when
    /// the current try's request was completely sent (the per-try timeout), and the end of a back-off (0: none).
    var retry = RetryFacts.none
    var retriesLeft: Int32 = 0
    var tries: Int32 = 0
    var cluster: Int32 = -1
    var tried: UInt64 = 0
    /// With `retryRemoteLocalities`: the locality ranks tried, and those a retry leaves out (bits).
    var triedRanks: UInt8 = 0
    var excludedRanks: UInt8 = 0
    var tryEnd: UInt64 = 0
    var retryAt: UInt64 = 0
    /// The request body's framing as its head announced it: what a replay starts from again.
    var replayBody = MessageBody.none
    /// Its body is being gathered whole before it goes upstream (`HTTPSettings.perRequestBufferBytes`).
    var gathering = false
    /// The route's mirrors this request was drawn for (bits by their index in the route's list) and the port that
    /// picks their clusters (Router/HTTPProxy+Mirror.swift).
    var mirrorDraws: UInt8 = 0
    /// The x-request-id Tern made for this request is in its connection's scratch (retries and mirrors reuse it).
    var requestIDMade = false
    var mirrorPort: UInt16 = 0
    /// The try in progress: endpoint, upstream connection, what can be replayed.
    var attempt = UpstreamAttempt()
    /// The circuit breakers of the cluster it was routed to (nil: not routed yet, or a relayed TCP connection),
    /// and the units it holds of them (given back as it leaves the queue, its connection, its retry, or ends).
    var circuit: ClusterCircuit? = nil
    var charges = CircuitCharges()
    /// A relayed TCP connection's route (Relay/HTTPProxy+TCP.swift): reported to its balancer when it ends.
    var relayed: TCPRouter.Pick? = nil
    /// What the exchange reports when it ends (metrics, access log, span).
    var report = ExchangeReport()

    init(downstream: DID) { self.downstream = downstream }
}

typealias XID = Slab<Exchange>.ID
