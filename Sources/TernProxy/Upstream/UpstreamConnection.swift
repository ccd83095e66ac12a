import TernCore
import TernIO

/// A connection to an upstream endpoint (one slot of `HTTPProxy.upstreams`): connecting, idle in its endpoint's
/// pool (a receive stays armed so a close by the upstream is noticed at once), bound to one exchange's attempt,
/// or closing until its operations in flight complete. HTTP/1.1 carries one exchange at a time on it; an
/// HTTP/2 upstream connection will carry many streams and live in an HTTP/2 pool beside this one.
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
    /// The cluster it counts against (`tcp.maxConnections`), and its rule's connection settings: how long it may
    /// stay idle (0: for ever), when it must stop serving (`maxConnectionDuration`; 0: never), and the requests it
    /// may still carry (`maxRequestsPerConnection`; Int.max: no limit).
    var circuit: ClusterCircuit? = nil
    var idleTimeout: UInt64 = 0
    var expires: UInt64 = 0
    var requestsLeft = Int.max

    init(fd: Int32, endpoint: Int) {
        self.fd = fd
        self.endpoint = endpoint
    }
}

typealias UID = Slab<UpstreamConnection>.ID
