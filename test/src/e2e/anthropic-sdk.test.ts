/**
 * The Anthropic Messages API end to end, through real processes (mock
 * provider, control plane, worker, ingress, nats-server), with the official
 * `@anthropic-ai/sdk` and fetch on the raw wire.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { mockText } from "@runnel/mock-provider";
import OpenAI from "openai";
import { type E2E, openPaused, readChunkedResponse, rssKiB, startE2E, waitForMockRequest } from "./helpers.js";

const expected = mockText(32, 0);
const messages: Anthropic.MessageParam[] = [{ role: "user", content: "Tell me about rivers." }];

interface WireEvent {
  event: string;
  data: Record<string, unknown>;
}

/** Splits an Anthropic SSE body into its events (each an `event:` line and a JSON `data:` line). */
function parseEvents(text: string): WireEvent[] {
  const events: WireEvent[] = [];
  for (const block of text.split("\n\n")) {
    if (block.trim() === "") continue;
    const lines = block.split("\n");
    const event = lines.find((line) => line.startsWith("event: "))?.slice(7);
    const data = lines.find((line) => line.startsWith("data: "))?.slice(6);
    assert.ok(event !== undefined && data !== undefined, `an SSE event with event: and data: lines, got ${JSON.stringify(block)}`);
    events.push({ event, data: JSON.parse(data) as Record<string, unknown> });
  }
  return events;
}

function post(url: string, body: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}/v1/messages`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
}

/** Asserts an Anthropic error body and returns its error object. */
async function anthropicError(response: Response): Promise<{ type: string; message: string }> {
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  const body = (await response.json()) as { type: string; error: { type: string; message: string } };
  assert.equal(body.type, "error");
  assert.equal(typeof body.error.message, "string");
  return body.error;
}

/** Sends only the head of a JSON POST announcing `contentLength` bytes, and reads the response (a Content-Length one). */
async function headersOnly(ingressUrl: string, path: string, contentLength: number): Promise<{ head: string; body: string }> {
  const url = new URL(ingressUrl);
  const socket = connect({ host: url.hostname, port: Number(url.port) });
  try {
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    socket.write(`POST ${path} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\nContent-Length: ${contentLength}\r\n\r\n`);
    let raw = "";
    return await new Promise((resolve, reject) => {
      const done = () => {
        const split = raw.indexOf("\r\n\r\n");
        if (split < 0) return false;
        const head = raw.slice(0, split);
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? Number.NaN);
        const body = raw.slice(split + 4);
        if (Buffer.byteLength(body) < length) return false;
        resolve({ head, body });
        return true;
      };
      socket.on("data", (data: Buffer) => {
        raw += data.toString("utf8");
        done();
      });
      socket.once("end", () => {
        if (!done()) reject(new Error(`incomplete response: ${JSON.stringify(raw)}`));
      });
      socket.once("error", reject);
    });
  } finally {
    socket.destroy();
  }
}

describe("the Anthropic Messages API through the whole stack", () => {
  let e2e: E2E;
  let client: Anthropic;

  before(async () => {
    e2e = await startE2E("anthropic-sdk");
    client = new Anthropic({ baseURL: e2e.stack.ingressUrl, apiKey: "runnel-has-no-auth-here", maxRetries: 0 });
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
  });

  test("messages.stream gets the mock's exact text in Anthropic's event sequence", async () => {
    const stream = client.messages.stream({ model: "mock", max_tokens: 1024, messages });
    const types: string[] = [];
    let text = "";
    let outputTokens: number | undefined;
    let stopReason: string | null | undefined;
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === "content_block_delta" && event.delta.type === "text_delta") text += event.delta.text;
      if (event.type === "message_delta") {
        outputTokens = event.usage.output_tokens;
        stopReason = event.delta.stop_reason;
      }
    }
    assert.equal(text, expected);
    assert.deepEqual(types, [
      "message_start",
      "content_block_start",
      ...Array<string>(32).fill("content_block_delta"),
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    assert.equal(stopReason, "end_turn");
    assert.equal(outputTokens, 32);
    const final = await stream.finalMessage();
    assert.match(final.id, /^msg_[A-Za-z0-9_-]{22}$/);
    assert.equal(final.role, "assistant");
    assert.deepEqual(
      final.content.map((block) => block.type),
      ["text"],
    );
    assert.equal(await stream.finalText(), expected);
    assert.equal(final.stop_reason, "end_turn");
    assert.equal(final.usage.output_tokens, 32);
    assert.ok(final.usage.input_tokens > 0, "input tokens reported at the end");
  });

  test("messages.create with stream: false answers one message with usage", async () => {
    const message = await client.messages.create({ model: "mock", max_tokens: 1024, messages, stream: false });
    assert.equal(message.type, "message");
    assert.equal(message.role, "assistant");
    assert.match(message.id, /^msg_/);
    assert.deepEqual(message.content, [{ type: "text", text: expected }]);
    assert.equal(message.stop_reason, "end_turn");
    assert.equal(message.stop_sequence, null);
    assert.equal(message.usage.output_tokens, 32);
  });

  test("max_tokens below the answer's length stops with stop_reason max_tokens", async () => {
    const message = await client.messages.create({ model: "mock", max_tokens: 5, messages });
    const [block] = message.content;
    assert.equal(block?.type, "text");
    assert.equal(block?.type === "text" ? block.text : "", mockText(5, 0));
    assert.equal(message.stop_reason, "max_tokens");
    assert.equal(message.usage.output_tokens, 5);
  });

  test("the SSE wire: Anthropic's event names, the stream's headers, message ids from the stream id", async () => {
    const response = await post(e2e.stack.ingressUrl, JSON.stringify({ model: "mock", max_tokens: 64, stream: true, messages }));
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
    assert.equal(response.headers.get("x-accel-buffering"), "no");
    const streamId = response.headers.get("x-runnel-stream-id") ?? "";
    assert.match(streamId, /^[A-Za-z0-9_-]{22}$/);
    assert.ok((response.headers.get("x-runnel-resume-token") ?? "").length > 0);
    assert.equal(response.headers.get("request-id"), `req_${streamId}`);
    const events = parseEvents(await response.text());
    for (const event of events) assert.equal(event.data.type, event.event, "each data's type names its event");
    assert.equal(events[0]?.event, "message_start");
    assert.equal((events[0]?.data.message as { id: string } | undefined)?.id, `msg_${streamId}`);
    assert.deepEqual(events.at(-1), { event: "message_stop", data: { type: "message_stop" } });
    assert.equal(events.filter((event) => event.event === "error").length, 0);
  });

  test("the same mock output gives the same text through the OpenAI route and the Anthropic route", async () => {
    const openai = new OpenAI({ baseURL: `${e2e.stack.ingressUrl}/v1`, apiKey: "unused", maxRetries: 0 });
    for (const maxTokens of [1024, 7]) {
      const chat = await openai.chat.completions.create({
        model: "mock",
        max_tokens: maxTokens,
        messages: [{ role: "user", content: "Tell me about rivers." }],
      });
      const stream = client.messages.stream({ model: "mock", max_tokens: maxTokens, messages });
      let streamed = "";
      stream.on("text", (delta) => {
        streamed += delta;
      });
      const message = await stream.finalMessage();
      const openaiText = chat.choices[0]?.message.content ?? "";
      assert.equal(openaiText, maxTokens === 7 ? mockText(7, 0) : expected);
      assert.equal(streamed, openaiText);
      assert.equal(chat.choices[0]?.finish_reason, maxTokens === 7 ? "length" : "stop");
      assert.equal(message.stop_reason, maxTokens === 7 ? "max_tokens" : "end_turn");
      assert.equal(message.usage.output_tokens, chat.usage?.completion_tokens);
    }
  });

  test("an unknown model is the SDK's NotFoundError", async () => {
    await assert.rejects(client.messages.create({ model: "no-such-model", max_tokens: 10, messages }), (error: unknown) => {
      assert.ok(error instanceof Anthropic.NotFoundError, `got ${String(error)}`);
      assert.equal(error.status, 404);
      assert.equal(error.type, "not_found_error");
      assert.match(error.message, /no-such-model/);
      assert.equal(error.headers?.get("x-runnel-error-code"), "RUNNEL_ERR_MODEL_NOT_FOUND");
      return true;
    });
  });

  test("a missing max_tokens is a BadRequestError naming the field", async () => {
    const params = { model: "mock", messages } as unknown as Anthropic.MessageCreateParamsNonStreaming;
    await assert.rejects(client.messages.create(params), (error: unknown) => {
      assert.ok(error instanceof Anthropic.BadRequestError, `got ${String(error)}`);
      assert.equal(error.type, "invalid_request_error");
      assert.match(error.message, /max_tokens: Field required/);
      return true;
    });
  });

  test("malformed JSON, a wrong block and a body over the limit are errors in Anthropic's shape", async () => {
    const malformed = await post(e2e.stack.ingressUrl, "{not json");
    assert.equal(malformed.status, 400);
    assert.equal((await anthropicError(malformed)).type, "invalid_request_error");

    const wrongBlock = await post(
      e2e.stack.ingressUrl,
      JSON.stringify({
        model: "mock",
        max_tokens: 5,
        messages: [{ role: "user", content: [{ type: "image", source: { type: "base64", media_type: "image/bmp", data: "AA" } }] }],
      }),
    );
    assert.equal(wrongBlock.status, 400);
    assert.match((await anthropicError(wrongBlock)).message, /^messages\.0\.content\.0\.source\.media_type: /);

    // Over the default 8 MiB body limit: announced, not sent (the ingress refuses it from the Content-Length, and a client
    // still writing 9 MB when the 413 comes would see its socket closed under it).
    const tooLarge = await headersOnly(e2e.stack.ingressUrl, "/v1/messages", 9 * 1024 * 1024);
    assert.match(tooLarge.head, /^HTTP\/1\.1 413/);
    const tooLargeBody = JSON.parse(tooLarge.body) as { type: string; error: { type: string } };
    assert.equal(tooLargeBody.type, "error");
    assert.equal(tooLargeBody.error.type, "request_too_large");

    // The other routes keep OpenAI's shape.
    const openaiShaped = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{not json",
    });
    assert.equal(openaiShaped.status, 400);
    const body = (await openaiShaped.json()) as { type?: string; error: { code: string } };
    assert.equal(body.type, undefined);
    assert.equal(body.error.code, "RUNNEL_ERR_INVALID_REQUEST");
  });

  test("a provider failure mid-stream ends with an error event the SDK raises, never a message_stop", async () => {
    const stream = client.messages.stream({ model: "cut", max_tokens: 1024, messages });
    const types: string[] = [];
    let text = "";
    await assert.rejects(
      (async () => {
        for await (const event of stream) {
          types.push(event.type);
          if (event.type === "content_block_delta" && event.delta.type === "text_delta") text += event.delta.text;
        }
      })(),
      (error: unknown) => {
        assert.ok(error instanceof Anthropic.APIError, `got ${String(error)}`);
        assert.equal(error.type, "api_error");
        return true;
      },
    );
    assert.ok(text.length > 0, "some text arrived before the cut");
    assert.equal(text, expected.slice(0, text.length));
    assert.equal(types.includes("message_stop"), false);
    assert.equal(types.includes("message_delta"), false);

    // On the wire: the last event is the error, in Anthropic's shape.
    const response = await post(e2e.stack.ingressUrl, JSON.stringify({ model: "cut", max_tokens: 1024, stream: true, messages }));
    assert.equal(response.status, 200);
    const events = parseEvents(await response.text());
    assert.deepEqual(events.at(-1)?.event, "error");
    assert.equal((events.at(-1)?.data.error as { type: string } | undefined)?.type, "api_error");
    assert.equal(events.filter((event) => event.event === "message_stop").length, 0);
  });

  test("a provider 500 before the first byte is an APIError with status 500", async () => {
    await assert.rejects(client.messages.create({ model: "fail-500", max_tokens: 10, messages }), (error: unknown) => {
      assert.ok(error instanceof Anthropic.InternalServerError, `got ${String(error)}`);
      assert.equal(error.status, 500);
      assert.equal(error.type, "api_error");
      assert.match(error.message, /500/);
      assert.equal(error.headers?.get("x-runnel-error-code"), "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
      return true;
    });
    // Streaming, the same failure is the HTTP 500 if it comes before the first ping, else an error event (the worker's
    // retries can outlast the 1 s heartbeat of the e2e config): either way an api_error with the provider's reason.
    await assert.rejects(client.messages.stream({ model: "fail-500", max_tokens: 10, messages }).finalMessage(), (error: unknown) => {
      assert.ok(error instanceof Anthropic.APIError, `got ${String(error)}`);
      assert.ok(error.status === 500 || error.status === undefined, `status ${error.status}`);
      assert.equal(error.type, "api_error");
      assert.match(error.message, /500/);
      return true;
    });
  });

  test("a quiet provider gets ping events, then its idle timeout is an error event (timeout_error)", async () => {
    const response = await post(e2e.stack.ingressUrl, JSON.stringify({ model: "stall", max_tokens: 1024, stream: true, messages }));
    assert.equal(response.status, 200);
    const events = parseEvents(await response.text());
    const names = events.map((event) => event.event);
    assert.equal(names[0], "message_start");
    assert.ok(names.includes("ping"), `pings while the provider was quiet: ${names.join(",")}`);
    for (const ping of events.filter((event) => event.event === "ping")) assert.deepEqual(ping.data, { type: "ping" });
    assert.equal(names.at(-1), "error");
    assert.equal((events.at(-1)?.data.error as { type: string } | undefined)?.type, "timeout_error");
    assert.equal(names.includes("message_stop"), false);
  });

  test("aborting the SDK's stream closes the provider's connection after the detach grace", async () => {
    const stream = client.messages.stream({ model: "long", max_tokens: 10_000, messages });
    let received = 0;
    let abortedAt = 0;
    for await (const event of stream) {
      if (event.type === "content_block_delta") received += 1;
      if (received === 5) {
        abortedAt = Date.now();
        stream.abort();
        break;
      }
    }
    assert.equal(received, 5);
    const seen = await waitForMockRequest(e2e.stack, (request) => request.model.startsWith("mock?tokens=5000") && request.clientClosed, 5_000);
    const latency = (seen.clientClosedAt ?? 0) - abortedAt;
    // The generation outlives the disconnect by the detach grace (1 s in the e2e config), then stops at once.
    assert.ok(latency >= 900 && latency <= 2_500, `provider saw the close ${latency} ms after the client aborted`);
    assert.ok(seen.tokensSent < 5000, "the provider stopped generating");
  });
});

describe("the Anthropic Messages API to a client slower than the stream", () => {
  let e2e: E2E;
  before(async () => {
    e2e = await startE2E("anthropic-slow-client");
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
  });

  test("falls behind, then catches up from the log: every token, in order, with ingress memory bounded", { timeout: 90_000 }, async () => {
    const ingressPid = e2e.stack.services.get("ingress")?.process.pid ?? 0;
    const before = rssKiB(ingressPid);
    const socket = await openPaused(e2e.stack.ingressUrl, "/v1/messages", JSON.stringify({ model: "burst", max_tokens: 1_000_000, stream: true, messages }));
    // Not reading for 1.5 s (under the 3 s stuck timeout) while the provider streams 200,000 tokens (about 25 MB of SSE) as fast as it can.
    await waitForMockRequest(e2e.stack, (request) => request.model === "mock?tokens=200000" && request.tokensSent > 20_000, 30_000);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const growthKiB = rssKiB(ingressPid) - before;
    const { head, body } = await readChunkedResponse(socket);
    assert.match(head, /^HTTP\/1\.1 200/);
    const events = parseEvents(body);
    assert.equal(events.at(-1)?.event, "message_stop");
    let text = "";
    let deltas = 0;
    for (const event of events) {
      if (event.event !== "content_block_delta") continue;
      deltas += 1;
      text += (event.data.delta as { text: string }).text;
    }
    assert.equal(deltas, 200_000);
    assert.equal(text, mockText(200_000, 0));
    assert.ok(growthKiB < 40 * 1024, `ingress RSS grew by ${growthKiB} KiB while the stream waited for the client`);
  });

  test("reads nothing at all: cut off after the stuck timeout and the provider is cancelled", { timeout: 60_000 }, async () => {
    const socket = await openPaused(e2e.stack.ingressUrl, "/v1/messages", JSON.stringify({ model: "flood", max_tokens: 1_000_000, stream: true, messages }));
    const openedAt = Date.now();
    const seen = await waitForMockRequest(e2e.stack, (request) => request.model === "mock?tokens=1000000" && request.clientClosed, 30_000);
    assert.ok(seen.tokensSent < 1_000_000, `the provider was stopped after ${seen.tokensSent} tokens`);
    const elapsed = (seen.clientClosedAt ?? 0) - openedAt;
    assert.ok(elapsed >= 2_500 && elapsed < 15_000, `cancelled ${elapsed} ms after the request`);
    socket.destroy();
  });
});

describe("the Anthropic Messages API with API keys", () => {
  const key = "sk-runnel-anthropic-e2e-0001";
  let e2e: E2E;
  let directory: string;

  before(async () => {
    directory = mkdtempSync(join(tmpdir(), "runnel-anthropic-"));
    const config = join(directory, "runnel.yaml");
    writeFileSync(
      config,
      [
        "providers:",
        "  - name: mock",
        "    type: mock",
        // Substituted by the config loader, not here.
        `    baseUrl: http://127.0.0.1:\${MOCK_PORT}/v1`,
        "models:",
        "  - name: mock",
        "    routes: [{ provider: mock, model: mock }]",
        "auth:",
        `  apiKeys: [{ name: team-a, key: "${key}" }]`,
        "",
      ].join("\n"),
    );
    e2e = await startE2E("anthropic-auth", config);
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
    if (directory) rmSync(directory, { recursive: true, force: true });
  });

  test("the SDK's x-api-key is accepted, and so is a Bearer token", async () => {
    const withKey = new Anthropic({ baseURL: e2e.stack.ingressUrl, apiKey: key, maxRetries: 0 });
    const message = await withKey.messages.create({ model: "mock", max_tokens: 1024, messages });
    assert.deepEqual(message.content, [{ type: "text", text: expected }]);
    const withToken = new Anthropic({ baseURL: e2e.stack.ingressUrl, apiKey: null, authToken: key, maxRetries: 0 });
    assert.equal(await withToken.messages.stream({ model: "mock", max_tokens: 1024, messages }).finalText(), expected);
  });

  test("a wrong or missing key is the SDK's AuthenticationError", async () => {
    const wrong = new Anthropic({ baseURL: e2e.stack.ingressUrl, apiKey: "sk-not-a-key-of-this-gateway", maxRetries: 0 });
    await assert.rejects(wrong.messages.create({ model: "mock", max_tokens: 10, messages }), (error: unknown) => {
      assert.ok(error instanceof Anthropic.AuthenticationError, `got ${String(error)}`);
      assert.equal(error.status, 401);
      assert.equal(error.type, "authentication_error");
      return true;
    });
    const response = await post(e2e.stack.ingressUrl, JSON.stringify({ model: "mock", max_tokens: 10, messages }));
    assert.equal(response.status, 401);
    assert.equal((await anthropicError(response)).type, "authentication_error");
  });
});
