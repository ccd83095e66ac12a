#!/usr/bin/env bash
# tern-load side by side with wrk and h2load (HTTP/1.1) against the same nginx origin, in one go (issue 5):
# the most requests per second each generator gets out of one core, the CPU it spends per request (the
# generator must never be the bottleneck), and whether their p50 and p99 agree at the same load. Prints a
# markdown table; figures with date and machine go in Benchmarks/README.md. With tcpdump present, the run of
# all three at once also gives the wire's view of each connection (what no client-side delay can add to). Last, tern-load's allocations:
# a malloc-counting preload around 1 s and 3 s runs, which must count the same (nothing per request).
#
#   bash Benchmarks/tern-load-vs-wrk.sh
#
# Environment:
#   TERN_LOAD_BIN  tern-load binary (default .build/release/tern-load; `swift build -c release`)
#   DURATION       seconds per run (default 5)
#   CONNECTIONS    connections per generator (default 50)
#   RATE           requests per second for the equal-load comparison (default 20000)
#   ROUNDS         rounds of every run, generators in turn within each (default 5); tables give medians
#   KEEP_LOGS      set to 1 to keep the temp dir with the nginx config and every tool's output
#
# CPU layout (2 cores): nginx (one worker) on CPU 0, each generator on CPU 1 with one thread. First all three
# run closed loop with CONNECTIONS connections (the most each gets; the faster generator loads nginx harder,
# so their latencies differ for that reason too). Then at the same load: one connection closed loop (the
# same arrivals from all three), and RATE requests per second paced by tern-load --rate and h2load --rps
# (wrk cannot pace; h2load fires its connections' timers together, tern-load spreads them evenly).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TERN_LOAD_BIN=${TERN_LOAD_BIN:-$REPO_ROOT/.build/release/tern-load}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-50}
RATE=${RATE:-20000}
ROUNDS=${ROUNDS:-5}
KEEP_LOGS=${KEEP_LOGS:-0}
ORIGIN_PORT=25301
ORIGIN_CPU=0
LOAD_CPU=1

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $TERN_LOAD_BIN ]] || die "no tern-load at $TERN_LOAD_BIN (build with: swift build -c release, or set TERN_LOAD_BIN)"
(( $(nproc) >= 2 )) || die "needs at least 2 CPUs (origin on CPU $ORIGIN_CPU, generators on CPU $LOAD_CPU)"
bash "$REPO_ROOT/Tools/scripts/setup.sh" --bench

WORK=$(mktemp -d /tmp/tern-load-bench.XXXXXX)
NGINX_PID=""
cleanup() {
    if [[ -n $NGINX_PID ]]; then
        kill -TERM "$NGINX_PID" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NGINX_PID" 2>/dev/null || true
    fi
    if [[ $KEEP_LOGS == 1 ]]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$ORIGIN_PORT reuseport backlog=4096;
        location / { return 200 "hello from nginx\n"; }
    }
}
EOF
taskset -c "$ORIGIN_CPU" nginx -p "$WORK" -c "$WORK/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$ORIGIN_PORT/" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$ORIGIN_PORT/" >/dev/null || die "nginx did not start: $(cat "$WORK/nginx-error.log")"
URL="http://127.0.0.1:$ORIGIN_PORT/"

# Runs a generator on CPU 1; its CPU seconds (user + system) go to $WORK/NAME.cpu, its output to NAME.out.
run() {
    local name=$1
    shift
    log "$name: $*"
    /usr/bin/time -f '%U %S' -o "$WORK/$name.time" taskset -c "$LOAD_CPU" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" \
        || die "$name failed: $(cat "$WORK/$name.err")"
    awk '{ print $1 + $2 }' "$WORK/$name.time" >"$WORK/$name.cpu"
}

# The three generators at once, one connection each, on CPU 1: the same server at the same moments of the
# VM, so its noise meets all three alike (run one after another, a tail can move 4x between runs). Each tags
# its URL (`?wrk`, ...) and tcpdump, on the origin's CPU, records the exchanges, from which
# lib/wire_latency.py gives each connection's latency as the wire saw it: a generator's figure is that plus
# its own delays (wake-up, parse, timestamping), so the difference shows how much each adds.
together() {
    local r=$1 dump="" pids=() pid
    if command -v tcpdump >/dev/null; then
        taskset -c "$ORIGIN_CPU" tcpdump -q -n -i lo -s 256 -B 65536 --time-stamp-precision=nano \
            -w "$WORK/together-r$r.pcap" "tcp port $ORIGIN_PORT and (tcp[tcpflags] & tcp-push != 0)" \
            2>"$WORK/tcpdump-r$r.err" &
        dump=$!
        for _ in $(seq 1 50); do grep -q "listening on" "$WORK/tcpdump-r$r.err" 2>/dev/null && break; sleep 0.1; done
        grep -q "listening on" "$WORK/tcpdump-r$r.err" || die "tcpdump did not start: $(cat "$WORK/tcpdump-r$r.err")"
    fi
    log "together: wrk, h2load and tern-load, one connection each, at once"
    taskset -c "$LOAD_CPU" wrk -t1 -c1 -d"${DURATION}s" --latency "$URL?wrk" >"$WORK/together-wrk-r$r.out" 2>&1 & pids+=($!)
    taskset -c "$LOAD_CPU" h2load --h1 -t1 -c1 -D"$DURATION" --log-file="$WORK/together-h2load-r$r.log" "$URL?h2load" \
        >"$WORK/together-h2load-r$r.out" 2>&1 & pids+=($!)
    taskset -c "$LOAD_CPU" "$TERN_LOAD_BIN" --cores 1 --connections 1 --duration "${DURATION}s" --json "$URL?tern-load" \
        >"$WORK/together-tern-load-r$r.out" 2>"$WORK/together-tern-load-r$r.err" & pids+=($!)
    for pid in "${pids[@]}"; do wait "$pid" || die "a generator failed in the together run (logs in $WORK)"; done
    if [[ -n $dump ]]; then
        sleep 0.3
        kill -INT "$dump"
        wait "$dump" || true
        python3 "$REPO_ROOT/Benchmarks/lib/wire_latency.py" "$WORK/together-r$r.pcap" "$ORIGIN_PORT" >"$WORK/together-r$r.wire"
        rm -f "$WORK/together-r$r.pcap"
    fi
}

# ROUNDS rounds, each running every generator once in turn, so a drift of the shared machine meets all of them
# alike; the tables give each figure's median over the rounds.
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS"
    run "wrk-r$r" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$URL"
    run "h2load-r$r" h2load --h1 -t1 -c"$CONNECTIONS" -D"$DURATION" --log-file="$WORK/h2load-r$r.log" "$URL"
    run "tern-load-io_uring-r$r" "$TERN_LOAD_BIN" --io-backend io_uring --cores 1 --connections "$CONNECTIONS" --duration "${DURATION}s" --json "$URL"
    run "tern-load-epoll-r$r" "$TERN_LOAD_BIN" --io-backend epoll --cores 1 --connections "$CONNECTIONS" --duration "${DURATION}s" --json "$URL"
    run "wrk-1-r$r" wrk -t1 -c1 -d"${DURATION}s" --latency "$URL"
    run "h2load-1-r$r" h2load --h1 -t1 -c1 -D"$DURATION" --log-file="$WORK/h2load-1-r$r.log" "$URL"
    run "tern-load-1-r$r" "$TERN_LOAD_BIN" --cores 1 --connections 1 --duration "${DURATION}s" --json "$URL"
    run "h2load-paced-r$r" h2load --h1 -t1 -c"$CONNECTIONS" --rps=$((RATE / CONNECTIONS)) -D"$DURATION" --log-file="$WORK/h2load-paced-r$r.log" "$URL"
    run "tern-load-paced-r$r" "$TERN_LOAD_BIN" --cores 1 --connections "$CONNECTIONS" --rate "$RATE" --duration "${DURATION}s" --json "$URL"
    together "$r"
done

python3 - "$WORK" "$DURATION" "$CONNECTIONS" "$RATE" "$ROUNDS" <<'PY'
import json, re, statistics, sys
work, duration, connections, rate, rounds = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])

def median_of(f):
    """Calls f(name suffix) for each round; the median of each element of what it returns."""
    results = [f(f"-r{r}") for r in range(1, rounds + 1)]
    if isinstance(results[0], tuple):
        return tuple(statistics.median(x[i] for x in results) for i in range(len(results[0])))
    return statistics.median(results)

def cpu(name):
    return float(open(f"{work}/{name}.cpu").read())

def wrk_time(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]

def wrk_figures(name):
    out = open(f"{work}/{name}.out").read()
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), wrk_time(lat["50"]), wrk_time(lat["99"])

def h2load_rps(name):
    return float(re.search(r"finished in [^,]+, ([\d.]+) req/s", open(f"{work}/{name}.out").read()).group(1))

def h2load_percentiles(log):
    samples = sorted(int(line.split("\t")[2]) for line in open(log) if line.strip())
    return [samples[min(len(samples) - 1, int(p / 100 * len(samples)))] for p in (50, 99)]

def h2load_figures(name):
    return (h2load_rps(name), *h2load_percentiles(f"{work}/{name}.log"))

def tern_figures(name, key="latency_us"):
    doc = json.load(open(f"{work}/{name}.out"))
    return doc["requests_per_second"], doc[key]["p50"], doc[key]["p99"]

def with_cpu(figures, name):
    return lambda r: (*figures(name + r), cpu(name + r))

rows = [("wrk 4.1", *median_of(with_cpu(wrk_figures, "wrk"))),
        ("h2load 1.52 (--h1)", *median_of(with_cpu(h2load_figures, "h2load")))]
for backend in ("io_uring", "epoll"):
    rows.append((f"tern-load {backend}", *median_of(with_cpu(tern_figures, f"tern-load-{backend}"))))

def per_cpu(rps, seconds):
    return rps * duration / seconds if seconds > 0 else float("inf")

wrk = rows[0]
print(f"\nHTTP/1.1 against nginx (1 worker, CPU 0); each generator on CPU 1, {connections} connections, {duration:g} s, "
      f"closed loop; medians of {rounds} rounds\n")
print("| generator | req/s | generator CPU s | req per CPU second | vs wrk | p50 µs | p99 µs | p50 vs wrk | p99 vs wrk |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name, rps, p50, p99, seconds in rows:
    print(f"| {name} | {rps:,.0f} | {seconds:.2f} | {per_cpu(rps, seconds):,.0f} | {per_cpu(rps, seconds) / per_cpu(wrk[1], wrk[4]):.2f}× "
          f"| {p50:,.0f} | {p99:,.0f} | {(p50 / wrk[2] - 1) * 100:+.1f}% | {(p99 / wrk[3] - 1) * 100:+.1f}% |")

# One connection: every generator sends exactly when the last response ended, so all measure the same thing.
one = [("wrk 4.1", wrk_figures, "wrk-1"), ("h2load 1.52 (--h1)", h2load_figures, "h2load-1"), ("tern-load", tern_figures, "tern-load-1")]
per_round = {label: [f(f"{name}-r{r}") for r in range(1, rounds + 1)] for label, f, name in one}
med = {label: tuple(statistics.median(x[i] for x in rs) for i in range(3)) for label, rs in per_round.items()}
w, h, t = med["wrk 4.1"], med["h2load 1.52 (--h1)"], med["tern-load"]
print(f"\nOne connection, closed loop (the same arrivals from every generator); medians of {rounds} rounds\n")
print("| generator | req/s | p50 µs | p99 µs | p50 vs wrk | p99 vs wrk | p50 vs h2load | p99 vs h2load | p99 µs per round |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for label, (rps, p50, p99) in med.items():
    rounds_p99 = ", ".join(f"{x[2]:,.0f}" for x in per_round[label])
    print(f"| {label} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} | {(p50 / w[1] - 1) * 100:+.1f}% | {(p99 / w[2] - 1) * 100:+.1f}% "
          f"| {(p50 / h[1] - 1) * 100:+.1f}% | {(p99 / h[2] - 1) * 100:+.1f}% | {rounds_p99} |")
def agreement(prefix, t, w, h):
    """The issue's figure: tern-load's (t) p50 and p99 within 10 % of wrk's (w) and h2load's (h); tuples (rps, p50, p99)."""
    worst = max(abs(t[i] / ref[i] - 1) for ref in (w, h) for i in (1, 2))
    print(f"\n{prefix}tern-load's p50 and p99 against wrk's and h2load's: at most {worst * 100:.1f}% apart (target: within 10%: "
          + ("met" if worst <= 0.10 else "NOT met") + f"); wrk and h2load differ from each other by "
          f"{abs(h[1] / w[1] - 1) * 100:.1f}% at p50 and {abs(h[2] / w[2] - 1) * 100:.1f}% at p99.")
agreement("", t, w, h)

# Together: the three at once, one connection each (see together() above), with the wire's view when tcpdump ran.
gens = (("wrk 4.1", "wrk", lambda r: wrk_figures("together-wrk" + r)),
        ("h2load 1.52 (--h1)", "h2load", lambda r: (h2load_rps("together-h2load" + r), *h2load_percentiles(f"{work}/together-h2load{r}.log"))),
        ("tern-load", "tern-load", lambda r: tern_figures("together-tern-load" + r)))
def wire(r, tag):
    try:
        for line in open(f"{work}/together{r}.wire"):
            doc = json.loads(line)
            if doc["tag"] == tag:
                return doc["p50"], doc["p99"]
    except FileNotFoundError:
        pass
    return None
together = {label: median_of(f) for label, _, f in gens}
wires = {}
for label, tag, _ in gens:
    seen = [wire(f"-r{r}", tag) for r in range(1, rounds + 1)]
    if all(seen):
        wires[label] = tuple(statistics.median(x[i] for x in seen) for i in range(2))
tw, th, tt = together["wrk 4.1"], together["h2load 1.52 (--h1)"], together["tern-load"]
print(f"\nThe three at once, one connection each, same nginx, same moments (medians of {rounds} rounds); the wire "
      "columns are each connection's request-to-response time from a loopback capture, which no client-side delay "
      "can add to, and 'added' is the generator's figure minus the wire's\n")
print("| generator | req/s | p50 µs | p99 µs | p50 vs wrk | p99 vs wrk | p50 vs h2load | p99 vs h2load | wire p50 µs | wire p99 µs | added p50 µs | added p99 µs |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for label, (rps, p50, p99) in together.items():
    w_ = wires.get(label)
    wire_cells = f"{w_[0]:,.0f} | {w_[1]:,.0f} | {p50 - w_[0]:+,.0f} | {p99 - w_[1]:+,.0f}" if w_ else "- | - | - | -"
    print(f"| {label} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} | {(p50 / tw[1] - 1) * 100:+.1f}% | {(p99 / tw[2] - 1) * 100:+.1f}% "
          f"| {(p50 / th[1] - 1) * 100:+.1f}% | {(p99 / th[2] - 1) * 100:+.1f}% | {wire_cells} |")
agreement("At once, ", tt, tw, th)

h2 = median_of(lambda r: h2load_figures("h2load-paced" + r))
print(f"\nThe same load: {rate} req/s over {connections} connections (h2load --rps per connection, tern-load --rate);"
      " latency from when each request left (h2load's measure, tern-load's uncorrected) and, for tern-load, from"
      f" when it was due; medians of {rounds} rounds\n")
print("| generator | req/s | p50 µs | p99 µs | p50 vs h2load | p99 vs h2load |")
print("| --- | --- | --- | --- | --- | --- |")
print(f"| h2load 1.52 (--h1 --rps) | {h2[0]:,.0f} | {h2[1]:,.0f} | {h2[2]:,.0f} | | |")
for label, key in (("tern-load --rate, uncorrected", "latency_uncorrected_us"), ("tern-load --rate, corrected", "latency_us")):
    rps, p50, p99 = median_of(lambda r: tern_figures("tern-load-paced" + r, key))
    print(f"| {label} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} | {(p50 / h2[1] - 1) * 100:+.1f}% | {(p99 / h2[2] - 1) * 100:+.1f}% |")
PY

# Allocations: malloc/calloc/realloc/posix_memalign calls over a whole run, counted by an LD_PRELOAD
# interposer; the steady state allocates nothing when a longer run (more requests) counts the same.
cat >"$WORK/count-malloc.c" <<'CSRC'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>
static atomic_long calls;
static char early[1 << 16]; /* calloc while dlsym looks up the real calloc (dlsym callocs) */
static size_t early_used;
static int resolving;
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void (*real_free)(void *);
void *malloc(size_t n) {
    if (!real_malloc) real_malloc = dlsym(RTLD_NEXT, "malloc");
    atomic_fetch_add(&calls, 1);
    return real_malloc(n);
}
void *calloc(size_t a, size_t b) {
    if (!real_calloc) {
        if (resolving) { void *p = early + early_used; early_used += (a * b + 15) & ~(size_t)15; return p; }
        resolving = 1;
        real_calloc = dlsym(RTLD_NEXT, "calloc");
        resolving = 0;
    }
    atomic_fetch_add(&calls, 1);
    return real_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    if (!real_realloc) real_realloc = dlsym(RTLD_NEXT, "realloc");
    atomic_fetch_add(&calls, 1);
    return real_realloc(p, n);
}
int posix_memalign(void **p, size_t a, size_t n) {
    if (!real_posix_memalign) real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    atomic_fetch_add(&calls, 1);
    return real_posix_memalign(p, a, n);
}
void free(void *p) {
    if ((char *)p >= early && (char *)p < early + sizeof early) return;
    if (!real_free) real_free = dlsym(RTLD_NEXT, "free");
    real_free(p);
}
__attribute__((destructor)) static void report(void) {
    char line[64];
    int n = snprintf(line, sizeof line, "allocations=%ld\n", atomic_load(&calls));
    if (write(2, line, n) < 0) {}
}
CSRC
gcc -O2 -shared -fPIC -o "$WORK/count-malloc.so" "$WORK/count-malloc.c" -ldl
echo
echo "| tern-load run (io_uring, $CONNECTIONS connections) | requests | allocations (whole process) |"
echo "| --- | --- | --- |"
for mode in "closed loop" "open loop 5000 req/s"; do
    rate=()
    [[ $mode == open* ]] && rate=(--rate 5000)
    for seconds in 1 3; do
        LD_PRELOAD="$WORK/count-malloc.so" taskset -c "$LOAD_CPU" "$TERN_LOAD_BIN" --io-backend io_uring --cores 1 \
            --connections "$CONNECTIONS" --duration "${seconds}s" "${rate[@]}" --json "$URL" >"$WORK/alloc.out" 2>"$WORK/alloc.err"
        requests=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["requests"])' "$WORK/alloc.out")
        echo "| $mode, ${seconds} s | $requests | $(sed -n 's/^allocations=//p' "$WORK/alloc.err") |"
    done
done
