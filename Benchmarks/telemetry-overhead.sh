#!/usr/bin/env bash
# What telemetry costs (issue 6): Tern's CPU per proxied request with Istio's metrics on, with the access log
# on, with 1 % tracing on, and with all three, each against all off. `tern proxy --http --cores 1` (CPU 0)
# between the load (keep-alive, CPU 1) and an nginx origin (CPU 1), on loopback.
#
#   bash Benchmarks/telemetry-overhead.sh --rate 16000 --paired [--rounds N] [--duration SECONDS]   (the figure)
#   bash Benchmarks/telemetry-overhead.sh [--rounds N] [--duration SECONDS] [--connections N] [--rate R] [--json FILE]
#
# The figure: Tern's CPU time per request, the scheduler's run time of all its threads over the measured run
# (lib/rig.sh cpu_nanos: not utime+stime, which this kernel samples per 4 ms tick) over the requests the
# load completed, as a ratio to all off, the median of the per-round ratios. off-again (all off once more) is
# the A/A control: its ratio shows the noise of the series. Three ways to load, from noisiest to steadiest:
#   default     wrk in a closed loop, as fast as Tern answers, one variant after the other. CPU per request
#               then also depends on how busy the load CPU is (wrk, nginx and the span sink share it): a
#               variant that slows the other side gets smaller batches per io_uring_enter and pays more per
#               request for that alone; and consecutive runs on this VM differ by ±10 % in CPU per request.
#   --rate R    tern-load in an open loop at R requests per second, the same for every variant (as Istio's
#               own benchmarks load at a fixed rate); still one run after the other, so the VM's drift stays.
#   --paired    (with --rate) each variant and an all-off Tern run for the same measured run, and one
#               tern-load --compare sends the rate to them in turns (250 ms slices): both meet the same
#               moments of the machine and only one is busy at a time. The A/A ratio then stays within ±3 %.
#
# Environment: TERN_BIN (default .build/release/tern; tern-load beside it); ONLY_VARIANTS="metrics all" runs
# a subset beside off; KEEP_LOGS=1 keeps the temp dir. Needs nginx, wrk and taskset (bash
# Tools/scripts/setup.sh --bench). Targets: metrics at most 3 % above all off, all three at most 10 %.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TERN_BIN=${TERN_BIN:-$REPO_ROOT/.build/release/tern}
ROUNDS=3
DURATION=8
CONNECTIONS=64
JSON_OUT=""
RATE=""
PAIRED=""
while (($#)); do
    case $1 in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --connections) CONNECTIONS=${2:?}; shift 2 ;;
        --rate) RATE=${2:?}; shift 2 ;;
        --paired) PAIRED=1; shift ;;
        --json) JSON_OUT=$(realpath -m "${2:?}"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done
LOAD_BIN=${LOAD_BIN:-$(dirname "$TERN_BIN")/tern-load}
[[ -z $RATE || -x $LOAD_BIN ]] || { echo "no $LOAD_BIN: swift build -c release" >&2; exit 1; }
[[ -z $PAIRED || -n $RATE ]] || { echo "--paired needs --rate" >&2; exit 64; }

RIG_NAME=tern-telemetry-bench
# shellcheck source=lib/rig.sh
source "$REPO_ROOT/Benchmarks/lib/rig.sh"
require_bench_tools
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
        off|off-again) echo "--metrics off" ;;
        metrics) echo "--metrics on" ;;
        access-log) echo "--metrics off --access-log $WORK/access-$2.log" ;;
        tracing-1pct) echo "--metrics off --trace-collector $COLLECTOR --trace-sampling 1" ;;
        all) echo "--metrics on --access-log $WORK/access-$2.log --trace-collector $COLLECTOR --trace-sampling 1" ;;
    esac
}
# off-again is all off once more: its ratio to off is the noise floor of the series (an A/A comparison).
VARIANTS=(off off-again metrics access-log tracing-1pct all)
[[ -z ${ONLY_VARIANTS:-} ]] || read -r -a VARIANTS <<<"off $ONLY_VARIANTS"
CLK_TCK=$(getconf CLK_TCK)

start_tern() {  # $1 variant, $2 file tag; sets TERN_PID and TERN_PORT
    local log=$WORK/tern-$2.log
    TERN_PORT=$(free_port)
    # shellcheck disable=SC2046
    taskset -c 0 "$TERN_BIN" proxy "${BASE[@]}" $(variant_args "$1" "$2") --listen "127.0.0.1:$TERN_PORT" \
        --upstream "127.0.0.1:$ORIGIN_PORT" 2>"$log" &
    TERN_PID=$!
    for _ in $(seq 100); do grep -q "listening kind=http" "$log" && break; sleep 0.05; done
}
cpu0_busy() { awk '$1 == "cpu0" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

run() {  # $1 variant, $2 round
    local tag=$1-$2
    rm -f "$WORK/access-$tag.log"
    start_tern "$1" "$tag"
    local tern=$TERN_PID port=$TERN_PORT
    # Warm-up (connections, pools, rings), then the measured run.
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port/" >/dev/null 2>&1
    local t0 busy0
    t0=$(cpu_nanos "$tern")
    busy0=$(cpu0_busy)
    if [[ -n $RATE ]]; then
        taskset -c 1 "$LOAD_BIN" --rate "$RATE" --connections "$CONNECTIONS" --duration "${DURATION}s" --json \
            "http://127.0.0.1:$port/" >"$WORK/load-$tag.json" 2>"$WORK/load-$tag.err"
    else
        taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/" >"$WORK/wrk-$tag.txt" 2>&1
    fi
    local t1 busy1
    t1=$(cpu_nanos "$tern")
    busy1=$(cpu0_busy)
    kill -TERM "$tern"; wait "$tern" 2>/dev/null || true
    echo "$(( t1 - t0 )) $(( busy1 - busy0 ))" >"$WORK/ticks-$tag.txt"
}

# --paired: the variant and an all-off Tern both run on CPU 0 for the whole measured run, and one tern-load
# --compare sends the --rate to them in turns (250 ms slices: A, B, A, …), so both meet the same moments of
# the shared machine and its drift cancels in the ratio, while only one of them is busy at a time (two loaded
# at once skew each other: the one with more work per wake-up batches more and looked cheaper than all off).
# The baseline's files are tagged off@VARIANT.
run_pair() {  # $1 variant, $2 round
    local tag=$1-$2 base=off@$1-$2
    rm -f "$WORK/access-$tag.log"
    start_tern off "$base"
    local tern_a=$TERN_PID port_a=$TERN_PORT
    start_tern "$1" "$tag"
    local tern_b=$TERN_PID port_b=$TERN_PORT
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d1s "http://127.0.0.1:$port_a/" >/dev/null 2>&1
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d1s "http://127.0.0.1:$port_b/" >/dev/null 2>&1
    local a0 b0 a1 b1
    a0=$(cpu_nanos "$tern_a"); b0=$(cpu_nanos "$tern_b")
    taskset -c 1 "$LOAD_BIN" --rate "$RATE" --connections "$CONNECTIONS" --duration "${DURATION}s" --json \
        --compare "http://127.0.0.1:$port_a/" "http://127.0.0.1:$port_b/" >"$WORK/compare-$tag.json" 2>"$WORK/compare-$tag.err"
    a1=$(cpu_nanos "$tern_a"); b1=$(cpu_nanos "$tern_b")
    kill -TERM "$tern_a" "$tern_b"; wait "$tern_a" "$tern_b" 2>/dev/null || true
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); [json.dump(d[k], open(f, "w")) for k, f in (("a", sys.argv[2]), ("b", sys.argv[3]))]' \
        "$WORK/compare-$tag.json" "$WORK/load-$base.json" "$WORK/load-$tag.json"
    echo "$(( a1 - a0 )) 0" >"$WORK/ticks-$base.txt"
    echo "$(( b1 - b0 )) 0" >"$WORK/ticks-$tag.txt"
}

for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < ${#VARIANTS[@]}; i++)); do
        v=${VARIANTS[(i + r) % ${#VARIANTS[@]}]}
        if [[ -n $PAIRED ]]; then
            [[ $v == off ]] && continue
            echo "[$(date -u +%H:%M:%S)] round $((r + 1))/$ROUNDS: $v beside off" >&2
            run_pair "$v" "$r"
        else
            echo "[$(date -u +%H:%M:%S)] round $((r + 1))/$ROUNDS: $v" >&2
            run "$v" "$r"
        fi
    done
done

CONNECTIONS=$CONNECTIONS PAIRED=$PAIRED python3 - "$WORK" "$ROUNDS" "$DURATION" "$CLK_TCK" "$JSON_OUT" "$RATE" "${VARIANTS[@]}" <<'EOF'
import json, os, re, statistics, sys
work, rounds, duration, clk, json_out, rate, variants = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7:]
paired = bool(os.environ.get("PAIRED"))
if paired:
    variants = [v for v in variants if v != "off"]
def unit(v, u):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
runs = {}
tags = variants + ([f"off@{v}" for v in variants] if paired else [])
for v in tags:
    for r in range(rounds):
        if rate:
            load = json.load(open(f"{work}/load-{v}-{r}.json"))
            requests, rps = load["requests"], load["requests_per_second"]
            p99 = load["latency_us"]["p99"] / 1000
            errors = sum(load["errors"].values())
        else:
            wrk = open(f"{work}/wrk-{v}-{r}.txt").read()
            requests = int(re.search(r"(\d+) requests in", wrk).group(1))
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
            p99 = unit(*re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", wrk, re.M).groups())
            errors = int((re.search(r"Non-2xx or 3xx responses: (\d+)", wrk) or [0, 0])[1])
        tern_ns, cpu0_ticks = map(int, open(f"{work}/ticks-{v}-{r}.txt").read().split())
        tern_log = open(f"{work}/tern-{v}-{r}.log", errors="replace").read()
        lines_dropped = max([int(n) for n in re.findall(r"; (\d+) in all\)", tern_log)] or [0])
        runs.setdefault(v, []).append({
            "access_log_lines_dropped": lines_dropped,
            "requests": requests, "req_per_s": rps, "p99_ms": p99, "errors": errors,
            "cpu_us_per_req": tern_ns / 1e3 / requests,
            "other_cpu0_pct": 0.0 if paired else max(0.0, 100 * (cpu0_ticks / clk - tern_ns / 1e9) / duration),
        })
med = lambda v, k: statistics.median(r[k] for r in runs[v])
targets = {"metrics": 1.03, "all": 1.10}
load = f"tern-load --rate {rate} (open loop)" if rate else "wrk closed loop"
print(f"Telemetry cost, Tern --cores 1, {load}, -c{os.environ.get('CONNECTIONS', '')} keep-alive, {rounds} rounds × {duration:.0f} s, 100-byte responses\n")
if paired:
    print("Paired: each variant and an all-off Tern were loaded in turns (250 ms slices) over the same run; its ratio is to that one.\n")
print("| variant | req/s | p99 ms | CPU µs/req | ratio to all off (median of per-round ratios) | per-round ratios | other work on Tern's CPU % | target |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
summary = {}
for v in variants:
    base = f"off@{v}" if paired else "off"
    ratios = [runs[v][r]["cpu_us_per_req"] / runs[base][r]["cpu_us_per_req"] for r in range(rounds)]
    ratio = statistics.median(ratios)
    t = targets.get(v)
    verdict = "" if t is None else (f"≤ {t:.2f}: " + ("met" if ratio <= t else "NOT met"))
    summary[v] = {"cpu_us_per_req": med(v, "cpu_us_per_req"), "ratio": ratio, "ratios": ratios, "req_per_s": med(v, "req_per_s")}
    print(f"| {v} | {med(v, 'req_per_s'):,.0f} | {med(v, 'p99_ms'):.2f} | {med(v, 'cpu_us_per_req'):.2f} | {ratio:.3f} | "
          f"{', '.join(f'{x:.2f}' for x in ratios)} | {med(v, 'other_cpu0_pct'):.0f} | {verdict} |")
errors = sum(r["errors"] for rs in runs.values() for r in rs)
print(f"\nFailed requests (non-2xx{', connect, timeout, reset' if rate else ''}) in all runs: {errors}.")
dropped = sum(r["access_log_lines_dropped"] for rs in runs.values() for r in rs)
print(f"Access-log lines dropped (a reactor's ring full) in all runs: {dropped}.")
if json_out:
    json.dump({"summary": summary, "runs": runs}, open(json_out, "w"), indent=2)
EOF
