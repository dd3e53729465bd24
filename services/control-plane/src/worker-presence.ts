/**
 * Worker presence, shared by every control-plane replica. The replica a
 * worker is registered with writes each of its heartbeats to the
 * `runnel_workers` KV bucket (key: worker id, value: the heartbeat without
 * stream ids); every replica reads the bucket. A replica that dies takes
 * nothing with it: its workers re-register with another replica, which goes
 * on refreshing the same entries. A worker is live while its entry is
 * younger than `expireAfterMs` (a few heartbeat intervals, by the NATS
 * server's clock); the bucket's TTL collects what is left behind.
 */
import { controlPlane, WORKERS_BUCKET } from "@runnel/shared/contracts";
import type { Bus, KV, Logger } from "@runnel/shared/runtime";

type WorkerHeartbeat = controlPlane.WorkerHeartbeat;
type WorkerStatus = controlPlane.WorkerStatus;

export interface PresenceEntry {
  readonly workerId: string;
  readonly heartbeat: WorkerHeartbeat;
  /** When the entry was last written (NATS server time). */
  readonly lastSeenMs: number;
}

/** The entries seen within the expiry window. Pure. */
export function liveEntries(entries: readonly PresenceEntry[], now: number, expireAfterMs: number): PresenceEntry[] {
  return entries.filter((entry) => now - entry.lastSeenMs <= expireAfterMs);
}

export function workerStatus(entry: PresenceEntry): WorkerStatus {
  const { heartbeat } = entry;
  return { workerId: entry.workerId, capacity: heartbeat.capacity, inFlight: heartbeat.inFlight, draining: heartbeat.draining, lastSeenMs: entry.lastSeenMs };
}

/** Streams in flight per provider, summed over the given workers. Pure. */
export function inFlightByProvider(entries: readonly PresenceEntry[]): Map<string, number> {
  const totals = new Map<string, number>();
  for (const entry of entries) {
    for (const [provider, count] of Object.entries(entry.heartbeat.inFlightByProvider)) totals.set(provider, (totals.get(provider) ?? 0) + count);
  }
  return totals;
}

/** The bucket's JetStream stream, and the subject prefix of its keys. */
const PRESENCE_STREAM = `KV_${WORKERS_BUCKET}`;
const PRESENCE_SUBJECTS = `$KV.${WORKERS_BUCKET}.`;

export class WorkerPresence {
  readonly #kv: KV;
  readonly #jsm: Bus["jsm"];
  readonly #log: Logger;
  readonly #failing = new Set<string>();

  constructor(
    kv: KV,
    jsm: Bus["jsm"],
    readonly expireAfterMs: number,
    log: Logger,
  ) {
    this.#kv = kv;
    this.#jsm = jsm;
    this.#log = log;
  }

  /** A worker said hello: written only when it has no entry yet (its first heartbeat follows at once and overwrites it). */
  hello(workerId: string, capacity: number): void {
    const heartbeat = controlPlane.WorkerHeartbeat.fromPartial({ capacity });
    this.#write(workerId, () => this.#kv.create(workerId, controlPlane.WorkerHeartbeat.encode(heartbeat).finish()), true);
  }

  /** Records a heartbeat. Never throws: a failed write is logged and the next heartbeat tries again. */
  report(workerId: string, heartbeat: WorkerHeartbeat): void {
    const stored: WorkerHeartbeat = { ...heartbeat, streamIds: [] };
    this.#write(workerId, () => this.#kv.put(workerId, controlPlane.WorkerHeartbeat.encode(stored).finish()), false);
  }

  #write(workerId: string, write: () => Promise<number>, conflictIsFine: boolean): void {
    write().then(
      () => {
        this.#failing.delete(workerId);
      },
      (error: unknown) => {
        if (conflictIsFine) return;
        // Once per worker until a write succeeds again: a NATS outage must not flood the log.
        if (this.#failing.has(workerId)) return;
        this.#failing.add(workerId);
        this.#log.warn({ worker: workerId, err: error }, "cannot record the worker's heartbeat in the presence bucket");
      },
    );
  }

  /**
   * Every entry in the bucket, live or not. Reads each key: an admin call, not
   * a hot path. The keys come from one stream-info request (the subjects the
   * bucket's stream holds), not from `kv.keys()`: that builds a push consumer
   * per call and ends it when the pending count reaches 0, and with workers
   * writing heartbeats meanwhile it could wait on (an admin call hung in CI).
   */
  async entries(): Promise<PresenceEntry[]> {
    const info = await this.#jsm.streams.info(PRESENCE_STREAM, { subjects_filter: `${PRESENCE_SUBJECTS}>` });
    const keys = Object.keys(info.state.subjects ?? {}).map((subject) => subject.slice(PRESENCE_SUBJECTS.length));
    const entries: PresenceEntry[] = [];
    for (const key of keys) {
      const entry = await this.#kv.get(key);
      if (entry?.operation !== "PUT") continue;
      entries.push({ workerId: key, heartbeat: controlPlane.WorkerHeartbeat.decode(entry.value), lastSeenMs: entry.created.getTime() });
    }
    return entries.sort((a, b) => a.workerId.localeCompare(b.workerId));
  }

  /** The live workers. */
  async live(now = Date.now()): Promise<PresenceEntry[]> {
    return liveEntries(await this.entries(), now, this.expireAfterMs);
  }

  /** The live workers' statuses, by worker id. */
  async list(now = Date.now()): Promise<WorkerStatus[]> {
    return (await this.live(now)).map(workerStatus);
  }
}
