/**
 * The ingress: the OpenAI-compatible HTTP front door. It validates a request,
 * picks the routes from its last routing snapshot, opens the stream's
 * subscription, submits the job, and writes each event to the client the
 * moment it arrives. A client that leaves cancels the stream, which aborts
 * the provider request.
 */
import {
  type Bus,
  type ControlPlaneLink,
  cancelStream,
  controlPlane,
  encodeJob,
  JOBS_SUBJECT,
  type Job,
  type Logger,
  newStreamId,
  openAIErrorBody,
  RoutingTable,
  type RunnelConfig,
  RunnelError,
  StreamRecords,
  toRunnelError,
} from "@runnel/shared";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { ChunkContext } from "./openai-encoder.js";
import { parseChatCompletionRequest, toChatRequest } from "./openai-request.js";
import { judgeQuietStream, type StallPolicy } from "./stall-watch.js";
import { StreamSession } from "./stream-session.js";
import { type OpenStream, type WireFormat, writeStream } from "./stream-writer.js";

/** An open response and what the stall watch knows of it. */
interface WatchedStream {
  readonly session: StreamSession;
  readonly handle: OpenStream;
  readonly createdAtMs: number;
  /** `session.received` at the last tick. */
  seen: number;
  quietSince: number;
  checking: boolean;
}

export interface IngressDeps {
  readonly bus: Bus;
  /** Job-queue settings, which tell how long a job may wait and how often workers refresh running streams. */
  readonly busOptions: Readonly<RunnelConfig["bus"]>;
  readonly link: ControlPlaneLink;
  readonly log: Logger;
  readonly instanceId: string;
  readonly options: Readonly<RunnelConfig["ingress"]>;
}

export interface Ingress {
  readonly app: FastifyInstance;
  /** Starts following routing snapshots. */
  start(): void;
  ready(): { ready: boolean; reasons: string[] };
  /** Fails readiness and refuses new requests; open streams go on. */
  beginShutdown(): void;
  /** Fails readiness, ends open streams with an explicit shutdown error after `graceMs`, closes. */
  close(graceMs: number): Promise<void>;
}

export function buildIngress(deps: IngressDeps): Ingress {
  const { bus, link, log, options } = deps;
  const records = new StreamRecords(bus.records);
  const open = new Set<WatchedStream>();
  const stallPolicy: StallPolicy = {
    quietMs: Math.max(options.heartbeatInterval * 2, 1_000),
    jobMaxAgeMs: deps.busOptions.jobMaxAge + 5_000,
    // Workers refresh a running stream's record every third of the ack deadline.
    workerLostMs: deps.busOptions.jobAckWait * 2,
  };
  let table: RoutingTable | undefined;
  let closing = false;

  const app: FastifyInstance = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    disableRequestLogging: true,
    bodyLimit: options.bodyLimitBytes,
    // No wall-clock limit anywhere on the path: streams last as long as the generation.
    requestTimeout: 0,
    connectionTimeout: 0,
    keepAliveTimeout: 75_000,
    return503OnClosing: true,
  });

  /** Cancels through the control plane; if no replica answers, runs the same steps here. */
  const cancel = (streamId: string, reason: string) => {
    link.cancel(streamId, reason, 2_000).catch((error: unknown) => {
      log.warn({ stream_id: streamId, err: (error as Error).message }, "control plane did not take the cancel; cancelling directly");
      cancelStream(records, bus.nc, streamId, reason).catch((fallbackError: unknown) =>
        log.error({ stream_id: streamId, err: fallbackError }, "cancel failed"),
      );
    });
  };

  app.setErrorHandler((error, request, reply) => {
    // Fastify's own 4xx errors (malformed JSON, body too large, wrong content type) are the client's.
    const clientStatus = (error as { statusCode?: number }).statusCode;
    const runnel =
      error instanceof RunnelError
        ? error
        : clientStatus !== undefined && clientStatus >= 400 && clientStatus < 500
          ? new RunnelError("RUNNEL_ERR_INVALID_REQUEST", (error as Error).message, { cause: error, httpStatus: clientStatus })
          : toRunnelError(error);
    if (runnel.httpStatus >= 500) request.log.error({ err: error, code: runnel.code }, "request failed");
    void reply.code(runnel.httpStatus).send(openAIErrorBody(runnel.code, runnel.message, runnel.param));
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(openAIErrorBody("RUNNEL_ERR_INVALID_REQUEST", `no route ${request.method} ${request.url}`));
  });

  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_request, reply) => {
    const state = readiness();
    return reply.code(state.ready ? 200 : 503).send({ status: state.ready ? "ready" : "not ready", reasons: state.reasons });
  });

  app.get("/v1/models", async () => {
    const current = requireTable();
    return {
      object: "list",
      data: current.modelNames.map((id) => ({ id, object: "model", created: Math.floor(current.snapshot.createdAtMs / 1000), owned_by: "runnel" })),
    };
  });

  app.post("/v1/chat/completions", async (request: FastifyRequest, reply: FastifyReply) => {
    if (closing) throw new RunnelError("RUNNEL_ERR_SHUTTING_DOWN", "this ingress is shutting down; retry");
    const body = parseChatCompletionRequest(request.body);
    const current = requireTable();
    if (!current.model(body.model)) {
      throw new RunnelError("RUNNEL_ERR_MODEL_NOT_FOUND", `The model \`${body.model}\` does not exist (known: ${current.modelNames.join(", ")})`, {
        param: "model",
      });
    }
    const streaming = body.stream === true;
    const streamId = newStreamId();
    const now = Date.now();
    const job: Job = {
      streamId,
      model: body.model,
      request: toChatRequest(body, streaming ? body.stream_options?.include_usage === true : true),
      routes: current.orderRoutes(body.model),
      createdAtMs: now,
      routingVersion: current.version,
      traceContext: {},
    };
    const context: ChunkContext = { id: `chatcmpl-${streamId}`, created: Math.floor(now / 1000), model: body.model };
    const streamLog = request.log.child({ stream_id: streamId });
    // Subscribe first, then submit: no event can be published before we listen.
    const session = new StreamSession(bus.nc, streamId);
    try {
      await bus.js.publish(JOBS_SUBJECT, encodeJob(job), { msgID: streamId, timeout: 5_000 });
    } catch (error) {
      session.close();
      throw new RunnelError("RUNNEL_ERR_OVERLOADED", "the job could not be queued", { cause: error });
    }
    streamLog.debug({ model: body.model, streaming }, "stream submitted");

    const format: WireFormat = !streaming ? "json" : (request.headers.accept ?? "").includes("application/x-ndjson") ? "ndjson" : "sse";
    reply.hijack();
    const watched: WatchedStream = {
      session,
      createdAtMs: now,
      seen: 0,
      quietSince: now,
      checking: false,
      handle: writeStream({
        session,
        response: reply.raw,
        context,
        format,
        heartbeatIntervalMs: options.heartbeatInterval,
        maxBufferBytes: options.maxClientBufferBytes,
        onAbandon: (reason) => {
          streamLog.info({ reason }, "stream abandoned; cancelling it");
          cancel(streamId, reason);
        },
        onEnd: () => open.delete(watched),
      }),
    };
    open.add(watched);
    return reply;
  });

  const requireTable = (): RoutingTable => {
    if (!table) throw new RunnelError("RUNNEL_ERR_NOT_READY", "no routing snapshot received from the control plane yet");
    return table;
  };

  const readiness = () => {
    const reasons: string[] = [];
    if (closing) reasons.push("shutting down");
    if (!table) reasons.push("no routing snapshot yet");
    if (bus.nc.isClosed()) reasons.push("NATS connection closed");
    return { ready: reasons.length === 0, reasons };
  };

  /** Looks up the records of quiet streams and ends those that can no longer end on their own. */
  const stallTimer = setInterval(
    () => {
      const now = Date.now();
      for (const watched of open) {
        const received = watched.session.received;
        if (received !== watched.seen) {
          watched.seen = received;
          watched.quietSince = now;
          continue;
        }
        if (watched.checking || now - watched.quietSince < stallPolicy.quietMs) continue;
        watched.checking = true;
        records
          .get(watched.session.streamId)
          .then((record) => {
            const verdict = judgeQuietStream(record?.state, watched.createdAtMs, Date.now(), stallPolicy);
            if (verdict.end && !watched.session.ended) {
              log.warn({ stream_id: watched.session.streamId, code: verdict.code }, verdict.message);
              watched.session.fail(verdict.code, verdict.message);
              cancel(watched.session.streamId, verdict.message);
            }
          })
          .catch((error: unknown) => log.warn({ stream_id: watched.session.streamId, err: error }, "stream record check failed"))
          .finally(() => {
            watched.checking = false;
            watched.quietSince = Date.now();
          });
      }
    },
    Math.min(5_000, stallPolicy.quietMs),
  );
  stallTimer.unref();

  return {
    app,
    start() {
      link.watchRouting(controlPlane.DataPlaneRole.DATA_PLANE_ROLE_INGRESS, deps.instanceId, (snapshot) => {
        table = new RoutingTable(snapshot);
        log.info({ routingVersion: snapshot.version, models: table.modelNames }, "routing snapshot applied");
      });
    },
    ready: readiness,
    beginShutdown() {
      closing = true;
    },
    async close(graceMs) {
      closing = true;
      const deadline = Date.now() + graceMs;
      while (open.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      for (const stream of open) stream.handle.shutdown();
      clearInterval(stallTimer);
      await app.close();
      link.close();
    },
  };
}
