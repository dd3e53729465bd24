/**
 * Where `npm start` sends traces (docs/observability.md):
 * - OTEL_* variables in the shell: passed to every service as they are (your collector);
 * - else a `jaeger` binary on the PATH or in .tools/bin: started here (Jaeger v2, in
 *   memory, OTLP on 4317/4318, the query API on 16686) and the services export to it;
 *   the console's inspector draws each stream's trace from its query API;
 * - else, when Go is installed, the bootstrap builds Jaeger in the background (the
 *   first `npm start` only: packages/launcher/jaeger pins it) while the stack runs,
 *   and it is started once built; the services export to its ports from the start;
 * - RUNNEL_JAEGER=0 skips Jaeger; without it and without OTEL_* the services load no
 *   tracing SDK at all.
 *
 * `startJaeger` runs one Jaeger on given ports with a minimal config of its own
 * (OTLP in, memory storage, the query API; nothing else listens), for npm start
 * and for tests.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, mkdirSync, openSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { delimiter, join } from "node:path";
import { reapOnExit } from "./reaper.js";
import { REPO_ROOT, stopProcess } from "./stack.js";

export interface JaegerPorts {
  readonly otlpGrpc: number;
  readonly otlpHttp: number;
  /** The query API (and, in a build that has it, the web UI). */
  readonly query: number;
  readonly queryGrpc: number;
}

/** Jaeger's usual ports: what `npm start` uses, so other tools find it where they expect it. */
export const JAEGER_DEFAULT_PORTS: JaegerPorts = { otlpGrpc: 4317, otlpHttp: 4318, query: 16686, queryGrpc: 16685 };

export interface JaegerHandle {
  readonly process: ChildProcess;
  readonly ports: JaegerPorts;
  /** OTLP over HTTP, for OTEL_EXPORTER_OTLP_ENDPOINT. */
  readonly otlpHttpEndpoint: string;
  /** The query API, for RUNNEL_TRACE_QUERY_URL. */
  readonly queryUrl: string;
  /** A link template to one trace in Jaeger's web UI, when this build has the UI (a build from the Go module has not). */
  readonly traceLink: string | undefined;
  stop(): Promise<void>;
}

/** A running Jaeger, or one on its way (being built), or none; with the environment for the services. */
export interface Traces {
  /** Environment for the services. */
  readonly env: Readonly<Record<string, string>>;
  /** One line for the banner. */
  readonly note: string;
  /** When Jaeger comes up after the stack (it was being built): the line to print then. */
  readonly later?: Promise<string>;
  /** Processes started here (Jaeger, a build of it), to stop with the stack. */
  processes(): ChildProcess[];
  stop(): Promise<void>;
}

/** A Jaeger build under way (scripts/bootstrap.mjs, buildJaegerInBackground). */
export interface JaegerBuild {
  readonly process: ChildProcess;
  /** The binary once built; undefined when the build failed. */
  readonly done: Promise<string | undefined>;
  /** Its log file. */
  readonly log: string;
  /** Signals the build and every compiler it started (its process group). */
  kill(signal: NodeJS.Signals): void;
}

export function findJaeger(): string | undefined {
  for (const dir of [...(process.env.PATH ?? "").split(delimiter), join(REPO_ROOT, ".tools", "bin")]) {
    const candidate = join(dir, "jaeger");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** Jaeger v2's config: OTLP in, traces kept in memory, the query API; on 127.0.0.1 only, no metrics or health ports. */
export function jaegerConfig(ports: JaegerPorts): string {
  return `# Written by the Runnel launcher (packages/launcher/src/traces.ts).
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memory:
        memory:
          max_traces: 50000
  jaeger_query:
    storage:
      traces: memory
    http:
      endpoint: 127.0.0.1:${ports.query}
    grpc:
      endpoint: 127.0.0.1:${ports.queryGrpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${ports.otlpGrpc}
      http:
        endpoint: 127.0.0.1:${ports.otlpHttp}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memory
`;
}

/** Starts Jaeger on `ports` and waits until its query API answers (20 s at most). */
export async function startJaeger(options: { binary: string; ports?: JaegerPorts; logDir?: string }): Promise<JaegerHandle> {
  const ports = options.ports ?? JAEGER_DEFAULT_PORTS;
  const logDir = options.logDir ?? join(REPO_ROOT, ".runnel");
  mkdirSync(logDir, { recursive: true });
  const config = join(logDir, `jaeger-${ports.query}.yaml`);
  writeFileSync(config, jaegerConfig(ports));
  const log = openSync(join(logDir, `jaeger-${ports.query}.log`), "w");
  const child = spawn(options.binary, ["--config", `file:${config}`], { stdio: ["ignore", log, log] });
  reapOnExit(child);
  const queryUrl = `http://127.0.0.1:${ports.query}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${options.binary} exited with ${child.exitCode}; see ${join(logDir, `jaeger-${ports.query}.log`)}`);
    try {
      const response = await fetch(`${queryUrl}/api/services`, { signal: AbortSignal.timeout(1_000) });
      await response.body?.cancel();
      if (response.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`Jaeger did not come up in 20 s; see ${join(logDir, `jaeger-${ports.query}.log`)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  // A build from the Go module serves a placeholder instead of the web UI: no link into it then.
  let traceLink: string | undefined;
  try {
    const home = await fetch(`${queryUrl}/`, { signal: AbortSignal.timeout(1_000) });
    const text = await home.text();
    if (home.ok && !text.includes("not the Jaeger UI")) traceLink = `${queryUrl}/trace/{traceId}`;
  } catch {
    // no UI
  }
  return {
    process: child,
    ports,
    otlpHttpEndpoint: `http://127.0.0.1:${ports.otlpHttp}`,
    queryUrl,
    traceLink,
    stop: () => stopProcess(child, 5_000),
  };
}

/** The services' environment to export to a Jaeger on the default ports, and read traces from it. */
function exportEnv(otel: Record<string, string>, traceLink: string | undefined): Record<string, string> {
  return {
    ...otel,
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${JAEGER_DEFAULT_PORTS.otlpHttp}`,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
    OTEL_BSP_SCHEDULE_DELAY: "500",
    RUNNEL_TRACE_QUERY_URL: `http://127.0.0.1:${JAEGER_DEFAULT_PORTS.query}`,
    ...(traceLink ? { RUNNEL_TRACE_LINK: traceLink } : {}),
  };
}

const CONSOLE_NOTE = "a stream's trace in the inspector, /console/streams";

export async function startTraces(options: { build?: (() => JaegerBuild | undefined) | undefined } = {}): Promise<Traces> {
  const otel = Object.fromEntries(Object.entries(process.env).filter((entry): entry is [string, string] => entry[0].startsWith("OTEL_") && !!entry[1]));
  const none = (note: string): Traces => ({ env: otel, note, processes: () => [], stop: async () => {} });
  if (otel.OTEL_EXPORTER_OTLP_ENDPOINT || otel.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || otel.OTEL_TRACES_EXPORTER) {
    return none(`Traces: exported as your OTEL_* variables say (${otel.OTEL_EXPORTER_OTLP_ENDPOINT ?? otel.OTEL_TRACES_EXPORTER ?? ""})`);
  }
  if (process.env.RUNNEL_JAEGER === "0") return none("Traces: off (RUNNEL_JAEGER=0)");
  const ports = Object.values(JAEGER_DEFAULT_PORTS);
  const free = await Promise.all(ports.map(portFree));
  if (free.includes(false)) return none(`Traces: off (one of Jaeger's ports ${ports.join(", ")} is taken)`);

  const binary = findJaeger();
  if (binary) {
    let jaeger: JaegerHandle;
    try {
      jaeger = await startJaeger({ binary });
    } catch (error) {
      return none(`Traces: off (${(error as Error).message})`);
    }
    return {
      env: exportEnv(otel, jaeger.traceLink),
      note: `Traces: Jaeger at ${jaeger.queryUrl} (${CONSOLE_NOTE}; RUNNEL_JAEGER=0 turns it off)`,
      processes: () => [jaeger.process],
      stop: () => jaeger.stop(),
    };
  }

  const build = options.build?.();
  if (!build) return none("Traces: off (no jaeger binary, and Go is not installed to build one; see docs/observability.md)");
  // However this process ends, the build (and its compilers) end with it.
  process.once("exit", () => build.kill("SIGKILL"));
  let jaeger: JaegerHandle | undefined;
  let stopped = false;
  const later = build.done.then(async (built) => {
    if (!built) return `Traces: building Jaeger failed (see ${build.log}); traces stay off`;
    if (stopped) return "";
    try {
      jaeger = await startJaeger({ binary: built });
      return `Traces: Jaeger is built and up at ${jaeger.queryUrl} (${CONSOLE_NOTE}); next time npm start runs it at once`;
    } catch (error) {
      return `Traces: off (${(error as Error).message})`;
    }
  });
  return {
    // Exported to Jaeger's ports from the start: spans sent before it is up are dropped, the rest arrive.
    env: exportEnv(otel, undefined),
    note: `Traces: building Jaeger from its Go module in the background (first run only, a few minutes; log ${build.log}); traces appear once it is up`,
    later,
    processes: () => [build.process, ...(jaeger ? [jaeger.process] : [])],
    stop: async () => {
      stopped = true;
      if (build.process.exitCode === null) build.kill("SIGTERM");
      await jaeger?.stop();
    },
  };
}
