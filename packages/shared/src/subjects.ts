/**
 * Names on the bus. docs/architecture.md lists the same names; this module is
 * the only place code spells them.
 */

/** Subject a worker publishes a stream's events on, and the ingress subscribes to. */
export function eventsSubject(streamId: string): string {
  return `runnel.stream.${streamId}.events`;
}

/**
 * Subject of a stream's signals: what is not part of the stream and not kept
 * in the replay log (`runnel.v1.ProviderWaiting`), published by its worker.
 */
export function signalSubject(streamId: string): string {
  return `runnel.stream.${streamId}.signal`;
}

/** Both of a stream's subjects (events and signals): what the ingress subscribes to for one stream. */
export function streamSubjects(streamId: string): string {
  return `runnel.stream.${streamId}.*`;
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

/**
 * Object store of large requests: a request whose job would be too large for
 * one NATS message waits here (object name: its stream id) while its job
 * carries the name (`Job.request_ref`). See request-bodies.ts.
 */
export const BODIES_BUCKET = "runnel_bodies";

/** Subject a worker listens on for cancels of the streams it owns. */
export function cancelSubject(workerId: string): string {
  return `runnel.ctl.cancel.${workerId}`;
}

/** The cancel subject as a template: the destination in span names and attributes (one name, whatever the worker). */
export const CANCEL_SUBJECT_TEMPLATE = "runnel.ctl.cancel.{worker_id}";
/** The events subject as a template, for the same reason. */
export const EVENTS_SUBJECT_TEMPLATE = "runnel.stream.{stream_id}.events";

/** Subject a worker listens on for a drain order (request-reply: `runnel.v1.DrainWorkerRequest`, answered once taken). */
export function drainSubject(workerId: string): string {
  return `runnel.ctl.drain.${workerId}`;
}

/**
 * Core NATS subject of route outcomes (protobuf `runnel.v1.RouteOutcome`):
 * workers publish them, every worker and control-plane replica folds them
 * into its health view.
 */
export const HEALTH_OUTCOMES_SUBJECT = "runnel.health.outcomes";

/**
 * KV bucket of worker presence: key = worker id, value = the worker's last
 * `runnel.v1.WorkerHeartbeat` (without stream ids), written by whichever
 * control-plane replica the worker is registered with. Every replica reads it.
 */
export const WORKERS_BUCKET = "runnel_workers";

/**
 * Subjects on which an ingress says a stream has a reader again (a resume),
 * one per stream: `runnel.ctl.attached.<stream id>`. Other replicas end their
 * detach timers; the console's inspector marks the resume.
 */
export const ATTACHED_SUBJECTS = "runnel.ctl.attached.*";

/** Subject on which an ingress says stream `streamId` has a reader again (ends other replicas' detach timers). */
export function attachedSubject(streamId: string): string {
  return `runnel.ctl.attached.${streamId}`;
}

/**
 * Core NATS request subject every ingress with the console answers with the
 * transports of the streams it serves (JSON `{ "<stream id>": "sse", … }`), so
 * the inspector on one replica can say how the clients of the others read.
 * Asked only while an inspector is open.
 */
export const CONSOLE_TRANSPORTS_SUBJECT = "runnel.console.transports";

/** Stream ids are URL- and subject-safe: letters, digits, '_' and '-'. */
const STREAM_ID = /^[A-Za-z0-9_-]{8,64}$/;

export function isValidStreamId(id: string): boolean {
  return STREAM_ID.test(id);
}
