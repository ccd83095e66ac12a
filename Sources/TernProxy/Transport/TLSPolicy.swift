// TLS termination settings and what the reactors read of them: a server context built off the reactors (at start
// and whenever its files change) and published to them through a SnapshotCell, as route tables are.
import Synchronization
import TernCore
import TernIO
import TernTLS

/// The files a TLS listener serves with (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
public struct TLSServerFiles: Sendable, Hashable {
    /// PEM certificate chain, leaf first.
    public var certificate: String
    /// PEM private key (RSA or ECDSA) of the leaf.
    public var key: String
    /// PEM CA bundle: when set, clients must present a certificate that verifies against it.
    public var clientCA: String?
    public init(certificate: String, key: String, clientCA: String? = nil) {
        self.certificate = certificate
        self.key = key
        self.clientCA = clientCA
    }

    /// Every file, for watching.
    public var paths: [String] { [certificate, key] + (clientCA.map { [$0] } ?? []) }

    /// Builds the server context (ALPN: HTTP/1.1 on HTTP listeners, none on TCP ones).
    public func context(alpn: [String]) throws(TLSSetupError) -> TLSContext {
        try TLSContext.server(certificate: certificate, key: key, clientCA: clientCA, alpn: alpn)
    }
}

/// What a reactor reads at accept: the current server context and, on a sidecar's inbound side with
/// `--identity-dir`, the workload's mesh identity (peers' certificates must be X.509-SVIDs of its trust domain; an
/// expired identity is never presented).
public final class TLSServerPolicy: Sendable {
    public let context: TLSContext
    public let mesh: MeshIdentity?
    public init(context: TLSContext, mesh: MeshIdentity? = nil) {
        self.context = context
        self.mesh = mesh
    }
}

/// A counter shared by reactors (relaxed, one per label set).
public final class SharedCounter: Sendable {
    public let value = Atomic<Int>(0)
    public init() {}
    func add(_ n: Int = 1) { value.add(n, ordering: .relaxed) }
    public var count: Int { value.load(ordering: .relaxed) }
}

/// Requests denied (and would-be denials of dry-run policies) by AuthorizationPolicy, per policy, for the whole
/// process: each reactor looks its table's counters up when it binds a table (never per request) and adds to them
/// with a relaxed atomic.
public final class PolicyDenials: Sendable {
    /// What decided a denial that no single policy did: ALLOW policies exist and none matched.
    public static let noAllowMatched = "(no ALLOW policy matched)"
    private let counters = Mutex<[String: (enforced: SharedCounter, dryRun: SharedCounter)]>([:])

    public init() {}

    /// The counters of `policy` (made on first use).
    func counters(_ policy: String) -> (enforced: SharedCounter, dryRun: SharedCounter) {
        counters.withLock { all in
            if let c = all[policy] { return c }
            let c = (SharedCounter(), SharedCounter())
            all[policy] = c
            return c
        }
    }

    /// Every policy with a denial, by name.
    public func figures() -> [(policy: String, enforced: Int, dryRun: Int)] {
        counters.withLock { all in
            all.map { ($0.key, $0.value.enforced.count, $0.value.dryRun.count) }.sorted { $0.policy < $1.policy }
        }
    }
}

/// TLS handshakes by side (downstream: connections Tern terminates; upstream: connections it originates).
public final class TLSCounters: Sendable {
    public enum Side: Int, Sendable, CaseIterable {
        case downstream, upstream
        public var label: String { self == .downstream ? "downstream" : "upstream" }
    }
    private let handshakes = [SharedCounter(), SharedCounter()]
    private let resumed = [SharedCounter(), SharedCounter()]
    private let failures: [SharedCounter] = (0..<(2 * TLSFailureReason.allCases.count)).map { _ in SharedCounter() }
    /// Certificate reloads applied and refused (termination).
    public let reloads = SharedCounter()
    public let reloadsRefused = SharedCounter()
    /// Set once TLS is configured: its metrics are shown from then on.
    public let configured = Atomic<Bool>(false)
    public init() {}

    func handshake(_ side: Side, resumed r: Bool) {
        handshakes[side.rawValue].add()
        if r { resumed[side.rawValue].add() }
    }

    func failed(_ side: Side, _ reason: TLSFailureReason) {
        failures[side.rawValue * TLSFailureReason.allCases.count + Self.index(reason)].add()
    }

    public func handshakes(_ side: Side) -> Int { handshakes[side.rawValue].count }
    public func resumedHandshakes(_ side: Side) -> Int { resumed[side.rawValue].count }
    public func failures(_ side: Side, _ reason: TLSFailureReason) -> Int {
        failures[side.rawValue * TLSFailureReason.allCases.count + Self.index(reason)].count
    }

    private static func index(_ reason: TLSFailureReason) -> Int {
        TLSFailureReason.allCases.firstIndex(of: reason) ?? 0
    }
}

/// The TLS state of one connection beside its session (`TLSIO.sessions`, same slot): the ciphertext it received
/// and has not fed to OpenSSL yet, the records it wrote and has not sent, and where its handshake stands.
struct TLSLink {
    /// A pooled receive buffer holding ciphertext [inputStart, inputEnd) not yet taken by OpenSSL, or -1.
    var input: Int32 = -1
    var inputStart = 0
    var inputEnd = 0
    /// A spare buffer records are being written into ([0, fillLength)), or -1.
    var fill: Int32 = -1
    var fillLength = 0
    /// A spare buffer being sent ([flightSent, flightLength) still to go), or -1.
    var flight: Int32 = -1
    var flightLength = 0
    var flightSent = 0
    var socketReceiving = false
    var socketSending = false
    var handshaking = true
    /// The socket reported its end (0) or an error: nothing more will arrive.
    var socketEnded = false
    /// The peer's close_notify was read, or the stream ended: the engine is told once it asks for bytes.
    var ended = false
    /// Plaintext encrypted for the engine's send, reported as sent once its records are on the wire.
    var pendingPlain = 0
    /// The write side is to be shut (a lingering close, a tunnel's half-close) once the records before it and
    /// the close_notify after them are on the wire (`tlsShutdownWrite`).
    var shutdownPending = false
    /// close_notify has been written (into the fill buffer, sent as records are).
    var closeNotifyWritten = false
    /// In the reactor's list of client connections whose engine hears of its send before the records are on the
    /// wire (`tlsReportEarly`).
    var earlyQueued = false
    /// A graceful close waits for the records the engine was told are sent (`closeDownstream`).
    var draining = false
    /// In the reactor's list of links to run at the next loop iteration.
    var queued = false
    /// In the reactor's list of links waiting for a spare buffer.
    var starved = false
    var handshakeTimer: TimerWheel.ID? = nil
}
