/**
 * Reads one stream for one client, from a position, exactly once and in
 * order: from the replay log when it starts behind (resume, polling) or
 * falls behind (a slow client), from the live feed when it is caught up.
 * Memory per reader is bounded: while it cannot deliver (not attached yet,
 * paused by a full socket, catching up), it keeps at most `bufferEvents`
 * live events and reads anything beyond from the log later. Every reader
 * ends with exactly one terminal event: the worker's `done` or `error`, or
 * an error the ingress raises itself (seq 0, framed without an SSE id).
 */

import { type ErrorCode, errorEvent, isTerminal, RunnelError, type StreamEvent } from "@runnel/shared/contracts";
import { EpochFence } from "@runnel/shared/domain";
import type { EventLog, LogBatch, LogCursor } from "@runnel/shared/runtime";
import type { LiveListener, StreamHub } from "./stream-hub.js";

export type EventSink = (event: StreamEvent) => void;

/** The error event of a failure the ingress raised itself: seq 0, as it has no place in the stream's log. */
export function raisedError(streamId: string, error: RunnelError): StreamEvent {
  return { streamId, seq: 0, epoch: 0, event: errorEvent(error) };
}

export interface ReaderOptions {
  readonly hub: StreamHub;
  readonly log: EventLog;
  readonly streamId: string;
  /** Deliver events with seq greater than this. */
  readonly after: number;
  /** Start from the log (resume, polling); a stream just opened has nothing logged yet. */
  readonly fromLog: boolean;
  readonly bufferEvents: number;
  /** Log read failures (the reader retries). */
  readonly onLogError?: (error: unknown) => void;
  /** The `started` and `failover` events before the resume point, which are not delivered: the route serving from there. */
  readonly onSkippedRoute?: (event: StreamEvent) => void;
}

/** Events read from the log per round trip. */
const LOG_BATCH = 256;
/** Times (5 ms apart) a reader waits for an event it saw live to appear in the log. */
const LOG_WAITS = 400;

export class StreamReader implements LiveListener {
  readonly streamId: string;
  readonly #options: ReaderOptions;
  readonly #leave: () => void;
  #sink: EventSink | undefined;
  #next: number;
  #mode: "live" | "replay";
  #paused = false;
  #ended = false;
  #buffer: StreamEvent[] = [];
  #maxSeen = 0;
  /** The ownership fence (stream-fold.ts): events of a lower epoch than any read come from a fenced-off worker. */
  readonly #fence = new EpochFence();
  #activity = 0;
  #replaying = false;
  /** Runs once, after the first worker event went to the client (time to first byte). */
  #onFirstEvent: (() => void) | undefined;
  /** JetStream sequence of the last event delivered from the log: the next catch-up starts after it. */
  #lastStreamSeq = 0;
  #markCaughtUp: () => void = () => {};
  /** Resolves once the reader has read everything the log held when it started (at once for a new stream). */
  readonly caughtUp: Promise<void>;

  constructor(options: ReaderOptions) {
    this.caughtUp = new Promise((resolve) => {
      this.#markCaughtUp = resolve;
    });
    this.#options = options;
    this.streamId = options.streamId;
    this.#next = options.after + 1;
    this.#mode = options.fromLog ? "replay" : "live";
    if (!options.fromLog) this.#markCaughtUp();
    // Join the live feed first, so nothing published from now on can be missed.
    this.#leave = options.hub.join(options.streamId, this);
  }

  #onWaiting: ((waiting: boolean) => void) | undefined;

  /** Tells `listener` of the worker's ProviderWaiting signals (see stream-hub.ts). */
  onProviderWaiting(listener: (waiting: boolean) => void): void {
    this.#onWaiting = listener;
  }

  onWaiting(waiting: boolean): void {
    if (!this.#ended) this.#onWaiting?.(waiting);
  }

  /** Calls `notify` once, right after the first event from the worker was handed to the client. */
  onFirstEvent(notify: () => void): void {
    this.#onFirstEvent = notify;
  }

  /** Starts delivery. */
  attach(sink: EventSink): void {
    this.#sink = sink;
    this.#pump();
  }

  /** The client cannot take more now (its socket buffer is full). */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#pump();
  }

  /** Reads from the log now: the live feed may have missed events that nothing later will reveal (the last ones). */
  catchUp(): void {
    if (this.#ended || this.#mode === "replay") return;
    this.#mode = "replay";
    this.#pump();
  }

  /** Stops reading; nothing more is delivered. Idempotent. */
  close(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#markCaughtUp();
    this.#buffer = [];
    this.#leave();
  }

  /** Ends the stream for this client with an error raised by the ingress (seq 0). */
  fail(code: ErrorCode, message: string): void {
    if (this.#ended) return;
    this.#deliver(raisedError(this.streamId, new RunnelError(code, `stream ${this.streamId}: ${message}`)));
  }

  get ended(): boolean {
    return this.#ended;
  }

  get paused(): boolean {
    return this.#paused;
  }

  /** The seq of the last event delivered (the client's resume position). */
  get position(): number {
    return this.#next - 1;
  }

  /** Grows with every event seen or delivered; a watcher compares it between ticks to spot a quiet stream. */
  get activity(): number {
    return this.#activity;
  }

  onLive(event: StreamEvent): void {
    if (this.#ended) return;
    // A worker that lost the stream to a takeover, writing late: fenced off.
    if (this.#fence.fenced(event)) return;
    this.#activity += 1;
    if (event.seq > this.#maxSeen) this.#maxSeen = event.seq;
    if (this.#fence.newer(event)) {
      // A takeover. Its fencing event was written with an expected last
      // sequence, but a rejected one still reaches live subscribers: only the
      // log says where the new owner's events begin, so read it from there.
      if (this.#mode === "live") {
        this.#mode = "replay";
        this.#pump();
      }
      return;
    }
    if (event.seq < this.#next) return;
    if (this.#mode === "live" && this.#sink && !this.#paused && this.#buffer.length === 0) {
      if (event.seq === this.#next) this.#deliver(event);
      else {
        // A gap on the live feed: what is missing is in the log.
        this.#mode = "replay";
        this.#pump();
      }
      return;
    }
    // Not delivering right now: keep a bounded number; the log has the rest.
    if (this.#buffer.length < this.#options.bufferEvents) this.#buffer.push(event);
  }

  #deliver(event: StreamEvent): void {
    if (event.seq > 0) this.#next = event.seq + 1;
    this.#fence.raise(event.epoch);
    this.#activity += 1;
    const terminal = isTerminal(event);
    if (terminal) this.close();
    this.#sink?.(event);
    if (this.#onFirstEvent !== undefined && event.seq > 0) {
      const notify = this.#onFirstEvent;
      this.#onFirstEvent = undefined;
      notify();
    }
  }

  #pump(): void {
    if (this.#ended || !this.#sink || this.#paused) return;
    if (this.#mode === "live") this.#drainBuffer();
    if (this.#mode === "replay" && !this.#replaying) {
      this.#replaying = true;
      this.#replay()
        .catch((error: unknown) => this.fail("RUNNEL_ERR_INTERNAL", `reading the log failed: ${error instanceof Error ? error.message : String(error)}`))
        .finally(() => {
          this.#replaying = false;
          // Still behind (a fresh cursor is needed, or a resume came while this one was closing): go on.
          this.#pump();
        });
    }
  }

  /** Delivers buffered live events while they continue the stream; a hole switches to the log (returns false). */
  #drainBuffer(): boolean {
    while (this.#buffer.length > 0 && !this.#ended && !this.#paused) {
      const event = this.#buffer[0] as StreamEvent;
      if (event.seq < this.#next) {
        this.#buffer.shift();
        continue;
      }
      if (event.seq > this.#next) break;
      this.#buffer.shift();
      this.#deliver(event);
    }
    if (this.#ended || this.#paused) return true;
    // Events were seen that are neither delivered nor buffered (a hole, or a full buffer): read them from the log.
    if (this.#maxSeen >= this.#next) {
      this.#buffer = this.#buffer.filter((event) => event.seq > this.#next);
      this.#mode = "replay";
      return false;
    }
    this.#buffer = [];
    return true;
  }

  async #replay(): Promise<void> {
    // One cursor per catch-up, starting after the last log message this reader read before.
    const cursor = this.#options.log.cursor(this.streamId, this.#lastStreamSeq);
    try {
      await this.#replayWith(cursor);
    } finally {
      await cursor.close();
    }
  }

  async #replayWith(cursor: LogCursor): Promise<void> {
    let waits = 0;
    const fromStart = this.#lastStreamSeq === 0;
    while (!this.#ended && this.#mode === "replay" && !this.#paused) {
      let batch: LogBatch;
      try {
        batch = await cursor.read(this.#next - 1, LOG_BATCH);
      } catch (error) {
        this.#options.onLogError?.(error);
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      if (this.#ended) return;
      if (batch.events.length === 0 && !batch.caughtUp) {
        // The log said there was more but delivered nothing (a consumer reset): start a fresh cursor shortly.
        await new Promise((resolve) => setTimeout(resolve, 20));
        return;
      }
      if (fromStart && batch.firstSeq > this.#next) {
        this.fail("RUNNEL_ERR_EVENTS_EXPIRED", `events after seq ${this.#next - 1} are no longer retained (the log starts at ${batch.firstSeq})`);
        return;
      }
      this.#fence.raise(batch.skippedEpoch);
      for (const event of batch.skippedRoute) this.#options.onSkippedRoute?.(event);
      for (const [index, event] of batch.events.entries()) {
        if (this.#ended || this.#paused) return;
        if (this.#fence.fenced(event)) {
          // Written after a takeover's fence by the worker that lost the stream: not part of it.
          this.#lastStreamSeq = batch.streamSeqs[index] ?? this.#lastStreamSeq;
          continue;
        }
        // In log order even an event already delivered (a resume point past it) raises the epoch.
        this.#fence.raise(event.epoch);
        if (event.seq < this.#next) continue;
        if (event.seq > this.#next) {
          // The log is written in order by one publisher: a hole in it will never fill.
          this.fail("RUNNEL_ERR_EVENT_GAP", `event ${this.#next} is missing from the log (it holds ${event.seq})`);
          return;
        }
        // Only what was delivered counts: a batch cut short by a pause is read again from here.
        this.#lastStreamSeq = batch.streamSeqs[index] ?? this.#lastStreamSeq;
        // Progress: the log is keeping up, so waiting for it starts over.
        waits = 0;
        this.#deliver(event);
      }
      if (this.#ended || this.#paused) return;
      if (batch.caughtUp) {
        // Caught up with the log: continue from the live feed (and what it buffered meanwhile).
        this.#mode = "live";
        this.#markCaughtUp();
        if (!this.#drainBuffer()) {
          // Seen live but not in the log yet (or not buffered): give the log a moment, a bounded number of times.
          waits += 1;
          if (waits > LOG_WAITS) {
            this.fail("RUNNEL_ERR_EVENT_GAP", `event ${this.#next} was published but never reached the log`);
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      }
    }
  }
}
