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
}

/// How connections of one origination key are made: the client context (CA, client certificate), the SNI (nil:
/// the request's Host, Envoy's auto SNI), and the names the server's certificate must carry (empty: the SNI, as
/// Envoy's auto SAN validation).
public final class TLSClientPolicy: Sendable {
    public let context: TLSContext
    public let sni: String?
    public let subjectAltNames: [String]
    public let verify: Bool

    init(context: TLSContext, sni: String?, subjectAltNames: [String], verify: Bool) {
        self.context = context
        self.sni = sni
        self.subjectAltNames = subjectAltNames
        self.verify = verify
    }
}

/// Every origination policy a route table needs.
public final class TLSOriginations: Sendable {
    public let policies: [TLSOriginationKey: TLSClientPolicy]

    public init(policies: [TLSOriginationKey: TLSClientPolicy] = [:]) { self.policies = policies }

    /// Builds the client context of every TLS setting `table`'s clusters use; `credentialsDir` holds the
    /// `credentialName` secrets (`DIR/NAME/tls.crt`, `tls.key`, `ca.crt`, as a mounted Kubernetes TLS secret).
    /// Throws with the cluster and file at the first that cannot be used; warnings say what is not acted on.
    public static func build(_ table: RouteTable, credentialsDir: String?) throws(TLSSetupError) -> (TLSOriginations, [String]) {
        var policies: [TLSOriginationKey: TLSClientPolicy] = [:]
        var warnings: [String] = []
        var warnedMesh = Set<String>()
        for cluster in table.clusters {
            if cluster.policy.tls?.mode == .ISTIO_MUTUAL, warnedMesh.insert(cluster.host).inserted {
                warnings.append("DestinationRule for \(cluster.host): tls mode ISTIO_MUTUAL needs the mesh's identities, which Tern does not have yet; its connections stay plaintext")
            }
            if let t = cluster.policy.tls, t.caCrl != nil, TLSOriginationKey(t) != nil {
                warnings.append("DestinationRule for \(cluster.host): tls.caCrl is not checked yet")
            }
            guard let key = TLSOriginationKey(cluster.policy.tls, http2: cluster.upstreamProtocol == .http2),
                  policies[key] == nil else { continue }
            do throws(TLSSetupError) {
                policies[key] = try policy(key, credentialsDir: credentialsDir)
            } catch {
                throw TLSSetupError("DestinationRule for \(cluster.host) (\(cluster.name)): tls: \(error.description)")
            }
        }
        return (TLSOriginations(policies: policies), warnings)
    }

    static func policy(_ key: TLSOriginationKey, credentialsDir: String?) throws(TLSSetupError) -> TLSClientPolicy {
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
