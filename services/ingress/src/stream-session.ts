/**
 * One stream's subscription on the bus. It is opened before the job is
 * submitted (so no event can be missed), delivers events strictly in `seq`
 * order exactly once, and ends with exactly one terminal event: the worker's
 * `done` or `error`, or an error the ingress raises itself (a gap in `seq`,
 * a lost worker). Events the ingress makes up carry seq 0: they have no
 * place in the stream's log, so they are framed without an SSE id.
 */
import { decodeEvent, ERRORS, type ErrorCode, eventsSubject, isTerminal, type NatsConnection, type StreamEvent } from "@runnel/shared";

export type EventSink = (event: StreamEvent) => void;

/** Events that may arrive before the handler attaches (between submit and its ack): a handful in practice. */
const EARLY_LIMIT = 1024;

export class StreamSession {
  readonly #subscription: ReturnType<NatsConnection["subscribe"]>;
  #sink: EventSink | undefined;
  #early: StreamEvent[] | undefined = [];
  #expected = 1;
  /** No more events will be delivered: a terminal event was delivered (or queued), or the consumer closed. */
  #ended = false;
  #received = 0;

  constructor(
    nc: NatsConnection,
    readonly streamId: string,
  ) {
    this.#subscription = nc.subscribe(eventsSubject(streamId), {
      callback: (error, message) => {
        if (error || this.#ended) return;
        let event: StreamEvent;
        try {
          event = decodeEvent(message.data);
        } catch {
          this.fail("RUNNEL_ERR_EVENT_GAP", `undecodable event after seq ${this.#expected - 1}`);
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
    for (const event of early) sink(event);
  }

  /** Stops listening; nothing more is delivered. Idempotent. */
  close(): void {
    this.#ended = true;
    this.#subscription.unsubscribe();
  }

  /** Ends the stream with an error raised by the ingress itself (seq 0). Does nothing once ended. */
  fail(code: ErrorCode, message: string): void {
    if (this.#ended) return;
    this.#deliver({
      streamId: this.streamId,
      seq: 0,
      event: {
        $case: "error",
        value: { code, message: `stream ${this.streamId}: ${message}`, retryable: ERRORS[code].retryable, httpStatus: ERRORS[code].httpStatus },
      },
    });
  }

  /** The seq of the last event delivered from the worker. */
  get lastSeq(): number {
    return this.#expected - 1;
  }

  /** Events received so far; a watcher compares it between ticks to spot a quiet stream without a clock on the per-event path. */
  get received(): number {
    return this.#received;
  }

  get ended(): boolean {
    return this.#ended;
  }

  #accept(event: StreamEvent): void {
    this.#received += 1;
    if (event.seq < this.#expected) return; // a duplicate (a terminal event re-published after a lost ack)
    if (event.seq > this.#expected) {
      this.fail("RUNNEL_ERR_EVENT_GAP", `expected seq ${this.#expected}, got ${event.seq}`);
      return;
    }
    this.#expected += 1;
    this.#deliver(event);
  }

  #deliver(event: StreamEvent): void {
    if (isTerminal(event)) this.close();
    if (this.#early) {
      if (this.#early.length < EARLY_LIMIT || isTerminal(event)) this.#early.push(event);
      else this.fail("RUNNEL_ERR_EVENT_GAP", "too many events arrived before the client was attached");
      return;
    }
    this.#sink?.(event);
  }
}
