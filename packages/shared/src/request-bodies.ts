/**
 * Large requests, carried beside the job instead of in it. A job is one NATS
 * message, and a NATS server refuses a message over its `max_payload` (1 MiB
 * by default): a 2 MB prompt would never reach a worker. A job whose encoding
 * is over `inlineJobLimit()` therefore travels without its request: the
 * ingress first puts the encoded `ChatRequest` in the `runnel_bodies` object
 * store (stored in chunks, each far below `max_payload`) under the stream id,
 * then publishes the job with `request_ref` naming it. The worker reads it
 * back before it runs the stream and deletes it once the stream ended; the
 * bucket's TTL reclaims whatever is left behind (a job nobody took, a worker
 * that died). docs/architecture.md, "Large requests", says why.
 */
import type { ObjectStore } from "@nats-io/obj";
import type { Bus } from "./bus.js";
import { RunnelError } from "./errors.js";
import { encodeJob, type Job } from "./events.js";
import { ChatRequest } from "./gen/runnel/v1/stream.js";
import { BODIES_BUCKET } from "./subjects.js";

/** The largest job that travels inline, whatever the server allows: big jobs never come near `max_payload`. */
export const INLINE_JOB_CAP = 256 * 1024;
/** Left free under `max_payload` for the message's headers (message id, trace context) and the protocol's framing. */
const PAYLOAD_HEADROOM = 16 * 1024;
/** How long a worker waits for a body before it fails the stream. */
const READ_TIMEOUT_MS = 30_000;
/** How long one chunk of a body may take to be stored. */
const WRITE_TIMEOUT_MS = 5_000;

/** The largest encoded job published inline on a server that accepts messages of `maxPayload` bytes. */
export function inlineJobLimit(maxPayload: number | undefined): number {
  // nats.js's own fallback when the server has not said (it always does once connected).
  const payload = maxPayload && maxPayload > 0 ? maxPayload : 1024 * 1024;
  return Math.max(1024, Math.min(INLINE_JOB_CAP, payload - PAYLOAD_HEADROOM));
}

/**
 * The job's bytes for the queue. Small (nearly every job): the job encoded
 * with its request, as before. Large: the request is stored first (so no
 * worker can get the job before its body), and the bytes are the job with a
 * reference instead. `stored` tells which.
 */
export async function encodeJobForQueue(bus: Bus, job: Job): Promise<{ data: Uint8Array; stored: boolean }> {
  const data = encodeJob(job);
  const limit = inlineJobLimit(bus.nc.info?.max_payload);
  if (data.length <= limit || !job.request) return { data, stored: false };
  await storeRequest(bus, job.streamId, job.request, limit);
  return { data: encodeJob({ ...job, request: undefined, requestRef: job.streamId }), stored: true };
}

/**
 * Stores (or stores again, which restarts its TTL) a stream's request under
 * `name`. A full bucket or a server that does not answer rejects: the caller
 * refuses the request as overloaded.
 */
export async function storeRequest(bus: Bus, name: string, request: ChatRequest, chunkBytes = inlineJobLimit(bus.nc.info?.max_payload)): Promise<void> {
  await bus.bodies.putBlob({ name, options: { max_chunk_size: chunkBytes } }, ChatRequest.encode(request).finish(), { timeout: WRITE_TIMEOUT_MS });
}

/**
 * The request a job carries, read from the object store when the job holds a
 * reference. Throws RUNNEL_ERR_BODY_UNAVAILABLE when the object is gone or
 * cannot be read within READ_TIMEOUT_MS, and rejects with `signal`'s reason
 * when the stream is cancelled meanwhile.
 */
export async function loadRequest(bus: Bus, job: Job, signal: AbortSignal): Promise<ChatRequest | undefined> {
  if (!job.requestRef) return job.request;
  const name = job.requestRef;
  const deadline = AbortSignal.any([signal, AbortSignal.timeout(READ_TIMEOUT_MS)]);
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readObject(bus.bodies, name, deadline);
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    const cause = deadline.aborted ? `no answer within ${READ_TIMEOUT_MS} ms` : (error as Error).message;
    throw new RunnelError("RUNNEL_ERR_BODY_UNAVAILABLE", `reading the request body of stream ${job.streamId} from ${BODIES_BUCKET} failed: ${cause}`, {
      cause: error,
    });
  }
  if (bytes === undefined) {
    throw new RunnelError(
      "RUNNEL_ERR_BODY_UNAVAILABLE",
      `the request body of stream ${job.streamId} is not in ${BODIES_BUCKET} (past the bucket's TTL, or lost); send the request again`,
    );
  }
  return ChatRequest.decode(bytes);
}

/** Deletes a stored request. Resolves whether or not it was there. */
export async function deleteRequest(bus: Bus, name: string): Promise<void> {
  await bus.bodies.delete(name);
}

/** An object's bytes (checked against its digest by nats.js), or undefined when there is none; stops reading when `signal` aborts. */
async function readObject(store: ObjectStore, name: string, signal: AbortSignal): Promise<Uint8Array | undefined> {
  signal.throwIfAborted();
  const found = await store.get(name);
  if (!found) return undefined;
  const reader = found.data.getReader();
  const stop = () => void reader.cancel(signal.reason).catch(() => {});
  signal.addEventListener("abort", stop, { once: true });
  try {
    // One buffer of the size the object's info gives: no growing copies of a multi-megabyte body.
    const bytes = new Uint8Array(found.info.size);
    let length = 0;
    for (;;) {
      const { done, value } = await reader.read();
      signal.throwIfAborted();
      if (done) break;
      if (length + value.length > bytes.length) throw new Error(`the object is larger than its recorded size of ${bytes.length} bytes`);
      bytes.set(value, length);
      length += value.length;
    }
    if (length !== bytes.length) throw new Error(`the object ended after ${length} of its ${bytes.length} bytes`);
    return bytes;
  } finally {
    signal.removeEventListener("abort", stop);
  }
}
