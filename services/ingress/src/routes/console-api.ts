/**
 * The inspector's API under `/console/api` (its shapes: `@runnel/console`,
 * protocol.ts): its status, the live feed (SSE), one stream's detail, a
 * cancel, and the stream's trace from the trace backend.
 *
 * Who may use it: with auth on, admin keys only (`auth.apiKeys[].admin`);
 * none configured, it is disabled. With auth off (no `auth` section) it is
 * disabled unless `console.inspectorWithoutAuth` opens it to anyone. A
 * disabled inspector answers 404, as if it were not there; `status` says why.
 */
import { CONSOLE_API, type FeedHello, type InspectorStatus, type StreamDetail, type StreamRow, type StreamTrace, type TimelineEntry } from "@runnel/console";
import { isValidStreamId, RunnelError } from "@runnel/shared/contracts";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Auth } from "../auth.js";
import { ConsoleBoard } from "../console-board.js";
import type { ConsoleFeed } from "../console-feed.js";
import { findStreamTrace } from "../trace-query.js";
import type { RouteContext } from "./context.js";

export interface ConsoleApiOptions {
  /** With no auth section, serve the inspector to anyone (runnel.yaml `console.inspectorWithoutAuth`). */
  readonly inspectorWithoutAuth: boolean;
  /** The trace backend's query API (RUNNEL_TRACE_QUERY_URL). */
  readonly traceQueryUrl?: string | undefined;
  /** A link to one trace, `{traceId}` in it (RUNNEL_TRACE_LINK). */
  readonly traceLink?: string | undefined;
}

/** Bytes waiting in an inspector's socket past which it is too slow for the feed: it is ended (it reconnects and starts from a full list). */
const MAX_FEED_BUFFER_BYTES = 1024 * 1024;

export interface Access {
  readonly enabled: boolean;
  readonly access: InspectorStatus["access"];
  readonly reason: string;
}

/** Whether the inspector is on, and what lets a request in, from the current keys and the config. Pure. */
export function inspectorAccess(auth: Pick<Auth, "known" | "open" | "adminKeys">, inspectorWithoutAuth: boolean): Access {
  if (!auth.known) return { enabled: false, access: "admin-key", reason: "this ingress has no API keys from the control plane yet; try again shortly" };
  if (auth.open) {
    return inspectorWithoutAuth
      ? {
          enabled: true,
          access: "open",
          reason: "runnel.yaml has no auth section and console.inspectorWithoutAuth is on: open to anyone who reaches this ingress",
        }
      : {
          enabled: false,
          access: "open",
          reason: "runnel.yaml has no auth section, so there is no admin key to let you in: add auth with an admin key, or set console.inspectorWithoutAuth",
        };
  }
  return auth.adminKeys > 0
    ? { enabled: true, access: "admin-key", reason: "enter an admin key (an auth.apiKeys entry with admin: true)" }
    : { enabled: false, access: "admin-key", reason: "no admin key is configured: mark one of runnel.yaml's auth.apiKeys with admin: true" };
}

function streamIdOf(request: FastifyRequest): string {
  const { id } = request.params as { id: string };
  if (!isValidStreamId(id)) throw new RunnelError("RUNNEL_ERR_STREAM_NOT_FOUND", `No stream ${id}`, { param: "id" });
  return id;
}

export function registerConsoleApi(app: FastifyInstance, context: RouteContext, feed: ConsoleFeed, options: ConsoleApiOptions): void {
  const access = () => inspectorAccess(context.auth, options.inspectorWithoutAuth);
  /** Lets an admin in (returns the key's name, "" when open), or throws 404 (disabled), 401 or 403. */
  const admit = (request: FastifyRequest): string => {
    const state = access();
    if (!state.enabled) throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `the inspector is disabled: ${state.reason}`, { httpStatus: 404 });
    return state.access === "open" ? "" : context.auth.identifyAdmin(request.headers);
  };
  const noStore = (reply: FastifyReply) => reply.header("cache-control", "no-store");

  /** The stream as the board knows it, else from its record (a stream that ended before the inspector looked). */
  const detail = async (streamId: string): Promise<StreamDetail | undefined> => {
    let stream: StreamRow | undefined = feed.board.row(streamId);
    let timeline: TimelineEntry[] | undefined = feed.board.timeline(streamId);
    if (!stream) {
      const record = await context.streams.record(streamId);
      if (!record) return undefined;
      const one = new ConsoleBoard();
      one.record(record.state, record.state.updatedAtMs, true, Date.now());
      stream = one.row(streamId);
      timeline = one.timeline(streamId);
    }
    return stream ? { now: Date.now(), stream, timeline: timeline ?? [] } : undefined;
  };
  const notFound = (streamId: string) => new RunnelError("RUNNEL_ERR_STREAM_NOT_FOUND", `No stream ${streamId} (it never existed, or is past its retention)`);

  app.get(`${CONSOLE_API}/status`, async (_request, reply) => {
    const state = access();
    const status: InspectorStatus = {
      inspector: state.enabled ? "enabled" : "disabled",
      access: state.access,
      reason: state.reason,
      traces: !!options.traceQueryUrl,
    };
    return noStore(reply).send(status);
  });

  const ending = new Set<() => void>();
  app.addHook("preClose", (done) => {
    for (const end of [...ending]) end();
    done();
  });

  app.get(`${CONSOLE_API}/feed`, async (request, reply) => {
    context.refuseIfClosing();
    admit(request);
    reply.hijack();
    const response = reply.raw;
    response.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      "x-accel-buffering": "no",
      "x-content-type-options": "nosniff",
    });
    let ended = false;
    const write = (text: string) => {
      if (ended) return;
      if (response.writableLength > MAX_FEED_BUFFER_BYTES) {
        // Too slow for the feed: rather than buffer without bound, end it; the page reconnects and gets a full list.
        end();
        return;
      }
      response.write(text);
    };
    const send = (event: string, data: unknown) => write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    const hello: FeedHello = { now: Date.now(), lingerMs: feed.board.options.lingerMs, instance: feed.instance };
    send("hello", hello);
    const leave = feed.join((message) => send(message.event, message.data));
    const heartbeat = setInterval(() => write(": keep-alive\n\n"), context.options.heartbeatInterval);
    function end() {
      if (ended) return;
      ended = true;
      ending.delete(end);
      clearInterval(heartbeat);
      leave();
      response.end();
    }
    ending.add(end);
    // The connection went (the page closed, the network broke) or the response ended.
    response.once("close", end);
    return reply;
  });

  app.get(`${CONSOLE_API}/streams/:id`, async (request, reply) => {
    admit(request);
    const streamId = streamIdOf(request);
    const found = await detail(streamId);
    if (!found) throw notFound(streamId);
    return noStore(reply).send(found);
  });

  app.delete(`${CONSOLE_API}/streams/:id`, async (request, reply) => {
    const admin = admit(request);
    const streamId = streamIdOf(request);
    // Only streams that exist: a cancel of an unknown id would record one, so that its job never starts.
    if (!feed.board.row(streamId) && !(await context.streams.record(streamId))) throw notFound(streamId);
    feed.board.cancelRequested(streamId, admin, Date.now());
    request.log.info({ stream_id: streamId, admin }, "stream cancelled from the console");
    await context.streams.cancel(streamId, `cancelled from the console's inspector${admin ? ` (${admin})` : ""}`);
    const found = await detail(streamId);
    if (!found) throw notFound(streamId);
    return noStore(reply).send(found);
  });

  app.get(`${CONSOLE_API}/streams/:id/trace`, async (request, reply) => {
    admit(request);
    const streamId = streamIdOf(request);
    const base = options.traceQueryUrl;
    if (!base) throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", "no trace backend is configured (RUNNEL_TRACE_QUERY_URL)", { httpStatus: 404 });
    let lookup: Awaited<ReturnType<typeof findStreamTrace>>;
    try {
      lookup = await findStreamTrace(base, streamId, options.traceLink);
    } catch (error) {
      throw new RunnelError("RUNNEL_ERR_NOT_READY", `the trace backend did not answer: ${(error as Error).message}`, { cause: error });
    }
    // Not there yet is an answer, not an error: the page asks again.
    const trace: StreamTrace = lookup.found ? lookup.trace : { traceId: null, link: null, spans: [], pending: lookup.reason };
    return noStore(reply).send(trace);
  });
}
