#!/usr/bin/env bash
# HTTPS and plain-HTTP gateway benchmark (issue 16). In one run, the same load against:
#   direct  - the demo worker's own port (plain HTTP: the floor),
#   sluice  - the Sluice gateway (path form /e/{id}/) in front of that worker,
#   nginx   - nginx in front of that same worker (keep-alive upstream),
# with MODE=tls both proxies terminate TLS with the same certificate (ECDSA P-256, TLS 1.3 only);
# with MODE=plain both speak plain HTTP.
# 1) keep-alive saturation: wrk -t2 -c64, interleaved rounds (median);
# 2) (tls) new connections per second: one request per connection, each a full TLS 1.3
#    handshake (no resumption), 64 clients (benches/openloop.rs --new-conn);
# 3) open loop at half of the slower proxy's saturation: requests on a fixed schedule over 64
#    keep-alive connections, latency from each request's scheduled time (benches/openloop.rs);
#    p50/p99, and what each proxy adds to the direct figures. Also CPU per request.
# Usage: bash bench/tls.sh [tls|plain] [DURATION_SECS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-tls}
DUR=${2:-10}
ROUNDS=${3:-3}
CONNS=64
OUT=bench/results
mkdir -p "$OUT"

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx-light
need openssl openssl

if [ -n "${SLUICE_BIN:-}" ]; then BIN=$SLUICE_BIN; else cargo build --release -q; BIN=$PWD/target/release/sluice; fi
LOADGEN=$(cargo bench --bench openloop --no-run --message-format=json -q 2>/dev/null |
    python3 -c "import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get('reason')=='compiler-artifact' and m.get('executable') and m['target']['name']=='openloop': print(m['executable'])" | tail -1)
[ -x "$LOADGEN" ] || { echo "could not build benches/openloop.rs" >&2; exit 1; }
WORK=$(mktemp -d)
cleanup() {
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    [ -n "${SLUICE_PID:-}" ] && kill -INT "$SLUICE_PID" 2>/dev/null && wait "$SLUICE_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# A CA and an ECDSA P-256 leaf for localhost, shared by Sluice and nginx.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout "$WORK/leaf.key" -out "$WORK/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 2 \
    -extfile "$WORK/ext" -out "$WORK/leaf.pem" 2>/dev/null

TLS_ARGS=()
[ "$MODE" = tls ] && TLS_ARGS=(--tls-cert "$WORK/leaf.pem" --tls-key "$WORK/leaf.key")
source bench/common.sh
start_sluice "${TLS_ARGS[@]}"
GW_PORT=${GW##*:}
bench_endpoint true

NGINX_PORT=$(free_port)
if [ "$MODE" = tls ]; then
    LISTEN="listen 127.0.0.1:$NGINX_PORT ssl; ssl_certificate $WORK/leaf.pem; ssl_certificate_key $WORK/leaf.key; ssl_protocols TLSv1.3;"
    SCHEME=https
else
    LISTEN="listen 127.0.0.1:$NGINX_PORT;"
    SCHEME=http
fi
cat >"$WORK/nginx.conf" <<CONF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream worker { server $WORKER; keepalive 128; }
    server {
        $LISTEN
        # Sluice closes no client connection after N requests; nginx's default is 1000.
        keepalive_requests 1000000;
        location / {
            proxy_pass http://worker;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
nginx -c "$WORK/nginx.conf"
sleep 0.5

declare -A URL=( [direct]="http://$WORKER/health" [sluice]="$SCHEME://localhost:$GW_PORT/e/$ID/health" [nginx]="$SCHEME://localhost:$NGINX_PORT/health" )
for t in direct sluice nginx; do curl -sf --cacert "$WORK/ca.pem" "${URL[$t]}" >/dev/null || { echo "$t not answering at ${URL[$t]}" >&2; exit 1; }; done

NGINX_PIDS=$(pgrep -f "nginx: worker process" | tr '\n' ' ')
declare -A PIDS=( [direct]="" [sluice]="$SLUICE_PID" [nginx]="$NGINX_PIDS" )
HZ=$(getconf CLK_TCK)
field() { python3 -c "import json,sys;print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

echo "machine: $(nproc) cores, $(uname -r); mode $MODE; wrk -t2 -c$CONNS -d${DUR}s; $ROUNDS interleaved rounds" >&2
declare -A SAT CPU NEWC
for r in $(seq "$ROUNDS"); do
    for t in direct sluice nginx; do
        before=$(ticks ${PIDS[$t]})
        wrk -t2 -c$CONNS -d"${DUR}s" "${URL[$t]}" >"$OUT/tls-$MODE-sat-$t-$r.txt"
        after=$(ticks ${PIDS[$t]})
        n=$(grep -E '^ +[0-9]+ requests in' "$OUT/tls-$MODE-sat-$t-$r.txt" | awk '{print $1}')
        SAT[$t]="${SAT[$t]:-} $(rps "$OUT/tls-$MODE-sat-$t-$r.txt")"
        CPU[$t]="${CPU[$t]:-} $(python3 -c "print(($after-$before)/$HZ*1e6/$n)")"
        echo "round $r $t keep-alive: $(rps "$OUT/tls-$MODE-sat-$t-$r.txt") req/s" >&2
    done
    if [ "$MODE" = tls ]; then
        for t in sluice nginx; do
            j=$("$LOADGEN" "${URL[$t]}" --new-conn --conns $CONNS --secs "$DUR" --ca "$WORK/ca.pem")
            NEWC[$t]="${NEWC[$t]:-} $(field "$j" conns_per_sec)"
            echo "round $r $t new connections: $(field "$j" conns_per_sec)/s ($(field "$j" errors) errors)" >&2
        done
    fi
done
declare -A SATM
for t in direct sluice nginx; do SATM[$t]=$(median "${SAT[$t]}"); done
HALF=$(python3 -c "print(int(min(${SATM[sluice]}, ${SATM[nginx]}) / 2))")
declare -A P50 P99 GOT
for t in direct sluice nginx; do
    j=$("$LOADGEN" "${URL[$t]}" --rate "$HALF" --conns $CONNS --secs "$DUR" --ca "$WORK/ca.pem")
    echo "$t open loop: $j" >&2
    echo "$j" >"$OUT/tls-$MODE-open-$t.json"
    GOT[$t]=$(field "$j" achieved_rps); P50[$t]=$(field "$j" p50_ms); P99[$t]=$(field "$j" p99_ms)
done

echo
echo "| $MODE | keep-alive req/s (median of $ROUNDS) | vs direct | open loop at $HALF req/s: achieved | p50 ms | p99 ms | p50 added | p99 added | CPU us/req |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for t in direct sluice nginx; do
    ratio=$(python3 -c "print(f'{${SATM[$t]}/${SATM[direct]}:.2f}x')")
    a50=$(python3 -c "print(f'{${P50[$t]}-${P50[direct]}:+.3f}')"); a99=$(python3 -c "print(f'{${P99[$t]}-${P99[direct]}:+.3f}')")
    cpu=$( [ -n "${PIDS[$t]}" ] && median "${CPU[$t]}" || echo "-")
    echo "| $t | ${SATM[$t]} | $ratio | ${GOT[$t]} | ${P50[$t]} | ${P99[$t]} | $a50 | $a99 | $cpu |"
done
echo
python3 -c "
import statistics
print(f'sluice / nginx keep-alive throughput: {${SATM[sluice]}/${SATM[nginx]}:.2f}x')
print(f'sluice / nginx p99 added at half load: {(${P99[sluice]}-${P99[direct]}):.3f} ms vs {(${P99[nginx]}-${P99[direct]}):.3f} ms')
"
if [ "$MODE" = tls ]; then
    python3 -c "
import statistics
s=[float(x) for x in '${NEWC[sluice]}'.split()]; n=[float(x) for x in '${NEWC[nginx]}'.split()]
print(f'new TLS connections per second (full handshakes): sluice {statistics.median(s):.0f}, nginx {statistics.median(n):.0f} ({statistics.median(s)/statistics.median(n):.2f}x)')
"
fi
