/**
 * One NATS subscription per stream per ingress process, fanned out to every
 * local reader of that stream (the client that opened it, resumed clients,
 * pollers). Each event is decoded once.
 */
import { decodeEvent, ProviderWaiting, type StreamEvent, streamSubjects } from "@runnel/shared/contracts";
import type { NatsConnection } from "@runnel/shared/runtime";

export interface LiveListener {
  onLive(event: StreamEvent): void;
  /** A signal of the stream's worker (not part of the stream): whether a provider works on its first token. */
  onWaiting?(waiting: boolean): void;
}

interface Entry {
  readonly subscription: ReturnType<NatsConnection["subscribe"]>;
  readonly listeners: Set<LiveListener>;
}

export class StreamHub {
  readonly #streams = new Map<string, Entry>();

  constructor(private readonly nc: NatsConnection) {}

  /** Starts (or joins) the live feed of a stream. Returns the function that leaves it. */
  join(streamId: string, listener: LiveListener): () => void {
    let entry = this.#streams.get(streamId);
    if (!entry) {
      const listeners = new Set<LiveListener>();
      // One subscription for the stream's events and its signals.
      const subscription = this.nc.subscribe(streamSubjects(streamId), {
        callback: (error, message) => {
          if (error) return;
          if (message.subject.endsWith(".signal")) {
            let waiting: boolean;
            try {
              waiting = ProviderWaiting.decode(message.data).waiting;
            } catch {
              return;
            }
            for (const each of listeners) each.onWaiting?.(waiting);
            return;
          }
          let event: StreamEvent;
          try {
            event = decodeEvent(message.data);
          } catch {
            return; // an undecodable message shows up as a gap to the readers, who recover from the log
          }
          for (const each of listeners) each.onLive(event);
        },
      });
      entry = { subscription, listeners };
      this.#streams.set(streamId, entry);
    }
    entry.listeners.add(listener);
    const joined = entry;
    return () => {
      joined.listeners.delete(listener);
      if (joined.listeners.size === 0 && this.#streams.get(streamId) === joined) {
        this.#streams.delete(streamId);
        joined.subscription.unsubscribe();
      }
    };
  }

  /** Local readers of a stream (for the detach grace and tests). */
  listeners(streamId: string): number {
    return this.#streams.get(streamId)?.listeners.size ?? 0;
  }

  /** Streams with a live subscription. */
  get size(): number {
    return this.#streams.size;
  }
}
