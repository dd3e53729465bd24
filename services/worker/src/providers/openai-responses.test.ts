import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import type { ServerResponse } from "node:http";
import { describe, test } from "node:test";
import { type ChatMessage, type EventBody, FinishReason } from "@runnel/shared";
import { classifyResponsesError, createOpenAIResponsesAdapter, openAIResponsesRequestBody } from "./openai-responses.js";
import { BOUNDED, chatRequest, errorAnswer, type Handler, rejection, replay, runAdapter, sse, textMessage, upstream } from "./test-support.js";

const FIXTURES = new URL("../../../../test/fixtures/providers/", import.meta.url);

function fixture(name: string): string {
  return readFileSync(new URL(name, FIXTURES), "utf8");
}

/** Serves a body whole or in 5-byte pieces (SSE lines and UTF-8 characters split across reads). */
function serve(body: string, how: "whole" | "5-byte pieces"): Handler {
  return (_request, response: ServerResponse) => {
    response.writeHead(200, { "content-type": "text/event-stream" });
    if (how === "whole") {
      response.end(body);
      return;
    }
    const bytes = Buffer.from(body, "utf8");
    let offset = 0;
    const next = () => {
      if (offset >= bytes.length) {
        response.end();
        return;
      }
      response.write(bytes.subarray(offset, offset + 5));
      offset += 5;
      setImmediate(next);
    };
    next();
  };
}

const started = (model = "served-model"): EventBody => ({ $case: "started", value: { provider: "p", model, attempt: 1 } });
const text = (value: string): EventBody => ({ $case: "textDelta", value: { text: value } });
const reasoning = (value: string): EventBody => ({ $case: "reasoningDelta", value: { text: value } });
const tool = (index: number, id: string, name: string, args: string): EventBody => ({ $case: "toolCallDelta", value: { index, id, name, arguments: args } });
const usage = (inputTokens: number, outputTokens: number, cachedInputTokens = 0, reasoningTokens = 0): EventBody => ({
  $case: "usage",
  value: { inputTokens, outputTokens, cachedInputTokens, reasoningTokens },
});
const done = (finishReason: FinishReason): EventBody => ({ $case: "done", value: { finishReason } });

async function run(t: { after(fn: () => Promise<void> | void): void }, handler: Handler) {
  const up = await upstream(t, handler, { type: "openai-responses" });
  const adapter = createOpenAIResponsesAdapter({ agents: up.agents });
  return { up, run: runAdapter(adapter, { provider: { ...up.provider, baseUrl: `${up.provider.baseUrl}/v1` } }, { model: "served-model" }) };
}

/** One Responses event as OpenAI frames it: `event: <type>` and the data. */
function event(data: Record<string, unknown> & { type: string }): string {
  return sse(data, data.type);
}

const CREATED = event({ type: "response.created", sequence_number: 0, response: { id: "resp_1", object: "response", status: "in_progress", output: [] } });
const MESSAGE_ADDED = event({
  type: "response.output_item.added",
  sequence_number: 1,
  output_index: 0,
  item: { id: "msg_1", type: "message", status: "in_progress", content: [], role: "assistant" },
});
const delta = (value: string, sequence = 2) =>
  event({ type: "response.output_text.delta", sequence_number: sequence, item_id: "msg_1", output_index: 0, content_index: 0, delta: value, logprobs: [] });
const terminal = (type: string, response: Record<string, unknown>, sequence = 9) =>
  event({ type, sequence_number: sequence, response: { id: "resp_1", object: "response", output: [], ...response } });
const USAGE = {
  input_tokens: 9,
  input_tokens_details: { cached_tokens: 4 },
  output_tokens: 3,
  output_tokens_details: { reasoning_tokens: 1 },
  total_tokens: 12,
};

const message = (role: string, content: ChatMessage["content"], extra: Partial<ChatMessage> = {}): ChatMessage => ({
  role,
  content,
  name: "",
  toolCallId: "",
  toolCalls: [],
  ...extra,
});

describe("openAIResponsesRequestBody", () => {
  test("a minimal request: the input items, a stream, nothing stored upstream, no obfuscation padding", () => {
    assert.deepEqual(openAIResponsesRequestBody(chatRequest(), "gpt-5"), {
      model: "gpt-5",
      input: [{ role: "user", content: "Hi" }],
      stream: true,
      store: false,
      stream_options: { include_obfuscation: false },
    });
  });

  test("the conversation as items: system, user parts with images, assistant text then its function calls, tool outputs", () => {
    const body = openAIResponsesRequestBody(
      chatRequest({
        messages: [
          textMessage("system", "Be brief."),
          message("user", [
            { part: { $case: "text", value: "Weather here?" } },
            { part: { $case: "imageUrl", value: { url: "https://example.com/sky.png", detail: "" } } },
          ]),
          message("assistant", [{ part: { $case: "text", value: "Checking." } }], {
            toolCalls: [
              { id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' },
              { id: "call_2", name: "get_time", arguments: "{}" },
            ],
          }),
          message("tool", [{ part: { $case: "text", value: "21C" } }], { toolCallId: "call_1" }),
          message("tool", [{ part: { $case: "imageUrl", value: { url: "data:image/png;base64,AAAA", detail: "low" } } }], { toolCallId: "call_2" }),
          message("assistant", [], { toolCalls: [{ id: "call_3", name: "noop", arguments: "" }] }),
          message("tool", [], { toolCallId: "call_3" }),
          message("assistant", []),
        ],
      }),
      "m",
    );
    assert.deepEqual(body.input, [
      { role: "system", content: "Be brief." },
      {
        role: "user",
        content: [
          { type: "input_text", text: "Weather here?" },
          { type: "input_image", image_url: "https://example.com/sky.png", detail: "auto" },
        ],
      },
      { role: "assistant", content: "Checking." },
      { type: "function_call", call_id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' },
      { type: "function_call", call_id: "call_2", name: "get_time", arguments: "{}" },
      { type: "function_call_output", call_id: "call_1", output: "21C" },
      { type: "function_call_output", call_id: "call_2", output: [{ type: "input_image", image_url: "data:image/png;base64,AAAA", detail: "low" }] },
      // An assistant turn with only tool calls is only its calls.
      { type: "function_call", call_id: "call_3", name: "noop", arguments: "" },
      { type: "function_call_output", call_id: "call_3", output: "" },
      { role: "assistant", content: "" },
    ]);
  });

  test("sampling, limits, the user, tools (non-strict unless set), tool_choice, the output format and reasoning in the Responses shapes", () => {
    const schema = { type: "object", properties: { name: { type: "string" } } };
    const body = openAIResponsesRequestBody(
      chatRequest({
        temperature: 0,
        topP: 0.5,
        maxTokens: 64,
        stop: ["END"],
        seed: 7,
        user: "user-hash",
        tools: [
          { name: "get_weather", description: "Weather now", parametersJson: '{"type":"object"}', strict: true },
          { name: "ping", description: "", parametersJson: "" },
        ],
        toolChoiceJson: JSON.stringify({ type: "function", function: { name: "get_weather" } }),
        responseFormatJson: JSON.stringify({ type: "json_schema", json_schema: { name: "person", schema, strict: true } }),
        reasoningEffort: "low",
        reasoningSummary: "auto",
      }),
      "m",
    );
    assert.equal(body.temperature, 0);
    assert.equal(body.top_p, 0.5);
    assert.equal(body.max_output_tokens, 64);
    assert.equal(body.safety_identifier, "user-hash");
    assert.deepEqual(body.tools, [
      { type: "function", name: "get_weather", description: "Weather now", parameters: { type: "object" }, strict: true },
      { type: "function", name: "ping", parameters: { type: "object", properties: {} }, strict: false },
    ]);
    assert.deepEqual(body.tool_choice, { type: "function", name: "get_weather" });
    assert.deepEqual(body.text, { format: { type: "json_schema", name: "person", schema, strict: true } });
    assert.deepEqual(body.reasoning, { effort: "low", summary: "auto" });
    // The Responses API has no stop or seed parameter.
    assert.equal(Object.hasOwn(body, "stop"), false);
    assert.equal(Object.hasOwn(body, "seed"), false);
    assert.equal(openAIResponsesRequestBody(chatRequest({ toolChoiceJson: '"required"' }), "m").tool_choice, "required");
    assert.deepEqual(openAIResponsesRequestBody(chatRequest({ responseFormatJson: '{"type":"json_object"}' }), "m").text, { format: { type: "json_object" } });
    assert.deepEqual(openAIResponsesRequestBody(chatRequest({ reasoningEffort: "high" }), "m").reasoning, { effort: "high" });
  });
});

describe("classifyResponsesError", () => {
  test("rate limits, server errors, context length and bad requests onto the RUNNEL_ERR codes", () => {
    assert.deepEqual(classifyResponsesError("rate_limit_exceeded", "slow down"), { code: "RUNNEL_ERR_PROVIDER_RATE_LIMITED", retry: true });
    assert.deepEqual(classifyResponsesError("too_many_requests", "Too Many Requests"), { code: "RUNNEL_ERR_PROVIDER_RATE_LIMITED", retry: true });
    assert.deepEqual(classifyResponsesError("server_error", "oops"), { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", retry: true });
    assert.deepEqual(classifyResponsesError("", "no code"), { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", retry: true });
    assert.deepEqual(classifyResponsesError("context_length_exceeded", "too long"), { code: "RUNNEL_ERR_CONTEXT_LENGTH", retry: false });
    assert.deepEqual(classifyResponsesError("invalid_prompt", "Invalid prompt: flagged as potentially violating our usage policy"), {
      code: "RUNNEL_ERR_CONTENT_POLICY",
      retry: false,
    });
    assert.deepEqual(classifyResponsesError("invalid_image_url", "bad image"), { code: "RUNNEL_ERR_PROVIDER_BAD_REQUEST", retry: false });
  });
});

describe("recorded OpenAI Responses streams through the adapter", () => {
  for (const how of ["whole", "5-byte pieces"] as const) {
    test(`text (${how}): the deltas, usage, stop`, BOUNDED, async (t) => {
      const { up, run: stream } = await run(t, serve(fixture("openai-responses-text.sse"), how));
      await stream.result;
      const words = [
        "I",
        "'m",
        " an",
        " artificial",
        " intelligence",
        " trained",
        " to",
        " assist",
        " with",
        " tasks",
        " and",
        " provide",
        " information",
        ".",
      ];
      assert.deepEqual(stream.events, [started(), ...words.map(text), usage(10, 16), done(FinishReason.FINISH_REASON_STOP)]);
      const seen = up.seen[0];
      assert.equal(seen?.url, "/v1/responses");
      assert.equal(seen?.headers.authorization, "Bearer sk-secret-key-123");
      assert.equal(seen?.headers.accept, "text/event-stream");
      assert.deepEqual(JSON.parse(seen?.body ?? "{}"), openAIResponsesRequestBody(chatRequest(), "served-model"));
    });

    test(`two function calls (${how}): each call's id and name, then its argument fragments; finish tool_calls`, BOUNDED, async (t) => {
      const { run: stream } = await run(t, serve(fixture("openai-responses-tool-calls.sse"), how));
      await stream.result;
      const search = ["{", '"query', '":', '"Detroit', " Tigers", " game", " schedule", " October", " ", "10", ",", " ", "202", "3", '"}'];
      const weather = ["{", '"city', '":', '"Detroit', '"}'];
      assert.deepEqual(stream.events, [
        started(),
        tool(0, "call_okunv0eUNIXE8kqY81fgYvCs", "search", ""),
        ...search.map((piece) => tool(0, "", "", piece)),
        tool(1, "call_ydtVlYcFLcDX2C7dcHgKZjl3", "weather", ""),
        ...weather.map((piece) => tool(1, "", "", piece)),
        usage(92, 52),
        done(FinishReason.FINISH_REASON_TOOL_CALLS),
      ]);
    });

    test(`reasoning summary then text (${how}): reasoning deltas, text deltas, reasoning tokens in the usage`, BOUNDED, async (t) => {
      const { run: stream } = await run(t, serve(fixture("openai-responses-reasoning.sse"), how));
      await stream.result;
      assert.deepEqual(stream.events, [
        started(),
        ...["**Calcul", "ating", " a", " simple", " sum"].map(reasoning),
        ...["The", " sum", " of", " the", " first", " ", "5", " positive", " integers", " is", " 15", "."].map(text),
        usage(17, 122, 0, 64),
        done(FinishReason.FINISH_REASON_STOP),
      ]);
    });
  }
});

describe("the OpenAI Responses adapter's endings", () => {
  test("response.incomplete for max_output_tokens is a length finish; for content_filter a content_filter finish", BOUNDED, async (t) => {
    const { run: stream } = await run(
      t,
      replay(
        CREATED +
          MESSAGE_ADDED +
          delta("Once") +
          terminal("response.incomplete", { status: "incomplete", incomplete_details: { reason: "max_output_tokens" }, usage: USAGE }),
      ),
    );
    await stream.result;
    assert.deepEqual(stream.events.slice(-3), [text("Once"), usage(9, 3, 4, 1), done(FinishReason.FINISH_REASON_LENGTH)]);
    const filtered = await run(
      t,
      replay(CREATED + terminal("response.incomplete", { status: "incomplete", incomplete_details: { reason: "content_filter" } })),
    );
    await filtered.run.result;
    assert.deepEqual(filtered.run.events.at(-1), done(FinishReason.FINISH_REASON_CONTENT_FILTER));
  });

  test("a refusal is text with a content_filter finish", BOUNDED, async (t) => {
    const refusal = event({
      type: "response.refusal.delta",
      sequence_number: 2,
      item_id: "msg_1",
      output_index: 0,
      content_index: 0,
      delta: "I can't help with that.",
    });
    const { run: stream } = await run(t, replay(CREATED + MESSAGE_ADDED + refusal + terminal("response.completed", { status: "completed" })));
    await stream.result;
    assert.deepEqual(stream.events.slice(1), [text("I can't help with that."), done(FinishReason.FINISH_REASON_CONTENT_FILTER)]);
  });

  test("response.failed ends the stream with the mapped error and the upstream's message, never a done", BOUNDED, async (t) => {
    const failed = terminal("response.failed", { status: "failed", error: { code: "server_error", message: "The model failed to generate a response." } }, 3);
    const { run: stream } = await run(t, replay(CREATED + MESSAGE_ADDED + delta("Hel") + failed + delta("never", 4)));
    const error = await rejection(stream.result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.match(error.message, /The model failed to generate a response\. \(server_error\)/);
    assert.deepEqual(stream.events, [started(), text("Hel")]);
  });

  test("an error event, nested as OpenAI sends it or flat as it documents it, ends the stream with its code", BOUNDED, async (t) => {
    const nested = event({
      type: "error",
      sequence_number: 2,
      error: { type: "too_many_requests", code: "too_many_requests", message: "Too Many Requests", param: null },
    });
    const first = await run(t, replay(CREATED + nested));
    const limited = await rejection(first.run.result);
    assert.equal(limited.code, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
    assert.match(limited.message, /Too Many Requests/);
    const flat = event({
      type: "error",
      sequence_number: 3,
      code: "context_length_exceeded",
      message: "Your input exceeds the context window of this model.",
      param: "input",
    });
    const second = await run(t, replay(CREATED + MESSAGE_ADDED + delta("a") + flat));
    const tooLong = await rejection(second.run.result);
    assert.equal(tooLong.code, "RUNNEL_ERR_CONTEXT_LENGTH");
    assert.equal(
      second.run.events.some((body) => body.$case === "done"),
      false,
    );
  });

  test("a body that ends without a terminal event is cut", BOUNDED, async (t) => {
    const { run: stream } = await run(t, replay(CREATED + MESSAGE_ADDED + delta("Hel")));
    assert.equal((await rejection(stream.result)).code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
  });

  test("HTTP errors keep OpenAI's message: a 429 with Retry-After, a 401", BOUNDED, async (t) => {
    const limited = await run(
      t,
      errorAnswer(429, { error: { message: "Rate limit reached for gpt-5", type: "requests", code: "rate_limit_exceeded" } }, { "retry-after": "2" }),
    );
    const error = await rejection(limited.run.result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
    assert.match(error.message, /Rate limit reached for gpt-5 \(retry after 2s\)/);
    const auth = await run(t, errorAnswer(401, { error: { message: "Incorrect API key provided" } }));
    assert.equal((await rejection(auth.run.result)).code, "RUNNEL_ERR_PROVIDER_AUTH");
  });
});

describe("the OpenAI Responses adapter's reading", () => {
  test("event types it does not read are skipped, not counted as malformed; a malformed event is skipped and counted", BOUNDED, async (t) => {
    const reasons: string[] = [];
    const up = await upstream(
      t,
      replay(
        CREATED +
          event({ type: "response.in_progress", sequence_number: 1, response: {} }) +
          event({ type: "response.output_text.annotation.added", sequence_number: 2, annotation: {} }) +
          event({ type: "response.web_search_call.searching", sequence_number: 3 }) +
          MESSAGE_ADDED +
          "event: response.output_text.delta\ndata: {not json\n\n" +
          event({ type: "response.output_text.delta", sequence_number: 5, delta: 42 }) +
          delta("ok", 6) +
          terminal("response.completed", { status: "completed" }),
      ),
    );
    const adapter = createOpenAIResponsesAdapter({ agents: up.agents, onMalformedChunk: (reason) => reasons.push(reason) });
    const stream = runAdapter(adapter, up, { model: "served-model" });
    await stream.result;
    assert.equal(reasons.length, 2);
    assert.deepEqual(stream.events, [started(), text("ok"), done(FinishReason.FINISH_REASON_STOP)]);
  });

  test("arguments that come only whole (in arguments.done or output_item.done) go out once", BOUNDED, async (t) => {
    const added = (index: number, id: string) =>
      event({
        type: "response.output_item.added",
        sequence_number: 1,
        output_index: index,
        item: { id, type: "function_call", status: "in_progress", arguments: "", call_id: `call_${id}`, name: "f" },
      });
    const { run: stream } = await run(
      t,
      replay(
        CREATED +
          added(0, "a") +
          event({ type: "response.function_call_arguments.done", sequence_number: 2, item_id: "a", output_index: 0, arguments: '{"x":1}' }) +
          event({
            type: "response.output_item.done",
            sequence_number: 3,
            output_index: 0,
            item: { id: "a", type: "function_call", status: "completed", arguments: '{"x":1}', call_id: "call_a", name: "f" },
          }) +
          added(1, "b") +
          event({
            type: "response.output_item.done",
            sequence_number: 5,
            output_index: 1,
            item: { id: "b", type: "function_call", status: "completed", arguments: '{"y":2}', call_id: "call_b", name: "f" },
          }) +
          terminal("response.completed", { status: "completed" }),
      ),
    );
    await stream.result;
    assert.deepEqual(stream.events.slice(1), [
      tool(0, "call_a", "f", ""),
      tool(0, "", "", '{"x":1}'),
      tool(1, "call_b", "f", ""),
      tool(1, "", "", '{"y":2}'),
      done(FinishReason.FINISH_REASON_TOOL_CALLS),
    ]);
  });

  test("a second reasoning summary part is set apart from the first; raw reasoning text is reasoning too", BOUNDED, async (t) => {
    const summary = (index: number, value: string) =>
      event({ type: "response.reasoning_summary_text.delta", sequence_number: 2, item_id: "rs_1", output_index: 0, summary_index: index, delta: value });
    const raw = event({ type: "response.reasoning_text.delta", sequence_number: 5, item_id: "rs_2", output_index: 1, content_index: 0, delta: "raw" });
    const { run: stream } = await run(
      t,
      replay(CREATED + summary(0, "**One**") + summary(0, " more") + summary(1, "**Two**") + raw + terminal("response.completed", { status: "completed" })),
    );
    await stream.result;
    assert.deepEqual(stream.events.slice(1, -1), [reasoning("**One**"), reasoning(" more"), reasoning("\n\n**Two**"), reasoning("raw")]);
  });
});
