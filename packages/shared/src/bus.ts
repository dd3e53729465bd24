/**
 * NATS adapters: the connection, the JetStream topology (events log, job
 * queue, stream records) and the job queue's consumer. Every service ensures
 * the topology at start, idempotently, so none depends on another being up.
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { type NatsConnection, nanos } from "@nats-io/nats-core";
import { type ObjectStore, Objm, setSha256Backend } from "@nats-io/obj";
import { connect } from "@nats-io/transport-node";
import type { RunnelConfig } from "./config.js";
import { coalesceWrites } from "./nats-writes.js";
import { BODIES_BUCKET, EVENTS_STREAM, EVENTS_SUBJECTS, JOBS_CONSUMER, JOBS_STREAM, JOBS_SUBJECT, STREAMS_BUCKET, WORKERS_BUCKET } from "./subjects.js";

export type { JetStreamClient, JsMsg, KV, NatsConnection, ObjectStore };
export { DeliverPolicy };

export interface Bus {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly records: KV;
  /** Worker presence (`runnel_workers`), shared by every control-plane replica. */
  readonly workers: KV;
  /** Large requests while their jobs wait or run (`runnel_bodies`; request-bodies.ts). */
  readonly bodies: ObjectStore;
  /**
   * Connected to a server right now: false from a disconnect until the
   * reconnect, and once closed. Readiness is this (with unlimited
   * reconnects, `isClosed()` never turns true while the server is away).
   */
  readonly connected: () => boolean;
}

/**
 * Follows a connection's status events. nats.js reconnects on its own and
 * buffers what is published meanwhile; what it does not do is say, when
 * asked, whether it is connected now.
 */
export function connectionWatch(nc: NatsConnection): () => boolean {
  let up = !nc.isClosed();
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === "disconnect" || status.type === "reconnecting" || status.type === "staleConnection") up = false;
      else if (status.type === "reconnect") up = true;
    }
  })().catch(() => {});
  void nc.closed().then(() => {
    up = false;
  });
  return () => up && !nc.isClosed();
}

/**
 * Presence entries are garbage-collected after this long without a write;
 * readers treat a worker as gone much sooner (a few missed heartbeats).
 */
export const WORKERS_BUCKET_TTL_MS = 60_000;

/**
 * Connects to NATS with reconnects that never give up (a gateway outlives
 * NATS restarts), with fewer, larger socket writes (nats-writes.ts).
 * `noAsyncTraces`: a request does not build two Errors (stack traces and
 * all) up front in case it fails; errors keep their message and cause.
 */
export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  const nc = await connect({
    servers: url.split(",").map((server) => server.trim()),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
    waitOnFirstConnect: true,
    noAsyncTraces: true,
  });
  coalesceWrites(nc);
  return nc;
}

type BusOptions = RunnelConfig["bus"];

/**
 * A large request's body outlives its job's wait in the queue by this much
 * (it is stored just before the job is published); see bodiesTtlMs.
 */
const BODIES_TTL_MARGIN_MS = 60_000;

/**
 * How long the object store keeps a large request: as long as its job can
 * exist (RUNNEL_JOBS drops a job at `jobMaxAge`, taken or not, so no worker
 * can need the body later), plus a margin. A job handed back for a takeover
 * is a new message: the worker stores the body again with it.
 */
export function bodiesTtlMs(options: Pick<BusOptions, "jobMaxAge">): number {
  return options.jobMaxAge + BODIES_TTL_MARGIN_MS;
}

/** Creates or updates the events stream, the job queue, its consumer, the records bucket, the worker presence bucket and the large-request store. */
export async function ensureTopology(nc: NatsConnection, options: BusOptions): Promise<Bus> {
  const jsm = await jetstreamManager(nc);
  await upsertStream(jsm, {
    name: EVENTS_STREAM,
    subjects: [EVENTS_SUBJECTS],
    retention: RetentionPolicy.Limits,
    storage: options.eventsStorage === "memory" ? StorageType.Memory : StorageType.File,
    max_age: nanos(options.eventsRetention),
    max_bytes: options.eventsMaxBytes,
    discard: DiscardPolicy.Old,
    duplicate_window: nanos(Math.min(options.eventsRetention, 60_000)),
  });
  await upsertStream(jsm, {
    name: JOBS_STREAM,
    subjects: [JOBS_SUBJECT],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    max_age: nanos(options.jobMaxAge),
    discard: DiscardPolicy.New,
    duplicate_window: nanos(Math.min(options.jobMaxAge, 120_000)),
  });
  const consumer = {
    durable_name: JOBS_CONSUMER,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(options.jobAckWait),
    // A job whose worker died is redelivered a few times, then dropped.
    max_deliver: 5,
    max_waiting: 4096,
    // A running stream's job stays unacknowledged until the stream ends, so
    // this bounds the streams running in the whole cluster. nats-server's
    // default is 1,000: a fleet sized for more queued the rest (their clients
    // waited for a free slot that capacity said was there). Each worker's
    // `concurrency` is the bound instead (it pulls only for free slots).
    max_ack_pending: -1,
  };
  try {
    await jsm.consumers.add(JOBS_STREAM, consumer);
  } catch (error) {
    if (!(error instanceof JetStreamApiError)) throw error;
    const { durable_name: _name, deliver_policy: _policy, ...changeable } = consumer;
    await jsm.consumers.update(JOBS_STREAM, JOBS_CONSUMER, changeable);
  }
  const js = jetstream(nc);
  const records = await new Kvm(js).create(STREAMS_BUCKET, {
    history: 1,
    ttl: options.streamRecordTtl,
    storage: StorageType.File,
  });
  // Presence is rebuilt from heartbeats within seconds: memory is enough.
  const workers = await new Kvm(js).create(WORKERS_BUCKET, { history: 1, ttl: WORKERS_BUCKET_TTL_MS, storage: StorageType.Memory });
  const bodies = await ensureBodies(js, jsm, options);
  return { nc, js, jsm, records, workers, bodies, connected: connectionWatch(nc) };
}

/** The large-request object store; an existing one is brought to the configured TTL and size bound (nats.js's create leaves it as it is). */
async function ensureBodies(js: JetStreamClient, jsm: JetStreamManager, options: BusOptions): Promise<ObjectStore> {
  // Every chunk stored or read is hashed: node:crypto's SHA-256 instead of nats.js's browser-safe default
  // in JavaScript cut the time to store a 6 MB body from about 200 ms to 65 ms here, and to read it from 150 to 40.
  setSha256Backend("native");
  const maxAge = nanos(bodiesTtlMs(options));
  const bodies = await new Objm(js).create(BODIES_BUCKET, { storage: StorageType.File, ttl: maxAge, max_bytes: options.bodiesMaxBytes });
  const { config } = (await bodies.status()).streamInfo;
  if (config.max_age !== maxAge || config.max_bytes !== options.bodiesMaxBytes) {
    await jsm.streams.update(config.name, { ...config, max_age: maxAge, max_bytes: options.bodiesMaxBytes });
  }
  return bodies;
}

/** NATS server error: "stream name already in use with a different configuration". */
const STREAM_NAME_IN_USE = 10058;

async function upsertStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.add(config);
  } catch (error) {
    // Already exists with another config (say a changed retention): update it in place.
    if (error instanceof JetStreamApiError && error.code === STREAM_NAME_IN_USE) {
      await jsm.streams.update(config.name, config);
      return;
    }
    throw error;
  }
}

/** True when a publish with an expected last (subject) sequence was refused because something was written meanwhile. */
export function isWrongLastSequence(error: unknown): boolean {
  return error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamWrongLastSequence;
}

/** True when a direct get found no message (a stream with nothing logged yet). */
export function isNoMessageFound(error: unknown): boolean {
  return error instanceof JetStreamApiError && error.code === JetStreamApiCodes.NoMessageFound;
}

/** True when a KV create/update lost a compare-and-set race. */
export function isRevisionConflict(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence || error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}
