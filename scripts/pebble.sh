#!/usr/bin/env bash
# Debian's Pebble (a real ACME CA, RFC 8555, for tests) with its challenge test server, the
# tests' TLS tools (certutil, to make headless Chromium trust Pebble's root; openssl and nginx
# for the TLS benchmark) and lego (a reference ACME client, for when something disagrees). Each test starts its own
# Pebble on free loopback ports; nothing here starts a server. Idempotent; run by scripts/test.sh.
set -euo pipefail
missing=()
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v lego >/dev/null 2>&1 || missing+=(lego)
command -v certutil >/dev/null 2>&1 || missing+=(libnss3-tools)
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "installing ${missing[*]} from Debian (one-time)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
