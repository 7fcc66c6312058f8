#!/usr/bin/env bash
# Gateway overhead benchmark (issue 2). Measures, in one run, the same load against:
#   direct  - the demo worker's own port,
#   sluice  - the Sluice gateway (path form /e/{id}/) in front of that same worker,
#   nginx   - nginx as a keep-alive reverse proxy to that same worker.
# 1) saturation: wrk -c64, each target ROUNDS times, interleaved;
# 2) half of Sluice's saturation rate: wrk -c64 with think time, p50/p99 latency.
# Prints a Markdown table; raw wrk output goes to bench/results/.
# Usage: bash bench/gateway.sh [DURATION_SECS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
ROUNDS=${2:-3}
CONNS=64
OUT=bench/results
mkdir -p "$OUT"

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx-light

# SLUICE_BIN: a binary built elsewhere (comparing two builds in one session); else this tree's.
if [ -n "${SLUICE_BIN:-}" ]; then BIN=$SLUICE_BIN; else cargo build --release -q; BIN=$PWD/target/release/sluice; fi
WORK=$(mktemp -d)
cleanup() {
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    [ -n "${SLUICE_PID:-}" ] && kill -INT "$SLUICE_PID" 2>/dev/null && wait "$SLUICE_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

source bench/common.sh
start_sluice
bench_endpoint "${PUBLIC:-false}"

NGINX_PORT=$(free_port)
cat >"$WORK/nginx.conf" <<CONF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream worker { server $WORKER; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
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

declare -A URL=( [direct]="http://$WORKER/health" [sluice]="$GW/e/$ID/health" [nginx]="http://127.0.0.1:$NGINX_PORT/health" )
# The endpoint is private (the default; PUBLIC=true makes it public): every request carries the
# key, so the gateway's key check is part of what is measured. Direct and nginx get the same
# header and ignore it.
AUTH="Authorization: Bearer $KEY"
for t in direct sluice nginx; do curl -sf -H "$AUTH" "${URL[$t]}" >/dev/null || { echo "$t not answering at ${URL[$t]}" >&2; exit 1; }; done

NGINX_PIDS=$(pgrep -f "nginx: worker process" | tr '\n' ' ')
declare -A PIDS=( [direct]="" [sluice]="$SLUICE_PID" [nginx]="$NGINX_PIDS" )
HZ=$(getconf CLK_TCK)
pct() { awk -v p="$2" '$1==p {print $2}' "$1"; }   # from --latency distribution
to_ms() { python3 -c "
import sys,re
v=sys.argv[1]; m=re.match(r'([0-9.]+)(us|ms|s)',v)
n=float(m.group(1)); u=m.group(2)
print(round(n/1000 if u=='us' else n*1000 if u=='s' else n, 3))" "$1"; }

echo "machine: $(nproc) cores, $(uname -r); wrk -t2 -c$CONNS -d${DUR}s; $ROUNDS interleaved rounds" >&2
declare -A SAT CPU
PAIRED=""
for r in $(seq "$ROUNDS"); do
    for t in direct sluice nginx; do
        before=$(ticks ${PIDS[$t]})
        wrk -t2 -c$CONNS -d"${DUR}s" --latency -H "$AUTH" "${URL[$t]}" >"$OUT/sat-$t-$r.txt"
        after=$(ticks ${PIDS[$t]})
        n=$(grep -E '^ +[0-9]+ requests in' "$OUT/sat-$t-$r.txt" | awk '{print $1}')
        SAT[$t]="${SAT[$t]:-} $(rps "$OUT/sat-$t-$r.txt")"
        CPU[$t]="${CPU[$t]:-} $(python3 -c "print(($after-$before)/$HZ*1e6/$n)")"
        echo "round $r $t: $(rps "$OUT/sat-$t-$r.txt") req/s" >&2
    done
    PAIRED="$PAIRED $(python3 -c "print($(rps "$OUT/sat-sluice-$r.txt")/$(rps "$OUT/sat-nginx-$r.txt"))")"
done
declare -A SATM
for t in direct sluice nginx; do SATM[$t]=$(median "${SAT[$t]}"); done

# Half of Sluice's saturation rate, offered to every target.
HALF=$(python3 -c "print(int(${SATM[sluice]} / 2))")
THINK=$(python3 -c "print(max(1, round($CONNS*1000/$HALF)))")
declare -A P50 P99 GOT
for t in direct sluice nginx; do
    THINK_MS=$THINK wrk -t2 -c$CONNS -d"${DUR}s" --latency -H "$AUTH" -s bench/delay.lua "${URL[$t]}" >"$OUT/half-$t.txt"
    GOT[$t]=$(rps "$OUT/half-$t.txt"); P50[$t]=$(to_ms "$(pct "$OUT/half-$t.txt" 50%)"); P99[$t]=$(to_ms "$(pct "$OUT/half-$t.txt" 99%)")
done

echo
echo "| target | saturation req/s (median of $ROUNDS) | vs direct | at ~$HALF req/s: achieved | p50 ms | p99 ms | p50 added | p99 added |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for t in direct sluice nginx; do
    ratio=$(python3 -c "print(f'{${SATM[$t]}/${SATM[direct]}:.2f}x')")
    a50=$(python3 -c "print(f'{${P50[$t]}-${P50[direct]}:+.3f}')"); a99=$(python3 -c "print(f'{${P99[$t]}-${P99[direct]}:+.3f}')")
    echo "| $t | ${SATM[$t]} | $ratio | ${GOT[$t]} | ${P50[$t]} | ${P99[$t]} | $a50 | $a99 |"
done
echo
python3 -c "
import statistics
p=[float(x) for x in '$PAIRED'.split()]
print(f'sluice / nginx saturation throughput: median of medians {${SATM[sluice]}/${SATM[nginx]}:.2f}x; per round {\", \".join(f\"{x:.2f}\" for x in p)} (median {statistics.median(p):.2f}x)')
s=[float(x) for x in '${CPU[sluice]}'.split()]; n=[float(x) for x in '${CPU[nginx]}'.split()]
print(f'proxy CPU per request at saturation: sluice {statistics.median(s):.1f} us, nginx {statistics.median(n):.1f} us (ratio {statistics.median(s)/statistics.median(n):.2f})')
"
