/**
 * Minimal CORS for browsers calling the HTTP API from another origin
 * (`ingress.corsOrigins`). Preflights are answered here; every other
 * response from an allowed origin carries the CORS headers. Headers are set
 * on the raw response, so streaming replies (which write their own head)
 * carry them too. No origins configured: no CORS headers at all.
 * WebSocket upgrades are not subject to CORS and do not pass through here.
 */
import type { FastifyInstance } from "fastify";
import type { RouteContext } from "./context.js";

/** Request headers a browser may send cross-origin. */
const ALLOWED_HEADERS = "authorization, content-type, accept, x-api-key, x-runnel-resume-token, last-event-id";
/** Response headers a browser script may read: the stream id and resume token of a streaming completion. */
const EXPOSED_HEADERS = "x-runnel-stream-id, x-runnel-resume-token";
const ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS";
/** Seconds a browser may cache a preflight answer. */
const PREFLIGHT_MAX_AGE = "600";

export function registerCors(app: FastifyInstance, context: RouteContext): void {
  const configured = context.options.corsOrigins ?? [];
  if (configured.length === 0) return;
  const anyOrigin = configured.includes("*");
  // Compare origins, not URLs: `https://a.example/` in the config matches `Origin: https://a.example`.
  const origins = new Set(configured.filter((origin) => origin !== "*").map((origin) => new URL(origin).origin));

  app.addHook("onRequest", async (request, reply) => {
    const origin = request.headers.origin;
    if (typeof origin !== "string" || !(anyOrigin || origins.has(origin))) return undefined;
    const response = reply.raw;
    response.setHeader("access-control-allow-origin", anyOrigin ? "*" : origin);
    if (!anyOrigin) response.setHeader("vary", "origin");
    response.setHeader("access-control-expose-headers", EXPOSED_HEADERS);
    if (request.method === "OPTIONS" && request.headers["access-control-request-method"] !== undefined) {
      response.setHeader("access-control-allow-methods", ALLOWED_METHODS);
      response.setHeader("access-control-allow-headers", ALLOWED_HEADERS);
      response.setHeader("access-control-max-age", PREFLIGHT_MAX_AGE);
      return reply.code(204).send();
    }
    return undefined;
  });
}
