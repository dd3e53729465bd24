/**
 * One stream's subscription on the bus. It is opened before the job is
 * submitted (so no event can be missed), delivers events strictly in `seq`
 * order exactly once, and turns a gap into an explicit RUNNEL_ERR_EVENT_GAP
 * error instead of a stream with a hole.
 */
import { decodeEvent, eventsSubject, isTerminal, type NatsConnection, type StreamEvent } from "@runnel/shared";

export type EventSink = (event: StreamEvent) => void;

/** Events that may arrive before the handler attaches (between submit and its ack): a handful at most. */
const EARLY_LIMIT = 1024;

export class StreamSession {
  readonly #subscription: ReturnType<NatsConnection["subscribe"]>;
  #sink: EventSink | undefined;
  #early: StreamEvent[] | undefined = [];
  #expected = 1;
  #closed = false;

  constructor(
    nc: NatsConnection,
    readonly streamId: string,
  ) {
    this.#subscription = nc.subscribe(eventsSubject(streamId), {
      callback: (error, message) => {
        if (error || this.#closed) return;
        let event: StreamEvent;
        try {
          event = decodeEvent(message.data);
        } catch {
          this.#deliver(this.#gapError(`undecodable event after seq ${this.#expected - 1}`));
          return;
        }
        this.#accept(event);
      },
    });
  }

  /** Starts delivery; events that arrived before are delivered first. */
  attach(sink: EventSink): void {
    this.#sink = sink;
    const early = this.#early ?? [];
    this.#early = undefined;
    for (const event of early) {
      if (this.#closed) return;
      this.#emit(event);
    }
  }

  /** Stops listening. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#subscription.unsubscribe();
  }

  get lastSeq(): number {
    return this.#expected - 1;
  }

  #accept(event: StreamEvent): void {
    if (event.seq < this.#expected) return; // a duplicate (a terminal event re-published after a lost ack)
    if (event.seq > this.#expected) {
      this.#deliver(this.#gapError(`expected seq ${this.#expected}, got ${event.seq}`));
      return;
    }
    this.#expected += 1;
    this.#deliver(event);
  }

  #deliver(event: StreamEvent): void {
    if (this.#early) {
      if (this.#early.length < EARLY_LIMIT) this.#early.push(event);
      else if (!this.#closed) {
        this.#early.push(this.#gapError("too many events before the client was attached"));
        this.close();
      }
      return;
    }
    this.#emit(event);
  }

  #emit(event: StreamEvent): void {
    if (isTerminal(event)) this.close();
    this.#sink?.(event);
  }

  #gapError(detail: string): StreamEvent {
    const seq = this.#expected;
    this.#expected += 1;
    return {
      streamId: this.streamId,
      seq,
      event: { $case: "error", value: { code: "RUNNEL_ERR_EVENT_GAP", message: `stream ${this.streamId}: ${detail}`, retryable: true, httpStatus: 502 } },
    };
  }
}
