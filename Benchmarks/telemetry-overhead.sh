#!/usr/bin/env bash
# What telemetry costs (issue 6): Tern's CPU per proxied request with Istio's metrics on, with the access log
# on, with 1 % tracing on, and with all three, each against all off. `tern proxy --http --cores 1` (CPU 0)
# between wrk (keep-alive, CPU 1) and an nginx origin (CPU 1), on loopback.
#
# The figure: Tern's CPU time per request (utime+stime over the measured run / requests wrk completed). CPU time
# on this shared 2-core machine drifts between runs, so variants alternate within each round (the order
# rotates), each variant is compared with the all-off run of the same round, and the report gives the median
# of those per-round ratios (and the other work seen on Tern's CPU, which skews a run when high). Instruction
# counts would be steadier, but this VM exposes no hardware counters to perf.
#
#   bash Benchmarks/telemetry-overhead.sh [--rounds N] [--duration SECONDS] [--connections N] [--json FILE]
#
# Environment: TERN_BIN (default .build/release/tern); KEEP_LOGS=1 keeps the temp dir. Needs nginx, wrk
# and taskset (bash Tools/scripts/setup.sh --bench). Targets: metrics at most 3 % above all off, all three
# at most 10 %.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TERN_BIN=${TERN_BIN:-$REPO_ROOT/.build/release/tern}
ROUNDS=3
DURATION=8
CONNECTIONS=64
JSON_OUT=""
while (($#)); do
    case $1 in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --connections) CONNECTIONS=${2:?}; shift 2 ;;
        --json) JSON_OUT=$(realpath -m "${2:?}"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done
for tool in nginx wrk taskset python3; do
    command -v "$tool" >/dev/null || { echo "$tool missing: run bash Tools/scripts/setup.sh --bench" >&2; exit 1; }
done
[[ -x $TERN_BIN ]] || { echo "no $TERN_BIN: swift build -c release" >&2; exit 1; }

RIG_NAME=tern-telemetry-bench
# shellcheck source=lib/rig.sh
source "$REPO_ROOT/Benchmarks/lib/rig.sh"
start_origin "$(head -c 100 /dev/zero | tr '\0' x)"

# A span sink on the load CPU: answers every POST 202, as Zipkin does.
COLLECTOR_PORT=$(free_port)
taskset -c 1 python3 - "$COLLECTOR_PORT" >"$WORK/collector.log" 2>&1 <<'EOF' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(202); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
PIDS+=($!)
sleep 0.5

BASE=(--http --cores 1 --admin off --health off --prometheus off)
COLLECTOR="http://127.0.0.1:$COLLECTOR_PORT/api/v2/spans"
variant_args() {
    case $1 in
        off) echo "--metrics off" ;;
        metrics) echo "--metrics on" ;;
        access-log) echo "--metrics off --access-log $WORK/access.log" ;;
        tracing-1pct) echo "--metrics off --trace-collector $COLLECTOR --trace-sampling 1" ;;
        all) echo "--metrics on --access-log $WORK/access.log --trace-collector $COLLECTOR --trace-sampling 1" ;;
    esac
}
VARIANTS=(off metrics access-log tracing-1pct all)
CLK_TCK=$(getconf CLK_TCK)
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

run() {  # $1 variant, $2 round
    local port log=$WORK/tern-$1-$2.log
    port=$(free_port)
    rm -f "$WORK/access.log"
    # shellcheck disable=SC2046
    taskset -c 0 "$TERN_BIN" proxy "${BASE[@]}" $(variant_args "$1") --listen "127.0.0.1:$port" \
        --upstream "127.0.0.1:$ORIGIN_PORT" 2>"$log" &
    local tern=$!
    for _ in $(seq 100); do grep -q "listening kind=http" "$log" && break; sleep 0.05; done
    # Warm-up (connections, pools, rings), then the measured run.
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port/" >/dev/null 2>&1
    local t0 busy0
    t0=$(ticks "$tern")
    busy0=$(awk '$1 == "cpu0" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/" >"$WORK/wrk-$1-$2.txt" 2>&1
    local t1 busy1
    t1=$(ticks "$tern")
    busy1=$(awk '$1 == "cpu0" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
    kill -TERM "$tern"; wait "$tern" 2>/dev/null || true
    echo "$(( t1 - t0 )) $(( busy1 - busy0 ))" >"$WORK/ticks-$1-$2.txt"
}

for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < ${#VARIANTS[@]}; i++)); do
        v=${VARIANTS[(i + r) % ${#VARIANTS[@]}]}
        echo "[$(date -u +%H:%M:%S)] round $((r + 1))/$ROUNDS: $v" >&2
        run "$v" "$r"
    done
done

python3 - "$WORK" "$ROUNDS" "$DURATION" "$CLK_TCK" "$JSON_OUT" "${VARIANTS[@]}" <<'EOF'
import json, re, statistics, sys
work, rounds, duration, clk, json_out, variants = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6:]
def unit(v, u):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
runs = {}
for v in variants:
    for r in range(rounds):
        wrk = open(f"{work}/wrk-{v}-{r}.txt").read()
        requests = int(re.search(r"(\d+) requests in", wrk).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
        p99 = unit(*re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", wrk, re.M).groups())
        errors = int((re.search(r"Non-2xx or 3xx responses: (\d+)", wrk) or [0, 0])[1])
        tern_ticks, cpu0_ticks = map(int, open(f"{work}/ticks-{v}-{r}.txt").read().split())
        runs.setdefault(v, []).append({
            "requests": requests, "req_per_s": rps, "p99_ms": p99, "errors": errors,
            "cpu_us_per_req": tern_ticks / clk * 1e6 / requests,
            "other_cpu0_pct": max(0.0, 100 * (cpu0_ticks - tern_ticks) / clk / duration),
        })
med = lambda v, k: statistics.median(r[k] for r in runs[v])
targets = {"metrics": 1.03, "all": 1.10}
print(f"Telemetry cost, Tern --cores 1, wrk -c64 keep-alive, {rounds} rounds × {duration:.0f} s, 100-byte responses\n")
print("| variant | req/s | p99 ms | CPU µs/req | ratio to all off (median of per-round ratios) | per-round ratios | other work on Tern's CPU % | target |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
summary = {}
for v in variants:
    ratios = [runs[v][r]["cpu_us_per_req"] / runs["off"][r]["cpu_us_per_req"] for r in range(rounds)]
    ratio = statistics.median(ratios)
    t = targets.get(v)
    verdict = "" if t is None else (f"≤ {t:.2f}: " + ("met" if ratio <= t else "NOT met"))
    summary[v] = {"cpu_us_per_req": med(v, "cpu_us_per_req"), "ratio": ratio, "ratios": ratios, "req_per_s": med(v, "req_per_s")}
    print(f"| {v} | {med(v, 'req_per_s'):,.0f} | {med(v, 'p99_ms'):.2f} | {med(v, 'cpu_us_per_req'):.2f} | {ratio:.3f} | "
          f"{', '.join(f'{x:.2f}' for x in ratios)} | {med(v, 'other_cpu0_pct'):.0f} | {verdict} |")
errors = sum(r["errors"] for rs in runs.values() for r in rs)
print(f"\nNon-2xx responses in all runs: {errors}.")
if json_out:
    json.dump({"summary": summary, "runs": runs}, open(json_out, "w"), indent=2)
EOF
