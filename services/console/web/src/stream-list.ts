/**
 * The inspector's copy of the streams in flight, kept from the feed's
 * messages (a full list first, then changes), and the order it shows them
 * in: running streams first, newest first, then the finished ones. Pure.
 */
import type { FeedStreams, StreamRow } from "@runnel/console";

export class StreamList {
  readonly #rows = new Map<string, StreamRow>();
  /** The ingress's clock minus this page's, from the last message: ages are computed on the ingress's clock. */
  clockOffsetMs = 0;
  overflow = 0;

  apply(message: FeedStreams, receivedAtMs: number): void {
    if (message.full) this.#rows.clear();
    for (const row of message.upserts) this.#rows.set(row.id, row);
    for (const id of message.removes) this.#rows.delete(id);
    this.clockOffsetMs = message.now - receivedAtMs;
    this.overflow = message.overflow;
  }

  get(id: string): StreamRow | undefined {
    return this.#rows.get(id);
  }

  get size(): number {
    return this.#rows.size;
  }

  /** Running first (newest first), then finished (most recently ended first). */
  ordered(): StreamRow[] {
    const rows = [...this.#rows.values()];
    const live = rows.filter((row) => row.endedAtMs === null).sort((a, b) => b.createdAtMs - a.createdAtMs || a.id.localeCompare(b.id));
    const ended = rows.filter((row) => row.endedAtMs !== null).sort((a, b) => (b.endedAtMs ?? 0) - (a.endedAtMs ?? 0) || a.id.localeCompare(b.id));
    return [...live, ...ended];
  }

  /** How old a stream is at page time `nowMs`: it climbs while it runs and stops when it ends. */
  ageMs(row: StreamRow, nowMs: number): number {
    const end = row.endedAtMs ?? nowMs + this.clockOffsetMs;
    return Math.max(0, end - row.createdAtMs);
  }
}
