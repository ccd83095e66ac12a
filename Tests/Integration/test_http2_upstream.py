"""HTTP/2 to upstreams and gRPC (issue 17): clusters whose ServiceEntry port is HTTP2 or GRPC, or whose rule says
`h2UpgradePolicy: UPGRADE` or `useClientProtocol`, send their requests as streams on multiplexed connections.
Real peers: an h2c server over Python's h2, grpcio's server and client, curl over HTTP/1.1 and h2c."""
import json
import os
import subprocess

import pytest

from h2_peers import GRPCUpstream, H2Upstream
from http_peers import HttpUpstream
from test_http2 import H2Client, curl2
from test_http_proxy import curl, wait_until
from test_tls import certs  # noqa: F401 (a fixture)


def mesh(tmp_path, port, protocol="HTTP2", pool="", host="svc"):
    config = tmp_path / "mesh.yaml"
    text = f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host}}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: p, protocol: {protocol}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{p: {port}}}}}]
"""
    if pool:
        text += f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}}}
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      {pool}
"""
    config.write_text(text)
    return config


def start(start_tern, backend, config, *extra):
    return start_tern("--http", "--listen", "127.0.0.1:0", "--config", str(config), "--io-backend", backend,
                      "--cores", "1", *extra)


@pytest.fixture
def h2up():
    started = []

    def make(**kw):
        u = H2Upstream(**kw)
        started.append(u)
        return u

    yield make
    for u in started:
        u.stop()


def test_http11_and_h2c_clients_reach_an_http2_port_over_one_multiplexed_connection(start_tern, h2up, backend, tmp_path):
    up = h2up()
    t = start(start_tern, backend, mesh(tmp_path, up.port))
    assert curl(t.port, "/a?b=1", "-H", "Host: svc") == (200, b"/a?b=1")
    body = b"x" * 200_000
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-H", "Host: svc", "--data-binary", "@-", "-o", "-",
                        f"http://127.0.0.1:{t.port}/echo"], input=body, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == body
    # A chunked HTTP/1.1 upload goes as DATA without its chunk framing.
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-H", "Host: svc", "-H", "Transfer-Encoding: chunked",
                        "--data-binary", "@-", "-o", "-", f"http://127.0.0.1:{t.port}/echo"],
                       input=body[:70_000], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == body[:70_000]
    status, version, got = curl2(t.port, "/h2", "-H", "Host: svc")
    assert (status, version, got) == (200, "2", b"/h2")
    # One upstream connection carried them all; the upstream saw HTTP/2 heads with :authority from Host.
    assert up.connections == 1
    heads = [h for h, _ in up.requests]
    assert [h[":path"] for h in heads] == ["/a?b=1", "/echo", "/echo", "/h2"]
    assert all(h[":authority"] == "svc" and h[":scheme"] == "http" for h in heads)
    assert all("host" not in h and "connection" not in h for h in heads)
    assert len(up.requests[1][1]) == 200_000 and up.requests[2][1] == body[:70_000]
    assert "transfer-encoding" not in up.requests[2][0]


def test_concurrent_requests_share_connections_within_the_peers_stream_limit(start_tern, h2up, backend, tmp_path):
    up = h2up(max_streams=2)
    t = start(start_tern, backend, mesh(tmp_path, up.port))
    c = H2Client(t.port)
    try:
        # Let the upstream's SETTINGS arrive first (a connection's first requests assume 100 streams until then).
        sid = c.request("/warm", authority="svc")
        c.wait(lambda: sid in c.ended, "the first answer")
        # Six requests the upstream holds: two fill the first connection; then they are answered.
        ids = [c.request("/held", authority="svc") for _ in range(6)]
        wait_until(lambda: up.max_open[0] == 2, "the first connection full")
        up.open_gate()
        c.wait(lambda: all(i in c.ended for i in ids), "six answers")
        assert [(c.heads[i][":status"], bytes(c.bodies.get(i, b""))) for i in ids] == [("200", b"/held")] * 6
    finally:
        c.close()
    # On the connection whose SETTINGS Tern knew, it never went over the limit (a second connection's first
    # streams, sent before its SETTINGS arrived, may be refused and sent again).
    assert up.refused_on[0] == 0
    assert max(up.max_open) <= 2
    assert len(up.requests) == 7


def test_max_concurrent_streams_of_the_rule_limits_each_connection(start_tern, h2up, backend, tmp_path):
    up = h2up()
    t = start(start_tern, backend, mesh(tmp_path, up.port, pool="http: {maxConcurrentStreams: 1}"))
    c = H2Client(t.port)
    try:
        # Four requests the upstream holds, all at once: a connection each.
        ids = [c.request("/held", authority="svc") for _ in range(4)]
        wait_until(lambda: len(up.requests) == 4, "four requests at the upstream")
        up.open_gate()
        c.wait(lambda: all(i in c.ended for i in ids), "four answers")
        assert all(c.heads[i][":status"] == "200" for i in ids)
    finally:
        c.close()
    assert max(up.max_open) == 1


def test_refused_streams_are_sent_again(start_tern, h2up, backend, tmp_path):
    up = h2up(refuse_first=1)
    t = start(start_tern, backend, mesh(tmp_path, up.port))
    assert curl(t.port, "/r", "-H", "Host: svc") == (200, b"/r")
    assert up.refused == 1
    assert [h[":path"] for h, _ in up.requests] == ["/r"]


def test_an_upstream_refusing_every_stream_gets_the_route_retries_and_no_more(start_tern, h2up, backend, tmp_path):
    up = h2up(refuse_first=1_000_000)
    log = tmp_path / "access.log"
    t = start(start_tern, backend, mesh(tmp_path, up.port), "--access-log", str(log))
    status, _ = curl(t.port, "/r", "-H", "Host: svc")
    assert status == 503
    # Istio's default policy: refused-stream, 2 retries: three tries in all, then the answer.
    assert up.refused == 3
    wait_until(lambda: log.exists() and log.read_text().strip(), "the access-log line")
    line = json.loads(log.read_text().splitlines()[0])
    # Envoy's words for it: UR, remote refused stream reset.
    assert (line["response_code"], line["response_flags"]) == (503, "UR,URX")
    assert line["response_code_details"] == "upstream_reset_before_response_started{remote_refused_stream_reset}"


def test_after_goaway_new_requests_open_a_new_connection(start_tern, h2up, backend, tmp_path):
    up = h2up(goaway_after=2)
    t = start(start_tern, backend, mesh(tmp_path, up.port))
    for i in range(5):
        assert curl(t.port, f"/g{i}", "-H", "Host: svc") == (200, f"/g{i}".encode())
    assert up.connections >= 2
    assert [h[":path"] for h, _ in up.requests] == [f"/g{i}" for i in range(5)]


def test_trailers_reach_an_h2_client_and_not_an_http11_one(start_tern, h2up, backend, tmp_path):
    up = h2up()
    t = start(start_tern, backend, mesh(tmp_path, up.port))
    c = H2Client(t.port)
    try:
        sid = c.request("/echo", method="POST", authority="svc", headers=[("x-trailers", "1")], body=b"hello")
        c.wait(lambda: sid in c.ended, "the answer")
        assert bytes(c.bodies[sid]) == b"hello"
        assert c.trailers[sid] == {"x-t": "done"}
    finally:
        c.close()
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-H", "Host: svc", "-H", "x-trailers: 1", "-D", "-",
                        "--data-binary", "hi", f"http://127.0.0.1:{t.port}/echo"], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout.endswith(b"hi") and b"x-t" not in r.stdout


@pytest.mark.parametrize("length", [False, True], ids=["chunked", "content-length"])
def test_trailers_cross_h2_to_h2_both_ways_whatever_the_framing(start_tern, h2up, backend, tmp_path, length):
    # HTTP/2 to HTTP/2, as Envoy forwards them: the client's trailers reach the upstream and the upstream's reach
    # the client, with or without a Content-Length on either message (an HTTP/1.1 body with one cannot carry them:
    # they go beside it); fields a trailer section must not carry are left out.
    up = h2up()
    t = start(start_tern, backend, mesh(tmp_path, up.port))
    c = H2Client(t.port)
    try:
        sids = []
        for i in range(3):
            head = [("x-trailers", "1")] + ([("x-length", "1"), ("content-length", "5")] if length else [])
            sid = c.request("/echo", method="POST", authority="svc", headers=head, body=b"hello", end=False)
            c.conn.send_headers(sid, [("x-req", f"t{i}"), ("authorization", "secret")], end_stream=True)
            c.flush()
            sids.append(sid)
        c.wait(lambda: all(s in c.ended for s in sids), "the answers")
        for sid in sids:
            assert c.heads[sid][":status"] == "200" and bytes(c.bodies[sid]) == b"hello"
            assert c.heads[sid].get("content-length") == ("5" if length else None)
            assert c.trailers[sid] == {"x-t": "done"}
    finally:
        c.close()
    assert sorted(t["x-req"] for _, t in up.request_trailers) == ["t0", "t1", "t2"]
    assert all(t == {"x-req": t["x-req"]} for _, t in up.request_trailers)
    assert [b for _, b in up.requests] == [b"hello"] * 3


def test_request_trailers_to_an_http11_upstream_are_dropped_and_the_request_served(start_tern, backend, tmp_path):
    # Over HTTP/1.1 they go nowhere (Envoy's HTTP/1 codec drops them): a Content-Length body still ends, once its
    # stream ends, and a chunked one ends with an empty trailer section.
    h1 = HttpUpstream()
    try:
        t = start(start_tern, backend, mesh(tmp_path, h1.port, protocol="HTTP"))
        c = H2Client(t.port)
        try:
            sids = []
            for head in ([("content-length", "5")], []):
                sid = c.request("/echo", method="POST", authority="svc", headers=head, body=b"hello", end=False)
                c.conn.send_headers(sid, [("x-req", "t")], end_stream=True)
                c.flush()
                sids.append(sid)
            c.wait(lambda: all(s in c.ended for s in sids), "the answers")
            assert [c.heads[s][":status"] for s in sids] == ["200", "200"]
        finally:
            c.close()
        assert len(h1.requests) == 2 and all(bytes(r.body_prefix) == b"hello" for r in h1.requests)
        assert b"x-req:" not in h1.all_raw()
    finally:
        h1.stop()


def test_upgrade_policy_and_client_protocol_choose_the_upstream_protocol(start_tern, h2up, backend, tmp_path):
    up = h2up()
    t = start(start_tern, backend, mesh(tmp_path, up.port, protocol="HTTP", pool="http: {h2UpgradePolicy: UPGRADE}"))
    assert curl(t.port, "/u", "-H", "Host: svc") == (200, b"/u")
    assert up.connections == 1 and up.requests[0][0][":path"] == "/u"
    # useClientProtocol: an HTTP/1.1 client's request goes over HTTP/1.1, an h2c client's over HTTP/2.
    h1 = HttpUpstream()
    try:
        config = mesh(tmp_path, h1.port, protocol="HTTP", pool="http: {useClientProtocol: true}")
        t2 = start(start_tern, backend, config)
        assert curl(t2.port, "/one", "-H", "Host: svc")[0] == 200
        assert [r.path for r in h1.requests] == ["/one"]
    finally:
        h1.stop()
    config = mesh(tmp_path, up.port, protocol="HTTP", pool="http: {useClientProtocol: true}")
    t3 = start(start_tern, backend, config)
    assert curl2(t3.port, "/two", "-H", "Host: svc")[:2] == (200, "2")
    assert up.requests[-1][0][":path"] == "/two"


def test_an_upstream_connection_lost_mid_response_resets_the_client_and_the_next_request_reconnects(
        start_tern, h2up, backend, tmp_path):
    up = h2up()
    log = tmp_path / "access.log"
    t = start(start_tern, backend, mesh(tmp_path, up.port), "--access-log", str(log))
    assert curl(t.port, "/first", "-H", "Host: svc") == (200, b"/first")
    got = {}

    def hang():
        r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-H", "Host: svc", "-o", "-", "-w", "\n%{http_code}",
                            f"http://127.0.0.1:{t.port}/hang"], capture_output=True, timeout=60)
        got["rc"], got["out"] = r.returncode, r.stdout

    import threading
    client = threading.Thread(target=hang)
    client.start()
    assert up.hanging.wait(30), "the upstream never got /hang"
    up.drop_connections()
    client.join(60)
    # The response had started: the client's transfer is cut, not answered.
    assert got["rc"] != 0 and got["out"].startswith(b"partial")
    # The same Tern makes a new connection for the next request.
    assert curl(t.port, "/third", "-H", "Host: svc") == (200, b"/third")
    assert up.connections == 2
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, "three access-log lines")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    cut = next(line for line in lines if line["path"] == "/hang")
    assert cut["response_code"] == 200 and "UC" in cut["response_flags"]


def test_tiny_data_frames_are_framed_a_chunk_per_buffer(start_tern, h2up, backend, tmp_path):
    up = h2up()
    t = start(start_tern, backend, mesh(tmp_path, up.port))
    # 30,000 DATA frames of one byte: framed one by one they would not fit a stream's buffers.
    status, body = curl(t.port, "/tiny?n=30000", "-H", "Host: svc")
    assert status == 200 and body == bytes(i % 251 for i in range(30000))
    status, version, body = curl2(t.port, "/tiny?n=30000", "-H", "Host: svc")
    assert (status, version) == (200, "2") and body == bytes(i % 251 for i in range(30000))


@pytest.fixture
def grpc_up():
    u = GRPCUpstream()
    yield u
    u.stop()


def grpc_channel(port):
    import grpc
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.default_authority", "svc"),
                                                                ("grpc.enable_http_proxy", 0)])


def test_grpc_unary_streaming_and_status_through_tern(start_tern, grpc_up, backend, tmp_path):
    import grpc
    log = tmp_path / "access.log"
    t = start(start_tern, backend, mesh(tmp_path, grpc_up.port, protocol="GRPC"), "--access-log", str(log))
    ch = grpc_channel(t.port)
    try:
        unary = ch.unary_unary("/test.Echo/Unary")
        assert unary(b"ping", timeout=30) == b"ping"
        big = b"z" * 300_000
        assert unary(big, timeout=30) == big
        assert list(ch.unary_stream("/test.Echo/ServerStream")(b"s", timeout=30)) == [b"s", b"s", b"s"]
        assert ch.stream_unary("/test.Echo/ClientStream")(iter([b"a", b"b", b"c"]), timeout=30) == b"abc"
        assert list(ch.stream_stream("/test.Echo/Bidi")(iter([b"1", b"2"]), timeout=30)) == [b"1", b"2"]
        with pytest.raises(grpc.RpcError) as failed:
            ch.unary_unary("/test.Echo/Fail")(b"x", timeout=30)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND and failed.value.details() == "nope"
    finally:
        ch.close()
    # The server saw the client's metadata with te: trailers intact (grpcio refuses requests without it).
    assert grpc_up.metadata and all("user-agent" in m for m in grpc_up.metadata)
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 6, "six access-log lines")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {line["protocol"] for line in lines} == {"HTTP/2"}


def test_grpc_status_reaches_the_metrics_and_access_log_and_local_replies_speak_grpc(start_tern, grpc_up, backend, tmp_path):
    import grpc
    from peers import dead_port
    from test_telemetry import families, samples, side_args, side_ports
    config = tmp_path / "mesh.yaml"
    dead = dead_port()
    config.write_text(mesh(tmp_path, grpc_up.port, protocol="GRPC").read_text() + f"""---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: down}}
spec:
  hosts: [down]
  ports: [{{number: 80, name: p, protocol: GRPC}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{p: {dead}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: slow}}
spec:
  hosts: [svc]
  http: [{{route: [{{destination: {{host: svc}}}}], timeout: 1s}}]
""")
    log = tmp_path / "access.log"
    ports = side_ports()
    t = start(start_tern, backend, config, "--access-log", str(log), *side_args(ports))
    ch = grpc_channel(t.port)
    try:
        assert ch.unary_unary("/test.Echo/Unary")(b"ok", timeout=30) == b"ok"
        with pytest.raises(grpc.RpcError) as failed:
            ch.unary_unary("/test.Echo/Fail")(b"x", timeout=30)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        # The route's timeout (1 s) caps the client's deadline (5 s), as Istio's max_grpc_timeout does: a method
        # that holds its answer is answered by Tern, as gRPC (504 UT → 14 UNAVAILABLE).
        with pytest.raises(grpc.RpcError) as capped:
            ch.unary_unary("/test.Echo/Slow")(b"late", timeout=5)
        assert capped.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        ch.close()
    down = grpc.insecure_channel(f"127.0.0.1:{t.port}", options=[("grpc.default_authority", "down"),
                                                                             ("grpc.enable_http_proxy", 0)])
    try:
        with pytest.raises(grpc.RpcError) as unavailable:
            down.unary_unary("/test.Echo/Unary")(b"x", timeout=30)
        # Envoy's local reply to a gRPC client: trailers-only, 503 mapped to UNAVAILABLE, its body as the message.
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "upstream connect error" in unavailable.value.details()
    finally:
        down.close()
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 4, "four access-log lines")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted((line["response_code"], line["grpc_status"], line["response_flags"]) for line in lines) == [
        (200, 0, "-"), (200, 5, "-"), (200, 14, "UF,URX"), (200, 14, "UT")]  # (Istio's default retries: URX)
    # grpc_message: the upstream's (its trailers), Tern's own replies' (their body text), none on success.
    messages = {line["grpc_status"] if line["grpc_status"] != 14 else line["response_flags"]: line["grpc_message"]
                for line in lines}
    assert messages[0] is None and messages[5] == "nope" and messages["UT"] == "upstream request timeout"
    assert messages["UF,URX"].startswith("upstream connect error or disconnect/reset before headers")
    fams = families(ports[2])
    assert samples(fams, "istio_requests_total", request_protocol="grpc", grpc_response_status="0")[0].value == 1
    assert samples(fams, "istio_requests_total", request_protocol="grpc", grpc_response_status="5")[0].value == 1
    assert samples(fams, "istio_requests_total", request_protocol="grpc", grpc_response_status="14",
                   response_flags="UF,URX")[0].value == 1
    assert samples(fams, "istio_requests_total", request_protocol="grpc", grpc_response_status="14",
                   response_flags="UT")[0].value == 1
    assert samples(fams, "tern_http2_upstream_connections_total")[0].value >= 1


def test_grpc_to_a_tls_upstream_offers_alpn_h2(start_tern, backend, certs, tmp_path):
    """A GRPC port under a DestinationRule with tls SIMPLE: the connection offers ALPN h2 (grpcio's TLS server
    refuses any other), its certificate verified against the Host."""
    import grpc
    up = GRPCUpstream(tls=(os.path.join(certs, "server-chain.crt"), os.path.join(certs, "server.key")))
    try:
        config = mesh(tmp_path, up.port, protocol="GRPC", host="localhost")
        config.write_text(config.read_text() + f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: tls}}
spec:
  host: localhost
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {certs}/ca.crt}}
""")
        t = start(start_tern, backend, config)
        ch = grpc.insecure_channel(f"127.0.0.1:{t.port}", options=[("grpc.default_authority", "localhost"),
                                                                   ("grpc.enable_http_proxy", 0)])
        try:
            assert ch.unary_unary("/test.Echo/Unary")(b"secure", timeout=30) == b"secure"
            assert list(ch.stream_stream("/test.Echo/Bidi")(iter([b"a", b"b"]), timeout=30)) == [b"a", b"b"]
        finally:
            ch.close()
    finally:
        up.stop()


def test_grpc_timeout_is_the_requests_timeout(start_tern, h2up, backend, tmp_path):
    """A gRPC request's grpc-timeout (300 ms) is its timeout: an upstream that holds its answer and ignores the field
    is cut by Tern, whose answer is gRPC's (504 UT → 14); without the field the answer comes through once given."""
    up = h2up()
    log = tmp_path / "access.log"
    t = start(start_tern, backend, mesh(tmp_path, up.port, protocol="GRPC"), "--access-log", str(log))
    c = H2Client(t.port)
    grpc_head = [("content-type", "application/grpc"), ("te", "trailers")]
    try:
        cut = c.request("/held", method="POST", authority="svc", body=b"\x00\x00\x00\x00\x01x",
                        headers=[*grpc_head, ("grpc-timeout", "300m")])
        whole = c.request("/held", method="POST", authority="svc", body=b"\x00\x00\x00\x00\x01x", headers=grpc_head)
        c.wait(lambda: cut in c.ended, "Tern's answer to the request with a deadline")
        up.open_gate()
        c.wait(lambda: whole in c.ended, "the upstream's answer")
        assert (c.heads[cut][":status"], c.heads[cut]["grpc-status"]) == ("200", "14")
        assert c.heads[whole][":status"] == "200" and "grpc-status" not in c.heads[whole]
        assert bytes(c.bodies[whole]) == b"/held"
    finally:
        c.close()
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, "two access-log lines")
    flags = sorted(json.loads(line)["response_flags"] for line in log.read_text().splitlines())
    assert flags == ["-", "UT"]


def test_an_upstream_that_floods_empty_frames_loses_its_connection(start_tern, h2up, backend, tmp_path):
    """The flood limits hold for upstreams too (§7: an upstream that misbehaves): empty DATA frames in a row end
    the connection with GOAWAY ENHANCE_YOUR_CALM; its request fails, is counted, and the next request is served
    on a new connection."""
    from test_telemetry import families, samples, side_args, side_ports
    up = h2up()
    ports = side_ports()
    t = start(start_tern, backend, mesh(tmp_path, up.port), *side_args(ports))
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-H", "Host: svc", "-o", "-", "-w", "\n%{http_code}",
                        f"http://127.0.0.1:{t.port}/empties"], capture_output=True, timeout=60)
    # The response had started (its head came first): the client's transfer is cut, and nothing after the flood
    # reaches it.
    assert r.returncode != 0 and b"late" not in r.stdout, (r.returncode, r.stdout)
    assert samples(families(ports[2]), "tern_http2_floods_total")[0].value == 1
    assert curl(t.port, "/next", "-H", "Host: svc") == (200, b"/next")
    assert up.connections == 2


@pytest.mark.parametrize("kind", ["ping", "settings", "priority", "window"])
def test_an_upstream_that_floods_frames_before_its_answer_loses_its_connection(start_tern, h2up, backend, tmp_path,
                                                                                kind):
    """§7, an upstream that misbehaves as a flooding client would: PING or SETTINGS frames (each asking for an
    acknowledgement) while it reads nothing, whose acknowledgements queue in nghttp2 until its bound of 1,000 ends
    the session; PRIORITY or WINDOW_UPDATE frames beyond Envoy's limits (GOAWAY ENHANCE_YOUR_CALM). Each way the
    connection is closed and counted, the request gets 503 (its answer had not begun), and the next request is
    served on a new connection."""
    from test_telemetry import families, samples, side_args, side_ports
    up = h2up()
    ports = side_ports()
    t = start(start_tern, backend, mesh(tmp_path, up.port), *side_args(ports))
    status, body = curl(t.port, f"/flood?{kind}", "-H", "Host: svc")
    assert status == 503 and b"late" not in body, (status, body)
    assert samples(families(ports[2]), "tern_http2_floods_total")[0].value == 1
    # (Whether the flooding upstream sees the close at once is not asserted: on epoll its socket sometimes kept its
    # unsent acknowledgements for more than 30 s after Tern closed it; noted on issue 17.)
    assert curl(t.port, "/next", "-H", "Host: svc") == (200, b"/next")
    assert up.connections == 2


class PingUpstream:
    """An h2c upstream for keepalive PINGs: it answers every PING (h2 does), and `/after-pings?n=N` once N PINGs
    came on the request's connection; `/freeze` makes it read nothing more on that connection (its PINGs go
    unanswered) until `stop`; `/bad-frame` answers with a DATA frame on stream 0 (a connection error). Counts PINGs
    per connection."""

    def __init__(self):
        import socket
        import threading
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.pings, self.conns, self.stopped = [], [], threading.Event()
        self.bad_frames = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while not self.stopped.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            self.pings.append(0)
            threading.Thread(target=self._serve, args=(c, len(self.pings) - 1), daemon=True).start()

    def _serve(self, sock, index):
        import h2.config
        import h2.connection
        import h2.events
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        waiting = {}  # stream -> PINGs wanted
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            for e in conn.receive_data(data):
                if isinstance(e, h2.events.PingReceived):
                    self.pings[index] += 1
                elif isinstance(e, h2.events.RequestReceived):
                    path = dict(e.headers)[":path"]
                    if path == "/bad-frame":
                        # DATA on stream 0: a connection error (RFC 9113 §6.1); then it keeps reading.
                        sock.sendall(conn.data_to_send() + b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
                        self.bad_frames += 1
                        continue
                    if path == "/freeze":
                        sock.sendall(conn.data_to_send())
                        self.stopped.wait(60)
                        return
                    waiting[e.stream_id] = int(path.split("=")[1]) if "=" in path else 0
            for sid, n in list(waiting.items()):
                if self.pings[index] >= n:
                    del waiting[sid]
                    conn.send_headers(sid, [(":status", "200")])
                    conn.send_data(sid, f"pings {self.pings[index]}".encode(), end_stream=True)
            sock.sendall(conn.data_to_send())

    def stop(self):
        import socket
        self.stopped.set()
        for s in [self.sock, *self.conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_keepalive_pings_go_to_http2_upstreams_and_one_unanswered_closes_the_connection(start_tern, backend, tmp_path):
    """`http2KeepAlive` (Envoy's connection_keepalive): a PING every `interval` on each HTTP/2 upstream connection,
    busy or idle; a request held until the upstream saw three of them is answered on the same connection. An
    upstream that stops reading leaves a PING unanswered: after `timeout` its connection is closed and counted,
    the request on it fails (503 UC, not the route's timeout), and the next request goes on a new connection."""
    from test_telemetry import families, samples, side_args, side_ports
    up = PingUpstream()
    try:
        ports = side_ports()
        log = tmp_path / "access.log"
        t = start(start_tern, backend,
                  mesh(tmp_path, up.port, pool="http: {http2KeepAlive: {interval: 100ms, timeout: 2s}}"),
                  "--access-log", str(log), "--upstream-timeout", "60s", *side_args(ports))
        assert curl(t.port, "/after-pings?n=3", "-H", "Host: svc") == (200, b"pings 3")
        assert len(up.pings) == 1
        status, _ = curl(t.port, "/freeze", "-H", "Host: svc")
        assert status == 503
        assert samples(families(ports[2]), "tern_http2_keepalive_timeouts_total")[0].value == 1
        wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, "two access-log lines")
        assert json.loads(log.read_text().splitlines()[1])["response_flags"] == "UC"
        assert curl(t.port, "/after-pings?n=1", "-H", "Host: svc") == (200, b"pings 1")
        assert len(up.pings) == 2
    finally:
        up.stop()


def test_an_upstream_that_breaks_the_protocol_with_a_stream_open_loses_its_connection_at_once(start_tern, backend,
                                                                                               tmp_path):
    """RFC 9113 §5.4.1 from the client side: an upstream sends a frame that is a connection error (DATA on stream
    0) while a request is open on the connection. Tern's session answers GOAWAY PROTOCOL_ERROR; the request fails
    at once (503 UC, not at the route's timeout), the connection is closed and counted, and the next request goes
    on a new connection."""
    from test_telemetry import families, samples, side_args, side_ports
    up = PingUpstream()
    try:
        ports = side_ports()
        t = start(start_tern, backend, mesh(tmp_path, up.port), "--upstream-timeout", "60s", *side_args(ports))
        status, _ = curl(t.port, "/bad-frame", "-H", "Host: svc")
        assert status == 503 and up.bad_frames == 1
        assert samples(families(ports[2]), "tern_http2_protocol_errors_total")[0].value == 1
        assert curl(t.port, "/after-pings?n=0", "-H", "Host: svc") == (200, b"pings 0")
        assert len(up.pings) == 2
    finally:
        up.stop()


def test_idle_http2_upstream_connections_make_room_at_the_descriptor_cap(start_tern, h2up, backend, tmp_path):
    """Under `ulimit -n 600` (a descriptor cap of 438): 150 held requests to an HTTP/2 upstream whose rule allows one
    stream per connection (`maxConcurrentStreams: 1`), so Tern opens 150 connections to it; once answered they idle in the pool with no
    stream. 250 more HTTP/1.1 clients then each make a request and stay: room is made by closing idle HTTP/2
    upstream connections (GOAWAY, then the close), and not one idle client is closed."""
    import resource
    from test_http_proxy import RawClient, need_descriptors, prometheus_value
    from test_telemetry import families, samples
    need_descriptors(2000, "550 client sockets here")
    up = h2up()
    prom = __import__("peers").free_port()

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600))
    t = start_tern("--http", "--listen", "127.0.0.1:0", "--config",
                   str(mesh(tmp_path, up.port, pool="http: {maxConcurrentStreams: 1}")), "--io-backend", backend,
                   "--cores", "1", "--admin", "off", "--health", "off", "--prometheus", f"127.0.0.1:{prom}",
                   "--upstream-timeout", "0s", preexec_fn=limit)
    clients = []
    try:
        for i in range(150):
            c = RawClient(t.port, timeout=30)
            c.send(f"GET /held HTTP/1.1\r\nHost: svc\r\n\r\n".encode())
            clients.append(c)
        wait_until(lambda: len(up.requests) >= 150, "the 150 held requests at the upstream", timeout=30)
        assert up.connections == 150
        up.open_gate()
        assert [c.read_response().status for c in clients] == [200] * 150
        for i in range(250):
            c = RawClient(t.port, timeout=30)
            assert c.exchange("GET", f"/more/{i}", headers=[("Host", "svc")]).status == 200, i
            clients.append(c)
        assert prometheus_value(prom, "tern_idle_connections_evicted_total") == 0
        wait_until(lambda: samples(families(prom), "tern_upstream_connections")[0].value <= 60,
                   "idle HTTP/2 upstream connections closed for room", timeout=30)
        assert all(c.exchange("GET", "/again", headers=[("Host", "svc")]).status == 200 for c in clients[:150])
    finally:
        for c in clients:
            c.sock.close()
