/**
 * Reads a stream's events back from the replay log (the RUNNEL_EVENTS
 * JetStream stream): resume, polling and clients that fell behind all read
 * here, at their own pace, instead of holding events in ingress memory.
 */
import { type Bus, DeliverPolicy, isNoMessageFound } from "./bus.js";
import { decodeEvent, type StreamEvent } from "./events.js";
import { EVENTS_STREAM, eventsSubject } from "./subjects.js";

export interface LogBatch {
  /** Events with seq > `after`, in order, at most `limit`. */
  readonly events: StreamEvent[];
  /** The JetStream sequence of each event, by index: where a later cursor may start. */
  readonly streamSeqs: number[];
  /** True when the log held no more events for the stream at the time of reading. */
  readonly caughtUp: boolean;
  /** Seq of the first event this cursor read (0: none yet); older ones passed the retention window, or were read before. */
  readonly firstSeq: number;
  /**
   * The highest ownership epoch among the events this read skipped (seq at or
   * before `after`): a takeover's fence the reader had already passed still
   * fences off what follows it.
   */
  readonly skippedEpoch: number;
  /**
   * The `started` and `failover` events among those skipped, in order: which
   * route (and upstream model) serves the stream at the resume point, so a
   * resumed client's chunks name the same model as the live ones did.
   */
  readonly skippedRoute: StreamEvent[];
}

type Consumer = Awaited<ReturnType<Bus["js"]["consumers"]["get"]>>;

/**
 * A position in one stream's part of the log: an ordered consumer kept open
 * across reads, so catching up is one pass over the log, not one per batch.
 */
export class LogCursor {
  #consumer: Consumer | undefined;
  #pending = -1;
  #firstSeq = 0;

  constructor(
    private readonly bus: Bus,
    private readonly streamId: string,
    /** Start at this JetStream sequence (0: at the stream's first retained event). */
    private readonly startStreamSeq: number,
  ) {}

  /** Reads up to `limit` events with seq > `after`; events at or before it are skipped. */
  async read(after: number, limit: number): Promise<LogBatch> {
    if (!this.#consumer) {
      this.#consumer = await this.bus.js.consumers.get(EVENTS_STREAM, {
        filter_subjects: eventsSubject(this.streamId),
        ...(this.startStreamSeq > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.startStreamSeq } : {}),
      });
      this.#pending = (await this.#consumer.info(true)).num_pending;
    }
    const consumer = this.#consumer;
    const events: StreamEvent[] = [];
    const streamSeqs: number[] = [];
    let skippedEpoch = 0;
    const skippedRoute: StreamEvent[] = [];
    while (this.#pending > 0 && events.length < limit) {
      const batch = await consumer.fetch({ max_messages: Math.min(this.#pending, Math.max(limit - events.length, 64)), expires: 2_000 });
      let got = 0;
      for await (const message of batch) {
        got += 1;
        this.#pending = message.info.pending;
        const event = decodeEvent(message.data);
        if (this.#firstSeq === 0) this.#firstSeq = event.seq;
        if (event.seq > after) {
          events.push(event);
          streamSeqs.push(message.seq);
        } else {
          if (event.epoch > skippedEpoch) skippedEpoch = event.epoch;
          const kind = event.event?.$case;
          if (kind === "started" || kind === "failover") skippedRoute.push(event);
        }
      }
      if (got === 0) break;
    }
    if (this.#pending === 0) {
      // Anything published since? Ask the server (info(true) would answer from the cache made at creation).
      this.#pending = (await consumer.info(false)).num_pending;
    }
    return { events, streamSeqs, caughtUp: this.#pending === 0, firstSeq: this.#firstSeq, skippedEpoch, skippedRoute };
  }

  async close(): Promise<void> {
    const consumer = this.#consumer;
    this.#consumer = undefined;
    await consumer?.delete().catch(() => {});
  }
}

export class EventLog {
  constructor(private readonly bus: Bus) {}

  /** The last event the log holds for a stream, if any. */
  async last(streamId: string): Promise<StreamEvent | undefined> {
    try {
      const stored = await this.bus.jsm.streams.getMessage(EVENTS_STREAM, { last_by_subj: eventsSubject(streamId) });
      return stored ? decodeEvent(stored.data) : undefined;
    } catch (error) {
      if (isNoMessageFound(error)) return undefined;
      throw error;
    }
  }

  /** A cursor over one stream's events, from the start of the log or just after a JetStream sequence already read. */
  cursor(streamId: string, afterStreamSeq = 0): LogCursor {
    return new LogCursor(this.bus, streamId, afterStreamSeq > 0 ? afterStreamSeq + 1 : 0);
  }
}
