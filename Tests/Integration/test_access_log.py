"""`tern proxy --http --access-log PATH|- [--access-log-format json|text]`: one line per request, in Istio's JSON
keys (typed: numbers as numbers, absent values null) or Istio's default text line; written by a thread beside
the reactors within ~100 ms, reopened on SIGUSR1 (logrotate), and complete after SIGTERM."""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime, timezone

import httpx
import pytest

from conftest import Tern, tern_bin
from http_peers import HttpUpstream
from peers import dead_port

KEYS = ["start_time", "route_name", "method", "path", "protocol", "response_code", "response_flags",
        "response_code_details", "connection_termination_details", "bytes_received", "bytes_sent", "duration",
        "upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority", "upstream_host",
        "upstream_cluster", "upstream_local_address", "downstream_local_address", "downstream_remote_address",
        "requested_server_name", "downstream_tls_version", "downstream_tls_cipher", "upstream_transport_failure_reason",
        "grpc_status", "grpc_message"]

START_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

# Istio's default text line (EnvoyTextLogFormat), one group per operator.
TEXT_LINE = re.compile(
    r'^\[(?P<start_time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" (?P<response_code>\d+) '
    r'(?P<response_flags>\S+) (?P<response_code_details>\S+) (?P<connection_termination_details>\S+) '
    r'"(?P<upstream_transport_failure_reason>[^"]*)" (?P<bytes_received>\d+) (?P<bytes_sent>\d+) '
    r'(?P<duration>\d+) (?P<upstream_service_time>\S+) "(?P<x_forwarded_for>[^"]*)" "(?P<user_agent>[^"]*)" '
    r'"(?P<request_id>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream_host>[^"]*)" (?P<upstream_cluster>\S+) '
    r'(?P<upstream_local_address>\S+) (?P<downstream_local_address>\S+) (?P<downstream_remote_address>\S+) '
    r'(?P<requested_server_name>\S+) (?P<route_name>\S+)$')

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

QUIET = ["--admin", "off", "--health", "off", "--prometheus", "off"]


def read_lines(path, writing=False):
    """The log's lines; the last must be complete (a line is written whole or not at all). While Tern may be
    writing (`writing`), a read can overlap a write and see part of it: the incomplete rest is left for later."""
    try:
        data = open(path, "rb").read()
    except FileNotFoundError:
        return []
    if not data:
        return []
    if writing:
        data = data[:data.rfind(b"\n") + 1]
        if not data:
            return []
    assert data.endswith(b"\n"), data[-200:]
    return data.decode("utf-8").split("\n")[:-1]


def parse(line):
    """One JSON line: Istio's keys, in Istio's order, with Envoy's typed values."""
    v = json.loads(line)
    assert list(v) == KEYS, line
    for k in ("response_code", "bytes_received", "bytes_sent", "duration"):
        assert isinstance(v[k], int) and v[k] >= 0, (k, line)
    assert v["upstream_service_time"] is None or (isinstance(v["upstream_service_time"], int) and v["upstream_service_time"] >= 0)
    assert isinstance(v["response_flags"], str) and v["response_flags"]
    for k in KEYS:
        assert v[k] is None or isinstance(v[k], (int, str)), (k, line)
        assert v[k] != "", (k, line)  # absent values are null, never ""
    assert START_TIME.match(v["start_time"]), v["start_time"]
    return v


def json_lines(path):
    return [parse(line) for line in read_lines(path)]


def wait_lines(path, n, timeout=5.0, parser=parse):
    """Waits until the log holds at least `n` lines; returns them parsed."""
    deadline = time.time() + timeout
    while True:
        lines = read_lines(path, writing=True)
        if len(lines) >= n or time.time() >= deadline:
            return [parser(line) for line in lines]
        time.sleep(0.02)


def wall_time(start_time):
    return datetime.strptime(start_time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


@pytest.fixture
def cart():
    u = HttpUpstream()
    yield u
    u.stop()


@pytest.fixture
def mesh(tmp_path, cart):
    """Tern routing by configuration (cart: a live upstream; gone: an endpoint whose port is closed), logging
    JSON to a file."""
    config = tmp_path / "mesh.yaml"
    gone = dead_port()
    config.write_text(MESH.format(cart=cart.port, closed=gone))
    log = tmp_path / "access.log"
    t = Tern(["--http", "--config", str(config), "--listen", "127.0.0.1:0", "--cores", "2",
              "--namespace", "shop", "--access-log", str(log), *QUIET])
    yield t, log, gone
    t.stop()


def test_success_line_has_the_request_and_upstream_values(mesh, cart):
    """A proxied GET: every captured request field, the upstream chosen, sizes and times, in one valid line."""
    t, log, _ = mesh
    before = time.time()
    s = socket.create_connection(("127.0.0.1", t.port))
    try:
        s.sendall(b"GET /item?id=7 HTTP/1.1\r\nHost: cart\r\nUser-Agent: probe/1.0\r\n"
                  b"X-Request-Id: 7f0c-abc\r\nX-Forwarded-For: 10.1.2.3\r\nConnection: close\r\n\r\n")
        response = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            response += chunk
        client = "%s:%d" % s.getsockname()
    finally:
        s.close()
    assert response.startswith(b"HTTP/1.1 200 ")
    body = response.split(b"\r\n\r\n", 1)[1]
    assert body == b"/item?id=7"
    [v] = wait_lines(log, 1)
    assert v["method"] == "GET" and v["path"] == "/item?id=7" and v["protocol"] == "HTTP/1.1"
    assert v["response_code"] == 200 and v["response_flags"] == "-"
    assert v["response_code_details"] == "via_upstream"
    assert v["bytes_received"] == 0 and v["bytes_sent"] == len(body)
    assert v["authority"] == "cart" and v["user_agent"] == "probe/1.0" and v["request_id"] == "7f0c-abc"
    assert v["x_forwarded_for"].startswith("10.1.2.3")
    assert v["upstream_host"] == f"127.0.0.1:{cart.port}"
    assert v["upstream_cluster"] == "outbound|80||cart.shop.svc.cluster.local"
    assert v["downstream_local_address"] == f"127.0.0.1:{t.port}"
    assert v["downstream_remote_address"] == client
    assert v["upstream_service_time"] is not None and v["upstream_service_time"] <= v["duration"]
    assert before - 1 <= wall_time(v["start_time"]) <= time.time() + 1


def test_body_sizes_and_times(mesh, cart):
    """bytes_received and bytes_sent are body bytes; a 150 ms upstream shows in duration and
    upstream_service_time."""
    t, log, _ = mesh
    payload = b"x" * 5000
    r = httpx.post(f"http://127.0.0.1:{t.port}/echo", headers={"Host": "cart"}, content=payload, timeout=10)
    assert r.status_code == 200 and r.content == payload
    r = httpx.get(f"http://127.0.0.1:{t.port}/delay/150", headers={"Host": "cart"}, timeout=10)
    assert r.status_code == 200
    echo, delay = wait_lines(log, 2)
    assert echo["method"] == "POST" and echo["path"] == "/echo"
    assert echo["bytes_received"] == 5000 and echo["bytes_sent"] == 5000
    assert echo["user_agent"].startswith("python-httpx/")
    assert echo["x_forwarded_for"] is None
    assert delay["bytes_received"] == 0 and delay["bytes_sent"] == len(r.content)
    assert delay["duration"] >= 150 and delay["upstream_service_time"] >= 140
    assert delay["duration"] >= delay["upstream_service_time"]
    assert wall_time(delay["start_time"]) >= wall_time(echo["start_time"])


def test_a_request_in_flight_across_a_reload_names_the_cluster_it_was_routed_to(tmp_path, cart):
    """A reload that renumbers the clusters (a new one sorted and written first) while a slow request is in
    flight: its line names the cluster it was routed to, not the one now at that cluster's old index."""
    config = tmp_path / "mesh.yaml"
    gone = dead_port()
    config.write_text(MESH.format(cart=cart.port, closed=gone))
    log = tmp_path / "access.log"
    t = Tern(["--http", "--config", str(config), "--listen", "127.0.0.1:0", "--cores", "1",
              "--namespace", "shop", "--access-log", str(log), *QUIET])
    try:
        result = {}
        slow = threading.Thread(target=lambda: result.update(r=httpx.get(
            f"http://127.0.0.1:{t.port}/delay/2500", headers={"Host": "cart"}, timeout=20)))
        slow.start()
        # Routed with the first table: the upstream has the request before the configuration changes.
        deadline = time.time() + 10
        while not any(r.target == "/delay/2500" for r in cart.requests) and time.time() < deadline:
            time.sleep(0.01)
        # aardvark's ServiceEntry and VirtualService written first: its cluster takes index 0, cart's moves.
        parts = MESH.split("---\n")
        aardvark = [p.replace("name: cart", "name: aardvark").replace("hosts: [cart]", "hosts: [aardvark]")
                    .replace("host: cart", "host: aardvark") for p in (parts[0], parts[2])]
        config.write_text("---\n".join(aardvark).format(cart=gone) + "---\n" + MESH.format(cart=cart.port, closed=gone))
        t.signal(signal.SIGHUP)
        # The new table is served once aardvark is routed (503: its endpoint is closed) instead of 404 NR.
        deadline = time.time() + 10
        while time.time() < deadline:
            if httpx.get(f"http://127.0.0.1:{t.port}/", headers={"Host": "aardvark"}, timeout=10).status_code == 503:
                break
            time.sleep(0.05)
        slow.join(20)
        assert result["r"].status_code == 200
        lines = wait_lines(log, 3, timeout=10)
        [v] = [line for line in lines if line["path"] == "/delay/2500"]
        assert v["upstream_cluster"] == "outbound|80||cart.shop.svc.cluster.local", v
        assert v["upstream_host"] == f"127.0.0.1:{cart.port}"
        assert any(line["upstream_cluster"] == "outbound|80||aardvark.shop.svc.cluster.local" for line in lines), lines
    finally:
        t.stop()


def test_a_response_cut_after_its_head_is_logged_as_a_reset_after_it_started(mesh):
    """The upstream closes in the middle of the body: the client connection is reset (a truncated response
    must not look complete), and the line says what Envoy says: the upstream's status, UC, and
    `upstream_reset_after_response_started{connection_termination}` (not `…before…`)."""
    t, log, _ = mesh
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{t.port}/cut-body", headers={"Host": "cart"}, timeout=10)
    [v] = wait_lines(log, 1)
    assert v["response_code"] == 200 and "UC" in v["response_flags"].split(","), v
    assert v["response_code_details"] == "upstream_reset_after_response_started{connection_termination}", v


def test_upstream_connect_failure_is_503_uf(mesh):
    """The endpoint's port is closed: 503 with UF, the endpoint tried as upstream_host, no upstream time."""
    t, log, gone = mesh
    r = httpx.get(f"http://127.0.0.1:{t.port}/x", headers={"Host": "gone"}, timeout=10)
    assert r.status_code == 503
    [v] = wait_lines(log, 1)
    assert v["response_code"] == 503 and "UF" in v["response_flags"].split(",")
    assert v["method"] == "GET" and v["path"] == "/x" and v["authority"] == "gone"
    assert v["upstream_host"] == f"127.0.0.1:{gone}"
    assert v["upstream_cluster"] == "outbound|80||gone.shop.svc.cluster.local"
    assert v["upstream_service_time"] is None
    assert v["bytes_sent"] == len(r.content)
    assert v["response_code_details"] is not None


def test_unmatched_host_is_404_nr(mesh):
    """No virtual host for the Host: 404 with NR, no upstream at all."""
    t, log, _ = mesh
    r = httpx.get(f"http://127.0.0.1:{t.port}/nothing", headers={"Host": "nowhere.example"}, timeout=10)
    assert r.status_code == 404
    [v] = wait_lines(log, 1)
    assert v["response_code"] == 404 and v["response_flags"] == "NR"
    assert v["response_code_details"] == "route_not_found"
    assert v["authority"] == "nowhere.example" and v["path"] == "/nothing"
    assert v["upstream_host"] is None and v["upstream_cluster"] is None and v["upstream_service_time"] is None
    assert v["bytes_sent"] == len(r.content)


def test_request_bytes_that_are_not_plain_text_keep_lines_valid(mesh):
    """Quotes, backslashes, a tab and invalid UTF-8 (obs-text) in header values: the line is valid JSON and
    valid UTF-8, and each value decodes to the bytes sent with invalid sequences replaced (U+FFFD)."""
    t, log, _ = mesh
    ua = b'ua "quoted" back\\slash\ttab \xff\xfe caf\xc3\xa9 \xe2\x82 end'
    rid = b'id-\xc0\xaf-"x"'
    s = socket.create_connection(("127.0.0.1", t.port))
    try:
        s.sendall(b"GET /q HTTP/1.1\r\nHost: cart\r\nUser-Agent: " + ua + b"\r\nX-Request-Id: " + rid +
                  b"\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    finally:
        s.close()
    [v] = wait_lines(log, 1)
    assert v["user_agent"] == ua.decode("utf-8", "replace")
    assert v["request_id"] == rid.decode("utf-8", "replace")
    assert "\ufffd" in v["user_agent"] and "café" in v["user_agent"]


def test_lines_are_flushed_within_a_second_without_more_traffic(mesh):
    t, log, _ = mesh
    assert httpx.get(f"http://127.0.0.1:{t.port}/one", headers={"Host": "cart"}, timeout=10).status_code == 200
    answered = time.time()
    lines = wait_lines(log, 1, timeout=1.0)
    assert len(lines) == 1 and lines[0]["path"] == "/one"
    assert time.time() - answered < 1.0


def test_every_line_is_written_by_sigterm_exit(mesh):
    """300 requests over new and kept-alive connections on both reactors, then SIGTERM at once: after exit 0
    the log holds exactly one line per request."""
    t, log, _ = mesh
    with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"Host": "cart"}, timeout=10) as c:
        for i in range(200):
            assert c.get(f"/k/{i}").status_code == 200
    for i in range(100):
        assert httpx.get(f"http://127.0.0.1:{t.port}/n/{i}", headers={"Host": "cart"}, timeout=10).status_code == 200
    t.signal(signal.SIGTERM)
    assert t.wait(20) == 0
    lines = json_lines(log)
    assert len(lines) == 300
    assert sorted(v["path"] for v in lines) == sorted([f"/k/{i}" for i in range(200)] + [f"/n/{i}" for i in range(100)])
    assert all(v["response_code"] == 200 for v in lines)


def test_requests_cut_at_the_drain_timeout_are_logged_as_tern_closed_them(tmp_path, cart):
    """A request the upstream holds past --drain-timeout: after SIGTERM and the drain timeout, Tern closes its
    connection and logs it with LR and `downstream_local_disconnect(drain_timeout)` (Envoy's details for a
    connection it closed), not DC, which says the client went away."""
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH.format(cart=cart.port, closed=dead_port()))
    log = tmp_path / "access.log"
    t = Tern(["--http", "--config", str(config), "--listen", "127.0.0.1:0", "--cores", "1", "--namespace", "shop",
              "--access-log", str(log), "--drain-timeout", "300ms", *QUIET])
    try:
        held = socket.create_connection(("127.0.0.1", t.port))
        held.sendall(b"GET /hold/drain HTTP/1.1\r\nHost: cart\r\n\r\n")
        deadline = time.time() + 10
        while len(cart.requests) < 1 and time.time() < deadline:
            time.sleep(0.02)
        assert len(cart.requests) == 1
        t.signal(signal.SIGTERM)
        assert t.wait(20) == 0
        held.settimeout(10)
        assert held.recv(100) == b""
        held.close()
    finally:
        cart.release("drain")
        t.stop()
    [v] = json_lines(log)
    assert v["path"] == "/hold/drain" and v["response_code"] == 0, v
    assert v["response_flags"] == "LR" and v["response_code_details"] == "downstream_local_disconnect(drain_timeout)", v


def test_sigusr1_reopens_the_file_at_its_path(mesh):
    """logrotate: the file is renamed and SIGUSR1 sent; Tern creates a fresh file at the path, lines logged after
    that go there, and the renamed file keeps the earlier ones."""
    t, log, _ = mesh
    assert httpx.get(f"http://127.0.0.1:{t.port}/before", headers={"Host": "cart"}, timeout=10).status_code == 200
    assert len(wait_lines(log, 1)) == 1
    rotated = str(log) + ".1"
    os.rename(log, rotated)
    t.signal(signal.SIGUSR1)
    deadline = time.time() + 5
    while not os.path.exists(log) and time.time() < deadline:
        time.sleep(0.02)
    assert os.path.exists(log), "no new file after SIGUSR1"
    assert httpx.get(f"http://127.0.0.1:{t.port}/after", headers={"Host": "cart"}, timeout=10).status_code == 200
    new = wait_lines(log, 1)
    assert [v["path"] for v in new] == ["/after"]
    assert [v["path"] for v in json_lines(rotated)] == ["/before"]
    assert t.proc.poll() is None  # SIGUSR1 does not stop the proxy
    t.signal(signal.SIGTERM)
    assert t.wait(20) == 0
    assert [v["path"] for v in json_lines(log)] == ["/after"]


def test_text_format_is_istios_default_line(tmp_path, cart):
    """--access-log-format text with --upstream: Istio's default text line, "-" for absent values."""
    log = tmp_path / "access.log"
    t = Tern(["--http", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{cart.port}", "--cores", "1",
              "--access-log", str(log), "--access-log-format", "text", *QUIET])
    try:
        r = httpx.get(f"http://127.0.0.1:{t.port}/t?a=1", headers={"User-Agent": "probe/2", "X-Request-Id": "r-9"},
                      timeout=10)
        assert r.status_code == 200
        [m] = wait_lines(log, 1, parser=TEXT_LINE.match)
        assert m is not None, read_lines(log)
        assert START_TIME.match(m["start_time"])
        assert (m["method"], m["path"], m["protocol"]) == ("GET", "/t?a=1", "HTTP/1.1")
        assert m["response_code"] == "200" and m["response_flags"] == "-"
        assert m["response_code_details"] == "via_upstream"
        assert m["bytes_received"] == "0" and m["bytes_sent"] == str(len(r.content))
        assert m["x_forwarded_for"] == "-" and m["user_agent"] == "probe/2" and m["request_id"] == "r-9"
        assert m["authority"] == f"127.0.0.1:{t.port}"
        assert m["upstream_host"] == f"127.0.0.1:{cart.port}"
        assert m["downstream_local_address"] == f"127.0.0.1:{t.port}"
        assert m["downstream_remote_address"].startswith("127.0.0.1:")
        assert m["upstream_service_time"].isdigit()
        assert m["requested_server_name"] == "-"
    finally:
        t.stop()


def test_dash_writes_json_lines_to_stdout(cart):
    """--access-log -: the lines go to stdout (Tern's own log stays on stderr), complete at exit."""
    p = subprocess.Popen([tern_bin(), "proxy", "--http", "--listen", "127.0.0.1:0", "--upstream",
                          f"127.0.0.1:{cart.port}", "--cores", "1", "--access-log", "-", *QUIET],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = None
        deadline = time.time() + 20
        while port is None and time.time() < deadline:
            line = p.stderr.readline().decode()
            if not line:
                break
            m = re.search(r"listening kind=http addr=\S+:(\d+)$", line.strip())
            if m:
                port = int(m.group(1))
        assert port is not None, "tern did not start"
        for i in range(5):
            assert httpx.get(f"http://127.0.0.1:{port}/s/{i}", timeout=10).status_code == 200
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
        assert p.returncode == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = out.decode("utf-8")
    assert text.endswith("\n")
    lines = [parse(line) for line in text.split("\n")[:-1]]
    assert [v["path"] for v in lines] == [f"/s/{i}" for i in range(5)]
    assert all(v["upstream_host"] == f"127.0.0.1:{cart.port}" for v in lines)


def test_tcp_connections_get_one_line_each(tmp_path):
    """The TCP relay logs one line per connection when it closes: connection bytes each way, the upstream,
    method/path/protocol absent (null), and UF for an upstream that refuses."""
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen(4)
    echo_port = echo.getsockname()[1]

    def serve():
        c, _ = echo.accept()
        with c:
            c.sendall(c.recv(100) * 3)

    import threading
    threading.Thread(target=serve, daemon=True).start()
    log = tmp_path / "tcp.log"
    gone = dead_port()
    t = Tern(["--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{echo_port}",
              "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{gone}",
              "--cores", "1", "--access-log", str(log), *QUIET])
    try:
        with socket.create_connection(("127.0.0.1", t.ports[0]), timeout=5) as s:
            s.sendall(b"abcd")
            got = b""
            while len(got) < 12:
                chunk = s.recv(100)
                if not chunk:
                    break
                got += chunk
            assert got == b"abcd" * 3
        with socket.create_connection(("127.0.0.1", t.ports[1]), timeout=5) as s:
            s.settimeout(5)
            assert s.recv(10) == b""
        lines = wait_lines(log, 2)
    finally:
        t.stop()
        echo.close()
    assert len(lines) == 2
    ok = next(v for v in lines if v["upstream_host"] == f"127.0.0.1:{echo_port}")
    assert ok["method"] is None and ok["path"] is None and ok["protocol"] is None
    assert ok["bytes_received"] == 4 and ok["bytes_sent"] == 12
    assert ok["response_code"] == 0 and ok["response_flags"] == "-"
    assert ok["downstream_local_address"] == f"127.0.0.1:{t.ports[0]}"
    assert ok["downstream_remote_address"].startswith("127.0.0.1:")
    failed = next(v for v in lines if v is not ok)
    assert failed["response_flags"] == "UF" and failed["upstream_host"] == f"127.0.0.1:{gone}"
    assert failed["bytes_received"] == 0 and failed["bytes_sent"] == 0
