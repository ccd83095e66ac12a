"""`tern proxy` as a TCP relay, with real sockets and processes, on both backends."""
import hashlib
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import ROOT, Tern, tern_bin
from peers import dead_port, echo, hanging_listener, hashing_sender, hold, reset_after, stream_bytes, stream_sha256


def proxy(start_tern, up, backend, *extra, **kw):
    return start_tern("--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", backend,
                      "--cores", "1", *extra, **kw)


def connect(port, host="127.0.0.1", timeout=10):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def transfer_both_ways(port, size):
    """Sends `size` bytes of the stream while the upstream sends `size` bytes back; returns the hash and
    count of what the client received."""
    s = connect(port, timeout=60)
    got = hashlib.sha256()
    count = [0]

    def receive():
        while True:
            data = s.recv(1 << 20)
            if not data:
                break
            got.update(data)
            count[0] += len(data)

    t = threading.Thread(target=receive)
    t.start()
    for chunk in stream_bytes(size):
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    t.join(120)
    s.close()
    return count[0], got.hexdigest()


@pytest.mark.parametrize("size", [1, 64 * 1024, 256 * 1024 * 1024], ids=["1B", "64KiB", "256MiB"])
def test_transfers_both_directions_at_once_intact(start_tern, upstream, backend, size):
    up = upstream(hashing_sender(size))
    t = proxy(start_tern, up, backend)
    count, digest = transfer_both_ways(t.port, size)
    expected = stream_sha256(size)
    assert (count, digest) == (size, expected)
    deadline = time.time() + 30
    while not up.results and time.time() < deadline:
        time.sleep(0.01)
    assert up.results == [(size, expected)]


def test_thousand_concurrent_connections(start_tern, upstream, backend):
    up = upstream(echo)
    t = proxy(start_tern, up, backend)
    socks = []
    for i in range(1000):
        s = socket.socket()
        s.setblocking(True)
        s.settimeout(20)
        s.connect(("127.0.0.1", t.port))
        socks.append(s)
    for i, s in enumerate(socks):
        s.sendall(struct.pack("<I", i))
    for i, s in enumerate(socks):
        assert s.recv(4, socket.MSG_WAITALL) == struct.pack("<I", i)
    for s in socks:
        s.close()
    assert up.connections == 1000


def test_half_close_keeps_the_other_direction_open(start_tern, upstream, backend):
    async def reply_after_eof(reader, writer, up):
        data = await reader.read()  # until the client's FIN
        await __import__("asyncio").sleep(0.2)
        writer.write(b"got " + data)
        await writer.drain()
        writer.write_eof()

    up = upstream(reply_after_eof)
    t = proxy(start_tern, up, backend)
    s = connect(t.port)
    s.sendall(b"request")
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        data = s.recv(4096)
        if not data:
            break
        reply += data
    assert reply == b"got request"


def test_upstream_refusing_closes_client_promptly(start_tern, backend):
    dead = dead_port()
    t = start_tern("--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{dead}", "--io-backend", backend)
    s = connect(t.port, timeout=10)
    start = time.time()
    assert s.recv(1) == b""
    assert time.time() - start < 5


def test_upstream_reset_mid_stream_reaches_client(start_tern, upstream, backend):
    up = upstream(reset_after(1000))
    t = proxy(start_tern, up, backend)
    s = connect(t.port)
    received = 0
    with pytest.raises(ConnectionResetError):
        while True:
            data = s.recv(4096)
            if not data:
                pytest.fail(f"clean EOF after {received} bytes instead of a reset")
            received += len(data)
    assert received <= 1000


def test_client_reset_reaches_upstream(start_tern, upstream, backend):
    seen = []

    async def record(reader, writer, up):
        try:
            while await reader.read(4096):
                pass
            seen.append("eof")
        except ConnectionResetError:
            seen.append("reset")

    up = upstream(record)
    t = proxy(start_tern, up, backend)
    s = connect(t.port)
    s.sendall(b"hello")
    time.sleep(0.2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    deadline = time.time() + 5
    while not seen and time.time() < deadline:
        time.sleep(0.01)
    assert seen == ["reset"]


def test_max_connections_closes_extra_connections_at_once(start_tern, upstream, backend):
    up = upstream(echo)
    t = proxy(start_tern, up, backend, "--max-connections", "2")
    a, b = connect(t.port), connect(t.port)
    for s in (a, b):
        s.sendall(b"ok")
        assert s.recv(2, socket.MSG_WAITALL) == b"ok"
    c = connect(t.port)
    try:
        assert c.recv(1) == b""
    except ConnectionResetError:
        pass
    a.close()
    # Once one closes, a new connection is served again.
    deadline = time.time() + 5
    while True:
        d = connect(t.port)
        try:
            d.sendall(b"again")
            if d.recv(5, socket.MSG_WAITALL) == b"again":
                break
        except ConnectionError:
            pass
        assert time.time() < deadline, "service did not resume under the limit"
        time.sleep(0.05)
    assert up.connections == 3


def test_sigterm_drains_open_connections_and_refuses_new_ones(start_tern, upstream, backend):
    up = upstream(echo)
    t = proxy(start_tern, up, backend, "--drain-timeout", "10s")
    s = connect(t.port)
    s.sendall(b"before")
    assert s.recv(6, socket.MSG_WAITALL) == b"before"
    t.signal(signal.SIGTERM)
    deadline = time.time() + 5
    refused = False
    while time.time() < deadline:
        try:
            n = socket.create_connection(("127.0.0.1", t.port), timeout=1)
            n.close()
            time.sleep(0.02)
        except (ConnectionRefusedError, ConnectionResetError):
            # Refused once the listener is closed; a probe caught in its backlog at that moment is reset.
            refused = True
            break
    assert refused, "new connections still accepted while draining"
    s.sendall(b"during")
    assert s.recv(6, socket.MSG_WAITALL) == b"during"
    assert t.proc.poll() is None, "exited before the open connection finished"
    s.close()
    assert t.wait(10) == 0


def test_drain_timeout_closes_what_is_left(start_tern, upstream, backend):
    up = upstream(hold)
    t = proxy(start_tern, up, backend, "--drain-timeout", "300ms")
    s = connect(t.port)
    s.sendall(b"x")
    time.sleep(0.2)
    start = time.time()
    t.signal(signal.SIGTERM)
    assert t.wait(10) == 0
    assert time.time() - start < 5
    assert s.recv(1) in (b"",)


def test_idle_timeout_closes_quiet_connections(start_tern, upstream, backend):
    up = upstream(hold)
    t = proxy(start_tern, up, backend, "--idle-timeout", "300ms")
    s = connect(t.port)
    s.sendall(b"x")
    start = time.time()
    assert s.recv(1) == b""
    assert 0.25 < time.time() - start < 10


def test_connect_timeout(start_tern, backend):
    with hanging_listener() as port:
        t = start_tern("--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:%d" % port,
                       "--io-backend", backend, "--connect-timeout", "500ms")
        s = connect(t.port)
        start = time.time()
        assert s.recv(1) == b""
        elapsed = time.time() - start
        # Closed by the timeout: not before it (a refusal would close at once), and well within a generous bound.
        assert 0.4 < elapsed < 10


def test_ipv6(start_tern, upstream, backend):
    up = upstream(echo, host="::1")
    t = start_tern("--listen", "[::1]:0", "--upstream", up.address, "--io-backend", backend)
    s = socket.create_connection(("::1", t.port), timeout=10)
    s.sendall(b"six")
    assert s.recv(3, socket.MSG_WAITALL) == b"six"


def test_listen_and_upstream_pair_by_position(start_tern, upstream):
    a, b = upstream(echo), upstream(hashing_sender(3))
    t = start_tern("--listen", "127.0.0.1:0", "--upstream", a.address, "--listen", "127.0.0.1:0", "--upstream", b.address)
    assert len(t.ports) == 2
    s = connect(t.ports[0])
    s.sendall(b"A")
    assert s.recv(1) == b"A"
    s2 = connect(t.ports[1])
    s2.shutdown(socket.SHUT_WR)
    assert s2.recv(3, socket.MSG_WAITALL) == b"".join(stream_bytes(3))


def test_auto_falls_back_to_epoll_when_seccomp_refuses_io_uring(start_tern, upstream):
    wrapper = os.path.join(ROOT, "build-cmake", "no-io-uring")
    assert os.path.exists(wrapper), "build the C tools first: bash Tools/scripts/ctest.sh"
    up = upstream(echo)
    t = start_tern("--listen", "127.0.0.1:0", "--upstream", up.address, wrapper=[wrapper])
    assert "falling back to epoll" in t.log() and "EPERM" in t.log()
    assert "backend=epoll" in t.log()
    s = connect(t.port)
    s.sendall(b"fallback")
    assert s.recv(8, socket.MSG_WAITALL) == b"fallback"
    # Asked for explicitly, io_uring that cannot be set up is an error naming the reason.
    r = subprocess.run([wrapper, tern_bin(), "proxy", "--io-backend", "io_uring", "--listen", "127.0.0.1:0",
                        "--upstream", up.address], capture_output=True, timeout=20)
    assert r.returncode == 1
    assert b"io_uring cannot be set up" in r.stderr and b"EPERM" in r.stderr


def test_more_clients_than_descriptors_stalls_nothing(start_tern, upstream, backend):
    up = upstream(echo)

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    t = proxy(start_tern, up, backend, preexec_fn=low_limit)
    n = 400
    sel = selectors.DefaultSelector()
    done = 0
    socks = []
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", t.port))
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE, [i, b"", False])
    deadline = time.time() + 60
    while done < n and time.time() < deadline:
        for key, ev in sel.select(0.5):
            s, state = key.fileobj, key.data
            if ev & selectors.EVENT_WRITE and not state[2]:
                try:
                    s.send(struct.pack("<I", state[0]))
                except (BlockingIOError, ConnectionError):
                    continue
                state[2] = True
                sel.modify(s, selectors.EVENT_READ, state)
            elif ev & selectors.EVENT_READ:
                try:
                    data = s.recv(4)
                except BlockingIOError:
                    continue
                state[1] += data
                if len(state[1]) == 4 or not data:
                    assert state[1] == struct.pack("<I", state[0])
                    sel.unregister(s)
                    s.close()
                    done += 1
    assert done == n, f"only {done} of {n} clients were served"


def test_runs_as_unprivileged_user_1337(start_tern, upstream, backend):
    """Istio runs the sidecar as uid 1337 with no capabilities: the per-user pipe quota applies."""
    size = 8 * 1024 * 1024
    up = upstream(hashing_sender(size))

    def drop():
        os.setgroups([])
        os.setgid(1337)
        os.setuid(1337)

    t = proxy(start_tern, up, backend, preexec_fn=drop)
    status = dict(line.split(":", 1) for line in open(f"/proc/{t.proc.pid}/status").read().splitlines() if ":" in line)
    assert status["Uid"].split() == ["1337"] * 4 and status["Gid"].split() == ["1337"] * 4
    assert int(status["CapEff"], 16) == 0
    results = []

    def one():
        results.append(transfer_both_ways(t.port, size))

    threads = [threading.Thread(target=one) for _ in range(40)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    expected = (size, stream_sha256(size))
    assert results == [expected] * 40


BAD_FLAGS = [
    (["--ring-depth", "7"], "--ring-depth must be a power of two from 8 to 32768"),
    (["--ring-depth", "65536"], "--ring-depth must be a power of two from 8 to 32768"),
    (["--io-backend", "kqueue"], "--io-backend must be auto, io_uring or epoll"),
    (["--cores", "0"], "--cores must be a whole number from 1 to 1024"),
    (["--connect-timeout", "5"], "--connect-timeout must be a duration such as 5s, 250ms or 1h30m"),
    (["--idle-timeout", "soon"], "--idle-timeout must be a duration"),
    (["--drain-timeout=-1s"], "--drain-timeout must be a duration"),
    (["--max-connections=-1"], "--max-connections must be 0 (unlimited) or a positive whole number"),
    (["--log-level", "loud"], "--log-level must be trace, debug, info, warn or error"),
    (["--listen", "localhost:80"], "--listen must be IP:PORT or [IPv6]:PORT"),
    (["--listen", "127.0.0.1:70000"], "--listen must be IP:PORT or [IPv6]:PORT"),
    (["--listen", "::1:80"], "--listen must be IP:PORT or [IPv6]:PORT"),
    (["--upstream", "127.0.0.1:0"], "--upstream must be IP:PORT or [IPv6]:PORT with a port from 1 to 65535"),
    (["--listen", "127.0.0.1:0"], "--listen and --upstream pair by position"),
    (["--cores", "many"], "--cores"),
    (["--http", "--max-head-memory-mb", "0"], "--max-head-memory-mb must be a whole number from 1 to 1048576"),
]


@pytest.mark.parametrize("flags,message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flag_values_exit_64_with_one_line(flags, message):
    base = {"--listen": "127.0.0.1:0", "--upstream": "127.0.0.1:9"}
    args = list(flags)
    for k, v in base.items():
        if k not in args:
            args += [k, v]
    if flags == ["--listen", "127.0.0.1:0"]:
        args = ["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"]
    r = subprocess.run([tern_bin(), "proxy", *args], capture_output=True, timeout=20)
    assert r.returncode == 64, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]


def test_address_in_use_exits_1_naming_it():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    r = subprocess.run([tern_bin(), "proxy", "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:9"],
                       capture_output=True, timeout=20)
    busy.close()
    assert r.returncode == 1
    assert f"127.0.0.1:{port}" in r.stderr.decode() and "EADDRINUSE" in r.stderr.decode()


@pytest.mark.parametrize("held_by", ["socket with SO_REUSEPORT", "another tern"])
def test_an_address_another_process_listens_on_with_reuseport_exits_1(start_tern, upstream, held_by):
    """SO_REUSEPORT (each reactor's own listener) must not let a second process share a listener's address and
    split its traffic: a second `tern proxy` on an address held by a socket with SO_REUSEPORT, or by a running
    Tern, exits 1 naming it, and the first keeps every connection."""
    up = upstream(echo)
    holder = None
    first = None
    if held_by == "another tern":
        first = start_tern("--listen", "127.0.0.1:0", "--upstream", up.address, "--cores", "2")
        port = first.port
    else:
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(16)
        port = holder.getsockname()[1]
    try:
        r = subprocess.run([tern_bin(), "proxy", "--listen", f"127.0.0.1:{port}", "--upstream", up.address],
                           capture_output=True, timeout=20)
        assert r.returncode == 1, r.stderr
        err = r.stderr.decode()
        assert f"127.0.0.1:{port}" in err and "EADDRINUSE" in err and "another process" in err, err
        if first:
            for i in range(20):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    c.sendall(b"ping %d" % i)
                    c.shutdown(socket.SHUT_WR)
                    assert c.recv(100) == b"ping %d" % i
            assert up.connections == 20
    finally:
        if holder:
            holder.close()


def test_help_lists_every_flag_with_default_and_version():
    r = subprocess.run([tern_bin(), "proxy", "--help"], capture_output=True, timeout=20)
    out = r.stdout.decode().split("OPTIONS:", 1)[1]
    assert r.returncode == 0
    for flag, default in [("--ring-depth", "1024"), ("--connect-timeout", "5s"), ("--idle-timeout", "1h"),
                          ("--drain-timeout", "5s"), ("--io-backend", "auto"), ("--max-connections", "0"),
                          ("--log-level", "info"), ("--cores", None), ("--sqpoll", None), ("--listen", None),
                          ("--upstream", None)]:
        assert flag in out
        if default:
            assert f"(default: {default})" in out.split(flag, 1)[1].split("--", 1)[0], flag
    v = subprocess.run([tern_bin(), "--version"], capture_output=True, timeout=20)
    assert v.returncode == 0 and v.stdout.decode().strip()


def reactor_cpus(pid):
    """Cpus_allowed_list of each reactor thread (named tern-rN)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        if name.startswith("tern-r"):
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith("Cpus_allowed_list:"):
                    out[name] = line.split(":", 1)[1].strip()
    return out


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_reactors_pin_to_the_inherited_affinity_mask(start_tern, upstream):
    up = upstream(echo)
    t = start_tern("--listen", "127.0.0.1:0", "--upstream", up.address, wrapper=["taskset", "-c", "1"])
    assert "cores=1 cpus=1" in t.log()
    assert list(reactor_cpus(t.proc.pid).values()) == ["1"]
    t2 = start_tern("--listen", "127.0.0.1:0", "--upstream", up.address, "--cores", "2")
    assert sorted(reactor_cpus(t2.proc.pid).values()) == ["0", "1"]
    # Each reactor has its own SO_REUSEPORT socket on the same port; both serve.
    for _ in range(20):
        s = connect(t2.port)
        s.sendall(b"r")
        assert s.recv(1) == b"r"
        s.close()


def cpu_cgroup_dir():
    for line in open("/proc/self/cgroup"):
        num, controllers, path = line.strip().split(":", 2)
        if "cpu" in controllers.split(","):
            for base in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):
                if os.path.isdir(base + path):
                    return "v1", base + path
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2", "/sys/fs/cgroup"
    return None, None


def test_cgroup_cpu_quota_caps_the_default_core_count(start_tern, upstream):
    kind, parent = cpu_cgroup_dir()
    if kind is None or not os.access(parent, os.W_OK):
        pytest.skip("no writable cgroup cpu controller here")
    group = os.path.join(parent, f"tern-test-{os.getpid()}")
    os.mkdir(group)
    try:
        if kind == "v1":
            open(os.path.join(group, "cpu.cfs_period_us"), "w").write("100000")
            open(os.path.join(group, "cpu.cfs_quota_us"), "w").write("100000")
        else:
            open(os.path.join(group, "cpu.max"), "w").write("100000 100000")
        procs = os.path.join(group, "cgroup.procs")

        def enter():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        up = upstream(echo)
        t = start_tern("--listen", "127.0.0.1:0", "--upstream", up.address, preexec_fn=enter)
        assert "cores=1 " in t.log()
        t.stop()
    finally:
        os.rmdir(group)


@pytest.mark.parametrize("extra", [["--sqpoll"], ["--ring-depth", "8"]], ids=["sqpoll", "ring-depth-8"])
def test_io_uring_options_relay(start_tern, upstream, extra):
    from conftest import require_uring
    require_uring()
    size = 4 * 1024 * 1024
    up = upstream(hashing_sender(size))
    t = start_tern("--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", "io_uring", *extra)
    assert transfer_both_ways(t.port, size) == (size, stream_sha256(size))


def test_slow_reader_bounds_what_is_in_flight(start_tern, backend):
    """A client that stops reading must stop the upstream's writes: Tern buffers at most a pipe per
    direction, so what the upstream manages to send is bounded by socket buffers plus one pipe."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    sent = []

    def flood():
        conn, _ = listener.accept()
        conn.setblocking(False)
        total, stalled_since, chunk = 0, None, b"z" * 65536
        while total < 512 * 1024 * 1024:
            try:
                total += conn.send(chunk)
                stalled_since = None
            except BlockingIOError:
                now = time.time()
                stalled_since = stalled_since or now
                if now - stalled_since > 1.0:
                    break
                time.sleep(0.01)
        sent.append(total)
        conn.setblocking(True)
        conn.shutdown(socket.SHUT_RDWR) if total >= 512 * 1024 * 1024 else None
        flood.conn = conn

    th = threading.Thread(target=flood, daemon=True)
    th.start()
    t = start_tern("--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:%d" % listener.getsockname()[1],
                   "--io-backend", backend)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect(("127.0.0.1", t.port))
    th.join(30)
    assert sent, "the upstream never stalled: nothing held it back"
    # Socket buffers on loopback can reach a few MiB each way; one 1 MiB pipe is Tern's share.
    assert sent[0] < 64 * 1024 * 1024, f"the upstream pushed {sent[0]} bytes into a reader that reads nothing"
    # Reading resumes the flow: everything sent arrives.
    s.settimeout(30)
    got = 0
    while got < sent[0]:
        data = s.recv(1 << 20)
        if not data:
            break
        got += len(data)
    assert got == sent[0]
    s.close()
    flood.conn.close()
    listener.close()


def test_a_full_stderr_never_stalls_the_proxy(upstream, backend):
    """Logs go to a bounded queue: with stderr a pipe nobody reads, Tern drops lines and keeps relaying."""
    dead = dead_port()
    up = upstream(echo)
    proc = subprocess.Popen([tern_bin(), "proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{dead}",
                             "--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", backend,
                             "--log-level", "debug"], stderr=subprocess.PIPE)
    try:
        ports = []
        while len(ports) < 2:
            line = proc.stderr.readline().decode()
            assert line, "tern exited"
            if "listening kind=proxy" in line:
                ports.append(int(line.strip().rsplit(":", 1)[1]))
        # From here on nobody reads stderr. Each refused upstream logs a debug line: fill the pipe many times.
        for _ in range(3000):
            c = socket.create_connection(("127.0.0.1", ports[0]), timeout=10)
            c.recv(1)
            c.close()
        start = time.time()
        s = connect(ports[1])
        s.sendall(b"still here")
        assert s.recv(10, socket.MSG_WAITALL) == b"still here"
        assert time.time() - start < 5
    finally:
        proc.kill()
        proc.wait()


def test_proxy_hands_over_to_the_lean_engine(start_tern, upstream, tmp_path):
    up = upstream(echo)
    t = start_tern("--listen", "127.0.0.1:0", "--upstream", up.address)
    assert open(f"/proc/{t.proc.pid}/comm").read().strip() == "tern-engine"
    # Without tern-engine next to it, tern serves from its own process and says so.
    import shutil
    lone = tmp_path / "tern"
    shutil.copy(tern_bin(), lone)
    os.environ["TERN_BIN"], saved = str(lone), os.environ.get("TERN_BIN")
    try:
        t2 = start_tern("--listen", "127.0.0.1:0", "--upstream", up.address)
    finally:
        if saved is None:
            del os.environ["TERN_BIN"]
        else:
            os.environ["TERN_BIN"] = saved
    assert "serving from this process" in t2.log()
    s = connect(t2.port)
    s.sendall(b"lone")
    assert s.recv(4, socket.MSG_WAITALL) == b"lone"
    engine = os.path.join(os.path.dirname(tern_bin()), "tern-engine")
    r = subprocess.run([engine], capture_output=True, timeout=10)
    assert r.returncode == 64 and b"run `tern proxy` instead" in r.stderr


def test_sighup_and_sigusr1_do_not_stop_the_proxy(start_tern, upstream):
    up = upstream(echo)
    t = start_tern("--listen", "127.0.0.1:0", "--upstream", up.address)
    for sig in (signal.SIGHUP, signal.SIGUSR1):
        t.signal(sig)
    time.sleep(0.3)
    assert t.proc.poll() is None
    s = connect(t.port)
    s.sendall(b"up")
    assert s.recv(2, socket.MSG_WAITALL) == b"up"
    t.signal(signal.SIGINT)
    assert t.wait(10) == 0
