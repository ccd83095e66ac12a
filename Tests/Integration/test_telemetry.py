"""Istio's standard metrics, read with prometheus_client's own text parser after known traffic, and the admin,
health and Prometheus listeners of `tern proxy` (issue 6)."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Tern, tern_bin
from http_peers import HttpUpstream, TunnelEcho
from peers import dead_port

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: cart, namespace: shop}}
spec:
  hosts: [cart]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {cart}}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: gone, namespace: shop}}
spec:
  hosts: [gone]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {closed}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cart, namespace: shop}}
spec:
  hosts: [cart]
  http:
  - route: [{{destination: {{host: cart}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: gone, namespace: shop}}
spec:
  hosts: [gone]
  http:
  - route: [{{destination: {{host: gone}}}}]
"""

BUCKETS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000,
           3600000]


def side_ports():
    """Three free loopback ports for --admin, --health and --prometheus."""
    return [dead_port() for _ in range(3)]


def side_args(ports):
    admin, health, prom = ports
    return ["--admin", f"127.0.0.1:{admin}", "--health", f"127.0.0.1:{health}", "--prometheus", f"127.0.0.1:{prom}"]


def get(port, path, method="GET"):
    r = httpx.request(method, f"http://127.0.0.1:{port}{path}", timeout=10)
    return r.status_code, r.text


def families(port):
    status, text = get(port, "/stats/prometheus")
    assert status == 200
    assert text.endswith("\n")
    return {f.name: f for f in text_string_to_metric_families(text)}


def bucket(fams, name, le, **labels):
    """The cumulative count of histogram `name` at bound `le`."""
    return next(s.value for s in samples(fams, name + "_bucket", **labels) if float(s.labels["le"]) == le)


def samples(fams, name, **labels):
    out = []
    for f in fams.values():
        for s in f.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out.append(s)
    return out


@pytest.fixture
def mesh(tmp_path, backend):
    cart = HttpUpstream()
    path = tmp_path / "mesh.yaml"
    path.write_text(MESH.format(cart=cart.port, closed=dead_port()))
    ports = side_ports()
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "2", "--io-backend", backend,
              "--workload", "frontend", "--namespace", "shop", *side_args(ports)])
    yield t, cart, path, ports
    t.stop()
    cart.stop()


def test_counts_per_code_and_flag_are_exact_and_histograms_cumulative(mesh):
    """20 successes, 7 404 NR (no virtual host), 5 503 UF (endpoint closed), over new and kept-alive
    connections on both reactors: each is exactly one istio_requests_total increment with the right labels,
    and every histogram's buckets are cumulative, end in +Inf equal to _count, which equals the requests."""
    t, cart, _, (_, _, prom) = mesh
    with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", timeout=10) as c:
        for i in range(10):
            assert c.get("/item", headers={"Host": "cart"}).status_code == 200
        for i in range(7):
            assert c.get("/x", headers={"Host": "nowhere"}).status_code == 404
        for i in range(5):
            assert c.get("/x", headers={"Host": "gone"}).status_code == 503
    for i in range(10):
        assert httpx.get(f"http://127.0.0.1:{t.port}/item", headers={"Host": "cart.shop"}, timeout=10).status_code == 200
    fams = families(prom)
    ok = samples(fams, "istio_requests_total", response_code="200")
    assert len(ok) == 1 and ok[0].value == 20
    labels = ok[0].labels
    assert labels["reporter"] == "source"
    assert labels["source_workload"] == "frontend" and labels["source_workload_namespace"] == "shop"
    assert labels["destination_service"] == "cart.shop.svc.cluster.local"
    assert labels["destination_service_name"] == "cart" and labels["destination_service_namespace"] == "shop"
    assert labels["request_protocol"] == "http" and labels["response_flags"] == "-"
    assert labels["destination_workload"] == "unknown" and labels["connection_security_policy"] == "unknown"
    nr = samples(fams, "istio_requests_total", response_code="404")
    assert len(nr) == 1 and nr[0].value == 7 and nr[0].labels["response_flags"] == "NR"
    assert nr[0].labels["destination_service"] == "unknown"
    uf = samples(fams, "istio_requests_total", response_code="503")
    # Istio's default retries (2 on connect-failure) run out first: Envoy's flags are UF,URX.
    assert len(uf) == 1 and uf[0].value == 5 and uf[0].labels["response_flags"] == "UF,URX"
    assert uf[0].labels["destination_service_name"] == "gone"
    for name in ("istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"):
        assert fams[name].type == "histogram"
        for code, n in (("200", 20), ("404", 7), ("503", 5)):
            buckets = samples(fams, name + "_bucket", response_code=code)
            bounds = [float(b.labels["le"]) for b in buckets]
            assert bounds == BUCKETS + [float("inf")]
            values = [b.value for b in buckets]
            assert values == sorted(values), f"{name} buckets not cumulative: {values}"
            assert values[-1] == n
            assert samples(fams, name + "_count", response_code=code)[0].value == n
    # Request bytes: each request head arrives whole (GET, no body): at least 30 bytes each, and the byte
    # histogram puts none at or below 10.
    req_sum = samples(fams, "istio_request_bytes_sum", response_code="200")[0].value
    assert req_sum >= 20 * 30
    assert bucket(fams, "istio_request_bytes", 10, response_code="200") == 0
    # Response bytes: a 503 UF reply is its head plus Envoy's 91-byte body.
    uf_bytes = samples(fams, "istio_response_bytes_sum", response_code="503")[0].value
    assert uf_bytes > 5 * 91
    # Loopback requests take well under 10 s each.
    assert bucket(fams, "istio_request_duration_milliseconds", 10000, response_code="200") == 20


def test_request_body_and_large_response_bytes(mesh):
    """A 100 KiB upload and a 1 MiB download (spliced bodies included) are counted in the size histograms."""
    t, cart, _, (_, _, prom) = mesh
    body = b"x" * (100 * 1024)
    r = httpx.post(f"http://127.0.0.1:{t.port}/sha256", headers={"Host": "cart"}, content=body, timeout=10)
    assert r.status_code == 200
    r = httpx.get(f"http://127.0.0.1:{t.port}/bytes/1048576", headers={"Host": "cart"}, timeout=10)
    assert r.status_code == 200 and len(r.content) == 1048576
    fams = families(prom)
    assert samples(fams, "istio_request_bytes_sum", response_code="200")[0].value >= len(body)
    assert samples(fams, "istio_response_bytes_sum", response_code="200")[0].value >= 1048576
    assert samples(fams, "istio_requests_total", response_code="200")[0].value == 2


def test_tern_own_metrics_and_config_counts(mesh):
    """Loop iterations, completions, submissions and connections per reactor; config version 1 applied,
    then a rejected file and an applied one change the counts; /config_dump follows."""
    t, cart, path, (admin, _, prom) = mesh
    assert httpx.get(f"http://127.0.0.1:{t.port}/", headers={"Host": "cart"}, timeout=10).status_code == 200
    fams = families(prom)
    for name in ("tern_reactor_loop_iterations", "tern_reactor_completions", "tern_reactor_submissions"):
        values = samples(fams, name + "_total")
        assert [s.labels["reactor"] for s in values] == ["0", "1"]
        assert sum(s.value for s in values) > 0
    # The one upstream connection went back to its reactor's pool.
    deadline = time.time() + 5
    while time.time() < deadline and sum(s.value for s in samples(fams, "tern_upstream_idle_connections")) != 1:
        time.sleep(0.05)
        fams = families(prom)
    assert sum(s.value for s in samples(fams, "tern_upstream_idle_connections")) == 1
    assert sum(s.value for s in samples(fams, "tern_upstream_connections")) == 1
    assert samples(fams, "tern_config_version")[0].value == 1
    assert samples(fams, "tern_config_applied_total")[0].value == 1
    assert samples(fams, "tern_config_rejected_total")[0].value == 0
    status, dump = get(admin, "/config_dump")
    doc = json.loads(dump)
    assert doc["version"] == 1
    # Rendered when asked, but last_updated is when the configuration was applied, not when it was asked for.
    time.sleep(0.01)
    assert json.loads(get(admin, "/config_dump")[1])["last_updated"] == doc["last_updated"]
    kinds = sorted((r["kind"], r["name"]) for r in doc["resources"])
    assert kinds == [("ServiceEntry", "cart"), ("ServiceEntry", "gone"), ("VirtualService", "cart"), ("VirtualService", "gone")]
    se = next(r for r in doc["resources"] if r["kind"] == "ServiceEntry" and r["name"] == "cart")
    assert se["resource"]["spec"]["hosts"] == ["cart"] and se["namespace"] == "shop" and se["line"] == 1
    assert any(c["name"].startswith("outbound|80||cart.shop.svc.cluster.local") for c in doc["clusters"])

    # A broken file is rejected (by the file watcher, the SIGHUP, or both): version 1 keeps serving.
    good = path.read_text()
    path.write_text(good.replace("hosts: [cart]\n  http:", "hosts: [cart]\n  htp:"))
    t.signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and samples(families(prom), "tern_config_rejected_total")[0].value < 1:
        time.sleep(0.05)
    fams = families(prom)
    assert samples(fams, "tern_config_rejected_total")[0].value >= 1
    assert samples(fams, "tern_config_version")[0].value == 1
    assert json.loads(get(admin, "/config_dump")[1])["version"] == 1
    # The good file again: a new version, and /config_dump shows the same.
    path.write_text(good)
    t.signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and samples(families(prom), "tern_config_version")[0].value < 2:
        time.sleep(0.05)
    time.sleep(0.5)  # the watcher's debounced reload may follow the SIGHUP's
    fams = families(prom)
    version = samples(fams, "tern_config_version")[0].value
    assert version >= 2
    assert samples(fams, "tern_config_applied_total")[0].value == version
    assert json.loads(get(admin, "/config_dump")[1])["version"] == version


def test_metrics_off_records_nothing(tmp_path, backend):
    up = HttpUpstream()
    ports = side_ports()
    t = Tern(["--http", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{up.port}", "--io-backend", backend,
              "--metrics", "off", *side_args(ports)])
    try:
        assert httpx.get(f"http://127.0.0.1:{t.port}/", timeout=10).status_code == 200
        fams = families(ports[2])
        assert samples(fams, "istio_requests_total") == []
        assert "istio_requests" in fams  # the family is declared (the parser drops "_total"), with no series
    finally:
        t.stop()
        up.stop()


def test_upstream_mode_reports_as_destination(backend):
    up = HttpUpstream()
    ports = side_ports()
    t = Tern(["--http", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{up.port}", "--io-backend", backend,
              "--workload", "reviews-v1", *side_args(ports)])
    try:
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{t.port}/status/500", timeout=10).status_code == 500
        s = samples(families(ports[2]), "istio_requests_total")
        assert len(s) == 1 and s[0].value == 3
        assert s[0].labels["reporter"] == "destination" and s[0].labels["response_code"] == "500"
        assert s[0].labels["destination_workload"] == "reviews-v1" and s[0].labels["source_workload"] == "unknown"
        assert s[0].labels["connection_security_policy"] == "none"
    finally:
        t.stop()
        up.stop()


def test_active_connections_count_http_connections_and_tunnels_alike(backend):
    """tern_active_connections in HTTP mode is the reactor's open client connections: HTTP keep-alive ones and
    the CONNECT tunnels handed to the splice relay alike, whichever of them changed last (the relay once wrote
    its own count over the HTTP side's)."""
    up = TunnelEcho()
    ports = side_ports()
    t = Tern(["--http", "--listen", "127.0.0.1:0", "--upstream", up.address, "--cores", "1",
              "--io-backend", backend, *side_args(ports)])

    def active():
        return sum(s.value for s in samples(families(ports[2]), "tern_active_connections"))

    def settles_at(n):
        deadline = time.time() + 10
        while active() != n and time.time() < deadline:
            time.sleep(0.02)
        return active()

    def tunnel():
        s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        s.sendall(f"CONNECT {up.address} HTTP/1.1\r\nHost: {up.address}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = s.recv(4096)
            assert data, head
            head += data
        assert head.startswith(b"HTTP/1.1 200"), head
        s.sendall(b"ping")
        assert s.recv(16) == b"ping"
        return s

    try:
        keep = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        assert settles_at(1) == 1
        a, b = tunnel(), tunnel()
        assert settles_at(3) == 3
        b.close()
        assert settles_at(2) == 2
        keep.close()
        assert settles_at(1) == 1
        a.close()
        assert settles_at(0) == 0
    finally:
        t.stop()
        up.stop()


def test_refused_and_abandoned_requests_are_counted(backend):
    """A request refused at its head (400) and one whose client leaves in the middle of its body (DC, code 0)
    are requests too."""
    up = HttpUpstream()
    ports = side_ports()
    t = Tern(["--http", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{up.port}", "--io-backend", backend,
              *side_args(ports)])
    try:
        with socket.create_connection(("127.0.0.1", t.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 400")
        with socket.create_connection(("127.0.0.1", t.port), timeout=5) as s:
            s.sendall(b"POST /sha256 HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
            time.sleep(0.2)
        deadline = time.time() + 5
        while time.time() < deadline and not samples(families(ports[2]), "istio_requests_total", response_code="0"):
            time.sleep(0.05)
        fams = families(ports[2])
        bad = samples(fams, "istio_requests_total", response_code="400")
        assert len(bad) == 1 and bad[0].value == 1 and bad[0].labels["response_flags"] == "DPE"
        gone = samples(fams, "istio_requests_total", response_code="0")
        assert len(gone) == 1 and gone[0].value == 1 and gone[0].labels["response_flags"] == "DC"
    finally:
        t.stop()
        up.stop()


def test_tcp_connections_and_bytes(backend):
    """The TCP relay: connections opened and closed, bytes each way as seen from the downstream."""
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen(8)

    def serve():
        for _ in range(3):
            c, _ = echo.accept()
            with c:
                data = c.recv(100)
                c.sendall(data * 2)
    threading.Thread(target=serve, daemon=True).start()
    ports = side_ports()
    t = Tern(["--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{echo.getsockname()[1]}", "--io-backend", backend,
              *side_args(ports)])
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", t.port), timeout=5) as s:
                s.sendall(b"hello")
                got = b""
                while len(got) < 10:
                    chunk = s.recv(100)
                    if not chunk:
                        break
                    got += chunk
                assert got == b"hellohello"
        deadline = time.time() + 5
        while time.time() < deadline:
            fams = families(ports[2])
            closed = samples(fams, "istio_tcp_connections_closed_total")
            if closed and closed[0].value == 3:
                break
            time.sleep(0.05)
        assert samples(fams, "istio_tcp_connections_opened_total")[0].value == 3
        assert samples(fams, "istio_tcp_connections_closed_total")[0].value == 3
        assert samples(fams, "istio_tcp_received_bytes_total")[0].value == 15
        assert samples(fams, "istio_tcp_sent_bytes_total")[0].value == 30
        assert samples(fams, "istio_tcp_sent_bytes_total")[0].labels["request_protocol"] == "tcp"
    finally:
        t.stop()
        echo.close()


def test_admin_endpoints(mesh):
    t, cart, _, (admin, health, prom) = mesh
    status, body = get(admin, "/ready")
    assert (status, body) == (200, "LIVE\n")
    assert get(health, "/healthz/ready")[0] == 200
    assert get(health, "/stats/prometheus")[0] == 404
    assert get(prom, "/ready")[0] == 404
    info = json.loads(get(admin, "/server_info")[1])
    assert info["state"] == "LIVE" and info["cores"] == 2 and info["io_backend"] in ("io_uring", "epoll")
    assert info["ring_depth"] == 1024 and info["uptime_current_epoch"].endswith("s") and info["version"]
    listeners = json.loads(get(admin, "/listeners?format=json")[1])["listener_statuses"]
    names = [l["name"] for l in listeners]
    assert names == ["http", "admin", "health", "prometheus"]
    assert listeners[0]["local_address"] == f"127.0.0.1:{t.port}"
    assert f"http::127.0.0.1:{t.port}" in get(admin, "/listeners")[1]
    status, text = get(admin, "/stats")
    assert status == 200 and "tern_config_version: 1" in text
    status, text = get(admin, "/stats?filter=^tern_config")
    assert text.splitlines() == ["tern_config_applied_total: 1", "tern_config_rejected_total: 0", "tern_config_version: 1"]
    stats = json.loads(get(admin, "/stats?format=json&filter=config_version")[1])["stats"]
    assert stats == [{"name": "tern_config_version", "value": 1}]
    assert "istio_requests_total" in get(admin, "/stats?format=prometheus")[1]
    assert "istio_requests_total" in get(admin, "/stats/prometheus")[1]
    assert get(admin, "/nope")[0] == 404
    assert "/config_dump" in get(admin, "/help")[1]
    # Mutations must be POSTs: a GET changes nothing.
    for path in ("/quitquitquit", "/drain_listeners", "/healthcheck/fail", "/logging?level=debug"):
        assert get(admin, path)[0] == 400
    assert t.proc.poll() is None
    assert "tern: info" in get(admin, "/logging")[1]
    assert get(admin, "/logging?level=debug", "POST")[0] == 200
    assert "tern: debug" in get(admin, "/logging")[1]
    assert get(admin, "/logging?level=loud", "POST")[0] == 400
    # Health check forced to fail and back.
    assert get(admin, "/healthcheck/fail", "POST")[0] == 200
    assert get(health, "/healthz/ready")[0] == 503
    assert get(admin, "/healthcheck/ok", "POST")[0] == 200
    assert get(health, "/healthz/ready")[0] == 200
    # A malformed request line, or a head the proxy's parser refuses (whitespace before a colon, an
    # absolute-form target), gets 400 and the listener keeps serving.
    for bad in (b"BAD\r\n\r\n", b"GET /ready HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
                b"GET http://a/ready HTTP/1.1\r\nHost: a\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
            s.sendall(bad)
            assert s.recv(100).startswith(b"HTTP/1.1 400"), bad
    assert get(admin, "/ready")[0] == 200


def test_clusters_show_endpoints_and_active_requests(mesh):
    t, cart, _, (admin, _, _) = mesh
    done = threading.Event()

    def slow():
        httpx.get(f"http://127.0.0.1:{t.port}/delay/1500", headers={"Host": "cart"}, timeout=10)
        done.set()
    threading.Thread(target=slow, daemon=True).start()
    host = f"127.0.0.1:{cart.port}"
    deadline = time.time() + 5
    text = ""
    while time.time() < deadline:
        text = get(admin, "/clusters")[1]
        if f"::{host}::rq_active::1" in text:
            break
        time.sleep(0.05)
    assert f"outbound|80||cart.shop.svc.cluster.local::{host}::rq_active::1" in text
    assert f"::{host}::cx_active::1" in text and "::health_flags::healthy" in text
    clusters = json.loads(get(admin, "/clusters?format=json")[1])["cluster_statuses"]
    cart_cluster = next(c for c in clusters if c["name"].endswith("cart.shop.svc.cluster.local"))
    stats = {s["name"]: s["value"] for s in cart_cluster["host_statuses"][0]["stats"]}
    assert stats["rq_active"] == 1
    assert done.wait(10)
    deadline = time.time() + 5
    while time.time() < deadline and f"::{host}::rq_active::0" not in get(admin, "/clusters")[1]:
        time.sleep(0.05)
    assert f"::{host}::rq_active::0" in get(admin, "/clusters")[1]


def test_drain_listeners_and_quitquitquit(backend):
    up = HttpUpstream()
    ports = side_ports()
    t = Tern(["--http", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{up.port}", "--io-backend", backend,
              *side_args(ports)])
    try:
        assert httpx.get(f"http://127.0.0.1:{t.port}/", timeout=10).status_code == 200
        assert get(ports[0], "/drain_listeners", "POST")[0] == 200
        assert get(ports[0], "/ready") == (503, "DRAINING\n")
        assert get(ports[1], "/healthz/ready")[0] == 503
        deadline = time.time() + 5
        refused = False
        while time.time() < deadline and not refused:
            try:
                socket.create_connection(("127.0.0.1", t.port), timeout=1).close()
                time.sleep(0.05)
            except (ConnectionRefusedError, ConnectionResetError):  # reset: caught in the closing backlog
                refused = True
        assert refused, "the listener still accepts after /drain_listeners"
        assert t.proc.poll() is None  # the admin side keeps running
        assert get(ports[0], "/quitquitquit", "POST")[0] == 200
        assert t.wait(10) == 0
        assert "admin: /quitquitquit" in t.log()
    finally:
        t.stop()
        up.stop()


def test_admin_refuses_what_a_browser_may_be_made_to_send():
    """A page in a browser on the node must not change the proxy through its admin listener: a POST with a
    foreign Origin or a cross-site Sec-Fetch-Site is refused with 403 and changes nothing; any request whose
    Host is a DNS name (a rebound one) is refused too. What tools send (no Origin, Host 127.0.0.1 or localhost,
    a loopback Origin) still works, as a preStop hook's `curl -X POST 127.0.0.1:15000/quitquitquit` must."""
    up = HttpUpstream()
    ports = side_ports()
    admin, health = ports[0], ports[1]
    t = Tern(["--http", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{up.port}", *side_args(ports)])
    base = f"http://127.0.0.1:{admin}"

    def post(path, **headers):
        return httpx.post(base + path, headers=headers, timeout=10)
    try:
        refused = [
            post("/healthcheck/fail", Origin="http://evil.example"),
            post("/healthcheck/fail", Origin="null"),
            post("/healthcheck/fail", Origin="http://127.0.0.1.evil.example:15000"),
            post("/healthcheck/fail", **{"Sec-Fetch-Site": "cross-site"}),
            post("/healthcheck/fail", **{"Sec-Fetch-Site": "same-site"}),
            post("/healthcheck/fail", Host="rebound.example:15000"),
            post("/quitquitquit", Origin="https://evil.example"),
            httpx.get(base + "/config_dump", headers={"Host": "rebound.example"}, timeout=10),
        ]
        assert [r.status_code for r in refused] == [403] * len(refused), [(r.status_code, r.text) for r in refused]
        assert get(health, "/healthz/ready")[0] == 200, "a refused request changed readiness"
        assert t.proc.poll() is None, "a refused /quitquitquit stopped the proxy"
        # What tools send.
        assert httpx.get(base + "/config_dump", headers={"Host": f"localhost:{admin}"}, timeout=10).status_code == 200
        assert post("/healthcheck/fail").status_code == 200
        assert get(health, "/healthz/ready")[0] == 503
        assert post("/healthcheck/ok", Origin=f"http://localhost:{admin}", **{"Sec-Fetch-Site": "same-origin"}).status_code == 200
        assert get(health, "/healthz/ready")[0] == 200
        assert post("/healthcheck/fail", Origin="http://[::1]:8080").status_code == 200
        assert post("/healthcheck/ok", Host=f"[::1]:{admin}").status_code == 200
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                            f"http://127.0.0.1:{admin}/quitquitquit"], capture_output=True, timeout=20)
        assert r.stdout == b"200"
        assert t.wait(10) == 0
    finally:
        t.stop()
        up.stop()


def test_side_listeners_answer_probes_beside_hundreds_of_idle_and_slow_connections():
    """200 connections sit on each of the admin, health and Prometheus ports (150 idle, 50 with half a head),
    more than a side listener holds (64): the oldest are closed to admit new ones (counted), and every
    readiness probe, scrape and admin request is answered (within kubelet's 1 s, where one slow connection at a
    time used to hold each port for 2 s)."""
    up = HttpUpstream()
    ports = side_ports()
    admin, health, prom = ports
    t = Tern(["--http", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{up.port}", *side_args(ports)])
    held = []
    try:
        for port in ports:
            for i in range(200):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                if i % 4 == 0:
                    s.sendall(b"GET /healthz/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                held.append(s)
        for _ in range(5):
            assert httpx.get(f"http://127.0.0.1:{health}/healthz/ready", timeout=5).status_code == 200
            assert httpx.get(f"http://127.0.0.1:{prom}/stats/prometheus", timeout=5).status_code == 200
            assert httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=5).status_code == 200
        evicted = samples(families(prom), "tern_side_connections_evicted_total")[0].value
        assert evicted >= 3 * (200 - 64), evicted
    finally:
        for s in held:
            s.close()
        t.stop()
        up.stop()


def test_readiness_turns_503_before_draining_on_sigterm(backend):
    up = HttpUpstream()
    ports = side_ports()
    t = Tern(["--http", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{up.port}", "--io-backend", backend,
              "--drain-timeout", "3s", *side_args(ports)])
    try:
        assert get(ports[1], "/healthz/ready")[0] == 200
        # An exchange in flight keeps the process draining for a while.
        s = socket.create_connection(("127.0.0.1", t.port), timeout=5)
        s.sendall(b"GET /delay/2000 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.2)
        t.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert t.proc.poll() is None
        assert get(ports[1], "/healthz/ready")[0] == 503
        assert get(ports[0], "/ready") == (503, "DRAINING\n")
        assert s.recv(1000).startswith(b"HTTP/1.1 200")  # the in-flight request still finishes
        s.close()
        assert t.wait(10) == 0
    finally:
        t.stop()
        up.stop()


def test_side_listener_address_conflicts(backend):
    """A taken default address is a warning and Tern serves on; a taken explicit one is fatal and named."""
    up = HttpUpstream()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    try:
        code = subprocess.run([tern_bin(), "proxy", "--http", "--listen", "127.0.0.1:0", "--upstream",
                               f"127.0.0.1:{up.port}", "--admin", f"127.0.0.1:{taken}", "--health", "off",
                               "--prometheus", "off", "--io-backend", backend],
                              capture_output=True, timeout=20)
        assert code.returncode == 1
        assert f"127.0.0.1:{taken}" in code.stderr.decode() and "--admin" in code.stderr.decode()
        # The default admin address taken (by this test, or by anything else): a warning, and Tern serves on.
        default = socket.socket()
        try:
            default.bind(("127.0.0.1", 15000))
            default.listen(1)
        except OSError:
            pass  # already taken by someone else: just as good
        try:
            t = Tern(["--http", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{up.port}", "--health", "off",
                      "--prometheus", "off", "--io-backend", backend])
            try:
                assert httpx.get(f"http://127.0.0.1:{t.port}/", timeout=10).status_code == 200
            finally:
                t.stop()
            log = t.log()
            assert "cannot listen on 127.0.0.1:15000 for --admin" in log and "running without it" in log
            assert "listening kind=admin" not in log
        finally:
            default.close()
    finally:
        holder.close()
        up.stop()


@pytest.mark.parametrize("args", [
    ["--admin", "nowhere"], ["--health", "1.2.3.4"], ["--prometheus", "127.0.0.1:99999"], ["--metrics", "maybe"],
    ["--reporter", "both"], ["--trace-sampling", "101"], ["--access-log-format", "xml"], ["--access-log", ""],
    ["--trace-collector", "ftp://x"],
])
def test_bad_telemetry_flags_exit_64(args):
    r = subprocess.run([tern_bin(), "proxy", "--http", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", *args],
                       capture_output=True, timeout=20)
    assert r.returncode == 64, r.stderr
    assert args[0] in r.stderr.decode()
