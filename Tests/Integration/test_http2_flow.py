"""HTTP/2 flow control against slow readers (issue 17): 1 GiB streams through Tern, with a peer that reads late,
slowly or not at all for a while, on either side and in either direction:

    a. an h2c client uploads to an HTTP/1.1 upstream that starts reading 2 s late;
    b. an h2c client downloads from an HTTP/1.1 upstream, its window held shut for a while, then reads at full speed;
    c. an HTTP/1.1 client downloads from an h2 upstream, reading nothing for a while, then slowly, then at full speed;
    d. an HTTP/1.1 client uploads to an h2 upstream that withholds its WINDOW_UPDATEs until the test opens a gate;
    e. ten h2c connections open 100 streams each and read nothing, while other clients must still be served
       (they wedged the reactor until streams under way were bounded: `h2MayOpen`).

A stream's window (65,535 bytes) reopens only as Tern forwards what it got, so Tern's memory stays bounded
whichever side is slow. Each test checks the bytes (length and sha256 of what arrived), that the slow side held
the other back (what the fast side could hand Tern while held is bounded by Tern's buffers and the kernel's socket
buffers: tcp_rmem allows up to 32 MiB here), and Tern's resident memory while held and at its peak (sampled every
20 ms over the whole test): under 64 MiB, as for the HTTP/1.1 upload of test_http_proxy. Nothing asserts on
timing: the held state is recognised by a condition (the window spent, the fast side unable to send for
`STALL` seconds), and every loop is bounded by a deadline that only turns a hang into a failure.
"""
import hashlib
import json
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest

from h2_peers import H2Upstream
from http_peers import HttpUpstream
from peers import stream_bytes, stream_sha256
from test_http2_upstream import mesh, start
from test_http_proxy import PeakRSS, proxy, vm_rss

pytestmark = pytest.mark.large

MiB = 1 << 20
GiB = 1 << 30
RSS_LIMIT = 64 * MiB
# What the fast side may have handed Tern while the slow side held it back: Tern's buffers (1 MiB a connection)
# and the kernel's socket buffers on both of Tern's sides (tcp_rmem's maximum is 32 MiB here, tcp_wmem's 4 MiB).
HELD_LIMIT = 64 * MiB
STALL = 0.3  # seconds a sender waits with nothing taken before it counts as held back
DEADLINE = 100  # seconds for a whole test: a bound on every loop (a hang fails), never a measure
WINDOW = 65_535  # HTTP/2's initial window, stream and connection, on every side here


def mib(n):
    return f"{n / MiB:.1f} MiB"


def report(case, backend, held, rss_held, peak):
    """One line of figures per test (shown with pytest -s)."""
    print(f"\n[{case} {backend}] {held}; tern resident {mib(rss_held)} when held, peak {mib(peak)}")


class Deadline:
    def __init__(self, seconds=DEADLINE):
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def check(self, what):
        assert time.monotonic() < self.end, f"not done within {self.seconds} s: {what()}"


class FlowClient:
    """A frame-level h2c client (Python's h2) for one large stream: it hashes what it receives and acknowledges it
    (reopening the windows) only while `acknowledging` is set; what it held back is acknowledged by `reopen()`."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()
        self.head, self.ended, self.reset, self.goaway = None, False, None, None
        self.received, self.unacknowledged, self.acknowledging = 0, 0, True
        self.digest = hashlib.sha256()
        self.sid = None
        self.body = bytearray()  # a small answer's body (kept up to 64 KiB; the digest covers everything)

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", headers=(), end=True):
        self.sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(self.sid, [(":method", method), (":scheme", "http"), (":authority", "svc"),
                                          (":path", path), *headers], end_stream=end)
        self.flush()
        return self.sid

    def pump(self, timeout=10):
        """Reads once (waiting at most `timeout` s) and handles the frames; False when nothing came in time."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        if not data:
            raise ConnectionError(f"Tern closed the connection (received {self.received} bytes)")
        for e in self.conn.receive_data(data):
            if isinstance(e, h2.events.ResponseReceived):
                self.head = dict(e.headers)
            elif isinstance(e, h2.events.DataReceived):
                self.digest.update(e.data)
                self.received += len(e.data)
                if len(self.body) < 65536:
                    self.body += e.data[:65536 - len(self.body)]
                if self.acknowledging:
                    self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                else:
                    self.unacknowledged += e.flow_controlled_length
            elif isinstance(e, h2.events.StreamEnded):
                self.ended = True
            elif isinstance(e, h2.events.StreamReset):
                self.reset = e.error_code
            elif isinstance(e, h2.events.ConnectionTerminated):
                self.goaway = e.error_code
        self.flush()
        return True

    def reopen(self):
        self.acknowledging = True
        if self.unacknowledged:
            self.conn.acknowledge_received_data(self.unacknowledged, self.sid)
            self.unacknowledged = 0
            self.flush()

    def check(self):
        assert self.reset is None and self.goaway is None, (f"stream reset {self.reset}, GOAWAY {self.goaway} "
                                                            f"after {self.received} bytes")

    def close(self):
        self.sock.close()


class CountingUpstream(HttpUpstream):
    """HttpUpstream whose `/bytes/N` (Content-Length framing) counts what it sent (`sent`) and sets `stalled` once
    a send waited STALL seconds with nothing taken by Tern."""

    def __init__(self):
        self.sent = 0
        self.stalled = threading.Event()
        super().__init__()

    def answer_bytes(self, ex, n, framing):
        assert framing == "content-length"
        ex.read_body()
        ex.send(ex.head(200, [("Content-Length", str(n)), ("Content-Type", "application/octet-stream")]))
        sock = ex.conn.sock
        sock.settimeout(STALL)
        deadline = Deadline()
        try:
            for block in stream_bytes(n):
                view = memoryview(block)
                while view:
                    try:
                        k = sock.send(view)
                    except socket.timeout:
                        self.stalled.set()
                        deadline.check(lambda: f"the upstream sent {self.sent} bytes")
                        continue
                    view = view[k:]
                    self.sent += k
        finally:
            sock.settimeout(None)
        return True


@pytest.fixture
def http_up():
    peers = []

    def make(cls=HttpUpstream):
        u = cls()
        peers.append(u)
        return u

    yield make
    for u in peers:
        u.stop()
    for u in peers:
        assert not u.failures, u.failures


@pytest.fixture
def h2_up():
    u = H2Upstream(stall_seconds=STALL)
    yield u
    u.stop()


def test_a_an_h2_upload_to_an_http11_upstream_that_reads_late(start_tern, http_up, backend):
    """An h2c client uploads 1 GiB to an HTTP/1.1 upstream that reads nothing for its first 2 s. Tern reopens the
    stream's window only as it forwards, so once its buffers and the kernel's are full the client's window stays
    shut (no WINDOW_UPDATE for STALL s) with a bounded part of the body sent; then the whole body arrives intact."""
    up = http_up()
    # (--upstream-timeout 0s: no route timeout to race, the answer comes once the body is in.)
    t = proxy(start_tern, up, backend, "--upstream-timeout", "0s")
    deadline = Deadline()
    held = None
    with PeakRSS(t.proc.pid) as rss:
        c = FlowClient(t.port)
        try:
            sid = c.request("/sha256?pause_ms=2000", method="POST", headers=[("content-length", str(GiB))],
                            end=False)
            sent, unsent = 0, 0
            for block in stream_bytes(GiB):
                view = memoryview(block)
                while view:
                    window = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
                    if window <= 0:
                        c.flush()
                        unsent = 0
                        if not c.pump(timeout=STALL) and held is None:
                            # The window shut and no WINDOW_UPDATE came: Tern holds the client back.
                            held = (sent, vm_rss(t.proc.pid), sum(r.body_length for r in up.requests))
                        c.check()
                        deadline.check(lambda: f"the client sent {sent} bytes")
                        continue
                    n = min(window, len(view))
                    c.conn.send_data(sid, view[:n].tobytes())
                    view = view[n:]
                    sent += n
                    unsent += n
                    if unsent >= WINDOW:
                        c.flush()
                        unsent = 0
            c.conn.end_stream(sid)
            c.flush()
            while not c.ended:
                c.pump()
                c.check()
                deadline.check(lambda: "the answer")
        finally:
            c.close()
    assert c.head[":status"] == "200", c.head
    assert json.loads(bytes(c.body)) == {"length": GiB, "sha256": stream_sha256(GiB)}
    assert held is not None, "the client's window never stayed shut while the upstream read nothing"
    sent_held, rss_held, upstream_read = held
    report("a", backend, f"client sent {mib(sent_held)} when held", rss_held, rss.peak)
    assert upstream_read == 0, f"the upstream had read {upstream_read} bytes of the body before the client was held"
    assert sent_held < HELD_LIMIT, f"the client could send {mib(sent_held)} while the upstream read nothing"
    assert rss_held < RSS_LIMIT, f"tern held {mib(rss_held)} resident while the upstream read nothing"
    assert rss.peak < RSS_LIMIT, f"tern reached {mib(rss.peak)} resident"


def test_b_an_h2_download_from_an_http11_upstream_with_the_window_held_shut(start_tern, http_up, backend):
    """An h2c client asks for 1 GiB from an HTTP/1.1 upstream and acknowledges nothing: it gets its window's
    65,535 bytes and no more, and Tern stops reading the upstream (whose send then waits STALL s with nothing
    taken) having taken a bounded part of the body; then the client reopens its window and reads the rest at full
    speed, intact."""
    up = http_up(CountingUpstream)
    t = proxy(start_tern, up, backend, "--upstream-timeout", "0s")
    deadline = Deadline()
    with PeakRSS(t.proc.pid) as rss:
        c = FlowClient(t.port)
        try:
            c.acknowledging = False
            c.request(f"/bytes/{GiB}")
            # (h2 fails the connection on DATA beyond the window: the client cannot get more than it allowed.)
            while c.received < WINDOW:
                c.pump()
                c.check()
                deadline.check(lambda: f"the first window ({c.received} bytes)")
            assert up.stalled.wait(DEADLINE), f"the upstream was never held back (it sent {up.sent} bytes)"
            sent_held, rss_held = up.sent, vm_rss(t.proc.pid)
            assert c.received == WINDOW
            c.reopen()
            while not c.ended:
                c.pump()
                c.check()
                deadline.check(lambda: f"the rest ({c.received} bytes)")
        finally:
            c.close()
    report("b", backend, f"upstream sent {mib(sent_held)} when held", rss_held, rss.peak)
    assert c.head[":status"] == "200" and c.head.get("content-length") == str(GiB), c.head
    assert (c.received, c.digest.hexdigest()) == (GiB, stream_sha256(GiB))
    assert sent_held < HELD_LIMIT, f"the upstream could send {mib(sent_held)} while the client's window was shut"
    assert rss_held < RSS_LIMIT, f"tern held {mib(rss_held)} resident while the client's window was shut"
    assert rss.peak < RSS_LIMIT, f"tern reached {mib(rss.peak)} resident"


def read_head(sock, deadline):
    """Reads an HTTP/1.1 response head from a raw socket: (status, fields, the body bytes read with it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the head: {data!r}"
        data += chunk
        deadline.check(lambda: "the response head")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), fields, rest


def test_c_an_http11_download_from_an_h2_upstream_read_late_then_slowly(start_tern, h2_up, backend, tmp_path):
    """An HTTP/1.1 client asks for 1 GiB from an h2 upstream and reads nothing: Tern stops reopening the upstream
    stream's window once the client's socket is full, so the upstream waits for a WINDOW_UPDATE (STALL s with none)
    having sent a bounded part of the body; then the client reads slowly (64 reads of at most 4 KiB), then at full
    speed, and gets the whole body intact."""
    t = start(start_tern, backend, mesh(tmp_path, h2_up.port))
    deadline = Deadline()
    with PeakRSS(t.proc.pid) as rss:
        sock = socket.create_connection(("127.0.0.1", t.port), timeout=30)
        try:
            sock.sendall(f"GET /bytes/{GiB} HTTP/1.1\r\nHost: svc\r\n\r\n".encode())
            assert h2_up.stalled.wait(DEADLINE), f"the upstream was never held back (it sent {h2_up.sent} bytes)"
            sent_held, rss_held = h2_up.sent, vm_rss(t.proc.pid)
            status, fields, body = read_head(sock, deadline)
            assert status == 200 and fields.get("content-length") == str(GiB), (status, fields)
            digest, count = hashlib.sha256(body), len(body)
            for _ in range(64):  # slowly: small reads
                chunk = sock.recv(4096)
                assert chunk, f"closed after {count} bytes"
                digest.update(chunk)
                count += len(chunk)
            while count < GiB:  # at full speed
                chunk = sock.recv(min(1 << 20, GiB - count))
                assert chunk, f"closed after {count} bytes"
                digest.update(chunk)
                count += len(chunk)
                deadline.check(lambda: f"the body ({count} bytes)")
        finally:
            sock.close()
    report("c", backend, f"upstream sent {mib(sent_held)} when held", rss_held, rss.peak)
    assert (count, digest.hexdigest()) == (GiB, stream_sha256(GiB))
    assert sent_held < HELD_LIMIT, f"the upstream could send {mib(sent_held)} while the client read nothing"
    assert rss_held < RSS_LIMIT, f"tern held {mib(rss_held)} resident while the client read nothing"
    assert rss.peak < RSS_LIMIT, f"tern reached {mib(rss.peak)} resident"


def test_d_an_http11_upload_to_an_h2_upstream_that_withholds_its_window_updates(start_tern, h2_up, backend, tmp_path):
    """An HTTP/1.1 client uploads 1 GiB to an h2 upstream that acknowledges nothing until the test opens its gate:
    Tern sends the upstream what its windows allow (65,535 bytes) and, its buffers full, stops reading the client
    (whose send then waits STALL s with nothing taken) having taken a bounded part of the body; the gate opens and
    the whole body arrives intact."""
    t = start(start_tern, backend, mesh(tmp_path, h2_up.port))
    deadline = Deadline()
    held = None
    with PeakRSS(t.proc.pid) as rss:
        sock = socket.create_connection(("127.0.0.1", t.port), timeout=30)
        try:
            sock.sendall(f"POST /sha256?withhold=1 HTTP/1.1\r\nHost: svc\r\nContent-Length: {GiB}\r\n\r\n".encode())
            sock.settimeout(STALL)
            sent = 0
            for block in stream_bytes(GiB):
                view = memoryview(block)
                while view:
                    try:
                        n = sock.send(view)
                    except socket.timeout:
                        # Nothing taken for STALL s, and the upstream's windows spent: Tern holds the client back.
                        if held is None and h2_up.withheld >= WINDOW:
                            held = (sent, vm_rss(t.proc.pid), h2_up.body_received)
                            h2_up.open_gate()
                        deadline.check(lambda: f"the client sent {sent} bytes, the upstream got "
                                               f"{h2_up.body_received}")
                        continue
                    view = view[n:]
                    sent += n
            sock.settimeout(30)
            status, fields, body = read_head(sock, deadline)
            assert "content-length" in fields, (status, fields, body)
            while len(body) < int(fields["content-length"]):
                chunk = sock.recv(65536)
                assert chunk, f"closed inside the answer: {body!r}"
                body += chunk
                deadline.check(lambda: "the answer")
        finally:
            sock.close()
    assert status == 200, (status, fields, body)
    assert json.loads(body) == {"length": GiB, "sha256": stream_sha256(GiB)}
    assert held is not None, "the client was never held back while the upstream withheld its window updates"
    sent_held, rss_held, upstream_got = held
    report("d", backend, f"client sent {mib(sent_held)} when held, upstream got {upstream_got} B", rss_held, rss.peak)
    assert upstream_got == WINDOW, f"the upstream got {upstream_got} bytes against a window of {WINDOW}"
    assert sent_held < HELD_LIMIT, f"the client could send {mib(sent_held)} while the upstream's window was shut"
    assert rss_held < RSS_LIMIT, f"tern held {mib(rss_held)} resident while the upstream's window was shut"
    assert rss.peak < RSS_LIMIT, f"tern reached {mib(rss.peak)} resident"


def test_e_streams_nobody_reads_do_not_starve_other_clients(start_tern, http_up, backend):
    """Ten h2c connections each open 100 streams asking for 1 MiB and read nothing (no window ever reopened). Tern
    holds each stream to its window and each connection to its share of buffers, so a client that reads nothing
    holds up only itself: another h2c client and an HTTP/1.1 client are served meanwhile, and once the ten are gone
    Tern serves as before. Memory stays bounded throughout."""
    up = http_up()
    t = proxy(start_tern, up, backend, "--upstream-timeout", "0s")
    deadline = Deadline()
    with PeakRSS(t.proc.pid) as rss:
        stalled, conns = [], []
        try:
            for _ in range(10):
                s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
                conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
                conn.initiate_connection()
                for _ in range(100):
                    conn.send_headers(conn.get_next_available_stream_id(),
                                      [(":method", "GET"), (":scheme", "http"), (":authority", "svc"),
                                       (":path", f"/bytes/{MiB}")], end_stream=True)
                s.sendall(conn.data_to_send())  # and nothing more written
                stalled.append(s)
                conns.append(conn)
            # Tern has dealt with every stream: each is at the upstream or was reset (REFUSED_STREAM). The
            # connections' frames are read to count the resets; no window is reopened (nothing is sent).
            resets = [0] * len(stalled)
            while sum(resets) + len(up.requests) < 1000:
                for i, s in enumerate(stalled):
                    s.settimeout(0.05)
                    try:
                        data = s.recv(1 << 20)
                    except (socket.timeout, TimeoutError):
                        continue
                    assert data, "Tern closed a connection whose streams it held"
                    resets[i] += sum(isinstance(e, h2.events.StreamReset) for e in conns[i].receive_data(data))
                deadline.check(lambda: f"every stream at the upstream or reset ({len(up.requests)} + {sum(resets)})")
            seen = len(up.requests)
            rss_held = vm_rss(t.proc.pid)
            report("e", backend, f"{seen} of 1,000 streams at the upstream", rss_held, rss.peak)
            assert served_h2(t.port, "/h2-meanwhile"), "another h2c client was not served"
            assert served_h1(t.port, "/h1-meanwhile"), "an HTTP/1.1 client was not served"
        finally:
            for s in stalled:
                s.close()
        assert served_h1(t.port, "/h1-after"), "an HTTP/1.1 client was not served after the ten closed"
    assert rss_held < RSS_LIMIT, f"tern held {mib(rss_held)} resident while the streams were not read"
    assert rss.peak < RSS_LIMIT, f"tern reached {mib(rss.peak)} resident"


PROBE = 15  # seconds a probe's answer may take: a hang detector (a served request takes milliseconds)


def served_h2(port, path):
    """Whether a new h2c client's GET is answered 200 with its path within PROBE seconds."""
    c = None
    try:
        c = FlowClient(port)
        c.request(path)
        end = time.monotonic() + PROBE
        while not c.ended and time.monotonic() < end:
            if c.reset is not None or c.goaway is not None:
                return False
            c.pump(timeout=max(0.01, end - time.monotonic()))
        return c.ended and c.head.get(":status") == "200" and bytes(c.body) == path.encode()
    except OSError:  # (refused, reset or closed)
        return False
    finally:
        if c is not None:
            c.close()


def served_h1(port, path):
    """Whether a new HTTP/1.1 client's GET is answered 200 with its path within PROBE seconds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: svc\r\n\r\n".encode())
            status, fields, body = read_head(s, Deadline(PROBE))
            while len(body) < int(fields.get("content-length", "0")):
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
            return status == 200 and body == path.encode()
    except (OSError, AssertionError):  # (AssertionError: closed, or no head within PROBE s)
        return False
