/**
 * Writes one stream to one HTTP client: as SSE or chunked NDJSON as events
 * arrive, or as one `chat.completion` at the end. An error before the first
 * byte becomes an HTTP status with the OpenAI error JSON; after it, an
 * explicit error event, and never a `[DONE]`. Quiet streams get heartbeats.
 * The response buffer is bounded: a client that falls too far behind is
 * ended with RUNNEL_ERR_SLOW_CLIENT. Whenever the stream ends before the
 * worker ended it (client gone, too slow, ingress shutting down), `onAbandon`
 * runs so the stream is cancelled and the provider stops.
 */
import type { ServerResponse } from "node:http";
import { ERRORS, type ErrorCode, openAIErrorBody, type StreamEvent } from "@runnel/shared";
import { type ChunkContext, CompletionAccumulator, encodeChunk } from "./openai-encoder.js";
import type { StreamSession } from "./stream-session.js";

export type WireFormat = "sse" | "ndjson" | "json";

export interface WriteStreamOptions {
  readonly session: StreamSession;
  readonly response: ServerResponse;
  readonly context: ChunkContext;
  readonly format: WireFormat;
  readonly heartbeatIntervalMs: number;
  readonly maxBufferBytes: number;
  /** The stream ended before its worker ended it; cancel it. */
  readonly onAbandon: (reason: string) => void;
  /** Runs once when the response is over, however it ended. */
  readonly onEnd: () => void;
}

export interface OpenStream {
  /** Ends the stream now with an explicit RUNNEL_ERR_SHUTTING_DOWN error, and cancels it. */
  shutdown(): void;
}

/** How long a slow client, already ended, may go on reading before its socket is destroyed. */
const SLOW_CLIENT_LINGER_MS = 5_000;

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
  const { session, response, context, format } = options;
  const accumulator = format === "json" ? new CompletionAccumulator(context) : undefined;
  let headersSent = false;
  let ended = false;
  let wroteSinceTick = false;

  const commitHeaders = () => {
    if (headersSent || format === "json") return;
    headersSent = true;
    response.socket?.setNoDelay(true);
    response.writeHead(200, { ...STREAM_HEADERS[format], "x-runnel-stream-id": session.streamId });
  };

  const write = (text: string) => {
    wroteSinceTick = true;
    response.write(text);
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
    session.close();
    response.end();
    options.onEnd();
  };

  /** Ends with an error: the HTTP status before the first byte, an error event after it. */
  const endWithError = (code: string, message: string, httpStatus: number) => {
    const body = JSON.stringify(openAIErrorBody(code, message));
    if (!headersSent) {
      headersSent = true;
      response.writeHead(httpStatus || 502, { "content-type": "application/json", "x-runnel-stream-id": session.streamId });
      response.write(body);
    } else {
      write(frame(0, body));
    }
    finish();
  };

  const abandon = (code: ErrorCode, message: string, reason: string) => {
    if (ended) return;
    endWithError(code, message, ERRORS[code].httpStatus);
    options.onAbandon(reason);
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
    session.close();
    options.onEnd();
    options.onAbandon("client disconnected");
  });

  session.attach((event: StreamEvent) => {
    if (ended) return;
    const body = event.event;
    if (body?.$case === "error") {
      endWithError(body.value.code, body.value.message, body.value.httpStatus);
      return;
    }
    if (accumulator) {
      accumulator.add(event);
      if (body?.$case === "done") {
        response.writeHead(200, { "content-type": "application/json", "x-runnel-stream-id": session.streamId });
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
    if (response.writableLength > options.maxBufferBytes) {
      abandon("RUNNEL_ERR_SLOW_CLIENT", `the client read too slowly: more than ${options.maxBufferBytes} bytes waiting`, "slow client");
      // The error event waits behind everything the client has not read. Give
      // it a while to read on; a client that never does is cut off, so its
      // buffered bytes are released.
      setTimeout(() => {
        if (!response.writableFinished) response.destroy();
      }, SLOW_CLIENT_LINGER_MS).unref();
    }
  });

  return {
    shutdown() {
      abandon("RUNNEL_ERR_SHUTTING_DOWN", "the ingress is shutting down; retry the request", "ingress shutting down");
    },
  };
}
