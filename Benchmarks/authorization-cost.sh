#!/usr/bin/env bash
# What 100 AuthorizationPolicies cost an inbound side per request (issue 19): instructions per proxied request
# (callgrind, Benchmarks/instructions-per-request.sh) for `tern proxy --http --upstream ORIGIN --config FILE`, the
# same build, paired in one run:
#
#   bash Benchmarks/authorization-cost.sh [REPEATS]
#
# base: a configuration without AuthorizationPolicy (one PeerAuthentication, PERMISSIVE: the same inbound side,
#       the same reader, nothing to decide);
# test: 100 ALLOW policies, each with a distinct principal and path, the 99 first never matching and the last
#       matching every request (its source block is the load's address), so each request is checked against all
#       100 before it is allowed; plus a DENY policy with a header condition that never holds.
# Plaintext (tern-load here speaks HTTP/1.1 without client certificates): the 99 principals are checked against
# an absent one; their paths are not reached. Requests go to the origin in both runs (200; a 403 would fail the
# run).
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TERN_BIN=${TERN_BIN:-$REPO_ROOT/.build/release/tern}
export TERN_BASE_BIN=$TERN_BIN
WORK=$(mktemp -d /tmp/tern-authorization-cost.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/none.yaml" <<YAML
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: PERMISSIVE}}
YAML
{
    cat "$WORK/none.yaml"
    cat <<YAML
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-evil, namespace: default}
spec:
  action: DENY
  rules:
  - when:
    - key: request.headers[x-evil]
      values: ["1"]
YAML
    for i in $(seq 1 99); do
        cat <<YAML
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-$i, namespace: default}
spec:
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/client-$i"]}
    to:
    - operation: {paths: ["/api/v$i/*"]}
YAML
    done
    cat <<YAML
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-100, namespace: default}
spec:
  rules:
  - from:
    - source: {ipBlocks: ["127.0.0.1/32"]}
    to:
    - operation: {paths: ["/*"], methods: ["GET"]}
YAML
} >"$WORK/policies.yaml"
"$TERN_BIN" validate "$WORK/policies.yaml" 2>&1 | tail -1
TERN_BASE_ARGS="--upstream 127.0.0.1:18080 --config $WORK/none.yaml" \
TERN_TEST_ARGS="--upstream 127.0.0.1:18080 --config $WORK/policies.yaml" \
    bash "$REPO_ROOT/Benchmarks/instructions-per-request.sh" "${1:-3}"
