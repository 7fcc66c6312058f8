#!/usr/bin/env python3
"""Queue endpoint throughput and overhead (issue 6), push delivery, on this machine.

- Overhead: /runsync's latency minus the handler's own time. The handler is the demo worker's
  echo, and its own time is measured by POSTing the same body to the worker directly. Sequential
  calls, p50 and p99.
- Throughput: JOBS jobs submitted with /run by 32 client threads. The clock stops when health
  counts them all completed, so every job went /run -> worker -> result in the store.

Usage: python3 bench/jobs.py [CALLS] [JOBS]   (defaults 300, 3000; prints a Markdown table)
"""
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
JOBS = int(sys.argv[2]) if len(sys.argv) > 2 else 3000


def post(url, body, headers=None, timeout=60):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def get(url, headers=None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
        return json.loads(r.read())


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def main():
    # SLUICE_BIN: a binary built elsewhere (comparing two builds in one session); else this tree's.
    binary = os.environ.get("SLUICE_BIN") or os.path.join(ROOT, "target/release/sluice")
    if not os.environ.get("SLUICE_BIN"):
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="sluice-queue-bench-")
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
        e = post(addrs["api"] + "/v1/endpoints", {
            "name": "q", "type": "queue", "delivery": "push", "public": True, "start_command": f"exec '{binary}' demo-worker",
            "job_path": "/job", "active_workers": 1, "max_workers": 1, "concurrency_per_worker": 64}, auth)
        eid = e["id"]
        worker = None
        for _ in range(300):
            ws = get(f"{addrs['api']}/v1/endpoints/{eid}/workers", auth)["workers"]
            ready = [w for w in ws if w["state"] == "ready"]
            if ready:
                worker = ready[0]["address"]
                break
            time.sleep(0.1)
        base = f"{addrs['gateway']}/v2/{eid}"
        body = {"input": {"prompt": "x" * 64}}
        for _ in range(20):  # warm up
            post(base + "/runsync", body)
        direct, sync = [], []
        for i in range(CALLS):
            t = time.perf_counter()
            post(f"http://{worker}/job", {"id": f"direct-{i}", **body})
            direct.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            r = post(base + "/runsync", body)
            sync.append((time.perf_counter() - t) * 1000)
            assert r["status"] == "COMPLETED", r
        before = get(base + "/health")["jobs"]["completed"]
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            ids = list(ex.map(lambda _: post(base + "/run", body)["id"], range(JOBS)))
        submitted = time.perf_counter() - t0
        while get(base + "/health")["jobs"]["completed"] - before < JOBS:
            time.sleep(0.02)
        total = time.perf_counter() - t0
        assert len(set(ids)) == JOBS
        print("| measure | value |")
        print("|---|---:|")
        print(f"| handler's own time (direct POST), p50 / p99 ms | {statistics.median(direct):.2f} / {pct(direct, .99):.2f} |")
        print(f"| /runsync, p50 / p99 ms | {statistics.median(sync):.2f} / {pct(sync, .99):.2f} |")
        print(f"| **/runsync overhead, p50 / p99 ms** | **{statistics.median(sync) - statistics.median(direct):.2f}** / "
              f"{pct(sync, .99) - pct(direct, .99):.2f} |")
        print(f"| {JOBS} jobs /run -> worker -> completed, 32 clients | {total:.2f} s: **{JOBS / total:.0f} jobs/s** "
              f"(submission alone {JOBS / submitted:.0f}/s) |")
    finally:
        up.terminate()
        up.wait(timeout=60)


if __name__ == "__main__":
    main()
