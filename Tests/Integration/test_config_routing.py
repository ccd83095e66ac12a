"""`tern proxy --http --config`: requests routed by Istio resources (ServiceEntry, VirtualService,
DestinationRule) to real upstream processes, and SIGHUP reloads that keep serving on a bad file."""
import contextlib
import os
import signal
import subprocess
import time

import httpx
import pytest

from conftest import Tern, tern_bin
from http_peers import HttpUpstream, WebSocketEcho

CANARY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: cart, namespace: shop}}
spec:
  hosts: [cart]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {stable}}}, labels: {{track: stable}}}}
  - {{address: 127.0.0.1, ports: {{http: {beta}}}, labels: {{track: beta}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cart, namespace: shop}}
spec:
  hosts: [cart]
  http:
  - match: [{{headers: {{x-beta: {{exact: "yes"}}}}}}]
    route: [{{destination: {{host: cart, subset: beta}}}}]
  - route:
    - {{destination: {{host: cart, subset: stable}}, weight: {stable_weight}}}
    - {{destination: {{host: cart, subset: beta}}, weight: {beta_weight}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: cart, namespace: shop}}
spec:
  host: cart
  trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}
  subsets:
  - {{name: stable, labels: {{track: stable}}}}
  - {{name: beta, labels: {{track: beta}}}}
"""


@pytest.fixture
def canary(tmp_path, backend):
    stable, beta = HttpUpstream(), HttpUpstream()
    path = tmp_path / "mesh.yaml"

    def write(stable_weight=80, beta_weight=20):
        path.write_text(CANARY.format(stable=stable.port, beta=beta.port, stable_weight=stable_weight,
                                      beta_weight=beta_weight))

    write()
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend,
              "--log-level", "info"])
    yield t, stable, beta, path, write
    t.stop()
    stable.stop()
    beta.stop()


def raw_get(port, target, host):
    """One request with `target` as given (absolute-form here) and a Host of `host`; returns the status code."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return int(got.split(b" ", 2)[1])


def test_an_absolute_form_targets_authority_routes_and_replaces_host(canary):
    """RFC 9112 §3.2.2, as Envoy: with an absolute-form target the Host field is ignored; the request is routed
    by the target's authority and reaches the upstream in origin form with that authority as its Host, so no
    client can be routed to one service while the upstream reads another."""
    t, stable, beta, _, _ = canary
    assert raw_get(t.port, "http://cart/item?x=1", "nowhere.example") == 200
    assert raw_get(t.port, "http://nowhere.example/item", "cart") == 404  # NR: the Host does not route it
    [r] = stable.requests + beta.requests
    assert r.target == "/item?x=1"
    assert r.header_values("host") == ["cart"]


def split(port, n, headers=None):
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Host": "cart"}, timeout=10) as client:
        for _ in range(n):
            r = client.get("/item", headers=headers or {})
            assert r.status_code == 200, r.text


def test_canary_routes_by_header_and_splits_by_weight(canary):
    """The issue's canary as written: x-beta: yes goes to the beta subset; the rest is split 80/20 between
    the subsets' endpoints (1,000 requests: beta's share within 4.5 standard deviations of 200)."""
    t, stable, beta, _, _ = canary
    split(t.port, 50, {"x-beta": "yes"})
    assert len(beta.requests) == 50 and len(stable.requests) == 0
    split(t.port, 1000)
    got = len(beta.requests) - 50
    assert len(stable.requests) + got == 1000
    assert 143 <= got <= 257, got


def test_unknown_host_is_404_and_the_connection_stays_usable(canary):
    """A Host no VirtualService or ServiceEntry declares: 404 (Envoy's NR), and the keep-alive connection goes
    on to serve the next request."""
    t, stable, beta, _, _ = canary
    with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", timeout=10) as client:
        assert client.get("/x", headers={"Host": "nowhere.example"}).status_code == 404
        assert client.get("/x", headers={"Host": "cart.shop.svc.cluster.local"}).status_code == 200
        assert client.get("/x", headers={"Host": "cart.shop"}).status_code == 200
    assert len(stable.requests) + len(beta.requests) == 2


def test_sighup_applies_a_new_config_and_a_bad_one_leaves_the_old_serving(canary):
    """SIGHUP reads the file again: new weights (0/100) route everything to beta; then a file with an error is
    refused whole, with its FILE:LINE error logged, and the last good configuration keeps serving."""
    t, stable, beta, path, write = canary
    write(0, 100)
    t.signal(signal.SIGHUP)
    deadline = time.time() + 5
    while time.time() < deadline:
        before = len(stable.requests)
        split(t.port, 20)
        if len(stable.requests) == before:
            break
        time.sleep(0.1)
    before_stable = len(stable.requests)
    split(t.port, 100)
    assert len(stable.requests) == before_stable
    path.write_text(path.read_text().replace("weight: 100", "weight: lots"))
    t.signal(signal.SIGHUP)
    time.sleep(0.5)
    split(t.port, 50)
    assert len(stable.requests) == before_stable
    t.stop()
    log = t.log() + t.rest()
    assert "config applied version=2" in log
    assert "config rejected" in log
    assert f"{path}:" in log and "weight" in log


def test_bad_config_at_start_exits_1_naming_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(CANARY.format(stable=9001, beta=9002, stable_weight=80, beta_weight="heavy"))
    p = subprocess.run([tern_bin(), "proxy", "--http", "--config", str(path), "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert f"{path}:22: VirtualService shop/cart: spec.http[1].route[1].weight: expected an integer" in p.stderr, p.stderr


@pytest.mark.parametrize("args", [
    # (--http --config with --upstream is an inbound side, docs/security.md: HTTP listeners only, paired by position.)
    ["--http", "--config", "x.yaml", "--listen", "tcp:127.0.0.1:0", "--upstream", "127.0.0.1:1"],
    ["--http", "--config", "x.yaml", "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"],
    ["--config", "x.yaml", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"],
])
def test_config_flag_misuse_exits_64(args):
    p = subprocess.run([tern_bin(), "proxy", *args], capture_output=True, text=True, timeout=30)
    assert p.returncode == 64, p.stderr


def test_file_changes_reload_without_a_signal(canary):
    """Changes to the file are picked up without SIGHUP (inotify on its directory, debounced): written in
    place, and replaced by a rename as editors and Kubernetes ConfigMap volumes do."""
    t, stable, beta, path, write = canary

    def only_beta_within(seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            before = len(stable.requests)
            split(t.port, 20)
            if len(stable.requests) == before:
                return True
            time.sleep(0.1)
        return False

    write(0, 100)  # in place
    assert only_beta_within(5)
    stable_before = len(stable.requests)
    text = path.read_text()
    flipped = (text.replace("subset: stable}, weight: 0}", "subset: stable}, weight: @S}")
               .replace("subset: beta}, weight: 100}", "subset: beta}, weight: 0}")
               .replace("weight: @S}", "weight: 100}"))
    assert flipped != text
    staged = path.with_name(".mesh.yaml.tmp")
    staged.write_text(flipped)
    os.rename(staged, path)  # renamed over
    deadline = time.time() + 5
    while time.time() < deadline and len(stable.requests) == stable_before:
        split(t.port, 20)
        time.sleep(0.1)
    assert len(stable.requests) > stable_before, "the renamed file was not picked up"
    t.stop()
    assert "config applied version=3" in t.log() + t.rest()


def follow_log(t):
    """Reads Tern's stderr into `t.lines` as it comes (on a thread: join it after `t.stop()`)."""
    import threading
    reader = threading.Thread(target=lambda: [t.lines.append(line.decode()) for line in t.proc.stderr])
    reader.start()
    return reader


def settled_write(path, text):
    """Writes a configuration with its modification time in the past, so a reload reads it at once (a file
    changed within the last moments is waited on to settle)."""
    path.write_text(text)
    os.utime(path, (time.time() - 5, time.time() - 5))


def reloaded(t, path, text):
    """An action for `after_next`: the configuration rewritten, then SIGHUP."""
    def action():
        settled_write(path, text)
        t.signal(signal.SIGHUP)
    return action


def count_lines(t, needle):
    return sum(needle in line for line in list(t.lines))


def after_next(t, needle, action, timeout=10):
    """Runs `action` and waits until one more log line holds `needle`; true when one came within `timeout`."""
    before = count_lines(t, needle)
    action()
    deadline = time.time() + timeout
    while count_lines(t, needle) <= before and time.time() < deadline:
        time.sleep(0.005)
    return count_lines(t, needle) > before


def keep_alive_client(port):
    """A keep-alive client loop for threads: GET /load for Host cart until `stop` is set; every non-200 answer
    and error goes to `failures`, every request to `done`."""
    import threading
    stop = threading.Event()
    failures, done = [], []

    def client():
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Host": "cart"}, timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.get("/load")
                    if r.status_code != 200:
                        failures.append(r.status_code)
                    done.append(1)
                except httpx.HTTPError as e:
                    failures.append(repr(e))

    return stop, failures, done, client


def test_fifty_swaps_under_keep_alive_load_lose_no_request_and_free_every_table(canary):
    """Four keep-alive clients send requests back to back while the configuration is swapped 50 times
    (SIGHUP, weights flipping between 80/20 and 20/80): every request gets a 200, and every replaced route
    table is freed once no reactor can still read it."""
    import threading
    t, stable, beta, path, write = canary
    stop, failures, done, client = keep_alive_client(t.port)

    # Tern's log is read as it comes, so each swap waits until the one before it was applied: SIGHUPs sent
    # faster than a busy machine runs the config thread would merge into one.
    reader = follow_log(t)
    threads = [threading.Thread(target=client) for _ in range(4)]
    [th.start() for th in threads]
    for i in range(50):
        def swap():
            write(80, 20) if i % 2 else write(20, 80)
            t.signal(signal.SIGHUP)
        after_next(t, "config applied version=", swap)
    stop.set()
    [th.join(10) for th in threads]
    assert failures == [], failures[:5]
    assert len(done) > 200
    time.sleep(0.6)  # the main loop reclaims every 200 ms
    t.stop()
    reader.join(10)
    log = t.log()
    # Each iteration applied at least one table (its SIGHUP, or the file change the watcher saw first); all
    # but the current one are freed.
    versions = [int(line.split("config applied version=")[1].split()[0]) for line in log.splitlines() if "config applied version=" in line]
    assert max(versions) >= 51, log[-2000:]
    assert f"route tables freed: {max(versions) - 1} in all, 0 waiting" in log, log[-2000:]


ECHO_MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: shop}}
spec:
  hosts: [echo]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: everything, namespace: shop}}
spec:
  hosts: ["*"]
  http:
  - headers: {{request: {{set: {{x-generation: "{generation}"}}}}}}
    route: [{{destination: {{host: echo}}}}]
"""


def test_an_open_tunnel_holds_back_no_replaced_route_table(tmp_path, backend):
    """A WebSocket tunnel routed by the configuration stays open while the configuration is reloaded 1,000
    times: every replaced table is freed meanwhile (nothing the tunnel or its exchange kept pins one), and the
    tunnel still carries messages afterwards."""
    from websockets.sync.client import connect

    ws = WebSocketEcho()
    path = tmp_path / "mesh.yaml"
    path.write_text(ECHO_MESH.format(port=ws.port, generation=0))
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend,
              "--log-level", "info"])
    reader = follow_log(t)
    try:
        with connect(f"ws://127.0.0.1:{t.port}/chat", proxy=None, compression=None, open_timeout=10,
                     close_timeout=5) as client:
            client.send("before")
            assert client.recv(timeout=10) == "before"
            # Changed once, then reloaded unchanged: each SIGHUP still publishes a new table, and the file is
            # not waited on to settle each time.
            settled_write(path, ECHO_MESH.format(port=ws.port, generation=1))
            for i in range(1, 1001):
                assert after_next(t, "config applied version=", lambda: t.signal(signal.SIGHUP)), f"swap {i} was not applied"
            latest = max(int(line.split("config applied version=")[1].split()[0])
                         for line in list(t.lines) if "config applied version=" in line)
            assert latest >= 1001
            # Freed while the tunnel is still open: the main loop reclaims every 200 ms.
            want = f"route tables freed: {latest - 1} in all, 0 waiting"
            deadline = time.time() + 10
            while not any(want in line for line in list(t.lines)) and time.time() < deadline:
                time.sleep(0.02)
            assert any(want in line for line in list(t.lines)), "".join(t.lines[-5:])
            client.send("after")
            assert client.recv(timeout=10) == "after"
        [req] = ws.requests
        assert req.headers["x-generation"] == "0"
    finally:
        t.stop()
        reader.join(10)
        ws.stop()


def churn_mesh(stable_port, generation):
    """`stable`: a live upstream; `churn`: 20 endpoints (closed ports) that no other generation names."""
    endpoints = "\n".join(f"  - {{address: 127.0.0.1, ports: {{http: {30000 + generation * 20 + i}}}}}" for i in range(20))
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: stable, namespace: shop}}
spec:
  hosts: [stable]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {stable_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: churn, namespace: shop}}
spec:
  hosts: [churn]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{endpoints}
"""


def test_endpoints_that_leave_the_configuration_free_their_pools(tmp_path, backend):
    """A mesh whose endpoints churn: 30 reloads, each naming 20 endpoints no earlier table named, while a
    keep-alive client uses an endpoint every table names. The reactor keeps upstream pools for the endpoints its
    table names (21), not for every endpoint it ever saw (621), and the kept one still serves."""

    up = HttpUpstream()
    path = tmp_path / "mesh.yaml"
    settled_write(path, churn_mesh(up.port, 0))
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend,
              "--log-level", "debug"])
    reader = follow_log(t)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"Host": "stable"}, timeout=10) as c:
            assert c.get("/0").status_code == 200
            for generation in range(1, 31):
                served = after_next(t, "serves route table", reloaded(t, path, churn_mesh(up.port, generation)))
                assert served, f"generation {generation} was not served"
                assert c.get(f"/{generation}").status_code == 200
            last = [line for line in list(t.lines) if "serves route table" in line][-1]
            assert "with 21 upstream pools," in last, last
        assert up.accepted == 1, "the stable endpoint's pool and its connection were kept across every swap"
    finally:
        t.stop()
        reader.join(10)
        up.stop()


def edits_mesh(port, generation):
    """Host `api` routed to the upstream with request and response header edits naming `generation`, behind
    `generation` other virtual hosts written first (so each table numbers api's host and route anew)."""
    others = "".join(f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: other{i}, namespace: shop}}
spec:
  hosts: [other{i}]
  http: [{{directResponse: {{status: 204}}}}]
---
""" for i in range(generation))
    return others + API_HEAD.format(port=port) + f"""\
  - match: [{{uri: {{prefix: /never-{generation}}}}}]
    directResponse: {{status: 410}}
  - headers:
      request: {{set: {{x-generation: "{generation}"}}, remove: [x-drop]}}
      response: {{set: {{x-generation: "{generation}"}}}}
    route: [{{destination: {{host: api}}}}]
"""


def test_a_request_in_flight_keeps_its_routes_header_edits_across_reloads(tmp_path, backend):
    """A request held by its upstream while the configuration is reloaded 20 times (each table renumbering the
    virtual host and changing the edits) gets the response edits of the route it was routed with, not the
    latest; the reactor keeps that one replaced table while the request lives (`2 route tables in use`) and lets
    it go when it ends (`1 route tables in use` at the next swap)."""
    import threading

    up = HttpUpstream()
    path = tmp_path / "mesh.yaml"
    settled_write(path, edits_mesh(up.port, 0))
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend,
              "--log-level", "debug"])
    reader = follow_log(t)
    result = {}
    slow = threading.Thread(target=lambda: result.update(r=httpx.get(
        f"http://127.0.0.1:{t.port}/hold/slow", headers={"Host": "api", "x-drop": "1"}, timeout=30)))
    try:
        slow.start()
        deadline = time.time() + 10
        while "/hold/slow" not in up.paths() and time.time() < deadline:
            time.sleep(0.01)
        assert "/hold/slow" in up.paths(), "the upstream never got the held request"

        for generation in range(1, 21):
            served = after_next(t, "serves route table", reloaded(t, path, edits_mesh(up.port, generation)))
            assert served, f"generation {generation} was not served"
        last = [line for line in list(t.lines) if "serves route table" in line][-1]
        assert last.strip().endswith("2 route tables in use"), last
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"Host": "api"}, timeout=10) as c:
            fresh = c.get("/fresh", headers={"x-drop": "1"})
            assert fresh.status_code == 200 and fresh.headers["x-generation"] == "20"
            up.release("slow")
            slow.join(20)
            held = result["r"]
            assert held.status_code == 200 and held.headers["x-generation"] == "0", held.headers
            assert after_next(t, "serves route table", reloaded(t, path, edits_mesh(up.port, 21)))
            last = [line for line in list(t.lines) if "serves route table" in line][-1]
            assert last.strip().endswith("1 route tables in use"), last
            assert c.get("/after").headers["x-generation"] == "21"
        by_path = {r.path: r for r in up.requests}
        assert by_path["/hold/slow"].header_values("x-generation") == ["0"]
        assert by_path["/fresh"].header_values("x-generation") == ["20"]
        assert by_path["/hold/slow"].header_values("x-drop") == [] and by_path["/fresh"].header_values("x-drop") == []
    finally:
        up.release("slow")
        slow.join(10)
        t.stop()
        reader.join(10)
        up.stop()


def test_a_file_corrupted_mid_write_under_load_leaves_the_old_config_serving(canary):
    """Keep-alive clients run while the file is rewritten in place in two halves with a pause between (as a
    slow writer or a full disk would leave it): the half file is rejected (every error logged), version 1 keeps
    serving every request, and once the write completes the new configuration applies."""
    import threading
    t, stable, beta, path, write = canary
    stop, failures, done, client = keep_alive_client(t.port)

    threads = [threading.Thread(target=client) for _ in range(3)]
    [th.start() for th in threads]
    full = CANARY.format(stable=stable.port, beta=beta.port, stable_weight=0, beta_weight=100)
    # Cut inside a flow mapping ("…subset: beta}, weight:"): the half file is not even YAML.
    cut = full.index("subset: beta}, weight:") + len("subset: beta}, weight:")
    with open(path, "w") as f:
        f.write(full[:cut])
        f.flush()
        time.sleep(1.0)  # longer than the watcher's debounce: the half file is read, and refused
        served_by_stable = len(stable.requests)
        f.write(full[cut:])
    # The completed file routes everything to beta: wait until stable stops getting requests.
    deadline = time.time() + 5
    while time.time() < deadline:
        before = len(stable.requests)
        time.sleep(0.3)
        if len(stable.requests) == before:
            break
    stop.set()
    [th.join(10) for th in threads]
    assert failures == [], failures[:5]
    assert len(done) > 100
    assert served_by_stable > 0
    before = len(stable.requests)
    split(t.port, 50)
    assert len(stable.requests) == before, "the completed file (all to beta) was not applied"
    t.stop()
    log = t.log() + t.rest()
    assert "config rejected" in log and "keeps serving" in log, log[-2000:]
    assert "config applied version=2" in log


# The head of a VirtualService for edge.example.com; routes follow.
EDGE_HEAD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: shop}
spec:
  hosts: [edge.example.com]
  http:
"""

EDGE = EDGE_HEAD + """\
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: www.example.com, redirectCode: 302}
  - match: [{uri: {prefix: /moved}}]
    redirect: {scheme: https}
  - match: [{uri: {exact: /health}}]
    directResponse: {status: 200, body: {string: "all good\\n"}}
  - directResponse: {status: 503, body: {string: "maintenance"}}
"""


@contextlib.contextmanager
def edge_client(tmp_path, config, backend):
    """An httpx client (Host edge.example.com) to a Tern routing by `config`, stopped afterwards."""
    path = tmp_path / "edge.yaml"
    path.write_text(config)
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"Host": "edge.example.com"}, timeout=10) as c:
            yield c
    finally:
        t.stop()


def test_redirect_and_direct_response_routes(tmp_path, backend):
    """A route's redirect answers with its status and a Location built from the route (or the request's
    Host and target where the route leaves them); a directResponse answers its status and body. Both keep
    the client connection, and no upstream is involved."""
    with edge_client(tmp_path, EDGE, backend) as c:
        r = c.get("/old/page")
        assert (r.status_code, r.headers["location"]) == (302, "http://www.example.com/new"), r.headers
        r = c.get("/moved/x?y=1")
        assert (r.status_code, r.headers["location"]) == (301, "https://edge.example.com/moved/x?y=1"), r.headers
        r = c.get("/health")
        assert (r.status_code, r.text, r.headers["content-type"]) == (200, "all good\n", "text/plain")
        r = c.get("/anything")
        assert (r.status_code, r.text) == (503, "maintenance")
        r = c.post("/anything", content=b"x" * 1000)
        assert r.status_code == 503


EDGE_HEADERS = EDGE_HEAD + """\
  - match: [{uri: {exact: /health}}]
    directResponse: {status: 200, body: {string: "ok"}}
    headers: {response: {set: {content-type: application/json, x-served-by: tern}, add: {x-extra: "1"},
                         remove: [x-nothing]}}
  - match: [{uri: {exact: /bare}}]
    directResponse: {status: 204}
    headers: {response: {remove: [content-type]}}
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new}
    headers: {response: {set: {cache-control: no-store}}}
  - redirect: {uri: /elsewhere}
    headers: {response: {set: {location: /fixed}}}
"""


def test_route_response_headers_apply_to_direct_responses_and_redirects(tmp_path, backend):
    """As Envoy applies a route's response header changes to the responses it makes itself: set replaces
    Tern's own field of that name (content-type, location), add adds, remove drops Tern's own field (the
    fields that frame a response cannot be changed: validation refuses that)."""
    with edge_client(tmp_path, EDGE_HEADERS, backend) as c:
        r = c.get("/health")
        assert (r.status_code, r.text) == (200, "ok")
        assert r.headers.get_list("content-type") == ["application/json"], r.headers
        assert (r.headers["x-served-by"], r.headers["x-extra"]) == ("tern", "1")
        r = c.get("/bare")
        assert r.status_code == 204 and "content-type" not in r.headers, r.headers
        assert r.headers["content-length"] == "0", r.headers
        r = c.get("/old/x")
        assert (r.status_code, r.headers["location"], r.headers["cache-control"]) == (301, "http://edge.example.com/new", "no-store")
        r = c.get("/other")
        assert r.headers.get_list("location") == ["/fixed"], r.headers
        r = c.get("/health")  # the connection went on
        assert r.status_code == 200


REDIRECTS = EDGE_HEAD + """\
  - match: [{uri: {prefix: /foo/}}]
    redirect: {authority: foo.example.com, prefixRewrite: /, redirectCode: 308}
  - match: [{uri: {prefix: /docs/}, ignoreUriCase: true}]
    redirect: {prefixRewrite: /manual/}
  - match: [{uri: {prefix: /secure/}}]
    redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT, redirectCode: 307}
  - match: [{uri: {prefix: /here/}}]
    redirect: {uri: /there, derivePort: FROM_REQUEST_PORT, redirectCode: 303}
  - match: [{uri: {prefix: /moved}}]
    redirect: {scheme: https, port: 8443}
  - redirect: {prefixRewrite: /v2/}
"""


@pytest.mark.parametrize("host, target, code, location", [
    # prefixRewrite: the matched prefix replaced (Istio's example), the query kept; matched ignoring case
    ("edge.example.com", "/foo/bar?x=1", 308, "http://foo.example.com/bar?x=1"),
    ("edge.example.com", "/DOCS/guide", 301, "http://edge.example.com/manual/guide"),
    # a route without a uri match: Istio's catch-all prefix "/" is what is replaced
    ("edge.example.com", "/items/7?a=b", 301, "http://edge.example.com/v2/items/7?a=b"),
    # derivePort FROM_PROTOCOL_DEFAULT: no port written; Envoy drops the Host's :80 when the scheme changes, and
    # keeps a port that is not the request scheme's default
    ("edge.example.com", "/secure/a?b=1", 307, "https://edge.example.com/secure/a?b=1"),
    ("edge.example.com:80", "/secure/a", 307, "https://edge.example.com/secure/a"),
    ("edge.example.com:8080", "/secure/a", 307, "https://edge.example.com:8080/secure/a"),
    # derivePort FROM_REQUEST_PORT: the port the request was addressed to, left out when it is http's 80;
    # uri keeps the request's query
    ("edge.example.com:8080", "/here/x?y=2", 303, "http://edge.example.com:8080/there?y=2"),
    ("edge.example.com", "/here/x", 303, "http://edge.example.com/there"),
    # an explicit port replaces the Host's
    ("edge.example.com:8080", "/moved", 301, "https://edge.example.com:8443/moved"),
])
def test_redirect_locations_for_prefix_rewrite_and_derive_port(tmp_path, backend, host, target, code, location):
    """Redirect Locations as Envoy builds them from what Istio makes of HTTPRedirect, through the real proxy;
    each request is followed by another on the same keep-alive connection."""
    path = tmp_path / "redirects.yaml"
    path.write_text(REDIRECTS)
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", timeout=10) as c:
            for _ in range(2):
                r = c.get(target, headers={"Host": host})
                assert (r.status_code, r.headers.get("location"), r.content) == (code, location, b""), r.headers
                assert r.headers.get("connection") != "close"
    finally:
        t.stop()


# The service `api` (one endpoint, the test's upstream) and the head of its VirtualService; routes follow.
API_HEAD = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: shop}}
spec:
  hosts: [api]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: shop}}
spec:
  hosts: [api]
  http:
"""

API = API_HEAD + """\
  - match: [{{uri: {{prefix: /v1/}}}}]
    rewrite: {{uri: /api/, authority: internal.api}}
    headers:
      request: {{set: {{x-env: prod}}, add: {{x-added: "1"}}, remove: [x-secret]}}
      response: {{set: {{x-served-by: tern}}, remove: [x-upstream-connection]}}
    route:
    - destination: {{host: api}}
      headers: {{request: {{add: {{x-dest: d1}}}}}}
  - match: [{{uri: {{exact: /old}}}}]
    rewrite: {{uri: /new}}
    route: [{{destination: {{host: api}}}}]
"""


def test_rewrites_and_header_operations_reach_the_upstream_and_the_client(tmp_path, backend):
    """A route's rewrite replaces the matched prefix (query kept) or the whole path, and the Host; its request
    header operations (set replaces, add appends, remove drops) and the destination's reach the upstream;
    its response operations reach the client. Framing fields are never touched."""
    up = HttpUpstream()
    path = tmp_path / "api.yaml"
    path.write_text(API.format(port=up.port))
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"Host": "api"}, timeout=10) as c:
            r = c.get("/v1/items?x=1", headers={"x-secret": "s", "x-env": "dev"})
            assert r.status_code == 200
            assert r.headers.get("x-served-by") == "tern"
            assert "x-upstream-connection" not in r.headers
            r = c.post("/old?y=2", content=b"body")
            assert r.status_code == 200
        first, second = up.requests
        assert first.target == "/api/items?x=1"
        assert first.header_values("host") == ["internal.api"]
        assert first.header_values("x-env") == ["prod"]
        assert first.header_values("x-added") == ["1"]
        assert first.header_values("x-dest") == ["d1"]
        assert first.header_values("x-secret") == []
        assert second.target == "/new?y=2" and second.body_length == 4
    finally:
        t.stop()
        up.stop()


REGEX = API_HEAD + r"""  - match: [{{uri: {{prefix: /svc/}}}}]
    rewrite:
      uriRegexRewrite: {{match: '^/svc/([^/]+)/(.*)$', rewrite: '/\2/\1'}}
      authority: internal.api
    route: [{{destination: {{host: api}}}}]
  - match: [{{uri: {{prefix: /g/}}}}]
    rewrite:
      uriRegexRewrite: {{match: 'a+', rewrite: '<\0>'}}
    route: [{{destination: {{host: api}}}}]
  - match: [{{uri: {{prefix: /nomatch/}}}}]
    rewrite:
      uriRegexRewrite: {{match: 'zzz', rewrite: '/elsewhere'}}
    route: [{{destination: {{host: api}}}}]
  - rewrite: {{uri: /root/}}
    route: [{{destination: {{host: api}}}}]
"""


def test_uri_regex_rewrite_reaches_the_upstream(tmp_path, backend):
    """uriRegexRewrite as Envoy applies it: groups in any order, every match in the path replaced, the query
    kept and never searched, no match leaving the path as it was; several rewritten requests on one keep-alive
    connection. And rewrite.uri on a route without a uri match replaces the leading "/" (Istio gives such
    routes Envoy's prefix match "/")."""
    up = HttpUpstream()
    path = tmp_path / "regex.yaml"
    path.write_text(REGEX.format(port=up.port))
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "1", "--io-backend", backend])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"Host": "api"}, timeout=10) as c:
            for target in ["/svc/users/list?page=2&a=/svc/x/y", "/g/aa/b/a?a=aa", "/nomatch/zz?zzz=1", "/items?x=1",
                           "/svc/orders/7"]:
                r = c.get(target)
                assert r.status_code == 200, (target, r.text)
        got = [(r.target, r.header_values("host")) for r in up.requests]
        assert got == [
            ("/list/users?page=2&a=/svc/x/y", ["internal.api"]),
            ("/g/<aa>/b/<a>?a=aa", ["api"]),
            ("/nomatch/zz?zzz=1", ["api"]),
            ("/root/items?x=1", ["api"]),
            ("/7/orders", ["internal.api"]),
        ], got
        assert len({id(r.connection) for r in up.requests}) == 1  # one keep-alive connection upstream
    finally:
        t.stop()
        up.stop()


# Route matches that a backtracking engine takes exponential time over on a long header of a's.
PATHOLOGICAL = EDGE_HEAD + """\
  - match: [{headers: {x-a: {regex: "(a*)*b"}}}]
    directResponse: {status: 200, body: {string: "ends in b"}}
  - match: [{headers: {x-a: {regex: "(a*)*b|(a|aa)+"}}}]
    directResponse: {status: 200, body: {string: "all a"}}
  - directResponse: {status: 404}
"""


def test_a_pathological_regex_against_a_long_header_is_answered_rightly(tmp_path, backend):
    """Regexes run on RE2, as in Envoy: (a*)*b against 50,000 a's is answered at once and rightly (no match;
    the second route's alternative matches), on two reactors matching with their own copies of the regexes,
    over several connections."""
    path = tmp_path / "pathological.yaml"
    path.write_text(PATHOLOGICAL)
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "2", "--io-backend", backend])
    try:
        long = "a" * 50_000
        for _ in range(4):
            with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"Host": "edge.example.com"},
                              timeout=10) as c:
                assert c.get("/", headers={"x-a": long}).text == "all a"
                assert c.get("/", headers={"x-a": long + "b"}).text == "ends in b"
                assert c.get("/", headers={"x-a": long + "c"}).status_code == 404
    finally:
        t.stop()


HASHED = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: carts, namespace: shop}}
spec:
  hosts: [carts]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {a}}}}}
  - {{address: 127.0.0.1, ports: {{http: {b}}}}}
  - {{address: 127.0.0.1, ports: {{http: {c}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: carts, namespace: shop}}
spec:
  host: carts
  trafficPolicy:
    loadBalancer:
      consistentHash: {hash}
"""


@pytest.mark.parametrize("hash_on,send", [
    ("{httpHeaderName: x-user}", lambda user: {"headers": {"x-user": user}}),
    ("{httpCookie: {name: session, ttl: 0s}}", lambda user: {"headers": {"cookie": f"theme=dark; session={user}"}}),
    ("{httpQueryParameterName: user}", lambda user: {"params": {"user": user}}),
])
def test_consistent_hash_keeps_each_key_on_one_endpoint(tmp_path, backend, hash_on, send):
    """A DestinationRule consistentHash on a header, cookie or query parameter: every request with one key goes
    to the same endpoint (20 keys × 5 requests each, each on a fresh connection), and the keys spread over
    the endpoints."""
    ups = [HttpUpstream() for _ in range(3)]
    path = tmp_path / "mesh.yaml"
    path.write_text(HASHED.format(a=ups[0].port, b=ups[1].port, c=ups[2].port, hash=hash_on))
    t = Tern(["--http", "--config", str(path), "--listen", "127.0.0.1:0", "--cores", "2", "--io-backend", backend,
              "--admin", "off", "--health", "off", "--prometheus", "off"])
    try:
        where = {}
        for user in (f"user-{i}" for i in range(20)):
            for n in range(5):
                with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"Host": "carts"}, timeout=10) as c:
                    r = c.get("/cart", **send(user))
                    assert r.status_code == 200
                counts = tuple(len(u.requests) for u in ups)
                where.setdefault(user, []).append(counts)
        # Each request went to exactly one upstream; per key, always the same one.
        owners = {}
        previous = (0, 0, 0)
        for user in (f"user-{i}" for i in range(20)):
            targets = set()
            for counts in where[user]:
                moved = [i for i in range(3) if counts[i] != previous[i]]
                assert len(moved) == 1
                targets.add(moved[0])
                previous = counts
            assert len(targets) == 1, f"{user} went to {targets}"
            owners[user] = targets.pop()
        assert len(set(owners.values())) >= 2, owners
    finally:
        t.stop()
        for u in ups:
            u.stop()
