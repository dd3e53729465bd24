/**
 * One WebSocket and the streams it runs: request frames (through the one
 * submit path, the socket's key checked again for each, so a key revoked
 * from runnel.yaml stops opening streams on a socket already open), resume
 * and cancel frames, the heartbeat, and how the socket ends. A socket that
 * goes away leaves its streams running for the detach grace, so they can be
 * resumed; one the server closes for a stuck client cancels them; one closed
 * for a restart (1012) leaves them for the client to resume elsewhere.
 */

import type { StoredRecord } from "@runnel/shared/contracts";
import { isValidStreamId, RunnelError, toRunnelError } from "@runnel/shared/contracts";
import type { RawData, WebSocket } from "ws";
import type { ParsedRequest } from "./api.js";
import { bodyTooLarge } from "./http-errors.js";
import { followRoute, resumedChunkContext } from "./openai-encoder.js";
import { chatCompletionsApi } from "./openai-request.js";
import type { RouteContext } from "./routes/context.js";
import type { StreamReader } from "./stream-reader.js";
import { type OpenedStream, prepareStream, submitStream } from "./submit.js";
import { SocketFlowControl } from "./ws-flow-control.js";
import { MAX_STREAMS_PER_SOCKET, type RequestId, readClientFrame, refusalFrame, type ServerFrame, StreamFrames, WS_CLOSE } from "./ws-protocol.js";

/** After the server closes a socket, how long the peer has to answer the close before the socket is destroyed. */
export const CLOSE_HANDSHAKE_MS = 2_000;
/** Ended request ids a socket remembers, so that cancelling one of them is a no-op rather than an error. */
const REMEMBERED_IDS = 1_024;

/** The headers every frame of a socket is read with: the upgrade's key (a header or the bearer subprotocol) and session id. */
export type SocketHeaders = Readonly<Record<string, string | string[] | undefined>>;

/** One request or resume running on a socket. */
interface Running {
  readonly id: RequestId;
  /** The id as JSON: the key of the socket's map (1 and "1" differ). */
  readonly key: string;
  frames: StreamFrames | undefined;
  reader: StreamReader | undefined;
  cancelled: boolean;
  untrack: () => void;
}

export class Session {
  readonly #ws: WebSocket;
  readonly #headers: SocketHeaders;
  readonly #context: RouteContext;
  readonly #onGone: () => void;
  readonly #running = new Map<string, Running>();
  readonly #ended = new Set<string>();
  readonly #flow: SocketFlowControl;
  readonly #heartbeat: NodeJS.Timeout;
  #lastHeard = Date.now();
  /** Set once the socket is closing, whoever closes it: nothing new starts. */
  #closed = false;
  #destroyTimer: NodeJS.Timeout | undefined;

  constructor(ws: WebSocket, headers: SocketHeaders, context: RouteContext, onGone: () => void) {
    this.#ws = ws;
    this.#headers = headers;
    this.#context = context;
    this.#onGone = onGone;
    const { options, telemetry } = context;
    this.#flow = new SocketFlowControl({
      socket: ws,
      maxBufferBytes: options.maxClientBufferBytes,
      stuckClientTimeoutMs: options.stuckClientTimeout,
      readers: () => [...this.#running.values()].map((running) => running.reader),
      onCongested: () => telemetry.slowClient("websocket", "paused"),
      onDrained: () => {
        // Pongs queued behind the data count from now.
        this.#lastHeard = Date.now();
      },
      onStuck: (buffered) => {
        context.log.info({ streams: this.#running.size, buffered }, "websocket client read nothing; closing it");
        telemetry.slowClient("websocket", "cut");
        this.#end(WS_CLOSE.STUCK_CLIENT, `read nothing for ${options.stuckClientTimeout} ms`, "client stopped reading (websocket)", false);
      },
    });
    const interval = options.heartbeatInterval;
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
    if (!this.#flow.congested && Date.now() - this.#lastHeard > 2 * interval) {
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
    const read = readClientFrame(frameText(data));
    if (!("frame" in read)) {
      const { message, param } = read.problem;
      this.#refuse(read.id, new RunnelError("RUNNEL_ERR_INVALID_REQUEST", message, param ? { param } : {}));
      return;
    }
    const { frame } = read;
    const refused = (error: unknown) => this.#refuse(frame.id, error);
    switch (frame.type) {
      case "request":
        this.#request(frame.id, frame.body, frameBytes(data)).catch(refused);
        break;
      case "resume":
        this.#resume(frame.id, frame.streamId, frame.after, frame.token).catch(refused);
        break;
      case "cancel":
        try {
          this.#cancel(frame.id);
        } catch (error) {
          refused(error);
        }
        break;
    }
  }

  /** Checks that a new stream may start under `id`, and holds its place (synchronously, so frames cannot race). */
  #reserve(id: RequestId): Running {
    this.#context.refuseIfClosing();
    const key = JSON.stringify(id);
    if (this.#running.has(key)) throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `id ${key} is already running on this socket`, { param: "id" });
    if (this.#running.size >= MAX_STREAMS_PER_SOCKET) {
      throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `at most ${MAX_STREAMS_PER_SOCKET} streams run at once on one socket`, { param: "id" });
    }
    const running: Running = { id, key, frames: undefined, reader: undefined, cancelled: false, untrack: () => {} };
    this.#ended.delete(key);
    this.#running.set(key, running);
    // Shutdown waits for running streams, then ends those left by closing their socket with 1012.
    running.untrack = this.#context.track(
      {
        shutdown: () => this.shutdown(),
        // Known once the stream started (the console's inspector shows each stream's transport).
        get streamId() {
          return running.reader?.streamId;
        },
      },
      "websocket",
    );
    return running;
  }

  /** Everything that can refuse the request happens before the first await, so refusals come back in frame order. */
  async #request(id: RequestId, body: unknown, frameSize: number): Promise<void> {
    const context = this.#context;
    context.refuseIfClosing();
    // The body's size as HTTP counts it, its JSON text; only a frame over the limit can hold a body over it.
    const limit = context.options.bodyLimitBytes;
    if (frameSize > limit && Buffer.byteLength(JSON.stringify(body)) > limit) throw bodyTooLarge(limit, { param: "body" });
    // The body is an OpenAI request; over a WebSocket it is always streamed, whatever `stream` says.
    const streamed = typeof body === "object" && body !== null && !Array.isArray(body) ? { ...body, stream: true } : body;
    // The key is checked again for every request: one revoked since the upgrade opens nothing more.
    const submission = prepareStream(context, { api: chatCompletionsApi, headers: this.#headers, body: streamed });
    const running = this.#reserve(id);
    let opened: OpenedStream<ParsedRequest>;
    try {
      opened = await submitStream(context, submission, context.log);
    } catch (error) {
      this.#finish(running);
      this.#refuse(id, error);
      return;
    }
    const { streamId, job } = opened;
    if (this.#closed) {
      // The client never learned the stream id, so it cannot resume: stop the generation now.
      opened.reader.close();
      context.streams.abandoned(streamId, "websocket closed before the stream started", false);
      return;
    }
    this.#begin(
      running,
      opened.reader,
      new StreamFrames(id, streamId, { id: `chatcmpl-${streamId}`, created: Math.floor(job.createdAtMs / 1000), model: job.model }),
    );
  }

  async #resume(id: RequestId, streamId: string, after: number, token: string | undefined): Promise<void> {
    const context = this.#context;
    if (!isValidStreamId(streamId)) throw new RunnelError("RUNNEL_ERR_STREAM_NOT_FOUND", `No stream ${streamId}`, { param: "streamId" });
    const running = this.#reserve(id);
    let record: StoredRecord | undefined;
    try {
      // The socket's key as it stands now (a revoked one no longer owns its streams), or the stream's token.
      record = await context.streams.authorize(streamId, context.auth.tryIdentify(this.#headers), token);
    } catch (error) {
      this.#finish(running);
      this.#refuse(id, error);
      return;
    }
    // Closed meanwhile: the stream's own detach timer (if any) still runs, nothing to undo here.
    if (this.#closed) return;
    const endedAt = await context.streams.endedAt(streamId, record).catch(() => undefined);
    if (this.#closed) return;
    if (endedAt !== undefined && after >= endedAt) {
      this.#finish(running);
      this.#refuse(
        id,
        new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `stream ${streamId} ended at seq ${endedAt}: nothing follows seq ${after}`, { param: "after" }),
      );
      return;
    }
    const chunks = resumedChunkContext(streamId, record);
    const reader = context.streams.resume(streamId, after, "websocket", (event) => followRoute(chunks, event));
    context.log.info({ stream_id: streamId, after }, "stream resumed over websocket");
    this.#begin(running, reader, new StreamFrames(id, streamId, chunks));
  }

  #cancel(id: RequestId): void {
    const key = JSON.stringify(id);
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
    const { frames, reader } = running;
    if (!frames || !reader) return;
    const { streamId } = frames;
    this.#context.streams.cancel(streamId, "cancelled by the client (websocket)").catch((error: unknown) => {
      this.#context.log.error({ stream_id: streamId, err: error }, "cancel failed");
    });
    reader.fail("RUNNEL_ERR_CANCELLED", "cancelled by the client");
  }

  /** Sends `started`, then every event of the reader as a frame, until `done` or `error`. */
  #begin(running: Running, reader: StreamReader, frames: StreamFrames): void {
    running.frames = frames;
    running.reader = reader;
    this.#send(frames, frames.started(this.#context.auth.resumeToken(frames.streamId)));
    this.#flow.admit(reader);
    reader.attach((event) => {
      const frame = frames.frame(event);
      if (frame === undefined) return;
      if (frame.type === "error") this.#finish(running);
      this.#send(frames, frame);
      if (frame.type === "done") this.#finish(running);
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

  /** Answers a frame that opened nothing (or could not start) with its error frame. */
  #refuse(id: RequestId | null, error: unknown): void {
    const runnel = toRunnelError(error);
    if (runnel.httpStatus >= 500) this.#context.log.warn({ err: error, code: runnel.code }, "websocket request failed");
    this.#send(undefined, refusalFrame(id, runnel));
  }

  /** Sends one frame (as text, by its stream's serialiser when it has one), then lets flow control look at the socket. */
  #send(frames: StreamFrames | undefined, frame: ServerFrame): void {
    if (this.#ws.readyState !== this.#ws.OPEN) return;
    this.#ws.send(frames ? frames.text(frame) : JSON.stringify(frame));
    this.#flow.sent();
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
      this.#flow.stop();
    }
    for (const running of [...this.#running.values()]) {
      this.#finish(running);
      if (!running.reader || !running.frames) continue;
      running.reader.close();
      // A stream the client already cancelled is not left to run for the grace.
      this.#context.streams.abandoned(running.frames.streamId, reason, detach && !running.cancelled);
    }
  }
}

function frameBytes(data: RawData): number {
  if (Array.isArray(data)) return data.reduce((sum, part) => sum + part.length, 0);
  return data.byteLength;
}

function frameText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.isBuffer(data) ? data.toString("utf8") : Buffer.from(data).toString("utf8");
}
