/**
 * Runs one job: claims the stream (compare-and-set, so no two workers ever
 * generate it), streams from the provider, publishes every event in order on
 * the stream's subject, and records how the stream ended. Every way out ends
 * the stream with `done` or an explicit `error` event.
 */
import {
  type Bus,
  decodeEvent,
  ERRORS,
  EVENTS_STREAM,
  type EventBody,
  EventSequencer,
  encodeEvent,
  eventsSubject,
  isTerminal,
  type Job,
  type Logger,
  type RoutingTable,
  RunnelError,
  type StoredRecord,
  type StreamEvent,
  StreamPhase,
  type StreamRecords,
  toRunnelError,
} from "@runnel/shared";
import type { EventPublisher } from "./event-publisher.js";
import type { ProviderAdapter } from "./providers/index.js";

export interface JobContext {
  readonly bus: Bus;
  /** Publishes events with acknowledgement from the log, under a window. */
  readonly publisher: EventPublisher;
  readonly records: StreamRecords;
  readonly workerId: string;
  readonly log: Logger;
  readonly routing: () => RoutingTable | undefined;
  readonly adapterFor: (type: string) => ProviderAdapter;
}

export type JobOutcome = "done" | "failed" | "cancelled" | "skipped";

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
  const { bus, records, workerId } = context;
  const log = context.log.child({ stream_id: job.streamId });
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
  });
  const subject = eventsSubject(job.streamId);
  const sequencer = new EventSequencer(job.streamId);

  if (!claim.claimed) {
    const existing = claim.existing.state;
    if (existing.phase === StreamPhase.STREAM_PHASE_CANCELLED && !existing.owner) {
      // Cancelled before any worker took it: it never starts. Say so on the
      // stream, so a client still listening ends cleanly.
      await publishTerminal(bus, subject, sequencer.next(cancelledEvent(existing.cancelReason || "cancelled before start")), log);
      log.info("job cancelled before it started; not generating");
      return "skipped";
    }
    if (existing.phase === StreamPhase.STREAM_PHASE_RUNNING) return endLostStream(context, claim.existing, subject, log);
    log.info({ phase: existing.phase, owner: existing.owner }, "stream already ended; dropping the redelivered job");
    return "skipped";
  }

  let record: StoredRecord = claim.record;
  // Keep the job's ack alive and the record fresh (a quiet stream's record is
  // how the ingress tells a live worker from a lost one). A refresh that finds
  // the record changed under it learns of a cancel it may have missed.
  let refreshing: Promise<void> = Promise.resolve();
  const refresh = setInterval(() => {
    hooks.keepAlive();
    refreshing = refreshing
      .then(async () => {
        const updated = await records.update(record, { lastSeq: sequencer.last });
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
  let outcome: JobOutcome = "failed";
  let errorCode = "";
  let providerName = "";
  const publisher = context.publisher.forStream(job.streamId);
  const emit = (body: EventBody) => {
    publisher.publish(sequencer.next(body));
  };

  /** Set once `done` is published; nothing may follow it. */
  let terminal: Promise<void> | undefined;
  try {
    const route = job.routes[0];
    const table = context.routing();
    const provider = route ? table?.providerForRoute(job.model, route) : undefined;
    if (!route || !provider) {
      throw new RunnelError(
        "RUNNEL_ERR_NO_ROUTE",
        route ? `provider "${route.provider}" is not in this worker's routing snapshot` : `job for model "${job.model}" has no route`,
      );
    }
    providerName = provider.name;
    hooks.onProvider(provider.name);
    const adapter = context.adapterFor(provider.type);
    const includeUsage = job.request?.includeUsage === true;
    await adapter.stream({
      request: job.request ?? { messages: [], stop: [], tools: [], toolChoiceJson: "", includeUsage: false, user: "" },
      model: route.model,
      provider,
      signal: controller.signal,
      ready: () => publisher.ready(controller.signal),
      emit: (body) => {
        if (body.$case === "done") {
          // Published at once: the adapter may still be tidying up its connection.
          terminal = publishTerminal(bus, subject, sequencer.next(body), log);
          // Awaited once the adapter returns; a failure meanwhile must not be an unhandled rejection.
          terminal.catch(() => {});
          return;
        }
        // The worker always asks the provider for usage; the stream carries it only when the client asked.
        if (body.$case === "usage" && !includeUsage) return;
        emit(body);
      },
    });
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
    } else {
      const reason = controller.signal.reason;
      const error =
        controller.signal.aborted && reason instanceof CancelReason ? new RunnelError(reason.code, reason.message, { cause: caught }) : toRunnelError(caught);
      errorCode = error.code;
      outcome = error.code === "RUNNEL_ERR_CANCELLED" ? "cancelled" : "failed";
      if (outcome === "failed") log.warn({ code: error.code, err: error.message }, "stream failed");
      await publishTerminal(
        bus,
        subject,
        sequencer.next({ $case: "error", value: { code: error.code, message: error.message, retryable: error.retryable, httpStatus: error.httpStatus } }),
        log,
      );
    }
  } finally {
    publisher.release();
    hooks.onProvider(undefined);
    clearInterval(refresh);
    await refreshing;
  }

  // Record the end. A cancel recorded meanwhile wins: the record stays cancelled.
  const phase =
    outcome === "done" ? StreamPhase.STREAM_PHASE_DONE : outcome === "cancelled" ? StreamPhase.STREAM_PHASE_CANCELLED : StreamPhase.STREAM_PHASE_FAILED;
  for (let attempt = 0; attempt < 5; attempt++) {
    const updated = await records.update(record, { phase, lastSeq: sequencer.last, errorCode, provider: providerName });
    if (updated) break;
    const current = await records.get(job.streamId);
    if (!current || current.state.phase === StreamPhase.STREAM_PHASE_CANCELLED || current.state.owner !== workerId) {
      if (current) await records.update(current, { lastSeq: sequencer.last });
      break;
    }
    record = current;
  }
  log.debug({ outcome, events: sequencer.last }, "stream ended");
  return outcome;
}

/**
 * A job came back while its record says RUNNING: the worker that owned it
 * stopped keeping it alive (it died, or hung past the ack deadline), or this
 * worker restarted. Until streams can be taken over, the stream is ended
 * honestly: the record is moved to FAILED (compare-and-set, so only one
 * worker does this) and a RUNNEL_ERR_WORKER_LOST event follows the last
 * event in the log.
 */
async function endLostStream(context: JobContext, existing: StoredRecord, subject: string, log: Logger): Promise<JobOutcome> {
  const { bus, records, workerId } = context;
  const taken = await records.update(existing, { phase: StreamPhase.STREAM_PHASE_FAILED, owner: workerId, errorCode: "RUNNEL_ERR_WORKER_LOST" });
  if (!taken) return "skipped";
  const last = await lastEvent(bus, subject);
  if (last && isTerminal(last)) return "skipped";
  const sequencer = new EventSequencer(existing.state.streamId, last?.seq ?? 0);
  const message = `worker ${existing.state.owner} stopped while generating this stream`;
  log.warn({ lost_worker: existing.state.owner, last_seq: sequencer.last }, message);
  await publishTerminal(
    bus,
    subject,
    sequencer.next({
      $case: "error",
      value: { code: "RUNNEL_ERR_WORKER_LOST", message, retryable: true, httpStatus: ERRORS.RUNNEL_ERR_WORKER_LOST.httpStatus },
    }),
    log,
  );
  await records.update(taken, { lastSeq: sequencer.last });
  return "failed";
}

/** The last event of a stream in the replay log, if any. */
async function lastEvent(bus: Bus, subject: string): Promise<StreamEvent | undefined> {
  try {
    const stored = await bus.jsm.streams.getMessage(EVENTS_STREAM, { last_by_subj: subject });
    return stored ? decodeEvent(stored.data) : undefined;
  } catch (error) {
    if (error instanceof Error && /no message found/i.test(error.message)) return undefined;
    throw error;
  }
}

function cancelledEvent(reason: string): EventBody {
  return { $case: "error", value: { code: "RUNNEL_ERR_CANCELLED", message: reason, retryable: false, httpStatus: 499 } };
}

/**
 * Terminal events are published through JetStream and acknowledged, so the
 * end of a stream is known to be in the replay log. Falls back to a plain
 * publish (the live subscriber still gets it) if JetStream does not answer.
 */
async function publishTerminal(bus: Bus, subject: string, event: ReturnType<EventSequencer["next"]>, log: Logger): Promise<void> {
  const bytes = encodeEvent(event);
  try {
    await bus.js.publish(subject, bytes, { timeout: 5_000 });
  } catch (error) {
    log.error({ err: error }, "terminal event not acknowledged by JetStream; published without confirmation");
    bus.nc.publish(subject, bytes);
  }
}
