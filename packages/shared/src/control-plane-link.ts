/**
 * The data plane's side of the control plane: a routing watch that keeps the
 * last snapshot when every replica is gone, worker registration with
 * heartbeats, and cancel calls. Each broken stream is re-opened with backoff
 * on the next replica; nothing here is on the per-token path.
 */
import { type ChannelOptions, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import {
  type CancelStreamResponse,
  type DataPlaneRole,
  type RegisterRequest,
  RoutingServiceClient,
  type RoutingSnapshot,
  StreamAdminServiceClient,
  type WorkerHeartbeat,
  type WorkerHello,
  WorkerServiceClient,
} from "./gen/runnel/v1/control_plane.js";
import type { Logger } from "./logger.js";

/**
 * Keepalive lets a client notice a dead replica within ~40 s even on an idle
 * watch; round_robin spreads calls across every address a DNS name (a
 * headless Service) resolves to.
 */
export const CLIENT_CHANNEL_OPTIONS: ChannelOptions = {
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 5_000,
};

/** Splits CONTROL_PLANE_URL: "a:1,b:2" is a list of replicas; a "scheme:///" target is one. */
export function parseTargets(url: string): string[] {
  if (url.includes("://")) return [url];
  return url
    .split(",")
    .map((target) => target.trim())
    .filter((target) => target.length > 0);
}

interface Replica {
  readonly target: string;
  readonly routing: RoutingServiceClient;
  readonly admin: StreamAdminServiceClient;
  readonly workers: WorkerServiceClient;
}

export class ControlPlaneLink {
  readonly #replicas: Replica[];
  readonly #log: Logger;
  readonly #abort = new AbortController();
  #next = 0;

  constructor(url: string, log: Logger) {
    this.#log = log;
    this.#replicas = parseTargets(url).map((target) => {
      const insecure = credentials.createInsecure();
      return {
        target,
        routing: new RoutingServiceClient(target, insecure, CLIENT_CHANNEL_OPTIONS),
        admin: new StreamAdminServiceClient(target, insecure, CLIENT_CHANNEL_OPTIONS),
        workers: new WorkerServiceClient(target, insecure, CLIENT_CHANNEL_OPTIONS),
      };
    });
    if (this.#replicas.length === 0) throw new Error("CONTROL_PLANE_URL names no control plane");
  }

  #replica(): Replica {
    const replica = this.#replicas[this.#next % this.#replicas.length] as Replica;
    return replica;
  }

  #rotate(): void {
    this.#next = (this.#next + 1) % this.#replicas.length;
  }

  /**
   * Watches routing snapshots until close(). `onSnapshot` gets every new
   * version; on a broken stream the last snapshot stays in force and the watch
   * re-opens on the next replica.
   */
  watchRouting(role: DataPlaneRole, instanceId: string, onSnapshot: (snapshot: RoutingSnapshot) => void): void {
    let known = 0;
    const open = (attempt: number): void => {
      if (this.#abort.signal.aborted) return;
      const replica = this.#replica();
      const call = replica.routing.watchRouting({ role, instanceId, knownVersion: known });
      let received = false;
      call.on("data", (response: { snapshot?: RoutingSnapshot }) => {
        received = true;
        const snapshot = response.snapshot;
        if (snapshot && snapshot.version !== known) {
          known = snapshot.version;
          onSnapshot(snapshot);
        }
      });
      this.#supervise(
        call,
        replica.target,
        "routing watch broke; keeping the last snapshot",
        () => {},
        () => {
          const next = received ? 0 : attempt + 1;
          setTimeout(() => open(next), backoff(next)).unref();
        },
      );
    };
    open(0);
  }

  /** Registers a worker and sends a heartbeat every `intervalMs`, re-registering on any break. */
  register(hello: WorkerHello, heartbeat: () => WorkerHeartbeat, intervalMs: number): void {
    const open = (attempt: number): void => {
      if (this.#abort.signal.aborted) return;
      const replica = this.#replica();
      const call = replica.workers.register();
      let registered = false;
      const send = (message: RegisterRequest) => {
        if (!call.writableEnded) call.write(message);
      };
      send({ message: { $case: "hello", value: hello } });
      const timer = setInterval(() => send({ message: { $case: "heartbeat", value: heartbeat() } }), intervalMs);
      timer.unref();
      call.on("data", () => {
        registered = true;
      });
      const cleanup = () => {
        clearInterval(timer);
        // Close our half too, so a replica shutting down is not held open by this call.
        if (!call.writableEnded) call.end();
      };
      this.#supervise(call, replica.target, "worker registration broke; re-registering", cleanup, () => {
        const next = registered ? 0 : attempt + 1;
        setTimeout(() => open(next), backoff(next)).unref();
      });
    };
    open(0);
  }

  /**
   * Runs `cleanup` and then `reopen` exactly once when a long-lived call ends
   * or fails (grpc-js emits both `error` and `end` for one failure), on the
   * next replica; cancels the call on close().
   */
  #supervise(
    call: { on(event: "error" | "end", listener: (error?: ServiceError) => void): unknown; cancel(): void },
    target: string,
    message: string,
    cleanup: () => void,
    reopen: () => void,
  ): void {
    let broken = false;
    const onClose = () => {
      broken = true;
      cleanup();
      call.cancel();
    };
    this.#abort.signal.addEventListener("abort", onClose, { once: true });
    const onBroken = (error?: ServiceError) => {
      if (broken) return;
      broken = true;
      this.#abort.signal.removeEventListener("abort", onClose);
      cleanup();
      if (this.#abort.signal.aborted) return;
      this.#log.warn({ target, code: error?.code, err: error?.details }, message);
      this.#rotate();
      reopen();
    };
    call.on("error", onBroken);
    call.on("end", () => onBroken());
  }

  /** Calls CancelStream on each replica in turn until one answers. Rejects when none does. */
  async cancel(streamId: string, reason: string, deadlineMs: number): Promise<CancelStreamResponse> {
    let lastError: unknown;
    for (let tried = 0; tried < this.#replicas.length; tried++) {
      const replica = this.#replica();
      try {
        return await new Promise<CancelStreamResponse>((resolve, reject) => {
          replica.admin.cancelStream({ streamId, reason }, new Metadata(), { deadline: Date.now() + deadlineMs }, (error, response) =>
            error ? reject(error) : resolve(response),
          );
        });
      } catch (error) {
        lastError = error;
        const code = (error as ServiceError).code;
        if (code !== status.UNAVAILABLE && code !== status.DEADLINE_EXCEEDED) throw error;
        this.#rotate();
      }
    }
    throw lastError;
  }

  close(): void {
    this.#abort.abort();
    for (const replica of this.#replicas) {
      replica.routing.close();
      replica.admin.close();
      replica.workers.close();
    }
  }
}

function backoff(attempt: number): number {
  const base = Math.min(5_000, 100 * 2 ** attempt);
  return base / 2 + Math.random() * (base / 2);
}
