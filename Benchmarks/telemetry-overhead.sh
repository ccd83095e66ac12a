#!/usr/bin/env bash
# What telemetry costs (issue 6): Tern's CPU per proxied request with Istio's metrics on, with the access log
# on, with 1 % tracing on, and with all three, each against all off, under the same keep-alive load as
# Benchmarks/http-proxy.sh (which this runs, `--only tern`, once per variant and round, with nginx as the
# origin and wrk as the load). Variants alternate within each round (the order rotates), so slow drift on
# this shared machine falls on all of them alike; the report is the median over rounds.
#
#   bash Benchmarks/telemetry-overhead.sh [--rounds N] [--duration SECONDS] [--json FILE]
#
#   --rounds N       rounds (default 3); each runs every variant once
#   --duration N     seconds per measured run (default 10, after http-proxy.sh's 2 s warm-up)
#   --json FILE      also write every run's figures and the medians to FILE
#
# Environment: TERN_BIN as for http-proxy.sh (default .build/release/tern); KEEP_LOGS=1 keeps the temp dir.
# Targets: metrics at most 3 % above all-off, all three at most 10 %.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=3
DURATION=10
JSON_OUT=""
while (($#)); do
    case $1 in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --json) JSON_OUT=$(realpath -m "${2:?}"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done

WORK=$(mktemp -d /tmp/tern-telemetry-bench.XXXXXX)
COLLECTOR_PID=""
cleanup() {
    [[ -n $COLLECTOR_PID ]] && kill "$COLLECTOR_PID" 2>/dev/null || true
    [[ ${KEEP_LOGS:-0} == 1 ]] && echo "logs kept in $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

# A span sink on the load CPU: answers every POST 202 (Zipkin's answer) and counts the spans' bytes.
COLLECTOR_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
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
COLLECTOR_PID=$!

# Side listeners off in every variant (they cost nothing per request, and ports stay free).
BASE="--admin off --health off --prometheus off"
declare -A ARGS=(
    [off]="$BASE --metrics off"
    [metrics]="$BASE --metrics on"
    [access-log]="$BASE --metrics off --access-log $WORK/access.log"
    [tracing-1pct]="$BASE --metrics off --trace-collector http://127.0.0.1:$COLLECTOR_PORT/api/v2/spans --trace-sampling 1"
    [all]="$BASE --metrics on --access-log $WORK/access.log --trace-collector http://127.0.0.1:$COLLECTOR_PORT/api/v2/spans --trace-sampling 1"
)
VARIANTS=(off metrics access-log tracing-1pct all)

for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < ${#VARIANTS[@]}; i++)); do
        v=${VARIANTS[(i + r) % ${#VARIANTS[@]}]}
        echo "[$(date -u +%H:%M:%S)] round $((r + 1))/$ROUNDS: $v" >&2
        rm -f "$WORK/access.log"
        TERN_ARGS="${ARGS[$v]}" bash "$REPO_ROOT/Benchmarks/http-proxy.sh" --only tern --duration "$DURATION" \
            --retries 1 --json "$WORK/$r-$v.json" >"$WORK/$r-$v.out" 2>&1 ||
            { echo "run failed: $(tail -n 5 "$WORK/$r-$v.out")" >&2; exit 1; }
    done
done

python3 - "$WORK" "$ROUNDS" "$JSON_OUT" "${VARIANTS[@]}" <<'EOF'
import json, statistics, sys
work, rounds, json_out, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
runs = {}
for v in variants:
    for r in range(rounds):
        for row in json.load(open(f"{work}/{r}-{v}.json"))["results"]:
            if row.get("proxy") != "tern" or row.get("cpu_us_per_req") is None:
                continue
            runs.setdefault((v, row["body"]), []).append(row)
sizes = sorted({s for (_, s) in runs})
targets = {"metrics": 1.03, "all": 1.10}
print(f"Tern CPU per request by telemetry variant: median of {rounds} rounds (µs of CPU per request; ratio to all off)\n")
print("| response | variant | CPU µs/req | ratio | req/s | p99 ms | target |")
print("| --- | --- | --- | --- | --- | --- | --- |")
medians = {}
for size in sizes:
    base = statistics.median(r["cpu_us_per_req"] for r in runs[("off", size)])
    for v in variants:
        rows = runs[(v, size)]
        cpu = statistics.median(r["cpu_us_per_req"] for r in rows)
        rps = statistics.median(r["req_per_s"] for r in rows)
        p99 = statistics.median(r["latency_us"]["p99"] for r in rows) / 1000
        ratio = cpu / base
        t = targets.get(v)
        verdict = "" if t is None else (f"≤ {t:.2f}: " + ("met" if ratio <= t else "NOT met"))
        medians[f"{size}/{v}"] = {"cpu_us_per_req": cpu, "ratio": ratio, "req_per_s": rps}
        print(f"| {size} | {v} | {cpu:.2f} | {ratio:.3f} | {rps:,.0f} | {p99:.2f} | {verdict} |")
if json_out:
    json.dump({"medians": medians, "runs": {f"{v}/{s}": rs for (v, s), rs in runs.items()}}, open(json_out, "w"), indent=2)
EOF
