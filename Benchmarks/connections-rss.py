#!/usr/bin/env python3
"""Resident memory with many client connections held open (issue 15), Tern beside nginx and HAProxy: each proxy
(two cores each: `tern proxy --http --cores 2`, nginx `worker_processes 2`, HAProxy `nbthread 2`) in front of
the same nginx origin, measured idle, then with N slow request heads (each connection sent 41 bytes of a head
and waits; every proxy's head deadline raised to 120 s so none is closed meanwhile), then, in a fresh process,
with M idle keep-alive connections (each served one request). RSS is the proxy's processes together (nginx's
master and workers).

    python3 Benchmarks/connections-rss.py [N] [M] [--only tern,nginx,haproxy]   (defaults 5000 and 10000)

Needs nginx and haproxy (`bash Tools/scripts/setup.sh --bench`) and a release build (.build/release/tern). The
descriptor limit is raised to 65,536 where the hard limit allows; HAProxy reserves two descriptors per
connection, so under a lower hard limit (20,000 on the lab machine) it holds at most (limit - 200) / 2 and is
measured with that many idle connections (the row says how many).
"""
import os
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import proxies  # noqa: E402


def hold(port, kind, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if kind == "slow":
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        else:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    if kind == "idle":
        answered = sum(s.recv(4096).startswith(b"HTTP/1.1 200") for s in socks)
        assert answered == n, answered
    return socks


def measure(name, work, origin, kind, n):
    proc, port = proxies.PROXIES[name](work, origin, None, cores=2, header_timeout="120s")
    time.sleep(0.5)
    idle = proxies.rss_mib(proc.pid)
    socks = hold(port, kind, n)
    time.sleep(1.0)
    held = proxies.rss_mib(proc.pid)
    for s in socks:
        s.close()
    proxies.stop(proc)
    return idle, held


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--only")]
    only = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--only=")), "tern,nginx,haproxy")
    n_slow = int(args[0]) if len(args) > 0 else 5000
    n_idle = int(args[1]) if len(args) > 1 else 10000
    proxies.raise_nofile()
    for tool in ("nginx", "haproxy"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} missing: run bash Tools/scripts/setup.sh --bench")
    if not os.access(proxies.TERN, os.X_OK):
        sys.exit("no .build/release/tern: swift build -c release --static-swift-stdlib")
    work = tempfile.mkdtemp(prefix="tern-rss.")
    os.chmod(work, 0o755)
    origin_proc, origin = proxies.start_origin(work, None)
    try:
        print(f"Resident memory, two cores each, descriptor limit {proxies.nofile_limit():,} "
              f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
        print("| proxy | idle (MiB) | with slow heads (MiB) | with idle keep-alive connections (MiB) |")
        print("| --- | --- | --- | --- |")
        for name in only.split(","):
            idle, slow = measure(name, work, origin, "slow", n_slow)
            m = min(n_idle, proxies.haproxy_maxconn() - 100) if name == "haproxy" else n_idle
            _, kept = measure(name, work, origin, "idle", m)
            print(f"| {name} | {idle:.1f} | {slow:.1f} ({n_slow:,}) | {kept:.1f} ({m:,}) |", flush=True)
    finally:
        proxies.stop(origin_proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
