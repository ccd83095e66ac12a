#!/usr/bin/env bash
# Writes Tools/link/tern-engine.order: the functions tern-engine runs from exec until it serves, which its link
# (Package.swift, `engineLinking`) places next to each other.
#
# Why: an idle engine's resident memory is mostly its own file's pages touched at start, and the kernel maps
# file pages 64 KiB at a time around each one touched (fault-around). Start-up runs a few hundred KiB of code
# scattered over the whole binary; left where the link puts it, almost every 64 KiB window of the text is
# touched and stays resident. Placed together, those functions fill a few windows (Benchmarks/README.md,
# "Idle memory").
#
# How: only functions the linker can move are candidates: each must sit in a section of its own in its object
# file. Tern's targets build with -function-sections; the static standard library has its public code so, and
# its internal code in one 1.6 MiB section that no order can split (start-up touches it all over anyway). The
# engine runs under gdb with a one-shot breakpoint on every candidate, until it logs its listeners: for --http
# and TCP on io_uring and on epoll, then for --http with a small Istio configuration, with the arguments
# `tern proxy` passes by default and every listener on loopback. Every breakpoint hit is a function start-up
# ran. (valgrind would be faster, but cannot follow io_uring's blocking waits.) Functions the compiler emits
# without a symbol (modify-accessor continuations, some metadata functions) cannot be named, so stay put.
#
# Run it after changing what start-up does, on a fresh release build, then build again:
#   swift build -c release --static-swift-stdlib --scratch-path .build-rel
#   bash Tools/scripts/startup-order.sh .build-rel
#   swift build -c release --static-swift-stdlib --scratch-path .build-rel
# SwiftPM does not know the link reads the order, so the script removes the engine it traced: the next build
# links it again. A stale order costs memory, never correctness: names it lists that no longer exist are
# ignored, functions it misses stay where the link puts them. Benchmarks/idle-rss.sh shows when it went stale.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
scratch="${1:-$root/.build-rel}"
engine="$scratch/release/tern-engine"
objects="$scratch/release/tern-engine.product/Objects.LinkFileList"
out="$root/Tools/link/tern-engine.order"
for tool in gdb objcopy objdump nm python3; do
    command -v "$tool" >/dev/null ||
        { echo "startup-order: needs $tool (apt-get install gdb binutils python3)" >&2; exit 1; }
done
[[ -x $engine && -f $objects ]] || { echo "startup-order: no release build in $scratch (see the header)" >&2; exit 1; }
static_lib="$(dirname "$(readlink -f "$(command -v swiftc)")")/../lib/swift_static/linux"

work=$(mktemp -d)
gdb_pid=""
cleanup() {
    # The engine under gdb first: a tracee outlives a killed tracer.
    if [[ -f $work/pid ]]; then kill -KILL "$(cat "$work/pid")" 2>/dev/null || true; fi
    if [[ -n $gdb_pid ]]; then kill -KILL "$gdb_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# gdb needs only the symbol table (and reads the toolchain's DWARF slowly).
objcopy --strip-debug "$engine" "$work/tern-engine"

# Which functions sit in a section of their own ("own") and which share one ("shared").
{
    for a in "$static_lib"/lib{swiftCore,swift_Concurrency,swift_StringProcessing,swift_RegexParser}.a \
        "$static_lib"/lib{swiftGlibc,swiftSynchronization,dispatch,BlocksRuntime}.a "$static_lib/x86_64/swiftrt.o"; do
        if [[ -f $a ]]; then objdump -t "$a" 2>/dev/null; fi
    done
    while read -r o; do objdump -t "$o"; done <"$objects"
} | python3 -c '
import re, sys
for line in sys.stdin:
    m = re.match(r"^[0-9a-f]{16} (.{7}) (\S+)\t[0-9a-f]+ (?:\.hidden |\.protected |\.internal )?(\S+)", line)
    if m and "F" in m.group(1) and m.group(2).startswith(".text"):
        print("shared" if m.group(2) == ".text" else "own", m.group(3))
' >"$work/sections"
nm --defined-only "$engine" >"$work/defined"
touch "$work/ran"

# The candidates not seen yet, as "offset name" lines.
candidates() {
    python3 - "$work" <<'EOF'
import sys
work = sys.argv[1]
own, shared = set(), set()
for line in open(f"{work}/sections"):
    kind, name = line.split()
    (own if kind == "own" else shared).add(name)
ran = set(open(f"{work}/ran").read().split())
with open(f"{work}/candidates", "w") as f:
    for line in open(f"{work}/defined"):
        p = line.split()
        if len(p) == 3 and p[1] in "tTwW" and p[2] in own and p[2] not in ran:
            f.write(f"{p[0]} {p[2]}\n")
EOF
}

cat >"$work/trace.py" <<'EOF'
# One-shot breakpoints on every candidate; records each the first time it is hit, until the engine is stopped.
import gdb, os
gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("handle SIGPIPE nostop noprint pass")
gdb.execute(f"starti {os.environ['TRACE_ARGS']} >/dev/null 2>{os.environ['TRACE_LOG']} </dev/null")
base = None
for line in gdb.execute("info proc mappings", to_string=True).splitlines():
    p = line.split()
    if len(p) >= 5 and p[-1].endswith("/tern-engine") and int(p[3], 16) == 0:
        base = int(p[0], 16)
        break
hits = []
class FirstHit(gdb.Breakpoint):
    def __init__(self, address, name):
        super().__init__(f"*{address:#x}", internal=True)
        self.name = name
    def stop(self):
        hits.append(self.name)
        self.enabled = False
        return False
points = [FirstHit(base + int(a, 16), n) for a, n in (l.split() for l in open(os.environ["TRACE_CANDIDATES"]))]
with open(os.environ["TRACE_PID"], "w") as f:
    f.write(str(gdb.selected_inferior().pid))
try:
    gdb.execute("continue")
except gdb.error:
    pass
with open(os.environ["TRACE_OUT"], "a") as f:
    f.write("".join(h + "\n" for h in hits))
gdb.execute("kill")
EOF

# A mesh sidecar's configuration at its smallest: one service, one route, one subset.
cp "$(dirname "${BASH_SOURCE[0]}")/../../Benchmarks/lib/smallest-mesh.yaml" "$work/mesh.yaml"  # shared with Benchmarks/idle-rss.sh
common=(listen=127.0.0.1:0 cores=1 ring-depth=1024 sqpoll=0
    connect-timeout-ns=5000000000 idle-timeout-ns=3600000000000 drain-timeout-ns=5000000000 max-connections=0
    log-level=info admin=req:127.0.0.1:0 health=req:127.0.0.1:0 prometheus=req:127.0.0.1:0 metrics=1 workload=unknown
    workload-namespace=default access-log-format=json trace-sampling=1.0)
http=(http=1 max-request-headers-bytes=61440 max-request-headers-count=100 max-uri-bytes=16384 xff-trusted-hops=0
    upstream-timeout-ns=15000000000 request-header-timeout-ns=10000000000 stream-idle-timeout-ns=300000000000
    max-pending-requests=1024 max-upstream-connections=1024 max-idle-upstream=64 upstream-idle-timeout-ns=3600000000000)

# Phase 1: what every start-up runs; phase 2: what --config adds. Each phase's functions are placed together.
phase=1
trace() {
    local label=$1; shift
    local log="$work/engine.log"
    rm -f "$log" "$work/pid"
    candidates
    TRACE_ARGS="__serve-proxy ${common[*]} $*" TRACE_LOG="$log" TRACE_CANDIDATES="$work/candidates" \
        TRACE_PID="$work/pid" TRACE_OUT="$work/ran.$phase" gdb -q -batch -x "$work/trace.py" "$work/tern-engine" \
        >"$work/gdb.out" 2>&1 &
    gdb_pid=$!
    local deadline=$((SECONDS + 300))
    until [[ -f $log && $(grep -c 'listening kind=' "$log" || true) -ge 4 ]]; do
        kill -0 "$gdb_pid" 2>/dev/null ||
            { echo "startup-order: gdb exited:" >&2; cat "$work/gdb.out" "$log" >&2; exit 1; }
        ((SECONDS < deadline)) || { echo "startup-order: no listeners after 300 s" >&2; exit 1; }
        sleep 0.5
    done
    sleep 0.5
    # The engine blocks SIGINT and SIGTERM (it reads them from a signalfd); SIGSTOP hands control back to gdb.
    kill -STOP "$(cat "$work/pid")"
    wait "$gdb_pid" || true
    gdb_pid=""
    rm -f "$work/pid"
    sort -u "$work/ran.$phase" "$work/ran" -o "$work/ran"
    echo "startup-order: traced $label ($(wc -l <"$work/ran") functions so far)"
}
trace "--http on io_uring" io-backend=io_uring upstream=127.0.0.1:9 "${http[@]}"
trace "--http on epoll" io-backend=epoll upstream=127.0.0.1:9 "${http[@]}"
trace "TCP on io_uring" io-backend=io_uring upstream=127.0.0.1:9
trace "TCP on epoll" io-backend=epoll upstream=127.0.0.1:9
phase=2
trace "--http --config on io_uring" io-backend=io_uring config="$work/mesh.yaml" namespace=shop "${http[@]}"

# Phase by phase: what every start-up runs comes first, what only --config adds after it, so that one does not
# spread the other. Some functions are emitted under one name both in a section of their own (by Tern's modules)
# and inside a shared section (by the standard library); the linker orders by name and moves that whole shared
# section to the name's place, so within a phase such names follow the others.
python3 - "$work" "$out" "$phase" <<'EOF2'
import sys
work, out, phases = sys.argv[1], sys.argv[2], int(sys.argv[3])
shared = {l.split()[1] for l in open(f"{work}/sections") if l.startswith("shared ")}
groups = [sorted(set(open(f"{work}/ran.{i}").read().split())) for i in range(1, phases + 1)]
ordered = [n for g in groups for n in [m for m in g if m not in shared] + [m for m in g if m in shared]]
with open(out, "w") as f:
    f.write("".join(n + "\n" for n in ordered))
print(f"startup-order: wrote {len(ordered)} functions to {out} "
      f"({sum(n in shared for n in ordered)} also named in a shared section, each after its phase's others)")
EOF2
rm -f "$(readlink -f "$engine")"
echo "startup-order: removed $engine; build again to link it with the new order"
