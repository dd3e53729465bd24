/**
 * The ingress: the public HTTP front door. It checks the caller, validates
 * the request, picks routes from its last routing snapshot, opens the stream
 * (joins its live feed, then submits the job) and writes each event to the
 * client the moment it arrives. Routes live in routes/ (the WebSocket's
 * protocol, session and flow control in ws-*.ts); every API opens a stream
 * through submit.ts and serves it through serve.ts; the stream machinery
 * every transport shares lives in streams.ts.
 */

import type { IncomingMessage } from "node:http";
import { registerConsole } from "@runnel/console";
import { controlPlane, openAIErrorBody, type RunnelConfig, RunnelError } from "@runnel/shared/contracts";
import { RoutingTable } from "@runnel/shared/domain";
import {
  type Bus,
  type ControlPlaneLink,
  type Logger,
  type Metrics,
  noopMeter,
  PROMETHEUS_CONTENT_TYPE,
  StreamRecords,
  setHttpRoute,
} from "@runnel/shared/runtime";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, LogController } from "fastify";
import { Auth } from "./auth.js";
import { ConsoleFeed } from "./console-feed.js";
import { httpError, openAIErrors } from "./http-errors.js";
import { registerChatCompletions } from "./routes/chat-completions.js";
import { type ConsoleApiOptions, registerConsoleApi } from "./routes/console-api.js";
import type { RouteContext } from "./routes/context.js";
import { registerCors } from "./routes/cors.js";
import { registerMessages } from "./routes/messages.js";
import { registerStreamRoutes } from "./routes/streams.js";
import { registerWebSocket } from "./routes/ws.js";
import type { OpenStream } from "./stream-writer.js";
import { StreamService } from "./streams.js";
import { IngressTelemetry } from "./telemetry.js";

export interface IngressDeps {
  readonly bus: Bus;
  /** Job-queue settings, which tell how long a job may wait and how often workers refresh running streams. */
  readonly busOptions: Readonly<RunnelConfig["bus"]>;
  readonly link: ControlPlaneLink;
  readonly log: Logger;
  readonly instanceId: string;
  readonly options: Readonly<RunnelConfig["ingress"]>;
  /**
   * Signs resume tokens (runnel.yaml `auth.resumeSecret`, the same on every
   * replica). The API keys themselves come with the routing snapshot.
   */
  readonly resumeSecret?: string | undefined;
  /** Recorded on; absent: no metrics. */
  readonly metrics?: Metrics;
  /** Serve GET /metrics on the app's own port (default true; false when METRICS_PORT serves it). */
  readonly metricsOnAppPort?: boolean;
  /** The web console (runnel.yaml `console`, the trace backend's settings); absent: served, inspector closed without auth. */
  readonly console?: ConsoleApiOptions & { readonly enabled: boolean };
}

export interface Ingress {
  readonly app: FastifyInstance;
  readonly streams: StreamService;
  /** Starts following routing snapshots. */
  start(): void;
  ready(): { ready: boolean; reasons: string[] };
  /** Fails readiness and refuses new requests; open streams go on. */
  beginShutdown(): void;
  /** Waits up to `graceMs` for open streams, ends the rest with an explicit shutdown error (they may resume elsewhere), closes. */
  close(graceMs: number): Promise<void>;
}

export function buildIngress(deps: IngressDeps): Ingress {
  const { bus, link, log, options } = deps;
  const auth = new Auth({ resumeSecret: deps.resumeSecret });
  const telemetry = new IngressTelemetry(deps.metrics?.meter ?? noopMeter());
  const streams = new StreamService({ bus, records: new StreamRecords(bus.records), link, log, auth, options, busOptions: deps.busOptions, telemetry });
  const open = new Set<OpenStream>();
  const consoleOptions = deps.console ?? { enabled: true, inspectorWithoutAuth: false };
  const consoleFeed = consoleOptions.enabled ? new ConsoleFeed({ bus, link, log, instanceId: deps.instanceId }) : undefined;
  let table: RoutingTable | undefined;
  let closing = false;

  const app: FastifyInstance = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    // Streams log their own lines (submitted, resumed, left); a line per request would be noise.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: options.bodyLimitBytes,
    // No wall-clock limit anywhere on the path: streams last as long as the generation.
    requestTimeout: 0,
    connectionTimeout: 0,
    keepAliveTimeout: 75_000,
    // Every route that opens a stream refuses itself while closing (the resume route with a reconnect hint, not a 503).
    return503OnClosing: false,
  });

  // An empty body with a JSON content type is no body, not an error: clients
  // that set one header on every call (DELETE /v1/streams/{id} included)
  // must be able to send bodiless requests. A route that needs a body still
  // says so, with a 400 naming it.
  const json = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (request, body, done) => {
    if (body.length === 0) done(null, undefined);
    else json(request, body as string, done);
  });

  // The request's server span (HTTP instrumentation) is named by its route, not its URL.
  app.addHook("onRequest", (request, _reply, done) => {
    setHttpRoute(request.routeOptions.url);
    done();
  });

  // While shutting down, no connection outlives its response: keep-alive
  // connections are pinned to this replica (a load balancer moves connections,
  // not requests), and a client's next request must reach another one.
  app.addHook("onSend", async (request, reply, payload) => {
    if (closing) void reply.header("connection", "close");
    else if (!request.raw.complete && reply.statusCode >= 400) lingerForUpload(request.raw, reply);
    return payload;
  });

  // The one mapping of anything thrown to a RunnelError; the route's API renders it (OpenAI's shape unless the route says otherwise).
  app.setErrorHandler((error, request, reply) => {
    const runnel = httpError(error, options.bodyLimitBytes);
    if (runnel.httpStatus >= 500) request.log.error({ err: error, code: runnel.code }, "request failed");
    const answer = (request.routeOptions.config.errors ?? openAIErrors)(runnel);
    void reply.code(answer.status).headers(answer.headers).send(answer.body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(openAIErrorBody("RUNNEL_ERR_INVALID_REQUEST", `no route ${request.method} ${request.url}`));
  });

  const readiness = () => {
    const reasons: string[] = [];
    if (closing) reasons.push("shutting down");
    if (!table) reasons.push("no routing snapshot yet");
    else if (!table.snapshot.clientAuth) reasons.push("no client auth in the routing snapshot");
    if (!bus.connected()) reasons.push("not connected to NATS");
    return { ready: reasons.length === 0, reasons };
  };

  app.get("/healthz", async () => ({ status: "ok" }));
  const { metrics } = deps;
  if (metrics && deps.metricsOnAppPort !== false) {
    app.get("/metrics", async (_request, reply) => reply.header("content-type", PROMETHEUS_CONTENT_TYPE).send(await metrics.render()));
  }
  app.get("/readyz", async (_request, reply) => {
    const state = readiness();
    return reply.code(state.ready ? 200 : 503).send({ status: state.ready ? "ready" : "not ready", reasons: state.reasons });
  });

  const context: RouteContext = {
    streams,
    auth,
    log,
    options,
    telemetry,
    routing: () => {
      if (!table) throw new RunnelError("RUNNEL_ERR_NOT_READY", "no routing snapshot received from the control plane yet");
      return table;
    },
    closing: () => closing,
    refuseIfClosing: () => {
      if (closing) throw new RunnelError("RUNNEL_ERR_SHUTTING_DOWN", "this ingress is shutting down; retry");
    },
    track: (stream, transport) => {
      open.add(stream);
      const ended = telemetry.streamOpened(transport);
      const unserved = consoleFeed?.served(stream, transport);
      return () => {
        open.delete(stream);
        ended();
        unserved?.();
      };
    },
  };

  app.get("/v1/models", async (request) => {
    auth.identify(request.headers);
    const current = context.routing();
    return {
      object: "list",
      data: current.modelNames.map((id) => ({ id, object: "model", created: Math.floor(current.snapshot.createdAtMs / 1000), owned_by: "runnel" })),
    };
  });
  registerCors(app, context);
  registerChatCompletions(app, context);
  registerMessages(app, context);
  registerStreamRoutes(app, context);
  registerWebSocket(app, context);
  if (consoleFeed) {
    registerConsole(app, { log });
    registerConsoleApi(app, context, consoleFeed, consoleOptions);
  }

  return {
    app,
    streams,
    start() {
      link.watchRouting(controlPlane.DataPlaneRole.DATA_PLANE_ROLE_INGRESS, deps.instanceId, (snapshot) => {
        table = new RoutingTable(snapshot);
        const keys = auth.apply(snapshot.clientAuth);
        log.info({ routingVersion: snapshot.version, models: table.modelNames, apiKeys: keys.keys }, "routing snapshot applied");
        if (!keys.changed) return;
        if (!snapshot.clientAuth) log.error("the control plane sent no client auth (an older version?): every request is refused until it does");
        else if (keys.open) log.warn("NO AUTH: runnel.yaml has no auth section, so anyone who can reach this ingress can use it");
        else {
          log.info({ apiKeys: keys.keys }, "API keys applied");
          if (auth.ephemeralSecret) log.warn("auth.resumeSecret is not set: resume tokens work only on the ingress replica that issued them");
        }
      });
    },
    ready: readiness,
    beginShutdown() {
      closing = true;
      app.server.closeIdleConnections();
    },
    async close(graceMs) {
      closing = true;
      const deadline = Date.now() + graceMs;
      do {
        // Idle keep-alive connections (a stream that ended during the drain leaves one) go too, for the same reason.
        app.server.closeIdleConnections();
        if (open.size > 0) await new Promise((resolve) => setTimeout(resolve, 100));
      } while (open.size > 0 && Date.now() < deadline);
      app.server.closeIdleConnections();
      for (const stream of [...open]) stream.shutdown();
      await app.close();
      consoleFeed?.close();
      streams.close();
      link.close();
    },
  };
}

/** How long the rest of a refused upload is read and discarded before the connection is dropped. */
const UPLOAD_LINGER_MS = 5_000;

/**
 * An answer sent before the request's body was read (a body over the limit,
 * malformed JSON): Fastify marks it `Connection: close`, and Node then closes
 * the socket while the client is still uploading. Unread data at close makes
 * the kernel send a reset, and a reset discards what the client had not read
 * yet: the 413 itself, often (seen in CI as EPIPE with no answer). Instead the
 * rest of the body is read and discarded, for at most UPLOAD_LINGER_MS (then
 * the socket is dropped), so the client gets its answer; the connection stays
 * usable for its next request.
 */
function lingerForUpload(raw: IncomingMessage, reply: FastifyReply): void {
  reply.removeHeader("connection");
  const socket = raw.socket;
  const timer = setTimeout(() => socket.destroy(), UPLOAD_LINGER_MS);
  timer.unref();
  // After the body's end, or with the socket: either way the timer has nothing left to do.
  raw.once("close", () => clearTimeout(timer));
  raw.resume();
}
