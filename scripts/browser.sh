#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver, for the dashboard's browser tests. Idempotent; run by
# scripts/test.sh.
set -euo pipefail
if command -v chromedriver >/dev/null 2>&1 && [ -x /usr/bin/chromium ]; then exit 0; fi
echo "installing chromium and chromium-driver from Debian (one-time)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
