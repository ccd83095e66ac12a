"""HTTP/2 from clients (issue 17): h2c with prior knowledge on an HTTP listener, each stream proxied to an HTTP/1.1
upstream as its own exchange. Real clients: curl (`--http2-prior-knowledge`), Python's h2 at the frame level."""
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.frame
import pytest

from conftest import ROOT
from http_peers import HttpUpstream
from peers import stream_bytes
from test_http_proxy import curl, proxy, wait_until


@pytest.fixture
def up():
    u = HttpUpstream()
    yield u
    u.stop()


def curl2(port, path, *args, timeout=60):
    """curl over h2c (prior knowledge): (status, HTTP version, body)."""
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--http2-prior-knowledge", "-o", "-",
                        "-w", "\n%{http_code} %{http_version}", *args, f"http://127.0.0.1:{port}{path}"],
                       capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition(b"\n")
    status, version = tail.decode().split()
    return int(status), version, body


class H2Client:
    """A frame-level HTTP/2 client (Python's h2) on one connection, collecting events by stream."""

    def __init__(self, port, sock=None):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
        # (Outbound validation off: tests send what a compliant client would not.)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
        self.conn.initiate_connection()
        self.flush()
        self.heads, self.bodies, self.ended, self.resets, self.goaways = {}, {}, set(), {}, []
        self.trailers = {}
        self.pings = []

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", authority="svc", headers=(), body=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path), *headers]
        self.conn.send_headers(sid, fields, end_stream=body is None and end)
        if body is not None:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        """Sends as the windows allow, reading frames (and window updates) meanwhile."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump_once()
                continue
            n = min(window, len(view))
            self.conn.send_data(sid, bytes(view[:n]))
            self.flush()
            view = view[n:]
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def pump_once(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        for e in self.conn.receive_data(data):
            if isinstance(e, h2.events.ResponseReceived):
                self.heads[e.stream_id] = dict(e.headers)
            elif isinstance(e, h2.events.DataReceived):
                self.bodies.setdefault(e.stream_id, bytearray()).extend(e.data)
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.TrailersReceived):
                self.trailers[e.stream_id] = dict(e.headers)
            elif isinstance(e, h2.events.StreamEnded):
                self.ended.add(e.stream_id)
            elif isinstance(e, h2.events.StreamReset):
                self.resets[e.stream_id] = e.error_code
            elif isinstance(e, h2.events.ConnectionTerminated):
                self.goaways.append((e.last_stream_id, e.error_code))
            elif isinstance(e, h2.events.PingReceived):
                self.pings.append(e.ping_data)
        self.flush()

    def wait(self, done, what, deadline=20):
        end = time.monotonic() + deadline
        while not done():
            assert time.monotonic() < end, f"timed out waiting for {what}"
            self.pump_once()

    def close(self):
        self.sock.close()


def test_curl_gets_and_posts_over_h2c_and_http11_still_works_on_the_same_listener(start_tern, up, backend):
    t = proxy(start_tern, up, backend)
    status, version, body = curl2(t.port, "/a?b=1")
    assert (status, version, body) == (200, "2", b"/a?b=1")
    # The upstream got an HTTP/1.1 request: Host from :authority.
    assert up.requests[-1].header("host") == f"127.0.0.1:{t.port}"
    # A 2 MB download, whole; a 1 MB upload with its length and one without (chunked upstream).
    status, _, body = curl2(t.port, "/bytes/2000000")
    assert status == 200 and body == b"".join(stream_bytes(2_000_000))
    payload = bytes(range(256)) * 4096
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--http2-prior-knowledge", "--data-binary", "@-",
                        f"http://127.0.0.1:{t.port}/sha256"], input=payload, capture_output=True, timeout=60)
    assert json.loads(r.stdout) == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--http2-prior-knowledge", "-T", "-",
                        f"http://127.0.0.1:{t.port}/sha256"], input=payload, capture_output=True, timeout=60)
    assert json.loads(r.stdout) == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    assert up.requests[-1].header("transfer-encoding") == "chunked"
    # HTTP/1.1 on the same listener as before.
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-w", " %{http_version}", f"http://127.0.0.1:{t.port}/h1"],
                       capture_output=True, timeout=30)
    assert r.stdout == b"/h1 1.1"


def test_concurrent_streams_each_get_their_own_answer(start_tern, up, backend):
    t = proxy(start_tern, up, backend)
    c = H2Client(t.port)
    try:
        sids = [c.request(f"/s{i}", headers=[("x-n", str(i))]) for i in range(20)]
        c.wait(lambda: all(s in c.ended for s in sids), "20 responses")
        assert all(c.heads[s][":status"] == "200" for s in sids)
        assert [bytes(c.bodies[s]) for s in sids] == [f"/s{i}".encode() for i in range(20)]
        assert sorted(r.header("x-n") for r in up.requests) == sorted(str(i) for i in range(20))
        # Connection-specific fields the upstream sends do not reach an HTTP/2 client (RFC 9113 §8.2.2).
        sid = c.request("/hop-by-hop")
        c.wait(lambda: sid in c.ended, "the hop-by-hop answer")
        assert not {"connection", "keep-alive", "proxy-connection", "upgrade", "transfer-encoding"} & set(c.heads[sid])
    finally:
        c.close()


def test_a_stream_reset_by_the_client_ends_its_exchange_and_spares_the_others(start_tern, up, backend):
    t = proxy(start_tern, up, backend)
    c = H2Client(t.port)
    try:
        held = c.request("/hold/a")
        wait_until(lambda: any(r.path == "/hold/a" for r in up.requests), "the held request upstream")
        c.conn.reset_stream(held, error_code=8)
        c.flush()
        other = c.request("/after")
        c.wait(lambda: other in c.ended, "the other stream's answer")
        assert bytes(c.bodies[other]) == b"/after" and held not in c.heads
    finally:
        up.release("a")
        c.close()


def test_a_malformed_request_is_reset_and_the_connection_goes_on(start_tern, up, backend):
    t = proxy(start_tern, up, backend)
    c = H2Client(t.port)
    try:
        # :authority and Host naming different hosts (RFC 9113 §8.3.1): the stream is reset.
        bad = c.request("/x", headers=[("host", "other")])
        c.wait(lambda: bad in c.resets, "the reset")
        assert c.resets[bad] == 1  # PROTOCOL_ERROR
        ok = c.request("/fine")
        c.wait(lambda: ok in c.ended, "the next answer")
        assert bytes(c.bodies[ok]) == b"/fine"
        assert all(r.path != "/x" for r in up.requests)
    finally:
        c.close()


def test_a_404_from_routing_and_the_access_log_say_http2(start_tern, up, backend, tmp_path):
    config = tmp_path / "mesh.yaml"
    config.write_text(f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc}}
spec:
  hosts: [svc]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {up.port}}}}}]
""")
    log = tmp_path / "access.log"
    t = start_tern("--http", "--listen", "127.0.0.1:0", "--config", str(config), "--io-backend", backend,
                   "--cores", "1", "--access-log", str(log))
    c = H2Client(t.port)
    try:
        routed = c.request("/r", authority="svc")
        missing = c.request("/m", authority="nowhere")
        c.wait(lambda: routed in c.ended and missing in c.ended, "both answers")
        assert c.heads[routed][":status"] == "200" and c.heads[missing][":status"] == "404"
    finally:
        c.close()
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, "two access-log lines")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {line["protocol"] for line in lines} == {"HTTP/2"}
    assert sorted(line["response_code"] for line in lines) == [200, 404]


def test_drain_sends_goaway_in_two_steps_and_lets_open_streams_finish(start_tern, up, backend):
    """SIGTERM, as Envoy drains HTTP/2: GOAWAY with the last stream id 2^31-1 and a PING first; a stream the client
    opened before it read that notice is still served; once the PING comes back, the final GOAWAY names the last
    stream processed, and the connection closes when its streams have. A client that never answers the PING gets
    the final GOAWAY anyway (within a second). A stream in flight on another connection (curl's) gets its answer."""
    t = proxy(start_tern, up, backend, "--drain-timeout", "20s")
    late = H2Client(t.port)
    silent = H2Client(t.port)
    # A connection accepted before the drain whose preface comes after the drain began.
    unspoken = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    held = subprocess.Popen(["curl", "-sS", "--noproxy", "*", "--http2-prior-knowledge", "-o", "-", "-w", " %{http_code}",
                             f"http://127.0.0.1:{t.port}/hold/d"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The request that crosses the notice: encoded now, sent after the notice arrived but before the PING's
        # answer (h2 itself would not send after a GOAWAY).
        late.conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "svc"), (":path", "/late")],
                               end_stream=True)
        crossing = late.conn.data_to_send()
        wait_until(lambda: any(r.path == "/hold/d" for r in up.requests), "the held request upstream")
        t.signal(15)
        late.wait(lambda: late.goaways, "the drain notice")
        assert late.goaways[0] == (2**31 - 1, 0)
        assert late.pings, "the notice comes with a PING"
        late.sock.sendall(crossing)
        # (h2 drops what it had to send, its PING answer too, when a GOAWAY arrives: the answer is made here.)
        late.sock.sendall(hyperframe.frame.PingFrame(0, flags=["ACK"], opaque_data=late.pings[-1]).serialize())
        # (h2 reads nothing after a GOAWAY: the frames are read here, up to the close.)
        frames, decoder, buffered = [], hpack.Decoder(), b""
        while chunk := late.sock.recv(65536):
            buffered += chunk
            while len(buffered) >= 9:
                frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(buffered[:9]))
                if len(buffered) < 9 + length:
                    break
                frame.parse_body(memoryview(buffered[9:9 + length]))
                buffered = buffered[9 + length:]
                frames.append(frame)
        heads = [dict(decoder.decode(f.data)) for f in frames if isinstance(f, hyperframe.frame.HeadersFrame)]
        body = b"".join(f.data for f in frames if isinstance(f, hyperframe.frame.DataFrame) and f.stream_id == 1)
        assert [h[":status"] for h in heads] == ["200"] and body == b"/late"
        assert [(f.last_stream_id, f.error_code) for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame)] == [(1, 0)]
        # The client that never answers the PING: the final GOAWAY comes without it, then the close.
        silent.wait(lambda: len(silent.goaways) == 2, "the final GOAWAY to a client that does not answer")
        assert silent.goaways == [(2**31 - 1, 0), (0, 0)]
        with pytest.raises(ConnectionError):
            silent.wait(lambda: False, "the close")
        # The connection that speaks HTTP/2 only now is drained too: the notice, then the final GOAWAY.
        spoke = H2Client(t.port, sock=unspoken)
        spoke.wait(lambda: len(spoke.goaways) == 2, "the drain of a connection that spoke after it began")
        assert spoke.goaways == [(2**31 - 1, 0), (0, 0)]
        up.release("d")
        out, err = held.communicate(timeout=20)
        assert out == b"/hold/d 200", err
    finally:
        held.kill()
        late.close()
        silent.close()


def test_an_idle_connection_gets_goaway_before_it_closes(start_tern, up, backend):
    t = proxy(start_tern, up, backend, "--idle-timeout", "1s")
    c = H2Client(t.port)
    try:
        sid = c.request("/one")
        c.wait(lambda: sid in c.ended, "the answer")
        # No stream for the idle timeout: GOAWAY naming the last stream processed, then the close.
        c.wait(lambda: c.goaways, "GOAWAY")
        assert c.goaways[0] == (sid, 0)
        with pytest.raises(ConnectionError):
            c.wait(lambda: False, "the close")
    finally:
        c.close()


def test_rapid_reset_closes_the_connection_with_enhance_your_calm(start_tern, up, backend):
    """Rapid reset (CVE-2023-44487): HEADERS then RST_STREAM at once, stream after stream. Envoy's rule: once 500
    streams ended and more than half were reset within a second of opening, GOAWAY ENHANCE_YOUR_CALM and close."""
    t = proxy(start_tern, up, backend)
    c = H2Client(t.port)
    sent = 0
    try:
        while not c.goaways and sent < 2000:
            try:
                for _ in range(50):
                    sid = c.request("/r")
                    c.conn.reset_stream(sid, error_code=8)
                    sent += 1
                c.flush()
            except (BrokenPipeError, ConnectionResetError, h2.exceptions.ProtocolError):
                break  # closed after its GOAWAY
            c.sock.settimeout(0.05)
            try:
                c.pump_once()
            except (socket.timeout, TimeoutError):
                pass
            except (ConnectionError, h2.exceptions.ProtocolError):
                break
        c.sock.settimeout(10)
        try:
            c.wait(lambda: c.goaways, "GOAWAY")
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        assert c.goaways and c.goaways[0][1] == 11, (sent, c.goaways)  # ENHANCE_YOUR_CALM
        assert sent >= 500
    finally:
        c.close()


@pytest.mark.parametrize("provoke", ["WINDOW_UPDATE overflowing a stream's window", "DATA beyond its content-length",
                                     "a malformed head"])
def test_made_you_reset_closes_the_connection_with_enhance_your_calm(start_tern, up, backend, provoke):
    """MadeYouReset (CVE-2025-8671): the client never resets a stream itself but sends, stream after stream, a frame
    that makes the server reset it (a stream error). nghttp2 1.52 does not count those; Tern counts them with the
    client's own early resets under Envoy's premature-reset rule (once 500 streams ended and more than half were
    reset early): GOAWAY ENHANCE_YOUR_CALM, the close, counted; other connections are served. At most 2,000
    streams are sent."""
    from test_telemetry import families, samples, side_args, side_ports
    ports = side_ports()
    t = proxy(start_tern, up, backend, *side_args(ports))
    c = H2Client(t.port)
    sent = 0
    try:
        while not c.goaways and sent < 2000:
            try:
                for _ in range(50):
                    if provoke.startswith("WINDOW_UPDATE"):
                        sid = c.request("/r", method="POST", end=False)
                        # (Raw: h2 would refuse to overflow a window.)
                        c.sock.sendall(struct.pack(">I", 4)[1:] + bytes([8, 0]) + struct.pack(">I", sid)
                                       + struct.pack(">I", 0x7FFFFFFF))
                    elif provoke.startswith("DATA"):
                        c.request("/r", method="POST", headers=[("content-length", "1")], body=b"too long")
                    else:
                        c.request("/r", headers=[(":unknown", "x")])  # (h2 strips connection-specific fields)
                    sent += 1
            except h2.exceptions.TooManyStreamsError:
                pass  # Tern has not reset the last ones yet: read, then go on
            except (BrokenPipeError, ConnectionResetError, h2.exceptions.ProtocolError):
                break  # closed after its GOAWAY
            c.sock.settimeout(0.05)
            try:
                while True:
                    c.pump_once()
            except (socket.timeout, TimeoutError):
                pass
            except (ConnectionError, h2.exceptions.ProtocolError):
                break
        c.sock.settimeout(10)
        try:
            c.wait(lambda: c.goaways, "GOAWAY")
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        assert c.goaways and c.goaways[-1][1] == 11, (sent, c.goaways)  # ENHANCE_YOUR_CALM
        assert 500 <= sent < 2000
        # The client reset nothing: every reset was the server's.
        assert c.resets and all(code in (1, 3, 5) for code in c.resets.values()), set(c.resets.values())
    finally:
        c.close()
    assert curl2(t.port, "/after") == (200, "2", b"/after")
    assert samples(families(ports[2]), "tern_http2_reset_floods_total")[0].value == 1


@pytest.mark.parametrize("flood", ["empty DATA", "padded empty DATA", "PRIORITY", "WINDOW_UPDATE",
                                   "WINDOW_UPDATE on a closed stream"])
def test_frame_floods_end_the_connection_with_enhance_your_calm(start_tern, up, backend, flood):
    """Envoy's limits on frames that cost work and carry nothing (nghttp2 1.52 has none of them): two frames with an
    empty payload in a row, more than 100 PRIORITY frames per stream the client opened, more than 5 + 2 × (streams
    + 10 × DATA frames sent) WINDOW_UPDATEs. The connection gets GOAWAY ENHANCE_YOUR_CALM and closes; it is counted;
    other connections are served."""
    from test_telemetry import families, samples, side_args, side_ports
    ports = side_ports()
    t = proxy(start_tern, up, backend, *side_args(ports))
    c = H2Client(t.port)
    try:
        first = c.request("/before")
        c.wait(lambda: first in c.ended, "the first answer")
        try:
            if flood in ("empty DATA", "padded empty DATA"):
                # (Padding is not payload: a frame of padding alone is as empty, as Envoy counts it.)
                sid = c.request("/upload", method="POST", end=False)
                for _ in range(3):
                    c.conn.send_data(sid, b"", pad_length=0 if flood.startswith("padded") else None)
            elif flood == "WINDOW_UPDATE on a closed stream":
                # Frames nghttp2 drops without handing them on (the stream is closed) count all the same.
                for _ in range(100):
                    c.sock.sendall(struct.pack(">I", 4)[1:] + bytes([8, 0]) + struct.pack(">I", first)
                                   + struct.pack(">I", 1))
            elif flood == "PRIORITY":
                for _ in range(300):
                    c.conn.prioritize(first, weight=16)
            else:
                for _ in range(100):
                    c.conn.increment_flow_control_window(1)
            c.flush()
            c.wait(lambda: c.goaways, "GOAWAY")
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        assert c.goaways and c.goaways[0][1] == 11, c.goaways  # ENHANCE_YOUR_CALM
    finally:
        c.close()
    assert curl2(t.port, "/after") == (200, "2", b"/after")
    assert samples(families(ports[2]), "tern_http2_floods_total")[0].value == 1


@pytest.mark.parametrize("frame", ["PING", "SETTINGS"])
def test_a_client_that_floods_frames_to_acknowledge_and_never_reads_is_closed(start_tern, up, backend, frame):
    """PING and SETTINGS each ask for an acknowledgement. A client that sends them without end and reads nothing
    fills the socket, and the acknowledgements queue in nghttp2: at 1,000 it ends the session (its flood
    protection), so Tern's memory for the connection stays bounded, the connection is closed and counted, and
    other connections are served. At most 1,000,000 frames are sent (17 MB)."""
    from test_telemetry import families, samples, side_args, side_ports
    ports = side_ports()
    t = proxy(start_tern, up, backend, *side_args(ports))
    sock = socket.socket()
    # A small receive buffer: what Tern sends back fills it soon (the loopback's own buffers hold megabytes).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", t.port))
    ping = struct.pack(">I", 8)[1:] + bytes([6, 0]) + struct.pack(">I", 0) + b"12345678"
    settings = struct.pack(">I", 6)[1:] + bytes([4, 0]) + struct.pack(">I", 0) + struct.pack(">HI", 3, 100)
    one = ping if frame == "PING" else settings
    batch = one * 4096
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + struct.pack(">I", 0)[1:] + bytes([4, 0]) + struct.pack(">I", 0))
        for _ in range(1_000_000 // 4096):
            sock.sendall(batch)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        # (The kernel's buffers may take all of it after Tern stopped reading.) Still reading nothing, the client
        # holds its socket: Tern's side closes all the same, not waiting for its last send to be taken.
        wait_until(lambda: sum(s.value for s in samples(families(ports[2]), "tern_active_connections")) == 0,
                   "Tern's side of the connection closed")
    finally:
        sock.close()
    assert curl2(t.port, "/after") == (200, "2", b"/after")
    wait_until(lambda: samples(families(ports[2]), "tern_http2_floods_total")[0].value >= 1, "the count")


def test_a_client_that_never_opens_its_window_holds_a_stream_to_its_window_until_the_idle_timeout(start_tern, up, backend):
    """A zero window held for ever (§7): a client asks for 4 MiB and never sends WINDOW_UPDATE. Tern sends what the
    window allows (65,535 bytes) and holds the rest back (the upstream connection waits, Tern's buffers for the
    stream bounded by the connection's share); after --stream-idle-timeout with nothing moving the stream is reset,
    and the same connection serves the next request."""
    t = proxy(start_tern, up, backend, "--stream-idle-timeout", "1s")
    c = H2Client(t.port)
    try:
        # No automatic window updates: the event loop below never acknowledges DATA for this stream.
        stuck = c.request("/bytes/4194304")
        got = 0
        deadline = time.monotonic() + 30
        while stuck not in c.resets and stuck not in c.ended:
            assert time.monotonic() < deadline, "the stream was never reset"
            data = c.sock.recv(65536)
            assert data, "the connection closed"
            for e in c.conn.receive_data(data):
                if isinstance(e, h2.events.DataReceived):
                    got += len(e.data)  # (not acknowledged: the window stays shut)
                elif isinstance(e, h2.events.StreamReset):
                    c.resets[e.stream_id] = e.error_code
                elif isinstance(e, h2.events.StreamEnded):
                    c.ended.add(e.stream_id)
            c.flush()
        assert stuck in c.resets and got <= 65_535
        ok = c.request("/after")
        c.conn.increment_flow_control_window(1 << 20)
        c.flush()
        c.wait(lambda: ok in c.ended, "the next answer")
        assert bytes(c.bodies[ok]) == b"/after"
    finally:
        c.close()


def test_many_ordinary_streams_on_one_connection_are_no_flood(start_tern, up, backend):
    t = proxy(start_tern, up, backend)
    c = H2Client(t.port)
    try:
        for batch in range(6):
            sids = [c.request(f"/{batch}/{i}") for i in range(100)]
            c.wait(lambda: all(s in c.ended for s in sids), f"batch {batch}")
        assert not c.goaways and len(c.ended) == 600
    finally:
        c.close()


def test_a_client_gone_with_streams_open_ends_them_and_tern_serves_on(start_tern, up, backend):
    """A client that closes its connection while streams wait for their answers (FIN, then a reset): their
    exchanges end as client disconnects, and the next client is served."""
    t = proxy(start_tern, up, backend)
    for how in ("fin", "reset"):
        c = H2Client(t.port)
        for i in range(3):
            c.request(f"/hold/{how}{i}")
        wait_until(lambda: sum(r.path.startswith(f"/hold/{how}") for r in up.requests) == 3, "the held requests")
        if how == "reset":
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        for i in range(3):
            up.release(f"{how}{i}")
        assert curl2(t.port, f"/after-{how}")[:2] == (200, "2")


def test_many_uploads_on_one_connection_keep_its_window_open(start_tern, up, backend):
    """Ten 100 KB uploads one after the other on one connection (2 MB, four times its window): each is answered,
    so what the engine took of each is given back to the connection's window."""
    t = proxy(start_tern, up, backend)
    c = H2Client(t.port)
    try:
        payload = bytes(range(256)) * 400
        for i in range(10):
            sid = c.request("/sha256", method="POST", body=payload)
            c.wait(lambda: sid in c.ended, f"upload {i}")
            assert json.loads(bytes(c.bodies[sid])) == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    finally:
        c.close()


def test_a_header_list_over_the_limit_resets_its_stream_only(start_tern, up, backend):
    """A head of more than --max-request-headers-kb (by RFC 9113's measure) is reset, its fields dropped as they
    arrive (nghttp2 announces the limit but does not enforce it); the connection goes on."""
    t = proxy(start_tern, up, backend, "--max-request-headers-kb", "16")
    c = H2Client(t.port)
    try:
        big = c.request("/big", headers=[(f"x-{i}", "v" * 1000) for i in range(20)])
        c.wait(lambda: big in c.resets, "the reset")
        ok = c.request("/small")
        c.wait(lambda: ok in c.ended, "the next answer")
        assert all(r.path != "/big" for r in up.requests)
    finally:
        c.close()


def test_a_continuation_flood_ends_the_connection_with_enhance_your_calm(start_tern, up, backend):
    """CONTINUATION floods (the 2024 class, CVE-2024-28182): a HEADERS frame without END_HEADERS followed by
    CONTINUATION frames without end. nghttp2 (with Debian's fix) stops after 8 of them; Tern sends GOAWAY
    ENHANCE_YOUR_CALM (nghttp2 stops without one), closes the connection and counts it; other connections are
    served, and nothing of the flooded head reaches the upstream."""
    from test_telemetry import families, samples, side_args, side_ports
    ports = side_ports()
    t = proxy(start_tern, up, backend, *side_args(ports))
    c = H2Client(t.port)
    try:
        first = c.request("/before")
        c.wait(lambda: first in c.ended, "the first answer")
        sid = c.conn.get_next_available_stream_id()
        block = c.conn.encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", "svc"), (":path", "/c")])
        out = hyperframe.frame.HeadersFrame(sid, data=block, flags=["END_STREAM"]).serialize()
        for i in range(1000):
            out += hyperframe.frame.ContinuationFrame(sid, data=c.conn.encoder.encode([(f"x-{i}", "v")])).serialize()
        try:
            c.sock.sendall(out)
            c.wait(lambda: c.goaways, "GOAWAY")
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        # ENHANCE_YOUR_CALM; the last stream: nghttp2 counts the flooded one's as begun.
        assert len(c.goaways) == 1 and c.goaways[0][1] == 11 and c.goaways[0][0] in (first, sid), c.goaways
        with pytest.raises((ConnectionError, h2.exceptions.ProtocolError)):
            c.wait(lambda: False, "the close")
    finally:
        c.close()
    assert curl2(t.port, "/after") == (200, "2", b"/after")
    assert samples(families(ports[2]), "tern_http2_floods_total")[0].value == 1
    assert all(r.path != "/c" for r in up.requests)


def test_an_hpack_bomb_resets_its_streams_and_memory_stays_bounded(start_tern, up, backend):
    """An HPACK bomb: a 4,000-byte field enters the dynamic table, then header blocks name it 1,000 times at one
    byte each (1 KB on the wire, 4 MB decoded). Each such head is dropped as it grows past --max-request-headers-kb
    and its stream reset; 60 of them (240 MB decoded) leave Tern's memory within 16 MiB of where it began, nothing
    reaches the upstream, and the connection serves on."""
    from test_http_proxy import PeakRSS, vm_rss
    t = proxy(start_tern, up, backend)
    c = H2Client(t.port)
    try:
        seed = c.request("/seed", headers=[("x-bomb", "A" * 4000)])
        c.wait(lambda: seed in c.ended, "the seed's answer")
        before = vm_rss(t.proc.pid)
        with PeakRSS(t.proc.pid) as rss:
            bombs = [c.request("/bomb", headers=[("x-bomb", "A" * 4000)] * 1000) for _ in range(60)]
            c.wait(lambda: all(b in c.resets for b in bombs), "every bomb's reset", deadline=60)
            after = c.request("/after")
            c.wait(lambda: after in c.ended, "the next answer")
        assert bytes(c.bodies[after]) == b"/after"
        assert all(r.path != "/bomb" for r in up.requests)
        assert rss.peak - before < 16 << 20, f"grew {(rss.peak - before) >> 20} MiB"
    finally:
        c.close()


def test_a_close_delimited_response_ends_with_end_stream_and_connect_is_not_served(start_tern, up, backend):
    t = proxy(start_tern, up, backend)
    status, _, body = curl2(t.port, "/bytes/100000?framing=close")
    assert status == 200 and body == b"".join(stream_bytes(100_000))
    c = H2Client(t.port)
    try:
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", "db:5432")])
        c.flush()
        c.wait(lambda: sid in c.heads, "the answer to CONNECT")
        assert c.heads[sid][":status"] == "501"
    finally:
        c.close()


def nghttp2_mapped(t):
    """Whether libnghttp2 is mapped into Tern's serving process (`tern proxy` execs tern-engine in place)."""
    with open(f"/proc/{t.proc.pid}/maps") as maps:
        return "libnghttp2.so" in maps.read()


def test_libnghttp2_is_loaded_by_the_first_http2_connection_not_at_start(start_tern, up, backend):
    t = proxy(start_tern, up, backend)
    status, _ = curl(t.port, "/h1")
    assert status == 200
    assert not nghttp2_mapped(t), "libnghttp2 mapped before any HTTP/2 connection"
    status, version, _ = curl2(t.port, "/h2")
    assert (status, version) == (200, "2")
    assert nghttp2_mapped(t)


def test_without_a_usable_libnghttp2_an_http2_connection_is_closed_and_http11_still_served(start_tern, up, backend,
                                                                                             tmp_path):
    """A libnghttp2.so.14 that is not nghttp2 found first (LD_LIBRARY_PATH): the HTTP/2 connection is closed with one
    error line saying why, and Tern goes on serving HTTP/1.1."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in libnghttp2")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(tmp_path / "libnghttp2.so.14"),
                    os.path.join(ROOT, "Tests", "CShimTests", "fake_nghttp2.c")], check=True)
    t = start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", backend,
                   "--cores", "1", env={**os.environ, "LD_LIBRARY_PATH": str(tmp_path)})
    # The preface and an empty SETTINGS frame in one write (Tern resets the connection once it has read them, so a
    # second write could meet the reset).
    with socket.create_connection(("127.0.0.1", t.port), timeout=10) as s:
        empty_settings = bytes.fromhex("000000" "04" "00" "00000000")  # length 0, type SETTINGS, no flags, stream 0
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + empty_settings)
        try:
            answer = s.recv(65536)
        except ConnectionResetError:
            answer = b""
        assert answer == b"", "the HTTP/2 connection was answered, not closed"
    status, body = curl(t.port, "/h1")
    assert (status, body) == (200, b"/h1")
    t.stop()
    log = t.log() + t.rest()
    refused = [line for line in log.splitlines() if "HTTP/2 connection refused" in line]
    assert len(refused) == 1, log
    assert " error " in refused[0] and "libnghttp2.so.14 lacks nghttp2_session_callbacks_new" in refused[0], log


def test_idle_http2_connections_make_room_at_the_descriptor_cap(start_tern, up, backend):
    """Under `ulimit -n 600` (a descriptor cap of 438), 300 HTTP/2 clients each served one stream and holding
    their connection idle, then 250 HTTP/1.1 clients that each make a request and stay: every request is served,
    room being made by closing idle HTTP/2 connections (GOAWAY naming their last stream, then the close) as idle
    HTTP/1.1 keep-alive connections are closed, counted in tern_idle_connections_evicted_total."""
    from test_http_proxy import RawClient, need_descriptors, prometheus_value, tern_with_descriptors
    need_descriptors(2000, "600 client sockets here")
    t, prom = tern_with_descriptors(start_tern, up, backend, nofile=600)
    idle, clients = [], []
    try:
        for i in range(300):
            c = H2Client(t.port)
            sid = c.request(f"/h2/{i}")
            c.wait(lambda: sid in c.ended, "the answer")
            idle.append(c)
        for i in range(250):
            c = RawClient(t.port, timeout=30)
            assert c.exchange("GET", f"/h1/{i}").status == 200, i
            clients.append(c)
        gone = 0
        for c in idle:
            c.sock.settimeout(0.01)
            try:
                while not c.goaways:
                    c.pump_once()
            except (socket.timeout, TimeoutError):
                continue
            except (ConnectionError, h2.exceptions.ProtocolError):
                pass
            gone += bool(c.goaways) and c.goaways[0] == (1, 0)
        assert gone >= 100, gone
        assert prometheus_value(prom, "tern_idle_connections_evicted_total") >= 100
    finally:
        for c in idle + clients:
            c.sock.close()
