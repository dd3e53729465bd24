/**
 * Taking jobs from the queue (`RUNNEL_JOBS`, the shared `runnel-workers`
 * pull consumer): PULL_LANES concurrent pull requests, never holding more
 * than the free slots, each job handed to `onJob`; and putting a handed-off
 * job back for another worker. A drain withdraws the waiting pulls at once.
 */
import { JOBS_CONSUMER, JOBS_STREAM, JOBS_SUBJECT } from "@runnel/shared/contracts";
import type { Bus, JsMsg, Logger } from "@runnel/shared/runtime";

type JobConsumer = Awaited<ReturnType<Bus["js"]["consumers"]["get"]>>;
type PullRequest = Awaited<ReturnType<JobConsumer["fetch"]>>;

/** Concurrent pull requests a worker keeps open while it has free slots. */
const PULL_LANES = 16;

export interface IntakeOptions {
  readonly bus: Bus;
  readonly log: Logger;
  readonly concurrency: number;
  /** Streams running now. */
  readonly running: () => number;
  /** Jobs are taken only once this says so (the worker has a routing snapshot). */
  readonly canTake: () => boolean;
  readonly onJob: (message: JsMsg) => void;
}

export class JobIntake {
  readonly #options: IntakeOptions;
  /**
   * The job pulls waiting at the server. A drain withdraws them: otherwise the
   * server goes on offering new jobs to this worker for up to 5 s, each is
   * NAKed, and a job NAKed `max_deliver` (5) times by the 16 waiting pulls is
   * never delivered again: its client waits until the job's max age.
   */
  readonly #pulls = new Set<PullRequest>();
  readonly #slotWaiters: (() => void)[] = [];
  #stopped = false;
  #pulling = false;

  constructor(options: IntakeOptions) {
    this.#options = options;
  }

  /** True while the lanes are pulling. */
  get pulling(): boolean {
    return this.#pulling;
  }

  /** A slot freed up (or the intake stopped): waiting lanes look again. */
  slotFreed(): void {
    for (const wake of this.#slotWaiters.splice(0)) wake();
  }

  /** Takes no new jobs from now on, and withdraws the pulls waiting at the server. */
  stop(): void {
    this.#stopped = true;
    this.slotFreed();
    for (const pull of this.#pulls) pull.stop();
  }

  /**
   * Pulls jobs on PULL_LANES concurrent pull requests: one pull at a time
   * dispatched a burst of 500 jobs one round trip after another (about 1 s
   * to the last first token). Resolves when the intake stops.
   */
  async run(): Promise<void> {
    const { bus, log, concurrency } = this.#options;
    const consumer: JobConsumer = await bus.js.consumers.get(JOBS_STREAM, JOBS_CONSUMER);
    let reserved = 0;
    const lane = async () => {
      while (!this.#stopped) {
        if (this.#options.running() + reserved >= concurrency) {
          await new Promise<void>((resolve) => this.#slotWaiters.push(resolve));
          continue;
        }
        if (!this.#options.canTake()) {
          await new Promise((resolve) => setTimeout(resolve, 50));
          continue;
        }
        reserved += 1;
        let message: JsMsg | null = null;
        try {
          // consumer.next() with a handle: stop() withdraws the request (see #pulls).
          const pull = await consumer.fetch({ max_messages: 1, expires: 5_000 });
          this.#pulls.add(pull);
          try {
            for await (const each of pull) {
              message = each;
              break;
            }
          } finally {
            this.#pulls.delete(pull);
            pull.stop();
          }
        } catch (error) {
          reserved -= 1;
          if (this.#stopped) break;
          log.warn({ err: error }, "pulling a job failed; retrying");
          await new Promise((resolve) => setTimeout(resolve, 500));
          continue;
        }
        reserved -= 1;
        if (!message) continue;
        if (this.#stopped) {
          // Taken while shutting down: hand it straight back for another worker.
          message.nak();
          break;
        }
        this.#options.onJob(message);
      }
    };
    this.#pulling = true;
    try {
      await Promise.all(Array.from({ length: Math.min(PULL_LANES, concurrency) }, lane));
    } finally {
      this.#pulling = false;
    }
  }

  /**
   * Puts a handed-off stream's job back in the queue for another worker to
   * take the stream over at once. As a fresh message, not a NAK: a NAK counts
   * against the consumer's delivery limit, so a stream handed over a few
   * times in a rollout would never be delivered again.
   */
  handBack(message: JsMsg, streamId: string): Promise<void> {
    const { bus, log } = this.#options;
    return bus.js
      .publish(JOBS_SUBJECT, message.data, {
        msgID: `${streamId}.handoff.${message.info.streamSequence}`,
        timeout: 5_000,
        ...(message.headers ? { headers: message.headers } : {}),
      })
      .then(
        () => message.ack(),
        (error: unknown) => {
          log.warn({ err: error, stream_id: streamId }, "republishing a handed-off job failed; returning it with a NAK");
          message.nak();
        },
      );
  }
}
