/**
 * The record of a stream this worker runs (`runnel_streams`, every write a
 * compare-and-set): kept fresh while the stream runs, which is how the
 * ingress tells a live worker from a lost one and how this worker learns of
 * a cancel it missed or of a takeover; the provider serving it, as soon as
 * it has one; and how it ended. Every write is chained, off the token path.
 */
import { type StoredRecord, StreamPhase } from "@runnel/shared/contracts";
import type { StreamLog, StreamRecords } from "@runnel/shared/runtime";

export class RunningRecord {
  #record: StoredRecord;
  #serving: string;
  #chain: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly records: StreamRecords,
    private readonly workerId: string,
    claimed: StoredRecord,
    private readonly log: StreamLog,
  ) {
    this.#record = claimed;
    this.#serving = claimed.state.provider;
  }

  /**
   * Every `intervalMs`: `keepAlive()` (the job's ack), then the record with
   * the stream's position and provider. A record that changed under this
   * worker (cancelled, or taken over by another) calls `onLost` with why.
   */
  keepFresh(intervalMs: number, keepAlive: () => void, position: () => number, onLost: (reason: string) => void): void {
    this.#timer = setInterval(() => {
      keepAlive();
      this.#then(async () => {
        const updated = await this.records.update(this.#record, { lastSeq: position(), provider: this.#serving });
        if (updated) {
          this.#record = updated;
          return;
        }
        const current = await this.records.get(this.#record.state.streamId);
        if (current) this.#record = current;
        if (!current || current.state.owner !== this.workerId || current.state.phase === StreamPhase.STREAM_PHASE_CANCELLED) {
          onLost(current?.state.cancelReason || "the stream's record no longer names this worker");
        }
      }, "refreshing the stream record failed");
    }, intervalMs);
  }

  /** The provider now serving the stream (its `started`, then each failover's `to`): written at once, so status reads show it. */
  serving(provider: string, position: number): void {
    if (!provider || provider === this.#serving) return;
    this.#serving = provider;
    this.#then(async () => {
      const updated = await this.records.update(this.#record, { provider, lastSeq: position });
      // A conflict is left to the next refresh.
      if (updated) this.#record = updated;
    }, "recording the serving provider failed");
  }

  /** Stops refreshing, once the writes under way are done. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#chain;
  }

  /**
   * Records how the stream ended. A cancel recorded meanwhile wins (the
   * record stays cancelled). `takenOver`: another worker holds the stream now.
   */
  async end(changes: { phase: StreamPhase; lastSeq: number; errorCode: string; provider: string }): Promise<{ takenOver: boolean }> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const updated = await this.records.update(this.#record, changes);
      if (updated) {
        this.#record = updated;
        return { takenOver: false };
      }
      const current = await this.records.get(this.#record.state.streamId);
      if (!current || current.state.phase === StreamPhase.STREAM_PHASE_CANCELLED || current.state.owner !== this.workerId) {
        if (current && current.state.owner === this.workerId) await this.records.update(current, { lastSeq: changes.lastSeq });
        return { takenOver: current !== undefined && current.state.owner !== this.workerId };
      }
      this.#record = current;
    }
    return { takenOver: false };
  }

  #then(write: () => Promise<void>, failure: string): void {
    this.#chain = this.#chain.then(write).catch((error: unknown) => this.log.warn({ err: error }, failure));
  }
}
