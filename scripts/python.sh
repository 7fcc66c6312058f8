#!/usr/bin/env bash
# RunPod's Python SDK (PyPI `runpod`, pinned), in a virtual environment under target/, for the
# compatibility tests: its client talks to Sluice's /v2 API and its serverless workers run as
# Sluice workers. Also the Prometheus project's `prometheus_client`, whose parser checks
# /metrics, PyYAML, which reads the Kubernetes manifests, Hugging Face's `huggingface_hub`,
# whose client proves the fake hub the model-cache tests download from (tests/py/fake_hub.py),
# OpenAI's `openai` SDK, which streams chat completions through the gateway,
# and the OpenAPI tools that check the served document (`openapi-spec-validator`) and fuzz the
# API from it (`schemathesis`).
# Idempotent; run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/pyenv
RUNPOD_VERSION=1.12.0
# The Prometheus project's parser, to check /metrics.
PROMETHEUS_CLIENT_VERSION=0.26.0
# PyYAML, to read the Kubernetes manifests in the deploy test.
PYYAML_VERSION=6.0.3
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
SCHEMATHESIS_VERSION=4.32.5
# Hugging Face's own client, to prove the fake hub (tests/py/fake_hub.py) speaks the real protocol.
HUGGINGFACE_HUB_VERSION=2.4.0
# OpenAI's own SDK, to talk to the demo engine's OpenAI routes through the gateway.
OPENAI_VERSION=3.57.0

WANT=("runpod==$RUNPOD_VERSION" "prometheus_client==$PROMETHEUS_CLIENT_VERSION" "PyYAML==$PYYAML_VERSION"
      "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION" "schemathesis==$SCHEMATHESIS_VERSION"
      "huggingface_hub==$HUGGINGFACE_HUB_VERSION" "openai==$OPENAI_VERSION")

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "${WANT[@]}" <<'PY' 2>/dev/null; then exit 0; fi
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (a.split("==") for a in sys.argv[1:])))
PY

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" >/dev/null 2>&1; then
    echo "python3 with venv not found; installing it from Debian (one-time)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi
echo "installing ${WANT[*]} into $VENV (one-time)" >&2
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "${WANT[@]}"
