#!/usr/bin/env bash
# Fails when `unsafe` code appears outside files named *+Unsafe.swift (STYLE.md: unsafe code is
# quarantined; every such file says why each use is safe).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dirs=("$root/Sources" "$root/Tools/tern-load")
offenders=$(grep -rlE '(^|[^A-Za-z_@.])unsafe[[:space:]]|@unsafe|nonisolated\(unsafe\)' "${dirs[@]}" --include='*.swift' \
    | grep -v '+Unsafe\.swift$' || true)
if [[ -n $offenders ]]; then
    echo "unsafe code outside *+Unsafe.swift files:" >&2
    echo "$offenders" >&2
    exit 1
fi
count=$(grep -rhoE '(^|[^A-Za-z_@.])unsafe[[:space:]]' "${dirs[@]}" --include='*+Unsafe.swift' | wc -l)
echo "check-unsafe: ok ($count unsafe expressions, all in *+Unsafe.swift files)"
