"""ServiceEntry `resolution: DNS` and `DNS_ROUND_ROBIN` with `tern proxy --config`: endpoints named by a host are
looked up on Tern's resolver thread and routed to by address. Nothing on the machine is changed: `localhost` is
in /etc/hosts on every Debian, and `nonexistent.invalid` never resolves (RFC 2606's reserved TLD)."""
import signal
import time

import httpx
import pytest

from conftest import Tern
from http_peers import HttpUpstream

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: shop}}
spec:
  hosts: [api.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: {resolution}
  endpoints: [{{address: localhost, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: gone, namespace: shop}}
spec:
  hosts: [gone.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: DNS
  endpoints: [{{address: nonexistent.invalid, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: plain, namespace: shop}}
spec:
  hosts: [plain.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
"""

LATER = """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: later, namespace: shop}}
spec:
  hosts: [later.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: DNS
  endpoints: [{{address: localhost, ports: {{http: {port}}}}}]
"""


def get(client, host, path="/"):
    return client.get(path, headers={"Host": host})


def status_within(client, host, want, seconds=5):
    """Polls until `host` answers `want` (a deadline, not a bare sleep); returns the last status."""
    deadline = time.time() + seconds
    while True:
        status = get(client, host).status_code
        if status == want or time.time() >= deadline:
            return status
        time.sleep(0.05)


@pytest.mark.parametrize("resolution", ["DNS", "DNS_ROUND_ROBIN"])
def test_dns_endpoint_routes_and_an_unresolvable_one_answers_503_while_others_serve(tmp_path, backend, resolution):
    """An endpoint named `localhost` is resolved off the reactors and served from the first request (Tern waits
    for the first answers before it serves, as Envoy warms DNS clusters); one named `nonexistent.invalid` has no
    answer, so its service answers 503 `no healthy upstream` (UH), and every other host goes on being served on
    the same keep-alive connection."""
    up = HttpUpstream()
    path = tmp_path / "mesh.yaml"
    path.write_text(MESH.format(resolution=resolution, port=up.port))
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", timeout=10) as c:
            r = get(c, "api.example.com", "/first")
            assert r.status_code == 200, r.text
            assert up.paths() == ["/first"]
            r = get(c, "gone.example.com", "/never")
            assert r.status_code == 503 and r.text == "no healthy upstream", (r.status_code, r.text)
            for i in range(20):
                assert get(c, "api.example.com", f"/a{i}").status_code == 200
                assert get(c, "gone.example.com").status_code == 503
                assert get(c, "plain.example.com", f"/p{i}").status_code == 200
            assert "/never" not in up.paths() and len(up.paths()) == 41
    finally:
        t.stop()
        up.stop()
    log = t.log() + t.rest()
    assert "dns localhost: 127.0.0.1" in log, log
    assert "dns nonexistent.invalid: " in log and "no answer yet" in log, log


def test_a_reload_that_adds_a_dns_name_routes_to_it_once_resolved(tmp_path, backend):
    """A name new in a reloaded configuration is looked up straight away on the resolver thread; requests to
    its service succeed once the answer is in (within a deadline), and the services already resolved keep
    their answers across the reload."""
    up = HttpUpstream()
    path = tmp_path / "mesh.yaml"
    path.write_text(MESH.format(resolution="DNS", port=up.port))
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", timeout=10) as c:
            assert get(c, "later.example.com").status_code == 404  # not configured yet
            path.write_text(MESH.format(resolution="DNS", port=up.port) + LATER.format(port=up.port))
            t.signal(signal.SIGHUP)
            assert status_within(c, "later.example.com", 200) == 200
            assert get(c, "api.example.com").status_code == 200
            assert get(c, "gone.example.com").status_code == 503
    finally:
        t.stop()
        up.stop()
