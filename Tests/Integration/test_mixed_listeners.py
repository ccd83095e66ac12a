"""One `tern proxy` with listeners of both kinds (`--listen http:ADDR --listen tcp:ADDR`): each listener is served
as its kind says, on the same reactors, with `--upstream` and with `--config`; Istio's HTTP and TCP metrics
count each kind's traffic, and the process drains both."""
import signal
import socket
import time

import httpx
import pytest

from conftest import Tern
from http_peers import HttpUpstream
from peers import Upstream, echo, dead_port, free_port
from test_access_log import wait_lines
from test_telemetry import families, samples, side_args, side_ports


def relay_roundtrip(port, payload):
    """Sends `payload` on a fresh connection, half-closes, and returns everything that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return got


@pytest.mark.parametrize("tcp_first", [False, True])
def test_http_and_tcp_listeners_with_upstreams_in_one_process(tmp_path, backend, tcp_first):
    """`--listen http:…` proxies HTTP/1.1 (forwarding fields added) and `--listen tcp:…` relays bytes untouched
    (an HTTP request head sent to it comes back from the echo exactly as sent), each to the --upstream at its
    position (in either order), on two reactors; metrics and the access log report each kind as Istio does;
    SIGTERM drains both and the process exits 0."""
    web = HttpUpstream()
    echoer = Upstream(echo)
    ports = side_ports()
    log = tmp_path / "access.log"
    pairs = [["--listen", "http:127.0.0.1:0", "--upstream", f"127.0.0.1:{web.port}"],
             ["--listen", "tcp:127.0.0.1:0", "--upstream", echoer.address]]
    if tcp_first:
        pairs.reverse()
    t = Tern([*pairs[0], *pairs[1], "--cores", "2", "--io-backend", backend, "--access-log", str(log),
              *side_args(ports)])
    try:
        assert "listening kind=http addr=127.0.0.1:" in t.log() and "listening kind=proxy addr=127.0.0.1:" in t.log()
        http_port, tcp_port = reversed(t.ports) if tcp_first else t.ports
        for i in range(4):
            r = httpx.get(f"http://127.0.0.1:{http_port}/web/{i}", timeout=10)
            assert r.status_code == 200
        assert [r.header_values("x-forwarded-for") for r in web.requests] == [["127.0.0.1"]] * 4
        raw = b"GET /not-proxied HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(3):
            assert relay_roundtrip(tcp_port, raw) == raw
        assert relay_roundtrip(tcp_port, b"\x00\xffnot http at all") == b"\x00\xffnot http at all"
        assert echoer.connections == 4 and len(web.requests) == 4
        fams = families(ports[2])
        assert sum(s.value for s in samples(fams, "istio_requests_total")) == 4
        assert sum(s.value for s in samples(fams, "istio_tcp_connections_opened_total")) == 4
        received = sum(s.value for s in samples(fams, "istio_tcp_received_bytes_total"))
        assert received == 3 * len(raw) + len(b"\x00\xffnot http at all")
        lines = wait_lines(log, 8)
        http_lines = [v for v in lines if v["method"] is not None]
        tcp_lines = [v for v in lines if v["method"] is None]
        assert sorted(v["path"] for v in http_lines) == [f"/web/{i}" for i in range(4)]
        assert all(v["response_code"] == 200 for v in http_lines)
        assert len(tcp_lines) == 4 and all(v["upstream_host"] == echoer.address for v in tcp_lines), tcp_lines
        assert sorted(v["bytes_received"] for v in tcp_lines) == sorted([len(raw)] * 3 + [len(b"\x00\xffnot http at all")])
        t.signal(signal.SIGTERM)
        assert t.wait() == 0
    finally:
        t.stop()
        web.stop()
        echoer.stop()


MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [web]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {web}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: shop}}
spec:
  hosts: [echo]
  ports: [{{number: {tcp_listen}, name: tcp-echo, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp-echo: {echo}}}}}]
"""


def test_http_and_tcp_listeners_routed_by_one_configuration(tmp_path, backend):
    """With --config, the HTTP listener routes by Host and the TCP listener by its port, from one table; a
    reload that moves the TCP service to another endpoint applies to both kinds' new connections."""
    web = HttpUpstream()
    first, second = Upstream(echo), Upstream(echo)
    tcp_listen = free_port()
    path = tmp_path / "mesh.yaml"
    path.write_text(MESH.format(web=web.port, tcp_listen=tcp_listen, echo=first.port))
    t = Tern(["--http", "--config", str(path), "--namespace", "shop", "--listen", "127.0.0.1:0",
              "--listen", f"tcp:127.0.0.1:{tcp_listen}", "--cores", "1", "--io-backend", backend,
              "--log-level", "info", "--admin", "off", "--health", "off", "--prometheus", "off"])
    try:
        http_port = t.ports[0]
        assert t.ports[1] == tcp_listen
        assert httpx.get(f"http://127.0.0.1:{http_port}/a", headers={"Host": "web"}, timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{http_port}/b", headers={"Host": "nowhere"}, timeout=10).status_code == 404
        assert relay_roundtrip(tcp_listen, b"one") == b"one"
        assert first.connections == 1 and second.connections == 0
        # The TCP service moves: the next connection goes to the new endpoint, and HTTP still routes.
        path.write_text(MESH.format(web=web.port, tcp_listen=tcp_listen, echo=second.port))
        t.signal(signal.SIGHUP)
        deadline = time.time() + 10
        while second.connections == 0 and time.time() < deadline:
            relay_roundtrip(tcp_listen, b"probe")
            time.sleep(0.05)
        assert second.connections >= 1, "the reloaded TCP route was never used"
        before = first.connections
        assert relay_roundtrip(tcp_listen, b"two") == b"two"
        assert first.connections == before
        assert httpx.get(f"http://127.0.0.1:{http_port}/c", headers={"Host": "web"}, timeout=10).status_code == 200
        assert [r.path for r in web.requests] == ["/a", "/c"]
    finally:
        t.stop()
        web.stop()
        first.stop()
        second.stop()


def test_listener_kind_prefix_is_checked(tmp_path):
    """`--listen` takes tcp: or http: before the address; anything else is refused with exit 64, naming it."""
    import subprocess
    from conftest import tern_bin
    for bad in ["udp:127.0.0.1:1", "http:", "tcp:localhost:80", "http:tcp:127.0.0.1:1", "tcp:http:127.0.0.1:1"]:
        p = subprocess.run([tern_bin(), "proxy", "--listen", bad, "--upstream", f"127.0.0.1:{dead_port()}"],
                           capture_output=True, timeout=20)
        assert p.returncode == 64, (bad, p.stderr)
        assert bad in p.stderr.decode() and "tcp: or http:" in p.stderr.decode(), p.stderr
