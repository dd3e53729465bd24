/**
 * The backstop that keeps a stream from hanging when its worker is gone.
 * No wall-clock limit applies to a healthy stream: only a stream that has
 * been quiet for a while is looked up in the KV records, and it is ended
 * only when the record says nobody is working on it any more.
 */
import { type ErrorCode, isTerminalPhase, StreamPhase, type StreamState } from "@runnel/shared/contracts";

export interface StallPolicy {
  /** A stream quiet this long gets its record checked. */
  readonly quietMs: number;
  /** A job nobody took within this time was dropped by the queue. */
  readonly jobMaxAgeMs: number;
  /** A running stream whose record has not been refreshed for this long has lost its worker. */
  readonly workerLostMs: number;
}

export type StallVerdict = { readonly end: false } | { readonly end: true; readonly code: ErrorCode; readonly message: string };

/** Decides, from a quiet stream's record, whether it can still end on its own. Pure. */
export function judgeQuietStream(record: StreamState | undefined, createdAtMs: number, now: number, policy: StallPolicy): StallVerdict {
  if (!record) {
    if (now - createdAtMs > policy.jobMaxAgeMs) {
      return { end: true, code: "RUNNEL_ERR_OVERLOADED", message: `no worker took the job within ${policy.jobMaxAgeMs} ms` };
    }
    return { end: false };
  }
  if (isTerminalPhase(record.phase)) {
    return { end: true, code: "RUNNEL_ERR_EVENT_GAP", message: "the stream ended but its last events did not arrive" };
  }
  if (record.phase === StreamPhase.STREAM_PHASE_RUNNING && now - record.updatedAtMs > policy.workerLostMs) {
    return { end: true, code: "RUNNEL_ERR_WORKER_LOST", message: `worker ${record.owner} stopped refreshing the stream ${now - record.updatedAtMs} ms ago` };
  }
  return { end: false };
}
