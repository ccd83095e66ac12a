#!/usr/bin/env bash
# Throughput and tail latency while the configuration changes ten times a second, against none (issue 4):
# `tern proxy --http --config` (one reactor, CPU 0) routes wrk's keep-alive load (CPU 1) to an nginx origin
# (CPU 1); in the "swaps" runs a writer replaces the configuration file every 100 ms (write to a temporary
# file, rename over the watched one, as editors and ConfigMaps do, then SIGHUP) with a different route weight
# split, and each change is compiled and published to the reactor while requests flow. Runs alternate (none, swaps) for
# --rounds rounds; the report gives medians, the swaps applied (counted in Tern's log) and every error.
#
#   bash Benchmarks/config-swaps.sh [--rounds N] [--duration SECONDS] [--connections N]
#
# Environment: TERN_BIN (default .build/release/tern). Needs nginx, wrk and taskset (setup.sh --bench).
# Target: no difference beyond noise, and no error.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TERN_BIN=${TERN_BIN:-$REPO_ROOT/.build/release/tern}
ROUNDS=3
DURATION=10
CONNECTIONS=32
while (($#)); do
    case $1 in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --connections) CONNECTIONS=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done

PYTHON=$(python3 -c 'import sys; print(sys.executable)')
RIG_NAME=tern-swaps
# shellcheck source=lib/rig.sh
source "$REPO_ROOT/Benchmarks/lib/rig.sh"
require_bench_tools
start_origin "ok\n"

# Two canary subsets on the same origin (two endpoints: the address twice, distinct labels), split by weight.
write_config() {  # $1: weight of stable (beta gets the rest); written whole, then renamed over the watched file
    cat >"$WORK/mesh.tmp" <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: $ORIGIN_PORT}, labels: {track: stable}}
  - {address: 127.0.0.1, ports: {http: $ORIGIN_PORT}, labels: {track: beta}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart]
  http:
  - route:
    - {destination: {host: cart, subset: stable}, weight: $1}
    - {destination: {host: cart, subset: beta}, weight: $((100 - $1))}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec:
  host: cart
  subsets:
  - {name: stable, labels: {track: stable}}
  - {name: beta, labels: {track: beta}}
EOF
    mv "$WORK/mesh.tmp" "$WORK/mesh/mesh.yaml"
}
mkdir -p "$WORK/mesh"
write_config 80

run() {  # $1: none|swaps, $2: round
    local tern_port log=$WORK/tern-$1-$2.log
    tern_port=$(free_port)
    ${TERN_TASKSET:-taskset -c 0} "$TERN_BIN" proxy --http --config "$WORK/mesh" --listen "127.0.0.1:$tern_port" --cores 1 \
        --admin off --health off --prometheus off 2>"$log" &
    local tern=$!
    for _ in $(seq 100); do grep -q "listening kind=http" "$log" && break; sleep 0.05; done
    local swapper=""
    if [[ $1 == swaps ]]; then
        # One process does every swap (a shell loop would fork sed/cat/mv/kill ten times a second, and that
        # process churn, not Tern, would show in the tail). The two files are rendered once; each swap renames
        # a fresh copy over the watched file, then SIGHUP: the file watcher's 200 ms debounce would hold
        # reloads back while changes keep coming every 100 ms (it applies the last one once they stop).
        # The swapper stands in for the control plane, which runs elsewhere in a cluster: here it shares the
        # two CPUs with wrk, nginx and Tern, so it runs at idle priority (chrt -i 0). At normal priority its
        # few milliseconds per swap on CPU 1, where wrk and nginx are already saturated, showed as p99.
        write_config 20; cp "$WORK/mesh/mesh.yaml" "$WORK/mesh-20.yaml"
        write_config 80; cp "$WORK/mesh/mesh.yaml" "$WORK/mesh-80.yaml"
        # The interpreter itself, not a pyenv shim (whose bash start-up alone cost ~100 ms of CPU 1).
        taskset -c 0 chrt -i 0 "$PYTHON" - "$WORK" "$tern" <<'PY' &
import os, shutil, signal, sys, time
work, tern = sys.argv[1], int(sys.argv[2])
i = 0
start = time.monotonic()
while True:
    shutil.copyfile(f"{work}/mesh-{20 if i % 2 == 0 else 80}.yaml", f"{work}/mesh/.next.yaml")
    os.rename(f"{work}/mesh/.next.yaml", f"{work}/mesh/mesh.yaml")
    os.kill(tern, signal.SIGHUP)
    i += 1
    # On a fixed schedule (10 a second), so a swap that waited for the CPU does not delay the next ones.
    time.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
PY
        swapper=$!
        # The load starts once swaps are being applied (the swapper's start-up is not part of the run).
        for _ in $(seq 200); do grep -q "config applied version=3" "$log" && break; sleep 0.05; done
    fi
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Host: cart" "http://127.0.0.1:$tern_port/" \
        >"$WORK/wrk-$1-$2.txt" 2>&1
    [[ -n $swapper ]] && { kill "$swapper"; wait "$swapper" 2>/dev/null || true; }
    write_config 80
    kill -TERM "$tern"; wait "$tern" 2>/dev/null || true
}

for ((r = 0; r < ROUNDS; r++)); do
    # none-again runs exactly as none: its ratio to none is the noise of the series (an A/A comparison).
    for mode in none swaps none-again; do
        echo "[$(date -u +%H:%M:%S)] round $((r + 1))/$ROUNDS: $mode" >&2
        run "$mode" "$r"
    done
done

python3 - "$WORK" "$ROUNDS" "$DURATION" <<'EOF'
import re, statistics, sys
work, rounds, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def unit(v, u):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
rows = {}
for mode in ("none", "swaps", "none-again"):
    for r in range(rounds):
        text = open(f"{work}/wrk-{mode}-{r}.txt").read()
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        lat = {p: unit(*re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", text, re.M).groups()) for p in ("50", "99")}
        non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", text) or [0, 0])[1])
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        errors = non2xx + (sum(map(int, sock.groups())) if sock else 0)
        log = open(f"{work}/tern-{mode}-{r}.log").read()
        # Versions 2 and 3 were applied before the load started (the run waits for them).
        applied = max(0, len(re.findall(r"config applied version=", log)) - 3)
        rows.setdefault(mode, []).append((rps, lat["50"], lat["99"], errors, applied))
print(f"Config swaps under load: median of {rounds} rounds of {duration:.0f} s (wrk, keep-alive, one Tern reactor)\n")
print("| run | req/s | p50 ms | p99 ms | req/s ratio to none | p99 ratio to none | errors (all rounds) | swaps applied per second |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
medians = {}
for mode, rs in rows.items():
    medians[mode] = [statistics.median(x[i] for x in rs) for i in range(3)]
for mode, rs in rows.items():
    rps, p50, p99 = medians[mode]
    errors = sum(x[3] for x in rs)
    swaps = statistics.median(x[4] for x in rs) / duration
    print(f"| {mode} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {rps / medians['none'][0]:.3f} | {p99 / medians['none'][2]:.3f} | "
          f"{errors} | {swaps:.1f} |")
print("\nnone-again is none run once more: its ratios show how far two identical series differ here.")
EOF
