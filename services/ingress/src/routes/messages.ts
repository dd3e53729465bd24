/**
 * `POST /v1/messages`: the Anthropic Messages API, streaming (Anthropic's SSE
 * event sequence) and not, on the same streams as every other route. Every
 * error this route answers is in Anthropic's shape, Fastify's own included
 * (malformed JSON, 413): the route's config names the shape, and the app's
 * one error handler renders it.
 */
import type { FastifyInstance } from "fastify";
import { anthropicErrors, anthropicWire } from "../anthropic-encoder.js";
import { messagesApi } from "../anthropic-request.js";
import { serveStream } from "../serve.js";
import { openStream } from "../submit.js";
import type { RouteContext } from "./context.js";

export function registerMessages(app: FastifyInstance, context: RouteContext): void {
  app.post("/v1/messages", { config: { errors: anthropicErrors } }, async (request, reply) => {
    const opened = await openStream(context, { api: messagesApi, headers: request.headers, body: request.body, log: request.log });
    const { streamId, request: parsed } = opened;
    return serveStream(context, reply, {
      reader: opened.reader,
      wire: anthropicWire(parsed.streaming, streamId, parsed.model),
      transport: parsed.streaming ? "sse" : "json",
      // Anthropic's SDKs expose this header as the request id.
      headers: { ...opened.headers, "request-id": `req_${streamId}` },
      holdHeaders: true,
    });
  });
}
