/**
 * The inspector's live feed: while at least one inspector is connected, this
 * ingress watches the stream records of the whole cluster (a KV watch on
 * `runnel_streams`), counts every stream's events (one wildcard
 * subscription to `runnel.stream.*.events`), notes resumes
 * (`runnel.ctl.attached.*`), asks the control plane for route health every
 * two seconds, and sends each inspector the changes twice a second. With no
 * inspector connected none of that runs: the only standing cost is knowing
 * which transport each local stream uses (a map entry per open stream) and
 * answering other replicas' inspectors with it.
 *
 * The wildcard subscription brings every token of every stream to this
 * ingress while an inspector is open: the price of live token counts,
 * paid only then. The board it feeds is bounded (console-board.ts).
 */
import type { FeedRoutes, FeedStreams, RouteRow } from "@runnel/console";
import { ATTACHED_SUBJECTS, CONSOLE_TRANSPORTS_SUBJECT, decodeEvent, EVENTS_SUBJECTS, StreamState } from "@runnel/shared/contracts";
import { CircuitState } from "@runnel/shared/domain";
import type { Bus, ControlPlaneLink, Logger } from "@runnel/shared/runtime";
import { type BoardOptions, ConsoleBoard } from "./console-board.js";
import type { Transport } from "./telemetry.js";

export interface ConsoleFeedDeps {
  readonly bus: Bus;
  readonly link: ControlPlaneLink;
  readonly log: Logger;
  readonly instanceId: string;
  readonly board?: Partial<BoardOptions>;
  /** How often inspectors get the changes. */
  readonly tickMs?: number;
  /** How often route health is asked for. */
  readonly routesMs?: number;
}

export type FeedMessage = { readonly event: "streams"; readonly data: FeedStreams } | { readonly event: "routes"; readonly data: FeedRoutes };

export type FeedListener = (message: FeedMessage) => void;

/** What an open local stream is known by: its id (read when needed; a WebSocket learns it after it started). */
export interface ServedStream {
  readonly streamId?: string | undefined;
}

/** Least time between two requests for other replicas' transports. */
const ASK_AGAIN_MS = 1_000;
/** Most transports one replica reports to another's inspector. */
const MAX_REPORTED_TRANSPORTS = 5_000;

const CIRCUITS: Record<number, RouteRow["circuit"]> = {
  [CircuitState.CIRCUIT_STATE_CLOSED]: "closed",
  [CircuitState.CIRCUIT_STATE_OPEN]: "open",
  [CircuitState.CIRCUIT_STATE_HALF_OPEN]: "half-open",
};

interface Following {
  readonly stop: () => void;
}

export class ConsoleFeed {
  readonly board: ConsoleBoard;
  readonly #deps: ConsoleFeedDeps;
  readonly #served = new Map<ServedStream, Transport>();
  readonly #listeners = new Set<FeedListener>();
  readonly #answering: ReturnType<Bus["nc"]["subscribe"]>;
  #following: Following | undefined;
  #routes: FeedRoutes | undefined;

  constructor(deps: ConsoleFeedDeps) {
    this.#deps = deps;
    this.board = new ConsoleBoard(deps.board);
    // Other replicas' inspectors ask which transports this one's clients use.
    this.#answering = deps.bus.nc.subscribe(CONSOLE_TRANSPORTS_SUBJECT, {
      callback: (error, message) => {
        if (error || !message.reply) return;
        message.respond(JSON.stringify(this.#localTransports(MAX_REPORTED_TRANSPORTS)));
      },
    });
  }

  /** A local client started reading a stream with `transport`; call the returned function when it stops. */
  served(stream: ServedStream, transport: Transport): () => void {
    this.#served.set(stream, transport);
    return () => this.#served.delete(stream);
  }

  /** The ingress replica this feed runs on. */
  get instance(): string {
    return this.#deps.instanceId;
  }

  /** Inspectors connected to this replica. */
  get listeners(): number {
    return this.#listeners.size;
  }

  /**
   * Adds an inspector: it gets the whole list at once (as far as the board
   * knows it yet) and the last route health, then every change. The first
   * inspector starts the watches; the last one to leave stops them.
   */
  join(listener: FeedListener): () => void {
    this.#listeners.add(listener);
    if (!this.#following) this.#following = this.#follow();
    listener({ event: "streams", data: { now: Date.now(), full: true, upserts: this.board.rows(), removes: [], overflow: this.board.overflow } });
    if (this.#routes) listener({ event: "routes", data: this.#routes });
    return () => {
      if (!this.#listeners.delete(listener) || this.#listeners.size > 0) return;
      this.#following?.stop();
      this.#following = undefined;
      this.board.clear();
      this.#routes = undefined;
    };
  }

  close(): void {
    this.#following?.stop();
    this.#following = undefined;
    this.#listeners.clear();
    this.#answering.unsubscribe();
  }

  #broadcast(message: FeedMessage): void {
    for (const listener of this.#listeners) listener(message);
  }

  #localTransports(limit: number): Record<string, Transport> {
    const found: Record<string, Transport> = {};
    let count = 0;
    for (const [stream, transport] of this.#served) {
      if (count >= limit) break;
      if (!stream.streamId) continue;
      found[stream.streamId] = transport;
      count += 1;
    }
    return found;
  }

  #follow(): Following {
    const { bus, log } = this.#deps;
    const board = this.board;
    let stopped = false;
    const stops: (() => void)[] = [];

    void (async () => {
      // A record written after this revision was seen live; the watch's initial values are older. (nats.js's
      // isUpdate would do, but it marks the last initial value as an update too.)
      const before = (await bus.records.status()).streamInfo.state.last_seq;
      const watch = await bus.records.watch();
      if (stopped) {
        watch.stop();
        return;
      }
      stops.push(() => watch.stop());
      for await (const entry of watch) {
        if (entry.operation === "PUT") {
          try {
            board.record(StreamState.decode(entry.value), entry.created.getTime(), entry.revision > before, Date.now());
          } catch (error) {
            log.debug({ err: error, key: entry.key }, "console: unreadable stream record");
          }
        } else board.deleted(entry.key);
      }
    })().catch((error: unknown) => log.warn({ err: error }, "console: the stream records watch ended"));

    const events = bus.nc.subscribe(EVENTS_SUBJECTS, {
      callback: (error, message) => {
        if (error) return;
        try {
          board.event(decodeEvent(message.data), Date.now());
        } catch {
          // Not an event: nothing to count.
        }
      },
    });
    const attachedPrefix = ATTACHED_SUBJECTS.slice(0, -1);
    const attached = bus.nc.subscribe(ATTACHED_SUBJECTS, {
      callback: (error, message) => {
        if (!error) board.resumed(message.subject.slice(attachedPrefix.length), Date.now());
      },
    });
    stops.push(
      () => events.unsubscribe(),
      () => attached.unsubscribe(),
    );

    let askedAt = 0;
    const askOthers = () => {
      askedAt = Date.now();
      void this.#askOtherReplicas();
    };
    const tick = setInterval(() => {
      for (const [id, transport] of Object.entries(this.#localTransports(Number.POSITIVE_INFINITY))) board.transport(id, transport);
      // New streams of other replicas' clients: ask them soon rather than at the next round.
      if (board.transportsWanted && Date.now() - askedAt >= ASK_AGAIN_MS) askOthers();
      const changes = board.tick(Date.now());
      if (changes.upserts.length > 0 || changes.removes.length > 0) {
        this.#broadcast({ event: "streams", data: { now: Date.now(), full: false, ...changes, overflow: board.overflow } });
      }
    }, this.#deps.tickMs ?? 500);
    const health = () => {
      void this.#refreshRoutes();
      askOthers();
    };
    health();
    const routes = setInterval(health, this.#deps.routesMs ?? 2_000);
    stops.push(
      () => clearInterval(tick),
      () => clearInterval(routes),
    );
    return {
      stop: () => {
        stopped = true;
        for (const stop of stops) stop();
      },
    };
  }

  async #refreshRoutes(): Promise<void> {
    let message: FeedRoutes;
    try {
      const status = await this.#deps.link.getProviderStatus(1_500);
      message = {
        now: Date.now(),
        routes: status.routes.map((route) => ({
          provider: route.provider,
          model: route.model,
          circuit: CIRCUITS[route.circuit] ?? "unknown",
          cooldownUntilMs: route.cooldownUntilMs,
          ttftMs: route.ttftMs,
          inFlight: route.inFlight,
          errorRate: route.errorRate,
          requestsLastMinute: route.requestsLastMinute,
        })),
        workers: status.workers.map((worker) => ({ id: worker.workerId, inFlight: worker.inFlight, capacity: worker.capacity, draining: worker.draining })),
        error: null,
      };
    } catch (error) {
      const details = (error as { details?: string }).details ?? (error as Error).message;
      message = { now: Date.now(), routes: this.#routes?.routes ?? [], workers: this.#routes?.workers ?? [], error: details };
    }
    if (!this.#following) return;
    this.#routes = message;
    this.#broadcast({ event: "routes", data: message });
  }

  /** The transports of other replicas' clients (each answers with its own; this one's come from the map). */
  async #askOtherReplicas(): Promise<void> {
    try {
      const answers = await this.#deps.bus.nc.requestMany(CONSOLE_TRANSPORTS_SUBJECT, "", { strategy: "timer", maxWait: 300 });
      for await (const answer of answers) {
        const reported = answer.json<Record<string, string>>();
        for (const [id, transport] of Object.entries(reported)) if (typeof transport === "string") this.board.transport(id, transport);
      }
    } catch {
      // No answer (or a replica too old to have the console): those streams stay "unknown".
    }
  }
}
