import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type EventBody, FinishReason, type StreamEvent } from "@runnel/shared";
import {
  type ChunkContext,
  ChunkJson,
  CompletionAccumulator,
  encodeChunk as encodeValue,
  endUsageChunk as endUsageValue,
  type OpenAIStreamValue,
} from "./openai-encoder.js";

function context(model = "gpt"): ChunkContext {
  return { id: "chatcmpl-st_abc", created: 1_732_170_000, model };
}

/** One serialiser per stream, as each wire has: its cached envelope follows the stream's model. */
const serializers = new WeakMap<ChunkContext, ChunkJson>();
function json(ctx: ChunkContext, value: OpenAIStreamValue | undefined): string | undefined {
  if (value === undefined) return undefined;
  const serializer = serializers.get(ctx) ?? new ChunkJson();
  serializers.set(ctx, serializer);
  const text = serializer.text(value);
  assert.equal(text, JSON.stringify(value), "the serialiser's text is the value's JSON");
  return text;
}

/** The text a client receives for one event: the encoder's value through the one serialiser. */
function encodeChunk(ctx: ChunkContext, event: StreamEvent): string | undefined {
  return json(ctx, encodeValue(ctx, event));
}

function endUsageChunk(ctx: ChunkContext, event: StreamEvent): string | undefined {
  return json(ctx, endUsageValue(ctx, event));
}

let seq = 0;
function event(body: EventBody): StreamEvent {
  seq += 1;
  return { streamId: "st_abc", seq, epoch: 0, event: body };
}

interface Chunk {
  id: string;
  object: string;
  created: number;
  model: string;
  choices: Array<{ index: number; delta: Record<string, unknown>; finish_reason: string | null }>;
  usage?: Record<string, unknown>;
}

/** Encodes one event and parses the JSON back, failing if nothing or invalid JSON came out. */
function encode(ctx: ChunkContext, body: EventBody): Chunk {
  const text = encodeChunk(ctx, event(body));
  assert.equal(typeof text, "string");
  return JSON.parse(text ?? "") as Chunk;
}

/** Asserts the common `chat.completion.chunk` envelope and returns the single choice. */
function singleChoice(chunk: Chunk, model: string): Chunk["choices"][number] {
  assert.equal(chunk.id, "chatcmpl-st_abc");
  assert.equal(chunk.object, "chat.completion.chunk");
  assert.equal(chunk.created, 1_732_170_000);
  assert.equal(chunk.model, model);
  assert.equal(chunk.choices.length, 1);
  const choice = chunk.choices[0];
  assert.ok(choice);
  assert.equal(choice.index, 0);
  return choice;
}

describe("encodeChunk", () => {
  test("started gives role assistant with empty content and makes the served model the context model", () => {
    const ctx = context("gpt");
    const chunk = encode(ctx, { $case: "started", value: { provider: "openai", model: "gpt-4o-mini-2024-07-18", attempt: 1 } });
    const choice = singleChoice(chunk, "gpt-4o-mini-2024-07-18");
    assert.deepEqual(choice.delta, { role: "assistant", content: "" });
    assert.equal(choice.finish_reason, null);
    assert.equal(ctx.model, "gpt-4o-mini-2024-07-18");
    const next = encode(ctx, { $case: "textDelta", value: { text: "x" } });
    assert.equal(next.model, "gpt-4o-mini-2024-07-18");
  });

  test("started without a model keeps the public model", () => {
    const ctx = context("gpt");
    const chunk = encode(ctx, { $case: "started", value: { provider: "openai", model: "", attempt: 1 } });
    assert.equal(chunk.model, "gpt");
    assert.equal(ctx.model, "gpt");
  });

  test("a text delta becomes delta.content", () => {
    const choice = singleChoice(encode(context(), { $case: "textDelta", value: { text: "Hello" } }), "gpt");
    assert.deepEqual(choice.delta, { content: "Hello" });
    assert.equal(choice.finish_reason, null);
  });

  test("quotes, backslashes, newlines, control characters and unicode survive JSON encoding", () => {
    const text = 'He said "hi" \\ path C:\\tmp\n\tnext\r\nline \u0000\u001f é 世界 👋🏽 👨‍👩‍👧 \u2028\u2029 </script>';
    const encoded = encodeChunk(context(), event({ $case: "textDelta", value: { text } }));
    assert.ok(encoded);
    assert.equal(encoded.includes("\n"), false, "a raw newline would break SSE framing");
    assert.equal(encoded.includes("\r"), false);
    const chunk = JSON.parse(encoded) as Chunk;
    assert.equal(chunk.choices[0]?.delta.content, text);
  });

  test("a reasoning delta becomes delta.reasoning_content", () => {
    const choice = singleChoice(encode(context(), { $case: "reasoningDelta", value: { text: "Let me think…" } }), "gpt");
    assert.deepEqual(choice.delta, { reasoning_content: "Let me think…" });
  });

  test("the first tool call fragment carries id, type and name", () => {
    const choice = singleChoice(encode(context(), { $case: "toolCallDelta", value: { index: 0, id: "call_1", name: "get_weather", arguments: "" } }), "gpt");
    assert.deepEqual(choice.delta, { tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "get_weather", arguments: "" } }] });
  });

  test("a later tool call fragment carries only index and arguments", () => {
    const choice = singleChoice(encode(context(), { $case: "toolCallDelta", value: { index: 2, id: "", name: "", arguments: '{"city":"Pa' } }), "gpt");
    assert.deepEqual(choice.delta, { tool_calls: [{ index: 2, function: { arguments: '{"city":"Pa' } }] });
  });

  test("usage gives a chunk with empty choices and OpenAI's usage object including total_tokens", () => {
    const usage = { inputTokens: 12, outputTokens: 30, cachedInputTokens: 8, reasoningTokens: 5 };
    const done = { streamId: "st_abc", seq: 9, epoch: 0, event: { $case: "done" as const, value: { finishReason: FinishReason.FINISH_REASON_STOP, usage } } };
    const chunk = JSON.parse(endUsageChunk(context(), done) ?? "null") as Record<string, unknown>;
    assert.equal(chunk.object, "chat.completion.chunk");
    assert.equal(chunk.id, "chatcmpl-st_abc");
    assert.equal(chunk.model, "gpt");
    assert.deepEqual(chunk.choices, []);
    assert.deepEqual(chunk.usage, {
      prompt_tokens: 12,
      completion_tokens: 30,
      total_tokens: 42,
      prompt_tokens_details: { cached_tokens: 8 },
      completion_tokens_details: { reasoning_tokens: 5 },
    });
  });

  test("a usage event (older workers) writes nothing; the usage chunk follows the finish chunk of done", () => {
    const chunks = context();
    const usage = { inputTokens: 1, outputTokens: 2, cachedInputTokens: 0, reasoningTokens: 0 };
    assert.equal(encodeChunk(chunks, { streamId: "st_abc", seq: 8, epoch: 0, event: { $case: "usage", value: usage } }), undefined);
    const done = {
      streamId: "st_abc",
      seq: 9,
      epoch: 0,
      event: { $case: "done" as const, value: { finishReason: FinishReason.FINISH_REASON_STOP, usage: undefined } },
    };
    assert.equal((JSON.parse(endUsageChunk(chunks, done) ?? "null") as { usage: { total_tokens: number } }).usage.total_tokens, 3);
  });

  test("no usage, no usage chunk", () => {
    const done = {
      streamId: "st_abc",
      seq: 9,
      epoch: 0,
      event: { $case: "done" as const, value: { finishReason: FinishReason.FINISH_REASON_STOP, usage: undefined } },
    };
    assert.equal(endUsageChunk(context(), done), undefined);
  });

  const finishes: Array<[FinishReason, string]> = [
    [FinishReason.FINISH_REASON_STOP, "stop"],
    [FinishReason.FINISH_REASON_LENGTH, "length"],
    [FinishReason.FINISH_REASON_TOOL_CALLS, "tool_calls"],
    [FinishReason.FINISH_REASON_CONTENT_FILTER, "content_filter"],
    [FinishReason.FINISH_REASON_UNSPECIFIED, "stop"],
  ];
  for (const [reason, expected] of finishes) {
    test(`done with ${FinishReason[reason]} gives an empty delta and finish_reason "${expected}"`, () => {
      const choice = singleChoice(encode(context(), { $case: "done", value: { finishReason: reason } }), "gpt");
      assert.deepEqual(choice.delta, {});
      assert.equal(choice.finish_reason, expected);
    });
  }

  test("an error gives OpenAI's error object and nothing else", () => {
    const encoded = encodeChunk(
      context(),
      event({ $case: "error", value: { code: "RUNNEL_ERR_PROVIDER_STREAM_CUT", message: 'cut "mid" stream\n', retryable: true, httpStatus: 502 } }),
    );
    assert.ok(encoded);
    assert.deepEqual(JSON.parse(encoded), {
      error: { message: 'cut "mid" stream\n', type: "server_error", param: null, code: "RUNNEL_ERR_PROVIDER_STREAM_CUT" },
    });
  });

  test("an error with a catalogued client-error code gets that code's type", () => {
    const encoded = encodeChunk(
      context(),
      event({ $case: "error", value: { code: "RUNNEL_ERR_PROVIDER_RATE_LIMITED", message: "slow down", retryable: true, httpStatus: 429 } }),
    );
    assert.equal((JSON.parse(encoded ?? "") as { error: { type: string } }).error.type, "rate_limit_error");
  });

  test("an event without a body encodes to nothing", () => {
    assert.equal(encodeChunk(context(), { streamId: "s", seq: 1, epoch: 0, event: undefined }), undefined);
  });
});

describe("CompletionAccumulator", () => {
  function fold(bodies: EventBody[], model = "gpt"): Record<string, unknown> {
    const accumulator = new CompletionAccumulator(context(model));
    for (const body of bodies) accumulator.add(event(body));
    return accumulator.result();
  }

  test("folds text, the served model, usage and the finish reason into a chat.completion", () => {
    const result = fold([
      { $case: "started", value: { provider: "openai", model: "gpt-4o-mini", attempt: 1 } },
      { $case: "textDelta", value: { text: "Hel" } },
      { $case: "textDelta", value: { text: "lo, " } },
      { $case: "textDelta", value: { text: "wörld 🌍" } },
      { $case: "usage", value: { inputTokens: 5, outputTokens: 4, cachedInputTokens: 0, reasoningTokens: 0 } },
      { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_LENGTH } },
    ]);
    assert.deepEqual(result, {
      id: "chatcmpl-st_abc",
      object: "chat.completion",
      created: 1_732_170_000,
      model: "gpt-4o-mini",
      choices: [{ index: 0, message: { role: "assistant", content: "Hello, wörld 🌍" }, finish_reason: "length", logprobs: null }],
      usage: {
        prompt_tokens: 5,
        completion_tokens: 4,
        total_tokens: 9,
        prompt_tokens_details: { cached_tokens: 0 },
        completion_tokens_details: { reasoning_tokens: 0 },
      },
    });
  });

  test("joins tool call fragments by index; content is null when only tools were called", () => {
    const result = fold([
      { $case: "toolCallDelta", value: { index: 0, id: "call_a", name: "get_weather", arguments: "" } },
      { $case: "toolCallDelta", value: { index: 1, id: "call_b", name: "get_time", arguments: '{"tz":' } },
      { $case: "toolCallDelta", value: { index: 0, id: "", name: "", arguments: '{"city":' } },
      { $case: "toolCallDelta", value: { index: 0, id: "", name: "", arguments: '"Paris"}' } },
      { $case: "toolCallDelta", value: { index: 1, id: "", name: "", arguments: '"UTC"}' } },
      { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_TOOL_CALLS } },
    ]);
    const choices = result.choices as Array<{ message: Record<string, unknown>; finish_reason: string }>;
    assert.deepEqual(choices[0]?.message, {
      role: "assistant",
      content: null,
      tool_calls: [
        { id: "call_a", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
        { id: "call_b", type: "function", function: { name: "get_time", arguments: '{"tz":"UTC"}' } },
      ],
    });
    assert.equal(choices[0]?.finish_reason, "tool_calls");
  });

  test("keeps text alongside tool calls, and reasoning as reasoning_content", () => {
    const result = fold([
      { $case: "reasoningDelta", value: { text: "think " } },
      { $case: "reasoningDelta", value: { text: "more" } },
      { $case: "textDelta", value: { text: "Calling." } },
      { $case: "toolCallDelta", value: { index: 0, id: "c", name: "f", arguments: "{}" } },
    ]);
    const message = (result.choices as Array<{ message: Record<string, unknown> }>)[0]?.message;
    assert.ok(message);
    assert.equal(message.content, "Calling.");
    assert.equal(message.reasoning_content, "think more");
    assert.ok(Array.isArray(message.tool_calls));
    assert.equal(message.tool_calls.length, 1);
  });

  test("without events: empty content, finish reason stop, usage null and the public model", () => {
    const result = fold([]);
    assert.equal(result.model, "gpt");
    assert.equal(result.usage, null);
    const choice = (result.choices as Array<{ message: Record<string, unknown>; finish_reason: string }>)[0];
    assert.deepEqual(choice?.message, { role: "assistant", content: "" });
    assert.equal(choice?.finish_reason, "stop");
  });

  test("the accumulated result agrees with the concatenated streamed chunks", () => {
    const bodies: EventBody[] = [
      { $case: "started", value: { provider: "p", model: "served", attempt: 1 } },
      { $case: "textDelta", value: { text: 'a "quoted"\n' } },
      { $case: "textDelta", value: { text: "b ✓" } },
      { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP } },
    ];
    const streamCtx = context();
    const streamed = bodies
      .map((body) => JSON.parse(encodeChunk(streamCtx, event(body)) ?? "") as Chunk)
      .map((chunk) => chunk.choices[0]?.delta.content ?? "")
      .join("");
    const folded = fold(bodies);
    assert.equal((folded.choices as Array<{ message: { content: string } }>)[0]?.message.content, streamed);
    assert.equal(folded.model, streamCtx.model);
  });
});
