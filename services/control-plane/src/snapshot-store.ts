/**
 * Holds the current routing snapshot and pushes every new version to the
 * watchers. The version is a hash of the snapshot's content, so every
 * control-plane replica serving the same config serves the same version and
 * a client that moves between replicas sees no spurious change.
 */
import { createHash } from "node:crypto";
import type { RunnelConfig } from "@runnel/shared/contracts";
import { buildSnapshot, RoutingSnapshot } from "@runnel/shared/domain";

type Listener = (snapshot: RoutingSnapshot) => void;

export function snapshotFromConfig(config: Readonly<RunnelConfig>, now = Date.now()): RoutingSnapshot {
  const snapshot = buildSnapshot(config, 0, 0);
  const digest = createHash("sha256").update(RoutingSnapshot.encode(snapshot).finish()).digest();
  // 48 bits: exact in a JS number, and never 0 (0 means "no snapshot").
  const version = digest.readUIntBE(0, 6) || 1;
  return { ...snapshot, version, createdAtMs: now };
}

export class SnapshotStore {
  #snapshot: RoutingSnapshot;
  readonly #listeners = new Set<Listener>();

  constructor(config: Readonly<RunnelConfig>) {
    this.#snapshot = snapshotFromConfig(config);
  }

  get current(): RoutingSnapshot {
    return this.#snapshot;
  }

  /** Replaces the config; watchers get the new snapshot when its content changed. Returns whether it did. */
  replace(config: Readonly<RunnelConfig>): boolean {
    const next = snapshotFromConfig(config);
    if (next.version === this.#snapshot.version) return false;
    this.#snapshot = next;
    for (const listener of this.#listeners) listener(next);
    return true;
  }

  /** Open watches (for tests and status). */
  get watchers(): number {
    return this.#listeners.size;
  }

  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
