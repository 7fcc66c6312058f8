#!/usr/bin/env bash
# Autoscaling benchmark (issue 3): every policy on every trace in ../shared/traces, with the
# empirical cold starts. Prints Markdown tables (the ones in BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${TRACES:-../shared/traces}
cargo build --release -q
S=./target/release/sluice
for spec in "llm-conversation 8" "llm-chat-bursty 8" "sparse-multi-synthetic 1"; do
    set -- $spec
    echo "### $1 (concurrency per worker $2)"
    echo
    echo "\`sluice sim --trace $T/$1.csv --policy all --concurrency-per-worker $2 --cold-start-file $T/cold-starts.csv\`"
    echo
    /usr/bin/time -f "(all policies simulated in %e s)" $S sim --trace "$T/$1.csv" --policy all --concurrency-per-worker "$2" --cold-start-file "$T/cold-starts.csv" 2>&1
    echo
done
