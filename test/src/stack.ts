/**
 * Runs the whole stack as real processes, exactly as `npm start` does:
 * mock provider, control plane, worker and ingress (node services/<name>/dist/main.js),
 * against a NATS server the caller provides. Waits until every service is
 * ready; `stop()` (or `await using`) sends SIGTERM to each and waits, then
 * SIGKILLs stragglers, so no process is left behind.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./ports.js";
import { reapOnExit } from "./reaper.js";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

export type ServiceName = "mock-provider" | "control-plane" | "worker" | "ingress";

export interface StackOptions {
  readonly natsUrl: string;
  /** Ingress port; a free one when omitted. */
  readonly ingressPort?: number;
  readonly mockPort?: number;
  /** Extra environment for every service (RUNNEL_CONFIG, LOG_LEVEL, ...). */
  readonly env?: Readonly<Record<string, string>>;
  /** Per-service environment overrides. */
  readonly serviceEnv?: Partial<Record<ServiceName, Readonly<Record<string, string>>>>;
  /** Directory for one log file per service; logs go nowhere when omitted unless `echo` is set. */
  readonly logDir?: string;
  /** Echo each service's output to this process's stdout, prefixed with the service name. */
  readonly echo?: boolean;
  /** Which services to run (all by default). */
  readonly services?: readonly ServiceName[];
  readonly readyTimeoutMs?: number;
}

export interface RunningService {
  readonly name: ServiceName;
  readonly process: ChildProcess;
  /** Port of /healthz and /readyz. */
  readonly healthPort: number;
  /** The last lines the service printed, for failure messages. */
  tail(): string;
}

export interface Stack extends AsyncDisposable {
  readonly ingressUrl: string;
  readonly mockUrl: string;
  readonly controlPlaneTarget: string;
  readonly services: ReadonlyMap<ServiceName, RunningService>;
  /** Stops one service (SIGTERM, then SIGKILL after `graceMs`). */
  stopService(name: ServiceName, graceMs?: number): Promise<void>;
  stop(): Promise<void>;
}

const ORDER: readonly ServiceName[] = ["mock-provider", "control-plane", "worker", "ingress"];

export async function startStack(options: StackOptions): Promise<Stack> {
  const wanted = new Set(options.services ?? ORDER);
  const ingressPort = options.ingressPort ?? (await freePort());
  const mockPort = options.mockPort ?? (await freePort());
  const grpcPort = await freePort();
  const healthPorts: Record<ServiceName, number> = {
    "mock-provider": mockPort,
    "control-plane": await freePort(),
    worker: await freePort(),
    ingress: ingressPort,
  };
  const controlPlaneTarget = `127.0.0.1:${grpcPort}`;
  const common: Record<string, string> = {
    NATS_URL: options.natsUrl,
    CONTROL_PLANE_URL: controlPlaneTarget,
    HOST: "127.0.0.1",
    MOCK_PORT: String(mockPort),
    GRPC_PORT: String(grpcPort),
    LOG_LEVEL: "info",
    ...options.env,
  };
  if (options.logDir) mkdirSync(options.logDir, { recursive: true });

  const services = new Map<ServiceName, RunningService>();
  const stopAll = async () => {
    for (const name of [...ORDER].reverse()) {
      const service = services.get(name);
      if (service) await stopProcess(service.process, 10_000);
    }
  };

  try {
    for (const name of ORDER) {
      if (!wanted.has(name)) continue;
      const env: Record<string, string> = {
        ...pathEnv(),
        ...common,
        HEALTH_PORT: String(healthPorts[name]),
        ...(name === "ingress" ? { PORT: String(ingressPort) } : {}),
        ...options.serviceEnv?.[name],
      };
      const service = launch(name, env, options);
      services.set(name, service);
      await waitReady(service, options.readyTimeoutMs ?? 30_000);
    }
  } catch (error) {
    await stopAll();
    throw error;
  }

  return {
    ingressUrl: `http://127.0.0.1:${ingressPort}`,
    mockUrl: `http://127.0.0.1:${mockPort}`,
    controlPlaneTarget,
    services,
    async stopService(name, graceMs = 10_000) {
      const service = services.get(name);
      if (service) await stopProcess(service.process, graceMs);
    },
    stop: stopAll,
    [Symbol.asyncDispose]: stopAll,
  };
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

function launch(name: ServiceName, env: Record<string, string>, options: StackOptions): RunningService {
  const entry = join(REPO_ROOT, "services", name, "dist", "main.js");
  const child = spawn(process.execPath, ["--enable-source-maps", entry], { env, stdio: ["ignore", "pipe", "pipe"] });
  reapOnExit(child);
  let tail = "";
  const file: WriteStream | undefined = options.logDir ? createWriteStream(join(options.logDir, `${name}.log`)) : undefined;
  const onData = (data: Buffer) => {
    const text = data.toString();
    tail = (tail + text).slice(-8000);
    file?.write(data);
    if (options.echo) {
      for (const line of text.split("\n")) if (line.length > 0) process.stdout.write(`[${name}] ${line}\n`);
    }
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  child.once("exit", () => file?.end());
  return { name, process: child, healthPort: Number(env.HEALTH_PORT), tail: () => tail };
}

async function waitReady(service: RunningService, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const url = `http://127.0.0.1:${service.healthPort}/readyz`;
  for (;;) {
    if (service.process.exitCode !== null || service.process.signalCode !== null) {
      throw new Error(`${service.name} exited (${service.process.exitCode ?? service.process.signalCode}) before it was ready:\n${service.tail()}`);
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      await response.body?.cancel();
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${service.name} not ready after ${timeoutMs} ms:\n${service.tail()}`);
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
