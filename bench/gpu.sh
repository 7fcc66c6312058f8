#!/usr/bin/env bash
# Sluice on a real GPU, with a sleeping worker (issue 17). One run of a few minutes measures:
#   a. the GPU inventory `sluice up` finds (`sluice gpus --json`: source nvml or declared, type);
#   b-c. a cold start of bench/gpu_worker.py (a random-init Llama of ~7 GB in bf16 on one GPU):
#        create-to-ready wall time, the platform's phases (placed, image, started, healthy) and the
#        worker's own (import torch, CUDA init, build, move to GPU, warm-up);
#   d. CUDA confinement: the worker sees exactly the GPU the platform gave it;
#   e. a streamed generation through the gateway (time to first token, tokens/s), then 8 parallel
#      generation loops for ~20 s while sampling nvidia-smi and the platform's
#      sluice_gpu_utilization gauge (GET /metrics) every second;
#   f. sleep and wake: scaled to zero the worker sleeps (weights in host memory) instead of
#      stopping; GPU memory awake vs asleep, then the latency of one request that wakes it, 5 times;
#   g. a clean stop (SIGINT), and a summary.
# Everything lands in $OUT (results.json, summary.md, samples.csv, metrics.txt, logs.txt: within
# the device tool's 8 files); without $OUT, in a new temporary folder.
#
# Usage: bash bench/gpu.sh [SLUICE_BIN]   (default $SLUICE_BIN, else target/release/sluice)
# The binary should be built with `cargo build --release --features nvml`: with the driver present
# `sluice up` then uses the real GPUs and names their type (an H200 is its own type, "H200").
# Without NVML or CUDA (a build without the feature, or this 2-core machine) the same steps run on
# the declared simulated GPUs (type SIM) with the worker's fake model, and nvidia-smi is skipped.
# On the device machine (the tool copies the working tree and runs one command at its root; name
# the binary in `carry` since target/ is ignored), e.g.:
#   run(command="timeout -k 10 540 bash bench/gpu.sh target/release/sluice", carry=["target/release/sluice"], timeout_s=580)
# Knobs: GPU_BENCH_BUDGET_S (450: every wait is cut to fit), GPU_BENCH_LOAD_S (20),
# GPU_BENCH_PARALLEL (8), GPU_BENCH_LOAD_TOKENS (64), GPU_BENCH_CYCLES (5), GPU_BENCH_NO_SLEEP=1
# (omit the sleep fields: a build without issue 17, which then scales to zero by stopping), and the
# worker's GPU_WORKER_* (LAYERS, BUILD_ON, PIN, FAKE_LOAD_S, FAKE_WAKE_S, FAKE_TOKEN_S), passed on.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${1:-${SLUICE_BIN:-target/release/sluice}}
[ -x "$BIN" ] || { echo "no sluice binary at $BIN (cargo build --release --features nvml)" >&2; exit 2; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
OUT=${OUT:-$(mktemp -d /tmp/sluice-gpu-out.XXXXXX)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/sluice-gpu.XXXXXX)
R=$WORK/r # one JSON file per result, assembled at the end
mkdir -p "$R"
PY=$(command -v python3)
DEADLINE=$((SECONDS + ${GPU_BENCH_BUDGET_S:-450}))
LOAD_S=${GPU_BENCH_LOAD_S:-20}
PAR=${GPU_BENCH_PARALLEL:-8}
CYCLES=${GPU_BENCH_CYCLES:-5}
SMI=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && SMI=1
SLUICE_PID="" SAMPLER="" LOADERS="" ID="" GPU_IDX=0 API="" GW="" KEY="" WPID=""

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
left() { echo $((DEADLINE - SECONDS)); }
# at_most N: N seconds, or what is left of the budget (at least 1)
at_most() { local l; l=$(left); [ "$l" -lt "$1" ] && { [ "$l" -lt 1 ] && echo 1 || echo "$l"; } || echo "$1"; }
say() { echo "[$(date +%T)] $*" | tee -a "$WORK/steps.log"; }
fail() { say "FAILED: $*"; printf '%s' "$*" | "$PY" -c 'import json,sys;print(json.dumps(sys.stdin.read()))' >"$R/error.json"; exit 1; }
# pj EXPR: evaluates EXPR on the JSON document on stdin (as d); strings print bare
pj() { "$PY" -c 'import json,sys
d=json.load(sys.stdin); v=eval(sys.argv[1])
print(v if isinstance(v,str) else json.dumps(v))' "$1"; }
api() { curl -sS --max-time 30 -H "Authorization: Bearer $KEY" -H 'content-type: application/json' "$@"; }
workers() { api "$API/v1/endpoints/$ID/workers"; }
smi() { [ "$SMI" = 1 ] && nvidia-smi -i "$GPU_IDX" --query-gpu="$1" --format=csv,noheader,nounits 2>/dev/null | head -1 | tr -d ' ' || true; }
# wait_worker WANT TIMEOUT: polls until the endpoint's worker is in state WANT; sets WV (its view,
# as JSON) and WSTATE; returns 1 on timeout, or when no live or sleeping worker is left (WSTATE=gone)
wait_worker() {
    local want=$1 end=$((SECONDS + $(at_most "$2"))) out
    while [ $SECONDS -lt $end ]; do
        out=$(workers 2>/dev/null | "$PY" -c '
import json,sys
ws=json.load(sys.stdin)["workers"]; want=sys.argv[1]
hit=[w for w in ws if w["state"]==want]
live=[w for w in ws if w["state"] in ("pending","starting","ready","draining","sleeping")]
failed=[w for w in ws if w["state"]=="failed"]
if hit: print(want, json.dumps(hit[0]))
elif failed and not live: print("failed", json.dumps(failed[-1]))
elif not live and want=="sleeping": print("gone", json.dumps(ws[-1] if ws else {}))
else: print("wait {}")' "$want") || out="wait {}"
        WSTATE=${out%% *} WV=${out#* }
        [ "$WSTATE" = "$want" ] && return 0
        [ "$WSTATE" = failed ] && fail "the worker failed: $(echo "$WV" | pj 'd.get("reason")')"
        [ "$WSTATE" = gone ] && return 1
        sleep 0.2
    done
    WSTATE=timeout
    return 1
}

# The summary table (stdout and $OUT/summary.md) and every result in $OUT/results.json.
summarize() {
    "$PY" - "$R" "$WORK/samples.csv" "$OUT" "$BIN" "$SMI" <<'EOF'
import csv, datetime, glob, json, os, statistics, sys
rdir, samples, out, binary, smi = sys.argv[1:6]
r = {}
for f in sorted(glob.glob(f"{rdir}/*.json")):
    try:
        r[os.path.basename(f)[:-5]] = json.load(open(f))
    except ValueError:
        print(f"unreadable: {f} ({open(f).read()[:200]!r})", file=sys.stderr)
rows = []
try:
    rows = list(csv.DictReader(open(samples)))
except OSError:
    pass


def ts(v):  # an RFC 3339 time, or Unix seconds or milliseconds
    if isinstance(v, (int, float)):
        return v / 1000 if v > 1e11 else v
    return datetime.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()


def last(phases, name, before=None):
    hits = [ts(p["at"]) for p in phases or [] if p.get("phase") == name and (before is None or ts(p["at"]) <= before)]
    return hits[-1] if hits else None


def stats(xs, unit="", nd=1):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    return f"min {min(xs):.{nd}f}{unit}, avg {statistics.mean(xs):.{nd}f}{unit}, max {max(xs):.{nd}f}{unit} ({len(xs)} samples)"


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


fmt = lambda v, nd=2, unit=" s": "n/a" if v is None else f"{v:.{nd}f}{unit}"
gpus, cold, w, info = r.get("gpus", {}), r.get("cold", {}), r.get("worker", {}), r.get("info", {})
lines = ["# Sluice on a GPU: cold start, streaming, sleep and wake (issue 17)", "",
         f"{datetime.datetime.now().isoformat(timespec='seconds')} on {os.uname().nodename}; binary {binary}; "
         f"nvidia-smi {'yes' if smi == '1' else 'no'}; endpoint mode {cold.get('mode', '?')}", "",
         "| measure | value |", "| --- | --- |"]
add = lambda k, v: lines.append(f"| {k} | {v} |")
if "error" in r:
    add("FAILED", str(r["error"]).replace("|", "/").replace("\n", " "))
types = sorted({g["type"] for n in gpus.get("nodes", []) for g in n["gpus"]})
add("GPU inventory", f"source {gpus.get('source', '?')}, {sum(len(n['gpus']) for n in gpus.get('nodes', []))} GPUs, types {', '.join(types) or '?'}")
if info:
    add("devices the worker saw", ", ".join(info.get("device_names") or []) or "none (no CUDA: fake model)")
    size = f"; {info['params'] / 1e9:.2f} B params, {info['weight_bytes'] / 2**30:.2f} GiB" if info.get("params") else ""
    add("model", f"{info.get('model')}{size}")
if cold:
    add("cold start, create to ready (polled)", fmt(cold.get("create_to_ready_s")))
if w.get("phases"):
    t, parts = ts(w["created_at"]), []
    for label, name in (("placement", "placed"), ("image", "image"), ("start", "started"), ("load", "healthy")):
        at = last(w["phases"], name)
        if at is not None:
            parts.append(f"{label} {at - t:.2f} s")
            t = at
    if cold.get("t_ready"):
        parts.append(f"healthy to seen ready {cold['t_ready'] - t:.2f} s")
    add("cold start, platform phases", ", ".join(parts))
elif w:
    add("cold start, platform phases", "absent (no `phases` in the worker view)")
ph = info.get("phases", {})
if info:
    add("cold start, worker phases", f"listening {fmt(info.get('listening_after_s'), 3)}; " + ", ".join(f"{k} {v:.2f} s" for k, v in ph.items()))
    add("model build / move to GPU", f"{fmt(ph.get('build'))} / {fmt(ph.get('to_gpu')) if 'to_gpu' in ph else 'built on the GPU'}")
c = r.get("confinement")
if c:
    add("CUDA confinement", f"{'ok' if c.get('ok') else 'WRONG'}: given GPU {c.get('given')}, CUDA_VISIBLE_DEVICES {c.get('cuda_visible_devices')}, device_count {c.get('device_count')}")
s = r.get("stream")
if s:
    add("stream: time to first token", fmt(s.get("ttft_s"), 3))
    add("stream: tokens/s (decode; overall)", f"{fmt(s.get('decode_tokens_per_s'), 1, '')}; {fmt(s.get('tokens_per_s'), 1, '')} ({s.get('tokens')} tokens)")
ld = r.get("load")
if ld:
    add(f"parallel load ({ld.get('parallel')} loops, {ld.get('seconds')} s)", f"{ld.get('ok')}/{ld.get('requests')} requests 200 (statuses {ld.get('statuses')}), {ld.get('tokens_per_s')} tokens/s in all")
if rows:
    add("GPU utilization, nvidia-smi (%)", stats([num(x.get("gpu_util_pct")) for x in rows]))
    add("GPU utilization, sluice_gpu_utilization", stats([num(x.get("sluice_gpu_utilization")) for x in rows], nd=2) if any(x.get("sluice_gpu_utilization") for x in rows) else "absent from /metrics")
cy = r.get("cycles", [])
if cy:
    asleep = [x["gpu_mem_asleep_mib"] for x in cy if x.get("gpu_mem_asleep_mib") is not None]
    add("GPU memory awake / asleep (nvidia-smi)", f"{r.get('memory', {}).get('awake_mib') or 'n/a'} MiB / {statistics.median(asleep) if asleep else 'n/a'} MiB")
    sl = [x["worker_sleep"] for x in cy if x.get("worker_sleep")]
    if sl and sl[0].get("memory_before"):
        mb = lambda m: f"{m.get('allocated', 0) / 2**20:.0f} MiB allocated, {m.get('device_used', 0) / 2**20:.0f} MiB used on the device"
        add("worker's memory before / after sleeping", f"{mb(sl[0]['memory_before'])} / {mb(sl[0]['memory_after'])}")
    add("worker's own sleep / wake (s)", f"{[x['seconds'] for x in sl]} / {[x['worker_wake']['seconds'] for x in cy if x.get('worker_wake')]}")
    add("states before each wake", ", ".join(x["state_before"] for x in cy) or "n/a")
    pids = sorted({x.get("worker_pid") for x in cy} | {info.get("pid")})
    add("worker process", f"one throughout (pid {pids[0]}): woken, not restarted" if len(pids) == 1 else f"pids {pids}: restarted")
    lat = [x["request_s"] for x in cy if x.get("status") == 200]
    add("one request after scale to zero (wakes a sleeper)", f"p50 {statistics.median(lat):.3f} s, max {max(lat):.3f} s, all {[round(x, 3) for x in lat]}" if lat else "n/a")
    add("statuses / x-sluice-wait", f"{[x.get('status') for x in cy]} / {[x.get('x_sluice_wait') for x in cy]}")
    wk = []
    for x in cy:
        called, woke = last(x.get("phases"), "wake_called"), last(x.get("phases"), "woke")
        healthy = last(x.get("phases"), "healthy")
        if called and woke:
            wk.append(f"{woke - called:.2f}+{(healthy or woke) - woke:.2f}")
    add("platform wake phases (call to woke + woke to healthy, s)", ", ".join(wk) or "absent")
    add("seconds from idle to asleep", str([round(x["seconds_to_sleep"], 1) for x in cy]))
st, lo = r.get("stop", {}), r.get("leftover", {})
add("stop (SIGINT)", f"{'clean' if st.get('clean') else 'NOT clean'} in {st.get('seconds')} s, exit {st.get('exit')}; worker alive after: {lo.get('alive_after_stop')}")
text = "\n".join(lines) + "\n"
open(f"{out}/summary.md", "w").write(text)
json.dump(r, open(f"{out}/results.json", "w"), indent=1)
print(text)
EOF
}

finish() {
    local rc=$? t
    set +e
    trap - EXIT INT TERM
    touch "$WORK/stop"
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
    for p in $LOADERS; do kill "$p" 2>/dev/null; done
    if [ -n "$SLUICE_PID" ] && kill -0 "$SLUICE_PID" 2>/dev/null; then
        [ -n "$API" ] && api "$API/metrics" >"$WORK/metrics.final" 2>/dev/null
        [ -n "$ID" ] && api "$API/v1/endpoints/$ID/events?limit=200" >"$R/events.json" 2>/dev/null
        say "g. stopping sluice (SIGINT)"
        t=$(now)
        kill -INT "$SLUICE_PID" 2>/dev/null
        for _ in $(seq 600); do kill -0 "$SLUICE_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$SLUICE_PID" 2>/dev/null; then
            echo '{"clean": false}' >"$R/stop.json"; kill -KILL "$SLUICE_PID"
        else
            wait "$SLUICE_PID"
            echo "{\"clean\": true, \"exit\": $?, \"seconds\": $(sub "$t" "$(now)")}" >"$R/stop.json"
        fi
    fi
    # The worker's process outliving the platform's clean stop would be a bug.
    [ -n "$WPID" ] && echo "{\"worker_pid\": $WPID, \"alive_after_stop\": $(kill -0 "$WPID" 2>/dev/null && echo true || echo false)}" >"$R/leftover.json"
    {
        echo "== steps"; cat "$WORK/steps.log"
        echo "== sluice up stdout"; tail -n 50 "$WORK/up.out"
        echo "== sluice up stderr (last 200 lines)"; tail -n 200 "$WORK/up.err"
        for f in "$WORK"/data/logs/*/*.log; do [ -f "$f" ] && { echo "== $f (last 100 lines)"; tail -n 100 "$f"; }; done
    } >"$OUT/logs.txt" 2>/dev/null
    [ -f "$WORK/samples.csv" ] && cp "$WORK/samples.csv" "$OUT/samples.csv"
    { cat "$WORK/metrics.samples" 2>/dev/null; echo "== final scrape"; cat "$WORK/metrics.final" 2>/dev/null; } >"$OUT/metrics.txt"
    summarize || echo "the summary failed" >&2
    echo "results in $OUT"
    rm -rf "$WORK"
    exit "$rc"
}
trap finish EXIT
trap 'exit 143' INT TERM

# a. The platform, and the GPUs it found.
say "a. sluice up ($BIN); nvidia-smi: $([ $SMI = 1 ] && echo yes || echo no)"
RUST_LOG=${RUST_LOG:-warn} "$BIN" up --no-demo --data-dir "$WORK/data" --api-addr 127.0.0.1:0 \
    --gateway-addr 127.0.0.1:0 >"$WORK/up.out" 2>"$WORK/up.err" &
SLUICE_PID=$!
for _ in $(seq 300); do [ -s "$WORK/data/addresses.json" ] && break; kill -0 $SLUICE_PID || fail "sluice up exited"; sleep 0.1; done
sleep 0.2
API=$(pj 'd["api"]' <"$WORK/data/addresses.json")
GW=$(pj 'd["gateway"]' <"$WORK/data/addresses.json")
KEY=$(cat "$WORK/data/admin.key")
"$BIN" gpus --json --api "$API" --api-key "$KEY" >"$R/gpus.json" || fail "sluice gpus"
SOURCE=$(pj 'd["source"]' <"$R/gpus.json")
GPU_TYPE=$(pj 'd["nodes"][0]["gpus"][0]["type"]' <"$R/gpus.json")
say "   source $SOURCE, $(pj 'sum(len(n["gpus"]) for n in d["nodes"])' <"$R/gpus.json") GPUs, first of type $GPU_TYPE"

# b. The endpoint, and its cold start.
BODY=$("$PY" - "$GPU_TYPE" "exec '$PY' '$ROOT/bench/gpu_worker.py'" <<'EOF'
import json, os, sys
env = {"PYTHONUNBUFFERED": "1"}
for k in ("GPU_WORKER_LAYERS", "GPU_WORKER_BUILD_ON", "GPU_WORKER_PIN", "GPU_WORKER_FAKE_LOAD_S",
          "GPU_WORKER_FAKE_WAKE_S", "GPU_WORKER_FAKE_TOKEN_S", "PYTHONPATH", "LD_LIBRARY_PATH"):
    if os.environ.get(k):
        env[k] = os.environ[k]  # the process runtime passes only PATH, HOME and a few more
body = {"name": "gpu-bench", "start_command": sys.argv[2], "health_check_path": "/health",
        "gpu_type": sys.argv[1], "gpus_per_worker": 1, "active_workers": 1, "max_workers": 1,
        "startup_timeout_secs": 600, "public": True, "env": env}
if os.environ.get("GPU_BENCH_NO_SLEEP") != "1":
    body.update(sleep_path="/sleep?level=1", wake_path="/wake_up", max_sleeping=1, sleep_ttl_secs=3600)
print(json.dumps(body))
EOF
)
say "b. creating the endpoint (gpu_type $GPU_TYPE)"
T_CREATE=$(now)
CODE=$(api -o "$WORK/created.json" -w '%{http_code}' -X POST -d "$BODY" "$API/v1/endpoints") || true
case "$CODE" in 2??) ;; *) fail "POST /v1/endpoints answered $CODE: $(cat "$WORK/created.json") (a build without issue 17's sleep fields? GPU_BENCH_NO_SLEEP=1 omits them)" ;; esac
ID=$(pj 'd["id"]' <"$WORK/created.json")
wait_worker ready 600 || fail "no worker ready within $(at_most 600) s ($WSTATE)"
T_READY=$(now)
WID=$(echo "$WV" | pj 'd["id"]')
GPU_IDX=$(echo "$WV" | pj 'd["gpus"][0]')
say "   worker $WID ready on GPU $GPU_IDX after $(sub "$T_CREATE" "$T_READY") s"
echo "{\"t_create\": $T_CREATE, \"t_ready\": $T_READY, \"create_to_ready_s\": $(sub "$T_CREATE" "$T_READY"), \"mode\": \"$([ "${GPU_BENCH_NO_SLEEP:-}" = 1 ] && echo no-sleep || echo sleep)\"}" >"$R/cold.json"

# c. The platform's view of the worker, and the worker's own.
echo "$WV" >"$R/worker.json"
curl -sS --max-time 30 "$GW/e/$ID/info" >"$R/info.json" || fail "GET /info through the gateway"
WPID=$(pj 'd["pid"]' <"$R/info.json")
say "   worker: $(pj '", ".join(f"{k} {v} s" for k, v in d["phases"].items())' <"$R/info.json") ($(pj 'd["model"]' <"$R/info.json"))"
if [ "$SMI" = 1 ] && [ "$(pj 'd.get("device_count") or 0' <"$R/info.json")" = 0 ]; then
    say "   WARNING: nvidia-smi sees a GPU but the worker saw no CUDA device (its env: PATH, HOME, LD_LIBRARY_PATH and PYTHONPATH pass; see logs.txt)"
fi

# d. CUDA confinement.
"$PY" - "$R/worker.json" "$R/info.json" >"$R/confinement.json" <<'EOF'
import json, sys
w, i = (json.load(open(p)) for p in sys.argv[1:3])
given = ",".join(map(str, w["gpus"]))
ok_env = i["cuda_visible_devices"] == given
n = i.get("device_count")
print(json.dumps({"given": given, "cuda_visible_devices": i["cuda_visible_devices"], "device_count": n,
                  "device_names": i.get("device_names"),
                  "ok": ok_env and n in (1, None), "checked_torch": n is not None}))
EOF
say "d. confinement: $(pj '"given %s, CUDA_VISIBLE_DEVICES %s, device_count %s: %s" % (d["given"], d["cuda_visible_devices"], d["device_count"], "ok" if d["ok"] else "WRONG")' <"$R/confinement.json")"

# e. One streamed generation, then parallel loops while sampling utilization.
say "e. streaming 256 tokens after a 128-token prompt"
"$PY" - "$GW/e/$ID/generate" >"$R/stream.json" <<'EOF'
import json, subprocess, sys, time
t0 = time.time()
p = subprocess.Popen(["curl", "-sN", "--max-time", "180", "-X", "POST", "-H", "content-type: application/json",
                      "-d", '{"prompt_tokens":128,"max_tokens":256}', sys.argv[1]], stdout=subprocess.PIPE)
times = [time.time() for line in p.stdout if line.startswith(b"data:")]
p.wait()
n = len(times)
out = {"tokens": n, "curl_exit": p.returncode}
if n:
    out.update(ttft_s=round(times[0] - t0, 4), total_s=round(times[-1] - t0, 4),
               tokens_per_s=round(n / (times[-1] - t0), 2))
if n > 1:
    out["decode_tokens_per_s"] = round((n - 1) / (times[-1] - times[0]), 2)
print(json.dumps(out))
EOF
say "   $(cat "$R/stream.json")"

MEM_AWAKE=$(smi memory.used)
sampler() {
    local t s m
    echo "t,gpu_util_pct,gpu_mem_mib,sluice_gpu_utilization" >"$WORK/samples.csv"
    while [ ! -e "$WORK/stop" ]; do
        t=$(now)
        s=$(smi utilization.gpu,memory.used)
        m=$(api "$API/metrics" 2>/dev/null | grep '^sluice_gpu_utilization' || true)
        [ -n "$m" ] && echo "$m" | sed "s/^/$t /" >>"$WORK/metrics.samples"
        echo "$t,${s:-,},$(echo "$m" | awk 'NF { s += $NF; n++ } END { if (n) printf "%.2f", s / n }')" >>"$WORK/samples.csv"
        sleep 1
    done
}
loader() {
    local end=$1 f="$WORK/load.$2"
    while [ "$(date +%s)" -lt "$end" ]; do
        curl -sN --max-time 120 -X POST -H 'content-type: application/json' \
            -d "{\"prompt_tokens\":128,\"max_tokens\":${GPU_BENCH_LOAD_TOKENS:-64}}" \
            -w '\n#status %{http_code}\n' "$GW/e/$ID/generate" >>"$f" 2>/dev/null || echo "#status curl-error" >>"$f"
    done
}
LOAD_S=$(at_most "$LOAD_S")
say "   $PAR parallel generation loops for $LOAD_S s"
sampler &
SAMPLER=$!
T_LOAD=$(now)
END=$(($(date +%s) + LOAD_S))
for i in $(seq "$PAR"); do loader "$END" "$i" & LOADERS="$LOADERS $!"; done
for p in $LOADERS; do wait "$p" || true; done
T_LOADED=$(now)
LOADERS=""
touch "$WORK/stop"
wait "$SAMPLER" 2>/dev/null || true
SAMPLER=""
rm -f "$WORK/stop"
cat "$WORK"/load.* | "$PY" -c '
import json,sys
lines=sys.stdin.read().splitlines()
st=[l.split()[1] for l in lines if l.startswith("#status")]
tok=sum(1 for l in lines if l.startswith("data:"))
el=float(sys.argv[1])
print(json.dumps({"parallel":int(sys.argv[2]),"seconds":el,"requests":len(st),"ok":st.count("200"),
  "statuses":sorted(set(st)),"tokens":tok,"tokens_per_s":round(tok/el,2)}))' "$(sub "$T_LOAD" "$T_LOADED")" "$PAR" >"$R/load.json"
say "   $(cat "$R/load.json")"

# f. Sleep and wake.
say "f. scaling to zero: the worker should sleep"
api -X PATCH -d '{"active_workers":0,"max_workers":1,"idle_timeout_secs":5,"scale_down_delay_secs":1}' \
    "$API/v1/endpoints/$ID" >"$WORK/patched.json" || fail "PATCH /v1/endpoints/$ID: $(cat "$WORK/patched.json")"
: >"$WORK/cycles.jsonl"
for c in $(seq "$CYCLES"); do
    [ "$(left)" -lt 60 ] && { say "   out of time after $((c - 1)) cycles"; break; }
    T0=$(now)
    wait_worker sleeping 150 || [ "$WSTATE" = gone ] || { say "   cycle $c: never slept ($WSTATE)"; break; }
    T_SLEPT=$(now)
    MEM_ASLEEP=$(smi memory.used)
    say "   cycle $c: $WSTATE after $(sub "$T0" "$T_SLEPT") s, GPU memory ${MEM_ASLEEP:-?} MiB (awake ${MEM_AWAKE:-?})"
    RES=$(curl -sS --max-time "$(at_most 300)" -o "$WORK/wake.json" -D "$WORK/wake.h" -w '%{http_code} %{time_total}' \
        "$GW/e/$ID/info") || RES="000 0"
    WAIT_H=$(grep -i '^x-sluice-wait:' "$WORK/wake.h" | cut -d: -f2- | tr -d ' \r' || true)
    VIEW=$(workers | pj '[w for w in d["workers"] if w["state"] not in ("stopped","failed")][-1:]' || echo '[]')
    "$PY" - "$c" "$WSTATE" "$(sub "$T0" "$T_SLEPT")" "${MEM_ASLEEP:-}" "$RES" "$WAIT_H" "$VIEW" "$WORK/wake.json" \
        >>"$WORK/cycles.jsonl" <<'EOF'
import json, sys
c, state, to_sleep, mem, res, wait_h, view, wake = sys.argv[1:9]
code, secs = res.split()
try:
    info = json.load(open(wake))
except (OSError, ValueError):
    info = {}
rec = {"cycle": int(c), "state_before": state, "seconds_to_sleep": float(to_sleep),
       "gpu_mem_asleep_mib": int(mem) if mem.isdigit() else None, "status": int(code),
       "request_s": float(secs), "x_sluice_wait": wait_h or None,
       "worker_sleep": (info.get("sleeps") or [None])[-1], "worker_wake": (info.get("wakes") or [None])[-1],
       "worker_pid": info.get("pid"), "phases": (json.loads(view) or [{}])[0].get("phases")}
print(json.dumps(rec))
EOF
    say "   cycle $c: request $RES s, x-sluice-wait ${WAIT_H:-none}"
done
"$PY" -c 'import json,sys;print(json.dumps([json.loads(l) for l in open(sys.argv[1])]))' "$WORK/cycles.jsonl" >"$R/cycles.json"
echo "{\"awake_mib\": \"${MEM_AWAKE:-}\"}" >"$R/memory.json"
exit 0 # g. happens in finish: stop, logs, summary
