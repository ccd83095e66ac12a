#!/usr/bin/env bash
# What resilience settings cost when they never fire (issue 18): instructions per proxied request (callgrind,
# Benchmarks/instructions-per-request.sh) for one route to one nginx origin, with and without a retry policy and
# outlier detection configured, the same build, paired in one run. Neither fires: the origin answers 200.
#
#   bash Benchmarks/resilience-cost.sh [REPEATS]
#
# base: `retries: {attempts: 0}` and no outlierDetection (no retry policy at all: Istio's way to turn retries off);
# test: `retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,reset,connect-failure"}`, `timeout: 10s`,
# `outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 3, interval: 1s, baseEjectionTime: 5s}` and
# circuit breakers (`connectionPool` with every limit set, far above what the run reaches). The base is not free of
# circuit breakers: the `--max-*` flags are every cluster's defaults, so their accounting runs in both; what it
# costs over a build without it is an A/B of two builds (TERN_BASE_BIN, instructions-per-request.sh).
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TERN_BIN=${TERN_BIN:-$REPO_ROOT/.build/release/tern}
export TERN_BASE_BIN=$TERN_BIN
WORK=$(mktemp -d /tmp/tern-resilience-cost.XXXXXX)
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
kind: DestinationRule
metadata: {name: svc}
spec:
  host: svc
  trafficPolicy: $1
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc}
spec:
  hosts: [svc]
  http:
  - route: [{destination: {host: svc}}]
$2
YAML
}
mesh "{loadBalancer: {simple: ROUND_ROBIN}}" "    retries: {attempts: 0}" >"$WORK/plain.yaml"
mesh "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 3, interval: 1s, baseEjectionTime: 5s}, connectionPool: {tcp: {maxConnections: 100, connectTimeout: 2s}, http: {http1MaxPendingRequests: 100, http2MaxRequests: 100, maxRetries: 10}}}" \
    "    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: \"5xx,reset,connect-failure\"}" >"$WORK/resilient.yaml"
TERN_BASE_ARGS="--config $WORK/plain.yaml" TERN_TEST_ARGS="--config $WORK/resilient.yaml" TERN_LOAD_HOST=svc \
    bash "$REPO_ROOT/Benchmarks/instructions-per-request.sh" "${1:-3}"
