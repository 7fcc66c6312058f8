#!/usr/bin/env bash
# A container image of a RunPod SDK worker, for the Docker tests: tests/py/worker.py and the
# venv from scripts/python.sh (runpod from PyPI) on the host's Python, with exactly the shared
# libraries they load, imported as a root filesystem (no registry can be reached here). The tag
# carries a hash of its inputs; it is written to target/sdk-image for the tests. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/pyenv
WORKER=crates/sluice/tests/py/worker.py
[ -x "$VENV/bin/python" ] || bash scripts/python.sh
PY=$(readlink -f "$VENV/bin/python")
PYHOME=$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix)')
PYVER=$("$VENV/bin/python" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
SUM=$( (sha256sum "$WORKER" "$0"; "$VENV/bin/python" -m pip freeze 2>/dev/null; echo "$PY") | sha256sum | cut -c1-12)
TAG="sluice-test/runpod-worker:$SUM"
if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "$TAG" > target/sdk-image
    exit 0
fi
echo "building $TAG (one-time)" >&2
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT

# The interpreter at its own path (the venv points there), its stdlib without tests or tools.
mkdir -p "$ROOT$PYHOME/bin" "$ROOT$PYHOME/lib"
cp -a "$PY" "$ROOT$PYHOME/bin/"
cp -a "$PYHOME"/lib/libpython3*.so* "$ROOT$PYHOME/lib/" 2>/dev/null || true
tar -C "$PYHOME/lib" --exclude="$PYVER/site-packages" --exclude="$PYVER/test" --exclude="$PYVER/idlelib" \
    --exclude="$PYVER/tkinter" --exclude="$PYVER/ensurepip" --exclude="$PYVER/config-*" -cf - "$PYVER" \
    | tar -C "$ROOT$PYHOME/lib" -xf -
# The venv (site-packages only: the SDK and its dependencies) and the worker.
mkdir -p "$ROOT/opt/venv/bin" "$ROOT/opt/venv/lib"
cp "$VENV/pyvenv.cfg" "$ROOT/opt/venv/"
ln -s "$PY" "$ROOT/opt/venv/bin/python"
tar -C "$VENV/lib" --exclude="*/site-packages/pip" --exclude="*/site-packages/setuptools" -cf - . | tar -C "$ROOT/opt/venv/lib" -xf -
cp "$WORKER" "$ROOT/opt/worker.py"
# A shell for the start command, and every shared library anything above loads.
mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/etc"
chmod 1777 "$ROOT/tmp"
cp "$(readlink -f /bin/sh)" "$ROOT/bin/sh"
{
    echo /bin/sh
    echo "$PY"
    find "$PYHOME/lib" "$VENV/lib" -name '*.so*' -type f
} | while read -r f; do ldd "$f" 2>/dev/null || true; done \
    | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | sort -u | while read -r lib; do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
# /lib64 and /lib may be links to /usr/... on the host; the loader is looked up at its path.
for f in /lib64/ld-linux-x86-64.so.2; do mkdir -p "$ROOT$(dirname "$f")"; cp -L "$f" "$ROOT$f"; done
tar -C "$ROOT" -cf - . | docker import --change 'ENV PATH=/opt/venv/bin:/bin' - "$TAG" >/dev/null
echo "$TAG" > target/sdk-image
