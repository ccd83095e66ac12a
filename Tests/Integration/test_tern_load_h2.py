"""tern-load over HTTP/2 (issue 17): `--h2` speaks h2c with prior knowledge to http:// URLs and h2 by ALPN to
https:// ones, with `--streams N` requests at once on each connection, each a stream of its own. Real servers:
h2_peers.H2Upstream (Python's h2), Tern itself (plaintext and TLS), and a TLS server that offers only HTTP/1.1."""
import json
import os
import socket
import ssl
import subprocess
import threading

import pytest

from h2_peers import H2Upstream
from http_peers import HttpUpstream
from test_http_proxy import proxy, wait_until
from test_tern_load import run_json, run_load, tern_load_bin
from test_tls import certs, metric, tls_proxy  # noqa: F401 (certs is a fixture)


@pytest.fixture
def h2up():
    u = H2Upstream()
    yield u
    u.stop()


def test_streams_are_concurrent_requests_on_one_connection(h2up, backend):
    """--streams 5 on one connection: five requests open at once on it (held by the server until all five are
    there), each answered, one connection in all."""
    p = subprocess.Popen([tern_load_bin(), "--json", "--h2", "--streams", "5", "--connections", "1", "--requests", "5",
                          "--io-backend", backend, f"http://127.0.0.1:{h2up.port}/held"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(h2up.requests) == 5, "five requests at the server")
        assert h2up.max_open == [5] and h2up.connections == 1
        h2up.open_gate()
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    doc = json.loads(out)
    assert doc["requests"] == 5, err
    assert doc["errors"] == {"connect": 0, "timeout": 0, "reset": 0, "status_4xx": 0, "status_5xx": 0}
    assert all(h[":method"] == "GET" and h[":path"] == "/held" and h[":scheme"] == "http" for h, _ in h2up.requests)


def test_through_tern_every_request_is_a_stream_and_bodies_go(start_tern, backend):
    """Through Tern's h2c listener to an HTTP/1.1 upstream: 400 POSTs with a body on 2 connections of 8 streams;
    Tern counts 2 HTTP/2 connections and 400 streams, the upstream gets every body."""
    from test_telemetry import families, samples, side_args, side_ports
    up = HttpUpstream()
    try:
        ports = side_ports()
        t = proxy(start_tern, up, backend, *side_args(ports))
        doc = run_json("--h2", "--streams", "8", "--connections", "2", "--requests", "400", "--method", "POST",
                       "--body", "hello", "--header", "x-load: 1", "--io-backend", backend,
                       f"http://127.0.0.1:{t.port}/load", timeout=60)
        assert doc["requests"] == 400 and doc["errors"]["reset"] == 0 and doc["errors"]["timeout"] == 0
        fams = families(ports[2])
        assert samples(fams, "tern_http2_connections_total")[0].value == 2
        assert samples(fams, "tern_http2_streams_total")[0].value >= 400
        posts = [r for r in up.requests if r.path == "/load"]
        assert len(posts) >= 400
        assert all(r.method == "POST" and bytes(r.body_prefix) == b"hello" and r.header("x-load") == "1" for r in posts)
    finally:
        up.stop()


def test_a_timeout_resets_its_stream_not_the_connection(h2up, backend):
    """A request unanswered past --timeout fails as a timeout and its stream is reset; the connection stays: the
    next requests of the same lanes go on it (two rounds of two, one connection)."""
    doc = run_json("--h2", "--streams", "2", "--connections", "1", "--requests", "4", "--timeout", "300ms",
                   "--io-backend", backend, f"http://127.0.0.1:{h2up.port}/held")
    assert doc["errors"]["timeout"] == 4 and doc["requests"] == 0
    assert h2up.connections == 1 and len(h2up.requests) == 4


def test_streams_refused_or_above_a_goaway_are_sent_again_on_a_new_connection(backend):
    """A server that refuses its first two streams and says GOAWAY after every third answer: the requests it did
    not process (refused, or sent before the GOAWAY arrived and above its last stream) go again, on a new
    connection after a GOAWAY, none counted as failed. (One stream at a time: this server abandons the streams
    below its GOAWAY's last one that it had not answered yet, which would be failures.)"""
    up = H2Upstream(goaway_after=3, refuse_first=2)
    try:
        doc = run_json("--h2", "--streams", "1", "--connections", "1", "--requests", "20", "--io-backend", backend,
                       f"http://127.0.0.1:{up.port}/a")
        assert doc["requests"] == 20 and doc["errors"]["reset"] == 0, doc["errors"]
        assert up.connections >= 7 and up.refused == 2
    finally:
        up.stop()


def test_https_negotiates_h2_by_alpn(start_tern, backend, certs):
    up = HttpUpstream()
    try:
        t, prom = tls_proxy(start_tern, up, backend, certs)
        doc = run_json("--h2", "--streams", "4", "--connections", "2", "--requests", "40", "--cacert",
                       os.path.join(certs, "ca.crt"), "--io-backend", backend, f"https://localhost:{t.port}/tls",
                       timeout=60)
        assert doc["requests"] == 40 and doc["errors"]["connect"] == 0 and doc["errors"]["reset"] == 0
        assert metric(prom, "tern_http2_connections_total") == 2
    finally:
        up.stop()


def test_https_to_a_server_without_h2_is_a_connect_error_explained(certs, backend):
    """A TLS server that offers only http/1.1 by ALPN chooses nothing of what --h2 offers (h2): connect errors,
    explained once."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(certs, "server-chain.crt"), os.path.join(certs, "server.key"))
    ctx.set_alpn_protocols(["http/1.1"])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    stop = threading.Event()
    held = []

    def serve():
        while not stop.is_set():
            try:
                c, _ = listener.accept()
                c.settimeout(5)
                held.append(ctx.wrap_socket(c, server_side=True))
            except OSError:
                continue

    threading.Thread(target=serve, daemon=True).start()
    try:
        code, out, err = run_load("--json", "--h2", "--connections", "1", "--duration", "300ms", "--cacert",
                                  os.path.join(certs, "ca.crt"), "--io-backend", backend, f"https://localhost:{port}/")
        doc = json.loads(out)
        assert doc["requests"] == 0 and doc["errors"]["connect"] > 0, doc
        assert err.count("did not choose h2 by ALPN (it chose nothing)") == 1, err
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize("args,message", [
    (["--streams", "4", "http://127.0.0.1:1/"], "--streams is for HTTP/2: give --h2 too"),
    (["--h2", "--streams", "0", "http://127.0.0.1:1/"], "--streams must be a whole number from 1 to 1000"),
    (["--h2", "--compare", "http://127.0.0.1:1/", "http://127.0.0.1:2/"], "--compare measures HTTP/1.1 only"),
    (["--h2", "--reconnect", "http://127.0.0.1:1/"], "--reconnect is for HTTP/1.1"),
])
def test_bad_h2_flags_exit_64_with_a_clear_message(args, message):
    code, _, err = run_load(*args)
    assert code == 64 and message in err, (code, err)
