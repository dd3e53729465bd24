/**
 * The control plane: serves routing snapshots, the worker registry,
 * cancellation, admin reads and drains over gRPC, plus standard health and
 * reflection. It never sees a token.
 *
 * A replica holds no state of its own, so any number can run and any one can
 * die: snapshots come from the config file (the version is a content hash),
 * stream records live in the `runnel_streams` KV bucket, worker presence in
 * `runnel_workers` (written by the replica a worker is registered with, read
 * by all), route health is folded from the `runnel.health.outcomes` feed that
 * every replica subscribes to, and cancels and drains reach workers over
 * NATS whichever replica they registered with.
 */
import { fileURLToPath } from "node:url";
import { Server, ServerCredentials, type ServerDuplexStream, type ServerWritableStream, type ServiceError, status } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { controlPlane } from "@runnel/shared";
import { HEALTH_OUTCOMES_SUBJECT, type RunnelConfig, StreamPhase } from "@runnel/shared/contracts";
import { HealthBook, redactForIngress, redactForWorker } from "@runnel/shared/domain";
import { type Bus, cancelStream, EventLog, type Logger, requestDrain, StreamRecords, withLivePosition } from "@runnel/shared/runtime";
import { HealthImplementation } from "grpc-health-check";
import { grpcError, serviceError } from "./grpc-errors.js";
import { healthSettingsFrom, providerStatus } from "./provider-status.js";
import { SnapshotStore } from "./snapshot-store.js";
import { WorkerPresence } from "./worker-presence.js";

const { DataPlaneRole, RoutingServiceService, StreamAdminServiceService, WorkerServiceService } = controlPlane;

export interface ControlPlaneDeps {
  readonly config: Readonly<RunnelConfig>;
  readonly bus: Bus;
  readonly log: Logger;
  readonly instanceId: string;
  /** How often workers are asked to heartbeat. */
  readonly heartbeatIntervalMs?: number;
  /** Connections are recycled after this long so watches rebalance across replicas (default 5 min). */
  readonly maxConnectionAgeMs?: number;
}

export interface ControlPlane {
  readonly server: Server;
  readonly snapshots: SnapshotStore;
  /** Live workers, shared by every replica (the `runnel_workers` bucket). */
  readonly workers: WorkerPresence;
  /** Route health folded from the outcome feed. */
  readonly health: HealthBook;
  listen(host: string, port: number): Promise<number>;
  /** Reports NOT_SERVING (health and readiness); calls are still served. */
  beginShutdown(): void;
  /** Stops taking calls, ends watches so clients move to another replica, and closes. */
  close(graceMs?: number): Promise<void>;
  readonly ready: () => boolean;
}

/** The service names health reports on, besides the overall "". */
const SERVICE_NAMES = ["runnel.v1.RoutingService", "runnel.v1.WorkerService", "runnel.v1.StreamAdminService"];

/** How long a worker gets to acknowledge a drain order. */
const DRAIN_ACK_TIMEOUT_MS = 2_000;

/** proto/ at the repository (or image) root: reflection serves the same files the code was generated from. */
const PROTO_ROOT = fileURLToPath(new URL("../../../proto/", import.meta.url));

export function buildControlPlane(deps: ControlPlaneDeps): ControlPlane {
  const { bus, log, instanceId } = deps;
  const heartbeatIntervalMs = deps.heartbeatIntervalMs ?? 2_000;
  const snapshots = new SnapshotStore(deps.config);
  // Live until five heartbeats are missed.
  const workers = new WorkerPresence(bus.workers, bus.jsm, heartbeatIntervalMs * 5, log);
  const records = new StreamRecords(bus.records);
  const eventLog = new EventLog(bus);
  // Breaker and budget settings from the snapshot in force, re-indexed when its version changes.
  let settings = { version: snapshots.current.version, of: healthSettingsFrom(snapshots.current) };
  const health = new HealthBook((provider) => {
    const snapshot = snapshots.current;
    if (snapshot.version !== settings.version) settings = { version: snapshot.version, of: healthSettingsFrom(snapshot) };
    return settings.of(provider);
  });
  let badOutcomes = 0;
  const outcomes = bus.nc.subscribe(HEALTH_OUTCOMES_SUBJECT, {
    callback: (error, message) => {
      if (error) return;
      try {
        health.apply(controlPlane.RouteOutcome.decode(message.data));
      } catch (decodeError) {
        badOutcomes += 1;
        if (badOutcomes === 1 || badOutcomes % 1000 === 0) log.warn({ err: decodeError, badOutcomes }, "undecodable route outcome; ignored");
      }
    },
  });
  const openCalls = new Set<{ end(): void }>();
  let closing = false;

  const server = new Server({
    // Long-lived watches are re-balanced across replicas: after 5 minutes a
    // connection is told to go away and the client re-opens it (re-resolving
    // a DNS target), so replicas added since get their share.
    "grpc.max_connection_age_ms": deps.maxConnectionAgeMs ?? 5 * 60_000,
    "grpc.max_connection_age_grace_ms": Math.min(30_000, deps.maxConnectionAgeMs ?? 30_000),
    // Pings find a client whose host vanished, so its watch and registration end.
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
  });

  server.addService(RoutingServiceService, {
    watchRouting(call: ServerWritableStream<controlPlane.WatchRoutingRequest, controlPlane.WatchRoutingResponse>) {
      const role = call.request.role;
      if (role !== DataPlaneRole.DATA_PLANE_ROLE_INGRESS && role !== DataPlaneRole.DATA_PLANE_ROLE_WORKER) {
        call.emit("error", serviceError(status.INVALID_ARGUMENT, "role must be DATA_PLANE_ROLE_INGRESS or DATA_PLANE_ROLE_WORKER"));
        return;
      }
      const view = (snapshot: controlPlane.RoutingSnapshot) =>
        role === DataPlaneRole.DATA_PLANE_ROLE_WORKER ? redactForWorker(snapshot) : redactForIngress(snapshot);
      const send = (snapshot: controlPlane.RoutingSnapshot) => {
        if (!call.writableEnded) call.write({ snapshot: view(snapshot) });
      };
      if (call.request.knownVersion !== snapshots.current.version) send(snapshots.current);
      const unsubscribe = snapshots.subscribe(send);
      const handle = { end: () => call.end() };
      openCalls.add(handle);
      log.debug({ role, instance: call.request.instanceId }, "routing watch opened");
      call.on("cancelled", () => {
        unsubscribe();
        openCalls.delete(handle);
      });
      call.on("close", () => {
        unsubscribe();
        openCalls.delete(handle);
      });
    },
  });

  server.addService(WorkerServiceService, {
    register(call: ServerDuplexStream<controlPlane.RegisterRequest, controlPlane.RegisterResponse>) {
      let workerId: string | undefined;
      const handle = { end: () => call.end() };
      openCalls.add(handle);
      const finish = () => {
        openCalls.delete(handle);
        if (workerId) {
          // Its presence entry stays: the worker re-registers elsewhere and goes on
          // refreshing it, or it expires after a few missed heartbeats.
          log.info({ worker: workerId }, "worker disconnected");
          workerId = undefined;
        }
      };
      call.on("data", (request: controlPlane.RegisterRequest) => {
        const message = request.message;
        if (!workerId) {
          if (message?.$case !== "hello" || !message.value.workerId) {
            call.emit("error", serviceError(status.INVALID_ARGUMENT, "the first message of Register must be a hello with a worker_id"));
            return;
          }
          workerId = message.value.workerId;
          workers.hello(workerId, message.value.capacity);
          call.write({ registered: { controlPlaneId: instanceId, heartbeatIntervalMs } });
          log.info({ worker: workerId, capacity: message.value.capacity }, "worker registered");
          return;
        }
        if (message?.$case === "heartbeat") workers.report(workerId, message.value);
      });
      call.on("end", () => {
        finish();
        call.end();
      });
      call.on("error", finish);
      call.on("cancelled", finish);
    },
  });

  server.addService(StreamAdminServiceService, {
    cancelStream: unary(log, async (request: controlPlane.CancelStreamRequest) => {
      if (!request.streamId) throw serviceError(status.INVALID_ARGUMENT, "stream_id is required");
      const result = await cancelStream(records, bus.nc, request.streamId, request.reason || "cancelled by request");
      log.info({ stream_id: request.streamId, owner: result.state.owner, changed: result.changed }, "stream cancel recorded");
      return { state: result.state, changed: result.changed };
    }),
    getStream: unary(log, async (request: controlPlane.GetStreamRequest) => {
      if (!request.streamId) throw serviceError(status.INVALID_ARGUMENT, "stream_id is required");
      const record = await records.get(request.streamId);
      if (!record) throw serviceError(status.NOT_FOUND, `no stream ${request.streamId}`);
      return { stream: await withLivePosition(eventLog, record.state) };
    }),
    listStreams: unary(log, async (request: controlPlane.ListStreamsRequest) => {
      const states = await records.list(request.phase ?? StreamPhase.STREAM_PHASE_UNSPECIFIED, request.limit);
      return { streams: await Promise.all(states.map((state) => withLivePosition(eventLog, state))) };
    }),
    getProviderStatus: unary(log, async () => providerStatus(snapshots.current, health.status(), await workers.live())),
    drainWorker: unary(log, async (request: controlPlane.DrainWorkerRequest) => {
      if (!request.workerId) throw serviceError(status.INVALID_ARGUMENT, "worker_id is required");
      let found: boolean;
      try {
        found = await requestDrain(bus.nc, request.workerId, DRAIN_ACK_TIMEOUT_MS);
      } catch (error) {
        throw serviceError(
          status.DEADLINE_EXCEEDED,
          `worker ${request.workerId} did not acknowledge the drain: ${error instanceof Error ? error.message : String(error)}`,
        );
      }
      log.info({ worker: request.workerId, found }, found ? "worker drain ordered" : "drain for an unknown worker");
      return { found };
    }),
  });

  const grpcHealth = new HealthImplementation({ "": "NOT_SERVING" });
  grpcHealth.addToServer(server);
  const reflection = new ReflectionService(
    loadSync(["runnel/v1/control_plane.proto", "runnel/v1/control_plane_types.proto", "runnel/v1/stream.proto"], { includeDirs: [PROTO_ROOT], keepCase: true }),
  );
  reflection.addToServer(server);

  let serving = false;
  const setServing = (now: boolean) => {
    serving = now;
    const value = now ? "SERVING" : "NOT_SERVING";
    grpcHealth.setStatus("", value);
    for (const name of SERVICE_NAMES) grpcHealth.setStatus(name, value);
  };
  // gRPC health is what the chart's probes ask: not serving while NATS is away (records, cancels and drains need it).
  let listening = false;
  const connectionWatch = setInterval(() => {
    if (listening && !closing && serving !== bus.connected()) setServing(bus.connected());
  }, 1_000);
  connectionWatch.unref();

  return {
    server,
    snapshots,
    workers,
    health,
    ready: () => !closing && bus.connected(),
    async listen(host, port) {
      const bound = await new Promise<number>((resolve, reject) =>
        server.bindAsync(`${host}:${port}`, ServerCredentials.createInsecure(), (error, actual) => (error ? reject(error) : resolve(actual))),
      );
      listening = true;
      setServing(bus.connected());
      return bound;
    },
    beginShutdown() {
      closing = true;
      setServing(false);
    },
    async close(graceMs = 5_000) {
      closing = true;
      clearInterval(connectionWatch);
      setServing(false);
      outcomes.unsubscribe();
      // End the long-lived calls ourselves: tryShutdown waits for them otherwise.
      for (const call of openCalls) call.end();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}

/** Adapts an async handler to grpc-js's callback style, mapping thrown errors to statuses. */
function unary<Request, Response>(log: Logger, handler: (request: Request) => Promise<Response>) {
  return (call: { request: Request }, callback: (error: ServiceError | null, response?: Response) => void) => {
    handler(call.request).then(
      (response) => callback(null, response),
      (error: unknown) => {
        callback(grpcError(log, error));
      },
    );
  };
}
