#!/usr/bin/env python3
"""LLM-aware routing (issue 19): the Mooncake conversation trace replayed through Sluice against
4 demo-engine workers, once per load-balancing policy, in one run.

    SLUICE_BIN=target/release/sluice target/pyenv/bin/python bench/llm_routing.py

(run from the repository root; the Python needs the `openai` package, as target/pyenv has;
without SLUICE_BIN a release binary of this tree is used. `--help` lists the knobs: the trace
slice, the time compression, the output cap, the repetitions.) Prints Markdown tables and writes
them to bench/results/llm_routing.md. The same at a heavier load, round robin against prefix-aware
only:

    SLUICE_BIN=target/release/sluice target/pyenv/bin/python bench/llm_routing.py --speed 10 \
        --policies round_robin,prefix_aware --sdk-reps 0 --cost-reps 0 \
        --out bench/results/llm_routing_speed10.md

The trace (../shared/traces/mooncake_conversation.jsonl) gives, for each request, its arrival
time, its input and output lengths in tokens and `hash_ids`, the ids of its 512-token prompt
blocks (a shared leading run of ids is a shared prefix). Each id becomes a fixed block of text:
the word `b{id:08d} ` repeated and cut to 512 tokens x DEMO_BYTES_PER_TOKEN bytes; a request's
prompt is its blocks' texts in order, cut to its input length, sent as one user message. So two
prompts share their first k blocks exactly when their first k ids agree.

The worker is `sluice demo-worker` in its OpenAI mode, an engine model (demo_engine.rs): a
per-worker LRU prefix cache over 16-token blocks, prefill time per uncached prompt token with one
prefill at a time in arrival order, decode time per output token with up to DEMO_MAX_SEQS
sequences at once. So time to first token depends on where a request goes: a worker that holds
the conversation's earlier turns prefills only the new part, and a worker with a queue of
prefills makes everyone behind wait.

1. Replay. The first MINUTES of the trace, compressed SPEED times, open loop (each request is
   sent at its own time whatever happened to the others), streamed with `stream_options.
   include_usage`, through the gateway to one fresh endpoint per policy (fresh workers, so every
   policy starts with cold caches): round_robin, least_outstanding_requests, session_affinity,
   prefix_aware, one after another. The trace has no session ids; the session key sent as
   X-Session-ID is the first conversation-specific block id (hash_ids[1], else hash_ids[0];
   hash_ids[0] is the same for every request). Per policy: time to first token (request sent to
   the first content chunk, with a small asyncio HTTP/1.1 client: the openai SDK costs too much
   CPU per chunk on a 2-core machine to drive the replay), throughput, prefix-cache hit rate
   (from the usage chunks' cached_tokens, and from the workers' vllm:prefix_cache_* counters),
   requests per worker (from the x-demo-worker header) and requests in flight per worker (from
   the client's own record of when each request was in flight at which worker).
2. Streaming overhead with the openai SDK: time to first token through the gateway
   ({gateway}/e/{id}/v1) against straight from the worker's own address, same prompt,
   interleaved, on an endpoint of one worker with no prefill and no decode time; once with the
   demo engine and once with a minimal asyncio SSE worker (this script with --sse-worker, which
   sets TCP_NODELAY as uvicorn-served engines do), the control.
3. The routing decision's cost, end to end: prefix_aware against round_robin on two idle
   4-worker endpoints (no prefill, no decode, one output token, not streamed), for 1 KB, 32 KB and
   256 KB prompts, interleaved. The difference includes everything the gateway does differently
   for prefix_aware (the bounded look at the body, hashing it, the choice, remembering the
   blocks), plus noise; the choice itself has no separate hook.
"""
import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACE = os.path.join(ROOT, "..", "shared", "traces", "mooncake_conversation.jsonl")
RESULTS = os.path.join(ROOT, "bench", "results", "llm_routing.md")
POLICIES = ["round_robin", "least_outstanding_requests", "session_affinity", "prefix_aware"]
WORKERS = 4
TRACE_BLOCK_TOKENS = 512

# The engine (flags of `sluice demo-worker`, passed as its environment).
ENGINE = {
    "DEMO_BYTES_PER_TOKEN": 4,
    "DEMO_BLOCK_TOKENS": 16,
    # 4M tokens of prefix cache per worker (about 350 mean-sized prompts): a conversation's next
    # turn comes a median 2 trace-minutes later, after about 400 other requests; a cache that
    # forgets it first would make every policy equal.
    "DEMO_CACHE_BLOCKS": 262_144,
    # 10 us a token: an uncached 7,000-token prompt prefills in 70 ms, the mean 12,000 in 120 ms.
    "DEMO_PREFILL_US_PER_TOKEN": 10,
    # 20 ms a token: with the output cap of 32 tokens, up to 0.64 s of decoding per request.
    "DEMO_DECODE_US_PER_TOKEN": 20_000,
    "DEMO_MAX_SEQS": 64,
}
BPT = ENGINE["DEMO_BYTES_PER_TOKEN"]


# ---------------------------------------------------------------------------------------------
# Small helpers


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))] if v else float("nan")


def wait(what, fn, timeout=180):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------
# The trace and its prompts


def block_text(block_id, size):
    """The fixed text of one 512-token trace block: `b{id:08d} ` repeated, cut to `size` bytes."""
    word = f"b{block_id:08d} "
    return (word * (size // len(word) + 1))[:size]


def load_trace(minutes):
    with open(TRACE) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if r["timestamp"] < minutes * 60_000]


def build_requests(rows, max_tokens):
    """Each trace row as (arrival ms, body bytes, session key, prompt tokens, max_tokens)."""
    size = TRACE_BLOCK_TOKENS * BPT
    texts = {}
    out = []
    for r in rows:
        prompt = "".join(texts.setdefault(h, block_text(h, size)) for h in r["hash_ids"])
        prompt = prompt[: r["input_length"] * BPT]
        k = min(r["output_length"], max_tokens)
        body = json.dumps({
            "model": "demo",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": k,
            "stream": True,
            "stream_options": {"include_usage": True},
        }).encode()
        ids = r["hash_ids"]
        session = str(ids[1] if len(ids) > 1 else ids[0])
        out.append((r["timestamp"], body, session, r["input_length"], k))
    return out


def ideal_hit_rate(rows):
    """The prefix-cache hit rate of one worker with an infinite cache, at the trace's 512-token
    block granularity: the best any routing could do."""
    seen = set()
    hit = total = 0
    for r in rows:
        pre, k = (), 0
        for h in r["hash_ids"]:
            pre += (h,)
            if pre not in seen:
                break
            k += 1
        pre = ()
        for h in r["hash_ids"]:
            pre += (h,)
            seen.add(pre)
        hit += min(k * TRACE_BLOCK_TOKENS, r["input_length"])
        total += r["input_length"]
    return hit / total


# ---------------------------------------------------------------------------------------------
# A small asyncio HTTP/1.1 client for the replay


async def stream_one(host, port, path, body, headers):
    """POSTs `body` and reads the SSE answer. Returns (status, worker, ttft s, end, usage), with
    times from the perf_counter at the call."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n").encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
        buf = bytearray()
        ttft = None
        while True:
            piece = await reader.read(65536)
            if not piece:
                break
            # The first content chunk: the chunk with the first token's delta.
            if ttft is None:
                look_from = max(0, len(buf) - 16)
                buf += piece
                if b'"content"' in buf[look_from:]:
                    ttft = time.perf_counter() - t0
            else:
                buf += piece
        end = time.perf_counter() - t0
    finally:
        writer.close()
    data = dechunk(bytes(buf)) if "chunked" in hdrs.get("transfer-encoding", "") else bytes(buf)
    usage = None
    for line in data.split(b"\n"):
        if line.startswith(b"data: {") and b'"usage"' in line:
            usage = json.loads(line[6:]).get("usage")
    return status, hdrs.get("x-demo-worker"), ttft, end, usage


def dechunk(raw):
    out, i = bytearray(), 0
    while i < len(raw):
        j = raw.index(b"\r\n", i)
        n = int(raw[i:j].split(b";")[0], 16)
        if n == 0:
            break
        out += raw[j + 2: j + 2 + n]
        i = j + 2 + n + 2
    return bytes(out)


async def replay(gateway, eid, requests, speed, policy):
    """Sends every request at its (compressed) time; returns one record per request."""
    u = urllib.parse.urlparse(gateway)
    path = f"/e/{eid}/v1/chat/completions"
    records = [None] * len(requests)

    async def one(i, ts, body, session, ptoks, k, due):
        sent = time.perf_counter()
        headers = {"X-Session-ID": session} if policy == "session_affinity" else {}
        try:
            status, worker, ttft, end, usage = await stream_one(u.hostname, u.port, path, body, headers)
        except Exception as e:  # noqa: BLE001 - a failed request is counted, not fatal
            status, worker, ttft, end, usage = f"error: {e!r}", None, None, time.perf_counter() - sent, None
        records[i] = {"sent": sent, "lag": sent - due, "status": status, "worker": worker, "ttft": ttft,
                      "end": sent + end, "usage": usage, "prompt_tokens": ptoks, "max_tokens": k}

    start = time.perf_counter() + 0.5
    tasks = []
    for i, (ts, body, session, ptoks, k) in enumerate(requests):
        due = start + ts / 1000 / speed
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, ts, body, session, ptoks, k, due)))
    await asyncio.gather(*tasks)
    return records


def in_flight_stats(records, workers):
    """Requests in flight per worker over the replay (as the client saw them: sent to done):
    the time-averaged load of the busiest worker over the mean, and the instantaneous max/mean
    at every arrival while at least one request per worker was in flight."""
    events = []
    for r in records:
        if r["worker"]:
            events.append((r["sent"], 1, r["worker"]))
            events.append((r["end"], -1, r["worker"]))
    events.sort(key=lambda e: (e[0], e[1]))
    load = {w: 0 for w in workers}
    area = {w: 0.0 for w in workers}
    inst = []
    last = events[0][0]
    for t, d, w in events:
        for k in load:
            area[k] += load[k] * (t - last)
        last = t
        load[w] = load.get(w, 0) + d
        if d > 0:
            total = sum(load.values())
            if total >= len(workers):
                inst.append(max(load.values()) / (total / len(workers)))
    avg = [area[w] for w in workers]
    mean = sum(avg) / len(avg)
    return (max(avg) / mean if mean else float("nan")), pct(inst, 0.99), len(inst)


# ---------------------------------------------------------------------------------------------
# A minimal OpenAI-style streaming worker (`--sse-worker`), the control for the streaming
# overhead: asyncio, which sets TCP_NODELAY on its sockets as uvicorn (vLLM, SGLang) does.


def sse_worker():
    import socket  # noqa: PLC0415

    chunk = (b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"demo","choices":'
             b'[{"index":0,"delta":{"content":" x"},"finish_reason":null,"logprobs":null}]}\n\n')
    done = (b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"demo","choices":'
            b'[{"index":0,"delta":{},"finish_reason":"length","logprobs":null}]}\n\ndata: [DONE]\n\n')

    def framed(d):
        return b"%x\r\n%s\r\n" % (len(d), d)

    async def handle(reader, writer):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                body = json.loads(await reader.readexactly(n)) if n else {}
                if not head.startswith(b"POST"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    continue
                # Like the demo engine: the head at once, then one chunk per token.
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                await writer.drain()
                for _ in range(int(body.get("max_tokens") or 1)):
                    await asyncio.sleep(0)
                    writer.write(framed(chunk))
                    await writer.drain()
                writer.write(framed(done) + b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", int(os.environ["PORT"]))
        await server.serve_forever()
    asyncio.run(serve())


# ---------------------------------------------------------------------------------------------
# The platform


class Platform:
    def __init__(self, binary, tmp):
        self.binary = binary
        data = os.path.join(tmp, "data")
        cfg = os.path.join(tmp, "sluice.toml")
        with open(cfg, "w") as f:
            f.write('max_workers_quota = 24\n[[nodes]]\nname = "local"\ndata_center = "local"\n'
                    'gpus = [{ type = "SIM", count = 24 }]\n')
        self.log = open(os.path.join(tmp, "platform.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "up", "--no-demo", "--config", cfg, "--api-addr", "127.0.0.1:0", "--gateway-addr",
             "127.0.0.1:0", "--data-dir", data], stdout=self.log, stderr=self.log)
        addrs = wait("the platform", lambda: os.path.exists(os.path.join(data, "addresses.json"))
                     and json.load(open(os.path.join(data, "addresses.json"))))
        self.api, self.gateway = addrs["api"], addrs["gateway"]
        self.key = wait("the admin key", lambda: os.path.exists(os.path.join(data, "admin.key"))
                        and open(os.path.join(data, "admin.key")).read().strip())

    def call(self, method, path, body=None, timeout=60):
        req = urllib.request.Request(self.api + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self.key}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def endpoint(self, name, policy, workers=WORKERS, command=None, **engine):
        """A fresh endpoint of `workers` demo engines (or `command`s); waits until all are ready
        and routed."""
        env = {k: str(v) for k, v in {**ENGINE, **engine}.items()}
        eid = self.call("POST", "/v1/endpoints", {
            "name": name, "start_command": command or f"exec '{self.binary}' demo-worker", "public": True,
            "active_workers": workers, "max_workers": workers, "concurrency_per_worker": 10_000,
            "load_balancing": policy, "queue_timeout_secs": 600, "execution_timeout_secs": 600,
            "startup_timeout_secs": 120, "env": env})["id"]
        def ready_workers():
            ws = [w for w in self.call("GET", f"/v1/endpoints/{eid}/workers")["workers"] if w["state"] == "ready"]
            return len(ws) == workers and ws
        ready = wait(f"{workers} ready workers of {name}", ready_workers)
        # Routed: tiny prompts (no prompt block, no session: the least loaded, rotating) until
        # every worker has answered through the gateway.
        seen = set()

        def probe():
            who = self.tiny(eid)
            if who is not None:
                seen.add(who)
            return len(seen) == workers
        wait(f"the gateway to route to every worker of {name}", probe, timeout=60)
        return eid, ready

    def tiny(self, eid):
        u = urllib.parse.urlparse(self.gateway)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        c.request("POST", f"/e/{eid}/v1/chat/completions",
                  json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        c.close()
        # The control worker has no x-demo-worker header (it is alone on its endpoint).
        return r.getheader("x-demo-worker", "") if r.status == 200 else None

    def delete(self, eid):
        self.call("DELETE", f"/v1/endpoints/{eid}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def worker_metrics(address):
    """A worker's vLLM counters and gauges, by name."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name.split("{")[0]] = float(value)
    return out


# ---------------------------------------------------------------------------------------------
# The three measurements


def run_policy(p, policy, requests, speed):
    eid, workers = p.endpoint(f"route-{policy.replace('_', '-')}", policy)
    addr = {w["id"]: w["address"] for w in workers}
    loadavg = os.getloadavg()[0]
    before = {w: worker_metrics(a) for w, a in addr.items()}
    records = asyncio.run(replay(p.gateway, eid, requests, speed, policy))
    after = {w: worker_metrics(a) for w, a in addr.items()}
    p.delete(eid)
    ok = [r for r in records if r["status"] == 200 and r["ttft"] is not None and r["usage"]]
    errors = len(records) - len(ok)
    ttft = [r["ttft"] * 1000 for r in ok]
    span = max(r["end"] for r in records) - min(r["sent"] for r in records)
    out_tokens = sum(r["usage"]["completion_tokens"] for r in ok)
    prompt = sum(r["usage"]["prompt_tokens"] for r in ok)
    cached = sum(r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in ok)

    def diff(name):
        return sum(after[w].get(name, 0) - before[w].get(name, 0) for w in addr)
    metric_hit = diff("vllm:prefix_cache_hits_total") / max(1, diff("vllm:prefix_cache_queries_total"))
    counts = [sum(1 for r in ok if r["worker"] == w) for w in addr]
    lb_avg, lb_inst, lb_n = in_flight_stats(ok, list(addr))
    lag = [r["lag"] * 1000 for r in records]
    aborted = diff("demo:aborted_requests_total")
    return {
        "policy": policy, "requests": len(records), "errors": errors, "ttft_p50": statistics.median(ttft),
        "ttft_p90": pct(ttft, 0.90), "ttft_p99": pct(ttft, 0.99), "ttft_mean": statistics.mean(ttft),
        "rps": len(ok) / span, "tok_s": out_tokens / span, "span": span,
        "hit_usage": cached / prompt, "hit_metrics": metric_hit, "counts": counts,
        "count_ratio": max(counts) / statistics.mean(counts), "inflight_ratio": lb_avg,
        "inflight_inst_p99": lb_inst, "inflight_samples": lb_n, "lag_p99": pct(lag, 0.99),
        "lag_max": max(lag), "aborted": aborted,
        "loadavg": loadavg, "error_kinds": sorted({str(r["status"]) for r in records if r not in ok})[:5],
    }


def streaming_overhead(p, reps):
    """openai SDK time to first token, through the gateway and straight to the worker: for the
    demo engine, and for a minimal asyncio SSE worker (the control)."""
    import openai  # noqa: PLC0415 - only this part needs it

    prompt = block_text(7, 1024)

    def ttft(client):
        t0 = time.perf_counter()
        stream = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": prompt}], max_tokens=4, stream=True,
            stream_options={"include_usage": True})
        first = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - t0
        return first * 1000

    out = []
    for worker, command in [("demo engine (`sluice demo-worker`)", None),
                            ("minimal asyncio SSE worker (TCP_NODELAY)",
                             f"exec '{sys.executable}' '{os.path.abspath(__file__)}' --sse-worker")]:
        eid, workers = p.endpoint("sdk-overhead", "round_robin", workers=1, command=command,
                                  DEMO_PREFILL_US_PER_TOKEN=0, DEMO_DECODE_US_PER_TOKEN=0)
        via = openai.OpenAI(base_url=f"{p.gateway}/e/{eid}/v1", api_key="unused", max_retries=0)
        direct = openai.OpenAI(base_url=f"http://{workers[0]['address']}/v1", api_key="unused", max_retries=0)
        for _ in range(20):  # warm both connection pools
            ttft(via), ttft(direct)
        g, d = [], []
        for i in range(reps):
            order = [(via, g), (direct, d)] if i % 2 == 0 else [(direct, d), (via, g)]
            for client, vals in order:
                vals.append(ttft(client))
        p.delete(eid)
        added = [a - b for a, b in zip(g, d)]
        out.append({"worker": worker, "reps": reps, "gw_p50": statistics.median(g), "gw_p99": pct(g, 0.99),
                    "direct_p50": statistics.median(d), "direct_p99": pct(d, 0.99),
                    "added_p50": statistics.median(added), "added_p99": pct(added, 0.99)})
    return out


def decision_cost(p, reps):
    """End-to-end latency of prefix_aware minus round_robin on idle endpoints, by prompt size."""
    quiet = {"DEMO_PREFILL_US_PER_TOKEN": 0, "DEMO_DECODE_US_PER_TOKEN": 0}
    rr, _ = p.endpoint("cost-rr", "round_robin", **quiet)
    pa, _ = p.endpoint("cost-pa", "prefix_aware", **quiet)
    u = urllib.parse.urlparse(p.gateway)
    conns = {e: http.client.HTTPConnection(u.hostname, u.port, timeout=30) for e in (rr, pa)}

    def once(eid, body):
        c = conns[eid]
        t0 = time.perf_counter()
        c.request("POST", f"/e/{eid}/v1/chat/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"decision-cost request failed: {r.status}")
        return (time.perf_counter() - t0) * 1e6

    rows = []
    for size in (1024, 32 * 1024, 256 * 1024):
        # Many conversations' first turns, each its own text, cycled: the prefix choice has real
        # blocks to match against what each worker was sent.
        bodies = [json.dumps({"model": "demo", "max_tokens": 1, "messages": [
            {"role": "user", "content": "".join(block_text(1000 * k + j, 2048) for j in range(size // 2048 + 1))[:size]}
        ]}) for k in range(16)]
        for i in range(20):
            once(rr, bodies[i % 16]), once(pa, bodies[i % 16])
        a, b = [], []
        for i in range(reps):
            body = bodies[i % 16]
            order = [(pa, a), (rr, b)] if i % 2 == 0 else [(rr, b), (pa, a)]
            for eid, out in order:
                out.append(once(eid, body))
        d = [x - y for x, y in zip(a, b)]
        rows.append({"size": size, "pa_p50": statistics.median(a), "pa_p99": pct(a, 0.99),
                     "rr_p50": statistics.median(b), "rr_p99": pct(b, 0.99),
                     "diff_p50": statistics.median(d), "diff_of_p50": statistics.median(a) - statistics.median(b),
                     "diff_of_p99": pct(a, 0.99) - pct(b, 0.99)})
    for c in conns.values():
        c.close()
    p.delete(rr)
    p.delete(pa)
    return rows


# ---------------------------------------------------------------------------------------------
# Report


def report(args, rows, requests, results, overhead, cost):
    engine = ", ".join(f"{k}={v}" for k, v in ENGINE.items())
    span_trace = rows[-1]["timestamp"] / 1000
    in_tokens = sum(r["input_length"] for r in rows)
    capped = sum(1 for r in rows if r["output_length"] > args.max_tokens)
    out = [
        "# LLM-aware routing: the Mooncake conversation trace through Sluice (issue 19)",
        "",
        f"Command: `{args.command}`",
        "",
        f"- Trace slice: the first {args.minutes:g} minutes of `mooncake_conversation.jsonl` "
        f"({len(rows)} requests, arrivals over {span_trace:.0f} s, {in_tokens / len(rows):,.0f} prompt tokens "
        f"on average), replayed open loop {args.speed:g}x faster ({span_trace / args.speed:.0f} s, "
        f"{len(rows) / (span_trace / args.speed):.1f} requests/s on average).",
        f"- Output: max_tokens = min(output_length, {args.max_tokens}) ({capped} of {len(rows)} requests capped).",
        f"- Engine (each of {WORKERS} `sluice demo-worker`s): {engine}. Prefill one prompt at a time per worker; "
        f"an uncached 7,000-token prompt prefills in {7000 * ENGINE['DEMO_PREFILL_US_PER_TOKEN'] / 1000:.0f} ms. "
        f"Offered prefill work if nothing were cached: "
        f"{in_tokens * ENGINE['DEMO_PREFILL_US_PER_TOKEN'] / 1e6 / (span_trace / args.speed) / WORKERS:.2f} "
        f"of the {WORKERS} workers' prefill time.",
        "- Prompts: trace block id `i` is the text `b{i:08d} ` repeated to 512 tokens x "
        f"{BPT} bytes; a prompt is its blocks in order, cut to its input length, as one user message.",
        "- session_affinity's key (X-Session-ID): hash_ids[1] (the first conversation-specific block; "
        "hash_ids[0] is block 0 in every request), hash_ids[0] for one-block prompts "
        f"({sum(1 for r in rows if len(r['hash_ids']) == 1)} in this slice); the trace has no session ids.",
        f"- Best possible prefix-cache hit rate (one worker, unbounded cache, 512-token blocks): "
        f"{ideal_hit_rate(rows):.1%}.",
        "- Endpoints: 4 workers, concurrency_per_worker 10000 (never the limit), one fresh endpoint per "
        "policy (cold caches), policies run one after another. Client: asyncio, one connection per request.",
        "- Machine: 2 CPU cores share the platform, the 4 workers and the client; "
        "per policy, how late requests left the client (send lag) and the 1-minute load average "
        "before its replay are in the last columns.",
        "",
        "| policy | requests (errors) | TTFT p50 ms | TTFT p90 ms | TTFT p99 ms | TTFT mean ms | requests/s | "
        "output tokens/s | prefix-cache hit (usage / metrics) | requests per worker | max/mean requests | "
        "max/mean in flight (time avg) | max/mean in flight, p99 at arrivals | send lag p99 ms | load avg before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        out.append(
            f"| {r['policy']} | {r['requests']} ({r['errors']}) | {r['ttft_p50']:.0f} | {r['ttft_p90']:.0f} | "
            f"{r['ttft_p99']:.0f} | {r['ttft_mean']:.0f} | {r['rps']:.1f} | {r['tok_s']:.0f} | "
            f"{r['hit_usage']:.1%} / {r['hit_metrics']:.1%} | {' '.join(map(str, sorted(r['counts'])))} | "
            f"{r['count_ratio']:.2f} | {r['inflight_ratio']:.2f} | {r['inflight_inst_p99']:.2f} | {r['lag_p99']:.1f} | {r['loadavg']:.1f} |")
    by = {r["policy"]: r for r in results}
    if "round_robin" in by and "prefix_aware" in by:
        rr, pa = by["round_robin"], by["prefix_aware"]
        ratio = pa["ttft_p50"] / rr["ttft_p50"]
        load = max(pa["count_ratio"], pa["inflight_ratio"])
        met = ratio <= 0.5 and load <= 1.3
        out += ["", f"Target (prefix_aware TTFT p50 at most half of round_robin's, max/mean load <= 1.3): "
                f"TTFT p50 {pa['ttft_p50']:.0f} / {rr['ttft_p50']:.0f} ms = **{ratio:.2f}** of round robin's, "
                f"max/mean load {pa['count_ratio']:.2f} (requests) and {pa['inflight_ratio']:.2f} (in flight, "
                f"time-averaged): **{'met' if met else 'not met'}**."]
    if overhead:
        out += ["", "Time to first token with the openai SDK (streaming, 1 KB prompt, max_tokens 4, one worker "
                "with no prefill or decode time, one keep-alive connection per path), through the gateway and "
                f"straight to the worker, {overhead[0]['reps']} each, interleaved:", "",
                "| worker | straight, p50 / p99 ms | through the gateway, p50 / p99 ms | "
                "added (pairwise), p50 / p99 ms |", "|---|---:|---:|---:|"]
        for o in overhead:
            out.append(f"| {o['worker']} | {o['direct_p50']:.2f} / {o['direct_p99']:.2f} | {o['gw_p50']:.2f} / "
                       f"{o['gw_p99']:.2f} | **{o['added_p50']:.2f}** / {o['added_p99']:.2f} |")
        out += ["", "Target: at most 1 ms added: " + "; ".join(
            f"{o['worker']}: **{'met' if o['added_p50'] <= 1.0 else 'not met'}** at the median" for o in overhead)
            + "."]
    if cost:
        out += ["", "The routing decision's cost, end to end: one request at a time on idle 4-worker endpoints "
                "(no prefill or decode time, max_tokens 1, not streamed, one keep-alive connection each), "
                "prefix_aware against round_robin, interleaved, 16 different prompts cycled. It is the whole "
                "difference in request latency (the bounded look at the body, the hashing, the choice, "
                f"remembering the blocks) plus noise, not the choice alone; {args.cost_reps} requests each:", "",
                "| prompt | round_robin p50 / p99 us | prefix_aware p50 / p99 us | difference p50 (pairwise) us | "
                "difference of p99s us |", "|---|---:|---:|---:|---:|"]
        for c in cost:
            out.append(f"| {c['size'] // 1024} KB | {c['rr_p50']:.0f} / {c['rr_p99']:.0f} | "
                       f"{c['pa_p50']:.0f} / {c['pa_p99']:.0f} | **{c['diff_p50']:.0f}** | {c['diff_of_p99']:.0f} |")
    return "\n".join(out) + "\n"


def main():
    if sys.argv[1:] == ["--sse-worker"]:
        return sse_worker()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20, help="trace slice: its first MINUTES (default 20)")
    ap.add_argument("--speed", type=float, default=8, help="time compression (default 8)")
    ap.add_argument("--max-tokens", type=int, default=32, help="output cap (default 32)")
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated (default: all four)")
    ap.add_argument("--sdk-reps", type=int, default=500, help="openai SDK TTFT pairs (default 500; 0 skips)")
    ap.add_argument("--cost-reps", type=int, default=300, help="decision-cost pairs per size (default 300; 0 skips)")
    ap.add_argument("--out", default=RESULTS, help="where the Markdown goes (default bench/results/llm_routing.md)")
    args = ap.parse_args()
    args.command = "SLUICE_BIN=target/release/sluice target/pyenv/bin/python bench/llm_routing.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in
        [("minutes", args.minutes), ("speed", args.speed), ("max_tokens", args.max_tokens),
         ("policies", args.policies), ("sdk_reps", args.sdk_reps), ("cost_reps", args.cost_reps), ("out", args.out)]
        if v != ap.get_default(k))
    binary = os.path.abspath(os.environ.get("SLUICE_BIN") or os.path.join(ROOT, "target/release/sluice"))
    if not os.environ.get("SLUICE_BIN"):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "sluice"], cwd=ROOT, check=True)

    rows = load_trace(args.minutes)
    requests = build_requests(rows, args.max_tokens)
    tmp = tempfile.mkdtemp(prefix="sluice-llm-routing-")
    p = Platform(binary, tmp)
    results, overhead, cost = [], None, None
    try:
        for policy in filter(None, args.policies.split(",")):
            t = time.time()
            results.append(run_policy(p, policy, requests, args.speed))
            r = results[-1]
            print(f"{policy}: {time.time() - t:.0f} s, TTFT p50 {r['ttft_p50']:.0f} ms p99 {r['ttft_p99']:.0f} ms, "
                  f"hit {r['hit_usage']:.1%}, per worker {r['counts']}, errors {r['errors']} {r['error_kinds']}, "
                  f"aborted {r['aborted']:.0f}", flush=True)
        if args.sdk_reps:
            overhead = streaming_overhead(p, args.sdk_reps)
        if args.cost_reps:
            cost = decision_cost(p, args.cost_reps)
    finally:
        p.stop()
    text = report(args, rows, requests, results, overhead, cost)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    print(f"(platform log: {tmp}/platform.log)")


if __name__ == "__main__":
    main()
