#!/usr/bin/env python3
"""A large upload through `tern proxy --http` in bounded memory (issue: HTTP/1.1 proxying).

Sends one request with a Content-Length body of --gib GiB (default 10) through Tern to an upstream that
reads and discards it, samples Tern's resident memory every 100 ms, and reports throughput, Tern's CPU time
per GB and its peak resident memory (VmHWM). Bodies are streamed with one receive buffer in flight per
direction, so the peak must not grow with the body: compare --gib 1 and --gib 10.

    python3 Benchmarks/http-upload.py [--gib 10] [--tern .build/release/tern] [--io-backend io_uring]
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--gib", type=float, default=10)
p.add_argument("--tern", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "tern"))
p.add_argument("--io-backend", default="auto")
args = p.parse_args()
total = int(args.gib * (1 << 30))

# Upstream: reads the head, then exactly Content-Length bytes, and answers with the count.
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
received = []


def upstream():
    conn, _ = listener.accept()
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += conn.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    got = len(rest)
    view = bytearray(1 << 20)
    while got < length:
        n = conn.recv_into(view)
        if n == 0:
            break
        got += n
    received.append(got)
    body = str(got).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    time.sleep(0.5)
    conn.close()


threading.Thread(target=upstream, daemon=True).start()
cmd = [args.tern, "proxy", "--http", "--cores", "1", "--io-backend", args.io_backend, "--listen", "127.0.0.1:0",
       "--upstream", "127.0.0.1:%d" % listener.getsockname()[1]]
tern = subprocess.Popen(cmd, stderr=subprocess.PIPE)
port = None
while port is None:
    line = tern.stderr.readline().decode()
    if not line:
        sys.exit("tern did not start")
    m = re.search(r"listening kind=http addr=\S+:(\d+)", line)
    if m:
        port = int(m.group(1))


def status(field):
    with open("/proc/%d/status" % tern.pid) as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])  # kB


def cpu_seconds():
    with open("/proc/%d/stat" % tern.pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


idle_rss = status("VmRSS:")
samples = []
stop = threading.Event()


def sample():
    while not stop.is_set():
        samples.append(status("VmRSS:"))
        time.sleep(0.1)


threading.Thread(target=sample, daemon=True).start()
cpu0 = cpu_seconds()
start = time.time()
c = socket.create_connection(("127.0.0.1", port))
c.sendall(b"POST /upload HTTP/1.1\r\nHost: sink\r\nContent-Length: %d\r\n\r\n" % total)
block = memoryview(b"\x5a" * (1 << 20))
sent = 0
while sent < total:
    n = min(len(block), total - sent)
    c.sendall(block[:n])
    sent += n
response = b""
while b"\r\n\r\n" not in response or not response.rstrip().endswith(str(total).encode()):
    data = c.recv(65536)
    if not data:
        break
    response += data
elapsed = time.time() - start
cpu = cpu_seconds() - cpu0
stop.set()
peak = status("VmHWM:")
tern.terminate()
tern.wait(10)
ok = response.startswith(b"HTTP/1.1 200") and received == [total]
gb = total / 1e9
print("upload %.1f GiB through tern (%s): %s" % (args.gib, args.io_backend, "ok" if ok else "FAILED %r" % response[:200]))
print("  throughput      %.2f GB/s (%.1f s)" % (gb / elapsed, elapsed))
print("  tern CPU        %.3f s per GB" % (cpu / gb))
print("  tern RSS        idle %.1f MiB, max sampled %.1f MiB, peak (VmHWM) %.1f MiB" % (
    idle_rss / 1024, max(samples) / 1024, peak / 1024))
sys.exit(0 if ok else 1)
