#!/usr/bin/env bash
# The SLO policy against the offline optimum (issue 20). For each shared trace and p99 target:
#   offline: `sluice plan --trace T --p99-secs X --policy default`, the cheapest fixed setting of
#            the default policy (active_workers x max_workers x idle_timeout_secs) that meets the
#            target with no rejection, chosen knowing the whole trace;
#   slo:     `sluice sim --trace T --policy slo --slo-p99-secs X`, which starts from the default
#            setting and re-tunes every 5 minutes over the same grid on the last 3 hours it has
#            seen, as the live policy does on recorded traffic.
# Same cold starts (cold-starts.csv, seeded), same concurrency. Prints a Markdown table.
# Usage: bash bench/slo.sh   (SLUICE_BIN=path to use a given build)
set -euo pipefail
cd "$(dirname "$0")/.."
T=${TRACES:-../shared/traces}
if [ -n "${SLUICE_BIN:-}" ]; then S=$SLUICE_BIN; else cargo build --release -q; S=./target/release/sluice; fi
CS="$T/cold-starts.csv"
echo "| trace | target p99 | offline best setting | offline p99 / cost | slo p99 / rejected / cost | slo cost / offline | target met | slo replay wall |"
echo "|---|---|---|---|---|---|---|---|"
for spec in "llm-conversation 8 15 30 60" "llm-chat-bursty 8 30 60 120" "sparse-multi-synthetic 1 60 120 300"; do
    set -- $spec
    name=$1 cpw=$2
    shift 2
    for target in "$@"; do
        off=$("$S" plan --trace "$T/$name.csv" --p99-secs "$target" --policy default --concurrency-per-worker "$cpw" \
            --cold-start-file "$CS" --json 2>/dev/null || echo '{}')
        t0=$(date +%s.%N)
        on=$("$S" sim --trace "$T/$name.csv" --policy slo --slo-p99-secs "$target" --concurrency-per-worker "$cpw" \
            --cold-start-file "$CS" --json --quiet)
        wall=$(python3 -c "import sys;print(round(float(sys.argv[2])-float(sys.argv[1]),1))" "$t0" "$(date +%s.%N)")
        python3 - "$name" "$target" "$off" "$on" "$wall" <<'PY'
import json, sys
name, target, off, on, wall = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
if not off:
    print(f"| {name} | {target:g} s | none meets it | - | {on['p99_s']:.2f} s / {on['rejected']} / ${on['cost_usd']:.2f} | - | {'yes' if on['p99_s'] <= target and on['rejected'] == 0 else 'no'} | {wall} s |")
    sys.exit()
r = off["result"]
setting = f"active {off['active_workers']}, max {off['max_workers']}, idle {off['idle_timeout_secs']} s"
ratio = on["cost_usd"] / r["cost_usd"] if r["cost_usd"] else float("nan")
met = "yes" if on["p99_s"] <= target and on["rejected"] == 0 else "no"
print(f"| {name} | {target:g} s | {setting} | {r['p99_s']:.2f} s / ${r['cost_usd']:.2f} | {on['p99_s']:.2f} s / {on['rejected']} / ${on['cost_usd']:.2f} | {ratio:.2f}x | {met} | {wall} s |")
PY
    done
done
