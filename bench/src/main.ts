/**
 * `npm run bench [-- --quick]`: starts nats-server, the stack and a
 * pass-through proxy, runs every scenario against direct, proxy and Runnel,
 * prints the table, and writes .runnel/bench/results.json and results.svg.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join, resolve } from "node:path";
import { freePort, type NatsHandle, REPO_ROOT, type Stack, startNats, startStack, stopProcess } from "@runnel/launcher";
import { benchConfigYaml, FULL, QUICK } from "./config.js";
import type { Watched } from "./proc.js";
import { rows, svg, table } from "./report.js";
import {
  type CancelResult,
  cancelScenario,
  type FailoverResult,
  failoverScenario,
  type ItlResult,
  itlScenario,
  type MemoryResult,
  memoryScenario,
  type Rig,
  type ThroughputResult,
  type TtftResult,
  throughputScenario,
  ttftScenario,
  warmup,
} from "./scenarios.js";

/** Everything one run measured; written as results.json. */
export interface BenchResults {
  readonly mode: "full" | "quick";
  readonly startedAt: string;
  readonly durationSeconds: number;
  readonly machine: { readonly cpus: number; readonly model: string; readonly node: string; readonly openFileLimit: number };
  readonly ttft: TtftResult[];
  readonly itl: ItlResult;
  readonly throughput: ThroughputResult;
  readonly memory: MemoryResult[];
  readonly cancel: CancelResult;
  readonly failover: FailoverResult;
}

/** Where the results go: `--out <dir>`, else .runnel/bench. */
function outDir(): string {
  const at = process.argv.indexOf("--out");
  const given = at >= 0 ? process.argv[at + 1] : undefined;
  return given ? resolve(given) : join(REPO_ROOT, ".runnel", "bench");
}

const OUT_DIR = outDir();

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

function openFileLimit(): number {
  const limits = readFileSync("/proc/self/limits", "utf8");
  const match = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
  return match?.[1] === "unlimited" ? 1_000_000 : Number(match?.[1] ?? 1024);
}

async function startProxy(mockUrl: string, execArgv: readonly string[]): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [...execArgv, join(REPO_ROOT, "bench", "dist", "proxy.js"), "0", mockUrl], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  // The proxy's own errors go through; the inspector's notices (memory scenarios) do not.
  child.stderr?.on("data", (data: Buffer) => {
    const lines = String(data)
      .split("\n")
      .filter((line) => line && !/^(Debugger (listening|attached|ending)|For help, see)/.test(line));
    if (lines.length > 0) process.stderr.write(`[proxy] ${lines.join("\n")}\n`);
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("proxy did not start")), 10_000);
    child.stdout?.once("data", (data: Buffer) => {
      clearTimeout(timer);
      resolve(Number(/listening (\d+)/.exec(String(data))?.[1]));
    });
    child.once("exit", (code) => reject(new Error(`proxy exited with ${code}`)));
  });
  return { child, url: `http://127.0.0.1:${port}` };
}

interface Running {
  nats: NatsHandle;
  stack: Stack;
  proxy: ChildProcess;
  rig: Rig;
}

/**
 * Starts nats-server, the stack and the proxy. `inspect`: the processes that
 * hold connections in the memory scenarios (ingress, mock, proxy) get an
 * inspector on 127.0.0.1, so their heap can be read after a full collection.
 */
async function startAll(configPath: string, inspect = false): Promise<Running> {
  const nats = await startNats({ forceLocal: true });
  let stack: Stack | undefined;
  const inspectPorts: Record<string, number> = {};
  if (inspect) for (const name of ["ingress", "mock-provider", "proxy"]) inspectPorts[name] = await freePort();
  const inspectOption = (name: string) => [process.env.NODE_OPTIONS, `--inspect=127.0.0.1:${inspectPorts[name]}`].filter(Boolean).join(" ");
  try {
    stack = await startStack({
      natsUrl: nats.url,
      env: { RUNNEL_CONFIG: configPath, LOG_LEVEL: "warn" },
      logDir: join(OUT_DIR, "logs"),
      ...(inspect
        ? { serviceEnv: { ingress: { NODE_OPTIONS: inspectOption("ingress") }, "mock-provider": { NODE_OPTIONS: inspectOption("mock-provider") } } }
        : {}),
    });
    const proxy = await startProxy(stack.mockUrl, inspect ? [`--inspect=127.0.0.1:${inspectPorts.proxy}`] : []);
    const processes: Watched[] = [];
    for (const [name, service] of stack.services) if (service.process.pid) processes.push({ name, pid: service.process.pid });
    if (nats.process?.pid) processes.push({ name: "nats-server", pid: nats.process.pid });
    if (proxy.child.pid) processes.push({ name: "proxy", pid: proxy.child.pid });
    processes.push({ name: "load-generator", pid: process.pid });
    const rig: Rig = {
      urls: { direct: stack.mockUrl, proxy: proxy.url, runnel: stack.ingressUrl },
      mockUrl: stack.mockUrl,
      processes,
      ...(inspect ? { inspectPorts } : {}),
    };
    return { nats, stack, proxy: proxy.child, rig };
  } catch (error) {
    await stack?.stop();
    await nats.stop();
    throw error;
  }
}

async function stopAll(running: Running | undefined): Promise<void> {
  if (!running) return;
  await stopProcess(running.proxy, 5_000);
  await running.stack.stop();
  await running.nats.stop();
}

async function main(): Promise<void> {
  const sizes = process.argv.includes("--quick") ? QUICK : FULL;
  const started = performance.now();
  mkdirSync(OUT_DIR, { recursive: true });
  const nonce = randomBytes(4).toString("hex");
  const configPath = join(OUT_DIR, "runnel.bench.yaml");
  writeFileSync(configPath, benchConfigYaml(sizes, nonce));
  const fdLimit = openFileLimit();
  const idleAt = process.argv.indexOf("--idle");
  const idleWanted = idleAt >= 0 ? Number(process.argv[idleAt + 1]) : sizes.idleStreams;
  // Each idle connection is one descriptor in the load generator and one in the process holding it; keep headroom.
  const idleCount = Math.max(0, Math.min(idleWanted, fdLimit - 1000));
  if (idleCount < idleWanted) log(`open-file limit ${fdLimit}: idle scenarios capped at ${idleCount} connections`);

  let running: Running | undefined;
  const cleanup = () => {
    for (const child of [running?.proxy, running?.nats.process, ...[...(running?.stack.services.values() ?? [])].map((s) => s.process)]) {
      if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  };
  process.on("exit", cleanup);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      cleanup();
      process.exit(1);
    });
  }

  try {
    log(`${sizes.mode} mode: starting nats-server, the stack and the proxy`);
    running = await startAll(configPath);
    const rig = running.rig;
    log("warm-up");
    await warmup(rig, sizes);
    const ttft: TtftResult[] = [];
    for (const { concurrency, perClient, tokens } of sizes.ttft) {
      log(`TTFT at concurrency ${concurrency}`);
      ttft.push(await ttftScenario(rig, sizes, concurrency, perClient, tokens));
    }
    log(`inter-token latency, ${sizes.itlStreams} streams at 50 tokens/s`);
    const itl = await itlScenario(rig, sizes);
    log(`throughput, ${sizes.throughputConcurrency} streams for ${sizes.throughputSeconds} s per path`);
    const throughput = await throughputScenario(rig, sizes);
    log(`cancel, ${sizes.cancels} streams per path`);
    const cancel = await cancelScenario(rig, sizes);
    log(`failover, ${sizes.failovers} samples`);
    const failover = await failoverScenario(rig, sizes, nonce);
    // Each memory scenario on a fresh stack (after a short warm-up), so garbage left by
    // the load above is not collected during the measurement and WebSockets do not reuse heap SSE grew.
    const memory: MemoryResult[] = [];
    for (const transport of ["sse", "ws"] as const) {
      await stopAll(running);
      running = undefined;
      running = await startAll(configPath, true);
      await warmup(running.rig, { ...sizes, warmupStreams: 50 });
      log(`memory: ${idleCount} idle ${transport === "sse" ? "SSE streams" : "WebSockets (one stream each)"}`);
      memory.push(await memoryScenario(running.rig, transport, idleCount, transport === "sse" ? ["direct", "proxy", "runnel"] : ["runnel"], sizes.settleMs));
    }

    const results: BenchResults = {
      mode: sizes.mode,
      startedAt: new Date(Date.now() - (performance.now() - started)).toISOString(),
      durationSeconds: Math.round((performance.now() - started) / 1000),
      machine: { cpus: cpus().length, model: cpus()[0]?.model ?? "unknown", node: process.version, openFileLimit: fdLimit },
      ttft,
      itl,
      throughput,
      memory,
      cancel,
      failover,
    };
    const all = rows(results);
    writeFileSync(join(OUT_DIR, "results.json"), `${JSON.stringify({ ...results, table: all }, null, 2)}\n`);
    writeFileSync(join(OUT_DIR, "results.svg"), svg(all, `Runnel benchmark (${sizes.mode}): latency added over a direct connection`));
    process.stdout.write(`\n${table(all)}\n\n`);
    const cores = throughput.paths.runnel.cpu.cores;
    log(`done in ${results.durationSeconds} s`);
    process.stdout.write(
      `cores used during the Runnel throughput run: ${Object.entries(cores)
        .map(([name, value]) => `${name} ${value}`)
        .join(", ")}\n`,
    );
    process.stdout.write(`results: ${join(OUT_DIR, "results.json")}, plot: ${join(OUT_DIR, "results.svg")} (${results.durationSeconds} s)\n`);
  } finally {
    await stopAll(running);
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`[bench] failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
