"""Tracing in `tern proxy --http`: trace context propagation and span export (../shared/reference/istio.md §6).

Tern is held to what an Istio sidecar's Envoy does with a tracer configured: the request it forwards carries
Tern's own span as the new parent (W3C `traceparent` always, `tracestate` unchanged, B3 in the style it came
in), `x-request-id` is kept, and spans go in batches to a collector (Zipkin v2 JSON for `/api/v2/spans`,
OTLP/HTTP JSON for `/v1/traces`). A request that brings a sampling decision keeps it; one without is sampled
at `--trace-sampling` percent. A dead or silent collector costs the requests nothing.

Each test starts its own collector (`Collector`, a Python HTTP server thread recording every batch) and bounds
every wait with a deadline.
"""
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from http_peers import HttpUpstream
from peers import dead_port

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
HEX16 = re.compile(r"^[0-9a-f]{16}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


# ---------------------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------------------

class Collector:
    """A trace collector: records every POST (path, headers, JSON body) and answers `status` (Zipkin's 202,
    OTLP's 200). `spans()` flattens what arrived into one dict per span, in either format."""

    def __init__(self, status=202):
        self.batches = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with collector.lock:
                    collector.batches.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                              "body": json.loads(body)})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def spans(self):
        with self.lock:
            batches = list(self.batches)
        out = []
        for b in batches:
            body = b["body"]
            if isinstance(body, list):  # Zipkin v2
                out += body
            else:  # OTLP
                for rs in body["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        out += ss["spans"]
        return out

    def wait_for_span(self, span_id, timeout=10):
        """The span whose id (Zipkin `id`, OTLP `spanId`) is `span_id`, waiting until it arrives."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for s in self.spans():
                if s.get("id", s.get("spanId")) == span_id:
                    return s
            time.sleep(0.05)
        raise AssertionError(f"span {span_id} not received; got {self.spans()}")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class SilentCollector:
    """A port that accepts connections (into the kernel's backlog) and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.sock.close()


@pytest.fixture
def peers():
    """Starts upstreams and collectors; stops them after the test."""
    started = []

    def start(cls, *args):
        p = cls(*args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
    for p in started:
        assert not getattr(p, "failures", []), p.failures


def traced(start_tern, up, collector_url, *extra):
    """`tern proxy --http` in front of `up`, sending spans to `collector_url`; one reactor."""
    # As an outbound sidecar (reporter source): Tern's spans are CLIENT spans.
    return start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", up.address, "--cores", "1",
                      "--reporter", "source", "--trace-collector", collector_url, *extra)


def client(port, timeout=10):
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=timeout)


def only(request, name):
    """The single value of field `name` the upstream received (asserting there was exactly one)."""
    values = request.header_values(name)
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


def traceparent(value):
    """(version, trace id, parent id, flags) of a traceparent value, checked for W3C's format."""
    m = re.fullmatch(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", value)
    assert m, value
    assert m.group(2) != "0" * 32 and m.group(3) != "0" * 16, value
    return m.groups()


def tags(span):
    """Zipkin tags or OTLP attributes as a dict of strings."""
    if "tags" in span:
        return span["tags"]
    return {a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])}


# ---------------------------------------------------------------------------------------------------------
# Propagation and spans
# ---------------------------------------------------------------------------------------------------------

def test_w3c_context_goes_upstream_with_terns_span_as_parent_and_the_span_reaches_zipkin(start_tern, peers):
    """A sampled traceparent: the upstream gets the same trace with Tern's span id as parent, tracestate and
    x-request-id unchanged; the collector gets Tern's span (a child of the caller's) as Zipkin v2 JSON."""
    up = peers(HttpUpstream)
    collector = peers(Collector)
    t = traced(start_tern, up, collector.url("/api/v2/spans"), "--trace-sampling", "100")
    with client(t.port) as c:
        r = c.get("/product/7?x=1", headers={"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": TRACESTATE,
                                             "x-request-id": "tern-trace-1"})
    assert r.status_code == 200
    got = up.requests[0]
    version, trace, span_id, flags = traceparent(only(got, "traceparent"))
    assert (version, trace, flags) == ("00", TRACE, "01")
    assert span_id != PARENT
    assert only(got, "tracestate") == TRACESTATE
    assert only(got, "x-request-id") == "tern-trace-1"
    assert not any(got.has(n) for n in ("b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"))

    span = collector.wait_for_span(span_id)
    assert span["traceId"] == TRACE
    assert span["parentId"] == PARENT
    assert span["kind"] == "CLIENT"  # tern proxy reports as the caller's sidecar (reporter=source)
    assert span["name"] == span["name"].lower() and span["name"]
    assert isinstance(span["timestamp"], int) and abs(span["timestamp"] / 1e6 - time.time()) < 60
    assert isinstance(span["duration"], int) and span["duration"] >= 1
    assert span["localEndpoint"]["serviceName"]
    tag = tags(span)
    assert tag["http.method"] == "GET"
    assert tag["http.status_code"] == "200"
    assert tag["guid:x-request-id"] == "tern-trace-1"
    assert tag["component"] == "proxy"
    assert "/product/7" in tag["http.url"]
    assert "error" not in tag
    batch = collector.batches[0]
    assert batch["path"] == "/api/v2/spans"
    assert batch["headers"]["content-type"].startswith("application/json")


def test_b3_multi_is_forwarded_as_multi_with_terns_span(start_tern, peers):
    """x-b3-* fields in: x-b3-* fields out (plus traceparent), Tern's span id in x-b3-spanid and the caller's
    span as x-b3-parentspanid; the span reported has the caller's span as parent."""
    up = peers(HttpUpstream)
    collector = peers(Collector)
    t = traced(start_tern, up, collector.url("/api/v2/spans"), "--trace-sampling", "0")
    b3_trace, b3_span = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
    with client(t.port) as c:
        r = c.get("/b3", headers={"X-B3-TraceId": b3_trace, "X-B3-SpanId": b3_span,
                                  "X-B3-ParentSpanId": "0020000000000001", "X-B3-Sampled": "1"})
    assert r.status_code == 200
    got = up.requests[0]
    assert only(got, "x-b3-traceid") == b3_trace
    span_id = only(got, "x-b3-spanid")
    assert HEX16.match(span_id) and span_id != b3_span
    assert only(got, "x-b3-parentspanid") == b3_span
    assert only(got, "x-b3-sampled") == "1"
    assert traceparent(only(got, "traceparent")) == ("00", b3_trace, span_id, "01")
    assert not got.has("b3") and not got.has("tracestate")
    # Sampling 0 %, but the caller decided: the span is reported.
    span = collector.wait_for_span(span_id)
    assert span["traceId"] == b3_trace and span["parentId"] == b3_span


def test_b3_single_is_forwarded_as_single(start_tern, peers):
    """`b3` in: `b3` out with Tern's span, the 64-bit trace id kept at 16 digits (traceparent pads it)."""
    up = peers(HttpUpstream)
    collector = peers(Collector)
    t = traced(start_tern, up, collector.url("/api/v2/spans"))
    short_trace, caller = "a3ce929d0e0e4736", "a2fb4a1d1a96d312"
    with client(t.port) as c:
        assert c.get("/b3", headers={"b3": f"{short_trace}-{caller}-1"}).status_code == 200
    got = up.requests[0]
    m = re.fullmatch(rf"{short_trace}-([0-9a-f]{{16}})-1-{caller}", only(got, "b3"))
    assert m, got.header("b3")
    span_id = m.group(1)
    assert traceparent(only(got, "traceparent")) == ("00", "0" * 16 + short_trace, span_id, "01")
    assert not any(n.startswith("x-b3-") for n, _ in got.headers)
    span = collector.wait_for_span(span_id)
    assert span["traceId"] == short_trace and span["parentId"] == caller


def test_otlp_collector_receives_the_span(start_tern, peers):
    """A collector at `/v1/traces` gets OTLP/HTTP JSON: service.name, scope "tern", hex ids, kind as an
    integer, nanosecond times as decimal strings."""
    up = peers(HttpUpstream)
    collector = peers(Collector, 200)
    t = traced(start_tern, up, collector.url("/v1/traces"), "--trace-sampling", "100")
    with client(t.port) as c:
        assert c.get("/otlp", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}).status_code == 200
    _, trace, span_id, _ = traceparent(only(up.requests[0], "traceparent"))
    assert trace == TRACE
    span = collector.wait_for_span(span_id)
    assert span["traceId"] == TRACE and span["parentSpanId"] == PARENT
    assert span["kind"] == 3  # client
    start, end = span["startTimeUnixNano"], span["endTimeUnixNano"]
    assert isinstance(start, str) and start.isdigit() and isinstance(end, str) and end.isdigit()
    assert int(end) > int(start) and abs(int(start) / 1e9 - time.time()) < 60
    assert tags(span)["http.method"] == "GET"
    body = collector.batches[0]["body"]
    attributes = body["resourceSpans"][0]["resource"]["attributes"]
    assert any(a["key"] == "service.name" and a["value"]["stringValue"] for a in attributes)
    assert body["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"] == "tern"
    assert collector.batches[0]["path"] == "/v1/traces"


def test_sampling_zero_reports_no_span_but_still_propagates(start_tern, peers):
    """At 0 %, requests without a decision are not reported, yet each still goes upstream with a fresh trace
    (flags 00); a caller's sampled request is the control that spans do flow."""
    up = peers(HttpUpstream)
    collector = peers(Collector)
    t = traced(start_tern, up, collector.url("/api/v2/spans"), "--trace-sampling", "0")
    with client(t.port) as c:
        for i in range(20):
            assert c.get(f"/quiet/{i}").status_code == 200
        assert c.get("/quiet/unsampled", headers={"traceparent": f"00-{TRACE}-{PARENT}-00"}).status_code == 200
        assert c.get("/control", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}).status_code == 200
    parents = [traceparent(only(r, "traceparent")) for r in up.requests]
    assert all(p[3] == "00" for p in parents[:21]) and parents[21][3] == "01"
    assert len({p[1] for p in parents[:20]}) == 20  # a new trace per request
    assert parents[20][1] == TRACE
    collector.wait_for_span(parents[21][2])
    # One reactor's spans leave in the order they were recorded: had any earlier request been reported, its
    # span would have arrived before (or with) the control's.
    assert [s["id"] for s in collector.spans()] == [parents[21][2]]


def test_sampling_hundred_starts_a_new_trace(start_tern, peers):
    """At 100 %, a request without context starts a trace: a new 128-bit trace id, Tern's span its root."""
    up = peers(HttpUpstream)
    collector = peers(Collector)
    t = traced(start_tern, up, collector.url("/api/v2/spans"), "--trace-sampling", "100")
    with client(t.port) as c:
        assert c.get("/new/1").status_code == 200
        assert c.get("/new/2").status_code == 200
    first = traceparent(only(up.requests[0], "traceparent"))
    second = traceparent(only(up.requests[1], "traceparent"))
    assert first[3] == "01" and second[3] == "01"
    assert first[1] != second[1]
    assert not up.requests[0].has("tracestate")
    for _, trace, span_id, _ in (first, second):
        span = collector.wait_for_span(span_id)
        assert span["traceId"] == trace and HEX32.match(trace)
        assert "parentId" not in span


def test_invalid_context_starts_a_new_trace_and_drops_tracestate(start_tern, peers):
    """An invalid traceparent (uppercase hex) is no context: a new trace, its tracestate not passed on."""
    up = peers(HttpUpstream)
    collector = peers(Collector)
    t = traced(start_tern, up, collector.url("/api/v2/spans"), "--trace-sampling", "100")
    with client(t.port) as c:
        r = c.get("/bad", headers={"traceparent": f"00-{TRACE.upper()}-{PARENT}-01", "tracestate": TRACESTATE})
    assert r.status_code == 200
    _, trace, span_id, _ = traceparent(only(up.requests[0], "traceparent"))
    assert trace != TRACE
    assert not up.requests[0].has("tracestate")
    assert "parentId" not in collector.wait_for_span(span_id)


# ---------------------------------------------------------------------------------------------------------
# A collector that fails costs nothing
# ---------------------------------------------------------------------------------------------------------

def many_requests_promptly(t, n=200, limit=10.0, then=1.0):
    """n sampled requests on one keep-alive connection, all answered 200 within `limit` seconds; then more for
    `then` seconds (the exporter has tried and failed batches meanwhile), each answered within a second, with
    Tern running throughout. Returns how many requests were sent."""
    started = time.time()
    with client(t.port, timeout=limit) as c:
        for i in range(n):
            r = c.get(f"/load/{i}", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
            assert r.status_code == 200
        took = time.time() - started
        assert took < limit, f"{n} requests took {took:.1f} s"
        until = time.time() + then
        while time.time() < until:
            sent = time.time()
            assert c.get(f"/load/{n}", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}).status_code == 200
            assert time.time() - sent < 1.0
            assert t.proc.poll() is None
            n += 1
    return n


def test_dead_collector_costs_requests_nothing(start_tern, peers):
    """Spans for a collector nobody listens on are dropped; requests are answered as fast as ever and Tern
    keeps running."""
    up = peers(HttpUpstream)
    prom = dead_port()
    t = traced(start_tern, up, f"http://127.0.0.1:{dead_port()}/api/v2/spans", "--trace-sampling", "100",
               "--prometheus", f"127.0.0.1:{prom}", "--admin", "off", "--health", "off")
    sent = many_requests_promptly(t)
    assert len(up.requests) == sent
    # The spans lost are counted, and so are the failed batches.
    deadline = time.time() + 10
    metrics = {}
    while time.time() < deadline:
        text = httpx.get(f"http://127.0.0.1:{prom}/stats/prometheus", timeout=5).text
        metrics = {l.split()[0]: float(l.split()[1]) for l in text.splitlines()
                   if l.startswith("tern_tracing_")}
        if metrics.get("tern_tracing_spans_dropped_total", 0) >= sent:
            break
        time.sleep(0.1)
    assert metrics["tern_tracing_spans_dropped_total"] >= sent
    assert metrics["tern_tracing_batches_failed_total"] >= 1
    assert metrics["tern_tracing_spans_exported_total"] == 0
    assert t.stop() == 0


def test_collector_that_never_answers_costs_requests_nothing(start_tern, peers):
    """A collector that takes connections and never answers holds only the exporter (its deadline), never a
    request; Tern keeps running and still stops cleanly."""
    up = peers(HttpUpstream)
    silent = peers(SilentCollector)
    t = traced(start_tern, up, silent.url("/api/v2/spans"), "--trace-sampling", "100")
    sent = many_requests_promptly(t, then=2.5)  # longer than one export deadline (2 s)
    assert len(up.requests) == sent
    started = time.time()
    assert t.stop() == 0
    assert time.time() - started < 12
