/**
 * `POST /v1/messages`: the Anthropic Messages API, streaming (Anthropic's SSE
 * event sequence) and not, on the same streams as every other route. Every
 * error this route answers is in Anthropic's shape, Fastify's own included
 * (malformed JSON, 413): the route's config names the shape, and the app's
 * one error handler renders it.
 */
import { newStreamId, RunnelError } from "@runnel/shared";
import type { FastifyInstance } from "fastify";
import { anthropicErrors, anthropicWire } from "../anthropic-encoder.js";
import { parseMessagesRequest, toChatRequestFromMessages } from "../anthropic-request.js";
import { buildJob, clientTraceContext, sessionFrom } from "../job.js";
import { writeStream } from "../stream-writer.js";
import type { RouteContext } from "./context.js";

export function registerMessages(app: FastifyInstance, context: RouteContext): void {
  app.post("/v1/messages", { config: { errors: anthropicErrors } }, async (request, reply) => {
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
    const job = buildJob({
      streamId,
      model: body.model,
      request: toChatRequestFromMessages(body),
      routing,
      keyId: keyName,
      session: sessionFrom(request.headers),
      traceContext: clientTraceContext(request.headers),
    });
    const reader = await context.streams.open(job);
    // Fields, not a child logger: a pino child per stream cost CPU and 1.9 KB of heap for as long as the stream was open.
    request.log.debug({ stream_id: streamId, model: body.model, streaming, api: "anthropic" }, "stream submitted");
    reply.hijack();
    let untrack: () => void = () => {};
    let ended = false;
    const handle = writeStream({
      reader,
      response: reply.raw,
      wire: anthropicWire(streaming, streamId, body.model),
      heartbeatIntervalMs: context.options.heartbeatInterval,
      holdHeaders: { afterWaitingMs: context.options.holdHeaders, maxMs: context.options.holdHeadersMax },
      maxBufferBytes: context.options.maxClientBufferBytes,
      stuckClientTimeoutMs: context.options.stuckClientTimeout,
      headers: {
        "x-runnel-resume-token": context.auth.resumeToken(streamId),
        // Anthropic's SDKs expose this header as the request id.
        "request-id": `req_${streamId}`,
      },
      onSlowClient: (kind) => context.telemetry.slowClient(streaming ? "sse" : "json", kind),
      onAbandon: (reason, detach) => {
        request.log.info({ stream_id: streamId, reason, detach }, "client left the stream");
        context.streams.abandoned(streamId, reason, detach);
      },
      onEnd: () => {
        ended = true;
        untrack();
      },
    });
    untrack = context.track(handle, streaming ? "sse" : "json");
    if (ended) untrack();
    return reply;
  });
}
