#!/usr/bin/env bash
# Instructions per proxied HTTP/1.1 request, counted by valgrind's callgrind: an A/B of two Tern builds that the
# shared VM's noise cannot move (callgrind counts instructions, not time; the same binary and load give the same
# count within a fraction of a percent). See Benchmarks/README.md.
#
#   TERN_BIN=... TERN_BASE_BIN=... bash Benchmarks/instructions-per-request.sh [REPEATS]
#
# For each build, REPEATS times (default 3): `tern proxy --http --cores 1 --io-backend epoll` (io_uring is not
# emulated by valgrind) under callgrind in front of an nginx origin answering 100 B, loaded by tern-load over
# 4 keep-alive connections: 1,000 warm-up requests, then 5,000 in one run and 25,000 in another. Instructions
# per request = (median count of the long runs − median of the short ones) / 20,000, so start-up and shutdown
# cancel. Prints every run, the figures per request and test ÷ base.
#
# Environment: TERN_BIN (default .build/release/tern), TERN_BASE_BIN (required), TERN_LOAD_BIN (default
# .build/release/tern-load). Needs valgrind and nginx (`bash Tools/scripts/setup.sh --bench` installs both).
# An A/B of two configurations of one build instead: TERN_BASE_BIN=$TERN_BIN with TERN_BASE_ARGS and TERN_TEST_ARGS,
# each replacing `--upstream 127.0.0.1:18080` (e.g. `--config FILE`, whose endpoint is that origin), and
# TERN_LOAD_HOST, the Host the load sends (the configuration's service); Benchmarks/resilience-cost.sh does that.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TERN_BIN=${TERN_BIN:-$REPO_ROOT/.build/release/tern}
TERN_BASE_BIN=${TERN_BASE_BIN:?set TERN_BASE_BIN to the other build\'s tern}
TERN_LOAD_BIN=${TERN_LOAD_BIN:-$REPO_ROOT/.build/release/tern-load}
REPEATS=${1:-3}
ORIGIN_ARGS="--upstream 127.0.0.1:18080"
TERN_BASE_ARGS=${TERN_BASE_ARGS:-$ORIGIN_ARGS}
TERN_TEST_ARGS=${TERN_TEST_ARGS:-$ORIGIN_ARGS}
LOAD_ARGS=()
[[ -n ${TERN_LOAD_HOST:-} ]] && LOAD_ARGS=(--header "Host: $TERN_LOAD_HOST")
ORIGIN_PORT=18080
TERN_PORT=18081
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in valgrind nginx strip python3; do command -v "$tool" >/dev/null || die "needs $tool"; done
WORK=$(mktemp -d /tmp/tern-instructions.XXXXXX)
cleanup() {
    [[ -s $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location / { return 200 "$(printf 'x%.0s' $(seq 1 100))"; }
    }
}
CONF
nginx -c "$WORK/nginx.conf" &
for _ in $(seq 1 50); do [[ -s $WORK/nginx.pid ]] && break; sleep 0.1; done

# valgrind 3.19 cannot read the DWARF 5 the Swift toolchain writes: count on copies without debug info.
for who in test base; do
    bin=$TERN_BIN
    [[ $who == base ]] && bin=$TERN_BASE_BIN
    mkdir -p "$WORK/$who"
    for b in tern tern-engine; do strip --strip-debug -o "$WORK/$who/$b" "$(dirname "$bin")/$b"; done
done

# count WHO N: callgrind's instruction count for tern-engine serving N requests after 1,000 warm-up ones.
count() {
    local who=$1 n=$2 out="$WORK/$1-$2" vpid args=$TERN_TEST_ARGS
    [[ $who == base ]] && args=$TERN_BASE_ARGS
    # shellcheck disable=SC2086 # the arguments are words on purpose
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out.cg" "$WORK/$who/tern" proxy --http \
        --cores 1 --io-backend epoll --listen "127.0.0.1:$TERN_PORT" $args \
        --admin off --health off --prometheus off 2>"$out.log" &
    vpid=$!
    for _ in $(seq 1 300); do grep -q "listening kind=http" "$out.log" 2>/dev/null && break; sleep 0.1; done
    "$TERN_LOAD_BIN" --io-backend epoll --connections 4 --requests 1000 "${LOAD_ARGS[@]}" "http://127.0.0.1:$TERN_PORT/" >/dev/null
    "$TERN_LOAD_BIN" --io-backend epoll --connections 4 --requests "$n" "${LOAD_ARGS[@]}" "http://127.0.0.1:$TERN_PORT/" >"$out.load"
    grep -q "errors: connect 0, timeout 0, reset 0, 4xx 0, 5xx 0" "$out.load" || die "$who: failed requests: $(grep errors "$out.load")"
    kill -TERM "$vpid"
    wait "$vpid" || true
    grep 'I   refs' "$out.log" | tr -d ',' | awk '{ print $NF }'
}

# Per request from the medians of the short and of the long runs: a run now and then counts some 100 million
# instructions more (start-up work outside the request path), and a median of each set leaves it out.
declare -A SHORT LONG
for r in $(seq 1 "$REPEATS"); do
    for who in base test; do
        short=$(count "$who" 5000)
        long=$(count "$who" 25000)
        log "round $r, $who: $short instructions for 5,000 requests, $long for 25,000"
        SHORT[$who]+="$short "
        LONG[$who]+="$long "
    done
done
median() { python3 -c "import statistics, sys; print(int(statistics.median(map(int, sys.argv[1:]))))" $1; }
declare -A PER
for who in base test; do
    PER[$who]=$(( ($(median "${LONG[$who]}") - $(median "${SHORT[$who]}")) / 20000 ))
done
echo
echo "Instructions per proxied request (callgrind, epoll, 100 B, medians of $REPEATS runs each; $(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
echo "| build | per request | 5,000-request runs | 25,000-request runs |"
echo "| --- | --- | --- | --- |"
echo "| base ($TERN_BASE_BIN) | ${PER[base]} | ${SHORT[base]}| ${LONG[base]}|"
echo "| test ($TERN_BIN) | ${PER[test]} | ${SHORT[test]}| ${LONG[test]}|"
echo
python3 -c "print(f'test ÷ base: {${PER[test]} / ${PER[base]}:.3f}')"
