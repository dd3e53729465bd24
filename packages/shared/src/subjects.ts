/**
 * Names on the bus. docs/architecture.md lists the same names; this module is
 * the only place code spells them.
 */

/** Subject a worker publishes a stream's events on, and the ingress subscribes to. */
export function eventsSubject(streamId: string): string {
  return `runnel.stream.${streamId}.events`;
}

/** Wildcard the events stream captures. */
export const EVENTS_SUBJECTS = "runnel.stream.*.events";
/** JetStream stream that keeps every stream's events for the retention window (the replay log). */
export const EVENTS_STREAM = "RUNNEL_EVENTS";

/** Subject jobs are submitted on. */
export const JOBS_SUBJECT = "runnel.jobs.submit";
/** JetStream work-queue stream holding jobs until a worker acknowledges them. */
export const JOBS_STREAM = "RUNNEL_JOBS";
/** Durable pull consumer shared by every worker. */
export const JOBS_CONSUMER = "runnel-workers";

/** KV bucket of stream records (phase, owner), written with compare-and-set. */
export const STREAMS_BUCKET = "runnel_streams";

/** Subject a worker listens on for cancels of the streams it owns. */
export function cancelSubject(workerId: string): string {
  return `runnel.ctl.cancel.${workerId}`;
}

/** Stream ids are URL- and subject-safe: letters, digits, '_' and '-'. */
const STREAM_ID = /^[A-Za-z0-9_-]{8,64}$/;

export function isValidStreamId(id: string): boolean {
  return STREAM_ID.test(id);
}
