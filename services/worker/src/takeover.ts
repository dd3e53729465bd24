/**
 * Taking a stream over from a lost worker: the I/O around the rules of
 * stream-fold.ts (@runnel/shared), which say what the log holds and what the
 * takeover announces.
 */
import { EventSequencer, encodeEvent, eventsSubject, FailoverMode, type Job, RunnelError, type StoredRecord, StreamPhase } from "@runnel/shared/contracts";
import { planTakeover, StreamFold, type StreamSoFar } from "@runnel/shared/domain";
import { type Bus, EventLog, isWrongLastSequence, type StreamLog } from "@runnel/shared/runtime";
import type { JobContext } from "./job-runner.js";
import type { ResumePoint } from "./route-runner.js";

/** A stream taken over from a lost worker: the new ownership and where the stream stands. */
export type Takeover =
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
 * event of a lower epoch that follows it (the old worker, back late). Then
 * the stream goes on as planTakeover says. Undefined: nothing to take over
 * (another worker took it first, or the lost worker had finished it).
 */
export async function takeOver(context: JobContext, job: Job, existing: StoredRecord, log: StreamLog): Promise<Takeover | undefined> {
  const { bus, records, workerId } = context;
  const epoch = existing.state.epoch + 1;
  const lost = existing.state.owner;
  let record = await records.update(existing, { owner: workerId, epoch });
  if (!record) return undefined;
  const subject = eventsSubject(job.streamId);
  const policy = context.routing()?.model(job.model)?.afterFirstToken || "error";
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
    const plan = planTakeover(state, policy, next, lost);
    const fence = sequencer.next(plan.fence);
    if (plan.ends) {
      // Recorded before the event goes out, so a client that sees the end finds the record ended too.
      record =
        (await records.update(record, { phase: StreamPhase.STREAM_PHASE_FAILED, errorCode: "RUNNEL_ERR_WORKER_LOST", lastSeq: sequencer.last })) ?? record;
    }
    try {
      await bus.js.publish(subject, encodeEvent(fence), { expect: { lastSubjectSequence: state.lastStreamSeq }, timeout: 5_000 });
    } catch (error) {
      // The lost worker wrote meanwhile: read again.
      if (isWrongLastSequence(error)) continue;
      throw error;
    }
    log.warn({ lost_worker: lost, last_seq: state.lastSeq, epoch, policy, any_token: state.anyToken }, `taking over: ${plan.failover.reason}`);
    if (plan.ends) return { kind: "ended" };
    record = (await records.update(record, { lastSeq: sequencer.last })) ?? record;
    return {
      kind: "continue",
      record,
      sequencer,
      resume: {
        partialText: plan.failover.mode === FailoverMode.FAILOVER_MODE_CONTINUE ? state.partialText : "",
        anyToken: state.anyToken,
        nonText: state.nonText,
        from: state.from,
        announced: plan.failover.mode,
        to: plan.failover.to,
      },
    };
  }
  throw new RunnelError("RUNNEL_ERR_INTERNAL", "could not fence the stream: its lost worker keeps writing");
}

/** Reads a stream's events from the log, folded with the fencing readers apply. */
async function readStream(bus: Bus, streamId: string): Promise<StreamSoFar> {
  const fold = new StreamFold();
  const cursor = new EventLog(bus).cursor(streamId);
  try {
    for (;;) {
      const batch = await cursor.read(0, 1024);
      for (const [index, event] of batch.events.entries()) fold.add(event, batch.streamSeqs[index] ?? 0);
      if (batch.caughtUp) return fold.state;
    }
  } finally {
    await cursor.close();
  }
}
