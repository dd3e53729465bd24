/**
 * Every adapter family end to end through the real processes (mock provider
 * speaking the OpenAI, Anthropic and Gemini wire formats, control plane,
 * worker, ingress, nats-server), and every failure mode a provider really
 * produces: what the client of Runnel's OpenAI API sees, and how many
 * attempts the provider saw (the mock's journal). Config:
 * test/fixtures/providers/runnel.providers.yaml (3 attempts per route, 100 ms
 * base backoff, first token 1.5 s, idle 1 s).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type NatsHandle, REPO_ROOT, type Stack, startNats, startStack } from "@runnel/launcher";
import { mockText } from "@runnel/mock-provider";
import OpenAI from "openai";
import { type MockRequest, mockRequests, parseSse, waitForMockRequest } from "./helpers.js";

const CONFIG = join(REPO_ROOT, "test", "fixtures", "providers", "runnel.providers.yaml");
const TYPES = ["openai", "anthropic", "gemini"] as const;
type ProviderType = (typeof TYPES)[number];
const TEXT = mockText(12, 4);

/** What a client of the OpenAI-compatible API ends up with. */
interface ClientView {
  status: number;
  /** The error code: of the HTTP error body, or of the error event that ended the stream. */
  code: string | undefined;
  message: string;
  text: string;
  finish: string | null;
  /** The stream ended with data: [DONE]. */
  done: boolean;
  elapsedMs: number;
}

interface Chunk {
  choices?: { delta?: { content?: string }; finish_reason?: string | null }[];
  error?: { code: string; message: string };
}

let stack: Stack;
let nats: NatsHandle;

async function ask(
  model: string,
  messages: Array<{ role: string; content: string }> = [{ role: "user", content: "Tell me about rivers." }],
): Promise<ClientView> {
  const startedAt = Date.now();
  const response = await fetch(`${stack.ingressUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, stream: true, messages }),
  });
  const body = await response.text();
  const elapsedMs = Date.now() - startedAt;
  if (response.status !== 200) {
    const parsed = JSON.parse(body) as { error: { code: string; message: string } };
    return { status: response.status, code: parsed.error.code, message: parsed.error.message, text: "", finish: null, done: false, elapsedMs };
  }
  const view: ClientView = { status: 200, code: undefined, message: "", text: "", finish: null, done: false, elapsedMs };
  for (const event of parseSse(body).events) {
    if (event.data === "[DONE]") {
      view.done = true;
      continue;
    }
    const chunk = JSON.parse(event.data) as Chunk;
    if (chunk.error) {
      view.code = chunk.error.code;
      view.message = chunk.error.message;
      continue;
    }
    const choice = chunk.choices?.[0];
    view.text += choice?.delta?.content ?? "";
    view.finish = choice?.finish_reason ?? view.finish;
  }
  return view;
}

/** One request as the mock's journal has it, with the wire format it came in. */
type Seen = MockRequest & { format: string };

/** The requests the provider saw for one route (each route's upstream model carries its own key). */
async function attempts(type: ProviderType, mode: string): Promise<Seen[]> {
  const key = `key=${type}-${mode}`;
  return ((await mockRequests(stack)) as Seen[]).filter((request) => (request.model ?? "").endsWith(key));
}

before(async () => {
  nats = await startNats();
  try {
    stack = await startStack({
      natsUrl: nats.url,
      env: { RUNNEL_CONFIG: CONFIG, LOG_LEVEL: "info" },
      logDir: join(REPO_ROOT, ".runnel", "logs", "providers-e2e"),
    });
  } catch (error) {
    await nats.stop();
    throw error;
  }
});

after(async () => {
  await stack?.stop();
  await nats?.stop();
});

/** Upstream wording of the same failure, per wire format. */
const CONTEXT_LENGTH: Record<ProviderType, RegExp> = {
  openai: /maximum context length is 8192 tokens/,
  anthropic: /prompt is too long: \d+ tokens > 8192 maximum/,
  gemini: /exceeds the maximum number of tokens allowed \(8192\)/,
};
const PREFILL: Record<ProviderType, RegExp> = {
  openai: /does not support assistant message prefill/,
  anthropic: /does not support assistant message prefill/,
  gemini: /end with a user role or a function response/,
};

for (const type of TYPES) {
  describe(`${type} provider through the whole stack`, { concurrency: true }, () => {
    test("streams the exact text; the provider saw one request in its own format, with our key", async () => {
      const view = await ask(`${type}-ok`);
      assert.equal(view.status, 200);
      assert.equal(view.text, TEXT);
      assert.equal(view.finish, "stop");
      assert.equal(view.done, true);
      const seen = await attempts(type, "ok");
      assert.equal(seen.length, 1);
      assert.equal(seen[0]?.format, type);
      assert.equal(seen[0]?.authorization, true);
    });

    test("the openai SDK gets the text, and usage when it asks for it", async () => {
      const client = new OpenAI({ baseURL: `${stack.ingressUrl}/v1`, apiKey: "unused", maxRetries: 0 });
      const stream = await client.chat.completions.create({
        // Its own model: the tests of a type run concurrently and count the provider's requests per model.
        model: `${type}-sdk`,
        stream: true,
        stream_options: { include_usage: true },
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Hello there" },
        ],
      });
      let text = "";
      let completionTokens: number | undefined;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta?.content ?? "";
        if (chunk.usage) completionTokens = chunk.usage.completion_tokens;
      }
      assert.equal(text, TEXT);
      assert.equal(completionTokens, 12);
    });

    test("429 with a retry delay: waited as asked, 3 attempts, then a 429", async () => {
      const view = await ask(`${type}-429`);
      assert.equal(view.status, 429);
      assert.equal(view.code, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
      assert.match(view.message, /after 3 attempts/);
      const seen = await attempts(type, "429");
      assert.equal(seen.length, 3);
      for (let index = 1; index < seen.length; index++) {
        const gap = (seen[index]?.receivedAt ?? 0) - (seen[index - 1]?.receivedAt ?? 0);
        // Retry-After 1 s (OpenAI, Anthropic) or RetryInfo 1s (Gemini).
        assert.ok(gap >= 950 && gap < 3_000, `attempt ${index + 1} came ${gap} ms after the previous one`);
      }
    });

    test("429 without a retry delay: backoff, 3 attempts, then a 429", async () => {
      const view = await ask(`${type}-429-no-retry-after`);
      assert.equal(view.status, 429);
      assert.equal(view.code, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
      assert.equal((await attempts(type, "429-no-retry-after")).length, 3);
    });

    for (const mode of ["500", "503", "reset"]) {
      test(`${mode}: retried, 3 attempts, then a 502 naming the failure`, async () => {
        const view = await ask(`${type}-${mode}`);
        assert.equal(view.status, 502);
        assert.equal(view.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
        assert.match(view.message, mode === "reset" ? /unreachable|reset|closed/i : new RegExp(mode === "503" && type === "anthropic" ? "529" : mode));
        assert.equal((await attempts(type, mode)).length, 3);
      });
    }

    test("500 once: the second attempt streams the whole answer", async () => {
      const view = await ask(`${type}-500-once`);
      assert.equal(view.status, 200);
      assert.equal(view.text, TEXT);
      assert.equal(view.done, true);
      assert.equal((await attempts(type, "500-once")).length, 2);
    });

    test("no response at all: a 504 after the first-token timeout, one attempt, and the request closed", async () => {
      const view = await ask(`${type}-no-response`);
      assert.equal(view.status, 504);
      assert.equal(view.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
      assert.ok(view.elapsedMs >= 1_400 && view.elapsedMs < 5_000, `${view.elapsedMs} ms`);
      const seen = await waitForMockRequest(stack, (request) => request.model.endsWith(`key=${type}-no-response`) && request.clientClosed, 3_000);
      assert.ok(seen.clientClosed);
      assert.equal((await attempts(type, "no-response")).length, 1);
    });

    test("a first token slower than its timeout: an error event after the headers, one attempt, and the provider's request closed", async () => {
      const view = await ask(`${type}-slow-first-token`);
      // The provider accepted the request and thought past ingress.holdHeaders: the headers (and the stream id,
      // for a cancel) went out, so the timeout is an error event in the stream (docs/api.md), with the 504's code.
      assert.equal(view.status, 200);
      assert.equal(view.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
      assert.match(view.message, /first token/);
      const seen = await waitForMockRequest(stack, (request) => request.model.endsWith(`key=${type}-slow-first-token`) && request.clientClosed, 3_000);
      assert.equal(seen.tokensSent, 0);
      assert.equal((await attempts(type, "slow-first-token")).length, 1);
    });

    test("cut mid-stream: the tokens so far, then an error event, never [DONE]; not retried", async () => {
      const view = await ask(`${type}-cut`);
      assert.equal(view.status, 200);
      assert.equal(view.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
      assert.equal(view.done, false);
      assert.equal(view.text, mockText(3, 4));
      assert.equal((await attempts(type, "cut")).length, 1);
    });

    test("cut before the first token: retried, then a 502 STREAM_CUT", async () => {
      const view = await ask(`${type}-cut-before-first-token`);
      assert.equal(view.status, 502);
      assert.equal(view.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
      assert.equal((await attempts(type, "cut-before-first-token")).length, 3);
    });

    test("stall mid-stream: an error event after the idle timeout, never [DONE]; the provider's request closed", async () => {
      const view = await ask(`${type}-stall`);
      assert.equal(view.status, 200);
      assert.equal(view.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
      assert.equal(view.done, false);
      assert.equal(view.text, mockText(3, 4));
      const seen = await waitForMockRequest(stack, (request) => request.model.endsWith(`key=${type}-stall`) && request.clientClosed, 3_000);
      assert.equal(seen.tokensSent, 3);
      assert.equal((await attempts(type, "stall")).length, 1);
    });

    test("a malformed chunk is skipped: the whole text, [DONE]", async () => {
      const view = await ask(`${type}-malformed`);
      assert.equal(view.status, 200);
      assert.equal(view.text, TEXT);
      assert.equal(view.done, true);
      assert.equal((await attempts(type, "malformed")).length, 1);
    });

    test("no end marker after the finish reason: completes at once", async () => {
      const view = await ask(`${type}-no-done`);
      assert.equal(view.status, 200);
      assert.equal(view.text, TEXT);
      assert.equal(view.finish, "stop");
      assert.equal(view.done, true);
      assert.ok(view.elapsedMs < 1_500, `${view.elapsedMs} ms`);
    });

    test("context length exceeded: a 400 with the provider's reason, never retried", async () => {
      const view = await ask(`${type}-context-length`);
      assert.equal(view.status, 400);
      // Its own code, so failover can send it to a route with a larger window.
      assert.equal(view.code, "RUNNEL_ERR_CONTEXT_LENGTH");
      assert.match(view.message, CONTEXT_LENGTH[type]);
      assert.equal((await attempts(type, "context-length")).length, 1);
    });

    test("content policy: never retried; the client sees the provider's verdict", async () => {
      const view = await ask(`${type}-content-policy`);
      if (type === "gemini") {
        // Gemini blocks a prompt in a 200 answer: an honest end with content_filter.
        assert.equal(view.status, 200);
        assert.equal(view.finish, "content_filter");
        assert.equal(view.text, "");
        assert.equal(view.done, true);
      } else {
        assert.equal(view.status, 400);
        assert.equal(view.code, "RUNNEL_ERR_CONTENT_POLICY");
        assert.match(view.message, /safety system|content filtering policy/);
      }
      assert.equal((await attempts(type, "content-policy")).length, 1);
    });

    test("a rejected key: a 502 RUNNEL_ERR_PROVIDER_AUTH, never retried, and the key is not in the message", async () => {
      const view = await ask(`${type}-auth`);
      assert.equal(view.status, 502);
      assert.equal(view.code, "RUNNEL_ERR_PROVIDER_AUTH");
      assert.equal(/test-not-a-secret/.test(view.message), false);
      assert.equal((await attempts(type, "auth")).length, 1);
    });

    test("a model that rejects an assistant prefill: a 400 with the provider's reason; a normal turn is served", async () => {
      const view = await ask(`${type}-no-prefill`, [
        { role: "user", content: "Name a colour." },
        { role: "assistant", content: "The colour is" },
      ]);
      assert.equal(view.status, 400);
      assert.equal(view.code, "RUNNEL_ERR_PROVIDER_BAD_REQUEST");
      assert.match(view.message, PREFILL[type]);
      assert.equal((await attempts(type, "no-prefill")).length, 1);
      const served = await ask(`${type}-no-prefill`);
      assert.equal(served.text, TEXT);
    });

    test("a client that leaves mid-stream closes the provider's connection within a bound", async (t) => {
      const controller = new AbortController();
      const response = await fetch(`${stack.ingressUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: `${type}-long`, stream: true, messages: [{ role: "user", content: "Go on" }] }),
        signal: controller.signal,
      });
      assert.equal(response.status, 200);
      const reader = response.body?.getReader();
      assert.ok(reader);
      let received = "";
      while ((received.match(/"content":"/g) ?? []).length < 5) {
        const { value, done } = await reader.read();
        if (done) break;
        received += Buffer.from(value).toString("utf8");
      }
      const abortedAt = Date.now();
      controller.abort();
      const seen = await waitForMockRequest(stack, (request) => request.model.endsWith(`key=${type}-long`) && request.clientClosed, 5_000);
      const latency = (seen.clientClosedAt ?? 0) - abortedAt;
      t.diagnostic(`${type}: client abort → provider saw the close: ${latency} ms`);
      assert.ok(latency < 1_000, `the provider saw the close ${latency} ms after the client left`);
      assert.ok(seen.tokensSent < 5000, "the provider stopped generating");
    });
  });
}
