#!/usr/bin/env python3
"""Two hops between sidecars (issue 19): App A → sidecar A → sidecar B → App B, the latency the two sidecars add
over the direct call at a fixed open-loop rate, side by side in one run:

  direct       tern-load straight to the app (an nginx answering 100 bytes)
  tern-mtls    two Terns: A (`--config`, the app's ServiceEntry endpoint labelled security.istio.io/tlsMode: istio,
               `--identity-dir`) originates mutual TLS with Istio's ALPN and SNI to B (`--upstream APP --config`,
               `--identity-dir`: X.509-SVIDs required, X-Forwarded-Client-Cert added), identities from `tern cert`
  tern-plain   the same two Terns with plaintext between them (no identity, no label)
  tern-mtls-authz  tern-mtls with 100 ALLOW AuthorizationPolicies on B (each a distinct principal and path; only
               the last matches the caller)
  tern-mtls-aa a second tern-mtls pair, identical: the A/A spread of a run (`--only tern-mtls,tern-mtls-aa,tern-mtls-authz`)
  tcp-floor    the floor of two hops on this rig: two Tern TCP relays (`tern proxy` without --http: splice, no
               HTTP, no TLS) chained; what any two processes in the path cost in wake-ups and loopback TCP
  nginx-mtls   two nginx: A proxy_pass https:// to B with a client certificate (keep-alive upstream, sessions
               reused; nginx cannot check a SPIFFE ID, so it checks nothing of B's certificate), B `ssl_verify_client
               on` against the mesh root; both one worker

Both sidecars of a pair run on CPU 1 (`--cores 1` each, nginx one worker each); the app and tern-load on CPU 0.
tern-load: `--rate 1000 --connections 10`, open loop (latency from each request's intended send time), 2 s warm-up,
then `--seconds` measured. Rounds rotate the order of the targets; each target's added latency is taken against
the direct call of the same round, and the medians over rounds are printed, with CPU µs per request of each
sidecar (user + system from /proc).

    python3 Benchmarks/mesh-two-hops.py [--rounds 3] [--seconds 10] [--rate 1000] [--only tern-mtls,nginx-mtls,...]

Needs nginx (`bash Tools/scripts/setup.sh --bench`) and a release build (.build/release/tern, tern-load).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import proxies  # noqa: E402

APP_CPU, SIDECAR_CPU = "0", "1"
HOST = "backend.default.svc.cluster.local"


def identities(work):
    d = os.path.join(work, "ids")
    subprocess.run(["bash", os.path.join(proxies.ROOT, "Tests/Fixtures/tls/make-mesh-certs.sh"), d, proxies.TERN],
                   check=True, timeout=300)
    return d


def tern(work, name, args, http=True):
    log = open(os.path.join(work, f"{name}.log"), "ab")
    port = proxies.free_port()
    p = proxies.spawn(SIDECAR_CPU, [proxies.TERN, "proxy", *(["--http"] if http else []), "--cores", "1",
                                    "--listen", f"127.0.0.1:{port}", "--admin", "off", "--health", "off",
                                    "--prometheus", "off", *args], stderr=log)
    proxies.wait_listening(port, p)
    return p, port


def policies(n):
    """`n` ALLOW policies on the workload, each for a distinct principal and path; the last is A's."""
    out = []
    for i in range(n):
        who = "frontend" if i == n - 1 else f"caller-{i}"
        path = "/" if i == n - 1 else f"/only-{i}/*"
        out.append(f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: p{i}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["cluster.local/ns/default/sa/{who}"]}}}}]
    to: [{{operation: {{paths: ["{path}"]}}}}]
""")
    return "---\n".join(out) if out else "# no policies\n"


def tern_pair(work, name, app, ids, mtls, authorization=0):
    """Sidecar B in front of the app, then sidecar A routing HOST to B; returns ([A, B] processes, A's port)."""
    d = os.path.join(work, name)
    os.makedirs(os.path.join(d, "b"), exist_ok=True)
    os.makedirs(os.path.join(d, "a"), exist_ok=True)
    open(os.path.join(d, "b", "policies.yaml"), "w").write(policies(authorization))
    ident = lambda who: ["--identity-dir", os.path.join(ids, who)] if mtls else []  # noqa: E731
    b, bport = tern(work, name + "-b", ["--upstream", f"127.0.0.1:{app}", "--config", os.path.join(d, "b"),
                                        "--labels", "app=backend", "--service-account", "backend", *ident("backend")])
    label = ", security.istio.io/tlsMode: istio" if mtls else ""
    open(os.path.join(d, "a", "service.yaml"), "w").write(f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {bport}}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, labels: {{app: backend{label}}}, serviceAccount: backend}}
""")
    a, aport = tern(work, name + "-a", ["--config", os.path.join(d, "a"), *ident("frontend")])
    return [a, b], aport


def relay_pair(work, app):
    """Two TCP relays chained in front of the app; returns ([A, B], A's port)."""
    b, bport = tern(work, "relay-b", ["--upstream", f"127.0.0.1:{app}"], http=False)
    a, aport = tern(work, "relay-a", ["--upstream", f"127.0.0.1:{bport}"], http=False)
    return [a, b], aport


def nginx_pair(work, app, ids):
    """nginx B terminating mutual TLS in front of the app, nginx A originating it; returns ([A, B], A's port)."""
    procs = []
    bport, aport = proxies.free_port(), proxies.free_port()
    for side, port, server in (
        ("b", bport, f"""server {{ listen 127.0.0.1:{bport} ssl;
            ssl_certificate {ids}/backend/cert-chain.pem; ssl_certificate_key {ids}/backend/key.pem;
            ssl_client_certificate {ids}/backend/root-cert.pem; ssl_verify_client on; ssl_protocols TLSv1.2 TLSv1.3;
            location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
            upstream app {{ server 127.0.0.1:{app}; keepalive 64; }}"""),
        ("a", aport, f"""server {{ listen 127.0.0.1:{aport};
            location / {{ proxy_pass https://b; proxy_http_version 1.1; proxy_set_header Connection "";
                proxy_ssl_certificate {ids}/frontend/cert-chain.pem; proxy_ssl_certificate_key {ids}/frontend/key.pem;
                proxy_ssl_session_reuse on; proxy_ssl_protocols TLSv1.2 TLSv1.3; }} }}
            upstream b {{ server 127.0.0.1:{bport}; keepalive 64; }}"""),
    ):
        d = os.path.join(work, "nginx-" + side)
        os.makedirs(d, exist_ok=True)
        open(f"{d}/nginx.conf", "w").write(f"""daemon off; master_process on; worker_processes 1;
pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
{proxies._nginx_paths(d)}
{server}
}}
""")
        p = proxies.spawn(SIDECAR_CPU, ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proxies.wait_listening(port, p)
        procs.append(p)
    return procs[::-1], aport


def load(port, rate, seconds):
    """tern-load, open loop: (p50 µs, p99 µs, requests, failed)."""
    out = subprocess.run(["taskset", "-c", APP_CPU, proxies.TERN_LOAD, "--json", "--rate", str(rate), "--connections", "10",
                          "--cores", "1", "--warmup", "2s", "--duration", f"{seconds}s", "--header", f"Host: {HOST}",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=seconds + 60).stdout
    doc = json.loads(out)
    failed = sum(doc["errors"][k] for k in ("connect", "timeout", "reset", "status_4xx", "status_5xx"))
    return doc["latency_us"]["p50"], doc["latency_us"]["p99"], doc["requests"], failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--only", default="tern-mtls,tern-plain,tern-mtls-authz,nginx-mtls,tcp-floor")
    args = ap.parse_args()
    for tool in ("nginx", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: bash Tools/scripts/setup.sh --bench")
    for binary in (proxies.TERN, proxies.TERN_LOAD):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: swift build -c release --static-swift-stdlib")
    work = tempfile.mkdtemp(prefix="tern-mesh-bench-")
    procs = []
    try:
        app, app_port = proxies.start_origin(work, APP_CPU)
        procs.append(app)
        ids = identities(work)
        targets = {}
        for name in args.only.split(","):
            if name == "nginx-mtls":
                ps, port = nginx_pair(work, app_port, ids)
            elif name == "tcp-floor":
                ps, port = relay_pair(work, app_port)
            else:
                ps, port = tern_pair(work, name, app_port, ids, mtls=name != "tern-plain",
                                     authorization=100 if name == "tern-mtls-authz" else 0)
            procs += ps
            targets[name] = (ps, port)
            check = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Host: {HOST}",
                                    f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=30)
            if check.stdout != "200":
                sys.exit(f"{name}: a request through it got {check.stdout} {check.stderr}; logs in {work}")
        rows = {name: [] for name in targets}
        for r in range(args.rounds):
            order = list(targets)
            order = order[r % len(order):] + order[:r % len(order)]
            direct = load(app_port, args.rate, args.seconds)
            print(f"round {r + 1}: direct p50 {direct[0]} µs p99 {direct[1]} µs ({direct[2]} requests, {direct[3]} failed)", flush=True)
            for name in order:
                ps, port = targets[name]
                before = [proxies.cpu_seconds(p.pid) for p in ps]
                p50, p99, n, failed = load(port, args.rate, args.seconds)
                # (CPU includes the 2 s warm-up: requests are counted over warm-up and measurement alike.)
                cpu = [(proxies.cpu_seconds(p.pid) - b) * 1e6 / max(n * (args.seconds + 2) / args.seconds, 1)
                       for p, b in zip(ps, before)]
                rows[name].append((p50 - direct[0], p99 - direct[1], cpu[0], cpu[1], failed))
                print(f"  {name}: p50 {p50} µs (+{p50 - direct[0]}), p99 {p99} µs (+{p99 - direct[1]}), "
                      f"CPU per request A {cpu[0]:.1f} µs, B {cpu[1]:.1f} µs, {failed} failed", flush=True)
        print(f"\nmedians over {args.rounds} rounds, {args.rate} req/s open loop, {args.seconds} s each:")
        print("| pair | added p50 | added p99 | CPU per request, sidecar A | sidecar B | failed |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, rs in rows.items():
            med = [statistics.median(x[i] for x in rs) for i in range(4)]
            print(f"| {name} | +{med[0] / 1000:.3f} ms | +{med[1] / 1000:.3f} ms | {med[2]:.1f} µs | {med[3]:.1f} µs | {sum(x[4] for x in rs)} |")
    finally:
        for p in procs:
            proxies.stop(p)
        print(f"(work directory {work})")


if __name__ == "__main__":
    main()
