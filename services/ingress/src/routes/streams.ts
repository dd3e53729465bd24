/**
 * Stream resources: status and cancel, resume (EventSource-compatible SSE
 * from a position, then live) and long-polling deltas. A stream can be read
 * or cancelled with its resume token (header or `?token=`) or with the API
 * key that opened it.
 */
import { isValidStreamId, RunnelError, type StoredRecord, type StreamEvent, StreamPhase } from "@runnel/shared/contracts";
import { withLivePosition } from "@runnel/shared/runtime";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import { encodeChunk, endUsageChunk, followRoute, openAIWire, resumedChunkContext } from "../openai-encoder.js";
import { serveStream } from "../serve.js";
import { reconnectDelayMs } from "../stream-writer.js";
import type { RouteContext } from "./context.js";

const PHASE_NAMES: Record<number, string> = {
  [StreamPhase.STREAM_PHASE_UNSPECIFIED]: "unknown",
  [StreamPhase.STREAM_PHASE_QUEUED]: "queued",
  [StreamPhase.STREAM_PHASE_RUNNING]: "running",
  [StreamPhase.STREAM_PHASE_DONE]: "done",
  [StreamPhase.STREAM_PHASE_FAILED]: "failed",
  [StreamPhase.STREAM_PHASE_CANCELLED]: "cancelled",
};

const position = z.coerce.number().int().nonnegative();
const EventsQuery = z.object({ after: position.optional(), token: z.string().optional() });
const DeltasQuery = z.object({ after: position.default(0), wait: z.coerce.number().int().min(0).max(60_000).default(0), token: z.string().optional() });
const TokenQuery = z.object({ token: z.string().optional() });

/** Most events one poll answers with. */
const DELTAS_LIMIT = 1_000;

function streamIdParam(request: FastifyRequest): string {
  const { id } = request.params as { id: string };
  if (!isValidStreamId(id)) throw new RunnelError("RUNNEL_ERR_STREAM_NOT_FOUND", `No stream ${id}`, { param: "id" });
  return id;
}

function parseQuery<T>(schema: z.ZodType<T>, query: unknown): T {
  const result = schema.safeParse(query);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const param = issue ? String(issue.path[0]) : undefined;
  throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `${param ?? "query"}: ${issue?.message ?? "invalid"}`, param ? { param } : {});
}

function presentedToken(request: FastifyRequest, queryToken: string | undefined): string | undefined {
  const header = request.headers["x-runnel-resume-token"];
  return queryToken ?? (typeof header === "string" ? header : undefined);
}

function statusBody(streamId: string, record: StoredRecord | undefined) {
  const state = record?.state;
  return {
    id: streamId,
    object: "runnel.stream",
    status: state ? (PHASE_NAMES[state.phase] ?? "unknown") : "queued",
    model: state?.model || null,
    provider: state?.provider || null,
    created: state ? Math.floor(state.createdAtMs / 1000) : null,
    last_seq: state?.lastSeq ?? 0,
    error: state?.errorCode ? { code: state.errorCode } : null,
    cancel_reason: state?.cancelReason || null,
  };
}

export function registerStreamRoutes(app: FastifyInstance, context: RouteContext): void {
  const authorize = async (request: FastifyRequest, token: string | undefined) => {
    const streamId = streamIdParam(request);
    const keyName = context.auth.tryIdentify(request.headers);
    const record = await context.streams.authorize(streamId, keyName, presentedToken(request, token));
    return { streamId, record };
  };

  app.get("/v1/streams/:id", async (request) => {
    const { token } = parseQuery(TokenQuery, request.query);
    const { streamId, record } = await authorize(request, token);
    return statusBody(streamId, record && { ...record, state: await withLivePosition(context.streams.eventLog, record.state) });
  });

  app.delete("/v1/streams/:id", async (request) => {
    const { token } = parseQuery(TokenQuery, request.query);
    const { streamId } = await authorize(request, token);
    await context.streams.cancel(streamId, "cancelled by the client (DELETE)");
    return statusBody(streamId, await context.streams.record(streamId));
  });

  app.get("/v1/streams/:id/events", async (request, reply) => {
    if (context.closing()) {
      // Not a 503: an EventSource gives up on any answer but 200. Told to come back, it reconnects
      // (Last-Event-ID) on a new connection, which the load balancer sends to another replica.
      return reply
        .code(200)
        .headers({ "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "close" })
        .send(`retry: ${reconnectDelayMs()}\n\n`);
    }
    const query = parseQuery(EventsQuery, request.query);
    const { streamId, record } = await authorize(request, query.token);
    const lastEventId = request.headers["last-event-id"];
    const seenUpTo = typeof lastEventId === "string" && /^\d+$/.test(lastEventId) ? Number(lastEventId) : 0;
    // The later of the two: an EventSource keeps the URL it was opened with (`?after=` its first position)
    // and sends Last-Event-ID, the last event it received, every time it reconnects.
    const after = Math.max(query.after ?? 0, seenUpTo);
    const endedAt = await context.streams.endedAt(streamId, record);
    if (endedAt !== undefined && after >= endedAt) {
      // Nothing after the end: 204 tells an EventSource to stop reconnecting.
      return reply.code(204).send();
    }
    const chunks = resumedChunkContext(streamId, record);
    const reader = context.streams.resume(streamId, after, "sse", (event) => followRoute(chunks, event));
    request.log.info({ stream_id: streamId, after }, "stream resumed");
    return serveStream(context, reply, {
      reader,
      wire: openAIWire("sse", chunks),
      transport: "sse",
      // EventSource reconnects by itself (with Last-Event-ID) after a clean end; an error event would only stop it.
      onShutdown: "reconnect",
    });
  });

  app.get("/v1/streams/:id/deltas", async (request) => {
    context.refuseIfClosing();
    const query = parseQuery(DeltasQuery, request.query);
    const { streamId, record } = await authorize(request, query.token);
    const endedAt = await context.streams.endedAt(streamId, record);
    if (endedAt !== undefined && query.after >= endedAt) return { events: [], next: query.after, done: true };
    const chunks = resumedChunkContext(streamId, record);
    const reader = context.streams.resume(streamId, query.after, "deltas", (event) => followRoute(chunks, event));
    const events: unknown[] = [];
    let next = query.after;
    let done = false;
    let wake: (() => void) | undefined;
    reader.attach((event: StreamEvent) => {
      if (events.length >= DELTAS_LIMIT) {
        reader.pause();
        return;
      }
      // The encoder's values as they are: the answer is serialised once, with the rest of it.
      const value = encodeChunk(chunks, event);
      const body = event.event;
      if (value !== undefined) events.push(body?.$case === "error" ? { seq: event.seq, ...value } : { seq: event.seq, chunk: value });
      // After the finish chunk, the usage chunk (when the stream has usage), as on SSE.
      const usage = endUsageChunk(chunks, event);
      if (usage !== undefined) events.push({ seq: event.seq, chunk: usage });
      if (event.seq > 0) next = event.seq;
      if (body?.$case === "done" || body?.$case === "error") done = true;
      wake?.();
    });
    // First what the log holds, then (if nothing yet) wait up to `wait` for the next events.
    const deadline = Date.now() + query.wait;
    await Promise.race([reader.caughtUp, new Promise((resolve) => setTimeout(resolve, query.wait + 5_000))]);
    while (events.length === 0 && !done && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, deadline - Date.now());
      });
    }
    // Events of the same burst join this answer.
    await new Promise((resolve) => setImmediate(resolve));
    reader.close();
    return { events, next, done };
  });
}
