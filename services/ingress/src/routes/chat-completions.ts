/** `POST /v1/chat/completions`: the OpenAI API, streaming (SSE or NDJSON) and not. */
import { newStreamId, RunnelError } from "@runnel/shared";
import type { FastifyInstance } from "fastify";
import { buildJob, clientTraceContext, sessionFrom } from "../job.js";
import { type ChunkContext, openAIWire } from "../openai-encoder.js";
import { parseChatCompletionRequest, toChatRequest } from "../openai-request.js";
import { type OpenStream, writeStream } from "../stream-writer.js";
import type { RouteContext } from "./context.js";

export function registerChatCompletions(app: FastifyInstance, context: RouteContext): void {
  app.post("/v1/chat/completions", async (request, reply) => {
    context.refuseIfClosing();
    const keyName = context.auth.identify(request.headers);
    const body = parseChatCompletionRequest(request.body);
    const routing = context.routing();
    if (!routing.model(body.model)) {
      throw new RunnelError("RUNNEL_ERR_MODEL_NOT_FOUND", `The model \`${body.model}\` does not exist (known: ${routing.modelNames.join(", ")})`, {
        param: "model",
      });
    }
    const streaming = body.stream === true;
    const streamId = newStreamId();
    const now = Date.now();
    const job = buildJob({
      streamId,
      model: body.model,
      request: toChatRequest(body, streaming ? body.stream_options?.include_usage === true : true),
      routing,
      keyId: keyName,
      session: sessionFrom(request.headers),
      traceContext: clientTraceContext(request.headers),
      now,
    });
    const reader = await context.streams.open(job);
    // Fields, not a child logger: a pino child per stream cost CPU and 1.9 KB of heap for as long as the stream was open.
    request.log.debug({ stream_id: streamId, model: body.model, streaming }, "stream submitted");
    const chunkContext: ChunkContext = { id: `chatcmpl-${streamId}`, created: Math.floor(now / 1000), model: body.model };
    const format = !streaming ? "json" : (request.headers.accept ?? "").includes("application/x-ndjson") ? "ndjson" : "sse";
    reply.hijack();
    let untrack: () => void = () => {};
    let ended = false;
    const handle: OpenStream = writeStream({
      reader,
      response: reply.raw,
      wire: openAIWire(format, chunkContext),
      heartbeatIntervalMs: context.options.heartbeatInterval,
      holdHeaders: { afterWaitingMs: context.options.holdHeaders, maxMs: context.options.holdHeadersMax },
      maxBufferBytes: context.options.maxClientBufferBytes,
      stuckClientTimeoutMs: context.options.stuckClientTimeout,
      headers: { "x-runnel-resume-token": context.auth.resumeToken(streamId) },
      onSlowClient: (kind) => context.telemetry.slowClient(format, kind),
      onAbandon: (reason, detach) => {
        request.log.info({ stream_id: streamId, reason, detach }, "client left the stream");
        context.streams.abandoned(streamId, reason, detach);
      },
      onEnd: () => {
        ended = true;
        untrack();
      },
    });
    untrack = context.track(handle, format);
    if (ended) untrack();
    return reply;
  });
}
