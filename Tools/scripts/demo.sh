#!/usr/bin/env bash
# The main job, from a fresh clone on Debian 12 with Swift on PATH: installs what is missing, builds the
# release sidecar (static Swift standard library), starts an iperf3 server as the upstream, runs
# `tern proxy` in front of it, sends traffic through Tern for a few seconds, and prints what Tern did:
# throughput, Tern's CPU time per GB relayed and its memory. Then stops Tern with SIGTERM (it drains and
# exits 0). Everything stays on 127.0.0.1. Then the mesh (Tools/scripts/mesh-demo.py): two apps with their
# sidecars, in network namespaces where it runs as root (else on 127.0.0.1), a canary split and mutual TLS
# between them: the split observed, what crossed the link, a denied request and the two hops' latency.
#
#   bash Tools/scripts/demo.sh            (SECONDS_OF_TRAFFIC=5 by default)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
duration=${SECONDS_OF_TRAFFIC:-5}

bash Tools/scripts/setup.sh
if ! command -v iperf3 >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || { echo "demo: iperf3 is missing (apt-get install iperf3)" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
fi

echo "== building the release sidecar"
swift build -c release --static-swift-stdlib --product tern
swift build -c release --static-swift-stdlib --product tern-engine
swift build -c release --static-swift-stdlib --product tern-load
tern="$root/.build/release/tern"

work=$(mktemp -d /tmp/tern-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

upstream_port=25301
iperf3 -s -p "$upstream_port" -B 127.0.0.1 >"$work/iperf3-server.log" 2>&1 &
pids+=($!)

"$tern" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$upstream_port" 2>"$work/tern.log" &
tern_pid=$!
pids+=("$tern_pid")
port=""
for _ in $(seq 1 100); do
    port=$(grep -o 'listening kind=proxy addr=127.0.0.1:[0-9]*' "$work/tern.log" | head -1 | sed 's/.*://') || true
    [[ -n $port ]] && break
    sleep 0.1
done
[[ -n $port ]] || { cat "$work/tern.log"; echo "demo: tern did not start" >&2; exit 1; }
cat "$work/tern.log"

rss_idle=$(awk '/VmRSS/ {print $2}' "/proc/$tern_pid/status")
ticks=$(getconf CLK_TCK)
cpu_before=$(awk '{print $14 + $15}' "/proc/$tern_pid/stat")
echo "== sending traffic through Tern for ${duration}s (iperf3 -> 127.0.0.1:$port -> iperf3 server)"
iperf3 -c 127.0.0.1 -p "$port" -t "$duration" -J >"$work/iperf3.json"
cpu_after=$(awk '{print $14 + $15}' "/proc/$tern_pid/stat")
rss_busy=$(awk '/VmRSS/ {print $2}' "/proc/$tern_pid/status")

python3 - "$work/iperf3.json" "$cpu_before" "$cpu_after" "$ticks" "$rss_idle" "$rss_busy" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
recv = report["end"]["sum_received"]
gb = recv["bytes"] / 1e9
cpu = (float(sys.argv[3]) - float(sys.argv[2])) / float(sys.argv[4])
print()
print(f"Tern relayed {gb:.2f} GB in {recv['seconds']:.1f} s: {recv['bits_per_second'] / 1e9:.2f} Gbit/s")
print(f"Tern CPU time: {cpu:.2f} s ({cpu / gb if gb else 0:.3f} s per GB relayed)")
print(f"Tern resident memory: {int(sys.argv[5]) / 1024:.1f} MiB idle, {int(sys.argv[6]) / 1024:.1f} MiB after the run")
PY

echo
echo "== stopping Tern with SIGTERM"
kill -TERM "$tern_pid"
status=0
wait "$tern_pid" || status=$?
tail -n 3 "$work/tern.log"
echo "tern exited with status $status"

echo
echo "== the mesh: two apps, their sidecars, mutual TLS between them"
python3 Tools/scripts/mesh-demo.py --tern "$tern" --tern-load "$root/.build/release/tern-load"
