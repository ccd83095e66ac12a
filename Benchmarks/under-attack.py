#!/usr/bin/env python3
"""A normal client's latency while an attacker holds connections open (issue 15): Tern, nginx and HAProxy, one
at a time on CPU 0 in front of the same nginx origin on CPU 1, each measured quiet and then while 5,000
slowloris connections (a request head sent one header line every 5 s, never finished) and 5,000 idle keep-alive
connections (one request each, then silence) sit on its listener. The normal client is tern-load, open loop at
1,000 requests/s over 10 connections for 10 s, on CPU 1 beside the attacker and the origin. Rounds alternate the
proxies; the table gives medians over the rounds of each run's p99 (and p50, max), the attack's cost, and the
proxy's resident memory under attack. The first row, `direct`, is the rig's control: tern-load measures the
origin itself, quiet and while the same attack is on Tern, so what the attack costs the measuring client and
the origin on CPU 1 shows without any proxy in the measured path.

    python3 Benchmarks/under-attack.py [--rounds 5] [--slow 4900] [--idle 4900] [--duration 10s] [--json FILE]

(4,900 + 4,900 rather than 5,000 + 5,000: HAProxy reserves two descriptors per connection, so under a hard
limit of 20,000 it holds 9,900 connections at most, and the measuring client must fit beside the attack.)

Needs nginx, haproxy (`bash Tools/scripts/setup.sh --bench`), a release build (.build/release/tern and tern-load)
and root (or a hard descriptor limit of 65,536) so the proxies and the attacker can hold the connections.

Every proxy is given what the attack needs and the same deadlines, as stated in the report: a descriptor limit
of 65,536; nginx `worker_connections 30000`, HAProxy `maxconn 30000` (Tern sizes itself from the limit); a
request head must arrive within 10 s (Tern's default `--request-header-timeout`; nginx `client_header_timeout
10s`, which nginx counts between reads, so a trickling head is kept; HAProxy `timeout http-request 10s`);
keep-alive connections stay 300 s or more (Tern's 1 h default; nginx `keepalive_timeout 300s`; HAProxy `timeout
http-keep-alive 300s`). The attacker reopens every connection a proxy closes, so the attack stays whole, and
opens (and reopens) at most 2,000 connections a second at idle priority (SCHED_IDLE), so its work on CPU 1
is spread rather than a storm of reconnects every 10 s, and yields to the measuring client beside it. The CPU time the proxy and the
attacker spend during each measurement is reported beside the latencies.
"""
import argparse
import collections
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import proxies  # noqa: E402
from proxies import raise_nofile  # noqa: E402

PROXY_CPU, OTHER_CPU = "0", "1"
OPEN_RATE = 2000


# --- The attacker (a child process: python3 under-attack.py --attacker PORT SLOW IDLE) ---------------------

def attacker(port, n_slow, n_idle):
    """Holds n_slow slowloris and n_idle idle keep-alive connections on 127.0.0.1:port, reopening any the proxy
    closes; prints `ready` once all are open (and the idle ones answered), then statistics on SIGTERM. Its work
    is per event (a deque orders the trickle), so it costs the shared CPU little while the attack holds."""
    raise_nofile()
    # The attacker runs at idle priority (SCHED_IDLE): on this 2-core rig it shares CPU 1 with the measuring
    # client and the origin, and its own work (reopening, trickling) must not delay them; what the attack costs
    # the proxy is what is measured. The `direct` row shows what it still costs the rig.
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    sel = selectors.DefaultSelector()
    stats = {"reopened": 0, "slow_answered": 0, "slow_closed": 0, "idle_closed": 0, "refused": 0}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    conns = {}  # socket -> [kind, phase]; phase: connecting, sent (head started or request sent), idle (answered)
    trickle = collections.deque()  # (due, socket) in due order: slow connections' next header line
    settled = [0]  # slow connections with their head started plus idle ones answered

    def open_one(kind):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        conns[s] = [kind, "connecting"]
        sel.register(s, selectors.EVENT_WRITE)

    def reopen(s):
        kind, phase = conns.pop(s)
        if (kind, phase) in (("slow", "sent"), ("idle", "idle")):
            settled[0] -= 1
        sel.unregister(s)
        s.close()
        stats["reopened"] += 1
        to_open.append(kind)

    # Connections are opened (and reopened) at most OPEN_RATE a second: opened all at once, the slow heads'
    # deadlines would all fall due together, and the attacker's reconnect storms would take CPU 1 from the
    # measuring client in bursts (measuring the attacker, not the proxy).
    to_open = collections.deque("slow" if i < n_slow else "idle" for i in range(n_slow + n_idle))
    tokens, last = 0.0, time.monotonic()
    ready = False
    while not stop:
        now = time.monotonic()
        tokens = min(tokens + (now - last) * OPEN_RATE, OPEN_RATE / 20)
        last = now
        while to_open and tokens >= 1:
            open_one(to_open.popleft())
            tokens -= 1
        for key, ev in sel.select(0.05):
            s = key.fileobj
            c = conns.get(s)
            if c is None:
                continue
            if c[1] == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    stats["refused"] += 1
                    reopen(s)
                    continue
                try:
                    s.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n" if c[0] == "slow" else b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    reopen(s)
                    continue
                c[1] = "sent"
                if c[0] == "slow":
                    settled[0] += 1
                    trickle.append((time.monotonic() + 5, s))
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                stats[f"{c[0]}_closed"] += 1  # closed (FIN or reset) without an answer
                reopen(s)
            elif c[0] == "slow":
                stats["slow_answered"] += 1  # a 408: the proxy ended the head; start again
                reopen(s)
            elif c[1] == "sent":
                c[1] = "idle"
                settled[0] += 1
        now = time.monotonic()
        while trickle and trickle[0][0] <= now:
            _, s = trickle.popleft()
            if conns.get(s, [None, None])[1] != "sent":
                continue  # closed and reopened meanwhile
            try:
                s.send(b"X-a: b\r\n")
                trickle.append((now + 5, s))
            except OSError:
                reopen(s)
        if not ready and settled[0] == n_slow + n_idle:
            ready = True
            print("ready", flush=True)
    print(json.dumps({**stats, "open": len(conns), "settled": settled[0]}), flush=True)


# --- Measurement ---------------------------------------------------------------------------------------------

def load(port, duration, rate):
    r = subprocess.run(["taskset", "-c", OTHER_CPU, proxies.TERN_LOAD,
                        "--rate", str(rate), "--connections", "10", "--duration", duration, "--warmup", "1s",
                        "--json", f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"tern-load failed: {r.stderr[-500:]}")
    v = json.loads(r.stdout)
    errors = v["errors"] if isinstance(v["errors"], int) else sum(v["errors"].values())
    return {"p50": v["latency_us"]["p50"], "p99": v["latency_us"]["p99"], "max": v["latency_us"]["max"],
            "requests": v["requests"], "errors": errors}


def run(name, work, origin, args):
    """One proxy, quiet then attacked. `direct` is the rig's control: the attacker attacks Tern while tern-load
    measures the origin itself, so what the attack costs the measuring client and the origin on CPU 1 shows
    without any proxy in the measured path."""
    direct = name == "direct"
    proc, port = proxies.PROXIES["tern" if direct else name](work, origin, PROXY_CPU)
    measured = origin if direct else port
    try:
        cpu = proxies.cpu_seconds(proc.pid)
        quiet = load(measured, args.duration, args.rate)
        quiet["proxy_cpu_s"] = proxies.cpu_seconds(proc.pid) - cpu
        att = subprocess.Popen(["taskset", "-c", OTHER_CPU, sys.executable, os.path.abspath(__file__), "--attacker",
                                str(port), str(args.slow), str(args.idle)], stdout=subprocess.PIPE, text=True)
        try:
            line = att.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"the attacker did not get its connections open on {name}: {line!r}")
            time.sleep(1)
            rss = proxies.rss_mib(proc.pid)
            cpu, cpu_attacker = proxies.cpu_seconds(proc.pid), proxies.cpu_seconds(att.pid)
            attacked = load(measured, args.duration, args.rate)
            attacked["proxy_cpu_s"] = proxies.cpu_seconds(proc.pid) - cpu
            attacked["attacker_cpu_s"] = proxies.cpu_seconds(att.pid) - cpu_attacker
        finally:
            att.terminate()
            stats = json.loads(att.stdout.readline() or "{}")
            att.wait(30)
        attacked["rss_mib"] = rss
        attacked["attacker"] = stats
        return quiet, attacked
    finally:
        proxies.stop(proc)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--attacker":
        attacker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slow", type=int, default=4900)
    ap.add_argument("--idle", type=int, default=4900)
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--only", default="direct,tern,nginx,haproxy",
                    help="rows: direct (the control: no proxy measured, the attack on Tern), tern, nginx, haproxy")
    ap.add_argument("--json", help="write every run's figures here")
    args = ap.parse_args()
    names = args.only.split(",")
    for tool in ("nginx", "haproxy", "taskset"):
        if "haproxy" not in names and tool == "haproxy":
            continue
        if shutil.which(tool) is None:
            sys.exit(f"{tool} missing: run bash Tools/scripts/setup.sh --bench")
    for f in (proxies.TERN, proxies.TERN_LOAD):
        if not os.access(f, os.X_OK):
            sys.exit(f"no {f}: swift build -c release --static-swift-stdlib")
    raise_nofile()
    work = tempfile.mkdtemp(prefix="tern-attack.")
    os.chmod(work, 0o755)
    origin_proc, origin = proxies.start_origin(work, OTHER_CPU)
    results = {n: [] for n in names}
    try:
        for r in range(args.rounds):
            for n in names:
                quiet, attacked = run(n, work, origin, args)
                results[n].append({"quiet": quiet, "attack": attacked})
                print(f"round {r + 1} {n}: quiet p99 {quiet['p99']} us, under attack p99 {attacked['p99']} us "
                      f"(errors {quiet['errors']}/{attacked['errors']}, rss {attacked['rss_mib']:.1f} MiB, "
                      f"attacker {attacked['attacker']})", file=sys.stderr, flush=True)
    finally:
        proxies.stop(origin_proc)
        shutil.rmtree(work, ignore_errors=True)

    def med(n, phase, key):
        return statistics.median(x[phase][key] for x in results[n])
    print(f"Under attack: {args.slow:,} slowloris + {args.idle:,} idle keep-alive connections; tern-load --rate "
          f"{args.rate} --connections 10 --duration {args.duration}; medians of {args.rounds} rounds "
          f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print("| proxy | quiet p50 / p99 / max (µs) | attacked p50 / p99 / max (µs) | p99 attacked ÷ quiet | errors | "
          "RSS attacked (MiB) | proxy CPU quiet / attacked (s) | attacker CPU (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in names:
        q = [med(n, "quiet", k) for k in ("p50", "p99", "max")]
        a = [med(n, "attack", k) for k in ("p50", "p99", "max")]
        errors = sum(x["quiet"]["errors"] + x["attack"]["errors"] for x in results[n])
        print(f"| {n} | {q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f} | {a[0]:.0f} / {a[1]:.0f} / {a[2]:.0f} | "
              f"{a[1] / q[1]:.2f} | {errors} | {med(n, 'attack', 'rss_mib'):.1f} | "
              f"{med(n, 'quiet', 'proxy_cpu_s'):.2f} / {med(n, 'attack', 'proxy_cpu_s'):.2f} | "
              f"{med(n, 'attack', 'attacker_cpu_s'):.2f} |")
    if "tern" in names:
        q99, a99 = med("tern", "quiet", "p99"), med("tern", "attack", "p99")
        bound = max(2 * q99, q99 + 1000)
        peers = [med(n, "attack", "p99") for n in names if n not in ("tern", "direct")]
        print(f"\nTern's attacked p99 {a99:.0f} µs against the bound max(2 × quiet, quiet + 1 ms) = {bound:.0f} µs: "
              f"{'met' if a99 <= bound else 'NOT met'}" +
              (f"; best peer's attacked p99 {min(peers):.0f} µs: {'met' if a99 <= min(peers) else 'NOT met'}" if peers else ""))
    if args.json:
        json.dump(results, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
