#!/usr/bin/env bash
# tern-load side by side with wrk and h2load (HTTP/1.1) against the same nginx origin, in one go (issue 5):
# the most requests per second each generator gets out of one core, the CPU it spends per request (the
# generator must never be the bottleneck), and whether their p50 and p99 agree at the same load. Prints a
# markdown table; figures with date and machine go in Benchmarks/README.md.
#
#   bash Benchmarks/tern-load-vs-wrk.sh
#
# Environment:
#   TERN_LOAD_BIN  tern-load binary (default .build/release/tern-load; `swift build -c release`)
#   DURATION       seconds per run (default 5)
#   CONNECTIONS    connections per generator (default 50)
#   KEEP_LOGS      set to 1 to keep the temp dir with the nginx config and every tool's output
#
# CPU layout (2 cores): nginx (one worker) on CPU 0, each generator on CPU 1 with one thread. All three are
# closed loop with the same connections, so they load nginx the same way and their latencies are comparable.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TERN_LOAD_BIN=${TERN_LOAD_BIN:-$REPO_ROOT/.build/release/tern-load}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-50}
KEEP_LOGS=${KEEP_LOGS:-0}
ORIGIN_PORT=25301
ORIGIN_CPU=0
LOAD_CPU=1

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $TERN_LOAD_BIN ]] || die "no tern-load at $TERN_LOAD_BIN (build with: swift build -c release, or set TERN_LOAD_BIN)"
(( $(nproc) >= 2 )) || die "needs at least 2 CPUs (origin on CPU $ORIGIN_CPU, generators on CPU $LOAD_CPU)"
bash "$REPO_ROOT/Tools/scripts/setup.sh" --bench

WORK=$(mktemp -d /tmp/tern-load-bench.XXXXXX)
NGINX_PID=""
cleanup() {
    if [[ -n $NGINX_PID ]]; then
        kill -TERM "$NGINX_PID" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NGINX_PID" 2>/dev/null || true
    fi
    if [[ $KEEP_LOGS == 1 ]]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$ORIGIN_PORT reuseport backlog=4096;
        location / { return 200 "hello from nginx\n"; }
    }
}
EOF
taskset -c "$ORIGIN_CPU" nginx -p "$WORK" -c "$WORK/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$ORIGIN_PORT/" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$ORIGIN_PORT/" >/dev/null || die "nginx did not start: $(cat "$WORK/nginx-error.log")"
URL="http://127.0.0.1:$ORIGIN_PORT/"

# Runs a generator on CPU 1; its CPU seconds (user + system) go to $WORK/NAME.cpu, its output to NAME.out.
run() {
    local name=$1
    shift
    log "$name: $*"
    /usr/bin/time -f '%U %S' -o "$WORK/$name.time" taskset -c "$LOAD_CPU" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" \
        || die "$name failed: $(cat "$WORK/$name.err")"
    awk '{ print $1 + $2 }' "$WORK/$name.time" >"$WORK/$name.cpu"
}

run wrk wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$URL"
run h2load h2load --h1 -t1 -c"$CONNECTIONS" -D"$DURATION" --log-file="$WORK/h2load.log" "$URL"
run tern-load-io_uring "$TERN_LOAD_BIN" --io-backend io_uring --cores 1 --connections "$CONNECTIONS" --duration "${DURATION}s" --json "$URL"
run tern-load-epoll "$TERN_LOAD_BIN" --io-backend epoll --cores 1 --connections "$CONNECTIONS" --duration "${DURATION}s" --json "$URL"

python3 - "$WORK" "$DURATION" "$CONNECTIONS" <<'PY'
import json, re, sys
work, duration, connections = sys.argv[1], float(sys.argv[2]), sys.argv[3]

def cpu(name):
    return float(open(f"{work}/{name}.cpu").read())

def wrk_time(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]

rows = []
out = open(f"{work}/wrk.out").read()
lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
rows.append(("wrk 4.1", rps, cpu("wrk"), wrk_time(lat["50"]), wrk_time(lat["99"])))

out = open(f"{work}/h2load.out").read()
rps = float(re.search(r"finished in [^,]+, ([\d.]+) req/s", out).group(1))
samples = sorted(int(line.split("\t")[2]) for line in open(f"{work}/h2load.log") if line.strip())
def pct(p):
    return samples[min(len(samples) - 1, int(p / 100 * len(samples)))]
rows.append(("h2load 1.52 (--h1)", rps, cpu("h2load"), pct(50), pct(99)))

for backend in ("io_uring", "epoll"):
    doc = json.load(open(f"{work}/tern-load-{backend}.out"))
    rows.append((f"tern-load {backend}", doc["requests_per_second"], cpu(f"tern-load-{backend}"),
                 doc["latency_us"]["p50"], doc["latency_us"]["p99"]))

wrk = rows[0]
print(f"\nHTTP/1.1 against nginx (1 worker, CPU 0); each generator on CPU 1, {connections} connections, {duration:g} s, closed loop\n")
print("| generator | req/s | generator CPU s | req per CPU second | vs wrk | p50 µs | p99 µs | p50 vs wrk | p99 vs wrk |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name, rps, seconds, p50, p99 in rows:
    per_cpu = rps * duration / seconds if seconds > 0 else float("inf")
    wrk_per_cpu = wrk[1] * duration / wrk[2]
    print(f"| {name} | {rps:,.0f} | {seconds:.2f} | {per_cpu:,.0f} | {per_cpu / wrk_per_cpu:.2f}× | {p50:,.0f} | {p99:,.0f} "
          f"| {(p50 / wrk[3] - 1) * 100:+.1f}% | {(p99 / wrk[4] - 1) * 100:+.1f}% |")
PY
