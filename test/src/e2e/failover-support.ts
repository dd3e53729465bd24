/**
 * What the failover tests read from Runnel's wire: a streamed chat
 * completion split at its failover announcements, with every check the
 * announcement's contract asks for, and the mock's journal per route.
 */
import assert from "node:assert/strict";
import type { Stack } from "@runnel/launcher";
import { type MockRequest, mockRequests, parseSse, type SseEvent } from "./helpers.js";

/** A route as an announcement names it. */
export interface RouteRef {
  readonly provider: string;
  readonly model: string;
}

export type FailoverMode = "next_route" | "restart" | "continue" | "hedge";

/** `runnel.failover` of an OpenAI chunk; the data of Anthropic's `runnel_failover` event, without its `type`. */
export interface Announcement {
  mode: FailoverMode;
  from: RouteRef;
  to: RouteRef;
  reason_code: string;
  reason: string;
  takeover: boolean;
}

export interface OpenAIErrorBody {
  message: string;
  type: string;
  param: string | null;
  code: string;
}

/** A parsed `chat.completion.chunk` (or the error object that ends a failed stream). */
export interface Chunk {
  id: string;
  object: string;
  created: number;
  model: string;
  choices: { index: number; delta: { role?: string; content?: string }; finish_reason: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  runnel?: { failover?: Announcement };
  error?: OpenAIErrorBody;
}

/** One stream as the client saw it. */
export interface StreamView {
  status: number;
  /** The OpenAI error of a non-200 answer. */
  httpError: OpenAIErrorBody | undefined;
  events: SseEvent[];
  /** Every chunk but the error, in order. */
  chunks: Chunk[];
  /** The failover chunks, in order. */
  failovers: Chunk[];
  /** The content before the first announcement, then after each one. */
  segments: string[];
  /** The `model` of the content chunks of each segment (deduplicated). */
  segmentModels: string[][];
  /** All the content, in order. */
  text: string;
  /** The error event that ended the stream, if one did. */
  error: OpenAIErrorBody | undefined;
  /** Ended with `data: [DONE]`. */
  done: boolean;
  usage: NonNullable<Chunk["usage"]>[];
  finishReasons: string[];
  elapsedMs: number;
  streamId: string | null;
}

/** Splits an SSE body of `/v1/chat/completions` into the view. */
export function readStream(status: number, body: string, elapsedMs: number, streamId: string | null): StreamView {
  const view: StreamView = {
    status,
    httpError: undefined,
    events: [],
    chunks: [],
    failovers: [],
    segments: [""],
    segmentModels: [[]],
    text: "",
    error: undefined,
    done: false,
    usage: [],
    finishReasons: [],
    elapsedMs,
    streamId,
  };
  if (status !== 200) {
    view.httpError = (JSON.parse(body) as { error: OpenAIErrorBody }).error;
    return view;
  }
  view.events = parseSse(body).events;
  for (const event of view.events) {
    if (event.data === "[DONE]") {
      view.done = true;
      continue;
    }
    const chunk = JSON.parse(event.data) as Chunk;
    if (chunk.error) {
      view.error = chunk.error;
      continue;
    }
    view.chunks.push(chunk);
    if (chunk.runnel?.failover) {
      view.failovers.push(chunk);
      view.segments.push("");
      view.segmentModels.push([]);
      continue;
    }
    if (chunk.usage) view.usage.push(chunk.usage);
    const choice = chunk.choices[0];
    const content = choice?.delta.content ?? "";
    if (content !== "") {
      const last = view.segments.length - 1;
      view.segments[last] += content;
      const models = view.segmentModels[last];
      if (models && !models.includes(chunk.model)) models.push(chunk.model);
      view.text += content;
    }
    if (choice?.finish_reason) view.finishReasons.push(choice.finish_reason);
  }
  return view;
}

/** Streams one chat completion (usage asked for) and reads it whole. */
export async function askStream(ingressUrl: string, model: string, extra: Record<string, unknown> = {}): Promise<StreamView> {
  const startedAt = Date.now();
  const response = await fetch(`${ingressUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model,
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: "Tell me about rivers." }],
      ...extra,
    }),
  });
  const body = await response.text();
  return readStream(response.status, body, Date.now() - startedAt, response.headers.get("x-runnel-stream-id"));
}

/**
 * The stream is one coherent stream: SSE ids 1, 2, 3, … with no gap or
 * repeat. An event without an id is either the last one (an error the
 * ingress raised itself, `[DONE]`) or the leading frame of a stream event
 * written as two (the finish chunk, whose done's id is on the usage chunk
 * right after it). Every chunk has the same id and created.
 */
export function assertCoherent(view: StreamView): void {
  let expected = 1;
  view.events.forEach((event, index) => {
    if (event.id === undefined) {
      const next = view.events[index + 1];
      const leading = next?.id !== undefined && /"choices":\[\]/.test(next.data) && /"usage"/.test(next.data);
      assert.ok(
        index === view.events.length - 1 || leading,
        `only the last event may have no id, or a finish chunk right before its usage chunk: ${JSON.stringify(event)}`,
      );
      return;
    }
    assert.equal(event.id, String(expected), `SSE ids must go 1, 2, 3, … without a gap or a repeat: got ${event.id} where ${expected} was due`);
    expected += 1;
  });
  const ids = new Set(view.chunks.map((chunk) => chunk.id));
  assert.equal(ids.size, 1, `one chunk id for the whole stream, got ${[...ids].join(", ")}`);
  assert.match([...ids][0] ?? "", /^chatcmpl-/);
  assert.equal(new Set(view.chunks.map((chunk) => chunk.created)).size, 1, "one created for the whole stream");
}

/** Checks a failover chunk against the contract: its own chunk, no choices, the model it switches to, and the announcement. */
export function assertAnnouncement(chunk: Chunk | undefined, expected: Omit<Announcement, "reason" | "reason_code"> & { reason_code?: string | RegExp }): void {
  assert.ok(chunk, "a failover chunk");
  assert.equal(chunk.object, "chat.completion.chunk");
  assert.deepEqual(chunk.choices, [], "a failover chunk has no choices");
  assert.equal(typeof chunk.created, "number");
  const failover = chunk.runnel?.failover;
  assert.ok(failover, "runnel.failover");
  assert.deepEqual(
    Object.keys(failover).sort(),
    ["from", "mode", "reason", "reason_code", "takeover", "to"],
    `runnel.failover has exactly the documented fields: ${JSON.stringify(failover)}`,
  );
  assert.equal(failover.mode, expected.mode);
  assert.deepEqual(failover.from, expected.from);
  assert.deepEqual(failover.to, expected.to);
  assert.equal(failover.takeover, expected.takeover);
  assert.equal(typeof failover.reason, "string");
  assert.ok(failover.reason.length > 0, "a reason for people");
  if (expected.reason_code instanceof RegExp) assert.match(failover.reason_code, expected.reason_code);
  else if (expected.reason_code !== undefined) assert.equal(failover.reason_code, expected.reason_code);
  else assert.match(failover.reason_code, /^RUNNEL_ERR_[A-Z_]+$/);
  assert.equal(chunk.model, expected.to.model, "the failover chunk names the upstream model it switches to");
}

/** The `key` of an upstream model string (`mock?…&key=<key>`). */
export function keyOf(model: string | null): string | null {
  if (!model?.includes("?")) return null;
  return new URLSearchParams(model.slice(model.indexOf("?") + 1)).get("key");
}

/** The requests the mock saw for the route whose upstream model carries `key=<key>`, oldest first. */
export async function requestsFor(stack: Stack, key: string): Promise<MockRequest[]> {
  return (await mockRequests(stack)).filter((request) => keyOf(request.model) === key);
}

/** Sleeps. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One SSE event with its `event:` name (Anthropic's wire). */
export interface NamedEvent {
  event: string | undefined;
  id: string | undefined;
  data: string;
}

/** Splits an SSE body into events with their names, ids and data (comments dropped). */
export function parseNamedSse(text: string): NamedEvent[] {
  const events: NamedEvent[] = [];
  for (const block of text.split("\n\n")) {
    let event: string | undefined;
    let id: string | undefined;
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("id: ")) id = line.slice(4);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    if (data.length > 0) events.push({ event, id, data: data.join("\n") });
  }
  return events;
}
