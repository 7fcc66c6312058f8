"""RunPod's own client (PyPI `runpod`), unmodified, against Sluice: argv is the gateway URL,
an API key and the ids of four queue endpoints whose workers run worker.py: sync, async with
concurrency 4, async with concurrency 1, generator. Exits non-zero on the first mismatch."""
import json
import os
import sys
import time

gateway, key, sync_ep, async_ep, one_ep, gen_ep = sys.argv[1:7]
os.environ["RUNPOD_ENDPOINT_BASE_URL"] = gateway + "/v2"
import runpod  # noqa: E402  (reads the base URL at import)

runpod.api_key = key
S, A = runpod.Endpoint(sync_ep), runpod.Endpoint(async_ep)
C, G = runpod.Endpoint(one_ep), runpod.Endpoint(gen_ep)


def check(what, cond, detail=""):
    if not cond:
        print(f"FAIL {what}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


def until(what, f, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        v = f()
        if v:
            return v
        time.sleep(0.2)
    check(what, False, "timed out")


# run_sync: the handler's output.
out = S.run_sync({"x": 1}, timeout=60)
check("run_sync returns the output", out["echo"] == {"x": 1}, out)
first_worker = out["worker"]

# run + status + progress_update + output.
job = S.run({"progress": True})
st = until("progress is visible while running",
           lambda: (s := job._fetch_job()) and s["status"] == "IN_PROGRESS" and s.get("output") and s)
check("progress output", st["output"] == {"progress": "half"}, st)
check("workerId while running", st.get("workerId") == first_worker, st)
out = job.output(timeout=30)
check("output after progress", out["echo"] == {"progress": True}, out)
check("status COMPLETED", job.status() == "COMPLETED")

# A handler exception: FAILED, with the SDK's error envelope.
failed = S.run({"fail": "boom"})
until("a failing handler ends FAILED", lambda: failed.status() == "FAILED")
err = json.loads(failed._fetch_job()["error"])
check("error envelope", err["error_message"] == "boom" and "ValueError" in err["error_type"], err)

# cancel of a running job: the worker (async handler, one job at a time) is told on the stop
# channel, stops the handler and is free at once. (A sync handler blocks the SDK's event loop, so
# RunPod's SDK cannot stop it; the job is CANCELLED either way and its late result is dropped.)
long = C.run({"sleep": 60})
until("long job runs", lambda: long._fetch_job()["status"] == "IN_PROGRESS")
c = long.cancel()
check("cancel answers CANCELLED", c["status"] == "CANCELLED", c)
t = time.time()
out = C.run_sync({"after": "cancel"}, timeout=30)
check("worker freed by the cancel", out["echo"] == {"after": "cancel"} and time.time() - t < 15, time.time() - t)
check("cancelled stays cancelled", long._fetch_job()["status"] == "CANCELLED")

# Execution timeout: TIMED_OUT, and the job is stopped on the worker.
slow = C.run({"input": {"sleep": 60}, "policy": {"executionTimeout": 5000}})
until("execution timeout gives TIMED_OUT", lambda: slow._fetch_job()["status"] == "TIMED_OUT", timeout=20)
t = time.time()
out = C.run_sync({"after": "timeout"}, timeout=30)
check("worker freed by the timeout", out["echo"] == {"after": "timeout"} and time.time() - t < 15, time.time() - t)

# purge_queue: the queued jobs behind a busy worker go; the running one stays.
busy = S.run({"sleep": 3})
until("busy job runs", lambda: busy._fetch_job()["status"] == "IN_PROGRESS")
queued = [S.run({"q": i}) for i in range(3)]
h = S.health()
check("health counts the queue", h["jobs"]["inQueue"] == 3 and h["jobs"]["inProgress"] == 1, h)
check("health counts the workers", h["workers"]["ready"] == 1 and h["workers"]["running"] == 1, h)
p = S.purge_queue()
check("purge_queue removes the queued jobs", p == {"removed": 3, "status": "completed"}, p)
check("the running job completes", busy.output(timeout=30)["echo"] == {"sleep": 3})

# refresh_worker: the worker is replaced after the job.
out = S.run_sync({"refresh": True}, timeout=60)
check("refresh job output", out["echo"] == {"refresh": True}, out)
out = S.run_sync({"after": "refresh"}, timeout=60)
check("a fresh worker takes the next job", out["worker"] != first_worker, out)

# Async handler with concurrency_modifier 4 on one worker: 8 jobs of 1 s take about 2 s.
t = time.time()
jobs = [A.run({"sleep": 1, "i": i}) for i in range(8)]
outs = [j.output(timeout=60) for j in jobs]
took = time.time() - t
check("async outputs", [o["echo"]["i"] for o in outs] == list(range(8)), outs)
check("one worker ran them concurrently", len({o["worker"] for o in outs}) == 1 and took < 6, took)

# Generator handler: stream() yields each chunk once, in order; the aggregate is the output.
job = G.run({"n": 5})
chunks = list(job.stream())
check("stream yields every chunk once, in order", chunks == [f"tok{i}" for i in range(5)], chunks)
check("aggregate output", job.output(timeout=30) == [f"tok{i}" for i in range(5)], job.output())

# A wrong key is refused the way RunPod refuses it.
runpod.api_key = "not-a-key"
try:
    runpod.Endpoint(sync_ep).run_sync({"x": 1}, timeout=10)
    check("bad key refused", False)
except RuntimeError as e:
    check("bad key refused with 401", "401" in str(e), e)
print("ALL OK")
