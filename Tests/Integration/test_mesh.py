"""Mutual TLS between sidecars (issue 19): workload identities from `tern cert` (`--identity-dir`), an inbound side
that takes only X.509-SVIDs of the mesh's trust domain chaining to its root and hands the app Istio's
X-Forwarded-Client-Cert, and an outbound side whose requests to endpoints labelled
`security.istio.io/tlsMode: istio` go over mutual TLS (automatic mTLS), checking the peer's SPIFFE ID against the
service's accounts. Real curl and openssl clients; both sidecars on loopback."""
import hashlib
import os
import shutil
import ssl
import subprocess
import threading
import time

import httpx
import pytest

from conftest import Tern, tern_bin
from peers import dead_port
from test_http_proxy import http_upstream, wait_until  # noqa: F401 (a fixture)
from test_tls import metric

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_MESH_CERTS = os.path.join(ROOT, "Tests", "Fixtures", "tls", "make-mesh-certs.sh")


@pytest.fixture(scope="module")
def ids(tmp_path_factory):
    """The identities of make-mesh-certs.sh (made once per module)."""
    d = tmp_path_factory.mktemp("mesh-ids")
    subprocess.run(["bash", MAKE_MESH_CERTS, str(d), tern_bin()], check=True, timeout=180)
    return d


def identity_copy(ids, name, tmp_path):
    """A private copy of identity `name` (a rotation rewrites it)."""
    d = tmp_path / f"id-{name}"
    shutil.copytree(ids / name, d)
    return d


def sha256_of(pem_path):
    """SHA-256 of the first certificate in a PEM file, in lower-case hex (X-Forwarded-Client-Cert's Hash)."""
    text = open(pem_path).read()
    first = text[:text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


def sidecar(start_tern, backend, *args, prom=None):
    """`tern proxy --http` with Prometheus on `prom`, one reactor."""
    return start_tern("--http", "--io-backend", backend, "--cores", "1", "--admin", "off", "--health", "off",
                      "--prometheus", f"127.0.0.1:{prom}", *args)


def inbound(start_tern, backend, up, identity, tmp_path, policies="# no policies\n"):
    """App B's inbound side: its identity, the policies given, forwarding to `up`. Returns (tern, prometheus)."""
    config = tmp_path / "inbound"
    config.mkdir(exist_ok=True)
    (config / "policies.yaml").write_text(policies)
    prom = dead_port()
    t = sidecar(start_tern, backend, "--listen", "127.0.0.1:0", "--upstream", up.address, "--config", str(config),
                "--labels", "app=backend", "--service-account", "backend", "--identity-dir", str(identity), prom=prom)
    return t, prom


SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    labels: {{app: backend{labels}}}
    serviceAccount: {account}
"""


def outbound(start_tern, backend, inbound_port, identity, tmp_path, labels=", security.istio.io/tlsMode: istio",
             account="backend", extra=""):
    """App A's outbound side: routes backend.default.svc.cluster.local to the inbound side's port."""
    config = tmp_path / "outbound"
    config.mkdir(exist_ok=True)
    (config / "service.yaml").write_text(SERVICE.format(port=inbound_port, labels=labels, account=account) + extra)
    prom = dead_port()
    t = sidecar(start_tern, backend, "--listen", "127.0.0.1:0", "--config", str(config),
                "--identity-dir", str(identity), prom=prom)
    return t, prom


def call(port, path="/", timeout=30):
    """App A's call, plain HTTP to its sidecar: (status, body)."""
    r = httpx.get(f"http://127.0.0.1:{port}{path}", headers={"host": "backend.default.svc.cluster.local"},
                  timeout=timeout, trust_env=False)
    return r.status_code, r.content


def curl_mtls(port, identity, path="/", *args):
    """curl straight to an inbound side presenting `identity`: (curl exit code, status)."""
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-k", "--cert", str(identity / "cert-chain.pem"),
                        "--key", str(identity / "key.pem"), "-o", "/dev/null", "-w", "%{http_code}", *args,
                        f"https://127.0.0.1:{port}{path}"], capture_output=True, timeout=60)
    return r.returncode, int(r.stdout or b"0")


def failures(prom, side, reason):
    return metric(prom, "tern_tls_handshake_failures_total", side=side, reason=reason)


def test_inbound_takes_only_mesh_identities_and_tells_the_app_who_called(start_tern, http_upstream, backend, ids,
                                                                         tmp_path):
    """Mutual TLS with a workload certificate of the mesh gets through, and the app gets Istio's
    X-Forwarded-Client-Cert (By us, the peer certificate's hash, its SPIFFE ID); every certificate that is not an
    X.509-SVID of the trust domain chaining to the mesh root fails the handshake, counted by reason, and the app
    sees nothing of it. PERMISSIVE (no PeerAuthentication) takes plaintext too, whose own X-Forwarded-Client-Cert
    never reaches the app."""
    up = http_upstream()
    t, prom = inbound(start_tern, backend, up, ids / "backend", tmp_path)
    assert curl_mtls(t.port, ids / "frontend", "/ok") == (0, 200)
    assert curl_mtls(t.port, ids / "frontend", "/ok-h2", "--http2") == (0, 200)
    refused = {"foreign": "certificate_verify_failed", "expired": "certificate_expired", "otherdomain": "invalid_svid",
               "nospiffe": "invalid_svid", "twoids": "invalid_svid", "caleaf": "invalid_svid"}
    for name in refused:
        code, status = curl_mtls(t.port, ids / name, "/" + name)
        assert status == 0 and code != 0, name
    wait_until(lambda: failures(prom, "downstream", "invalid_svid") == 4, "the four non-SVIDs counted")
    assert failures(prom, "downstream", "certificate_verify_failed") == 1
    assert failures(prom, "downstream", "certificate_expired") == 1
    # Plaintext under PERMISSIVE: served, with the client's forged X-Forwarded-Client-Cert removed.
    r = httpx.get(f"http://127.0.0.1:{t.port}/plain", headers={"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/admin"},
                  trust_env=False, timeout=30)
    assert r.status_code == 200
    assert up.paths() == ["/ok", "/ok-h2", "/plain"]
    expected = (f'By=spiffe://cluster.local/ns/default/sa/backend;Hash={sha256_of(ids / "frontend" / "cert-chain.pem")};'
                f'Subject="";URI=spiffe://cluster.local/ns/default/sa/frontend')
    assert up.requests[0].header_values("x-forwarded-client-cert") == [expected]
    assert up.requests[1].header_values("x-forwarded-client-cert") == [expected]
    assert up.requests[2].header_values("x-forwarded-client-cert") == []


STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"""

FRONTEND_ONLY = """\
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-reads, namespace: default}
spec:
  selector:
    matchLabels: {app: backend}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/frontend"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/api/*"]
"""


def test_two_sidecars_speak_mutual_tls_and_the_policy_sees_the_caller(start_tern, http_upstream, backend, ids,
                                                                     tmp_path):
    """App A → its sidecar (plain HTTP) → mutual TLS → B's sidecar (STRICT, an AuthorizationPolicy for A's
    identity) → App B: A's calls under /api/ reach B with A's identity; others are denied by B's sidecar (403
    RBAC); the link between the sidecars is TLS both sides counted."""
    up = http_upstream()
    b, bprom = inbound(start_tern, backend, up, ids / "backend", tmp_path, STRICT + FRONTEND_ONLY)
    a, aprom = outbound(start_tern, backend, b.port, ids / "frontend", tmp_path)
    assert call(a.port, "/api/orders")[0] == 200
    assert up.paths() == ["/api/orders"]
    assert call(a.port, "/admin") == (403, b"RBAC: access denied")
    assert call(a.port, "/api/../admin") == (403, b"RBAC: access denied")
    assert up.paths() == ["/api/orders"]
    assert up.requests[0].header_values("x-forwarded-client-cert")[0].endswith(";URI=spiffe://cluster.local/ns/default/sa/frontend")
    assert metric(aprom, "tern_tls_handshakes_total", side="upstream") >= 1
    assert metric(bprom, "tern_tls_handshakes_total", side="downstream") >= 1
    assert metric(bprom, "tern_authorization_denied_total") == 2
    # Another mesh identity straight to B: its handshake succeeds, the policy denies it.
    code, status = curl_mtls(b.port, ids / "other", "/api/orders")
    assert (code, status) == (0, 403)
    assert up.paths() == ["/api/orders"]


def test_plaintext_to_a_strict_inbound_side_is_refused(start_tern, http_upstream, backend, ids, tmp_path):
    """An endpoint without the tlsMode label gets plaintext (Istio's automatic mTLS sends mTLS only to endpoints
    known to have a sidecar): a STRICT inbound side closes it, so A gets 503 and B's app nothing."""
    up = http_upstream()
    b, bprom = inbound(start_tern, backend, up, ids / "backend", tmp_path, STRICT)
    a, _ = outbound(start_tern, backend, b.port, ids / "frontend", tmp_path, labels="")
    status, _ = call(a.port, "/plain")
    assert status == 503
    assert up.paths() == []
    assert metric(bprom, "tern_tls_handshakes_total", side="downstream") == 0
    # B was up and refused it: plaintext HTTP where its STRICT side speaks only TLS.
    assert failures(bprom, "downstream", "http_request") >= 1


def test_an_upstream_identity_the_service_may_not_run_as_is_refused(start_tern, http_upstream, backend, ids,
                                                                    tmp_path):
    """The ServiceEntry says its endpoint runs as service account `payments`: B presents `backend`, so A's sidecar
    ends the handshake (SAN mismatch, 503 UF with the transport failure reason) and B's app sees nothing."""
    up = http_upstream()
    b, _ = inbound(start_tern, backend, up, ids / "backend", tmp_path)
    a, aprom = outbound(start_tern, backend, b.port, ids / "frontend", tmp_path, account="payments")
    status, body = call(a.port, "/x")
    assert status == 503
    assert b"transport failure reason: TLS_error:|the upstream's SPIFFE ID spiffe://cluster.local/ns/default/sa/backend is none of" in body, body
    assert failures(aprom, "upstream", "san_mismatch") >= 1
    assert up.paths() == []


def test_an_upstream_of_another_trust_domain_is_refused(start_tern, http_upstream, backend, ids, tmp_path):
    """B's certificate chains to the mesh root but names trust domain other.local: not an SVID of the mesh."""
    up = http_upstream()
    # (B's trust domain is its certificate's, other.local.)
    b, _ = inbound(start_tern, backend, up, ids / "otherdomain", tmp_path)
    a, aprom = outbound(start_tern, backend, b.port, ids / "frontend", tmp_path)
    status, _ = call(a.port, "/x")
    assert status == 503
    assert failures(aprom, "upstream", "invalid_svid") >= 1
    assert up.paths() == []


def test_identity_rotation_under_load_drops_nothing(start_tern, http_upstream, backend, ids, tmp_path):
    """Both identities are rewritten (as Istio's agent rotates them) while A calls B without pause: no request
    fails; both sidecars apply the rotation; a new connection to B is served the new certificate; a rotation to
    files that cannot be used is refused and the previous identity keeps serving."""
    up = http_upstream()
    bid, aid = identity_copy(ids, "backend", tmp_path), identity_copy(ids, "frontend", tmp_path)
    b, bprom = inbound(start_tern, backend, up, bid, tmp_path, STRICT)
    a, aprom = outbound(start_tern, backend, b.port, aid, tmp_path)
    stop, failed, done = threading.Event(), [], [0]

    def load():
        # Bounded in time and count; stopped by the test well before either.
        deadline = time.time() + 300
        with httpx.Client(trust_env=False, timeout=30) as c:
            for _ in range(1_000_000):
                if stop.is_set() or time.time() > deadline:
                    return
                r = c.get(f"http://127.0.0.1:{a.port}/load", headers={"host": "backend.default.svc.cluster.local"})
                if r.status_code != 200:
                    failed.append(r.status_code)
                done[0] += 1

    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_until(lambda: done[0] >= 50, "load under way", timeout=60)
        for name, target in (("backend-next", bid), ("frontend-next", aid)):
            for f in ("key.pem", "cert-chain.pem", "root-cert.pem"):
                tmp = target / (f + ".new")
                shutil.copy(ids / name / f, tmp)
                os.replace(tmp, target / f)
        wait_until(lambda: metric(bprom, "tern_tls_certificate_reloads_total") >= 1, "B rotated", timeout=30)
        wait_until(lambda: metric(aprom, "tern_tls_certificate_reloads_total") >= 1, "A rotated", timeout=30)
        seen = done[0]
        wait_until(lambda: done[0] >= seen + 50, "load after the rotation", timeout=60)
        # A file that cannot be used: refused, and the rotated identity keeps serving.
        refused = metric(bprom, "tern_tls_certificate_reloads_refused_total")
        (bid / "cert-chain.pem").write_text("not a certificate\n")
        wait_until(lambda: metric(bprom, "tern_tls_certificate_reloads_refused_total") >= refused + 1, "bad rotation refused", timeout=30)
        seen = done[0]
        wait_until(lambda: done[0] >= seen + 50, "load after the refused rotation", timeout=60)
    finally:
        stop.set()
        thread.join(60)
    assert failed == []
    # With the load stopped, a request held open at B's app takes A's one pooled connection, so the next request
    # needs a new one: it presents A's new identity (and resumes no session of the old one).
    answers = []
    held = threading.Thread(target=lambda: answers.append(call(a.port, "/hold/rotation")[0]))
    held.start()
    wait_until(lambda: "/hold/rotation" in up.paths(), "the held request at B's app")
    before = len(up.requests)
    assert call(a.port, "/fresh")[0] == 200
    up.release("rotation")
    held.join(30)
    assert answers == [200]
    fresh = [r for r in up.requests[before:] if r.path == "/fresh"][0]
    assert f"Hash={sha256_of(ids / 'frontend-next' / 'cert-chain.pem')};" in fresh.header_values("x-forwarded-client-cert")[0]
    served = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{b.port}", "-cert", str(ids / "frontend" / "cert-chain.pem"),
                             "-key", str(ids / "frontend" / "key.pem")], input=b"", capture_output=True, timeout=30)
    pem = served.stdout.decode()
    pem = pem[pem.index("-----BEGIN CERTIFICATE-----"):pem.index("-----END CERTIFICATE-----") + 25]
    assert hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest() == sha256_of(ids / "backend-next" / "cert-chain.pem")


def test_an_unusable_identity_at_start_exits_naming_it(backend, ids, tmp_path):
    """An expired workload certificate is never presented: the sidecar does not start, and says why."""
    for name, words in (("expired", "expired"), ("nospiffe", "no single SPIFFE ID")):
        t = Tern(["--http", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--io-backend", backend,
                  "--admin", "off", "--health", "off", "--prometheus", "off", "--identity-dir", str(ids / name)],
                 expect_listen=False)
        assert t.wait() == 1
        assert words in t.log() and str(ids / name / "cert-chain.pem") in t.log(), t.log()


def test_one_process_per_sidecar_outbound_and_inbound_listeners(start_tern, http_upstream, backend, ids, tmp_path):
    """Each sidecar in one process, as Istio's: `--listen` (outbound, routed by `--config`) beside `--inbound`
    (the workload's inbound side, its policies from the same configuration, requests to `--inbound-app`). A's app
    calls B through both sidecars over mutual TLS; B's policies apply on B's inbound listener only (A's outbound
    listener does not enforce A's own workload's policies, and takes A's plaintext); B's app sees A's identity."""
    app_a, app_b = http_upstream(), http_upstream()
    bconf, aconf = tmp_path / "b", tmp_path / "a"
    bconf.mkdir()
    aconf.mkdir()
    (bconf / "policies.yaml").write_text(STRICT + FRONTEND_ONLY)
    bprom, aprom = dead_port(), dead_port()
    b = sidecar(start_tern, backend, "--listen", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--inbound-app", app_b.address,
                "--config", str(bconf), "--labels", "app=backend", "--service-account", "backend",
                "--identity-dir", str(ids / "backend"), prom=bprom)
    b_inbound = b.ports[1]
    # A's own policies would deny everything to A: they apply to A's inbound side, not to what A's app sends.
    (aconf / "service.yaml").write_text(SERVICE.format(port=b_inbound, labels=", security.istio.io/tlsMode: istio", account="backend")
                                        + "---\n" + STRICT.replace("istio-system", "default").replace("name: default", "name: a-strict")
                                        + """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: default}
spec: {}
""")
    a = sidecar(start_tern, backend, "--listen", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--inbound-app", app_a.address,
                "--config", str(aconf), "--labels", "app=frontend", "--service-account", "frontend",
                "--identity-dir", str(ids / "frontend"), prom=aprom)
    assert call(a.port, "/api/orders")[0] == 200
    assert call(a.port, "/admin") == (403, b"RBAC: access denied")
    assert app_b.paths() == ["/api/orders"]
    assert app_b.requests[0].header_values("x-forwarded-client-cert")[0].endswith(";URI=spiffe://cluster.local/ns/default/sa/frontend")
    # B's outbound listener is plaintext for its app; its inbound one STRICT: plaintext refused there.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{b_inbound}/api/orders", trust_env=False, timeout=10)
    # A's inbound side applies A's deny-all to B calling A with B's identity.
    assert curl_mtls(a.ports[1], ids / "backend", "/x") == (0, 403)
    assert app_a.paths() == []
    # Our own SPIFFE ID is the workload's principal in the metrics. Each sidecar reports both sides: A's call as
    # its source; B's inbound side as the destination, with A's identity as the source's and mutual TLS; A's own
    # inbound side as the destination of B's call (denied).
    def series(prom, **labels):
        text = httpx.get(f"http://127.0.0.1:{prom}/stats/prometheus", timeout=10).text
        want = [f'{k}="{v}"' for k, v in labels.items()]
        return [line for line in text.splitlines() if line.startswith("istio_requests_total{") and all(w in line for w in want)]
    frontend = "spiffe://cluster.local/ns/default/sa/frontend"
    assert series(aprom, reporter="source", source_principal=frontend, response_code="200")
    assert series(bprom, reporter="destination", source_principal=frontend, source_workload_namespace="default",
                  connection_security_policy="mutual_tls", response_code="200")
    assert series(bprom, reporter="destination", source_principal=frontend, response_code="403")
    assert series(aprom, reporter="destination", source_principal="spiffe://cluster.local/ns/default/sa/backend",
                  destination_principal=frontend, response_code="403")


@pytest.mark.parametrize("args, words", [
    (["--inbound", "127.0.0.1:0"], "--inbound is the inbound side of a sidecar whose outbound side --config routes"),
    (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--inbound-app", "127.0.0.1:9"], "--inbound-app is where --inbound listeners send requests"),
    (["--listen", "127.0.0.1:0", "--config", "/nonexistent", "--inbound", "127.0.0.1:0", "--tls-cert", "c", "--tls-key", "k"],
     "--inbound listeners take mutual TLS from --identity-dir"),
    (["--listen", "127.0.0.1:0", "--config", "/nonexistent", "--inbound", "127.0.0.1:0", "--inbound-app", "127.0.0.1:0"],
     "--inbound-app must be IP:PORT"),
    (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--trust-domain", "cluster.local"], "--trust-domain is the trust domain of --identity-dir"),
    (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--identity-dir", "/x", "--trust-domain", "Cluster.Local"],
     "--trust-domain must be a trust domain"),
    (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--identity-dir", "/x", "--tls-cert", "c", "--tls-key", "k"],
     "--identity-dir gives the certificate, key and CA"),
    (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--identity-dir", "/x"], "--identity-dir needs HTTP listeners"),
    (["--listen", "127.0.0.1:0", "--config", "/nonexistent", "--inbound", "127.0.0.1:0", "--inbound-ports", "5432"],
     "TCP ports (the default protocol) are not served by an inbound side yet"),
    (["--listen", "127.0.0.1:0", "--config", "/nonexistent", "--inbound", "127.0.0.1:0", "--inbound-ports", "80/SOAP"],
     "the protocol must be HTTP, HTTP2, GRPC or TCP"),
    (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--inbound-ports", "80/GRPC"], "--inbound-ports describes an inbound side's app"),
])
def test_misused_mesh_flags_exit_64_saying_why(args, words):
    r = subprocess.run([tern_bin(), "proxy", "--http" if "--identity-dir needs" not in words else "--cores=1", *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 64, r.stderr
    assert words in r.stderr, r.stderr


def test_a_connection_not_redirected_to_an_inbound_listener_without_an_app_is_closed(start_tern, backend, ids, tmp_path):
    """Without --inbound-app an inbound listener sends each connection to its original destination; one made
    straight to it (not redirected by iptables) has none: closed and counted, never looped back to itself."""
    conf = tmp_path / "c"
    conf.mkdir()
    (conf / "empty.yaml").write_text("# nothing\n")
    prom = dead_port()
    t = sidecar(start_tern, backend, "--listen", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--config", str(conf),
                "--identity-dir", str(ids / "backend"), prom=prom)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{t.ports[1]}/", trust_env=False, timeout=10)
    wait_until(lambda: metric(prom, "tern_inbound_without_destination_total") == 1, "the connection counted")


def test_a_sidecar_with_only_an_inbound_listener_and_its_trust_domain_flag_runs(start_tern, http_upstream, backend, ids,
                                                                                tmp_path):
    """`--inbound` without `--listen`, and `--trust-domain` given, pass through to the serving process."""
    up = http_upstream()
    conf = tmp_path / "c"
    conf.mkdir()
    (conf / "empty.yaml").write_text("# nothing\n")
    prom = dead_port()
    t = sidecar(start_tern, backend, "--inbound", "127.0.0.1:0", "--inbound-app", up.address, "--config", str(conf),
                "--identity-dir", str(ids / "backend"), "--trust-domain", "cluster.local", prom=prom)
    assert curl_mtls(t.port, ids / "frontend", "/only-inbound") == (0, 200)
    assert up.paths() == ["/only-inbound"]


GRPC_SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: grpc, protocol: GRPC, targetPort: {port}}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, labels: {{app: echo, security.istio.io/tlsMode: istio}}, serviceAccount: backend}}
"""


def test_grpc_between_two_sidecars_over_mutual_tls(start_tern, backend, ids, tmp_path):
    """A gRPC client → A's sidecar (the ServiceEntry port says GRPC: HTTP/2 to B, ALPN istio-h2) → mutual TLS → B's
    inbound side (`--inbound-ports PORT/GRPC`: HTTP/2 to its app) → a grpcio server: unary, streaming both ways
    and a status all arrive; B's app sees A's identity in X-Forwarded-Client-Cert."""
    import grpc
    from h2_peers import GRPCUpstream
    app = GRPCUpstream()
    try:
        conf = tmp_path / "b"
        conf.mkdir()
        (conf / "p.yaml").write_text(STRICT)
        bprom = dead_port()
        b = sidecar(start_tern, backend, "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{app.port}",
                    "--config", str(conf), "--service-account", "backend", "--identity-dir", str(ids / "backend"),
                    "--inbound-ports", f"{app.port}/GRPC", prom=bprom)
        aconf = tmp_path / "a"
        aconf.mkdir()
        (aconf / "s.yaml").write_text(GRPC_SERVICE.format(port=b.port))
        a = sidecar(start_tern, backend, "--listen", "127.0.0.1:0", "--config", str(aconf),
                    "--identity-dir", str(ids / "frontend"), prom=dead_port())
        ch = grpc.insecure_channel(f"127.0.0.1:{a.port}", options=[("grpc.default_authority", "echo.default.svc.cluster.local"),
                                                                   ("grpc.enable_http_proxy", 0)])
        try:
            assert ch.unary_unary("/test.Echo/Unary")(b"ping", timeout=30) == b"ping"
            assert list(ch.unary_stream("/test.Echo/ServerStream")(b"s", timeout=30)) == [b"s", b"s", b"s"]
            assert list(ch.stream_stream("/test.Echo/Bidi")(iter([b"1", b"2"]), timeout=30)) == [b"1", b"2"]
            with pytest.raises(grpc.RpcError) as failed:
                ch.unary_unary("/test.Echo/Fail")(b"x", timeout=30)
            assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            ch.close()
        assert all(m.get("x-forwarded-client-cert", "").endswith(";URI=spiffe://cluster.local/ns/default/sa/frontend")
                   for m in app.metadata) and len(app.metadata) == 4
        assert metric(bprom, "tern_tls_handshakes_total", side="downstream") >= 1
    finally:
        app.stop()
