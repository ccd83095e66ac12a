#!/usr/bin/env python3
"""HTTP/2 and gRPC (issue 17), Tern beside nginx and HAProxy in one run, each proxy on one core (CPU 0: `tern proxy
--cores 1`, nginx `worker_processes 1`, HAProxy `nbthread 1`) in front of the same HTTP/2 origin; the load and the
origins on CPU 1. Proxy CPU is read from /proc (user + system, all of its processes) around each measurement and
divided by the requests done.

    python3 Benchmarks/http2.py [--only tern,nginx,haproxy] [--seconds 5] [--rounds 3] [--skip-grpc]
                                [--scenarios h2-h1,h2-h2,h1-h2,h1-h1,h2tls-h1,h2-h1-tl]

Scenarios (Benchmarks/README.md, "HTTP/2 and gRPC", says what each means), the origin answering 1 KiB:
  h2-h1    h2load over h2c (prior knowledge), 10 connections x 5 streams (`-c10 -m5`), to the proxy, which speaks
           HTTP/1.1 to an nginx origin: requests/s, proxy CPU per request, mean request time
  h2-h2    the same load; the proxy speaks h2c to the origin (`listen ... http2`)
  h1-h2    wrk over HTTP/1.1, 32 connections, to the proxy, which speaks h2c to the origin
  h1-h1    the same wrk load, HTTP/1.1 on both sides (the figure h1-h2 is read beside)
  h2tls-h1 as h2-h1, but h2 over TLS (ALPN) to the proxy (ECDSA P-256, Tests/Fixtures/tls/make-certs.sh; one
           handshake per connection, then the same 10 x 5 streams)
  h2-h1-tl as h2-h1, with tern-load --h2 (`-c 10 --streams 5`, closed loop) as the load instead of h2load: its
           req/s and p50 beside h2load's for the same proxies
  grpc     h2load sending gRPC unary calls (a 100-byte message) at 1,000 calls/s for 5 s over one connection, up
           to 100 in flight, to a grpcio server (on the load's CPU) through each proxy and directly: p50 and p99 of
           the call time as h2load measures it (from when it sends a call), and the latency each proxy adds; one
           grpcio call through each proxy first checks the path (h2load does not read gRPC's status)

Peers: nginx proxies HTTP/2 upstreams with `grpc_pass` (its only HTTP/2 client; it forwards any request as HTTP/2),
HAProxy with `proto h2` on the server line. Needs h2load and wrk (`bash Tools/scripts/setup.sh --bench`),
grpcio (the gRPC server), and a release build (.build/release/tern).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import proxies  # noqa: E402

PROXY_CPU, LOAD_CPU = "0", "1"


def nginx_conf(d, body):
    return f"""daemon off; master_process on; worker_processes 1;
worker_rlimit_nofile {proxies.nofile_limit()};
pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off; tcp_nodelay on; keepalive_requests 100000000; keepalive_timeout 300s;
    http2_max_requests 100000000; http2_max_concurrent_streams 1000;
{proxies._nginx_paths(d)}
{body}
}}
"""


def run_nginx(d, port):
    p = proxies.spawn(LOAD_CPU if "origin" in d else PROXY_CPU,
                      ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies.wait_listening(port, p)
    return p


def start_origins(work):
    """nginx on CPU 1: 1 KiB on every path, over h2c on one port and HTTP/1.1 on another."""
    d = os.path.join(work, "origin")
    os.makedirs(d)
    h2, h1 = proxies.free_port(), proxies.free_port()
    answer = f'location / {{ return 200 "{"s" * 1024}"; }}'
    open(f"{d}/nginx.conf", "w").write(nginx_conf(d, f"""
    server {{ listen 127.0.0.1:{h2} http2; {answer} }}
    server {{ listen 127.0.0.1:{h1}; {answer} }}"""))
    return run_nginx(d, h2), h2, h1


def mesh(work, port, protocol):
    path = os.path.join(work, f"mesh-{port}-{protocol}.yaml")
    open(path, "w").write(f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: origin}}
spec:
  hosts: [origin]
  ports: [{{number: 80, name: p, protocol: {protocol}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{p: {port}}}}}]
""")
    return path


def make_certs(work):
    d = os.path.join(work, "certs")
    if not os.path.exists(d):
        subprocess.run(["bash", os.path.join(proxies.ROOT, "Tests/Fixtures/tls/make-certs.sh"), d], check=True,
                       capture_output=True)
        with open(os.path.join(d, "server-combined.pem"), "w") as f:
            f.write(open(os.path.join(d, "server-chain.crt")).read() + open(os.path.join(d, "server.key")).read())
    return d


def start_tern(work, origin, protocol, certs=None):
    port = proxies.free_port()
    log = open(os.path.join(work, "tern.log"), "ab")
    tls = ["--tls-cert", f"{certs}/server-chain.crt", "--tls-key", f"{certs}/server.key"] if certs else []
    p = proxies.spawn(PROXY_CPU, [proxies.TERN, "proxy", "--http", "--cores", "1", "--listen", f"127.0.0.1:{port}",
                                  "--config", mesh(work, origin, protocol), "--admin", "off", "--health", "off",
                                  "--prometheus", "off", "--max-pending-requests", "100000", *tls], stderr=log)
    proxies.wait_listening(port, p)
    return p, port


def start_nginx(work, origin, protocol, front_h2, certs=None):
    d = os.path.join(work, f"nginx-{time.monotonic_ns()}")
    os.makedirs(d)
    port = proxies.free_port()
    if protocol == "HTTP":
        to = f"proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\";"
    else:
        to = "grpc_pass grpc://origin;"
    tls = (f"ssl_certificate {certs}/server-chain.crt; ssl_certificate_key {certs}/server.key; ssl_session_tickets on;"
           if certs else "")
    open(f"{d}/nginx.conf", "w").write(nginx_conf(d, f"""
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; keepalive_requests 100000000; keepalive_timeout 300s; }}
    server {{ listen 127.0.0.1:{port}{" ssl" if certs else ""}{" http2" if front_h2 else ""}; {tls} location / {{ {to} }} }}"""))
    return run_nginx(d, port), port


def start_haproxy(work, origin, protocol, front_h2, certs=None):
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
    bind 127.0.0.1:{port}{f" ssl crt {certs}/server-combined.pem alpn h2,http/1.1" if certs else " proto h2" if front_h2 else ""}
    default_backend origin
backend origin
    server origin 127.0.0.1:{origin}{" proto h2" if protocol != "HTTP" else ""}
""")
    p = proxies.spawn(PROXY_CPU, ["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies.wait_listening(port, p)
    return p, port


def start(name, work, origin, protocol, front_h2, certs=None):
    if name == "tern":
        return start_tern(work, origin, protocol, certs)
    if name == "nginx":
        return start_nginx(work, origin, protocol, front_h2, certs)
    return start_haproxy(work, origin, protocol, front_h2, certs)


def h2load(port, seconds, pid, tls=False):
    """h2load over h2c (or h2 over TLS) for `seconds` after 1 s of warm-up (which it does not count): requests/s,
    answered, failed, mean request time (ms), and the proxy's CPU seconds over the counted part only."""
    url = f"https://localhost:{port}/" if tls else f"http://127.0.0.1:{port}/"
    p = subprocess.Popen(["taskset", "-c", LOAD_CPU, "h2load", "-c", "10", "-m", "5", "-D", str(seconds),
                          "--warm-up-time", "1", "-H", ":authority: origin", url],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(1)
    before = proxies.cpu_seconds(pid)
    out = p.communicate(timeout=seconds + 60)[0]
    cpu = proxies.cpu_seconds(pid) - before
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1)
    return rps, int(done.group(2)), int(done.group(3)), to_ms(mean), cpu


def h2load_tls(port, seconds, pid):
    return h2load(port, seconds, pid, tls=True)


def ternload(port, seconds, pid):
    """tern-load --h2 with h2load's shape (10 connections x 5 streams, closed loop) for `seconds` after 1 s of
    warm-up: requests/s, answered, failed, p50 (ms; tern-load reports percentiles, not a mean), proxy CPU over the
    measured part."""
    import json
    p = subprocess.Popen(["taskset", "-c", LOAD_CPU, proxies.TERN_LOAD, "--json", "--h2", "--connections", "10",
                          "--streams", "5", "--cores", "1", "--warmup", "1s", "--duration", f"{seconds}s",
                          "--header", "Host: origin", f"http://127.0.0.1:{port}/"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(1)
    before = proxies.cpu_seconds(pid)
    out = p.communicate(timeout=seconds + 60)[0]
    cpu = proxies.cpu_seconds(pid) - before
    doc = json.loads(out)
    failed = sum(doc["errors"][k] for k in ("connect", "timeout", "reset", "status_4xx", "status_5xx"))
    return doc["requests_per_second"], doc["requests"], failed, doc["latency_us"]["p50"] / 1000, cpu


def wrk(port, seconds, pid):
    """wrk over HTTP/1.1 for `seconds` (no warm-up): as `h2load`, CPU over the whole run."""
    before = proxies.cpu_seconds(pid)
    out = subprocess.run(["taskset", "-c", LOAD_CPU, "wrk", "-t", "1", "-c", "32", "-d", f"{seconds}s",
                          "-H", "Host: origin", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    cpu = proxies.cpu_seconds(pid) - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    mean = re.search(r"Latency\s+(\S+)", out).group(1)
    return rps, total, int(bad.group(1)) if bad else 0, to_ms(mean), cpu


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    n = float(m.group(1))
    return n / 1000 if m.group(2) == "us" else n * 1000 if m.group(2) == "s" else n


def grpc_open_loop(work, port, seconds=5, rate=1000):
    """h2load sending gRPC unary calls open loop at `rate` a second over one connection: p50 and p99 of the call
    time in ms (from h2load's per-request log), and the calls that did not answer 200."""
    body = os.path.join(work, "grpc-body")
    with open(body, "wb") as f:
        f.write(b"\x00\x00\x00\x00\x64" + b"x" * 100)
    log = os.path.join(work, f"grpc-{port}.log")
    if os.path.exists(log):
        os.unlink(log)  # (h2load appends)
    # Up to 100 calls in flight, so a slow call does not hold the next ones back (h2load still times a call from
    # when it sends it).
    subprocess.run(["taskset", "-c", LOAD_CPU, "h2load", "-c", "1", "-m", "100", "--rps", str(rate), "-D", str(seconds),
                    "--warm-up-time", "1", "-d", body, "-H", ":authority: origin", "-H", "content-type: application/grpc",
                    "-H", "te: trailers", "--log-file", log, f"http://127.0.0.1:{port}/bench.Echo/Unary"],
                   capture_output=True, text=True, timeout=seconds + 60)
    rows = [line.split("\t") for line in open(log).read().splitlines() if line.strip()]
    times = sorted(int(r[2]) / 1000 for r in rows)
    bad = sum(1 for r in rows if r[1] != "200")
    return times[len(times) // 2], times[int(len(times) * 0.99)], bad


def grpc_check(port):
    """One call through with grpcio, which reads the status in the trailers (h2load does not): the path works."""
    import grpc
    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.default_authority", "origin"),
                                                             ("grpc.enable_http_proxy", 0)])
    try:
        assert ch.unary_unary("/bench.Echo/Unary")(b"check", timeout=10) == b"check"
    finally:
        ch.close()


def grpc_server():
    import grpc
    from concurrent import futures
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Unary": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="tern,nginx,haproxy")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-grpc", action="store_true")
    ap.add_argument("--scenarios", default="h2-h1,h2-h2,h1-h2,h1-h1,h2tls-h1,h2-h1-tl",
                    help="which of h2-h1, h2-h2, h1-h2, h1-h1, h2tls-h1, h2-h1-tl to run")
    args = ap.parse_args()
    names = args.only.split(",")
    # This process runs the gRPC server's threads: with the load, on the load's CPU.
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    work = tempfile.mkdtemp(prefix="tern-h2-bench-")
    os.chmod(work, 0o755)
    origin, h2port, h1port = start_origins(work)
    results = {}
    try:
        certs = make_certs(work) if "h2tls-h1" in args.scenarios.split(",") else None
        for scenario, protocol, front_h2, load, port in [("h2-h1", "HTTP", True, h2load, h1port),
                                                        ("h2-h2", "HTTP2", True, h2load, h2port),
                                                        ("h1-h2", "HTTP2", False, wrk, h2port),
                                                        ("h1-h1", "HTTP", False, wrk, h1port),
                                                        ("h2tls-h1", "HTTP", True, h2load_tls, h1port),
                                                        ("h2-h1-tl", "HTTP", True, ternload, h1port)]:
            if scenario not in args.scenarios.split(","):
                continue
            for r in range(args.rounds):
                for name in names:
                    p, pport = start(name, work, port, protocol, front_h2, certs if scenario == "h2tls-h1" else None)
                    try:
                        rps, ok, failed, mean, cpu = load(pport, args.seconds, p.pid)
                        results.setdefault((scenario, name), []).append((rps, cpu * 1e6 / max(ok, 1), mean, failed))
                        print(f"{scenario} round {r + 1} {name}: {rps:,.0f} req/s, {cpu * 1e6 / max(ok, 1):.1f} us CPU/req, "
                              f"mean {mean:.2f} ms, {failed} failed", flush=True)
                    finally:
                        proxies.stop(p)
        if not args.skip_grpc:
            server, gport = grpc_server()
            try:
                for r in range(args.rounds):
                    p50, p99, bad = grpc_open_loop(work, gport)
                    results.setdefault(("grpc", "direct"), []).append((p50, p99, bad))
                    print(f"grpc round {r + 1} direct: p50 {p50:.3f} ms, p99 {p99:.3f} ms ({bad} not 200)", flush=True)
                    for name in names:
                        p, pport = start(name, work, gport, "GRPC", True)
                        try:
                            grpc_check(pport)
                            p50, p99, bad = grpc_open_loop(work, pport)
                            results.setdefault(("grpc", name), []).append((p50, p99, bad))
                            print(f"grpc round {r + 1} {name}: p50 {p50:.3f} ms, p99 {p99:.3f} ms ({bad} not 200)", flush=True)
                        finally:
                            proxies.stop(p)
            finally:
                server.stop(0)
    finally:
        proxies.stop(origin)
    print("\nmedians over rounds")
    for (scenario, name), rows in sorted(results.items()):
        cols = list(zip(*rows))
        if scenario == "grpc":
            direct = results.get(("grpc", "direct"))
            d50 = statistics.median(r[0] for r in direct) if direct else 0
            d99 = statistics.median(r[1] for r in direct) if direct else 0
            p50, p99 = statistics.median(cols[0]), statistics.median(cols[1])
            added = "" if name == "direct" else f"  added p50 {p50 - d50:+.3f} ms  p99 {p99 - d99:+.3f} ms"
            print(f"{scenario:6} {name:8} p50 {p50:.3f} ms  p99 {p99:.3f} ms  not 200 {max(cols[2])}{added}")
        else:
            print(f"{scenario:6} {name:8} {statistics.median(cols[0]):>10,.0f} req/s  {statistics.median(cols[1]):6.1f} us CPU/req  "
                  f"mean {statistics.median(cols[2]):.2f} ms  failed {max(cols[3])}")
    for scenario in ["h2-h1", "h2-h2", "h1-h2", "h1-h1", "h2tls-h1", "h2-h1-tl"]:
        t = results.get((scenario, "tern"))
        for peer in ["nginx", "haproxy"]:
            q = results.get((scenario, peer))
            if t and q:
                tc, qc = statistics.median(r[1] for r in t), statistics.median(r[1] for r in q)
                tr, qr = statistics.median(r[0] for r in t), statistics.median(r[0] for r in q)
                print(f"{scenario}: tern/{peer} CPU per request {tc / qc:.2f}, requests/s {tr / qr:.2f}")


if __name__ == "__main__":
    main()
