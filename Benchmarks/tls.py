#!/usr/bin/env python3
"""TLS (issue 16), Tern beside nginx, HAProxy and Caddy in one run, each proxy on one core (CPU 0: `tern proxy
--cores 1`, nginx `worker_processes 1`, HAProxy `nbthread 1`, Caddy `GOMAXPROCS=1`) terminating TLS with the same
ECDSA P-256 certificate (Tests/Fixtures/tls/make-certs.sh) in front of the same plaintext nginx origin; the load
(tern-load, curl, Python) and the origin on CPU 1. Proxy CPU is read from /proc (user + system, all of its
processes) around each measurement and divided by what was done.

    python3 Benchmarks/tls.py [--only tern,nginx,haproxy,caddy] [--seconds 5] [--idle 10000] [--skip-idle]

Scenarios (docs/tls.md and Benchmarks/README.md, "TLS", say what each means):
  full      a new TLS 1.3 connection per request, full handshake (tern-load --reconnect --no-resume, 8 at once)
  resumed   a new connection per request resuming the previous one's ticket (tern-load --reconnect)
  keepalive 32 keep-alive TLS connections, closed loop: CPU per request and p99
  bulk      one 1 GiB download through TLS (curl): Gbit/s and proxy CPU per GB
  idle      N idle TLS connections (each made one request): the proxy's resident memory
  tern only: idle RSS with and without a TLS listener; CPU per full handshake at --cores 2 against --cores 1;
  mTLS origination (plaintext in, MUTUAL to a TLS origin, pooled) against nginx proxy_pass https with a client
  certificate.

Needs nginx, haproxy, caddy (`bash Tools/scripts/setup.sh --bench`) and a release build (.build/release/tern and
tern-load).
"""
import json
import statistics
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import proxies  # noqa: E402

PROXY_CPU, LOAD_CPU = "0", "1"


def make_certs(work):
    d = os.path.join(work, "certs")
    subprocess.run(["bash", os.path.join(proxies.ROOT, "Tests/Fixtures/tls/make-certs.sh"), d], check=True)
    with open(os.path.join(d, "server-combined.pem"), "w") as f:
        f.write(open(os.path.join(d, "server-chain.crt")).read() + open(os.path.join(d, "server.key")).read())
    return d


def start_origin(work):
    """Plaintext nginx: 100 bytes on /, a 1 GiB (sparse) file on /big; and a TLS twin requiring client
    certificates (mTLS origination)."""
    d = os.path.join(work, "origin")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "big"), "wb") as f:
        f.truncate(1 << 30)
    # nginx's workers (www-data) read it: the work directory is the caller's (mkdtemp: 0700).
    os.chmod(work, 0o755)
    os.chmod(d, 0o755)
    os.chmod(os.path.join(d, "big"), 0o644)
    port, tls_port = proxies.free_port(), proxies.free_port()
    certs = os.path.join(work, "certs")
    open(f"{d}/nginx.conf", "w").write(f"""daemon off; master_process on; worker_processes 1;
pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off; keepalive_requests 100000000; keepalive_timeout 300s; sendfile on;
{proxies._nginx_paths(d)}
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "{'s' * 100}"; }} location /big {{ alias {d}/big; }} }}
    server {{
        listen 127.0.0.1:{tls_port} ssl; ssl_certificate {certs}/server-chain.crt; ssl_certificate_key {certs}/server.key;
        ssl_client_certificate {certs}/ca.crt; ssl_verify_client on;
        location / {{ return 200 "{'s' * 100}"; }}
    }}
}}
""")
    p = proxies.spawn(LOAD_CPU, ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies.wait_listening(port, p)
    # One download of /big straight from the origin, untimed: the first read of the sparse file fills the page
    # cache (1 GiB of pages), which made whichever proxy came first in a run look a third slower.
    subprocess.run(["curl", "-sS", "-o", "/dev/null", f"http://127.0.0.1:{port}/big"], timeout=300)
    return p, port, tls_port


def start_tern(work, origin, certs, cores=1, cpus=PROXY_CPU, tls=True):
    port = proxies.free_port()
    args = [proxies.TERN, "proxy", "--http", "--cores", str(cores), "--listen", f"127.0.0.1:{port}",
            "--upstream", f"127.0.0.1:{origin}", "--admin", "off", "--health", "off", "--prometheus", "off"]
    if tls:
        args += ["--tls-cert", f"{certs}/server-chain.crt", "--tls-key", f"{certs}/server.key"]
    p = proxies.spawn(cpus, args, stderr=open(os.path.join(work, "tern.log"), "ab"))
    proxies.wait_listening(port, p)
    return p, port


def start_nginx(work, origin, certs):
    d = os.path.join(work, f"nginx-{time.monotonic_ns()}")
    os.makedirs(d)
    port = proxies.free_port()
    open(f"{d}/nginx.conf", "w").write(f"""daemon off; master_process on; worker_processes 1;
worker_rlimit_nofile {proxies.nofile_limit()};
pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections {proxies.nginx_connections()}; }}
http {{
    access_log off; tcp_nodelay on; keepalive_requests 100000000; keepalive_timeout 300s;
{proxies._nginx_paths(d)}
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {certs}/server-chain.crt; ssl_certificate_key {certs}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on;
        location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }}
    }}
}}
""")
    return proxies._run_nginx(d, PROXY_CPU, port)


def start_haproxy(work, origin, certs):
    port = proxies.free_port()
    cfg = os.path.join(work, f"haproxy-{port}.cfg")
    open(cfg, "w").write(f"""global
    nbthread 1
    maxconn {proxies.haproxy_maxconn()}
    tune.ssl.default-dh-param 2048
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:{port} ssl crt {certs}/server-combined.pem alpn http/1.1
    maxconn {proxies.haproxy_maxconn()}
    backlog 4096
    default_backend origin
backend origin
    server origin 127.0.0.1:{origin}
""")
    p = proxies.spawn(PROXY_CPU, ["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies.wait_listening(port, p)
    return p, port


def start_caddy(work, origin, certs):
    port = proxies.free_port()
    d = os.path.join(work, f"caddy-{port}")
    os.makedirs(d)
    open(f"{d}/Caddyfile", "w").write(f"""{{
    admin off
    auto_https off
    storage file_system {d}/data
}}
https://localhost:{port} {{
    bind 127.0.0.1
    tls {certs}/server-chain.crt {certs}/server.key
    reverse_proxy 127.0.0.1:{origin}
}}
""")
    env = dict(os.environ, GOMAXPROCS="1", HOME=d, XDG_DATA_HOME=d, XDG_CONFIG_HOME=d)
    p = proxies.spawn(PROXY_CPU, ["caddy", "run", "--config", f"{d}/Caddyfile", "--adapter", "caddyfile"],
                      stdout=subprocess.DEVNULL, stderr=open(f"{d}/caddy.log", "w"), env=env)
    proxies.wait_listening(port, p)
    return p, port


STARTERS = {"tern": start_tern, "nginx": start_nginx, "haproxy": start_haproxy, "caddy": start_caddy}


def load(port, certs, seconds, *args, scheme="https"):
    """tern-load on the load CPU; returns its JSON report."""
    cmd = ["taskset", "-c", LOAD_CPU, proxies.TERN_LOAD, "--json", f"{scheme}://localhost:{port}/",
           "--duration", f"{seconds}s", *args]
    if scheme == "https":
        cmd += ["--cacert", f"{certs}/ca.crt"]
    r = subprocess.run(cmd, capture_output=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.decode())
    return json.loads(r.stdout)


def measured(proc, fn):
    before = proxies.cpu_seconds(proc.pid)
    result = fn()
    return result, proxies.cpu_seconds(proc.pid) - before


def bulk(port, certs):
    start = time.time()
    r = subprocess.run(["taskset", "-c", LOAD_CPU, "curl", "-sS", "--cacert", f"{certs}/ca.crt", "-o", "/dev/null",
                        "-w", "%{http_code} %{size_download}", f"https://localhost:{port}/big"], capture_output=True, timeout=300)
    code, size = (r.stdout.decode().split() + ["0", "0"])[:2]
    if code != "200" or int(size) != 1 << 30:
        print(f"bulk: HTTP {code}, {size} bytes: {r.stderr.decode().strip()}", flush=True)
    return int(size), time.time() - start


def hold_idle(port, certs, n):
    """n TLS connections, each one request answered, kept open; returns the sockets."""
    ctx = ssl.create_default_context(cafile=f"{certs}/ca.crt")
    socks = []
    for _ in range(n):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="localhost")
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        socks.append(s)
    return socks


def main():
    args = sys.argv[1:]
    only = next((a.split("=", 1)[1] for a in args if a.startswith("--only=")), "tern,nginx,haproxy,caddy").split(",")
    scenarios = next((a.split("=", 1)[1] for a in args if a.startswith("--scenarios=")), "full,resumed,keepalive,bulk,idle,extra").split(",")
    seconds = int(next((a.split("=", 1)[1] for a in args if a.startswith("--seconds=")), "5"))
    n_idle = int(next((a.split("=", 1)[1] for a in args if a.startswith("--idle=")), "10000"))
    skip_idle = "--skip-idle" in args
    rounds = int(next((a.split("=", 1)[1] for a in args if a.startswith("--rounds=")), "1"))
    proxies.raise_nofile()
    work = tempfile.mkdtemp(prefix="tern-tls-bench-")
    certs = make_certs(work)
    origin, origin_port, origin_tls = start_origin(work)
    rows = {}
    samples = {}
    try:
      for r in range(rounds):
        # Each round in another order, so no proxy always runs first (or right after the same one).
        order = only[r % len(only):] + only[:r % len(only)]
        for name in order:
            if name != "tern" and not shutil.which(name):
                print(f"{name}: not installed, skipped")
                continue
            proc, port = STARTERS[name](work, origin_port, certs)
            time.sleep(0.5)
            row = {}
            results = []
            if "full" in scenarios:
                full, cpu = measured(proc, lambda: load(port, certs, seconds, "--reconnect", "--no-resume", "--connections", "8"))
                row["full_us"] = cpu / max(full["requests"], 1) * 1e6
                row["full_per_s"] = full["requests_per_second"]
                results.append(full)
            if "resumed" in scenarios:
                resumed, cpu = measured(proc, lambda: load(port, certs, seconds, "--reconnect", "--connections", "8"))
                row["resumed_us"] = cpu / max(resumed["requests"], 1) * 1e6
                results.append(resumed)
            if "keepalive" in scenarios:
                keep, cpu = measured(proc, lambda: load(port, certs, seconds, "--connections", "32"))
                row["keepalive_us"] = cpu / max(keep["requests"], 1) * 1e6
                row["keepalive_p99_us"] = keep["latency_us"]["p99"]
                row["keepalive_rps"] = keep["requests_per_second"]
                results.append(keep)
            if "bulk" in scenarios:
                (size, wall), cpu = measured(proc, lambda: bulk(port, certs))
                row["bulk_gbit"] = size * 8 / wall / 1e9 if wall > 0 else 0
                row["bulk_cpu_s_per_gb"] = cpu / (size / 1e9) if size else 0
            row["errors"] = sum(sum(d["errors"].values()) for d in results)
            proxies.stop(proc)
            if "idle" in scenarios and not skip_idle:
                proc, port = STARTERS[name](work, origin_port, certs)
                time.sleep(0.5)
                n = min(n_idle, proxies.haproxy_maxconn() - 100) if name == "haproxy" else n_idle
                socks = hold_idle(port, certs, n)
                time.sleep(1.0)
                row["idle_n"] = n
                row["idle_rss_mib"] = proxies.rss_mib(proc.pid)
                for s in socks:
                    s.close()
                proxies.stop(proc)
            rows[name] = row
            samples.setdefault(name, []).append(row)
            print(f"round {r + 1}", name, json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
      for name, rs in samples.items():
        if rounds > 1:
            # Medians over the rounds.
            rows[name] = {k: sorted(x[k] for x in rs)[len(rs) // 2] for k in rs[0]}
            print("median", name, json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in rows[name].items()}), flush=True)
      if "tern" in only and "extra" in scenarios:
        extra = {}
        # Idle resident memory with and without a TLS listener (OpenSSL initialised only with one).
        for tls in (False, True):
            proc, _ = start_tern(work, origin_port, certs, tls=tls)
            time.sleep(1.0)
            extra["idle_rss_tls" if tls else "idle_rss_plain"] = proxies.rss_mib(proc.pid)
            proxies.stop(proc)
        # CPU per full handshake at --cores 2 (both CPUs, the load beside it) against --cores 1, paired: three
        # alternating measurements of each, medians (single ones moved by ±20% on this shared machine).
        paired = {1: [], 2: []}
        for _ in range(3):
            for cores, cpus in ((1, PROXY_CPU), (2, "0,1")):
                proc, port = start_tern(work, origin_port, certs, cores=cores, cpus=cpus)
                time.sleep(0.5)
                full, cpu = measured(proc, lambda: load(port, certs, seconds, "--reconnect", "--no-resume", "--connections", "8"))
                paired[cores].append(cpu / max(full["requests"], 1) * 1e6)
                proxies.stop(proc)
        extra["full_us_cores1_paired"] = statistics.median(paired[1])
        extra["full_us_cores2"] = statistics.median(paired[2])
        # mTLS origination: Tern --config MUTUAL to the TLS origin, against nginx proxy_pass https.
        extra.update(origination(work, certs, origin_tls, seconds))
        print("tern extra", json.dumps({k: round(v, 2) for k, v in extra.items()}), flush=True)
        rows["tern_extra"] = extra
    finally:
        proxies.stop(origin)
    print(json.dumps(rows, indent=1))
    shutil.rmtree(work, ignore_errors=True)


def origination(work, certs, origin_tls, seconds):
    config = os.path.join(work, "origination.yaml")
    open(config, "w").write(f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: origin, namespace: default}}
spec:
  hosts: [localhost]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {origin_tls}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: origin, namespace: default}}
spec:
  host: localhost
  trafficPolicy:
    tls: {{mode: MUTUAL, caCertificates: {certs}/ca.crt, clientCertificate: {certs}/client.crt, privateKey: {certs}/client.key}}
""")
    port = proxies.free_port()
    tern = proxies.spawn(PROXY_CPU, [proxies.TERN, "proxy", "--http", "--cores", "1", "--listen", f"127.0.0.1:{port}",
                                     "--config", config, "--admin", "off", "--health", "off", "--prometheus", "off"],
                         stderr=open(os.path.join(work, "tern-orig.log"), "ab"))
    proxies.wait_listening(port, tern)
    keep, cpu = measured(tern, lambda: load(port, certs, seconds, "--connections", "32", scheme="http"))
    out = {"origination_tern_us": cpu / max(keep["requests"], 1) * 1e6, "origination_tern_errors": sum(keep["errors"].values())}
    proxies.stop(tern)
    d = os.path.join(work, "nginx-orig")
    os.makedirs(d)
    nport = proxies.free_port()
    open(f"{d}/nginx.conf", "w").write(f"""daemon off; master_process on; worker_processes 1;
pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off; tcp_nodelay on; keepalive_requests 100000000; keepalive_timeout 300s;
{proxies._nginx_paths(d)}
    upstream origin {{ server 127.0.0.1:{origin_tls}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{nport};
        location / {{
            proxy_pass https://origin; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_ssl_certificate {certs}/client.crt; proxy_ssl_certificate_key {certs}/client.key;
            proxy_ssl_trusted_certificate {certs}/ca.crt; proxy_ssl_verify on; proxy_ssl_name localhost;
            proxy_ssl_server_name on; proxy_ssl_session_reuse on;
        }}
    }}
}}
""")
    nginx, _ = proxies._run_nginx(d, PROXY_CPU, nport)
    keep, cpu = measured(nginx, lambda: load(nport, certs, seconds, "--connections", "32", scheme="http"))
    out["origination_nginx_us"] = cpu / max(keep["requests"], 1) * 1e6
    out["origination_nginx_errors"] = sum(keep["errors"].values())
    proxies.stop(nginx)
    return out


if __name__ == "__main__":
    main()
