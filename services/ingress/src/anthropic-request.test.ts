import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type ChatMessage, type ContentPart, RunnelError } from "@runnel/shared";
import { type MessagesRequest, parseMessagesRequest, toChatRequestFromMessages } from "./anthropic-request.js";

const MINIMAL = { model: "claude", max_tokens: 1024, messages: [{ role: "user", content: "Hello" }] };

function parse(body: Record<string, unknown>): MessagesRequest {
  return parseMessagesRequest({ ...MINIMAL, ...body });
}

/** Asserts that parsing `body` fails with RUNNEL_ERR_INVALID_REQUEST whose message starts with `param: `. */
function assertRejected(body: unknown, param: string | undefined, messagePart?: string): void {
  assert.throws(
    () => parseMessagesRequest(body),
    (error: unknown) => {
      assert.ok(error instanceof RunnelError, `expected a RunnelError, got ${String(error)}`);
      assert.equal(error.code, "RUNNEL_ERR_INVALID_REQUEST");
      assert.equal(error.httpStatus, 400);
      assert.equal(error.param, param);
      if (param) assert.ok(error.message.startsWith(`${param}: `), error.message);
      if (messagePart) assert.ok(error.message.includes(messagePart), error.message);
      return true;
    },
  );
}

const text = (value: string): ContentPart => ({ part: { $case: "text", value } });
const image = (url: string): ContentPart => ({ part: { $case: "imageUrl", value: { url, detail: "" } } });
function msg(role: string, content: ContentPart[], extra: Partial<ChatMessage> = {}): ChatMessage {
  return { role, content, name: "", toolCallId: "", toolCalls: [], ...extra };
}

describe("parseMessagesRequest", () => {
  test("accepts a minimal request", () => {
    const request = parseMessagesRequest(MINIMAL);
    assert.equal(request.model, "claude");
    assert.equal(request.max_tokens, 1024);
    assert.deepEqual(request.messages, [{ role: "user", content: "Hello" }]);
  });

  test("accepts the full request an SDK sends, ignoring fields the gateway does not carry", () => {
    const request = parse({
      system: [{ type: "text", text: "Be brief.", cache_control: { type: "ephemeral" } }],
      stop_sequences: ["\n\nHuman:"],
      temperature: 1,
      top_p: 0.9,
      top_k: 40,
      stream: true,
      metadata: { user_id: "u-1" },
      thinking: { type: "enabled", budget_tokens: 1024 },
      tools: [{ name: "get_weather", description: "Weather", input_schema: { type: "object" } }],
      tool_choice: { type: "auto", disable_parallel_tool_use: true },
    });
    assert.equal(request.stream, true);
    assert.equal(Object.hasOwn(request, "top_k"), false);
    assert.equal(Object.hasOwn(request, "thinking"), false);
  });

  test("a missing max_tokens is named, in Anthropic's words", () => {
    assertRejected({ model: "claude", messages: MINIMAL.messages }, "max_tokens", "max_tokens: Field required");
  });

  test("a missing or empty model is named", () => {
    assertRejected({ max_tokens: 5, messages: MINIMAL.messages }, "model", "Field required");
    assertRejected({ ...MINIMAL, model: "" }, "model");
  });

  test("max_tokens must be a positive integer", () => {
    assertRejected({ ...MINIMAL, max_tokens: 0 }, "max_tokens", "at least 1");
    assertRejected({ ...MINIMAL, max_tokens: 1.5 }, "max_tokens");
    assertRejected({ ...MINIMAL, max_tokens: "10" }, "max_tokens");
  });

  test("messages must be a non-empty list", () => {
    assertRejected({ ...MINIMAL, messages: [] }, "messages", "at least one message is required");
    assertRejected({ model: "claude", max_tokens: 5 }, "messages", "Field required");
  });

  test("a system role inside messages is refused, naming the message", () => {
    assertRejected({ ...MINIMAL, messages: [MINIMAL.messages[0], { role: "system", content: "x" }] }, "messages.1.role", "'user' or 'assistant'");
  });

  test("an unknown content block type is named at the block, not as 'not a string'", () => {
    assertRejected({ ...MINIMAL, messages: [{ role: "user", content: [{ type: "document", source: {} }] }] }, "messages.0.content.0.type");
  });

  test("a wrong field inside a block is named with its full path", () => {
    assertRejected(
      {
        ...MINIMAL,
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "look" },
              { type: "image", source: { type: "base64", media_type: "image/bmp", data: "AAAA" } },
            ],
          },
        ],
      },
      "messages.0.content.1.source.media_type",
      "'image/jpeg'",
    );
    assertRejected({ ...MINIMAL, messages: [{ role: "user", content: [{ type: "text" }] }] }, "messages.0.content.0.text", "Field required");
  });

  test("blocks in the wrong turn are refused, as Anthropic does", () => {
    assertRejected(
      { ...MINIMAL, messages: [{ role: "assistant", content: [{ type: "tool_result", tool_use_id: "t1", content: "x" }] }] },
      "messages.0.content.0.type",
      "only valid in user messages",
    );
    assertRejected(
      { ...MINIMAL, messages: [{ role: "user", content: [{ type: "tool_use", id: "t1", name: "f", input: {} }] }] },
      "messages.0.content.0.type",
      "only valid in assistant messages",
    );
  });

  test("a user message with no content blocks is refused", () => {
    assertRejected({ ...MINIMAL, messages: [{ role: "user", content: [] }] }, "messages.0.content", "at least one content block");
  });

  test("a tool needs an input_schema; a server tool (no input_schema) is refused", () => {
    assertRejected({ ...MINIMAL, tools: [{ name: "f" }] }, "tools.0.input_schema", "Field required");
    assertRejected({ ...MINIMAL, tools: [{ type: "web_search_20250305", name: "web_search" }] }, "tools.0.type");
  });

  test("tool_choice: an unknown type and a tool choice without a name are named", () => {
    assertRejected({ ...MINIMAL, tool_choice: { type: "sometimes" } }, "tool_choice.type");
    assertRejected({ ...MINIMAL, tool_choice: { type: "tool" } }, "tool_choice.name", "Field required");
  });

  test("temperature and top_p are on Anthropic's 0..1 scale", () => {
    assertRejected({ ...MINIMAL, temperature: 1.5 }, "temperature");
    assertRejected({ ...MINIMAL, top_p: -0.1 }, "top_p");
    assert.equal(parse({ temperature: 0 }).temperature, 0);
    assert.equal(parse({ temperature: 1 }).temperature, 1);
  });

  test("stop_sequences must be strings", () => {
    assertRejected({ ...MINIMAL, stop_sequences: ["a", 3] }, "stop_sequences.1");
  });

  test("a body that is not an object is refused without a param", () => {
    assertRejected("hello", undefined, "JSON object");
    assertRejected(null, undefined);
    assertRejected([MINIMAL], undefined);
  });
});

describe("toChatRequestFromMessages", () => {
  test("a minimal request: one user message, max_tokens, usage always asked for, the rest empty", () => {
    const request = toChatRequestFromMessages(parseMessagesRequest(MINIMAL));
    assert.deepEqual(request, {
      messages: [msg("user", [text("Hello")])],
      maxTokens: 1024,
      stop: [],
      tools: [],
      toolChoiceJson: "",
      includeUsage: true,
      user: "",
    });
    for (const key of ["temperature", "topP", "seed"]) assert.equal(Object.hasOwn(request, key), false, key);
  });

  test("system as a string or as text blocks becomes the first, system message", () => {
    assert.deepEqual(toChatRequestFromMessages(parse({ system: "Be brief." })).messages, [msg("system", [text("Be brief.")]), msg("user", [text("Hello")])]);
    assert.deepEqual(
      toChatRequestFromMessages(
        parse({
          system: [
            { type: "text", text: "One." },
            { type: "text", text: "Two." },
          ],
        }),
      ).messages[0],
      msg("system", [text("One."), text("Two.")]),
    );
  });

  test("images: a base64 source becomes a data: URL, a url source stays a URL", () => {
    const request = toChatRequestFromMessages(
      parse({
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "Compare" },
              { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
              { type: "image", source: { type: "url", url: "https://example.com/cat.jpg" } },
            ],
          },
        ],
      }),
    );
    assert.deepEqual(request.messages, [msg("user", [text("Compare"), image("data:image/png;base64,iVBORw0KGgo="), image("https://example.com/cat.jpg")])]);
  });

  test("a tool round trip: tool_use → assistant toolCalls, tool_result → tool messages in order, then the user's text", () => {
    const request = toChatRequestFromMessages(
      parse({
        messages: [
          { role: "user", content: "Weather in Paris and Rome?" },
          {
            role: "assistant",
            content: [
              { type: "thinking", thinking: "Two calls.", signature: "sig" },
              { type: "text", text: "Checking." },
              { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Paris" } },
              { type: "tool_use", id: "toolu_2", name: "get_weather", input: { city: "Rome" } },
            ],
          },
          {
            role: "user",
            content: [
              { type: "tool_result", tool_use_id: "toolu_1", content: "21°C" },
              { type: "tool_result", tool_use_id: "toolu_2", content: [{ type: "text", text: "25°C" }], is_error: false },
              { type: "text", text: "Which is warmer?" },
            ],
          },
        ],
      }),
    );
    assert.deepEqual(request.messages, [
      msg("user", [text("Weather in Paris and Rome?")]),
      msg("assistant", [text("Checking.")], {
        toolCalls: [
          { id: "toolu_1", name: "get_weather", arguments: '{"city":"Paris"}' },
          { id: "toolu_2", name: "get_weather", arguments: '{"city":"Rome"}' },
        ],
      }),
      msg("tool", [text("21°C")], { toolCallId: "toolu_1" }),
      msg("tool", [text("25°C")], { toolCallId: "toolu_2" }),
      msg("user", [text("Which is warmer?")]),
    ]);
  });

  test("a tool_result without content gets one empty text part; image results keep the image", () => {
    const request = toChatRequestFromMessages(
      parse({
        messages: [
          {
            role: "user",
            content: [
              { type: "tool_result", tool_use_id: "t1" },
              { type: "tool_result", tool_use_id: "t2", content: [{ type: "image", source: { type: "url", url: "https://example.com/chart.png" } }] },
            ],
          },
        ],
      }),
    );
    assert.deepEqual(request.messages, [
      msg("tool", [text("")], { toolCallId: "t1" }),
      msg("tool", [image("https://example.com/chart.png")], { toolCallId: "t2" }),
    ]);
  });

  test("assistant string content stays one text part (a prefill)", () => {
    const request = toChatRequestFromMessages(parse({ messages: [MINIMAL.messages[0], { role: "assistant", content: "The answer is" }] }));
    assert.deepEqual(request.messages[1], msg("assistant", [text("The answer is")]));
  });

  test("tools carry their input_schema as parametersJson", () => {
    const schema = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };
    const request = toChatRequestFromMessages(
      parse({
        tools: [
          { name: "get_weather", description: "Current weather", input_schema: schema },
          { type: "custom", name: "now", input_schema: { type: "object" } },
        ],
      }),
    );
    assert.equal(request.tools[0]?.name, "get_weather");
    assert.equal(request.tools[0]?.description, "Current weather");
    assert.deepEqual(JSON.parse(request.tools[0]?.parametersJson ?? ""), schema);
    assert.deepEqual(request.tools[1], { name: "now", description: "", parametersJson: '{"type":"object"}' });
  });

  test("tool_choice maps onto the OpenAI-style JSON the ChatRequest carries", () => {
    const choice = (value: unknown) => JSON.parse(toChatRequestFromMessages(parse({ tool_choice: value })).toolChoiceJson) as unknown;
    assert.equal(choice({ type: "auto" }), "auto");
    assert.equal(choice({ type: "any" }), "required");
    assert.equal(choice({ type: "none" }), "none");
    assert.deepEqual(choice({ type: "tool", name: "get_weather" }), { type: "function", function: { name: "get_weather" } });
  });

  test("sampling, stop sequences and the end user are carried over", () => {
    const request = toChatRequestFromMessages(parse({ temperature: 0.2, top_p: 0.5, stop_sequences: ["END", "STOP"], metadata: { user_id: "user-42" } }));
    assert.equal(request.temperature, 0.2);
    assert.equal(request.topP, 0.5);
    assert.deepEqual(request.stop, ["END", "STOP"]);
    assert.equal(request.user, "user-42");
    assert.equal(toChatRequestFromMessages(parse({ metadata: { user_id: null } })).user, "");
  });
});
