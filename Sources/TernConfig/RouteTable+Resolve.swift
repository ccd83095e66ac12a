// DNS endpoints (ServiceEntry `resolution: DNS` and `DNS_ROUND_ROBIN`). A compiled table keeps each endpoint that
// names a host as written (`needsResolution`); the resolver, on its own thread, asks for those names and publishes
// `template.resolved(answers)`: the same table with the answers in place of the names. Only the clusters that
// have DNS endpoints are rebuilt; routes, matchers, the host index and the forwarding facts are shared with the
// template (arrays are copied on write, and nothing writes them).

extension RouteTable {
    /// The host names this table's DNS endpoints stand for, each once, in the order clusters first use them.
    public var dnsNames: [String] {
        var seen: Set<String> = []
        var names: [String] = []
        for c in clusters {
            for e in c.endpoints where e.needsResolution && seen.insert(e.address).inserted { names.append(e.address) }
        }
        return names
    }

    /// A copy whose DNS endpoints are replaced by `answers` (host name → IP literals, as `DNSRefresh.answers`
    /// holds them): with resolution DNS every address is an endpoint (Envoy's STRICT_DNS), with
    /// DNS_ROUND_ROBIN the first one only (Envoy's LOGICAL_DNS); each keeps the endpoint's port, weight and
    /// labels. A name without an answer contributes no endpoint, so a cluster none of whose names has answered
    /// has none and answers 503 (UH). Call it on the table as compiled (the template), not on a resolved copy.
    public func resolved(_ answers: [String: [String]]) -> RouteTable {
        var resolvedClusters = clusters
        for i in clusters.indices where clusters[i].endpoints.contains(where: \.needsResolution) {
            var endpoints: [Endpoint] = []
            for e in clusters[i].endpoints {
                guard e.needsResolution else {
                    endpoints.append(e)
                    continue
                }
                let addresses = answers[e.address] ?? []
                for a in clusters[i].resolution == .DNS_ROUND_ROBIN ? Array(addresses.prefix(1)) : addresses {
                    var answered = e
                    answered.address = a
                    answered.needsResolution = false
                    endpoints.append(answered)
                }
            }
            resolvedClusters[i].endpoints = endpoints
            resolvedClusters[i].loadBalancing = LoadBalancingPolicy(clusters[i].policy, endpoints: endpoints)
        }
        return RouteTable(namespace: namespace, resources: resources, virtualHosts: virtualHosts,
                          clusters: resolvedClusters, exactHosts: exactHosts, wildcardHosts: wildcardHosts,
                          catchAll: catchAll, forwarding: forwarding, sniRoutes: sniRoutes, sniPorts: sniPorts,
                          workload: workload, authorization: authorization, peerAuthentication: peerAuthentication,
                          compileWarnings: compileWarnings)
    }
}
