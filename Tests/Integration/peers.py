"""Upstream peers for the integration tests: asyncio servers on loopback, run in a background thread.

Each server records what it saw so tests can assert on the upstream's view of the traffic.
"""
import asyncio
import contextlib
import hashlib
import random
import socket
import struct
import threading
import time

import pytest


class Upstream:
    """A loopback TCP server whose per-connection behaviour is an async function (reader, writer, self)."""

    def __init__(self, behaviour, host="127.0.0.1"):
        self.behaviour = behaviour
        self.host = host
        self.connections = 0
        self.results = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(5):
            raise RuntimeError("upstream did not start")

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def handle(reader, writer):
            self.connections += 1
            try:
                await self.behaviour(reader, writer, self)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                if not writer.is_closing():
                    writer.close()

        async def start():
            self.server = await asyncio.start_server(handle, self.host, 0, backlog=4096, limit=1 << 20)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    @property
    def address(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stop(self):
        async def _stop():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(_stop(), self.loop)
        self.thread.join(5)


async def echo(reader, writer, up):
    """Echoes everything, then half-closes after the client's FIN."""
    while True:
        data = await reader.read(1 << 16)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    await writer.drain()


def stream_block():
    """A deterministic 1 MiB block (so both ends can generate and hash the same stream)."""
    seed = hashlib.sha256(b"tern").digest()
    out = bytearray()
    counter = 0
    while len(out) < (1 << 20):
        out += hashlib.sha256(seed + struct.pack("<Q", counter)).digest()
        counter += 1
    return bytes(out)


BLOCK = stream_block()


def stream_bytes(n):
    """Yields the first n bytes of the deterministic stream in chunks."""
    left = n
    while left > 0:
        chunk = BLOCK[: min(left, len(BLOCK))]
        left -= len(chunk)
        yield chunk


def stream_sha256(n):
    h = hashlib.sha256()
    for chunk in stream_bytes(n):
        h.update(chunk)
    return h.hexdigest()


def hashing_sender(send_bytes):
    """Reads and hashes all the client sends while sending `send_bytes` of the stream at the same time;
    records (received byte count, sha256) in up.results."""

    async def behaviour(reader, writer, up):
        async def receive():
            h = hashlib.sha256()
            total = 0
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                h.update(data)
                total += len(data)
            up.results.append((total, h.hexdigest()))

        async def send():
            for chunk in stream_bytes(send_bytes):
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        await asyncio.gather(receive(), send())

    return behaviour


def reset_after(n):
    """Sends n bytes, then resets the connection (SO_LINGER 0 + close)."""

    async def behaviour(reader, writer, up):
        writer.write(b"x" * n)
        await writer.drain()
        await asyncio.sleep(0.2)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    return behaviour


async def hold(reader, writer, up):
    """Keeps the connection open and idle until the client closes it."""
    while await reader.read(1 << 16):
        pass


def free_port(wildcard=False):
    """A port nothing listens on, for Tern to bind (an --admin, --health or --prometheus address, a listener a
    configuration names) or to be refused at. Taken from below the kernel's ephemeral range: a port from bind(0) is
    an ephemeral one, and before Tern binds it any client connection on the machine may take it as its local port
    (a CI run failed on EADDRINUSE for --health this way). With `wildcard`, free on 0.0.0.0 and [::] too."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for port in random.sample(range(max(1024, low - 12000), low), 200):
        # A port handed out before in this run is never handed out again: the Tern an earlier test started on
        # it may still hold it while it drains (a CI run failed on EADDRINUSE for --health this way too).
        if port in _handed_out:
            continue
        try:
            if wildcard:
                with socket.socket(socket.AF_INET) as a, socket.socket(socket.AF_INET6) as b:
                    a.bind(("0.0.0.0", port))
                    b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    b.bind(("::", port))
            else:
                with socket.socket() as a:
                    a.bind(("127.0.0.1", port))
            _handed_out.add(port)
            return port
        except OSError:
            continue
    raise RuntimeError("no free port below the ephemeral range")


_handed_out = set()


def dead_port():
    """A loopback port nothing listens on (connections to it are refused)."""
    return free_port()


@contextlib.contextmanager
def hanging_listener():
    """A loopback port whose connects hang: a listener with its accept queue full drops further SYNs. Skips the
    test where this kernel completes such a connect (it would then prove nothing)."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(full.getsockname())
        except BlockingIOError:
            pass
        fillers.append(f)
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(full.getsockname())
        pytest.skip("this kernel completed a connect to a full listen queue")
    except (socket.timeout, BlockingIOError):
        pass
    finally:
        probe.close()
    try:
        yield full.getsockname()[1]
    finally:
        for f in fillers:
            f.close()
        full.close()
