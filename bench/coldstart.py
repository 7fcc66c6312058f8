#!/usr/bin/env python3
"""Cold-start overhead of the platform with the Docker runtime (issue 4).

For each start: the endpoint is at zero workers, one request arrives through the gateway and waits
while the platform decides to scale up, creates and starts a container, probes it healthy and routes
the request. The request's time minus the worker's own startup (from its process start to listening,
which the demo worker reports at /_demo/boot) is what the platform adds.

Two cases: the image already on the node (prewarmed), and the image removed before every start so
that the start must pull it (from a registry on loopback; no public registry is reachable here).

Usage: python3 bench/coldstart.py [STARTS]   (default 20; prints a Markdown table)
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
N = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, fn, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main():
    subprocess.run(["bash", os.path.join(ROOT, "scripts/docker.sh")], check=True)
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target/release/sluice")
    tmp = tempfile.mkdtemp(prefix="sluice-coldstart-")
    data = os.path.join(tmp, "data")
    log = open(os.path.join(tmp, "platform.log"), "w")
    up = subprocess.Popen(
        [binary, "up", "--runtime", "docker", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0",
         "--data-dir", data],
        stdout=log, stderr=log)
    registry = None
    remote = ""
    try:
        addrs = wait("the platform", lambda: os.path.exists(os.path.join(data, "addresses.json"))
                     and json.load(open(os.path.join(data, "addresses.json"))))
        key = open(os.path.join(data, "admin.key")).read().strip()

        def call(method, path, body=None, base=None, timeout=30):
            req = urllib.request.Request((base or addrs["api"]) + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return json.loads(raw) if raw else None

        demo = [e for e in call("GET", "/v1/endpoints")["endpoints"] if e["name"] == "demo"][0]
        image = demo["image"]

        # A registry on loopback holding the same image, for the "no prewarm" case.
        rdir = tempfile.mkdtemp(prefix="sluice-registry-")
        port = free_port()
        with open(os.path.join(rdir, "config.yml"), "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {rdir}/data\n"
                    f"http:\n  addr: 127.0.0.1:{port}\n")
        registry = subprocess.Popen(["docker-registry", "serve", os.path.join(rdir, "config.yml")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait("the registry", lambda: _open(port))
        remote = f"127.0.0.1:{port}/sluice/demo:bench"
        sh("docker", "tag", image, remote)
        sh("docker", "push", remote)

        rows = []
        for case, img, evict in [("image on the node (prewarmed)", image, False),
                                 ("image pulled at start (no prewarm)", remote, True)]:
            if evict:
                # The demo endpoint's container holds the image; stop it so the image can go.
                call("POST", f"/v1/endpoints/{demo['id']}/stop")
                wait("the demo stopped", lambda: not sh(
                    "docker", "ps", "-aq", "--filter", f"label=io.sluice.endpoint={demo['id']}").stdout.strip())
            e = call("POST", "/v1/endpoints", {
                "name": f"cold-{int(evict)}", "image": img, "active_workers": 0, "max_workers": 1,
                "idle_timeout_secs": 1, "scale_down_delay_secs": 1, "startup_timeout_secs": 120})
            eid = e["id"]
            wait("prewarm", lambda: all(p["state"] == "ready" for p in call("GET", f"/v1/endpoints/{eid}")["image_pulls"]))
            totals, owns, overheads = [], [], []
            for _ in range(N):
                def at_zero():
                    w = call("GET", f"/v1/endpoints/{eid}")["workers"]
                    busy = w["ready"] + w["starting"] + w["pending"] + w["draining"]
                    left = sh("docker", "ps", "-aq", "--filter", f"label=io.sluice.endpoint={eid}").stdout.strip()
                    return busy == 0 and not left
                wait("scale to zero", at_zero)
                if evict:
                    # Both tags name the same layers: remove both so the start must download them.
                    sh("docker", "rmi", remote, image, check=False)
                t0 = time.time()
                boot = call("GET", f"/e/{eid}/_demo/boot", base=addrs["gateway"], timeout=120)
                total = (time.time() - t0) * 1000
                own = boot["listening_ms"] - boot["started_ms"]
                totals.append(total)
                owns.append(own)
                overheads.append(total - own)
            call("DELETE", f"/v1/endpoints/{eid}")
            rows.append((case, totals, owns, overheads))

        def p(v, q):
            v = sorted(v)
            return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]

        print(f"| case | starts | request at zero, median / p99 ms | worker's own startup, median ms | "
              f"platform overhead, median / p99 ms |")
        print("|---|---:|---:|---:|---:|")
        for case, totals, owns, overheads in rows:
            print(f"| {case} | {len(totals)} | {statistics.median(totals):.0f} / {p(totals, 0.99):.0f} | "
                  f"{statistics.median(owns):.0f} | **{statistics.median(overheads):.0f}** / {p(overheads, 0.99):.0f} |")
    finally:
        up.terminate()
        up.wait(timeout=60)
        if registry:
            registry.terminate()
            sh("docker", "rmi", remote, check=False)


def _open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
