import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type EventBody, FinishReason, RunnelError, type Usage } from "@runnel/shared";
import {
  ANTHROPIC_DEFAULT_MAX_TOKENS,
  AnthropicDecoder,
  anthropicMessagesUrl,
  anthropicRequestBody,
  createAnthropicAdapter,
  finishReasonFromAnthropic,
} from "./anthropic.js";
import { ProviderError } from "./http.js";
import type { DecoderSink } from "./sse-stream.js";
import { BOUNDED, chatRequest, errorAnswer, rejection, replay, runAdapter, sse, textMessage, upstream, within } from "./test-support.js";

describe("anthropicRequestBody", () => {
  test("a minimal request streams with the default max_tokens and no optional field", () => {
    assert.deepEqual(anthropicRequestBody(chatRequest(), "claude-sonnet-4-5"), {
      model: "claude-sonnet-4-5",
      max_tokens: ANTHROPIC_DEFAULT_MAX_TOKENS,
      stream: true,
      messages: [{ role: "user", content: [{ type: "text", text: "Hi" }] }],
    });
  });

  test("system and developer messages become the system prompt, in order", () => {
    const body = anthropicRequestBody(
      chatRequest({ messages: [textMessage("system", "Be brief."), textMessage("developer", "Answer in French."), textMessage("user", "Hi")] }),
      "m",
    );
    assert.deepEqual(body.system, [
      { type: "text", text: "Be brief." },
      { type: "text", text: "Answer in French." },
    ]);
    assert.deepEqual(body.messages, [{ role: "user", content: [{ type: "text", text: "Hi" }] }]);
  });

  test("sampling fields, stop sequences and the user id map to Anthropic's names; seed is not sent", () => {
    const body = anthropicRequestBody(chatRequest({ temperature: 0, topP: 0.5, maxTokens: 64, stop: ["END"], seed: 7, user: "u-1" }), "m");
    assert.equal(body.temperature, 0);
    assert.equal(body.top_p, 0.5);
    assert.equal(body.max_tokens, 64);
    assert.deepEqual(body.stop_sequences, ["END"]);
    assert.deepEqual(body.metadata, { user_id: "u-1" });
    assert.equal(Object.hasOwn(body, "seed"), false);
    assert.equal(Object.hasOwn(body, "stop"), false);
  });

  test("tool calls become tool_use blocks; tool results become tool_result blocks merged into one user turn", () => {
    const body = anthropicRequestBody(
      chatRequest({
        messages: [
          textMessage("user", "Weather in Paris and Rome?"),
          {
            role: "assistant",
            content: [{ part: { $case: "text", value: "Checking." } }],
            name: "",
            toolCallId: "",
            toolCalls: [
              { id: "toolu_1", name: "get_weather", arguments: '{"city":"Paris"}' },
              { id: "toolu_2", name: "get_weather", arguments: "" },
            ],
          },
          { ...textMessage("tool", "21C"), toolCallId: "toolu_1" },
          { ...textMessage("tool", "25C"), toolCallId: "toolu_2" },
        ],
      }),
      "m",
    );
    assert.deepEqual(body.messages, [
      { role: "user", content: [{ type: "text", text: "Weather in Paris and Rome?" }] },
      {
        role: "assistant",
        content: [
          { type: "text", text: "Checking." },
          { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Paris" } },
          { type: "tool_use", id: "toolu_2", name: "get_weather", input: {} },
        ],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "toolu_1", content: "21C" },
          { type: "tool_result", tool_use_id: "toolu_2", content: "25C" },
        ],
      },
    ]);
  });

  test("tool arguments that are not JSON are the client's error, naming the field", () => {
    assert.throws(
      () =>
        anthropicRequestBody(
          chatRequest({ messages: [{ role: "assistant", content: [], name: "", toolCallId: "", toolCalls: [{ id: "t", name: "f", arguments: "{oops" }] }] }),
          "m",
        ),
      (error: unknown) =>
        error instanceof RunnelError && error.code === "RUNNEL_ERR_INVALID_REQUEST" && error.param === "messages[0].tool_calls[0].function.arguments",
    );
  });

  test("tools map to input_schema and every tool_choice form maps to Anthropic's", () => {
    const parameters = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };
    const tools = [
      { name: "get_weather", description: "Weather now", parametersJson: JSON.stringify(parameters) },
      { name: "ping", description: "", parametersJson: "" },
    ];
    const body = anthropicRequestBody(chatRequest({ tools }), "m");
    assert.deepEqual(body.tools, [
      { name: "get_weather", description: "Weather now", input_schema: parameters },
      { name: "ping", input_schema: { type: "object", properties: {} } },
    ]);
    const choice = (json: string) => anthropicRequestBody(chatRequest({ tools, toolChoiceJson: json }), "m").tool_choice;
    assert.deepEqual(choice('"auto"'), { type: "auto" });
    assert.deepEqual(choice('"none"'), { type: "none" });
    assert.deepEqual(choice('"required"'), { type: "any" });
    assert.deepEqual(choice('{"type":"function","function":{"name":"get_weather"}}'), { type: "tool", name: "get_weather" });
  });

  test("images: data URLs become base64 sources, other URLs url sources; empty text parts are dropped", () => {
    const body = anthropicRequestBody(
      chatRequest({
        messages: [
          {
            role: "user",
            content: [
              { part: { $case: "text", value: "" } },
              { part: { $case: "text", value: "What is this?" } },
              { part: { $case: "imageUrl", value: { url: "data:image/png;base64,iVBORw0KGgo=", detail: "" } } },
              { part: { $case: "imageUrl", value: { url: "https://example.com/cat.jpg", detail: "high" } } },
            ],
            name: "",
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
        content: [
          { type: "text", text: "What is this?" },
          { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
          { type: "image", source: { type: "url", url: "https://example.com/cat.jpg" } },
        ],
      },
    ]);
  });

  test("a last assistant message is sent as a prefill for the model to continue", () => {
    const body = anthropicRequestBody(chatRequest({ messages: [textMessage("user", "Name a colour."), textMessage("assistant", "The colour is")] }), "m");
    assert.deepEqual((body.messages as { role: string }[]).at(-1), { role: "assistant", content: [{ type: "text", text: "The colour is" }] });
  });

  test("the Messages URL follows the SDKs' base URL, with or without /v1", () => {
    assert.equal(anthropicMessagesUrl("https://api.anthropic.com"), "https://api.anthropic.com/v1/messages");
    assert.equal(anthropicMessagesUrl("https://api.anthropic.com/"), "https://api.anthropic.com/v1/messages");
    assert.equal(anthropicMessagesUrl("http://gateway.internal/anthropic/v1"), "http://gateway.internal/anthropic/v1/messages");
  });
});

describe("finishReasonFromAnthropic", () => {
  test("maps every stop reason onto OpenAI's set", () => {
    assert.equal(finishReasonFromAnthropic("end_turn"), FinishReason.FINISH_REASON_STOP);
    assert.equal(finishReasonFromAnthropic("stop_sequence"), FinishReason.FINISH_REASON_STOP);
    assert.equal(finishReasonFromAnthropic("pause_turn"), FinishReason.FINISH_REASON_STOP);
    assert.equal(finishReasonFromAnthropic("max_tokens"), FinishReason.FINISH_REASON_LENGTH);
    assert.equal(finishReasonFromAnthropic("model_context_window_exceeded"), FinishReason.FINISH_REASON_LENGTH);
    assert.equal(finishReasonFromAnthropic("tool_use"), FinishReason.FINISH_REASON_TOOL_CALLS);
    assert.equal(finishReasonFromAnthropic("refusal"), FinishReason.FINISH_REASON_CONTENT_FILTER);
    assert.equal(finishReasonFromAnthropic("something_new"), FinishReason.FINISH_REASON_STOP);
  });
});

/** A sink that records what a decoder reports. */
function recordingSink() {
  const record = {
    tokens: [] as EventBody[],
    usage: undefined as Usage | undefined,
    finish: undefined as FinishReason | undefined,
    ended: false,
    malformed: [] as string[],
    failed: undefined as RunnelError | undefined,
  };
  const sink: DecoderSink = {
    token: (event) => record.tokens.push(event),
    usage: (usage) => {
      record.usage = usage;
    },
    finish: (reason) => {
      record.finish = reason;
    },
    end: () => {
      record.ended = true;
    },
    malformed: (reason) => record.malformed.push(reason),
    fail: (error) => {
      record.failed = error;
    },
  };
  return { record, sink };
}

function feed(decoder: AnthropicDecoder, sink: DecoderSink, ...events: unknown[]) {
  for (const data of events) decoder.decode({ data: typeof data === "string" ? data : JSON.stringify(data), event: undefined, id: undefined }, sink);
}

describe("AnthropicDecoder", () => {
  test("usage counts cache reads and writes as input, as OpenAI's prompt_tokens do, and cache reads as cached", () => {
    const { record, sink } = recordingSink();
    feed(
      new AnthropicDecoder(),
      sink,
      { type: "message_start", message: { usage: { input_tokens: 10, cache_read_input_tokens: 100, cache_creation_input_tokens: 5, output_tokens: 1 } } },
      { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 42 } },
    );
    assert.deepEqual(record.usage, { inputTokens: 115, outputTokens: 42, cachedInputTokens: 100, reasoningTokens: 0 });
    assert.equal(record.finish, FinishReason.FINISH_REASON_STOP);
  });

  test("two tool_use blocks get tool indexes 0 and 1 whatever their block index", () => {
    const { record, sink } = recordingSink();
    feed(
      new AnthropicDecoder(),
      sink,
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_start", index: 1, content_block: { type: "tool_use", id: "toolu_a", name: "a", input: {} } },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: '{"x":1}' } },
      { type: "content_block_start", index: 2, content_block: { type: "tool_use", id: "toolu_b", name: "b", input: {} } },
      { type: "content_block_delta", index: 2, delta: { type: "input_json_delta", partial_json: "{}" } },
    );
    assert.deepEqual(record.tokens, [
      { $case: "toolCallDelta", value: { index: 0, id: "toolu_a", name: "a", arguments: "" } },
      { $case: "toolCallDelta", value: { index: 0, id: "", name: "", arguments: '{"x":1}' } },
      { $case: "toolCallDelta", value: { index: 1, id: "toolu_b", name: "b", arguments: "" } },
      { $case: "toolCallDelta", value: { index: 1, id: "", name: "", arguments: "{}" } },
    ]);
  });

  test("server tool input (web search) is not forwarded as a client tool call", () => {
    const { record, sink } = recordingSink();
    feed(
      new AnthropicDecoder(),
      sink,
      { type: "content_block_start", index: 0, content_block: { type: "server_tool_use", id: "srvtoolu_1", name: "web_search", input: {} } },
      { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: '{"query":"x"}' } },
    );
    assert.deepEqual(record.tokens, []);
    assert.deepEqual(record.malformed, []);
  });

  test("unknown event types are skipped, not counted as malformed; ping and signature deltas map to nothing", () => {
    const { record, sink } = recordingSink();
    feed(
      new AnthropicDecoder(),
      sink,
      { type: "ping" },
      { type: "some_future_event", payload: 1 },
      { type: "content_block_delta", index: 0, delta: { type: "signature_delta", signature: "abc" } },
    );
    assert.deepEqual(record.tokens, []);
    assert.deepEqual(record.malformed, []);
  });

  test("invalid JSON, a missing type and a known event of the wrong shape are malformed", () => {
    const { record, sink } = recordingSink();
    feed(
      new AnthropicDecoder(),
      sink,
      "{nope",
      { hello: "world" },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: 42 } },
      { type: "content_block_delta", index: 0, delta: { type: "mystery_delta" } },
    );
    assert.equal(record.malformed.length, 4);
    assert.equal(record.malformed[0], "not JSON");
    assert.deepEqual(record.tokens, []);
  });

  test("error events map by their type: retryable or not", () => {
    const cases: Array<[string, string, boolean]> = [
      ["overloaded_error", "RUNNEL_ERR_PROVIDER_UNAVAILABLE", true],
      ["api_error", "RUNNEL_ERR_PROVIDER_UNAVAILABLE", true],
      ["rate_limit_error", "RUNNEL_ERR_PROVIDER_RATE_LIMITED", true],
      ["invalid_request_error", "RUNNEL_ERR_PROVIDER_BAD_REQUEST", false],
      ["authentication_error", "RUNNEL_ERR_PROVIDER_AUTH", false],
      ["permission_error", "RUNNEL_ERR_PROVIDER_AUTH", false],
    ];
    for (const [type, code, retry] of cases) {
      const { record, sink } = recordingSink();
      feed(new AnthropicDecoder(), sink, { type: "error", error: { type, message: "details" } });
      assert.ok(record.failed instanceof ProviderError, type);
      assert.equal(record.failed.code, code, type);
      assert.equal(record.failed.retry, retry, type);
      assert.match(record.failed.message, new RegExp(`${type}: details`));
    }
  });
});

describe("Anthropic adapter against an HTTP server", () => {
  const messageStart = { type: "message_start", message: { id: "msg_1", model: "claude-x", usage: { input_tokens: 3, output_tokens: 1 } } };
  const blockStart = { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } };
  const delta = (value: string) => ({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: value } });
  const messageDelta = (reason: string) => ({ type: "message_delta", delta: { stop_reason: reason, stop_sequence: null }, usage: { output_tokens: 2 } });

  test("posts to /v1/messages with x-api-key and anthropic-version, never an Authorization header", BOUNDED, async (t) => {
    const up = await upstream(
      t,
      replay(sse(messageStart, "message_start") + sse(delta("hi"), "content_block_delta") + sse(messageDelta("end_turn")) + sse({ type: "message_stop" })),
      { type: "anthropic", headers: { "anthropic-beta": "fine-grained-tool-streaming-2025-05-14" } },
    );
    const run = runAdapter(createAnthropicAdapter({ agents: up.agents }), up, { model: "claude-x" });
    await run.result;
    const seen = up.seen[0];
    assert.ok(seen);
    assert.equal(seen.url, "/v1/messages");
    assert.equal(seen.headers["x-api-key"], "sk-secret-key-123");
    assert.equal(seen.headers["anthropic-version"], "2023-06-01");
    assert.equal(seen.headers["anthropic-beta"], "fine-grained-tool-streaming-2025-05-14");
    assert.equal(seen.headers.authorization, undefined);
    assert.deepEqual(JSON.parse(seen.body), anthropicRequestBody(chatRequest(), "claude-x"));
  });

  test("the provider's headers may set another anthropic-version", BOUNDED, async (t) => {
    const up = await upstream(t, replay(sse(messageDelta("end_turn")) + sse({ type: "message_stop" })), { headers: { "anthropic-version": "2099-01-01" } });
    await runAdapter(createAnthropicAdapter({ agents: up.agents }), up).result;
    assert.equal(up.seen[0]?.headers["anthropic-version"], "2099-01-01");
  });

  test("a stop reason without message_stop completes when the body ends", BOUNDED, async (t) => {
    const up = await upstream(t, replay(sse(messageStart) + sse(blockStart) + sse(delta("a")) + sse(messageDelta("max_tokens"))));
    const run = runAdapter(createAnthropicAdapter({ agents: up.agents }), up);
    await run.result;
    assert.deepEqual(run.events.slice(-2), [
      { $case: "usage", value: { inputTokens: 3, outputTokens: 2, cachedInputTokens: 0, reasoningTokens: 0 } },
      { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_LENGTH } },
    ]);
  });

  test("a stop reason without message_stop on a connection kept open completes within a second, not at the idle timeout", BOUNDED, async (t) => {
    const up = await upstream(
      t,
      (_request, response) => {
        response.writeHead(200, { "content-type": "text/event-stream" });
        response.write(sse(messageStart) + sse(delta("a")) + sse(messageDelta("end_turn")));
      },
      { timeouts: { connectMs: 1000, firstTokenMs: 1000, idleMs: 4000, totalMs: 0 } },
    );
    const startedAt = performance.now();
    const run = runAdapter(createAnthropicAdapter({ agents: up.agents }), up);
    await run.result;
    const took = performance.now() - startedAt;
    assert.equal(run.events.at(-1)?.$case, "done");
    assert.ok(took >= 900 && took < 2500, `completed after ${took.toFixed(0)} ms`);
  });

  test("a body that ends before any stop reason is a cut, retryable before the first token", BOUNDED, async (t) => {
    const up = await upstream(t, replay(sse(messageStart) + sse(blockStart) + sse(delta("a"))));
    const run = runAdapter(createAnthropicAdapter({ agents: up.agents }), up);
    const error = await rejection(run.result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
    assert.equal(
      run.events.some((event) => event.$case === "done"),
      false,
    );
  });

  test("an error event after tokens ends the stream with that error, never done", BOUNDED, async (t) => {
    const up = await upstream(
      t,
      replay(
        sse(messageStart) + sse(delta("a")) + sse({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } }, "error") + sse(delta("b")),
      ),
    );
    const run = runAdapter(createAnthropicAdapter({ agents: up.agents }), up);
    const error = await rejection(run.result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.deepEqual(
      run.events.map((event) => event.$case),
      ["started", "textDelta"],
    );
  });

  test("a stream of malformed events only fails with RUNNEL_ERR_PROVIDER_BAD_RESPONSE", BOUNDED, async (t) => {
    const up = await upstream(t, replay(sse("{not json") + sse({ type: "message_delta", delta: "nope" }) + sse({ type: "message_stop" })));
    const reasons: string[] = [];
    const run = runAdapter(createAnthropicAdapter({ agents: up.agents, onMalformedChunk: (reason) => reasons.push(reason) }), up);
    const error = await rejection(run.result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_BAD_RESPONSE");
    assert.equal(reasons.length, 2);
  });

  test("error answers map to catalogued codes with Anthropic's type and message", BOUNDED, async (t) => {
    const cases: Array<[number, string, string, string]> = [
      [400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum", "RUNNEL_ERR_CONTEXT_LENGTH"],
      [401, "authentication_error", "invalid x-api-key", "RUNNEL_ERR_PROVIDER_AUTH"],
      [403, "permission_error", "Your API key does not have permission to use the specified resource.", "RUNNEL_ERR_PROVIDER_AUTH"],
      [429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", "RUNNEL_ERR_PROVIDER_RATE_LIMITED"],
      [500, "api_error", "An unexpected error has occurred internal to Anthropic's systems.", "RUNNEL_ERR_PROVIDER_UNAVAILABLE"],
      [529, "overloaded_error", "Overloaded", "RUNNEL_ERR_PROVIDER_UNAVAILABLE"],
    ];
    for (const [status, type, message, code] of cases) {
      const up = await upstream(
        t,
        errorAnswer(status, { type: "error", error: { type, message }, request_id: "req_1" }, status === 429 ? { "retry-after": "12" } : {}),
      );
      const run = runAdapter(createAnthropicAdapter({ agents: up.agents }), up);
      const error = await rejection(run.result);
      assert.equal(error.code, code, `${status}`);
      assert.ok(error.message.includes(`${type}: ${message}`), error.message);
      assert.ok(error instanceof ProviderError);
      assert.equal(error.status, status);
      if (status === 429) assert.equal(error.retryAfterMs, 12_000);
      assert.deepEqual(run.events, []);
    }
  });

  test("a key echoed back in an error answer is redacted", BOUNDED, async (t) => {
    const up = await upstream(t, errorAnswer(401, { type: "error", error: { type: "authentication_error", message: "invalid x-api-key: sk-secret-key-123" } }));
    const error = await rejection(runAdapter(createAnthropicAdapter({ agents: up.agents }), up).result);
    assert.equal(error.message.includes("sk-secret-key-123"), false, error.message);
    assert.match(error.message, /\[redacted\]/);
  });

  test("aborting mid-stream closes the upstream socket promptly", BOUNDED, async (t) => {
    const up = await upstream(t, (_request, response) => {
      response.writeHead(200, { "content-type": "text/event-stream" });
      response.write(sse(messageStart) + sse(blockStart) + sse(delta("first")));
    });
    const controller = new AbortController();
    let abortedAt = 0;
    const run = runAdapter(createAnthropicAdapter({ agents: up.agents }), up, {
      signal: controller.signal,
      onEmit: (event) => {
        if (event.$case === "textDelta")
          setImmediate(() => {
            abortedAt = performance.now();
            controller.abort(new RunnelError("RUNNEL_ERR_CANCELLED", "client left"));
          });
      },
    });
    const error = await rejection(run.result);
    assert.equal(error.code, "RUNNEL_ERR_CANCELLED");
    const closedAt = await within(up.socketClosed(), 1000, Number.POSITIVE_INFINITY);
    t.diagnostic(`mid-stream: cancel→socket closed ${(closedAt - abortedAt).toFixed(1)} ms`);
    assert.ok(closedAt - abortedAt <= 200, `socket closed ${(closedAt - abortedAt).toFixed(0)} ms after the abort`);
  });
});
