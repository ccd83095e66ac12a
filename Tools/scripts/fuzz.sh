#!/usr/bin/env bash
# Builds the fuzz targets (Tools/fuzz, libFuzzer via `swift build --sanitize=fuzzer`), replays the checked-in
# corpus and every past crasher as regression cases, then fuzzes for a bounded time (FUZZ_SECONDS, default 20).
# A new crasher is written to Tools/fuzz/crashers/ and fails the run: minimise it, keep it, fix the bug.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds=${FUZZ_SECONDS:-20}
cd "$root/Tools/fuzz"
swift build --sanitize=fuzzer
bin="$(swift build --sanitize=fuzzer --show-bin-path)/FuzzHTTP1"

replay=(corpus/http1/*)
for f in crashers/*; do [[ -f $f && $(basename "$f") != .keep ]] && replay+=("$f"); done
"$bin" "${replay[@]}" >/dev/null 2>&1 || { echo "fuzz: a corpus or crasher case fails again:" >&2; "$bin" "${replay[@]}"; exit 1; }
echo "fuzz: replayed ${#replay[@]} corpus and crasher cases"

work=$(mktemp -d /tmp/tern-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$bin" "$work" corpus/http1 -max_total_time="$seconds" -max_len=4096 -timeout=5 \
    -artifact_prefix="$root/Tools/fuzz/crashers/" -print_final_stats=1 2>"$work/log" \
    || { tail -30 "$work/log" >&2; echo "fuzz: crasher written to Tools/fuzz/crashers/" >&2; exit 1; }
grep -E "stat::number_of_executed_units|Done" "$work/log" | tail -2
