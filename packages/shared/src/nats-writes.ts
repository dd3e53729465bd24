/**
 * Fewer, larger socket writes on a NATS connection.
 *
 * nats.js appends every command to one outbound buffer and writes that
 * buffer to the socket in a microtask. A process handling many streams
 * reaches a microtask checkpoint after every socket read, so a worker
 * reading 500 provider streams wrote to NATS about once per token, and an
 * ingress once per command of each request (SUB, the job, UNSUB). Here the
 * write waits for `setImmediate` instead: what the I/O callbacks of the
 * current turn published goes out in one write, right after the loop has
 * handled that batch of I/O, without a timer; in a long turn, the first
 * command more than MAX_DELAY_MS after the oldest one waiting writes them
 * all. Order is unchanged (still one buffer, written front to back); a
 * buffer past nats.js's own limit (32 KiB) is still written at once, so it
 * stays bounded.
 *
 * This replaces `flushPending` and `sendCommand` on the connection's
 * protocol handler, internals of nats.js (3.x). If they are not what this
 * expects, the connection is left as it is and `coalesceWrites` returns
 * false; test/src/component/nats-writes.test.ts fails then.
 */
import type { NatsConnection } from "@nats-io/nats-core";

interface ProtocolInternals {
  /** Appends a command to `outbound`; asks for a flush when `outbound` was empty (or is past `pendingLimit`). */
  sendCommand(command: string | Uint8Array, ...payloads: Uint8Array[]): void;
  flushPending(): void;
  readonly outbound: { size(): number };
  readonly pendingLimit: number;
}

function internals(nc: NatsConnection): ProtocolInternals | undefined {
  const protocol = (nc as unknown as { protocol?: Partial<ProtocolInternals> }).protocol;
  if (!protocol || typeof protocol.flushPending !== "function" || typeof protocol.sendCommand !== "function") return undefined;
  if (typeof protocol.outbound?.size !== "function" || typeof protocol.pendingLimit !== "number") return undefined;
  return protocol as ProtocolInternals;
}

const COALESCED = Symbol("runnel.coalescedWrites");
/**
 * A long turn does not hold its commands back for all of it: without this
 * bound, a loaded worker sent its tokens only at the end of each turn, where
 * writing sooner lets nats-server and the ingress work on them on the other
 * cores meanwhile (docs/benchmarks.md has the figures).
 */
const MAX_DELAY_MS = 0.25;

/** Makes `nc` coalesce its writes (see above); idempotent. Returns whether it does. `maxDelayMs`: for tests. */
export function coalesceWrites(nc: NatsConnection, maxDelayMs = MAX_DELAY_MS): boolean {
  const protocol = internals(nc);
  if (!protocol) return false;
  const marked = protocol as ProtocolInternals & { [COALESCED]?: true };
  if (marked[COALESCED]) return true;
  marked[COALESCED] = true;
  const flush = protocol.flushPending.bind(protocol);
  const send = protocol.sendCommand.bind(protocol);
  let queuedAt = -1;
  const flushNow = () => {
    queuedAt = -1;
    flush();
  };
  const flushQueued = () => {
    if (queuedAt >= 0) flushNow();
  };
  protocol.flushPending = () => {
    if (protocol.outbound.size() >= protocol.pendingLimit) flushNow();
    else if (queuedAt < 0) {
      queuedAt = performance.now();
      setImmediate(flushQueued);
    }
  };
  // nats.js asks for a flush only when the buffer was empty: the bound is checked on every command.
  protocol.sendCommand = (command, ...payloads) => {
    send(command, ...payloads);
    if (queuedAt >= 0 && performance.now() - queuedAt >= maxDelayMs) flushNow();
  };
  return true;
}
