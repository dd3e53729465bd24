import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type ChatRequest,
  decodeEvent,
  decodeJob,
  type EventBody,
  EventSequencer,
  encodeEvent,
  encodeJob,
  FinishReason,
  finishReasonFromOpenAI,
  isTerminal,
  type Job,
  MAX_DELTA_CHARS,
  openAIFinishReason,
  StreamEvent,
  splitDelta,
} from "./events.js";
import { INLINE_JOB_CAP, inlineJobLimit } from "./request-bodies.js";

function roundTrip(event: StreamEvent): StreamEvent {
  const bytes = encodeEvent(event);
  assert.ok(bytes instanceof Uint8Array);
  return decodeEvent(bytes);
}

function event(body: EventBody, seq = 7): StreamEvent {
  return { streamId: "st_01HZX3J9Y8K7", seq, epoch: 0, event: body };
}

/** A ChatRequest with every field set to its "absent" value; tests override what they need. */
function emptyRequest(): ChatRequest {
  return {
    messages: [],
    temperature: undefined,
    topP: undefined,
    maxTokens: undefined,
    stop: [],
    tools: [],
    toolChoiceJson: "",
    includeUsage: false,
    seed: undefined,
    user: "",
    responseFormatJson: undefined,
    reasoningEffort: undefined,
    reasoningSummary: undefined,
  };
}

describe("encodeEvent / decodeEvent round-trip every event kind", () => {
  const cases: Array<[string, EventBody]> = [
    ["started", { $case: "started", value: { provider: "openai-eu", model: "gpt-4o-mini-2024-07-18", attempt: 2 } }],
    ["textDelta (ASCII)", { $case: "textDelta", value: { text: "Hello, world" } }],
    ["textDelta (unicode, emoji, newlines, quotes)", { $case: "textDelta", value: { text: 'Grüße, 世界! 👋🏽👨‍👩‍👧\nline 2\r\n\t"quoted" \\ back\u0000nul' } }],
    ["textDelta (empty)", { $case: "textDelta", value: { text: "" } }],
    ["toolCallDelta (first fragment)", { $case: "toolCallDelta", value: { index: 1, id: "call_abc123", name: "get_weather", arguments: '{"ci' } }],
    ["toolCallDelta (later fragment)", { $case: "toolCallDelta", value: { index: 1, id: "", name: "", arguments: 'ty":"Zürich"}' } }],
    ["reasoningDelta", { $case: "reasoningDelta", value: { text: "First, consider…\n∑ x² ≥ 0" } }],
    ["usage", { $case: "usage", value: { inputTokens: 1234, outputTokens: 567, cachedInputTokens: 1024, reasoningTokens: 89 } }],
    ["error", { $case: "error", value: { code: "RUNNEL_ERR_PROVIDER_STREAM_CUT", message: "provider stream ended early", retryable: true, httpStatus: 502 } }],
  ];
  for (const [name, body] of cases) {
    test(name, () => {
      const original = event(body);
      assert.deepEqual(roundTrip(original), original);
    });
  }

  for (const reason of [
    FinishReason.FINISH_REASON_UNSPECIFIED,
    FinishReason.FINISH_REASON_STOP,
    FinishReason.FINISH_REASON_LENGTH,
    FinishReason.FINISH_REASON_TOOL_CALLS,
    FinishReason.FINISH_REASON_CONTENT_FILTER,
  ]) {
    test(`done with finish reason ${FinishReason[reason]}`, () => {
      const original = event({ $case: "done", value: { finishReason: reason, usage: undefined } });
      const decoded = roundTrip(original);
      assert.deepEqual(decoded, original);
      assert.equal(decoded.event?.$case === "done" && decoded.event.value.finishReason, reason);
    });
  }

  test("done carries the stream's usage", () => {
    const usage = { inputTokens: 12, outputTokens: 30, cachedInputTokens: 8, reasoningTokens: 5 };
    const original = event({ $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP, usage } });
    assert.deepEqual(roundTrip(original), original);
  });

  test("a large seq survives (uint64 beyond 32 bits)", () => {
    const original = event({ $case: "textDelta", value: { text: "x" } }, 2 ** 40 + 3);
    assert.equal(roundTrip(original).seq, 2 ** 40 + 3);
  });

  test("different events encode to different bytes", () => {
    const a = encodeEvent(event({ $case: "textDelta", value: { text: "a" } }));
    const b = encodeEvent(event({ $case: "reasoningDelta", value: { text: "a" } }));
    assert.notDeepEqual(a, b);
  });

  test("the reused writer gives each event its own bytes, also after one it refused", () => {
    const long = event({ $case: "textDelta", value: { text: "x".repeat(5000) } }, 1);
    const short = event({ $case: "textDelta", value: { text: "y" } }, 2);
    const fresh = (value: StreamEvent) => StreamEvent.encode(value).finish();
    const first = encodeEvent(long);
    const second = encodeEvent(short);
    assert.deepEqual(second, fresh(short));
    assert.deepEqual(first, fresh(long), "bytes handed out earlier are not overwritten");
    assert.throws(() => encodeEvent(event({ $case: "textDelta", value: { text: "z" } }, -1)));
    assert.deepEqual(encodeEvent(short), fresh(short));
  });

  test("decoding garbage throws instead of returning a half event", () => {
    assert.throws(() => decodeEvent(new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])));
  });
});

describe("encodeJob / decodeJob", () => {
  const fullRequest: ChatRequest = {
    messages: [
      { role: "system", content: [{ part: { $case: "text", value: "You are terse." } }], name: "", toolCallId: "", toolCalls: [] },
      {
        role: "user",
        content: [
          { part: { $case: "text", value: "What is in this image? 🤔" } },
          { part: { $case: "imageUrl", value: { url: "https://example.com/cat.png", detail: "high" } } },
          { part: { $case: "imageUrl", value: { url: "data:image/png;base64,iVBORw0KGgo=", detail: "" } } },
        ],
        name: "alice",
        toolCallId: "",
        toolCalls: [],
      },
      {
        role: "assistant",
        content: [],
        name: "",
        toolCallId: "",
        toolCalls: [{ id: "call_1", name: "lookup", arguments: '{"q":"cat"}' }],
      },
      { role: "tool", content: [{ part: { $case: "text", value: '{"answer":"a cat"}' } }], name: "", toolCallId: "call_1", toolCalls: [] },
    ],
    temperature: 0.7,
    topP: 0.9,
    maxTokens: 256,
    stop: ["\n\n", "END"],
    tools: [{ name: "lookup", description: "Looks things up", parametersJson: '{"type":"object","properties":{"q":{"type":"string"}}}', strict: true }],
    toolChoiceJson: '{"type":"function","function":{"name":"lookup"}}',
    includeUsage: true,
    seed: -42,
    user: "user-123",
    responseFormatJson: '{"type":"json_schema","json_schema":{"name":"answer","schema":{"type":"object"},"strict":true}}',
    reasoningEffort: "low",
    reasoningSummary: "auto",
  };

  function job(request: ChatRequest | undefined): Job {
    return {
      streamId: "st_01HZX3J9Y8K7",
      model: "gpt",
      request,
      routes: [
        { provider: "openai", model: "gpt-4o-mini" },
        { provider: "vllm", model: "llama-3.1-8b" },
      ],
      createdAtMs: 1_732_170_000_123,
      routingVersion: 17,
      traceContext: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tracestate: "vendor=x" },
      keyId: "team-a",
      affinityKey: "",
      requestRef: "",
    };
  }

  test("a job with a full ChatRequest round-trips exactly", () => {
    const original = job(fullRequest);
    assert.deepEqual(decodeJob(encodeJob(original)), original);
  });

  test("optional numbers that are absent stay absent", () => {
    const decoded = decodeJob(encodeJob(job(emptyRequest())));
    assert.ok(decoded.request);
    assert.equal(decoded.request.temperature, undefined);
    assert.equal(decoded.request.topP, undefined);
    assert.equal(decoded.request.maxTokens, undefined);
    assert.equal(decoded.request.seed, undefined);
    assert.equal(decoded.request.responseFormatJson, undefined);
    assert.equal(decoded.request.reasoningEffort, undefined);
    assert.deepEqual(decoded.request, emptyRequest());
  });

  test("temperature 0, top_p 0 and seed 0 survive as 0, not as absent", () => {
    const decoded = decodeJob(encodeJob(job({ ...emptyRequest(), temperature: 0, topP: 0, seed: 0 })));
    assert.equal(decoded.request?.temperature, 0);
    assert.equal(decoded.request?.topP, 0);
    assert.equal(decoded.request?.seed, 0);
  });

  test("a job without a request decodes with request undefined", () => {
    const decoded = decodeJob(encodeJob(job(undefined)));
    assert.equal(decoded.request, undefined);
    assert.equal(decoded.routes.length, 2);
  });

  test("a job without its request (a reference instead) round-trips, and an old job reads as inline", () => {
    const reference = { ...job(undefined), requestRef: "st_01HZX3J9Y8K7" };
    assert.deepEqual(decodeJob(encodeJob(reference)), reference);
    assert.equal(decodeJob(encodeJob(job(fullRequest))).requestRef, "");
  });
});

describe("jobs on the queue stay far below the server's max_payload", () => {
  test("the inline limit is the cap on a default server, and under max_payload on a small one", () => {
    assert.equal(inlineJobLimit(1024 * 1024), INLINE_JOB_CAP);
    assert.equal(inlineJobLimit(64 * 1024 * 1024), INLINE_JOB_CAP);
    assert.ok(inlineJobLimit(128 * 1024) < 128 * 1024);
    assert.ok(inlineJobLimit(128 * 1024) > 64 * 1024);
    // Before the server said anything: nats.js's own default of 1 MiB.
    assert.equal(inlineJobLimit(undefined), INLINE_JOB_CAP);
  });
});

describe("splitDelta: no event larger than a bus message", () => {
  const text = (body: EventBody) =>
    body.$case === "textDelta" || body.$case === "reasoningDelta" ? body.value.text : body.$case === "toolCallDelta" ? body.value.arguments : "";

  test("a delta within the bound, and any other event, comes back alone and unchanged", () => {
    const small: EventBody = { $case: "textDelta", value: { text: "x".repeat(MAX_DELTA_CHARS) } };
    assert.deepEqual(splitDelta(small), [small]);
    const done: EventBody = { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP } };
    assert.deepEqual(splitDelta(done), [done]);
  });

  test("a 2 MB text delta becomes consecutive deltas that join to it, each encoding well under 1 MiB", () => {
    const big = "río ".repeat(500_000);
    const parts = splitDelta({ $case: "textDelta", value: { text: big } });
    assert.ok(parts.length >= 2);
    assert.equal(parts.map(text).join(""), big);
    for (const part of parts) {
      assert.equal(part.$case, "textDelta");
      assert.ok(encodeEvent(event(part)).length < 256 * 1024, `${encodeEvent(event(part)).length} bytes`);
    }
  });

  test("reasoning splits the same way", () => {
    const parts = splitDelta({ $case: "reasoningDelta", value: { text: "t".repeat(10) } }, 4);
    assert.deepEqual(
      parts.map((part) => [part.$case, text(part)]),
      [
        ["reasoningDelta", "tttt"],
        ["reasoningDelta", "tttt"],
        ["reasoningDelta", "tt"],
      ],
    );
  });

  test("a tool call's id and name go with its first piece only; every piece keeps the call's index", () => {
    const parts = splitDelta({ $case: "toolCallDelta", value: { index: 2, id: "call_1", name: "lookup", arguments: '{"q":"abcdefgh"}' } }, 5);
    assert.equal(parts.map(text).join(""), '{"q":"abcdefgh"}');
    assert.deepEqual(
      parts.map((part) => (part.$case === "toolCallDelta" ? [part.value.index, part.value.id, part.value.name] : [])),
      [[2, "call_1", "lookup"], ...Array.from({ length: parts.length - 1 }, () => [2, "", ""])],
    );
  });

  test("a cut never falls between the halves of a surrogate pair", () => {
    // "a" then emoji (two code units each): a cut after 2 units would split the first emoji.
    const emoji = "a😀😀😀";
    const parts = splitDelta({ $case: "textDelta", value: { text: emoji } }, 2);
    assert.equal(parts.map(text).join(""), emoji);
    for (const part of parts) assert.equal(Buffer.from(text(part), "utf8").toString("utf8"), text(part), "each piece is valid UTF-16");
    assert.deepEqual(parts.map(text), ["a", "😀", "😀", "😀"]);
  });
});

describe("EventSequencer", () => {
  test("numbers events from 1 without gaps and stamps the stream id", () => {
    const sequencer = new EventSequencer("st_a");
    assert.equal(sequencer.last, 0);
    const bodies: EventBody[] = [
      { $case: "started", value: { provider: "p", model: "m", attempt: 1 } },
      { $case: "textDelta", value: { text: "a" } },
      { $case: "textDelta", value: { text: "b" } },
      { $case: "usage", value: { inputTokens: 1, outputTokens: 2, cachedInputTokens: 0, reasoningTokens: 0 } },
      { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP } },
    ];
    const events = bodies.map((body) => sequencer.next(body));
    assert.deepEqual(
      events.map((e) => e.seq),
      [1, 2, 3, 4, 5],
    );
    assert.ok(events.every((e) => e.streamId === "st_a"));
    assert.deepEqual(
      events.map((e) => e.event),
      bodies,
    );
    assert.equal(sequencer.last, 5);
  });

  test("two sequencers count independently", () => {
    const a = new EventSequencer("a");
    const b = new EventSequencer("b");
    a.next({ $case: "textDelta", value: { text: "1" } });
    a.next({ $case: "textDelta", value: { text: "2" } });
    assert.equal(b.next({ $case: "textDelta", value: { text: "1" } }).seq, 1);
    assert.equal(a.last, 2);
    assert.equal(b.last, 1);
  });
});

describe("isTerminal", () => {
  test("done and error are terminal", () => {
    assert.equal(isTerminal(event({ $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP } })), true);
    assert.equal(isTerminal(event({ $case: "error", value: { code: "RUNNEL_ERR_INTERNAL", message: "x", retryable: false, httpStatus: 500 } })), true);
  });

  test("every other kind, and an event without a body, is not terminal", () => {
    const others: EventBody[] = [
      { $case: "started", value: { provider: "p", model: "m", attempt: 1 } },
      { $case: "textDelta", value: { text: "a" } },
      { $case: "toolCallDelta", value: { index: 0, id: "c", name: "f", arguments: "" } },
      { $case: "reasoningDelta", value: { text: "r" } },
      { $case: "usage", value: { inputTokens: 1, outputTokens: 1, cachedInputTokens: 0, reasoningTokens: 0 } },
    ];
    for (const body of others) assert.equal(isTerminal(event(body)), false, body.$case);
    assert.equal(isTerminal({ streamId: "s", seq: 1, epoch: 0, event: undefined }), false);
  });
});

describe("finish reason mappings", () => {
  test("finishReasonFromOpenAI maps OpenAI's values and the common aliases", () => {
    assert.equal(finishReasonFromOpenAI("stop"), FinishReason.FINISH_REASON_STOP);
    assert.equal(finishReasonFromOpenAI("eos"), FinishReason.FINISH_REASON_STOP);
    assert.equal(finishReasonFromOpenAI("length"), FinishReason.FINISH_REASON_LENGTH);
    assert.equal(finishReasonFromOpenAI("tool_calls"), FinishReason.FINISH_REASON_TOOL_CALLS);
    assert.equal(finishReasonFromOpenAI("function_call"), FinishReason.FINISH_REASON_TOOL_CALLS);
    assert.equal(finishReasonFromOpenAI("content_filter"), FinishReason.FINISH_REASON_CONTENT_FILTER);
  });

  test("finishReasonFromOpenAI returns undefined for unknown values", () => {
    assert.equal(finishReasonFromOpenAI("abort"), undefined);
    assert.equal(finishReasonFromOpenAI(""), undefined);
    assert.equal(finishReasonFromOpenAI("STOP"), undefined);
  });

  test("openAIFinishReason gives OpenAI's string, with stop for unspecified and unrecognized", () => {
    assert.equal(openAIFinishReason(FinishReason.FINISH_REASON_STOP), "stop");
    assert.equal(openAIFinishReason(FinishReason.FINISH_REASON_LENGTH), "length");
    assert.equal(openAIFinishReason(FinishReason.FINISH_REASON_TOOL_CALLS), "tool_calls");
    assert.equal(openAIFinishReason(FinishReason.FINISH_REASON_CONTENT_FILTER), "content_filter");
    assert.equal(openAIFinishReason(FinishReason.FINISH_REASON_UNSPECIFIED), "stop");
    assert.equal(openAIFinishReason(FinishReason.UNRECOGNIZED), "stop");
  });

  test("the two mappings are inverse on OpenAI's own values", () => {
    for (const text of ["stop", "length", "tool_calls", "content_filter"]) {
      const reason = finishReasonFromOpenAI(text);
      assert.notEqual(reason, undefined, text);
      assert.equal(openAIFinishReason(reason ?? FinishReason.UNRECOGNIZED), text);
    }
  });
});
