#!/usr/bin/env python3
"""Warm starts against cold starts (issue 17), in one run, with the process runtime.

The demo worker plays an LLM server: 20 s to load its model at start (DEMO_STARTUP_DELAY_MS)
and 0.3 s to wake from sleep (DEMO_WAKE_DELAY_MS), answering /sleep and /wake_up like vLLM's
sleep mode. For each path, a request arrives at an endpoint with no ready worker:

  cold: nothing runs; the platform starts a worker, which loads for 20 s. STARTS endpoints
        cold-start at once (the load is a wait, not work), each measured on its own.
  warm: the endpoint's only worker sleeps; the platform wakes it. One endpoint, STARTS times in
        a row (each time it scales to zero, its worker goes back to sleep, then a request comes).

The request's time minus the worker's own part (its load, from /_demo/boot, or its wake time) is
what the platform adds. Target: a wake answered within the wake time plus 50 ms.

Usage: python3 bench/wake.py [STARTS]   (default 20; prints a Markdown table)
SLUICE_BIN picks a binary (default: a release build of this tree).
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
N = int(sys.argv[1]) if len(sys.argv) > 1 else 20
LOAD_MS, WAKE_MS = 20_000, 300


def wait(what, fn, timeout=180):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def main():
    binary = os.environ.get("SLUICE_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target/release/sluice")
    tmp = tempfile.mkdtemp(prefix="sluice-wake-")
    data = os.path.join(tmp, "data")
    cfg = os.path.join(tmp, "sluice.toml")
    with open(cfg, "w") as f:
        # Enough simulated GPUs for every cold endpoint at once.
        f.write(f'max_workers_quota = 10\n[[nodes]]\nname = "local"\ndata_center = "local"\n'
                f'gpus = [{{ type = "SIM", count = {N + 4} }}]\n')
    log = open(os.path.join(tmp, "platform.log"), "w")
    up = subprocess.Popen([binary, "up", "--no-demo", "--config", cfg, "--api-addr", "127.0.0.1:0",
                           "--gateway-addr", "127.0.0.1:0", "--data-dir", data], stdout=log, stderr=log)
    try:
        addrs = wait("the platform", lambda: os.path.exists(os.path.join(data, "addresses.json"))
                     and json.load(open(os.path.join(data, "addresses.json"))))
        key = open(os.path.join(data, "admin.key")).read().strip()

        def call(method, path, body=None, base=None, timeout=60):
            req = urllib.request.Request((base or addrs["api"]) + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return (json.loads(raw) if raw else None), dict(r.headers)

        def endpoint(name, sleep):
            body = {"name": name, "start_command": f"exec '{binary}' demo-worker", "public": True,
                    "active_workers": 0, "max_workers": 1, "idle_timeout_secs": 1, "scale_down_delay_secs": 1,
                    "startup_timeout_secs": 120,
                    "env": {"DEMO_STARTUP_DELAY_MS": str(LOAD_MS), "DEMO_WAKE_DELAY_MS": str(WAKE_MS)}}
            if sleep:
                body.update({"sleep_path": "/sleep?level=1", "wake_path": "/wake_up", "max_sleeping": 1})
            return call("POST", "/v1/endpoints", body)[0]["id"]

        def timed(eid, path):
            t0 = time.time()
            body, headers = call("GET", f"/e/{eid}{path}", base=addrs["gateway"], timeout=120)
            return (time.time() - t0) * 1000, body, headers.get("x-sluice-wait") or headers.get("X-Sluice-Wait")

        # Cold: N endpoints at zero, one request each, at once.
        cold = [endpoint(f"cold-{i}", False) for i in range(N)]
        with concurrent.futures.ThreadPoolExecutor(N) as pool:
            results = list(pool.map(lambda e: timed(e, "/_demo/boot"), cold))
        cold_total = [r[0] for r in results]
        cold_own = [r[1]["listening_ms"] - r[1]["started_ms"] for r in results]
        cold_over = [t - o for t, o in zip(cold_total, cold_own)]
        for e in cold:
            call("DELETE", f"/v1/endpoints/{e}")

        # Warm: one endpoint; first a cold start, then N wakes.
        warm = endpoint("warm", True)
        timed(warm, "/first")
        warm_total, waits = [], []

        def asleep():
            ws = call("GET", f"/v1/endpoints/{warm}/workers")[0]["workers"]
            s = [w for w in ws if w["state"] == "sleeping"]
            return s and s[0]["phases"] and s[0]["phases"][-1]["phase"] == "slept"

        for _ in range(N):
            wait("the worker asleep", asleep)
            t, _, w = timed(warm, "/ping")
            warm_total.append(t)
            waits.append(w or "")
        warm_over = [t - WAKE_MS for t in warm_total]
        woke = sum(1 for w in waits if w.startswith("wake"))

        print(f"| path (demo worker: {LOAD_MS / 1000:.0f} s load, {WAKE_MS} ms wake) | requests | request at zero, "
              f"p50 / p99 ms | the worker's own part, ms | platform overhead, p50 / p99 ms |")
        print("|---|---:|---:|---:|---:|")
        print(f"| cold start | {N} | {statistics.median(cold_total):.0f} / {pct(cold_total, 0.99):.0f} | "
              f"{statistics.median(cold_own):.0f} (load) | {statistics.median(cold_over):.0f} / {pct(cold_over, 0.99):.0f} |")
        print(f"| wake | {N} ({woke} said `wake`) | {statistics.median(warm_total):.0f} / {pct(warm_total, 0.99):.0f} | "
              f"{WAKE_MS} (wake) | **{statistics.median(warm_over):.0f}** / {pct(warm_over, 0.99):.0f} |")
        print(f"\nwarm / cold, p50: {statistics.median(warm_total) / statistics.median(cold_total):.3f}")
    finally:
        up.terminate()
        up.wait(timeout=60)


if __name__ == "__main__":
    main()
