"""CORS (VirtualService `corsPolicy`, issue 18 §7), as Envoy's CORS filter applies it under Istio: preflights answered by
Tern or forwarded, the fields a response to an allowed origin gets, exact, prefix and regex origins, and the cases
of the Fetch standard's CORS protocol (https://fetch.spec.whatwg.org/#http-cors-protocol) where Envoy defines what a
proxy does: the `null` origin, an origin in several fields, an empty one, a preflight without
Access-Control-Request-Method, the case of the method. Real clients (httpx, curl, raw sockets for exact bytes)
through the real binary to a recording upstream; what reached the upstream is counted, never timed."""
import os
import socket
import subprocess

import httpx
import pytest

from http_peers import HttpUpstream
from peers import dead_port
from test_http_proxy import build_request
from test_resilience import SERVICE, lines, start
from test_telemetry import families, samples, side_args, side_ports

APP = "https://app.example"

MESH = """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: gone}}
spec:
  hosts: [gone]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {dead}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web]
  http:
  - match: [{{headers: {{x-policy: {{exact: exact}}}}}}]
    corsPolicy:
      allowOrigins: [{{exact: "https://app.example"}}]
      allowMethods: [GET, POST, PATCH]
      allowHeaders: [X-Foo-Bar, X-Foo-Baz]
      exposeHeaders: [x-trace, x-count]
      maxAge: 24h
      allowCredentials: true
    route: [{{destination: {{host: web}}}}]
  - match: [{{headers: {{x-policy: {{exact: ignore}}}}}}]
    corsPolicy:
      allowOrigins: [{{exact: "https://app.example"}}]
      allowMethods: [PUT]
      exposeHeaders: [x-trace]
      maxAge: 10m
      allowCredentials: true
      unmatchedPreflights: IGNORE
    route: [{{destination: {{host: web}}}}]
  - match: [{{headers: {{x-policy: {{exact: prefix}}}}}}]
    corsPolicy:
      allowOrigins: [{{prefix: "https://shop."}}]
    headers: {{response: {{add: {{x-served-by: tern}}, remove: [x-upstream-connection]}}}}
    route: [{{destination: {{host: web}}}}]
  - match: [{{headers: {{x-policy: {{exact: regex}}}}}}]
    corsPolicy:
      allowOrigins: [{{regex: "https://[a-z0-9-]+\\\\.example\\\\.com(:[0-9]+)?"}}]
    route: [{{destination: {{host: web}}}}]
  - match: [{{headers: {{x-policy: {{exact: any}}}}}}]
    corsPolicy:
      allowOrigins: [{{regex: ".*"}}]
      allowMethods: ["*"]
      allowHeaders: ["*"]
      allowCredentials: true
    route: [{{destination: {{host: web}}}}]
  - match: [{{headers: {{x-policy: {{exact: "null"}}}}}}]
    corsPolicy:
      allowOrigins: [{{exact: "null"}}]
    route: [{{destination: {{host: web}}}}]
  - match: [{{headers: {{x-policy: {{exact: route-fields}}}}}}]
    corsPolicy:
      allowOrigins: [{{exact: "https://app.example"}}]
    headers: {{response: {{set: {{access-control-allow-origin: "https://route.example", x-served-by: tern}}}}}}
    route: [{{destination: {{host: web}}}}]
  - match: [{{headers: {{x-policy: {{exact: gone}}}}}}]
    corsPolicy:
      allowOrigins: [{{exact: "https://app.example"}}]
      allowMethods: [GET]
    route: [{{destination: {{host: gone}}}}]
  - match: [{{headers: {{x-policy: {{exact: delayed}}}}}}]
    fault: {{delay: {{fixedDelay: 200ms, percentage: {{value: 100}}}}}}
    corsPolicy:
      allowOrigins: [{{exact: "https://app.example"}}]
      allowMethods: [GET]
    route: [{{destination: {{host: web}}}}]
  - match: [{{headers: {{x-policy: {{exact: aborted}}}}}}]
    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
    corsPolicy:
      allowOrigins: [{{exact: "https://app.example"}}]
      allowMethods: [GET]
    route: [{{destination: {{host: web}}}}]
  - route: [{{destination: {{host: web}}}}]
"""


@pytest.fixture
def cors(tmp_path, backend):
    up = HttpUpstream()
    ports = side_ports()
    t, access = start(tmp_path, backend, SERVICE.format(name="web", port=up.port) + MESH.format(dead=dead_port()),
                      *side_args(ports))
    yield t, up, access, ports
    t.stop()
    up.stop()


def client(t, policy):
    return httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "web", "x-policy": policy},
                        trust_env=False, timeout=10)


def preflight(c, origin=APP, method="DELETE", headers=None, path="/p"):
    h = {"origin": origin, "access-control-request-method": method}
    if headers is not None:
        h["access-control-request-headers"] = headers
    return c.options(path, headers=h)


def cors_fields(r):
    """The response's access-control-* fields, in order, as (name, value)."""
    return [(n.decode().lower(), v.decode()) for n, v in r.headers.raw if n.lower().startswith(b"access-control-")]


def raw(t, request):
    """Sends exact request bytes; returns the response head's bytes (a response without a body)."""
    with socket.create_connection(("127.0.0.1", t.port), timeout=10) as s:
        s.sendall(request)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        return got


def test_a_matched_preflight_is_answered_by_tern_with_the_policy_and_never_reaches_the_upstream(cors):
    t, up, access, _ = cors
    got = raw(t, build_request("OPTIONS", "/items/7", [("Origin", APP), ("Access-Control-Request-Method", "DELETE"),
                                                       ("Access-Control-Request-Headers", "x-foo-bar"),
                                                       ("x-policy", "exact")], host="web"))
    # Exact bytes: Envoy's filter sets the fields in this order (origin, credentials, methods, headers, max-age),
    # then its response side adds the exposed headers; the lists go as Istio joins them (no spaces), max-age in
    # seconds, the request's own origin echoed.
    assert got == (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"
                   b"access-control-allow-origin: https://app.example\r\n"
                   b"access-control-allow-credentials: true\r\n"
                   b"access-control-allow-methods: GET,POST,PATCH\r\n"
                   b"access-control-allow-headers: X-Foo-Bar,X-Foo-Baz\r\n"
                   b"access-control-max-age: 86400\r\n"
                   b"access-control-expose-headers: x-trace,x-count\r\n\r\n")
    # curl, on a keep-alive connection: the same answer, twice (a preflight leaves the connection usable).
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-D", "-", "-o", "/dev/null", "-X", "OPTIONS",
                        "-H", "Host: web", "-H", "x-policy: exact", "-H", f"Origin: {APP}",
                        "-H", "Access-Control-Request-Method: PATCH",
                        f"http://127.0.0.1:{t.port}/a", "--next", "-sS", "--noproxy", "*", "-D", "-", "-o", "/dev/null",
                        "-X", "OPTIONS", "-H", "Host: web", "-H", "x-policy: exact", "-H", f"Origin: {APP}",
                        "-H", "Access-Control-Request-Method: GET", f"http://127.0.0.1:{t.port}/b"],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    heads = r.stdout.decode().split("\r\n\r\n")[:2]
    assert [h.splitlines()[0] for h in heads] == ["HTTP/1.1 200 OK"] * 2
    assert all(f"access-control-allow-origin: {APP}" in h.splitlines() for h in heads)
    assert up.requests == []
    got = lines(access, 3)
    assert [(g["method"], g["response_code"], g["response_flags"], g["response_code_details"]) for g in got] == [
        ("OPTIONS", 200, "-", "cors_response")] * 3


def test_an_unmatched_preflight_is_forwarded_unchanged_under_FORWARD(cors):
    t, up, _, _ = cors
    with client(t, "exact") as c:
        r = preflight(c, origin="https://evil.example", headers="x-foo-bar")
        assert r.status_code == 200 and r.text == "/p"  # the upstream's answer
        assert cors_fields(r) == []
    [seen] = up.requests
    assert seen.method == "OPTIONS"
    assert (seen.header("origin"), seen.header("access-control-request-method"),
            seen.header("access-control-request-headers")) == ("https://evil.example", "DELETE", "x-foo-bar")


def test_an_unmatched_preflight_is_answered_without_an_origin_under_IGNORE(cors):
    t, up, access, _ = cors
    with client(t, "ignore") as c:
        r = preflight(c, origin="https://evil.example")
        # As Envoy: the preflight is answered here, without access-control-allow-origin (so the browser refuses it)
        # but with the policy's other preflight fields; the exposed headers go only with an allowed origin.
        assert (r.status_code, r.content) == (200, b"")
        assert cors_fields(r) == [("access-control-allow-credentials", "true"), ("access-control-allow-methods", "PUT"),
                                  ("access-control-max-age", "600")]
        r = preflight(c)
        assert cors_fields(r) == [("access-control-allow-origin", APP), ("access-control-allow-credentials", "true"),
                                  ("access-control-allow-methods", "PUT"), ("access-control-max-age", "600"),
                                  ("access-control-expose-headers", "x-trace")]
    assert up.requests == []
    assert [g["response_code_details"] for g in lines(access, 2)] == ["cors_response"] * 2


def test_a_request_from_an_allowed_origin_gets_the_response_fields_and_others_get_none(cors):
    t, up, _, _ = cors
    with client(t, "exact") as c:
        r = c.post("/orders", headers={"origin": APP}, content=b"{}")
        assert r.status_code == 200 and r.text == "/orders"
        assert cors_fields(r) == [("access-control-allow-origin", APP), ("access-control-allow-credentials", "true"),
                                  ("access-control-expose-headers", "x-trace,x-count")]
        assert "vary" not in r.headers  # Envoy adds no Vary: Origin
        r = c.get("/orders", headers={"origin": "https://evil.example"})
        assert r.status_code == 200 and cors_fields(r) == []
        r = c.get("/orders")
        assert r.status_code == 200 and cors_fields(r) == []
        # An OPTIONS request without Access-Control-Request-Method is no preflight: it goes upstream, and an
        # allowed origin's response gets the fields.
        r = c.options("/orders", headers={"origin": APP})
        assert r.text == "/orders" and cors_fields(r)[0] == ("access-control-allow-origin", APP)
    # Every one reached the upstream with its Origin as sent.
    assert [(q.method, q.header("origin")) for q in up.requests] == [
        ("POST", APP), ("GET", "https://evil.example"), ("GET", None), ("OPTIONS", APP)]


def test_an_allowed_origins_fields_replace_the_upstreams_own(cors):
    t, up, _, _ = cors
    target = ("/headers?access-control-allow-origin=*&access-control-allow-credentials=false"
              "&access-control-expose-headers=x-up&access-control-max-age=5")
    with client(t, "exact") as c:
        r = c.get(target, headers={"origin": APP})
        # The policy's three fields replace the upstream's; what the policy does not set (max-age, on a response
        # that is not a preflight's) passes.
        assert sorted(cors_fields(r)) == [("access-control-allow-credentials", "true"),
                                          ("access-control-allow-origin", APP),
                                          ("access-control-expose-headers", "x-trace,x-count"),
                                          ("access-control-max-age", "5")]
        r = c.get(target, headers={"origin": "https://evil.example"})
        assert sorted(cors_fields(r)) == [("access-control-allow-credentials", "false"),
                                          ("access-control-allow-origin", "*"),
                                          ("access-control-expose-headers", "x-up"), ("access-control-max-age", "5")]
    with client(t, "prefix") as c:
        # A policy without credentials or exposed headers replaces only the upstream's origin; the route's own
        # header operations apply beside it.
        r = c.get(target, headers={"origin": "https://shop.example"})
        assert r.headers["x-served-by"] == "tern" and "x-upstream-connection" not in r.headers
        assert sorted(cors_fields(r)) == [("access-control-allow-credentials", "false"),
                                          ("access-control-allow-origin", "https://shop.example"),
                                          ("access-control-expose-headers", "x-up"), ("access-control-max-age", "5")]
    with client(t, "route-fields") as c:
        # A route's own field of a name the policy sets gives way to the policy's for an allowed origin (Envoy's
        # filter sets its fields after the router applied the route's), and stays for the others.
        r = c.get("/", headers={"origin": APP})
        assert cors_fields(r) == [("access-control-allow-origin", APP)] and r.headers["x-served-by"] == "tern"
        r = c.get("/", headers={"origin": "https://evil.example"})
        assert cors_fields(r) == [("access-control-allow-origin", "https://route.example")]
    assert len(up.requests) == 5


@pytest.mark.parametrize("policy,origin,allowed", [
    ("prefix", "https://shop.example", True),
    ("prefix", "https://shop.", True),
    ("prefix", "http://shop.example", False),
    ("prefix", "https://Shop.example", False),
    ("regex", "https://a-1.example.com", True),
    ("regex", "https://a.example.com:8443", True),
    ("regex", "https://a.example.com.evil.net", False),  # Envoy's regexes match the whole origin
    ("regex", "https://example.com", False),
    ("exact", "HTTPS://APP.EXAMPLE", False),  # origins are compared case-sensitively, as Envoy does
    ("exact", APP + "/", False),
])
def test_prefix_and_regex_origins(cors, policy, origin, allowed):
    t, up, _, _ = cors
    with client(t, policy) as c:
        r = preflight(c, origin=origin, method="GET")
        if allowed:
            assert r.content == b"" and cors_fields(r)[0] == ("access-control-allow-origin", origin)
            assert up.requests == []
        else:
            assert r.text == "/p" and cors_fields(r) == []
            assert len(up.requests) == 1
        r = c.get("/simple", headers={"origin": origin})
        assert (("access-control-allow-origin", origin) in cors_fields(r)) == allowed


def test_a_star_policy_echoes_the_origin_method_and_headers_even_with_credentials(cors):
    t, up, _, _ = cors
    with client(t, "any") as c:
        # Every origin is allowed, and the answer names the request's origin, never "*" (which a browser refuses
        # with credentials, Fetch §3.3.5).
        r = preflight(c, origin="https://anywhere.test", method="PATCH", headers="x-a, content-type")
        assert cors_fields(r) == [("access-control-allow-origin", "https://anywhere.test"),
                                  ("access-control-allow-credentials", "true"),
                                  ("access-control-allow-methods", "PATCH"),
                                  ("access-control-allow-headers", "x-a, content-type")]
        # The method is echoed as sent: Fetch upper-cases only DELETE, GET, HEAD, OPTIONS, POST and PUT, so a
        # `fetch(url, {method: "patch"})` preflight says "patch", which the browser then compares case-sensitively.
        r = preflight(c, origin="https://anywhere.test", method="patch")
        assert ("access-control-allow-methods", "patch") in cors_fields(r)
        # Without Access-Control-Request-Headers, "*" echoes an empty list, as Envoy.
        assert ("access-control-allow-headers", "") in cors_fields(r)
    assert up.requests == []


def test_the_method_of_a_preflight_is_case_sensitive_and_field_names_are_not(cors):
    t, up, _, _ = cors
    # "options" is another method than OPTIONS (RFC 9110 §9.1; browsers always send OPTIONS): no preflight, the
    # request goes upstream, and as a request from an allowed origin its response gets the fields.
    got = raw(t, build_request("options", "/lower", [("Origin", APP), ("Access-Control-Request-Method", "GET"),
                                                     ("x-policy", "exact"), ("Connection", "close")], host="web"))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\naccess-control-allow-origin: https://app.example\r\n" in got
    assert [(q.method, q.path) for q in up.requests] == [("options", "/lower")]
    # Field names in any case.
    got = raw(t, build_request("OPTIONS", "/upper", [("ORIGIN", APP), ("access-CONTROL-request-METHOD", "GET"),
                                                     ("x-policy", "exact")], host="web"))
    assert got.startswith(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\naccess-control-allow-origin: https://app.example\r\n")
    assert len(up.requests) == 1


def test_the_null_origin_is_an_origin_like_any_other(cors):
    t, up, _, _ = cors
    # Fetch serialises an opaque origin (a sandboxed iframe, a file: page, a redirect across origins) as "null":
    # Envoy matches it as the string it is.
    with client(t, "null") as c:
        r = preflight(c, origin="null", method="GET")
        assert cors_fields(r) == [("access-control-allow-origin", "null")]
    with client(t, "exact") as c:
        r = c.get("/n", headers={"origin": "null"})
        assert cors_fields(r) == []
    with client(t, "any") as c:
        r = c.get("/n", headers={"origin": "null"})
        assert cors_fields(r)[0] == ("access-control-allow-origin", "null")
    assert len(up.requests) == 2


def test_an_origin_in_several_fields_is_read_as_envoy_joins_them(cors):
    t, up, _, _ = cors
    # A browser sends one Origin; Envoy reads several as one value joined with "," (so does Tern), which then
    # matches no single exact origin, and which an allowing policy echoes whole: a browser refuses an
    # Access-Control-Allow-Origin that is a list (Fetch §4.10, CORS check).
    two = [("Origin", APP), ("Origin", "https://other.example")]
    got = raw(t, build_request("OPTIONS", "/two", two + [("Access-Control-Request-Method", "GET"),
                                                         ("x-policy", "any")], host="web"))
    assert b"\r\naccess-control-allow-origin: https://app.example,https://other.example\r\n" in got
    got = raw(t, build_request("GET", "/two", two + [("x-policy", "exact"), ("Connection", "close")], host="web"))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"access-control-" not in got
    # Empty values add nothing to the joined value; only empty ones: no Origin at all, not a CORS request (an
    # IGNORE policy then forwards the preflight as any other request).
    got = raw(t, build_request("OPTIONS", "/empty", [("Origin", ""), ("Origin", APP),
                                                     ("Access-Control-Request-Method", "GET"), ("x-policy", "exact")],
                               host="web"))
    assert b"\r\naccess-control-allow-origin: https://app.example\r\n" in got
    got = raw(t, build_request("OPTIONS", "/none", [("Origin", ""), ("Access-Control-Request-Method", "GET"),
                                                    ("x-policy", "ignore"), ("Connection", "close")], host="web"))
    assert b"access-control-" not in got and got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert [q.path for q in up.requests] == ["/two", "/none"]


def test_a_local_reply_to_an_allowed_origin_carries_the_fields(cors):
    t, up, access, _ = cors
    with client(t, "gone") as c:
        # The upstream is down: the router's 503 goes through the CORS filter, as in Envoy, so a page can read it.
        r = c.get("/x", headers={"origin": APP})
        assert r.status_code == 503 and cors_fields(r) == [("access-control-allow-origin", APP)]
        assert r.text == "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
        assert r.headers["content-type"] == "text/plain"
        r = c.get("/x", headers={"origin": "https://evil.example"})
        assert r.status_code == 503 and cors_fields(r) == []
        # Its preflight needs no upstream.
        r = preflight(c, method="GET")
        assert r.status_code == 200 and cors_fields(r) == [("access-control-allow-origin", APP),
                                                           ("access-control-allow-methods", "GET")]
    assert [(g["response_code"], g["response_flags"]) for g in lines(access, 3)] == [
        (503, "UF,URX"), (503, "UF,URX"), (200, "-")]  # (Istio's default retries on connect-failure ran out)


def test_a_routes_fault_comes_before_its_cors_policy(cors):
    t, up, access, _ = cors
    # Istio's filter order is fault, CORS, router: an abort answers a preflight without CORS fields; a delay holds
    # it, then the policy answers it.
    with client(t, "aborted") as c:
        r = preflight(c, method="GET")
        assert (r.status_code, r.text, cors_fields(r)) == (418, "fault filter abort", [])
    with client(t, "delayed") as c:
        r = preflight(c, method="GET")
        assert r.status_code == 200 and cors_fields(r) == [("access-control-allow-origin", APP),
                                                           ("access-control-allow-methods", "GET")]
        r = c.get("/after-delay", headers={"origin": APP})
        assert r.text == "/after-delay" and cors_fields(r) == [("access-control-allow-origin", APP)]
    assert up.paths() == ["/after-delay"]
    got = lines(access, 3)
    assert [(g["response_code"], g["response_flags"], g["response_code_details"]) for g in got] == [
        (418, "FI", "fault_filter_abort"), (200, "DI", "cors_response"), (200, "DI", "via_upstream")]


def test_origins_are_counted_as_envoys_origin_valid_and_invalid(cors):
    t, up, _, ports = cors
    with client(t, "exact") as c:
        preflight(c)
        c.get("/", headers={"origin": APP})
        c.get("/", headers={"origin": "https://evil.example"})
        c.get("/")  # no Origin: not counted
    fams = families(ports[2])
    assert samples(fams, "tern_cors_origin_valid_total")[0].value == 2
    assert samples(fams, "tern_cors_origin_invalid_total")[0].value == 1


# Istio's own integration test of corsPolicy (tests/integration/pilot/common/routing.go, "cors"), its VirtualService
# as written there with the service made local, and its three calls with their checks.
ISTIO_TEST = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: default
spec:
  hosts:
    - b
  http:
  - corsPolicy:
      allowOrigins:
      - exact: cors.com
      allowMethods:
      - POST
      - GET
      allowCredentials: false
      allowHeaders:
      - X-Foo-Bar
      - X-Foo-Baz
      maxAge: "24h"
    route:
    - destination:
        host: b
"""


def test_istios_own_cors_integration_test(tmp_path, backend):
    up = HttpUpstream()
    t, _ = start(tmp_path, backend, SERVICE.format(name="b", port=up.port) + ISTIO_TEST, log=False)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "b"}, trust_env=False,
                          timeout=10) as c:
            r = c.options("/", headers={"origin": "cors.com", "access-control-request-method": "DELETE"})
            assert r.status_code == 200
            assert {k: r.headers.get(k) for k in ["Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                                                  "Access-Control-Allow-Headers", "Access-Control-Max-Age"]} == {
                "Access-Control-Allow-Origin": "cors.com", "Access-Control-Allow-Methods": "POST,GET",
                "Access-Control-Allow-Headers": "X-Foo-Bar,X-Foo-Baz", "Access-Control-Max-Age": "86400"}
            r = c.get("/", headers={"origin": "cors.com"})
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "cors.com"
            r = c.get("/")
            assert r.status_code == 200 and r.headers.get("access-control-allow-origin", "") == ""
        assert [q.method for q in up.requests] == ["GET", "GET"]
    finally:
        t.stop()
        up.stop()


# The CorsPolicy example of Istio's VirtualService reference, as written (Tests/Fixtures/config, shared with
# CORSTests.swift), with a ServiceEntry and DestinationRule for its host and subset.
ISTIO_CORS_EXAMPLE = open(os.path.join(os.path.dirname(__file__), "..", "Fixtures", "config",
                                       "istio-cors-example.yaml")).read()
RATINGS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings}}
spec:
  hosts: [ratings.prod.svc.cluster.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings}}
spec:
  host: ratings.prod.svc.cluster.local
  subsets: [{{name: v1, labels: {{version: v1}}}}]
---
"""


def test_istios_documented_example(tmp_path, backend):
    up = HttpUpstream()
    t, _ = start(tmp_path, backend, RATINGS.format(port=up.port) + ISTIO_CORS_EXAMPLE, log=False)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"host": "ratings.prod.svc.cluster.local"},
                          trust_env=False, timeout=10) as c:
            r = preflight(c, origin="https://example.com", method="POST", headers="x-foo-bar")
            # allowCredentials: false sends no credentials field (Envoy sends it only when true).
            assert cors_fields(r) == [("access-control-allow-origin", "https://example.com"),
                                      ("access-control-allow-methods", "POST,GET"),
                                      ("access-control-allow-headers", "X-Foo-Bar"),
                                      ("access-control-max-age", "86400")]
            r = c.post("/ratings/0", headers={"origin": "https://example.com"})
            assert r.text == "/ratings/0" and cors_fields(r) == [("access-control-allow-origin", "https://example.com")]
            # Another origin's preflight goes to the service (unmatchedPreflights defaults to FORWARD).
            r = preflight(c, origin="https://example.org", method="POST")
            assert r.text == "/p" and cors_fields(r) == []
        assert [q.method for q in up.requests] == ["POST", "OPTIONS"]
    finally:
        t.stop()
        up.stop()
