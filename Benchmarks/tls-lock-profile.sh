#!/bin/bash
# Where CPU per full TLS handshake goes at --cores 1 and --cores 2 (Benchmarks/README.md, "TLS": OpenSSL's
# locks). Usage: Benchmarks/tls-lock-profile.sh 1 0; Benchmarks/tls-lock-profile.sh 2 0,1 (release build, perf,
# nginx). Tern on CPUS, the nginx origin and tern-load on CPU 1; a 5 s perf profile of Tern under full handshakes;
# prints CPU ticks, the rate, the share of each library and the lock-related symbols.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd); W=${TERN_LOCKPROF_DIR:-/tmp/tern-lockprof}; CORES=$1; CPUS=$2; mkdir -p $W
[ -f $W/ca.crt ] || bash $ROOT/Tests/Fixtures/tls/make-certs.sh $W >/dev/null 2>&1
mkdir -p $W/ng && chmod 755 $W $W/ng
cat > $W/ng/nginx.conf <<CONF
daemon off; worker_processes 1; pid $W/ng/nginx.pid; error_log $W/ng/error.log error;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $W/ng; proxy_temp_path $W/ng; fastcgi_temp_path $W/ng; uwsgi_temp_path $W/ng; scgi_temp_path $W/ng;
  server { listen 127.0.0.1:19180; location / { return 200 "ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss"; } } }
CONF
taskset -c 1 nginx -p $W/ng -c $W/ng/nginx.conf 2>/dev/null & NG=$!
sleep 0.5
taskset -c $CPUS $ROOT/.build/release/tern proxy --http --cores $CORES --listen 127.0.0.1:19543 --upstream 127.0.0.1:19180 --tls-cert $W/server-chain.crt --tls-key $W/server.key --admin off --health off --prometheus off 2>/dev/null &
sleep 1
PID=$(pgrep -f "__serve-proxy" | head -1)
taskset -c 1 $ROOT/.build/release/tern-load https://localhost:19543/ --cacert $W/ca.crt --reconnect --no-resume --connections 8 --duration 9s > $W/load-$CORES.txt 2>&1 &
sleep 2
T0=$(awk '{print $14+$15}' /proc/$PID/stat)
perf record -F 999 -g -p $PID -o $W/perf-$CORES.data -- sleep 5 >/dev/null 2>&1
T1=$(awk '{print $14+$15}' /proc/$PID/stat)
sleep 3
echo "cores=$CORES cpu_ticks_5s=$((T1-T0))"
grep -E "requests|rate|throughput" $W/load-$CORES.txt | head -3
perf report -i $W/perf-$CORES.data --no-children --sort dso --stdio -g none 2>/dev/null | grep -v "^#" | grep -v "^$" | head -8
echo "-- lock-related symbols:"
perf report -i $W/perf-$CORES.data --no-children --sort sym --stdio -g none 2>/dev/null | grep -i -E "rwlock|futex|lll_lock|mutex|CRYPTO_THREAD|spin_lock|finish_task_switch" | head -12
pkill -f __serve-proxy; kill $NG 2>/dev/null; pkill -f "nginx -p $W/ng"; sleep 0.5
