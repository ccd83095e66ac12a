#!/usr/bin/env bash
# Idle memory of the serving process: VmRSS of `tern proxy` (which hands over to tern-engine, same PID) started
# and left idle, for --http, --http with a one-service Istio configuration and TCP, --cores 1 and 2, on io_uring
# and epoll, with where it goes and the binaries' sizes. Prints a markdown table; builds nothing. See
# Benchmarks/README.md, "Idle memory".
#
#   bash Benchmarks/idle-rss.sh [TERN_BIN]
#
# Fails (exit 1) when `--http --cores 1` on io_uring idles above 8 MiB (issue 14's target; where io_uring cannot
# be set up, epoll stands in and the output says so).
#
# Environment:
#   TERN_BIN  tern binary (default .build/release/tern; a static release build, `swift build -c release
#             --static-swift-stdlib`), with tern-engine next to it
#   RUNS      starts per configuration (default 5): the table gives the median and the range
#   SETTLE    seconds between the last listener logged and reading VmRSS (default 1)
#
# Every listener is on loopback with port 0 (--listen, --admin, --health, --prometheus), the upstream is
# 127.0.0.1:9 and is never connected to. Each start is a cold start: the binaries' pages are dropped from the page
# cache first, so exec reads them as on a node that just pulled the image. It matters: the kernel maps a faulting
# file page together with the cached pages around it (fault-around), and how a file's pages sit in the cache
# depends on how they got there; a binary just written by the linker or `cp` measured up to 0.5 MiB apart from
# the same binary read back from disk.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TERN_BIN=${1:-${TERN_BIN:-$REPO_ROOT/.build/release/tern}}
RUNS=${RUNS:-5}
SETTLE=${SETTLE:-1}
TARGET_KIB=8192

die() { echo "idle-rss: $*" >&2; exit 2; }
[[ -x $TERN_BIN ]] || die "no tern binary at $TERN_BIN (swift build -c release --static-swift-stdlib, or pass its path)"
ENGINE="$(dirname "$TERN_BIN")/tern-engine"
[[ -x $ENGINE ]] || die "no tern-engine next to $TERN_BIN: tern would serve from itself, which is not what is measured"
command -v python3 >/dev/null || die "needs python3"

WORK=$(mktemp -d /tmp/tern-idle-rss.XXXXXX)
PID=""
cleanup() {
    if [[ -n $PID ]]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A mesh sidecar's configuration at its smallest: one service, one route, one subset.
cp "$REPO_ROOT/Benchmarks/lib/smallest-mesh.yaml" "$WORK/mesh.yaml"   # shared with Tools/scripts/startup-order.sh

# Drops the binaries' pages from the page cache (written back first: dirty pages cannot be dropped).
evict() {
    python3 - "$TERN_BIN" "$ENGINE" <<'EOF'
import os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
EOF
}

# One start: prints "VmRSS engine-file-pages anonymous libraries" in KiB, or "failed: REASON".
measure() {
    local backend=$1 cores=$2 mode=$3
    local args=(proxy --cores "$cores" --io-backend "$backend" --listen 127.0.0.1:0
        --admin 127.0.0.1:0 --health 127.0.0.1:0 --prometheus 127.0.0.1:0)
    case $mode in
    http) args+=(--http --upstream 127.0.0.1:9) ;;
    config) args+=(--http --config "$WORK/mesh.yaml" --namespace shop) ;;
    tcp) args+=(--upstream 127.0.0.1:9) ;;
    esac
    evict
    "$TERN_BIN" "${args[@]}" >/dev/null 2>"$WORK/log" </dev/null &
    PID=$!
    local deadline=$((SECONDS + 20))
    until [[ $(grep -c 'listening kind=' "$WORK/log" || true) -ge 4 ]]; do
        if ! kill -0 "$PID" 2>/dev/null || ((SECONDS >= deadline)); then
            echo "failed: $(grep -m1 -E 'error|warn' "$WORK/log" || echo 'no listeners')"
            kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""
            return
        fi
        sleep 0.02
    done
    sleep "$SETTLE"
    python3 - "$PID" "$ENGINE" <<'EOF'
import os, sys
pid, engine = sys.argv[1], os.path.realpath(sys.argv[2])
vmrss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
own = anon = libs = 0
name = None
for line in open(f"/proc/{pid}/smaps"):
    fields = line.split()
    if "-" in fields[0] and not fields[0].endswith(":"):
        name = fields[5] if len(fields) > 5 else ""
    elif fields[0] == "Rss:":
        rss = int(fields[1])
    elif fields[0] == "Anonymous:":
        a = int(fields[1])
        anon += a
        if name and name.startswith("/"):
            if os.path.realpath(name) == engine:
                own += rss - a
            else:
                libs += rss - a
print(vmrss, own, anon, libs)
EOF
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}

# Median and range of RUNS starts, with the breakdown of the median run.
row() {
    local backend=$1 cores=$2 mode=$3 results=()
    for _ in $(seq "$RUNS"); do results+=("$(measure "$backend" "$cores" "$mode")"); done
    printf '%s\n' "${results[@]}" | python3 -c '
import sys
runs = [l.split() for l in sys.stdin.read().splitlines()]
failed = [" ".join(r) for r in runs if r[0] == "failed:"]
if failed:
    print("failed", failed[0][len("failed: "):].replace("|", "/"))
else:
    runs.sort(key=lambda r: int(r[0]))
    m = runs[(len(runs) - 1) // 2]
    print(m[0], runs[0][0], runs[-1][0], m[1], m[2], m[3])
'
}

mib() { python3 -c "print(f'{$1 / 1024:.2f}')"; }

commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
glibc=$(ldd --version 2>/dev/null | awk 'NR == 1 {print $NF}')
echo "### Idle RSS, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "Commit $commit; $(nproc) CPUs ($cpu), $mem, kernel $(uname -r), glibc $glibc; $RUNS starts per row, VmRSS ${SETTLE} s after the listeners are logged; \`$TERN_BIN\`."
echo
echo "| mode | backend | cores | VmRSS median (MiB) | range (MiB) | tern-engine's file pages (MiB) | anonymous: heap, stacks, written data (MiB) | shared libraries' file pages (MiB) | other: io_uring rings, vDSO (MiB) |"
echo "|---|---|---|---|---|---|---|---|---|"
gate=""
gate_note=""
for mode in http config tcp; do
    for backend in io_uring epoll; do
        for cores in 1 2; do
            result=$(row "$backend" "$cores" "$mode")
            case $mode in
            http) label="--http" ;;
            config) label="--http --config (1 service)" ;;
            tcp) label="TCP" ;;
            esac
            if [[ $result == failed* ]]; then
                echo "| $label | $backend | $cores | not measured (${result#failed }) | | | | | |"
                continue
            fi
            read -r median low high own anon libs <<<"$result"
            other=$((median - own - anon - libs))
            echo "| $label | $backend | $cores | $(mib "$median") | $(mib "$low")–$(mib "$high") | $(mib "$own") | $(mib "$anon") | $(mib "$libs") | $(mib "$other") |"
            if [[ $mode == http && $cores == 1 ]]; then
                if [[ $backend == io_uring ]]; then gate=$median
                elif [[ -z $gate ]]; then gate=$median; gate_note=" (epoll: io_uring could not be set up here)"; fi
            fi
        done
    done
done
echo
echo "| binary | file size (MiB) | text (MiB) | data (KiB) | bss (KiB) |"
echo "|---|---|---|---|---|"
for b in "$TERN_BIN" "$ENGINE"; do
    read -r text data bss _ <<<"$(size "$b" | tail -1)"
    echo "| $(basename "$b") | $(mib "$(($(stat -c %s "$b") / 1024))") | $(mib $((text / 1024))) | $((data / 1024)) | $((bss / 1024)) |"
done
echo
[[ -n $gate ]] || { echo "Target: not checked, --http --cores 1 did not start on either backend."; exit 1; }
if ((gate <= TARGET_KIB)); then
    echo "Target: --http --cores 1 idles at $(mib "$gate") MiB$gate_note, at most 8 MiB: met."
else
    echo "Target: --http --cores 1 idles at $(mib "$gate") MiB$gate_note, above 8 MiB: NOT met."
    exit 1
fi
