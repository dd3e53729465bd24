/**
 * Draining a worker from any control-plane replica: a request on
 * `runnel.ctl.drain.<worker id>` that the worker answers once it has stopped
 * taking jobs. Whichever replica the worker registered with, the order
 * reaches it; no responder means no live worker has that id.
 */
import { type NatsConnection, NoRespondersError, RequestError, type Subscription } from "@nats-io/nats-core";
import { DrainWorkerRequest, DrainWorkerResponse } from "./gen/runnel/v1/control_plane_types.js";
import { drainSubject } from "./subjects.js";

/** Asks a worker to drain. True once the worker acknowledged it, false when no worker listens under that id. */
export async function requestDrain(nc: NatsConnection, workerId: string, timeoutMs: number): Promise<boolean> {
  try {
    await nc.request(drainSubject(workerId), DrainWorkerRequest.encode({ workerId }).finish(), { timeout: timeoutMs });
    return true;
  } catch (error) {
    if (error instanceof NoRespondersError || (error instanceof RequestError && error.isNoResponders())) return false;
    throw error;
  }
}

/** The worker's side: runs `onDrain` for every drain order (it must be idempotent), then acknowledges it. */
export function serveDrain(nc: NatsConnection, workerId: string, onDrain: () => void): Subscription {
  return nc.subscribe(drainSubject(workerId), {
    callback: (error, message) => {
      if (error) return;
      onDrain();
      message.respond(DrainWorkerResponse.encode({ found: true }).finish());
    },
  });
}
