#!/usr/bin/env bash
# Installs what building and testing Tern needs on Debian 12, only what is missing. Swift 6.3 itself must
# already be on PATH (swift.org toolchain); everything else comes from Debian's packages and PyPI.
#
#   bash Tools/scripts/setup.sh            build and test dependencies
#   bash Tools/scripts/setup.sh --bench    also the peers and load tools the benchmarks use
set -euo pipefail

# g++: CMake builds the RE2 shim (C++) for its C test. nginx and haproxy: TLS peers of the integration tests
# (test_tls.py), not started as services.
packages=(liburing-dev libyaml-dev libre2-dev libnghttp2-dev libssl-dev zlib1g-dev pkg-config cmake gcc g++ libc6-dev curl iproute2 iptables procps util-linux strace python3 python3-pip nginx haproxy)
if [[ ${1:-} == --bench ]]; then
    packages+=(iperf3 haproxy nginx libnginx-mod-stream wrk nghttp2-client nghttp2-server caddy tcpdump valgrind)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    if [[ $(id -u) != 0 ]]; then
        echo "setup: need root to install packages (sudo bash $0)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Debian starts the daemons it installs; the project runs its own instances, so keep them stopped.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

if ! command -v swift >/dev/null 2>&1; then
    echo "setup: swift not found on PATH: install the Swift 6.3 toolchain for Debian 12 from swift.org" >&2
    exit 1
fi

# PyPI packages the integration tests import, as module=requirement; only the missing ones are installed.
pip_missing=()
for pair in "pytest=pytest>=7" "httpx=httpx>=0.24" "h11=h11>=0.14" "h2=h2>=4.1" "websockets=websockets>=13" \
    "prometheus_client=prometheus-client>=0.17" "grpc=grpcio>=1.60"; do
    python3 -c "import ${pair%%=*}" 2>/dev/null || pip_missing+=("${pair#*=}")
done
if ((${#pip_missing[@]})); then
    echo "setup: installing ${pip_missing[*]} from PyPI" >&2
    # Debian's own python3 is externally managed (PEP 668): its pip refuses unless told to go ahead.
    python3 -m pip install -q "${pip_missing[@]}" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "${pip_missing[@]}"
fi
