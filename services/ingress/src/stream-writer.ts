/**
 * Writes one stream to one HTTP client: as SSE or chunked NDJSON as events
 * arrive, or as one `chat.completion` at the end. An error before the first
 * byte becomes an HTTP status with the OpenAI error JSON; after it, an
 * explicit error event, and never a `[DONE]`. Quiet streams get heartbeats.
 * The response buffer is bounded: when a client falls behind, its reader
 * pauses and later catches up from the replay log, so nothing is dropped and
 * memory stays flat; a client that reads nothing at all for
 * `stuckClientTimeoutMs` is cut off with RUNNEL_ERR_SLOW_CLIENT. Whenever
 * the stream ends for a client before the worker ended it, `onAbandon` runs
 * (a disconnect may still resume; other reasons cancel at once).
 */
import type { ServerResponse } from "node:http";
import { ERRORS, type ErrorCode, openAIErrorBody, type StreamEvent } from "@runnel/shared";
import { type ChunkContext, CompletionAccumulator, encodeChunk } from "./openai-encoder.js";
import type { StreamReader } from "./stream-reader.js";

export type WireFormat = "sse" | "ndjson" | "json";

export interface WriteStreamOptions {
  readonly reader: StreamReader;
  readonly response: ServerResponse;
  readonly context: ChunkContext;
  readonly format: WireFormat;
  readonly heartbeatIntervalMs: number;
  readonly maxBufferBytes: number;
  /** A client that reads nothing for this long while events wait is cut off. */
  readonly stuckClientTimeoutMs: number;
  /** Extra response headers (the resume token). */
  readonly headers?: Readonly<Record<string, string>>;
  /** The stream ended for this client before its worker ended it. `detach`: the client just left (it may resume). */
  readonly onAbandon: (reason: string, detach: boolean) => void;
  /** Runs once when the response is over, however it ended. */
  readonly onEnd: () => void;
}

export interface OpenStream {
  /** Ends the stream now with an explicit RUNNEL_ERR_SHUTTING_DOWN error, and cancels it. */
  shutdown(): void;
}

const STREAM_HEADERS: Record<"sse" | "ndjson", Record<string, string>> = {
  sse: {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    // Tells nginx and friends not to buffer the stream.
    "x-accel-buffering": "no",
  },
  ndjson: {
    "content-type": "application/x-ndjson; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  },
};

export function writeStream(options: WriteStreamOptions): OpenStream {
  const { reader, response, context, format } = options;
  const streamHeaders = { "x-runnel-stream-id": reader.streamId, ...options.headers };
  const accumulator = format === "json" ? new CompletionAccumulator(context) : undefined;
  let headersSent = false;
  let ended = false;
  let wroteSinceTick = false;

  const commitHeaders = () => {
    if (headersSent || format === "json") return;
    headersSent = true;
    response.socket?.setNoDelay(true);
    response.writeHead(200, { ...STREAM_HEADERS[format], ...streamHeaders });
  };

  let stuckTimer: NodeJS.Timeout | undefined;
  const write = (text: string) => {
    wroteSinceTick = true;
    if (!response.write(text) && response.writableLength > options.maxBufferBytes && !reader.paused) {
      // The client is behind: stop taking events (they wait in the log) until its socket drains.
      reader.pause();
      stuckTimer = setTimeout(() => {
        abandon("RUNNEL_ERR_SLOW_CLIENT", `the client read nothing for ${options.stuckClientTimeoutMs} ms`, "client stopped reading");
        response.destroy();
      }, options.stuckClientTimeoutMs);
      stuckTimer.unref();
      response.once("drain", () => {
        clearTimeout(stuckTimer);
        reader.resume();
      });
    }
  };

  /** SSE events from the worker carry their seq as the id; events the ingress makes up (seq 0) carry none. */
  const frame = (seq: number, payload: string) => {
    if (format === "ndjson") return `${payload}\n`;
    return seq > 0 ? `id: ${seq}\ndata: ${payload}\n\n` : `data: ${payload}\n\n`;
  };

  const finish = () => {
    if (ended) return;
    ended = true;
    clearInterval(heartbeat);
    clearTimeout(stuckTimer);
    reader.close();
    response.end();
    options.onEnd();
  };

  /** Ends with an error: the HTTP status before the first byte, an error event after it. */
  const endWithError = (code: string, message: string, httpStatus: number) => {
    const body = JSON.stringify(openAIErrorBody(code, message));
    if (!headersSent) {
      headersSent = true;
      response.writeHead(httpStatus || 502, { "content-type": "application/json", ...streamHeaders });
      response.write(body);
    } else {
      write(frame(0, body));
    }
    finish();
  };

  const abandon = (code: ErrorCode, message: string, reason: string) => {
    if (ended) return;
    endWithError(code, message, ERRORS[code].httpStatus);
    options.onAbandon(reason, false);
  };

  // Streams only: a comment (SSE) or a blank line (NDJSON) when nothing was written for a whole interval.
  const heartbeat = setInterval(() => {
    if (ended || format === "json") return;
    if (wroteSinceTick) {
      wroteSinceTick = false;
      return;
    }
    commitHeaders();
    write(format === "sse" ? ": keep-alive\n\n" : "\n");
    wroteSinceTick = false;
  }, options.heartbeatIntervalMs);

  response.on("close", () => {
    if (ended) return;
    ended = true;
    clearInterval(heartbeat);
    clearTimeout(stuckTimer);
    reader.close();
    options.onEnd();
    options.onAbandon("client disconnected", true);
  });

  reader.attach((event: StreamEvent) => {
    if (ended) return;
    const body = event.event;
    if (body?.$case === "error") {
      endWithError(body.value.code, body.value.message, body.value.httpStatus);
      return;
    }
    if (accumulator) {
      accumulator.add(event);
      if (body?.$case === "done") {
        response.writeHead(200, { "content-type": "application/json", ...streamHeaders });
        headersSent = true;
        response.write(JSON.stringify(accumulator.result()));
        finish();
      }
      return;
    }
    commitHeaders();
    const payload = encodeChunk(context, event);
    if (payload !== undefined) write(frame(event.seq, payload));
    if (body?.$case === "done") {
      if (format === "sse") write("data: [DONE]\n\n");
      finish();
      return;
    }
  });

  return {
    shutdown() {
      if (ended) return;
      // Not a cancel: the generation goes on for the detach grace so the client can resume on another replica.
      endWithError("RUNNEL_ERR_SHUTTING_DOWN", `the ingress is shutting down; resume from seq ${reader.position} on another replica`, 503);
      options.onAbandon("ingress shutting down", true);
    },
  };
}
