/**
 * Runs one job: claims the stream (compare-and-set, so no two workers ever
 * generate it) or takes it over from a lost worker, streams it across the
 * model's routes (route-runner.ts), publishes every event in order on the
 * stream's subject, and records how the stream ended. Every way out ends the
 * stream with `done` or an explicit `error` event.
 */
import {
  type Bus,
  deleteRequest,
  type EventBody,
  EventLog,
  EventSequencer,
  encodeEvent,
  errorEvent,
  eventsSubject,
  type Failover,
  FailoverMode,
  type HealthBook,
  isWrongLastSequence,
  type Job,
  type Logger,
  loadRequest,
  OutcomeKind,
  openAIFinishReason,
  ProviderWaiting,
  type Route,
  type RoutingTable,
  RunnelError,
  type StoredRecord,
  type StreamLog,
  StreamPhase,
  type StreamRecords,
  signalSubject,
  splitDelta,
  storeRequest,
  streamLog,
  toRunnelError,
  type Usage,
} from "@runnel/shared";
import type { EventPublisher } from "./event-publisher.js";
import type { ProviderAdapter } from "./providers/index.js";
import { type OutcomeReport, type ResumePoint, RouteRunner } from "./route-runner.js";
import { NOOP_OBSERVER, type ObserveJob, type StreamObserver } from "./stream-observer.js";

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
  const { bus, records, workerId } = context;
  const subject = eventsSubject(job.streamId);
  let record = claimed;
  // Keep the job's ack alive and the record fresh (a quiet stream's record is
  // how the ingress tells a live worker from a lost one). A refresh that finds
  // the record changed under it learns of a cancel it may have missed, or that
  // another worker took the stream over (then this one stops at once).
  let refreshing: Promise<void> = Promise.resolve();
  /** The provider serving the stream now (its `started`, then each failover's `to`): the record shows it while the stream runs. */
  let serving = record.state.provider;
  const refresh = setInterval(() => {
    hooks.keepAlive();
    refreshing = refreshing
      .then(async () => {
        const updated = await records.update(record, { lastSeq: sequencer.last, provider: serving });
        if (updated) {
          record = updated;
          return;
        }
        const current = await records.get(job.streamId);
        if (!current || current.state.owner !== workerId || current.state.phase === StreamPhase.STREAM_PHASE_CANCELLED) {
          if (current) record = current;
          controller.abort(new CancelReason("RUNNEL_ERR_CANCELLED", current?.state.cancelReason || "the stream's record no longer names this worker"));
          return;
        }
        record = current;
      })
      .catch((error: unknown) => log.warn({ err: error }, "refreshing the stream record failed"));
  }, hooks.keepAliveMs);
  /** Writes the serving provider to the record at once (off the token path; a conflict is left to the next refresh). */
  const recordServing = (provider: string) => {
    if (!provider || provider === serving) return;
    serving = provider;
    refreshing = refreshing
      .then(async () => {
        const updated = await records.update(record, { provider, lastSeq: sequencer.last });
        if (updated) record = updated;
      })
      .catch((error: unknown) => log.warn({ err: error }, "recording the serving provider failed"));
  };
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
        if (body.$case === "started") recordServing(body.value.provider);
        else if (body.$case === "failover" && body.value.to) recordServing(body.value.to.provider);
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
    clearInterval(refresh);
    await refreshing;
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
  let takenOver = false;
  for (let attempt = 0; attempt < 5; attempt++) {
    const updated = await records.update(record, { phase, lastSeq: sequencer.last, errorCode, provider: served?.provider ?? "" });
    if (updated) break;
    const current = await records.get(job.streamId);
    if (!current || current.state.phase === StreamPhase.STREAM_PHASE_CANCELLED || current.state.owner !== workerId) {
      if (current && current.state.owner === workerId) await records.update(current, { lastSeq: sequencer.last });
      takenOver = current !== undefined && current.state.owner !== workerId;
      break;
    }
    record = current;
  }
  // The stream is over and no takeover can need the body (it would find the end in the log), unless
  // another worker took the stream from this one and may still be reading it. Not awaited: the end is
  // already out, and the bucket's TTL reclaims a body whose delete fails.
  if (job.requestRef && !takenOver) {
    deleteRequest(bus, job.requestRef).catch((error: unknown) => log.debug({ err: error }, "deleting the request body failed; its TTL reclaims it"));
  }
  log.debug({ outcome, events: sequencer.last }, "stream ended");
  return outcome;
}

/** A stream taken over from a lost worker: the new ownership and where the stream stands. */
type Takeover =
  | { kind: "continue"; record: StoredRecord; sequencer: EventSequencer; resume: ResumePoint }
  /** Ended with RUNNEL_ERR_WORKER_LOST (the model's policy is `error` and tokens went out). */
  | { kind: "ended" };

/**
 * A job came back while its record says RUNNING: the worker that owned it
 * stopped keeping it alive (it died, or hung past the ack deadline). This
 * worker takes the stream over with a higher epoch (compare-and-set on the
 * record, so only one worker does), reads what the stream already holds, and
 * writes a fencing event with JetStream's expected-last-subject-sequence: it
 * lands only if nothing was written since the read, and readers drop any
 * event of a lower epoch that follows it (the old worker, back late). Then,
 * under the model's after-first-token policy: with no token out yet, the
 * stream simply starts; `restart` and `continue` go on from there; `error`
 * ends it with RUNNEL_ERR_WORKER_LOST.
 */
async function takeOver(context: JobContext, job: Job, existing: StoredRecord, log: StreamLog): Promise<Takeover | undefined> {
  const { bus, records, workerId } = context;
  const epoch = existing.state.epoch + 1;
  const lost = existing.state.owner;
  let record = await records.update(existing, { owner: workerId, epoch });
  if (!record) return undefined;
  const subject = eventsSubject(job.streamId);
  const model = context.routing()?.model(job.model);
  const policy = model?.afterFirstToken || "error";
  const reason = `worker ${lost} stopped while generating this stream`;
  for (let round = 0; round < 5; round++) {
    const state = await readStream(bus, job.streamId);
    if (state.terminal) {
      const phase = state.terminal === "done" ? StreamPhase.STREAM_PHASE_DONE : StreamPhase.STREAM_PHASE_FAILED;
      await records.update(record, { phase, lastSeq: state.lastSeq });
      log.info({ lost_worker: lost }, "lost worker had finished the stream; nothing to take over");
      return undefined;
    }
    const sequencer = new EventSequencer(job.streamId, state.lastSeq, epoch);
    // The route the stream goes on with, as the runner will choose it first.
    const table = context.routing();
    const next = table
      ?.planRoutes(job.model, context.health, job.affinityKey)
      .find((spec) => context.health.admission(spec).ok && table.providerForRoute(job.model, spec));
    const failover: Failover = {
      mode: !state.anyToken
        ? FailoverMode.FAILOVER_MODE_NEXT_ROUTE
        : policy === "continue" && !state.nonText && next?.acceptsPrefill
          ? FailoverMode.FAILOVER_MODE_CONTINUE
          : FailoverMode.FAILOVER_MODE_RESTART,
      from: state.from,
      to: next ? { provider: next.provider, model: next.model } : undefined,
      reasonCode: "RUNNEL_ERR_WORKER_LOST",
      reason,
      takeover: true,
    };
    const ending = state.anyToken && policy === "error";
    const fence = sequencer.next(ending ? errorEvent(new RunnelError("RUNNEL_ERR_WORKER_LOST", reason)) : { $case: "failover", value: failover });
    if (ending) {
      // Recorded before the event goes out, so a client that sees the end finds the record ended too.
      record =
        (await records.update(record, { phase: StreamPhase.STREAM_PHASE_FAILED, errorCode: "RUNNEL_ERR_WORKER_LOST", lastSeq: sequencer.last })) ?? record;
    }
    try {
      await bus.js.publish(subject, encodeEvent(fence), { expect: { lastSubjectSequence: state.lastStreamSeq }, timeout: 5_000 });
    } catch (error) {
      if (isWrongLastSequence(error)) {
        // The lost worker wrote meanwhile: read again.
        continue;
      }
      throw error;
    }
    log.warn({ lost_worker: lost, last_seq: state.lastSeq, epoch, policy, any_token: state.anyToken }, `taking over: ${reason}`);
    if (ending) return { kind: "ended" };
    record = (await records.update(record, { lastSeq: sequencer.last })) ?? record;
    return {
      kind: "continue",
      record,
      sequencer,
      resume: {
        partialText: failover.mode === FailoverMode.FAILOVER_MODE_CONTINUE ? state.partialText : "",
        anyToken: state.anyToken,
        nonText: state.nonText,
        from: state.from,
        announced: failover.mode,
        to: failover.to,
      },
    };
  }
  throw new RunnelError("RUNNEL_ERR_INTERNAL", "could not fence the stream: its lost worker keeps writing");
}

/** What a stream's log says about it, for a takeover. */
interface StreamSoFar {
  lastSeq: number;
  /** JetStream sequence of the stream's last message (0: none). */
  lastStreamSeq: number;
  terminal: "done" | "error" | undefined;
  anyToken: boolean;
  partialText: string;
  nonText: boolean;
  from: Route | undefined;
}

/** Reads a stream's events from the log, applying the epoch fencing readers apply. */
async function readStream(bus: Bus, streamId: string): Promise<StreamSoFar> {
  const state: StreamSoFar = { lastSeq: 0, lastStreamSeq: 0, terminal: undefined, anyToken: false, partialText: "", nonText: false, from: undefined };
  const cursor = new EventLog(bus).cursor(streamId);
  let epoch = 0;
  try {
    for (;;) {
      const batch = await cursor.read(0, 1024);
      for (const [index, event] of batch.events.entries()) {
        state.lastStreamSeq = batch.streamSeqs[index] ?? state.lastStreamSeq;
        if (event.epoch < epoch || event.seq <= state.lastSeq) continue;
        epoch = event.epoch;
        state.lastSeq = event.seq;
        const body = event.event;
        switch (body?.$case) {
          case "started":
            state.from = { provider: body.value.provider, model: body.value.model };
            break;
          case "textDelta":
            state.anyToken = true;
            state.partialText += body.value.text;
            break;
          case "toolCallDelta":
          case "reasoningDelta":
            state.anyToken = true;
            state.nonText = true;
            break;
          case "failover":
            if (body.value.to) state.from = body.value.to;
            if (body.value.mode === FailoverMode.FAILOVER_MODE_RESTART) {
              state.partialText = "";
              state.nonText = false;
            }
            break;
          case "done":
            state.terminal = "done";
            break;
          case "error":
            state.terminal = "error";
            break;
          default:
            break;
        }
      }
      if (batch.caughtUp) return state;
    }
  } finally {
    await cursor.close();
  }
}

/**
 * Terminal events are published through JetStream and acknowledged, so the
 * end of a stream is known to be in the replay log. Falls back to a plain
 * publish (the live subscriber still gets it) if JetStream does not answer.
 */
async function publishTerminal(bus: Bus, subject: string, event: ReturnType<EventSequencer["next"]>, log: StreamLog): Promise<void> {
  const bytes = encodeEvent(event);
  try {
    await bus.js.publish(subject, bytes, { timeout: 5_000 });
  } catch (error) {
    log.error({ err: error }, "terminal event not acknowledged by JetStream; published without confirmation");
    bus.nc.publish(subject, bytes);
  }
}
