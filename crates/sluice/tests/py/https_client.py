"""RunPod's own client (PyPI `runpod`), unmodified, over HTTPS: argv is the API's https base
URL (`https://api.example.test:PORT`), an API key and a queue endpoint's id. The CA to trust
comes as SSL_CERT_FILE / REQUESTS_CA_BUNDLE, as for any Python program. The test harness
stands in for DNS: every name under SLUICE_TEST_DOMAIN resolves to 127.0.0.1 (the machine has
no resolver for test names). Exits non-zero on the first mismatch."""
import os
import socket
import sys

base, key, ep = sys.argv[1:4]
domain = os.environ["SLUICE_TEST_DOMAIN"]
_getaddrinfo = socket.getaddrinfo


def loopback(host, *args, **kwargs):
    if isinstance(host, str) and (host == domain or host.endswith("." + domain)):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = loopback
os.environ["RUNPOD_ENDPOINT_BASE_URL"] = base + "/v2"
import runpod  # noqa: E402  (reads the base URL at import)

runpod.api_key = key
E = runpod.Endpoint(ep)


def check(what, cond, detail=""):
    if not cond:
        print(f"FAIL {what}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


out = E.run_sync({"x": 1}, timeout=60)
check("run_sync over https returns the output", out["echo"] == {"x": 1}, out)
job = E.run({"y": 2})
out = job.output(timeout=60)
check("run + output over https", out["echo"] == {"y": 2}, out)
check("status over https", job.status() == "COMPLETED")
print("all ok", flush=True)
