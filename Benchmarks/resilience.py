#!/usr/bin/env python3
"""Resilience in numbers (issue 18): three endpoints behind Tern, one answering 503 to every request, loaded by
tern-load with a fixed number of requests, under three sets of Istio settings in one run:

  resilience       retries {attempts: 3, retryOn: 5xx,connect-failure,reset} and outlierDetection
                   {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 5s, maxEjectionPercent: 50}
  istio-defaults   no `retries` (Istio's mesh default: 2 retries on connect-failure,…, none on a 503) and
                   `outlierDetection: {}` (Envoy's defaults: 5 consecutive 5xx, 10 s interval, 30 s base, 10 %)
  none             `retries: {attempts: 0}`, no outlier detection

For each: the client's success rate, the 503s the bad endpoint sent, retries, ejections, and (resilience only)
how long after the first request the bad endpoint was ejected (polled every 20 ms on /stats/prometheus, against
`interval`), and whether it got a request again once `baseEjectionTime` had passed (counted in its access log).

    python3 Benchmarks/resilience.py [--requests 100000] [--connections 8]

Needs nginx and a release build (`swift build -c release --static-swift-stdlib`). Counts, not timings, decide
the result; the ejection delay is reported, not asserted.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from proxies import TERN, TERN_LOAD, free_port, spawn, stop, wait_listening  # noqa: E402

SETTINGS = {
    "resilience": ("{attempts: 3, retryOn: \"5xx,connect-failure,reset\"}",
                   "{consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 5s, maxEjectionPercent: 50}"),
    "istio-defaults": (None, "{}"),
    "none": ("{attempts: 0}", None),
}


def nginx_endpoints(work):
    """One nginx, three servers: two answer 200 with 100 bytes, the third 503 (with an access log of its own)."""
    ports = [free_port() for _ in range(3)]
    d = os.path.join(work, "nginx")
    os.makedirs(d, exist_ok=True)
    temp = "\n".join(f"    {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    servers = "\n".join(f"    server {{ listen 127.0.0.1:{p}; location / {{ return 200 \"{'s' * 100}\"; }} }}" for p in ports[:2])
    open(f"{d}/nginx.conf", "w").write(f"""daemon off; master_process on; worker_processes 1;
pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
{temp}
{servers}
    server {{ listen 127.0.0.1:{ports[2]}; access_log {d}/bad.log; location / {{ return 503 "bad"; }} }}
}}
""")
    p = spawn(None, ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in ports:
        wait_listening(port, p)
    return p, ports, f"{d}/bad.log"


def mesh(ports, retries, outlier):
    endpoints = "\n".join(f"  - {{address: 127.0.0.1, ports: {{http: {p}}}}}" for p in ports)
    policy = "{loadBalancer: {simple: ROUND_ROBIN}" + (f", outlierDetection: {outlier}" if outlier else "") + "}"
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc}}
spec:
  hosts: [svc]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{endpoints}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc}}
spec:
  host: svc
  trafficPolicy: {policy}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc}}
spec:
  hosts: [svc]
  http:
  - route: [{{destination: {{host: svc}}}}]{f"{chr(10)}    retries: {retries}" if retries else ""}
"""


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/prometheus", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = out.get(name, 0) + float(value)
    return out


def figure(m, prefix):
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def lines(path):
    try:
        return sum(1 for _ in open(path))
    except OSError:
        return 0


def run(work, name, ports, bad_log, requests, connections):
    retries, outlier = SETTINGS[name]
    path = os.path.join(work, f"{name}.yaml")
    open(path, "w").write(mesh(ports, retries, outlier))
    port, prom = free_port(), free_port()
    log = open(os.path.join(work, f"{name}.log"), "wb")
    tern = spawn(None, [TERN, "proxy", "--http", "--config", path, "--cores", "1", "--listen", f"127.0.0.1:{port}",
                        "--admin", "off", "--health", "off", "--prometheus", f"127.0.0.1:{prom}"], stderr=log)
    wait_listening(port, tern)
    bad_before = lines(bad_log)
    # When the bad endpoint was first ejected (since the first request), and when it next got a request after that.
    ejected_at, back_at = [None], [None]
    done = threading.Event()
    start = time.monotonic()

    def watch():
        seen = 0
        while not done.is_set():
            now = time.monotonic()
            if ejected_at[0] is None:
                if figure(metrics(prom), "envoy_cluster_outlier_detection_ejections_active") >= 1:
                    ejected_at[0] = now
                    seen = lines(bad_log)
            elif back_at[0] is None and lines(bad_log) > seen:
                back_at[0] = now
            time.sleep(0.02)
    watcher = threading.Thread(target=watch, daemon=True)
    if outlier:
        watcher.start()
    load = subprocess.run([TERN_LOAD, "--connections", str(connections), "--requests", str(requests), "--header", "Host: svc",
                           "--json", f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=900)
    trickle_errors = []
    if outlier and back_at[0] is None and ejected_at[0] is not None:
        # The run ended before the ejection did: a bounded trickle of requests until the endpoint gets one.
        t0 = time.monotonic()
        while back_at[0] is None and time.monotonic() - t0 < 40:
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": "svc"}), timeout=10).read()
            except urllib.error.HTTPError as e:
                trickle_errors.append(e.code)
            time.sleep(0.01)
    done.set()
    doc = json.loads(load.stdout)
    m = metrics(prom)
    result = {
        "settings": name, "requests": doc["requests"], "errors": doc["errors"],
        # 4xx and 5xx responses are among `requests`; connect, timeout and reset failures are not.
        "success_rate": 1 - sum(doc["errors"].values()) / max(1, doc["requests"] + doc["errors"]["connect"]
                                                              + doc["errors"]["timeout"] + doc["errors"]["reset"]),
        "bad_endpoint_503s": lines(bad_log) - bad_before,
        "retries": figure(m, "tern_retries_total"),
        "ejections": figure(m, "envoy_cluster_outlier_detection_ejections_enforced_total"),
        "ejected_after_s": None if ejected_at[0] is None else ejected_at[0] - start,
        "back_in_after_s": None if back_at[0] is None or ejected_at[0] is None else back_at[0] - ejected_at[0],
        "trickle_errors": trickle_errors,
    }
    stop(tern)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    for b in (TERN, TERN_LOAD):
        if not os.access(b, os.X_OK):
            sys.exit(f"missing {b}: swift build -c release --static-swift-stdlib")
    with tempfile.TemporaryDirectory(prefix="tern-resilience-") as work:
        nginx, ports, bad_log = nginx_endpoints(work)
        try:
            results = [run(work, name, ports, bad_log, args.requests, args.connections) for name in SETTINGS]
        finally:
            stop(nginx)
    print(f"\nResilience in numbers ({args.requests:,} requests, {args.connections} connections, 3 endpoints, one always 503; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print("| settings | client success rate | 5xx to the client | 503s from the bad endpoint | retries | ejections | ejected after | back in after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        ej = f"{r['ejected_after_s']:.2f} s" if r["ejected_after_s"] is not None else "-"
        back = f"{r['back_in_after_s']:.2f} s" if r.get("back_in_after_s") is not None else "-"
        print(f"| {r['settings']} | {100 * r['success_rate']:.3f} % | {r['errors'].get('status_5xx', 0):,} | {r['bad_endpoint_503s']:,} | "
              f"{int(r['retries']):,} | {int(r['ejections'])} | {ej} | {back} |")
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
