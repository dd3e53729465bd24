import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, type TestContext, test } from "node:test";
import { type ChatRequest, type controlPlane, type EventBody, FinishReason, RunnelError } from "@runnel/shared";
import type { AgentPool } from "./http.js";
import { ChunkSchema, createOpenAIAdapter, openAIRequestBody } from "./openai.js";
import { type SeenRequest, upstream as sharedUpstream } from "./test-support.js";

function request(overrides: Partial<ChatRequest> = {}): ChatRequest {
  return {
    messages: [{ role: "user", content: [{ part: { $case: "text", value: "Hi" } }], name: "", toolCallId: "", toolCalls: [] }],
    stop: [],
    tools: [],
    toolChoiceJson: "",
    includeUsage: false,
    user: "",
    ...overrides,
  };
}

const REQUEST_FOR_QUIRKS: ChatRequest = {
  messages: [{ role: "user", content: [{ part: { $case: "text", value: "Tell me a story" } }], name: "", toolCallId: "", toolCalls: [] }],
  stop: [],
  tools: [],
  toolChoiceJson: "",
  includeUsage: false,
  user: "",
};

describe("openAIRequestBody", () => {
  test("continues a trailing assistant message only when the provider needs to be told (continue_final_message)", () => {
    const prefill = {
      ...REQUEST_FOR_QUIRKS,
      messages: [
        ...REQUEST_FOR_QUIRKS.messages,
        { role: "assistant", content: [{ part: { $case: "text" as const, value: "Once upon" } }], name: "", toolCallId: "", toolCalls: [] },
      ],
    };
    const told = openAIRequestBody(prefill, "m", true);
    assert.equal(told.continue_final_message, true);
    assert.equal(told.add_generation_prompt, false);
    assert.equal(openAIRequestBody(prefill, "m", false).continue_final_message, undefined);
    assert.equal(openAIRequestBody(REQUEST_FOR_QUIRKS, "m", true).continue_final_message, undefined, "a conversation ending with the user is not a prefill");
  });

  test("a minimal request streams with usage and omits every optional field", () => {
    const body = openAIRequestBody(request(), "gpt-4o-mini");
    assert.deepEqual(body, {
      model: "gpt-4o-mini",
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: "Hi" }],
    });
    for (const key of ["temperature", "top_p", "max_tokens", "stop", "seed", "user", "tools", "tool_choice", "response_format", "reasoning_effort"]) {
      assert.equal(Object.hasOwn(body, key), false, key);
    }
  });

  test("stream_options.include_usage is requested even when the client did not ask for usage", () => {
    assert.deepEqual(openAIRequestBody(request({ includeUsage: false }), "m").stream_options, { include_usage: true });
  });

  test("the upstream model is the route's model", () => {
    assert.equal(openAIRequestBody(request(), "llama-3.1-8b-instruct").model, "llama-3.1-8b-instruct");
  });

  test("a single text part becomes string content; several parts become an array with image detail only when set", () => {
    const body = openAIRequestBody(
      request({
        messages: [
          {
            role: "user",
            content: [
              { part: { $case: "text", value: "Describe" } },
              { part: { $case: "imageUrl", value: { url: "https://example.com/a.png", detail: "high" } } },
              { part: { $case: "imageUrl", value: { url: "data:image/png;base64,AAAA", detail: "" } } },
            ],
            name: "alice",
            toolCallId: "",
            toolCalls: [],
          },
        ],
      }),
      "m",
    );
    assert.deepEqual(body.messages, [
      {
        role: "user",
        name: "alice",
        content: [
          { type: "text", text: "Describe" },
          { type: "image_url", image_url: { url: "https://example.com/a.png", detail: "high" } },
          { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } },
        ],
      },
    ]);
  });

  test("a single image part is an array, not string content", () => {
    const body = openAIRequestBody(
      request({
        messages: [
          { role: "user", content: [{ part: { $case: "imageUrl", value: { url: "https://x/y.png", detail: "" } } }], name: "", toolCallId: "", toolCalls: [] },
        ],
      }),
      "m",
    );
    assert.deepEqual(body.messages, [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://x/y.png" } }] }]);
  });

  test("assistant tool calls, null assistant content and tool results map to OpenAI's shape", () => {
    const body = openAIRequestBody(
      request({
        messages: [
          { role: "user", content: [{ part: { $case: "text", value: "Weather?" } }], name: "", toolCallId: "", toolCalls: [] },
          { role: "assistant", content: [], name: "", toolCallId: "", toolCalls: [{ id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' }] },
          { role: "tool", content: [{ part: { $case: "text", value: "21C" } }], name: "", toolCallId: "call_1", toolCalls: [] },
          { role: "user", content: [], name: "", toolCallId: "", toolCalls: [] },
        ],
      }),
      "m",
    );
    assert.deepEqual(body.messages, [
      { role: "user", content: "Weather?" },
      { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } }] },
      { role: "tool", content: "21C", tool_call_id: "call_1" },
      { role: "user", content: "" },
    ]);
  });

  test("tools are parsed back from JSON and tool_choice is passed as given", () => {
    const parameters = { type: "object", properties: { city: { type: "string" } } };
    const body = openAIRequestBody(
      request({
        tools: [
          { name: "get_weather", description: "Weather now", parametersJson: JSON.stringify(parameters) },
          { name: "ping", description: "", parametersJson: "" },
        ],
        toolChoiceJson: JSON.stringify({ type: "function", function: { name: "get_weather" } }),
      }),
      "m",
    );
    // Through JSON, as it goes on the wire: absent description and parameters are left out.
    assert.deepEqual(JSON.parse(JSON.stringify(body.tools)), [
      { type: "function", function: { name: "get_weather", description: "Weather now", parameters } },
      { type: "function", function: { name: "ping" } },
    ]);
    assert.deepEqual(body.tool_choice, { type: "function", function: { name: "get_weather" } });
    assert.equal(openAIRequestBody(request({ toolChoiceJson: '"auto"' }), "m").tool_choice, "auto");
  });

  test("a tool's strict flag is sent only when set", () => {
    const body = openAIRequestBody(
      request({
        tools: [
          { name: "a", description: "", parametersJson: '{"type":"object"}', strict: true },
          { name: "b", description: "", parametersJson: "" },
        ],
      }),
      "m",
    );
    assert.deepEqual(JSON.parse(JSON.stringify(body.tools)), [
      { type: "function", function: { name: "a", parameters: { type: "object" }, strict: true } },
      { type: "function", function: { name: "b" } },
    ]);
  });

  test("a JSON schema output format goes as response_format, the reasoning effort as reasoning_effort; neither when unset", () => {
    const format = { type: "json_schema", json_schema: { name: "person", schema: { type: "object", properties: { name: { type: "string" } } }, strict: true } };
    const body = openAIRequestBody(request({ responseFormatJson: JSON.stringify(format), reasoningEffort: "low", reasoningSummary: "auto" }), "m");
    assert.deepEqual(body.response_format, format);
    assert.equal(body.reasoning_effort, "low");
    // Chat completions has no reasoning summary parameter.
    assert.equal(Object.hasOwn(body, "reasoning_summary"), false);
    const plain = openAIRequestBody(request(), "m");
    assert.equal(Object.hasOwn(plain, "response_format"), false);
    assert.equal(Object.hasOwn(plain, "reasoning_effort"), false);
  });

  test("sampling fields are passed when present, including zeros", () => {
    const body = openAIRequestBody(request({ temperature: 0, topP: 0.9, maxTokens: 64, stop: ["END"], seed: 0, user: "u-1" }), "m");
    assert.equal(body.temperature, 0);
    assert.equal(body.top_p, 0.9);
    assert.equal(body.max_tokens, 64);
    assert.deepEqual(body.stop, ["END"]);
    assert.equal(body.seed, 0);
    assert.equal(body.user, "u-1");
  });
});

describe("ChunkSchema", () => {
  const envelope = {
    id: "chatcmpl-AbC",
    object: "chat.completion.chunk",
    created: 1_732_170_000,
    model: "gpt-4o-mini-2024-07-18",
    system_fingerprint: "fp_0ba0d124f1",
  };

  test("accepts OpenAI's role chunk", () => {
    const parsed = ChunkSchema.parse({
      ...envelope,
      choices: [{ index: 0, delta: { role: "assistant", content: "", refusal: null }, logprobs: null, finish_reason: null }],
      usage: null,
    });
    assert.equal(parsed.model, "gpt-4o-mini-2024-07-18");
    assert.equal(parsed.choices[0]?.delta?.role, "assistant");
    assert.equal(parsed.choices[0]?.delta?.content, "");
    assert.equal(parsed.choices[0]?.finish_reason, null);
  });

  test("accepts a content chunk", () => {
    const parsed = ChunkSchema.parse({ ...envelope, choices: [{ index: 0, delta: { content: "Hello" }, logprobs: null, finish_reason: null }] });
    assert.equal(parsed.choices[0]?.delta?.content, "Hello");
  });

  test("accepts a tool call chunk, first fragment and later fragment", () => {
    const first = ChunkSchema.parse({
      ...envelope,
      choices: [
        {
          index: 0,
          delta: {
            role: "assistant",
            content: null,
            tool_calls: [{ index: 0, id: "call_abc", type: "function", function: { name: "get_weather", arguments: "" } }],
          },
          logprobs: null,
          finish_reason: null,
        },
      ],
    });
    assert.deepEqual(first.choices[0]?.delta?.tool_calls, [{ index: 0, id: "call_abc", type: "function", function: { name: "get_weather", arguments: "" } }]);
    const later = ChunkSchema.parse({
      ...envelope,
      choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: '{"ci' } }] }, logprobs: null, finish_reason: null }],
    });
    assert.equal(later.choices[0]?.delta?.tool_calls?.[0]?.function?.arguments, '{"ci');
    assert.equal(later.choices[0]?.delta?.tool_calls?.[0]?.id, undefined);
  });

  test("accepts a finish chunk with an empty delta", () => {
    const parsed = ChunkSchema.parse({ ...envelope, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }] });
    assert.equal(parsed.choices[0]?.finish_reason, "stop");
  });

  test("accepts the usage chunk with choices: []", () => {
    const parsed = ChunkSchema.parse({
      ...envelope,
      choices: [],
      usage: {
        prompt_tokens: 19,
        completion_tokens: 10,
        total_tokens: 29,
        prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
        completion_tokens_details: { reasoning_tokens: 3, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
      },
    });
    assert.deepEqual(parsed.choices, []);
    assert.equal(parsed.usage?.prompt_tokens, 19);
    assert.equal(parsed.usage?.completion_tokens, 10);
    assert.equal(parsed.usage?.completion_tokens_details?.reasoning_tokens, 3);
  });

  test("accepts a vLLM chunk with reasoning_content and vLLM's extra fields", () => {
    const parsed = ChunkSchema.parse({
      id: "chatcmpl-9f3",
      object: "chat.completion.chunk",
      created: 1_732_170_000,
      model: "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
      choices: [{ index: 0, delta: { reasoning_content: "Okay, so" }, logprobs: null, finish_reason: null, stop_reason: null }],
      usage: null,
    });
    assert.equal(parsed.choices[0]?.delta?.reasoning_content, "Okay, so");
    assert.equal(parsed.choices[0]?.delta?.content, undefined);
  });

  test("accepts a chunk without choices", () => {
    assert.deepEqual(ChunkSchema.parse({ ...envelope }).choices, []);
  });

  test("rejects a chunk whose choices is not an array", () => {
    assert.equal(ChunkSchema.safeParse({ ...envelope, choices: { index: 0, delta: { content: "x" } } }).success, false);
    assert.equal(ChunkSchema.safeParse({ ...envelope, choices: "nope" }).success, false);
  });

  test("rejects a chunk whose content is not a string", () => {
    assert.equal(ChunkSchema.safeParse({ ...envelope, choices: [{ index: 0, delta: { content: 42 } }] }).success, false);
  });
});

// ---------------------------------------------------------------------------
// The adapter against a real HTTP server on 127.0.0.1.

interface Upstream {
  provider: controlPlane.ProviderSpec;
  agents: AgentPool;
  seen: SeenRequest[];
  /** Resolves with performance.now() when the server sees the first request's socket close. */
  readonly socketClosed: Promise<number>;
  server: Server;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const TIMEOUTS = { connectMs: 1000, firstTokenMs: 1000, idleMs: 300, totalMs: 0 };

/** The shared test upstream (test-support.ts), as an OpenAI base URL ending in /v1 with the key these tests check. */
async function upstream(t: TestContext, handler: Handler, timeouts = TIMEOUTS): Promise<Upstream> {
  const shared = await sharedUpstream(t, (request, response) => handler(request, response), { timeouts, apiKey: "sk-secret" });
  return {
    provider: { ...shared.provider, baseUrl: `${shared.provider.baseUrl}/v1` },
    agents: shared.agents,
    seen: shared.seen,
    server: shared.server,
    get socketClosed() {
      return shared.socketClosed(0);
    },
  };
}

const BASE = { id: "chatcmpl-1", object: "chat.completion.chunk", created: 1_732_170_000, model: "gpt-4o-mini-2024-07-18" };

function deltaChunk(delta: Record<string, unknown>, finishReason: string | null = null): Record<string, unknown> {
  return { ...BASE, choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }] };
}

function usageChunk(prompt: number, completion: number): Record<string, unknown> {
  return { ...BASE, choices: [], usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion } };
}

/** One SSE frame; strings are written as-is (for [DONE] and malformed data). */
function frame(data: Record<string, unknown> | string): string {
  return `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
}

function startSse(res: ServerResponse): void {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
}

/** Answers with the given frames and ends the response. */
function answer(...frames: Array<Record<string, unknown> | string>): Handler {
  return (_req, res) => {
    startSse(res);
    for (const data of frames) res.write(frame(data));
    res.end();
  };
}

interface Run {
  events: EventBody[];
  /** performance.now() of each emitted event. */
  times: number[];
  result: Promise<void>;
}

function run(up: Upstream, options: { signal?: AbortSignal; onMalformedChunk?: (reason: string) => void; onEmit?: (event: EventBody) => void } = {}): Run {
  const adapter = createOpenAIAdapter({ agents: up.agents, ...(options.onMalformedChunk ? { onMalformedChunk: options.onMalformedChunk } : {}) });
  const events: EventBody[] = [];
  const times: number[] = [];
  const batches = adapter.stream({ request: request(), model: "gpt-4o-mini", provider: up.provider, signal: options.signal ?? new AbortController().signal });
  const result = (async () => {
    for await (const batch of batches) {
      for (const event of batch) {
        events.push(event);
        times.push(performance.now());
        options.onEmit?.(event);
      }
    }
  })();
  return { events, times, result };
}

async function rejection(promise: Promise<void>): Promise<RunnelError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof RunnelError, `expected a RunnelError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected the stream to reject");
}

/** Every adapter test fails rather than hangs if a stream never ends. */
const BOUNDED = { timeout: 3000 };

const STARTED: EventBody = { $case: "started", value: { provider: "p", model: "gpt-4o-mini", attempt: 1 } };

describe("OpenAI adapter against an HTTP server", () => {
  test("emits started, text deltas, usage and done in order for a complete stream", BOUNDED, async (t) => {
    const up = await upstream(
      t,
      answer(
        deltaChunk({ role: "assistant", content: "" }),
        deltaChunk({ content: "Hel" }),
        deltaChunk({ content: "lo 👋\n" }),
        deltaChunk({}, "stop"),
        usageChunk(9, 2),
        "[DONE]",
      ),
    );
    const { events, result } = run(up);
    await result;
    assert.deepEqual(events, [
      STARTED,
      { $case: "textDelta", value: { text: "Hel" } },
      { $case: "textDelta", value: { text: "lo 👋\n" } },
      { $case: "usage", value: { inputTokens: 9, outputTokens: 2, cachedInputTokens: 0, reasoningTokens: 0 } },
      { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP } },
    ]);
  });

  test("posts the mapped body to /v1/chat/completions with the bearer key and provider headers", BOUNDED, async (t) => {
    const up = await upstream(t, answer(deltaChunk({ content: "x" }, "stop"), "[DONE]"));
    up.provider.headers = { "x-org": "acme" };
    await run(up).result;
    assert.equal(up.seen.length, 1);
    const seen = up.seen[0];
    assert.ok(seen);
    assert.equal(seen.method, "POST");
    assert.equal(seen.url, "/v1/chat/completions");
    assert.equal(seen.headers.authorization, "Bearer sk-secret");
    assert.equal(seen.headers["x-org"], "acme");
    assert.equal(seen.headers["content-type"], "application/json");
    assert.equal(seen.headers.accept, "text/event-stream");
    assert.deepEqual(JSON.parse(seen.body), openAIRequestBody(request(), "gpt-4o-mini"));
  });

  test("sends no Authorization header when the provider has no key", BOUNDED, async (t) => {
    const up = await upstream(t, answer(deltaChunk({ content: "x" }, "stop")));
    up.provider.apiKey = "";
    await run(up).result;
    assert.equal(up.seen[0]?.headers.authorization, undefined);
  });

  test("maps reasoning and tool call fragments and the tool_calls finish reason", BOUNDED, async (t) => {
    const up = await upstream(
      t,
      answer(
        deltaChunk({ reasoning_content: "think" }),
        deltaChunk({ tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "get_weather", arguments: "" } }] }),
        deltaChunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":"Paris"}' } }] }),
        deltaChunk({}, "tool_calls"),
        "[DONE]",
      ),
    );
    const { events, result } = run(up);
    await result;
    assert.deepEqual(events, [
      STARTED,
      { $case: "reasoningDelta", value: { text: "think" } },
      { $case: "toolCallDelta", value: { index: 0, id: "call_1", name: "get_weather", arguments: "" } },
      { $case: "toolCallDelta", value: { index: 0, id: "", name: "", arguments: '{"city":"Paris"}' } },
      { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_TOOL_CALLS } },
    ]);
  });

  test("a stream ending without finish_reason or [DONE] rejects with RUNNEL_ERR_PROVIDER_STREAM_CUT", BOUNDED, async (t) => {
    const up = await upstream(t, answer(deltaChunk({ role: "assistant", content: "" }), deltaChunk({ content: "Hel" })));
    const { events, result } = run(up);
    const error = await rejection(result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
    assert.equal(
      events.some((e) => e.$case === "done"),
      false,
    );
  });

  test("a stream with a finish_reason but no [DONE] resolves", BOUNDED, async (t) => {
    const up = await upstream(t, answer(deltaChunk({ content: "Hi" }), deltaChunk({}, "length")));
    const { events, result } = run(up);
    await result;
    assert.deepEqual(events.at(-1), { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_LENGTH } });
  });

  test("[DONE] without a finish_reason resolves with stop", BOUNDED, async (t) => {
    const up = await upstream(t, answer(deltaChunk({ content: "Hi" }), "[DONE]"));
    const { events, result } = run(up);
    await result;
    assert.deepEqual(events.at(-1), { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP } });
  });

  test("an unknown finish_reason is treated as stop", BOUNDED, async (t) => {
    const up = await upstream(t, answer(deltaChunk({ content: "Hi" }, "eos_token"), "[DONE]"));
    const { events, result } = run(up);
    await result;
    assert.deepEqual(events.at(-1), { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP } });
  });

  test("a malformed data line is skipped and reported to onMalformedChunk", BOUNDED, async (t) => {
    const up = await upstream(
      t,
      answer(deltaChunk({ content: "a" }), "{oops", deltaChunk({ content: "b" }), { ...BASE, choices: "not an array" }, deltaChunk({}, "stop"), "[DONE]"),
    );
    const reasons: string[] = [];
    const { events, result } = run(up, { onMalformedChunk: (reason) => reasons.push(reason) });
    await result;
    assert.equal(reasons.length, 2);
    assert.equal(reasons[0], "not JSON");
    assert.deepEqual(
      events.filter((e) => e.$case === "textDelta"),
      [
        { $case: "textDelta", value: { text: "a" } },
        { $case: "textDelta", value: { text: "b" } },
      ],
    );
    assert.equal(events.at(-1)?.$case, "done");
  });

  test("with malformedChunks: fail, one malformed chunk fails the stream with RUNNEL_ERR_PROVIDER_BAD_RESPONSE", BOUNDED, async (t) => {
    const up = await upstream(t, answer(deltaChunk({ content: "a" }), "{oops", deltaChunk({ content: "b" }), deltaChunk({}, "stop"), "[DONE]"));
    const strict: Upstream = { ...up, provider: { ...up.provider, failOnMalformedChunk: true } };
    const { events, result } = run(strict);
    await assert.rejects(result, (error: unknown) => error instanceof RunnelError && error.code === "RUNNEL_ERR_PROVIDER_BAD_RESPONSE");
    assert.equal(
      events.some((event) => event.$case === "done"),
      false,
    );
  });

  test("only malformed chunks then [DONE] rejects with RUNNEL_ERR_PROVIDER_BAD_RESPONSE, never an empty success", BOUNDED, async (t) => {
    const up = await upstream(t, answer("{oops", "{also not json", "[DONE]"));
    const { events, result } = run(up);
    await assert.rejects(result, (error: unknown) => error instanceof RunnelError && error.code === "RUNNEL_ERR_PROVIDER_BAD_RESPONSE");
    assert.equal(
      events.some((event) => event.$case === "done"),
      false,
    );
  });

  test("the connection is reused when the body's end arrives after [DONE]", BOUNDED, async (t) => {
    let connections = 0;
    const up = await upstream(t, (_req, res) => {
      startSse(res);
      res.write(frame(deltaChunk({ content: "hi" })) + frame(deltaChunk({}, "stop")) + frame("[DONE]"));
      // The chunked terminator in a later packet, as real servers often send it.
      setTimeout(() => res.end(), 20);
    });
    const server = up.server;
    server.on("connection", () => {
      connections += 1;
    });
    for (let index = 0; index < 5; index++) {
      const { events, result } = run(up);
      await result;
      assert.equal(events.at(-1)?.$case, "done");
    }
    // Not one connection per stream (a connection being released as the next request starts may add one).
    assert.ok(connections <= 2, `${connections} connections for 5 streams`);
  });

  test("done is emitted as soon as [DONE] arrives, before the body ends", BOUNDED, async (t) => {
    let release: () => void = () => {};
    const up = await upstream(t, (_req, res) => {
      startSse(res);
      res.write(frame(deltaChunk({ content: "hi" })) + frame(deltaChunk({}, "stop")) + frame("[DONE]"));
      release = () => res.end();
    });
    const { events, result } = run(up);
    const deadline = Date.now() + 2_000;
    while (!events.some((event) => event.$case === "done") && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(events.at(-1)?.$case, "done");
    release();
    await result;
  });

  test("a 429 with Retry-After rejects with RUNNEL_ERR_PROVIDER_RATE_LIMITED carrying the provider's message", BOUNDED, async (t) => {
    const up = await upstream(t, (_req, res) => {
      res.writeHead(429, { "content-type": "application/json", "retry-after": "3" });
      res.end(JSON.stringify({ error: { message: "Rate limit reached for gpt-4o-mini", type: "requests", param: null, code: "rate_limit_exceeded" } }));
    });
    const { events, result } = run(up);
    const error = await rejection(result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
    assert.equal(error.retryable, true);
    assert.match(error.message, /Rate limit reached for gpt-4o-mini/);
    assert.match(error.message, /429/);
    assert.match(error.message, /retry after 3/);
    assert.deepEqual(events, [], "nothing is emitted before a successful answer");
  });

  test("a 401 rejects with RUNNEL_ERR_PROVIDER_AUTH", BOUNDED, async (t) => {
    const up = await upstream(t, (_req, res) => {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "Incorrect API key provided" } }));
    });
    const error = await rejection(run(up).result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_AUTH");
    assert.match(error.message, /Incorrect API key provided/);
  });

  test("a 500 with a non-JSON body rejects with RUNNEL_ERR_PROVIDER_UNAVAILABLE quoting the body", BOUNDED, async (t) => {
    const up = await upstream(t, (_req, res) => {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end("upstream exploded");
    });
    const error = await rejection(run(up).result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.match(error.message, /upstream exploded/);
  });

  test("an error object mid-stream rejects with RUNNEL_ERR_PROVIDER_UNAVAILABLE", BOUNDED, async (t) => {
    const up = await upstream(t, answer(deltaChunk({ content: "a" }), { error: { message: "model overloaded" } }, deltaChunk({}, "stop")));
    const { events, result } = run(up);
    const error = await rejection(result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.match(error.message, /model overloaded/);
    assert.equal(
      events.some((e) => e.$case === "done"),
      false,
    );
  });

  test("a stall after one token rejects with RUNNEL_ERR_PROVIDER_TIMEOUT after the idle limit", BOUNDED, async (t) => {
    const up = await upstream(t, (_req, res) => {
      startSse(res);
      res.write(frame(deltaChunk({ role: "assistant", content: "" })));
      res.write(frame(deltaChunk({ content: "only" })));
      // ...and nothing more: the connection stays open.
    });
    const { events, times, result } = run(up);
    const error = await rejection(result);
    const rejectedAt = performance.now();
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
    assert.match(error.message, /300 ms/);
    const tokenIndex = events.findIndex((e) => e.$case === "textDelta");
    const tokenAt = times[tokenIndex];
    assert.ok(tokenAt !== undefined, "the one token was emitted");
    const waited = rejectedAt - tokenAt;
    assert.ok(waited >= 290 && waited <= 800, `timed out after ${waited.toFixed(0)} ms`);
  });

  test("no first token within firstTokenMs rejects with RUNNEL_ERR_PROVIDER_TIMEOUT", BOUNDED, async (t) => {
    const up = await upstream(
      t,
      (_req, res) => {
        startSse(res);
        res.write(frame(deltaChunk({ role: "assistant", content: "" })));
      },
      { connectMs: 1000, firstTokenMs: 150, idleMs: 5000, totalMs: 0 },
    );
    const started = performance.now();
    const error = await rejection(run(up).result);
    const waited = performance.now() - started;
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
    assert.match(error.message, /first token/);
    assert.ok(waited >= 140 && waited <= 700, `timed out after ${waited.toFixed(0)} ms`);
  });

  test("aborting the signal mid-stream rejects and closes the upstream socket promptly", BOUNDED, async (t) => {
    const up = await upstream(t, (_req, res) => {
      startSse(res);
      res.write(frame(deltaChunk({ content: "first" })));
    });
    const controller = new AbortController();
    let abortedAt = 0;
    const { events, result } = run(up, {
      signal: controller.signal,
      onEmit: (event) => {
        if (event.$case === "textDelta") {
          setImmediate(() => {
            abortedAt = performance.now();
            controller.abort(new Error("client went away"));
          });
        }
      },
    });
    const error = await rejection(result);
    assert.ok(abortedAt > 0, "the abort happened after the first token");
    assert.equal(
      events.some((e) => e.$case === "done"),
      false,
    );
    assert.notEqual(error.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
    let guard: NodeJS.Timeout | undefined;
    const closedAt = await Promise.race([
      up.socketClosed,
      new Promise<number>((resolve) => {
        guard = setTimeout(() => resolve(Number.POSITIVE_INFINITY), 1000);
      }),
    ]);
    clearTimeout(guard);
    assert.ok(closedAt - abortedAt <= 200, `socket closed ${(closedAt - abortedAt).toFixed(0)} ms after the abort`);
  });

  test("aborting with a RunnelError reason rejects with that error", BOUNDED, async (t) => {
    const up = await upstream(t, (_req, res) => {
      startSse(res);
      res.write(frame(deltaChunk({ content: "first" })));
    });
    const controller = new AbortController();
    const reason = new RunnelError("RUNNEL_ERR_CANCELLED", "cancelled by the client");
    const { result } = run(up, {
      signal: controller.signal,
      onEmit: (event) => {
        if (event.$case === "textDelta") setImmediate(() => controller.abort(reason));
      },
    });
    assert.equal(await rejection(result), reason);
  });

  test("an already aborted signal rejects without a request reaching the server", BOUNDED, async (t) => {
    const up = await upstream(t, answer(deltaChunk({ content: "x" }, "stop")));
    const controller = new AbortController();
    controller.abort(new Error("too late"));
    const { events, result } = run(up, { signal: controller.signal });
    await rejection(result);
    assert.deepEqual(events, []);
    assert.equal(up.seen.length, 0);
  });

  test("a refused connection rejects with RUNNEL_ERR_PROVIDER_UNAVAILABLE", BOUNDED, async (t) => {
    const up = await upstream(t, answer());
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    up.provider.baseUrl = `http://127.0.0.1:${port}/v1`;
    const error = await rejection(run(up).result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
  });
});
