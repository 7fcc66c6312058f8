#!/usr/bin/env bash
# RunPod's Python SDK (PyPI `runpod`, pinned), in a virtual environment under target/, for the
# compatibility tests: its client talks to Sluice's /v2 API and its serverless workers run as
# Sluice workers. Also the Prometheus project's `prometheus_client`, whose parser checks
# /metrics, and PyYAML, which reads the Kubernetes manifests. Idempotent; run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/pyenv
RUNPOD_VERSION=1.12.0
# The Prometheus project's parser, to check /metrics.
PROMETHEUS_CLIENT_VERSION=0.26.0
# PyYAML, to read the Kubernetes manifests in the deploy test.
PYYAML_VERSION=6.0.3

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$RUNPOD_VERSION" "$PROMETHEUS_CLIENT_VERSION" "$PYYAML_VERSION" <<'PY' 2>/dev/null; then exit 0; fi
import sys
from importlib.metadata import version
sys.exit(version("runpod") != sys.argv[1] or version("prometheus_client") != sys.argv[2] or version("PyYAML") != sys.argv[3])
PY

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" >/dev/null 2>&1; then
    echo "python3 with venv not found; installing it from Debian (one-time)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi
echo "installing runpod==$RUNPOD_VERSION and prometheus_client==$PROMETHEUS_CLIENT_VERSION into $VENV (one-time)" >&2
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "runpod==$RUNPOD_VERSION" \
    "prometheus_client==$PROMETHEUS_CLIENT_VERSION" "PyYAML==$PYYAML_VERSION"
