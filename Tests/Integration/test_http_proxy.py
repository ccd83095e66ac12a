"""`tern proxy --http`: an HTTP/1.1 sidecar in front of a recording upstream, on both backends.

Tern is held to what Envoy does as an HTTP/1.1 sidecar (HTTP connection manager with use_remote_address,
xff_num_trusted_hops 0, default codec settings) and to RFC 9110/9112 where Envoy is silent. Each test's
docstring says which. Requests that must be framed exactly are written as raw bytes and their responses parsed
strictly with h11 (`RawClient`); ordinary traffic uses httpx and curl. The upstream (http_peers.HttpUpstream)
records the bytes and requests it received, so tests assert on what Tern forwarded, not only on what it
answered. Tests marked `large` move hundreds of MiB (each bounded to a minute); the rest take seconds.
"""
import hashlib
import json
import os
import re
import select
import selectors
import signal
import socket
import subprocess
import threading
import time

import h11
import httpx
import pytest

from conftest import tern_bin
from http_peers import HttpUpstream, TunnelEcho, WebSocketEcho
from peers import BLOCK, dead_port, stream_bytes, stream_sha256

ENVOY_503_TEXT = b"upstream connect error or disconnect/reset before headers"
# Envoy's whole 503 body for each upstream failure Tern answers itself, by response flag: the reset reason is
# what tells a refused connect (UF), an upstream that went away before answering (UC) and a full pending queue
# (UO) apart, in the body and in the access log.
ENVOY_503_BODY = {
    "UF": ENVOY_503_TEXT + b". reset reason: connection failure",
    "UC": ENVOY_503_TEXT + b". reset reason: connection termination",
    "UO": ENVOY_503_TEXT + b". reset reason: overflow",
}
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------------------
# Peers, Tern and clients
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def http_upstream():
    """Starts peers from http_peers (HttpUpstream unless told); stops them after the test and fails it when a
    peer itself broke (so a bug of the peer is never mistaken for one of Tern's)."""
    started = []

    def start(cls=HttpUpstream, host="127.0.0.1"):
        peer = cls(host)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()
    for peer in started:
        assert not getattr(peer, "failures", []), peer.failures


def proxy(start_tern, up, backend, *extra, cores="1"):
    """`tern proxy --http` in front of `up`, one reactor unless told (so pooling is deterministic)."""
    return start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", backend,
                      "--cores", cores, *extra)


def http_client(port, timeout=30, **kw):
    """httpx, one keep-alive connection at a time, ignoring any proxy settings of the environment."""
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=timeout,
                        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1), **kw)


def curl(port, path, *args, timeout=60):
    """Runs curl against Tern; returns (status, body)."""
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "-", "-w", "\n%{http_code}", *args,
                        f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode()
    body, status = r.stdout.rsplit(b"\n", 1)
    return int(status), body


def build_request(method, target, headers=(), body=b"", host="tern.test"):
    """Exact request bytes: request line, Host (unless given), the headers as given, Content-Length when there
    is a body and no framing header was given, then the body."""
    names = {n.lower() for n, _ in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {host}")
    lines += [f"{n}: {v}" for n, v in headers]
    if body and not names & {"content-length", "transfer-encoding"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Response:
    def __init__(self, event, body, informational):
        self.status = event.status_code
        self.reason = event.reason.decode("latin-1")
        self.headers = [(n.decode(), v.decode("latin-1")) for n, v in event.headers]
        self.body = bytes(body)
        self.informational = informational  # statuses of the 1xx responses that came first

    def header(self, name):
        values = [v for n, v in self.headers if n == name.lower()]
        return ", ".join(values) if values else None

    def __repr__(self):
        return f"<{self.status} {self.reason} {self.headers} body={self.body[:200]!r}>"


class RawClient:
    """A TCP connection to Tern that writes exact bytes and parses each response strictly with h11. Responses
    are parsed one after another from one buffer, so pipelined responses come out in order."""

    def __init__(self, port, timeout=10, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def exchange(self, method, target, headers=(), body=b""):
        self.send(build_request(method, target, headers, body))
        return self.read_response(method)

    def read_response(self, method="GET", on_data=None):
        """The next whole response (after any 1xx). `on_data` receives the body in pieces instead of it being
        kept. A response to CONNECT ends at its head when it is a 2xx: what follows is the tunnel."""
        parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
        parser.send(h11.Request(method=method, target="/", headers=[("Host", "tern.test")]))
        parser.send(h11.EndOfMessage())
        if self.buffer or self.eof:
            parser.receive_data(self.buffer)
        if self.eof:
            parser.receive_data(b"")
        informational, response, body = [], None, bytearray()
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as e:
                raise AssertionError(f"no valid response: {e} (after {response!r})") from None
            if event is h11.NEED_DATA:
                data = self.sock.recv(1 << 20)
                self.eof = not data
                parser.receive_data(data)
            elif isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                if on_data:
                    on_data(bytes(event.data))
                else:
                    body += event.data
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"connection closed before a whole response (after {response!r})")
        self.buffer, closed = parser.trailing_data
        self.eof = self.eof or closed
        return Response(response, body, informational)

    def wait_closed(self, timeout=5):
        """Waits for Tern to close the connection (FIN or RST) with nothing more sent; returns the seconds it
        took. Fails if bytes arrive instead, or nothing happens within `timeout`."""
        assert not self.buffer, f"unexpected bytes after the response: {self.buffer[:200]!r}"
        if self.eof:
            return 0.0
        start = time.time()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            raise AssertionError(f"Tern did not close the connection within {timeout} s") from None
        assert data == b"", f"unexpected bytes instead of a close: {data[:200]!r}"
        self.eof = True
        return time.time() - start

    def close(self):
        self.sock.close()


def access_log(path, n, timeout=5):
    """The first `n` JSON lines of Tern's access log (--access-log PATH), waiting for its writer thread (it
    flushes within ~100 ms) up to `timeout` seconds; fewer when they did not come."""
    deadline = time.time() + timeout
    while True:
        try:
            data = open(path, "rb").read()
        except FileNotFoundError:
            data = b""
        lines = data.split(b"\n")[:-1]  # whole lines only
        if len(lines) >= n or time.time() >= deadline:
            return [json.loads(line) for line in lines[:n]]
        time.sleep(0.02)


def wait_until(condition, what, timeout=10):
    """Waits for `condition()` to hold, checking every 10 ms; fails with `what` when it does not within `timeout`
    seconds."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.01)


def assert_local_503(status, body, log_line, flag):
    """A 503 Tern answered itself for upstream failure `flag`: Envoy's exact body for that flag, and the same
    flag in the request's access-log line."""
    assert status == 503, (status, body)
    assert body == ENVOY_503_BODY[flag], body
    assert log_line["response_code"] == 503 and log_line["response_flags"] == flag, log_line


def barrier(port):
    """One well-formed request through Tern, answered. Whatever Tern forwarded of earlier traffic (on this
    single reactor) reached the upstream before it, so after it the upstream's record is complete."""
    c = RawClient(port)
    r = c.exchange("GET", "/barrier")
    c.close()
    assert r.status == 200 and r.body == b"/barrier", r


def vm_rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """The highest resident memory of process `pid` while the `with` block runs, sampled every 20 ms on a thread
    (`.peak`, bytes)."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = vm_rss(pid)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample)

    def _sample(self):
        while not self.stop.wait(0.02):
            try:
                self.peak = max(self.peak, vm_rss(self.pid))
            except OSError:
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def test_http_listener_logs_kind_http(start_tern, http_upstream, backend):
    """Callers learn the port from one stderr line per listener, `listening kind=http addr=IP:PORT`."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    assert f"listening kind=http addr=127.0.0.1:{t.port}" in t.log()


def test_get_is_relayed_with_status_headers_and_body(start_tern, http_upstream, backend):
    """A plain GET through Tern (curl): the upstream gets the method, the target and the Host as sent (Envoy
    forwards :authority as Host); the client gets the upstream's status, headers and body."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    status, body = curl(t.port, "/hello/world?x=1&y=%20", "-H", "X-Custom: tern")
    assert (status, body) == (200, b"/hello/world?x=1&y=%20")
    [r] = up.requests
    assert (r.method, r.target, r.http_version) == ("GET", "/hello/world?x=1&y=%20", "1.1")
    assert r.header("host") == f"127.0.0.1:{t.port}"
    assert r.header("x-custom") == "tern"


# ---------------------------------------------------------------------------------------------------------
# Keep-alive, the upstream pool, pipelining
# ---------------------------------------------------------------------------------------------------------

def test_keep_alive_client_connection_uses_one_upstream_connection(start_tern, http_upstream, backend):
    """50 sequential requests on one client connection, one reactor: one upstream connection carries them
    all (Envoy's HTTP/1.1 connection pool returns a connection to the pool when its response is complete)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    for i in range(50):
        r = c.exchange("GET", f"/seq/{i}")
        assert (r.status, r.body) == (200, f"/seq/{i}".encode()), r
        assert r.header("x-upstream-connection") == "1"
    assert up.accepted == 1
    assert up.paths() == [f"/seq/{i}" for i in range(50)]


def test_upstream_connections_are_reused_across_client_connections(start_tern, http_upstream, backend):
    """Ten client connections one after another, three requests each: the reactor's pool hands the same idle
    upstream connection to each (Envoy: pools belong to the worker, not to the downstream connection)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    for k in range(10):
        with http_client(t.port) as c:
            for i in range(3):
                r = c.get(f"/client/{k}/{i}")
                assert (r.status_code, r.text) == (200, f"/client/{k}/{i}")
    assert up.accepted == 1
    assert len(up.requests) == 30


def test_pipelined_requests_are_answered_in_order(start_tern, http_upstream, backend):
    """Six requests written at once, the slow ones first: the responses come back in request order
    (RFC 9112 §9.3.2: a server MUST send the responses to pipelined requests in the order received)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    targets = ["/delay/300", "/p/1", "/delay/100", "/p/2", "/bytes/70000?framing=chunked", "/p/3"]
    c.send(b"".join(build_request("GET", target) for target in targets))
    for target in targets:
        r = c.read_response()
        assert r.status == 200, r
        expected = BLOCK[:70000] if target.startswith("/bytes") else target.encode()
        assert r.body == expected, (target, r)
    assert [r.target for r in up.requests] == targets
    # And the connection is still in step afterwards.
    assert c.exchange("GET", "/after").body == b"/after"


def test_upstream_connection_close_is_not_reused(start_tern, http_upstream, backend):
    """An upstream response with `Connection: close` ends that upstream connection: the next request goes
    over a new one (RFC 9112 §9.6), and the client's connection, whose keep-alive is its own, stays open."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    r = c.exchange("GET", "/connection-close")
    assert (r.status, r.body) == (200, b"bye")
    r = c.exchange("GET", "/next")
    assert (r.status, r.body) == (200, b"/next")
    assert r.header("x-upstream-connection") == "2"
    assert up.accepted == 2


def test_idle_upstream_connection_closed_by_the_upstream_is_not_used(start_tern, http_upstream, backend):
    """The upstream closes a pooled keep-alive connection while it is idle (its own keep-alive timeout): the
    next request must still succeed, on a new connection (Envoy watches idle pooled connections and drops
    closed ones; RFC 9112 §9.3.1 would also allow retrying a request that got no byte back)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    assert c.exchange("GET", "/close-after-response").body == b"closing soon"
    assert up.connections[0].closed.wait(5)
    time.sleep(0.2)  # let the FIN reach Tern: what is tested is the request after it
    r = c.exchange("GET", "/after-close")
    assert (r.status, r.body) == (200, b"/after-close"), r
    assert up.accepted == 2


def test_client_connection_close_closes_only_the_client_side(start_tern, http_upstream, backend):
    """`Connection: close` from the client closes the client connection after its response (RFC 9112 §9.6),
    is not forwarded (hop-by-hop, RFC 9110 §7.6.1), and leaves the upstream connection pooled for others."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    r = c.exchange("GET", "/first", [("Connection", "close")])
    assert (r.status, r.body) == (200, b"/first")
    c.wait_closed()
    assert "close" not in (up.requests[0].header("connection") or "").lower()
    c2 = RawClient(t.port)
    assert c2.exchange("GET", "/second").body == b"/second"
    assert up.accepted == 1


def test_idle_client_connection_is_closed_after_idle_timeout(start_tern, http_upstream, backend):
    """--idle-timeout closes a client connection with no request in flight after that long (Envoy's
    common_http_protocol_options.idle_timeout)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--idle-timeout", "300ms")
    c = RawClient(t.port)
    assert c.exchange("GET", "/once").status == 200
    elapsed = c.wait_closed(timeout=10)
    assert 0.2 < elapsed < 5


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_two_reactors_serve_concurrent_keep_alive_clients(start_tern, http_upstream, backend):
    """Four concurrent keep-alive clients on two reactors: every response is right, and the per-reactor pools
    never open more upstream connections than there are requests in flight."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, cores="2")
    errors = []

    def client(k):
        try:
            with http_client(t.port) as c:
                for i in range(25):
                    n = (k * 997 + i * 31) % 5000
                    r = c.get(f"/bytes/{n}")
                    if r.status_code != 200 or r.content != BLOCK[:n]:
                        errors.append((k, i, r.status_code, len(r.content)))
        except Exception as e:
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    assert len(up.requests) == 100
    assert up.accepted <= 4


def test_ipv6_listener_and_upstream(start_tern, http_upstream, backend):
    """HTTP over IPv6 both sides; X-Forwarded-For carries the client's IPv6 address as Envoy writes it."""
    up = http_upstream(host="::1")
    t = start_tern("--http", "--listen", "[::1]:0", "--upstream", up.address, "--io-backend", backend,
                   "--cores", "1")
    c = RawClient(t.port, host="::1")
    assert c.exchange("GET", "/six").body == b"/six"
    assert up.requests[0].header("x-forwarded-for") == "::1"


# ---------------------------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------------------------

def chunked(pieces):
    """The chunked coding (RFC 9112 §7.1) of the given pieces, with the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"


def odd_pieces(data):
    """Splits data at irregular offsets, so chunk boundaries fall anywhere."""
    out, i, step = [], 0, 1
    while i < len(data):
        out.append(data[i:i + step])
        i += step
        step = step * 3 + 7 if step < 200000 else 1
    return out


@pytest.mark.parametrize("size", [0, 1, 65537, 3 * MiB], ids=["0B", "1B", "64KiB+1", "3MiB"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_body_is_relayed_intact(start_tern, http_upstream, backend, framing, size):
    """A request body framed by Content-Length or chunked reaches the upstream byte for byte, re-framed
    validly (RFC 9112 §6: the upstream's strict parser accepts it); the connection stays usable."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    data = b"".join(stream_bytes(size))
    c = RawClient(t.port)
    if framing == "chunked":
        c.send(build_request("POST", "/sha256", [("Transfer-Encoding", "chunked")]) + chunked(odd_pieces(data)))
    else:
        c.send(build_request("POST", "/sha256", [("Content-Length", str(size))]) + data)
    r = c.read_response()
    assert r.status == 200, r
    assert json.loads(r.body) == {"length": size, "sha256": hashlib.sha256(data).hexdigest()}
    assert up.requests[0].complete and up.connections[0].error is None
    assert c.exchange("GET", "/after").body == b"/after"


def test_chunk_extensions_and_trailers_are_accepted(start_tern, http_upstream, backend):
    """Chunk extensions are ignored and a trailer section is allowed (RFC 9112 §7.1.1, §7.1.2): the body
    arrives intact and the connection stays in step."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")])
           + b"5;name=value\r\nhello\r\n6;x=\"q\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    r = c.read_response()
    assert (r.status, r.body) == (200, b"hello world"), r
    assert c.exchange("GET", "/after").body == b"/after"


@pytest.mark.parametrize("size", [0, 1, 3 * MiB], ids=["0B", "1B", "3MiB"])
@pytest.mark.parametrize("framing", ["content-length", "chunked", "close"])
def test_response_body_is_relayed_intact(start_tern, http_upstream, backend, framing, size):
    """A response framed by Content-Length, chunked, or by the upstream closing (RFC 9112 §6.3 rule 8)
    reaches the client intact and validly framed; after a length-framed one the connection stays usable."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    r = c.exchange("GET", f"/bytes/{size}?framing={framing}")
    assert r.status == 200, r
    assert len(r.body) == size and r.body == b"".join(stream_bytes(size))
    if framing != "close":
        assert c.exchange("GET", "/after").body == b"/after"
        assert up.accepted == 1


@pytest.mark.large
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_256mib_upload_is_streamed_intact(start_tern, http_upstream, backend, framing):
    """A 256 MiB request body streams through to the upstream intact (sha256 on both ends), in under a
    minute."""
    size = 256 * MiB
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port, timeout=60)
    start = time.time()
    sent = hashlib.sha256()
    if framing == "chunked":
        c.send(build_request("POST", "/sha256", [("Transfer-Encoding", "chunked")]))
        for block in stream_bytes(size):
            sent.update(block)
            c.send(b"%x\r\n%s\r\n" % (len(block), block))
        c.send(b"0\r\n\r\n")
    else:
        c.send(build_request("POST", "/sha256", [("Content-Length", str(size))]))
        for block in stream_bytes(size):
            sent.update(block)
            c.send(block)
    r = c.read_response()
    assert r.status == 200, r
    assert json.loads(r.body) == {"length": size, "sha256": sent.hexdigest()}
    assert time.time() - start < 60


@pytest.mark.large
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_256mib_download_is_streamed_intact(start_tern, http_upstream, backend, framing):
    """A 256 MiB response body streams through to the client intact (sha256), in under a minute."""
    size = 256 * MiB
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port, timeout=60)
    start = time.time()
    got = hashlib.sha256()
    count = [0]

    def take(data):
        got.update(data)
        count[0] += len(data)

    c.send(build_request("GET", f"/bytes/{size}?framing={framing}"))
    r = c.read_response(on_data=take)
    assert r.status == 200, r
    assert (count[0], got.hexdigest()) == (size, stream_sha256(size))
    assert time.time() - start < 60


@pytest.mark.large
def test_memory_stays_bounded_during_a_1gib_upload(start_tern, http_upstream, backend):
    """Tern streams bodies with backpressure instead of buffering them: while a 1 GiB upload goes through
    (the upstream not reading at all for its first 2 s), Tern's resident memory stays under 64 MiB."""
    size = 1 << 30
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    with PeakRSS(t.proc.pid) as rss:
        c = RawClient(t.port, timeout=60)
        start = time.time()
        sent = hashlib.sha256()
        c.send(build_request("POST", "/sha256?pause_ms=2000", [("Content-Length", str(size))]))
        for block in stream_bytes(size):
            sent.update(block)
            c.send(block)
            assert time.time() - start < 60, "the upload did not finish within a minute"
        r = c.read_response()
    assert r.status == 200, r
    assert json.loads(r.body) == {"length": size, "sha256": sent.hexdigest()}
    assert rss.peak < 64 * MiB, f"tern reached {rss.peak / MiB:.1f} MiB resident"


# ---------------------------------------------------------------------------------------------------------
# What Tern adds, removes and keeps in the headers
# ---------------------------------------------------------------------------------------------------------

def test_hop_by_hop_request_fields_are_not_forwarded(start_tern, http_upstream, backend):
    """Connection and the fields it names, Keep-Alive, Proxy-Connection and TE stay on the client's hop
    (RFC 9110 §7.6.1; Envoy strips the same); end-to-end fields pass unchanged."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    r = c.exchange("GET", "/hop", [("Connection", "keep-alive, X-Hop-One, x-hop-two"), ("X-Hop-One", "1"),
                                   ("X-Hop-Two", "2"), ("Keep-Alive", "timeout=5"),
                                   ("Proxy-Connection", "keep-alive"), ("TE", "gzip"), ("X-End-To-End", "kept")])
    assert r.status == 200, r
    [req] = up.requests
    for name in ("x-hop-one", "x-hop-two", "keep-alive", "proxy-connection", "te", "upgrade"):
        assert not req.has(name), (name, req.headers)
    # Tern may send its own `Connection: keep-alive`, never the client's options.
    options = {o.strip().lower() for o in (req.header("connection") or "").split(",") if o.strip()}
    assert options <= {"keep-alive"}, req.headers
    assert req.header("x-end-to-end") == "kept"


def test_chunked_request_is_reframed_not_passed_with_two_framings(start_tern, http_upstream, backend):
    """Transfer-Encoding is hop-by-hop (RFC 9112 §6.1): Tern re-frames the body itself, and what reaches the
    upstream has exactly one framing (chunked, or a Content-Length it computed), never both."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + chunked([b"abc", b"defg"]))
    assert c.read_response().body == b"abcdefg"
    [req] = up.requests
    te, cl = req.header("transfer-encoding"), req.header("content-length")
    assert (te is None) != (cl is None), req.headers
    assert te in (None, "chunked") and cl in (None, "7")


def test_h2c_upgrade_request_is_served_as_plain_http11(start_tern, http_upstream, backend):
    """An `Upgrade: h2c` request is not upgraded: Envoy's HTTP/1 codec strips h2c upgrade headers (Upgrade,
    HTTP2-Settings, their Connection options: "removing unsupported h2c upgrade headers", envoy issue 7161)
    and serves the request over HTTP/1.1. Only an upgrade Tern can tunnel (websocket) passes."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    r = c.exchange("GET", "/h2c", [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                                   ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])
    assert (r.status, r.body) == (200, b"/h2c"), r
    [req] = up.requests
    assert not req.has("upgrade") and not req.has("http2-settings"), req.headers
    assert "upgrade" not in (req.header("connection") or "").lower()


def test_hop_by_hop_response_fields_are_not_forwarded(start_tern, http_upstream, backend):
    """The same rule on the way back (RFC 9110 §7.6.1 applies to every intermediary): the client sees
    neither the upstream's Connection options nor Keep-Alive, Proxy-Connection, Upgrade or TE."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    r = c.exchange("GET", "/hop-by-hop")
    assert (r.status, r.body) == (200, b"hop"), r
    for name in ("x-upstream-hop", "keep-alive", "proxy-connection", "upgrade", "te"):
        assert r.header(name) is None, (name, r.headers)
    options = {o.strip().lower() for o in (r.header("connection") or "").split(",") if o.strip()}
    assert options <= {"keep-alive", "close"}, r.headers
    assert r.header("x-end-to-end") == "kept"


def test_x_forwarded_for_and_proto_are_set(start_tern, http_upstream, backend):
    """With no trusted hops, X-Forwarded-For is the client's address and X-Forwarded-Proto the scheme the
    client used (Envoy with use_remote_address and xff_num_trusted_hops 0)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    assert c.exchange("GET", "/xff").status == 200
    [req] = up.requests
    assert req.header_values("x-forwarded-for") == ["127.0.0.1"]
    assert req.header_values("x-forwarded-proto") == ["http"]


def test_x_forwarded_for_appends_the_client_address(start_tern, http_upstream, backend):
    """An incoming X-Forwarded-For is kept and the client's address appended to it (Envoy appends the
    remote address with use_remote_address; RFC 7239 §5.2's list semantics)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    assert c.exchange("GET", "/xff", [("X-Forwarded-For", "203.0.113.7, 198.51.100.2")]).status == 200
    [req] = up.requests
    hops = [h.strip() for h in req.header("x-forwarded-for").split(",")]
    assert hops == ["203.0.113.7", "198.51.100.2", "127.0.0.1"]


def test_x_forwarded_proto_from_an_untrusted_client_is_overwritten(start_tern, http_upstream, backend):
    """A client Tern does not trust cannot claim https: X-Forwarded-Proto is the scheme of the connection
    Tern accepted (Envoy overwrites it for requests from untrusted, external clients)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    assert c.exchange("GET", "/xfp", [("X-Forwarded-Proto", "https")]).status == 200
    assert up.requests[0].header_values("x-forwarded-proto") == ["http"]


def test_x_request_id_is_generated_as_uuid4_when_absent(start_tern, http_upstream, backend):
    """Without x-request-id, Tern generates one per request, a random (version 4) UUID (Envoy's
    UUIDRequestIDExtension), different for each request."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    for i in range(5):
        assert c.exchange("GET", f"/id/{i}").status == 200
    ids = [r.header_values("x-request-id") for r in up.requests]
    assert all(len(v) == 1 and UUID4.match(v[0]) for v in ids), ids
    assert len({v[0] for v in ids}) == 5


def test_x_request_id_from_the_client_is_kept(start_tern, http_upstream, backend):
    """An x-request-id the client sent is forwarded unchanged (as Istio's sidecars configure Envoy:
    preserve_external_request_id), so a trace keeps one id across hops."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    assert c.exchange("GET", "/id", [("X-Request-Id", "tern-test-7f3a")]).status == 200
    assert up.requests[0].header_values("x-request-id") == ["tern-test-7f3a"]


def test_envoy_internal_headers_and_xfcc_from_the_client_are_stripped(start_tern, http_upstream, backend):
    """A client Tern does not trust cannot steer the mesh: incoming x-envoy-* headers (retry, timeout,
    original path, any other) and x-forwarded-client-cert are removed (Envoy strips them from external
    requests; XFCC is sanitized by default)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    sent = [("X-Envoy-Retry-On", "5xx"), ("X-Envoy-Upstream-Rq-Timeout-Ms", "1"),
            ("X-Envoy-Original-Path", "/admin"), ("X-Envoy-Tern-Test", "1"),
            ("X-Forwarded-Client-Cert", "By=spiffe://evil;URI=spiffe://evil"), ("X-Normal", "kept")]
    assert c.exchange("GET", "/internal", sent).status == 200
    [req] = up.requests
    for name, value in sent[:-1]:
        assert value not in req.header_values(name), (name, req.headers)
    assert not req.has("x-forwarded-client-cert")
    assert not any(n == "x-envoy-tern-test" or n == "x-envoy-original-path" for n, _ in req.headers)
    assert req.header("x-normal") == "kept"


# ---------------------------------------------------------------------------------------------------------
# Request smuggling and malformed requests: 400, close, and nothing of it reaches the upstream
# ---------------------------------------------------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: tern.test\r\n\r\n"


def post_head(*fields, target="/smuggle"):
    return (f"POST {target} HTTP/1.1\r\nHost: tern.test\r\n".encode() + b"".join(f + b"\r\n" for f in fields)
            + b"\r\n")


# Each is rejected on its head alone, so not a byte of it may be forwarded.
AMBIGUOUS_HEADS = [
    # RFC 9112 §6.1: a request with both MAY be rejected; Envoy rejects it (without allow_chunked_length).
    ("content-length-and-chunked", post_head(b"Content-Length: 6", b"Transfer-Encoding: chunked") + b"0\r\n\r\nX"),
    ("chunked-and-content-length", post_head(b"Transfer-Encoding: chunked", b"Content-Length: 6") + b"0\r\n\r\nX"),
    # RFC 9112 §6.3 rule 5: differing or invalid Content-Length values are unrecoverable.
    ("two-differing-content-lengths", post_head(b"Content-Length: 5", b"Content-Length: 6") + b"abcdef"),
    ("differing-content-length-list", post_head(b"Content-Length: 5, 6") + b"abcdef"),
    ("content-length-with-sign", post_head(b"Content-Length: +6") + b"abcdef"),
    # RFC 9112 §6.3 rule 4: chunked not the final coding of a request: 400 and close.
    ("chunked-not-last", post_head(b"Transfer-Encoding: chunked, gzip") + b"0\r\n\r\n"),
    ("transfer-coding-without-chunked", post_head(b"Transfer-Encoding: gzip") + b"0\r\n\r\n"),
    # RFC 9112 §5.2: obs-fold in a request: reject with 400 (or replace with SP; Tern rejects).
    ("obs-fold", post_head(b"X-Folded: a", b" b", b"Content-Length: 0")),
    ("obs-fold-on-transfer-encoding", post_head(b"Transfer-Encoding:", b" chunked") + b"0\r\n\r\n"),
    # RFC 9112 §5.1: whitespace between field name and colon MUST be rejected with 400.
    ("space-before-colon", post_head(b"Transfer-Encoding : chunked") + b"0\r\n\r\n"),
    ("tab-before-colon", post_head(b"Content-Length\t: 0")),
    # RFC 9112 §2.2 allows a recipient to accept a bare LF; Tern does not (the contract is strict CRLF).
    ("bare-lf-line-ends", b"GET /smuggle HTTP/1.1\nHost: tern.test\n\n"),
    ("bare-lf-inside-head", b"GET /smuggle HTTP/1.1\r\nHost: tern.test\nX-A: b\r\n\r\n"),
    # RFC 9112 §2.2: a bare CR MUST be treated as invalid (or replaced by SP).
    ("bare-cr-inside-field", b"GET /smuggle HTTP/1.1\r\nHost: tern.test\r\nX-A: b\rX-B: c\r\n\r\n"),
    # RFC 9110 §5.5: NUL is never valid in a field value, nor anywhere in a request line.
    ("nul-in-field-value", b"GET /smuggle HTTP/1.1\r\nHost: tern.test\r\nX-A: b\x00c\r\n\r\n"),
    ("nul-in-target", b"GET /smug\x00gle HTTP/1.1\r\nHost: tern.test\r\n\r\n"),
]


@pytest.mark.parametrize("raw", [r for _, r in AMBIGUOUS_HEADS], ids=[i for i, _ in AMBIGUOUS_HEADS])
def test_ambiguous_request_head_gets_400_and_reaches_no_upstream(start_tern, http_upstream, backend, raw):
    """A request whose head is malformed or frames its body ambiguously is answered 400 and the connection
    closed (RFC 9112 §6.3, §11.2); the upstream receives not one byte of it nor of the request smuggled
    behind it."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    c.send(raw + SMUGGLED)
    r = c.read_response("POST" if raw.startswith(b"POST") else "GET")
    assert r.status == 400, r
    c.wait_closed()
    barrier(t.port)
    assert up.paths() == ["/barrier"]
    assert not any(conn.partial or conn.error for conn in up.connections), up.connections
    assert b"smuggl" not in up.all_raw()


# Each has a valid head, so Tern may already have forwarded the head when it meets the bad body.
BAD_CHUNKED_BODIES = [
    ("chunk-size-not-hex", b"zz\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-overflows-64-bits", b"1" + b"0" * 20 + b"\r\nhello\r\n0\r\n\r\n"),
    ("chunk-data-longer-than-size", b"5\r\nhelloXX\r\n0\r\n\r\n"),
    ("chunk-size-bare-lf", b"5\nhello\r\n0\r\n\r\n"),
    ("chunk-size-negative", b"-5\r\nhello\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("body", [b for _, b in BAD_CHUNKED_BODIES], ids=[i for i, _ in BAD_CHUNKED_BODIES])
def test_invalid_chunked_body_gets_400_and_no_whole_request_upstream(start_tern, http_upstream, backend, body):
    """A chunked body that breaks RFC 9112 §7.1 is answered 400 and the connection closed. A streaming proxy
    may have forwarded the head already, so the upstream may see the start of it, but never a whole request,
    never the request smuggled behind it, and the upstream connection carrying it is closed, not reused."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    c.send(post_head(b"Transfer-Encoding: chunked") + body + SMUGGLED)
    r = c.read_response("POST")
    assert r.status == 400, r
    c.wait_closed()
    barrier(t.port)
    assert "/smuggled" not in up.paths()
    assert [r.path for r in up.requests if r.complete] == ["/barrier"]
    for conn in up.connections:
        if any(r.path == "/smuggle" for r in conn.requests):
            assert conn.closed.wait(5), f"the upstream connection with the broken request was kept: {conn}"


def big_field_request(head_kib):
    """A GET whose head is about `head_kib` KiB, made of one large field."""
    return build_request("GET", "/big", [("X-Big", "b" * (head_kib * 1024))])


def many_fields_request(count):
    """A GET with `count` fields besides Host."""
    return build_request("GET", "/many", [(f"X-Field-{i}", str(i)) for i in range(count)])


def long_uri_request(uri_kib):
    return build_request("GET", "/u/" + "u" * (uri_kib * 1024 - 3))


LIMITS = [
    ("head-61KiB-over-default-60", [], big_field_request(61), 431),
    ("head-50KiB-under-default", [], big_field_request(50), 200),
    ("head-10KiB-over-flag-8", ["--max-request-headers-kb", "8"], big_field_request(10), 431),
    ("head-80KiB-under-flag-96", ["--max-request-headers-kb", "96"], big_field_request(80), 200),
    ("fields-120-over-default-100", [], many_fields_request(120), 431),
    ("fields-80-under-default", [], many_fields_request(80), 200),
    ("fields-20-over-flag-10", ["--max-request-headers-count", "10"], many_fields_request(20), 431),
    ("fields-150-under-flag-200", ["--max-request-headers-count", "200"], many_fields_request(150), 200),
    ("uri-17KiB-over-default-16", [], long_uri_request(17), 414),
    ("uri-15KiB-under-default", [], long_uri_request(15), 200),
    ("uri-5KiB-over-flag-4", ["--max-uri-kb", "4"], long_uri_request(5), 414),
    ("uri-20KiB-under-flag-32", ["--max-uri-kb", "32"], long_uri_request(20), 200),
]


@pytest.mark.parametrize("flags,raw,status", [c[1:] for c in LIMITS], ids=[c[0] for c in LIMITS])
def test_request_head_limits(start_tern, http_upstream, backend, flags, raw, status):
    """Head size over --max-request-headers-kb (60) or field count over --max-request-headers-count (100):
    431 (RFC 6585 §5; Envoy's max_request_headers_kb / max_headers_count). A target over --max-uri-kb (16):
    414 (RFC 9110 §15.5.15). Nothing of a rejected request reaches the upstream; one under the limits passes
    whole."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, *flags)
    c = RawClient(t.port)
    c.send(raw)
    r = c.read_response()
    assert r.status == status, r
    if status == 200:
        [req] = up.requests
        sent_fields = raw.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
        assert req.target == raw.split(b" ")[1].decode()
        for field in sent_fields:
            name, value = field.decode().split(": ", 1)
            assert req.header(name) == value, name
    else:
        barrier(t.port)
        assert up.paths() == ["/barrier"]
        assert not any(conn.partial or conn.error for conn in up.connections), up.connections


# ---------------------------------------------------------------------------------------------------------
# Upstream failures become Envoy's local replies
# ---------------------------------------------------------------------------------------------------------

def test_upstream_port_closed_gives_503(start_tern, backend, tmp_path):
    """No upstream listening: 503 with Envoy's body `upstream connect error or disconnect/reset before headers.
    reset reason: connection failure`, response flag UF."""
    log = tmp_path / "access.log"
    t = start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{dead_port()}",
                   "--io-backend", backend, "--cores", "1", "--access-log", str(log))
    status, body = curl(t.port, "/nobody")
    [line] = access_log(log, 1)
    assert_local_503(status, body, line, "UF")


def test_upstream_reset_before_response_gives_503(start_tern, http_upstream, backend, tmp_path):
    """The upstream resets the connection (RST) after reading the request: 503 with Envoy's body (reset reason:
    connection termination: Envoy gives the same reason for an upstream RST as for a FIN), flag UC."""
    up = http_upstream()
    log = tmp_path / "access.log"
    t = proxy(start_tern, up, backend, "--access-log", str(log))
    status, body = curl(t.port, "/reset")
    [line] = access_log(log, 1)
    assert_local_503(status, body, line, "UC")


def test_upstream_close_before_response_gives_503(start_tern, http_upstream, backend, tmp_path):
    """The upstream closes cleanly (FIN) without answering: 503 with Envoy's body (reset reason: connection
    termination), flag UC."""
    up = http_upstream()
    log = tmp_path / "access.log"
    t = proxy(start_tern, up, backend, "--access-log", str(log))
    status, body = curl(t.port, "/close")
    [line] = access_log(log, 1)
    assert_local_503(status, body, line, "UC")


def test_upstream_silence_gives_504_after_upstream_timeout(start_tern, http_upstream, backend):
    """An upstream that never answers: 504 after --upstream-timeout (Envoy's route timeout, body `upstream
    request timeout`, flag UT), and the upstream request is abandoned (its connection closed, not pooled)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--upstream-timeout", "1s")
    c = RawClient(t.port)
    start = time.time()
    r = c.exchange("GET", "/hang")
    elapsed = time.time() - start
    assert r.status == 504, r
    assert 0.9 < elapsed < 3, elapsed
    assert up.connections[0].closed.wait(5), "the timed-out upstream connection was kept open"


@pytest.mark.parametrize("kind", ["not-http", "bad-code"])
def test_garbage_from_the_upstream_gives_502(start_tern, http_upstream, backend, kind):
    """An upstream answer that is no HTTP/1.1 status line: 502 (Envoy: upstream protocol error, flag UPE)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    status, _ = curl(t.port, f"/garbage/{kind}")
    assert status == 502


def test_local_5xx_reply_keeps_the_client_connection(start_tern, http_upstream, backend):
    """After a 503 (UC) or 504 (UT) that Tern makes itself for a request it read to its end, the client
    connection stays open and in step for the next request, as Envoy keeps it after a local reply."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--upstream-timeout", "1s")
    c = RawClient(t.port)
    for target, status, body in (("/reset", 503, ENVOY_503_BODY["UC"]), ("/hang", 504, b"upstream request timeout"),
                                 ("/fine", 200, b"/fine")):
        r = c.exchange("GET", target)
        assert r.status == status and r.body == body, (target, r)
        assert "close" not in (r.header("connection") or "").lower(), (target, r)


def test_pending_queue_overflow_gives_503_UO(start_tern, http_upstream, backend, tmp_path):
    """With one upstream connection allowed and one request allowed to wait for it, a third concurrent request
    is refused at once with 503 and Envoy's overflow text (flag UO); the waiting one is served when the
    connection frees up, on that same connection. Ordered by what Tern and the upstream have seen, never by
    time: the first request holds the connection until the test releases it, the second goes once the upstream
    has the first, the third once Tern's log (read as it comes) says the second waits."""
    up = http_upstream()
    log = tmp_path / "access.log"
    t = proxy(start_tern, up, backend, "--max-upstream-connections", "1", "--max-pending-requests", "1",
              "--access-log", str(log), "--log-level", "debug")
    reader = threading.Thread(target=lambda: [t.lines.append(line.decode()) for line in t.proc.stderr], daemon=True)
    reader.start()
    first = RawClient(t.port)
    first.send(build_request("GET", "/hold/first"))
    wait_until(lambda: "/hold/first" in up.paths(), "the upstream never got the first request")
    second = RawClient(t.port)
    second.send(build_request("GET", "/second"))
    wait_until(lambda: any("request waits for an upstream connection (1 waiting)" in line for line in list(t.lines)),
               "Tern never logged the second request as waiting")
    refused = RawClient(t.port).exchange("GET", "/third")  # answered while the first still holds the connection
    up.release("first")
    served = [first.read_response(), second.read_response()]
    assert [(r.status, r.body) for r in served] == [(200, b"/hold/first"), (200, b"/second")], served
    assert [r.header("x-upstream-connection") for r in served] == ["1", "1"], served
    assert up.accepted == 1
    assert up.paths() == ["/hold/first", "/second"]
    lines = access_log(log, 3)
    assert sorted(line["response_flags"] for line in lines) == ["-", "-", "UO"], lines
    [refused_line] = [line for line in lines if line["response_flags"] != "-"]
    assert_local_503(refused.status, refused.body, refused_line, "UO")


@pytest.mark.parametrize("upstream_timeout", ["0s", "30s"])
def test_stream_idle_timeout_ends_a_stalled_response(start_tern, http_upstream, backend, upstream_timeout):
    """A response whose body stops moving is ended after --stream-idle-timeout (Envoy's stream_idle_timeout,
    flag SI): its head already went out, so the client connection is reset rather than the body looking
    complete, and the upstream connection is closed. With a later upstream timeout pending too (the exchange
    keeps one timer, set for the earlier of its deadlines), the stream idle timeout still ends it first."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--stream-idle-timeout", "1s", "--upstream-timeout", upstream_timeout)
    c = RawClient(t.port)
    c.send(build_request("GET", "/stall-body"))
    start = time.time()
    got = read_until_closed(c.sock, 5)
    elapsed = time.time() - start
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"12345"), got
    assert 0.9 < elapsed < 3.5, elapsed
    assert up.connections[0].closed.wait(5)


def test_stream_idle_timeout_on_a_stalled_request_body_gives_408(start_tern, http_upstream, backend):
    """A request body that stops arriving is ended after --stream-idle-timeout with 408 (no response had
    started), and the connection closes."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--stream-idle-timeout", "1s")
    c = RawClient(t.port)
    c.send(b"POST /sha256 HTTP/1.1\r\nHost: tern.test\r\nContent-Length: 10\r\n\r\n12345")
    start = time.time()
    got = read_until_closed(c.sock, 5)
    assert got.startswith(b"HTTP/1.1 408"), got
    assert 0.9 < time.time() - start < 3.5


def need_descriptors(n, why):
    """Raises this process's descriptor limit to at least `n` (up to the hard limit), or skips the test."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(n, 16384)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < n:
        pytest.skip(f"needs {n:,} descriptors ({why})")


def test_slow_heads_hold_no_receive_buffer_and_starve_no_one(start_tern, http_upstream, backend):
    """5,000 connections (from 127.0.0.1) each send one byte of a head and wait: ten times the 512 receive
    buffers of two reactors. A normal client (from 127.0.0.2) is served meanwhile, all its requests, while
    every slow connection is still waiting (not once one's 408 freed a buffer); then each slow one is answered
    408 (or closed) by the request header timeout."""
    need_descriptors(11000, "5,000 client sockets here, 5,000 in Tern")
    up = http_upstream()
    t = start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", backend,
                   "--cores", "2", "--request-header-timeout", "8s")
    slow = []
    try:
        for _ in range(5000):
            s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
            s.sendall(b"G")
            slow.append(s)
        for i in range(20):
            c = socket.socket()
            c.bind(("127.0.0.2", 0))
            c.settimeout(30)
            c.connect(("127.0.0.1", t.port))
            c.sendall(f"GET /normal/{i} HTTP/1.1\r\nHost: tern.test\r\nConnection: close\r\n\r\n".encode())
            assert read_until_closed(c, 30).startswith(b"HTTP/1.1 200 "), i
            c.close()
        # Every slow connection is still waiting: the normal client did not wait for a timeout to free a buffer.
        sel = selectors.DefaultSelector()
        for s in slow:
            sel.register(s, selectors.EVENT_READ)
        assert sel.select(timeout=0) == [], "a slow connection was answered before the normal client was done"
        sel.close()
        answered = 0
        for s in slow:
            s.settimeout(30)
            got = read_until_closed(s, 30)
            assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got[:60]
            answered += 1
        assert answered == 5000
        assert len(up.requests) == 20
    finally:
        for s in slow:
            s.close()


def test_heads_in_progress_are_held_to_the_head_memory_budget(start_tern, http_upstream, backend):
    """--max-head-memory-mb 1 on one reactor: room for 11 large heads in progress (a large buffer holds the
    60 KiB head limit plus a 32 KiB receive buffer: 92 KiB). 20 clients each send 3 KiB of a head (more than a
    small 2 KiB buffer) and wait: 11 are kept, the other 9 are answered 503 `overloaded` (flag OM) with
    `connection: close` rather than given memory, counted in tern_request_heads_refused_total. A request whose
    head arrives whole takes none and is served meanwhile, and once the 11 finish their heads each gets its
    200."""
    up = http_upstream()
    prom = dead_port()
    t = start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", backend,
                   "--cores", "1", "--max-head-memory-mb", "1", "--admin", "off", "--health", "off",
                   "--prometheus", f"127.0.0.1:{prom}")
    partial = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 3000
    kept = (1 << 20) // ((60 + 32) * 1024)
    refused_n = 20 - kept
    clients = []
    try:
        for _ in range(20):
            c = RawClient(t.port, timeout=30)
            c.send(partial)
            clients.append(c)
        wait_until(lambda: prometheus_value(prom, "tern_request_heads_refused_total") >= refused_n,
                   "the heads beyond the budget were not refused", timeout=30)
        assert prometheus_value(prom, "tern_request_heads_refused_total") == refused_n
        assert RawClient(t.port).exchange("GET", "/whole").status == 200
        refused = set(select.select([c.sock for c in clients], [], [], 0)[0])
        assert len(refused) == refused_n, len(refused)
        for c in clients:
            if c.sock in refused:
                got = read_until_closed(c.sock, 10)
                assert got.startswith(b"HTTP/1.1 503 ") and b"connection: close" in got and got.endswith(b"overloaded"), got
            else:
                c.send(b"\r\n\r\n")
                assert c.read_response().status == 200
        assert prometheus_value(prom, "tern_request_heads_refused_total") == refused_n
    finally:
        for c in clients:
            c.sock.close()


def test_a_connection_that_never_sends_is_closed_after_the_first_byte_timeout(start_tern, http_upstream, backend):
    """A connection that sends nothing is closed after --first-byte-timeout, not kept for the 1 h idle timeout;
    a keep-alive connection that has sent a request is idle by the idle timeout and stays open."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--first-byte-timeout", "1s")
    served = RawClient(t.port)
    assert served.exchange("GET", "/first").status == 200
    silent = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    assert read_until_closed(silent, 20) == b"", "the silent connection got bytes"
    # Closed by Tern: the served keep-alive connection is still open and in step.
    assert served.exchange("GET", "/second").status == 200


def tern_with_descriptors(start_tern, up, backend, *extra, nofile=600):
    """An HTTP Tern on one reactor under `ulimit -n NOFILE` (a descriptor cap of NOFILE - 162: 438 for 600)
    with Prometheus on; returns it and its Prometheus port."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    prom = dead_port()
    t = start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", backend,
                   "--cores", "1", "--admin", "off", "--health", "off", "--prometheus", f"127.0.0.1:{prom}",
                   *extra, preexec_fn=limit)
    return t, prom


def prometheus_value(port, name):
    """The value of the unlabelled sample `name` on Tern's Prometheus endpoint."""
    text = httpx.get(f"http://127.0.0.1:{port}/stats/prometheus", timeout=10).text
    [line] = [l for l in text.splitlines() if l.startswith(name + " ")]
    return float(line.split()[-1])


def test_idle_keep_alive_connections_make_room_at_the_descriptor_cap(start_tern, http_upstream, backend):
    """The issue's size: under `ulimit -n 8000` Tern holds about 7,820 idle client connections (one socket
    each; the upstream connection is pooled). 10,000 clients each send a request and keep their connection
    open: every one is answered, the oldest idle connections being closed (FIN) to make room, counted in
    tern_idle_connections_evicted_total, where they used to fill the cap and stop all new service until the 1 h
    idle timeout."""
    need_descriptors(11000, "10,000 client sockets here")
    up = http_upstream()
    t, prom = tern_with_descriptors(start_tern, up, backend, nofile=8000)
    clients = []
    try:
        for i in range(10_000):
            c = RawClient(t.port)
            c.sock.settimeout(30)
            assert c.exchange("GET", f"/c/{i}").status == 200, i
            clients.append(c)
        closed = 0
        for c in clients[:100]:
            c.sock.settimeout(10)
            try:
                closed += c.sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == 100, "the oldest idle connections were not the ones closed"
        assert clients[-1].exchange("GET", "/last").status == 200, "the newest connection was closed"
        evicted = prometheus_value(prom, "tern_idle_connections_evicted_total")
        assert evicted >= 10_000 - 7_840, evicted
    finally:
        for c in clients:
            c.sock.close()


def test_idle_upstream_connections_are_closed_for_room_before_idle_clients(start_tern, http_upstream, backend):
    """Under `ulimit -n 600` (cap 438), 150 clients whose held requests each opened an upstream connection
    leave, once answered, 150 idle clients and 150 idle pooled upstream connections (300 sockets). 250 more
    clients each make a request and stay: room is made by closing idle upstream connections, which no client
    notices, and not one idle client is closed while any idle upstream connection is left to close."""
    up = http_upstream()
    t, prom = tern_with_descriptors(start_tern, up, backend, "--max-idle-upstream", "200", "--upstream-timeout", "0s")
    clients = []
    try:
        for i in range(150):
            c = RawClient(t.port, timeout=30)
            c.send(f"GET /hold/b?{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            clients.append(c)
        wait_until(lambda: len(up.requests) >= 150, "the upstream did not get the 150 held requests", timeout=30)
        up.release("b")
        assert [c.read_response().status for c in clients] == [200] * 150
        assert len(up.connections) == 150
        for i in range(250):
            c = RawClient(t.port, timeout=30)
            assert c.exchange("GET", f"/more/{i}").status == 200, i
            clients.append(c)
        assert prometheus_value(prom, "tern_idle_connections_evicted_total") == 0
        wait_until(lambda: sum(u.closed.is_set() for u in up.connections) >= 100,
                   "idle upstream connections were not closed for room", timeout=30)
        assert all(c.exchange("GET", "/again").status == 200 for c in clients[:150]), "an idle client was closed"
    finally:
        for c in clients:
            c.sock.close()


def test_descriptor_cap_with_nothing_idle_answers_503(start_tern, http_upstream, backend):
    """Under `ulimit -n 600`, 260 clients each send a request the upstream holds: the first ones fill the
    descriptor cap with their client and upstream sockets and nothing is idle to close. The rest are not left
    waiting in the listen backlog until a held request ends: after the backlog grace each is answered 503
    `connection: close` and counted in tern_connections_shed_total. Once the upstream answers, every held
    request gets its 200 and a new client is served."""
    up = http_upstream()
    t, prom = tern_with_descriptors(start_tern, up, backend, "--upstream-timeout", "0s")

    def counter(name):
        return int(prometheus_value(prom, name))
    n = 260
    clients = []
    try:
        for i in range(n):
            c = RawClient(t.port, timeout=30)
            c.send(f"GET /hold/a?{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            clients.append(c)
        # Every client is either held at the upstream or shed.
        wait_until(lambda: len(up.requests) + counter("tern_connections_shed_total") >= n,
                   "a client is neither held nor shed", timeout=60)
        held, shed = len(up.requests), counter("tern_connections_shed_total")
        assert held + shed == n, (held, shed)
        assert 150 < held < n and shed > 0, (held, shed)
        answers = {}
        readable = set(select.select([c.sock for c in clients], [], [], 0)[0])
        for s in readable:
            answers[s] = read_until_closed(s, 10)
        assert len(answers) == shed, (len(answers), shed)
        for a in answers.values():
            assert a.startswith(b"HTTP/1.1 503 ") and b"connection: close" in a and a.endswith(b"overloaded"), a
        up.release("a")
        for c in clients:
            if c.sock not in readable:
                r = c.read_response()
                assert r.status == 200, r
    finally:
        for c in clients:
            c.sock.close()
    assert RawClient(t.port).exchange("GET", "/after").status == 200


def test_requests_waiting_for_an_upstream_connection_hold_no_receive_buffer(start_tern, http_upstream, backend):
    """--max-upstream-connections 10 on one reactor: 300 clients each send a request the upstream holds, so 290
    wait in the queue, more than the reactor's 256 receive buffers. A waiting request moves its bytes out of
    the shared buffer it arrived in; when each sat in one, no buffer was left to receive the 10 responses that
    would let the queue move, and every request stalled until the stream idle timeout. Once the upstream
    answers, all 300 get their 200."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--max-upstream-connections", "10", "--upstream-timeout", "0s")
    clients = []
    try:
        for i in range(300):
            c = RawClient(t.port, timeout=30)
            c.send(f"GET /hold/q?{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            clients.append(c)
        wait_until(lambda: len(up.requests) >= 10, "the upstream did not get its 10 requests", timeout=30)
        assert len(up.requests) == 10
        up.release("q")
        statuses = [c.read_response().status for c in clients]
        assert statuses == [200] * 300, [s for s in statuses if s != 200][:5]
        assert len(up.requests) == 300
    finally:
        for c in clients:
            c.sock.close()


def keep_alive_clients_then_held_requests(t, prom, up, n=400):
    """n keep-alive clients each served once, then each sending a request the upstream holds (`/hold/a`);
    returns them once some request waits for a descriptor and the upstream holds more than the first n."""
    clients = []
    for i in range(n):
        c = RawClient(t.port, timeout=60)
        assert c.exchange("GET", f"/first/{i}").status == 200, i
        clients.append(c)
    for i, c in enumerate(clients):
        c.send(f"GET /hold/a?{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    wait_until(lambda: prometheus_value(prom, "tern_upstream_descriptor_waits_total") >= 1 and len(up.requests) > n,
               "no request waited for a descriptor", timeout=30)
    assert prometheus_value(prom, "tern_upstream_descriptor_waits_total") >= 1
    assert len(up.requests) > n, len(up.requests)
    return clients


def responses_or_lost(clients):
    """Each client's response, or None when its connection closed without one."""
    out = []
    for c in clients:
        try:
            out.append(c.read_response())
        except (ConnectionError, AssertionError):  # closed (FIN or reset) with no response
            out.append(None)
    return out


def test_requests_wait_for_a_descriptor_for_their_upstream_socket(start_tern, http_upstream, backend):
    """Under `ulimit -n 600`, 400 keep-alive clients (one socket each, one pooled upstream connection) then
    all send a request the upstream holds: each needs an upstream connection of its own, and the descriptors
    run out part way. Those requests wait for a descriptor (tern_upstream_descriptor_waits_total) instead of
    failing with 503 UF. At the cap Tern also closes keep-alive connections it sees idle, and a request sent
    on one just then is lost with it, as HTTP/1.1 allows (RFC 9112 §9.3.1): the client sends it again on a new
    connection, as clients do. Once the upstream answers, every one of the 400 requests gets its 200."""
    up = http_upstream()
    t, prom = tern_with_descriptors(start_tern, up, backend, "--upstream-timeout", "0s", "--connect-timeout", "60s")
    clients = []
    try:
        clients = keep_alive_clients_then_held_requests(t, prom, up)
        up.release("a")
        responses = responses_or_lost(clients)
        assert all(r.status == 200 for r in responses if r is not None), [r for r in responses if r and r.status != 200][:3]
        lost = [i for i, r in enumerate(responses) if r is None]
        assert len(lost) <= prometheus_value(prom, "tern_idle_connections_evicted_total"), len(lost)
        for i in lost:
            assert RawClient(t.port, timeout=30).exchange("GET", f"/hold/a?again{i}").status == 200, i
    finally:
        for c in clients:
            c.sock.close()


def test_a_request_waits_for_a_descriptor_no_longer_than_the_connect_timeout(start_tern, http_upstream, backend):
    """As above, but the upstream keeps holding: the requests waiting for a descriptor are answered 503 UF once
    --connect-timeout (1 s) has passed, as a connect that never completed, so no client is left waiting; the
    requests the upstream holds are then answered 200 when it lets them go."""
    up = http_upstream()
    t, prom = tern_with_descriptors(start_tern, up, backend, "--upstream-timeout", "0s", "--connect-timeout", "1s")
    clients = []
    try:
        clients = keep_alive_clients_then_held_requests(t, prom, up)
        by_sock = {c.sock: c for c in clients}
        answered, refused = set(), 0
        # Every client ends up either held by the upstream (its request got a connection), answered 503 UF (it
        # waited for a descriptor past the connect timeout), or closed before its request was read (an idle
        # connection closed for room): none is left waiting.
        deadline = time.time() + 30
        while len(answered) < 400 - (len(up.requests) - 400) and time.time() < deadline:
            for sock in select.select([s for s in by_sock if s not in answered], [], [], 0.5)[0]:
                answered.add(sock)
                try:
                    r = by_sock[sock].read_response()
                except (ConnectionError, AssertionError):
                    continue  # an idle connection closed for room before its request was read
                assert r.status == 503 and r.body == ENVOY_503_BODY["UF"], r
                refused += 1
        assert len(answered) == 400 - (len(up.requests) - 400), (len(answered), len(up.requests))
        assert 0 < refused <= prometheus_value(prom, "tern_upstream_descriptor_waits_total"), refused
        up.release("a")
        held = [r for r in responses_or_lost([c for c in clients if c.sock not in answered]) if r is not None]
        assert held and all(r.status == 200 for r in held), [r.status for r in held if r.status != 200][:3]
    finally:
        for c in clients:
            c.sock.close()


def test_idle_upstream_pool_is_capped(start_tern, http_upstream, backend):
    """--max-idle-upstream 1: after three concurrent requests needed three upstream connections, only one
    is kept idle; the other two are closed once their requests end."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--max-idle-upstream", "1")
    threads = [threading.Thread(target=curl, args=(t.port, "/delay/500")) for _ in range(3)]
    [th.start() for th in threads]
    [th.join(10) for th in threads]
    assert up.accepted == 3
    closed = [conn.closed.wait(3) for conn in up.connections]
    assert sorted(closed) == [False, True, True], closed


def test_local_reply_before_the_body_was_read_closes(start_tern, backend):
    """A 503 (UF) answered before the request body was read says `connection: close` and closes: the unread
    rest of the body must not be taken for a next request."""
    t = start_tern("--http", "--io-backend", backend, "--cores", "1", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{dead_port()}")
    c = RawClient(t.port)
    r = c.exchange("POST", "/upload", body=b"x" * 100_000)
    assert r.status == 503 and r.body == ENVOY_503_BODY["UF"], r
    assert "close" in (r.header("connection") or "").lower(), r
    c.wait_closed()


# ---------------------------------------------------------------------------------------------------------
# Slow clients
# ---------------------------------------------------------------------------------------------------------

def read_until_closed(sock, timeout):
    """Everything the peer sends until it closes (FIN or RST); fails if it stays open past `timeout`."""
    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return out
            out += data
    except ConnectionResetError:
        return out
    except socket.timeout:
        raise AssertionError(f"still open after {timeout} s (got {out[:200]!r})") from None


def test_timeouts_count_from_their_own_request_on_a_kept_alive_connection(start_tern, http_upstream, backend):
    """Tern's timers are set once and re-checked when they fire: each must still measure from its own
    request. Requests that keep a connection busy past the idle and header timeouts do not trip them; then
    a slow head on that same connection is cut 1 s after its first byte (408), not earlier."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--request-header-timeout", "1s", "--idle-timeout", "1s")
    c = RawClient(t.port)
    start = time.time()
    while time.time() - start < 2.5:
        r = c.exchange("GET", "/delay/300")
        assert r.status == 200, r
        time.sleep(0.5)  # idle, but for less than --idle-timeout
    c.send(b"GET /slow HTTP/1.1\r\nHost: tern.test\r\n")
    sent = time.time()
    got = read_until_closed(c.sock, timeout=10)
    assert 0.9 < time.time() - sent < 2.5
    assert got.startswith(b"HTTP/1.1 408 "), got


def test_slow_request_head_is_cut_after_request_header_timeout(start_tern, http_upstream, backend):
    """Half a head, then silence: with --request-header-timeout 1s the connection is closed (after a 408, or
    at once) within 1-3 s (Envoy's request_headers_timeout), and the upstream receives nothing."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--request-header-timeout", "1s")
    c = RawClient(t.port)
    c.send(b"GET /slow HTTP/1.1\r\nHost: tern.test\r\n")
    start = time.time()
    got = read_until_closed(c.sock, timeout=10)
    elapsed = time.time() - start
    assert 0.8 < elapsed < 3.5, elapsed
    assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got
    assert up.received == 0


def test_trickled_request_head_is_cut_at_request_header_timeout(start_tern, http_upstream, backend):
    """A head sent a byte every 100 ms (slowloris) is cut when --request-header-timeout has passed since its
    first byte, however steadily bytes keep coming (the timeout bounds the whole head, as Envoy's does)."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--request-header-timeout", "1s")
    c = RawClient(t.port)
    head = b"GET /trickle HTTP/1.1\r\nHost: tern.test\r\n" + b"X-Pad: " + b"p" * 200
    start = time.time()
    closed_after = None
    for byte in head:
        try:
            c.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.time() - start
            break
        readable, _, _ = select.select([c.sock], [], [], 0.1)
        if readable:
            try:
                data = c.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data
            closed_after = time.time() - start
            break
    assert closed_after is not None, "the trickled head was never cut"
    assert 0.8 < closed_after < 3.5, closed_after
    assert up.received == 0


# ---------------------------------------------------------------------------------------------------------
# Expect: 100-continue and responses without a body
# ---------------------------------------------------------------------------------------------------------

def test_expect_100_continue_with_curl(start_tern, http_upstream, backend, tmp_path):
    """curl sends `Expect: 100-continue` and waits for the interim response before its body (RFC 9110
    §10.1.1). A 100 reaches it (whether Tern makes it, as Envoy does, or relays the upstream's), so curl
    does not sit out its 5 s wait, and the body arrives intact."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    data = b"".join(stream_bytes(64 * 1024))
    f = tmp_path / "body"
    f.write_bytes(data)
    start = time.time()
    status, body = curl(t.port, "/sha256", "-H", "Expect: 100-continue", "--expect100-timeout", "5",
                        "--data-binary", f"@{f}", "-H", "Content-Type: application/octet-stream")
    assert time.time() - start < 3, "no 100 Continue: curl waited out its expect timeout"
    assert status == 200
    assert json.loads(body) == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_expect_100_continue_interim_response_comes_before_the_body(start_tern, http_upstream, backend):
    """On the wire: the head with `Expect: 100-continue` alone gets `HTTP/1.1 100 Continue`; then the body
    is sent and the final response follows on the same connection."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    data = b"x" * 2000
    c.send(build_request("POST", "/sha256", [("Content-Length", str(len(data))), ("Expect", "100-continue")]))
    c.sock.settimeout(3)
    interim = b""
    while b"\r\n\r\n" not in interim:
        more = c.sock.recv(4096)
        assert more, f"closed instead of 100 Continue: {interim!r}"
        interim += more
    assert interim.startswith(b"HTTP/1.1 100 "), interim
    c.buffer = interim.split(b"\r\n\r\n", 1)[1]
    c.send(data)
    r = c.read_response("POST")
    assert r.status == 200, r
    assert json.loads(r.body) == {"length": 2000, "sha256": hashlib.sha256(data).hexdigest()}


def test_bodiless_responses_keep_the_connection_in_step(start_tern, http_upstream, backend):
    """Responses to HEAD (with Content-Length or chunked framing headers), 204 and 304 (with a
    Content-Length) have no body (RFC 9112 §6.3 rules 1-2): Tern forwards none and expects none, so the next
    request on the same client and upstream connections is answered correctly."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    r = c.exchange("HEAD", "/bytes/1000")
    assert (r.status, r.body, r.header("content-length")) == (200, b"", "1000"), r
    r = c.exchange("HEAD", "/bytes/5000?framing=chunked")
    assert (r.status, r.body) == (200, b""), r
    r = c.exchange("GET", "/status/204")
    assert (r.status, r.body) == (204, b""), r
    r = c.exchange("GET", "/status/304")
    assert (r.status, r.body) == (304, b""), r
    r = c.exchange("GET", "/bytes/100")
    assert (r.status, r.body) == (200, BLOCK[:100]), r
    assert up.accepted == 1


# ---------------------------------------------------------------------------------------------------------
# Tunnels: WebSocket and CONNECT
# ---------------------------------------------------------------------------------------------------------

def test_websocket_upgrade_becomes_a_tunnel(start_tern, http_upstream, backend):
    """`Upgrade: websocket` passes through with its Connection option (RFC 9110 §7.8; Envoy with the
    websocket upgrade enabled, as Istio configures it); after the 101 the connection is a two-way tunnel:
    messages of every size echo back intact."""
    from websockets.sync.client import connect

    ws = http_upstream(WebSocketEcho)
    t = proxy(start_tern, ws, backend)
    with connect(f"ws://127.0.0.1:{t.port}/chat", proxy=None, compression=None, max_size=None,
                 open_timeout=10, close_timeout=5) as client:
        client.send("hello through tern")
        assert client.recv(timeout=10) == "hello through tern"
        for i in range(20):
            client.send(f"message {i}")
        assert [client.recv(timeout=10) for _ in range(20)] == [f"message {i}" for i in range(20)]
        big = b"".join(stream_bytes(4 * MiB))
        client.send(big)
        assert client.recv(timeout=30) == big
    [req] = ws.requests
    assert req.headers["Upgrade"].lower() == "websocket"
    assert "upgrade" in req.headers["Connection"].lower()
    assert req.headers["Sec-WebSocket-Key"]


def test_connect_gives_200_and_a_tunnel(start_tern, http_upstream, backend):
    """`CONNECT host:port` to the upstream's address: a 2xx, then the connection is a raw two-way tunnel to
    the upstream (RFC 9110 §9.3.6)."""
    up = http_upstream(TunnelEcho)
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    c.send(build_request("CONNECT", up.address, host=up.address))
    r = c.read_response("CONNECT")
    assert 200 <= r.status < 300, r
    # The connection becomes the tunnel: the 2xx says nothing of closing it (it is not a message's end).
    assert r.header("connection") is None, r
    assert c.buffer == b""
    payload = b"".join(stream_bytes(MiB)) + b"GET / HTTP/1.1\r\n\r\n"  # anything, even HTTP-looking bytes
    c.send(payload)
    got = b""
    while len(got) < len(payload):
        data = c.sock.recv(1 << 20)
        assert data, f"tunnel closed after {len(got)} bytes"
        got += data
    assert got == payload
    c.sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(c.sock, timeout=5) == b""


def test_request_trailers_are_dropped(start_tern, http_upstream, backend):
    """A chunked request's trailer section goes no further (as Envoy's HTTP/1 codec drops trailers by default):
    fields RFC 9110 §6.5.1 forbids there (Content-Length, Host, Transfer-Encoding, …) can never reach an
    upstream that might act on them. The body arrives whole, ended by the empty line alone, also when the
    trailer section comes in pieces, and the connection stays in step for the next request."""
    import hashlib
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    head = b"POST /sha256 HTTP/1.1\r\nHost: tern.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    c.send(head + b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nContent-Length: 9\r\nHost: evil\r\n\r\n")
    r = c.read_response()
    assert r.status == 200 and hashlib.sha256(b"abc").hexdigest() in r.body.decode(), r
    # The trailer section in a receive of its own: sent once Tern has forwarded the last chunk (the upstream has
    # it), a field line per send.
    c.send(head + b"2\r\nxy\r\n0\r\n")
    wait_until(lambda: up.all_raw().endswith(b"2\r\nxy\r\n0\r\n"), "the last chunk never reached the upstream")
    for piece in (b"Transfer-Encoding: chunked\r\n", b"X-Late: 2\r\n", b"\r\n"):
        c.send(piece)
    r = c.read_response()
    assert r.status == 200 and hashlib.sha256(b"xy").hexdigest() in r.body.decode(), r
    raw = up.all_raw()
    for field in (b"X-Trailer", b"Content-Length: 9", b"Host: evil", b"X-Late", b"Transfer-Encoding: chunked\r\nX"):
        assert field not in raw, field
    assert b"\r\n\r\n3\r\nabc\r\n0\r\n\r\nPOST " in raw and raw.endswith(b"\r\n\r\n2\r\nxy\r\n0\r\n\r\n"), raw[-200:]
    assert c.exchange("GET", "/after").status == 200


def test_identical_content_lengths_reach_the_upstream_once(start_tern, http_upstream, backend):
    """A request with its Content-Length repeated (two identical lines, or a list `3, 3`) is accepted, as RFC
    9110 §8.6 allows, and goes upstream with one Content-Length of one value, so no peer can read the framing
    another way."""
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    for fields in (b"Content-Length: 3\r\nContent-Length: 3\r\n", b"Content-Length: 3, 3\r\n"):
        c.send(b"POST /sha256 HTTP/1.1\r\nHost: tern.test\r\n" + fields + b"\r\nabc")
        r = c.read_response()
        assert r.status == 200, r
    assert [r.header_values("content-length") for r in up.requests] == [["3"], ["3"]]


def test_large_content_length_bodies_are_spliced(start_tern, http_upstream, backend):
    """A Content-Length body with 64 KiB or more left after its head moves socket → pipe → socket (the debug
    log says so), both ways, intact (SHA-256), and the connections stay usable afterwards."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--log-level", "debug")
    c = RawClient(t.port)
    body = b"".join(stream_bytes(3 * MiB))
    r = c.exchange("POST", "/sha256", body=body)
    assert r.status == 200, r
    assert json.loads(r.body) == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    r = c.exchange("GET", f"/bytes/{3 * MiB}")
    assert r.status == 200 and r.body == b"".join(stream_bytes(3 * MiB))
    assert c.exchange("GET", "/after").body == b"/after"
    assert up.accepted == 1
    c.sock.close()
    t.stop()
    t.rest()
    assert re.search(r"request body spliced: \d{7} bytes", t.log()), "the upload was not spliced"
    assert re.search(r"response body spliced: \d{7} bytes", t.log()), "the download was not spliced"


def test_tunnel_is_spliced(start_tern, http_upstream, backend):
    """Once the 2xx to CONNECT went out with nothing read beyond it, both sockets go to the splice relay: the
    tunnel's bytes move socket → pipe → socket like any relayed TCP connection (the debug log says so), and
    the tunnel still carries 8 MiB both ways and ends with a clean half-close."""
    up = http_upstream(TunnelEcho)
    t = proxy(start_tern, up, backend, "--log-level", "debug")
    c = RawClient(t.port)
    c.send(build_request("CONNECT", up.address, host=up.address))
    r = c.read_response("CONNECT")
    assert 200 <= r.status < 300, r
    payload = b"".join(stream_bytes(8 * MiB))
    sender = threading.Thread(target=c.sock.sendall, args=(payload,))
    sender.start()
    got = bytearray()
    while len(got) < len(payload):
        data = c.sock.recv(1 << 20)
        assert data, f"tunnel closed after {len(got)} bytes"
        got += data
    sender.join(10)
    assert bytes(got) == payload
    c.sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(c.sock, timeout=5) == b""
    t.stop()
    t.rest()
    assert "tunnel handed to the splice relay" in t.log()


# ---------------------------------------------------------------------------------------------------------
# Draining under load
# ---------------------------------------------------------------------------------------------------------

def test_sigterm_under_keep_alive_load_answers_every_accepted_request(start_tern, http_upstream, backend):
    """Four clients send keep-alive requests back to back; SIGTERM arrives mid-stream. Every request gets
    either its correct response or a refused connection before it was sent (httpx.ConnectError): none is
    cut after its bytes were written (a reset or a close without answer fails the test), which is what
    Envoy's drain gives HTTP/1.1 (`Connection: close` on the responses, then close). Tern exits 0 within
    --drain-timeout."""
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--drain-timeout", "5s")
    served, failures, refused = [0], [], [0]
    sigterm = threading.Event()
    lock = threading.Lock()

    def client(k):
        deadline = time.time() + 30
        with http_client(t.port, timeout=10) as c:
            for i in range(5000):
                if time.time() > deadline:
                    failures.append(f"client {k}: still being served 30 s on")
                    return
                n = (k * 1009 + i * 7) % 3000
                try:
                    r = c.get(f"/bytes/{n}")
                except httpx.ConnectError as e:
                    if sigterm.is_set():
                        with lock:
                            refused[0] += 1
                    else:
                        failures.append(f"client {k} request {i}: {e!r} before SIGTERM")
                    return
                except httpx.HTTPError as e:
                    failures.append(f"client {k} request {i}: {e!r} (after SIGTERM: {sigterm.is_set()})")
                    return
                if r.status_code != 200 or r.content != BLOCK[:n]:
                    failures.append(f"client {k} request {i}: {r.status_code} with {len(r.content)} bytes")
                    return
                with lock:
                    served[0] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    deadline = time.time() + 15
    while served[0] < 200 and time.time() < deadline and not failures:
        time.sleep(0.01)
    assert served[0] >= 200, f"only {served[0]} requests served before SIGTERM: {failures}"
    sigterm.set()
    start = time.time()
    t.signal(signal.SIGTERM)
    for th in threads:
        th.join(40)
    code = t.wait(15)
    elapsed = time.time() - start
    assert failures == []
    assert refused[0] == 4, "every client ends on a refused connection once Tern stops accepting"
    assert code == 0
    assert elapsed < 5 + 2, f"exited {elapsed:.1f} s after SIGTERM with --drain-timeout 5s"


# ---------------------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------------------

BAD_HTTP_FLAGS = [
    ["--upstream-timeout", "15"],
    ["--request-header-timeout", "soon"],
    ["--stream-idle-timeout=-1s"],
    ["--xff-trusted-hops=-1"],
    ["--xff-trusted-hops", "many"],
    ["--max-request-headers-kb=-5"],
    ["--max-request-headers-count", "lots"],
    ["--max-uri-kb", "x"],
    ["--max-pending-requests=-1"],
    ["--max-idle-upstream", "some"],
    ["--labels", "app"],
    ["--http2-max-concurrent-streams", "0"],
    ["--http2-connection-window-kb", "1"],
    ["--http2-max-frame-size", "100"],
    ["--labels", "app=a b"],
    ["--locality", "r1//z1/s1/x"],
    ["--locality", "r1/z1", "--labels", "topology.kubernetes.io/region=r2"],
]


@pytest.mark.parametrize("flags", BAD_HTTP_FLAGS, ids=[" ".join(f) for f in BAD_HTTP_FLAGS])
def test_bad_http_flag_values_exit_64_with_one_line(flags):
    """A bad value for an HTTP flag: exit 64 and one stderr line naming the flag, as for every other flag."""
    r = subprocess.run([tern_bin(), "proxy", "--http", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                        *flags], capture_output=True, timeout=20)
    assert r.returncode == 64, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert flags[0].split("=")[0] in lines[0]


def test_http10_is_answered_426_unless_accepted_and_then_needs_a_host(start_tern, http_upstream, backend):
    """As Envoy and Istio by default (`accept_http_10: false`): an HTTP/1.0 request is answered 426 Upgrade
    Required and nothing reaches the upstream. With --accept-http-10 it is proxied (upstream as HTTP/1.1) when it
    has a Host, and answered 400 when it has none (it would otherwise go upstream as HTTP/1.1 without one)."""
    up = http_upstream()
    for accept, head, status in [(False, b"GET /a HTTP/1.0\r\nHost: tern.test\r\n\r\n", 426),
                                 (True, b"GET /b HTTP/1.0\r\nHost: tern.test\r\n\r\n", 200),
                                 (True, b"GET /c HTTP/1.0\r\n\r\n", 400)]:
        extra = ("--accept-http-10",) if accept else ()
        t = start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", backend, *extra)
        with socket.create_connection(("127.0.0.1", t.port), timeout=10) as c:
            c.sendall(head)
            got = read_until_closed(c, 10)
        assert got.split(b" ", 2)[1] == str(status).encode(), (head, got[:80])
        t.stop()
    assert up.paths() == ["/b"]
    [r] = up.requests
    assert r.header_values("host") == ["tern.test"]


@pytest.mark.parametrize("chunk", [65536, 7])
def test_chunked_response_to_http10_client_is_dechunked(start_tern, http_upstream, backend, chunk):
    """RFC 9112 §6.1: no Transfer-Encoding to an HTTP/1.0 client. A chunked response reaches it as the chunks'
    data only, delimited by the close (large chunks, and 7-byte chunks: thousands per receive buffer, more than
    one send's iovecs can carry), the trailer dropped, every byte intact."""
    up = http_upstream()
    t = start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", backend,
                   "--accept-http-10")
    n = 300_000
    with socket.create_connection(("127.0.0.1", t.port), timeout=10) as c:
        c.sendall(b"GET /bytes/%d?framing=chunked&chunk=%d HTTP/1.0\r\nHost: tern.test\r\n\r\n" % (n, chunk))
        data = b""
        while True:
            got = c.recv(1 << 16)
            if not got:
                break
            data += got
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert b"x-trailer" not in body
    assert body == b"".join(stream_bytes(n))
