#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). From a fresh clone on Debian 12 with Swift on
# PATH: installs what is missing, then runs
#   1. the C shims' tests under AddressSanitizer and UBSan (CMake + ctest),
#   2. the unsafe-code lint,
#   3. one debug build and every Swift unit test (swift test), then the allocation counts: the table and
#      telemetry halves in that build, the whole HTTP request path in a release build,
#   4. the thread sanitizer on the cross-thread primitives (a small filtered run),
#   5. the fuzz targets (the HTTP/1.1 parser, the ClientHello reader, HTTP/2 sessions): corpus and past
#      crashers replayed, then a bounded fuzz run of each,
#   6. the integration tests: the real `tern` binary with real sockets and peers (pytest).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
step() { printf '\n== %s ==\n' "$*"; }

step "setup"
bash Tools/scripts/setup.sh

step "C shims (ASan + UBSan, ctest)"
bash Tools/scripts/ctest.sh

step "unsafe code only in *+Unsafe.swift"
bash Tools/scripts/check-unsafe.sh

step "swift build and unit tests"
swift build --build-tests
swift test --skip-build

step "route selection allocates nothing (per-thread malloc counter, LD_PRELOAD)"
counter="$root/.build/count_malloc.so"
gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$counter" Tools/malloc-count/count_malloc.c
# TERN_REQUIRE_MALLOC_COUNTER=1: in this run an allocation test whose counter did not load fails instead of
# only checking its results (Tests/TernTestSupport/MallocCounter.swift).
# The whole proxy request path is counted in a release build below: a debug build allocates per request
# (unspecialised generics, iterator boxes), so ProxyAllocationTests counts only when optimised.
TERN_REQUIRE_MALLOC_COUNTER=1 LD_PRELOAD="$counter" swift test --skip-build --filter AllocationTests --skip ProxyAllocationTests

step "the HTTP request path allocates nothing (release build, 10,000 requests or HTTP/2 streams after 1,000, per-thread malloc counter)"
# A real HTTPProxy on its reactor thread between a client and an upstream on loopback; the reactor thread's
# own malloc calls are counted: ProxyAllocationTests (HTTP/1.1) and HTTP2ProxyAllocationTests (HTTP/2 streams,
# nghttp2's allocations included). -enable-testing: the other test targets import their modules @testable.
swift build -c release --build-tests -Xswiftc -enable-testing --scratch-path .build-release
TERN_REQUIRE_MALLOC_COUNTER=1 LD_PRELOAD="$counter" swift test -c release -Xswiftc -enable-testing \
    --scratch-path .build-release --skip-build --filter ProxyAllocationTests

step "thread sanitizer (cross-thread primitives)"
# The reactor loop driven from another thread (drain, stop, wake); the access log's ring and writer thread.
# Code that shares a Synchronization.Mutex stays out: on Linux it is a bare futex the sanitizer cannot see, so
# it would report false races.
swift test --scratch-path .build-tsan --sanitize=thread --filter 'CrossThreadTests/(epoll|uring)LoopStopsOnRequest|SnapshotCellTests|SpanShardTests|AccessLogTests/producerAndConsumerOnTwoThreads|AccessLogWriterTests|SchedulingTests'


step "fuzzing the HTTP/1.1 parser, the ClientHello reader and HTTP/2 sessions (bounded)"
bash Tools/scripts/fuzz.sh

step "integration tests"
TERN_BIN="$root/.build/debug/tern" TERN_LOAD_BIN="$root/.build/debug/tern-load" python3 -m pytest -q -rs -p no:warnings Tests/Integration
