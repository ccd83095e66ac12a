"""Resilience as Istio defines it (issue 18): route timeouts and fault injection, against real upstreams, checking
what the upstream saw and what Tern reported (status, response flags, counters), never timings. Istio's own
bookinfo fault-injection samples run as written."""
import json
import os
import time

import httpx
import pytest

from conftest import Tern
from peers import dead_port, hanging_listener
from http_peers import HttpUpstream
from test_access_log import wait_lines
from test_http_proxy import wait_until
from test_telemetry import families, samples, side_args, side_ports

# Side listeners off unless a test asks for them (it then passes --admin, --health and --prometheus).
QUIET = ["--admin", "off", "--health", "off", "--prometheus", "off"]

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: v1}}}}
"""


def start(tmp_path, backend, yaml, *flags, env=None, log=True):
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml)
    args = ["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend,
            *([] if "--prometheus" in flags else QUIET), *flags]
    access = tmp_path / "access.log"
    if log:
        args += ["--access-log", str(access)]
    return Tern(args, env=env), access


def lines(access, n):
    got = wait_lines(access, n, timeout=10, parser=json.loads)
    assert len(got) == n, got
    return got


def timed_mesh(port, route, timeout):
    """Service `slow` on `port`, whose requests with `x-route: ROUTE` have a route `timeout`, the others none."""
    return SERVICE.format(name="slow", port=port) + f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: slow}}
spec:
  hosts: [slow]
  http:
  - match: [{{headers: {{x-route: {{exact: {route}}}}}}}]
    timeout: {timeout}
    route: [{{destination: {{host: slow}}}}]
  - route: [{{destination: {{host: slow}}}}]
"""


def hang(t, route=None):
    """A request to the upstream's /hang (never answered), on the route `route` picks; returns its status."""
    headers = {"host": "slow", **({"x-route": route} if route else {})}
    r = httpx.get(f"http://127.0.0.1:{t.port}/hang", headers=headers, timeout=30)
    return r.status_code, r.text


def test_a_route_timeout_answers_504_UT_and_a_route_without_one_has_none(tmp_path, backend):
    up = HttpUpstream()
    # No --upstream-timeout: with --config there is none unless a route sets one (Istio's default), so only the
    # stream idle timeout ends a request to a silent upstream on the untimed route.
    t, access = start(tmp_path, backend, timed_mesh(up.port, "timed", "500ms"), "--stream-idle-timeout", "2s")
    try:
        cmdline = open(f"/proc/{t.proc.pid}/cmdline", "rb").read().split(b"\0")
        assert b"upstream-timeout-ns=0" in cmdline
        assert hang(t, "timed") == (504, "upstream request timeout")
        assert hang(t) == (504, "stream timeout")
        got = lines(access, 2)
        assert [(g["response_flags"], g["response_code_details"]) for g in got] == [
            ("UT", "upstream_response_timeout"), ("SI", "stream_idle_timeout")]
        assert up.paths() == ["/hang", "/hang"]
    finally:
        t.stop()
        up.stop()


def test_an_explicit_upstream_timeout_is_the_default_and_a_route_timeout_of_0s_disables_it(tmp_path, backend):
    up = HttpUpstream()
    t, access = start(tmp_path, backend, timed_mesh(up.port, "never", "0s"), "--upstream-timeout", "300ms",
                      "--stream-idle-timeout", "1500ms")
    try:
        assert hang(t)[0] == 504
        assert hang(t, "never")[0] == 504
        # The first ended by the flag's timeout (UT); the second outlived it, ended by the stream idle timeout (SI).
        assert [g["response_flags"] for g in lines(access, 2)] == ["UT", "SI"]
    finally:
        t.stop()
        up.stop()


FAULTY = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: faulty}}
spec:
  hosts: [faulty]
  http:
  - match: [{{uri: {{prefix: /abort}}}}]
    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: faulty}}}}]
  - match: [{{uri: {{prefix: /grpc}}}}]
    fault: {{abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: faulty}}}}]
  - match: [{{uri: {{prefix: /delay-then-abort}}}}]
    fault:
      delay: {{fixedDelay: 200ms, percentage: {{value: 100}}}}
      abort: {{httpStatus: 503, percentage: {{value: 100}}}}
    route: [{{destination: {{host: faulty}}}}]
  - match: [{{uri: {{prefix: /held}}}}]
    timeout: 2s
    fault: {{delay: {{fixedDelay: 2500ms, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: faulty}}}}]
  - match: [{{uri: {{prefix: /half}}}}]
    fault: {{abort: {{httpStatus: 500, percentage: {{value: 50}}}}}}
    route: [{{destination: {{host: faulty}}}}]
  - match: [{{uri: {{prefix: /unset}}}}]
    fault: {{abort: {{httpStatus: 500}}}}
    route: [{{destination: {{host: faulty}}}}]
"""


@pytest.fixture
def faulty(tmp_path, backend):
    up = HttpUpstream()
    ports = side_ports()
    t, access = start(tmp_path, backend, SERVICE.format(name="faulty", port=up.port) + FAULTY.format(),
                      *side_args(ports), env={**os.environ, "TERN_RANDOM_SEED": "18"})
    yield t, up, access, ports
    t.stop()
    up.stop()


def test_an_injected_abort_answers_with_envoys_body_and_flag_FI_and_never_reaches_the_upstream(faulty):
    t, up, access, ports = faulty
    with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "faulty"}, timeout=10) as c:
        r = c.get("/abort")
        assert (r.status_code, r.text, r.headers["content-type"]) == (418, "fault filter abort", "text/plain")
        # The connection stays usable after an abort, as after any local reply to a whole request.
        r = c.get("/grpc", headers={"content-type": "application/grpc"})
        assert r.status_code == 200 and r.headers["grpc-status"] == "14" and r.content == b""
        assert r.headers["content-type"] == "application/grpc"
        # A gRPC abort to a client that is not gRPC: Envoy's status 200 and body.
        r = c.get("/grpc")
        assert (r.status_code, r.text) == (200, "fault filter abort") and "grpc-status" not in r.headers
        # An abort without a percentage aborts nothing (Istio): the request goes through.
        assert c.get("/unset").status_code == 200
    assert up.paths() == ["/unset"]
    got = lines(access, 4)
    assert [(g["response_code"], g["response_flags"], g["response_code_details"]) for g in got] == [
        (418, "FI", "fault_filter_abort"), (200, "FI", "fault_filter_abort"), (200, "FI", "fault_filter_abort"),
        (200, "-", "via_upstream")]
    fams = families(ports[2])
    assert samples(fams, "tern_fault_aborts_injected_total")[0].value == 3
    assert samples(fams, "istio_requests_total", response_code="418", response_flags="FI")[0].value == 1


def test_an_injected_delay_holds_the_request_before_the_upstream_and_outside_the_route_timeout(faulty):
    t, up, access, ports = faulty
    with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "faulty"}, timeout=10) as c:
        # A 2.5 s delay on a route with a 2 s timeout: the timeout starts after the delay, when the router takes the
        # request.
        r = c.get("/held")
        assert r.status_code == 200 and r.text == "/held"
        r = c.get("/delay-then-abort")
        assert (r.status_code, r.text) == (503, "fault filter abort")
    assert up.paths() == ["/held"]
    got = lines(access, 2)
    assert [(g["response_code"], g["response_flags"]) for g in got] == [(200, "DI"), (503, "DI,FI")]
    fams = families(ports[2])
    assert samples(fams, "tern_fault_delays_injected_total")[0].value == 2
    assert samples(fams, "tern_fault_aborts_injected_total")[0].value == 1


def test_an_abort_percentage_holds_statistically(faulty):
    """500 requests at 50 %: the aborted count passes a chi-square test (1 degree of freedom, p = 0.001), and the
    upstream sees exactly the others."""
    t, up, access, ports = faulty
    n = 500
    aborted = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "faulty"}, timeout=10) as c:
        for _ in range(n):
            r = c.get("/half")
            assert r.status_code in (200, 500)
            aborted += r.status_code == 500
    expected = n / 2
    chi2 = (aborted - expected) ** 2 / expected + ((n - aborted) - expected) ** 2 / expected
    assert chi2 < 10.83, (aborted, chi2)
    assert len(up.paths()) == n - aborted


def test_the_same_seed_draws_the_same_faults(tmp_path, backend):
    """TERN_RANDOM_SEED makes fault draws reproducible: two runs with one seed abort the same requests."""
    outcomes = []
    for run in range(2):
        up = HttpUpstream()
        t, _ = start(tmp_path, backend, SERVICE.format(name="faulty", port=up.port) + FAULTY.format(),
                     env={**os.environ, "TERN_RANDOM_SEED": "7"}, log=False)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "faulty"}, timeout=10) as c:
                outcomes.append([c.get("/half").status_code for _ in range(40)])
        finally:
            t.stop()
            up.stop()
    assert outcomes[0] == outcomes[1]
    assert 0 < outcomes[0].count(500) < 40


# Istio's bookinfo samples, as written (samples/bookinfo/networking/): ratings v1 behind its DestinationRule, with
# virtual-service-ratings-test-abort.yaml and virtual-service-ratings-test-delay.yaml.
BOOKINFO_RATINGS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings}}
spec:
  hosts: [ratings]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
spec:
  host: ratings
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v2-mysql
    labels:
      version: v2-mysql
  - name: v2-mysql-vm
    labels:
      version: v2-mysql-vm
---
"""

RATINGS_TEST_ABORT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      abort:
        percentage:
          value: 100.0
        httpStatus: 500
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
"""

RATINGS_TEST_DELAY = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 7s
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
"""


def test_bookinfo_ratings_test_abort(tmp_path, backend):
    up = HttpUpstream()
    t, access = start(tmp_path, backend, BOOKINFO_RATINGS.format(port=up.port) + RATINGS_TEST_ABORT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "ratings:9080"}, timeout=10) as c:
            r = c.get("/ratings/0", headers={"end-user": "jason"})
            assert (r.status_code, r.text) == (500, "fault filter abort")
            assert c.get("/ratings/0").status_code == 200
            assert c.get("/ratings/0", headers={"end-user": "someone-else"}).status_code == 200
        assert up.paths() == ["/ratings/0", "/ratings/0"]
        assert [g["response_flags"] for g in lines(access, 3)] == ["FI", "-", "-"]
    finally:
        t.stop()
        up.stop()


def test_bookinfo_ratings_test_delay(tmp_path):
    """The sample's 7 s delay for jason (one backend: it takes 7 s)."""
    up = HttpUpstream()
    t, access = start(tmp_path, "epoll", BOOKINFO_RATINGS.format(port=up.port) + RATINGS_TEST_DELAY)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "ratings:9080"}, timeout=30) as c:
            assert c.get("/ratings/0").status_code == 200
            assert c.get("/ratings/0", headers={"end-user": "jason"}).status_code == 200
        assert up.paths() == ["/ratings/0", "/ratings/0"]
        assert [g["response_flags"] for g in lines(access, 2)] == ["-", "DI"]
    finally:
        t.stop()
        up.stop()


def test_a_large_direct_response_body_is_served_whole(tmp_path, backend):
    """Istio accepts directResponse bodies up to 1 MB (warning above 100 KB); Tern serves them from the table."""
    body = "".join(chr(97 + i % 26) for i in range(900_000))
    yaml = f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: big}}
spec:
  hosts: [big.example.com]
  http:
  - directResponse: {{status: 200, body: {{string: "{body}"}}}}
"""
    t, access = start(tmp_path, backend, yaml)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "big.example.com"}, timeout=10) as c:
            for _ in range(3):
                r = c.get("/")
                assert r.status_code == 200 and r.text == body
        got = lines(access, 3)
        assert all(g["bytes_sent"] == len(body) for g in got), got
    finally:
        t.stop()



# Retries: endpoints scripted to fail, counted at the upstreams.

class Scripted(HttpUpstream):
    """An upstream whose every request gets the same treatment, whatever its path: `status` (with `headers`), or
    `behaviour` "hang" (never answered) or "reset" (reset after the request); any other path behaviour of
    HttpUpstream is bypassed. Its `requests` count what reached it."""

    def __init__(self, status=503, headers=(), behaviour=None):
        self.status, self.extra, self.behaviour = status, list(headers), behaviour
        super().__init__()

    def answer(self, ex):
        if self.behaviour == "hang":
            ex.read_body()
            ex.conn.wait_for_peer_close()
            return False
        if self.behaviour == "reset":
            ex.read_body()
            ex.conn.reset()
            return False
        r = ex.request
        body = json.dumps({"length": r.body_length if r.complete else None, "sha256": None}).encode()
        ex.read_body()
        body = json.dumps({"length": r.body_length, "sha256": r.body_sha256}).encode()
        ex.respond(self.status, body, self.extra)
        return True


def cluster(name, ports, lb="ROUND_ROBIN"):
    """Service `name` with an endpoint on each of `ports`, balanced by `lb`."""
    endpoints = "\n".join(f"  - {{address: 127.0.0.1, ports: {{http: {p}}}}}" for p in ports)
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{endpoints}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {name}
  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}
"""


def retrying(name, retries):
    """A VirtualService for `name` whose one route has `retries` (YAML flow text; None: no `retries` field)."""
    field = f"\n    retries: {retries}" if retries is not None else ""
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  http:
  - route: [{{destination: {{host: {name}}}}}]{field}
"""


@pytest.fixture
def mesh_of(tmp_path, backend):
    """Starts Tern on a configuration (with side listeners and an access log); stops what it started."""
    started = []

    def run(yaml, *flags):
        ports = side_ports()
        where = tmp_path / f"run{len(started)}"
        where.mkdir()
        t, access = start(where, backend, yaml, *side_args(ports), *flags,
                          env={**os.environ, "TERN_RANDOM_SEED": "18"})
        started.append(t)
        t.side = ports
        return t, access, ports[2]
    yield run
    for t in started:
        t.stop()


def counter(prom, name):
    got = samples(families(prom), name)
    return got[0].value if got else None


def test_a_5xx_retry_goes_to_another_endpoint_and_every_client_request_succeeds(mesh_of):
    bad, good1, good2 = Scripted(503), HttpUpstream(), HttpUpstream()
    try:
        t, access, prom = mesh_of(cluster("svc", [bad.port, good1.port, good2.port]) +
                                  retrying("svc", "{attempts: 2, retryOn: 5xx}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert [c.get(f"/r{i}").status_code for i in range(30)] == [200] * 30
        bad_count = len(bad.requests)
        good = good1.requests + good2.requests
        assert bad_count > 0 and len(good) == 30
        # Each request the bad endpoint failed was tried once more, elsewhere (retryIgnorePreviousHosts), and said so.
        attempts = sorted(int(r.header("x-envoy-attempt-count")) for r in good)
        assert attempts.count(2) == bad_count and attempts.count(1) == 30 - bad_count
        assert all(r.header("x-envoy-attempt-count") == "1" for r in bad.requests)
        assert counter(prom, "tern_retries_total") == bad_count
        assert [g["response_code"] for g in lines(access, 30)] == [200] * 30
    finally:
        for u in (bad, good1, good2):
            u.stop()


def test_retries_run_out_with_URX_and_the_last_response_goes_to_the_client(mesh_of):
    bad = Scripted(503)
    try:
        t, access, prom = mesh_of(cluster("svc", [bad.port]) + retrying("svc", "{attempts: 2, retryOn: 5xx}"))
        r = httpx.get(f"http://127.0.0.1:{t.port}/x", headers={"host": "svc"}, timeout=10)
        assert r.status_code == 503 and json.loads(r.text)["length"] == 0
        assert [q.header("x-envoy-attempt-count") for q in bad.requests] == ["1", "2", "3"]
        (line,) = lines(access, 1)
        assert (line["response_code"], line["response_flags"]) == (503, "URX")
        assert counter(prom, "tern_retries_total") == 2 and counter(prom, "tern_retry_limit_exceeded_total") == 1
    finally:
        bad.stop()


def test_attempts_0_disables_retries_and_a_policy_without_the_condition_does_not_retry(mesh_of):
    bad = Scripted(503)
    try:
        t, _, prom = mesh_of(cluster("a", [bad.port]) + retrying("a", "{attempts: 0, retryOn: 5xx}")
                             + "---\n" + cluster("b", [bad.port]) + retrying("b", "{attempts: 3, retryOn: connect-failure}"))
        assert httpx.get(f"http://127.0.0.1:{t.port}/x", headers={"host": "a"}, timeout=10).status_code == 503
        assert httpx.get(f"http://127.0.0.1:{t.port}/x", headers={"host": "b"}, timeout=10).status_code == 503
        assert len(bad.requests) == 2
        assert counter(prom, "tern_retries_total") == 0
    finally:
        bad.stop()


def test_istios_default_retries_a_connect_failure_on_another_endpoint(mesh_of):
    """No `retries`: Istio's mesh default (2 retries on connect-failure,…) applies."""
    good = HttpUpstream()
    try:
        t, access, prom = mesh_of(cluster("svc", [dead_port(), good.port]) + retrying("svc", None))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert [c.get(f"/r{i}").status_code for i in range(10)] == [200] * 10
        assert len(good.requests) == 10
        assert counter(prom, "tern_retries_total") == sum(r.header("x-envoy-attempt-count") == "2" for r in good.requests)
        assert counter(prom, "tern_retries_total") > 0
        # With nothing to connect to, two retries, then 503 with Envoy's flags.
        t2, access2, prom2 = mesh_of(cluster("gone", [dead_port()]) + retrying("gone", None))
        r = httpx.get(f"http://127.0.0.1:{t2.port}/x", headers={"host": "gone"}, timeout=10)
        assert r.status_code == 503
        assert lines(access2, 1)[0]["response_flags"] == "UF,URX"
        assert counter(prom2, "tern_retries_total") == 2
    finally:
        good.stop()


def test_a_body_that_arrived_with_its_head_is_sent_again_whole(mesh_of):
    bad, good = Scripted(503), Scripted(200)
    try:
        t, _, _ = mesh_of(cluster("svc", [bad.port, good.port]) + retrying("svc", "{attempts: 1, retryOn: 5xx}"))
        body = bytes(range(256)) * 8
        import hashlib
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            for i in range(6):
                r = c.post(f"/p{i}", content=body)
                assert r.status_code == 200
                assert json.loads(r.text) == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        assert len(bad.requests) > 0 and all(q.complete and q.body_length == len(body) for q in bad.requests)
    finally:
        bad.stop()
        good.stop()


def test_a_body_larger_than_one_receive_is_gathered_and_sent_again_whole(mesh_of):
    """40 KiB (more than one 16 KiB receive buffer) is held whole before it goes upstream, so the retry has it;
    a pipelined request right behind it is served after it."""
    import hashlib
    bad, good = Scripted(503), Scripted(200)
    try:
        t, _, _ = mesh_of(cluster("svc", [bad.port, good.port]) + retrying("svc", "{attempts: 1, retryOn: 5xx}"))
        body = bytes(i % 251 for i in range(40 << 10))
        want = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            for i in range(4):
                r = c.post(f"/p{i}", content=body)
                assert r.status_code == 200 and json.loads(r.text) == want
        assert len(bad.requests) >= 1 and all(q.complete and q.body_sha256 == want["sha256"] for q in bad.requests)
        # Two requests in one write: the first's body and the second's head arrive together.
        import socket
        second = b"GET /after HTTP/1.1\r\nHost: svc\r\n\r\n"
        first = b"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        with socket.create_connection(("127.0.0.1", t.port), timeout=10) as s:
            s.sendall(first + second)
            got = b""
            while got.count(b"HTTP/1.1 200") < 2:
                chunk = s.recv(65536)
                assert chunk, got
                got += chunk
        assert got.startswith(b"HTTP/1.1 200")
    finally:
        bad.stop()
        good.stop()


def test_a_body_that_streamed_past_the_first_buffer_is_not_retried(mesh_of):
    bad = Scripted(503)
    try:
        t, access, prom = mesh_of(cluster("svc", [bad.port]) + retrying("svc", "{attempts: 2, retryOn: 5xx}"))
        body = b"x" * (4 << 20)
        r = httpx.post(f"http://127.0.0.1:{t.port}/big", content=body, headers={"host": "svc"}, timeout=30)
        assert r.status_code == 503
        assert len(bad.requests) == 1 and bad.requests[0].body_length == len(body)
        assert counter(prom, "tern_retries_total") == 0
    finally:
        bad.stop()


def test_a_per_try_timeout_retries_elsewhere_and_the_route_timeout_bounds_all_tries(mesh_of):
    hung, good = Scripted(behaviour="hang"), HttpUpstream()
    try:
        # (A good try slower than the per-try timeout on a loaded machine is tried again: three retries.)
        t, access, _ = mesh_of(cluster("svc", [hung.port, good.port]) +
                               retrying("svc", "{attempts: 3, perTryTimeout: 1s, retryOn: gateway-error}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=30) as c:
            assert [c.get(f"/r{i}").status_code for i in range(4)] == [200] * 4
        assert len(hung.requests) > 0 and len({r.path for r in good.requests}) == 4
    finally:
        good.stop()
    try:
        yaml = cluster("slow", [hung.port]) + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow}
spec:
  hosts: [slow]
  http:
  - route: [{destination: {host: slow}}]
    timeout: 700ms
    retries: {attempts: 10, perTryTimeout: 300ms, retryOn: gateway-error}
"""
        before = len(hung.requests)
        t2, access2, _ = mesh_of(yaml)
        r = httpx.get(f"http://127.0.0.1:{t2.port}/x", headers={"host": "slow"}, timeout=30)
        assert (r.status_code, r.text) == (504, "upstream request timeout")
        # At most three tries of 300 ms fit in 700 ms (fewer on a slow machine, never more).
        assert 1 <= len(hung.requests) - before <= 3
        assert lines(access2, 1)[0]["response_flags"] == "UT"
    finally:
        hung.stop()


def test_no_request_is_sent_twice_once_its_response_reached_the_client(mesh_of):
    up = HttpUpstream()
    try:
        t, access, prom = mesh_of(cluster("svc", [up.port]) + retrying("svc", "{attempts: 3, retryOn: \"reset,5xx\"}"))
        # The response started, then the upstream closed: the client connection is cut (reset), never retried.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{t.port}/cut-body", headers={"host": "svc"}, timeout=10)
        assert up.paths() == ["/cut-body"]
        # Reset before any response byte: retried, three times, then URX.
        r = httpx.get(f"http://127.0.0.1:{t.port}/reset", headers={"host": "svc"}, timeout=10)
        assert r.status_code == 503
        assert up.paths() == ["/cut-body"] + ["/reset"] * 4
        assert counter(prom, "tern_retries_total") == 3
        assert lines(access, 2)[1]["response_flags"] == "UC,URX"
    finally:
        up.stop()


@pytest.mark.parametrize("retry_on,status,headers,retried", [
    ("\"418\"", 418, [], True),                                     # a listed status code
    ("retriable-status-codes", 418, [], False),                     # the policy without codes: none
    ("retriable-4xx", 409, [], True),
    ("retriable-4xx", 404, [], False),
    ("gateway-error", 500, [], False),
    ("gateway-error", 504, [], True),
    ("unavailable", 200, [("grpc-status", "14")], True),            # a trailers-only gRPC response
    ("cancelled", 200, [("grpc-status", "14")], False),
    ("envoy-ratelimited", 429, [("x-envoy-ratelimited", "true")], True),
    ("5xx", 503, [("x-envoy-ratelimited", "true")], False),         # rate limited: only envoy-ratelimited
])
def test_each_retry_on_status_condition(mesh_of, retry_on, status, headers, retried):
    bad = Scripted(status, headers)
    try:
        t, _, _ = mesh_of(cluster("svc", [bad.port]) + retrying("svc", f"{{attempts: 1, retryOn: {retry_on}}}"))
        assert httpx.get(f"http://127.0.0.1:{t.port}/x", headers={"host": "svc"}, timeout=10).status_code == status
        assert len(bad.requests) == (2 if retried else 1)
    finally:
        bad.stop()


# Outlier detection: ejections counted at the upstreams and in Envoy's metrics.

def outlier_mesh(name, ports, outlier, retries="{attempts: 0}", lb="ROUND_ROBIN"):
    """Service `name` on `ports`, balanced by `lb`, with `outlierDetection: OUTLIER` and the route's `retries`."""
    return cluster(name, ports, lb).replace(
        f"trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}",
        f"trafficPolicy: {{loadBalancer: {{simple: {lb}}}, outlierDetection: {outlier}}}") + retrying(name, retries)


def outlier_figure(prom, name, cluster_name):
    got = samples(families(prom), name, cluster_name=cluster_name)
    return got[0].value if got else None


SVC = "outbound|80||svc.default.svc.cluster.local"


def test_an_endpoint_is_ejected_after_its_consecutive_5xx_and_one_host_is_always_ejectable(mesh_of):
    bad, good1, good2 = Scripted(503), HttpUpstream(), HttpUpstream()
    try:
        # maxEjectionPercent 10 of 3 hosts allows none, but Envoy always allows one.
        t, access, prom = mesh_of(outlier_mesh("svc", [bad.port, good1.port, good2.port],
                                               "{consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 10}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            codes = [c.get(f"/r{i}").status_code for i in range(60)]
        assert len(bad.requests) == 3 and codes.count(503) == 3
        assert len(good1.requests) + len(good2.requests) == 57
        assert outlier_figure(prom, "envoy_cluster_outlier_detection_ejections_active", SVC) == 1
        assert outlier_figure(prom, "envoy_cluster_outlier_detection_ejections_enforced_total", SVC) == 1
        clusters = httpx.get(f"http://127.0.0.1:{t.side[0]}/clusters", timeout=10).text
        assert f"{SVC}::127.0.0.1:{bad.port}::health_flags::/failed_outlier_check" in clusters
        assert f"{SVC}::127.0.0.1:{good1.port}::health_flags::healthy" in clusters
    finally:
        for u in (bad, good1, good2):
            u.stop()


def test_max_ejection_percent_keeps_hosts_in_and_counts_the_refused(mesh_of):
    bad1, bad2, good = Scripted(503), Scripted(503), HttpUpstream()
    try:
        t, _, prom = mesh_of(outlier_mesh("svc", [bad1.port, bad2.port, good.port],
                                          "{consecutive5xxErrors: 2, baseEjectionTime: 60s, maxEjectionPercent: 50}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            for i in range(30):
                c.get(f"/r{i}")
        counts = sorted([len(bad1.requests), len(bad2.requests)])
        # One bad host ejected after 2; the other may not be (2 of 3 is above 50 %): it keeps getting traffic.
        assert counts[0] == 2 and counts[1] > 2
        assert outlier_figure(prom, "envoy_cluster_outlier_detection_ejections_active", SVC) == 1
        # (Envoy's counter is envoy_cluster_outlier_detection_ejections_overflow; the Python parser reads a counter
        # sample under its name with _total added.)
        assert outlier_figure(prom, "envoy_cluster_outlier_detection_ejections_overflow_total", SVC) > 0
    finally:
        for u in (bad1, bad2, good):
            u.stop()


def test_every_host_ejected_is_503_UH_unless_min_health_percent_panics(mesh_of):
    bad1, bad2 = Scripted(503), Scripted(503)
    try:
        t, access, _ = mesh_of(outlier_mesh("svc", [bad1.port, bad2.port],
                                            "{consecutive5xxErrors: 1, baseEjectionTime: 60s, maxEjectionPercent: 100}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert [c.get(f"/r{i}").status_code for i in range(2)] == [503, 503]
            r = c.get("/after")
            assert (r.status_code, r.text) == (503, "no healthy upstream")
        assert len(bad1.requests) == 1 and len(bad2.requests) == 1
        assert lines(access, 3)[2]["response_flags"] == "UH"
        # Panic below 50 % in service: balanced over every host again.
        t2, _, _ = mesh_of(outlier_mesh("svc", [bad1.port, bad2.port],
                                        "{consecutive5xxErrors: 1, baseEjectionTime: 60s, maxEjectionPercent: 100, minHealthPercent: 50}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{t2.port}", headers={"host": "svc"}, timeout=10) as c:
            assert [c.get(f"/p{i}").status_code for i in range(6)] == [503] * 6
        assert len(bad1.requests) + len(bad2.requests) == 2 + 6
    finally:
        bad1.stop()
        bad2.stop()


def test_an_ejected_host_comes_back_after_its_ejection_time(mesh_of):
    flaky, good = Scripted(503), HttpUpstream()
    try:
        t, _, prom = mesh_of(outlier_mesh("svc", [flaky.port, good.port],
                                          "{consecutive5xxErrors: 2, interval: 100ms, baseEjectionTime: 3s, maxEjectionPercent: 100}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            # Round robin: the flaky host's second 503 (the 3rd request) ejects it, for 3 s.
            for i in range(4):
                c.get(f"/r{i}")
            assert len(flaky.requests) == 2
            assert outlier_figure(prom, "envoy_cluster_outlier_detection_ejections_active", SVC) == 1
            # Requests go on (bounded in count and time) until the host gets one again.
            deadline = time.time() + 20
            n = 0
            while len(flaky.requests) == 2 and time.time() < deadline and n < 20_000:
                c.get(f"/w{n}")
                n += 1
            assert len(flaky.requests) == 3
        # Back in service, with its run of errors started afresh: one 503 does not eject it again.
        assert outlier_figure(prom, "envoy_cluster_outlier_detection_ejections_active", SVC) == 0
        assert outlier_figure(prom, "envoy_cluster_outlier_detection_ejections_enforced_total", SVC) == 1
    finally:
        flaky.stop()
        good.stop()


def test_ejection_holds_for_the_whole_process_across_reactors(mesh_of):
    bad, good = Scripted(503), HttpUpstream()
    try:
        t, _, prom = mesh_of(outlier_mesh("svc", [bad.port, good.port],
                                          "{consecutive5xxErrors: 4, baseEjectionTime: 60s, maxEjectionPercent: 100}"),
                             "--cores", "2")
        # A new connection per request: the kernel spreads them over both reactors' listeners.
        for i in range(40):
            httpx.get(f"http://127.0.0.1:{t.port}/r{i}", headers={"host": "svc", "connection": "close"}, timeout=10)
        assert len(bad.requests) == 4
        assert outlier_figure(prom, "envoy_cluster_outlier_detection_ejections_enforced_total", SVC) == 1
        # Both reactors served requests: each keeps the upstream connections it made in its own pool.
        pooled = samples(families(prom), "tern_upstream_connections")
        assert sorted(s.labels["reactor"] for s in pooled if s.value >= 1) == ["0", "1"], pooled
    finally:
        bad.stop()
        good.stop()


def test_connect_failures_eject_too_and_retries_hide_them(mesh_of):
    """Locally originated failures count as gateway errors (no split): a dead endpoint is ejected after the
    default 5, and Istio's default retries meanwhile send those requests to the live one."""
    good = HttpUpstream()
    try:
        t, access, prom = mesh_of(outlier_mesh("svc", [dead_port(), good.port], "{baseEjectionTime: 60s}", retries=None))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert [c.get(f"/r{i}").status_code for i in range(30)] == [200] * 30
        assert len(good.requests) == 30
        assert counter(prom, "tern_retries_total") == 5
        assert outlier_figure(prom, "envoy_cluster_outlier_detection_ejections_active", SVC) == 1
    finally:
        good.stop()


# Circuit breakers (DestinationRule connectionPool): each limit's overflow, counted at the upstreams and in Envoy's
# metrics. Requests are held at the upstream (/hold/NAME) until released, so what is in flight is known exactly.

def pooled(name, port, pool, extra=""):
    """Service `name` on `port` with `connectionPool: POOL` (YAML flow text) and `extra` trafficPolicy fields, and
    a route without retries (so that a refusal is not hidden by one)."""
    return cluster(name, [port]).replace(
        "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}",
        f"trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}, connectionPool: {pool}{extra}}}") \
        + retrying(name, "{attempts: 0}")


def breaker(prom, name, cluster_name=SVC):
    """One of Envoy's circuit-breaker figures for `cluster_name` (a counter's sample carries `_total` once parsed)."""
    fams = families(prom)
    got = samples(fams, name, cluster_name=cluster_name) or samples(fams, name + "_total", cluster_name=cluster_name)
    return got[0].value if got else None


def background(port, path, host="svc"):
    """Sends GET `path` on a thread; returns the thread and a list that receives the response."""
    import threading
    out = []

    def run():
        try:
            out.append(httpx.get(f"http://127.0.0.1:{port}{path}", headers={"host": host}, timeout=30))
        except httpx.HTTPError as e:
            out.append(e)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, out


def test_istios_circuit_breaking_task_one_connection_one_pending_the_rest_503_UO(mesh_of):
    """Istio's circuit-breaking task's rule (maxConnections 1, http1MaxPendingRequests 1, maxRequestsPerConnection
    1): one request on the one connection, one waiting for it, the third answered 503 UO with Envoy's body and
    x-envoy-overloaded at once; the waiting one goes on a new connection once the first ends."""
    up = HttpUpstream()
    try:
        t, access, prom = mesh_of(pooled("svc", up.port,
                                         "{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}}"))
        first, r1 = background(t.port, "/hold/a")
        wait_until(lambda: len(up.requests) == 1, "the first request at the upstream")
        second, r2 = background(t.port, "/hold/a")
        wait_until(lambda: breaker(prom, "envoy_cluster_upstream_rq_pending_active") == 1, "the second request waiting")
        assert breaker(prom, "envoy_cluster_circuit_breakers_default_cx_open") == 1
        assert breaker(prom, "envoy_cluster_circuit_breakers_default_rq_pending_open") == 1
        third = httpx.get(f"http://127.0.0.1:{t.port}/c", headers={"host": "svc"}, timeout=10)
        assert third.status_code == 503 and third.headers["x-envoy-overloaded"] == "true"
        assert third.text == "upstream connect error or disconnect/reset before headers. reset reason: overflow"
        assert len(up.requests) == 1 and len(up.connections) == 1
        up.release("a")
        first.join(10)
        second.join(10)
        assert [r.status_code for r in r1 + r2] == [200, 200]
        # maxRequestsPerConnection 1: each request had a connection of its own, one after the other.
        assert len(up.requests) == 2 and len({r.connection.index for r in up.requests}) == 2
        assert breaker(prom, "envoy_cluster_upstream_rq_pending_overflow") == 1
        assert breaker(prom, "envoy_cluster_upstream_cx_overflow") >= 1
        wait_until(lambda: breaker(prom, "envoy_cluster_upstream_rq_pending_active") == 0
                 and breaker(prom, "envoy_cluster_upstream_rq_active") == 0, "nothing left in flight")
        flags = sorted(line["response_flags"] for line in lines(access, 3))
        assert flags == ["-", "-", "UO"]
    finally:
        up.stop()


def test_http2_max_requests_limits_requests_in_flight_over_http1_too(mesh_of):
    """http2MaxRequests caps requests on connections (HTTP/1.1 too, as Envoy applies it): with one held, a second
    gets a connection of its own but is answered 503 UO; the connection is kept for the next request."""
    up = HttpUpstream()
    try:
        t, access, prom = mesh_of(pooled("svc", up.port, "{http: {http2MaxRequests: 1}}"))
        first, r1 = background(t.port, "/hold/b")
        wait_until(lambda: len(up.requests) == 1, "the first request at the upstream")
        second = httpx.get(f"http://127.0.0.1:{t.port}/x", headers={"host": "svc"}, timeout=10)
        assert second.status_code == 503 and second.headers["x-envoy-overloaded"] == "true"
        assert len(up.requests) == 1
        assert breaker(prom, "envoy_cluster_circuit_breakers_default_rq_open") == 1
        up.release("b")
        first.join(10)
        assert r1[0].status_code == 200
        # Below the limit again: served, on one of the connections already open.
        assert httpx.get(f"http://127.0.0.1:{t.port}/y", headers={"host": "svc"}, timeout=10).status_code == 200
        assert len(up.requests) == 2 and len(up.connections) <= 2
        assert breaker(prom, "envoy_cluster_upstream_rq_pending_overflow") == 1
        assert sorted(line["response_flags"] for line in lines(access, 3)) == ["-", "-", "UO"]
    finally:
        up.stop()


class FailThenHold(HttpUpstream):
    """The first request for each path is answered 503; later ones wait until `release(path)`."""

    def __init__(self):
        self.seen = set()
        super().__init__()

    def answer(self, ex):
        path = ex.request.path
        with self.lock:
            first = path not in self.seen
            self.seen.add(path)
        if first:
            ex.respond(503, b"first")
            return True
        self._hold(path).wait(30)
        ex.respond(200, b"second")
        return True


@pytest.mark.parametrize("limit", ["{connectionPool: {http: {maxRetries: 1}}}",
                                   # The budget replaces maxRetries: 10 % of 2 requests is under the floor of 1.
                                   "{connectionPool: {http: {maxRetries: 5}}, retryBudget: {percent: {value: 10}, minRetryConcurrency: 1}}"])
def test_a_retry_beyond_the_clusters_retry_limit_is_not_made_and_flagged_UO(mesh_of, limit):
    up = FailThenHold()
    try:
        yaml = cluster("svc", [up.port]).replace(
            "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}",
            "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}, " + limit[1:-1] + "}") \
            + retrying("svc", "{attempts: 2, retryOn: 5xx}")
        t, access, prom = mesh_of(yaml)
        first, r1 = background(t.port, "/a")
        # Its retry is under way (held at the upstream): the one retry the cluster allows.
        wait_until(lambda: len(up.requests) == 2, "the first request's retry at the upstream")
        assert breaker(prom, "envoy_cluster_circuit_breakers_default_rq_retry_open") == 1
        second = httpx.get(f"http://127.0.0.1:{t.port}/b", headers={"host": "svc"}, timeout=10)
        assert (second.status_code, second.text) == (503, "first")
        assert len(up.requests) == 3
        assert breaker(prom, "envoy_cluster_upstream_rq_retry_overflow") == 1
        up.release("/a")
        first.join(10)
        assert (r1[0].status_code, r1[0].text) == (200, "second")
        got = {line["path"]: line["response_flags"] for line in lines(access, 2)}
        assert got == {"/a": "-", "/b": "UO"}
        assert counter(prom, "tern_retries_total") == 1
    finally:
        up.stop()


def test_connections_are_reused_up_to_max_requests_per_connection_and_idle_ones_close_after_idle_timeout(mesh_of):
    up = HttpUpstream()
    try:
        t, _, prom = mesh_of(pooled("svc", up.port, "{http: {maxRequestsPerConnection: 2, idleTimeout: 2s}}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert [c.get(f"/r{i}").status_code for i in range(5)] == [200] * 5
        per = [len(conn.requests) for conn in up.connections]
        assert per == [2, 2, 1], per
        # The last connection, idle, is closed by Tern after the cluster's idle timeout (not the flag's hour).
        wait_until(lambda: up.connections[-1].end == "eof", "the idle connection closed by Tern", timeout=20)
        wait_until(lambda: breaker(prom, "envoy_cluster_upstream_cx_active") == 0, "no connection left open")
    finally:
        up.stop()


def test_max_connection_duration_closes_an_idle_connection_when_reached(mesh_of):
    up = HttpUpstream()
    try:
        t, _, _ = mesh_of(pooled("svc", up.port, "{tcp: {maxConnectionDuration: 200ms}}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert c.get("/a").status_code == 200
            wait_until(lambda: up.connections[0].end == "eof", "the connection closed at its maximum duration")
            assert c.get("/b").status_code == 200
        assert [len(conn.requests) for conn in up.connections] == [1, 1]
    finally:
        up.stop()


def test_tcp_keepalive_is_set_on_upstream_connections(mesh_of):
    import subprocess
    up = HttpUpstream()
    try:
        t, _, _ = mesh_of(pooled("svc", up.port, "{tcp: {tcpKeepalive: {time: 7s, interval: 3s, probes: 2}}}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert c.get("/a").status_code == 200
            # Tern's end of its pooled connection to the upstream: its keepalive timer runs (ss shows it).
            out = subprocess.run(["ss", "-tno", "state", "established", f"dport = :{up.port}"],
                                 capture_output=True, text=True, check=True).stdout
        assert "timer:(keepalive," in out, out
    finally:
        up.stop()


def test_the_flags_are_the_defaults_where_no_rule_speaks_for_the_whole_process(mesh_of):
    """--max-upstream-connections 1 and --max-pending-requests 1 with two reactors: the limits are the cluster's
    for the whole process, not each reactor's. A reactor with no connection of its own opens one anyway (Envoy's
    rule, so that its queue cannot wait on the other's): of twenty held requests, one or two (one per reactor)
    reach the upstream, one waits, the rest are refused (per reactor, one would wait on each)."""
    up = HttpUpstream()
    try:
        t, access, prom = mesh_of(cluster("svc", [up.port]) + retrying("svc", "{attempts: 0}"), "--cores", "2",
                                  "--max-upstream-connections", "1", "--max-pending-requests", "1")
        held = [background(t.port, "/hold/c") for _ in range(20)]
        # Every request is accounted for: answered (refused), at the upstream, or the one waiting.
        wait_until(lambda: sum(1 for _, out in held if out) + len(up.requests) == 19
                 and breaker(prom, "envoy_cluster_upstream_rq_pending_active") == 1, "all twenty requests placed")
        assert all(out[0].status_code == 503 for _, out in held if out)
        upstream = len(up.requests)
        assert upstream in (1, 2) and len(up.connections) == upstream
        up.release("c")
        for th, _ in held:
            th.join(10)
        codes = [out[0].status_code for _, out in held]
        # The one that waited is served too: never more than the process-wide limits let through.
        assert codes.count(200) == upstream + 1 and codes.count(503) == 19 - upstream
        assert breaker(prom, "envoy_cluster_upstream_rq_pending_overflow") == 19 - upstream
    finally:
        up.stop()


def test_the_clusters_connect_timeout_replaces_the_flag(mesh_of):
    """tcp.connectTimeout 300ms against an endpoint whose connects hang, with --connect-timeout 60s: 503 UF within
    the cluster's timeout (the client's 10 s bound would fail first under the flag's)."""
    with hanging_listener() as port:
        t, access, _ = mesh_of(pooled("svc", port, "{tcp: {connectTimeout: 300ms}}"), "--connect-timeout", "60s")
        r = httpx.get(f"http://127.0.0.1:{t.port}/x", headers={"host": "svc"}, timeout=10)
        assert r.status_code == 503
        assert lines(access, 1)[0]["response_flags"] == "UF"


# Mirroring (VirtualService mirror, mirrors, mirrorPercentage): fire and forget, checked at the upstreams.

HTTPBIN = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin}}
spec:
  hosts: [httpbin]
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: httpbin}}
spec:
  host: httpbin
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin}}
spec:
  hosts: [httpbin]
  http:
  - route:
    - destination: {{host: httpbin, subset: v1}}
      weight: 100
    mirror: {{host: httpbin, subset: v2}}
{extra}"""


def mirrored(v1, v2, extra="    mirrorPercentage: {value: 100.0}\n"):
    return HTTPBIN.format(v1=v1, v2=v2, extra=extra)


def test_istios_mirroring_task_copies_each_request_to_v2_with_shadow_host(mesh_of):
    """Istio's traffic-mirroring task as written: all traffic to v1, mirrored to v2 at 100 %. v2 gets each request
    (same method, path and body) with `-shadow` appended to its Host, before the port; the client sees v1's answer."""
    v1, v2 = HttpUpstream(), HttpUpstream()
    try:
        t, _, prom = mesh_of(mirrored(v1.port, v2.port))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", timeout=10) as c:
            for i in range(5):
                r = c.get(f"/headers/{i}", headers={"host": "httpbin:8000"})
                assert r.status_code == 200 and r.headers["x-upstream-connection"] is not None
            r = c.post("/post", headers={"host": "httpbin"}, content=b"x" * 5000)
            assert r.status_code == 200
        assert [q.path for q in v1.requests] == [f"/headers/{i}" for i in range(5)] + ["/post"]
        wait_until(lambda: len(v2.requests) == 6, "six mirrored requests at v2")
        got = sorted(v2.requests, key=lambda q: q.path)
        assert [q.path for q in got] == ["/headers/0", "/headers/1", "/headers/2", "/headers/3", "/headers/4", "/post"]
        assert {q.header("host") for q in got[:5]} == {"httpbin-shadow:8000"}
        assert got[5].header("host") == "httpbin-shadow" and got[5].method == "POST"
        wait_until(lambda: got[5].complete, "the mirrored body")
        assert got[5].body_length == 5000 and got[5].body_sha256 == v1.requests[5].body_sha256
        assert counter(prom, "tern_mirrored_requests_total") == 6
    finally:
        v1.stop()
        v2.stop()


def test_a_mirror_that_is_down_costs_the_client_nothing(mesh_of):
    v1 = HttpUpstream()
    try:
        t, access, prom = mesh_of(mirrored(v1.port, dead_port()))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "httpbin"}, timeout=10) as c:
            assert [c.get(f"/r{i}").status_code for i in range(20)] == [200] * 20
        assert len(v1.requests) == 20
        wait_until(lambda: counter(prom, "tern_mirror_requests_failed_total") == 20, "twenty failed mirrors counted")
        assert counter(prom, "tern_mirrored_requests_total") == 20
        # The access log has the client's requests only, all answered by v1.
        assert [line["response_code"] for line in lines(access, 20)] == [200] * 20
    finally:
        v1.stop()


def test_a_slow_mirror_holds_bounded_connections_and_never_slows_the_client(mesh_of):
    """The mirror never answers: each reactor keeps at most 64 mirror connections; beyond them mirrors are
    dropped (counted), and every client request is answered by v1 meanwhile."""
    v1, slow = HttpUpstream(), Scripted(behaviour="hang")
    try:
        t, _, prom = mesh_of(mirrored(v1.port, slow.port))
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "httpbin"}, timeout=10) as c:
            assert [c.get(f"/r{i}").status_code for i in range(150)] == [200] * 150
        wait_until(lambda: len(slow.requests) == 64, "64 mirrors held at the slow mirror")
        assert len(slow.connections) == 64
        assert counter(prom, "tern_mirrored_requests_total") == 64
        assert counter(prom, "tern_mirror_requests_dropped_total") == 150 - 64
    finally:
        v1.stop()
        slow.stop()


def test_mirror_connections_are_reused_and_percentages_hold(mesh_of):
    """mirrors with a percentage: 0 % never, 100 % always; a mirror's connection carries the next mirror."""
    v1, v2, v3 = HttpUpstream(), HttpUpstream(), HttpUpstream()
    try:
        yaml = mirrored(v1.port, v2.port, extra="").replace(
            "    mirror: {host: httpbin, subset: v2}\n",
            "    mirrors:\n    - {destination: {host: httpbin, subset: v2}, percentage: {value: 0}}\n"
            "    - destination: {host: third}\n") + "---\n" + SERVICE.format(name="third", port=v3.port)
        t, _, prom = mesh_of(yaml)
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "httpbin"}, timeout=10) as c:
            for i in range(30):
                assert c.get(f"/r{i}").status_code == 200
                wait_until(lambda: counter(prom, "tern_mirror_requests_answered_total") == i + 1, "the mirror of request %d" % i)
        assert len(v2.requests) == 0 and len(v1.requests) == 30
        # Each mirror waited for the one before: one connection carried them all.
        assert len(v3.connections) == 1
        assert {q.header("host") for q in v3.requests} == {"httpbin-shadow"}
    finally:
        for u in (v1, v2, v3):
            u.stop()


def test_no_shadow_host_suffix_keeps_the_mirrors_host_as_istio_1_28_does(mesh_of):
    v1, v2 = HttpUpstream(), HttpUpstream()
    try:
        t, _, _ = mesh_of(mirrored(v1.port, v2.port), "--no-shadow-host-suffix")
        assert httpx.get(f"http://127.0.0.1:{t.port}/a", headers={"host": "httpbin:8000"}, timeout=10).status_code == 200
        wait_until(lambda: len(v2.requests) == 1, "the mirrored request")
        assert v2.requests[0].header("host") == "httpbin:8000"
    finally:
        v1.stop()
        v2.stop()


# Locality load balancing (--locality, localityLbSetting): counted at upstreams in three localities.

class Switchable(HttpUpstream):
    """Answers 200, or 503 while `failing` is set."""

    def __init__(self):
        self.failing = False
        super().__init__()

    def answer(self, ex):
        ex.read_body()
        ex.respond(503 if self.failing else 200, b"x")
        return True


def located(ports_and_localities, lb="{simple: ROUND_ROBIN}",
            outlier="{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}"):
    endpoints = "\n".join(f"  - {{address: 127.0.0.1, ports: {{http: {p}}}, locality: {l}}}" for p, l in ports_and_localities)
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc}}
spec:
  hosts: [svc]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{endpoints}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc}}
spec:
  host: svc
  trafficPolicy: {{loadBalancer: {lb}{", outlierDetection: " + outlier if outlier else ""}}}
""" + retrying("svc", "{attempts: 0}")


@pytest.mark.parametrize("where", [
    ["--locality", "r1/z1/s1"],
    ["--labels", "topology.kubernetes.io/region=r1,topology.kubernetes.io/zone=z1,topology.istio.io/subzone=s1"],
], ids=["locality", "topology-labels"])
def test_locality_failover_goes_to_the_nearest_locality_then_the_next_as_each_is_ejected(mesh_of, where):
    """Three localities seen from r1/z1/s1 (given by --locality, or by the topology labels, as Istio reads a
    proxy's locality): its own subzone, another zone of its region, another region. All requests go to the
    nearest; when its one endpoint fails (ejected at once), to the same region's; when that one fails too, to the
    remote region."""
    near, region, remote = Switchable(), Switchable(), Switchable()
    try:
        t, _, prom = mesh_of(located([(remote.port, "r2/z1/s1"), (near.port, "r1/z1/s1"), (region.port, "r1/z2/s1")]),
                             *where)
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert [c.get(f"/a{i}").status_code for i in range(20)] == [200] * 20
            assert (len(near.requests), len(region.requests), len(remote.requests)) == (20, 0, 0)
            near.failing = True
            assert c.get("/fail").status_code == 503
            assert [c.get(f"/b{i}").status_code for i in range(20)] == [200] * 20
            assert (len(near.requests), len(region.requests), len(remote.requests)) == (21, 20, 0)
            region.failing = True
            assert c.get("/fail").status_code == 503
            assert [c.get(f"/c{i}").status_code for i in range(20)] == [200] * 20
            assert (len(near.requests), len(region.requests), len(remote.requests)) == (21, 21, 20)
        assert outlier_figure(prom, "envoy_cluster_outlier_detection_ejections_active", SVC) == 2
    finally:
        for u in (near, region, remote):
            u.stop()


def test_locality_failover_rule_and_distribute(mesh_of):
    """A failover rule from r1 to r3 sends the spill to r3 before r2; `distribute` splits by locality weights."""
    near, r2, r3 = Switchable(), Switchable(), Switchable()
    try:
        lb = "{simple: ROUND_ROBIN, localityLbSetting: {failover: [{from: r1, to: r3}]}}"
        t, _, _ = mesh_of(located([(near.port, "r1/z1"), (r2.port, "r2/z1"), (r3.port, "r3/z1")], lb=lb),
                          "--locality", "r1/z1")
        near.failing = True
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert c.get("/fail").status_code == 503
            assert [c.get(f"/a{i}").status_code for i in range(10)] == [200] * 10
        assert (len(r2.requests), len(r3.requests)) == (0, 10)
    finally:
        for u in (near, r2, r3):
            u.stop()
    a, b, other = HttpUpstream(), HttpUpstream(), HttpUpstream()
    try:
        lb = "{simple: RANDOM, localityLbSetting: {distribute: [{from: \"r1/z1/*\", to: {\"r1/z1/*\": 75, \"r1/z2/*\": 25}}]}}"
        t, _, _ = mesh_of(located([(a.port, "r1/z1/s1"), (b.port, "r1/z2/s1"), (other.port, "r2/z1/s1")], lb=lb, outlier=None),
                          "--locality", "r1/z1/s1")
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert [c.get(f"/d{i}").status_code for i in range(400)] == [200] * 400
        # 300 expected at a, 100 at b (binomial, n = 400, p = 0.25: sd 8.7; 5 sd either way), none elsewhere.
        assert len(other.requests) == 0 and 56 <= len(b.requests) <= 144 and len(a.requests) + len(b.requests) == 400
    finally:
        for u in (a, b, other):
            u.stop()


def test_failover_priority_prefers_the_endpoints_sharing_the_sidecars_labels_in_order(mesh_of):
    """failoverPriority [version, app] from a sidecar started with --labels app=cart,version=v2 (Istio's label
    ranks): the endpoint sharing both labels gets every request; once it is ejected, the one sharing the first
    label; once that one is ejected too, the one whose first label differs (it shares `app`, but a label counts
    only after all before it: Istio's rule). Localities play no part."""
    both, first, neither = Switchable(), Switchable(), Switchable()
    try:
        eps = [(neither.port, "{version: v1, app: cart}"), (both.port, "{version: v2, app: cart}"),
               (first.port, "{version: v2, app: other}")]
        yaml = located([(p, "r1/z1") for p, _ in eps], lb="{simple: ROUND_ROBIN, localityLbSetting: {failoverPriority: [version, app]}}")
        for p, labels in eps:
            yaml = yaml.replace(f"ports: {{http: {p}}}, locality: r1/z1", f"ports: {{http: {p}}}, labels: {labels}")
        t, _, _ = mesh_of(yaml, "--labels", "app=cart,version=v2")
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert [c.get(f"/a{i}").status_code for i in range(10)] == [200] * 10
            assert (len(both.requests), len(first.requests), len(neither.requests)) == (10, 0, 0)
            both.failing = True
            assert c.get("/fail").status_code == 503
            assert [c.get(f"/b{i}").status_code for i in range(10)] == [200] * 10
            assert (len(both.requests), len(first.requests), len(neither.requests)) == (11, 10, 0)
            first.failing = True
            assert c.get("/fail").status_code == 503
            assert [c.get(f"/c{i}").status_code for i in range(10)] == [200] * 10
            assert (len(both.requests), len(first.requests), len(neither.requests)) == (11, 11, 10)
    finally:
        for u in (both, first, neither):
            u.stop()


def test_retry_remote_localities_sends_a_later_retry_to_another_locality(mesh_of):
    """retryRemoteLocalities: as Istio configures Envoy (previous_priorities, update_frequency 2), from the second
    retry on a retry leaves out the locality ranks tried. Both endpoints of the near locality answer 503 (not
    ejected: their threshold is high): the first retry goes to the other near one, the second to the far
    locality; without the setting both retries stay near."""
    near1, near2, far = Scripted(503), Scripted(503), HttpUpstream()
    try:
        eps = [(near1.port, "r1/z1"), (near2.port, "r1/z1"), (far.port, "r2/z1")]
        outlier = "{consecutive5xxErrors: 100}"
        yaml = located(eps, outlier=outlier).replace("retries: {attempts: 0}", "retries: {attempts: 2, retryOn: 5xx, retryRemoteLocalities: true}")
        t, _, _ = mesh_of(yaml, "--locality", "r1/z1")
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "svc"}, timeout=10) as c:
            assert [c.get(f"/a{i}").status_code for i in range(10)] == [200] * 10
        # Each request: one try at each near endpoint (retryIgnorePreviousHosts), then the far one.
        assert len(near1.requests) == 10 and len(near2.requests) == 10 and len(far.requests) == 10
        t2, _, _ = mesh_of(located(eps, outlier=outlier).replace("retries: {attempts: 0}", "retries: {attempts: 2, retryOn: 5xx}"),
                           "--locality", "r1/z1")
        with httpx.Client(base_url=f"http://127.0.0.1:{t2.port}", headers={"host": "svc"}, timeout=10) as c:
            assert [c.get(f"/b{i}").status_code for i in range(10)] == [503] * 10
        assert len(far.requests) == 10  # none more: all three tries stayed in r1/z1
    finally:
        for u in (near1, near2, far):
            u.stop()


# Istio's bookinfo request-timeouts and traffic-shifting tasks, their VirtualServices as the tasks write them, with
# reviews' DestinationRule from destination-rule-all.yaml; each reviews version is an upstream of its own.
BOOKINFO_REVIEWS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{version: v2}}}}
  - {{address: 127.0.0.1, ports: {{http: {v3}}}, labels: {{version: v3}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v3
    labels:
      version: v3
---
"""

REVIEWS_V2_TIMEOUT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
    timeout: 0.5s
"""

REVIEWS_50_V3 = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 50
    - destination:
        host: reviews
        subset: v3
      weight: 50
"""

REVIEWS_V3 = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v3
"""


def reviews_versions():
    return HttpUpstream(), HttpUpstream(), HttpUpstream()


def test_bookinfo_request_timeouts_task(tmp_path, backend):
    """The request-timeouts task: reviews v2 behind a 0.5 s route timeout; the call it makes (ratings, delayed 2 s
    by the task's fault) is played by an upstream that answers after 2 s: 504 UT, not the answer. A fast call
    passes."""
    v1, v2, v3 = reviews_versions()
    t, access = start(tmp_path, backend, BOOKINFO_REVIEWS.format(v1=v1.port, v2=v2.port, v3=v3.port) + REVIEWS_V2_TIMEOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "reviews:9080"}, timeout=10) as c:
            r = c.get("/delay/2000")
            assert (r.status_code, r.text) == (504, "upstream request timeout")
            assert c.get("/reviews/0").status_code == 200
        assert v2.paths() == ["/delay/2000", "/reviews/0"] and not v1.requests and not v3.requests
        assert [g["response_flags"] for g in lines(access, 2)] == ["UT", "-"]
    finally:
        t.stop()
        for u in (v1, v2, v3):
            u.stop()


def test_bookinfo_traffic_shifting_task(tmp_path, backend):
    """The traffic-shifting task: 50 % to v1 and 50 % to v3 (400 requests: v3's share within 5 standard deviations
    of 200, seeded), then all to v3."""
    v1, v2, v3 = reviews_versions()
    yaml = BOOKINFO_REVIEWS.format(v1=v1.port, v2=v2.port, v3=v3.port)
    t, _ = start(tmp_path, backend, yaml + REVIEWS_50_V3, env={**os.environ, "TERN_RANDOM_SEED": "18"}, log=False)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "reviews:9080"}, timeout=10) as c:
            assert [c.get(f"/reviews/{i}").status_code for i in range(400)] == [200] * 400
        assert 150 <= len(v3.requests) <= 250 and len(v1.requests) + len(v3.requests) == 400 and not v2.requests
    finally:
        t.stop()
    other = tmp_path / "v3"
    other.mkdir()
    v1_before, v3_before = len(v1.requests), len(v3.requests)
    t, _ = start(other, backend, yaml + REVIEWS_V3, log=False)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "reviews:9080"}, timeout=10) as c:
            assert [c.get(f"/reviews/{i}").status_code for i in range(50)] == [200] * 50
        assert len(v3.requests) - v3_before == 50 and len(v1.requests) == v1_before and not v2.requests
    finally:
        t.stop()
        for u in (v1, v2, v3):
            u.stop()
