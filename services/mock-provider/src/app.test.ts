import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import { chat, chunks, contentOf, SseReader, startMock } from "./test-support.js";
import { mockText } from "./text.js";

describe("streamed completions", () => {
  test("the streamed text equals mockText, in the exact OpenAI chunk format", async (t) => {
    const { url } = await startMock(t);
    const response = await chat(url, { model: "mock?tokens=12&seed=5", stream: true });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/event-stream; charset=utf-8");
    const raw = await response.text();
    assert.ok(raw.endsWith("\n\ndata: [DONE]\n\n"), "ends with [DONE]");
    const events = raw.split("\n\n").filter((event) => event !== "");
    for (const event of events) assert.ok(event.startsWith("data: "), `event ${event}`);
    const payloads = events.map((event) => event.slice("data: ".length));
    assert.equal(payloads.at(-1), "[DONE]");
    const parsed = chunks(payloads);
    assert.equal(parsed.length, 1 + 12 + 1, "role chunk, 12 tokens, finish chunk; no usage unless asked for");

    const first = parsed[0];
    assert.ok(first);
    assert.match(first.id, /^chatcmpl-mock-\d+$/);
    assert.ok(Math.abs(first.created - Date.now() / 1000) < 5);
    assert.deepEqual(JSON.parse(payloads[0] ?? ""), {
      id: first.id,
      object: "chat.completion.chunk",
      created: first.created,
      model: "mock?tokens=12&seed=5",
      system_fingerprint: "fp_mock",
      choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }],
    });
    // Field order matters to some parsers; keep OpenAI's.
    assert.ok((payloads[0] ?? "").startsWith(`{"id":"${first.id}","object":"chat.completion.chunk","created":`));

    const tokens = parsed.slice(1, -1);
    for (const chunk of tokens) {
      assert.deepEqual(Object.keys(chunk.choices[0]?.delta ?? {}), ["content"]);
      assert.equal(chunk.id, first.id);
      assert.equal(chunk.choices[0]?.finish_reason, null);
    }
    assert.equal(contentOf(tokens), mockText(12, 5));
    assert.deepEqual(parsed.at(-1)?.choices, [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }]);
  });

  test("defaults to 32 tokens of seed 0", async (t) => {
    const { url } = await startMock(t);
    const response = await chat(url, { model: "mock", stream: true });
    assert.equal(contentOf(chunks(await new SseReader(response).rest())), mockText(32, 0));
  });

  test("include_usage adds a usage chunk with no choices before [DONE]", async (t) => {
    const { url } = await startMock(t);
    const response = await chat(url, {
      model: "mock?tokens=5",
      stream: true,
      stream_options: { include_usage: true },
      messages: [
        { role: "system", content: "be brief" },
        { role: "user", content: [{ type: "text", text: "one two three" }] },
      ],
    });
    const events = await new SseReader(response).rest();
    assert.equal(events.at(-1), "[DONE]");
    const last = chunks(events).at(-1);
    assert.deepEqual(last?.choices, []);
    assert.deepEqual(last?.usage, { prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 });
    assert.equal(chunks(events).filter((chunk) => chunk.usage !== undefined).length, 1);
  });

  test("usage=always sends usage without include_usage", async (t) => {
    const { url } = await startMock(t);
    const events = await new SseReader(await chat(url, { model: "mock?tokens=3&usage=always", stream: true })).rest();
    assert.equal(chunks(events).at(-1)?.usage?.completion_tokens, 3);
  });

  test("max_tokens below the scenario's length stops early with finish_reason length", async (t) => {
    const { url } = await startMock(t);
    const events = await new SseReader(
      await chat(url, { model: "mock?tokens=10", stream: true, max_tokens: 4, stream_options: { include_usage: true } }),
    ).rest();
    const parsed = chunks(events);
    assert.equal(contentOf(parsed), mockText(4, 0));
    assert.equal(parsed.at(-2)?.choices[0]?.finish_reason, "length");
    assert.equal(parsed.at(-1)?.usage?.completion_tokens, 4);

    const complete = chunks(await new SseReader(await chat(url, { model: "mock?tokens=3", stream: true, max_completion_tokens: 3 })).rest());
    assert.equal(complete.at(-1)?.choices[0]?.finish_reason, "stop", "max equal to the length is not a truncation");
  });

  test("the role chunk goes out at once, the first token after ttft, then one per itl", async (t) => {
    const { url } = await startMock(t);
    const started = Date.now();
    const reader = new SseReader(await chat(url, { model: "mock?tokens=4&ttft=250&itl=40", stream: true }));
    const role = await reader.next();
    assert.ok(typeof role === "string" && role.includes('"role":"assistant"'));
    assert.ok(Date.now() - started < 200, `role chunk took ${Date.now() - started} ms`);
    const firstToken = await reader.next();
    assert.ok(typeof firstToken === "string" && firstToken.includes('"content"'));
    const ttft = Date.now() - started;
    assert.ok(ttft >= 240, `first token after ${ttft} ms`);
    await reader.rest();
    const total = Date.now() - started;
    assert.ok(total >= 250 + 3 * 40 - 10, `whole stream in ${total} ms`);
  });

  test("server-wide defaults apply", async (t) => {
    const { url } = await startMock(t, { defaults: { tokens: 3, ttftMs: 150 } });
    const started = Date.now();
    const parsed = chunks(await new SseReader(await chat(url, { model: "mock", stream: true })).rest());
    assert.equal(contentOf(parsed), mockText(3, 0));
    assert.ok(Date.now() - started >= 140);
  });

  test("respects backpressure: a client that does not read holds the stream back", async (t) => {
    const { url, app } = await startMock(t);
    const controller = new AbortController();
    const response = await chat(url, { model: "mock?tokens=1000000", stream: true }, { signal: controller.signal });
    assert.equal(response.status, 200);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const [entry] = app.journal.entries();
    assert.ok(entry && entry.tokensSent > 0 && entry.tokensSent < 500_000, `tokensSent ${entry?.tokensSent}`);
    controller.abort();
    await app.journal.waitFor((item) => item.clientClosed, 1000);
  });
});

describe("non-streamed completions", () => {
  test("one chat.completion object with usage", async (t) => {
    const { url } = await startMock(t);
    const response = await chat(url, { model: "mock?tokens=6&seed=2", messages: [{ role: "user", content: "hello  there\nworld" }] });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/json");
    const body = (await response.json()) as Record<string, unknown>;
    assert.match(String(body.id), /^chatcmpl-mock-\d+$/);
    assert.deepEqual(body, {
      id: body.id,
      object: "chat.completion",
      created: body.created,
      model: "mock?tokens=6&seed=2",
      system_fingerprint: "fp_mock",
      choices: [{ index: 0, message: { role: "assistant", content: mockText(6, 2) }, logprobs: null, finish_reason: "stop" }],
      usage: { prompt_tokens: 3, completion_tokens: 6, total_tokens: 9 },
    });
  });

  test("max_tokens → finish_reason length", async (t) => {
    const { url } = await startMock(t);
    const body = (await (await chat(url, { model: "mock?tokens=10", max_tokens: 2 })).json()) as {
      choices: { message: { content: string }; finish_reason: string }[];
    };
    assert.equal(body.choices[0]?.message.content, mockText(2, 0));
    assert.equal(body.choices[0]?.finish_reason, "length");
  });

  test("waits ttft + tokens × itl", async (t) => {
    const { url } = await startMock(t);
    const started = Date.now();
    await (await chat(url, { model: "mock?tokens=5&ttft=100&itl=20" })).json();
    assert.ok(Date.now() - started >= 190, `answered after ${Date.now() - started} ms`);
  });
});

describe("bad requests", () => {
  test("invalid JSON → 400 invalid_request_error", async (t) => {
    const { url } = await startMock(t);
    const response = await fetch(`${url}/v1/chat/completions`, { method: "POST", body: "{nope" });
    assert.equal(response.status, 400);
    const body = (await response.json()) as { error: Record<string, unknown> };
    assert.deepEqual(Object.keys(body.error), ["message", "type", "param", "code"]);
    assert.equal(body.error.type, "invalid_request_error");
  });

  test("missing messages, bad max_tokens, missing model → 400 naming the param", async (t) => {
    const { url } = await startMock(t);
    const cases: [Record<string, unknown>, string][] = [
      [{ model: "mock" }, "messages"],
      [{ model: "mock", messages: [] }, "messages"],
      [{ model: "mock", messages: [{ role: "user", content: "x" }], max_tokens: 0 }, "max_tokens"],
      [{ messages: [{ role: "user", content: "x" }] }, "model"],
    ];
    for (const [body, param] of cases) {
      const response = await fetch(`${url}/v1/chat/completions`, { method: "POST", body: JSON.stringify(body) });
      assert.equal(response.status, 400, JSON.stringify(body));
      const error = ((await response.json()) as { error: { param: string; type: string } }).error;
      assert.equal(error.param, param);
      assert.equal(error.type, "invalid_request_error");
    }
  });

  test("an unknown fail mode → 400 naming it", async (t) => {
    const { url } = await startMock(t);
    const response = await chat(url, { model: "mock?fail=melt", stream: true });
    assert.equal(response.status, 400);
    const error = ((await response.json()) as { error: { message: string; param: string } }).error;
    assert.match(error.message, /"melt"/);
    assert.equal(error.param, "model");
  });

  test("unknown routes → 404, wrong methods → 405", async (t) => {
    const { url } = await startMock(t);
    assert.equal((await fetch(`${url}/v1/nothing`)).status, 404);
    const response = await fetch(`${url}/v1/chat/completions`);
    assert.equal(response.status, 405);
    assert.equal(response.headers.get("allow"), "POST");
  });
});

describe("other routes", () => {
  test("/v1/models lists mock", async (t) => {
    const { url } = await startMock(t);
    const body = (await (await fetch(`${url}/v1/models`)).json()) as { object: string; data: { id: string; object: string }[] };
    assert.equal(body.object, "list");
    assert.deepEqual(
      body.data.map((model) => [model.id, model.object]),
      [["mock", "model"]],
    );
  });

  test("/healthz and /readyz", async (t) => {
    const { url } = await startMock(t);
    for (const path of ["/healthz", "/readyz"]) {
      const response = await fetch(`${url}${path}`);
      assert.equal(response.status, 200);
      assert.equal(typeof ((await response.json()) as { status: string }).status, "string");
    }
  });

  test("/_mock/requests shows the journal (without the key) and DELETE clears it", async (t) => {
    const { url } = await startMock(t);
    await (
      await chat(url, { model: "mock?tokens=2", stream: true }, { headers: { "content-type": "application/json", authorization: "Bearer sk-secret-123" } })
    ).text();
    await (await chat(url, { model: "mock?fail=500" })).text();
    const response = await fetch(`${url}/_mock/requests`);
    const text = await response.text();
    assert.ok(!text.includes("sk-secret-123"), "the key is never stored");
    const { requests } = JSON.parse(text) as { requests: Record<string, unknown>[] };
    assert.equal(requests.length, 2);
    const [streamed, failed] = requests;
    assert.deepEqual(Object.keys(streamed ?? {}).sort(), [
      "authorization",
      "bodyBytes",
      "clientClosed",
      "clientClosedAt",
      "credentialSha256",
      "fail",
      "finished",
      "firstTokenAt",
      "format",
      "headersSentAt",
      "id",
      "messageDigests",
      "messages",
      "model",
      "receivedAt",
      "status",
      "stream",
      "tokensSent",
      "traceparent",
    ]);
    assert.equal(streamed?.model, "mock?tokens=2");
    assert.equal(streamed?.credentialSha256, createHash("sha256").update("sk-secret-123").digest("hex"), "the key's digest, not the key");
    assert.equal(failed?.credentialSha256, null);
    assert.equal(streamed?.format, "openai");
    assert.equal(streamed?.stream, true);
    assert.equal(streamed?.authorization, true);
    assert.equal(streamed?.tokensSent, 2);
    assert.equal(streamed?.finished, true);
    assert.equal(streamed?.clientClosed, false);
    assert.equal(typeof streamed?.headersSentAt, "number");
    assert.equal(typeof streamed?.firstTokenAt, "number");
    assert.ok((streamed?.firstTokenAt as number) >= (streamed?.headersSentAt as number));
    assert.deepEqual(streamed?.messages, [{ role: "user", text: "say something nice" }]);
    assert.deepEqual(streamed?.messageDigests, [{ length: 18, sha256: createHash("sha256").update("say something nice").digest("hex") }]);
    assert.equal(typeof streamed?.bodyBytes, "number");
    assert.equal(failed?.fail, "500");
    assert.equal(failed?.firstTokenAt, null);
    assert.equal(failed?.authorization, false);
    assert.equal(failed?.status, 500);

    assert.equal((await fetch(`${url}/_mock/requests`, { method: "DELETE" })).status, 204);
    assert.deepEqual(await (await fetch(`${url}/_mock/requests`)).json(), { requests: [] });
  });
});
