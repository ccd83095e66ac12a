#!/usr/bin/env bash
# Side-by-side HTTP/1.1 keep-alive proxy benchmark: Tern (`tern proxy --http --cores 1`) against nginx,
# HAProxy and Caddy in front of the same nginx origin, plus a direct (no proxy) baseline, on loopback, in one
# go. Prints a markdown table of req/s, p50, p99 and the proxy's CPU microseconds per request, with ratios to
# nginx and the targets from the issue, and optionally writes the results as JSON. See Benchmarks/README.md.
#
#   bash Benchmarks/http-proxy.sh [--duration SECONDS] [--connections N] [--only NAME,...] [--json FILE]
#                                 [--retries N] [--load wrk,tern-load]
#
#   --duration N     seconds per measured run (default 10; each is preceded by a 2 s warm-up)
#   --connections N  connections, all on one load thread (default 64)
#   --only LIST      comma-separated rows to run, from: direct nginx haproxy caddy tern tern-tcp
#                    (default: direct,nginx,haproxy,caddy,tern; tern-tcp is Tern's plain TCP relay, an L4
#                    reference only, not an HTTP proxy)
#   --json FILE      also write every figure, the settings and the versions to FILE
#   --load LIST      load generators, comma-separated: wrk (default), tern-load, or both (each row then
#                    runs under each, and ratios compare figures taken with the same generator)
#   --retries N      measure a run again, up to N times (default 2), when more than 10 % of either CPU went
#                    to other work during it (this machine is shared), after waiting up to 30 s for idle CPUs
#   --paired RATE    instead of the rows one after the other: Tern beside each peer in --only (both on CPU 0,
#                    both running through the whole measured run), and one `tern-load --compare PEER TERN
#                    --rate RATE` sends the same open-loop rate to them in turns (250 ms slices), so both meet
#                    the same moments of the shared VM and its drift (±10 % and more between consecutive runs)
#                    cancels in each round's ratio of CPU per request. --rounds N (default 5) rounds per body;
#                    the report gives the median of the per-round ratios. With the row `tern-base` in --only
#                    the peer is another Tern build ($TERN_BASE_BIN, same flags): an A/B of two builds.
#
# Environment:
#   TERN_BIN   tern binary (default .build/release/tern under the repo root); when it is missing, fails to
#              start or does not know --http yet, Tern's rows say "not available" and the rest still runs
#   TERN_ARGS  extra flags for Tern's rows, word-split (e.g. "--io-backend epoll")
#   TERN_BASE_BIN  the other Tern build for the `tern-base` row (--paired only), e.g. one built from the
#              commit before a change: `git worktree add /tmp/base HEAD~1` and build it there
#   TERN_LOAD_BIN  tern-load binary for --load tern-load (default .build/release/tern-load under the repo
#              root; `swift build -c release` builds it)
#   KEEP_LOGS  set to 1 to keep the temp dir with configs, logs and the load generators' output
#
# CPU layout (2 cores): the proxy under test on CPU 0; the origin nginx and the load on CPU 1. The script installs
# nothing: it checks for wrk, nginx, haproxy, caddy, curl, python3, ss, pgrep and taskset and says to run
# `bash Tools/scripts/setup.sh --bench` when one is missing. It runs its own instances with their own config
# files in a temp dir, on free 127.0.0.1 ports, and a trap stops every process it started.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TERN_BIN=${TERN_BIN:-$REPO_ROOT/.build/release/tern}
TERN_ARGS=${TERN_ARGS:-}
TERN_LOAD_BIN=${TERN_LOAD_BIN:-$REPO_ROOT/.build/release/tern-load}
KEEP_LOGS=${KEEP_LOGS:-0}

DURATION=10
CONNECTIONS=64
ONLY=direct,nginx,haproxy,caddy,tern
JSON_OUT=""
RETRIES=2
LOAD=wrk
PAIRED_RATE=""
ROUNDS=5
WARMUP=2
OTHER_MAX=10   # % of a CPU going to other work above which a run is measured again (see --retries)

PROXY_CPU=0
LOAD_CPU=1   # origin and the load generator

SMALL_BYTES=100
LARGE_BYTES=16384
KNOWN_ROWS=(direct nginx haproxy caddy tern tern-tcp tern-base)

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-0}"; }

while (( $# )); do
    case $1 in
        --duration)    DURATION=${2:?--duration needs a value}; shift 2 ;;
        --connections) CONNECTIONS=${2:?--connections needs a value}; shift 2 ;;
        --only)        ONLY=${2:?--only needs a value}; shift 2 ;;
        --json)        JSON_OUT=${2:?--json needs a file}; shift 2 ;;
        --retries)     RETRIES=${2:?--retries needs a value}; shift 2 ;;
        --load)        LOAD=${2:?--load needs a value}; shift 2 ;;
        --paired)      PAIRED_RATE=${2:?--paired needs a rate}; shift 2 ;;
        --rounds)      ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
        -h|--help)     usage 0 ;;
        *)             log "unknown argument: $1"; usage 64 ;;
    esac
done
DURATION=${DURATION%s}
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration must be whole seconds above zero, got '$DURATION'"
[[ $RETRIES =~ ^[0-9]+$ ]] || die "--retries must be a whole number, got '$RETRIES'"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "--connections must be a whole number above zero, got '$CONNECTIONS'"
IFS=, read -r -a ROWS <<<"$ONLY"
for r in "${ROWS[@]}"; do
    [[ " ${KNOWN_ROWS[*]} " == *" $r "* ]] || die "--only: unknown row '$r' (known: ${KNOWN_ROWS[*]})"
done
(( ${#ROWS[@]} )) || die "--only: no rows"
if [[ " ${ROWS[*]} " == *" tern-base "* ]]; then
    [[ -n $PAIRED_RATE ]] || die "--only tern-base compares two Tern builds and needs --paired RATE"
    [[ -x ${TERN_BASE_BIN:-} ]] || die "--only tern-base: set TERN_BASE_BIN to the other Tern build's binary"
fi
IFS=, read -r -a LOADS <<<"$LOAD"
for g in "${LOADS[@]}"; do
    [[ $g == wrk || $g == tern-load ]] || die "--load: unknown generator '$g' (known: wrk tern-load)"
done
(( ${#LOADS[@]} )) || die "--load: no generator"
if [[ -n $JSON_OUT ]]; then
    JSON_OUT=$(realpath -m "$JSON_OUT")
    : >"$JSON_OUT" 2>/dev/null || die "--json: cannot write $JSON_OUT"
fi
wants() { [[ " ${ROWS[*]} " == *" $1 "* ]]; }

# --- Tools -----------------------------------------------------------------------------------------------

(( $(nproc) >= 2 )) || die "needs at least 2 CPUs (proxy on CPU $PROXY_CPU, origin and load on CPU $LOAD_CPU)"
need=(nginx curl python3 ss taskset pgrep)
[[ " ${LOADS[*]} " == *" wrk "* ]] && need+=(wrk)
wants haproxy && need+=(haproxy)
wants caddy && need+=(caddy)
missing=()
for t in "${need[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
(( ${#missing[@]} == 0 )) || die "missing ${missing[*]}: run \`bash Tools/scripts/setup.sh --bench\` (as root) first"
if [[ ( -n $PAIRED_RATE || " ${LOADS[*]} " == *" tern-load "* ) && ! -x $TERN_LOAD_BIN ]]; then
    die "no tern-load at $TERN_LOAD_BIN (build with: swift build -c release, or set TERN_LOAD_BIN)"
fi

WORK=$(mktemp -d /tmp/tern-http-proxy.XXXXXX)
chmod 755 "$WORK"   # nginx workers run as nobody when started by root and must read the origin's files
STARTED_PIDS=()   # our children still running; cleanup stops them by pid

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${STARTED_PIDS[@]}"; do
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_LOGS == 1 ]]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)   # other work on the machine skews every figure
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')

# --- Helpers ---------------------------------------------------------------------------------------------

# A free TCP port on 127.0.0.1, chosen by the kernel (bind to port 0), picked just before its server starts.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to $3 seconds (default 10) for a listener on 127.0.0.1:$1 while pid $2 lives; returns 1 if
# the process exited or the deadline passed.
wait_listening() {
    local port=$1 pid=$2 deadline=$(( SECONDS + ${3:-10} ))
    while (( SECONDS < deadline )); do
        ss -Hltn "sport = :$port" | grep -q . && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# cpu_nanos PID: CPU time of a process and its direct children (nginx's worker), from the scheduler's account.
# shellcheck source=lib/cpu.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cpu.sh"

# TCP sockets in TIME-WAIT with port $1 at either end: each closed connection leaves one, for 60 s, so the
# growth over a run counts connections closed during it (a proxy not reusing upstream connections shows here).
time_wait_count() { ss -Htn state time-wait "( sport = :$1 or dport = :$1 )" | wc -l; }
established_to() { ss -Htn state established "( dport = :$1 )" | wc -l; }

# Stops our child $1 with SIGTERM, waits up to 10 s, then SIGKILL.
stop_pid() {
    local pid=$1 p kept=()
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; log "pid $pid ignored SIGTERM for 10s, killed"; fi
    wait "$pid" 2>/dev/null || true
    for p in "${STARTED_PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    STARTED_PIDS=("${kept[@]}")
}

# Starts "$@" in the background on CPU $1 (the rest is the command), logging to $WORK/$NAME.log;
# sets LAST_PID.
spawn() {
    local cpu=$1 name=$2; shift 2
    taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}

# nginx's compiled-in temp paths are under /var/lib/nginx; keep every instance inside its own dir.
nginx_common() {
    local dir=$1
    cat <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() {
    local dir=$1
    cat <<EOF
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
EOF
}

# How busy both CPUs are before anything of ours runs, in % over 1 s: another job on this shared machine
# skews every figure (the per-run "Other work" column shows it too).
busy_before() {
    local a b
    a=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    sleep 1
    b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    python3 -c "a, ai, b, bi = map(int, '$a $b'.split()); t = (b - a) + (bi - ai); print(round(100 * (b - a) / t) if t else 0)"
}
BUSY_AT_START=$(busy_before)
(( BUSY_AT_START <= 10 )) || log "warning: the machine is already ${BUSY_AT_START}% busy (load average $LOAD_AT_START): figures will be skewed"

# --- Origin: nginx on CPU 1, /small (100 B) and /16k (16 KiB) ---------------------------------------------

mkdir -p "$WORK/origin/www"
head -c "$SMALL_BYTES" /dev/zero | tr '\0' 's' >"$WORK/origin/www/small"
head -c "$LARGE_BYTES" /dev/zero | tr '\0' 'L' >"$WORK/origin/www/16k"
ORIGIN_PORT=$(free_port)
{
    nginx_common "$WORK/origin"
    echo "http {"
    nginx_http_common "$WORK/origin"
    cat <<EOF
    sendfile on;
    open_file_cache max=16;
    open_file_cache_valid 1h;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $WORK/origin/www;
    }
}
EOF
} >"$WORK/origin.conf"
spawn "$LOAD_CPU" origin nginx -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin.conf"
ORIGIN_PID=$LAST_PID
wait_listening "$ORIGIN_PORT" "$ORIGIN_PID" || die "origin nginx did not start: $(tail -n 5 "$WORK/origin.log" "$WORK/origin/error.log" 2>/dev/null)"

# --- Proxies on CPU 0 ------------------------------------------------------------------------------------
# Each start_NAME picks a port, starts the proxy, sets PROXY_PID and PROXY_PORT, and returns non-zero (with
# START_ERROR set) if it did not come up.

start_nginx() {
    local dir=$WORK/nginx
    mkdir -p "$dir"
    PROXY_PORT=$(free_port)
    {
        nginx_common "$dir"
        echo "http {"
        nginx_http_common "$dir"
        cat <<EOF
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    # The worker inherits the master's CPU affinity.
    spawn "$PROXY_CPU" nginx nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
    PROXY_PID=$LAST_PID
    wait_listening "$PROXY_PORT" "$PROXY_PID" || { START_ERROR="nginx did not start: $(tail -n 3 "$dir/error.log" 2>/dev/null)"; return 1; }
}

start_haproxy() {
    PROXY_PORT=$(free_port)
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:$PROXY_PORT
    default_backend origin
backend origin
    server origin 127.0.0.1:$ORIGIN_PORT
EOF
    spawn "$PROXY_CPU" haproxy haproxy -db -f "$WORK/haproxy.cfg"
    PROXY_PID=$LAST_PID
    wait_listening "$PROXY_PORT" "$PROXY_PID" || { START_ERROR="haproxy did not start: $(tail -n 3 "$WORK/haproxy.log")"; return 1; }
}

start_caddy() {
    local dir=$WORK/caddy
    mkdir -p "$dir"
    PROXY_PORT=$(free_port)
    # http:// and auto_https off: no certificates, no ACME, no redirect listener on :80; admin off: no
    # listener on :2019; errors only in the log; HTTP/1.1 only. Up to 64 idle upstream connections, as nginx's
    # keepalive 64, rather than relying on a default (Go's own, 2 per host, would churn upstream connections).
    cat >"$dir/Caddyfile" <<EOF
{
	admin off
	auto_https off
	log {
		level ERROR
	}
	servers {
		protocols h1
	}
}
http://:$PROXY_PORT {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$ORIGIN_PORT {
		transport http {
			keepalive 300s
			keepalive_idle_conns 128
			keepalive_idle_conns_per_host 64
		}
	}
}
EOF
    # HOME and XDG dirs inside the temp dir: Caddy keeps its data and autosaved config there.
    spawn "$PROXY_CPU" caddy env GOMAXPROCS=1 HOME="$dir" XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" \
        caddy run --config "$dir/Caddyfile" --adapter caddyfile
    PROXY_PID=$LAST_PID
    wait_listening "$PROXY_PORT" "$PROXY_PID" || { START_ERROR="caddy did not start: $(tail -n 3 "$WORK/caddy.log")"; return 1; }
}

# start_tern NAME [EXTRA_FLAG...]: tern proxy --cores 1 on CPU 0 (Tern's reactor takes the first CPU of its
# inherited mask, so CPU 0). `tern proxy` executes tern-engine in the same process, so PROXY_PID stays right.
start_tern() {
    local name=$1; shift
    PROXY_PORT=$(free_port)
    local bin=${TERN_ROW_BIN:-$TERN_BIN}
    if [[ ! -x $bin ]]; then
        START_ERROR="no tern binary at $bin (build with: swift build -c release --static-swift-stdlib, or set TERN_BIN)"
        return 1
    fi
    # shellcheck disable=SC2086 # TERN_ARGS is a list of flags
    spawn "$PROXY_CPU" "$name" "$bin" proxy "$@" --cores 1 --drain-timeout 1s $TERN_ARGS \
        --listen "127.0.0.1:$PROXY_PORT" --upstream "127.0.0.1:$ORIGIN_PORT"
    PROXY_PID=$LAST_PID
    if ! wait_listening "$PROXY_PORT" "$PROXY_PID"; then
        START_ERROR="tern did not start: $(grep -v '^\s*$' "$WORK/$name.log" | head -2 | tr '\n' ' ' | sed 's/ *$//' | cut -c1-200)"
        return 1
    fi
}

start_proxy() {
    START_ERROR=""
    case $1 in
        nginx)    start_nginx ;;
        haproxy)  start_haproxy ;;
        caddy)    start_caddy ;;
        tern)     start_tern tern --http ;;
        tern-tcp) start_tern tern-tcp ;;
        tern-base) TERN_ROW_BIN=$TERN_BASE_BIN start_tern tern-base --http ;;
    esac
}

# --- Load ------------------------------------------------------------------------------------------------

# wrk's done() hook prints exact figures (latency in microseconds) on one line; wrk runs it once at the
# end, so it costs nothing per request. --latency's text distribution goes to the log for reading.
cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'WRK-RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
        '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
        '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p99.9": %d, "max": %d}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.max))
end
EOF

# Runs a command, with a deadline, and writes its own CPU (user+sys from wait4's rusage, in seconds) to
# OUT.rusage; the command dies with this runner (PR_SET_PDEATHSIG). This is how the load's CPU is counted, so
# that the time left on the load CPU can be put down to other work on the machine. stdout goes to OUT,
# stderr to OUT.err.
cat >"$WORK/runner.py" <<'EOF'
import ctypes, os, signal, subprocess, sys
out, deadline, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
libc = ctypes.CDLL(None, use_errno=True)
with open(out, "w") as f, open(out + ".err", "w") as e:
    child = subprocess.Popen(cmd, stdout=f, stderr=e,
                             preexec_fn=lambda: libc.prctl(1, signal.SIGKILL))  # PR_SET_PDEATHSIG
def stop(signum, _frame):
    child.kill()
    if signum != signal.SIGALRM:
        sys.exit(128 + signum)
for s in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
    signal.signal(s, stop)
signal.alarm(deadline)
_, status, ru = os.wait4(child.pid, 0)
with open(out + ".rusage", "w") as f:
    f.write(f"{ru.ru_utime + ru.ru_stime}\n")
sys.exit(os.waitstatus_to_exitcode(status) & 0xff)
EOF

# run_load GENERATOR URL SECONDS OUTFILE: the load on CPU 1, one thread, CONNECTIONS connections, closed
# loop; returns the generator's status. wrk's figures are its done() line, tern-load's its --json document.
# In the background so that a signal to this script reaches the trap (which stops the load too) at once.
run_load() {
    local gen=$1 url=$2 secs=$3 out=$4 rc=0 cmd
    case $gen in
        wrk)       cmd=(wrk -t1 -c"$CONNECTIONS" -d"${secs}s" --latency -s "$WORK/report.lua" "$url") ;;
        tern-load) cmd=("$TERN_LOAD_BIN" --connections "$CONNECTIONS" --cores 1 --duration "${secs}s" --json "$url") ;;
    esac
    taskset -c "$LOAD_CPU" python3 "$WORK/runner.py" "$out" $(( secs + 30 )) "${cmd[@]}" &
    local pid=$!
    STARTED_PIDS+=("$pid")
    wait "$pid" || rc=$?
    local p kept=()
    for p in "${STARTED_PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    STARTED_PIDS=("${kept[@]}")
    return "$rc"
}

# Busy clock ticks of CPU $1 from /proc/stat (user nice system irq softirq steal; not idle or iowait).
core_busy_ticks() {
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# One JSON object per row in $WORK/results.jsonl; the report at the end reads them.
# emit_row PROXY BODY BODY_BYTES STATUS NOTE [WRK_FILE] [key=value ...] (CPU in clock ticks (_ticks) or nanoseconds (_ns), times in seconds)
emit_row() {
    python3 - "$@" >>"$WORK/results.jsonl" <<'EOF'
import json, sys
proxy, body, body_bytes, status, note = sys.argv[1:6]
result_file = sys.argv[6] if len(sys.argv) > 6 else ""
kv = dict(a.split("=", 1) for a in sys.argv[7:])
clk = int(kv.get("clk", "100"))
row = {"proxy": proxy, "body": body, "body_bytes": int(body_bytes), "load": kv.get("load", "wrk"),
       "status": status, "note": note}
def wrk_result(path):
    line = next((l for l in open(path) if l.startswith("WRK-RESULT ")), None)
    return json.loads(line[len("WRK-RESULT "):]) if line else None
def tern_load_result(path):
    # tern-load --json: requests, duration_s, latency_us {p50 p75 p90 p99 p99_9 p99_99 max}, errors by kind,
    # bytes_received. Put into wrk's shape; errors keep tern-load's kinds.
    try:
        d = json.load(open(path))
    except (OSError, ValueError):
        return None
    lat = d["latency_us"]
    return {"requests": d["requests"], "duration_us": round(d["duration_s"] * 1e6), "bytes": d["bytes_received"],
            "errors": d["errors"],
            "latency_us": {"p50": lat["p50"], "p90": lat["p90"], "p99": lat["p99"], "p99.9": lat["p99_9"],
                           "max": lat["max"]}}
if result_file:
    w = (wrk_result if row["load"] == "wrk" else tern_load_result)(result_file)
    if w is None:
        row["status"], row["note"] = "failed", (note + "; " if note else "") + f"no result from {row['load']}"
    else:
        row.update(w)
        secs = w["duration_us"] / 1e6
        # CPU figures are read just before and after the load (with its start-up and connection set-up): their
        # percentages are of that window, a little longer than the load's own duration.
        window = float(kv["t1"]) - float(kv["t0"]) if kv.get("t0") else secs
        row["window_s"] = window
        row["req_per_s"] = w["requests"] / secs if secs else 0.0
        if kv.get("proxy_ns"):
            cpu_s = int(kv["proxy_ns"]) / 1e9
            row["proxy_cpu_s"] = cpu_s
            row["proxy_cpu_pct"] = 100 * cpu_s / window
            row["cpu_us_per_req"] = cpu_s * 1e6 / w["requests"] if w["requests"] else None
        row["attempts"] = int(kv.get("attempts", 1))
        if kv.get("upstream_closed"):
            row["upstream_closed"] = int(kv["upstream_closed"])   # growth of TIME-WAIT sockets on the origin's port
            row["upstream_established_after"] = int(kv["upstream_established"])
        # What else ran on each CPU during the run, in % of the run: on the proxy's CPU everything but the
        # proxy; on the load CPU everything but the load generator and the origin. Kernel threads (ksoftirqd) count as other.
        proxy_s = int(kv.get("proxy_ns") or 0) / 1e9
        load_s = float(kv.get("load_cpu_s") or 0)
        origin_s = int(kv.get("origin_ns", 0)) / 1e9
        row["origin_cpu_s"] = origin_s
        row["load_cpu_s"] = load_s
        # (Clamped to 0-100: the counters are sampled at the tick, so a short run can land a tick outside.)
        pct = lambda s: min(100.0, max(0.0, 100 * s / window))
        row["other_proxy_cpu_pct"] = pct(int(kv["cpu_p_ticks"]) / clk - proxy_s)
        row["other_load_cpu_pct"] = pct(int(kv["cpu_l_ticks"]) / clk - origin_s - load_s)
print(json.dumps(row))
EOF
}

# measure ROW SIZE GENERATOR URL: warm-up, then the measured run with every counter read around it; sets load_rc,
# figures (key=value pairs for emit_row) and OTHER_PCT (the larger share of either CPU that went to other work).
measure() {
    local row=$1 size=$2 gen=$3 url=$4 out=$WORK/$1-$2-$3 tw_before proxy_before origin_before cpu_p_before cpu_l_before t0 t1
    local cpu_p_after cpu_l_after origin_after proxy_after tw
    run_load "$gen" "$url" "$WARMUP" "$out.warmup.txt" || true
    tw_before=$(time_wait_count "$ORIGIN_PORT")
    # Every counter is read right before and right after the load, the clock next to the per-CPU counters.
    proxy_before=0
    [[ -n $PROXY_PID ]] && proxy_before=$(cpu_nanos "$PROXY_PID")
    origin_before=$(cpu_nanos "$ORIGIN_PID")
    cpu_p_before=$(core_busy_ticks "$PROXY_CPU"); cpu_l_before=$(core_busy_ticks "$LOAD_CPU"); t0=$EPOCHREALTIME
    load_rc=0
    run_load "$gen" "$url" "$DURATION" "$out.txt" || load_rc=$?
    t1=$EPOCHREALTIME; cpu_p_after=$(core_busy_ticks "$PROXY_CPU"); cpu_l_after=$(core_busy_ticks "$LOAD_CPU")
    origin_after=$(cpu_nanos "$ORIGIN_PID")
    proxy_after=0
    [[ -n $PROXY_PID ]] && proxy_after=$(cpu_nanos "$PROXY_PID")
    figures=(
        "clk=$CLK_TCK"
        "t0=$t0" "t1=$t1"
        "cpu_p_ticks=$(( cpu_p_after - cpu_p_before ))"
        "cpu_l_ticks=$(( cpu_l_after - cpu_l_before ))"
        "origin_ns=$(( origin_after - origin_before ))"
        "load=$gen"
        "load_cpu_s=$(cat "$out.txt.rusage" 2>/dev/null || echo 0)"
    )
    if [[ -n $PROXY_PID ]]; then
        tw=$(( $(time_wait_count "$ORIGIN_PORT") - tw_before ))
        (( tw >= 0 )) || tw=0      # TIME-WAIT sockets from an earlier row expired during this one
        figures+=(
            "proxy_ns=$(( proxy_after - proxy_before ))"
            "upstream_closed=$tw"
            "upstream_established=$(established_to "$ORIGIN_PORT")"
        )
    fi
    OTHER_PCT=$(awk -v p="$(( cpu_p_after - cpu_p_before ))" -v px="$(( proxy_after - proxy_before ))" \
        -v l="$(( cpu_l_after - cpu_l_before ))" -v o="$(( origin_after - origin_before ))" \
        -v w="$(cat "$out.txt.rusage" 2>/dev/null || echo 0)" -v t="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        -v clk="$CLK_TCK" 'BEGIN { a = (p - px) / clk / t; b = ((l - o) / clk - w) / t; print int(100 * (a > b ? a : b)) }')
}

# Waits up to $1 seconds for both CPUs to be under 5 % busy over a second (our own servers idle meanwhile).
wait_quiet() {
    local deadline=$(( SECONDS + $1 ))
    while (( SECONDS < deadline )); do
        (( $(busy_before) < 5 )) && return 0
    done
    return 1
}

# --- Paired runs (--paired RATE) --------------------------------------------------------------------------

if [[ -n $PAIRED_RATE ]]; then
    : >"$WORK/paired.jsonl"
    for size in small 16k; do
        path=/small; bytes=$SMALL_BYTES
        [[ $size == 16k ]] && { path=/16k; bytes=$LARGE_BYTES; }
        for ((r = 1; r <= ROUNDS; r++)); do
            for peer in "${ROWS[@]}"; do
                [[ $peer == tern || $peer == direct || $peer == tern-tcp ]] && continue
                start_proxy "$peer" || die "$peer did not start: $START_ERROR"
                peer_pid=$PROXY_PID peer_port=$PROXY_PORT
                start_proxy tern || die "tern did not start: $START_ERROR"
                tern_pid=$PROXY_PID tern_port=$PROXY_PORT
                for port in "$peer_port" "$tern_port"; do
                    check=$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "http://127.0.0.1:$port$path" 2>&1 || true)
                    [[ $check == "200 $bytes" ]] || die "GET $path on :$port gave '$check', want '200 $bytes'"
                    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:$port$path" >/dev/null 2>&1
                done
                log "$size round $r/$ROUNDS: $peer and tern in turns, $PAIRED_RATE req/s, ${DURATION}s"
                pa=$(cpu_nanos "$peer_pid"); ta=$(cpu_nanos "$tern_pid")
                out=$WORK/paired-$size-$peer-$r.json
                taskset -c "$LOAD_CPU" "$TERN_LOAD_BIN" --rate "$PAIRED_RATE" --connections "$CONNECTIONS" --cores 1 \
                    --duration "${DURATION}s" --json --compare "http://127.0.0.1:$peer_port$path" "http://127.0.0.1:$tern_port$path" \
                    >"$out" 2>"$out.err" || die "tern-load failed: $(tail -n 3 "$out.err")"
                pb=$(cpu_nanos "$peer_pid"); tb=$(cpu_nanos "$tern_pid")
                stop_pid "$peer_pid"; stop_pid "$tern_pid"
                python3 - "$out" "$size" "$peer" "$r" "$(( pb - pa ))" "$(( tb - ta ))" >>"$WORK/paired.jsonl" <<'PY'
import json, sys
out, size, peer, r, peer_ns, tern_ns = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
d = json.load(open(out))
a, b = d["a"], d["b"]
print(json.dumps({"size": size, "peer": peer, "round": r,
                  "peer_us_per_req": peer_ns / 1e3 / a["requests"], "tern_us_per_req": tern_ns / 1e3 / b["requests"],
                  "peer_p50": a["latency_us"]["p50"], "peer_p99": a["latency_us"]["p99"],
                  "tern_p50": b["latency_us"]["p50"], "tern_p99": b["latency_us"]["p99"],
                  "errors": sum(a["errors"].values()) + sum(b["errors"].values())}))
PY
            done
        done
    done
    python3 - "$WORK/paired.jsonl" "$PAIRED_RATE" "$CONNECTIONS" "$DURATION" "$ROUNDS" "$STARTED_AT" "${JSON_OUT:-}" <<'PY'
import json, statistics, sys
path, rate, connections, duration, rounds, started, json_out = sys.argv[1:8]
rows = [json.loads(l) for l in open(path)]
print(f"\nHTTP/1.1 keep-alive, paired ({started}): Tern --cores 1 beside each peer, both on CPU 0; tern-load --compare "
      f"--rate {rate} over {connections} connections sends to them in 250 ms turns for {duration} s; {rounds} rounds per body. "
      "CPU per request: each proxy's scheduler run time (schedstat, all threads) over the requests it answered.\n")
print("| body | peer | peer CPU µs/req | Tern CPU µs/req | Tern ÷ peer (median of rounds) | per-round ratios | p50 µs peer / Tern | p99 µs peer / Tern | errors |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
summary = []
for size in ("small", "16k"):
    for peer in dict.fromkeys(r["peer"] for r in rows):
        rs = [r for r in rows if r["size"] == size and r["peer"] == peer]
        if not rs:
            continue
        ratios = [r["tern_us_per_req"] / r["peer_us_per_req"] for r in rs]
        m = lambda k: statistics.median(r[k] for r in rs)
        summary.append({"size": size, "peer": peer, "ratio": statistics.median(ratios), "ratios": ratios,
                        "peer_us_per_req": m("peer_us_per_req"), "tern_us_per_req": m("tern_us_per_req")})
        print(f"| {size} | {peer} | {m('peer_us_per_req'):.2f} | {m('tern_us_per_req'):.2f} | {statistics.median(ratios):.3f} | "
              f"{', '.join(f'{x:.2f}' for x in ratios)} | {m('peer_p50'):,.0f} / {m('tern_p50'):,.0f} | "
              f"{m('peer_p99'):,.0f} / {m('tern_p99'):,.0f} | {sum(r['errors'] for r in rs)} |")
print("\nTarget (issue 3): Tern's CPU per request at most 0.6× nginx's.")
if json_out:
    json.dump({"paired": summary, "runs": rows}, open(json_out, "w"), indent=2)
PY
    exit 0
fi

# --- Runs ------------------------------------------------------------------------------------------------

declare -A BODY_PATH=([small]=/small [16k]=/16k)
declare -A BODY_BYTES=([small]=$SMALL_BYTES [16k]=$LARGE_BYTES)
SIZES=(small 16k)
: >"$WORK/results.jsonl"

for row in "${ROWS[@]}"; do
    PROXY_PID=""
    if [[ $row == direct ]]; then
        port=$ORIGIN_PORT
    else
        log "$row: starting"
        if ! start_proxy "$row"; then
            log "$row: not available: $START_ERROR"
            [[ -n ${PROXY_PID:-} ]] && stop_pid "$PROXY_PID"
            for size in "${SIZES[@]}"; do
                for gen in "${LOADS[@]}"; do
                    emit_row "$row" "$size" "${BODY_BYTES[$size]}" "not available" "$START_ERROR" "" "load=$gen"
                done
            done
            continue
        fi
        port=$PROXY_PORT
    fi
    for size in "${SIZES[@]}"; do
        url="http://127.0.0.1:$port${BODY_PATH[$size]}"
        # A proxy that answers but mangles the response must not be measured: check status and length.
        check=$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "$url" 2>&1 || true)
        if [[ $check != "200 ${BODY_BYTES[$size]}" ]]; then
            st=failed; [[ $row == tern* ]] && st="not available"
            log "$row/$size: $st: GET ${BODY_PATH[$size]} gave '$check', want '200 ${BODY_BYTES[$size]}'"
            for gen in "${LOADS[@]}"; do
                emit_row "$row" "$size" "${BODY_BYTES[$size]}" "$st" "GET ${BODY_PATH[$size]}: got '$check', want '200 ${BODY_BYTES[$size]}'" "" "load=$gen"
            done
            continue
        fi
        for gen in "${LOADS[@]}"; do
        attempt=0
        while :; do
            attempt=$(( attempt + 1 ))
            if (( attempt > 1 )) && ! wait_quiet 30; then
                log "$row/$size: the CPUs did not go idle within 30s; measuring anyway"
            fi
            log "$row/$size: $gen, warm-up ${WARMUP}s, then ${DURATION}s with $CONNECTIONS connections"
            measure "$row" "$size" "$gen" "$url"
            (( OTHER_PCT > OTHER_MAX && attempt <= RETRIES )) || break
            log "$row/$size: ${OTHER_PCT}% of a CPU went to other work during the run; measuring again"
        done
        note=""
        (( load_rc == 0 )) || note="$gen exit $load_rc"
        (( attempt == 1 )) || note="${note:+$note; }$(( attempt - 1 )) earlier run(s) discarded for other work"
        figures+=("attempts=$attempt")
        if [[ -n $PROXY_PID ]] && ! kill -0 "$PROXY_PID" 2>/dev/null; then
            note="${note:+$note; }proxy exited during the run"
        fi
        emit_row "$row" "$size" "${BODY_BYTES[$size]}" ok "$note" "$WORK/$row-$size-$gen.txt" "${figures[@]}"
        done
    done
    if [[ -n $PROXY_PID ]]; then
        stop_pid "$PROXY_PID"
    fi
done

# --- Report ----------------------------------------------------------------------------------------------

versions() {
    command -v wrk >/dev/null && echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
    [[ " ${LOADS[*]} " == *" tern-load "* ]] && echo "tern_load_built=$(date -u -r "$TERN_LOAD_BIN" '+%Y-%m-%d %H:%M UTC')"
    echo "nginx=$(nginx -v 2>&1 | sed 's|.*nginx/||')"
    command -v haproxy >/dev/null && echo "haproxy=$(haproxy -v 2>&1 | head -1 | awk '{print $3}')"
    command -v caddy >/dev/null && echo "caddy=$(caddy version 2>&1 | head -1 | awk '{print $1}')"
    if [[ -x $TERN_BIN ]]; then
        echo "tern=$("$TERN_BIN" --version 2>/dev/null | head -1)"
        # The checkout the binary sits in (its HEAD, and "+changes" when tracked files differ from it), and
        # when the binary was built: the binary may be older than that HEAD.
        local tree commit
        tree=$(dirname "$(realpath "$TERN_BIN")")
        if commit=$(git -C "$tree" rev-parse --short HEAD 2>/dev/null); then
            [[ -z $(git -C "$tree" status --porcelain --untracked-files=no 2>/dev/null) ]] || commit+="+changes"
            echo "tern_checkout=$commit"
        fi
        echo "tern_built=$(date -u -r "$TERN_BIN" '+%Y-%m-%d %H:%M UTC')"
    fi
    true
}
versions >"$WORK/versions.txt"

python3 - "$WORK/results.jsonl" "$WORK/versions.txt" "$JSON_OUT" <<EOF
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
versions = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[2]) if "=" in l)
json_out = sys.argv[3]
settings = {
    "duration_s": $DURATION, "warmup_s": $WARMUP, "connections": $CONNECTIONS, "load_threads": 1,
    "load": "$LOAD".split(","),
    "retries": $RETRIES, "other_work_max_pct": $OTHER_MAX,
    "proxy_cpu": $PROXY_CPU, "load_cpu": $LOAD_CPU, "clk_tck": $CLK_TCK,
}
machine = {
    "kernel": "$(uname -r)", "cpus": $(nproc),
    "cpu_model": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')",
    "load_average_at_start": "$LOAD_AT_START", "load_average_at_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
    "cpus_busy_pct_before": $BUSY_AT_START,
}
TARGET_CPU_RATIO = 0.6
PEERS = ("nginx", "haproxy", "caddy")

def get(proxy, body, load):
    return next((r for r in rows if r["proxy"] == proxy and r["body"] == body and r["load"] == load
                 and r["status"] == "ok"), None)

for r in rows:
    if r["status"] != "ok":
        continue
    n = get("nginx", r["body"], r["load"])
    if n and r["proxy"] != "direct":
        if r.get("cpu_us_per_req") and n.get("cpu_us_per_req"):
            r["cpu_per_req_vs_nginx"] = r["cpu_us_per_req"] / n["cpu_us_per_req"]
    if n and n.get("req_per_s"):
        r["req_per_s_vs_nginx"] = r["req_per_s"] / n["req_per_s"]
    notes = [r["note"]] if r["note"] else []
    errs = {k: v for k, v in r.get("errors", {}).items() if v}
    if errs:
        notes.append(f"{r['load']} errors " + ", ".join(f"{k} {v}" for k, v in errs.items()))
    if r.get("upstream_closed", 0) > 2 * settings["connections"]:
        notes.append(f"{r['upstream_closed']} upstream connections closed (keep-alive not reused?)")
    if int(max(r["other_proxy_cpu_pct"], r["other_load_cpu_pct"])) > $OTHER_MAX:   # as the retry test
        notes.append("other work on the machine during the run")
    if r["proxy"] == "tern":
        targets = {}
        if r.get("cpu_per_req_vs_nginx") is not None:
            targets["cpu_per_req_at_most_0.6x_nginx"] = r["cpu_per_req_vs_nginx"] <= TARGET_CPU_RATIO
        if r.get("req_per_s_vs_nginx") is not None:
            targets["req_per_s_at_least_nginx"] = r["req_per_s_vs_nginx"] >= 1.0
        peers = [p for p in (get(x, r["body"], r["load"]) for x in PEERS) if p]
        if peers:
            best = min(peers, key=lambda p: p["latency_us"]["p99"])
            targets["p99_at_most_best_peer"] = r["latency_us"]["p99"] <= best["latency_us"]["p99"]
            r["best_peer_p99"] = {"proxy": best["proxy"], "p99_us": best["latency_us"]["p99"]}
        r["targets_met"] = targets
        labels = {"cpu_per_req_at_most_0.6x_nginx": "CPU/req ≤ 0.6× nginx",
                  "req_per_s_at_least_nginx": "req/s ≥ nginx",
                  "p99_at_most_best_peer": "p99 ≤ best peer"
                      + (f" ({r['best_peer_p99']['proxy']})" if "best_peer_p99" in r else "")}
        notes += [f"{labels[k]}: {'met' if v else 'not met'}" for k, v in targets.items()]
    if r["proxy"] == "tern-tcp":
        notes.append("TCP relay (L4), reference only")
    r["notes"] = "; ".join(notes)

def f(v, fmt):
    return "-" if v is None else format(v, fmt)

print()
print(f"## HTTP/1.1 proxy, $STARTED_AT")
print()
print(f"Kernel {machine['kernel']}, {machine['cpus']} CPUs ({machine['cpu_model']}); proxy on CPU $PROXY_CPU, "
      f"origin nginx and the load on CPU $LOAD_CPU; closed loop, one load thread, $CONNECTIONS connections, "
      f"$WARMUP s warm-up then $DURATION s measured, "
      f"keep-alive; load average at start {machine['load_average_at_start']}, at end {machine['load_average_at_end']}; "
      f"CPUs {machine['cpus_busy_pct_before']} % busy in the second before the run.")
print("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
print()
print("| Proxy | Body | Load | req/s | p50 ms | p99 ms | Proxy CPU % | CPU µs/req | CPU/req vs nginx | req/s vs nginx "
      "| Other work % (CPU $PROXY_CPU / $LOAD_CPU) | Note |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    body = f"{r['body_bytes']} B" if r["body_bytes"] < 1024 else f"{r['body_bytes'] // 1024} KiB"
    if r["status"] != "ok":
        print(f"| {r['proxy']} | {body} | {r['load']} | {r['status']} | | | | | | | | {r['note']} |")
        continue
    lat = r["latency_us"]
    print(f"| {r['proxy']} | {body} | {r['load']} | {r['req_per_s']:.0f} | {lat['p50'] / 1000:.3f} | {lat['p99'] / 1000:.3f} "
          f"| {f(r.get('proxy_cpu_pct'), '.0f')} | {f(r.get('cpu_us_per_req'), '.1f')} "
          f"| {f(r.get('cpu_per_req_vs_nginx'), '.2f')} | {f(r.get('req_per_s_vs_nginx'), '.2f')} "
          f"| {r['other_proxy_cpu_pct']:.0f} / {r['other_load_cpu_pct']:.0f} | {r['notes']} |")
print()
print("Targets (Tern): CPU µs per request at most 0.6× nginx's; req/s at least nginx's; p99 no worse than the best "
      "of nginx, HAProxy and Caddy. CPU is the proxy's run time as the scheduler counts it (schedstat; all threads; nginx master and worker) over the "
      "measured run, divided by the requests the load generator completed in it. Other work: busy time of each CPU (/proc/stat) "
      "not spent in the proxy (CPU $PROXY_CPU) or in the load generator and the origin (CPU $LOAD_CPU), in % of the run; kernel "
      "threads such as ksoftirqd count here. Above $OTHER_MAX % another job shared the machine and skewed the row "
      "(a run is measured again up to $RETRIES times when it does).")

if json_out:
    with open(json_out, "w") as out:
        json.dump({"date": "$STARTED_AT", "machine": machine, "settings": settings, "versions": versions,
                   "targets": {"cpu_per_req_vs_nginx_max": TARGET_CPU_RATIO, "req_per_s_vs_nginx_min": 1.0,
                               "p99_vs_best_peer_max": 1.0},
                   "results": rows}, out, indent=2)
        out.write("\n")
    print(f"\nResults written to {json_out}.", file=sys.stderr)
EOF
