/**
 * The data plane's (and the admin CLI's) side of the control plane: a
 * routing watch that keeps the last snapshot when every replica is gone,
 * worker registration with heartbeats, and admin calls (cancel, list, get,
 * provider status, drain). Each broken stream is re-opened with backoff on
 * the next replica; each admin call goes round-robin over the replicas with
 * a deadline and moves on to another replica when one does not answer.
 * Nothing here is on the per-token path.
 */
import { type CallOptions, type ChannelOptions, connectivityState, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import {
  type CancelStreamResponse,
  type DataPlaneRole,
  type DrainWorkerResponse,
  type GetProviderStatusResponse,
  type GetStreamResponse,
  type ListStreamsRequest,
  type ListStreamsResponse,
  type RegisterRequest,
  type RegisterResponse,
  RoutingServiceClient,
  type RoutingSnapshot,
  StreamAdminServiceClient,
  type WorkerHeartbeat,
  type WorkerHello,
  WorkerServiceClient,
} from "./control-plane-api.js";
import type { Logger } from "./logger.js";

/**
 * Keepalive lets a client notice a dead replica within ~40 s even on an idle
 * watch (a replica whose process dies on a live host is noticed at once: its
 * sockets are reset); round_robin spreads calls across every address a DNS
 * name (a headless Service) resolves to, and the name is resolved again at
 * most every 5 s when a connection breaks, so a replaced replica is found
 * quickly. The server's max_connection_age makes that happen regularly, so
 * new replicas get traffic.
 */
export const CLIENT_CHANNEL_OPTIONS: ChannelOptions = {
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 5_000,
  "grpc.dns_min_time_between_resolutions_ms": 5_000,
};

/**
 * Attempts one admin call gets at least: with a single DNS target, a retry
 * goes through round_robin to another address.
 */
const MIN_UNARY_ATTEMPTS = 3;

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
  #nextUnary = 0;

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

  /**
   * Registers a worker and sends a heartbeat every `intervalMs` (or as often
   * as the replica asks in its answer), re-registering on any break.
   */
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
      // The load at once, not an interval later: the replica records it where every replica reads it.
      send({ message: { $case: "heartbeat", value: heartbeat() } });
      let every = intervalMs;
      const beat = () => send({ message: { $case: "heartbeat", value: heartbeat() } });
      let timer = setInterval(beat, every);
      timer.unref();
      call.on("data", (response: RegisterResponse) => {
        registered = true;
        // The replica says how often: it counts a worker gone after a few missed heartbeats.
        const asked = response.registered?.heartbeatIntervalMs;
        if (asked && asked !== every) {
          every = asked;
          clearInterval(timer);
          timer = setInterval(beat, every);
          timer.unref();
        }
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

  /** Cancels a stream (CancelStream). Rejects with the last status when no replica answers within `deadlineMs`. */
  cancel(streamId: string, reason: string, deadlineMs: number): Promise<CancelStreamResponse> {
    return this.#unary(deadlineMs, (admin, options, done) => admin.cancelStream({ streamId, reason }, new Metadata(), options, done));
  }

  listStreams(request: ListStreamsRequest, deadlineMs: number): Promise<ListStreamsResponse> {
    return this.#unary(deadlineMs, (admin, options, done) => admin.listStreams(request, new Metadata(), options, done));
  }

  getStream(streamId: string, deadlineMs: number): Promise<GetStreamResponse> {
    return this.#unary(deadlineMs, (admin, options, done) => admin.getStream({ streamId }, new Metadata(), options, done));
  }

  getProviderStatus(deadlineMs: number): Promise<GetProviderStatusResponse> {
    return this.#unary(deadlineMs, (admin, options, done) => admin.getProviderStatus({}, new Metadata(), options, done));
  }

  drainWorker(workerId: string, deadlineMs: number): Promise<DrainWorkerResponse> {
    return this.#unary(deadlineMs, (admin, options, done) => admin.drainWorker({ workerId }, new Metadata(), options, done));
  }

  /**
   * One admin call (every admin RPC is idempotent), round-robin: each call
   * starts on the next replica, replicas whose connection is known broken
   * last. An UNAVAILABLE or DEADLINE_EXCEEDED answer moves it on to the next
   * one, until a replica answers or `deadlineMs` is spent; each attempt gets
   * a share of what is left, so one hung replica cannot take the whole
   * deadline. Any other status is the answer. Rejects with the last status.
   */
  async #unary<Response>(
    deadlineMs: number,
    invoke: (admin: StreamAdminServiceClient, options: Partial<CallOptions>, done: (error: ServiceError | null, response: Response) => void) => void,
  ): Promise<Response> {
    const deadline = Date.now() + deadlineMs;
    const count = this.#replicas.length;
    const start = this.#nextUnary++ % count;
    const rotated = Array.from({ length: count }, (_, index) => this.#replicas[(start + index) % count] as Replica);
    const broken = (replica: Replica) => {
      const state = replica.admin.getChannel().getConnectivityState(false);
      return state === connectivityState.TRANSIENT_FAILURE || state === connectivityState.CONNECTING;
    };
    const order = [...rotated.filter((replica) => !broken(replica)), ...rotated.filter(broken)];
    const attempts = Math.max(count, MIN_UNARY_ATTEMPTS);
    let lastError: unknown;
    for (let attempt = 0; attempt < attempts; attempt++) {
      if (attempt >= count) await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 100));
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      const replica = order[attempt % count] as Replica;
      const share = Math.max(remaining / (attempts - attempt), Math.min(remaining, 500));
      try {
        return await new Promise<Response>((resolve, reject) =>
          invoke(replica.admin, { deadline: Date.now() + share }, (error, response) => (error ? reject(error) : resolve(response))),
        );
      } catch (error) {
        lastError = error;
        const code = (error as ServiceError).code;
        if (code !== status.UNAVAILABLE && code !== status.DEADLINE_EXCEEDED) throw error;
        this.#log.debug({ target: replica.target, code, err: (error as ServiceError).details }, "admin call failed on a replica; trying the next");
      }
    }
    throw (
      lastError ?? Object.assign(new Error("deadline exceeded"), { code: status.DEADLINE_EXCEEDED, details: "deadline exceeded", metadata: new Metadata() })
    );
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
