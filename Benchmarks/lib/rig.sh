# Shared by Benchmarks/config-swaps.sh and Benchmarks/telemetry-overhead.sh (sourced): a temp dir removed at
# exit with every process started, free loopback ports, and an nginx origin on CPU 1.

WORK=$(mktemp -d "/tmp/${RIG_NAME:-tern-bench}.XXXXXX")
chmod 755 "$WORK"   # nginx workers run as nobody when started by root and must read the origin's files
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP_LOGS:-0} == 1 ]]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Exits unless nginx, wrk, taskset and python3 are installed and $TERN_BIN is built.
require_bench_tools() {
    for tool in nginx wrk taskset python3; do
        command -v "$tool" >/dev/null || { echo "$tool missing: run bash Tools/scripts/setup.sh --bench" >&2; exit 1; }
    done
    [[ -x $TERN_BIN ]] || { echo "no $TERN_BIN: swift build -c release" >&2; exit 1; }
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts nginx on CPU 1 answering every request with 200 and body $1; sets ORIGIN_PORT.
start_origin() {
    ORIGIN_PORT=$(free_port)
    mkdir -p "$WORK/origin"
    cat >"$WORK/origin.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/origin/nginx.pid;
error_log $WORK/origin/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/origin; proxy_temp_path $WORK/origin; fastcgi_temp_path $WORK/origin;
    uwsgi_temp_path $WORK/origin; scgi_temp_path $WORK/origin;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$ORIGIN_PORT; location / { return 200 "$1"; } }
}
EOF
    taskset -c 1 nginx -p "$WORK/origin" -c "$WORK/origin.conf" &
    PIDS+=($!)
}


# cpu_nanos PID: lib/cpu.sh.
# shellcheck source=cpu.sh
source "$(dirname "${BASH_SOURCE[0]}")/cpu.sh"
