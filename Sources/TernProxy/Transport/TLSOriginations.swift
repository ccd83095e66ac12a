// TLS origination (issue 16): DestinationRule `trafficPolicy.tls` (and per subset and port) SIMPLE and MUTUAL, as
// Istio configures Envoy's UpstreamTlsContext. The client contexts are built off the reactors whenever a route
// table is, published just before it (a reactor that sees the new table sees its contexts), and found by the
// settings themselves (`TLSOriginationKey`), so a table swap that keeps a cluster's settings keeps its pools.
import TernConfig
import TernCore
import TernIO
import TernTLS

/// A cluster's origination settings as a value: what its upstream pools are keyed by (with the endpoint).
public struct TLSOriginationKey: Hashable, Sendable {
    public var mutual: Bool
    public var clientCertificate: String?
    public var privateKey: String?
    public var caCertificates: String?
    public var credentialName: String?
    public var sni: String?
    public var subjectAltNames: [String]
    public var insecureSkipVerify: Bool
    /// The connections speak HTTP/2 (ALPN `h2`), not HTTP/1.1 (`http/1.1`): the cluster's upstream protocol.
    public var http2 = false
    /// Istio's mutual TLS between sidecars (ISTIO_MUTUAL, or automatic mTLS): the workload's identity is the client
    /// certificate and the mesh root the CA; the peer must present an X.509-SVID of the trust domain and, when
    /// `subjectAltNames` is not empty, one of them; `sni` is the cluster's name, as Istio sends it.
    public var mesh = false

    /// The key of settings that originate TLS (SIMPLE, MUTUAL); nil for DISABLE and for ISTIO_MUTUAL (mesh
    /// identity comes with the mesh-security work: `TLSOriginations.build` warns). `http2`: the cluster's requests
    /// go over HTTP/2 (`UpstreamProtocol.http2`; a cluster of the client's protocol keeps HTTP/1.1 over TLS).
    public init?(_ t: ClientTLSSettings?, http2: Bool = false) {
        guard let t, t.mode == .SIMPLE || t.mode == .MUTUAL else { return nil }
        mutual = t.mode == .MUTUAL
        clientCertificate = mutual ? t.clientCertificate : nil
        privateKey = mutual ? t.privateKey : nil
        caCertificates = t.caCertificates
        credentialName = t.credentialName
        sni = t.sni
        subjectAltNames = t.subjectAltNames
        insecureSkipVerify = t.insecureSkipVerify ?? false
        self.http2 = http2
    }

    /// Mutual TLS between sidecars to `cluster` in trust domain `trustDomain` (nil: this sidecar has no identity;
    /// such a key has no policy, and its connections fail rather than go out in plaintext): the SPIFFE IDs accepted
    /// are the DestinationRule's `subjectAltNames` when it sets them, else the ServiceEntry's and the service's
    /// endpoints' accounts (empty: any identity of the trust domain); the SNI is the DestinationRule's `sni`, else
    /// the cluster's name, as Istio sends it.
    init(mesh cluster: Cluster, trustDomain: String?) {
        mutual = true
        insecureSkipVerify = false
        http2 = cluster.upstreamProtocol == .http2
        mesh = true
        sni = cluster.policy.tls?.sni.flatMap { $0.isEmpty ? nil : $0 } ?? "outbound_.\(cluster.port)_.\(cluster.subset ?? "")_.\(cluster.host)"
        var names = cluster.policy.tls?.subjectAltNames ?? []
        if names.isEmpty, let trustDomain {
            names = cluster.subjectAltNames
            for path in cluster.serviceAccounts {
                let id = "spiffe://" + trustDomain + path
                if !names.contains(id) { names.append(id) }
            }
        }
        subjectAltNames = names
    }

    /// How each endpoint of `cluster` is reached (nil: plaintext): a DestinationRule's SIMPLE or MUTUAL settings
    /// for every endpoint; ISTIO_MUTUAL for every endpoint; DISABLE for none; and with no `tls` at all, Istio's
    /// automatic mTLS: mutual TLS to the endpoints labelled `security.istio.io/tlsMode: istio` (they have a
    /// sidecar) of a service inside the mesh (`location: MESH_INTERNAL`), plaintext to the others. Mutual TLS
    /// between sidecars needs the workload's identity (`trustDomain`, from `--identity-dir`): without one automatic
    /// mTLS stays plaintext (`TLSOriginations.build` warns), and ISTIO_MUTUAL, which demands it, fails closed (a
    /// key no policy serves: its connections fail, 503 UF).
    public static func endpointKeys(_ cluster: Cluster, trustDomain: String?) -> [TLSOriginationKey?] {
        let t = cluster.policy.tls
        if let key = TLSOriginationKey(t, http2: cluster.upstreamProtocol == .http2) {
            return cluster.endpoints.map { _ in key }
        }
        if t?.mode == .ISTIO_MUTUAL {
            let key = TLSOriginationKey(mesh: cluster, trustDomain: trustDomain)
            return cluster.endpoints.map { _ in key }
        }
        guard let trustDomain, t == nil, !cluster.meshExternal else { return cluster.endpoints.map { _ in nil } }
        let key = TLSOriginationKey(mesh: cluster, trustDomain: trustDomain)
        return cluster.endpoints.map { $0.meshTLS ? key : nil }
    }
}

/// How connections of one origination key are made: the client context (CA, client certificate), the SNI (nil:
/// the request's Host, Envoy's auto SNI), and the names the server's certificate must carry (empty: the SNI, as
/// Envoy's auto SAN validation).
public final class TLSClientPolicy: Sendable {
    public let context: TLSContext
    public let sni: String?
    public let subjectAltNames: [String]
    public let verify: Bool
    /// Mutual TLS between sidecars: the identity presented (its trust domain is the peer's; an expired one is never
    /// presented), and the peer's SPIFFE ID checked against `subjectAltNames` rather than its names.
    public let mesh: MeshIdentity?

    init(context: TLSContext, sni: String?, subjectAltNames: [String], verify: Bool, mesh: MeshIdentity? = nil) {
        self.context = context
        self.sni = sni
        self.subjectAltNames = subjectAltNames
        self.verify = verify
        self.mesh = mesh
    }
}

/// Every origination policy a route table needs.
public final class TLSOriginations: Sendable {
    public let policies: [TLSOriginationKey: TLSClientPolicy]
    /// The workload identity's trust domain (nil: no `--identity-dir`, so no mutual TLS between sidecars): which
    /// endpoints are reached over it is decided with it (`TLSOriginationKey.endpointKeys`).
    public let trustDomain: String?

    public init(policies: [TLSOriginationKey: TLSClientPolicy] = [:], trustDomain: String? = nil) {
        self.policies = policies
        self.trustDomain = trustDomain
    }

    /// Builds the client context of every TLS setting `table`'s clusters use; `credentialsDir` holds the
    /// `credentialName` secrets (`DIR/NAME/tls.crt`, `tls.key`, `ca.crt`, as a mounted Kubernetes TLS secret);
    /// `identity` is the workload's mesh identity (`--identity-dir`), for mutual TLS between sidecars.
    /// Throws with the cluster and file at the first that cannot be used; warnings say what is not acted on.
    /// `reuse`: policies already built whose settings are unchanged (an identity rotation rebuilds the mesh's own
    /// contexts only, so a broken secret of an unrelated DestinationRule cannot hold the rotation back).
    public static func build(_ table: RouteTable, credentialsDir: String?, identity: MeshIdentity? = nil,
                             reuse: [TLSOriginationKey: TLSClientPolicy]? = nil) throws(TLSSetupError) -> (TLSOriginations, [String]) {
        var policies: [TLSOriginationKey: TLSClientPolicy] = [:]
        var warnings: [String] = []
        var warnedMesh = Set<String>()
        for cluster in table.clusters {
            if identity == nil, warnedMesh.insert(cluster.host).inserted {
                if cluster.policy.tls?.mode == .ISTIO_MUTUAL {
                    warnings.append("DestinationRule for \(cluster.host): tls mode ISTIO_MUTUAL needs the workload's mesh identity (--identity-dir), which this sidecar has none of: its connections fail (503 UF) rather than go out in plaintext")
                } else if cluster.policy.tls == nil, !cluster.meshExternal, cluster.endpoints.contains(where: \.meshTLS) {
                    warnings.append("\(cluster.host): endpoints labelled security.istio.io/tlsMode: istio are reached over mutual TLS with the workload's mesh identity, and this sidecar has none (--identity-dir); they get plaintext")
                }
            }
            if let t = cluster.policy.tls, t.caCrl != nil, TLSOriginationKey(t) != nil {
                warnings.append("DestinationRule for \(cluster.host): tls.caCrl is not checked yet")
            }
            for key in TLSOriginationKey.endpointKeys(cluster, trustDomain: identity?.trustDomain) {
                // (A mesh key without an identity has no policy: its connections fail.)
                guard let key, policies[key] == nil, !key.mesh || identity != nil else { continue }
                if let reused = reuse?[key] {
                    policies[key] = reused
                    continue
                }
                do throws(TLSSetupError) {
                    policies[key] = try policy(key, credentialsDir: credentialsDir, identity: identity)
                } catch {
                    throw TLSSetupError("DestinationRule for \(cluster.host) (\(cluster.name)): tls: \(error.description)")
                }
            }
        }
        return (TLSOriginations(policies: policies, trustDomain: identity?.trustDomain), warnings)
    }

    /// The clusters TCP listeners on `ports` reach (TCP routes, and a host's default TCP route, pick a cluster by
    /// the listener's port), each once.
    static func tcpClusters(_ table: RouteTable, ports: Set<UInt16>) -> [Cluster] {
        var seen = Set<Int32>()
        var out: [Cluster] = []
        for v in table.virtualHosts {
            for d in v.tcpRoutes.flatMap(\.destinations) + (v.serviceDestination.map { [$0] } ?? []) {
                for (port, c) in d.clusters where ports.contains(port) && c >= 0 && Int(c) < table.clusters.count && seen.insert(c).inserted {
                    out.append(table.clusters[Int(c)])
                }
            }
        }
        return out
    }

    /// Warnings for the clusters TCP routes reach whose endpoints automatic mTLS would reach over mutual TLS: the
    /// TCP relay does not originate TLS yet, so those connections go in plaintext, as to a peer without a sidecar.
    public static func tcpMeshWarnings(_ table: RouteTable, trustDomain: String?, ports: Set<UInt16>) -> [String] {
        tcpClusters(table, ports: ports).filter { c in
            c.policy.tls?.mode != .ISTIO_MUTUAL && TLSOriginationKey.endpointKeys(c, trustDomain: trustDomain).contains { $0?.mesh == true }
        }.map { "\($0.name): TCP connections to it go in plaintext: automatic mTLS is not supported on TCP routes yet" }
    }

    /// Why the configuration cannot be served by a process with TCP listeners: a TCP route to a cluster whose
    /// DestinationRule demands ISTIO_MUTUAL, which the TCP relay cannot originate (refused rather than plaintext).
    public static func tcpMeshRefusal(_ table: RouteTable, ports: Set<UInt16>) -> String? {
        guard let c = tcpClusters(table, ports: ports).first(where: { $0.policy.tls?.mode == .ISTIO_MUTUAL }) else { return nil }
        return "DestinationRule for \(c.host) (\(c.name)): tls mode ISTIO_MUTUAL on a cluster TCP routes reach: the TCP relay does not originate mutual TLS yet, and ISTIO_MUTUAL must not fall back to plaintext"
    }

    /// Istio's ALPN values between sidecars (what its inbound listeners match to tell mesh mTLS from an app's own
    /// TLS), then the protocol itself for a peer that knows none of them; never `istio-peer-exchange`, whose
    /// metadata exchange Tern does not speak.
    static func meshALPN(http2: Bool) -> [String] {
        http2 ? ["istio-h2", "istio", "h2"] : ["istio-http/1.1", "istio", "http/1.1"]
    }

    static func policy(_ key: TLSOriginationKey, credentialsDir: String?, identity: MeshIdentity? = nil) throws(TLSSetupError) -> TLSClientPolicy {
        if key.mesh {
            guard let identity else { throw TLSSetupError("mutual TLS between sidecars needs the workload's identity (--identity-dir)") }
            var s = TLSClientSettings()
            s.caFile = identity.files.root
            s.certificateFile = identity.files.certificateChain
            s.keyFile = identity.files.key
            s.alpn = meshALPN(http2: key.http2)
            let context = try TLSContext.client(s)
            return TLSClientPolicy(context: context, sni: key.sni, subjectAltNames: key.subjectAltNames, verify: true, mesh: identity)
        }
        var s = TLSClientSettings()
        s.caFile = key.caCertificates
        s.certificateFile = key.clientCertificate
        s.keyFile = key.privateKey
        s.insecureSkipVerify = key.insecureSkipVerify
        // As Envoy offers it for the cluster's protocol.
        s.alpn = key.http2 ? ["h2"] : ["http/1.1"]
        if let name = key.credentialName {
            guard let dir = credentialsDir else {
                throw TLSSetupError("credentialName \(name) needs --credentials-dir (where DIR/\(name)/tls.crt, tls.key and ca.crt are)")
            }
            let base = dir.hasSuffix("/") ? dir + name : dir + "/" + name
            if key.mutual {
                s.certificateFile = base + "/tls.crt"
                s.keyFile = base + "/tls.key"
            }
            if System.isReadable(base + "/ca.crt") {
                s.caFile = base + "/ca.crt"
            } else if !key.mutual {
                throw TLSSetupError("\(base)/ca.crt: cannot be read (credentialName \(name) of a SIMPLE policy holds the CA)")
            }
        }
        let context = try TLSContext.client(s)
        return TLSClientPolicy(context: context, sni: key.sni, subjectAltNames: key.subjectAltNames, verify: !key.insecureSkipVerify)
    }
}
