#!/usr/bin/env python3
"""Drive an OpenAI-compatible base URL with OpenAI's own SDK (PyPI `openai`), one call per
line of a plan, and print one JSON result per call (never raising):

    openai_front.py BASE_URL API_KEY CALL...

CALL is `models`, `chat:MODEL`, `stream:MODEL` or `complete:MODEL`. A result is
{"call", "ok": true, ...} or {"call", "ok": false, "error": ExceptionType, "status",
"code", "message", "retry_after"}.
"""

import json
import sys

import openai


def run(client, call):
    kind, _, model = call.partition(":")
    messages = [{"role": "user", "content": "hello " * 50}]
    if kind == "models":
        return {"models": sorted(m.id for m in client.models.list())}
    if kind == "chat":
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=3)
        return {"content": r.choices[0].message.content, "model": r.model, "usage": r.usage.model_dump()}
    if kind == "stream":
        pieces, usage = [], None
        for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=4, stream=True,
                                                    stream_options={"include_usage": True}):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage:
                usage = chunk.usage.model_dump()
        return {"content": "".join(pieces), "usage": usage}
    if kind == "complete":
        r = client.completions.create(model=model, prompt="once upon", max_tokens=2)
        return {"text": r.choices[0].text}
    raise ValueError(f"unknown call {call}")


def main():
    base_url, key, calls = sys.argv[1], sys.argv[2], sys.argv[3:]
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)
    for call in calls:
        try:
            out = {"call": call, "ok": True, **run(client, call)}
        except openai.APIStatusError as e:
            body = e.body if isinstance(e.body, dict) else {}
            out = {"call": call, "ok": False, "error": type(e).__name__, "status": e.status_code,
                   "code": body.get("code"), "type": body.get("type"), "message": body.get("message"),
                   "retry_after": e.response.headers.get("retry-after")}
        except Exception as e:  # noqa: BLE001 - reported, not raised
            out = {"call": call, "ok": False, "error": type(e).__name__, "message": str(e)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
