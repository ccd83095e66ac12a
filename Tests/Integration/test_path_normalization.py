"""Request paths normalised as Istio configures Envoy (`--path-normalization`, BASE by default): what the upstream
receives, what routes match, over HTTP/1.1 and HTTP/2, with the query left as it came (issue 19)."""
import pytest

from test_http2 import H2Client
from test_http2_upstream import mesh, start
from test_http_proxy import RawClient, http_upstream, proxy  # noqa: F401 (a fixture)

CASES = [
    ("/a/../b", "/b"),
    ("/public/./data/abc/../xyz", "/public/data/xyz"),
    ("/%2e%2e/admin", "/admin"),
    ("/api/%2E%2E/admin", "/admin"),
    ("/some%2fdata/%61%62%63", "/some%2fdata/abc"),
    ("/some\\data", "/some/data"),
    ("/../../etc/passwd", "/etc/passwd"),
    ("/a//b", "/a//b"),
    ("/a/./b?x=/../y&z=%2e", "/a/b?x=/../y&z=%2e"),
    ("/plain?q=1", "/plain?q=1"),
    ("http://svc/a/../b?c", "/b?c"),
]


def test_the_upstream_gets_the_normalised_path_and_the_query_as_it_came(start_tern, http_upstream, backend):
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    try:
        for target, _ in CASES:
            assert c.exchange("GET", target).status == 200, target
    finally:
        c.close()
    assert [r.target for r in up.requests] == [want for _, want in CASES]


def test_a_nul_byte_in_the_path_is_refused_400(start_tern, http_upstream, backend):
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = RawClient(t.port)
    try:
        assert c.exchange("GET", "/a%00b").status == 400
    finally:
        c.close()
    assert up.requests == []


@pytest.mark.parametrize("mode, want", [
    ("NONE", ["/a/../b", "/a//b", "/a%2fb"]),
    ("MERGE_SLASHES", ["/b", "/a/b", "/a%2fb"]),
    ("DECODE_AND_MERGE_SLASHES", ["/b", "/a/b", "/a/b"]),
])
def test_the_other_modes(start_tern, http_upstream, backend, mode, want):
    up = http_upstream()
    t = proxy(start_tern, up, backend, "--path-normalization", mode)
    c = RawClient(t.port)
    try:
        for target in ["/a/../b", "/a//b", "/a%2fb"]:
            assert c.exchange("GET", target).status == 200
    finally:
        c.close()
    assert [r.target for r in up.requests] == want


def test_routes_match_the_normalised_path(start_tern, http_upstream, backend, tmp_path):
    # A route for /admin answers the request whatever dot segments or encodings spelled it.
    up = http_upstream()
    config = mesh(tmp_path, up.port, protocol="HTTP")
    config.write_text(config.read_text() + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc}
spec:
  hosts: [svc]
  http:
  - match: [{uri: {exact: /admin}}]
    directResponse: {status: 418}
  - route: [{destination: {host: svc}}]
""")
    t = start(start_tern, backend, config)
    c = RawClient(t.port)
    try:
        for target in ["/admin", "/public/../admin", "/%2e%2e/admin", "/x/%2E%2E/admin"]:
            assert c.send(f"GET {target} HTTP/1.1\r\nHost: svc\r\n\r\n".encode()) is None
            assert c.read_response().status == 418, target
        c.send(b"GET /admin/../ok HTTP/1.1\r\nHost: svc\r\n\r\n")
        assert c.read_response().status == 200
    finally:
        c.close()
    assert [r.target for r in up.requests] == ["/ok"]


def test_http2_requests_are_normalised_too(start_tern, http_upstream, backend):
    up = http_upstream()
    t = proxy(start_tern, up, backend)
    c = H2Client(t.port)
    try:
        sids = [c.request(p, authority="svc") for p in ["/a/../b", "/%2e%2e/c?d=/../e"]]
        c.wait(lambda: all(s in c.ended for s in sids), "the answers")
        assert [c.heads[s][":status"] for s in sids] == ["200", "200"]
    finally:
        c.close()
    assert sorted(r.target for r in up.requests) == ["/b", "/c?d=/../e"]
