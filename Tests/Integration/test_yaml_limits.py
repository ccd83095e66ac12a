"""YAML alias bombs (issue 15, item 3): a 1 KB file whose aliases expand to billions of nodes is refused by
`tern validate`, at start-up and at reload, with its FILE:LINE, so /config_dump never renders it; modest anchors
and aliases keep working."""
import json
import os
import signal
import subprocess
import time

import httpx

from conftest import Tern, tern_bin
from http_peers import HttpUpstream
from peers import dead_port


def alias_bomb(levels=10):
    """The billion laughs in metadata.annotations: nine scalars, then each level nine aliases to the one before
    (level N on line 6 + N); ten levels are 9^10 scalars to walk."""
    yaml = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: bomb\n  annotations:\n"
    yaml += "    a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
    for level in range(1, levels):
        yaml += f"    a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]\n"
    return yaml + "spec: {}\n"


BOMB = alias_bomb()
# Up to a5's first alias (line 11) the document expands to 74,750 nodes; that alias adds a4's 66,430.
BOMB_ERROR = ("bomb.yaml:11: YAML: excessive aliasing: this alias expands the configuration to 141180 nodes, "
              "more than 100000 (10 × the 69 written, at least 100000)")

# A canary whose endpoints share their address and ports through anchors, as users reuse a ports list.
ALIASED = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: cart, namespace: shop}}
spec:
  hosts: [cart]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: &local 127.0.0.1, ports: &ports {{http: {port}}}, labels: &labels {{track: stable}}}}
  - {{address: *local, ports: *ports, labels: *labels}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cart, namespace: shop}}
spec:
  hosts: [cart]
  http:
  - route: [{{destination: {{host: cart}}}}]
"""


def test_validate_refuses_the_bomb_with_file_and_line(tmp_path):
    assert len(BOMB) < 1024
    (tmp_path / "bomb.yaml").write_text(BOMB)
    p = subprocess.run([tern_bin(), "validate", "bomb.yaml"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1
    assert p.stderr.splitlines() == [BOMB_ERROR, "tern validate: 1 error(s), 0 warning(s); not applied"]


def test_validate_accepts_modest_aliases(tmp_path):
    (tmp_path / "mesh.yaml").write_text(ALIASED.format(port=9001))
    p = subprocess.run([tern_bin(), "validate", "mesh.yaml"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == [
        "tern validate: ok: 2 resource(s), 1 virtual host(s), 1 route(s), 1 cluster(s), 0 warning(s)"]


def test_proxy_with_the_bomb_exits_1_naming_file_and_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    p = subprocess.run([tern_bin(), "proxy", "--http", "--config", str(path), "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert f"{tmp_path}/{BOMB_ERROR}" in p.stderr, p.stderr


def metric(port, name):
    text = httpx.get(f"http://127.0.0.1:{port}/stats/prometheus", timeout=10).text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_a_reload_with_the_bomb_keeps_the_old_config_serving_and_config_dump_small(tmp_path, backend):
    """A configuration directory with modest aliases serves; a bomb added to it is refused at reload with its
    FILE:LINE logged, requests keep being routed by the old configuration, and /config_dump shows only that
    (with the aliases expanded, as written)."""
    up = HttpUpstream()
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "cart.yaml").write_text(ALIASED.format(port=up.port))
    admin, prom = dead_port(), dead_port()
    t = Tern(["--http", "--config", str(mesh), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend,
              "--admin", f"127.0.0.1:{admin}", "--prometheus", f"127.0.0.1:{prom}", "--health",
              f"127.0.0.1:{dead_port()}"])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"Host": "cart"}, timeout=10) as client:
            assert [client.get(f"/before/{i}").status_code for i in range(4)] == [200] * 4
            assert len(up.requests) == 4  # both endpoints are the one upstream (the alias resolved)
            dump = json.loads(httpx.get(f"http://127.0.0.1:{admin}/config_dump", timeout=10).text)
            se = next(r["resource"] for r in dump["resources"] if r["kind"] == "ServiceEntry")
            assert se["spec"]["endpoints"][1] == {"address": "127.0.0.1", "ports": {"http": up.port},
                                                  "labels": {"track": "stable"}}

            staged = mesh / ".bomb.tmp"  # not *.yaml: the watcher ignores it; the rename is seen whole
            staged.write_text(BOMB)
            os.rename(staged, mesh / "bomb.yaml")
            t.signal(signal.SIGHUP)
            deadline = time.time() + 10
            while time.time() < deadline and metric(prom, "tern_config_rejected_total") < 1:
                time.sleep(0.05)
            assert metric(prom, "tern_config_rejected_total") >= 1
            assert metric(prom, "tern_config_version") == 1

            assert [client.get(f"/after/{i}").status_code for i in range(4)] == [200] * 4
            assert len(up.requests) == 8
            r = httpx.get(f"http://127.0.0.1:{admin}/config_dump", timeout=10)
            assert r.status_code == 200 and len(r.content) < 4096, len(r.content)
            dump = json.loads(r.text)
            assert dump["version"] == 1
            assert sorted(r["kind"] for r in dump["resources"]) == ["ServiceEntry", "VirtualService"]
    finally:
        t.stop()
        up.stop()
    log = t.log() + t.rest()
    assert f"{mesh}/{BOMB_ERROR}" in log, log
    assert "config rejected" in log
