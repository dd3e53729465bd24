import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { startMock } from "./test-support.js";
import { mockText } from "./text.js";

interface NamedEvent {
  event: string | undefined;
  data: string;
}

/** Splits an SSE body (LF or CRLF) into events with their `event:` names. */
function events(raw: string): NamedEvent[] {
  return raw
    .split(/\r?\n\r?\n/)
    .filter((block) => block.trim() !== "")
    .map((block) => {
      let event: string | undefined;
      const data: string[] = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      return { event, data: data.join("\n") };
    });
}

function anthropic(url: string, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}/v1/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", "anthropic-version": "2023-06-01", ...headers },
    body: JSON.stringify({ max_tokens: 1024, messages: [{ role: "user", content: "say something nice" }], ...body }),
  });
}

function gemini(
  url: string,
  model: string,
  body: Record<string, unknown> = {},
  method = "streamGenerateContent?alt=sse",
  headers: Record<string, string> = {},
) {
  return fetch(`${url}/v1beta/models/${encodeURIComponent(model)}:${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ contents: [{ role: "user", parts: [{ text: "say something nice" }] }], ...body }),
  });
}

interface Journaled {
  format: string;
  model: string;
  authorization: boolean;
  fail: string | null;
  status: number | null;
}

async function journal(url: string): Promise<Journaled[]> {
  return ((await (await fetch(`${url}/_mock/requests`)).json()) as { requests: Journaled[] }).requests;
}

describe("the Anthropic Messages format at /v1/messages", () => {
  test("streams the documented event sequence with the scenario's exact text and usage", async (t) => {
    const { url } = await startMock(t);
    const response = await anthropic(url, { model: "mock?tokens=6&seed=3", stream: true }, { "x-api-key": "sk-ant-secret" });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
    const list = events(await response.text());
    assert.deepEqual(
      list.map((item) => item.event),
      ["message_start", "content_block_start", "ping", ...Array(6).fill("content_block_delta"), "content_block_stop", "message_delta", "message_stop"],
    );
    for (const item of list) assert.equal((JSON.parse(item.data) as { type: string }).type, item.event);
    const start = JSON.parse(list[0]?.data ?? "{}") as { message: { id: string; model: string; usage: { input_tokens: number } } };
    assert.match(start.message.id, /^msg_mock_\d+$/);
    assert.equal(start.message.model, "mock?tokens=6&seed=3");
    assert.equal(start.message.usage.input_tokens, 3);
    const text = list
      .filter((item) => item.event === "content_block_delta")
      .map((item) => (JSON.parse(item.data) as { delta: { text: string } }).delta.text)
      .join("");
    assert.equal(text, mockText(6, 3));
    const delta = JSON.parse(list.at(-2)?.data ?? "{}") as { delta: { stop_reason: string }; usage: { output_tokens: number } };
    assert.equal(delta.delta.stop_reason, "end_turn");
    assert.equal(delta.usage.output_tokens, 6);
    const [seen] = await journal(url);
    assert.equal(seen?.format, "anthropic");
    assert.equal(seen?.authorization, true);
    assert.equal(JSON.stringify(await journal(url)).includes("sk-ant-secret"), false);
  });

  test("max_tokens below the scenario's length stops with max_tokens; non-stream answers one message", async (t) => {
    const { url } = await startMock(t);
    const list = events(await (await anthropic(url, { model: "mock?tokens=10", stream: true, max_tokens: 4 })).text());
    assert.equal((JSON.parse(list.at(-2)?.data ?? "{}") as { delta: { stop_reason: string } }).delta.stop_reason, "max_tokens");
    const whole = (await (await anthropic(url, { model: "mock?tokens=5" })).json()) as {
      type: string;
      content: { type: string; text: string }[];
      stop_reason: string;
      usage: { output_tokens: number };
    };
    assert.equal(whole.type, "message");
    assert.deepEqual(whole.content, [{ type: "text", text: mockText(5) }]);
    assert.equal(whole.stop_reason, "end_turn");
    assert.equal(whole.usage.output_tokens, 5);
  });

  test("a request without max_tokens is a 400 in Anthropic's error format", async (t) => {
    const { url } = await startMock(t);
    const response = await fetch(`${url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "mock", messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(response.status, 400);
    const body = (await response.json()) as { type: string; error: { type: string; message: string } };
    assert.equal(body.type, "error");
    assert.equal(body.error.type, "invalid_request_error");
    assert.match(body.error.message, /max_tokens/);
  });

  test("failures in Anthropic's own shapes: 429 with retry-after, 529 overloaded, context length, content policy, auth", async (t) => {
    const { url } = await startMock(t);
    const cases: Array<[string, number, string, RegExp]> = [
      ["mock?fail=429&retry_after=4", 429, "rate_limit_error", /rate limit/],
      ["mock?fail=429-no-retry-after", 429, "rate_limit_error", /rate limit/],
      ["mock?fail=500", 500, "api_error", /Internal server error/],
      ["mock?fail=503", 529, "overloaded_error", /Overloaded/],
      ["mock?fail=context-length", 400, "invalid_request_error", /prompt is too long: \d+ tokens > 8192 maximum/],
      ["mock?fail=content-policy", 400, "invalid_request_error", /content filtering policy/],
      ["mock?fail=auth", 401, "authentication_error", /invalid x-api-key/],
    ];
    for (const [model, status, type, message] of cases) {
      const response = await anthropic(url, { model, stream: true });
      assert.equal(response.status, status, model);
      const body = (await response.json()) as { type: string; error: { type: string; message: string } };
      assert.equal(body.error.type, type, model);
      assert.match(body.error.message, message, model);
      assert.equal(response.headers.get("retry-after"), model.includes("retry_after=4") ? "4" : null, model);
    }
  });

  test("no-prefill refuses a conversation ending with an assistant turn, and serves one ending with the user", async (t) => {
    const { url } = await startMock(t);
    const refused = await anthropic(url, {
      model: "mock?fail=no-prefill",
      stream: true,
      messages: [
        { role: "user", content: "Name a colour." },
        { role: "assistant", content: "The colour is" },
      ],
    });
    assert.equal(refused.status, 400);
    assert.match(((await refused.json()) as { error: { message: string } }).error.message, /does not support assistant message prefill/);
    const served = await anthropic(url, { model: "mock?fail=no-prefill&tokens=2", stream: true });
    assert.equal(served.status, 200);
    assert.equal(events(await served.text()).at(-1)?.event, "message_stop");
  });

  test("no-done leaves out message_stop; malformed sends one event that is not JSON", async (t) => {
    const { url } = await startMock(t);
    const noDone = events(await (await anthropic(url, { model: "mock?fail=no-done&tokens=2", stream: true })).text());
    assert.equal(noDone.at(-1)?.event, "message_delta");
    const malformed = events(await (await anthropic(url, { model: "mock?fail=malformed&tokens=3&after=1", stream: true })).text());
    assert.equal(malformed.filter((item) => item.data === "{not json").length, 1);
    assert.equal(malformed.at(-1)?.event, "message_stop");
  });
});

describe("the Gemini format at /v1beta/models/{model}:streamGenerateContent", () => {
  test("streams GenerateContentResponse events separated by CRLF, the finish reason and usage on the last", async (t) => {
    const { url } = await startMock(t);
    const response = await gemini(url, "mock?tokens=4&seed=2", {}, "streamGenerateContent?alt=sse", { "x-goog-api-key": "AIza-secret" });
    assert.equal(response.status, 200);
    const raw = await response.text();
    assert.ok(raw.includes("\r\n\r\n"));
    const list = events(raw);
    assert.equal(list.length, 5);
    const chunks = list.map(
      (item) =>
        JSON.parse(item.data) as {
          candidates: { content: { parts: { text: string }[]; role: string }; finishReason?: string }[];
          usageMetadata: { promptTokenCount: number; candidatesTokenCount?: number };
          modelVersion: string;
        },
    );
    assert.equal(chunks.map((chunk) => chunk.candidates[0]?.content.parts[0]?.text ?? "").join(""), mockText(4, 2));
    assert.equal(chunks.at(-1)?.candidates[0]?.finishReason, "STOP");
    assert.equal(chunks.at(-1)?.usageMetadata.candidatesTokenCount, 4);
    assert.equal(chunks[0]?.candidates[0]?.content.role, "model");
    assert.equal(chunks[0]?.modelVersion, "mock?tokens=4&seed=2");
    const [seen] = await journal(url);
    assert.equal(seen?.format, "gemini");
    assert.equal(seen?.model, "mock?tokens=4&seed=2");
    assert.equal(seen?.authorization, true);
  });

  test("generateContent answers one response; maxOutputTokens stops with MAX_TOKENS", async (t) => {
    const { url } = await startMock(t);
    const whole = (await (await gemini(url, "mock?tokens=5", { generationConfig: { maxOutputTokens: 3 } }, "generateContent")).json()) as {
      candidates: { content: { parts: { text: string }[] }; finishReason: string }[];
    };
    assert.equal(whole.candidates[0]?.content.parts[0]?.text, mockText(3));
    assert.equal(whole.candidates[0]?.finishReason, "MAX_TOKENS");
  });

  test("streamGenerateContent without alt=sse is refused", async (t) => {
    const { url } = await startMock(t);
    const response = await gemini(url, "mock", {}, "streamGenerateContent");
    assert.equal(response.status, 400);
    assert.match(((await response.json()) as { error: { message: string } }).error.message, /alt=sse/);
  });

  test("failures in Google's shapes: RetryInfo instead of Retry-After, a bad key as a 400, a blocked prompt as a 200", async (t) => {
    const { url } = await startMock(t);
    const limited = await gemini(url, "mock?fail=429&retry_after=7");
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get("retry-after"), null);
    const limitedBody = (await limited.json()) as { error: { status: string; details: { retryDelay?: string }[] } };
    assert.equal(limitedBody.error.status, "RESOURCE_EXHAUSTED");
    assert.equal(limitedBody.error.details[0]?.retryDelay, "7s");
    const noRetry = (await (await gemini(url, "mock?fail=429-no-retry-after")).json()) as { error: { details?: unknown } };
    assert.equal(noRetry.error.details, undefined);

    const badKey = await gemini(url, "mock?fail=auth");
    assert.equal(badKey.status, 400);
    assert.match(await badKey.text(), /API_KEY_INVALID/);

    const overloaded = await gemini(url, "mock?fail=503");
    assert.equal(overloaded.status, 503);
    assert.equal(((await overloaded.json()) as { error: { status: string } }).error.status, "UNAVAILABLE");

    const tooLong = await gemini(url, "mock?fail=context-length");
    assert.equal(tooLong.status, 400);
    assert.match(await tooLong.text(), /exceeds the maximum number of tokens allowed \(8192\)/);

    const blocked = await gemini(url, "mock?fail=content-policy");
    assert.equal(blocked.status, 200);
    const [event] = events(await blocked.text());
    assert.equal((JSON.parse(event?.data ?? "{}") as { promptFeedback: { blockReason: string } }).promptFeedback.blockReason, "SAFETY");
  });

  test("no-prefill refuses contents ending with a model turn", async (t) => {
    const { url } = await startMock(t);
    const response = await gemini(url, "mock?fail=no-prefill", {
      contents: [
        { role: "user", parts: [{ text: "Name a colour." }] },
        { role: "model", parts: [{ text: "The colour is" }] },
      ],
    });
    assert.equal(response.status, 400);
    assert.match(await response.text(), /end with a user role/);
  });

  test("the mid-stream failures work in this format too: cut closes after `after` tokens", async (t) => {
    const { url } = await startMock(t);
    const response = await gemini(url, "mock?fail=cut&after=2");
    assert.equal(response.status, 200);
    await assert.rejects(response.text());
    const [seen] = await journal(url);
    assert.equal(seen?.fail, "cut");
  });
});
