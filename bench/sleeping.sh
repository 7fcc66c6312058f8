#!/usr/bin/env bash
# Sleeping workers on the shared traces (issue 17): the `default` policy with and without
# sleepers (`sluice sim --max-sleeping N --wake-secs S`), with the empirical cold starts. A
# sleeper's GPU-second costs a tenth of an autoscaled one (the platform's default rate).
# Prints the Markdown table that BENCHMARKS.md quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${TRACES:-../shared/traces}
WAKE=${WAKE_SECS:-0.3}
if [ -n "${SLUICE_BIN:-}" ]; then S=$SLUICE_BIN; else cargo build --release -q; S=./target/release/sluice; fi
echo "| trace | sleepers (wake ${WAKE} s) | p50 s | p99 s | cold-start waits | of which wakes | GPU-s awake | GPU-s asleep | cost \$ |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for spec in "llm-conversation 8" "llm-chat-bursty 8" "sparse-multi-synthetic 1"; do
    set -- $spec
    for n in 0 2 8; do
        args=(sim --trace "$T/$1.csv" --policy default --concurrency-per-worker "$2" --cold-start-file "$T/cold-starts.csv" --json -q)
        [ "$n" -gt 0 ] && args+=(--max-sleeping "$n" --wake-secs "$WAKE")
        "$S" "${args[@]}" | python3 -c "
import json,sys
r=json.loads(sys.stdin.readline())
n=int(sys.argv[2]); label='none' if n==0 else f'up to {n}'
print(f\"| {sys.argv[1]} | {label} | {r['p50_s']:.2f} | {r['p99_s']:.2f} | {r['cold_start_hits']} | {r['wake_hits']} ({r['wakes']} wakes) | {r['gpu_seconds']:.0f} | {r['sleeping_gpu_seconds']:.0f} | {r['cost_usd']:.2f} |\")
" "$1" "$n"
    done
done
