#!/usr/bin/env python3
"""A GPU worker for Sluice's process runtime (issue 17, sleeping workers; run by bench/gpu.sh).

Listens on 127.0.0.1:$PORT at once, then builds a random-init Llama (hidden 4096,
GPU_WORKER_LAYERS layers, default 16: 3.5 B parameters, 7 GB in bf16; nothing downloaded) on the
GPU it was given, timing each phase. Without torch, transformers or CUDA: a fake model
(GPU_WORKER_FAKE_LOAD_S to load, _FAKE_WAKE_S per sleep or wake, _FAKE_TOKEN_S per token).

  GET  /health           200 {"state": "ready"|"asleep"} once loaded (asleep too, as vLLM does)
  GET  /info             phase timings, CUDA devices and memory, sleep and wake figures
  POST /generate         {"prompt_tokens": N, "max_tokens": M}: greedy tokens as server-sent
                         events, `data: {"token": id, "i": k}`; 503 while asleep
  POST /sleep?level=1    weights to (pinned) host memory, cache emptied; idempotent
  POST /wake_up          weights back to the GPU; idempotent
GPU_WORKER_BUILD_ON=cpu builds on the host and then moves the weights (a to_gpu phase).
"""
import json
import os
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

T0 = time.time()
env = os.environ.get
PHASES = {}  # phase -> seconds, in the order they ran
INFO = {"model": None, "state": "loading", "error": None, "sleeps": [], "wakes": []}
LOCK = threading.Condition()  # guards state, the in-flight count and the weights' place
INFLIGHT = [0]
M = {}  # torch, model, vocab, pinned host copies


def phase(name, fn):
    t = time.time()
    out = fn()
    PHASES[name] = round(time.time() - t, 4)
    print(f"phase {name}: {PHASES[name]:.3f} s", flush=True)
    return out


def fake(why):
    INFO["model"] = f"fake ({why})"
    phase("build", lambda: time.sleep(float(env("GPU_WORKER_FAKE_LOAD_S", "2"))))


def load():
    try:
        torch = phase("import_torch", lambda: __import__("torch"))
    except ImportError:
        return fake("no torch")
    if not torch.cuda.is_available():
        return fake("no CUDA")
    try:  # transformers imports lazily: the classes themselves are what take time
        LlamaConfig, LlamaForCausalLM = phase("import_transformers", lambda: (
            __import__("transformers").LlamaConfig, __import__("transformers").LlamaForCausalLM))
    except ImportError:
        return fake("no transformers")
    M["torch"] = torch
    phase("cuda_init", lambda: (torch.cuda.init(), torch.empty(1, device="cuda"), torch.cuda.synchronize()))
    layers = int(env("GPU_WORKER_LAYERS", "16"))
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                      max_position_embeddings=4096)
    build_on = env("GPU_WORKER_BUILD_ON", "cuda")

    def build():
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(build_on):
            model = LlamaForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
        torch.cuda.synchronize()
        return model

    model = phase("build", build)
    if build_on != "cuda":
        phase("to_gpu", lambda: (model.to("cuda"), torch.cuda.synchronize()))
    M.update(model=model, vocab=cfg.vocab_size)
    n = sum(p.numel() for p in model.parameters())
    INFO.update(model=f"llama random init, {layers} layers", params=n,
                weight_bytes=sum(p.numel() * p.element_size() for p in model.parameters()))
    phase("warmup", lambda: list(generate(16, 8)))


def generate(prompt_tokens, max_tokens):
    """Yields greedy token ids: one prefill, then one decode step per token with the KV cache."""
    torch = M.get("torch")
    if torch is None:
        for i in range(max_tokens):
            time.sleep(float(env("GPU_WORKER_FAKE_TOKEN_S", "0.005")))
            yield (prompt_tokens * 31 + i * 7) % 32000
        return
    with torch.inference_mode():
        ids = torch.randint(0, M["vocab"], (1, max(1, prompt_tokens)), device="cuda")
        past = None
        for _ in range(max_tokens):
            out = M["model"](input_ids=ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            ids = out.logits[:, -1:].argmax(-1)
            yield int(ids.item())


def gpu_memory():
    torch = M.get("torch")
    if torch is None:
        return {}
    free, total = torch.cuda.mem_get_info()
    return {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved(),
            "device_used": total - free, "device_total": total}


def move(to_gpu):
    """Every parameter and buffer to the GPU, or into pinned host buffers kept for the next sleep."""
    torch = M["torch"]
    host = M.setdefault("host", {})
    pin = env("GPU_WORKER_PIN", "1") == "1"
    tensors = list(M["model"].named_parameters()) + list(M["model"].named_buffers())
    for name, t in tensors:
        if to_gpu:
            t.data = t.data.to("cuda", non_blocking=True)
        else:
            if name not in host:
                host[name] = torch.empty(t.shape, dtype=t.dtype, pin_memory=pin)
            host[name].copy_(t.data, non_blocking=True)
            t.data = host[name]
    torch.cuda.synchronize()
    if not to_gpu:
        torch.cuda.empty_cache()


def set_sleep(asleep, level=1):
    with LOCK:
        LOCK.wait_for(lambda: INFO["state"] not in ("sleeping", "waking"), timeout=120)
        if INFO["state"] not in ("ready", "asleep"):
            return 503, {"error": f"not loaded ({INFO['state']})"}
        if (INFO["state"] == "asleep") == asleep:
            return 200, {"state": INFO["state"], "changed": False}
        INFO["state"] = "sleeping" if asleep else "waking"  # refuses new generations meanwhile
        LOCK.wait_for(lambda: INFLIGHT[0] == 0, timeout=120)
    before = gpu_memory()
    t = time.time()
    if "torch" in M:
        move(to_gpu=not asleep)
    else:
        time.sleep(float(env("GPU_WORKER_FAKE_WAKE_S", "0.3")))
    rec = {"seconds": round(time.time() - t, 4), "at": round(t, 3), "memory_before": before,
           "memory_after": gpu_memory()}
    if asleep:
        rec["level"] = level
    with LOCK:
        INFO["state"] = "asleep" if asleep else "ready"
        INFO["sleeps" if asleep else "wakes"].append(rec)
        LOCK.notify_all()
    print(f"{'slept' if asleep else 'woke'} in {rec['seconds']:.3f} s", flush=True)
    return 200, dict(rec, state=INFO["state"], changed=True)


def info():
    torch = M.get("torch")
    out = {"worker_id": env("SLUICE_WORKER_ID"), "pid": os.getpid(), "started_at": round(T0, 3),
           "phases": PHASES, "cuda_visible_devices": env("CUDA_VISIBLE_DEVICES"),
           "asleep": INFO["state"] == "asleep", "memory": gpu_memory(), **INFO}
    if torch is not None:
        n = torch.cuda.device_count()
        out.update(torch=torch.__version__, device_count=n,
                   device_names=[torch.cuda.get_device_name(i) for i in range(n)])
    else:
        out.update(device_count=None, device_names=[])
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the load test sends many requests
        pass

    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers.get("content-length") or 0))
        return json.loads(data or b"{}")

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/health":
            # Going to sleep counts as asleep; loading and waking are not ready yet.
            code = 200 if INFO["state"] in ("ready", "asleep", "sleeping") else 503
            self.send(code, {"state": INFO["state"], "error": INFO["error"]})
        elif path == "/info":
            self.send(200, info())
        else:
            self.send(404, {"error": "not found"})

    def do_POST(self):
        url = urlsplit(self.path)
        if url.path == "/sleep":
            level = int(parse_qs(url.query).get("level", ["1"])[0])
            self.body()
            self.send(*set_sleep(True, level))
        elif url.path == "/wake_up":
            self.body()
            self.send(*set_sleep(False))
        elif url.path == "/generate":
            self.stream(self.body())
        else:
            self.send(404, {"error": "not found"})

    def stream(self, req):
        with LOCK:
            if INFO["state"] != "ready":
                return self.send(503, {"error": f"worker is {INFO['state']}"})
            INFLIGHT[0] += 1
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            tokens = generate(int(req.get("prompt_tokens", 128)), int(req.get("max_tokens", 256)))
            for i, tok in enumerate(tokens):
                data = f"data: {json.dumps({'token': tok, 'i': i})}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with LOCK:
                INFLIGHT[0] -= 1
                LOCK.notify_all()


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(env("PORT", "8000"))), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    INFO["listening_after_s"] = round(time.time() - T0, 4)
    print(f"listening on 127.0.0.1:{server.server_port} after {time.time() - T0:.3f} s; "
          f"CUDA_VISIBLE_DEVICES={env('CUDA_VISIBLE_DEVICES')}", flush=True)
    try:
        load()
    except Exception:
        traceback.print_exc()
        INFO.update(state="failed", error=traceback.format_exc(limit=1))
        sys.exit(1)
    PHASES["total"] = round(time.time() - T0, 4)
    INFO["state"] = "ready"
    print(f"ready after {PHASES['total']:.3f} s: {INFO['model']}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
