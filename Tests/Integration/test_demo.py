"""The mesh demo `demo.sh` ends with (Tools/scripts/mesh-demo.py), run with this build's binaries and short
durations, in network namespaces (root; under TERN_REQUIRE_NETNS=1 a missing namespace fails, never skips) and on
loopback: it must show the split, a link of TLS records with nothing in the clear, the denial and a latency line.
Counts and words only: nothing here depends on timing."""
import os
import re
import subprocess

import pytest

from conftest import tern_bin, unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "Tools", "scripts", "mesh-demo.py")


def tern_load_bin():
    return os.environ.get("TERN_LOAD_BIN") or os.path.join(os.path.dirname(tern_bin()), "tern-load")


@pytest.mark.parametrize("mode", ["netns", "loopback"])
def test_the_mesh_demo_shows_the_split_the_tls_link_the_denial_and_the_latency(mode):
    if mode == "netns" and os.geteuid() != 0:
        unavailable("the demo's network namespaces need root", "TERN_REQUIRE_NETNS")
    r = subprocess.run(["python3", DEMO, "--tern", tern_bin(), "--tern-load", tern_load_bin(), "--requests", "100",
                        "--seconds", "1", "--rate", "100", *(["--loopback"] if mode == "loopback" else [])],
                       capture_output=True, text=True, timeout=300)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    if mode == "netns" and "network namespaces cannot be used here" in out:
        unavailable(out.splitlines()[0], "TERN_REQUIRE_NETNS")
    assert ("two pods in network namespaces" in out) == (mode == "netns"), out
    split = re.search(r"of 100 calls, (\d+) reached v1 \(\d+ %\) and (\d+) v2", out)
    assert split and int(split[1]) + int(split[2]) == 100 and int(split[1]) > int(split[2]) > 0, out
    assert "other answers" not in out, out
    if os.geteuid() == 0:
        link = re.search(r"carried (\d+) TLS application-data records \(\d+ KiB\) and none of the requests", out)
        assert link and int(link[1]) >= 200, out  # a request and an answer each way at least
    else:
        assert "the link between the pods was not captured" in out, out
    assert "a POST, which backend's AuthorizationPolicy does not allow: 403 RBAC: access denied" in out, out
    assert re.search(r"through both sidecars with mutual TLS p50 [\d.]+ ms, p99 [\d.]+ ms \(.*; 0 failed\)", out), out
