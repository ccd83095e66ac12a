// TLS origination on upstream connections: once the TCP connect completes, a connection whose pool has a TLS
// policy runs its handshake (bounded by the same --connect-timeout) before the engine gets it; a failed
// handshake fails the attempt (503 UF) with Envoy's transport failure reason in the body and the access log.
import TernConfig
import TernCore
import TernIO
import TernTLS

extension HTTPProxy {
    /// The TCP connect of `u` completed: with a TLS pool, its handshake starts (the ClientHello goes out now);
    /// false when the pool is plaintext (the engine takes the connection at once).
    func upstreamStartTLS(_ u: UID, _ reactor: Reactor<Backend>) -> Bool {
        let e = upstreams[u].endpoint
        guard pools.slots[e].tlsKey != nil else { return false }
        guard let io = upstreamTLS, let policy = pools.slots[e].tls else {
            // A pool keyed for TLS without its context: never plaintext instead.
            let detail = pools.slots[e].tlsKey?.mesh == true
                ? "mutual TLS between sidecars (ISTIO_MUTUAL) needs the workload's identity (--identity-dir)"
                : "no TLS context for this upstream"
            upstreamHandshakeFailed(u, TLSFailure(.internalError, detail), reactor)
            return true
        }
        let slot = Int(u.index)
        let name = upstreamServerName(u)
        if let mesh = policy.mesh, !mesh.presentable(now: MeshIdentity.nowSeconds) {
            upstreamHandshakeFailed(u, TLSFailure(.identityExpired, "the workload certificate \(mesh.files.certificateChain) expired and is never presented"), reactor)
            return true
        }
        // (Between sidecars the peer's SPIFFE ID is checked once the handshake is done, not its names.)
        let verifyName = policy.verify && policy.subjectAltNames.isEmpty && policy.mesh == nil ? name : nil
        if policy.verify && policy.subjectAltNames.isEmpty && policy.mesh == nil && name == nil {
            // Nothing to check the certificate's names against: refused rather than accepting any name.
            upstreamHandshakeFailed(u, TLSFailure(.sanMismatch, "no server name to verify the upstream's certificate against (no sni, no subjectAltNames, no Host)"), reactor)
            return true
        }
        guard io.sessions.open(slot, policy.context, serverName: name, verifyName: verifyName,
                               resume: pools.slots[e].resumptions[upstreams[u].serverName]) else {
            upstreamHandshakeFailed(u, TLSFailure(.internalError, "cannot start a TLS session (out of memory)"), reactor)
            return true
        }
        io.open(slot)
        upstreams[u].transport = .tls
        upstreams[u].tlsGeneration = pools.slots[e].tlsGeneration
        tlsRun(.upstream(u), reactor)
        return true
    }

    /// The SNI of a new connection: the policy's `sni`, else the Host of the request it is made for (Envoy's auto
    /// SNI), else none.
    private func upstreamServerName(_ u: UID) -> String? {
        let e = upstreams[u].endpoint
        if let sni = pools.slots[e].tls?.sni, !sni.isEmpty { return sni }
        guard let x = upstreams[u].exchange, exchanges.isCurrent(x) else { return nil }
        // An empty name (Host "", ":443", "[]") is no name: never one that turns the certificate check off.
        guard let name = pools.slots[e].serverNames[exchanges[x].attempt.serverName], !name.isEmpty else { return nil }
        return name
    }

    /// The handshake of `u` finished: the names the certificate must carry are checked, the session is kept for
    /// resumption, and the engine gets the connection.
    func upstreamHandshakeDone(_ u: UID, _ reactor: Reactor<Backend>) {
        guard let io = upstreamTLS else { return }
        let slot = Int(u.index), e = upstreams[u].endpoint
        if let policy = pools.slots[e].tls, let mesh = policy.mesh {
            // Between sidecars: the peer's certificate chained to the mesh root (the handshake checked it); it must
            // be an X.509-SVID of the trust domain whose SPIFFE ID is one the service may run as.
            switch mesh.peerIdentity(io.sessions.peerCertificate(slot), now: MeshIdentity.nowSeconds) {
            case .failure(let f):
                return tlsFailed(.upstream(u), f, reactor)
            case .success(let id):
                if !policy.subjectAltNames.isEmpty && !policy.subjectAltNames.contains(id.description) {
                    return tlsFailed(.upstream(u), TLSFailure(.sanMismatch, "the upstream's SPIFFE ID \(id) is none of \(policy.subjectAltNames)"), reactor)
                }
            }
        } else if let policy = pools.slots[e].tls, policy.verify, !policy.subjectAltNames.isEmpty,
           !io.sessions.peerMatches(slot, anyOf: policy.subjectAltNames) {
            return tlsFailed(.upstream(u), TLSFailure(.sanMismatch, "the upstream's certificate has none of the subjectAltNames \(policy.subjectAltNames)"), reactor)
        }
        counters.tls.handshake(.upstream, resumed: io.sessions.resumed(slot))
        upstreams[u].verified = true
        upstreamReady(u, reactor)
    }

    /// A verified connection that was offered a resumable session since its handshake (TLS 1.3 tickets come after
    /// it) leaves it for the next connection to its pool with the same server name (a session resumes without its
    /// certificate being checked again: one made for another name must never serve this one): once, when it
    /// first goes back to the pool or closes.
    func keepResumption(_ u: UID) {
        guard upstreams[u].transport == .tls, upstreams[u].verified, !upstreams[u].sessionKept, let io = upstreamTLS else { return }
        // (A connection of an earlier policy, made before a rotation, presented the old certificate.)
        guard upstreams[u].tlsGeneration == pools.slots[upstreams[u].endpoint].tlsGeneration else { return }
        let slot = Int(u.index)
        guard io.sessions.isOpen(slot), !io[slot].handshaking else { return }
        upstreams[u].sessionKept = true
        guard let r = io.sessions.resumption(slot) else { return }
        let e = upstreams[u].endpoint
        if pools.slots[e].resumptions[upstreams[u].serverName] == nil && pools.slots[e].resumptions.count >= 256 {
            pools.slots[e].resumptions.removeAll(keepingCapacity: true)
        }
        pools.slots[e].resumptions[upstreams[u].serverName] = r
    }

    /// The handshake of `u` failed (or timed out): counted (by `tlsFailed`), the reason kept for the 503 and the
    /// access log, and the attempt failed as a connect failure (UF).
    func upstreamHandshakeFailed(_ u: UID, _ f: TLSFailure, _ reactor: Reactor<Backend>) {
        Log.debug("TLS handshake with an upstream failed (\(f.reason.rawValue)): \(f.detail)")
        if let x = upstreams[u].exchange, exchanges.isCurrent(x) {
            exchanges[x].report.transportFailure = "TLS_error:|\(f.detail):TLS_error_end"
        }
        // A session that failed to resume (the peer refused the certificate it carries) is not offered again.
        pools.slots[upstreams[u].endpoint].resumptions[upstreams[u].serverName] = nil
        if upstreams[u].transport != .tls { counters.tls.failed(.upstream, f.reason) }
        cancel(&upstreams[u].connectTimer, reactor)
        connectFailed(u, reactor)
    }

    /// Envoy's 503 for a connection failure with a transport failure reason: "… reset reason: connection failure,
    /// transport failure reason: TLS_error:|…:TLS_error_end".
    func sendTransportFailure(_ x: XID, _ reactor: Reactor<Backend>) {
        let id = exchanges[x].downstream
        let reason = exchanges[x].report.transportFailure
        cancel(&downstreams[id].headerTimer, reactor)
        cancel(&exchanges[x].timer, reactor)
        let keep = exchanges[x].request.state == .done && downstreams[id].keepAlive && !draining
        let body = LocalReply.connectFailure.body + ", transport failure reason: " + reason
        guard let composed = bytes.compose({ w in
            w.append("HTTP/1.1 503 Service Unavailable\r\ncontent-length: ")
            w.append(decimal: body.utf8.count)
            w.append("\r\ncontent-type: text/plain\r\n")
            if !keep { w.append("connection: close\r\n") }
            w.append("\r\n")
            composedHeadLength = w.count
            w.append(body)
        }) else {
            exchanges[x].report.transportFailure = ""
            return sendReply(x, .connectFailure, reactor)
        }
        exchanges[x].reply = .connectFailure
        downstreams[id].keepAlive = keep
        exchanges[x].responseStarted = true
        exchanges[x].response.state = .reply
        exchanges[x].request.state = .done
        exchanges[x].report.status = 503
        dropHeld(&exchanges[x].response.held, reactor)
        exchanges[x].response.held = composed
        exchanges[x].report.responseHeads &+= UInt64(composedHeadLength)
        let entry = Int(id.index)
        toClient.reset(entry)
        _ = bytes.append(toClient, entry, composed, composed.start..<composed.end)
        sendToClient(id, reactor)
    }
}
