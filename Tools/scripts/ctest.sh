#!/usr/bin/env bash
# Builds the C shims, their tests and Tools/seccomp with CMake into build-cmake/ (sanitizers on) and runs ctest.
# Extra arguments go to the configure step, e.g. `Tools/scripts/ctest.sh -DTERN_SANITIZE=OFF`;
# CC=clang picks the compiler on a fresh build directory. Does not build or need Swift.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$root/build-cmake"

for tool in cmake ctest; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ctest.sh: '$tool' not found. Install CMake 3.25 or newer and liburing-dev" \
             "(Debian/Ubuntu: apt-get install -y cmake liburing-dev), or run the project's setup script." >&2
        exit 1
    fi
done

cmake -S "$root" -B "$build" "$@"
cmake --build "$build" --parallel
ctest --test-dir "$build" --output-on-failure
