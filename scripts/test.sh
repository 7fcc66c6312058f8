#!/usr/bin/env bash
# Runs every test of the workspace: unit tests of each crate and the one integration-test binary
# (real `sluice` processes, SQLite and PostgreSQL, worker processes, HTTP over loopback). Installs what it
# needs first, so it works on a fresh machine. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean clone (CI) gains nothing from incremental compilation state, which would take about as
# much disk as the build itself.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "cargo-nextest not found; installing it (one-time)" >&2
    cargo install cargo-nextest --locked
fi

# The Docker runtime's tests run against a real Docker Engine: install and start one if needed.
# They are part of the suite; without an Engine they fail, never skip.
bash scripts/docker.sh

# RunPod's SDK (client and worker) for the compatibility tests, in a venv under target/.
bash scripts/python.sh
# ...and the same SDK worker as a container image, for the Docker tests.
bash scripts/sdk-image.sh
# Debian's PostgreSQL binaries: the store's suite and the leader-election test run against
# real servers that the tests start themselves.
bash scripts/postgres.sh
# Debian's Chromium and ChromeDriver, for the status page's browser test.
bash scripts/browser.sh
# Debian's Pebble (a real ACME CA) and its challenge test server, certutil and nginx: the HTTPS
# tests issue real certificates over loopback.
bash scripts/pebble.sh

# The layout stays as ARCHITECTURE.md says: no file over 800 lines, no import circle.
python3 scripts/layout.py

# The NVML path is compiled only with `--features nvml` (no GPU here): keep it compiling.
cargo check -q -p sluice --features nvml

# Every test starts its own platform on ephemeral ports; nextest runs each test in its own
# process, so they are independent. With the Kubernetes runtime compiled in (feature `k8s`): its
# tests run against a fake API server on loopback, since no cluster runs here.
exec cargo nextest run --workspace --no-fail-fast --features sluice/k8s "$@"
