"""An unmodified RunPod serverless worker, as users write them: `runpod.serverless.start()`
with a handler. Sluice starts it with the RUNPOD_* variables; MODE picks the handler kind
(sync, async with a concurrency modifier, generator), as the tests need."""
import asyncio
import os
import time

import runpod

MODE = os.environ.get("MODE", "sync")
ME = {"pid": os.getpid(), "worker": os.environ.get("RUNPOD_POD_ID")}


def sync_handler(job):
    inp = job["input"]
    if inp.get("fail"):
        raise ValueError(inp["fail"])
    if inp.get("progress"):
        runpod.serverless.progress_update(job, {"progress": "half"})
        time.sleep(1.5)
    if inp.get("sleep"):
        time.sleep(inp["sleep"])
    out = {"echo": inp, **ME}
    if inp.get("refresh"):
        out["refresh_worker"] = True
    return out


async def async_handler(job):
    # The crash tests count how often each job ran.
    print(f"job {job['id']} started", flush=True)
    await asyncio.sleep(job["input"].get("sleep", 0))
    return {"echo": job["input"], **ME}


async def generator_handler(job):
    for i in range(job["input"].get("n", 3)):
        await asyncio.sleep(0.05)
        yield f"tok{i}"


if MODE == "async":
    runpod.serverless.start({
        "handler": async_handler,
        "concurrency_modifier": lambda current: int(os.environ.get("CONCURRENCY", "4")),
    })
elif MODE == "generator":
    runpod.serverless.start({"handler": generator_handler, "return_aggregate_stream": True})
else:
    runpod.serverless.start({"handler": sync_handler})
