/**
 * Large requests end to end, through real processes (mock provider, control
 * plane, worker, ingress) and a real nats-server with its default
 * max_payload of 1 MiB, with the official `openai` and `@anthropic-ai/sdk`
 * clients, fetch, and the `ws` client. Every request up to
 * `ingress.bodyLimitBytes` (the default, 8 MiB) streams like a small one and
 * reaches the provider whole (the mock's journal keeps each turn's length
 * and SHA-256); one byte over is a 413 in the API's own shape over HTTP and
 * an error frame over WebSocket, never a 5xx.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { mockText } from "@runnel/mock-provider";
import OpenAI from "openai";
import WebSocket from "ws";
import { type E2E, parseSse, startE2E, waitForMockRequest } from "./helpers.js";

const MB = 1_000_000;
/** The default `ingress.bodyLimitBytes` the e2e config keeps. */
const LIMIT = 8 * 1024 * 1024;
const expected = mockText(32, 0);

/** `bytes` characters of random text: base64, one byte each in UTF-8 and in JSON, and unique to the test that makes it. */
function longText(bytes: number): string {
  return randomBytes(Math.ceil((bytes * 3) / 4))
    .toString("base64")
    .slice(0, bytes);
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/** A chat completions body of exactly `bytes` bytes whose user turn is filled to fit; returns the body and the turn. */
function openAIBodyOf(bytes: number, extra: Record<string, unknown> = {}): { body: string; content: string } {
  const shape = (content: string) => JSON.stringify({ model: "mock", ...extra, messages: [{ role: "user", content }] });
  const content = longText(bytes - Buffer.byteLength(shape("")));
  const body = shape(content);
  assert.equal(Buffer.byteLength(body), bytes);
  return { body, content };
}

/** The mock received this turn whole: the journal entry whose first turn has its length and digest. */
async function providerGot(e2e: E2E, content: string): Promise<void> {
  const digest = sha256(content);
  const entry = await waitForMockRequest(e2e.stack, (request) => request.messageDigests?.[0]?.sha256 === digest, 10_000);
  assert.equal(entry.messageDigests[0]?.length, content.length);
  assert.equal(entry.messages[0]?.text, content.slice(0, 4096));
}

interface WsFrame {
  type: string;
  id: string | number | null;
  streamId?: string;
  chunk?: { choices: Array<{ delta: { content?: string } }> };
  finish_reason?: string;
  error?: { message: string; type: string; param: string | null; code: string };
}

/** Opens a socket; `frames` records every server frame. */
async function openSocket(url: string): Promise<{ socket: WebSocket; frames: WsFrame[]; closed: Promise<number> }> {
  const socket = new WebSocket(url);
  const frames: WsFrame[] = [];
  socket.on("message", (data) => frames.push(JSON.parse(String(data)) as WsFrame));
  const closed = new Promise<number>((resolve) => socket.once("close", (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("error", reject);
  });
  return { socket, frames, closed };
}

/** Resolves with the terminal frame (done or error) of request `id`. */
async function terminal(frames: WsFrame[], id: string, timeoutMs: number): Promise<WsFrame> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = frames.find((frame) => frame.id === id && (frame.type === "done" || frame.type === "error"));
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no terminal frame for ${id} within ${timeoutMs} ms; got ${JSON.stringify(frames.slice(-3))}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const wsText = (frames: WsFrame[], id: string) =>
  frames
    .filter((frame) => frame.id === id && frame.type === "chunk")
    .map((frame) => frame.chunk?.choices[0]?.delta.content ?? "")
    .join("");

describe("requests up to the body limit stream like small ones; one byte over is a 413", () => {
  let e2e: E2E;
  let openai: OpenAI;
  let anthropic: Anthropic;

  before(async () => {
    e2e = await startE2E("large-requests");
    openai = new OpenAI({ baseURL: `${e2e.stack.ingressUrl}/v1`, apiKey: "runnel-has-no-auth-here", maxRetries: 0 });
    anthropic = new Anthropic({ baseURL: e2e.stack.ingressUrl, apiKey: "runnel-has-no-auth-here", maxRetries: 0 });
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
  });

  /** Streams one completion with the SDK; the time to the first content token and the text. */
  const streamWithSdk = async (content: string) => {
    const startedAt = performance.now();
    const stream = await openai.chat.completions.create({ model: "mock", stream: true, messages: [{ role: "user", content }] });
    let text = "";
    let firstTokenMs: number | undefined;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta?.content ?? "";
      if (delta && firstTokenMs === undefined) firstTokenMs = performance.now() - startedAt;
      text += delta;
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    return { text, finish, firstTokenMs: firstTokenMs ?? Number.NaN, totalMs: performance.now() - startedAt };
  };

  for (const size of [1.5 * MB, 6 * MB]) {
    test(`the openai SDK streams a ${size / MB} MB request whole, and the provider receives all of it`, async (t) => {
      const content = longText(size);
      const small = await streamWithSdk("Tell me about rivers.");
      const large = await streamWithSdk(content);
      assert.equal(large.text, expected);
      assert.equal(large.finish, "stop");
      await providerGot(e2e, content);
      t.diagnostic(
        `time to first token: ${large.firstTokenMs.toFixed(0)} ms for ${size / MB} MB, ${small.firstTokenMs.toFixed(0)} ms for a small request; whole stream ${large.totalMs.toFixed(0)} ms`,
      );
      // Generous: a loaded 2-core machine parses, stores and reads back several megabytes on the way.
      assert.ok(large.firstTokenMs < 10_000, `first token after ${large.firstTokenMs} ms`);
    });
  }

  test("a body of exactly the limit streams; one byte more is a 413 in OpenAI's shape, and the ingress stays healthy", async () => {
    const atLimit = openAIBodyOf(LIMIT, { stream: true });
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: atLimit.body,
    });
    assert.equal(response.status, 200);
    const { events } = parseSse(await response.text());
    assert.equal(events.at(-1)?.data, "[DONE]");
    await providerGot(e2e, atLimit.content);

    const over = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: openAIBodyOf(LIMIT + 1, { stream: true }).body,
    });
    assert.equal(over.status, 413);
    assert.match(over.headers.get("content-type") ?? "", /^application\/json/);
    const body = (await over.json()) as { error: { message: string; type: string; param: string | null; code: string } };
    assert.deepEqual(body, {
      error: { message: `Request body is larger than ${LIMIT} bytes`, type: "invalid_request_error", param: null, code: "RUNNEL_ERR_BODY_TOO_LARGE" },
    });
    assert.equal((await fetch(`${e2e.stack.ingressUrl}/readyz`)).status, 200);
  });

  test("the openai SDK gets one byte over the limit as a 413 APIError (which SDKs do not retry), not a 5xx", async () => {
    const content = longText(LIMIT + 1 - Buffer.byteLength(JSON.stringify({ model: "mock", stream: true, messages: [{ role: "user", content: "" }] })));
    await assert.rejects(openai.chat.completions.create({ model: "mock", stream: true, messages: [{ role: "user", content }] }), (error: unknown) => {
      assert.ok(error instanceof OpenAI.APIError, `got ${String(error)}`);
      assert.equal(error.status, 413);
      assert.equal(error.code, "RUNNEL_ERR_BODY_TOO_LARGE");
      assert.equal(error.type, "invalid_request_error");
      return true;
    });
  });

  test("the Anthropic API: the SDK streams a 1.5 MB request whole; one byte over the limit is a 413 in Anthropic's shape", async () => {
    const content = longText(1.5 * MB);
    const stream = anthropic.messages.stream({ model: "mock", max_tokens: 1024, messages: [{ role: "user", content }] });
    const message = await stream.finalMessage();
    assert.equal(message.stop_reason, "end_turn");
    assert.equal(message.content[0]?.type === "text" ? message.content[0].text : "", expected);
    await providerGot(e2e, content);

    const shape = (text: string) => JSON.stringify({ model: "mock", max_tokens: 1024, stream: true, messages: [{ role: "user", content: text }] });
    const over = shape(longText(LIMIT + 1 - Buffer.byteLength(shape(""))));
    assert.equal(Buffer.byteLength(over), LIMIT + 1);
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/messages`, { method: "POST", headers: { "content-type": "application/json" }, body: over });
    assert.equal(response.status, 413);
    assert.equal(response.headers.get("x-runnel-error-code"), "RUNNEL_ERR_BODY_TOO_LARGE");
    assert.deepEqual(await response.json(), { type: "error", error: { type: "request_too_large", message: `Request body is larger than ${LIMIT} bytes` } });

    // The SDK sees the same answer as its own error type, with the status it does not retry.
    await assert.rejects(
      anthropic.messages.create({ model: "mock", max_tokens: 1024, messages: [{ role: "user", content: longText(LIMIT) }] }),
      (error: unknown) => {
        assert.ok(error instanceof Anthropic.APIError, `got ${String(error)}`);
        assert.equal(error.status, 413);
        return true;
      },
    );
  });

  test("WebSocket: 1.5 MB and 6 MB requests stream on one socket; a body one byte over the limit is an error frame and the socket stays open", async () => {
    const { socket, frames, closed } = await openSocket(`${e2e.stack.ingressUrl.replace("http", "ws")}/v1/ws`);
    try {
      const contents = { medium: longText(1.5 * MB), large: longText(6 * MB) };
      for (const [id, content] of Object.entries(contents)) {
        socket.send(JSON.stringify({ type: "request", id, body: { model: "mock", messages: [{ role: "user", content }] } }));
      }
      for (const [id, content] of Object.entries(contents)) {
        const end = await terminal(frames, id, 30_000);
        assert.equal(end.type, "done", JSON.stringify(end));
        assert.equal(end.finish_reason, "stop");
        assert.equal(wsText(frames, id), expected);
        await providerGot(e2e, content);
      }

      // One byte over: the body as its JSON text, which is how HTTP counts it too.
      const overBody = JSON.parse(openAIBodyOf(LIMIT + 1).body) as Record<string, unknown>;
      assert.equal(Buffer.byteLength(JSON.stringify(overBody)), LIMIT + 1);
      socket.send(JSON.stringify({ type: "request", id: "over", body: overBody }));
      const refused = await terminal(frames, "over", 10_000);
      assert.equal(refused.type, "error");
      assert.equal(refused.streamId, undefined, "no stream was opened");
      assert.deepEqual(refused.error, {
        message: `Request body is larger than ${LIMIT} bytes`,
        type: "invalid_request_error",
        param: "body",
        code: "RUNNEL_ERR_BODY_TOO_LARGE",
      });
      // The socket is still usable.
      socket.send(JSON.stringify({ type: "request", id: "after", body: { model: "mock", messages: [{ role: "user", content: "Hello" }] } }));
      assert.equal((await terminal(frames, "after", 10_000)).type, "done");
      assert.equal(socket.readyState, WebSocket.OPEN);
    } finally {
      socket.close();
      await closed;
    }
  });
});
