#!/usr/bin/env python3
"""Tern's resident memory with many client connections held open (issue 15): idle, then with N slow request heads
(each connection sent 41 bytes of a head and waits), then, in a fresh process, with N idle keep-alive
connections (each served one request). Tern only: the peers' figures beside these are still to be measured.

    python3 Benchmarks/connections-rss.py [TERN_BIN] [N]     (defaults: .build/release/tern, 5000 and 10000)

Needs nginx (the origin; `bash Tools/scripts/setup.sh --bench`) and a descriptor limit of about 2N + 1,000.
"""
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TERN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build/release/tern")
N = int(sys.argv[2]) if len(sys.argv) > 2 else 0
ORIGIN, LISTEN = 18180, 18181


def rss_mib(pid):
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) / 1024


def start_tern(extra):
    t = subprocess.Popen([TERN, "proxy", "--http", "--cores", "2", "--listen", f"127.0.0.1:{LISTEN}", "--upstream",
                          f"127.0.0.1:{ORIGIN}", "--admin", "off", "--health", "off", "--prometheus", "off", *extra],
                         stderr=subprocess.PIPE)
    while b"listening kind=http" not in t.stderr.readline():
        pass
    time.sleep(0.5)
    return t


def measure(kind, n):
    t = start_tern(["--request-header-timeout", "120s"])
    idle = rss_mib(t.pid)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", LISTEN), timeout=10)
        if kind == "slow":
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        else:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    if kind == "idle":
        answered = sum(s.recv(4096).startswith(b"HTTP/1.1 200") for s in socks)
        assert answered == n, answered
    time.sleep(1.0)
    held = rss_mib(t.pid)
    for s in socks:
        s.close()
    t.terminate()
    t.wait(10)
    return idle, held


def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    work = tempfile.mkdtemp(prefix="tern-rss.")
    conf = os.path.join(work, "nginx.conf")
    open(conf, "w").write(f"""worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{ORIGIN}; location / {{ return 200 "hello"; }} }} }}
""")
    nginx = subprocess.Popen(["nginx", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        print(f"Tern ({TERN}), --http --cores 2, resident memory ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
        print("| connections held | idle before (MiB) | with them (MiB) |")
        print("| --- | --- | --- |")
        for kind, n in (("slow", N or 5000), ("idle", N or 10000)):
            idle, held = measure(kind, n)
            label = f"{n:,} slow heads (41 bytes each)" if kind == "slow" else f"{n:,} idle keep-alive (one request each)"
            print(f"| {label} | {idle:.1f} | {held:.1f} |")
    finally:
        nginx.terminate()


if __name__ == "__main__":
    main()
