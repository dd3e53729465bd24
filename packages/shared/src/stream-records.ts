/**
 * Stream records in the `runnel_streams` KV bucket: who owns a stream and
 * where it is in its life. Every write is a compare-and-set, so two workers
 * can never both own a stream, and a cancel recorded before a worker claims
 * the stream makes the claim fail (the job never starts).
 */
import type { KV } from "@nats-io/kv";
import { isRevisionConflict } from "./bus.js";
import type { EventLog } from "./event-log.js";
import { StreamPhase, StreamState } from "./gen/runnel/v1/control_plane_types.js";
import type { StoredRecord } from "./stream-state.js";
import { isTerminalPhase } from "./stream-state.js";

export { isTerminalPhase, type StoredRecord, StreamPhase, StreamState };

export type ClaimResult = { claimed: true; record: StoredRecord } | { claimed: false; existing: StoredRecord };

/** Compare-and-set access to stream records. */
export class StreamRecords {
  constructor(private readonly kv: KV) {}

  async get(streamId: string): Promise<StoredRecord | undefined> {
    const entry = await this.kv.get(streamId);
    if (entry?.operation !== "PUT") return undefined;
    return { state: StreamState.decode(entry.value), revision: entry.revision };
  }

  /**
   * Claims a stream for a worker. Succeeds only if no record exists: a record
   * means another worker owns it, or it ended, or it was cancelled first.
   */
  async claim(state: StreamState): Promise<ClaimResult> {
    for (;;) {
      try {
        const revision = await this.kv.create(state.streamId, StreamState.encode(state).finish());
        return { claimed: true, record: { state, revision } };
      } catch (error) {
        if (!isRevisionConflict(error)) throw error;
        const existing = await this.get(state.streamId);
        // Deleted between our create and get: try again.
        if (existing) return { claimed: false, existing };
      }
    }
  }

  /**
   * Writes a new state if the record is still at `revision`. Returns the new
   * record, or undefined when someone else wrote first (re-read and decide).
   */
  async update(record: StoredRecord, changes: Partial<StreamState>): Promise<StoredRecord | undefined> {
    const state: StreamState = { ...record.state, ...changes, updatedAtMs: Date.now() };
    try {
      const revision = await this.kv.update(state.streamId, StreamState.encode(state).finish(), record.revision);
      return { state, revision };
    } catch (error) {
      if (isRevisionConflict(error)) return undefined;
      throw error;
    }
  }

  /**
   * Records a cancel. A stream with no record yet gets a `cancelled` record so
   * its job never starts; a running one is marked cancelled for its owner to
   * see; an ended one is left as it is. Idempotent.
   */
  async cancel(streamId: string, reason: string): Promise<{ state: StreamState; changed: boolean }> {
    for (;;) {
      const current = await this.get(streamId);
      const now = Date.now();
      if (!current) {
        const state: StreamState = {
          ...StreamState.fromPartial({ streamId }),
          phase: StreamPhase.STREAM_PHASE_CANCELLED,
          cancelReason: reason,
          createdAtMs: now,
          updatedAtMs: now,
        };
        try {
          await this.kv.create(streamId, StreamState.encode(state).finish());
          return { state, changed: true };
        } catch (error) {
          if (!isRevisionConflict(error)) throw error;
          continue;
        }
      }
      if (isTerminalPhase(current.state.phase)) return { state: current.state, changed: false };
      const updated = await this.update(current, { phase: StreamPhase.STREAM_PHASE_CANCELLED, cancelReason: reason });
      if (updated) return { state: updated.state, changed: true };
    }
  }

  /** Lists records, newest first. Reads every key: an admin call, not a hot path. */
  async list(phase: StreamPhase, limit: number): Promise<StreamState[]> {
    const keys: string[] = [];
    for await (const key of await this.kv.keys()) keys.push(key);
    const states: StreamState[] = [];
    for (const key of keys) {
      const record = await this.get(key);
      if (record && (phase === StreamPhase.STREAM_PHASE_UNSPECIFIED || record.state.phase === phase)) states.push(record.state);
    }
    states.sort((a, b) => b.createdAtMs - a.createdAtMs);
    return states.slice(0, limit > 0 ? limit : 100);
  }
}

/**
 * A running stream's record with its live position: the worker refreshes
 * `last_seq` in the record only every few seconds, so while the stream runs
 * the log's last event says where it is. Ended records are as they are.
 */
export async function withLivePosition(log: EventLog, state: StreamState): Promise<StreamState> {
  if (isTerminalPhase(state.phase)) return state;
  const last = await log.last(state.streamId).catch(() => undefined);
  return last && last.seq > state.lastSeq ? { ...state, lastSeq: last.seq } : state;
}
