#!/usr/bin/env python3
"""Resident memory of HTTP/2 connections and streams held (issue 17), Tern beside nginx and HAProxy: each proxy on
one core (CPU 0: `tern proxy --http --cores 1`, nginx `worker_processes 1`, HAProxy `nbthread 1`), configured as
Benchmarks/http2.py configures them for h2c from clients (prior knowledge) and HTTP/1.1 to the same nginx origin
(on CPU 1, with this driver). Measured in each proxy:

  idle        before any connection;
  idle conns  N idle HTTP/2 connections, each served one request (GET, 100 bytes answered) over h2c and then held
              open, sending nothing more; opened B at a time (100), each batch answered before the next opens. A
              stream the proxy refuses (RST_STREAM REFUSED_STREAM, which invites the client to send it again) is
              sent again on the connection's next stream, and the refusals are counted;
  streams     in a fresh process, C connections x S streams (10 x 100), each stream asking for 1 MiB from the
              origin, whose clients read nothing at all after their requests: the windows (65,535 bytes a stream and
              a connection, HTTP/2's initial ones) are never reopened. Measured once the proxy is still (its RSS, its
              connections at the origin and its temporary files unchanged for 2 s); then the clients read what had
              come, to count the streams answered (a response head sent) and reset.

RSS is the proxy's processes together (nginx's master and worker), from /proc; per connection and per stream are
the growth over that process's idle figure, divided by the count. nginx buffers an upstream answer the client does
not take into temporary files (its default `proxy_max_temp_file_size 1024m`), which it unlinks as it makes them;
the size of those it holds open is shown beside its figure (on disk or in the page cache, not in its RSS).

    python3 Benchmarks/http2-memory.py [--connections N] [--batch B] [--streams CxS] [--only tern,nginx,haproxy]
                                       (defaults 10000, 100 and 10x100)

Needs nginx and haproxy (`bash Tools/scripts/setup.sh --bench`), Python's hpack (installed with h2), and a release
build (.build/release/tern, or TERN_BENCH_BIN). The descriptor limit is raised as connections-rss.py raises it;
HAProxy reserves two descriptors per connection, so under a hard limit of 20,000 it holds at most (limit - 200) / 2
and is measured with that many idle connections less 100 (the row says how many).
"""
import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

import hpack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import proxies  # noqa: E402

PROXY_CPU, LOAD_CPU = "0", "1"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0, 1, 3, 4, 7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
MIB = 1 << 20


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def requests(paths):
    """A connection's first bytes: the preface, empty SETTINGS (HTTP/2's initial windows), one GET per path on
    streams 1, 3, 5, ... (one HPACK encoder in order, as one connection would)."""
    encoder = hpack.Encoder()
    out = PREFACE + frame(SETTINGS, 0, 0)
    for i, path in enumerate(paths):
        block = encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", "origin"), (":path", path)])
        out += frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, block)
    return out


class Client:
    """One HTTP/2 connection to the proxy, read frame by frame."""

    def __init__(self, port, first):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(first)
        self.buf = b""

    def answer(self, stream):
        """Reads frames until `stream` ends, acknowledging the server's SETTINGS: its :status, or None when the
        proxy refused the stream (RST_STREAM REFUSED_STREAM: the client may send it again)."""
        status, decoder = None, hpack.Decoder()
        while True:
            while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed before the answer")
                self.buf += chunk
            length, kind, flags = int.from_bytes(self.buf[:3], "big"), self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload, self.buf = self.buf[9:9 + length], self.buf[9 + length:]
            if kind == SETTINGS and not flags & ACK:
                self.sock.sendall(frame(SETTINGS, ACK, 0))
            elif kind == RST_STREAM and sid == stream and payload == struct.pack(">I", 7):
                return None
            elif kind in (RST_STREAM, GOAWAY):
                raise ConnectionError(f"frame {kind} from the proxy on stream {sid}: {payload.hex()}")
            elif kind == HEADERS and sid == stream and status is None:
                status = dict(decoder.decode(payload))[":status"]  # (the proxies send no padding or priority)
            if sid == stream and kind in (HEADERS, DATA) and flags & END_STREAM:
                return status

    def heads_and_resets(self):
        """Reads what has come (without waiting): how many response heads (streams answered) and RST_STREAMs."""
        self.sock.setblocking(False)
        try:
            while chunk := self.sock.recv(1 << 20):
                self.buf += chunk
        except BlockingIOError:
            pass
        heads, resets, at = 0, 0, 0
        while at + 9 <= len(self.buf):
            length = int.from_bytes(self.buf[at:at + 3], "big")
            if at + 9 + length > len(self.buf):
                break
            heads += self.buf[at + 3] == HEADERS
            resets += self.buf[at + 3] == RST_STREAM
            at += 9 + length
        return heads, resets

    def get(self, path):
        """One GET answered (sent again on the next stream while the proxy refuses it, at most 10 times): its
        :status and how many times it was refused."""
        stream, refused = 1, 0
        while True:
            status = self.answer(stream)
            if status is not None:
                return status, refused
            refused += 1
            assert refused <= 10, "refused 10 times"
            stream += 2
            # (A fresh encoder's block is valid on a connection whose table holds more: it names only the static
            # table and what it adds itself.)
            block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":authority", "origin"),
                                            (":path", path)])
            self.sock.sendall(frame(HEADERS, END_STREAM | END_HEADERS, stream, block))


def start_origin(work):
    """nginx on CPU 1: 100 bytes on every path, a 1 MiB file at /mib."""
    d = os.path.join(work, "origin")
    os.makedirs(os.path.join(d, "www"))
    with open(os.path.join(d, "www", "mib"), "wb") as f:
        f.write(os.urandom(MIB))
    port = proxies.free_port()
    open(f"{d}/nginx.conf", "w").write(f"""daemon off; master_process on; worker_processes 1;
worker_rlimit_nofile {proxies.nofile_limit()};
pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections {proxies.nginx_connections()}; }}
http {{
    access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
{proxies._nginx_paths(d)}
    server {{ listen 127.0.0.1:{port} backlog=4096; root {d}/www;
             location = /mib {{ }} location / {{ return 200 "{'s' * 100}"; }} }}
}}
""")
    p = proxies.spawn(LOAD_CPU, ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies.wait_listening(port, p)
    return p, port


def start_tern(work, origin):
    port = proxies.free_port()
    mesh = os.path.join(work, "mesh.yaml")
    open(mesh, "w").write(f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: origin}}
spec:
  hosts: [origin]
  ports: [{{number: 80, name: p, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{p: {origin}}}}}]
""")
    log = open(os.path.join(work, "tern.log"), "ab")
    p = proxies.spawn(PROXY_CPU, [proxies.TERN, "proxy", "--http", "--cores", "1", "--listen", f"127.0.0.1:{port}",
                                  "--config", mesh, "--admin", "off", "--health", "off", "--prometheus", "off",
                                  "--max-pending-requests", "100000"], stderr=log)
    proxies.wait_listening(port, p)
    return p, port, None


def start_nginx(work, origin):
    d = os.path.join(work, f"nginx-{time.monotonic_ns()}")
    os.makedirs(d)
    port = proxies.free_port()
    open(f"{d}/nginx.conf", "w").write(f"""daemon off; master_process on; worker_processes 1;
worker_rlimit_nofile {proxies.nofile_limit()};
pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections {proxies.nginx_connections()}; }}
http {{
    access_log off; tcp_nodelay on; keepalive_requests 100000000; keepalive_timeout 300s;
    http2_max_requests 100000000; http2_max_concurrent_streams 1000;
{proxies._nginx_paths(d)}
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; keepalive_requests 100000000; keepalive_timeout 300s; }}
    server {{ listen 127.0.0.1:{port} http2 backlog=4096;
             location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
}}
""")
    p = proxies.spawn(PROXY_CPU, ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies.wait_listening(port, p)
    return p, port, os.path.join(d, "proxy")


def start_haproxy(work, origin):
    port = proxies.free_port()
    cfg = os.path.join(work, f"haproxy-{port}.cfg")
    open(cfg, "w").write(f"""global
    nbthread 1
    maxconn {proxies.haproxy_maxconn()}
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{port} proto h2
    maxconn {proxies.haproxy_maxconn()}
    backlog 4096
    default_backend origin
backend origin
    server origin 127.0.0.1:{origin}
""")
    p = proxies.spawn(PROXY_CPU, ["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies.wait_listening(port, p)
    return p, port, None


START = {"tern": start_tern, "nginx": start_nginx, "haproxy": start_haproxy}


def established_to(port):
    """Established TCP connections whose local port is `port` (the origin's side of the proxy's connections)."""
    n = 0
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            n += 1
    return n


def spooled_bytes(pid, d):
    """Bytes in the files under `d` that the process (and its children) hold open: nginx's temporary files, which
    it unlinks as it makes them."""
    total = 0
    for p in proxies.family(pid):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if d and os.readlink(f"/proc/{p}/fd/{fd}").startswith(d + "/"):
                    total += os.stat(f"/proc/{p}/fd/{fd}").st_size
            except OSError:
                pass
    return total


def idle_connections(name, work, origin, n, batch=100):
    """The proxy's RSS idle, then with n idle HTTP/2 connections each answered once; opened `batch` at a time
    (each batch answered before the next opens), and how many streams the proxy refused on the way."""
    proc, port, _ = START[name](work, origin)
    try:
        time.sleep(0.5)
        idle = proxies.rss_mib(proc.pid)
        first = requests(["/"])
        clients, refused = [], 0
        for start in range(0, n, batch):
            group = [Client(port, first) for _ in range(min(batch, n - start))]
            for c in group:
                status, r = c.get("/")
                assert status == "200", status
                refused += r
            clients += group
        time.sleep(1.0)
        held = proxies.rss_mib(proc.pid)
        for c in clients:
            c.sock.close()
        return idle, held, refused
    finally:
        proxies.stop(proc)


def stalled_streams(name, work, origin, conns, streams):
    proc, port, spool = START[name](work, origin)
    try:
        time.sleep(0.5)
        idle = proxies.rss_mib(proc.pid)
        first = requests(["/mib"] * streams)
        # (And nothing more read or written until measured: no window ever reopened.)
        clients = [Client(port, first) for _ in range(conns)]
        # Measured once the proxy is still: its RSS (to 0.1 MiB), its connections at the origin and what it wrote to
        # temporary files unchanged for 2 s (within 60 s).
        seen, still, deadline = None, 0, time.monotonic() + 60
        while still < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
            now = (round(proxies.rss_mib(proc.pid), 1), established_to(origin), spooled_bytes(proc.pid, spool))
            still = still + 1 if now == seen else 0
            seen = now
        held, at_origin, spooled = seen
        answered, refused = 0, 0
        for c in clients:
            a, r = c.heads_and_resets()
            answered += a
            refused += r
        for c in clients:
            c.sock.close()
        return idle, held, at_origin, spooled, answered, refused
    finally:
        proxies.stop(proc)


def ratio_note(values, name):
    best = min(values.values())
    if values[name] == best:
        return "best"
    return f"{values[name] / best:.2f}x best" if best > 0 else "best is none"


def ratio(a, b):
    return f"{a / b:.2f}" if b > 0 else "n/a"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="tern,nginx,haproxy")
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=100, help="idle connections opened at once")
    ap.add_argument("--streams", default="10x100", help="connections x streams each")
    args = ap.parse_args()
    conns, streams = (int(x) for x in args.streams.split("x"))
    names = args.only.split(",")
    proxies.raise_nofile()
    for tool in ("nginx", "haproxy"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} missing: run bash Tools/scripts/setup.sh --bench")
    if not os.access(proxies.TERN, os.X_OK):
        sys.exit("no .build/release/tern: swift build -c release --static-swift-stdlib")
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    work = tempfile.mkdtemp(prefix="tern-h2-rss.")
    os.chmod(work, 0o755)
    origin_proc, origin = start_origin(work)
    rows = {}
    try:
        print(f"HTTP/2 resident memory, one core each, descriptor limit {proxies.nofile_limit():,} "
              f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {proxies.TERN})", flush=True)
        for name in names:
            m = min(args.connections, proxies.haproxy_maxconn() - 100) if name == "haproxy" else args.connections
            idle, held, refused = idle_connections(name, work, origin, m, args.batch)
            print(f"{name}: idle {idle:.1f} MiB, {m:,} idle HTTP/2 connections {held:.1f} MiB "
                  f"({(held - idle) * 1024 / m:.2f} KiB each; {refused} streams refused and sent again)", flush=True)
            s_idle, s_held, at_origin, spooled, answered, resets = stalled_streams(name, work, origin, conns, streams)
            print(f"{name}: {conns} x {streams} streams not read: {s_held:.1f} MiB (idle {s_idle:.1f}; "
                  f"{(s_held - s_idle) * 1024 / (conns * streams):.1f} KiB a stream; {answered:,} answered (a head "
                  f"sent), {resets:,} reset; {at_origin:,} connections at the origin; {spooled / MIB:.0f} MiB in "
                  f"temporary files)", flush=True)
            rows[name] = dict(idle=idle, held=held, m=m, refused=refused, per_conn=(held - idle) * 1024 / m,
                              s_idle=s_idle, s_held=s_held, per_stream=(s_held - s_idle) * 1024 / (conns * streams),
                              answered=answered, resets=resets, at_origin=at_origin, spooled=spooled)
    finally:
        proxies.stop(origin_proc)
        shutil.rmtree(work, ignore_errors=True)
    per_conn = {n: r["per_conn"] for n, r in rows.items()}
    per_stream = {n: r["per_stream"] for n, r in rows.items()}
    print()
    print(f"| proxy | idle (MiB) | {args.connections:,} idle HTTP/2 connections (MiB) | KiB a connection | "
          f"{conns} x {streams} streams not read (MiB) | KiB a stream | streams answered / reset | "
          f"connections at the origin | temporary files (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        count = "" if r["m"] == args.connections else f" ({r['m']:,})"
        print(f"| {name} | {r['idle']:.1f} | {r['held']:.1f}{count} | {r['per_conn']:.2f} "
              f"({ratio_note(per_conn, name)}) | {r['s_held']:.1f} | {r['per_stream']:.1f} "
              f"({ratio_note(per_stream, name)}) | {r['answered']:,} / {r['resets']:,} | {r['at_origin']:,} | "
              f"{r['spooled'] / MIB:.0f} |")
    if "tern" in rows and len(rows) > 1:
        peers = [n for n in rows if n != "tern"]
        bc = min(peers, key=lambda n: per_conn[n])
        bs = min(peers, key=lambda n: per_stream[n])
        print(f"\ntern / best peer: per idle connection {ratio(per_conn['tern'], per_conn[bc])} ({bc}), "
              f"per stream not read {ratio(per_stream['tern'], per_stream[bs])} ({bs})")


if __name__ == "__main__":
    main()
