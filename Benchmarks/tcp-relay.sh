#!/usr/bin/env bash
# Side-by-side TCP relay benchmark: Tern (io_uring and epoll backends) against HAProxy and nginx's stream
# module, all on loopback, in one go. Prints a markdown table of throughput, relay CPU per GB and Tern's RSS,
# with ratios and the targets from the issue. See Benchmarks/README.md.
#
#   bash Benchmarks/tcp-relay.sh
#   bash Benchmarks/tcp-relay.sh --paired ROUNDS     A/B of two Tern builds: TERN_BIN against TERN_BASE_BIN
#
# --paired ROUNDS: instead of the table, ROUNDS rounds in which the build under test (TERN_BIN), the base
# build (TERN_BASE_BIN) and the base build again (an A/A control) each relay one iperf3 stream for DURATION
# seconds, on both backends, in an order that turns each round (A B A', then A' B A) so the VM's drift
# between consecutive runs falls on both sides; the report gives, per backend, the median over the rounds of
# each round's ratio of relay CPU per GB (B / A, and A' / A as the noise to compare it with).
#
# Environment:
#   TERN_BIN   tern binary (default .build/release/tern under the repo root; build it with
#              `swift build -c release --static-swift-stdlib`, which also builds
#              tern-engine next to it)
#   DURATION   seconds per iperf3 run (default 5)
#   IDLE_CONNS idle proxied connections for the RSS test (default 10000)
#   KEEP_LOGS  set to 1 to keep the temp dir with configs, logs and iperf3 JSON
#   TERN_BASE_BIN  the base build for --paired (e.g. built in `git worktree add /tmp/base COMMIT`)
#
# CPU layout (2 cores): every relay runs on CPU 1, iperf3 client and server (and the RSS test's Python
# client and upstream) on CPU 0. Needs root to install packages and raise the open-file hard limit.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TERN_BIN=${TERN_BIN:-$REPO_ROOT/.build/release/tern}
DURATION=${DURATION:-5}
PAIRED_ROUNDS=""
while (( $# )); do
    case $1 in
        --paired) PAIRED_ROUNDS=${2:?--paired needs a number of rounds}; shift 2 ;;
        *) printf 'unknown argument %s\n' "$1" >&2; exit 64 ;;
    esac
done
TERN_BASE_BIN=${TERN_BASE_BIN:-}
IDLE_CONNS=${IDLE_CONNS:-10000}
KEEP_LOGS=${KEEP_LOGS:-0}

# Loopback ports, fixed so a stray listener shows up as a clear bind error.
IPERF_PORT=25201
TERN_URING_PORT=25202
TERN_EPOLL_PORT=25203
HAPROXY_PORT=25204
NGINX_PORT=25205
HOLD_UPSTREAM_PORT=25210
HOLD_TERN_PORT=25211

# Targets from the issue.
TARGET_CPU_PER_GB=0.4     # Tern relay CPU seconds per GB, at most
TARGET_IDLE_RSS_KIB=8192  # Tern idle RSS, at most
TARGET_CONN_RSS_KIB=8192  # extra Tern RSS with IDLE_CONNS idle proxied connections, at most

RELAY_CPU=1
LOAD_CPU=0

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $TERN_BIN ]] || die "no tern binary at $TERN_BIN (build with: swift build -c release --static-swift-stdlib, or set TERN_BIN)"
(( $(nproc) >= 2 )) || die "needs at least 2 CPUs (relay on CPU $RELAY_CPU, load on CPU $LOAD_CPU)"

WORK=$(mktemp -d /tmp/tern-tcp-relay.XXXXXX)
STARTED_PIDS=()   # our children still running; cleanup stops them by pid

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_LOGS == 1 ]]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Packages --------------------------------------------------------------------------------------------

missing=()
for p in iperf3 haproxy nginx libnginx-mod-stream python3 iproute2 util-linux; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if (( ${#missing[@]} )); then
    (( EUID == 0 )) || die "missing packages ${missing[*]} and not root"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "${missing[@]}" >"$WORK/apt.log" 2>&1 ||
        { apt-get update >>"$WORK/apt.log" 2>&1 && apt-get install -y "${missing[@]}" >>"$WORK/apt.log" 2>&1; } ||
        die "apt-get install failed, see $WORK/apt.log"
    # The packages' own services may have started on port 80; we run our own instances, so stop them
    # by their pid file (or through systemd when it is PID 1).
    for svc in nginx haproxy; do
        if [[ -d /run/systemd/system ]]; then
            systemctl stop "$svc" 2>/dev/null || true
        elif [[ -s /run/$svc.pid ]]; then
            kill -TERM "$(cat "/run/$svc.pid")" 2>/dev/null || true
        fi
    done
fi

# --- Open-file limit -------------------------------------------------------------------------------------

if (( EUID == 0 )); then
    want=$(( $(cat /proc/sys/fs/nr_open) < 1048576 ? $(cat /proc/sys/fs/nr_open) : 1048576 ))
    if (( $(ulimit -Hn) < want )); then
        ulimit -Hn "$want" 2>/dev/null || prlimit --pid $$ --nofile="$want:$want" 2>/dev/null || true
    fi
fi
ulimit -n "$(ulimit -Hn)"
# Tern holds two descriptors per proxied connection plus a few dozen of its own (listener, ring, log,
# pipes). Without CAP_SYS_RESOURCE (some containers) the hard limit cannot be raised: then hold as many
# connections as fit and say so in the table, rather than measuring a Tern that is refusing connections.
IDLE_CONNS_WANTED=$IDLE_CONNS
if (( $(ulimit -n) < 2 * IDLE_CONNS + 128 )); then
    IDLE_CONNS=$(( ( $(ulimit -n) - 128 ) / 2 ))
    log "warning: open-file hard limit $(ulimit -Hn) cannot be raised; holding $IDLE_CONNS connections, not $IDLE_CONNS_WANTED"
fi

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)   # other work on the machine skews every figure

# --- Helpers ---------------------------------------------------------------------------------------------

# Waits up to $2 seconds (default 10) for a TCP listener on 127.0.0.1:$1.
wait_listening() {
    local port=$1 deadline=$(( SECONDS + ${2:-10} ))
    while (( SECONDS < deadline )); do
        ss -Hltn "sport = :$port" | grep -q . && return 0
        sleep 0.05
    done
    die "nothing listening on port $port after ${2:-10}s"
}

# Fails if something already listens on port $1 (a leftover from an earlier run).
require_free_port() {
    ! ss -Hltn "sport = :$1" | grep -q . || die "port $1 already in use"
}

# cpu_nanos PID: CPU time of a process and its direct children (nginx's worker), from the scheduler's account.
# shellcheck source=lib/cpu.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cpu.sh"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Starts tern: start_tern NAME BACKEND LISTEN_PORT UPSTREAM_PORT; sets TERN_PID, waits for its ready line.
start_tern() {
    local name=$1 backend=$2 port=$3 upstream=$4
    require_free_port "$port"
    taskset -c "$RELAY_CPU" "$TERN_BIN" proxy --listen "127.0.0.1:$port" --upstream "127.0.0.1:$upstream" \
        --io-backend "$backend" --cores 1 --drain-timeout 1s 2>"$WORK/$name.err" &
    TERN_PID=$!
    STARTED_PIDS+=("$TERN_PID")
    local deadline=$(( SECONDS + 10 ))
    until grep -q "listening kind=proxy addr=127.0.0.1:$port" "$WORK/$name.err"; do
        kill -0 "$TERN_PID" 2>/dev/null || die "tern ($backend) exited at start: $(cat "$WORK/$name.err")"
        (( SECONDS < deadline )) || die "tern ($backend) not ready after 10s"
        sleep 0.02
    done
}

# Stops our child $1 with SIGTERM, waits up to 10s, then SIGKILL; sets STOP_RC to its exit status.
# (Not usable in $(...): wait only reaps children of the current shell.)
stop_pid() {
    local pid=$1 p kept=()
    STOP_RC=0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; log "pid $pid ignored SIGTERM for 10s, killed"; fi
    wait "$pid" 2>/dev/null || STOP_RC=$?
    for p in "${STARTED_PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    STARTED_PIDS=("${kept[@]}")
}

start_haproxy() {
    require_free_port "$HAPROXY_PORT"
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend relay
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend iperf
backend iperf
    server s1 127.0.0.1:$IPERF_PORT
EOF
    taskset -c "$RELAY_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
    RELAY_PID=$!
    STARTED_PIDS+=("$RELAY_PID")
    wait_listening "$HAPROXY_PORT"
}

start_nginx() {
    require_free_port "$NGINX_PORT"
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process on;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
stream {
    server {
        listen 127.0.0.1:$NGINX_PORT;
        proxy_pass 127.0.0.1:$IPERF_PORT;
    }
}
EOF
    # The worker inherits the master's CPU affinity; -e keeps nginx off /var/log/nginx before it reads the config.
    taskset -c "$RELAY_CPU" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf" \
        >"$WORK/nginx.log" 2>&1 &
    RELAY_PID=$!
    STARTED_PIDS+=("$RELAY_PID")
    wait_listening "$NGINX_PORT"
}

# Runs iperf3 against port $1 with $2 streams; writes $WORK/$3.json and echoes "bytes bits_per_second".
run_iperf() {
    local port=$1 streams=$2 name=$3
    taskset -c "$LOAD_CPU" timeout $(( DURATION + 30 )) \
        iperf3 -c 127.0.0.1 -p "$port" -Z -t "$DURATION" -P "$streams" --connect-timeout 3000 -J \
        >"$WORK/$name.json" 2>"$WORK/$name.iperf.err" || true
    python3 - "$WORK/$name.json" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"iperf3 output unreadable: {e}")
if "error" in r:
    sys.exit(f"iperf3: {r['error']}")
s = r["end"]["sum_received"]
print(int(s["bytes"]), s["bits_per_second"])
EOF
}

# --- Paired A/B of two builds (--paired) ----------------------------------------------------------------------

# relay_cpu_per_gb BIN BACKEND NAME: starts tern from BIN, relays one iperf3 stream through it for DURATION
# seconds and sets CPU_GB to its CPU seconds per GB relayed (not in $(...): stop_pid must reap its child).
relay_cpu_per_gb() {
    local bin=$1 backend=$2 name=$3 before after out bytes bps
    TERN_BIN=$bin start_tern "$name" "$backend" "$TERN_URING_PORT" "$IPERF_PORT"
    before=$(cpu_nanos "$TERN_PID")
    out=$(run_iperf "$TERN_URING_PORT" 1 "$name") || die "$name: iperf3 failed"
    after=$(cpu_nanos "$TERN_PID")
    stop_pid "$TERN_PID"
    read -r bytes bps <<<"$out"
    (( bytes > 0 )) || die "$name: nothing relayed"
    CPU_GB=$(python3 -c "print(($after - $before) / 1e9 / ($bytes / 1e9))")
}

if [[ -n $PAIRED_ROUNDS ]]; then
    [[ -x $TERN_BASE_BIN ]] || die "--paired needs TERN_BASE_BIN, the base build's tern"
    require_free_port "$IPERF_PORT"
    taskset -c "$LOAD_CPU" iperf3 -s -p "$IPERF_PORT" >"$WORK/iperf3-server.log" 2>&1 &
    STARTED_PIDS+=("$!")
    wait_listening "$IPERF_PORT"
    declare -A RATIOS
    for backend in io_uring epoll; do
        for round in $(seq 1 "$PAIRED_ROUNDS"); do
            declare -A V=()
            order=(base test base2)
            (( round % 2 == 0 )) && order=(base2 test base)
            for who in "${order[@]}"; do
                bin=$TERN_BASE_BIN
                [[ $who == test ]] && bin=$TERN_BIN
                relay_cpu_per_gb "$bin" "$backend" "paired-$backend-$round-$who"
                V[$who]=$CPU_GB
            done
            log "$backend round $round: CPU s/GB base ${V[base]}, test ${V[test]}, base again ${V[base2]}"
            RATIOS[$backend/ab]+="$(python3 -c "print(${V[test]} / ${V[base]})") "
            RATIOS[$backend/aa]+="$(python3 -c "print(${V[base2]} / ${V[base]})") "
        done
    done
    median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" $1; }
    echo
    echo "TCP relay, paired A/B: relay CPU per GB, median of $PAIRED_ROUNDS rounds ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load at start $LOAD_AT_START)"
    echo
    echo "| backend | test ÷ base | base again ÷ base (A/A) | per-round test ÷ base |"
    echo "| --- | --- | --- | --- |"
    for backend in io_uring epoll; do
        echo "| $backend | $(median "${RATIOS[$backend/ab]}") | $(median "${RATIOS[$backend/aa]}") | ${RATIOS[$backend/ab]}|"
    done
    exit 0
fi

# --- Throughput and CPU ------------------------------------------------------------------------------------

require_free_port "$IPERF_PORT"
taskset -c "$LOAD_CPU" iperf3 -s -p "$IPERF_PORT" >"$WORK/iperf3-server.log" 2>&1 &
IPERF_SERVER_PID=$!
STARTED_PIDS+=("$IPERF_SERVER_PID")
wait_listening "$IPERF_PORT"

RELAYS=(direct tern-io_uring tern-epoll haproxy nginx)
declare -A GBPS CPU_S CPU_PER_GB EXIT_NOTE

for relay in "${RELAYS[@]}"; do
    for streams in 1 8; do
        key="$relay/$streams"
        RELAY_PID=""
        case $relay in
            direct)        port=$IPERF_PORT ;;
            tern-io_uring) start_tern "$relay-$streams" io_uring "$TERN_URING_PORT" "$IPERF_PORT"
                           RELAY_PID=$TERN_PID; port=$TERN_URING_PORT ;;
            tern-epoll)    start_tern "$relay-$streams" epoll "$TERN_EPOLL_PORT" "$IPERF_PORT"
                           RELAY_PID=$TERN_PID; port=$TERN_EPOLL_PORT ;;
            haproxy)       start_haproxy; port=$HAPROXY_PORT ;;
            nginx)         start_nginx; port=$NGINX_PORT ;;
        esac
        log "$relay, $streams stream(s), ${DURATION}s"
        [[ -n $RELAY_PID ]] && before=$(cpu_nanos "$RELAY_PID")
        if out=$(run_iperf "$port" "$streams" "${relay}-${streams}"); then
            read -r bytes bps <<<"$out"
        else
            log "$relay/$streams: iperf3 failed: $(tail -c 300 "$WORK/${relay}-${streams}.json" 2>/dev/null)"
            bytes=0; bps=0
        fi
        GBPS[$key]=$(python3 -c "print(f'{$bps / 1e9:.2f}')")
        if [[ -n $RELAY_PID ]]; then
            after=$(cpu_nanos "$RELAY_PID")
            CPU_S[$key]=$(python3 -c "print(f'{($after - $before) / 1e9:.2f}')")
            CPU_PER_GB[$key]=$(python3 -c "b=$bytes; print(f'{(($after - $before) / 1e9) / (b / 1e9):.3f}' if b else 'n/a')")
            stop_pid "$RELAY_PID"
            # Only Tern promises exit 0 on SIGTERM (haproxy -db reports the signal).
            [[ $relay != tern-* || $STOP_RC == 0 ]] || EXIT_NOTE[$key]="exit $STOP_RC"
        else
            CPU_S[$key]="-"; CPU_PER_GB[$key]="-"
        fi
    done
done

# --- Tern RSS, idle and with IDLE_CONNS idle proxied connections -----------------------------------------

cat >"$WORK/hold_upstream.py" <<'EOF'
# Accepts connections and holds them open, idle, until the peer closes.
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
async def hold(reader, writer):
    try:
        while await reader.read(4096):
            pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(hold, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()
asyncio.run(main())
EOF

cat >"$WORK/hold_client.py" <<'EOF'
# Opens N connections to 127.0.0.1:PORT, at most 256 connecting at once, prints "connected N" and holds
# them until stdin closes or SIGTERM. Bounded by a 60 s deadline.
import errno, os, resource, selectors, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
sel = selectors.DefaultSelector()
held, pending, started, failed = [], 0, 0, 0
deadline = time.monotonic() + 60
while len(held) < n and time.monotonic() < deadline:
    while pending < 256 and started < n:
        s = socket.socket()
        s.setblocking(False)
        e = s.connect_ex(("127.0.0.1", port))
        if e not in (0, errno.EINPROGRESS):
            s.close(); failed += 1; started += 1; continue
        sel.register(s, selectors.EVENT_WRITE)
        pending += 1; started += 1
    if pending == 0:
        break
    for key, _ in sel.select(timeout=1):
        s = key.fileobj
        sel.unregister(s); pending -= 1
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            held.append(s)
        else:
            s.close(); failed += 1
print(f"connected {len(held)} failed {failed}", flush=True)
# Hold until told to stop: SIGTERM ends the process, closing every socket.
while True:
    time.sleep(3600)
EOF

# established_count PORT DIR: established sockets with source (sport) or destination (dport) port PORT.
established_count() { ss -Htn state established "( $2 = :$1 )" | wc -l; }

require_free_port "$HOLD_UPSTREAM_PORT"
taskset -c "$LOAD_CPU" python3 "$WORK/hold_upstream.py" "$HOLD_UPSTREAM_PORT" >"$WORK/hold_upstream.log" 2>&1 &
HOLD_UPSTREAM_PID=$!
STARTED_PIDS+=("$HOLD_UPSTREAM_PID")
wait_listening "$HOLD_UPSTREAM_PORT"

declare -A RSS_IDLE RSS_CONNS RSS_DELTA RSS_NOTE
for backend in io_uring epoll; do
    log "tern-$backend RSS: idle, then $IDLE_CONNS idle proxied connections"
    start_tern "rss-$backend" "$backend" "$HOLD_TERN_PORT" "$HOLD_UPSTREAM_PORT"
    RSS_IDLE[$backend]=$(rss_kib "$TERN_PID")
    cat "/proc/$TERN_PID/smaps_rollup" >"$WORK/rss-$backend.smaps_rollup"
    awk '/^[0-9a-f]+-[0-9a-f]+ / { m = $0 } /^Rss:/ { if ($2 > 0) printf "%8d kB  %s\n", $2, m }' \
        "/proc/$TERN_PID/smaps" | sort -rn | awk 'NR <= 12' >"$WORK/rss-$backend.top-mappings"

    taskset -c "$LOAD_CPU" python3 "$WORK/hold_client.py" "$HOLD_TERN_PORT" "$IDLE_CONNS" \
        >"$WORK/hold_client-$backend.log" 2>&1 &
    CLIENT_PID=$!
    STARTED_PIDS+=("$CLIENT_PID")
    # Tern holds them all once it has IDLE_CONNS accepted sockets and IDLE_CONNS upstream sockets.
    # Gives up after 90 s, or 5 s after the client finished connecting with the counts no longer moving.
    deadline=$(( SECONDS + 90 )); prev=""; still_since=$SECONDS
    while (( SECONDS < deadline )); do
        acc=$(established_count "$HOLD_TERN_PORT" sport)
        up=$(established_count "$HOLD_UPSTREAM_PORT" dport)
        (( acc >= IDLE_CONNS && up >= IDLE_CONNS )) && break
        kill -0 "$CLIENT_PID" 2>/dev/null || break
        [[ "$acc/$up" == "$prev" ]] || { prev="$acc/$up"; still_since=$SECONDS; }
        if [[ -s $WORK/hold_client-$backend.log ]] && (( SECONDS - still_since >= 5 )); then break; fi
        sleep 0.2
    done
    RSS_NOTE[$backend]="accepted $acc, upstream $up; client: $(head -1 "$WORK/hold_client-$backend.log")"
    # Read RSS once it has stopped moving: unchanged over 5 samples 200 ms apart, at most 10 s.
    last=-1; same=0; deadline=$(( SECONDS + 10 ))
    while (( same < 5 && SECONDS < deadline )); do
        now=$(rss_kib "$TERN_PID")
        if (( now == last )); then same=$(( same + 1 )); else same=0; last=$now; fi
        sleep 0.2
    done
    RSS_CONNS[$backend]=$last
    RSS_DELTA[$backend]=$(( RSS_CONNS[$backend] - RSS_IDLE[$backend] ))
    stop_pid "$CLIENT_PID"
    stop_pid "$TERN_PID"
    [[ $STOP_RC == 0 ]] || RSS_NOTE[$backend]+="; tern exit $STOP_RC"
done

# --- Report ----------------------------------------------------------------------------------------------

ratio() { python3 -c "a, b = '$1', '$2'
try: print(f'{float(a) / float(b):.2f}')
except Exception: print('-')"; }

echo
echo "## TCP relay, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "Kernel $(uname -r), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')); relay on CPU $RELAY_CPU, iperf3 client and server on CPU $LOAD_CPU; iperf3 -Z, ${DURATION}s per run, receiver figures; load average at start $LOAD_AT_START."
echo
echo "| Relay | Streams | Gbit/s | vs direct | vs HAProxy | Relay CPU s | CPU s/GB | CPU/GB vs HAProxy | Note |"
echo "|---|---|---|---|---|---|---|---|---|"
for relay in "${RELAYS[@]}"; do
    for streams in 1 8; do
        key="$relay/$streams"
        note=${EXIT_NOTE[$key]:-}
        if [[ $relay == tern-* ]]; then
            tput_ok=$(python3 -c "print('met' if float('${GBPS[$key]}') >= float('${GBPS[haproxy/$streams]}') else 'not met')")
            cpu_ok=$(python3 -c "
try: print('met' if float('${CPU_PER_GB[$key]}') <= $TARGET_CPU_PER_GB else 'not met')
except ValueError: print('n/a')")
            note="throughput ≥ HAProxy: $tput_ok; ≤ $TARGET_CPU_PER_GB s/GB: $cpu_ok${note:+; $note}"
        fi
        echo "| $relay | $streams | ${GBPS[$key]} | $(ratio "${GBPS[$key]}" "${GBPS[direct/$streams]}") | $(ratio "${GBPS[$key]}" "${GBPS[haproxy/$streams]}") | ${CPU_S[$key]} | ${CPU_PER_GB[$key]} | $(ratio "${CPU_PER_GB[$key]}" "${CPU_PER_GB[haproxy/$streams]}") | $note |"
    done
done
echo
echo "| Tern backend | Idle RSS (MiB) | RSS with $IDLE_CONNS idle conns (MiB) | Delta (MiB) | Delta per $IDLE_CONNS_WANTED conns (MiB) | Idle ≤ 8 MiB | Delta ≤ 8 MiB | Note |"
echo "|---|---|---|---|---|---|---|---|"
mib() { python3 -c "print(f'{$1 / 1024:.1f}')"; }
for backend in io_uring epoll; do
    # Scaled linearly when fewer connections than wanted fitted under the open-file limit.
    scaled=$(( RSS_DELTA[$backend] * IDLE_CONNS_WANTED / IDLE_CONNS ))
    idle_ok=$([[ ${RSS_IDLE[$backend]} -le $TARGET_IDLE_RSS_KIB ]] && echo met || echo "not met")
    delta_ok=$([[ $scaled -le $TARGET_CONN_RSS_KIB ]] && echo met || echo "not met")
    echo "| $backend | $(mib "${RSS_IDLE[$backend]}") | $(mib "${RSS_CONNS[$backend]}") | $(mib "${RSS_DELTA[$backend]}") | $(mib "$scaled") | $idle_ok | $delta_ok | ${RSS_NOTE[$backend]} |"
done
echo
echo "Targets: Tern throughput at least HAProxy's; at most $TARGET_CPU_PER_GB CPU s/GB; idle RSS ≤ 8 MiB; ≤ 8 MiB more RSS with $IDLE_CONNS_WANTED idle proxied connections."
if (( IDLE_CONNS < IDLE_CONNS_WANTED )); then
    echo "Open-file hard limit $(ulimit -Hn) (not raisable here): held $IDLE_CONNS connections, delta scaled to $IDLE_CONNS_WANTED."
fi

# Where idle memory goes, when above target.
for backend in io_uring epoll; do
    if (( RSS_IDLE[$backend] > TARGET_IDLE_RSS_KIB )); then
        echo
        echo "Idle tern ($backend) above the RSS target; smaps_rollup and top mappings by Rss:"
        echo '```'
        grep -E '^(Rss|Pss|Pss_Anon|Pss_File|Shared_Clean|Private_Clean|Private_Dirty|Anonymous):' "$WORK/rss-$backend.smaps_rollup"
        cat "$WORK/rss-$backend.top-mappings"
        echo '```'
    fi
done

# Anything Tern logged above info.
if grep -hE ' (warn|error) ' "$WORK"/*.err >/dev/null 2>&1; then
    echo
    echo "Tern warnings and errors:"
    grep -HE ' (warn|error) ' "$WORK"/*.err | sed "s|$WORK/||" | head -20
fi
