import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type EventBody, FinishReason, type StreamEvent } from "@runnel/shared";
import {
  AnthropicStreamEncoder,
  anthropicError,
  anthropicEventJson,
  anthropicStopReason,
  anthropicUsage,
  anthropicWire,
  MessageAccumulator,
} from "./anthropic-encoder.js";

const STREAM = "st_abc";

/** Numbers bodies 1, 2, 3, … as the worker does. */
function events(...bodies: EventBody[]): StreamEvent[] {
  return bodies.map((event, index) => ({ streamId: STREAM, seq: index + 1, epoch: 0, event }));
}

const started = (model = "claude-served-1"): EventBody => ({ $case: "started", value: { provider: "p", model, attempt: 1 } });
const textDelta = (text: string): EventBody => ({ $case: "textDelta", value: { text } });
const reasoning = (text: string): EventBody => ({ $case: "reasoningDelta", value: { text } });
const toolDelta = (index: number, id: string, name: string, args: string): EventBody => ({
  $case: "toolCallDelta",
  value: { index, id, name, arguments: args },
});
const usage = (inputTokens: number, outputTokens: number, cachedInputTokens = 0): EventBody => ({
  $case: "usage",
  value: { inputTokens, outputTokens, cachedInputTokens, reasoningTokens: 0 },
});
const done = (finishReason = FinishReason.FINISH_REASON_STOP): EventBody => ({ $case: "done", value: { finishReason } });
const failure = (code: string, message: string, httpStatus: number): EventBody => ({ $case: "error", value: { code, message, retryable: true, httpStatus } });

interface Frame {
  event: string;
  id?: number;
  data: unknown;
}

/** Splits SSE text into frames, failing on anything but `event:`, `id:` and one `data:` line per frame. */
function frames(text: string): Frame[] {
  assert.ok(text === "" || text.endsWith("\n\n"), "every frame ends with a blank line");
  return text
    .split("\n\n")
    .filter((block) => block !== "")
    .map((block) => {
      const lines = block.split("\n");
      let event = "";
      let id: number | undefined;
      let data: unknown;
      for (const line of lines) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("id: ")) id = Number(line.slice(4));
        else if (line.startsWith("data: ")) data = JSON.parse(line.slice(6));
        else assert.fail(`unexpected line ${JSON.stringify(line)}`);
      }
      assert.equal((data as { type?: string }).type, event, "the data's type names the event");
      return id === undefined ? { event, data } : { event, id, data };
    });
}

/** The SSE text of a stream: the encoder's events through the serialiser and the SSE framer. */
function encodeAll(list: StreamEvent[], model = "claude"): Frame[] {
  const wire = anthropicWire(true, STREAM, model);
  return frames(list.map((event) => wire.event(event)).join(""));
}

const messageStart = (model: string) => ({
  event: "message_start",
  data: {
    type: "message_start",
    message: {
      id: `msg_${STREAM}`,
      type: "message",
      role: "assistant",
      model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: 0, output_tokens: 0 },
    },
  },
});
const blockStart = (index: number, content_block: Record<string, unknown>) => ({
  event: "content_block_start",
  data: { type: "content_block_start", index, content_block },
});
const blockDelta = (index: number, delta: Record<string, unknown>, id: number) => ({
  event: "content_block_delta",
  id,
  data: { type: "content_block_delta", index, delta },
});
const blockStop = (index: number) => ({ event: "content_block_stop", data: { type: "content_block_stop", index } });
const messageDelta = (stop_reason: string, usageBody: Record<string, number>) => ({
  event: "message_delta",
  data: { type: "message_delta", delta: { stop_reason, stop_sequence: null }, usage: usageBody },
});
const messageStop = (id: number) => ({ event: "message_stop", id, data: { type: "message_stop" } });

describe("AnthropicStreamEncoder", () => {
  test("text: message_start, one text block, message_delta with the real usage, message_stop", () => {
    const list = events(started(), textDelta("Hello"), textDelta(', "world"\n'), usage(12, 2), done());
    assert.deepEqual(encodeAll(list), [
      messageStart("claude-served-1"),
      blockStart(0, { type: "text", text: "" }),
      blockDelta(0, { type: "text_delta", text: "Hello" }, 2),
      blockDelta(0, { type: "text_delta", text: ', "world"\n' }, 3),
      blockStop(0),
      messageDelta("end_turn", { input_tokens: 12, output_tokens: 2, cache_read_input_tokens: 0 }),
      messageStop(5),
    ]);
  });

  test("thinking then text: a thinking block (thinking_delta), closed before the text block opens", () => {
    const list = events(started(), reasoning("Let me"), reasoning(" think."), textDelta("Answer."), usage(5, 9), done());
    assert.deepEqual(encodeAll(list), [
      messageStart("claude-served-1"),
      blockStart(0, { type: "thinking", thinking: "", signature: "" }),
      blockDelta(0, { type: "thinking_delta", thinking: "Let me" }, 2),
      blockDelta(0, { type: "thinking_delta", thinking: " think." }, 3),
      blockStop(0),
      blockStart(1, { type: "text", text: "" }),
      blockDelta(1, { type: "text_delta", text: "Answer." }, 4),
      blockStop(1),
      messageDelta("end_turn", { input_tokens: 5, output_tokens: 9, cache_read_input_tokens: 0 }),
      messageStop(6),
    ]);
  });

  test("tool use: text, then one tool_use block per call with input_json_delta fragments, stop_reason tool_use", () => {
    const list = events(
      started(),
      textDelta("Checking."),
      toolDelta(0, "call_a", "get_weather", ""),
      toolDelta(0, "", "", '{"city":'),
      toolDelta(0, "", "", '"Paris"}'),
      toolDelta(1, "call_b", "get_time", '{"tz":"CET"}'),
      usage(30, 20),
      done(FinishReason.FINISH_REASON_TOOL_CALLS),
    );
    assert.deepEqual(encodeAll(list), [
      messageStart("claude-served-1"),
      blockStart(0, { type: "text", text: "" }),
      blockDelta(0, { type: "text_delta", text: "Checking." }, 2),
      blockStop(0),
      { ...blockStart(1, { type: "tool_use", id: "call_a", name: "get_weather", input: {} }), id: 3 },
      blockDelta(1, { type: "input_json_delta", partial_json: '{"city":' }, 4),
      blockDelta(1, { type: "input_json_delta", partial_json: '"Paris"}' }, 5),
      blockStop(1),
      blockStart(2, { type: "tool_use", id: "call_b", name: "get_time", input: {} }),
      blockDelta(2, { type: "input_json_delta", partial_json: '{"tz":"CET"}' }, 6),
      blockStop(2),
      messageDelta("tool_use", { input_tokens: 30, output_tokens: 20, cache_read_input_tokens: 0 }),
      messageStop(8),
    ]);
  });

  test("a tool call without an id gets a stable toolu_ id", () => {
    const [, start] = encodeAll(events(started(), toolDelta(0, "", "f", "{}")));
    assert.deepEqual(start, blockStart(0, { type: "tool_use", id: `toolu_${STREAM}_0`, name: "f", input: {} }));
  });

  test("an error mid-stream: one event: error after the deltas, no content_block_stop, no message_delta, no message_stop", () => {
    const encoder = anthropicWire(true, STREAM, "claude");
    const list = events(started(), textDelta("Hel"), failure("RUNNEL_ERR_PROVIDER_STREAM_CUT", "the provider's stream ended early", 502));
    const text = list.map((event) => encoder.event(event)).join("");
    assert.deepEqual(frames(text), [
      messageStart("claude-served-1"),
      blockStart(0, { type: "text", text: "" }),
      blockDelta(0, { type: "text_delta", text: "Hel" }, 2),
      { event: "error", id: 3, data: { type: "error", error: { type: "api_error", message: "the provider's stream ended early" } } },
    ]);
    // Nothing follows the error, whatever arrives.
    assert.equal(encoder.event({ streamId: STREAM, seq: 4, epoch: 0, event: done() }), "");
  });

  test("an error raised by the ingress (seq 0) has no id; a capacity error is overloaded_error", () => {
    const raised = { streamId: STREAM, seq: 0, epoch: 0, event: failure("RUNNEL_ERR_SHUTTING_DOWN", "shutting down", 503) };
    assert.deepEqual(frames(anthropicWire(true, STREAM, "claude").event(raised)), [
      { event: "error", data: { type: "error", error: { type: "overloaded_error", message: "shutting down" } } },
    ]);
  });

  test("a heartbeat before the first event starts the message with the public model; started then adds nothing", () => {
    const wire = anthropicWire(true, STREAM, "claude");
    const early = frames(wire.heartbeat());
    assert.deepEqual(early, [messageStart("claude"), { event: "ping", data: { type: "ping" } }]);
    assert.equal(wire.event(events(started())[0] as StreamEvent), "");
    // Once started, a heartbeat is the ping alone.
    assert.deepEqual(frames(wire.heartbeat()), [{ event: "ping", data: { type: "ping" } }]);
  });

  test("started without a model keeps the public model", () => {
    assert.deepEqual(encodeAll(events(started(""), done()))[0], messageStart("claude"));
  });

  test("an empty answer: message_start, message_delta, message_stop and no block; unknown usage is zeros", () => {
    assert.deepEqual(encodeAll(events(started(), done())), [
      messageStart("claude-served-1"),
      messageDelta("end_turn", { input_tokens: 0, output_tokens: 0 }),
      messageStop(2),
    ]);
  });

  test("cache reads are reported apart from input_tokens", () => {
    const list = encodeAll(events(started(), textDelta("x"), usage(1000, 3, 800), done(FinishReason.FINISH_REASON_LENGTH)));
    assert.deepEqual(list.at(-2), messageDelta("max_tokens", { input_tokens: 200, output_tokens: 3, cache_read_input_tokens: 800 }));
  });
});

describe("anthropicEventJson", () => {
  test("is JSON.stringify of every event, the hand-written per-token deltas included", () => {
    const encoder = new AnthropicStreamEncoder(STREAM, "claude");
    const list = events(
      started(),
      reasoning('think "hard"\n'),
      textDelta("Hello 👋 \u2028 </script>"),
      toolDelta(0, "call_a", "f", '{"a":'),
      toolDelta(0, "", "", "1}"),
      usage(3, 4, 1),
      done(),
    );
    const values = list.flatMap((event) => encoder.encode(event));
    assert.ok(values.some((value) => value.type === "content_block_delta"));
    for (const value of values) assert.equal(anthropicEventJson(value), JSON.stringify(value));
  });
});

describe("stop reasons and errors", () => {
  test("finish reasons map onto Anthropic's stop reasons", () => {
    assert.equal(anthropicStopReason(FinishReason.FINISH_REASON_STOP), "end_turn");
    assert.equal(anthropicStopReason(FinishReason.FINISH_REASON_LENGTH), "max_tokens");
    assert.equal(anthropicStopReason(FinishReason.FINISH_REASON_TOOL_CALLS), "tool_use");
    assert.equal(anthropicStopReason(FinishReason.FINISH_REASON_CONTENT_FILTER), "refusal");
    assert.equal(anthropicStopReason(FinishReason.FINISH_REASON_UNSPECIFIED), "end_turn");
  });

  test("HTTP statuses map onto Anthropic's statuses and error types", () => {
    const table: Array<[number, number, string]> = [
      [400, 400, "invalid_request_error"],
      [401, 401, "authentication_error"],
      [403, 403, "permission_error"],
      [404, 404, "not_found_error"],
      [413, 413, "request_too_large"],
      [415, 415, "invalid_request_error"],
      [429, 429, "rate_limit_error"],
      [500, 500, "api_error"],
      [502, 500, "api_error"],
      [503, 529, "overloaded_error"],
      [504, 504, "timeout_error"],
      [0, 500, "api_error"],
    ];
    for (const [ours, status, type] of table) assert.deepEqual(anthropicError(ours), { status, type }, `status ${ours}`);
  });

  test("usage: input_tokens excludes cache reads and never goes negative", () => {
    assert.deepEqual(anthropicUsage({ inputTokens: 10, outputTokens: 4, cachedInputTokens: 6, reasoningTokens: 0 }), {
      input_tokens: 4,
      output_tokens: 4,
      cache_read_input_tokens: 6,
    });
    assert.equal(anthropicUsage({ inputTokens: 1, outputTokens: 0, cachedInputTokens: 5, reasoningTokens: 0 }).input_tokens, 0);
  });
});

/** Folds SSE frames into a message the way Anthropic's SDK does (content by index, input from the concatenated partial_json). */
function foldFrames(list: Frame[]): Record<string, unknown> {
  let message: Record<string, unknown> = {};
  const content: Array<Record<string, unknown>> = [];
  const json = new Map<number, string>();
  for (const { data } of list) {
    const event = data as Record<string, unknown> & { index: number };
    if (event.type === "message_start") message = { ...(event.message as Record<string, unknown>) };
    if (event.type === "content_block_start") content[event.index] = { ...(event.content_block as Record<string, unknown>) };
    if (event.type === "content_block_delta") {
      const delta = event.delta as Record<string, string>;
      const block = content[event.index] as Record<string, unknown>;
      if (delta.type === "text_delta") block.text = `${String(block.text)}${delta.text}`;
      if (delta.type === "thinking_delta") block.thinking = `${String(block.thinking)}${delta.thinking}`;
      if (delta.type === "input_json_delta") json.set(event.index, `${json.get(event.index) ?? ""}${delta.partial_json}`);
    }
    if (event.type === "message_delta") {
      const delta = event.delta as Record<string, unknown>;
      message.stop_reason = delta.stop_reason;
      message.stop_sequence = delta.stop_sequence;
      message.usage = event.usage;
    }
  }
  for (const [index, text] of json) (content[index] as Record<string, unknown>).input = JSON.parse(text);
  return { ...message, content };
}

describe("MessageAccumulator", () => {
  const scenario = events(
    started(),
    reasoning("Hmm."),
    textDelta("Checking "),
    textDelta("both."),
    toolDelta(0, "call_a", "get_weather", '{"city":'),
    toolDelta(0, "", "", '"Paris"}'),
    toolDelta(1, "call_b", "get_time", '{"tz":"CET"}'),
    usage(40, 25, 10),
    done(FinishReason.FINISH_REASON_TOOL_CALLS),
  );

  test("folds thinking, text and tool calls into Anthropic's message object", () => {
    const accumulator = new MessageAccumulator(STREAM, "claude");
    for (const event of scenario) accumulator.add(event);
    assert.deepEqual(accumulator.result(), {
      id: `msg_${STREAM}`,
      type: "message",
      role: "assistant",
      model: "claude-served-1",
      content: [
        { type: "thinking", thinking: "Hmm.", signature: "" },
        { type: "text", text: "Checking both." },
        { type: "tool_use", id: "call_a", name: "get_weather", input: { city: "Paris" } },
        { type: "tool_use", id: "call_b", name: "get_time", input: { tz: "CET" } },
      ],
      stop_reason: "tool_use",
      stop_sequence: null,
      usage: { input_tokens: 30, output_tokens: 25, cache_read_input_tokens: 10 },
    });
  });

  test("the non-streaming message is what a client folding the stream gets", () => {
    const accumulator = new MessageAccumulator(STREAM, "claude");
    for (const event of scenario) accumulator.add(event);
    assert.deepEqual(foldFrames(encodeAll(scenario)), { ...accumulator.result() });
  });

  test("a plain text answer, and arguments that are not a JSON object give input {}", () => {
    const accumulator = new MessageAccumulator(STREAM, "claude");
    for (const event of events(started(""), textDelta("Hi"), toolDelta(0, "c", "f", '{"cut'), done(FinishReason.FINISH_REASON_LENGTH))) accumulator.add(event);
    const result = accumulator.result();
    assert.equal(result.model, "claude");
    assert.deepEqual(result.content, [
      { type: "text", text: "Hi" },
      { type: "tool_use", id: "c", name: "f", input: {} },
    ]);
    assert.equal(result.stop_reason, "max_tokens");
    assert.deepEqual(result.usage, { input_tokens: 0, output_tokens: 0, cache_read_input_tokens: 0 });
  });
});
