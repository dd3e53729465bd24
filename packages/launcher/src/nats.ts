/**
 * A real nats-server for tests and for `npm start`, as an async-disposable
 * handle (`await using nats = await startNats()`):
 *   1. NATS_URL, when set: an existing server (disposing leaves it alone);
 *   2. else a Docker engine, when one answers: @testcontainers/nats;
 *   3. else the local `nats-server` binary (NATS_SERVER_BIN, else PATH) on a
 *      free port with JetStream on and a temporary store.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, waitForPort } from "./ports.js";
import { reapOnExit } from "./reaper.js";

/**
 * The nats-server release the chart deploys (charts/runnel/values.yaml
 * `nats.image.tag`): the bootstrap installs it, the testcontainers path runs
 * its image. A test checks the three agree.
 */
export const NATS_SERVER_VERSION = "2.15.2";

export interface NatsHandle extends AsyncDisposable {
  readonly url: string;
  /** How this server was obtained. */
  readonly kind: "external" | "testcontainers" | "local";
  /** The local server process (kind "local" only), for tests that stop or restart NATS. */
  readonly process?: ChildProcess;
  /**
   * Stops the local server and starts it again on the same port and store
   * (JetStream's data survives), after `downMs`. Kind "local" only.
   */
  restart?(downMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface StartNatsOptions {
  /** Ignore NATS_URL and Docker; always start a private local server. */
  readonly forceLocal?: boolean;
  /** Where nats-server writes its log (else discarded). */
  readonly logFile?: string;
}

export async function startNats(options: StartNatsOptions = {}): Promise<NatsHandle> {
  const external = process.env.NATS_URL;
  if (external && !options.forceLocal) {
    const stop = async () => {};
    return { url: external, kind: "external", stop, [Symbol.asyncDispose]: stop };
  }
  if (!options.forceLocal && (await dockerAvailable())) return startContainer();
  return startLocal(options);
}

/** True when a Docker engine answers on DOCKER_HOST or the default socket. */
export async function dockerAvailable(): Promise<boolean> {
  const host = process.env.DOCKER_HOST;
  if (host && !host.startsWith("unix://")) return true; // a remote engine: let testcontainers talk to it
  const socketPath = host ? host.slice("unix://".length) : "/var/run/docker.sock";
  if (!existsSync(socketPath)) return false;
  return new Promise((resolve) => {
    const probe = request({ socketPath, path: "/_ping", timeout: 1_000 }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    probe.on("error", () => resolve(false));
    probe.on("timeout", () => {
      probe.destroy();
      resolve(false);
    });
    probe.end();
  });
}

async function startContainer(): Promise<NatsHandle> {
  const { NatsContainer } = await import("@testcontainers/nats");
  const container = await new NatsContainer(`nats:${NATS_SERVER_VERSION}-alpine`).withJetStream().start();
  const { user, pass, servers } = container.getConnectionOptions() as { user?: string; pass?: string; servers: string | string[] };
  const server = Array.isArray(servers) ? servers[0] : servers;
  const hostPort = String(server).replace(/^nats:\/\//, "");
  const url = user ? `nats://${encodeURIComponent(user)}:${encodeURIComponent(pass ?? "")}@${hostPort}` : `nats://${hostPort}`;
  const stop = async () => {
    await container.stop();
  };
  return { url, kind: "testcontainers", stop, [Symbol.asyncDispose]: stop };
}

async function startLocal(options: StartNatsOptions): Promise<NatsHandle> {
  const binary = process.env.NATS_SERVER_BIN || "nats-server";
  const port = await freePort();
  const store = await mkdtemp(join(tmpdir(), "runnel-nats-"));
  const args = ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store, "--name", `runnel-test-${port}`];
  if (options.logFile) args.push("-l", options.logFile);
  let child: ChildProcess;
  try {
    child = await spawnServer(binary, args, port);
  } catch (error) {
    await rm(store, { recursive: true, force: true });
    throw error;
  }
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await stopServer(child);
    await rm(store, { recursive: true, force: true });
  };
  const handle: NatsHandle = {
    url: `nats://127.0.0.1:${port}`,
    kind: "local",
    get process() {
      return child;
    },
    async restart(downMs = 0) {
      if (stopped) throw new Error("this nats-server was stopped");
      await stopServer(child);
      if (downMs > 0) await new Promise((resolve) => setTimeout(resolve, downMs));
      child = await spawnServer(binary, args, port);
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
  return handle;
}

/** Starts nats-server and resolves once it accepts connections. */
async function spawnServer(binary: string, args: readonly string[], port: number): Promise<ChildProcess> {
  const logToFile = args.includes("-l");
  const child = spawn(binary, args, { stdio: ["ignore", "ignore", logToFile ? "ignore" : "pipe"] });
  reapOnExit(child);
  let stderr = "";
  child.stderr?.on("data", (data: Buffer) => {
    stderr = (stderr + data.toString()).slice(-4000);
  });
  const exited = new Promise<never>((_resolve, reject) => {
    child.once("error", (error) => reject(new Error(`cannot run ${binary}: ${error.message} (run the bootstrap: npm test / npm start installs it)`)));
    child.once("exit", (code) => reject(new Error(`nats-server exited with ${code} before it was ready: ${stderr}`)));
  });
  exited.catch(() => {});
  try {
    await Promise.race([waitForPort("127.0.0.1", port, 15_000), exited]);
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return child;
}

/** SIGTERM, then SIGKILL after 5 s; resolves once the process has exited. */
async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await gone;
  clearTimeout(timer);
}
