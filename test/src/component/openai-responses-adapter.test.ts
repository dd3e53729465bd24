/**
 * The worker's openai-responses adapter (with its retries, as the worker
 * builds it) against the mock provider's POST /v1/responses on a real
 * socket: the scenario's text, usage and finish reasons, and each of the
 * mock's failures mapped onto the RUNNEL_ERR codes with the number of
 * attempts the mock saw.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { buildMockProvider, mockText } from "@runnel/mock-provider";
import { type ChatRequest, type controlPlane, type EventBody, FinishReason, RunnelError } from "@runnel/shared";
import { AgentPool, createAdapters } from "@runnel/worker";

interface Hooks {
  after(fn: () => Promise<void> | void): void;
}

async function setUp(t: Hooks) {
  const mock = buildMockProvider();
  const port = await mock.listen(0, "127.0.0.1");
  const agents = new AgentPool();
  t.after(async () => {
    await agents.close();
    await mock.close();
  });
  const provider: controlPlane.ProviderSpec = {
    name: "openai-direct",
    type: "openai-responses",
    baseUrl: `http://127.0.0.1:${port}/v1`,
    apiKey: "sk-mock",
    headers: {},
    timeouts: { connectMs: 1000, firstTokenMs: 2000, idleMs: 1000, totalMs: 0 },
    maxConnections: 4,
    healthy: true,
    retries: undefined,
    failOnMalformedChunk: false,
    continueFinalMessage: false,
    requestsPerMinute: 0,
    tokensPerMinute: 0,
    circuit: undefined,
    propagateTrace: true,
  };
  const policy = { maxAttempts: 3, budgetMs: 5_000, baseDelayMs: 10, maxDelayMs: 20 };
  const adapter = createAdapters(agents, { retryPolicy: () => policy })("openai-responses");
  const stream = async (model: string, request: Partial<ChatRequest> = {}) => {
    const events: EventBody[] = [];
    let error: RunnelError | undefined;
    try {
      const batches = adapter.stream({
        request: {
          messages: [{ role: "user", content: [{ part: { $case: "text", value: "Tell me about rivers." } }], name: "", toolCallId: "", toolCalls: [] }],
          stop: [],
          tools: [],
          toolChoiceJson: "",
          includeUsage: true,
          user: "",
          ...request,
        },
        model,
        provider,
        signal: new AbortController().signal,
      });
      for await (const batch of batches) events.push(...batch);
    } catch (caught) {
      assert.ok(caught instanceof RunnelError, String(caught));
      error = caught;
    }
    const text = events.map((event) => (event.$case === "textDelta" ? event.value.text : "")).join("");
    return { events, error, text };
  };
  return { mock, stream };
}

describe("the openai-responses adapter against the mock provider", () => {
  test("streams the scenario's exact text, then usage and stop; the mock saw one Responses request with the key", async (t) => {
    const { mock, stream } = await setUp(t);
    const { events, error, text } = await stream("mock?tokens=12&seed=4");
    assert.equal(error, undefined);
    assert.equal(text, mockText(12, 4));
    assert.deepEqual(events[0], { $case: "started", value: { provider: "openai-direct", model: "mock?tokens=12&seed=4", attempt: 1 } });
    assert.deepEqual(events.slice(-2), [
      { $case: "usage", value: { inputTokens: 4, outputTokens: 12, cachedInputTokens: 0, reasoningTokens: 0 } },
      { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP } },
    ]);
    const [seen] = mock.journal.entries();
    assert.equal(seen?.format, "openai-responses");
    assert.equal(seen?.authorization, true);
    assert.deepEqual(seen?.messages, [{ role: "user", text: "Tell me about rivers." }]);
  });

  test("max tokens below the answer's length is a length finish", async (t) => {
    const { stream } = await setUp(t);
    const { events, text } = await stream("mock?tokens=12&seed=4", { maxTokens: 5 });
    assert.equal(text, mockText(5, 4));
    assert.deepEqual(events.at(-1), { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_LENGTH } });
  });

  test("a system message and a tool round trip reach the mock as Responses items", async (t) => {
    const { mock, stream } = await setUp(t);
    await stream("mock?tokens=2", {
      messages: [
        { role: "system", content: [{ part: { $case: "text", value: "Be brief." } }], name: "", toolCallId: "", toolCalls: [] },
        { role: "user", content: [{ part: { $case: "text", value: "Weather?" } }], name: "", toolCallId: "", toolCalls: [] },
        { role: "assistant", content: [], name: "", toolCallId: "", toolCalls: [{ id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' }] },
        { role: "tool", content: [{ part: { $case: "text", value: "21C" } }], name: "", toolCallId: "call_1", toolCalls: [] },
      ],
    });
    assert.deepEqual(mock.journal.entries()[0]?.messages, [
      { role: "system", text: "Be brief." },
      { role: "user", text: "Weather?" },
      { role: "function_call", text: '{"city":"Paris"}' },
      { role: "function_call_output", text: "21C" },
    ]);
  });

  test("each failure of the mock, mapped, with the attempts it saw", async (t) => {
    const { mock, stream } = await setUp(t);
    const cases: Array<[string, string, number, string?]> = [
      ["mock?fail=429&retry_after=0", "RUNNEL_ERR_PROVIDER_RATE_LIMITED", 3],
      ["mock?fail=500", "RUNNEL_ERR_PROVIDER_UNAVAILABLE", 3],
      ["mock?fail=context-length", "RUNNEL_ERR_CONTEXT_LENGTH", 1],
      ["mock?fail=content-policy", "RUNNEL_ERR_CONTENT_POLICY", 1],
      ["mock?fail=auth", "RUNNEL_ERR_PROVIDER_AUTH", 1],
      // Before the first token the in-stream failure is retried, like a 5xx; after it, it ends the stream.
      ["mock?fail=stream-error&after=0", "RUNNEL_ERR_PROVIDER_UNAVAILABLE", 3],
      ["mock?fail=stream-error&after=2&tokens=6", "RUNNEL_ERR_PROVIDER_UNAVAILABLE", 1, mockText(2, 0)],
      ["mock?fail=cut&after=2&tokens=6", "RUNNEL_ERR_PROVIDER_STREAM_CUT", 1, mockText(2, 0)],
    ];
    for (const [model, code, attempts, partial] of cases) {
      mock.journal.clear();
      const { error, events, text } = await stream(model);
      assert.equal(error?.code, code, model);
      assert.equal(mock.journal.entries().length, attempts, model);
      assert.equal(
        events.some((event) => event.$case === "done"),
        false,
        model,
      );
      if (partial !== undefined) assert.equal(text, partial, model);
    }
  });

  test("a malformed event is skipped and the answer is whole", async (t) => {
    const { stream } = await setUp(t);
    const { error, text } = await stream("mock?fail=malformed&after=1&tokens=4");
    assert.equal(error, undefined);
    assert.equal(text, mockText(4, 0));
  });
});
