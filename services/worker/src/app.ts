/**
 * The worker: registers with the control plane, follows its routing
 * snapshots, takes jobs from the JetStream work queue only while it has a
 * free slot (job-intake.ts), and runs each one (job-runner.ts) with its own
 * AbortController, which a cancel (control-orders.ts), a shutdown or a
 * provider timeout fires. Route outcomes go to and come from the shared
 * health feed (health-feed.ts).
 */
import { context } from "@opentelemetry/api";
import { controlPlane, decodeJob, JOBS_CONSUMER, JOBS_SUBJECT } from "@runnel/shared/contracts";
import { HealthBook, healthSettings, RoutingTable } from "@runnel/shared/domain";
import {
  type Bus,
  type ControlPlaneLink,
  extractContext,
  type JsMsg,
  type Logger,
  RunnelAttributes,
  recordFailure,
  StreamRecords,
  startProcessSpan,
} from "@runnel/shared/runtime";
import { listenForOrders } from "./control-orders.js";
import { EventPublisher } from "./event-publisher.js";
import { HealthFeed } from "./health-feed.js";
import { JobIntake } from "./job-intake.js";
import { CancelReason, HandOff, runJob } from "./job-runner.js";
import { AgentPool, createAdapters, retryPolicyFromSpec } from "./providers/index.js";
import type { ObserveJob } from "./stream-observer.js";

export interface WorkerDeps {
  readonly bus: Bus;
  readonly link: ControlPlaneLink;
  readonly log: Logger;
  readonly workerId: string;
  readonly version: string;
  readonly concurrency: number;
  /** The job queue's ack deadline; running jobs are kept alive well within it. */
  readonly ackWaitMs: number;
  /** Telemetry per stream; absent: none. */
  readonly observe?: ObserveJob;
}

interface Running {
  readonly controller: AbortController;
  provider: string | undefined;
  readonly done: Promise<void>;
}

export interface Worker {
  start(): void;
  /** Stops taking jobs, lets running streams finish for up to `timeoutMs`, then hands the rest to other workers. */
  drain(timeoutMs: number): Promise<void>;
  ready(): { ready: boolean; reasons: string[] };
  readonly inFlight: number;
  /** Taking no new jobs (a drain order or a shutdown). */
  readonly draining: boolean;
}

export function buildWorker(deps: WorkerDeps): Worker {
  const { bus, link, workerId, log } = deps;
  const records = new StreamRecords(bus.records);
  const agents = new AgentPool();
  let malformedChunks = 0;
  const adapterFor = createAdapters(agents, {
    onMalformedChunk: (reason) => {
      malformedChunks += 1;
      log.warn({ reason, malformedChunks }, "skipped a malformed provider chunk");
    },
    // From the routing snapshot, so a config reload reaches running workers.
    retryPolicy: (provider) => retryPolicyFromSpec(provider.retries),
    onRetry: ({ provider, attempt, delayMs, error }) => {
      log.warn({ provider, attempt, delayMs, code: error.code, err: error.message }, "provider attempt failed before the first token; retrying");
    },
  });
  const running = new Map<string, Running>();
  const publisher = new EventPublisher(bus.nc);
  let table: RoutingTable | undefined;
  const feed = new HealthFeed(bus, workerId, new HealthBook((provider) => healthSettings(table?.provider(provider))), log);
  let draining = false;
  const intake = new JobIntake({
    bus,
    log,
    concurrency: deps.concurrency,
    running: () => running.size,
    canTake: () => table !== undefined,
    onJob: (message) => handle(message),
  });
  const stopTaking = () => {
    draining = true;
    intake.stop();
  };
  const orders = listenForOrders(
    bus,
    workerId,
    {
      cancel: (streamId, reason) => {
        const entry = running.get(streamId);
        entry?.controller.abort(new CancelReason("RUNNEL_ERR_CANCELLED", reason));
        return entry !== undefined;
      },
      // Take no new jobs, let the running streams finish, report draining, and stay up.
      drain: () => {
        if (draining) return;
        stopTaking();
        log.info({ streams: running.size }, "drain ordered; taking no new jobs, running streams finish");
      },
    },
    log,
  );

  const heartbeat = (): controlPlane.WorkerHeartbeat => {
    const inFlightByProvider: Record<string, number> = {};
    for (const entry of running.values()) if (entry.provider) inFlightByProvider[entry.provider] = (inFlightByProvider[entry.provider] ?? 0) + 1;
    return { inFlight: running.size, capacity: deps.concurrency, streamIds: [...running.keys()], draining, inFlightByProvider };
  };

  /** Runs one job from the queue, in its consumer span; acks it at the end, or hands it back. */
  const handle = (message: JsMsg) => {
    let job: ReturnType<typeof decodeJob>;
    try {
      job = decodeJob(message.data);
    } catch (error) {
      log.error({ err: error }, "undecodable job; dropping it");
      message.term("undecodable");
      return;
    }
    if (!job.streamId || running.has(job.streamId)) {
      message.term("duplicate or empty stream id");
      return;
    }
    const controller = new AbortController();
    // The job's consumer span is the stream on this worker, child of the request that queued the job; the job runs in it.
    const { span, context: processing } = startProcessSpan(
      { subject: JOBS_SUBJECT, consumerGroup: JOBS_CONSUMER, messageId: job.streamId, bodySize: message.data.length },
      extractContext(job.traceContext),
      { [RunnelAttributes.STREAM_ID]: job.streamId, [RunnelAttributes.MODEL]: job.model, "runnel.job.deliveries": message.info.deliveryCount },
    );
    const jobContext = {
      bus,
      publisher,
      records,
      workerId,
      log,
      routing: () => table,
      adapterFor,
      health: feed.health,
      report: (outcome: Parameters<HealthFeed["report"]>[0]) => feed.report(outcome),
      ...(deps.observe ? { observe: deps.observe } : {}),
    };
    const entry: Running = {
      controller,
      provider: undefined,
      done: context
        .bind(processing, runJob)(jobContext, job, controller, {
          onProvider: (provider) => {
            entry.provider = provider;
          },
          // Well within the ack deadline: redelivery only follows a dead worker.
          keepAlive: () => message.working(),
          keepAliveMs: Math.max(100, Math.floor(deps.ackWaitMs / 3)),
        })
        .then(
          (outcome) => {
            span.end();
            // Awaited, so a drain does not close NATS before the job is back in the queue.
            if (outcome === "handed-off") return intake.handBack(message, job.streamId);
            message.ack();
            return undefined;
          },
          (error: unknown) => {
            recordFailure(span, error);
            span.end();
            log.error({ err: error, stream_id: job.streamId }, "job failed outside the stream (NATS?); leaving it for redelivery");
            message.nak(1_000);
          },
        )
        .finally(() => {
          running.delete(job.streamId);
          intake.slotFreed();
        }),
    };
    running.set(job.streamId, entry);
  };

  return {
    get inFlight() {
      return running.size;
    },
    get draining() {
      return draining;
    },
    start() {
      link.watchRouting(controlPlane.DataPlaneRole.DATA_PLANE_ROLE_WORKER, workerId, (snapshot) => {
        table = new RoutingTable(snapshot);
        log.info({ routingVersion: snapshot.version }, "routing snapshot applied");
      });
      link.register({ workerId, version: deps.version, capacity: deps.concurrency }, heartbeat, 2_000);
      intake.run().catch((error: unknown) => log.fatal({ err: error }, "job pull loop stopped"));
    },
    ready() {
      const reasons: string[] = [];
      if (draining) reasons.push("draining");
      if (!table) reasons.push("no routing snapshot yet");
      if (!bus.connected()) reasons.push("not connected to NATS");
      if (!intake.pulling && !draining) reasons.push("not pulling jobs");
      return { ready: reasons.length === 0, reasons };
    },
    async drain(timeoutMs) {
      stopTaking();
      const all = Promise.all([...running.values()].map((entry) => entry.done));
      const timer = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), timeoutMs).unref());
      if ((await Promise.race([all, timer])) === "timeout") {
        log.warn({ streams: running.size }, "drain timed out; handing the remaining streams to other workers");
        for (const entry of running.values()) entry.controller.abort(new HandOff());
        await all;
      }
      orders.close();
      feed.close();
      publisher.close();
      link.close();
      await agents.close();
    },
  };
}
