#!/usr/bin/env python3
"""Cancel on disconnect (issue 19): how long after a client goes away mid-stream the worker
notices and aborts its sequence, through Sluice's gateway and straight to the worker, in one run.

The worker is the demo worker's OpenAI mode streaming a long answer (a token every 20 ms). A
client sends a streaming chat completion over a raw socket, reads the first token, notes the
time and closes the socket; the worker's `demo:last_abort_unix_us` gauge says when it noticed
(it watches its connection between tokens, as vLLM does). Both clocks are this machine's.

Usage: SLUICE_BIN=target/release/sluice python3 bench/cancel.py [N]   (default N=40 per path)
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 40
TOKEN_US = 20_000


def wait(what, fn, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def last_abort(addr):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("demo:last_abort_unix_us{"):
                return int(float(line.rsplit(" ", 1)[1]))
    return 0


def one(host, port, path, worker):
    """One streamed request closed after its first token: µs from the close to the abort."""
    before = last_abort(worker)
    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 100000, "stream": True}).encode()
    s = socket.create_connection((host, port))
    s.sendall(f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
              f"content-length: {len(body)}\r\n\r\n".encode() + body)
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    closed = time.time_ns() // 1000
    s.close()
    after = wait("the abort", lambda: (lambda a: a if a != before else None)(last_abort(worker)))
    return after - closed


def main():
    binary = os.environ.get("SLUICE_BIN") or os.path.join(ROOT, "target/release/sluice")
    tmp = tempfile.mkdtemp(prefix="sluice-cancel-")
    data = os.path.join(tmp, "data")
    log = open(os.path.join(tmp, "platform.log"), "w")
    up = subprocess.Popen([binary, "up", "--no-demo", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0",
                           "--data-dir", data], stdout=log, stderr=log)
    try:
        addrs = wait("the platform", lambda: os.path.exists(os.path.join(data, "addresses.json"))
                     and json.load(open(os.path.join(data, "addresses.json"))))
        key = open(os.path.join(data, "admin.key")).read().strip()

        def call(method, path, body=None):
            req = urllib.request.Request(addrs["api"] + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read() or b"null")

        eid = call("POST", "/v1/endpoints", {
            "name": "cancel", "start_command": f"exec '{binary}' demo-worker", "public": True,
            "active_workers": 1, "max_workers": 1,
            "env": {"DEMO_PREFILL_US_PER_TOKEN": "1", "DEMO_DECODE_US_PER_TOKEN": str(TOKEN_US)}})["id"]
        worker = wait("a ready worker", lambda: next((w["address"] for w in call("GET", f"/v1/endpoints/{eid}/workers")["workers"]
                                                       if w["state"] == "ready"), None))
        gw_host, gw_port = addrs["gateway"].removeprefix("http://").split(":")
        w_host, w_port = worker.split(":")
        via, direct = [], []
        for _ in range(N):  # interleaved
            via.append(one(gw_host, int(gw_port), f"/e/{eid}/v1/chat/completions", worker))
            direct.append(one(w_host, int(w_port), "/v1/chat/completions", worker))
        ms = lambda v: v / 1000  # noqa: E731
        print(f"| path ({N} requests each, a token every {TOKEN_US // 1000} ms) | close → worker aborts, p50 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|")
        for name, v in [("through Sluice's gateway", via), ("straight to the worker", direct)]:
            print(f"| {name} | {ms(statistics.median(v)):.1f} | {ms(pct(v, 0.99)):.1f} | {ms(max(v)):.1f} |")
        added = [a - b for a, b in zip(sorted(via), sorted(direct))]
        print(f"\nadded by the gateway (quantile by quantile): p50 {ms(statistics.median(added)):.1f} ms, "
              f"p99 {ms(pct(added, 0.99)):.1f} ms")
    finally:
        up.terminate()
        up.wait(timeout=60)


if __name__ == "__main__":
    main()
