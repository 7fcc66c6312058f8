#!/usr/bin/env python3
"""Cached models (issue 18): how fast Sluice stages a model, and what the cache is worth at a cold start.

    SLUICE_BIN=target/release/sluice target/pyenv/bin/python bench/models.py [ROUNDS]

(run from the repository root; ROUNDS defaults to 3; without SLUICE_BIN the script builds a
release binary first; the Python must have huggingface_hub, as target/pyenv has). Prints
Markdown tables and writes them to bench/results/models.md. With SLUICE_BIN_BEFORE=<another
build>, that build's `models fetch` joins the throughput rounds too (a change, before and after,
in the same rounds).

Everything is on loopback: the hub is tests/py/fake_hub.py, serving its files from memory
(--memory) so that it is not what limits a download. Two repositories:

  org/big    one 2 GB LFS file (model.safetensors) and a config.json
  org/many   400 LFS files of 2.5 MB and 5 small JSON files (1 GB): the per-file costs

1. Throughput. ROUNDS rounds, interleaved (the order of the two tools alternates), each into a
   fresh directory: `sluice models fetch` against huggingface_hub's own `snapshot_download`
   (HF_ENDPOINT set; Xet off, which the fake hub does not speak anyway; hf_transfer is not used
   by huggingface_hub 2.x). Neither fsyncs what it writes (sluice-models has no fsync; the
   client neither), so each is timed twice: until the tool returns (its data may still be in
   the page cache) and until a `sync` after it returns (its data on disk), which is what
   `dd ... conv=fdatasync`, the disk's own write speed measured in the same rounds on the same
   filesystem, is compared with. Before each measurement the page cache's dirty pages are
   written back (`sync`), so no run pays for the one before it. The client is timed inside its
   process (from the call, after Python and its imports are up); sluice as a whole process.
   Sluice also re-reads every file to check its sha256 / git blob id; the client checks sizes.

2. Cold starts with `sluice up` (process runtime): an endpoint at zero workers gets a request;
   the worker is the demo worker, which at start reads and sha256-hashes every file under
   $SLUICE_MODEL_PATHS (a stand-in for an engine loading weights) and answers /_demo/models.
     A: `models = [{source = "hf://org/big"}]`: staged into the platform's cache ahead of need
        (timed: create -> ready), so the worker reads it from the cache.
     B: no `models`; the start command downloads the model first (snapshot_download into a
        directory of its own, as a container without a persistent disk would) and then starts
        the same demo worker on it.
   Each twice: a second start (after scaling to zero) shows A stays fast and B downloads again.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
MB = 1_000_000
BIG = 2_000 * MB                 # org/big: one LFS file
MANY, MANY_SIZE = 400, 2_500_000  # org/many: 400 LFS shards
DD_BLOCKS = 128                   # dd: 128 x 16 MiB = 2.1 GB

# The client's side: one snapshot_download, timed from the call; prints seconds.
CLIENT = ("import sys, time\n"
          "from huggingface_hub import snapshot_download\n"
          "t0 = time.perf_counter()\n"
          "snapshot_download(sys.argv[1], cache_dir=sys.argv[2])\n"
          "print(time.perf_counter() - t0)\n")


def hub_env(endpoint, home):
    """Environment for huggingface_hub: this hub, no progress bars, telemetry, Xet or token."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HF_") and k not in ("HUGGING_FACE_HUB_TOKEN",)}
    env.update({"HF_ENDPOINT": endpoint, "HF_HOME": home, "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"})
    return env


def wait(what, fn, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def spec():
    """The fake hub's repositories (file bytes are generated from the seeds)."""
    small = [{"path": name, "content": json.dumps({"name": name, "pad": "x" * 2000})}
             for name in ("config.json", "generation_config.json", "tokenizer_config.json",
                          "special_tokens_map.json", "model.safetensors.index.json")]
    shards = [{"path": f"model-{i + 1:05d}-of-{MANY:05d}.safetensors", "size": MANY_SIZE, "lfs": True,
               "seed": 1000 + i} for i in range(MANY)]
    return {"repos": {
        "org/big": {"files": [small[0], {"path": "model.safetensors", "size": BIG, "lfs": True, "seed": 1}]},
        "org/many": {"files": small + shards},
    }}


def blob_bytes(d):
    """Bytes of the blobs under cache d (both tools keep a model's content in `blobs/`)."""
    total = 0
    for dirpath, _, files in os.walk(d):
        if os.path.basename(dirpath) == "blobs":
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def timed_sync():
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


def main():
    binary = os.environ.get("SLUICE_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "sluice"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target/release/sluice")
    binary = os.path.abspath(binary)
    tmp = tempfile.mkdtemp(prefix="sluice-models-")
    procs = []
    try:
        # The fake hub, its files in memory (hashing 3 GB at startup takes a while).
        s = spec()
        with open(os.path.join(tmp, "spec.json"), "w") as f:
            json.dump(s, f)
        hub = subprocess.Popen([sys.executable, os.path.join(ROOT, "crates/sluice/tests/py/fake_hub.py"),
                                "--port", "0", "--cdn-port", "0", "--memory", "--spec", os.path.join(tmp, "spec.json"),
                                "--log", os.path.join(tmp, "hub.jsonl")],
                               stdout=subprocess.PIPE, text=True)
        procs.append(hub)
        endpoint = "http://127.0.0.1:" + hub.stdout.readline().split()[-1]
        hub.stdout.readline()  # cdn listening on ...
        sizes = {r: sum(fl.get("size") or len(fl["content"].encode()) for fl in v["files"])
                 for r, v in s["repos"].items()}
        counts = {r: len(v["files"]) for r, v in s["repos"].items()}
        env = hub_env(endpoint, os.path.join(tmp, "hf-home"))

        before = os.environ.get("SLUICE_BIN_BEFORE")
        throughput = throughput_rounds(binary, endpoint, env, tmp, sizes, before and os.path.abspath(before))
        cold = cold_starts(binary, endpoint, env, tmp, procs)

        out = report(throughput, cold, sizes, counts)
        print(out)
        with open(os.path.join(ROOT, "bench/results/models.md"), "w") as f:
            f.write(out)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=60)
        # Keep the logs; the caches are gigabytes.
        for name in os.listdir(tmp):
            p = os.path.join(tmp, name)
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            elif name not in ("hub.jsonl", "platform.log", "spec.json", "sluice.toml"):
                os.remove(p)
        print(f"(logs in {tmp})", file=sys.stderr)


def throughput_rounds(binary, endpoint, env, tmp, sizes, before=None):
    """{(repo, tool): [(seconds to return, seconds until synced)]}, and the dd rounds."""
    res = {}

    def sluice_of(b):
        def run(repo, d):
            t0 = time.perf_counter()
            subprocess.run([b, "models", "fetch", f"hf://{repo}", "--cache", d, "--hf-endpoint", endpoint,
                            "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
            return time.perf_counter() - t0
        return run

    def client(repo, d):
        r = subprocess.run([sys.executable, "-c", CLIENT, repo, d], check=True, env=env,
                           capture_output=True, text=True)
        return float(r.stdout.strip().splitlines()[-1])

    every = [("sluice", sluice_of(binary)), ("client", client)] + ([("before", sluice_of(before))] if before else [])
    for rnd in range(ROUNDS):
        # Each round starts with another tool.
        k = rnd % len(every)
        tools = every[k:] + every[:k]
        for repo in ("org/big", "org/many"):
            for name, fn in tools:
                d = os.path.join(tmp, f"cache-{name}")
                os.sync()
                t = fn(repo, d)
                synced = t + timed_sync()
                got = blob_bytes(d)
                if got != sizes[repo]:
                    raise SystemExit(f"{name} fetched {got} bytes of {repo}, not {sizes[repo]}")
                res.setdefault((repo, name), []).append((t, synced))
                print(f"round {rnd + 1} {repo} {name}: {sizes[repo] / t / MB:.0f} MB/s, "
                      f"{sizes[repo] / synced / MB:.0f} MB/s with sync", file=sys.stderr)
                shutil.rmtree(d)
        # The disk's own write speed, on the same filesystem.
        f = os.path.join(tmp, "dd.bin")
        os.sync()
        t0 = time.perf_counter()
        subprocess.run(["dd", "if=/dev/zero", f"of={f}", "bs=16M", f"count={DD_BLOCKS}", "conv=fdatasync"],
                       check=True, capture_output=True)
        t = time.perf_counter() - t0
        os.remove(f)
        res.setdefault(("dd", "dd"), []).append((t, t))
        print(f"round {rnd + 1} dd: {DD_BLOCKS * 16 * 2**20 / t / MB:.0f} MB/s", file=sys.stderr)
    # What one plain HTTP reader gets from the hub (nothing written): the server's ceiling.
    tree = json.load(urllib.request.urlopen(f"{endpoint}/api/models/org/big/tree/main?recursive=true"))
    ceiling = []
    for _ in range(ROUNDS):
        r = subprocess.run(["curl", "-sSfL", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                            f"{endpoint}/org/big/resolve/main/model.safetensors"],
                           check=True, capture_output=True, text=True)
        n, t = r.stdout.split()
        ceiling.append(int(n) / float(t) / MB)
    res["ceiling"] = ceiling
    res["big_sha256"] = [e["lfs"]["oid"] for e in tree if e["path"] == "model.safetensors"][0]
    return res


def cold_starts(binary, endpoint, env, tmp, procs):
    """Cold starts of an endpoint whose model is cached (A) and one that downloads it (B)."""
    data = os.path.join(tmp, "data")
    cache = os.path.join(tmp, "platform-models")
    downloads = os.path.join(tmp, "worker-downloads")
    os.makedirs(downloads)
    cfg = os.path.join(tmp, "sluice.toml")
    with open(cfg, "w") as f:
        f.write(f'hf_endpoint = "{endpoint}"\nmodel_cache_dir = "{cache}"\n')
    log = open(os.path.join(tmp, "platform.log"), "w")
    up = subprocess.Popen([binary, "up", "--no-demo", "--config", cfg, "--api-addr", "127.0.0.1:0",
                           "--gateway-addr", "127.0.0.1:0", "--data-dir", data],
                          stdout=log, stderr=log, env={**env, "RUST_LOG": "warn"})
    procs.append(up)
    addrs = wait("the platform", lambda: os.path.exists(os.path.join(data, "addresses.json"))
                 and json.load(open(os.path.join(data, "addresses.json"))))
    key = open(os.path.join(data, "admin.key")).read().strip()

    def call(method, path, body=None, base=None, timeout=60):
        req = urllib.request.Request((base or addrs["api"]) + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    common = {"active_workers": 0, "max_workers": 1, "idle_timeout_secs": 1, "scale_down_delay_secs": 1,
              "startup_timeout_secs": 600, "queue_timeout_secs": 600}
    # A: the platform stages the model; the worker reads it from the cache ($SLUICE_MODEL_PATHS).
    t0 = time.time()
    a = call("POST", "/v1/endpoints", {"name": "cached", "start_command": f"exec '{binary}' demo-worker",
                                       "models": [{"source": "hf://org/big"}], **common})["id"]

    def staged():
        ms = call("GET", f"/v1/endpoints/{a}")["models"]
        if any(n["state"] == "failed" for m in ms for n in m["nodes"]):
            raise SystemExit(f"staging failed: {ms}")
        return ms and all(m["nodes"] and all(n["state"] == "ready" for n in m["nodes"]) for m in ms) and ms
    ms = wait("the model staged", staged)
    staging = time.time() - t0
    rate = ms[0]["nodes"][0]["rate_bytes_per_sec"]
    # B: the start command downloads the model into a directory of the worker's own, then starts
    # the same demo worker on it. The endpoint's env carries HF_ENDPOINT and the rest.
    fetch = ("import sys; from huggingface_hub import snapshot_download; "
             "print(snapshot_download(sys.argv[1], cache_dir=sys.argv[2]))")
    b_cmd = (f"D='{downloads}'/$SLUICE_WORKER_ID && P=$('{sys.executable}' -c '{fetch}' org/big \"$D\") && "
             f"SLUICE_MODEL_PATHS=\"$P\" exec '{binary}' demo-worker")
    b_env = {k: v for k, v in env.items() if k.startswith("HF_")}
    b = call("POST", "/v1/endpoints", {"name": "downloads", "start_command": b_cmd, "env": b_env, **common})["id"]

    def at_zero():
        """Both endpoints without workers: nothing else runs while one starts."""
        for eid in (a, b):
            w = call("GET", f"/v1/endpoints/{eid}")["workers"]
            if w["ready"] + w["starting"] + w["pending"] + w["draining"]:
                return False
        return True

    rows = []
    for start in (1, 2):
        for case, eid in (("A", a), ("B", b)):
            wait("scale to zero", at_zero)
            shutil.rmtree(downloads)  # what B's last worker downloaded: the next one starts bare
            os.makedirs(downloads)
            os.sync()
            t0 = time.perf_counter()
            models = call("GET", f"/e/{eid}/_demo/models", base=addrs["gateway"], timeout=600)
            total = (time.perf_counter() - t0) * 1000
            boot = call("GET", f"/e/{eid}/_demo/boot", base=addrs["gateway"])
            own = boot["listening_ms"] - boot["started_ms"]
            rows.append((case, start, total, own, models))
            print(f"cold start {start} {case}: {total:.0f} ms (worker's own {own} ms), "
                  f"{models['files']} files, {models['bytes']} bytes", file=sys.stderr)
    for eid in (a, b):
        call("DELETE", f"/v1/endpoints/{eid}")
    return {"staging_s": staging, "rate": rate, "rows": rows}


def report(res, cold, sizes, counts):
    med = statistics.median

    def mbps(repo, tool, synced):
        return med(sizes.get(repo, DD_BLOCKS * 16 * 2**20) / r[synced] / MB for r in res[(repo, tool)])

    def runs(repo, tool, synced):
        return ", ".join(f"{sizes[repo] / r[synced] / MB:.0f}" for r in res[(repo, tool)])

    dd = mbps("dd", "dd", 1)
    lines = [f"## Model fetch throughput ({ROUNDS} rounds, interleaved; median MB/s, 1 MB = 10^6 bytes)", "",
             "| repository | sluice models fetch | + sync | huggingface_hub snapshot_download | + sync | "
             "sluice / client | + sync | sluice + sync / dd |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for repo, what in (("org/big", "one LFS file"), ("org/many", f"{MANY} LFS files of 2.5 MB + 5 JSON")):
        s0, s1, c0, c1 = (mbps(repo, "sluice", 0), mbps(repo, "sluice", 1),
                          mbps(repo, "client", 0), mbps(repo, "client", 1))
        lines.append(f"| {repo}: {what}, {counts[repo]} files, {sizes[repo] / MB:.0f} MB | **{s0:.0f}** | {s1:.0f} | "
                     f"{c0:.0f} | {c1:.0f} | **{s0 / c0:.2f}x** | {s1 / c1:.2f}x | **{s1 / dd:.0%}** |")
    lines += [
        "",
        f"Disk write speed, `dd if=/dev/zero bs=16M count={DD_BLOCKS} conv=fdatasync` (same filesystem, "
        f"same rounds): **{dd:.0f} MB/s** (rounds: {', '.join(f'{DD_BLOCKS * 16 * 2**20 / r[0] / MB:.0f}' for r in res[('dd', 'dd')])}).",
        f"The hub's ceiling, one `curl -o /dev/null` of org/big's LFS file (nothing written): "
        f"{med(res['ceiling']):.0f} MB/s (rounds: {', '.join(f'{c:.0f}' for c in res['ceiling'])}).",
        "",
        "Rounds, MB/s (to return / with sync): " + "; ".join(
            f"{repo} {tool}: {runs(repo, tool, 0)} / {runs(repo, tool, 1)}"
            for repo in ("org/big", "org/many") for tool in ("sluice", "client")) + ".",
        "",
        "Neither tool fsyncs: `sluice models fetch` (crates/sluice-models: no fsync) and "
        "huggingface_hub both return with data possibly still in the page cache; \"+ sync\" adds a "
        "`sync` after it returns (data on disk), comparable with dd's `conv=fdatasync`. dd fills the page "
        "cache and then flushes it all at the end, while a fetch's writeback overlaps its download, so a "
        "fetch with sync can beat dd: above 100%, the disk is not what limits it. Dirty pages are "
        "written back before every measurement. sluice checks each file's sha256 (LFS) or git blob id, "
        "hashing it as its ranges arrive; huggingface_hub checks sizes only. The client is timed inside its process "
        "(Python start and imports excluded); sluice as a whole process.",
        "",
    ]
    if ("org/big", "before") in res:
        lines += ["## `sluice models fetch`, this build against SLUICE_BIN_BEFORE (same rounds; median MB/s)", "",
                  "| repository | before | now | + sync, before | + sync, now | now / before |",
                  "|---|---:|---:|---:|---:|---:|"]
        for repo in ("org/big", "org/many"):
            b0, b1, n0, n1 = (mbps(repo, "before", 0), mbps(repo, "before", 1),
                              mbps(repo, "sluice", 0), mbps(repo, "sluice", 1))
            lines.append(f"| {repo} | {b0:.0f} | {n0:.0f} | {b1:.0f} | {n1:.0f} | **{n0 / b0:.2f}x** ({n1 / b1:.2f}x with sync) |")
        lines.append("")
        lines.append("Rounds, MB/s (to return): " + "; ".join(
            f"{repo} {tool}: {runs(repo, tool, 0)}" for repo in ("org/big", "org/many") for tool in ("before", "sluice")) + ".")
        lines.append("")
    lines += [
        "## Cold start: model cached by the platform (A) vs downloaded inside the worker (B)",
        "",
        f"Model hf://org/big ({sizes['org/big'] / MB:.0f} MB). A's staging, endpoint created -> model ready: "
        f"{cold['staging_s']:.1f} s ({cold['rate'] / MB:.0f} MB/s as the API reports it), before any request.",
        "",
        "| endpoint | start | request at zero -> 200, ms | worker's own startup (reads + hashes the model), ms | "
        "the rest (platform, and B's download), ms | files / bytes the worker read |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {"A": "A: `models = [hf://org/big]` (read from the cache)",
             "B": "B: no `models`, snapshot_download in the start command"}
    for case, start, total, own, models in sorted(cold["rows"]):
        ok = models["sha256"].get("model.safetensors") == res["big_sha256"]
        lines.append(f"| {names[case]} | {start} | **{total:.0f}** | {own} | {total - own:.0f} | "
                     f"{models['files']} / {models['bytes']}{'' if ok else ' (WRONG sha256)'} |")
    a = [r[2] for r in cold["rows"] if r[0] == "A"]
    b = [r[2] for r in cold["rows"] if r[0] == "B"]
    lines += ["", f"B / A, per start: {', '.join(f'{y / x:.1f}x' for x, y in zip(a, b))}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
