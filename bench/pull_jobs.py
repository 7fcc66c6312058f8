#!/usr/bin/env python3
"""Queue endpoints with pull delivery (RunPod's worker protocol), on this machine.

1. The platform's cost: /runsync's latency, sequential, with the demo worker taking jobs (the
   protocol without the SDK, in Rust, answering at once: the latency is platform and loopback).
2. The same with RunPod's SDK (`runpod.serverless.start`, a sync no-op handler), as users run it.
3. Throughput: JOBS jobs through /run with 32 client threads, to one worker of each kind (8
   polls; the SDK with an async no-op handler and concurrency_modifier 64); the clock
   stops when /health counts them all completed.

Also in the table: the handler's own time is ~0 for both workers, so /runsync's latency is the
overhead.

Needs target/pyenv (bash scripts/python.sh). Usage: python3 bench/pull_jobs.py [CALLS] [JOBS]
"""
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
JOBS = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
PY = os.path.join(ROOT, "target/pyenv/bin/python")

from jobs import get, pct, post  # noqa: E402  (the push benchmark's HTTP helpers, beside this file)


def main():
    # SLUICE_BIN: a binary built elsewhere (comparing two builds in one session); else this tree's.
    binary = os.environ.get("SLUICE_BIN") or os.path.join(ROOT, "target/release/sluice")
    if not os.environ.get("SLUICE_BIN"):
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    subprocess.run(["bash", "scripts/python.sh"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="sluice-pull-bench-")
    data = os.path.join(tmp, "data")
    log = open(os.path.join(tmp, "platform.log"), "w")
    up = subprocess.Popen([binary, "up", "--no-demo", "--data-dir", data,
                           "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0"],
                          stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    try:
        path = os.path.join(data, "addresses.json")
        for _ in range(300):
            if os.path.exists(path):
                break
            time.sleep(0.1)
        addrs = json.load(open(path))
        key = open(os.path.join(data, "admin.key")).read().strip()
        auth = {"Authorization": f"Bearer {key}"}

        def endpoint(name, cmd, env):
            e = post(addrs["api"] + "/v1/endpoints", {
                "name": name, "type": "queue", "public": True, "start_command": cmd, "active_workers": 1,
                "max_workers": 1, "env": {"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", **env}}, auth)
            for _ in range(600):
                ws = get(f"{addrs['api']}/v1/endpoints/{e['id']}/workers", auth)["workers"]
                if any(w["state"] == "ready" for w in ws):
                    return f"{addrs['gateway']}/v2/{e['id']}"
                time.sleep(0.1)
            raise SystemExit(f"{name}: no ready worker")

        raw = endpoint("raw", f"exec '{binary}' demo-worker", {"DEMO_PULL_TASKS": "8"})
        sdk_sync = endpoint("sdk", f"exec '{PY}' '{ROOT}/crates/sluice/tests/py/worker.py'", {"MODE": "sync"})
        sdk_async = endpoint("sdk64", f"exec '{PY}' '{ROOT}/crates/sluice/tests/py/worker.py'",
                             {"MODE": "async", "CONCURRENCY": "64"})
        body = {"input": {"prompt": "x" * 64}}

        def latencies(base, n):
            for _ in range(10):
                post(base + "/runsync", body)
            out = []
            for _ in range(n):
                t = time.perf_counter()
                r = post(base + "/runsync", body)
                out.append((time.perf_counter() - t) * 1000)
                assert r["status"] == "COMPLETED", r
            return out

        def throughput(base, n):
            before = get(base + "/health")["jobs"]["completed"]
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(32) as ex:
                list(ex.map(lambda _: post(base + "/run", body)["id"], range(n)))
            while get(base + "/health")["jobs"]["completed"] - before < n:
                time.sleep(0.02)
            return n / (time.perf_counter() - t0)

        raw_lat = latencies(raw, CALLS)
        sdk_lat = latencies(sdk_sync, max(20, CALLS // 10))
        raw_tp = throughput(raw, JOBS)
        sdk_tp = throughput(sdk_async, JOBS)
        print("| measure | value |")
        print("|---|---:|")
        print(f"| /runsync, demo worker taking jobs (protocol without the SDK), p50 / p99 ms | "
              f"**{statistics.median(raw_lat):.2f}** / {pct(raw_lat, .99):.2f} |")
        print(f"| /runsync, RunPod SDK worker, sync no-op handler, p50 / p99 ms ({len(sdk_lat)} calls) | "
              f"{statistics.median(sdk_lat):.1f} / {pct(sdk_lat, .99):.1f} |")
        print(f"| {JOBS} jobs /run -> demo worker (8 polls) -> completed, 32 clients | **{raw_tp:.0f} jobs/s** |")
        print(f"| {JOBS} jobs /run -> SDK worker (async, concurrency 64) -> completed, 32 clients | {sdk_tp:.0f} jobs/s |")
    finally:
        up.terminate()
        up.wait(timeout=60)


if __name__ == "__main__":
    main()
