#!/usr/bin/env bash
# Makes a Docker Engine available for the Docker runtime and its tests: installs Debian's
# docker.io when dockerd is missing, starts dockerd in the background when its socket does not
# answer, and waits for it. Idempotent; safe to call before every test run.
set -euo pipefail

SOCK=/var/run/docker.sock
if [ -n "${DOCKER_HOST:-}" ]; then
    # The user points at their own engine (e.g. Podman's socket); use it as is.
    exit 0
fi
# docker.io: the Engine. docker-registry and apache2-utils (htpasswd): the tests pull from a
# private registry on loopback, since no public registry can be reached.
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} from Debian (one-time)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
answers() { curl -fsS --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1; }
if ! answers; then
    echo "starting dockerd in the background (log: /var/log/sluice-dockerd.log)" >&2
    nohup dockerd >/var/log/sluice-dockerd.log 2>&1 &
    for _ in $(seq 1 120); do
        answers && break
        sleep 0.5
    done
fi
if ! answers; then
    echo "dockerd did not come up; last lines of its log:" >&2
    tail -20 /var/log/sluice-dockerd.log >&2 || true
    exit 1
fi
