"""The seed's picture in network namespaces (issue 19): two "pods" joined by a veth pair (A 10.2.0.1, B 10.2.0.2),
each with its app and a Tern sidecar in one process running as uid 1337 (`--listen 0.0.0.0:15001` outbound,
`--inbound 0.0.0.0:15006` without `--inbound-app`), and `tern iptables` intercepting both ways. App A (another uid)
calls App B by its service name with plain HTTP; A's sidecar sends it over mutual TLS (B's endpoint is labelled
`security.istio.io/tlsMode: istio`), B's sidecar takes it by its original destination, applies B's policies and
hands it to App B from 127.0.0.6. A capture on A's end of the link sees TLS and never the request."""
import os
import shutil
import socket
import subprocess
import tempfile
import threading

import httpx
import pytest

from conftest import Tern
from http_peers import HttpUpstream
from test_iptables import PEER as B_IP, pod, tern_iptables  # noqa: F401 (a fixture)
from test_mesh import FRONTEND_ONLY, STRICT, ids  # noqa: F401 (a fixture)

APP_UID = 1000
PROXY_UID = 1337
HOST = "backend.mesh"

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: {ip}, labels: {{app: backend{label}}}, serviceAccount: backend}}
"""

DENY_EVIL = """\
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-evil, namespace: default}
spec:
  action: DENY
  rules:
  - when:
    - {key: "request.headers[x-evil]", values: ["1"]}
"""


class Capture:
    """Every frame on an interface of a namespace (AF_PACKET), read by a thread until `stop`."""

    def __init__(self, ns, interface):
        with ns.inside():
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((interface, 0))
        self.sock.settimeout(0.1)
        self.frames = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        while not self.stopping.is_set():
            try:
                self.frames.append(self.sock.recv(65535))
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()
        return b"".join(self.frames)


def private_copy(ids, name, work):
    """An identity the sidecar's uid can read (its key stays 0600, owned by that uid)."""
    d = os.path.join(work, name)
    shutil.copytree(ids / name, d)
    os.chmod(d, 0o755)
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)
        os.chown(os.path.join(d, f), PROXY_UID, PROXY_UID)
    os.chmod(os.path.join(d, "key.pem"), 0o600)
    return d


def sidecar(ns, backend, work, name, identity, config, *extra):
    """Tern as a pod's sidecar: uid 1337 in the pod's namespace, 15001 and 15006, Prometheus on 127.0.0.1:15090."""
    conf = os.path.join(work, name + "-config")
    os.makedirs(conf)
    os.chmod(conf, 0o755)
    with open(os.path.join(conf, "config.yaml"), "w") as f:
        f.write(config)
    os.chmod(os.path.join(conf, "config.yaml"), 0o644)
    return Tern(["--http", "--listen", "0.0.0.0:15001", "--inbound", "0.0.0.0:15006", "--config", conf,
                 "--identity-dir", identity, "--io-backend", backend, "--cores", "1", "--admin", "off",
                 "--health", "off", "--prometheus", "127.0.0.1:15090", "--labels", f"app={name}",
                 "--service-account", name, *extra],
                wrapper=("ip", "netns", "exec", ns.name, "setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}",
                         "--clear-groups"))


def app_call(ns, url, *args, uid=APP_UID):
    """App A's call: curl in its pod as `uid`, the service name resolved to B's address. (status, body)."""
    r = subprocess.run(["ip", "netns", "exec", ns.name, "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                        "curl", "-sS", "--noproxy", "*", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}",
                        "--resolve", f"{HOST}:{url.split(':')[2].split('/')[0]}:{B_IP}", *args, url],
                       capture_output=True, timeout=60)
    body, _, status = r.stdout.rpartition(b"\n")
    return int(status or b"0"), body


def metrics(ns):
    with ns.inside():
        return httpx.get("http://127.0.0.1:15090/stats/prometheus", timeout=10, trust_env=False).text


@pytest.fixture
def mesh(request, pod, ids, backend):
    """Pods A and B with their apps, sidecars and interception: (a, b, app_b, b_port). Pod B also runs an app
    outside the mesh, `outside` (a port `tern iptables -d` leaves alone, no ServiceEntry). A's sidecar gets the
    flags the test passes as the fixture's parameter."""
    a, b = pod
    work = tempfile.mkdtemp(prefix="tern-mesh-")
    os.chmod(work, 0o755)
    started = []
    with b.inside():
        app_b = HttpUpstream(B_IP)
        outside = HttpUpstream(B_IP)
    try:
        port = app_b.port
        config_a = SERVICE.format(host=HOST, port=port, ip=B_IP, label=", security.istio.io/tlsMode: istio")
        config_b = STRICT + FRONTEND_ONLY + DENY_EVIL
        started.append(sidecar(a, backend, work, "frontend", private_copy(ids, "frontend", work), config_a,
                               *getattr(request, "param", [])))
        started.append(sidecar(b, backend, work, "backend", private_copy(ids, "backend", work), config_b))
        tern_iptables(a)
        tern_iptables(b, "-d", str(outside.port))
        app_b.outside = outside
        yield a, b, app_b, port
    finally:
        for t in started:
            t.stop()
        app_b.stop()
        outside.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_app_a_calls_app_b_over_mutual_tls_and_the_link_carries_only_tls(mesh):
    a, b, app_b, port = mesh
    capture = Capture(a, "pod0")
    try:
        status, _ = app_call(a, f"http://{HOST}:{port}/api/orders-ZEBRA-MARKER")
    finally:
        link = capture.stop()
    assert status == 200
    assert app_b.paths() == ["/api/orders-ZEBRA-MARKER"]
    seen = app_b.requests[0]
    # B's sidecar handed it on from 127.0.0.6, with A's identity.
    assert seen.header_values("x-forwarded-client-cert")[0].endswith(";URI=spiffe://cluster.local/ns/default/sa/frontend")
    assert app_b.connections[0].peer[0] == "127.0.0.6"
    # The link saw the connection's TLS records, and never the request itself.
    assert b"ZEBRA-MARKER" not in link and b"GET /api" not in link
    assert b"\x16\x03\x01" in link and b"\x17\x03\x03" in link
    assert 'tern_tls_handshakes_total{side="upstream"} 1' in metrics(a)
    assert 'tern_tls_handshakes_total{side="downstream"} 1' in metrics(b)


def test_policies_of_b_decide_and_b_sees_nothing_denied(mesh):
    a, b, app_b, port = mesh
    assert app_call(a, f"http://{HOST}:{port}/admin") == (403, b"RBAC: access denied")
    assert app_call(a, f"http://{HOST}:{port}/api/../admin") == (403, b"RBAC: access denied")
    assert app_call(a, f"http://{HOST}:{port}/api/x", "-H", "x-evil: 1") == (403, b"RBAC: access denied")
    assert app_call(a, f"http://{HOST}:{port}/api/x", "-X", "POST")[0] == 403
    assert app_b.paths() == []
    assert "tern_authorization_denied_total 4" in metrics(b)


def test_plaintext_that_bypasses_a_sidecar_is_refused_by_strict(mesh):
    """A process of pod A running as the proxy's uid is not intercepted: its plaintext reaches B's sidecar, whose
    PeerAuthentication is STRICT, and never App B."""
    a, b, app_b, port = mesh
    status, _ = app_call(a, f"http://{HOST}:{port}/api/sneak", uid=PROXY_UID)
    assert status == 0
    assert app_b.paths() == []


def test_a_host_no_service_names_passes_through_under_allow_any(mesh):
    """Istio's default outboundTrafficPolicy, ALLOW_ANY: App A's call to an address and Host no ServiceEntry names
    goes on from A's sidecar to where it was going (plaintext: nothing says the destination has a sidecar)."""
    a, b, app_b, port = mesh
    outside = app_b.outside
    assert app_call(a, f"http://{B_IP}:{outside.port}/outside")[0] == 200
    assert outside.paths() == ["/outside"]
    assert app_b.paths() == []


@pytest.mark.parametrize("mesh", [["--outbound-traffic-policy", "REGISTRY_ONLY"]], indirect=True)
def test_registry_only_answers_502_for_a_host_no_service_names(mesh):
    """REGISTRY_ONLY: the same call is answered 502 by A's sidecar, and nothing reaches the outside app; calls to
    the mesh's own services still work."""
    a, b, app_b, port = mesh
    outside = app_b.outside
    assert app_call(a, f"http://{B_IP}:{outside.port}/outside")[0] == 502
    assert outside.paths() == []
    assert app_call(a, f"http://{HOST}:{port}/api/in-registry")[0] == 200


def test_a_sidecars_outbound_listener_serves_no_one_else(mesh):
    """Another host reaching A's outbound listener (15001) straight, here B's own uid 1337 bypassing B's rules,
    must not get its requests sent on under A's identity: refused (Istio blackholes 15001), and App B sees nothing."""
    a, b, app_b, port = mesh
    r = subprocess.run(["ip", "netns", "exec", b.name, "setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}",
                        "--clear-groups", "curl", "-sS", "--noproxy", "*", "--max-time", "20", "-o", "/dev/null",
                        "-w", "%{http_code}", "-H", f"Host: {HOST}:{port}", "http://10.2.0.1:15001/api/deputy"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout != "200", r.stdout
    assert app_b.paths() == []
    assert "\ntern_outbound_direct_refused_total 1\n" in metrics(a)
