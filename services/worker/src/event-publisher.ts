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
import { encodeEvent, eventsSubject, type StreamEvent } from "@runnel/shared";

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

  /** Undefined while the stream may go on; else a promise that resolves once the log has caught up enough. */
  ready(): Promise<void> | undefined {
    if (this.#unacknowledged < this.window) return undefined;
    this.#waiting ??= new Promise((resolve) => {
      this.#waiter = resolve;
    });
    return this.#waiting;
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
