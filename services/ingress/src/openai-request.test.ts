import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { RunnelError } from "@runnel/shared";
import { type ChatCompletionRequest, parseChatCompletionRequest, toChatRequest } from "./openai-request.js";

const MINIMAL = { model: "gpt", messages: [{ role: "user", content: "Hello" }] };

/** Asserts that parsing `body` fails with RUNNEL_ERR_INVALID_REQUEST naming `param`. */
function assertRejected(body: unknown, param: string | undefined, messagePart?: string): void {
  assert.throws(
    () => parseChatCompletionRequest(body),
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

function parse(body: Record<string, unknown>): ChatCompletionRequest {
  return parseChatCompletionRequest({ ...MINIMAL, ...body });
}

describe("parseChatCompletionRequest", () => {
  test("accepts a minimal request", () => {
    const request = parseChatCompletionRequest(MINIMAL);
    assert.equal(request.model, "gpt");
    assert.deepEqual(request.messages, [{ role: "user", content: "Hello" }]);
  });

  test("accepts a full request with nulls for the optional fields OpenAI SDKs send", () => {
    const request = parse({
      stream: true,
      stream_options: { include_usage: true },
      temperature: null,
      top_p: null,
      max_tokens: null,
      stop: null,
      n: 1,
      seed: null,
      user: null,
      tools: null,
      tool_choice: null,
    });
    assert.equal(request.stream, true);
    assert.equal(request.stream_options?.include_usage, true);
    assert.equal(request.n, 1);
  });

  test("ignores unknown fields", () => {
    const request = parse({ logprobs: false, metadata: { a: "b" } });
    assert.equal(Object.hasOwn(request, "logprobs"), false);
  });

  test("rejects a missing model", () => {
    assertRejected({ messages: MINIMAL.messages }, "model");
  });

  test("rejects an empty model", () => {
    assertRejected({ ...MINIMAL, model: "" }, "model");
  });

  test("rejects empty messages", () => {
    assertRejected({ ...MINIMAL, messages: [] }, "messages", "at least one message is required");
  });

  test("rejects missing messages", () => {
    assertRejected({ model: "gpt" }, "messages");
  });

  test("rejects a bad role naming the message index", () => {
    assertRejected({ ...MINIMAL, messages: [{ role: "robot", content: "x" }] }, "messages[0].role");
    assertRejected(
      {
        ...MINIMAL,
        messages: [
          { role: "user", content: "a" },
          { role: "robot", content: "x" },
        ],
      },
      "messages[1].role",
    );
  });

  test("rejects temperature 3", () => {
    assertRejected({ ...MINIMAL, temperature: 3 }, "temperature");
  });

  test("accepts temperature at both bounds", () => {
    assert.equal(parse({ temperature: 0 }).temperature, 0);
    assert.equal(parse({ temperature: 2 }).temperature, 2);
  });

  test("rejects n=2", () => {
    assertRejected({ ...MINIMAL, n: 2 }, "n", "only n=1 is supported");
  });

  test("rejects stop with 5 entries and accepts 4", () => {
    assertRejected({ ...MINIMAL, stop: ["a", "b", "c", "d", "e"] }, "stop", "at most 4");
    assert.deepEqual(parse({ stop: ["a", "b", "c", "d"] }).stop, ["a", "b", "c", "d"]);
  });

  test("rejects a non-positive max_tokens", () => {
    assertRejected({ ...MINIMAL, max_tokens: 0 }, "max_tokens");
  });

  test("rejects an unknown content part type", () => {
    assertRejected({ ...MINIMAL, messages: [{ role: "user", content: [{ type: "audio", audio: "x" }] }] }, "messages[0].content");
  });

  test("rejects a tool name with spaces, naming the nested field", () => {
    assertRejected({ ...MINIMAL, tools: [{ type: "function", function: { name: "bad name" } }] }, "tools[0].function.name");
  });

  test("rejects an unknown tool_choice", () => {
    assertRejected({ ...MINIMAL, tool_choice: "sometimes" }, "tool_choice");
  });

  test("rejects a body that is not an object, without a param", () => {
    assertRejected("hello", undefined);
    assertRejected(null, undefined);
  });
});

describe("toChatRequest", () => {
  test("maps string content to one text part and fills the empty fields", () => {
    const request = toChatRequest(parse({}), false);
    assert.deepEqual(request, {
      messages: [{ role: "user", content: [{ part: { $case: "text", value: "Hello" } }], name: "", toolCallId: "", toolCalls: [] }],
      stop: [],
      tools: [],
      toolChoiceJson: "",
      includeUsage: false,
      user: "",
    });
    for (const key of ["temperature", "topP", "maxTokens", "seed"]) assert.equal(Object.hasOwn(request, key), false, key);
  });

  test("maps content parts: text, and image_url with and without detail", () => {
    const request = toChatRequest(
      parse({
        messages: [
          {
            role: "user",
            name: "alice",
            content: [
              { type: "text", text: "What is this?" },
              { type: "image_url", image_url: { url: "https://example.com/a.png", detail: "low" } },
              { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } },
            ],
          },
        ],
      }),
      false,
    );
    assert.deepEqual(request.messages[0], {
      role: "user",
      content: [
        { part: { $case: "text", value: "What is this?" } },
        { part: { $case: "imageUrl", value: { url: "https://example.com/a.png", detail: "low" } } },
        { part: { $case: "imageUrl", value: { url: "data:image/png;base64,AAAA", detail: "" } } },
      ],
      name: "alice",
      toolCallId: "",
      toolCalls: [],
    });
  });

  test("maps assistant tool calls and the tool message's tool_call_id; null content becomes no parts", () => {
    const request = toChatRequest(
      parse({
        messages: [
          { role: "user", content: "Weather in Paris?" },
          {
            role: "assistant",
            content: null,
            tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } }],
          },
          { role: "tool", tool_call_id: "call_1", content: '{"temp":21}' },
        ],
      }),
      false,
    );
    assert.deepEqual(request.messages[1], {
      role: "assistant",
      content: [],
      name: "",
      toolCallId: "",
      toolCalls: [{ id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' }],
    });
    assert.equal(request.messages[2]?.toolCallId, "call_1");
    assert.deepEqual(request.messages[2]?.content, [{ part: { $case: "text", value: '{"temp":21}' } }]);
  });

  test("maps tools with parameters JSON-stringified, and without description or parameters as empty strings", () => {
    const parameters = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };
    const request = toChatRequest(
      parse({
        tools: [
          { type: "function", function: { name: "get_weather", description: "Current weather", parameters } },
          { type: "function", function: { name: "now" } },
        ],
      }),
      false,
    );
    assert.equal(request.tools.length, 2);
    assert.equal(request.tools[0]?.name, "get_weather");
    assert.equal(request.tools[0]?.description, "Current weather");
    assert.deepEqual(JSON.parse(request.tools[0]?.parametersJson ?? ""), parameters);
    assert.deepEqual(request.tools[1], { name: "now", description: "", parametersJson: "" });
  });

  test("maps tool_choice as JSON, string or object", () => {
    assert.equal(JSON.parse(toChatRequest(parse({ tool_choice: "required" }), false).toolChoiceJson), "required");
    const choice = { type: "function", function: { name: "get_weather" } };
    assert.deepEqual(JSON.parse(toChatRequest(parse({ tool_choice: choice }), false).toolChoiceJson), choice);
  });

  test("max_completion_tokens takes precedence over max_tokens", () => {
    assert.equal(toChatRequest(parse({ max_tokens: 100, max_completion_tokens: 50 }), false).maxTokens, 50);
    assert.equal(toChatRequest(parse({ max_tokens: 100 }), false).maxTokens, 100);
    assert.equal(toChatRequest(parse({ max_completion_tokens: 70 }), false).maxTokens, 70);
  });

  test("a stop string becomes a one-element array; an array is kept", () => {
    assert.deepEqual(toChatRequest(parse({ stop: "\n" }), false).stop, ["\n"]);
    assert.deepEqual(toChatRequest(parse({ stop: ["a", "b"] }), false).stop, ["a", "b"]);
  });

  test("sampling fields are carried, and 0 is kept as 0", () => {
    const request = toChatRequest(parse({ temperature: 0, top_p: 0.5, seed: 0, user: "u-1" }), false);
    assert.equal(request.temperature, 0);
    assert.equal(request.topP, 0.5);
    assert.equal(request.seed, 0);
    assert.equal(request.user, "u-1");
  });

  test("includeUsage is the flag given", () => {
    assert.equal(toChatRequest(parse({}), true).includeUsage, true);
    assert.equal(toChatRequest(parse({}), false).includeUsage, false);
  });
});
