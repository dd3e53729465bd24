/**
 * The control plane's view of the workers: who is registered, their capacity
 * and load, from their heartbeats. Pure: the gRPC handler feeds it.
 */
import type { controlPlane } from "@runnel/shared";

type WorkerHeartbeat = controlPlane.WorkerHeartbeat;
type WorkerStatus = controlPlane.WorkerStatus;

interface WorkerEntry {
  workerId: string;
  version: string;
  capacity: number;
  inFlight: number;
  draining: boolean;
  inFlightByProvider: Record<string, number>;
  lastSeenMs: number;
  connections: number;
}

export class WorkerRegistry {
  readonly #workers = new Map<string, WorkerEntry>();

  constructor(private readonly expireAfterMs: number) {}

  connect(workerId: string, version: string, capacity: number, now: number): void {
    const entry = this.#workers.get(workerId);
    if (entry) {
      entry.connections += 1;
      entry.capacity = capacity;
      entry.version = version;
      entry.lastSeenMs = now;
      return;
    }
    this.#workers.set(workerId, { workerId, version, capacity, inFlight: 0, draining: false, inFlightByProvider: {}, lastSeenMs: now, connections: 1 });
  }

  heartbeat(workerId: string, heartbeat: WorkerHeartbeat, now: number): void {
    const entry = this.#workers.get(workerId);
    if (!entry) return;
    entry.inFlight = heartbeat.inFlight;
    entry.capacity = heartbeat.capacity;
    entry.draining = heartbeat.draining;
    entry.inFlightByProvider = { ...heartbeat.inFlightByProvider };
    entry.lastSeenMs = now;
  }

  disconnect(workerId: string): void {
    const entry = this.#workers.get(workerId);
    if (entry) entry.connections = Math.max(0, entry.connections - 1);
  }

  /** Workers seen within the expiry window, connected or not (a worker re-registering elsewhere keeps its place). */
  list(now: number): WorkerStatus[] {
    const statuses: WorkerStatus[] = [];
    for (const [workerId, entry] of this.#workers) {
      if (entry.connections === 0 && now - entry.lastSeenMs > this.expireAfterMs) {
        this.#workers.delete(workerId);
        continue;
      }
      statuses.push({ workerId, capacity: entry.capacity, inFlight: entry.inFlight, draining: entry.draining, lastSeenMs: entry.lastSeenMs });
    }
    return statuses;
  }

  /** Streams in flight per provider, summed over live workers. */
  inFlightByProvider(now: number): Map<string, number> {
    const totals = new Map<string, number>();
    for (const status of this.list(now)) {
      const entry = this.#workers.get(status.workerId);
      if (!entry) continue;
      for (const [provider, count] of Object.entries(entry.inFlightByProvider)) totals.set(provider, (totals.get(provider) ?? 0) + count);
    }
    return totals;
  }
}
