// The typed form of Istio's security resources (istio/api security/v1beta1, as `security.istio.io/v1` serves them):
// PeerAuthentication and AuthorizationPolicy, as written (values checked, nothing resolved). Which workload a
// policy applies to and what it means for a request is `AuthorizationTable` (AuthorizationTable.swift) and
// `PeerAuthenticationPolicy` (PeerAuthenticationPolicy.swift).

/// A `selector: {matchLabels: …}` (absent: every workload of the namespace, or of the mesh in the root namespace).
public typealias LabelSelector = [String: String]

public struct PeerAuthentication: Sendable {
    public enum Mode: String, Sendable {
        /// Inherit the parent scope's mode (PERMISSIVE when none sets one).
        case UNSET
        /// Plaintext only.
        case DISABLE
        /// mTLS or plaintext.
        case PERMISSIVE
        /// mTLS with a client certificate only.
        case STRICT
    }

    public var selector: LabelSelector?
    /// `mtls.mode` (nil: absent, as UNSET).
    public var mode: Mode?
    /// `portLevelMtls`: workload (container) port → mode; only with a selector.
    public var portLevel: [UInt16: Mode]
}

public struct AuthorizationPolicy: Sendable {
    public enum Action: String, Sendable { case ALLOW, DENY, AUDIT, CUSTOM }

    /// One value of a rule's list: exact `abc`, prefix `abc*`, suffix `*abc`, or presence `*` (any non-empty value).
    public struct Value: Sendable, Equatable {
        public var text: String
        public var mark: Mark
    }

    public struct Source: Sendable {
        public var principals: [Value]?
        public var notPrincipals: [Value]?
        public var requestPrincipals: [Value]?
        public var notRequestPrincipals: [Value]?
        public var namespaces: [Value]?
        public var notNamespaces: [Value]?
        public var serviceAccounts: [Value]?
        public var notServiceAccounts: [Value]?
        public var ipBlocks: [Value]?
        public var notIpBlocks: [Value]?
        public var remoteIpBlocks: [Value]?
        public var notRemoteIpBlocks: [Value]?
        /// The trust domain of the peer's SPIFFE ID (`cluster.local`).
        public var trustDomains: [Value]?
        public var notTrustDomains: [Value]?
        public var mark: Mark
    }

    public struct Operation: Sendable {
        public var hosts: [Value]?
        public var notHosts: [Value]?
        public var ports: [Value]?
        public var notPorts: [Value]?
        public var methods: [Value]?
        public var notMethods: [Value]?
        public var paths: [Value]?
        public var notPaths: [Value]?
        public var mark: Mark
    }

    public struct Condition: Sendable {
        public var key: String
        public var values: [Value]?
        public var notValues: [Value]?
        public var mark: Mark
    }

    public struct Rule: Sendable {
        /// nil: absent (any source); each entry's `source`.
        public var from: [Source]?
        public var to: [Operation]?
        public var when: [Condition]?
        public var mark: Mark
    }

    public var selector: LabelSelector?
    /// `targetRef`/`targetRefs` (Gateway or Service targets, for waypoints and gateways): a sidecar has none to
    /// match; such a policy applies to no sidecar (a warning says so).
    public var hasTargetRefs: Bool
    public var action: Action
    /// `provider.name` of a CUSTOM policy.
    public var provider: String?
    /// nil: `rules` absent, which matches nothing (with ALLOW: deny all); `[{}]`-style empty rules match everything.
    public var rules: [Rule]?
    /// The `istio.io/dry-run: "true"` annotation: evaluated and logged, never enforced.
    public var dryRun: Bool
    public var mark: Mark
}
