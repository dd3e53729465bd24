/**
 * `GET /v1/ws`: the WebSocket transport. One socket carries many concurrent
 * streams, told apart by a client-chosen `id`; every frame is one JSON text
 * frame. The wire contract is documented in docs/api.md ("WebSocket"):
 *
 *   client → server
 *     {"type":"request","id","body"}                      body: an OpenAI chat completions request (always streamed)
 *     {"type":"cancel","id"}                              cancels the request `id` at once (idempotent)
 *     {"type":"resume","id","streamId","after","token"?}  reads an existing stream from after `after`, then live
 *   server → client
 *     {"type":"started","id","streamId","resumeToken"}    first frame of every request and resume
 *     {"type":"chunk","id","streamId","seq","chunk"}      chunk: an OpenAI `chat.completion.chunk`
 *     {"type":"done","id","streamId","seq","finish_reason","usage"}   terminal
 *     {"type":"error","id","streamId"?,"error":{message,type,param,code}}  terminal for `id`;
 *                                                          `id` null for a frame that could not be read
 *
 * A request's body may be as large as an HTTP body (`ingress.bodyLimitBytes`);
 * a larger one gets an error frame RUNNEL_ERR_BODY_TOO_LARGE. A frame beyond
 * the limit plus WS_ENVELOPE_BYTES is not read at all: close 1009.
 *
 * The socket itself: no compression (`permessage-deflate` is never
 * negotiated), protocol pings every `ingress.heartbeatInterval` (no pong or
 * frame for two intervals: close 1001), flow control on `bufferedAmount`
 * (every reader of a congested socket pauses and later catches up from the
 * replay log; a socket that takes nothing for `ingress.stuckClientTimeout`
 * is closed with 1008), and close 1012 when the ingress shuts down so the
 * client resumes its streams on another replica. A socket that goes away
 * leaves its streams running for the detach grace, so they can be resumed.
 */
import { type IncomingMessage, STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { isValidStreamId, newStreamId, openAIErrorBody, openAIFinishReason, RunnelError, type StoredRecord, toRunnelError, type Usage } from "@runnel/shared";
import type { FastifyInstance } from "fastify";
import { type RawData, type WebSocket, WebSocketServer } from "ws";
import { z } from "zod";
import { buildJob, sessionFrom } from "../job.js";
import { type ChunkContext, ChunkJson, encodeChunk, followRoute, openAIUsage, resumedChunkContext } from "../openai-encoder.js";
import { parseChatCompletionRequest, toChatRequest } from "../openai-request.js";
import type { StreamReader } from "../stream-reader.js";
import type { RouteContext } from "./context.js";

export const WS_PATH = "/v1/ws";
/** The subprotocol the server selects; a client that offers any subprotocol must offer this one. */
export const WS_PROTOCOL = "runnel.v1";
/** Browsers cannot set headers on a WebSocket: they send the API key as the subprotocol `runnel.bearer.<key>`. */
export const WS_BEARER_PREFIX = "runnel.bearer.";
/**
 * Room a frame has beyond `ingress.bodyLimitBytes` for the envelope around a
 * request's body (`type`, an `id` of up to 256 characters): a body over the
 * limit inside it is refused with an error frame, as HTTP answers a 413. Only
 * a frame larger than the limit plus this closes the socket (1009).
 */
export const WS_ENVELOPE_BYTES = 64 * 1024;
/** Streams (requests and resumes) one socket may run at once; one more is answered with an error frame. */
export const MAX_STREAMS_PER_SOCKET = 64;

/** Close codes the server uses, each with one meaning. */
export const WS_CLOSE = {
  /** Two heartbeat intervals without a pong (or any frame): the peer is gone. */
  NO_PONG: 1001,
  /** The client sent a binary frame: it does not speak this protocol. */
  UNSUPPORTED_DATA: 1003,
  /** A frame larger than `ingress.bodyLimitBytes` + WS_ENVELOPE_BYTES (sent by the `ws` library, which stops reading it). */
  MESSAGE_TOO_BIG: 1009,
  /** The client read nothing for `ingress.stuckClientTimeout` while frames waited; its streams are cancelled. */
  STUCK_CLIENT: 1008,
  /** The ingress is shutting down: resume the streams (from the last seq received) on another replica. */
  SERVICE_RESTART: 1012,
} as const;

/** How often a congested socket's buffer is looked at. */
const BACKPRESSURE_POLL_MS = 20;
/** After the server closes a socket, how long the peer has to answer the close before the socket is destroyed. */
const CLOSE_HANDSHAKE_MS = 2_000;
/** Ended request ids a socket remembers, so that cancelling one of them is a no-op rather than an error. */
const REMEMBERED_IDS = 1_024;

const requestId = z.union([z.string().min(1).max(256), z.number().int()]);
const ClientFrame = z.discriminatedUnion("type", [
  z.object({ type: z.literal("request"), id: requestId, body: z.unknown() }),
  z.object({ type: z.literal("cancel"), id: requestId }),
  z.object({
    type: z.literal("resume"),
    id: requestId,
    streamId: z.string(),
    after: z.number().int().nonnegative().default(0),
    token: z.string().optional(),
  }),
]);

/** One request or resume running on a socket. */
interface Running {
  /** The client's id as JSON (how it is framed, and the key of the socket's map: 1 and "1" differ). */
  readonly key: string;
  streamId: string | undefined;
  reader: StreamReader | undefined;
  cancelled: boolean;
  /** Usage from a `usage` event (older workers), for the done frame. */
  usage: Usage | undefined;
  untrack: () => void;
}

export function registerWebSocket(app: FastifyInstance, context: RouteContext): void {
  const server = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: context.options.bodyLimitBytes + WS_ENVELOPE_BYTES,
    clientTracking: false,
    handleProtocols: (protocols) => (protocols.has(WS_PROTOCOL) ? WS_PROTOCOL : false),
  });
  const sessions = new Set<Session>();

  const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    let keyName: string;
    try {
      const url = new URL(request.url ?? "/", "http://ingress");
      if (url.pathname !== WS_PATH) throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `no route GET ${url.pathname}`, { httpStatus: 404 });
      context.refuseIfClosing();
      const offered = offeredProtocols(request.headers["sec-websocket-protocol"]);
      if (offered.length > 0 && !offered.includes(WS_PROTOCOL)) {
        throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `offer the ${WS_PROTOCOL} subprotocol (with ${WS_BEARER_PREFIX}<key> to authenticate)`, {
          param: "Sec-WebSocket-Protocol",
        });
      }
      const bearer = offered.find((protocol) => protocol.startsWith(WS_BEARER_PREFIX));
      keyName = context.auth.identify(
        bearer === undefined ? request.headers : { ...request.headers, authorization: `Bearer ${bearer.slice(WS_BEARER_PREFIX.length)}` },
      );
    } catch (error) {
      refuseUpgrade(socket, toRunnelError(error));
      return;
    }
    server.handleUpgrade(request, socket, head, (ws) => {
      const session = new Session(ws, keyName, sessionFrom(request.headers), context, () => sessions.delete(session));
      sessions.add(session);
    });
  };

  app.addHook("onReady", async () => {
    app.server.on("upgrade", onUpgrade);
  });
  // Before the HTTP server closes: it would wait for upgraded sockets forever.
  app.addHook("preClose", async () => {
    app.server.off("upgrade", onUpgrade);
    for (const session of sessions) session.shutdown();
    const deadline = Date.now() + CLOSE_HANDSHAKE_MS + 500;
    while (sessions.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    for (const session of sessions) session.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
}

/** The subprotocols a client offered (`Sec-WebSocket-Protocol: a, b`). */
function offeredProtocols(header: string | string[] | undefined): string[] {
  const text = Array.isArray(header) ? header.join(",") : (header ?? "");
  return text
    .split(",")
    .map((protocol) => protocol.trim())
    .filter((protocol) => protocol.length > 0);
}

/** Answers an upgrade request with an HTTP error (OpenAI's error JSON) instead of switching protocols. */
function refuseUpgrade(socket: Duplex, error: RunnelError): void {
  const body = JSON.stringify(openAIErrorBody(error.code, error.message, error.param));
  socket.on("error", () => socket.destroy());
  socket.once("finish", () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${error.httpStatus} ${STATUS_CODES[error.httpStatus] ?? "Error"}\r\n` +
      "Content-Type: application/json\r\n" +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      "Connection: close\r\n\r\n" +
      body,
  );
}

function frameBytes(data: RawData): number {
  if (Array.isArray(data)) return data.reduce((sum, part) => sum + part.length, 0);
  return data.byteLength;
}

function frameText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.isBuffer(data) ? data.toString("utf8") : Buffer.from(data).toString("utf8");
}

/** The client's id of a frame that failed validation, framed as JSON (`null` when it has none usable). */
function frameKey(frame: unknown): string {
  if (typeof frame !== "object" || frame === null || !("id" in frame)) return "null";
  const parsed = requestId.safeParse(frame.id);
  return parsed.success ? JSON.stringify(parsed.data) : "null";
}

/** One client socket and the streams it runs. */
class Session {
  readonly #ws: WebSocket;
  readonly #keyName: string;
  /** The socket's session id (x-runnel-session-id on the upgrade), for the `affinity` strategy. */
  readonly #session: string | undefined;
  readonly #context: RouteContext;
  readonly #onGone: () => void;
  readonly #running = new Map<string, Running>();
  readonly #ended = new Set<string>();
  readonly #heartbeat: NodeJS.Timeout;
  #lastHeard = Date.now();
  /** Set once the socket is closing, whoever closes it: nothing new starts. */
  #closed = false;
  #congested = false;
  #pollTimer: NodeJS.Timeout | undefined;
  #lastBuffered = 0;
  #progressAt = 0;
  #rotation = 0;
  #destroyTimer: NodeJS.Timeout | undefined;

  constructor(ws: WebSocket, keyName: string, session: string | undefined, context: RouteContext, onGone: () => void) {
    this.#ws = ws;
    this.#keyName = keyName;
    this.#session = session;
    this.#context = context;
    this.#onGone = onGone;
    const interval = context.options.heartbeatInterval;
    this.#heartbeat = setInterval(() => this.#beat(interval), interval);
    ws.on("message", (data, isBinary) => this.#onMessage(data, isBinary));
    ws.on("pong", () => {
      this.#lastHeard = Date.now();
    });
    ws.on("error", (error) => context.log.debug({ err: error }, "websocket error"));
    ws.on("close", (code) => this.#onClose(code));
  }

  /** The ingress is shutting down: close with 1012 and leave every stream resumable elsewhere. */
  shutdown(): void {
    this.#end(WS_CLOSE.SERVICE_RESTART, "server restarting: resume elsewhere", "ingress shutting down", true);
  }

  /** The peer did not answer the close in time. */
  destroy(): void {
    this.#ws.terminate();
  }

  #beat(interval: number): void {
    if (this.#closed) return;
    // A congested socket is judged by whether it drains (the stuck-client timeout), not by pongs queued behind data.
    if (!this.#congested && Date.now() - this.#lastHeard > 2 * interval) {
      this.#end(WS_CLOSE.NO_PONG, "no pong", "websocket heartbeat lost", true);
      return;
    }
    this.#ws.ping();
  }

  #onMessage(data: RawData, isBinary: boolean): void {
    this.#lastHeard = Date.now();
    if (this.#closed) return;
    if (isBinary) {
      this.#end(WS_CLOSE.UNSUPPORTED_DATA, "binary frames are not part of the protocol", "websocket closed", true);
      return;
    }
    let frame: unknown;
    try {
      frame = JSON.parse(frameText(data));
    } catch {
      this.#sendError("null", new RunnelError("RUNNEL_ERR_INVALID_REQUEST", "the frame is not valid JSON"));
      return;
    }
    const parsed = ClientFrame.safeParse(frame);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const param = issue && issue.path.length > 0 ? issue.path.map(String).join(".") : undefined;
      const message = `invalid frame: ${param ? `${param}: ` : ""}${issue?.message ?? "invalid"}`;
      this.#sendError(frameKey(frame), new RunnelError("RUNNEL_ERR_INVALID_REQUEST", message, param ? { param } : {}));
      return;
    }
    const message = parsed.data;
    const key = JSON.stringify(message.id);
    const refused = (error: unknown) => this.#sendError(key, error);
    switch (message.type) {
      case "request":
        this.#request(key, message.body, frameBytes(data)).catch(refused);
        break;
      case "resume":
        this.#resume(key, message.streamId, message.after, message.token).catch(refused);
        break;
      case "cancel":
        try {
          this.#cancel(key);
        } catch (error) {
          refused(error);
        }
        break;
    }
  }

  /** Checks that a new stream may start under `key`, and holds its place (synchronously, so frames cannot race). */
  #reserve(key: string): Running {
    this.#context.refuseIfClosing();
    if (this.#running.has(key)) throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `id ${key} is already running on this socket`, { param: "id" });
    if (this.#running.size >= MAX_STREAMS_PER_SOCKET) {
      throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `at most ${MAX_STREAMS_PER_SOCKET} streams run at once on one socket`, { param: "id" });
    }
    const running: Running = { key, streamId: undefined, reader: undefined, cancelled: false, usage: undefined, untrack: () => {} };
    this.#ended.delete(key);
    this.#running.set(key, running);
    // Shutdown waits for running streams, then ends those left by closing their socket with 1012.
    running.untrack = this.#context.track({ shutdown: () => this.shutdown() }, "websocket");
    return running;
  }

  /** Everything that can refuse the request happens before the first await, so refusals come back in frame order. */
  async #request(key: string, body: unknown, frameSize: number): Promise<void> {
    const context = this.#context;
    context.refuseIfClosing();
    // The body's size as HTTP counts it, its JSON text; only a frame over the limit can hold a body over it.
    const limit = context.options.bodyLimitBytes;
    if (frameSize > limit && Buffer.byteLength(JSON.stringify(body)) > limit) {
      throw new RunnelError("RUNNEL_ERR_BODY_TOO_LARGE", `Request body is larger than ${limit} bytes`, { param: "body" });
    }
    // The body is an OpenAI request; over a WebSocket it is always streamed, whatever `stream` says.
    const parsed = parseChatCompletionRequest(typeof body === "object" && body !== null && !Array.isArray(body) ? { ...body, stream: true } : body);
    const routing = context.routing();
    if (!routing.model(parsed.model)) {
      throw new RunnelError("RUNNEL_ERR_MODEL_NOT_FOUND", `The model \`${parsed.model}\` does not exist (known: ${routing.modelNames.join(", ")})`, {
        param: "model",
      });
    }
    const streamId = newStreamId();
    const now = Date.now();
    const job = buildJob({
      streamId,
      model: parsed.model,
      request: toChatRequest(parsed, parsed.stream_options?.include_usage === true),
      routing,
      keyId: this.#keyName,
      session: this.#session,
      now,
    });
    const running = this.#reserve(key);
    let reader: StreamReader;
    try {
      reader = await context.streams.open(job);
    } catch (error) {
      this.#finish(running);
      this.#sendError(key, error);
      return;
    }
    if (this.#closed) {
      // The client never learned the stream id, so it cannot resume: stop the generation now.
      reader.close();
      context.streams.abandoned(streamId, "websocket closed before the stream started", false);
      return;
    }
    context.log.debug({ stream_id: streamId, model: parsed.model }, "websocket stream submitted");
    this.#begin(running, streamId, reader, { id: `chatcmpl-${streamId}`, created: Math.floor(now / 1000), model: parsed.model });
  }

  async #resume(key: string, streamId: string, after: number, token: string | undefined): Promise<void> {
    const context = this.#context;
    if (!isValidStreamId(streamId)) throw new RunnelError("RUNNEL_ERR_STREAM_NOT_FOUND", `No stream ${streamId}`, { param: "streamId" });
    const running = this.#reserve(key);
    let record: StoredRecord | undefined;
    try {
      record = await context.streams.authorize(streamId, this.#keyName, token);
    } catch (error) {
      this.#finish(running);
      this.#sendError(key, error);
      return;
    }
    // Closed meanwhile: the stream's own detach timer (if any) still runs, nothing to undo here.
    if (this.#closed) return;
    const endedAt = await context.streams.endedAt(streamId, record).catch(() => undefined);
    if (this.#closed) return;
    if (endedAt !== undefined && after >= endedAt) {
      this.#finish(running);
      this.#sendError(
        key,
        new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `stream ${streamId} ended at seq ${endedAt}: nothing follows seq ${after}`, { param: "after" }),
      );
      return;
    }
    const chunks = resumedChunkContext(streamId, record);
    const reader = context.streams.reader(streamId, after, true, (event) => followRoute(chunks, event));
    context.streams.attached(streamId, after, "websocket");
    context.log.info({ stream_id: streamId, after }, "stream resumed over websocket");
    this.#begin(running, streamId, reader, chunks);
  }

  #cancel(key: string): void {
    const running = this.#running.get(key);
    if (!running) {
      if (this.#ended.has(key)) return;
      throw new RunnelError("RUNNEL_ERR_STREAM_NOT_FOUND", `no request ${key} on this socket`, { param: "id" });
    }
    if (running.cancelled) return;
    running.cancelled = true;
    // Not started yet: #begin sees the flag.
    if (running.reader) this.#cancelStarted(running);
  }

  /** Cancels now (no detach grace) and ends the request for the client with RUNNEL_ERR_CANCELLED. */
  #cancelStarted(running: Running): void {
    const { streamId, reader } = running;
    if (!streamId || !reader) return;
    this.#context.streams.cancel(streamId, "cancelled by the client (websocket)").catch((error: unknown) => {
      this.#context.log.error({ stream_id: streamId, err: error }, "cancel failed");
    });
    reader.fail("RUNNEL_ERR_CANCELLED", "cancelled by the client");
  }

  /** Sends `started`, then every event of the reader as a frame. */
  #begin(running: Running, streamId: string, reader: StreamReader, chunks: ChunkContext): void {
    running.streamId = streamId;
    running.reader = reader;
    const { key } = running;
    const stream = JSON.stringify(streamId);
    this.#send(`{"type":"started","id":${key},"streamId":${stream},"resumeToken":${JSON.stringify(this.#context.auth.resumeToken(streamId))}}`);
    // Built once per stream: the per-token path only appends the seq and the encoded chunk.
    const chunkPrefix = `{"type":"chunk","id":${key},"streamId":${stream},"seq":`;
    const chunkJson = new ChunkJson();
    if (this.#congested) reader.pause();
    reader.attach((event) => {
      const body = event.event;
      if (body?.$case === "done") {
        // The finish reason and (when asked for) the usage come together, in the terminal frame.
        const usage = body.value.usage ?? running.usage;
        const finish = JSON.stringify(openAIFinishReason(body.value.finishReason));
        this.#send(
          `{"type":"done","id":${key},"streamId":${stream},"seq":${event.seq},"finish_reason":${finish},"usage":${usage ? JSON.stringify(openAIUsage(usage)) : "null"}}`,
        );
        this.#finish(running);
        return;
      }
      if (body?.$case === "error") {
        this.#finish(running);
        this.#send(`{"type":"error","id":${key},"streamId":${stream},"error":${JSON.stringify(openAIErrorBody(body.value.code, body.value.message).error)}}`);
        return;
      }
      // A usage event (older workers) waits for the done frame.
      if (body?.$case === "usage") {
        running.usage = body.value;
        return;
      }
      const payload = encodeChunk(chunks, event);
      if (payload === undefined) return;
      this.#send(`${chunkPrefix}${event.seq},"chunk":${chunkJson.text(payload)}}`);
    });
    if (running.cancelled) this.#cancelStarted(running);
  }

  /** The request is over for this socket (terminal frame sent, or failed to start). */
  #finish(running: Running): void {
    if (this.#running.get(running.key) !== running) return;
    this.#running.delete(running.key);
    running.untrack();
    this.#ended.add(running.key);
    if (this.#ended.size > REMEMBERED_IDS) {
      const oldest = this.#ended.values().next();
      if (!oldest.done) this.#ended.delete(oldest.value);
    }
  }

  #sendError(key: string, error: unknown): void {
    const runnel = toRunnelError(error);
    if (runnel.httpStatus >= 500) this.#context.log.warn({ err: error, code: runnel.code }, "websocket request failed");
    this.#send(`{"type":"error","id":${key},"error":${JSON.stringify(openAIErrorBody(runnel.code, runnel.message, runnel.param).error)}}`);
  }

  #send(text: string): void {
    if (this.#ws.readyState !== this.#ws.OPEN) return;
    this.#ws.send(text);
    if (!this.#congested && this.#ws.bufferedAmount > this.#context.options.maxClientBufferBytes) this.#congest();
  }

  /** The client is behind: every reader waits (its events wait in the log) until the socket drains. */
  #congest(): void {
    this.#congested = true;
    this.#context.telemetry.slowClient("websocket", "paused");
    for (const running of this.#running.values()) running.reader?.pause();
    this.#lastBuffered = this.#ws.bufferedAmount;
    this.#progressAt = Date.now();
    this.#pollTimer = setInterval(() => this.#poll(), BACKPRESSURE_POLL_MS);
  }

  #poll(): void {
    const buffered = this.#ws.bufferedAmount;
    const now = Date.now();
    if (buffered < this.#lastBuffered) this.#progressAt = now;
    this.#lastBuffered = buffered;
    if (buffered <= this.#context.options.maxClientBufferBytes / 2) {
      this.#decongest();
      return;
    }
    const stuckMs = this.#context.options.stuckClientTimeout;
    if (now - this.#progressAt >= stuckMs) {
      this.#context.log.info({ streams: this.#running.size, buffered }, "websocket client read nothing; closing it");
      this.#context.telemetry.slowClient("websocket", "cut");
      this.#end(WS_CLOSE.STUCK_CLIENT, `read nothing for ${stuckMs} ms`, "client stopped reading (websocket)", false);
    }
  }

  #decongest(): void {
    this.#congested = false;
    clearInterval(this.#pollTimer);
    this.#pollTimer = undefined;
    this.#lastHeard = Date.now();
    // Resumed in turn from a rotating start, so no stream always goes first; a resumed reader may congest the socket again.
    const readers = [...this.#running.values()];
    const start = readers.length === 0 ? 0 : this.#rotation++ % readers.length;
    for (let index = 0; index < readers.length && !this.#congested; index += 1) {
      readers[(start + index) % readers.length]?.reader?.resume();
    }
  }

  /**
   * Server-side close: ends every stream for this socket (left resumable
   * with `detach`, else cancelled), then closes with `code`, and destroys the
   * socket if the peer does not complete the close handshake.
   */
  #end(code: number, reason: string, streamReason: string, detach: boolean): void {
    if (this.#closed) return;
    this.#releaseStreams(streamReason, detach);
    this.#ws.close(code, reason);
    this.#destroyTimer = setTimeout(() => this.#ws.terminate(), CLOSE_HANDSHAKE_MS);
    this.#destroyTimer.unref();
  }

  #onClose(code: number): void {
    this.#context.log.debug({ code, streams: this.#running.size }, "websocket closed");
    this.#releaseStreams("websocket closed", true);
    clearTimeout(this.#destroyTimer);
    this.#onGone();
  }

  #releaseStreams(reason: string, detach: boolean): void {
    if (!this.#closed) {
      this.#closed = true;
      clearInterval(this.#heartbeat);
      clearInterval(this.#pollTimer);
    }
    for (const running of [...this.#running.values()]) {
      this.#finish(running);
      if (!running.reader || !running.streamId) continue;
      running.reader.close();
      // A stream the client already cancelled is not left to run for the grace.
      this.#context.streams.abandoned(running.streamId, reason, detach && !running.cancelled);
    }
  }
}
