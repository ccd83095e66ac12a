#!/usr/bin/env bash
# Builds the fuzz targets (Tools/fuzz, libFuzzer via `swift build --sanitize=fuzzer`), replays each one's checked-in
# corpus and every past crasher as regression cases, then fuzzes each for a bounded time (FUZZ_SECONDS, default
# 20). A new crasher is written to Tools/fuzz/crashers/ and fails the run: minimise it, keep it, fix the bug.
#   FuzzHTTP1        the HTTP/1.1 head parser and chunked decoder    corpus/http1
#   FuzzClientHello  the ClientHello reader of SNI routing (TernTLS)  corpus/clienthello
#   FuzzHTTP2        HTTP/2 sessions (both roles), HTTP2Translation   corpus/http2
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds=${FUZZ_SECONDS:-20}
cd "$root/Tools/fuzz"
swift build --sanitize=fuzzer
bindir="$(swift build --sanitize=fuzzer --show-bin-path)"
# Swift's crash backtracer handles SIGILL (a failed precondition), SIGABRT and the like, and libFuzzer leaves a
# signal that already has a handler alone: a crash would end the run without writing its input. Off.
export SWIFT_BACKTRACE=enable=no
work=$(mktemp -d /tmp/tern-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT

run() {  # target corpus-dir max-len
    local target=$1 corpus=$2 maxlen=$3 bin="$bindir/$1"
    local replay=("$corpus"/*)
    for f in crashers/"$target"-* crashers/crash-*; do
        [[ -f $f ]] || continue
        # Old crashers (crash-*) belong to FuzzHTTP1, the only target before FuzzClientHello.
        if [[ $(basename "$f") == crash-* && $target != FuzzHTTP1 ]]; then continue; fi
        replay+=("$f")
    done
    "$bin" "${replay[@]}" >/dev/null 2>&1 || { echo "fuzz: a $target corpus or crasher case fails again:" >&2; "$bin" "${replay[@]}"; exit 1; }
    echo "fuzz: $target replayed ${#replay[@]} corpus and crasher cases"
    mkdir -p "$work/$target"
    "$bin" "$work/$target" "$corpus" -max_total_time="$seconds" -max_len="$maxlen" -timeout=5 \
        -artifact_prefix="$root/Tools/fuzz/crashers/$target-" -print_final_stats=1 2>"$work/$target.log" \
        || { tail -30 "$work/$target.log" >&2; echo "fuzz: crasher written to Tools/fuzz/crashers/" >&2; exit 1; }
    grep -E "stat::number_of_executed_units|Done" "$work/$target.log" | tail -2
}

run FuzzHTTP1 corpus/http1 4096
run FuzzClientHello corpus/clienthello 4096
run FuzzHTTP2 corpus/http2 16384
