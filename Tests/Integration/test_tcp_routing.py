"""`tern proxy --config` without `--http`: TCP connections relayed as Istio's VirtualService `tcp` routes say, with
the listener's port as the destination port, to real echo upstreams through the splice relay."""
import signal
import socket
import time

import pytest

from conftest import Tern
from peers import Upstream, echo, free_port

# The echo service, its subsets v1 and v2, and its VirtualService up to the tcp routes.
SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: shop}}
spec:
  hosts: [echo]
  ports: [{{number: {listen}, name: tcp-echo, protocol: TCP}}]
  resolution: {resolution}
  endpoints:
  - {{address: {v1_address}, ports: {{tcp-echo: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{tcp-echo: {v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: shop}}
spec:
  host: echo
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: shop}}
spec:
  hosts: [echo]
  tcp:
"""

MESH = SERVICE + """\
  - match: [{{port: {listen}, sourceLabels: {{app: client}}}}]
    route:
    - {{destination: {{host: echo, subset: v1}}, weight: {w1}}}
    - {{destination: {{host: echo, subset: v2}}, weight: {w2}}}
"""


def tagged(tag):
    """Sends `tag` as soon as a connection arrives, then echoes: a client sees which upstream it reached."""

    async def behaviour(reader, writer, up):
        writer.write(tag)
        await writer.drain()
        await echo(reader, writer, up)

    return behaviour


def free_wildcard_port():
    return free_port(wildcard=True)


def exchange(port, payload=b"ping", host="127.0.0.1"):
    """Connects to `host` (an IPv4 or IPv6 literal), reads the upstream's tag, checks that `payload` comes back,
    closes; returns the tag."""
    with socket.create_connection((host, port), timeout=10) as s:
        tag = s.recv(2)
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(len(payload) - len(got))
            assert chunk, "connection closed mid-exchange"
            got += chunk
        assert got == payload
        return tag


@pytest.fixture
def mesh(tmp_path, backend):
    """Two tagged echo upstreams (subsets v1, v2), a routed listener, and a second listener whose port no
    ServiceEntry declares."""
    v1, v2 = Upstream(tagged(b"v1")), Upstream(tagged(b"v2"))
    listen, unrouted = free_port(), free_port()
    path = tmp_path / "mesh.yaml"

    def write(w1=80, w2=20, resolution="STATIC", v1_address="127.0.0.1"):
        path.write_text(MESH.format(listen=listen, v1=v1.port, v2=v2.port, w1=w1, w2=w2, resolution=resolution,
                                    v1_address=v1_address))

    write()
    t = Tern(["--config", str(path), "--listen", f"127.0.0.1:{listen}", "--listen", f"127.0.0.1:{unrouted}",
              "--cores", "1", "--io-backend", backend])
    yield t, v1, v2, write
    t.stop()
    v1.stop()
    v2.stop()


def test_weighted_tcp_route_splits_connections_and_relays_both_ways(mesh):
    """The VirtualService's tcp route for the listener's port (its sourceLabels a selector, not a match) splits
    1,000 connections 80/20 between the subsets (v2's share within 4.5 standard deviations of 200), and every
    connection relays bytes both ways."""
    t, v1, v2, _ = mesh
    tags = [exchange(t.ports[0]) for _ in range(1000)]
    assert set(tags) <= {b"v1", b"v2"}
    got = tags.count(b"v2")
    assert 143 <= got <= 257, got
    assert v1.connections + v2.connections == 1000


def test_a_port_without_a_route_closes_the_connection_and_the_routed_one_keeps_serving(mesh):
    """No ServiceEntry declares the second listener's port: nothing to route to (Envoy's NR), so the accepted
    connection is closed at once, with no upstream contacted; the routed listener goes on relaying."""
    t, v1, v2, _ = mesh
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", t.ports[1]), timeout=10) as s:
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass
        assert exchange(t.ports[0]) in (b"v1", b"v2")
    assert v1.connections + v2.connections == 3


def settled(port, tag, in_a_row=20, seconds=10):
    """Exchanges until `in_a_row` consecutive ones reach the upstream tagged `tag` (every exchange must succeed):
    a reload has then been applied (the previous 80/20 split gives that with odds below 1e-13)."""
    deadline = time.time() + seconds
    run = 0
    while time.time() < deadline:
        run = run + 1 if exchange(port) == tag else 0
        if run == in_a_row:
            return True
    return False


def test_a_reload_applies_to_new_connections_and_open_ones_keep_their_upstream(mesh):
    """After the weights change to 0/100, new connections all reach v2, while a connection opened before the
    reload keeps relaying to the upstream it had."""
    t, v1, v2, write = mesh
    deadline = time.time() + 10
    while True:
        before = socket.create_connection(("127.0.0.1", t.ports[0]), timeout=10)
        if before.recv(2) == b"v1" or time.time() >= deadline:
            break
        before.close()
    write(0, 100)
    t.signal(signal.SIGHUP)
    assert settled(t.ports[0], b"v2")
    assert [exchange(t.ports[0]) for _ in range(50)] == [b"v2"] * 50
    before.sendall(b"still here")
    assert before.recv(10) == b"still here"
    before.close()


def test_tcp_route_to_a_dns_endpoint_takes_over_without_a_gap(mesh):
    """A reload moves subset v1 to a DNS ServiceEntry endpoint named `localhost`: the new name is looked up off the
    reactors and the previous table keeps serving until it has answered (as Envoy warms a DNS cluster), so no
    connection is refused during the change; then v1's connections are relayed to the resolved address."""
    t, v1, v2, write = mesh
    write(0, 100)
    t.signal(signal.SIGHUP)
    assert settled(t.ports[0], b"v2")
    write(100, 0, resolution="DNS", v1_address="localhost")
    t.signal(signal.SIGHUP)
    assert settled(t.ports[0], b"v1")
    t.stop()
    assert "dns localhost: 127.0.0.1" in t.log() + t.rest()


HASHED = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: shop}}
spec:
  hosts: [echo]
  ports: [{{number: {listen}, name: tcp-echo, protocol: TCP}}]
  resolution: STATIC
  endpoints:
{endpoints}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: shop}}
spec:
  host: echo
  trafficPolicy: {{loadBalancer: {{consistentHash: {{useSourceIp: true{table}}}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: shop}}
spec:
  hosts: [echo]
  tcp:
  - route: [{{destination: {{host: echo}}}}]
"""


def exchange_from(source_ip, port):
    """`exchange`, from a client socket bound to `source_ip` (any 127.0.0.0/8 address)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source_ip, 0)) as s:
        tag = s.recv(2)
        s.sendall(b"hi")
        assert s.recv(2) == b"hi"
        return tag


@pytest.mark.parametrize("table", ["", ", maglev: {tableSize: 65537}"], ids=["ring-hash", "maglev"])
def test_use_source_ip_keeps_each_client_on_one_endpoint(tmp_path, backend, table):
    """consistentHash.useSourceIp on a TCP service: every connection from one client IP reaches the same one of
    four endpoints, and sixteen client IPs do not all land on one."""
    ups = [Upstream(tagged(b"e%d" % i)) for i in range(4)]
    listen = free_port()
    path = tmp_path / "mesh.yaml"
    endpoints = "\n".join(f"  - {{address: 127.0.0.1, ports: {{tcp-echo: {u.port}}}}}" for u in ups)
    path.write_text(HASHED.format(listen=listen, endpoints=endpoints, table=table))
    t = Tern(["--config", str(path), "--listen", f"127.0.0.1:{listen}", "--cores", "1", "--io-backend", backend])
    try:
        chosen = {}
        for i in range(16):
            ip = f"127.0.{i}.{i + 2}"
            tags = {exchange_from(ip, t.ports[0]) for _ in range(6)}
            assert len(tags) == 1, (ip, tags)
            chosen[ip] = tags.pop()
        assert len(set(chosen.values())) >= 2, chosen
    finally:
        t.stop()
        for u in ups:
            u.stop()


SUBNETS = SERVICE + """\
  - match: [{{port: {listen}, destinationSubnets: [{to_v1}]}}]
    route: [{{destination: {{host: echo, subset: v1}}}}]
  - match: [{{destinationSubnets: [{to_v2}]}}]
    route: [{{destination: {{host: echo, subset: v2}}}}]
"""


def subnet_mesh(tmp_path, listen, to_v1, to_v2):
    """Two tagged echo upstreams (subsets v1, v2) and a configuration routing the destinations in `to_v1` to the
    first and those in `to_v2` to the second; returns (upstreams, config path)."""
    ups = Upstream(tagged(b"v1")), Upstream(tagged(b"v2"))
    path = tmp_path / "mesh.yaml"
    path.write_text(SUBNETS.format(listen=listen, v1=ups[0].port, v2=ups[1].port, resolution="STATIC",
                                   v1_address="127.0.0.1", to_v1=to_v1, to_v2=to_v2))
    return ups, path


def test_destination_subnets_route_each_connection_by_the_address_it_was_made_to(tmp_path, backend):
    """One listener on every address (0.0.0.0 and [::]): a connection to 127.0.0.2 or ::1 takes the first tcp
    route (127.0.0.2/32 and ::1), one to any other 127.x address the second (127.0.0.0/8): the destination IP of
    each connection, not the listener, decides."""
    listen = free_wildcard_port()
    ups, path = subnet_mesh(tmp_path, listen, '127.0.0.2/32, "::1"', "127.0.0.0/8")
    t = Tern(["--config", str(path), "--listen", f"0.0.0.0:{listen}", "--listen", f"[::]:{listen}", "--cores", "1",
              "--io-backend", backend])
    try:
        for _ in range(5):
            assert exchange(listen, host="127.0.0.2") == b"v1"
            assert exchange(listen, host="127.0.0.3") == b"v2"
            assert exchange(listen, host="127.0.0.1") == b"v2"
            assert exchange(listen, host="::1") == b"v1"
        assert ups[0].connections == 10 and ups[1].connections == 10
    finally:
        t.stop()
        for u in ups:
            u.stop()


def test_a_connection_iptables_redirected_is_routed_by_its_original_destination(tmp_path, backend, netns):
    """In a network namespace of its own, iptables REDIRECTs connections for 127.0.0.5:7000 and [fd00::5]:7000
    to Tern's listeners on 127.0.0.1 and ::1, as a sidecar's interception does: they take the route for their
    original destination (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST), while connections made to the listeners'
    own addresses take the route for those."""
    listen = free_port()
    netns.run("ip", "addr", "add", "fd00::1/64", "dev", "lo", "nodad")
    netns.run("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.5", "--dport", "7000",
              "-j", "REDIRECT", "--to-ports", str(listen))
    netns.run("ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "fd00::5", "--dport", "7000",
              "-j", "REDIRECT", "--to-ports", str(listen))
    with netns.inside():
        ups, path = subnet_mesh(tmp_path, listen, '127.0.0.5/32, "fd00::5"', '127.0.0.0/8, "::/0"')
        t = Tern(["--config", str(path), "--listen", f"127.0.0.1:{listen}", "--listen", f"[::1]:{listen}",
                  "--cores", "1", "--io-backend", backend])
        try:
            for _ in range(3):
                assert exchange(7000, host="127.0.0.5") == b"v1"
                assert exchange(listen, host="127.0.0.1") == b"v2"
                assert exchange(7000, host="fd00::5") == b"v1"
                assert exchange(listen, host="::1") == b"v2"
        finally:
            t.stop()
            for u in ups:
                u.stop()


TCP_POOLED = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [echo]
  ports: [{{number: {listen}, name: tcp-echo, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp-echo: {port}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: echo
  trafficPolicy: {{connectionPool: {pool}}}
"""


def tcp_pooled(tmp_path, backend, pool, *flags):
    up = Upstream(tagged(b"up"))
    listen = free_port()
    path = tmp_path / "mesh.yaml"
    path.write_text(TCP_POOLED.format(listen=listen, port=up.port, pool=pool))
    access = tmp_path / "access.log"
    t = Tern(["--config", str(path), "--listen", f"127.0.0.1:{listen}", "--cores", "1", "--io-backend", backend,
              "--access-log", str(access), *flags])
    return t, up, access


def test_tcp_max_connections_closes_connections_beyond_it_with_flag_UO(tmp_path, backend):
    """tcp.maxConnections 1 on a TCP route: while one connection is relayed, the next is closed at once without
    reaching the upstream (Envoy's TCP proxy, flag UO); once it closes, a new one is relayed again."""
    import json
    from test_access_log import wait_lines
    t, up, access = tcp_pooled(tmp_path, backend, "{tcp: {maxConnections: 1}}")
    try:
        held = socket.create_connection(("127.0.0.1", t.ports[0]), timeout=10)
        assert held.recv(2) == b"up"
        with socket.create_connection(("127.0.0.1", t.ports[0]), timeout=10) as s:
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass
        assert up.connections == 1
        held.close()
        deadline = time.time() + 10
        while True:
            # The first connection's end reaches the relay asynchronously: until then the limit still holds.
            with socket.create_connection(("127.0.0.1", t.ports[0]), timeout=10) as s:
                if s.recv(2) == b"up":
                    break
            assert time.time() < deadline, "a connection was not relayed again after the first closed"
            time.sleep(0.05)
        got = wait_lines(access, 3, timeout=10, parser=json.loads)
        assert "UO" in [g["response_flags"] for g in got]
    finally:
        t.stop()
        up.stop()


def test_tcp_idle_timeout_of_the_cluster_replaces_the_flag(tmp_path, backend):
    t, up, _ = tcp_pooled(tmp_path, backend, "{tcp: {idleTimeout: 300ms}}", "--idle-timeout", "1h")
    try:
        with socket.create_connection(("127.0.0.1", t.ports[0]), timeout=10) as s:
            assert s.recv(2) == b"up"
            # Nothing moves: closed by Tern at the cluster's timeout (the socket timeout only bounds the test).
            assert s.recv(10) == b""
    finally:
        t.stop()
        up.stop()
