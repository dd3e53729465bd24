/**
 * Runs one job: claims the stream (compare-and-set, so no two workers ever
 * generate it) or takes it over from a lost worker, streams it across the
 * model's routes (route-runner.ts), publishes every event in order on the
 * stream's subject, and records how the stream ended. Every way out ends the
 * stream with `done` or an explicit `error` event.
 */
import {
  type EventBody,
  EventSequencer,
  encodeEvent,
  errorEvent,
  eventsSubject,
  type Job,
  openAIFinishReason,
  ProviderWaiting,
  type Route,
  RunnelError,
  type StoredRecord,
  StreamPhase,
  signalSubject,
  splitDelta,
  toRunnelError,
  type Usage,
} from "@runnel/shared/contracts";
import { type HealthBook, OutcomeKind, type RoutingTable } from "@runnel/shared/domain";
import { type Bus, deleteRequest, type Logger, loadRequest, type StreamLog, type StreamRecords, storeRequest, streamLog } from "@runnel/shared/runtime";
import type { EventPublisher } from "./event-publisher.js";
import type { ProviderAdapter } from "./providers/index.js";
import { type OutcomeReport, type ResumePoint, RouteRunner } from "./route-runner.js";
import { RunningRecord } from "./running-record.js";
import { NOOP_OBSERVER, type ObserveJob, type StreamObserver } from "./stream-observer.js";
import { takeOver } from "./takeover.js";

export interface JobContext {
  readonly bus: Bus;
  /** Publishes events with acknowledgement from the log, under a window. */
  readonly publisher: EventPublisher;
  readonly records: StreamRecords;
  readonly workerId: string;
  readonly log: Logger;
  readonly routing: () => RoutingTable | undefined;
  readonly adapterFor: (type: string) => ProviderAdapter;
  /** Route health (this worker's outcomes and every other worker's, from the feed). */
  readonly health: HealthBook;
  /** Applies an outcome to `health` and publishes it on the feed. */
  readonly report: (outcome: OutcomeReport) => void;
  /** Telemetry for one stream; absent: none. */
  readonly observe?: ObserveJob;
}

/** `handed-off`: stopped without ending the stream, for another worker to take over (the job goes back to the queue). */
export type JobOutcome = "done" | "failed" | "cancelled" | "skipped" | "handed-off";

/**
 * The worker is shutting down and the stream did not finish within the drain
 * timeout: stop generating without ending it, so another worker takes it over
 * under the model's after-first-token policy.
 */
export class HandOff extends Error {
  constructor() {
    super("worker shutting down; stream handed to another worker");
  }
}

/** Why a stream's AbortController fired. */
export class CancelReason extends Error {
  constructor(
    readonly code: "RUNNEL_ERR_CANCELLED" | "RUNNEL_ERR_SHUTTING_DOWN",
    message: string,
  ) {
    super(message);
  }
}

export interface JobHooks {
  /** Reports the provider serving the stream (undefined once it ended), for heartbeats. */
  readonly onProvider: (provider: string | undefined) => void;
  /** Keeps the job's ack alive; called every `keepAliveMs` while the stream runs. */
  readonly keepAlive: () => void;
  readonly keepAliveMs: number;
}

export async function runJob(context: JobContext, job: Job, controller: AbortController, hooks: JobHooks): Promise<JobOutcome> {
  const { records, workerId } = context;
  const log = streamLog(context.log, { stream_id: job.streamId });
  const observer = context.observe?.(job) ?? NOOP_OBSERVER;
  const now = Date.now();
  const claim = await records.claim({
    streamId: job.streamId,
    phase: StreamPhase.STREAM_PHASE_RUNNING,
    model: job.model,
    owner: workerId,
    provider: "",
    createdAtMs: job.createdAtMs || now,
    updatedAtMs: now,
    lastSeq: 0,
    errorCode: "",
    cancelReason: "",
    keyId: job.keyId,
    epoch: 0,
  });
  const subject = eventsSubject(job.streamId);

  if (!claim.claimed) {
    const existing = claim.existing.state;
    if (existing.phase === StreamPhase.STREAM_PHASE_CANCELLED && !existing.owner) {
      // Cancelled before any worker took it: it never starts. Say so on the
      // stream, so a client still listening ends cleanly.
      await publishTerminal(
        context.bus,
        subject,
        new EventSequencer(job.streamId).next(errorEvent(new RunnelError("RUNNEL_ERR_CANCELLED", existing.cancelReason || "cancelled before start"))),
        log,
      );
      log.info("job cancelled before it started; not generating");
      observer.ended("skipped", { errorCode: "RUNNEL_ERR_CANCELLED" });
      return "skipped";
    }
    if (existing.phase === StreamPhase.STREAM_PHASE_RUNNING) {
      const takeover = await takeOver(context, job, claim.existing, log);
      if (!takeover) {
        observer.ended("skipped", {});
        return "skipped";
      }
      if (takeover.kind === "ended") {
        observer.ended("failed", { errorCode: "RUNNEL_ERR_WORKER_LOST" });
        return "failed";
      }
      return generate(context, job, controller, hooks, observer, log, takeover.record, takeover.sequencer, takeover.resume);
    }
    log.info({ phase: existing.phase, owner: existing.owner }, "stream already ended; dropping the redelivered job");
    observer.ended("skipped", {});
    return "skipped";
  }
  return generate(context, job, controller, hooks, observer, log, claim.record, new EventSequencer(job.streamId), undefined);
}

/** Generates the stream (from its start, or from where a lost worker left it) and records how it ended. */
async function generate(
  context: JobContext,
  job: Job,
  controller: AbortController,
  hooks: JobHooks,
  observer: StreamObserver,
  log: StreamLog,
  claimed: StoredRecord,
  sequencer: EventSequencer,
  resume: ResumePoint | undefined,
): Promise<JobOutcome> {
  const { bus } = context;
  const subject = eventsSubject(job.streamId);
  const record = new RunningRecord(context.records, context.workerId, claimed, log);
  // The job's ack kept alive and the record fresh; a record that changed under it stops this worker at once.
  record.keepFresh(
    hooks.keepAliveMs,
    hooks.keepAlive,
    () => sequencer.last,
    (reason) => controller.abort(new CancelReason("RUNNEL_ERR_CANCELLED", reason)),
  );
  let outcome: JobOutcome = "failed";
  let errorCode = "";
  let served: Route | undefined;
  let usage: Usage | undefined;
  let finishReason: string | undefined;
  const publisher = context.publisher.forStream(job.streamId);

  /** Set once `done` is published; nothing may follow it. */
  let terminal: Promise<void> | undefined;
  try {
    const table = context.routing();
    if (!table) throw new RunnelError("RUNNEL_ERR_NO_ROUTE", "this worker has no routing snapshot yet");
    // A large request travels beside its job (request-bodies.ts). Read into the job itself, so every
    // reader of it (the route runner, telemetry) sees one shape, and after the claim: a redelivered
    // job of a stream that already ended never needs its body.
    if (job.requestRef) job.request = await loadRequest(bus, job, controller.signal);
    const includeUsage = job.request?.includeUsage === true;
    let streamUsage: Usage | undefined;
    const runner = new RouteRunner(
      {
        table,
        health: context.health,
        adapterFor: context.adapterFor,
        report: (report) => {
          if (report.kind === OutcomeKind.OUTCOME_KIND_STARTED) hooks.onProvider(report.route.provider);
          context.report(report);
        },
        observer,
        log,
      },
      {
        job,
        signal: controller.signal,
        // Outside the stream and its log: tells the ingress when a provider is working on the first token.
        onWaiting: (waiting) => {
          if (!bus.nc.isClosed()) bus.nc.publish(signalSubject(job.streamId), ProviderWaiting.encode({ waiting }).finish());
        },
        ...(resume ? { resume } : {}),
      },
    );
    // The one loop that publishes: every event the route runner yields is numbered and published in
    // order. Backpressure is this loop not pulling: while the log is behind, the provider's socket waits.
    for await (const batch of runner.events()) {
      for (const body of batch) {
        if (body.$case === "usage") {
          // Carried by `done`, where each API's encoder puts it (OpenAI: a chunk after the finish chunk).
          streamUsage = body.value;
          continue;
        }
        if (body.$case === "done") {
          finishReason = openAIFinishReason(body.value.finishReason);
          // The worker always asks the provider for usage; the stream carries it only when the client asked.
          const done: EventBody = { $case: "done", value: { ...body.value, usage: includeUsage ? (body.value.usage ?? streamUsage) : undefined } };
          // Published at once: the adapter may still be tidying up its connection.
          terminal = publishTerminal(bus, subject, sequencer.next(done), log);
          // Awaited once the adapter is done; a failure meanwhile must not be an unhandled rejection.
          terminal.catch(() => {});
          continue;
        }
        if (body.$case === "started") record.serving(body.value.provider, sequencer.last);
        else if (body.$case === "failover" && body.value.to) record.serving(body.value.to.provider, sequencer.last);
        // One event is one NATS message, refused over max_payload: a huge delta goes out as several.
        for (const piece of splitDelta(body)) publisher.publish(sequencer.next(piece));
      }
      const backlog = publisher.ready(controller.signal);
      if (backlog) await backlog;
    }
    const result = runner.result;
    served = result.served;
    usage = result.usage;
    if (!terminal) throw new RunnelError("RUNNEL_ERR_INTERNAL", "adapter resolved without a done event");
    if (publisher.refused > 0) log.error({ refused: publisher.refused }, "the event log refused events of this stream; resuming it may find a hole");
    await terminal;
    outcome = "done";
  } catch (caught) {
    if (terminal) {
      // The stream already ended with done; what failed after it was tidying up the connection.
      log.warn({ err: caught }, "provider connection failed after the stream completed");
      await terminal;
      outcome = "done";
    } else if (controller.signal.reason instanceof HandOff) {
      outcome = "handed-off";
    } else {
      const reason = controller.signal.reason;
      const error =
        controller.signal.aborted && reason instanceof CancelReason ? new RunnelError(reason.code, reason.message, { cause: caught }) : toRunnelError(caught);
      errorCode = error.code;
      outcome = error.code === "RUNNEL_ERR_CANCELLED" ? "cancelled" : "failed";
      if (outcome === "cancelled") observer.cancelled(error.message);
      if (outcome === "failed") log.warn({ code: error.code, err: error.message }, "stream failed");
      await publishTerminal(bus, subject, sequencer.next(errorEvent(error)), log);
    }
  } finally {
    publisher.release();
    hooks.onProvider(undefined);
    await record.stop();
  }
  observer.ended(outcome, {
    ...(errorCode ? { errorCode } : {}),
    ...(served ? { served } : {}),
    ...(usage ? { usage } : {}),
    ...(finishReason ? { finishReason } : {}),
  });

  if (outcome === "handed-off") {
    // The record stays RUNNING under this worker: the next worker to get the job takes it over.
    // The job goes back as a new message, which lives another jobMaxAge: its body is stored again to live as long.
    if (job.requestRef && job.request) {
      await storeRequest(bus, job.requestRef, job.request).catch((error: unknown) =>
        log.warn({ err: error }, "storing the request body again for the takeover failed; it stays until its first TTL"),
      );
    }
    log.info({ last_seq: sequencer.last }, "stream handed off for another worker to take over");
    return outcome;
  }
  // Record the end. A cancel recorded meanwhile wins: the record stays cancelled.
  const phase =
    outcome === "done" ? StreamPhase.STREAM_PHASE_DONE : outcome === "cancelled" ? StreamPhase.STREAM_PHASE_CANCELLED : StreamPhase.STREAM_PHASE_FAILED;
  const { takenOver } = await record.end({ phase, lastSeq: sequencer.last, errorCode, provider: served?.provider ?? "" });
  // The stream is over and no takeover can need the body (it would find the end in the log), unless
  // another worker took the stream from this one and may still be reading it. Not awaited: the end is
  // already out, and the bucket's TTL reclaims a body whose delete fails.
  if (job.requestRef && !takenOver) {
    deleteRequest(bus, job.requestRef).catch((error: unknown) => log.debug({ err: error }, "deleting the request body failed; its TTL reclaims it"));
  }
  log.debug({ outcome, events: sequencer.last }, "stream ended");
  return outcome;
}

/**
 * Terminal events are published through JetStream and acknowledged, so the
 * end of a stream is known to be in the replay log. Falls back to a plain
 * publish (the live subscriber still gets it) if JetStream does not answer.
 */
export async function publishTerminal(bus: Bus, subject: string, event: ReturnType<EventSequencer["next"]>, log: StreamLog): Promise<void> {
  const bytes = encodeEvent(event);
  try {
    await bus.js.publish(subject, bytes, { timeout: 5_000 });
  } catch (error) {
    log.error({ err: error }, "terminal event not acknowledged by JetStream; published without confirmation");
    bus.nc.publish(subject, bytes);
  }
}
