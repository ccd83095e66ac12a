#!/usr/bin/env bash
# Throughput and tail latency while the configuration changes ten times a second, against none (issue 4):
# `tern proxy --http --config` (one reactor, CPU 0) routes wrk's keep-alive load (CPU 1) to an nginx origin
# (CPU 1); in the "swaps" runs a writer replaces the configuration file every 100 ms (write to a temporary
# file, rename over the watched one, as editors and ConfigMaps do, then SIGHUP) with a different route weight
# split, and each change is compiled and published to the reactor while requests flow. Runs alternate (none, swaps) for
# --rounds rounds; the report gives medians, the swaps applied (counted in Tern's log) and every error.
#
#   bash Benchmarks/config-swaps.sh [--rounds N] [--duration SECONDS] [--connections N]
#   bash Benchmarks/config-swaps.sh --paired [--rate R] [--rounds N] [--duration SECONDS]   (the figure)
#
# --paired: two Terns run through each measured run, both on CPU 0, each with its own copy of the config:
# "none" and "swaps" (or, in the A/A pairs, "none" and "none-again"); one `tern-load --compare` loads them in
# turns (250 ms slices, closed loop with --connections, or open loop at --rate R), so both meet the same
# moments of the shared VM and its drift (±10 % between consecutive runs) cancels in the per-round ratios.
# Rounds alternate a swaps pair and an A/A pair; the report gives the median per-round ratio of each.
#
# Environment: TERN_BIN (default .build/release/tern; tern-load beside it). Needs nginx, wrk and taskset
# (setup.sh --bench). Target: no difference beyond noise, and no error.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TERN_BIN=${TERN_BIN:-$REPO_ROOT/.build/release/tern}
ROUNDS=3
DURATION=10
CONNECTIONS=32
PAIRED=""
RATE=""
while (($#)); do
    case $1 in
        --paired) PAIRED=1; shift ;;
        --rate) RATE=${2:?}; shift 2 ;;
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --connections) CONNECTIONS=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done

LOAD_BIN=${LOAD_BIN:-$(dirname "$TERN_BIN")/tern-load}
[[ -z $PAIRED || -x $LOAD_BIN ]] || { echo "no $LOAD_BIN: swift build -c release" >&2; exit 1; }
[[ -n $PAIRED || -z $RATE ]] || { echo "--rate needs --paired" >&2; exit 64; }

PYTHON=$(python3 -c 'import sys; print(sys.executable)')
RIG_NAME=tern-swaps
# shellcheck source=lib/rig.sh
source "$REPO_ROOT/Benchmarks/lib/rig.sh"
require_bench_tools
start_origin "ok\n"

# Two canary subsets on the same origin (two endpoints: the address twice, distinct labels), split by weight.
write_config() {  # $1: weight of stable (beta gets the rest), $2: config dir (default mesh); written whole, then renamed over it
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
    mkdir -p "$WORK/${2:-mesh}"; mv "$WORK/mesh.tmp" "$WORK/${2:-mesh}/mesh.yaml"
}
write_config 20; cp "$WORK/mesh/mesh.yaml" "$WORK/mesh-20.yaml"
write_config 80; cp "$WORK/mesh/mesh.yaml" "$WORK/mesh-80.yaml"

start_tern() {  # $1: config dir, $2: file tag; sets TERN_PID and TERN_PORT
    local log=$WORK/tern-$2.log
    write_config 80 "$1"
    TERN_PORT=$(free_port)
    ${TERN_TASKSET:-taskset -c 0} "$TERN_BIN" proxy --http --config "$WORK/$1" --listen "127.0.0.1:$TERN_PORT" --cores 1 \
        --admin off --health off --prometheus off 2>"$log" &
    TERN_PID=$!
    for _ in $(seq 100); do grep -q "listening kind=http" "$log" && break; sleep 0.05; done
}

# One process does every swap (a shell loop would fork sed/cat/mv/kill ten times a second, and that process
# churn, not Tern, would show in the tail). The two files are rendered once; each swap renames a fresh copy
# over the watched file, then SIGHUP: the file watcher's 200 ms debounce would hold reloads back while changes
# keep coming every 100 ms (it applies the last one once they stop). The swapper stands in for the control
# plane, which runs elsewhere in a cluster: here it shares the two CPUs with the load, nginx and Tern, so it
# runs at idle priority (chrt -i 0). At normal priority its few milliseconds per swap on CPU 1, where the load
# and nginx are already saturated, showed as p99.
start_swapper() {  # $1: config dir, $2: Tern's pid, $3: Tern's log; sets SWAPPER
    # The interpreter itself, not a pyenv shim (whose bash start-up alone cost ~100 ms of CPU 1).
    taskset -c 0 chrt -i 0 "$PYTHON" - "$WORK" "$1" "$2" <<'PY' &
import os, shutil, signal, sys, time
work, conf, tern = sys.argv[1], sys.argv[2], int(sys.argv[3])
i = 0
start = time.monotonic()
while True:
    shutil.copyfile(f"{work}/mesh-{20 if i % 2 == 0 else 80}.yaml", f"{work}/{conf}/.next.yaml")
    os.rename(f"{work}/{conf}/.next.yaml", f"{work}/{conf}/mesh.yaml")
    os.kill(tern, signal.SIGHUP)
    i += 1
    # On a fixed schedule (10 a second), so a swap that waited for the CPU does not delay the next ones.
    time.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
PY
    SWAPPER=$!
    # The load starts once swaps are being applied (the swapper's start-up is not part of the run).
    for _ in $(seq 200); do grep -q "config applied version=3" "$3" && break; sleep 0.05; done
}

run() {  # $1: none|swaps|none-again, $2: round
    start_tern "mesh-$1" "$1-$2"
    local tern=$TERN_PID swapper=""
    if [[ $1 == swaps ]]; then start_swapper "mesh-$1" "$tern" "$WORK/tern-$1-$2.log"; swapper=$SWAPPER; fi
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Host: cart" "http://127.0.0.1:$TERN_PORT/" \
        >"$WORK/wrk-$1-$2.txt" 2>&1
    [[ -n $swapper ]] && { kill "$swapper"; wait "$swapper" 2>/dev/null || true; }
    kill -TERM "$tern"; wait "$tern" 2>/dev/null || true
}

# --paired: "none" and $1 (swaps or none-again) through one measured run, loaded in turns by tern-load --compare.
run_pair() {  # $1: swaps|none-again, $2: round
    start_tern "mesh-none@$1" "none@$1-$2"
    local tern_a=$TERN_PID port_a=$TERN_PORT
    start_tern "mesh-$1" "$1-$2"
    local tern_b=$TERN_PID port_b=$TERN_PORT swapper=""
    # Warm-up of both (connections, pools), then the swaps begin, then the measured run (after tern-load's own
    # warm-up: without it the run's first slice, always A's, carries the start-up transient into A's tail).
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d1s -H "Host: cart" "http://127.0.0.1:$port_a/" >/dev/null 2>&1
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d1s -H "Host: cart" "http://127.0.0.1:$port_b/" >/dev/null 2>&1
    if [[ $1 == swaps ]]; then start_swapper "mesh-$1" "$tern_b" "$WORK/tern-$1-$2.log"; swapper=$SWAPPER; fi
    # shellcheck disable=SC2046
    taskset -c 1 "$LOAD_BIN" --connections "$CONNECTIONS" $([[ -n $RATE ]] && echo "--rate $RATE") \
        --warmup 1s --duration "${DURATION}s" --header "Host: cart" --json \
        --compare "http://127.0.0.1:$port_a/" "http://127.0.0.1:$port_b/" >"$WORK/compare-$1-$2.json" 2>"$WORK/compare-$1-$2.err"
    [[ -n $swapper ]] && { kill "$swapper"; wait "$swapper" 2>/dev/null || true; }
    kill -TERM "$tern_a" "$tern_b"; wait "$tern_a" "$tern_b" 2>/dev/null || true
}

for ((r = 0; r < ROUNDS; r++)); do
    if [[ -n $PAIRED ]]; then
        # Alternate which pair goes first, so neither always meets the same part of a round.
        if ((r % 2 == 0)); then pairs=(swaps none-again); else pairs=(none-again swaps); fi
        for mode in "${pairs[@]}"; do
            echo "[$(date -u +%H:%M:%S)] round $((r + 1))/$ROUNDS: $mode beside none" >&2
            run_pair "$mode" "$r"
        done
        continue
    fi
    # none-again runs exactly as none: its ratio to none is the noise of the series (an A/A comparison).
    for mode in none swaps none-again; do
        echo "[$(date -u +%H:%M:%S)] round $((r + 1))/$ROUNDS: $mode" >&2
        run "$mode" "$r"
    done
done


if [[ -n $PAIRED ]]; then
    python3 - "$WORK" "$ROUNDS" "$DURATION" "$RATE" "$CONNECTIONS" <<'EOF'
import json, re, statistics, sys
work, rounds, duration, rate, connections = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
keys = ("requests_per_second", "p50", "p99", "p99_9")
def figures(d):
    return {"requests_per_second": d["requests_per_second"], **{k: d["latency_us"][k] for k in ("p50", "p99", "p99_9")},
            "errors": sum(d["errors"].values())}
print(f"Config swaps under load, paired: median of {rounds} rounds of {duration:.0f} s; tern-load --compare "
      + (f"--rate {rate} (open loop, latency from each request's intended send time)" if rate else f"closed loop")
      + f", {connections} keep-alive connections, the two Terns (one reactor each, CPU 0) loaded in 250 ms turns\n")
print("| pair | req/s ratio | p50 ratio | p99 ratio | p99.9 ratio | per-round p99 ratios | p99 µs (none, other) | errors (all rounds) | swaps applied per second |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for mode in ("swaps", "none-again"):
    ratios = {k: [] for k in keys}; errors = 0; swaps = []; p99s = []
    for r in range(rounds):
        d = json.load(open(f"{work}/compare-{mode}-{r}.json"))
        a, b = figures(d["a"]), figures(d["b"])
        for k in keys:
            ratios[k].append(b[k] / a[k])
        errors += a["errors"] + b["errors"]
        p99s.append((a["p99"], b["p99"]))
        log = open(f"{work}/tern-{mode}-{r}.log").read()
        swaps.append(max(0, len(re.findall(r"config applied version=", log)) - 3))
    med = {k: statistics.median(v) for k, v in ratios.items()}
    print(f"| none vs {mode} | {med['requests_per_second']:.3f} | {med['p50']:.3f} | {med['p99']:.3f} | {med['p99_9']:.3f} | "
          f"{', '.join(f'{x:.2f}' for x in ratios['p99'])} | {statistics.median(p[0] for p in p99s):.0f}, {statistics.median(p[1] for p in p99s):.0f} | "
          f"{errors} | {statistics.median(swaps) / (duration + 1):.1f} |")  # swaps go on through the 1 s warm-up
print("\nnone vs none-again is an A/A pair (no swaps on either): its ratios show how far two identical Terns differ in this rig.")
EOF
    exit 0
fi

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
