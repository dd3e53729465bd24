import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type ChatMessage, RunnelError } from "@runnel/shared";
import {
  conversationAfter,
  inputItems,
  parseInputItems,
  parseResponsesRequest,
  type ResponsesInputItem,
  type ResponsesRequest,
  responseEcho,
  toChatRequestFromResponses,
  withPreviousTurns,
} from "./responses-request.js";

const MINIMAL = { model: "gpt-4.1", input: "Tell me a three sentence bedtime story about a unicorn." };

function parse(body: Record<string, unknown>): ResponsesRequest {
  return parseResponsesRequest({ ...MINIMAL, ...body });
}

/** Asserts that parsing fails with RUNNEL_ERR_INVALID_REQUEST naming `param`, the message starting with it. */
function assertRejected(body: unknown, param: string | undefined, messagePart?: string): void {
  assert.throws(
    () => parseResponsesRequest(body),
    (error: unknown) => {
      assert.ok(error instanceof RunnelError, `expected a RunnelError, got ${String(error)}`);
      assert.equal(error.code, "RUNNEL_ERR_INVALID_REQUEST");
      assert.equal(error.httpStatus, 400);
      assert.equal(error.param, param, error.message);
      if (param) assert.ok(error.message.startsWith(`${param}: `), error.message);
      if (messagePart) assert.ok(error.message.includes(messagePart), error.message);
      return true;
    },
  );
}

const text = (value: string) => ({ part: { $case: "text" as const, value } });
const message = (role: string, content: ChatMessage["content"], extra: Partial<ChatMessage> = {}): ChatMessage => ({
  role,
  content,
  name: "",
  toolCallId: "",
  toolCalls: [],
  ...extra,
});

describe("parseResponsesRequest", () => {
  test("accepts a string input", () => {
    const request = parseResponsesRequest(MINIMAL);
    assert.equal(request.model, "gpt-4.1");
    assert.equal(request.input, MINIMAL.input);
  });

  test("accepts what the openai SDKs send, with nulls for the fields left out", () => {
    const request = parse({
      instructions: null,
      max_output_tokens: null,
      temperature: null,
      top_p: null,
      tools: null,
      tool_choice: null,
      text: null,
      reasoning: null,
      metadata: null,
      stream: true,
      stream_options: { include_obfuscation: false },
      store: false,
      background: null,
      previous_response_id: null,
      include: ["reasoning.encrypted_content"],
      parallel_tool_calls: true,
      truncation: "disabled",
      top_logprobs: 0,
      conversation: null,
      prompt: null,
      service_tier: "auto",
      prompt_cache_key: "k",
    });
    assert.equal(request.stream, true);
    assert.equal(request.store, false);
  });

  test("accepts every item shape an agent loop sends back: messages, assistant output, reasoning, function calls and outputs", () => {
    const request = parse({
      input: [
        { role: "developer", content: "Be brief." },
        { type: "message", role: "user", content: [{ type: "input_text", text: "Weather in Paris?" }] },
        { type: "reasoning", id: "rs_1", summary: [{ type: "summary_text", text: "Need the tool." }], encrypted_content: "gAAA" },
        {
          id: "msg_1",
          type: "message",
          role: "assistant",
          status: "completed",
          content: [{ type: "output_text", text: "Let me check.", annotations: [], logprobs: [] }],
        },
        { type: "function_call", id: "fc_1", call_id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}', status: "completed" },
        { type: "function_call_output", call_id: "call_1", output: "21C" },
        { role: "user", content: [{ type: "input_image", image_url: "https://example.com/a.png", detail: "high" }] },
      ],
    });
    assert.equal(Array.isArray(request.input) && request.input.length, 7);
  });

  test("ignores unknown fields", () => {
    const request = parse({ frobnicate: true });
    assert.equal(Object.hasOwn(request, "frobnicate"), false);
  });

  test("rejects a body that is not an object", () => {
    assertRejected([MINIMAL], undefined, "JSON object");
    assertRejected("hi", undefined, "JSON object");
  });

  test("rejects a missing model or input, naming it", () => {
    assertRejected({ input: "hi" }, "model", "required");
    assertRejected({ model: "m" }, "input", "required");
    assertRejected({ ...MINIMAL, input: [] }, "input", "at least one input item");
    assertRejected({ ...MINIMAL, input: 42 }, "input", "expected a string or an array of input items");
  });

  test("rejects out-of-range sampling and a non-positive max_output_tokens", () => {
    assertRejected({ ...MINIMAL, temperature: 3 }, "temperature");
    assertRejected({ ...MINIMAL, top_p: -0.1 }, "top_p");
    assertRejected({ ...MINIMAL, max_output_tokens: 0 }, "max_output_tokens");
    assertRejected({ ...MINIMAL, max_output_tokens: 1.5 }, "max_output_tokens");
  });

  test("rejects hosted tools, naming the tool's type", () => {
    assertRejected({ ...MINIMAL, tools: [{ type: "function", name: "ok", parameters: {} }, { type: "web_search" }] }, "tools[1].type", "only function tools");
    assertRejected({ ...MINIMAL, tools: [{ type: "function", name: "has space" }] }, "tools[0].name", "letters, digits");
  });

  test("rejects tool_choice values that cannot be served", () => {
    assertRejected({ ...MINIMAL, tool_choice: { type: "allowed_tools", mode: "auto", tools: [] } }, "tool_choice.type", "allowed_tools");
    assertRejected({ ...MINIMAL, tool_choice: { type: "file_search" } }, "tool_choice.type", "hosted tools");
    assertRejected({ ...MINIMAL, tool_choice: "sometimes" }, "tool_choice", "expected 'none', 'auto', 'required'");
  });

  test("rejects input items it cannot serve, naming the item", () => {
    assertRejected({ ...MINIMAL, input: [{ type: "item_reference", id: "msg_1" }] }, "input[0].type", "not supported");
    assertRejected(
      {
        ...MINIMAL,
        input: [
          { role: "user", content: "a" },
          { type: "computer_call_output", call_id: "c" },
        ],
      },
      "input[1].type",
      "not supported",
    );
    assertRejected({ ...MINIMAL, input: [{ role: "robot", content: "x" }] }, "input[0].role");
    assertRejected({ ...MINIMAL, input: [{ type: "function_call", name: "f", arguments: "{}" }] }, "input[0].call_id", "required");
    assertRejected({ ...MINIMAL, input: [{ role: "user" }] }, "input[0].content", "required");
  });

  test("rejects content parts it cannot serve, naming the part", () => {
    assertRejected({ ...MINIMAL, input: [{ role: "user", content: [{ type: "input_file", file_id: "file-1" }] }] }, "input[0].content[0].type", "input_file");
    assertRejected(
      {
        ...MINIMAL,
        input: [
          {
            role: "user",
            content: [
              { type: "input_text", text: "a" },
              { type: "input_image", file_id: "file-1", detail: "auto" },
            ],
          },
        ],
      },
      "input[0].content[1].file_id",
      "image_url",
    );
    assertRejected({ ...MINIMAL, input: [{ role: "user", content: [{ type: "input_image", detail: "auto" }] }] }, "input[0].content[0].image_url", "required");
    assertRejected({ ...MINIMAL, input: [{ role: "user", content: [{ type: "input_audio" }] }] }, "input[0].content[0].type");
  });

  test("rejects conversation, prompt templates, truncation auto and logprobs", () => {
    assertRejected({ ...MINIMAL, conversation: "conv_1" }, "conversation", "previous_response_id");
    assertRejected({ ...MINIMAL, prompt: { id: "pmpt_1" } }, "prompt", "prompt templates are not supported");
    assertRejected({ ...MINIMAL, truncation: "auto" }, "truncation");
    assertRejected({ ...MINIMAL, top_logprobs: 5 }, "top_logprobs");
  });

  test("rejects a bad text.format and bad metadata", () => {
    assertRejected({ ...MINIMAL, text: { format: { type: "json_schema", schema: {} } } }, "text.format.name", "required");
    assertRejected({ ...MINIMAL, text: { format: { type: "yaml" } } }, "text.format.type");
    assertRejected({ ...MINIMAL, metadata: { k: "x".repeat(513) } }, "metadata.k", "512");
    assertRejected({ ...MINIMAL, metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"])) }, "metadata", "16");
  });
});

describe("toChatRequestFromResponses", () => {
  test("a string input is one user message; instructions come first as a system message; usage is always asked for", () => {
    const chat = toChatRequestFromResponses(parse({ instructions: "Talk like a pirate." }));
    assert.deepEqual(chat.messages, [message("system", [text("Talk like a pirate.")]), message("user", [text(MINIMAL.input)])]);
    assert.equal(chat.includeUsage, true);
    assert.deepEqual(chat.stop, []);
    assert.equal(chat.toolChoiceJson, "");
    for (const key of ["temperature", "topP", "maxTokens", "responseFormatJson", "reasoningEffort", "reasoningSummary"] as const) {
      assert.equal(Object.hasOwn(chat, key), false, key);
    }
  });

  test("maps sampling, max_output_tokens, the user, tools with their strict flag, and tool_choice", () => {
    const parameters = { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false };
    const chat = toChatRequestFromResponses(
      parse({
        temperature: 0,
        top_p: 0.5,
        max_output_tokens: 64,
        safety_identifier: "user-hash",
        tools: [
          { type: "function", name: "get_weather", description: "Weather now", parameters, strict: true },
          { type: "function", name: "ping", parameters: null, strict: null },
        ],
        tool_choice: { type: "function", name: "get_weather" },
      }),
    );
    assert.equal(chat.temperature, 0);
    assert.equal(chat.topP, 0.5);
    assert.equal(chat.maxTokens, 64);
    assert.equal(chat.user, "user-hash");
    assert.deepEqual(chat.tools, [
      { name: "get_weather", description: "Weather now", parametersJson: JSON.stringify(parameters), strict: true },
      { name: "ping", description: "", parametersJson: "" },
    ]);
    assert.deepEqual(JSON.parse(chat.toolChoiceJson), { type: "function", function: { name: "get_weather" } });
    assert.equal(toChatRequestFromResponses(parse({ tool_choice: "required" })).toolChoiceJson, '"required"');
    assert.equal(toChatRequestFromResponses(parse({ user: "u", safety_identifier: "s" })).user, "u");
  });

  test("text.format becomes the chat completions response_format; reasoning its effort and summary", () => {
    const schema = { type: "object", properties: { name: { type: "string" } }, required: ["name"], additionalProperties: false };
    const chat = toChatRequestFromResponses(
      parse({ text: { format: { type: "json_schema", name: "person", schema, strict: true } }, reasoning: { effort: "low", summary: "auto" } }),
    );
    assert.deepEqual(JSON.parse(chat.responseFormatJson ?? ""), { type: "json_schema", json_schema: { name: "person", schema, strict: true } });
    assert.equal(chat.reasoningEffort, "low");
    assert.equal(chat.reasoningSummary, "auto");
    assert.deepEqual(JSON.parse(toChatRequestFromResponses(parse({ text: { format: { type: "json_object" } } })).responseFormatJson ?? ""), {
      type: "json_object",
    });
    assert.equal(toChatRequestFromResponses(parse({ text: { format: { type: "text" }, verbosity: "low" } })).responseFormatJson, undefined);
    assert.equal(toChatRequestFromResponses(parse({ reasoning: { generate_summary: "concise" } })).reasoningSummary, "concise");
  });

  test("items become messages: function calls join the assistant turn before them, outputs answer their call, reasoning is dropped", () => {
    const chat = toChatRequestFromResponses(
      parse({
        input: [
          {
            role: "user",
            content: [
              { type: "input_text", text: "Weather in " },
              { type: "input_text", text: "Paris and Rome?" },
            ],
          },
          { type: "reasoning", id: "rs_1", summary: [] },
          { type: "message", role: "assistant", content: [{ type: "output_text", text: "Checking both." }] },
          { type: "function_call", call_id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' },
          { type: "function_call", call_id: "call_2", name: "get_weather", arguments: '{"city":"Rome"}' },
          { type: "function_call_output", call_id: "call_1", output: "21C" },
          { type: "function_call_output", call_id: "call_2", output: [{ type: "input_text", text: "25C" }] },
          { type: "function_call", call_id: "call_3", name: "get_time", arguments: "{}" },
          { type: "function_call_output", call_id: "call_3", output: "noon" },
          { role: "user", content: [{ type: "input_image", image_url: "data:image/png;base64,AAAA" }] },
        ],
      }),
    );
    assert.deepEqual(chat.messages, [
      message("user", [text("Weather in "), text("Paris and Rome?")]),
      message("assistant", [text("Checking both.")], {
        toolCalls: [
          { id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' },
          { id: "call_2", name: "get_weather", arguments: '{"city":"Rome"}' },
        ],
      }),
      message("tool", [text("21C")], { toolCallId: "call_1" }),
      message("tool", [text("25C")], { toolCallId: "call_2" }),
      // After a tool message, a function call opens a new assistant turn.
      message("assistant", [], { toolCalls: [{ id: "call_3", name: "get_time", arguments: "{}" }] }),
      message("tool", [text("noon")], { toolCallId: "call_3" }),
      message("user", [{ part: { $case: "imageUrl", value: { url: "data:image/png;base64,AAAA", detail: "" } } }]),
    ]);
  });

  test("a function_call_output without its call before it is refused, naming the item", () => {
    const request = parse({
      input: [
        { role: "user", content: "hi" },
        { type: "function_call_output", call_id: "call_9", output: "x" },
      ],
    });
    assert.throws(
      () => toChatRequestFromResponses(request),
      (error: unknown) => error instanceof RunnelError && error.code === "RUNNEL_ERR_INVALID_REQUEST" && error.param === "input[1].call_id",
    );
  });

  test("an assistant message that refused keeps its refusal as text", () => {
    const chat = toChatRequestFromResponses(
      parse({
        input: [
          { role: "user", content: "x" },
          { type: "message", role: "assistant", content: [{ type: "refusal", refusal: "I can't." }] },
        ],
      }),
    );
    assert.deepEqual(chat.messages.at(-1), message("assistant", [text("I can't.")]));
  });
});

describe("conversation state for previous_response_id", () => {
  const firstTurn = parse({ input: "What is the weather in Paris?", instructions: "Be brief." });
  /** The output of the first turn, as the Response object lists it. */
  const firstOutput = [{ id: "fc_st_0", type: "function_call", status: "completed", arguments: '{"city":"Paris"}', call_id: "call_1", name: "get_weather" }];

  test("the stored conversation is what the model saw and what it answered; the next input follows it", () => {
    const stored = conversationAfter(inputItems(firstTurn), firstOutput);
    assert.deepEqual(stored, [
      { type: "message", role: "user", content: "What is the weather in Paris?" },
      { type: "function_call", id: "fc_st_0", status: "completed", arguments: '{"city":"Paris"}', call_id: "call_1", name: "get_weather" },
    ]);
    const next = parse({ previous_response_id: "resp_st", input: [{ type: "function_call_output", call_id: "call_1", output: "21C" }] });
    const items: ResponsesInputItem[] = withPreviousTurns(stored, next);
    assert.equal(items.length, 3);
    const chat = toChatRequestFromResponses(next, stored);
    assert.deepEqual(chat.messages, [
      message("user", [text("What is the weather in Paris?")]),
      message("assistant", [], { toolCalls: [{ id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' }] }),
      message("tool", [text("21C")], { toolCallId: "call_1" }),
    ]);
  });

  test("the previous response's instructions are not carried over; the new request's apply", () => {
    const stored = conversationAfter(inputItems(firstTurn), [
      { id: "msg_st_0", type: "message", status: "completed", role: "assistant", content: [{ type: "output_text", text: "Sunny.", annotations: [] }] },
    ]);
    const chat = toChatRequestFromResponses(parse({ previous_response_id: "resp_st", input: "And tomorrow?", instructions: "Answer in French." }), stored);
    assert.deepEqual(
      chat.messages.map((m) => [m.role, m.content]),
      [
        ["system", [text("Answer in French.")]],
        ["user", [text("What is the weather in Paris?")]],
        ["assistant", [text("Sunny.")]],
        ["user", [text("And tomorrow?")]],
      ],
    );
  });

  test("a stored item that is not a valid input item is refused", () => {
    assert.throws(() => parseInputItems([{ type: "web_search_call", id: "ws_1" }]), RunnelError);
    assert.throws(() => conversationAfter([], [{ type: "message", role: "assistant" }]), RunnelError);
  });
});

describe("responseEcho", () => {
  test("OpenAI's defaults for what the client left out", () => {
    assert.deepEqual(responseEcho(parseResponsesRequest(MINIMAL)), {
      background: false,
      instructions: null,
      max_output_tokens: null,
      max_tool_calls: null,
      metadata: {},
      parallel_tool_calls: true,
      previous_response_id: null,
      reasoning: { effort: null, summary: null },
      store: true,
      temperature: null,
      text: { format: { type: "text" } },
      tool_choice: "auto",
      tools: [],
      top_p: null,
      truncation: "disabled",
      user: null,
    });
  });

  test("repeats what the client set", () => {
    const echo = responseEcho(
      parse({
        background: true,
        instructions: "Be brief.",
        max_output_tokens: 100,
        metadata: { run: "7" },
        parallel_tool_calls: false,
        previous_response_id: "resp_1",
        reasoning: { effort: "high", summary: "detailed" },
        store: false,
        temperature: 0.2,
        text: { format: { type: "json_object" }, verbosity: "low" },
        tool_choice: "none",
        tools: [{ type: "function", name: "f", parameters: { type: "object" }, strict: false }],
        top_p: 0.9,
        user: "u-1",
      }),
    );
    assert.equal(echo.background, true);
    assert.equal(echo.instructions, "Be brief.");
    assert.equal(echo.max_output_tokens, 100);
    assert.deepEqual(echo.metadata, { run: "7" });
    assert.equal(echo.parallel_tool_calls, false);
    assert.equal(echo.previous_response_id, "resp_1");
    assert.deepEqual(echo.reasoning, { effort: "high", summary: "detailed" });
    assert.equal(echo.store, false);
    assert.deepEqual(echo.text, { format: { type: "json_object" }, verbosity: "low" });
    assert.equal(echo.tool_choice, "none");
    assert.deepEqual(echo.tools, [{ type: "function", name: "f", description: null, parameters: { type: "object" }, strict: false }]);
    assert.equal(echo.user, "u-1");
  });
});
