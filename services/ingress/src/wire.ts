/**
 * How one API frames a stream on an HTTP response: one `Wire` per format
 * (OpenAI SSE, NDJSON and JSON; Anthropic SSE and JSON). The writer
 * (stream-writer.ts) owns everything else: headers, heartbeats, flow
 * control, errors before and after the first byte, abandonment.
 */
import type { StreamEvent } from "@runnel/shared";
import { AnthropicStreamEncoder, anthropicErrors, MessageAccumulator, PING_FRAME } from "./anthropic-encoder.js";
import { type ErrorLike, type ErrorResponse, openAIErrors } from "./http-errors.js";
import { type ChunkContext, CompletionAccumulator, encodeChunk, endUsageChunk } from "./openai-encoder.js";

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

const STREAM_HEADERS = {
  "cache-control": "no-cache, no-transform",
  connection: "keep-alive",
  // Tells nginx and friends not to buffer the stream.
  "x-accel-buffering": "no",
};
const JSON_HEADERS = { "content-type": "application/json" };

/** OpenAI chat completions: SSE (`id: <seq>` + chunk, `[DONE]`), NDJSON (a chunk per line) or one `chat.completion`. */
export function openAIWire(format: "sse" | "ndjson" | "json", context: ChunkContext): Wire {
  const errorResponse = openAIErrors;
  if (format === "json") {
    const accumulator = new CompletionAccumulator(context);
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
      errorResponse,
    };
  }
  const sse = format === "sse";
  // Events from the worker carry their seq as the SSE id; events the ingress makes up (seq 0) carry none.
  const frame = (seq: number, payload: string) => (!sse ? `${payload}\n` : seq > 0 ? `id: ${seq}\ndata: ${payload}\n\n` : `data: ${payload}\n\n`);
  return {
    streaming: true,
    headers: { ...STREAM_HEADERS, "content-type": sse ? "text/event-stream; charset=utf-8" : "application/x-ndjson; charset=utf-8" },
    event: (event) => {
      const payload = encodeChunk(context, event);
      if (payload === undefined) return "";
      if (event.event?.$case !== "done") return frame(event.seq, payload);
      // The finish chunk, then (when the client asked) the usage chunk: OpenAI's order. The done's id goes
      // on the last of the two, so a client cut between them resumes from before the done and gets both.
      const usage = endUsageChunk(context, event);
      return usage === undefined ? frame(event.seq, payload) : `${frame(0, payload)}${frame(event.seq, usage)}`;
    },
    end: () => (sse ? "data: [DONE]\n\n" : ""),
    // SSE comments are ignored by every client; NDJSON clients skip blank lines.
    heartbeat: () => (sse ? ": keep-alive\n\n" : "\n"),
    reconnectHint: (delayMs) => (sse ? `retry: ${delayMs}\n` : ""),
    errorResponse,
  };
}

/** The Anthropic Messages API: its SSE event sequence with `ping` heartbeats, or one `message`. */
export function anthropicWire(streaming: boolean, streamId: string, model: string): Wire {
  const errorResponse = anthropicErrors;
  if (!streaming) {
    const accumulator = new MessageAccumulator(streamId, model);
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
      errorResponse,
    };
  }
  const encoder = new AnthropicStreamEncoder(streamId, model);
  return {
    streaming: true,
    headers: { ...STREAM_HEADERS, "content-type": "text/event-stream; charset=utf-8" },
    event: (event) => encoder.encode(event),
    end: () => "",
    // A ping comes after message_start, as Anthropic's stream always begins with it.
    heartbeat: () => `${encoder.start()}${PING_FRAME}`,
    reconnectHint: (delayMs) => `retry: ${delayMs}\n`,
    errorResponse,
  };
}
