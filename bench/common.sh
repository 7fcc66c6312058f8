# Shared by the gateway benchmarks (gateway.sh, tls.sh): source it after setting WORK and BIN.
# start_sluice ARGS...    runs `sluice up` (no demo, free ports) on $WORK/data; sets SLUICE_PID,
#                         API, GW (the gateway's URL), KEY
# bench_endpoint PUBLIC   creates the benchmark endpoint (the demo worker); sets ID and WORKER;
#                         ENDPOINT_EXTRA adds fields (e.g. ',"trace_retention_hours":0')
# free_port, ticks PIDS..., rps WRK_OUTPUT, median "NUMBERS"

free_port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }

start_sluice() {
    RUST_LOG=warn "$BIN" up --no-demo --data-dir "$WORK/data" --api-addr 127.0.0.1:0 --gateway-addr 127.0.0.1:0 \
        "$@" >"$WORK/up.out" 2>"$WORK/up.err" &
    SLUICE_PID=$!
    for _ in $(seq 100); do [ -f "$WORK/data/addresses.json" ] && break; sleep 0.1; done
    API=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['api'])" "$WORK/data/addresses.json")
    GW=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['gateway'])" "$WORK/data/addresses.json")
    KEY=$(cat "$WORK/data/admin.key")
}

bench_endpoint() {
    ID=$(curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
        -d "{\"name\":\"bench\",\"start_command\":\"exec '$BIN' demo-worker\",\"execution_timeout_secs\":60,\"public\":$1${ENDPOINT_EXTRA:-}}" \
        "$API/v1/endpoints" | python3 -c "import json,sys;print(json.load(sys.stdin)['id'])")
    WORKER=""
    for _ in $(seq 100); do
        WORKER=$(curl -sf -H "Authorization: Bearer $KEY" "$API/v1/endpoints/$ID/workers" |
            python3 -c "import json,sys;w=[x for x in json.load(sys.stdin)['workers'] if x['state']=='ready'];print(w[0]['address'] if w else '')")
        [ -n "$WORKER" ] && break
        sleep 0.1
    done
    [ -n "$WORKER" ] || { echo "worker never became ready" >&2; exit 1; }
}

# CPU ticks (user+system) of a set of pids, to report proxy CPU time per request.
ticks() { local sum=0; for p in "$@"; do sum=$((sum + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $sum; }
rps() { grep 'Requests/sec' "$1" | awk '{print $2}'; }
median() { python3 -c "import statistics,sys;print(round(statistics.median(map(float,sys.argv[1:])),1))" $1; }
