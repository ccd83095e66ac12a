#!/usr/bin/env bash
# RE2 against PCRE2 (issue 18 §9): what a regex route costs per proxied request under each engine, as
# callgrind instructions (Benchmarks/instructions-per-request.sh), two builds paired in one run: BASE, the last build
# with PCRE2 (36b0b6b), and TEST, this one with RE2.
#
#   TERN_BASE_BIN=/path/to/pcre2-build/.build/release/tern bash Benchmarks/regex-engines.sh [REPEATS]
#
# Each build serves the same two configurations in turn: a route that matches by regex (the path and the authority) and
# rewrites the path with uriRegexRewrite (one group), and the same route by prefix and exact match with a plain
# prefix rewrite. The regex's own cost under an engine is the difference between the two for that build, which
# leaves out whatever else differs between the builds.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TERN_BIN=${TERN_BIN:-$REPO_ROOT/.build/release/tern}
: "${TERN_BASE_BIN:?set TERN_BASE_BIN to a release build with PCRE2 (commit 36b0b6b)}"
export TERN_BASE_BIN
WORK=$(mktemp -d /tmp/tern-regex-engines.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mesh() {
    cat <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc}
spec:
  hosts: [svc]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 18080}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc}
spec:
  hosts: [svc]
  http:
$1
YAML
}
mesh '  - match: [{uri: {regex: "/[a-z0-9/_-]*"}, authority: {regex: "[a-z]+(:[0-9]+)?"}}]
    rewrite: {uriRegexRewrite: {match: "^/(.*)$", rewrite: "/v1/\\1"}}
    route: [{destination: {host: svc}}]' >"$WORK/regex.yaml"
mesh '  - match: [{uri: {prefix: /}, authority: {exact: svc}}]
    rewrite: {uri: /v1/}
    route: [{destination: {host: svc}}]' >"$WORK/prefix.yaml"
for kind in regex prefix; do
    echo "== $kind route"
    TERN_BASE_ARGS="--config $WORK/$kind.yaml" TERN_TEST_ARGS="--config $WORK/$kind.yaml" TERN_LOAD_HOST=svc \
        bash "$REPO_ROOT/Benchmarks/instructions-per-request.sh" "${1:-3}"
done
