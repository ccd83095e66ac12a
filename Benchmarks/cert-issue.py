#!/usr/bin/env python3
"""Workload certificates issued per second by `tern cert issue` (issue 19), one process per certificate as a
script or an init container would run it: each loop runs the real CLI back to back for SECONDS, writing into a
directory on tmpfs (so fsync costs nothing and the figure is the CLI's own), for each CA key type and workload key
type. The process start alone (`tern --version`) is measured the same way, to show how much of an issuance is
starting a process rather than making a key and signing.

    python3 Benchmarks/cert-issue.py [--seconds 3]

Uses TERN_BENCH_BIN, else .build/release/tern, else .build/debug/tern (the row says which); the crypto is
OpenSSL's either way.
"""
import argparse
import datetime
import os
import platform
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def tern_bin():
    for p in (os.environ.get("TERN_BENCH_BIN"), os.path.join(ROOT, ".build", "release", "tern"),
              os.path.join(ROOT, ".build", "debug", "tern")):
        if p and os.path.exists(p):
            return p
    raise SystemExit("no tern binary: build it, or set TERN_BENCH_BIN")


def rate(args, seconds):
    """Runs `args` back to back for about `seconds`; returns (runs per second, runs)."""
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        n += 1
    return n / (time.perf_counter() - start), n


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    options = parser.parse_args()
    tern = tern_bin()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    rows = []
    with tempfile.TemporaryDirectory(dir=base) as d:
        per_second, n = rate([tern, "--version"], options.seconds)
        rows.append(("process start (`tern --version`)", "", per_second, n))
        for ca_type in ("ec-p256", "rsa-2048"):
            ca = os.path.join(d, "ca-" + ca_type)
            subprocess.run([tern, "cert", "ca", "--out", ca, "--key-type", ca_type], check=True, stdout=subprocess.DEVNULL)
            for key_type in ("ec-p256", "rsa-2048"):
                out = os.path.join(d, "w")
                args = [tern, "cert", "issue", "--ca", ca, "--namespace", "default", "--service-account", "web",
                        "--out", out, "--key-type", key_type]
                per_second, n = rate(args, options.seconds)
                rows.append((f"`tern cert issue --key-type {key_type}`", ca_type, per_second, n))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpus = os.cpu_count()
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    print(f"{now}, {model}, {cpus} CPUs, {platform.system()} {platform.release()}; binary {os.path.relpath(tern, ROOT)}; "
          f"{options.seconds:g} s per row")
    print()
    print("| what | CA key | per second | ms each | runs |")
    print("| --- | --- | --- | --- | --- |")
    for what, ca_type, per_second, n in rows:
        print(f"| {what} | {ca_type or '-'} | {per_second:.0f} | {1000 / per_second:.1f} | {n} |")


if __name__ == "__main__":
    main()
