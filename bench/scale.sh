#!/usr/bin/env bash
# Scale simulation (issue 8): the control plane with 10,000 endpoints and 100,000 workers on a
# simulated runtime, and routing updates followed by 4 gateways. Prints the figures that
# BENCHMARKS.md quotes. Sizes: SCALE_ENDPOINTS, SCALE_WORKERS, SCALE_GATEWAYS, SCALE_UPDATES.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -q -p sluice --bench scale
