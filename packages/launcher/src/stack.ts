/**
 * Runs the whole stack as real processes, as `npm start` does: mock
 * provider, control plane, worker and ingress (node services/<name>/dist/main.js),
 * against a NATS server the caller provides. Waits until every service is
 * ready; `stop()` (or `await using`) sends SIGTERM to each and waits, then
 * SIGKILLs stragglers, so no process is left behind.
 *
 * The control plane, the worker and the ingress can run as several replicas
 * (`replicas`), each a separate process with its own ports and INSTANCE_ID,
 * as in the deployed topology; one replica can be stopped and started again
 * on the same ports (`stopReplica`, `startReplica`), as a rolling update does.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { freePort } from "./ports.js";
import { reapOnExit } from "./reaper.js";

export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

export type ServiceName = "mock-provider" | "control-plane" | "worker" | "ingress";
/** The services that may run as several replicas (the mock provider is always one process). */
export type ReplicatedService = Exclude<ServiceName, "mock-provider">;

export interface StackOptions {
  readonly natsUrl: string;
  /** Port of the first ingress replica; a free one when omitted. */
  readonly ingressPort?: number;
  /** gRPC port of the first control-plane replica; a free one when omitted. */
  readonly controlPlanePort?: number;
  readonly mockPort?: number;
  /** Extra environment for every service (RUNNEL_CONFIG, LOG_LEVEL, ...). */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * Pass this process's whole environment to every service, as `npm start`
   * does (a user's `${VAR}` in runnel.yaml, OTEL_*, proxy settings); the
   * launcher still sets what it owns (ports, NATS_URL, CONTROL_PLANE_URL,
   * INSTANCE_ID). Off by default: a test's services see only what the test
   * sets, plus PATH, HOME, TMPDIR and NODE_OPTIONS.
   */
  readonly inheritEnv?: boolean;
  /** Per-service environment overrides. */
  readonly serviceEnv?: Partial<Record<ServiceName, Readonly<Record<string, string>>>>;
  /** Directory for one log file per process; logs go nowhere when omitted unless `echo` is set. */
  readonly logDir?: string;
  /** Echo each service's output to this process's stdout, prefixed with the service name. */
  readonly echo?: boolean;
  /** Which services to run (all by default). */
  readonly services?: readonly ServiceName[];
  /** Replicas of each service (1 by default). Every replica gets its own ports and `INSTANCE_ID`. */
  readonly replicas?: Partial<Record<ReplicatedService, number>>;
  readonly readyTimeoutMs?: number;
}

export interface RunningService {
  readonly name: ServiceName;
  /** Replica number, from 0. */
  readonly index: number;
  /**
   * INSTANCE_ID: `<name>-<index + 1>-<stack tag>`, with `-r<n>` before the tag
   * after the n-th restart (a rollout replaces a pod with a new one, under a
   * new name). The tag keeps two stacks on one NATS apart.
   */
  readonly instanceId: string;
  readonly process: ChildProcess;
  /** Port of /healthz and /readyz. */
  readonly healthPort: number;
  /** The ingress's HTTP port, the control plane's gRPC port, the mock's port; the health port for a worker. */
  readonly port: number;
  /** The last lines the service printed, for failure messages. */
  tail(): string;
}

export interface Stack extends AsyncDisposable {
  /** The first ingress replica. */
  readonly ingressUrl: string;
  /** Every ingress replica, by index. */
  readonly ingressUrls: readonly string[];
  readonly mockUrl: string;
  /** The first control-plane replica's gRPC address. */
  readonly controlPlaneTarget: string;
  /** Every control-plane replica's gRPC address, by index (what CONTROL_PLANE_URL lists). */
  readonly controlPlaneTargets: readonly string[];
  /** The first replica of each service, kept current across restarts. */
  readonly services: ReadonlyMap<ServiceName, RunningService>;
  /** The current process of every replica of a service, by index. */
  replicas(name: ServiceName): readonly RunningService[];
  /** Stops every replica of a service (SIGTERM, then SIGKILL after `graceMs`). */
  stopService(name: ServiceName, graceMs?: number): Promise<void>;
  /** Stops one replica (SIGTERM, then SIGKILL after `graceMs`); resolves once it has exited. */
  stopReplica(name: ServiceName, index: number, graceMs?: number): Promise<void>;
  /** Starts a stopped replica again on the same ports, under a new instance id; resolves once it is ready. */
  startReplica(name: ServiceName, index: number): Promise<RunningService>;
  stop(): Promise<void>;
}

const ORDER: readonly ServiceName[] = ["mock-provider", "control-plane", "worker", "ingress"];

/** One replica: its ports (kept across restarts) and its current process. */
interface Slot {
  readonly name: ServiceName;
  readonly index: number;
  port: number;
  healthPort: number;
  /** Processes started in this slot so far. */
  starts: number;
  current: RunningService | undefined;
}

export async function startStack(options: StackOptions): Promise<Stack> {
  const wanted = new Set(options.services ?? ORDER);
  const count = (name: ServiceName) => (name === "mock-provider" ? 1 : Math.max(1, options.replicas?.[name] ?? 1));
  const mockPort = options.mockPort ?? (await freePort());
  const slots = new Map<ServiceName, Slot[]>(
    ORDER.map((name) => [name, Array.from({ length: count(name) }, (_, index) => ({ name, index, port: 0, healthPort: 0, starts: 0, current: undefined }))]),
  );
  const fixedPort = (slot: Slot): number | undefined =>
    slot.name === "mock-provider"
      ? mockPort
      : slot.index !== 0
        ? undefined
        : slot.name === "ingress"
          ? options.ingressPort
          : slot.name === "control-plane"
            ? options.controlPlanePort
            : undefined;
  /** Ports are taken just before a replica first starts: a port found free can be taken by another process meanwhile. */
  const assignPorts = async (slot: Slot) => {
    slot.port = fixedPort(slot) ?? (await freePort());
    slot.healthPort = slot.name === "control-plane" ? await freePort() : slot.port;
  };
  const controlPlanes = () => slots.get("control-plane") ?? [];
  // Every client (ingress, worker) knows every control-plane replica, as the headless Service's DNS name lists them.
  const controlPlaneTargets = () => controlPlanes().map((slot) => `127.0.0.1:${slot.port}`);
  const base = options.inheritEnv ? inheritedEnv() : pathEnv();
  const envFor = (slot: Slot): Record<string, string> => ({
    ...base,
    NATS_URL: options.natsUrl,
    CONTROL_PLANE_URL: controlPlaneTargets().join(","),
    HOST: "127.0.0.1",
    MOCK_PORT: String(mockPort),
    GRPC_PORT: String(slot.name === "control-plane" ? slot.port : (controlPlanes()[0]?.port ?? 0)),
    LOG_LEVEL: "info",
    ...options.env,
    HEALTH_PORT: String(slot.healthPort),
    ...(slot.name === "ingress" ? { PORT: String(slot.port) } : {}),
    ...options.serviceEnv?.[slot.name],
  });
  if (options.logDir) mkdirSync(options.logDir, { recursive: true });

  const services = new Map<ServiceName, RunningService>();
  const slotOf = (name: ServiceName, index: number): Slot => {
    const slot = slots.get(name)?.[index];
    if (!slot) throw new Error(`no replica ${index} of ${name} in this stack`);
    return slot;
  };
  const replicated = (name: ServiceName) => count(name) > 1;
  const tag = randomBytes(2).toString("hex");
  const start = (slot: Slot): RunningService => {
    const base = `${slot.name}-${slot.index + 1}`;
    const instanceId = `${base}${slot.starts === 0 ? "" : `-r${slot.starts}`}-${tag}`;
    const service = launch(slot, envFor(slot), instanceId, replicated(slot.name) ? base : slot.name, slot.starts > 0, options);
    slot.starts += 1;
    slot.current = service;
    if (slot.index === 0) services.set(slot.name, service);
    return service;
  };
  /** A service of a kind started earlier (so it was ready) that has exited since: start-up stops at once with its output, rather than wait out the starting service's timeout. */
  const deadEarlier = (service: RunningService) => {
    for (const slotsOf of slots.values()) {
      for (const slot of slotsOf) {
        const other = slot.current;
        if (other && other.name !== service.name && exited(other)) return other;
      }
    }
    return undefined;
  };
  /** A replica's first start; on ports someone else took first, again on new ones (twice at most). */
  const startFirst = async (slot: Slot) => {
    for (let attempt = 1; ; attempt += 1) {
      await assignPorts(slot);
      const service = start(slot);
      try {
        await waitReady(service, options.readyTimeoutMs ?? 30_000, () => deadEarlier(service));
        return;
      } catch (error) {
        if (attempt >= 3 || fixedPort(slot) !== undefined || !service.tail().includes("EADDRINUSE")) throw error;
        slot.starts = 0;
      }
    }
  };
  const stopKind = async (name: ServiceName, graceMs: number) => {
    await Promise.all((slots.get(name) ?? []).map((slot) => (slot.current ? stopProcess(slot.current.process, graceMs) : undefined)));
  };
  const stopAll = async () => {
    for (const name of [...ORDER].reverse()) await stopKind(name, 10_000);
  };

  try {
    // Clients need the control plane's address even when the stack runs without it.
    if (!wanted.has("control-plane")) for (const slot of controlPlanes()) await assignPorts(slot);
    for (const name of ORDER) {
      if (!wanted.has(name)) continue;
      // The replicas of one service start together; the services one after the other, each once the previous is ready.
      await Promise.all((slots.get(name) ?? []).map(startFirst));
    }
  } catch (error) {
    await stopAll();
    throw error;
  }
  const ingressUrls = (slots.get("ingress") ?? []).map((slot) => `http://127.0.0.1:${slot.port}`);

  return {
    ingressUrl: ingressUrls[0] ?? "",
    ingressUrls,
    mockUrl: `http://127.0.0.1:${mockPort}`,
    controlPlaneTarget: controlPlaneTargets()[0] ?? "",
    controlPlaneTargets: controlPlaneTargets(),
    services,
    replicas(name) {
      return (slots.get(name) ?? []).flatMap((slot) => (slot.current ? [slot.current] : []));
    },
    async stopService(name, graceMs = 10_000) {
      await stopKind(name, graceMs);
    },
    async stopReplica(name, index, graceMs = 10_000) {
      const current = slotOf(name, index).current;
      if (current) await stopProcess(current.process, graceMs);
    },
    async startReplica(name, index) {
      const slot = slotOf(name, index);
      const running = slot.current?.process;
      if (running && running.exitCode === null && running.signalCode === null) throw new Error(`${slot.current?.instanceId} is still running`);
      const service = start(slot);
      await waitReady(service, options.readyTimeoutMs ?? 30_000);
      return service;
    },
    stop: stopAll,
    [Symbol.asyncDispose]: stopAll,
  };
}

/**
 * What the launcher sets for each process itself, whatever the caller's
 * environment says: one value in the shell would give every service the same
 * port or instance id.
 */
const OWNED_BY_LAUNCHER = ["NATS_URL", "CONTROL_PLANE_URL", "PORT", "GRPC_PORT", "HEALTH_PORT", "METRICS_PORT", "MOCK_PORT", "INSTANCE_ID"];

/** The caller's environment, less what the launcher owns. */
function inheritedEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !OWNED_BY_LAUNCHER.includes(key)) env[key] = value;
  }
  return env;
}

/** PATH and HOME only: services get their config from what the stack sets, not from the caller's shell. */
function pathEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const key of ["PATH", "HOME", "TMPDIR", "NODE_OPTIONS"]) {
    const value = process.env[key];
    if (value !== undefined) env[key] = value;
  }
  return env;
}

/** Starts one process of a slot; `label` names its log file and its echoed lines, `append` keeps the log of earlier runs. */
function launch(slot: Slot, slotEnv: Record<string, string>, instanceId: string, label: string, append: boolean, options: StackOptions): RunningService {
  const { name } = slot;
  const entry = join(REPO_ROOT, "services", name, "dist", "main.js");
  const env = { ...slotEnv, INSTANCE_ID: slotEnv.INSTANCE_ID ?? instanceId };
  // The telemetry preload runs before the service's modules load (docs/observability.md); the mock provider has none.
  const preload = name === "mock-provider" ? [] : ["--import", pathToFileURL(join(REPO_ROOT, "services", name, "dist", "instrument.js")).href];
  const child = spawn(process.execPath, ["--enable-source-maps", ...preload, entry], { env, stdio: ["ignore", "pipe", "pipe"] });
  reapOnExit(child);
  let tail = "";
  const file: WriteStream | undefined = options.logDir ? createWriteStream(join(options.logDir, `${label}.log`), { flags: append ? "a" : "w" }) : undefined;
  const onData = (data: Buffer) => {
    const text = data.toString();
    tail = (tail + text).slice(-8000);
    file?.write(data);
    if (options.echo) {
      for (const line of text.split("\n")) if (line.length > 0) process.stdout.write(`[${label}] ${line}\n`);
    }
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  child.once("exit", () => file?.end());
  return { name, index: slot.index, instanceId: env.INSTANCE_ID, process: child, healthPort: slot.healthPort, port: slot.port, tail: () => tail };
}

function exited(service: RunningService): boolean {
  return service.process.exitCode !== null || service.process.signalCode !== null;
}

async function waitReady(service: RunningService, timeoutMs: number, deadEarlier?: () => RunningService | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const url = `http://127.0.0.1:${service.healthPort}/readyz`;
  for (;;) {
    if (exited(service)) {
      throw new Error(`${service.instanceId} exited (${service.process.exitCode ?? service.process.signalCode}) before it was ready:\n${service.tail()}`);
    }
    const dead = deadEarlier?.();
    if (dead) {
      throw new Error(
        `${dead.instanceId} exited (${dead.process.exitCode ?? dead.process.signalCode}) while ${service.instanceId} was starting:\n${dead.tail()}`,
      );
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      await response.body?.cancel();
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${service.instanceId} not ready after ${timeoutMs} ms:\n${service.tail()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** SIGTERM, wait up to `graceMs`, then SIGKILL. Resolves once the process has exited. */
export async function stopProcess(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}
