/**
 * The worker: registers with the control plane, follows its routing
 * snapshots, pulls jobs from the JetStream work queue only while it has a
 * free slot, and runs each one with its own AbortController, which a cancel
 * (over NATS), a shutdown or a provider timeout fires.
 */
import { context } from "@opentelemetry/api";
import {
  type Bus,
  CANCEL_SUBJECT_TEMPLATE,
  type ControlPlaneLink,
  cancelSubject,
  controlPlane,
  decodeJob,
  extractContext,
  HEALTH_OUTCOMES_SUBJECT,
  HealthBook,
  healthSettings,
  JOBS_CONSUMER,
  JOBS_STREAM,
  JOBS_SUBJECT,
  type JsMsg,
  type Logger,
  OutcomeKind,
  processMessage,
  RoutingTable,
  RunnelAttributes,
  recordFailure,
  routeKey,
  StreamRecords,
  serveDrain,
  startProcessSpan,
} from "@runnel/shared";

import { EventPublisher } from "./event-publisher.js";
import { CancelReason, HandOff, runJob } from "./job-runner.js";
import { AgentPool, createAdapters, DEFAULT_RETRY_POLICY } from "./providers/index.js";
import type { OutcomeReport } from "./route-runner.js";
import type { ObserveJob } from "./stream-observer.js";

type JobConsumer = Awaited<ReturnType<Bus["js"]["consumers"]["get"]>>;
type PullRequest = Awaited<ReturnType<JobConsumer["fetch"]>>;

/** Concurrent pull requests a worker keeps open while it has free slots. */
const PULL_LANES = 16;

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
  /** Stops taking jobs, lets running streams finish for up to `timeoutMs`, then ends the rest with RUNNEL_ERR_SHUTTING_DOWN. */
  drain(timeoutMs: number): Promise<void>;
  ready(): { ready: boolean; reasons: string[] };
  readonly inFlight: number;
  /** Taking no new jobs (a drain order or a shutdown). */
  readonly draining: boolean;
}

export function buildWorker(deps: WorkerDeps): Worker {
  const { bus, link, workerId } = deps;
  const log = deps.log;
  const records = new StreamRecords(bus.records);
  const agents = new AgentPool();
  let malformedChunks = 0;
  const adapterFor = createAdapters(agents, {
    onMalformedChunk: (reason) => {
      malformedChunks += 1;
      log.warn({ reason, malformedChunks }, "skipped a malformed provider chunk");
    },
    // From the routing snapshot, so a config reload reaches running workers.
    retryPolicy: (provider) =>
      provider.retries && provider.retries.maxAttempts > 0
        ? {
            maxAttempts: provider.retries.maxAttempts,
            budgetMs: provider.retries.budgetMs,
            baseDelayMs: provider.retries.baseDelayMs,
            maxDelayMs: provider.retries.maxDelayMs,
          }
        : DEFAULT_RETRY_POLICY,
    onRetry: ({ provider, attempt, delayMs, error }) => {
      log.warn({ provider, attempt, delayMs, code: error.code, err: error.message }, "provider attempt failed before the first token; retrying");
    },
  });
  const running = new Map<string, Running>();
  /**
   * The job pulls waiting at the server. A drain withdraws them: otherwise the
   * server goes on offering new jobs to this worker for up to 5 s, each is
   * NAKed, and a job NAKed `max_deliver` (5) times by the 16 waiting pulls is
   * never delivered again: its client waits until the job's max age.
   */
  const pulls = new Set<PullRequest>();
  const publisher = new EventPublisher(bus.nc);
  let table: RoutingTable | undefined;
  const health = new HealthBook((provider) => healthSettings(table?.provider(provider)));
  // Every worker's outcomes (this one's are applied when they happen).
  const outcomeSubscription = bus.nc.subscribe(HEALTH_OUTCOMES_SUBJECT, {
    callback: (error, message) => {
      if (error) return;
      try {
        const outcome = controlPlane.RouteOutcome.decode(message.data);
        if (outcome.workerId !== workerId) health.apply(outcome);
      } catch (decodeError) {
        log.warn({ err: decodeError }, "undecodable route outcome; ignored");
      }
    },
  });
  const inFlightByRoute = new Map<string, number>();
  const report = (outcome: OutcomeReport) => {
    const key = routeKey(outcome.route);
    let count = inFlightByRoute.get(key) ?? 0;
    // STARTED opens a request on the route; every outcome but FIRST_TOKEN ends one.
    if (outcome.kind === OutcomeKind.OUTCOME_KIND_STARTED) count += 1;
    else if (outcome.kind !== OutcomeKind.OUTCOME_KIND_FIRST_TOKEN) count = Math.max(0, count - 1);
    if (count === 0) inFlightByRoute.delete(key);
    else inFlightByRoute.set(key, count);
    const message: controlPlane.RouteOutcome = {
      provider: outcome.route.provider,
      model: outcome.route.model,
      workerId,
      kind: outcome.kind,
      ttftMs: outcome.ttftMs ?? 0,
      retryAfterMs: outcome.retryAfterMs ?? 0,
      tokens: outcome.tokens ?? 0,
      errorCode: outcome.errorCode ?? "",
      atMs: Date.now(),
      workerInFlight: count,
    };
    health.apply(message);
    if (!bus.nc.isClosed()) bus.nc.publish(HEALTH_OUTCOMES_SUBJECT, controlPlane.RouteOutcome.encode(message).finish());
  };
  let draining = false;
  let pulling = false;
  const slotWaiters: (() => void)[] = [];
  const wakeSlots = () => {
    for (const wake of slotWaiters.splice(0)) wake();
  };

  const cancelSubscription = bus.nc.subscribe(cancelSubject(workerId), {
    callback: (error, message) => {
      if (error) return;
      const request = controlPlane.CancelStreamRequest.decode(message.data);
      const entry = running.get(request.streamId);
      if (!entry) return;
      // In the trace of whatever caused the cancel (the client's request, through the control plane).
      processMessage(
        { subject: message.subject, template: CANCEL_SUBJECT_TEMPLATE, bodySize: message.data.length },
        message.headers,
        () => {
          log.info({ stream_id: request.streamId, reason: request.reason }, "cancel received; aborting the provider request");
          entry.controller.abort(new CancelReason("RUNNEL_ERR_CANCELLED", request.reason || "cancelled"));
        },
        { [RunnelAttributes.STREAM_ID]: request.streamId },
      );
    },
  });

  // A drain ordered through the control plane (DrainWorker): take no new jobs,
  // let the running streams finish, report draining, and stay up.
  const drainSubscription = serveDrain(bus.nc, workerId, () => {
    if (draining) return;
    draining = true;
    wakeSlots();
    log.info({ streams: running.size }, "drain ordered; taking no new jobs, running streams finish");
  });

  const heartbeat = (): controlPlane.WorkerHeartbeat => {
    const inFlightByProvider: Record<string, number> = {};
    for (const entry of running.values()) if (entry.provider) inFlightByProvider[entry.provider] = (inFlightByProvider[entry.provider] ?? 0) + 1;
    return { inFlight: running.size, capacity: deps.concurrency, streamIds: [...running.keys()], draining, inFlightByProvider };
  };

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
    const entry: Running = {
      controller,
      provider: undefined,
      done: context
        .bind(processing, runJob)(
          { bus, publisher, records, workerId, log, routing: () => table, adapterFor, health, report, ...(deps.observe ? { observe: deps.observe } : {}) },
          job,
          controller,
          {
            onProvider: (provider) => {
              entry.provider = provider;
            },
            // Well within the ack deadline: redelivery only follows a dead worker.
            keepAlive: () => message.working(),
            keepAliveMs: Math.max(100, Math.floor(deps.ackWaitMs / 3)),
          },
        )
        .then(
          (outcome) => {
            span.end();
            // Awaited, so a drain does not close NATS before the job is back in the queue.
            if (outcome === "handed-off") return handBack(message, job.streamId);
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
          wakeSlots();
        }),
    };
    running.set(job.streamId, entry);
  };

  /**
   * Puts a handed-off stream's job back in the queue for another worker to
   * take the stream over at once. As a fresh message, not a NAK: a NAK counts
   * against the consumer's delivery limit, so a stream handed over a few
   * times in a rollout would never be delivered again.
   */
  const handBack = (message: JsMsg, streamId: string): Promise<void> =>
    bus.js
      .publish(JOBS_SUBJECT, message.data, {
        msgID: `${streamId}.handoff.${message.info.streamSequence}`,
        timeout: 5_000,
        ...(message.headers ? { headers: message.headers } : {}),
      })
      .then(
        () => message.ack(),
        (error: unknown) => {
          log.warn({ err: error, stream_id: streamId }, "republishing a handed-off job failed; returning it with a NAK");
          message.nak();
        },
      );

  /**
   * Pulls jobs on PULL_LANES concurrent pull requests, never holding more
   * than the free slots: one pull at a time dispatched a burst of 500 jobs
   * one round trip after another (about 1 s to the last first token).
   */
  const pullLoop = async () => {
    const consumer: JobConsumer = await bus.js.consumers.get(JOBS_STREAM, JOBS_CONSUMER);
    let reserved = 0;
    const lane = async () => {
      while (!draining) {
        if (running.size + reserved >= deps.concurrency) {
          await new Promise<void>((resolve) => slotWaiters.push(resolve));
          continue;
        }
        if (!table) {
          await new Promise((resolve) => setTimeout(resolve, 50));
          continue;
        }
        reserved += 1;
        let message: JsMsg | null = null;
        try {
          // consumer.next() with a handle: drain() withdraws the request (see `pulls`).
          const pull = await consumer.fetch({ max_messages: 1, expires: 5_000 });
          pulls.add(pull);
          try {
            for await (const each of pull) {
              message = each;
              break;
            }
          } finally {
            pulls.delete(pull);
            pull.stop();
          }
        } catch (error) {
          reserved -= 1;
          if (draining) break;
          log.warn({ err: error }, "pulling a job failed; retrying");
          await new Promise((resolve) => setTimeout(resolve, 500));
          continue;
        }
        reserved -= 1;
        if (!message) continue;
        if (draining) {
          // Taken while shutting down: hand it straight back for another worker.
          message.nak();
          break;
        }
        handle(message);
      }
    };
    pulling = true;
    await Promise.all(Array.from({ length: Math.min(PULL_LANES, deps.concurrency) }, lane));
    pulling = false;
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
      pullLoop().catch((error: unknown) => {
        pulling = false;
        log.fatal({ err: error }, "job pull loop stopped");
      });
    },
    ready() {
      const reasons: string[] = [];
      if (draining) reasons.push("draining");
      if (!table) reasons.push("no routing snapshot yet");
      if (!bus.connected()) reasons.push("not connected to NATS");
      if (!pulling && !draining) reasons.push("not pulling jobs");
      return { ready: reasons.length === 0, reasons };
    },
    async drain(timeoutMs) {
      draining = true;
      wakeSlots();
      for (const pull of pulls) pull.stop();
      const all = Promise.all([...running.values()].map((entry) => entry.done));
      const timer = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), timeoutMs).unref());
      if ((await Promise.race([all, timer])) === "timeout") {
        log.warn({ streams: running.size }, "drain timed out; handing the remaining streams to other workers");
        for (const entry of running.values()) entry.controller.abort(new HandOff());
        await all;
      }
      cancelSubscription.unsubscribe();
      outcomeSubscription.unsubscribe();
      drainSubscription.unsubscribe();
      publisher.close();
      link.close();
      await agents.close();
    },
  };
}
