/**
 * Writes one stream to one HTTP client in an API's framing (a `Wire`): as
 * events arrive, or as one body at the end. An error before the first byte
 * becomes the HTTP status with the API's error JSON; after it, one explicit
 * error event and the end, never a success trailer such as `[DONE]`. Quiet streams get heartbeats.
 * The response buffer is bounded: when a client falls behind, its reader
 * pauses and later catches up from the replay log, so nothing is dropped and
 * memory stays flat; a client that reads nothing at all for
 * `stuckClientTimeoutMs` is cut off with RUNNEL_ERR_SLOW_CLIENT. Whenever
 * the stream ends for a client before the worker ended it, `onAbandon` runs
 * (a disconnect may still resume; other reasons cancel at once).
 */
import type { ServerResponse } from "node:http";
import { RunnelError, type StreamEvent } from "@runnel/shared/contracts";
import type { ErrorLike } from "./http-errors.js";
import { raisedError, type StreamReader } from "./stream-reader.js";
import type { Wire } from "./wire.js";

export interface WriteStreamOptions {
  readonly reader: StreamReader;
  readonly response: ServerResponse;
  /** The API's framing of events, errors and heartbeats. */
  readonly wire: Wire;
  /** No streaming response is silent for longer than this: a heartbeat fills any quiet of this length. */
  readonly heartbeatIntervalMs: number;
  /**
   * When a streaming response's headers (with `x-runnel-stream-id`) go out
   * before its first event. `afterWaitingMs`: once a provider has worked on
   * the request's first token this long (the worker's ProviderWaiting
   * signal), so the client can cancel however long the provider thinks.
   * While no provider works on it (queued, retrying, failing over), the
   * headers wait, and a failure is still an HTTP status, up to `maxMs` from
   * the start. Absent: headers wait for the first event (or heartbeat).
   */
  readonly holdHeaders?: { readonly afterWaitingMs: number; readonly maxMs: number };
  readonly maxBufferBytes: number;
  /** A client that reads nothing for this long while events wait is cut off. */
  readonly stuckClientTimeoutMs: number;
  /** Extra response headers (stream id, resume token). */
  readonly headers?: Readonly<Record<string, string>>;
  /** The stream ended for this client before its worker ended it. `detach`: the client just left (it may resume). */
  readonly onAbandon: (reason: string, detach: boolean) => void;
  /** Runs once when the response is over, however it ended. */
  readonly onEnd: () => void;
  /**
   * How an ingress shutdown ends this stream for its client; the generation
   * goes on either way, for the client to resume on another replica. `error`
   * (the default): an explicit RUNNEL_ERR_SHUTTING_DOWN error event naming the
   * position, for clients that do not reconnect by themselves (SDKs reading a
   * POST). `reconnect`: a clean end, for EventSource clients, which reconnect
   * on their own with Last-Event-ID. Both carry the reconnect hint (`retry:`).
   */
  readonly onShutdown?: "error" | "reconnect";
  /** The client fell behind (`paused`: its reader waits for the socket to drain) or was cut off for reading nothing (`cut`). */
  readonly onSlowClient?: (kind: "paused" | "cut") => void;
}

export interface OpenStream {
  /** Ends the stream now as `onShutdown` says, and closes the connection; the generation goes on for the client to resume. */
  shutdown(): void;
  /** The stream it writes (the console's inspector shows each stream's transport); a WebSocket's is known once it started. */
  readonly streamId?: string | undefined;
}

/**
 * The reconnect delay an ingress shutting down gives its SSE clients: short,
 * and spread so that its clients do not all land on the other replicas in the
 * same instant.
 */
export function reconnectDelayMs(random: () => number = Math.random): number {
  return 250 + Math.floor(random() * 750);
}

/** The content type of an error answered before the first byte (an API's own headers come beside it). */
const JSON_CONTENT = { "content-type": "application/json" };

export function writeStream(options: WriteStreamOptions): OpenStream {
  const { reader, response, wire } = options;
  const extraHeaders = { "x-runnel-stream-id": reader.streamId, ...options.headers };
  let headersSent = false;
  let ended = false;
  let wroteSinceTick = false;
  let stuckTimer: NodeJS.Timeout | undefined;

  const commitHeaders = () => {
    if (headersSent) return;
    headersSent = true;
    response.socket?.setNoDelay(true);
    response.writeHead(200, { ...wire.headers, ...extraHeaders });
  };

  // Frames are gathered and handed to the response once per turn of the event
  // loop (one NATS read often carries several events of a stream): one write,
  // one chunk header, one syscall instead of one per event, and no delay.
  let pending = "";
  let flushQueued = false;
  const write = (text: string) => {
    wroteSinceTick = true;
    pending = pending === "" ? text : pending + text;
    // Past the buffer limit: write now, so flow control below pauses the reader at once.
    if (response.writableLength + pending.length > options.maxBufferBytes) flush();
    else if (!flushQueued) {
      flushQueued = true;
      queueMicrotask(flush);
    }
  };

  function flush(): void {
    flushQueued = false;
    if (pending === "") return;
    const text = pending;
    pending = "";
    if (response.destroyed) return;
    if (!response.write(text) && response.writableLength > options.maxBufferBytes && !reader.paused) {
      // The client is behind: stop taking events (they wait in the log) until its socket drains.
      reader.pause();
      options.onSlowClient?.("paused");
      stuckTimer = setTimeout(() => {
        options.onSlowClient?.("cut");
        abandon(new RunnelError("RUNNEL_ERR_SLOW_CLIENT", `the client read nothing for ${options.stuckClientTimeoutMs} ms`), "client stopped reading");
        response.destroy();
      }, options.stuckClientTimeoutMs);
      stuckTimer.unref();
      response.once("drain", () => {
        clearTimeout(stuckTimer);
        reader.resume();
      });
    }
  }

  /** The stream is over for this response, however it ends: no more timers, no more events. False if it already was. */
  const stop = () => {
    if (ended) return false;
    ended = true;
    clearInterval(heartbeat);
    clearTimeout(holdHeaders);
    clearTimeout(waitedHeaders);
    clearTimeout(stuckTimer);
    reader.close();
    return true;
  };

  /** Ends the response; `closeConnection`: by closing the connection after what was written, without HTTP's end of body. */
  const finish = (closeConnection = false) => {
    if (!stop()) return;
    flush();
    if (closeConnection && response.socket) response.socket.end();
    else response.end();
    options.onEnd();
  };

  /** Ends with an error event: the HTTP status and the API's error JSON before the first byte, the event after it. */
  const endWithError = (event: StreamEvent, error: ErrorLike) => {
    if (!headersSent) {
      headersSent = true;
      const answer = wire.errorResponse(error);
      response.writeHead(answer.status, { ...JSON_CONTENT, ...answer.headers, ...extraHeaders });
      response.write(JSON.stringify(answer.body));
    } else {
      write(wire.event(event));
    }
    finish();
  };

  /** Ends with an error the ingress raised itself (a slow client, a shutdown). */
  const endWithRaised = (error: RunnelError) => endWithError(raisedError(reader.streamId, error), error);

  const abandon = (error: RunnelError, reason: string) => {
    if (ended) return;
    endWithRaised(error);
    options.onAbandon(reason, false);
  };

  // Streams only: the timer ticks twice per interval and writes a heartbeat
  // when nothing was written since the tick before, so a quiet that starts
  // right after a write is filled within one interval (a tick per interval
  // left up to two intervals of silence; proxies cut idle at 30 s). The
  // per-token path only sets a flag.
  const heartbeat = wire.streaming
    ? setInterval(
        () => {
          if (ended) return;
          if (wroteSinceTick) {
            wroteSinceTick = false;
            return;
          }
          commitHeaders();
          write(wire.heartbeat());
          wroteSinceTick = false;
        },
        Math.max(1, Math.floor(options.heartbeatIntervalMs / 2)),
      )
    : undefined;
  const releaseHeaders = () => {
    clearTimeout(holdHeaders);
    clearTimeout(waitedHeaders);
    if (ended || headersSent) return;
    commitHeaders();
    response.flushHeaders();
    wroteSinceTick = true;
  };
  const hold = wire.streaming ? options.holdHeaders : undefined;
  const holdHeaders = hold ? setTimeout(releaseHeaders, hold.maxMs) : undefined;
  let waitedHeaders: NodeJS.Timeout | undefined;
  if (hold) {
    reader.onProviderWaiting((waiting) => {
      clearTimeout(waitedHeaders);
      waitedHeaders = waiting && !headersSent ? setTimeout(releaseHeaders, hold.afterWaitingMs) : undefined;
    });
  }

  response.on("close", () => {
    if (!stop()) return;
    options.onEnd();
    // A streaming client may resume (it has the stream id); one waiting for a JSON answer never learned it: cancel at once.
    options.onAbandon("client disconnected", wire.streaming);
  });

  reader.attach((event: StreamEvent) => {
    if (ended) return;
    const body = event.event;
    if (body?.$case === "error") {
      endWithError(event, body.value);
      return;
    }
    const text = wire.event(event);
    if (wire.streaming) {
      commitHeaders();
      if (text) write(text);
    }
    if (body?.$case === "done") {
      commitHeadersForBody();
      const trailer = wire.end();
      if (trailer) write(trailer);
      finish();
    }
  });

  /** A non-streaming answer's headers go out with its body, once it is known. */
  function commitHeadersForBody(): void {
    if (headersSent) return;
    headersSent = true;
    response.writeHead(200, { ...wire.headers, ...extraHeaders });
  }

  return {
    streamId: reader.streamId,
    shutdown() {
      if (ended) return;
      const error = new RunnelError("RUNNEL_ERR_SHUTTING_DOWN", `the ingress is shutting down; resume from seq ${reader.position} on another replica`);
      const reconnect = options.onShutdown === "reconnect" && wire.streaming;
      if (!headersSent && !reconnect) {
        // Nothing sent yet: the HTTP error, and the connection closes after it (Connection: close).
        response.shouldKeepAlive = false;
        endWithRaised(error);
      } else {
        commitHeaders();
        const hint = wire.reconnectHint(reconnectDelayMs());
        // `reconnect`: the hint alone, an event without data, which dispatches nothing and sets the reconnect delay.
        write(reconnect ? `${hint}\n` : `${hint}${wire.event(raisedError(reader.streamId, error))}`);
        // Ended by closing the connection: after an HTTP end of body, a client's pool may reuse the
        // connection for its next request (the resume), which would reach this replica as it closes.
        finish(true);
      }
      // Not a cancel: the generation goes on for the detach grace so the client can resume on another replica.
      options.onAbandon("ingress shutting down", true);
    },
  };
}
