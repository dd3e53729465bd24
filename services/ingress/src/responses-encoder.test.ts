import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { type EventBody, FailoverMode, FinishReason, type StreamEvent } from "@runnel/shared";
import OpenAI, { APIError } from "openai";
import {
  FAILOVER_EVENT,
  ResponseAccumulator,
  type ResponsesContext,
  type ResponsesEvent,
  ResponsesStreamEncoder,
  responseErrorCode,
  sseFrame,
} from "./responses-encoder.js";
import { parseResponsesRequest, responseEcho } from "./responses-request.js";

const STREAM = "st_abc";
const SERVED = "gpt-4o-mini-2024-07-18";
const CONTEXT: ResponsesContext = {
  streamId: STREAM,
  createdAt: 1_749_761_604,
  model: "chat",
  echo: responseEcho(parseResponsesRequest({ model: "chat", input: "hi" })),
};

/** Numbers bodies 1, 2, 3, … as the worker does. */
function events(...bodies: EventBody[]): StreamEvent[] {
  return bodies.map((event, index) => ({ streamId: STREAM, seq: index + 1, epoch: 0, event }));
}

const started = (model = SERVED): EventBody => ({ $case: "started", value: { provider: "p", model, attempt: 1 } });
const textDelta = (text: string): EventBody => ({ $case: "textDelta", value: { text } });
const reasoning = (text: string): EventBody => ({ $case: "reasoningDelta", value: { text } });
const toolDelta = (index: number, id: string, name: string, args: string): EventBody => ({
  $case: "toolCallDelta",
  value: { index, id, name, arguments: args },
});
const usage = (inputTokens: number, outputTokens: number, cachedInputTokens = 0, reasoningTokens = 0) => ({
  inputTokens,
  outputTokens,
  cachedInputTokens,
  reasoningTokens,
});
/** `withUsage` null: a done without usage. */
const done = (finishReason = FinishReason.FINISH_REASON_STOP, withUsage: ReturnType<typeof usage> | null = usage(10, 16)): EventBody => ({
  $case: "done",
  value: withUsage === null ? { finishReason } : { finishReason, usage: withUsage },
});
const failure = (code: string, message: string, httpStatus = 502): EventBody => ({ $case: "error", value: { code, message, retryable: true, httpStatus } });
const failover = (mode: FailoverMode, to = { provider: "backup", model: "gpt-4o" }): EventBody => ({
  $case: "failover",
  value: { mode, from: { provider: "primary", model: SERVED }, to, reasonCode: "RUNNEL_ERR_PROVIDER_STREAM_CUT", reason: "cut", takeover: false },
});

/** A field of an event that must be there (an object), typed as the test reads it. */
function field<T>(event: Record<string, unknown> | undefined, name: string): T {
  const value = event?.[name];
  assert.ok(typeof value === "object" && value !== null, `the event has ${name}`);
  return value as T;
}

function encodeAll(list: StreamEvent[], options: { startingAfter?: number; context?: ResponsesContext } = {}): ResponsesEvent[] {
  const encoder = new ResponsesStreamEncoder(options.context ?? CONTEXT, options.startingAfter === undefined ? {} : { startingAfter: options.startingAfter });
  return list.flatMap((event) => encoder.encode(event));
}

/** The Response object the encoder builds, with what the test sets. */
function responseObject(fields: Record<string, unknown>): Record<string, unknown> {
  return {
    id: `resp_${STREAM}`,
    object: "response",
    created_at: CONTEXT.createdAt,
    status: "in_progress",
    background: false,
    error: null,
    incomplete_details: null,
    instructions: null,
    max_output_tokens: null,
    max_tool_calls: null,
    model: "chat",
    output: [],
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
    usage: null,
    user: null,
    metadata: {},
    ...fields,
  };
}

const FIXTURES = new URL("../../../test/fixtures/providers/", import.meta.url);

/** The events of a recorded OpenAI stream (test/fixtures/providers, sources in its README). */
function recorded(name: string): Array<Record<string, unknown> & { type: string }> {
  const text = readFileSync(new URL(name, FIXTURES), "utf8");
  return text
    .split("\n\n")
    .filter((block) => block.trim() !== "")
    .map((block) => {
      const [eventLine, dataLine] = block.split("\n");
      const data = JSON.parse(dataLine?.slice("data: ".length) ?? "") as Record<string, unknown> & { type: string };
      assert.equal(eventLine, `event: ${data.type}`);
      return data;
    });
}

/** The keys OpenAI sends on an event of each type, from the recordings (obfuscation left out: Runnel does not pad). */
function keysByType(...names: string[]): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  for (const name of names) {
    for (const event of recorded(name)) {
      const own = Object.keys(event).filter((key) => key !== "obfuscation");
      keys.set(event.type, [...new Set([...(keys.get(event.type) ?? []), ...own])].sort());
    }
  }
  return keys;
}

const TEXT_USAGE = {
  input_tokens: 10,
  input_tokens_details: { cached_tokens: 0 },
  output_tokens: 16,
  output_tokens_details: { reasoning_tokens: 0 },
  total_tokens: 26,
};

describe("ResponsesStreamEncoder: the event sequence", () => {
  test("text: the exact events, numbered from 0, ending with response.completed and the whole response", () => {
    const item = `msg_${STREAM}_0`;
    const done_ = {
      id: item,
      type: "message",
      status: "completed",
      content: [{ type: "output_text", annotations: [], logprobs: [], text: "Hello world" }],
      role: "assistant",
    };
    assert.deepEqual(encodeAll(events(started(), textDelta("Hello"), textDelta(" world"), done())), [
      { type: "response.created", sequence_number: 0, response: responseObject({}) },
      { type: "response.in_progress", sequence_number: 1, response: responseObject({}) },
      {
        type: "response.output_item.added",
        sequence_number: 2,
        output_index: 0,
        item: { id: item, type: "message", status: "in_progress", content: [], role: "assistant" },
      },
      {
        type: "response.content_part.added",
        sequence_number: 3,
        item_id: item,
        output_index: 0,
        content_index: 0,
        part: { type: "output_text", annotations: [], logprobs: [], text: "" },
      },
      { type: "response.output_text.delta", sequence_number: 4, item_id: item, output_index: 0, content_index: 0, delta: "Hello", logprobs: [] },
      { type: "response.output_text.delta", sequence_number: 5, item_id: item, output_index: 0, content_index: 0, delta: " world", logprobs: [] },
      { type: "response.output_text.done", sequence_number: 6, item_id: item, output_index: 0, content_index: 0, text: "Hello world", logprobs: [] },
      {
        type: "response.content_part.done",
        sequence_number: 7,
        item_id: item,
        output_index: 0,
        content_index: 0,
        part: { type: "output_text", annotations: [], logprobs: [], text: "Hello world" },
      },
      { type: "response.output_item.done", sequence_number: 8, output_index: 0, item: done_ },
      {
        type: "response.completed",
        sequence_number: 9,
        response: responseObject({ status: "completed", model: SERVED, output: [done_], usage: TEXT_USAGE }),
      },
    ]);
  });

  test("reasoning then text: the event types of OpenAI's recorded o4-mini stream, one for one, with its fields", () => {
    const fixture = recorded("openai-responses-reasoning.sse");
    const ours = encodeAll(
      events(
        started("o4-mini-2025-04-16"),
        // The recording was shortened by hand: its deltas leave out the closing "**" its done events have.
        ...["**Calcul", "ating", " a", " simple", " sum**"].map(reasoning),
        ...["The", " sum", " of", " the", " first", " ", "5", " positive", " integers", " is", " 15", "."].map(textDelta),
        done(FinishReason.FINISH_REASON_STOP, usage(17, 122, 0, 64)),
      ),
    );
    assert.deepEqual(
      ours.map((event) => event.type),
      fixture.map((event) => event.type),
    );
    assert.deepEqual(
      ours.map((event) => event.sequence_number),
      fixture.map((event) => event.sequence_number),
    );
    const keys = keysByType("openai-responses-reasoning.sse");
    for (const event of ours) assert.deepEqual(Object.keys(event).sort(), keys.get(event.type), event.type);
    const completed = ours.at(-1)?.response as { output: unknown[]; usage: unknown };
    const recordedCompleted = fixture.at(-1)?.response as { output: Array<Record<string, unknown>>; usage: unknown };
    assert.deepEqual(
      completed.output,
      recordedCompleted.output.map((item, index) => ({ ...item, id: `${index === 0 ? "rs" : "msg"}_${STREAM}_${index}` })),
    );
    assert.deepEqual(completed.usage, recordedCompleted.usage);
  });

  test("tool calls: the event types of OpenAI's recorded two-call stream, with its items; arguments.done also names the function", () => {
    const fixture = recorded("openai-responses-tool-calls.sse");
    const search = ["{", '"query', '":', '"Detroit', " Tigers", " game", " schedule", " October", " ", "10", ",", " ", "202", "3", '"}'];
    const weather = ["{", '"city', '":', '"Detroit', '"}'];
    const ours = encodeAll(
      events(
        started("gpt-4o-2024-08-06"),
        toolDelta(0, "call_okunv0eUNIXE8kqY81fgYvCs", "search", ""),
        ...search.map((piece) => toolDelta(0, "", "", piece)),
        toolDelta(1, "call_ydtVlYcFLcDX2C7dcHgKZjl3", "weather", ""),
        ...weather.map((piece) => toolDelta(1, "", "", piece)),
        done(FinishReason.FINISH_REASON_TOOL_CALLS, usage(92, 52)),
      ),
    );
    assert.deepEqual(
      ours.map((event) => event.type),
      fixture.map((event) => event.type),
    );
    const keys = keysByType("openai-responses-tool-calls.sse");
    for (const event of ours) {
      // The SDKs' type of response.function_call_arguments.done has `name` (the recording does not).
      const expected = event.type === "response.function_call_arguments.done" ? [...(keys.get(event.type) ?? []), "name"].sort() : keys.get(event.type);
      assert.deepEqual(Object.keys(event).sort(), expected, event.type);
    }
    const completed = ours.at(-1)?.response as { status: string; output: unknown[] };
    const recordedOutput = field<{ output: Array<Record<string, unknown>> }>(fixture.at(-1), "response").output;
    assert.equal(completed.status, "completed");
    assert.deepEqual(
      completed.output,
      recordedOutput.map((item, index) => ({ ...item, id: `fc_${STREAM}_${index}` })),
    );
  });

  test("a tool call without an id gets one; text after a call opens a new message", () => {
    const list = encodeAll(events(started(), toolDelta(0, "", "ping", "{}"), textDelta("Done."), done()));
    const added = list.filter((event) => event.type === "response.output_item.added").map((event) => event.item);
    assert.deepEqual(added, [
      { id: `fc_${STREAM}_0`, type: "function_call", status: "in_progress", arguments: "", call_id: `call_${STREAM}_0`, name: "ping" },
      { id: `msg_${STREAM}_1`, type: "message", status: "in_progress", content: [], role: "assistant" },
    ]);
  });

  test("empty deltas write nothing; usage from a usage event before done is the response's usage", () => {
    const list = encodeAll(
      events(started(), textDelta(""), reasoning(""), { $case: "usage", value: usage(3, 0, 2) }, done(FinishReason.FINISH_REASON_STOP, null)),
    );
    assert.deepEqual(
      list.map((event) => event.type),
      ["response.created", "response.in_progress", "response.completed"],
    );
    assert.deepEqual(field<{ output: unknown[] }>(list.at(-1), "response").output, []);
    assert.deepEqual(field<{ usage: unknown }>(list.at(-1), "response").usage, {
      input_tokens: 3,
      input_tokens_details: { cached_tokens: 2 },
      output_tokens: 0,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: 3,
    });
  });

  test("a length finish is response.incomplete (max_output_tokens), the open item incomplete; never response.completed", () => {
    const list = encodeAll(events(started(), textDelta("Once upon"), done(FinishReason.FINISH_REASON_LENGTH)));
    assert.deepEqual(
      list.slice(-3).map((event) => event.type),
      ["response.content_part.done", "response.output_item.done", "response.incomplete"],
    );
    assert.equal(field<{ status: string }>(list.at(-2), "item").status, "incomplete");
    const response = list.at(-1)?.response as Record<string, unknown>;
    assert.equal(response.status, "incomplete");
    assert.deepEqual(response.incomplete_details, { reason: "max_output_tokens" });
    assert.equal(
      list.some((event) => event.type === "response.completed"),
      false,
    );
    const filtered = encodeAll(events(started(), done(FinishReason.FINISH_REASON_CONTENT_FILTER)));
    assert.deepEqual(field<Record<string, unknown>>(filtered.at(-1), "response").incomplete_details, { reason: "content_filter" });
  });

  test("a failure: response.failed with the error, then an error event (documented fields and the nested error); nothing after", () => {
    const encoder = new ResponsesStreamEncoder(CONTEXT);
    const list = events(started(), textDelta("Hel"), failure("RUNNEL_ERR_PROVIDER_STREAM_CUT", "provider connection failed mid-stream: ECONNRESET"), done());
    const out = list.flatMap((event) => encoder.encode(event));
    assert.deepEqual(
      out.map((event) => event.type),
      [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.failed",
        "error",
      ],
    );
    const failed = out.at(-2)?.response as Record<string, unknown>;
    assert.equal(failed.status, "failed");
    assert.deepEqual(failed.error, { code: "server_error", message: "provider connection failed mid-stream: ECONNRESET" });
    assert.deepEqual(failed.runnel, { error_code: "RUNNEL_ERR_PROVIDER_STREAM_CUT" });
    // The open message is incomplete in the object, and not closed by done events.
    assert.deepEqual(failed.output, [
      {
        id: `msg_${STREAM}_0`,
        type: "message",
        status: "incomplete",
        content: [{ type: "output_text", annotations: [], logprobs: [], text: "Hel" }],
        role: "assistant",
      },
    ]);
    assert.deepEqual(out.at(-1), {
      type: "error",
      sequence_number: 6,
      code: "RUNNEL_ERR_PROVIDER_STREAM_CUT",
      message: "provider connection failed mid-stream: ECONNRESET",
      param: null,
      error: { type: "server_error", code: "RUNNEL_ERR_PROVIDER_STREAM_CUT", message: "provider connection failed mid-stream: ECONNRESET", param: null },
    });
    assert.equal(encoder.ended, true);
    assert.deepEqual(encoder.encode(events(done())[0] as StreamEvent), []);
    assert.deepEqual(encoder.fail("RUNNEL_ERR_WORKER_LOST", "late"), []);
  });

  test("a cancel ends as status cancelled with no error object; the error event carries RUNNEL_ERR_CANCELLED", () => {
    const out = encodeAll(events(started(), textDelta("Hel"), failure("RUNNEL_ERR_CANCELLED", "cancelled by the client", 499)));
    const failed = out.at(-2)?.response as Record<string, unknown>;
    assert.equal(failed.status, "cancelled");
    assert.equal(failed.error, null);
    assert.equal(out.at(-1)?.code, "RUNNEL_ERR_CANCELLED");
    assert.equal(field<{ type: string }>(out.at(-1), "error").type, "invalid_request_error");
  });

  test("an error the ingress raises (fail) ends the stream the same way, numbered after what came", () => {
    const encoder = new ResponsesStreamEncoder(CONTEXT);
    for (const event of events(started(), textDelta("a"))) encoder.encode(event);
    const out = encoder.fail("RUNNEL_ERR_EVENT_GAP", "gap");
    assert.deepEqual(
      out.map((event) => [event.type, event.sequence_number]),
      [
        ["response.failed", 5],
        ["error", 6],
      ],
    );
    assert.equal(encoder.lastSequenceNumber, 6);
  });

  test("the response error code is on OpenAI's set", () => {
    assert.equal(responseErrorCode("RUNNEL_ERR_PROVIDER_RATE_LIMITED"), "rate_limit_exceeded");
    assert.equal(responseErrorCode("RUNNEL_ERR_CONTEXT_LENGTH"), "invalid_prompt");
    assert.equal(responseErrorCode("RUNNEL_ERR_PROVIDER_TIMEOUT"), "server_error");
    assert.equal(responseErrorCode("SOMETHING_ELSE"), "server_error");
  });
});

describe("ResponsesStreamEncoder: failover", () => {
  test("restart: the open item closes as incomplete, the announcement follows, the next route opens new items; the response holds only those", () => {
    const out = encodeAll(events(started(), textDelta("Partial"), failover(FailoverMode.FAILOVER_MODE_RESTART), textDelta("Whole answer."), done()));
    assert.deepEqual(
      out.map((event) => event.type),
      [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        FAILOVER_EVENT,
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
      ],
    );
    assert.equal(field<{ status: string }>(out[7], "item").status, "incomplete");
    assert.deepEqual(out[8], {
      type: FAILOVER_EVENT,
      sequence_number: 8,
      mode: "restart",
      from: { provider: "primary", model: SERVED },
      to: { provider: "backup", model: "gpt-4o" },
      reason_code: "RUNNEL_ERR_PROVIDER_STREAM_CUT",
      reason: "cut",
      takeover: false,
    });
    // The new item comes at the next output index: clients index their snapshot by output_index.
    assert.equal(out[9]?.output_index, 1);
    const response = out.at(-1)?.response as Record<string, unknown>;
    assert.equal(response.model, "gpt-4o");
    assert.deepEqual(response.output, [
      {
        id: `msg_${STREAM}_1`,
        type: "message",
        status: "completed",
        content: [{ type: "output_text", annotations: [], logprobs: [], text: "Whole answer." }],
        role: "assistant",
      },
    ]);
    assert.equal((response.runnel as { failovers: unknown[] }).failovers.length, 1);
  });

  test("continue: the announcement only; the open message goes on, and the response keeps the whole text", () => {
    const out = encodeAll(events(started(), textDelta("Once upon"), failover(FailoverMode.FAILOVER_MODE_CONTINUE), textDelta(" a time."), done()));
    assert.deepEqual(
      out.slice(4, 8).map((event) => [event.type, event.delta]),
      [
        ["response.output_text.delta", "Once upon"],
        [FAILOVER_EVENT, undefined],
        ["response.output_text.delta", " a time."],
        ["response.output_text.done", undefined],
      ],
    );
    assert.equal(out[5]?.mode, "continue");
    const output = field<{ output: Array<{ content: Array<{ text: string }> }> }>(out.at(-1), "response").output;
    assert.equal(output.length, 1);
    assert.equal(output[0]?.content[0]?.text, "Once upon a time.");
  });

  test("before the first token (next_route, a takeover with no route yet): the announcement only", () => {
    const out = encodeAll(events(failover(FailoverMode.FAILOVER_MODE_NEXT_ROUTE), started("gpt-4o"), textDelta("Hi"), done()));
    assert.deepEqual(
      out.slice(0, 4).map((event) => event.type),
      ["response.created", "response.in_progress", FAILOVER_EVENT, "response.output_item.added"],
    );
    const takeover: EventBody = {
      $case: "failover",
      value: { mode: FailoverMode.FAILOVER_MODE_RESTART, reasonCode: "RUNNEL_ERR_WORKER_LOST", reason: "", takeover: true },
    };
    const taken = encodeAll(events(started(), takeover));
    assert.equal(taken.at(-1)?.to, null);
    assert.equal(taken.at(-1)?.takeover, true);
  });
});

describe("ResponsesStreamEncoder: sequence numbers", () => {
  const LIST = events(
    started(),
    reasoning("Hmm."),
    textDelta("Checking."),
    toolDelta(0, "call_a", "get_weather", '{"city":'),
    toolDelta(0, "", "", '"Paris"}'),
    failover(FailoverMode.FAILOVER_MODE_RESTART),
    textDelta("It is sunny."),
    done(),
  );
  const FULL = encodeAll(LIST);

  test("are consecutive from 0 across every kind of event", () => {
    assert.deepEqual(
      FULL.map((event) => event.sequence_number),
      FULL.map((_, index) => index),
    );
  });

  test("are a pure function of the events: another encoder (another replica) makes the same events", () => {
    assert.deepEqual(encodeAll(LIST), FULL);
  });

  test("start() before the first event (a heartbeat) changes nothing", () => {
    const encoder = new ResponsesStreamEncoder(CONTEXT);
    const early = [...encoder.start(), ...encoder.start(), ...LIST.flatMap((event) => encoder.encode(event))];
    assert.deepEqual(early, FULL);
  });

  test("a resume after N gets exactly the events numbered above N, for every N", () => {
    for (let after = -1; after <= FULL.length; after++) {
      assert.deepEqual(
        encodeAll(LIST, { startingAfter: after }),
        FULL.filter((event) => event.sequence_number > after),
        `starting_after=${after}`,
      );
    }
  });

  test("the SSE frame names the event and carries it as JSON", () => {
    const first = FULL[4] as ResponsesEvent;
    assert.equal(sseFrame(first), `event: ${first.type}\ndata: ${JSON.stringify(first)}\n\n`);
  });
});

describe("ResponseAccumulator", () => {
  test("the response in progress, then as the stream completed: the same object response.completed carries", () => {
    const list = events(started(), reasoning("Think."), textDelta("Hello"), textDelta(" there"), done());
    const accumulator = new ResponseAccumulator(CONTEXT);
    for (const event of list.slice(0, 3)) accumulator.add(event);
    const partial = accumulator.result();
    assert.equal(partial.status, "in_progress");
    assert.equal(accumulator.ended, false);
    assert.deepEqual(
      (partial.output as Array<{ type: string; status?: string }>).map((item) => [item.type, item.status]),
      [
        ["reasoning", undefined],
        ["message", "in_progress"],
      ],
    );
    for (const event of list.slice(3)) accumulator.add(event);
    assert.equal(accumulator.ended, true);
    assert.deepEqual(accumulator.result(), encodeAll(list).at(-1)?.response);
  });

  test("a failed stream's response is failed; one the ingress failed too", () => {
    const accumulator = new ResponseAccumulator(CONTEXT);
    for (const event of events(started(), failure("RUNNEL_ERR_PROVIDER_TIMEOUT", "no first token"))) accumulator.add(event);
    assert.equal(accumulator.result().status, "failed");
    const lost = new ResponseAccumulator(CONTEXT);
    lost.add(events(started())[0] as StreamEvent);
    lost.fail("RUNNEL_ERR_WORKER_LOST", "worker gone");
    assert.deepEqual(lost.result().error, { code: "server_error", message: "worker gone" });
  });

  test("returns a fresh object each time", () => {
    const accumulator = new ResponseAccumulator(CONTEXT);
    const first = accumulator.result();
    (first.metadata as Record<string, string>).x = "y";
    (first.tools as unknown[]).push({});
    assert.deepEqual(accumulator.result().metadata, {});
    assert.deepEqual(accumulator.result().tools, []);
  });
});

// ---------------------------------------------------------------------------
// The official SDK (openai 6.9.1, what the test workspace pins) reading our events.

/** An SDK client whose fetch answers each request with `answer(url)` (an SSE body, or a JSON value). */
function client(answer: (url: URL) => string | Record<string, unknown>, seen: URL[] = []): OpenAI {
  return new OpenAI({
    apiKey: "sk-test",
    baseURL: "http://gateway.test/v1",
    maxRetries: 0,
    fetch: async (input) => {
      const url = new URL(String(input instanceof Request ? input.url : input));
      seen.push(url);
      const body = answer(url);
      return typeof body === "string"
        ? new Response(body, { headers: { "content-type": "text/event-stream" } })
        : new Response(JSON.stringify(body), { headers: { "content-type": "application/json" } });
    },
  });
}

const sse = (list: readonly ResponsesEvent[]) => list.map(sseFrame).join("");

const STORIES: Record<string, StreamEvent[]> = {
  text: events(started(), textDelta("Hello"), textDelta(" world"), done()),
  reasoning: events(started(), reasoning("Let me"), reasoning(" think."), textDelta("15."), done()),
  tools: events(
    started(),
    textDelta("Checking."),
    toolDelta(0, "call_a", "get_weather", '{"city":'),
    toolDelta(0, "", "", '"Paris"}'),
    toolDelta(1, "call_b", "get_time", "{}"),
    done(FinishReason.FINISH_REASON_TOOL_CALLS),
  ),
  restart: events(started(), textDelta("Partial"), failover(FailoverMode.FAILOVER_MODE_RESTART), textDelta("Whole."), done()),
  continue: events(started(), textDelta("Once upon"), failover(FailoverMode.FAILOVER_MODE_CONTINUE), textDelta(" a time."), done()),
  incomplete: events(started(), textDelta("Once upon"), done(FinishReason.FINISH_REASON_LENGTH)),
  failed: events(started(), textDelta("Hel"), failure("RUNNEL_ERR_PROVIDER_STREAM_CUT", "provider connection failed mid-stream: ECONNRESET")),
};

/** What the SDK's stream helper made of a body: the events it emitted and its final response, or the error it raised. */
async function viaStreamHelper(body: string): Promise<{ types: string[]; deltas: string[]; final?: Record<string, unknown>; error?: unknown }> {
  const stream = client(() => body).responses.stream({ model: "chat", input: "hi" });
  const types: string[] = [];
  const deltas: string[] = [];
  stream.on("event", (event) => types.push(event.type));
  stream.on("response.output_text.delta", (event) => deltas.push(event.snapshot));
  try {
    return { types, deltas, final: (await stream.finalResponse()) as unknown as Record<string, unknown> };
  } catch (error) {
    return { types, deltas, error };
  }
}

describe("the openai SDK reads the encoder's streams", () => {
  for (const [name, list] of Object.entries(STORIES)) {
    test(`${name}: responses.stream() accepts every prefix of the stream, and the whole one`, async () => {
      const out = encodeAll(list);
      for (let length = 1; length <= out.length; length++) {
        const result = await viaStreamHelper(sse(out.slice(0, length)));
        const last = out[length - 1] as ResponsesEvent;
        assert.deepEqual(
          result.types,
          out
            .slice(0, length)
            .filter((event) => event.type !== "error")
            .map((event) => event.type),
          `${name}, first ${length}`,
        );
        if (last.type === "error") {
          assert.ok(result.error instanceof APIError, `${name}: an error event raises an APIError, got ${String(result.error)}`);
        } else {
          assert.equal(result.error, undefined, `${name}, first ${length}: ${String(result.error)}`);
        }
      }
    });
  }

  test("text: the deltas' snapshots grow, and the final response is the one response.completed carried", async () => {
    const out = encodeAll(STORIES.text as StreamEvent[]);
    const result = await viaStreamHelper(sse(out));
    assert.deepEqual(result.deltas, ["Hello", "Hello world"]);
    const final = result.final as { status: string; output: Array<{ content: Array<{ text: string }> }>; usage: unknown };
    assert.equal(final.status, "completed");
    assert.equal(final.output[0]?.content[0]?.text, "Hello world");
    assert.deepEqual(final.usage, TEXT_USAGE);
  });

  test("restart: the snapshot held the discarded text, the final response holds the new answer only", async () => {
    const result = await viaStreamHelper(sse(encodeAll(STORIES.restart as StreamEvent[])));
    assert.deepEqual(result.deltas, ["Partial", "Whole."]);
    assert.ok(result.types.includes(FAILOVER_EVENT));
    const final = result.final as { output: Array<{ content: Array<{ text: string }> }> };
    assert.deepEqual(
      final.output.map((item) => item.content[0]?.text),
      ["Whole."],
    );
  });

  test("continue: the snapshot of the one message runs across the switch", async () => {
    const result = await viaStreamHelper(sse(encodeAll(STORIES.continue as StreamEvent[])));
    assert.deepEqual(result.deltas, ["Once upon", "Once upon a time."]);
  });

  test("a failure: the helper emits response.failed, then raises an APIError with Runnel's code and message", async () => {
    const result = await viaStreamHelper(sse(encodeAll(STORIES.failed as StreamEvent[])));
    assert.equal(result.types.at(-1), "response.failed");
    assert.ok(result.error instanceof APIError);
    assert.equal(result.error.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
    assert.equal(result.error.type, "server_error");
    assert.match(result.error.message, /provider connection failed mid-stream: ECONNRESET/);
  });

  test("responses.create({ stream: true }) yields every event, the failover announcement included", async () => {
    const out = encodeAll(STORIES.restart as StreamEvent[]);
    const stream = await client(() => sse(out)).responses.create({ model: "chat", input: "hi", stream: true });
    const got: unknown[] = [];
    for await (const event of stream) got.push(event);
    assert.deepEqual(got, JSON.parse(JSON.stringify(out)));
  });

  test("retrieve(id, { stream: true, starting_after }) gets exactly the events after it", async () => {
    const list = STORIES.tools as StreamEvent[];
    const full = encodeAll(list);
    const seen: URL[] = [];
    const answer = (url: URL) => {
      const after = url.searchParams.get("starting_after");
      return sse(encodeAll(list, after === null ? {} : { startingAfter: Number(after) }));
    };
    for (const after of [0, 4, full.length - 2]) {
      const stream = await client(answer, seen).responses.retrieve(`resp_${STREAM}`, { stream: true, starting_after: after });
      const got: Array<{ sequence_number: number }> = [];
      for await (const event of stream) got.push(event);
      assert.deepEqual(got, JSON.parse(JSON.stringify(full.filter((event) => event.sequence_number > after))), `starting_after=${after}`);
    }
    assert.equal(seen[0]?.pathname, `/v1/responses/resp_${STREAM}`);
    assert.equal(seen[0]?.searchParams.get("starting_after"), "0");
  });

  test("responses.stream({ response_id, starting_after }) asks for the whole stream and emits the events after it", async () => {
    const list = STORIES.tools as StreamEvent[];
    const full = encodeAll(list);
    const seen: URL[] = [];
    const stream = client(() => sse(full), seen).responses.stream({ response_id: `resp_${STREAM}`, starting_after: 6 });
    const numbers: number[] = [];
    stream.on("event", (event) => numbers.push(event.sequence_number));
    const final = await stream.finalResponse();
    // SDK 6.9.1 does not pass starting_after on: it replays from the start and filters itself.
    assert.equal(seen[0]?.searchParams.get("starting_after"), null);
    assert.deepEqual(
      numbers,
      full.filter((event) => event.sequence_number > 6).map((event) => event.sequence_number),
    );
    assert.equal(final.output.length, 3);
  });

  test("a non-streamed response (the accumulator's) is read by responses.create, output_text included", async () => {
    const accumulator = new ResponseAccumulator(CONTEXT);
    for (const event of STORIES.reasoning as StreamEvent[]) accumulator.add(event);
    const response = await client(() => accumulator.result()).responses.create({ model: "chat", input: "hi" });
    assert.equal(response.id, `resp_${STREAM}`);
    assert.equal(response.status, "completed");
    assert.equal(response.output_text, "15.");
    assert.deepEqual(
      response.output.map((item) => item.type),
      ["reasoning", "message"],
    );
  });
});
