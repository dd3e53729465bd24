/**
 * End to end through real processes (mock provider, control plane, worker,
 * ingress, nats-server) with real clients: the official `openai` SDK, fetch
 * on the raw wire, and `curl -N`.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { mockText } from "@runnel/mock-provider";
import OpenAI from "openai";
import { chatBody, type E2E, mockRequests, parseSse, startE2E, waitForMockRequest } from "./helpers.js";

const run = promisify(execFile);
const expected = mockText(32, 0);

describe("a chat completion through the whole stack", () => {
  let e2e: E2E;
  let client: OpenAI;

  before(async () => {
    e2e = await startE2E("openai-sdk");
    client = new OpenAI({ baseURL: `${e2e.stack.ingressUrl}/v1`, apiKey: "runnel-has-no-auth-yet", maxRetries: 0 });
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
  });

  test("the openai SDK streams the mock provider's exact text", async () => {
    const stream = await client.chat.completions.create({ model: "mock", stream: true, messages: [{ role: "user", content: "Hello" }] });
    let text = "";
    let finish: string | null | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      text += chunk.choices[0]?.delta?.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      assert.equal(chunk.object, "chat.completion.chunk");
    }
    assert.equal(text, expected);
    assert.equal(finish, "stop");
    // role chunk + 32 tokens + finish chunk
    assert.equal(chunks, 34);
  });

  test("stream: false answers one chat.completion with usage", async () => {
    const completion = await client.chat.completions.create({ model: "mock", messages: [{ role: "user", content: "Hello" }] });
    assert.equal(completion.object, "chat.completion");
    assert.equal(completion.choices[0]?.message.content, expected);
    assert.equal(completion.choices[0]?.finish_reason, "stop");
    assert.equal(completion.usage?.completion_tokens, 32);
  });

  test("stream_options.include_usage ends the stream with a usage chunk", async () => {
    const stream = await client.chat.completions.create({
      model: "mock",
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: "Hello" }],
    });
    const usage = [];
    for await (const chunk of stream) if (chunk.usage) usage.push(chunk.usage);
    assert.equal(usage.length, 1);
    assert.equal(usage[0]?.completion_tokens, 32);
    assert.equal(usage[0]?.total_tokens, (usage[0]?.prompt_tokens ?? 0) + 32);
  });

  test("with tracing off, a client's traceparent reaches the provider as it came, so the gateway does not break the client's trace", async () => {
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent, tracestate: "vendor=value" },
      body: JSON.stringify({ model: "mock", stream: true, messages: [{ role: "user", content: "pass my trace on" }] }),
    });
    await response.text();
    const seen = (await mockRequests(e2e.stack)).find((request) => request.messages.some((message) => message.text === "pass my trace on"));
    assert.equal(seen?.traceparent, traceparent);
  });

  test("with include_usage, OpenAI's order on SSE and NDJSON: the finish chunk, then the usage chunk (choices: []), then the end", async () => {
    // The SDK: the last chunk it yields carries usage, the one before it the finish reason.
    const stream = await client.chat.completions.create({
      model: "mock",
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: "Hello" }],
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.equal(chunks.at(-2)?.choices[0]?.finish_reason, "stop", "the finish chunk is last but one");
    assert.deepEqual(chunks.at(-1)?.choices, []);
    assert.equal(chunks.at(-1)?.usage?.completion_tokens, 32);
    assert.equal(chunks.filter((chunk) => chunk.usage).length, 1);

    for (const accept of ["text/event-stream", "application/x-ndjson"]) {
      const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", accept },
        body: chatBody("mock", { stream: true, stream_options: { include_usage: true } }),
      });
      const text = await response.text();
      const payloads =
        accept === "text/event-stream" ? parseSse(text).events.map((event) => event.data) : text.split("\n").filter((line) => line.trim() !== "");
      if (accept === "text/event-stream") {
        assert.equal(payloads.pop(), "[DONE]", "[DONE] ends the SSE stream");
        // The done's id is on the usage chunk, the last of its two frames: a client cut between them resumes before the done.
        const events = parseSse(text).events;
        assert.equal(events.at(-3)?.id, undefined, "the finish chunk carries no id");
        assert.equal(events.at(-2)?.id, String(Number(events.at(-4)?.id) + 1), "the usage chunk carries the done's id");
      }
      const parsed = payloads.map((payload) => JSON.parse(payload) as { choices: { finish_reason: string | null }[]; usage?: unknown });
      const usageAt = parsed.findIndex((chunk) => chunk.usage);
      assert.equal(usageAt, parsed.length - 1, `${accept}: the usage chunk is the last`);
      assert.deepEqual(parsed.at(-1)?.choices, []);
      assert.equal(parsed.at(-2)?.choices[0]?.finish_reason, "stop", `${accept}: right after the finish chunk`);
    }
  });

  test("the SSE wire: consecutive ids from 1, the stream id header, [DONE] last, the provider saw our key", async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("mock", { stream: true }),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
    assert.equal(response.headers.get("x-accel-buffering"), "no");
    const streamId = response.headers.get("x-runnel-stream-id");
    assert.match(streamId ?? "", /^[A-Za-z0-9_-]{22}$/);
    const { events } = parseSse(await response.text());
    const last = events.at(-1);
    assert.equal(last?.data, "[DONE]");
    assert.equal(last?.id, undefined);
    const numbered = events.slice(0, -1);
    assert.deepEqual(
      numbered.map((event) => Number(event.id)),
      numbered.map((_event, index) => index + 1),
    );
    for (const event of numbered) assert.equal(JSON.parse(event.data).id, `chatcmpl-${streamId}`);
    const seen = (await mockRequests(e2e.stack)).at(-1);
    assert.equal(seen?.authorization, true);
  });

  test("aborting the client mid-stream closes the provider's connection within a bound", async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: "long", stream: true, messages: [{ role: "user", content: "Go on and on" }] },
      { signal: controller.signal },
    );
    let received = 0;
    let abortedAt = 0;
    // The SDK ends the iteration quietly when its signal aborts.
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) received += 1;
      if (received === 5 && abortedAt === 0) {
        abortedAt = Date.now();
        controller.abort();
      }
    }
    // Chunks that arrived in the same read as the fifth may still be handed out after the abort.
    assert.ok(received >= 5 && received < 50, `received ${received} chunks`);
    assert.ok(abortedAt > 0);
    const seen = await waitForMockRequest(e2e.stack, (request) => request.model.startsWith("mock?tokens=5000") && request.clientClosed, 5_000);
    assert.ok(seen.clientClosedAt !== null);
    const latency = (seen.clientClosedAt ?? 0) - abortedAt;
    // The generation outlives the disconnect by the detach grace (1 s in the e2e config), then stops at once.
    assert.ok(latency >= 900 && latency < 2_000, `provider saw the close ${latency} ms after the client aborted`);
    assert.ok(seen.tokensSent < 5000, "the provider stopped generating");
  });

  test("models.list names the configured models", async () => {
    const ids: string[] = [];
    for await (const model of client.models.list()) ids.push(model.id);
    assert.ok(ids.includes("mock") && ids.includes("long") && ids.includes("quiet"), ids.join(", "));
  });

  test("an unknown model is a 404 in OpenAI's error format", async () => {
    await assert.rejects(client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }), (error: unknown) => {
      assert.ok(error instanceof OpenAI.NotFoundError);
      assert.equal((error.error as { code?: string }).code, "RUNNEL_ERR_MODEL_NOT_FOUND");
      return true;
    });
  });

  test("an invalid body is a 400 naming the field", async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "mock", messages: [{ role: "robot", content: "hi" }] }),
    });
    assert.equal(response.status, 400);
    const body = (await response.json()) as { error: { type: string; param: string; code: string } };
    assert.equal(body.error.type, "invalid_request_error");
    assert.equal(body.error.param, "messages[0].role");
    assert.equal(body.error.code, "RUNNEL_ERR_INVALID_REQUEST");
  });

  test("malformed JSON is a 400 in OpenAI's format", async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{not json",
    });
    assert.equal(response.status, 400);
    const body = (await response.json()) as { error: { type: string } };
    assert.equal(body.error.type, "invalid_request_error");
  });

  test("a provider failure before the first byte is an HTTP error with the provider's reason", async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("fail-500", { stream: true }),
    });
    assert.equal(response.status, 502);
    const body = (await response.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.match(body.error.message, /500/);
  });

  test("a context-length rejection reaches the client as a 400 with the provider's message", async () => {
    await assert.rejects(client.chat.completions.create({ model: "context-length", messages: [{ role: "user", content: "hi" }] }), (error: unknown) => {
      assert.ok(error instanceof OpenAI.BadRequestError);
      assert.match(error.message, /context length/i);
      return true;
    });
  });

  test("a stream cut mid-way ends with an explicit error event and no [DONE]", async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("cut", { stream: true }),
    });
    assert.equal(response.status, 200);
    const { events } = parseSse(await response.text());
    assert.ok(
      events.every((event) => event.data !== "[DONE]"),
      "no [DONE] after a failure",
    );
    const last = JSON.parse(events.at(-1)?.data ?? "{}") as { error?: { code: string } };
    assert.equal(last.error?.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
    const text = events
      .slice(0, -1)
      .map((event) => (JSON.parse(event.data) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? "")
      .join("");
    assert.equal(text, mockText(32, 0).slice(0, text.length));
    assert.ok(text.length > 0);
  });

  test("a stalled provider is ended by the idle timeout with an error event, heartbeats meanwhile", async () => {
    const started = Date.now();
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("stall", { stream: true }),
    });
    const { events, comments } = parseSse(await response.text());
    const elapsed = Date.now() - started;
    const last = JSON.parse(events.at(-1)?.data ?? "{}") as { error?: { code: string } };
    assert.equal(last.error?.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
    assert.ok(elapsed >= 1_900 && elapsed < 6_000, `ended after ${elapsed} ms (idle timeout 2 s)`);
    assert.ok(comments >= 1, "keep-alive comments while the provider was quiet");
  });

  test("a model's own idle timeout overrides its provider's", async () => {
    const started = Date.now();
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("stall-impatient", { stream: true }),
    });
    const { events } = parseSse(await response.text());
    const elapsed = Date.now() - started;
    const last = JSON.parse(events.at(-1)?.data ?? "{}") as { error?: { code: string } };
    assert.equal(last.error?.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
    assert.ok(elapsed >= 450 && elapsed < 1_800, `ended after ${elapsed} ms (the model's idle timeout is 500 ms, the provider's 2 s)`);
  });

  test("a finish reason without [DONE] completes at once", async () => {
    const started = Date.now();
    const completion = await client.chat.completions.create({ model: "no-done", messages: [{ role: "user", content: "hi" }] });
    assert.equal(completion.choices[0]?.message.content, expected);
    assert.ok(Date.now() - started < 1_500);
  });

  test("curl -N streams the completion", async () => {
    const { stdout } = await run("curl", [
      "-sS",
      "-N",
      `${e2e.stack.ingressUrl}/v1/chat/completions`,
      "-H",
      "content-type: application/json",
      "-d",
      chatBody("mock", { stream: true }),
    ]);
    const { events } = parseSse(stdout);
    assert.equal(events.at(-1)?.data, "[DONE]");
    const text = events
      .slice(0, -1)
      .map((event) => (JSON.parse(event.data) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? "")
      .join("");
    assert.equal(text, expected);
  });

  test("Accept: application/x-ndjson streams one chunk per line", async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/x-ndjson" },
      body: chatBody("mock", { stream: true }),
    });
    assert.match(response.headers.get("content-type") ?? "", /^application\/x-ndjson/);
    const lines = (await response.text()).split("\n").filter((line) => line.length > 0);
    const chunks = lines.map((line) => JSON.parse(line) as { choices: { delta: { content?: string }; finish_reason: string | null }[] });
    assert.equal(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join(""), expected);
    assert.equal(chunks.at(-1)?.choices[0]?.finish_reason, "stop");
  });
});
