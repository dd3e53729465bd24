/**
 * The one serve path: writing a stream to an HTTP response in a wire,
 * counted and tracked for shutdown while it runs, the client's leaving
 * logged and handed to the detach grace (StreamService.abandoned). Used for
 * every new stream (chat completions, messages) and every resume.
 */
import type { FastifyReply } from "fastify";
import type { RouteContext } from "./routes/context.js";
import type { StreamReader } from "./stream-reader.js";
import { type OpenStream, type WriteStreamOptions, writeStream } from "./stream-writer.js";
import type { Transport } from "./telemetry.js";
import type { Wire } from "./wire.js";

export interface ServeOptions {
  readonly reader: StreamReader;
  readonly wire: Wire;
  /** How the client reads it, for the stream metrics. */
  readonly transport: Transport;
  /** Response headers beside `x-runnel-stream-id` (the resume token, an API's own). */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * A new stream's headers wait for the worker's ProviderWaiting signal
   * (`ingress.holdHeaders`, bounded by `ingress.holdHeadersMax`); a resume
   * sends them with its first event.
   */
  readonly holdHeaders?: boolean;
  /** How an ingress shutdown ends it for the client (see WriteStreamOptions). */
  readonly onShutdown?: WriteStreamOptions["onShutdown"];
}

/** Takes the response over from Fastify and writes the stream to it; returns the reply for the handler to return. */
export function serveStream(context: RouteContext, reply: FastifyReply, serve: ServeOptions): FastifyReply {
  const { reader, transport } = serve;
  const { options } = context;
  const streamId = reader.streamId;
  reply.hijack();
  let stream: OpenStream | undefined;
  // Tracked before it starts: the response may end at once (a stream already over), and untrack must find it.
  const untrack = context.track({ shutdown: () => stream?.shutdown(), streamId }, transport);
  stream = writeStream({
    reader,
    response: reply.raw,
    wire: serve.wire,
    heartbeatIntervalMs: options.heartbeatInterval,
    ...(serve.holdHeaders ? { holdHeaders: { afterWaitingMs: options.holdHeaders, maxMs: options.holdHeadersMax } } : {}),
    maxBufferBytes: options.maxClientBufferBytes,
    stuckClientTimeoutMs: options.stuckClientTimeout,
    ...(serve.headers ? { headers: serve.headers } : {}),
    ...(serve.onShutdown ? { onShutdown: serve.onShutdown } : {}),
    onSlowClient: (kind) => context.telemetry.slowClient(transport, kind),
    onAbandon: (reason, detach) => {
      reply.log.info({ stream_id: streamId, reason, detach }, "client left the stream");
      context.streams.abandoned(streamId, reason, detach);
    },
    onEnd: untrack,
  });
  return reply;
}
