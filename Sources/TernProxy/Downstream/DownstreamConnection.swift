import TernCore
import TernConfig
import TernIO

/// A client connection of the HTTP engine (one slot of `HTTPProxy.downstreams`): its descriptor and transport,
/// the operations in flight on it, its timers, and the exchange it carries. HTTP/1.1 answers requests in order,
/// so a connection carries one exchange at a time (pipelined requests wait, unread, until the exchange before
/// them is finished): one slot of the exchange slab, taken when the connection opens. An HTTP/2 connection will
/// carry many, one exchange slot per stream (docs/architecture.md).
struct DownstreamConnection {
    enum Phase { case open, lingering, closing }

    var fd: Int32
    /// The listener (index) it was accepted on; with `--upstream`, also the index of that listener's upstream.
    var listener: Int
    var transport = Transport.plain
    var phase = Phase.open
    /// Operations in flight on the socket: the slot is freed only when none is (the kernel's memory is never
    /// the caller's).
    var inflight = 0
    var receiving = false
    var sending = false
    /// Which splice of the client socket is in flight (its op, to cancel it), or 0.
    var clientSplice: UInt8 = 0
    /// The connection stays open after this exchange.
    var keepAlive = true
    /// The client closed its side of a tunnel.
    var clientEOF = false
    /// A byte arrived on it: until then `--first-byte-timeout`, not the idle timeout, bounds its wait.
    var spoke = false
    /// A TLS connection whose client presented a certificate that verified (`--tls-client-ca`): mutual TLS.
    var mutualTLS = false
    /// The peer's address, and its SPIFFE ID without "spiffe://" from a verified client certificate (empty:
    /// none), as AuthorizationPolicies read them.
    var peerIP: IPAddress? = nil
    var principal: [UInt8] = []
    /// With a mesh identity (`--identity-dir`), the SHA-256 of the peer's certificate in hexadecimal, for the
    /// X-Forwarded-Client-Cert the app gets (empty: not mutual TLS).
    var clientCertHash: [UInt8] = []
    /// The principal's id in the metrics' PeerRegistry (0: none), for the inbound series' source labels.
    var peerID: UInt32 = 0
    /// The address the connection was made to, and the TLS server name the client asked for (empty: none).
    var localIP: IPAddress? = nil
    var serverName: [UInt8] = []
    /// On an inbound side: the app's port the connection is for (`destination.port`, `portLevelMtls`), and, for an
    /// `--inbound` listener without `--inbound-app`, the intercepted connection's original destination (where its
    /// requests go, from 127.0.0.6).
    var destinationPort: UInt16 = 0
    var originalDestination: SocketAddress? = nil
    /// The pool of `originalDestination`, held (one exchange's count) from the first request that needs it until
    /// the connection is freed, so that its requests do not make and free it each time (-1: none held).
    var passthroughPool: Int32 = -1
    /// PeerAuthentication PERMISSIVE on an inbound side with TLS: the first bytes decide whether the connection is
    /// TLS (a handshake record: terminated, mTLS) or plaintext.
    var sniffTLS = false
    /// Accepted on a TLS-terminating TCP listener: its decrypted stream is relayed, not read as HTTP
    /// (Relay/HTTPProxy+TCP.swift).
    var relaysTCP = false
    /// Its place in the reactor's list of connections waiting for a request, oldest first (`IdleList`): the
    /// first to close when descriptors run short.
    var idlePrevious: DID? = nil
    var idleNext: DID? = nil
    var inIdleList = false
    /// Closed to make room at the descriptor cap (`HTTPProxy.closingForRoom` counts it until its socket closes).
    var closingForRoom = false
    // Timers are lazy: each is set when first needed and, when it fires, checks the time it guards (below) and
    // sets itself again if that moved; nothing is cancelled on the request path. A keep-alive request then costs
    // no timer operation.
    var headerTimer: TimerWheel.ID? = nil
    var idleTimer: TimerWheel.ID? = nil
    var lingerTimer: TimerWheel.ID? = nil
    /// When the connection last became idle between requests (idle timeout).
    var idleSince: UInt64 = 0
    /// Its exchange's slot (`HTTPProxy.exchanges`).
    var exchange: XID
    /// HTTP/2 (Downstream/HTTPProxy+H2+Unsafe.swift): a connection that began with the HTTP/2 preface has its
    /// session and streams here; a stream's own connection (transport `.h2stream`) has its state in `h2s`.
    var h2: H2Link? = nil
    var h2s = H2StreamState()

    init(fd: Int32, listener: Int, exchange: XID) {
        self.fd = fd
        self.listener = listener
        self.exchange = exchange
    }
}

typealias DID = Slab<DownstreamConnection>.ID

/// The client connections of a reactor waiting for a request (between requests, or before the first), oldest
/// first: a doubly linked list through their slots, so joining, leaving and taking the oldest cost O(1) and
/// allocate nothing.
struct IdleList {
    private(set) var oldest: DID? = nil
    private var newest: DID? = nil
    private(set) var count = 0

    mutating func append(_ id: DID, _ slots: Slab<DownstreamConnection>) {
        guard !slots[id].inIdleList else { return }
        slots[id].inIdleList = true
        slots[id].idlePrevious = newest
        slots[id].idleNext = nil
        if let n = newest { slots[n].idleNext = id } else { oldest = id }
        newest = id
        count += 1
    }

    mutating func remove(_ id: DID, _ slots: Slab<DownstreamConnection>) {
        guard slots[id].inIdleList else { return }
        let p = slots[id].idlePrevious, n = slots[id].idleNext
        if let p { slots[p].idleNext = n } else { oldest = n }
        if let n { slots[n].idlePrevious = p } else { newest = p }
        slots[id].inIdleList = false
        slots[id].idlePrevious = nil
        slots[id].idleNext = nil
        count -= 1
    }
}
