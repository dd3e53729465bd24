/**
 * Positions of a stream's events as the page received them, across every
 * connection that carried them: what a resume starts from, and the proof
 * that a drop lost or repeated nothing (duplicates and gaps counted). Pure.
 *
 * Every event of a stream has a `seq`, 1-based and consecutive (docs/api.md).
 * One event may arrive as two frames with the same position (the finish
 * chunk and the usage chunk after it): the second is a trailer, not a
 * repeat. Frames outside the log (`[DONE]`, an error the ingress raised
 * itself) have no position and are not counted.
 */

export type Verdict = "new" | "duplicate" | "unnumbered";

export class EventLedger {
  /** Distinct events received. */
  received = 0;
  /** Frames of an event already received (a resume that replayed too much would show here). */
  duplicates = 0;
  /** Positions skipped (a resume that started too late, or a hole). */
  gaps = 0;
  /** The last position received: where a resume starts from. */
  lastSeq = 0;
  /** Positions the stream was resumed from, in order. */
  readonly resumes: number[] = [];

  /** Records one frame; `trailer` marks the second frame of the event at `lastSeq` (the usage chunk). */
  accept(seq: number | undefined, trailer = false): Verdict {
    if (seq === undefined) return "unnumbered";
    if (seq === this.lastSeq && trailer) return "new";
    if (seq <= this.lastSeq) {
      this.duplicates += 1;
      return "duplicate";
    }
    if (seq > this.lastSeq + 1) this.gaps += seq - this.lastSeq - 1;
    this.lastSeq = seq;
    this.received += 1;
    return "new";
  }

  /** A new connection resumes after `lastSeq`. */
  resumed(): number {
    this.resumes.push(this.lastSeq);
    return this.lastSeq;
  }
}
