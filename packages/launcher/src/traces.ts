/**
 * Where `npm start` sends traces (docs/observability.md):
 * - OTEL_* variables in the shell: passed to every service as they are (your collector);
 * - else a `jaeger` binary on the PATH or in .tools/bin: started here (all-in-one,
 *   in memory, OTLP on 4317/4318, UI and API on 16686) and the services export to it;
 *   RUNNEL_JAEGER=0 skips it;
 * - else none: the services load no tracing SDK at all.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, mkdirSync, openSync } from "node:fs";
import { createServer } from "node:net";
import { delimiter, join } from "node:path";
import { reapOnExit } from "./reaper.js";
import { REPO_ROOT } from "./stack.js";

const JAEGER_PORTS = [4317, 4318, 16686];

export interface Traces {
  /** Environment for the services. */
  readonly env: Readonly<Record<string, string>>;
  /** The Jaeger process, when one was started here. */
  readonly jaeger?: ChildProcess;
  /** One line for the banner. */
  readonly note: string;
}

function findJaeger(): string | undefined {
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

export async function startTraces(): Promise<Traces> {
  const otel = Object.fromEntries(Object.entries(process.env).filter((entry): entry is [string, string] => entry[0].startsWith("OTEL_") && !!entry[1]));
  if (otel.OTEL_EXPORTER_OTLP_ENDPOINT || otel.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || otel.OTEL_TRACES_EXPORTER) {
    return { env: otel, note: `Traces: exported as your OTEL_* variables say (${otel.OTEL_EXPORTER_OTLP_ENDPOINT ?? otel.OTEL_TRACES_EXPORTER ?? ""})` };
  }
  const jaeger = process.env.RUNNEL_JAEGER === "0" ? undefined : findJaeger();
  if (!jaeger) return { env: otel, note: "Traces: off (set OTEL_EXPORTER_OTLP_ENDPOINT, or put a jaeger binary on the PATH; see docs/observability.md)" };
  const free = await Promise.all(JAEGER_PORTS.map(portFree));
  if (free.includes(false)) return { env: otel, note: `Traces: off (${jaeger} found, but one of the ports ${JAEGER_PORTS.join(", ")} is taken)` };
  const logDir = join(REPO_ROOT, ".runnel");
  mkdirSync(logDir, { recursive: true });
  const log = openSync(join(logDir, "jaeger.log"), "w");
  const child = spawn(jaeger, [], { stdio: ["ignore", log, log] });
  reapOnExit(child);
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) return { env: otel, note: `Traces: off (${jaeger} exited with ${child.exitCode}; see .runnel/jaeger.log)` };
    try {
      const response = await fetch("http://127.0.0.1:16686/api/services", { signal: AbortSignal.timeout(1_000) });
      await response.body?.cancel();
      if (response.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      return { env: otel, note: "Traces: off (Jaeger did not come up in 20 s; see .runnel/jaeger.log)" };
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return {
    env: { ...otel, OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf", OTEL_BSP_SCHEDULE_DELAY: "500" },
    jaeger: child,
    note: "Traces: Jaeger at http://127.0.0.1:16686 (service runnel-ingress; RUNNEL_JAEGER=0 turns it off)",
  };
}
