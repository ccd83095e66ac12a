"""`tern iptables`, Istio's istio-iptables, in network namespaces the tests make: a "pod" namespace joined by a
veth pair to a "peer" namespace (10.2.0.1 and 10.2.0.2). Plain Python listeners stand in for the sidecar's
15001 and 15006 listeners and read each connection's original destination (SO_ORIGINAL_DST); the "app" is a
Python client run as another uid (or as the proxy's uid 1337, or gid 1337). Checked: outbound and inbound
redirects with their original destinations, the proxy's own connections left alone, each exclusion, the loopback
rules, `--dry-run` changing nothing, `--cleanup` leaving iptables-save as it was before, on the nft and the legacy
backend, and exit 64 and 1.
"""
import encodings.idna  # noqa: F401 - loaded before a forked client drops to a uid that cannot read it
import os
import queue
import select
import signal
import shutil
import socket
import struct
import subprocess
import threading

import pytest

from conftest import NetNamespace, tern_bin, unavailable

POD, PEER = "10.2.0.1", "10.2.0.2"
SO_ORIGINAL_DST = 80
APP_UID = 1000
PROXY_ID = 1337


def tern_iptables(ns, *args, check=True):
    """`tern iptables ARGS` inside the namespace (or outside it when ns is None)."""
    prefix = ["ip", "netns", "exec", ns.name] if ns else []
    r = subprocess.run([*prefix, tern_bin(), "iptables", *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def saved(ns, tool="iptables-save"):
    """The namespace's rules as `tool` prints them, without its timestamped comment lines."""
    r = subprocess.run(["ip", "netns", "exec", ns.name, tool], capture_output=True, text=True, timeout=30, check=True)
    return [line for line in r.stdout.splitlines() if not line.startswith("#")]


class Listener:
    """A TCP listener in a namespace, serving from a thread: each connection is recorded as (name, original
    destination) and answered with `name`, then closed."""

    def __init__(self, ns, port, name, address="0.0.0.0"):
        self.name = name
        self.seen = queue.Queue()
        with ns.inside():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(16)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
                    port, address = struct.unpack("!H4s", raw[2:8])
                    self.seen.put((socket.inet_ntoa(address), port))
                except OSError:  # not NATed: no conntrack entry to ask
                    self.seen.put(conn.getsockname())
                conn.sendall(self.name.encode())

    def stop(self):
        # shutdown wakes the thread blocked in accept (close alone does not, on Linux).
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()

    def taken(self):
        """What connections were recorded so far."""
        items = []
        while not self.seen.empty():
            items.append(self.seen.get_nowait())
        return items


def client(read_end, write_end, address, port, uid, gid):
    """The forked child: drops to uid/gid, connects, and writes "+" and what it read, or "-" and the error."""
    try:
        os.close(read_end)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        with socket.create_connection((address, port), timeout=5) as s:
            data = b""
            while chunk := s.recv(100):
                data += chunk
        os.write(write_end, b"+" + data)
        os._exit(0)
    except BaseException as e:  # noqa: B036 - the child reports every failure and exits
        os.write(write_end, f"-{e!r}".encode())
        os._exit(1)


def connect(ns, address, port, uid=APP_UID, gid=0):
    """Connects from a process in `ns` running as uid/gid (forked from this one, so no interpreter the uid may
    not read is executed); returns the name of the listener that answered, or None when the connection failed.
    Bounded: the child's socket times out after 5 s and is killed if it has not answered in 20."""
    read_end, write_end = os.pipe()
    with ns.inside():
        pid = os.fork()
        if pid == 0:
            # Still inside the block: leaving it would move the child back to the test's own namespace.
            client(read_end, write_end, address, port, uid, gid)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 20)
        reply = os.read(read_end, 4096) if ready else b"-timed out"
    finally:
        os.close(read_end)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not reply.startswith(b"+"):
        print(f"connect {address}:{port} as {uid}/{gid}: {reply[1:].decode()}")
        return None
    return reply[1:].decode()


@pytest.fixture
def pod(netns):
    """The netns fixture as the pod, with a veth pair to a peer namespace deleted afterwards: (pod, peer)."""
    try:
        peer = NetNamespace()
    except (subprocess.CalledProcessError, OSError) as e:
        unavailable(f"cannot make a second network namespace: {e}", "TERN_REQUIRE_NETNS")
    try:
        netns.run("ip", "link", "add", "pod0", "type", "veth", "peer", "name", "peer0", "netns", peer.name)
        netns.run("ip", "addr", "add", f"{POD}/24", "dev", "pod0")
        netns.run("ip", "link", "set", "pod0", "up")
        peer.run("ip", "addr", "add", f"{PEER}/24", "dev", "peer0")
        peer.run("ip", "link", "set", "peer0", "up")
        yield netns, peer
    finally:
        peer.delete()


BACKENDS = ["default", "legacy"]


def backend_flags(backend):
    if backend == "default":
        return []
    if shutil.which("iptables-legacy-restore") is None:
        unavailable("iptables-legacy-restore is not installed", "TERN_REQUIRE_NETNS")
    return ["--iptables-restore", "iptables-legacy-restore"]


def save_tool(backend):
    return "iptables-legacy-save" if backend == "legacy" else "iptables-save"


@pytest.fixture
def listeners():
    started = []

    def start(ns, port, name, address="0.0.0.0"):
        listener = Listener(ns, port, name, address)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_outbound_tcp_of_the_app_reaches_15001_with_its_original_destination(pod, listeners, backend):
    ns, peer = pod
    outbound = listeners(ns, 15001, "outbound")
    inbound = listeners(ns, 15006, "inbound")
    upstream = listeners(peer, 8080, "upstream")
    tern_iptables(ns, *backend_flags(backend))
    assert any(":ISTIO_OUTPUT" in line for line in saved(ns, save_tool(backend)))

    assert connect(ns, PEER, 8080) == "outbound"
    assert outbound.taken() == [(PEER, 8080)]
    # Any routable address: the redirect happens after the route lookup, before anything leaves.
    ns.run("ip", "route", "add", "10.3.0.0/16", "dev", "pod0")
    assert connect(ns, "10.3.0.9", 5432) == "outbound"
    assert outbound.taken() == [("10.3.0.9", 5432)]
    assert upstream.taken() == [] and inbound.taken() == []


def test_connections_of_the_proxys_uid_or_gid_are_not_redirected(pod, listeners):
    ns, peer = pod
    outbound = listeners(ns, 15001, "outbound")
    upstream = listeners(peer, 8080, "upstream")
    tern_iptables(ns)
    assert connect(ns, PEER, 8080, uid=PROXY_ID) == "upstream"
    assert connect(ns, PEER, 8080, uid=APP_UID, gid=PROXY_ID) == "upstream"
    assert upstream.taken() == [(PEER, 8080), (PEER, 8080)]
    assert outbound.taken() == []


def test_other_proxy_ids_are_the_ones_excluded(pod, listeners):
    ns, peer = pod
    outbound = listeners(ns, 7001, "outbound")
    upstream = listeners(peer, 8080, "upstream")
    tern_iptables(ns, "-p", 7001, "-u", 2000, "-g", 2001)
    assert connect(ns, PEER, 8080, uid=PROXY_ID) == "outbound"
    assert connect(ns, PEER, 8080, uid=2000) == "upstream"
    assert connect(ns, PEER, 8080, uid=APP_UID, gid=2001) == "upstream"
    assert outbound.taken() == [(PEER, 8080)]


def test_outbound_exclusions_and_inclusions(pod, listeners):
    ns, peer = pod
    outbound = listeners(ns, 15001, "outbound")
    upstream = {port: listeners(peer, port, f"upstream-{port}") for port in (8080, 9090, 3306)}
    tern_iptables(ns, "-o", "9090")
    assert connect(ns, PEER, 9090) == "upstream-9090"
    assert connect(ns, PEER, 8080) == "outbound"

    tern_iptables(ns, "-x", f"{PEER}/32")
    assert connect(ns, PEER, 8080) == "upstream-8080"

    # Only 10.9.0.0/16 is captured, and port 3306 whatever the address.
    tern_iptables(ns, "-i", "10.9.0.0/16", "-q", "3306")
    assert connect(ns, PEER, 8080) == "upstream-8080"
    assert connect(ns, PEER, 3306) == "outbound"
    ns.run("ip", "route", "add", "10.9.0.0/16", "dev", "pod0")
    assert connect(ns, "10.9.1.1", 80) == "outbound"

    # No outbound capture at all.
    tern_iptables(ns, "-i", "")
    assert connect(ns, PEER, 3306) == "upstream-3306"
    assert outbound.taken() == [(PEER, 8080), (PEER, 3306), ("10.9.1.1", 80)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_inbound_tcp_reaches_15006_with_its_original_destination(pod, listeners, backend):
    ns, peer = pod
    inbound = listeners(ns, 15006, "inbound")
    app = {port: listeners(ns, port, f"app-{port}") for port in (8080, 2222, 15021)}
    tern_iptables(ns, "-d", "2222", *backend_flags(backend))
    assert connect(peer, POD, 8080, uid=0) == "inbound"
    assert inbound.taken() == [(POD, 8080)]
    # The user's exclusion and Istio's health port reach the app's listeners as they are.
    assert connect(peer, POD, 2222, uid=0) == "app-2222"
    assert connect(peer, POD, 15021, uid=0) == "app-15021"
    assert app[8080].taken() == []

    tern_iptables(ns, "-b", "2222", *backend_flags(backend))
    assert connect(peer, POD, 8080, uid=0) == "app-8080"
    assert connect(peer, POD, 2222, uid=0) == "inbound"
    assert inbound.taken() == [(POD, 2222)]


def test_loopback_rules(pod, listeners):
    """Istio's loopback rules: the app calling its own pod address stays local; the proxy calling it (a request
    that came back through a service address) goes to the inbound listener; localhost is never redirected."""
    ns, _ = pod
    outbound = listeners(ns, 15001, "outbound")
    inbound = listeners(ns, 15006, "inbound")
    app = listeners(ns, 8080, "app")
    tern_iptables(ns)
    assert connect(ns, POD, 8080) == "app"
    assert connect(ns, "127.0.0.1", 8080) == "app"
    assert connect(ns, "127.0.0.1", 8080, uid=PROXY_ID) == "app"
    assert connect(ns, POD, 8080, uid=PROXY_ID) == "inbound"
    assert inbound.taken() == [(POD, 8080)]
    assert outbound.taken() == []
    assert len(app.taken()) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_cleanup_leaves_iptables_save_as_it_was(netns, backend):
    flags = backend_flags(backend)
    save, save6 = save_tool(backend), save_tool(backend).replace("iptables", "ip6tables")
    # Rules of someone else's, which must survive.
    netns.run(save.replace("-save", ""), "-t", "nat", "-N", "MINE")
    netns.run(save.replace("-save", ""), "-t", "nat", "-A", "OUTPUT", "-d", "10.9.9.9/32", "-j", "MINE")
    netns.run(save6.replace("-save", ""), "-t", "nat", "-A", "OUTPUT", "-d", "fd00::9/128", "-j", "RETURN")
    before, before6 = saved(netns, save), saved(netns, save6)

    tern_iptables(netns, "--ipv6", *flags)
    tern_iptables(netns, "--ipv6", "-b", "8080", *flags)  # replaces, does not add
    after = saved(netns, save)
    assert after.count("-A OUTPUT -j ISTIO_OUTPUT") == 1
    assert after.count("-A PREROUTING -p tcp -j ISTIO_INBOUND") == 1
    assert any(":ISTIO_OUTPUT" in line for line in saved(netns, save6))

    r = tern_iptables(netns, "--cleanup", *flags)
    assert "IPv4: removed" in r.stderr and "IPv6: removed" in r.stderr
    assert saved(netns, save) == before
    assert saved(netns, save6) == before6
    r = tern_iptables(netns, "--cleanup", *flags)
    assert "IPv4: nothing installed" in r.stderr
    assert saved(netns, save) == before


def test_cleanup_with_nothing_installed_changes_nothing(netns):
    before, before6 = saved(netns), saved(netns, "ip6tables-save")
    r = tern_iptables(netns, "--cleanup")
    assert "nothing installed" in r.stderr
    assert saved(netns) == before and saved(netns, "ip6tables-save") == before6


def test_dry_run_prints_the_rules_and_changes_nothing(netns):
    before, before6 = saved(netns), saved(netns, "ip6tables-save")
    r = tern_iptables(netns, "--dry-run", "-i", "10.0.0.0/8")
    lines = r.stdout.splitlines()
    assert lines[:2] == ["# IPv4: iptables-restore --noflush", "*nat"]
    assert "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT" in lines
    assert lines[-2:] == ["COMMIT", "# IPv6 is not intercepted (no --ipv6)"]
    assert saved(netns) == before and saved(netns, "ip6tables-save") == before6
    # What it prints is what an install applies.
    netns.run("sh", "-c", f"{tern_bin()} iptables --dry-run -i 10.0.0.0/8 | iptables-restore --noflush")
    installed = saved(netns)
    tern_iptables(netns, "--cleanup")
    tern_iptables(netns, "-i", "10.0.0.0/8")
    assert saved(netns) == installed


@pytest.mark.parametrize("args, flag", [
    (["-p", "0"], "--proxy-port"),
    (["--inbound-capture-port", "70000"], "--inbound-capture-port"),
    (["-z", "15001"], "--inbound-capture-port"),
    (["-u", "nobody"], "--proxy-uid"),
    (["--proxy-gid=-5"], "--proxy-gid"),
    (["-b", "80,http"], "--inbound-ports"),
    (["-d", "*"], "--inbound-exclude-ports"),
    (["-i", "10.0.0.0/33"], "--outbound-ip-ranges"),
    (["-x", "*"], "--outbound-exclude-ip-ranges"),
    (["-x", "10.0.0.1,example.com"], "--outbound-exclude-ip-ranges"),
    (["-q", "1-2"], "--outbound-ports"),
    (["-o", "99999"], "--outbound-exclude-ports"),
    (["--iptables-restore", "/bin/true"], "--iptables-restore"),
    (["--frobnicate"], "--frobnicate"),
])
def test_bad_flags_exit_64_with_one_line_naming_the_flag(args, flag):
    r = tern_iptables(None, "--dry-run", *args, check=False)
    assert r.returncode == 64, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0], r.stderr


def test_a_failing_iptables_restore_exits_1_with_its_complaint(tmp_path, netns):
    (tmp_path / "fake-save").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "fake-restore").write_text("#!/bin/sh\ncat >/dev/null\necho 'iptables-restore: line 3 failed' >&2\nexit 2\n")
    for name in ("fake-save", "fake-restore"):
        os.chmod(tmp_path / name, 0o755)
    r = tern_iptables(netns, "--iptables-restore", tmp_path / "fake-restore", check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"tern iptables: {tmp_path}/fake-restore --noflush failed (exit 2): "
                                "iptables-restore: line 3 failed")
    r = tern_iptables(netns, "--iptables-restore", "/nonexistent/iptables-restore", check=False)
    assert r.returncode == 1
    assert "/nonexistent/iptables-restore: no such executable, or no *-save beside it" in r.stderr
