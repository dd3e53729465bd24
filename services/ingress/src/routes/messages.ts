/**
 * `POST /v1/messages`: the Anthropic Messages API, streaming (Anthropic's SSE
 * event sequence) and not, on the same streams as every other route. Every
 * error this route answers is in Anthropic's shape, Fastify's own included
 * (malformed JSON, 413): the route lives in a plugin scope with its own
 * error handler, so the OpenAI-shaped one stays for the other routes.
 */
import type { ServerResponse } from "node:http";
import { ERRORS, type ErrorCode, type Job, newStreamId, RunnelError, type StreamEvent, toRunnelError } from "@runnel/shared";
import type { FastifyError, FastifyInstance } from "fastify";
import { AnthropicStreamEncoder, anthropicError, anthropicErrorBody, errorFrame, MessageAccumulator, PING_FRAME } from "../anthropic-encoder.js";
import { parseMessagesRequest, toChatRequestFromMessages } from "../anthropic-request.js";
import type { StreamReader } from "../stream-reader.js";
import type { OpenStream } from "../stream-writer.js";
import type { RouteContext } from "./context.js";

const SSE_HEADERS: Readonly<Record<string, string>> = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  connection: "keep-alive",
  // Tells nginx and friends not to buffer the stream.
  "x-accel-buffering": "no",
};

export function registerMessages(app: FastifyInstance, context: RouteContext): void {
  app.register(async (scope) => {
    scope.setErrorHandler((error: FastifyError, request, reply) => {
      // Fastify's own 4xx errors (malformed JSON, body too large, wrong content type) are the client's.
      const clientStatus = error.statusCode;
      const runnel =
        error instanceof RunnelError
          ? error
          : clientStatus === 413
            ? new RunnelError("RUNNEL_ERR_BODY_TOO_LARGE", `Request body is larger than ${context.options.bodyLimitBytes} bytes`, { cause: error })
            : clientStatus !== undefined && clientStatus >= 400 && clientStatus < 500
              ? new RunnelError("RUNNEL_ERR_INVALID_REQUEST", error.message, { cause: error, httpStatus: clientStatus })
              : toRunnelError(error);
      if (runnel.httpStatus >= 500) request.log.error({ err: error, code: runnel.code }, "request failed");
      const { status, type } = anthropicError(runnel.httpStatus);
      void reply.code(status).header("x-runnel-error-code", runnel.code).send(anthropicErrorBody(type, runnel.message));
    });

    scope.post("/v1/messages", async (request, reply) => {
      context.refuseIfClosing();
      const keyName = context.auth.identify(request.headers);
      const body = parseMessagesRequest(request.body);
      const routing = context.routing();
      if (!routing.model(body.model)) {
        throw new RunnelError("RUNNEL_ERR_MODEL_NOT_FOUND", `model: ${body.model} does not exist (known: ${routing.modelNames.join(", ")})`, {
          param: "model",
        });
      }
      const streaming = body.stream === true;
      const streamId = newStreamId();
      const job: Job = {
        streamId,
        model: body.model,
        request: toChatRequestFromMessages(body),
        routes: routing.orderRoutes(body.model),
        createdAtMs: Date.now(),
        routingVersion: routing.version,
        traceContext: {},
        keyId: keyName,
      };
      const reader = await context.streams.open(job);
      const streamLog = request.log.child({ stream_id: streamId });
      streamLog.debug({ model: body.model, streaming, api: "anthropic" }, "stream submitted");
      reply.hijack();
      let untrack: () => void = () => {};
      let ended = false;
      const handle = writeMessages({
        reader,
        response: reply.raw,
        model: body.model,
        streaming,
        heartbeatIntervalMs: context.options.heartbeatInterval,
        maxBufferBytes: context.options.maxClientBufferBytes,
        stuckClientTimeoutMs: context.options.stuckClientTimeout,
        headers: {
          "x-runnel-stream-id": streamId,
          "x-runnel-resume-token": context.auth.resumeToken(streamId),
          // Anthropic's SDKs expose this header as the request id.
          "request-id": `req_${streamId}`,
        },
        onAbandon: (reason, detach) => {
          streamLog.info({ reason, detach }, "client left the stream");
          context.streams.abandoned(streamId, reason, detach);
        },
        onEnd: () => {
          ended = true;
          untrack();
        },
      });
      untrack = context.track(handle);
      if (ended) untrack();
      return reply;
    });
  });
}

interface WriteMessagesOptions {
  readonly reader: StreamReader;
  readonly response: ServerResponse;
  /** The public model, named until the worker reports the one serving. */
  readonly model: string;
  /** SSE events as they arrive, or one `message` at the end. */
  readonly streaming: boolean;
  readonly heartbeatIntervalMs: number;
  readonly maxBufferBytes: number;
  /** A client that reads nothing for this long while events wait is cut off. */
  readonly stuckClientTimeoutMs: number;
  readonly headers: Readonly<Record<string, string>>;
  /** The stream ended for this client before its worker ended it. `detach`: the client just left (it may resume). */
  readonly onAbandon: (reason: string, detach: boolean) => void;
  /** Runs once when the response is over, however it ended. */
  readonly onEnd: () => void;
}

/**
 * Writes one stream to one client in the Messages API's format. Like
 * stream-writer.ts for the OpenAI format: an error before the first byte is
 * the HTTP status with Anthropic's error JSON, after it an `event: error`
 * and the end (never a `message_stop`); a quiet stream gets `ping` events;
 * a full socket pauses the reader (it catches up from the log later) and a
 * client that reads nothing for `stuckClientTimeoutMs` is cut off.
 */
function writeMessages(options: WriteMessagesOptions): OpenStream {
  const { reader, response, streaming } = options;
  const encoder = new AnthropicStreamEncoder(reader.streamId, options.model);
  const accumulator = streaming ? undefined : new MessageAccumulator(reader.streamId, options.model);
  let headersSent = false;
  let ended = false;
  let wroteSinceTick = false;
  let stuckTimer: NodeJS.Timeout | undefined;

  const commitHeaders = () => {
    if (headersSent) return;
    headersSent = true;
    response.socket?.setNoDelay(true);
    response.writeHead(200, { ...SSE_HEADERS, ...options.headers });
  };

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

  const finish = () => {
    if (ended) return;
    ended = true;
    clearInterval(heartbeat);
    clearTimeout(stuckTimer);
    reader.close();
    response.end();
    options.onEnd();
  };

  /** Ends with an error: the HTTP status before the first byte, an `event: error` after it. */
  const endWithError = (code: string, message: string, httpStatus: number, seq = 0) => {
    if (!headersSent) {
      headersSent = true;
      const { status, type } = anthropicError(httpStatus);
      response.writeHead(status, { "content-type": "application/json", "x-runnel-error-code": code, ...options.headers });
      response.write(JSON.stringify(anthropicErrorBody(type, message)));
    } else {
      write(errorFrame(httpStatus, message, seq));
    }
    finish();
  };

  const abandon = (code: ErrorCode, message: string, reason: string) => {
    if (ended) return;
    endWithError(code, message, ERRORS[code].httpStatus);
    options.onAbandon(reason, false);
  };

  // Streams only: a ping when nothing was written for a whole interval (after message_start, as Anthropic's stream always begins).
  const heartbeat = streaming
    ? setInterval(() => {
        if (ended) return;
        if (wroteSinceTick) {
          wroteSinceTick = false;
          return;
        }
        commitHeaders();
        write(`${encoder.start()}${PING_FRAME}`);
        wroteSinceTick = false;
      }, options.heartbeatIntervalMs)
    : undefined;

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
      endWithError(body.value.code, body.value.message, body.value.httpStatus, event.seq);
      return;
    }
    if (accumulator) {
      accumulator.add(event);
      if (body?.$case === "done") {
        headersSent = true;
        response.writeHead(200, { "content-type": "application/json", ...options.headers });
        response.write(JSON.stringify(accumulator.result()));
        finish();
      }
      return;
    }
    commitHeaders();
    const text = encoder.encode(event);
    if (text) write(text);
    if (body?.$case === "done") finish();
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
