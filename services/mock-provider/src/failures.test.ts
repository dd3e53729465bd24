import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { chat, chunks, contentOf, SseReader, startMock } from "./test-support.js";
import { mockText } from "./text.js";

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** Timers pending in this process. */
function pendingTimeouts(): number {
  return process.getActiveResourcesInfo().filter((resource) => resource === "Timeout").length;
}

async function errorOf(response: Response): Promise<ErrorBody["error"]> {
  const body = (await response.json()) as ErrorBody;
  assert.deepEqual(Object.keys(body.error), ["message", "type", "param", "code"]);
  return body.error;
}

describe("error answers", () => {
  test("429 with Retry-After (default 1 s, or retry_after)", async (t) => {
    const { url } = await startMock(t);
    const response = await chat(url, { model: "mock?fail=429", stream: true });
    assert.equal(response.status, 429);
    assert.equal(response.headers.get("retry-after"), "1");
    const error = await errorOf(response);
    assert.equal(error.code, "rate_limit_exceeded");
    assert.match(error.message, /^Rate limit reached for mock /);
    const custom = await chat(url, { model: "mock?fail=429&retry_after=7" });
    assert.equal(custom.headers.get("retry-after"), "7");
    await custom.body?.cancel();
  });

  test("429-no-retry-after has no Retry-After", async (t) => {
    const { url } = await startMock(t);
    const response = await chat(url, { model: "mock?fail=429-no-retry-after" });
    assert.equal(response.status, 429);
    assert.equal(response.headers.get("retry-after"), null);
    assert.equal((await errorOf(response)).code, "rate_limit_exceeded");
  });

  test("500 and 503 are server_error", async (t) => {
    const { url } = await startMock(t);
    for (const status of [500, 503]) {
      const response = await chat(url, { model: `mock?fail=${status}`, stream: true });
      assert.equal(response.status, status);
      assert.equal((await errorOf(response)).type, "server_error");
    }
  });

  test("500-once fails the first request of a key only", async (t) => {
    const { url, app } = await startMock(t);
    const first = await chat(url, { model: "mock?fail=500-once&key=a&tokens=3", stream: true });
    assert.equal(first.status, 500);
    await first.body?.cancel();
    const second = await chat(url, { model: "mock?fail=500-once&key=a&tokens=3", stream: true });
    assert.equal(second.status, 200);
    assert.equal(contentOf(chunks(await new SseReader(second).rest())), mockText(3, 0));
    const otherKey = await chat(url, { model: "mock?fail=500-once&key=b&tokens=3" });
    assert.equal(otherKey.status, 500, "a new key fails once too");
    await otherKey.body?.cancel();
    assert.deepEqual(
      app.journal.entries().map((entry) => entry.status),
      [500, 200, 500],
    );
  });

  test("context-length, content-policy and auth", async (t) => {
    const { url } = await startMock(t);
    const contextLength = await chat(url, { model: "mock?fail=context-length", stream: true });
    assert.equal(contextLength.status, 400);
    const error = await errorOf(contextLength);
    assert.equal(error.code, "context_length_exceeded");
    assert.equal(error.type, "invalid_request_error");
    assert.match(error.message, /^This model's maximum context length is 8192 tokens\. However, your messages resulted in \d+ tokens/);

    const policy = await chat(url, { model: "mock?fail=content-policy" });
    assert.equal(policy.status, 400);
    assert.equal((await errorOf(policy)).code, "content_policy_violation");

    const auth = await chat(url, { model: "mock?fail=auth" }, { headers: { "content-type": "application/json", authorization: "Bearer sk-wrong" } });
    assert.equal(auth.status, 401);
    const authError = await errorOf(auth);
    assert.equal(authError.code, "invalid_api_key");
    assert.ok(!authError.message.includes("sk-wrong"));
  });
});

describe("connection and stream failures", () => {
  test("reset: the connection is reset before any response, so fetch rejects", async (t) => {
    const { url, app } = await startMock(t);
    await assert.rejects(chat(url, { model: "mock?fail=reset", stream: true }, { signal: AbortSignal.timeout(2000) }), TypeError);
    const entry = await app.journal.waitFor((item) => item.fail === "reset", 1000);
    assert.equal(entry.headersSentAt, null);
    assert.equal(entry.clientClosed, false, "a reset by the server is not a client close");
  });

  test("no-response: never answers; the client giving up is recorded", async (t) => {
    const { url, app } = await startMock(t);
    await assert.rejects(chat(url, { model: "mock?fail=no-response", stream: true }, { signal: AbortSignal.timeout(300) }), /TimeoutError|aborted/);
    const entry = await app.journal.waitFor((item) => item.clientClosed, 1000);
    assert.equal(entry.headersSentAt, null);
    assert.equal(entry.finished, false);
  });

  test("stall: `after` tokens, then silence with the connection open", async (t) => {
    const { url, app } = await startMock(t);
    const reader = new SseReader(await chat(url, { model: "mock?fail=stall&after=3&tokens=10", stream: true }));
    const events: string[] = [];
    for (let index = 0; index < 4; index++) {
      const event = await reader.next(1000);
      assert.equal(typeof event, "string");
      events.push(event as string);
    }
    assert.equal(contentOf(chunks(events)), mockText(3, 0));
    assert.equal(await reader.next(300), "timeout", "no more data within 300 ms");
    const [entry] = app.journal.entries();
    assert.equal(entry?.tokensSent, 3);
    assert.equal(entry?.finished, false);
    assert.equal(entry?.clientClosed, false, "the connection is still open");
    const closing = Date.now();
    await app.close();
    assert.ok(Date.now() - closing < 1000, "close() ends stalled connections");
  });

  test("stall without a stream never answers", async (t) => {
    const { url, app } = await startMock(t);
    await assert.rejects(chat(url, { model: "mock?fail=stall" }, { signal: AbortSignal.timeout(300) }));
    const entry = await app.journal.waitFor((item) => item.clientClosed, 1000);
    assert.equal(entry.status, null);
  });

  test("cut: `after` tokens, then the connection closes with no finish chunk and no [DONE]", async (t) => {
    const { url, app } = await startMock(t);
    const reader = new SseReader(await chat(url, { model: "mock?fail=cut&after=4&tokens=10", stream: true }));
    const events: string[] = [];
    let failed = false;
    for (;;) {
      let event: string | null | "timeout";
      try {
        event = await reader.next(2000);
      } catch {
        failed = true; // Clients see the unfinished chunked body as an error.
        break;
      }
      assert.notEqual(event, "timeout", "the connection must close, not stall");
      if (event === null) break;
      events.push(event);
    }
    assert.ok(failed, "the body ends abnormally");
    assert.ok(!events.includes("[DONE]"));
    const parsed = chunks(events);
    assert.equal(contentOf(parsed), mockText(4, 0));
    assert.ok(
      parsed.every((chunk) => chunk.choices[0]?.finish_reason === null),
      "no finish chunk",
    );
    const entry = await app.journal.waitFor((item) => item.fail === "cut", 1000);
    assert.equal(entry.finished, false);
    assert.equal(entry.clientClosed, false, "a cut by the server is not a client close");
  });

  test("cut without a stream: a truncated body", async (t) => {
    const { url } = await startMock(t);
    const response = await chat(url, { model: "mock?fail=cut" });
    assert.equal(response.status, 200);
    await assert.rejects(response.text());
  });

  test("malformed: a non-JSON event after `after` tokens, then the stream goes on", async (t) => {
    const { url } = await startMock(t);
    const events = await new SseReader(await chat(url, { model: "mock?fail=malformed&after=2&tokens=5", stream: true })).rest();
    assert.equal(events[3], "{not json", "role chunk, 2 tokens, then the malformed event");
    assert.equal(events.filter((event) => event === "{not json").length, 1);
    assert.equal(events.at(-1), "[DONE]");
    const parsed = chunks(events.filter((event) => event !== "{not json"));
    assert.equal(contentOf(parsed), mockText(5, 0));
    assert.equal(parsed.at(-1)?.choices[0]?.finish_reason, "stop");
  });

  test("malformed without a stream: a body that is not JSON", async (t) => {
    const { url } = await startMock(t);
    const response = await chat(url, { model: "mock?fail=malformed" });
    assert.equal(response.status, 200);
    await assert.rejects(response.json(), SyntaxError);
  });

  test("no-done: everything but [DONE], and the response ends cleanly", async (t) => {
    const { url, app } = await startMock(t);
    const events = await new SseReader(await chat(url, { model: "mock?fail=no-done&tokens=4", stream: true, stream_options: { include_usage: true } })).rest();
    assert.ok(!events.includes("[DONE]"));
    const parsed = chunks(events);
    assert.equal(contentOf(parsed), mockText(4, 0));
    assert.equal(parsed.at(-2)?.choices[0]?.finish_reason, "stop");
    assert.equal(parsed.at(-1)?.usage?.completion_tokens, 4);
    assert.equal((await app.journal.waitFor((item) => item.finished, 1000)).fail, "no-done");
  });
});

describe("client aborts", () => {
  test("an abort mid-stream is recorded as clientClosed within 1 s, and writing stops", async (t) => {
    const { url, app } = await startMock(t);
    const controller = new AbortController();
    const reader = new SseReader(await chat(url, { model: "mock?tokens=200&itl=20", stream: true }, { signal: controller.signal }));
    await reader.next(1000); // role
    await reader.next(1000); // first token
    const abortedAt = Date.now();
    controller.abort();
    const entry = await app.journal.waitFor((item) => item.clientClosed, 1000);
    assert.ok(entry.clientClosedAt !== null && entry.clientClosedAt - abortedAt < 1000);
    assert.equal(entry.finished, false);
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(app.journal.entries()[0]?.tokensSent, entry.tokensSent, "no token is written after the close");
  });

  test("an abort during ttft is recorded too", async (t) => {
    const { url, app } = await startMock(t);
    const controller = new AbortController();
    const timeoutsBefore = pendingTimeouts();
    const reader = new SseReader(await chat(url, { model: "mock?ttft=5000", stream: true }, { signal: controller.signal }));
    await reader.next(1000); // role
    controller.abort();
    const entry = await app.journal.waitFor((item) => item.clientClosed, 1000);
    assert.equal(entry.tokensSent, 0);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(pendingTimeouts(), timeoutsBefore, "the ttft timer is cleared");
  });
});
