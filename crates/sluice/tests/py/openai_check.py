#!/usr/bin/env python3
"""Talk to an OpenAI-compatible base URL with OpenAI's own SDK (PyPI `openai`) and print what
came back as JSON: a chat completion, the same streamed (with usage), and a text completion.

    openai_check.py BASE_URL MODEL [--api-key KEY]

On an error: exit 1 with `ExceptionType: message` on stderr.
"""

import argparse
import json
import sys
import time

import openai


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("model")
    parser.add_argument("--api-key", default="none")
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=30)
    messages = [{"role": "system", "content": "You are terse. " * 40},
                {"role": "user", "content": "Say something."}]
    try:
        chat = client.chat.completions.create(model=args.model, messages=messages, max_tokens=5)
        start = time.monotonic()
        first = None
        pieces, usage, chunks = [], None, 0
        stream = client.chat.completions.create(model=args.model, messages=messages, max_tokens=7,
                                                stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            chunks += 1
            if chunk.choices and chunk.choices[0].delta.content:
                if first is None:
                    first = time.monotonic() - start
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage:
                usage = chunk.usage.model_dump()
        text = client.completions.create(model=args.model, prompt="Once upon a time", max_tokens=3)
    except Exception as e:  # noqa: BLE001 - reported as the tests read it
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump({
        "openai": openai.__version__,
        "chat": {"content": chat.choices[0].message.content, "finish_reason": chat.choices[0].finish_reason,
                 "usage": chat.usage.model_dump()},
        "stream": {"content": "".join(pieces), "chunks": chunks, "usage": usage, "ttft_s": first},
        "completion": {"text": text.choices[0].text, "usage": text.usage.model_dump()},
    }, sys.stdout)
    print()


if __name__ == "__main__":
    main()
