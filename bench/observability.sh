#!/usr/bin/env bash
# What logging and metrics cost on the gateway (issue 7). In one run, interleaved, the same load
# through two platforms in front of the same demo worker, which prints a line per request
# (DEMO_LOG_REQUESTS=1):
#   base - sluice built from BASE (default eb157cc: the last commit before log capture and
#          metrics), whose workers' output only goes to files;
#   head - this checkout: every line tailed and stored, per-request metrics recorded, and
#          /metrics scraped every second during the run.
# wrk -c64 at saturation, ROUNDS times each; prints a Markdown table.
# Usage: bash bench/observability.sh [DURATION_SECS] [ROUNDS] [BASE]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
ROUNDS=${2:-3}
BASE=${3:-eb157cc}
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

cargo build --release -q
HEAD_BIN=$PWD/target/release/sluice
if [ ! -x target/bench-base/release/sluice ] || [ "$(cat target/bench-base/commit 2>/dev/null)" != "$BASE" ]; then
    rm -rf target/bench-base-src
    git worktree add -f target/bench-base-src "$BASE" -q
    (cd target/bench-base-src && CARGO_TARGET_DIR=../bench-base cargo build --release -q -p sluice)
    git worktree remove --force target/bench-base-src
    echo "$BASE" > target/bench-base/commit
fi
BASE_BIN=$PWD/target/bench-base/release/sluice
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME BIN: a platform with one public endpoint running the demo worker; sets URL_NAME,
# API_NAME and KEY_NAME.
start() {
    local name=$1 bin=$2 dir=$WORK/$1
    RUST_LOG=warn "$bin" up --no-demo --data-dir "$dir" --api-addr 127.0.0.1:0 --gateway-addr 127.0.0.1:0 \
        >"$dir.out" 2>"$dir.err" &
    PIDS+=($!)
    for _ in $(seq 100); do [ -f "$dir/addresses.json" ] && break; sleep 0.1; done
    local api gw key id
    api=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['api'])" "$dir/addresses.json")
    gw=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['gateway'])" "$dir/addresses.json")
    key=$(cat "$dir/admin.key")
    id=$(curl -sf -H "Authorization: Bearer $key" -H 'content-type: application/json' \
        -d "{\"name\":\"bench\",\"public\":true,\"start_command\":\"exec '$HEAD_BIN' demo-worker\",\"env\":{\"DEMO_LOG_REQUESTS\":\"${LOG_REQUESTS:-1}\"}}" \
        "$api/v1/endpoints" | python3 -c "import json,sys;print(json.load(sys.stdin)['id'])")
    for _ in $(seq 200); do curl -sf "$gw/e/$id/" >/dev/null && break; sleep 0.1; done
    printf -v "URL_$name" '%s' "$gw/e/$id/"
    printf -v "API_$name" '%s' "$api"
    printf -v "KEY_$name" '%s' "$key"
}
start base "$BASE_BIN"
start head "$HEAD_BIN"

declare -A RPS P99
run() {
    local name=$1 url_var=URL_$1 scraper=""
    if [ "$name" = head ]; then
        local api_var=API_head key_var=KEY_head
        (while true; do curl -sf -H "Authorization: Bearer ${!key_var}" "${!api_var}/metrics" >/dev/null; sleep 1; done) &
        scraper=$!
    fi
    local out
    out=$(wrk -t2 -c64 -d"${DUR}s" --latency "${!url_var}")
    [ -n "$scraper" ] && kill "$scraper" 2>/dev/null
    RPS[$name]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
    P99[$name]+="$(echo "$out" | awk '$1 == "99%" {print $2}') "
}
for _ in $(seq "$ROUNDS"); do
    run base
    run head
done
LINES=$(curl -sf -H "Authorization: Bearer $KEY_head" "$API_head/metrics" | awk '/^sluice_log_lines_dropped_total/ {s+=$2} END {print s+0}')
python3 - "${RPS[base]}" "${RPS[head]}" "${P99[base]}" "${P99[head]}" "$LINES" <<'PY'
import statistics, sys
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
rb, rh = [float(x) for x in sys.argv[1].split()], [float(x) for x in sys.argv[2].split()]
pb, ph = [ms(x) for x in sys.argv[3].split()], [ms(x) for x in sys.argv[4].split()]
mb, mh = statistics.median(rb), statistics.median(rh)
print("| platform | req/s (median of rounds) | rounds | p99 ms (median) |")
print("|---|---:|---|---:|")
print(f"| base: before log capture and metrics | {mb:.0f} | {' '.join(f'{x:.0f}' for x in rb)} | {statistics.median(pb):.2f} |")
print(f"| head: log capture + metrics, /metrics scraped every second | {mh:.0f} | {' '.join(f'{x:.0f}' for x in rh)} | {statistics.median(ph):.2f} |")
print(f"| **head / base** | **{mh / mb:.3f}** | | |")
print(f"\nlog lines dropped at head: {sys.argv[5]}")
PY
