import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { describe, type TestContext, test } from "node:test";
import { parseConfig, RunnelError } from "@runnel/shared";
import { ProviderError } from "./http.js";
import { createOpenAIAdapter } from "./openai.js";
import { DEFAULT_RETRY_POLICY, type RetryNotice, type RetryPolicy, retryDelay, retryPolicyFromConfig, withRetries } from "./retry.js";
import { type Handler, rejection, runAdapter, sse, TEST_TIMEOUTS, type Upstream, upstream, within } from "./test-support.js";

const POLICY: RetryPolicy = { maxAttempts: 3, budgetMs: 10_000, baseDelayMs: 100, maxDelayMs: 1_000 };
const BOUNDED = { timeout: 8_000 };

const chunk = (delta: Record<string, unknown>, finish: string | null = null) => ({
  id: "c",
  object: "chat.completion.chunk",
  created: 1,
  model: "m",
  choices: [{ index: 0, delta, finish_reason: finish }],
});

const OK_BODY = sse(chunk({ role: "assistant", content: "" })) + sse(chunk({ content: "ok" })) + sse(chunk({}, "stop")) + sse("[DONE]");

const ok: Handler = (_request, response) => {
  response.writeHead(200, { "content-type": "text/event-stream" });
  response.end(OK_BODY);
};

function status(code: number, message: string, headers: Record<string, string> = {}): Handler {
  return (_request, response) => {
    response.writeHead(code, { "content-type": "application/json", ...headers });
    response.end(JSON.stringify({ error: { message } }));
  };
}

/** Answers with the handlers in turn; the last one repeats. */
function sequence(...handlers: Handler[]): Handler {
  let index = 0;
  return (request, response, seen) => {
    const handler = handlers[Math.min(index, handlers.length - 1)];
    index += 1;
    handler?.(request, response, seen);
  };
}

function retrying(up: Upstream, policy: RetryPolicy = POLICY, notices: RetryNotice[] = []) {
  return withRetries(createOpenAIAdapter({ agents: up.agents }), { policy: () => policy, onRetry: (notice) => notices.push(notice), random: () => 0.5 });
}

function gaps(up: Upstream): number[] {
  return up.seen.slice(1).map((entry, index) => entry.at - (up.seen[index]?.at ?? 0));
}

describe("retryDelay", () => {
  const unavailable = new ProviderError("RUNNEL_ERR_PROVIDER_UNAVAILABLE", "503", { retry: true });

  test("only a retryable ProviderError is retried", () => {
    assert.equal(retryDelay(new RunnelError("RUNNEL_ERR_PROVIDER_TIMEOUT", "no first token"), 1, 0, POLICY), undefined);
    assert.equal(retryDelay(new Error("boom"), 1, 0, POLICY), undefined);
    assert.equal(retryDelay(new ProviderError("RUNNEL_ERR_PROVIDER_BAD_REQUEST", "400", { retry: false }), 1, 0, POLICY), undefined);
    assert.notEqual(retryDelay(unavailable, 1, 0, POLICY), undefined);
  });

  test("backoff doubles per attempt, half fixed and half random, and is capped", () => {
    assert.equal(
      retryDelay(unavailable, 1, 0, POLICY, () => 0),
      50,
    );
    assert.equal(
      retryDelay(unavailable, 1, 0, POLICY, () => 1),
      100,
    );
    assert.equal(
      retryDelay(unavailable, 2, 0, POLICY, () => 0),
      100,
    );
    assert.equal(
      retryDelay(unavailable, 2, 0, POLICY, () => 1),
      200,
    );
    const many = { ...POLICY, maxAttempts: 10 };
    assert.equal(
      retryDelay(unavailable, 8, 0, many, () => 1),
      1_000,
    );
    assert.equal(
      retryDelay(unavailable, 8, 0, many, () => 0),
      500,
    );
  });

  test("no attempt after maxAttempts", () => {
    assert.notEqual(retryDelay(unavailable, 2, 0, POLICY), undefined);
    assert.equal(retryDelay(unavailable, 3, 0, POLICY), undefined);
    assert.equal(retryDelay(unavailable, 1, 0, { ...POLICY, maxAttempts: 1 }), undefined);
  });

  test("Retry-After is honoured as given, even above maxDelay, but never past the budget", () => {
    const limited = (ms: number) => new ProviderError("RUNNEL_ERR_PROVIDER_RATE_LIMITED", "429", { retry: true, retryAfterMs: ms });
    assert.equal(retryDelay(limited(5_000), 1, 0, POLICY), 5_000);
    assert.equal(retryDelay(limited(0), 1, 0, POLICY), 0);
    assert.equal(retryDelay(limited(30_000), 1, 0, POLICY), undefined);
    assert.equal(retryDelay(limited(5_000), 1, 6_000, POLICY), undefined);
    assert.equal(
      retryDelay(unavailable, 1, 9_990, POLICY, () => 0),
      undefined,
    );
  });

  test("runnel.yaml's providers[].retries: defaults equal DEFAULT_RETRY_POLICY; durations are read; bad values name the field", () => {
    const yaml = (retries: string) =>
      `providers:\n  - { name: p, type: anthropic, baseUrl: "http://x"${retries} }\nmodels:\n  - { name: m, routes: [{ provider: p, model: m }] }\n`;
    const defaults = parseConfig(yaml(""), {}).providers[0]?.retries;
    assert.ok(defaults);
    assert.deepEqual(retryPolicyFromConfig(defaults), DEFAULT_RETRY_POLICY);
    const custom = parseConfig(yaml(", retries: { maxAttempts: 5, budget: 2s, baseDelay: 50ms, maxDelay: 1s }"), {}).providers[0]?.retries;
    assert.ok(custom);
    assert.deepEqual(retryPolicyFromConfig(custom), { maxAttempts: 5, budgetMs: 2_000, baseDelayMs: 50, maxDelayMs: 1_000 });
    assert.throws(() => parseConfig(yaml(", retries: { maxAttempts: 0 }"), {}), /providers\[0\]\.retries\.maxAttempts/);
    assert.throws(() => parseConfig(yaml(", retries: { budget: soon }"), {}), /providers\[0\]\.retries\.budget/);
    assert.throws(() => parseConfig(yaml(", retries: { attempts: 2 }"), {}), /providers\[0\]\.retries/);
  });
});

describe("retries before the first token, against an HTTP server", () => {
  test("429 with Retry-After: 1 waits about a second, then the second attempt streams; the client sees only attempt 2", BOUNDED, async (t) => {
    const up = await upstream(t, sequence(status(429, "Rate limit reached", { "retry-after": "1" }), ok));
    const notices: RetryNotice[] = [];
    const perStream: unknown[] = [];
    const run = runAdapter(retrying(up, POLICY, notices), up, { onRetry: (notice) => perStream.push(notice) });
    await run.result;
    assert.equal(up.seen.length, 2);
    // The stream's own listener (its telemetry) hears of the retry too.
    assert.deepEqual(perStream, [{ provider: "p", attempt: 1, delayMs: 1000, code: "RUNNEL_ERR_PROVIDER_RATE_LIMITED" }]);
    const [gap] = gaps(up);
    assert.ok(gap !== undefined && gap >= 950 && gap < 2_500, `second attempt ${gap?.toFixed(0)} ms after the first`);
    assert.deepEqual(run.events, [
      { $case: "started", value: { provider: "p", model: "model-x", attempt: 2 } },
      { $case: "textDelta", value: { text: "ok" } },
      { $case: "done", value: { finishReason: 1 } },
    ]);
    assert.deepEqual(
      notices.map((notice) => [notice.attempt, notice.delayMs, notice.error.code]),
      [[1, 1000, "RUNNEL_ERR_PROVIDER_RATE_LIMITED"]],
    );
  });

  test("a fractional Retry-After is honoured", BOUNDED, async (t) => {
    const up = await upstream(t, sequence(status(429, "slow down", { "retry-after": "0.3" }), ok));
    await runAdapter(retrying(up), up).result;
    const [gap] = gaps(up);
    assert.ok(gap !== undefined && gap >= 280 && gap < 1_500, `${gap?.toFixed(0)} ms`);
  });

  test("a persistent 429 without Retry-After: exponential backoff, 3 attempts, then the 429 with the attempt count", BOUNDED, async (t) => {
    const up = await upstream(t, status(429, "Rate limit reached"));
    const run = runAdapter(retrying(up), up);
    const error = await rejection(run.result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
    assert.match(error.message, /Rate limit reached.*\(after 3 attempts\)/);
    assert.equal(up.seen.length, 3);
    const [first, second] = gaps(up);
    // random() = 0.5: 75 ms, then 150 ms.
    assert.ok(first !== undefined && first >= 70 && first < 600, `first backoff ${first?.toFixed(0)} ms`);
    assert.ok(second !== undefined && second >= 140 && second < 800, `second backoff ${second?.toFixed(0)} ms`);
    assert.deepEqual(run.events, []);
  });

  test("a 500 once, then success", BOUNDED, async (t) => {
    const up = await upstream(t, sequence(status(500, "The server had an error"), ok));
    const run = runAdapter(retrying(up), up);
    await run.result;
    assert.equal(up.seen.length, 2);
    assert.equal(run.events.at(-1)?.$case, "done");
  });

  test("a persistent 503 is tried maxAttempts times and ends as UNAVAILABLE", BOUNDED, async (t) => {
    const up = await upstream(t, status(503, "The server is overloaded"));
    const error = await rejection(runAdapter(retrying(up, { ...POLICY, maxAttempts: 4 }), up).result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.match(error.message, /overloaded.*after 4 attempts/);
    assert.equal(up.seen.length, 4);
  });

  for (const [code, message, expected] of [
    [400, "This model's maximum context length is 8192 tokens.", "RUNNEL_ERR_CONTEXT_LENGTH"],
    [400, "Your request was rejected as a result of our safety system.", "RUNNEL_ERR_CONTENT_POLICY"],
    [401, "Incorrect API key provided", "RUNNEL_ERR_PROVIDER_AUTH"],
    [403, "Forbidden", "RUNNEL_ERR_PROVIDER_AUTH"],
    [404, "The model does not exist", "RUNNEL_ERR_PROVIDER_BAD_REQUEST"],
  ] as const) {
    test(`a ${code} (${message.slice(0, 30)}…) is never retried and keeps the provider's reason`, BOUNDED, async (t) => {
      const up = await upstream(t, status(code, message));
      const error = await rejection(runAdapter(retrying(up), up).result);
      assert.equal(error.code, expected);
      assert.ok(error.message.includes(message));
      assert.equal(up.seen.length, 1);
    });
  }

  test("a reset before the headers is retried", BOUNDED, async (t) => {
    const up = await upstream(
      t,
      sequence((request) => request.socket.resetAndDestroy(), ok),
    );
    const run = runAdapter(retrying(up), up);
    await run.result;
    assert.equal(up.seen.length, 2);
    assert.equal(run.events.at(-1)?.$case, "done");
  });

  test("a stream cut after the headers but before any token is retried; the client sees only the good attempt", BOUNDED, async (t) => {
    const up = await upstream(
      t,
      sequence((_request, response) => {
        response.writeHead(200, { "content-type": "text/event-stream" });
        response.write(sse(chunk({ role: "assistant", content: "" })), () => response.socket?.destroy());
      }, ok),
    );
    const run = runAdapter(retrying(up), up);
    await run.result;
    assert.equal(up.seen.length, 2);
    assert.deepEqual(
      run.events.map((event) => (event.$case === "started" ? `started#${event.value.attempt}` : event.$case)),
      ["started#2", "textDelta", "done"],
    );
  });

  test("a failure after the first token is never retried", BOUNDED, async (t) => {
    const up = await upstream(t, (_request, response) => {
      response.writeHead(200, { "content-type": "text/event-stream" });
      response.write(sse(chunk({ content: "partial" })), () => response.socket?.destroy());
    });
    const run = runAdapter(retrying(up), up);
    const error = await rejection(run.result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
    assert.equal(up.seen.length, 1);
    assert.deepEqual(
      run.events.map((event) => event.$case),
      ["started", "textDelta"],
    );
  });

  test("a first-token timeout is not retried (it is its own bound)", BOUNDED, async (t) => {
    const up = await upstream(
      t,
      (_request, response) => {
        response.writeHead(200, { "content-type": "text/event-stream" });
        response.write(sse(chunk({ role: "assistant", content: "" })));
      },
      { timeouts: { ...TEST_TIMEOUTS, firstTokenMs: 150 } },
    );
    const error = await rejection(runAdapter(retrying(up), up).result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
    assert.equal(up.seen.length, 1);
  });

  test("a refused connection is retried with backoff, then UNAVAILABLE", BOUNDED, async (t) => {
    const up = await upstream(t, ok);
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as { port: number };
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    up.provider.baseUrl = `http://127.0.0.1:${port}`;
    const notices: RetryNotice[] = [];
    const startedAt = performance.now();
    const error = await rejection(runAdapter(retrying(up, POLICY, notices), up).result);
    const took = performance.now() - startedAt;
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.match(error.message, /ECONNREFUSED.*after 3 attempts/);
    assert.equal(notices.length, 2);
    assert.ok(took >= 220 && took < 2_000, `took ${took.toFixed(0)} ms (75 + 150 ms of backoff)`);
  });

  test("a Retry-After beyond the budget ends the retries at once, for failover to act", BOUNDED, async (t) => {
    const up = await upstream(t, status(429, "Rate limit reached", { "retry-after": "30" }));
    const startedAt = performance.now();
    const error = await rejection(runAdapter(retrying(up, { ...POLICY, budgetMs: 5_000 }), up).result);
    const took = performance.now() - startedAt;
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
    assert.match(error.message, /retry after 30s/);
    assert.equal(up.seen.length, 1);
    assert.ok(took < 1_000, `gave up after ${took.toFixed(0)} ms`);
  });

  test("the time budget bounds the attempts", BOUNDED, async (t) => {
    const up = await upstream(t, status(503, "overloaded"));
    const startedAt = performance.now();
    await rejection(runAdapter(retrying(up, { maxAttempts: 10, budgetMs: 600, baseDelayMs: 200, maxDelayMs: 1_000 }), up).result);
    const took = performance.now() - startedAt;
    // Waits of 150, 300 ms fit in 600 ms; the next (600 ms) would not.
    assert.equal(up.seen.length, 3);
    assert.ok(took < 1_500, `took ${took.toFixed(0)} ms`);
  });

  test("started is held back until the first token", BOUNDED, async (t) => {
    const up = await upstream(t, (_request, response) => {
      response.writeHead(200, { "content-type": "text/event-stream" });
      response.write(sse(chunk({ role: "assistant", content: "" })));
      setTimeout(() => response.end(sse(chunk({ content: "late" }, "stop"))), 200);
    });
    const startedAt = performance.now();
    const run = runAdapter(retrying(up), up);
    await run.result;
    assert.deepEqual(
      run.events.map((event) => event.$case),
      ["started", "textDelta", "done"],
    );
    const [startedTime, tokenTime] = run.times;
    assert.ok(startedTime !== undefined && tokenTime !== undefined);
    assert.ok(startedTime - startedAt >= 180, `started emitted ${(startedTime - startedAt).toFixed(0)} ms in`);
    assert.ok(tokenTime - startedTime < 20);
  });
});

describe("another route can take the request (the call's canFailOver)", () => {
  test("yes: a 429 with Retry-After: 1 is not waited for; it goes back at once, once, with its Retry-After for the route's cooldown", BOUNDED, async (t) => {
    const up = await upstream(t, sequence(status(429, "Rate limit reached", { "retry-after": "1" }), ok));
    const notices: RetryNotice[] = [];
    const startedAt = performance.now();
    const error = await rejection(runAdapter(retrying(up, POLICY, notices), up, { canFailOver: () => true }).result);
    const elapsed = performance.now() - startedAt;
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
    assert.ok(error instanceof ProviderError && error.retryAfterMs === 1_000, "the Retry-After goes with the failure, for the route's cooldown");
    assert.doesNotMatch(error.message, /attempts/);
    assert.equal(up.seen.length, 1);
    assert.deepEqual(notices, [], "no retry");
    assert.ok(elapsed < 900, `back after ${elapsed.toFixed(0)} ms, not after the Retry-After`);
  });

  test("yes: a 500 goes back at once, without a backoff", BOUNDED, async (t) => {
    const up = await upstream(t, sequence(status(500, "The server had an error"), ok));
    const error = await rejection(runAdapter(retrying(up), up, { canFailOver: () => true }).result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.equal(up.seen.length, 1);
  });

  test("no: the route's retries apply as configured (a 500, a backoff, then the answer)", BOUNDED, async (t) => {
    const up = await upstream(t, sequence(status(500, "The server had an error"), ok));
    let asked = 0;
    const run = runAdapter(retrying(up), up, {
      canFailOver: () => {
        asked += 1;
        return false;
      },
    });
    await run.result;
    assert.equal(up.seen.length, 2);
    assert.equal(asked, 1, "asked once, at the failure");
    const [gap] = gaps(up);
    assert.ok(gap !== undefined && gap >= 70, `a backoff of ${gap?.toFixed(0)} ms`);
    assert.equal(run.events.at(-1)?.$case, "done");
  });

  test("asked at each failure: an alternative that appears during the retries ends them at the next failure", BOUNDED, async (t) => {
    const up = await upstream(t, status(503, "The server is overloaded"));
    const answers = [false, true];
    const error = await rejection(runAdapter(retrying(up), up, { canFailOver: () => answers.shift() ?? true }).result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.match(error.message, /after 2 attempts/);
    assert.equal(up.seen.length, 2);
  });

  test("not asked for a failure that is never retried (a 400)", BOUNDED, async (t) => {
    const up = await upstream(t, status(404, "The model does not exist"));
    let asked = 0;
    const error = await rejection(
      runAdapter(retrying(up), up, {
        canFailOver: () => {
          asked += 1;
          return true;
        },
      }).result,
    );
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_BAD_REQUEST");
    assert.equal(asked, 0);
  });
});

describe("cancel reaches the provider in every phase", () => {
  /** Aborts `controller` and measures until the promise settles and the upstream socket closes. */
  async function cancelAndMeasure(controller: AbortController, result: Promise<void>, socketClosed: Promise<number>) {
    const abortedAt = performance.now();
    controller.abort(new RunnelError("RUNNEL_ERR_CANCELLED", "client left"));
    const error = await rejection(result);
    const rejectedAt = performance.now();
    const closedAt = await within(socketClosed, 2_000, Number.POSITIVE_INFINITY);
    return { error, rejectMs: rejectedAt - abortedAt, closeMs: closedAt - abortedAt };
  }

  async function raw(t: TestContext, onSocket: (socket: Socket) => void) {
    const sockets: Socket[] = [];
    const server = createServer((socket) => {
      sockets.push(socket);
      onSocket(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    t.after(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    return { port: (server.address() as { port: number }).port, sockets };
  }

  test("while connecting (a TLS handshake that never completes)", BOUNDED, async (t) => {
    let helloAt = 0;
    const { port, sockets } = await raw(t, (socket) => {
      // Reads the ClientHello and never answers: the client stays in its TLS handshake.
      socket.once("data", () => {
        helloAt = performance.now();
      });
    });
    const up = await upstream(t, ok, { timeouts: { ...TEST_TIMEOUTS, connectMs: 1_000, firstTokenMs: 5_000 } });
    up.provider.baseUrl = `https://127.0.0.1:${port}`;
    const controller = new AbortController();
    const run = runAdapter(retrying(up), up, { signal: controller.signal });
    while (helloAt === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    const socket = sockets[0];
    assert.ok(socket);
    const closed = new Promise<number>((resolve) => socket.once("close", () => resolve(performance.now())));
    const { error, rejectMs, closeMs } = await cancelAndMeasure(controller, run.result, closed);
    assert.equal(error.code, "RUNNEL_ERR_CANCELLED");
    t.diagnostic(`connecting: cancel→reject ${rejectMs.toFixed(1)} ms, cancel→socket closed ${closeMs.toFixed(1)} ms`);
    // The stream ends at once; the handshake in flight (no request was sent on it) ends at the connect timeout.
    assert.ok(rejectMs <= 100, `rejected ${rejectMs.toFixed(0)} ms after the cancel`);
    assert.ok(closeMs <= 1_000 + 2_000, `handshake socket closed ${closeMs.toFixed(0)} ms after the cancel (connect timeout 1 s)`);
    assert.equal(sockets.length, 1, "no second connection");
  });

  test("while waiting for the response headers", BOUNDED, async (t) => {
    const up = await upstream(t, () => {}, { timeouts: { ...TEST_TIMEOUTS, firstTokenMs: 5_000 } });
    const controller = new AbortController();
    const run = runAdapter(retrying(up), up, { signal: controller.signal });
    while (up.seen.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    const { error, rejectMs, closeMs } = await cancelAndMeasure(controller, run.result, up.socketClosed());
    assert.equal(error.code, "RUNNEL_ERR_CANCELLED");
    t.diagnostic(`waiting for headers: cancel→reject ${rejectMs.toFixed(1)} ms, cancel→socket closed ${closeMs.toFixed(1)} ms`);
    assert.ok(closeMs <= 200, `socket closed ${closeMs.toFixed(0)} ms after the cancel`);
    assert.equal(up.seen.length, 1);
  });

  test("while sleeping before a retry: the stream ends at once and no further attempt is made", BOUNDED, async (t) => {
    const up = await upstream(t, status(429, "Rate limit reached", { "retry-after": "5" }));
    const notices: RetryNotice[] = [];
    const controller = new AbortController();
    const run = runAdapter(retrying(up, POLICY, notices), up, { signal: controller.signal });
    while (notices.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    const abortedAt = performance.now();
    controller.abort(new RunnelError("RUNNEL_ERR_CANCELLED", "client left"));
    const error = await rejection(run.result);
    const rejectMs = performance.now() - abortedAt;
    assert.equal(error.code, "RUNNEL_ERR_CANCELLED");
    t.diagnostic(`backoff sleep: cancel→reject ${rejectMs.toFixed(1)} ms (Retry-After was 5 s)`);
    assert.ok(rejectMs <= 100, `rejected ${rejectMs.toFixed(0)} ms after the cancel`);
    assert.equal(up.seen.length, 1, "no attempt after the cancel");
  });

  test("a cancel without a RunnelError reason during the sleep is RUNNEL_ERR_CANCELLED", BOUNDED, async (t) => {
    const up = await upstream(t, status(503, "overloaded"));
    const controller = new AbortController();
    const run = runAdapter(retrying(up, { ...POLICY, baseDelayMs: 2_000, maxDelayMs: 2_000 }), up, { signal: controller.signal });
    while (up.seen.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setTimeout(resolve, 50));
    controller.abort();
    const error = await rejection(run.result);
    assert.equal(error.code, "RUNNEL_ERR_CANCELLED");
    assert.equal(up.seen.length, 1);
  });
});
