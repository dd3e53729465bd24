/**
 * How a stream is framed on an HTTP response: a `Wire`. An API's encoder
 * turns vocabulary events into the API's values (chunk objects, Anthropic
 * events, error objects) and serialises them to JSON (its one serialiser,
 * with a fast path for the per-token values); the framers here put that
 * JSON on a transport: SSE (`sseWire`), NDJSON (`ndjsonWire`), or one JSON
 * body at the end (`jsonWire`). Each API composes its wires from these
 * (`openAIWire`, `anthropicWire`). The writer (stream-writer.ts) owns
 * everything else: headers, heartbeats, flow control, errors before and
 * after the first byte, abandonment.
 */
import type { StreamEvent } from "@runnel/shared/contracts";
import type { ErrorLike, ErrorResponse, ErrorShape } from "./http-errors.js";

export interface Wire {
  /** Events are written as they arrive (true), or folded into one body written at the end. */
  readonly streaming: boolean;
  /** Headers of a successful response. */
  readonly headers: Readonly<Record<string, string>>;
  /** The text of one event, an error event included ("" writes nothing); a non-streaming wire folds it and returns "". */
  event(event: StreamEvent): string;
  /** After `done`: the trailer of a stream (`data: [DONE]`), or the whole body of a non-streaming answer. */
  end(): string;
  /** Written when nothing else was for a heartbeat interval (streams only). */
  heartbeat(): string;
  /**
   * The line that tells a client how long to wait before it reconnects (SSE
   * `retry: <ms>`, ending with one newline so it joins the next event), or ""
   * for formats without one. Written when the ingress shuts down mid-stream.
   */
  reconnectHint(delayMs: number): string;
  /** An error before the first byte, as the API answers it. */
  errorResponse(error: ErrorLike): ErrorResponse;
}

/** An API's stream as values: what one event becomes, and the API's serialiser of a value. */
export interface StreamEncoding<V> {
  /** The values of one event, in order (error events included; none for an event that writes nothing). */
  encode(event: StreamEvent): readonly V[];
  /** A value's JSON text. */
  json(value: V): string;
  /** How the API answers an error before the first byte. */
  readonly errors: ErrorShape;
}

/** What SSE needs beside the values. */
export interface SseEncoding<V> extends StreamEncoding<V> {
  /** A value's event name (its `event:` line); absent: no name (OpenAI's chunks). */
  name?(value: V): string;
  /** Whether the last value of an event carries the event's seq as its SSE id; absent: every event's. Seq 0 never has one. */
  positioned?(event: StreamEvent): boolean;
  /** The values a heartbeat writes; absent: an SSE comment. */
  heartbeat?(): readonly V[];
  /** Written after `done` (OpenAI's `data: [DONE]`). */
  readonly trailer?: string;
}

/** The values of an event that writes nothing. */
export const NO_VALUES: readonly never[] = Object.freeze([]);

const STREAM_HEADERS = {
  "cache-control": "no-cache, no-transform",
  connection: "keep-alive",
  // Tells nginx and friends not to buffer the stream.
  "x-accel-buffering": "no",
};
const SSE_HEADERS = { ...STREAM_HEADERS, "content-type": "text/event-stream; charset=utf-8" };
const NDJSON_HEADERS = { ...STREAM_HEADERS, "content-type": "application/x-ndjson; charset=utf-8" };
const JSON_HEADERS = { "content-type": "application/json" };

/** SSE comments are ignored by every client. */
const SSE_HEARTBEAT = ": keep-alive\n\n";

/** One SSE event: `event: <name>` when it has one, `id: <id>` when positive, the data line. The one place SSE events are written. */
export function sseEvent(data: string, id = 0, name?: string): string {
  if (name === undefined) return id > 0 ? `id: ${id}\ndata: ${data}\n\n` : `data: ${data}\n\n`;
  return id > 0 ? `event: ${name}\nid: ${id}\ndata: ${data}\n\n` : `event: ${name}\ndata: ${data}\n\n`;
}

/** SSE: each value one event, the event's seq as the id of its last value (the position a client resumes from). */
export function sseWire<V>(encoding: SseEncoding<V>): Wire {
  const { json, name, positioned } = encoding;
  const frame = name === undefined ? (value: V, id: number) => sseEvent(json(value), id) : (value: V, id: number) => sseEvent(json(value), id, name(value));
  const frameAll = (values: readonly V[], id: number) => {
    let text = "";
    const last = values.length - 1;
    for (let index = 0; index <= last; index += 1) text += frame(values[index] as V, index === last ? id : 0);
    return text;
  };
  return {
    streaming: true,
    headers: SSE_HEADERS,
    event: (event) => {
      const values = encoding.encode(event);
      const id = positioned === undefined || positioned(event) ? event.seq : 0;
      // One value per event is the per-token case.
      return values.length === 1 ? frame(values[0] as V, id) : frameAll(values, id);
    },
    end: () => encoding.trailer ?? "",
    heartbeat: () => (encoding.heartbeat ? frameAll(encoding.heartbeat(), 0) : SSE_HEARTBEAT),
    reconnectHint: (delayMs) => `retry: ${delayMs}\n`,
    errorResponse: encoding.errors,
  };
}

/** NDJSON: each value one line; a blank line is the heartbeat (NDJSON clients skip blank lines). */
export function ndjsonWire<V>(encoding: StreamEncoding<V>): Wire {
  return {
    streaming: true,
    headers: NDJSON_HEADERS,
    event: (event) => {
      const values = encoding.encode(event);
      if (values.length === 1) return `${encoding.json(values[0] as V)}\n`;
      let text = "";
      for (const value of values) text += `${encoding.json(value)}\n`;
      return text;
    },
    end: () => "",
    heartbeat: () => "\n",
    reconnectHint: () => "",
    errorResponse: encoding.errors,
  };
}

/** What folds a stream into one answer. */
export interface Accumulator {
  add(event: StreamEvent): void;
  result(): object;
}

/** One JSON body, once the stream is done: nothing is written before (no heartbeats, an error is always a status). */
export function jsonWire(accumulator: Accumulator, errors: ErrorShape): Wire {
  return {
    streaming: false,
    headers: JSON_HEADERS,
    event: (event) => {
      accumulator.add(event);
      return "";
    },
    end: () => JSON.stringify(accumulator.result()),
    heartbeat: () => "",
    reconnectHint: () => "",
    errorResponse: errors,
  };
}
