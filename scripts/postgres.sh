#!/usr/bin/env bash
# Debian's PostgreSQL server binaries (initdb, pg_ctl), for the tests that run the store and
# several control processes against a real PostgreSQL. Each such test starts its own throw-away
# server on a temporary directory and a free port (sluice_store::testing::TestPostgres); nothing
# here starts a server. Idempotent; run by scripts/test.sh.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi
echo "installing postgresql from Debian (one-time)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
