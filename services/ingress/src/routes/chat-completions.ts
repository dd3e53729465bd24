/** `POST /v1/chat/completions`: the OpenAI API, streaming (SSE or NDJSON) and not. */
import type { FastifyInstance } from "fastify";
import { openAIWire } from "../openai-encoder.js";
import { chatCompletionsApi } from "../openai-request.js";
import { serveStream } from "../serve.js";
import { openStream } from "../submit.js";
import type { RouteContext } from "./context.js";

export function registerChatCompletions(app: FastifyInstance, context: RouteContext): void {
  app.post("/v1/chat/completions", async (request, reply) => {
    const opened = await openStream(context, { api: chatCompletionsApi, headers: request.headers, body: request.body, log: request.log });
    const { streamId, job } = opened;
    const format = !opened.request.streaming ? "json" : (request.headers.accept ?? "").includes("application/x-ndjson") ? "ndjson" : "sse";
    const chunks = { id: `chatcmpl-${streamId}`, created: Math.floor(job.createdAtMs / 1000), model: job.model };
    return serveStream(context, reply, {
      reader: opened.reader,
      wire: openAIWire(format, chunks),
      transport: format,
      headers: opened.headers,
      holdHeaders: true,
    });
  });
}
