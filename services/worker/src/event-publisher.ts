/**
 * Publishes a stream's events so that every one reaches the replay log.
 * A plain publish is fire-and-forget: when a burst outruns JetStream's
 * ingest, events can go missing from the log (seen here: a 200,000-token
 * burst left holes), and resume would then find a hole. Each event is
 * instead published with a reply subject, which makes JetStream acknowledge
 * it; a stream keeps at most `window` events unacknowledged and its reader
 * of the provider waits (`ready()`) when it is that far ahead. One wildcard
 * subscription per worker takes every acknowledgement: no request, timer or
 * promise per event.
 */
import { createInbox, type NatsConnection } from "@nats-io/nats-core";
import { encodeEvent, eventsSubject, RunnelError, type StreamEvent } from "@runnel/shared/contracts";

/** How long a stream waits for the log to acknowledge anything before it fails. */
const STALLED_MS = 10_000;

export class EventPublisher {
  readonly #nc: NatsConnection;
  readonly #inbox: string;
  readonly #streams = new Map<string, StreamPublisher>();
  readonly #subscription: ReturnType<NatsConnection["subscribe"]>;
  #next = 0;

  constructor(
    nc: NatsConnection,
    private readonly window = 512,
  ) {
    this.#nc = nc;
    this.#inbox = createInbox();
    this.#subscription = nc.subscribe(`${this.#inbox}.*`, {
      callback: (error, message) => {
        if (error) return;
        const publisher = this.#streams.get(message.subject.slice(this.#inbox.length + 1));
        // A PubAck is {"stream":..,"seq":..}; a refusal carries "error".
        publisher?.acknowledged(message.data.length > 0 && message.data[2] === 0x65 /* {"e */);
      },
    });
  }

  /** A publisher for one stream, until `release()`. */
  forStream(streamId: string): StreamPublisher {
    const key = (this.#next++).toString(36);
    const publisher = new StreamPublisher(this.#nc, eventsSubject(streamId), `${this.#inbox}.${key}`, this.window, () => this.#streams.delete(key));
    this.#streams.set(key, publisher);
    return publisher;
  }

  close(): void {
    this.#subscription.unsubscribe();
  }
}

export class StreamPublisher {
  #unacknowledged = 0;
  #refused = 0;
  #waiter: (() => void) | undefined;
  #waiting: Promise<void> | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly subject: string,
    private readonly reply: string,
    private readonly window: number,
    readonly release: () => void,
  ) {}

  publish(event: StreamEvent): void {
    this.#unacknowledged += 1;
    this.nc.publish(this.subject, encodeEvent(event), { reply: this.reply });
  }

  /**
   * Undefined while the stream may go on; else a promise that resolves once
   * the log has caught up enough. It rejects when `signal` aborts (a cancel
   * must not wait for the log), when acknowledgements stop coming for
   * `STALLED_MS` (lost in a reconnect, say: the stream must end, not hang),
   * or when the log refused an event (the stream would have a hole).
   */
  ready(signal: AbortSignal): Promise<void> | undefined {
    if (this.#refused > 0) return Promise.reject(new RunnelError("RUNNEL_ERR_INTERNAL", `the event log refused ${this.#refused} event(s) of this stream`));
    if (this.#unacknowledged < this.window) return undefined;
    this.#waiting ??= new Promise<void>((resolve) => {
      this.#waiter = resolve;
    });
    const waiting = this.#waiting;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new RunnelError("RUNNEL_ERR_INTERNAL", `the event log acknowledged nothing for ${STALLED_MS} ms (${this.#unacknowledged} events waiting)`));
      }, STALLED_MS);
      const onAbort = () => {
        cleanup();
        reject(signal.reason);
      };
      const cleanup = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      waiting.then(() => {
        cleanup();
        resolve();
      });
    });
  }

  /** Events the log refused (it is full or gone); the job runner fails the stream when this is not 0. */
  get refused(): number {
    return this.#refused;
  }

  acknowledged(refused: boolean): void {
    this.#unacknowledged = Math.max(0, this.#unacknowledged - 1);
    if (refused) this.#refused += 1;
    if (this.#waiter && this.#unacknowledged <= this.window / 2) {
      const wake = this.#waiter;
      this.#waiter = undefined;
      this.#waiting = undefined;
      wake();
    }
  }
}
