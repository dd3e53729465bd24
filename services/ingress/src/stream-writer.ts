/**
 * Writes one stream to one HTTP client as SSE or chunked NDJSON. Each event
 * is written the moment it arrives; quiet periods get heartbeats; an error
 * before the first byte becomes an HTTP status with the OpenAI error JSON,
 * after it an explicit error event. The response buffer is bounded: a
 * client that falls too far behind is ended with RUNNEL_ERR_SLOW_CLIENT.
 */
import type { ServerResponse } from "node:http";
import { openAIErrorBody, type StreamEvent } from "@runnel/shared";
import { type ChunkContext, encodeChunk } from "./openai-encoder.js";
import type { StreamSession } from "./stream-session.js";

export type WireFormat = "sse" | "ndjson";

/** How long a slow client, already ended, may go on reading before its socket is destroyed. */
const SLOW_CLIENT_LINGER_MS = 5_000;

export interface StreamToClientOptions {
  readonly session: StreamSession;
  readonly response: ServerResponse;
  readonly context: ChunkContext;
  readonly format: WireFormat;
  readonly heartbeatIntervalMs: number;
  readonly maxBufferBytes: number;
  /** The client went away (or could not keep up) before the stream ended. */
  readonly onClientGone: (reason: string) => void;
  readonly onEnd: () => void;
}

export interface OpenStream {
  /** Ends the stream now with an explicit RUNNEL_ERR_SHUTTING_DOWN error. */
  shutdown(): void;
}

const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  connection: "keep-alive",
  // Tells nginx and friends not to buffer the stream.
  "x-accel-buffering": "no",
};

const NDJSON_HEADERS = {
  "content-type": "application/x-ndjson; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  connection: "keep-alive",
  "x-accel-buffering": "no",
};

export function streamToClient(options: StreamToClientOptions): OpenStream {
  const { session, response, context, format } = options;
  let headersSent = false;
  let ended = false;
  let lastWrite = performance.now();

  const commitHeaders = () => {
    if (headersSent) return;
    headersSent = true;
    response.socket?.setNoDelay(true);
    response.writeHead(200, { ...(format === "sse" ? SSE_HEADERS : NDJSON_HEADERS), "x-runnel-stream-id": session.streamId });
  };

  const write = (text: string) => {
    lastWrite = performance.now();
    response.write(text);
  };

  const finish = () => {
    if (ended) return;
    ended = true;
    clearInterval(heartbeat);
    session.close();
    response.end();
    options.onEnd();
  };

  const frame = (event: StreamEvent, payload: string) => (format === "sse" ? `id: ${event.seq}\ndata: ${payload}\n\n` : `${payload}\n`);

  const heartbeat = setInterval(() => {
    if (ended || performance.now() - lastWrite < options.heartbeatIntervalMs) return;
    commitHeaders();
    // SSE comments are ignored by every client; NDJSON clients skip blank lines.
    write(format === "sse" ? ": keep-alive\n\n" : "\n");
  }, options.heartbeatIntervalMs);

  response.on("close", () => {
    if (ended) return;
    ended = true;
    clearInterval(heartbeat);
    session.close();
    options.onEnd();
    options.onClientGone("client disconnected");
  });

  session.attach((event) => {
    if (ended) return;
    const body = event.event;
    if (body?.$case === "error" && !headersSent) {
      // Nothing written yet: answer with the HTTP status and the OpenAI error JSON.
      headersSent = true;
      const status = body.value.httpStatus || 502;
      response.writeHead(status, { "content-type": "application/json", "x-runnel-stream-id": session.streamId });
      response.write(JSON.stringify(openAIErrorBody(body.value.code, body.value.message)));
      finish();
      return;
    }
    commitHeaders();
    const payload = encodeChunk(context, event);
    if (payload !== undefined) write(frame(event, payload));
    if (body?.$case === "done") {
      if (format === "sse") write("data: [DONE]\n\n");
      finish();
      return;
    }
    if (body?.$case === "error") {
      finish();
      return;
    }
    if (response.writableLength > options.maxBufferBytes) {
      const error = { ...event, seq: event.seq + 1, event: undefined };
      write(
        frame(
          error,
          JSON.stringify(openAIErrorBody("RUNNEL_ERR_SLOW_CLIENT", `the client read too slowly: more than ${options.maxBufferBytes} bytes waiting`)),
        ),
      );
      finish();
      // The error event waits behind everything the client has not read. Give
      // it a while to read on; a client that never does is cut off, so its
      // buffered bytes are released.
      setTimeout(() => {
        if (!response.writableFinished) response.destroy();
      }, SLOW_CLIENT_LINGER_MS).unref();
      options.onClientGone("slow client");
    }
  });

  return {
    shutdown() {
      if (ended) return;
      const seq = session.lastSeq + 1;
      if (headersSent) {
        write(
          frame(
            { streamId: session.streamId, seq, event: undefined },
            JSON.stringify(openAIErrorBody("RUNNEL_ERR_SHUTTING_DOWN", "the ingress is shutting down; resume the stream elsewhere")),
          ),
        );
      } else {
        headersSent = true;
        response.writeHead(503, { "content-type": "application/json", "x-runnel-stream-id": session.streamId });
        response.write(JSON.stringify(openAIErrorBody("RUNNEL_ERR_SHUTTING_DOWN", "the ingress is shutting down; retry")));
      }
      finish();
    },
  };
}
