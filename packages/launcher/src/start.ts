/**
 * `npm start`: the whole stack on this machine, until Ctrl-C. scripts/start.mjs
 * runs the bootstrap (dependencies, nats-server, build) and then this.
 *
 * - Every service sees the caller's environment (a `${VAR}` in runnel.yaml
 *   is read from the shell that ran `npm start`); the launcher sets only what
 *   it owns: ports, NATS_URL, the control plane's address, instance ids.
 * - `RUNNEL_CONFIG` may be relative: to the directory `npm start` was run in.
 * - SIGHUP reloads runnel.yaml (forwarded to the control plane); SIGINT and
 *   SIGTERM stop every process it started, and the temporary NATS store.
 */
import { isAbsolute, resolve } from "node:path";
import { loadConfig } from "@runnel/shared/contracts";
import { type NatsHandle, startNats } from "./nats.js";
import { type Stack, startStack } from "./stack.js";
import { type JaegerBuild, startTraces, type Traces } from "./traces.js";

/** The control plane's port when GRPC_PORT is unset: where the admin CLI looks by default. */
const DEFAULT_GRPC_PORT = 50051;

export interface StartOptions {
  /** What `npm start` was given after `--`. */
  readonly argv: readonly string[];
  /** The caller's environment (process.env). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The directory the user ran `npm start` in (npm's INIT_CWD), for a relative RUNNEL_CONFIG. */
  readonly cwd: string;
  /** Starts building Jaeger in the background when no binary is found (the bootstrap's buildJaegerInBackground). */
  readonly buildJaeger?: () => JaegerBuild | undefined;
}

/** Where a relative RUNNEL_CONFIG points: the directory the user ran the command in, not the package root npm moves to. */
export function resolveConfigPath(path: string | undefined, cwd: string): string | undefined {
  if (!path) return undefined;
  return isAbsolute(path) ? path : resolve(cwd, path);
}

/** What the banner's example request asks for: the config's first model, and whether it needs a key. */
function example(env: Readonly<Record<string, string | undefined>>): { model: string; auth: boolean } {
  try {
    const config = loadConfig(env);
    return { model: config.models[0]?.name ?? "mock", auth: config.auth !== undefined };
  } catch {
    // The control plane will say what is wrong with it, naming the field.
    return { model: "mock", auth: false };
  }
}

/** The admin CLI command that reaches this stack's control plane. */
export function adminCommand(grpcPort: number): string {
  const prefix = grpcPort === DEFAULT_GRPC_PORT ? "" : `RUNNEL_CONTROL_PLANE_URL=127.0.0.1:${grpcPort} `;
  return `${prefix}npm run -s runnel -- streams ls`;
}

export async function start(options: StartOptions): Promise<void> {
  const { env } = options;
  if (options.argv.length > 0) throw new Error(`npm start takes no arguments (got: ${options.argv.join(" ")})`);
  const config = resolveConfigPath(env.RUNNEL_CONFIG, options.cwd);
  // The services read RUNNEL_CONFIG from the environment they inherit.
  if (config) process.env.RUNNEL_CONFIG = config;
  const port = Number(env.PORT || 8080);
  const grpcPort = Number(env.GRPC_PORT || DEFAULT_GRPC_PORT);

  let nats: NatsHandle | undefined;
  let stack: Stack | undefined;
  let traces: Traces | undefined;
  let stopping = false;

  /** Stops everything started so far, then exits with `code`. Safe to call at any point, once. */
  const shutdown = async (code: number) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write("\nstopping...\n");
    try {
      await stack?.stop();
      await nats?.stop();
      await traces?.stop();
    } finally {
      process.exit(code);
    }
  };

  // Installed before anything starts, so a signal during start-up stops what is already running.
  process.on("SIGINT", () => void shutdown(0));
  process.on("SIGTERM", () => void shutdown(0));
  // SIGHUP reloads, unless it is the terminal hanging up: then the parent
  // (npm, or the shell) dies of it too, and the stack stops with the terminal.
  const parent = process.ppid;
  process.on("SIGHUP", () => {
    setTimeout(() => {
      if (stopping) return;
      if (process.ppid !== parent) {
        void shutdown(0);
        return;
      }
      if (!stack) return;
      process.stdout.write(`reloading ${config ?? "the built-in config"} (SIGHUP to the control plane)\n`);
      for (const replica of stack.replicas("control-plane")) replica.process.kill("SIGHUP");
    }, 200);
  });
  // Last resort if this process dies some other way: no child may outlive it.
  process.on("exit", () => {
    const children = [...(stack?.services.values() ?? [])].map((service) => service.process).concat(nats?.process ?? [], traces?.processes() ?? []);
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });

  try {
    nats = await startNats({ forceLocal: !env.NATS_URL });
    traces = await startTraces({ build: options.buildJaeger });
    stack = await startStack({
      natsUrl: nats.url,
      ingressPort: port,
      mockPort: Number(env.MOCK_PORT || 9001),
      // Fixed, so the admin CLI (npm run runnel) finds it without being told.
      controlPlanePort: grpcPort,
      echo: true,
      inheritEnv: true,
      env: { LOG_LEVEL: env.LOG_LEVEL ?? "info", ...traces.env },
    });
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    await shutdown(1);
    return;
  }

  const sample = example({ ...env, ...(config ? { RUNNEL_CONFIG: config } : {}) });
  process.stdout.write(
    [
      "",
      `Runnel is ready at ${stack.ingressUrl}  (NATS ${nats.url}, mock provider ${stack.mockUrl})`,
      `Config: ${config ?? "built-in (model mock; set RUNNEL_CONFIG to serve your own)"}; kill -HUP ${process.pid} reloads it`,
      "Try:",
      `  curl -N ${stack.ingressUrl}/v1/chat/completions -H 'content-type: application/json' \\`,
      ...(sample.auth ? ["    -H 'authorization: Bearer <one of auth.apiKeys>' \\"] : []),
      `    -d '{"model":${JSON.stringify(sample.model)},"stream":true,"messages":[{"role":"user","content":"Hello"}]}'`,
      `Admin: ${adminCommand(grpcPort)}   (control plane ${stack.controlPlaneTarget})`,
      `Console: ${stack.ingressUrl}/ (playground) and ${stack.ingressUrl}/console/streams (inspector)`,
      traces.note,
      "Ctrl-C stops everything.",
      "",
    ].join("\n"),
  );
  void traces.later?.then((line) => {
    if (line && !stopping) process.stdout.write(`${line}\n`);
  });

  for (const service of stack.services.values()) {
    service.process.once("exit", (code, signal) => {
      if (stopping) return;
      process.stderr.write(`${service.name} exited unexpectedly (${code ?? signal}); stopping the stack\n`);
      void shutdown(1);
    });
  }
}
