"""AuthorizationPolicy enforced on an inbound side (issue 19): `tern proxy --http --upstream APP --config DIR`, with
TLS termination verifying client certificates issued by `tern cert` (their SPIFFE IDs the principals), real curl
clients over HTTP/1.1 and HTTP/2, and the app seeing only what the policies allow."""
import os
import subprocess

import pytest

from conftest import tern_bin
from test_http_proxy import http_upstream, wait_until  # noqa: F401 (a fixture)
from test_tls import certs, metric, tls_proxy  # noqa: F401 (a fixture)
from peers import dead_port

POLICIES = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: backend-viewer, namespace: default}
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
  - from:
    - source:
        namespaces: ["ops"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-evil, namespace: default}
spec:
  action: DENY
  rules:
  - when:
    - key: request.headers[x-evil]
      values: ["1"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: would-deny-debug
  namespace: default
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/api/debug"]}
"""


@pytest.fixture(scope="module")
def mesh_certs(tmp_path_factory):
    """A mesh CA and workload certificates from `tern cert`: frontend and other (namespace default), and one of
    namespace ops."""
    d = tmp_path_factory.mktemp("mesh")
    ca = d / "ca"
    subprocess.run([tern_bin(), "cert", "ca", "--out", str(ca)], check=True, capture_output=True, timeout=60)
    for ns, sa in [("default", "frontend"), ("default", "other"), ("ops", "admin")]:
        subprocess.run([tern_bin(), "cert", "issue", "--ca", str(ca), "--namespace", ns, "--service-account", sa,
                        "--out", str(d / sa)], check=True, capture_output=True, timeout=60)
    return d


def inbound(start_tern, up, backend, certs, mesh_certs, tmp_path, policies=POLICIES, *extra):
    config = tmp_path / "policies.yaml"
    config.write_text(policies)
    t, prom = tls_proxy(start_tern, up, backend, certs, "--config", str(config), "--labels", "app=backend",
                        "--tls-client-ca", str(mesh_certs / "ca" / "root-cert.pem"), *extra)
    return t, prom, config


def curl(t, certs, mesh_certs, identity, path, *args):
    """curl over TLS presenting `identity`'s workload certificate; returns the status and body."""
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--cacert", os.path.join(certs, "ca.crt"),
                        "--cert", str(mesh_certs / identity / "cert-chain.pem"), "--key", str(mesh_certs / identity / "key.pem"),
                        "--path-as-is", "-o", "-", "-w", "\n%{http_code}", *args,
                        f"https://localhost:{t.port}{path}"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    body, status = r.stdout.rsplit(b"\n", 1)
    return int(status), body


def test_policies_decide_by_principal_namespace_path_method_and_header(start_tern, http_upstream, backend, certs,
                                                                     mesh_certs, tmp_path):
    up = http_upstream()
    t, prom, _ = inbound(start_tern, up, backend, certs, mesh_certs, tmp_path)
    allowed = [("frontend", "/api/orders", ()), ("frontend", "/api/orders", ("--http2",)), ("admin", "/anything", ()),
               ("admin", "/anything", ("-X", "POST")), ("frontend", "/api/debug", ())]
    denied = [("other", "/api/orders", ()),  # another principal
              ("frontend", "/admin", ()),  # a path the rule does not name
              ("frontend", "/api/../admin", ()),  # normalised to /admin before the policies
              ("frontend", "/api/%2e%2e/admin", ()),
              ("frontend", "/api/orders", ("-X", "POST")),  # another method
              ("frontend", "/api/orders", ("-H", "x-evil: 1")),  # DENY wins over ALLOW
              ("admin", "/x", ("-H", "x-evil: 1", "--http2")),
              ("other", "/api/orders", ("--http2",))]
    for who, path, args in allowed:
        assert curl(t, certs, mesh_certs, who, path, *args)[0] == 200, (who, path, args)
    for who, path, args in denied:
        assert curl(t, certs, mesh_certs, who, path, *args) == (403, b"RBAC: access denied"), (who, path, args)
    # The app saw only what was allowed; every denial counted, the dry-run one allowed and counted apart.
    assert [r.path for r in up.requests] == [p for _, p, _ in allowed]
    assert metric(prom, "tern_authorization_denied_total") == len(denied)
    assert metric(prom, "tern_authorization_dry_run_denied_total") == 1
    # By the policy that decided: the DENY twice, no ALLOW matching for the rest; the dry run by its own name.
    assert metric(prom, "tern_authorization_policy_denied_total", policy="default/no-evil") == 2
    assert metric(prom, "tern_authorization_policy_denied_total", policy="(no ALLOW policy matched)") == len(denied) - 2
    assert metric(prom, "tern_authorization_policy_dry_run_denied_total", policy="default/would-deny-debug") == 1


def test_without_a_client_certificate_there_is_no_principal(start_tern, http_upstream, backend, certs, mesh_certs,
                                                            tmp_path):
    # Plaintext (no TLS on this inbound side): principals and namespaces cannot match; ipBlocks can.
    up = http_upstream()
    config = tmp_path / "policies.yaml"
    config.write_text(POLICIES + """\
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: local-health, namespace: default}
spec:
  rules:
  - from:
    - source: {ipBlocks: ["127.0.0.0/8"]}
    to:
    - operation: {paths: ["/healthz"]}
""")
    t = start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", backend,
                   "--cores", "1", "--config", str(config), "--labels", "app=backend")
    def plain(path):
        r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://127.0.0.1:{t.port}{path}"], capture_output=True, timeout=60)
        return int(r.stdout)
    assert plain("/api/orders") == 403
    assert plain("/healthz") == 200
    assert [r.path for r in up.requests] == ["/healthz"]


def test_a_changed_policy_file_applies_to_new_requests(start_tern, http_upstream, backend, certs, mesh_certs, tmp_path):
    up = http_upstream()
    t, prom, config = inbound(start_tern, up, backend, certs, mesh_certs, tmp_path)
    assert curl(t, certs, mesh_certs, "other", "/api/orders")[0] == 403
    config.write_text(POLICIES.replace("sa/frontend", "sa/other"))
    wait_until(lambda: metric(prom, "tern_config_applied_total") == 2, "the new policy applied")
    assert curl(t, certs, mesh_certs, "other", "/api/orders")[0] == 200
    assert curl(t, certs, mesh_certs, "frontend", "/api/orders")[0] == 403
    # A policy file Tern refuses leaves the last one serving.
    config.write_text(POLICIES.replace("action: DENY", "action: DENIED"))
    wait_until(lambda: metric(prom, "tern_config_rejected_total") == 1, "the bad policy refused")
    assert curl(t, certs, mesh_certs, "other", "/api/orders")[0] == 200
    t.stop()
    t.rest()
    assert "policies.yaml:" in t.log() and "spec.action: unknown value" in t.log(), t.log()[-2000:]


def peer_authentication(spec):
    return f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: pa, namespace: default}}
spec:
{spec}
"""


def status(args):
    """curl's HTTP status, or None when the connection failed (a TLS handshake refused, a plaintext reply to TLS)."""
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", *args],
                       capture_output=True, timeout=60)
    return int(r.stdout) if r.returncode == 0 else None


@pytest.mark.parametrize("mode, tls_ok, plain_ok", [("STRICT", True, False), ("PERMISSIVE", True, True),
                                                    ("DISABLE", False, True)])
def test_peer_authentication_decides_tls_or_plaintext(start_tern, http_upstream, backend, certs, mesh_certs, tmp_path,
                                                      mode, tls_ok, plain_ok):
    # On an inbound side with a certificate: STRICT takes TLS (mTLS) only, DISABLE plaintext only, PERMISSIVE (and
    # no policy at all) both, told apart by the first bytes.
    up = http_upstream()
    t, _, _ = inbound(start_tern, up, backend, certs, mesh_certs, tmp_path,
                      peer_authentication(f"  mtls: {{mode: {mode}}}"))
    mtls = ["--cacert", os.path.join(certs, "ca.crt"), "--cert", str(mesh_certs / "frontend" / "cert-chain.pem"),
            "--key", str(mesh_certs / "frontend" / "key.pem"), f"https://localhost:{t.port}/tls"]
    assert status(mtls) == (200 if tls_ok else None)
    assert status([f"http://127.0.0.1:{t.port}/plain"]) == (200 if plain_ok else None)
    assert status(["--http2", *mtls]) == (200 if tls_ok else None)
    assert status(["--http2-prior-knowledge", f"http://127.0.0.1:{t.port}/plain2"]) == (200 if plain_ok else None)
    want = (["/tls"] if tls_ok else []) + (["/plain"] if plain_ok else []) + (["/tls"] if tls_ok else []) + (["/plain2"] if plain_ok else [])
    assert [r.path for r in up.requests] == want


def test_port_level_mtls_and_strict_without_a_certificate(start_tern, http_upstream, backend, certs, mesh_certs, tmp_path):
    up = http_upstream()
    # The workload is STRICT but the app's port PERMISSIVE (portLevelMtls names the app's port).
    spec = f"  selector:\n    matchLabels: {{app: backend}}\n  mtls: {{mode: STRICT}}\n  portLevelMtls:\n    {up.port}: {{mode: PERMISSIVE}}"
    t, _, _ = inbound(start_tern, up, backend, certs, mesh_certs, tmp_path, peer_authentication(spec))
    assert status([f"http://127.0.0.1:{t.port}/plain"]) == 200
    # STRICT with no certificate to offer: every connection closed at once, counted; the app sees nothing.
    up2 = http_upstream()
    config = tmp_path / "strict.yaml"
    config.write_text(peer_authentication("  mtls: {mode: STRICT}"))
    prom = dead_port()
    t2 = start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", up2.address, "--io-backend", backend,
                    "--cores", "1", "--config", str(config), "--prometheus", f"127.0.0.1:{prom}")
    assert status([f"http://127.0.0.1:{t2.port}/x"]) is None
    assert metric(prom, "tern_peer_authentication_refused_total") == 1 and up2.requests == []


def test_hosts_server_name_and_destination_address(start_tern, http_upstream, backend, certs, mesh_certs, tmp_path):
    # `hosts` is the authority the request goes to (an absolute-form target's overrides Host); `connection.sni` the
    # TLS server name; `destination.ip` the address the connection was made to.
    up = http_upstream()
    extra = """\
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge, namespace: default}
spec:
  action: DENY
  rules:
  - to:
    - operation: {hosts: ["admin.internal"]}
  - when:
    - key: connection.sni
      values: ["blocked.test"]
  - to:
    - operation: {paths: ["/dest"]}
    when:
    - key: destination.ip
      values: ["127.0.0.0/8"]
"""
    t, _, _ = inbound(start_tern, up, backend, certs, mesh_certs, tmp_path, POLICIES + extra)
    ops = ["--cert", str(mesh_certs / "admin" / "cert-chain.pem"), "--key", str(mesh_certs / "admin" / "key.pem")]
    base = ["--cacert", os.path.join(certs, "ca.crt"), *ops]
    assert status([*base, f"https://localhost:{t.port}/ok"]) == 200
    assert status([*base, "-H", "Host: admin.internal", f"https://localhost:{t.port}/x"]) == 403
    assert status([*base, "--http1.1", "--request-target", "http://admin.internal/x", "-H", "Host: public", f"https://localhost:{t.port}/"]) == 403
    assert status(["-k", *ops, "--resolve", f"blocked.test:{t.port}:127.0.0.1", f"https://blocked.test:{t.port}/x"]) == 403
    assert status(["-k", *ops, "--resolve", f"other.test:{t.port}:127.0.0.1", f"https://other.test:{t.port}/x"]) == 200
    assert status([*base, f"https://localhost:{t.port}/dest"]) == 403
    assert [r.path for r in up.requests] == ["/ok", "/x"]


def test_an_inbound_side_takes_http_listeners_only():
    # AuthorizationPolicy on TCP connections is not enforced yet: refused rather than silently not applied.
    r = subprocess.run([tern_bin(), "proxy", "--http", "--listen", "tcp:127.0.0.1:0", "--upstream", "127.0.0.1:9",
                        "--config", "/dev/null"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 64 and "HTTP listeners only" in r.stderr, r.stderr
