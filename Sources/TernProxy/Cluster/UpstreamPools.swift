// The cluster runtime's HTTP/1.1 pools (ARCHITECTURE.md §1: cluster runtime, engine-owned, per reactor).
//
// One pool per upstream endpoint (address and port) and TLS origination settings (none for plaintext), shared by
// every cluster that names both: idle keep-alive
// connections, requests waiting for a connection, and the counts that decide when a new connection may open.
// Pools of `--upstream` listeners live as long as the reactor. With `--config`, a pool is made when a bound table
// first names its endpoint and freed once a later table no longer does and nothing uses it any more (no open
// connection, no exchange routed to it): a mesh whose endpoints churn keeps as many pools as it has live
// endpoints, not every endpoint it ever had. A freed slot is reused, so pool indexes stay small; an index is
// never freed while a connection or exchange holds it.
//
// Nothing here allocates on the request path in steady state: the waiting queue grows (doubling, up to
// `--max-pending-requests`) only past its high-water mark, and the idle list likewise.
import TernCore
import TernIO
import TernTLS
import TernTelemetry

/// What a pool is for: an endpoint, and how connections to it are made (nil: plaintext).
struct PoolKey: Hashable {
    var address: SocketAddress
    var tls: TLSOriginationKey?
    /// Connections to an intercepted connection's original destination (an inbound side's from `source`,
    /// 127.0.0.6; an outbound side's, Istio's PassthroughCluster, from any address).
    var passthrough = false
    var source: SocketAddress? = nil
}

struct UpstreamPools {
    /// Requests waiting for a connection of one endpoint, oldest first: a ring grown on demand.
    struct PendingQueue {
        private var ring: [XID?] = []
        private var head = 0
        private(set) var count = 0

        /// Adds `id` unless `limit` requests already wait.
        mutating func push(_ id: XID, limit: Int) -> Bool {
            if count == ring.count {
                guard ring.count < limit else { return false }
                grow(to: min(limit, max(8, ring.count * 2)))
            }
            ring[(head + count) % ring.count] = id
            count += 1
            return true
        }

        /// Puts `id` back at the head of the queue (it was popped, and waits on); false when the queue is full.
        mutating func pushFront(_ id: XID) -> Bool {
            if count == ring.count {
                guard ring.count > 0 else { return false }
                grow(to: ring.count * 2)
            }
            head = (head + ring.count - 1) % ring.count
            ring[head] = id
            count += 1
            return true
        }

        /// The oldest entry, left in place.
        var first: XID? { count > 0 ? ring[head] : nil }

        mutating func pop() -> XID? {
            guard count > 0 else { return nil }
            let id = ring[head]
            ring[head] = nil
            head = (head + 1) % ring.count
            count -= 1
            return id
        }

        var capacity: Int { ring.count }

        private mutating func grow(to capacity: Int) {
            var next = [XID?](repeating: nil, count: capacity)
            for i in 0..<count { next[i] = ring[(head + i) % ring.count] }
            ring = next
            head = 0
        }
    }

    struct Pool {
        var address: SocketAddress
        var tlsKey: TLSOriginationKey? = nil
        /// With TLS: the client policy of the bound table (contexts are rebuilt with each table), and per server
        /// name hash (0: the fixed SNI) the session the next connection resumes (the last verified one offered).
        var tls: TLSClientPolicy? = nil
        var resumptions: [UInt64: TLSResumption] = [:]
        /// Server names sent as SNI by Host (auto SNI), by their hash: made once per name, not per connection.
        var serverNames: [UInt64: String] = [:]
        /// The endpoint's key for its live gauges in the metrics (admin /clusters).
        var key: UInt64
        /// `address:port` as spans and access-log lines name the upstream host.
        var name: String
        var idle: [UID] = []
        var pending = PendingQueue()
        /// HTTP/2 connections to it (made, or on their way: `h2Connecting` of them), and the requests waiting for
        /// a stream on one.
        var h2Links: [UID] = []
        var h2Connecting = 0
        var h2Pending = PendingQueue()
        /// Connections open to it (connecting, idle or bound).
        var connections = 0
        /// Exchanges routed to it and not finished.
        var exchanges = 0
        /// The bound table (or a `--upstream` listener) names it.
        var configured = true
        /// The slot holds a pool (false: freed, waiting for reuse).
        var live = true
        /// Its connections are bound to this source address before they connect (an inbound side's passthrough
        /// to the app: 127.0.0.6), else none.
        var source: SocketAddress? = nil
        var passthrough = false
        /// Bumped whenever `tls` is replaced by another policy (an identity rotation): a connection made under an
        /// earlier one never leaves its session for resumption.
        var tlsGeneration: UInt32 = 0

        /// Idle connections are kept for reuse: the pool is named by the table, or is a passthrough pool some
        /// client connection still holds.
        var keepsIdle: Bool { configured || (passthrough && exchanges > 0) }

        init(address: SocketAddress, tls: TLSOriginationKey? = nil) {
            self.address = address
            tlsKey = tls
            key = EndpointKey.make(address: address.ip, port: address.port)
            name = address.description
        }
    }

    /// The pools by index (freed ones included, `live` false). Read and change fields in place through this
    /// array (`slots[e].idle`); counts change through the methods below, which free what is no longer used.
    var slots: [Pool] = []
    private var byKey: [PoolKey: Int] = [:]
    private var free: [Int] = []
    /// Pools of `--upstream` listeners: never freed.
    private let permanent: Int

    /// The pools of `--upstream` listeners, by listener index (none with `--config`).
    init(listenerUpstreams: [SocketAddress]) {
        slots = listenerUpstreams.map { Pool(address: $0) }
        permanent = slots.count
    }

    /// Pools in use (made and not yet freed).
    var liveCount: Int { slots.count - free.count }

    /// Binds a newly published table's endpoints: each cluster's endpoints as pool indexes (-1 for an endpoint
    /// with no address), and the pools that the table no longer names (their idle connections should be closed;
    /// each is freed once unused). Runs when a snapshot arrives, never per request.
    /// `tls`: each endpoint's origination settings, by cluster and endpoint (nil, or missing: plaintext).
    mutating func bind(clusters: [[SocketAddress?]], tls: [[TLSOriginationKey?]] = []) -> (endpoints: [[Int]], retired: [Int]) {
        var named = [Bool](repeating: false, count: slots.count)
        let endpoints = clusters.indices.map { c in
            clusters[c].enumerated().map { i, address -> Int in
                guard let address else { return -1 }
                let key = c < tls.count && i < tls[c].count ? tls[c][i] : nil
                let e = index(for: PoolKey(address: address, tls: key))
                if e < named.count { named[e] = true }
                return e
            }
        }
        var retired: [Int] = []
        for e in permanent..<named.count where slots[e].live && !named[e] && slots[e].configured {
            slots[e].configured = false
            retired.append(e)
        }
        for e in retired { freeIfUnused(e) }
        return (endpoints, retired)
    }

    private mutating func index(for key: PoolKey) -> Int {
        if let e = byKey[key] {
            slots[e].configured = true
            return e
        }
        return place(Pool(address: key.address, tls: key.tls), key)
    }

    /// Puts a new pool in a freed slot, or a new one, under `key`.
    private mutating func place(_ pool: Pool, _ key: PoolKey) -> Int {
        let e: Int
        if let reused = free.popLast() {
            e = reused
            slots[e] = pool
        } else {
            e = slots.count
            slots.append(pool)
        }
        byKey[key] = e
        return e
    }

    /// The pool of connections to `address`, an intercepted connection's original destination: made on first use,
    /// not named by any table, and freed once nothing uses it. An inbound side's (`inbound`) come from 127.0.0.6
    /// (IPv4; ::6 is not assigned to lo by default, so IPv6 ones leave from any address), as Istio's.
    mutating func passthrough(_ address: SocketAddress, inbound: Bool) -> Int {
        let source = inbound && address.ipv4 != nil ? SocketAddress(parsing: "127.0.0.6:0") : nil
        let key = PoolKey(address: address, tls: nil, passthrough: true, source: source)
        if let e = byKey[key] { return e }
        var pool = Pool(address: address)
        pool.configured = false
        pool.passthrough = true
        pool.source = source
        return place(pool, key)
    }

    mutating func exchangeStarted(_ e: Int) { slots[e].exchanges += 1 }

    mutating func exchangeFinished(_ e: Int) {
        guard slots[e].exchanges > 0 else { return bug("upstream pool \(e): an exchange finished that never started") }
        slots[e].exchanges -= 1
        freeIfUnused(e)
    }

    mutating func connectionOpened(_ e: Int) { slots[e].connections += 1 }

    mutating func connectionClosed(_ e: Int) {
        guard slots[e].connections > 0 else { return bug("upstream pool \(e): a connection closed that never opened") }
        slots[e].connections -= 1
        freeIfUnused(e)
    }

    /// Frees a pool the table no longer names once no connection or exchange uses it: its slot is reused by
    /// the next new endpoint, and its queue and idle list give their memory back.
    private mutating func freeIfUnused(_ e: Int) {
        guard e >= permanent, slots[e].live, !slots[e].configured, slots[e].connections == 0,
              slots[e].exchanges == 0 else { return }
        byKey[PoolKey(address: slots[e].address, tls: slots[e].tlsKey, passthrough: slots[e].passthrough, source: slots[e].source)] = nil
        slots[e].live = false
        slots[e].tls = nil
        slots[e].resumptions = [:]
        slots[e].serverNames = [:]
        slots[e].idle = []
        slots[e].pending = PendingQueue()
        slots[e].h2Links = []
        slots[e].h2Pending = PendingQueue()
        slots[e].name = ""
        free.append(e)
    }
}
