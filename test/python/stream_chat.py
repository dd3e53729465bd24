"""Streams one chat completion through Runnel with the official Python `openai` package.

Usage: stream_chat.py BASE_URL MODEL
Prints a JSON line: {"text": ..., "chunks": N, "finish_reason": ..., "stream_id": ...}.
"""
import json
import sys

from openai import OpenAI


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    text, chunks, finish = "", 0, None
    with client.chat.completions.with_streaming_response.create(
        model=model, stream=True, messages=[{"role": "user", "content": "Hello from Python"}]
    ) as response:
        stream_id = response.headers.get("x-runnel-stream-id")
        for chunk in response.parse():
            chunks += 1
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
    print(json.dumps({"text": text, "chunks": chunks, "finish_reason": finish, "stream_id": stream_id}))


if __name__ == "__main__":
    main()
