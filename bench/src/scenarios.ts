/**
 * The scenarios. Each runs against every path of the same run: straight to
 * the mock provider ("direct"), through the pass-through proxy ("proxy"),
 * and through Runnel ("runnel").
 */
import { setTimeout as sleep } from "node:timers/promises";
import { type BenchSizes, upstreamModels } from "./config.js";
import { openIdleSse, openIdleWs, openMany, sourceAddresses } from "./idle.js";
import { type HeapReading, heapAfterGc } from "./inspect.js";
import { closedLoop, httpJson, openStream, type StreamResult, type Target } from "./load.js";
import { type CpuWindow, cpuWindow, rssKb, type Watched } from "./proc.js";
import { round, Samples, type Summary, summarize } from "./stats.js";

export type PathName = "direct" | "proxy" | "runnel";
export const PATHS: readonly PathName[] = ["direct", "proxy", "runnel"];

/** Base URLs of the three paths, the mock (for its journal) and the processes to watch. */
export interface Rig {
  readonly urls: Record<PathName, string>;
  readonly mockUrl: string;
  readonly processes: readonly Watched[];
  /** Inspector ports by process name (memory scenarios only), to read the heap after a full collection. */
  readonly inspectPorts?: Readonly<Record<string, number>>;
}

/** The target of `path` for a scenario: the public model through Runnel, the upstream model elsewhere. */
function target(rig: Rig, path: PathName, publicModel: string, upstreamModel: string): Target {
  return { baseUrl: rig.urls[path], model: path === "runnel" ? publicModel : upstreamModel };
}

function failures(results: readonly StreamResult[]): { errors: number; firstError: string | null } {
  const failed = results.filter((r) => r.error !== null || !r.done);
  return { errors: failed.length, firstError: failed[0]?.error ?? (failed.length ? "ended without [DONE]" : null) };
}

function ttfts(results: readonly StreamResult[]): number[] {
  return results.map((r) => r.ttftMs).filter((value) => Number.isFinite(value));
}

export async function warmup(rig: Rig, sizes: BenchSizes): Promise<void> {
  const models = upstreamModels(sizes);
  for (const path of PATHS) {
    const tokens = sizes.ttft[0]?.tokens ?? 5;
    await closedLoop(sizes.warmupStreams, 20, () => openStream(target(rig, path, `ttft-${tokens}`, models.ttft(tokens))));
  }
}

export interface TtftResult {
  readonly concurrency: number;
  readonly tokensPerStream: number;
  readonly streams: number;
  readonly paths: Record<PathName, Summary & { errors: number; firstError: string | null; cpu: CpuWindow }>;
}

/** TTFT at a concurrency: `concurrency` clients in a closed loop, each opening `perClient` streams. */
export async function ttftScenario(rig: Rig, sizes: BenchSizes, concurrency: number, perClient: number, tokens: number): Promise<TtftResult> {
  const models = upstreamModels(sizes);
  const paths = {} as TtftResult["paths"];
  const total = concurrency * perClient;
  for (const path of PATHS) {
    const stop = cpuWindow(rig.processes);
    const results = await closedLoop(total, concurrency, () => openStream(target(rig, path, `ttft-${tokens}`, models.ttft(tokens))));
    paths[path] = { ...summarize(ttfts(results)), ...failures(results), cpu: stop() };
    await sleep(500);
  }
  return { concurrency, tokensPerStream: tokens, streams: total, paths };
}

export interface ItlResult {
  readonly streams: number;
  readonly tokensPerStream: number;
  readonly paths: Record<PathName, { gaps: Summary; ttft: Summary; errors: number; firstError: string | null; cpu: CpuWindow }>;
}

/** Inter-token gaps with `itlStreams` concurrent streams at 50 tokens/s, started over one second. */
export async function itlScenario(rig: Rig, sizes: BenchSizes): Promise<ItlResult> {
  const models = upstreamModels(sizes);
  const paths = {} as ItlResult["paths"];
  for (const path of PATHS) {
    const gaps = new Samples();
    const stop = cpuWindow(rig.processes);
    const results = await Promise.all(
      Array.from({ length: sizes.itlStreams }, async (_, index) => {
        await sleep((index * 1000) / sizes.itlStreams);
        return openStream(target(rig, path, "itl", models.itl), { gaps });
      }),
    );
    paths[path] = { gaps: summarize(gaps.values()), ttft: summarize(ttfts(results)), ...failures(results), cpu: stop() };
    await sleep(500);
  }
  return { streams: sizes.itlStreams, tokensPerStream: sizes.itlTokens, paths };
}

export interface ThroughputResult {
  readonly concurrency: number;
  readonly tokensPerStream: number;
  readonly paths: Record<
    PathName,
    {
      tokens: number;
      seconds: number;
      tokensPerSecond: number;
      errors: number;
      firstError: string | null;
      cpu: CpuWindow;
      cpuMsPerThousandTokens: Record<string, number>;
    }
  >;
}

/** Sustained tokens/s: `throughputConcurrency` clients stream `throughputTokens`-token completions (no delay) for a fixed time. */
export async function throughputScenario(rig: Rig, sizes: BenchSizes): Promise<ThroughputResult> {
  const models = upstreamModels(sizes);
  const paths = {} as ThroughputResult["paths"];
  for (const path of PATHS) {
    const stop = cpuWindow(rig.processes);
    const started = performance.now();
    const deadline = started + sizes.throughputSeconds * 1000;
    const results: StreamResult[] = [];
    await Promise.all(
      Array.from({ length: sizes.throughputConcurrency }, async () => {
        while (performance.now() < deadline) results.push(await openStream(target(rig, path, "throughput", models.throughput)));
      }),
    );
    const cpu = stop();
    const tokens = results.reduce((sum, r) => sum + r.tokens, 0);
    const seconds = (performance.now() - started) / 1000;
    const perThousand: Record<string, number> = {};
    for (const [name, used] of Object.entries(cpu.cpuSeconds)) perThousand[name] = round((used * 1000) / (tokens / 1000));
    paths[path] = {
      tokens,
      seconds: round(seconds),
      tokensPerSecond: Math.round(tokens / seconds),
      ...failures(results),
      cpu,
      cpuMsPerThousandTokens: perThousand,
    };
    await sleep(1000);
  }
  return { concurrency: sizes.throughputConcurrency, tokensPerStream: sizes.throughputTokens, paths };
}

/** One path of a memory scenario: the process holding the connections and what it grew by. */
export interface MemoryPath {
  readonly process: string;
  readonly opened: number;
  readonly openSeconds: number;
  readonly rssBeforeKb: number;
  readonly rssAfterKb: number;
  /** RSS delta / connections: what the kernel charges (heap, garbage not yet collected, buffers, everything). */
  readonly kbPerStream: number;
  /** The V8 heap after a full collection, before and after (when the process has an inspector). */
  readonly heapBefore?: HeapReading;
  readonly heapAfter?: HeapReading;
  /** (heapUsed + external) delta after full collections / connections: what the JavaScript side really holds. */
  readonly heapKbPerStream?: number;
}

export interface MemoryResult {
  readonly transport: "sse" | "ws";
  readonly wanted: number;
  readonly opened: number;
  /** Source addresses the load generator spread the connections over. */
  readonly sourceAddresses: number;
  /** Per path: the process holding the connections, its RSS delta (KB) and KB per connection. */
  readonly paths: Partial<Record<PathName, MemoryPath>>;
  /** RSS deltas (KB) of the other processes during the Runnel measurement. */
  readonly others?: Record<string, number>;
}

function pidOf(rig: Rig, name: string): number {
  const found = rig.processes.find((p) => p.name === name);
  if (!found) throw new Error(`no process ${name}`);
  return found.pid;
}

/** The mean of five RSS readings over a second: RSS moves as the collector runs. */
async function meanRssKb(pid: number): Promise<number> {
  let sum = 0;
  for (let reading = 0; reading < 5; reading++) {
    sum += rssKb(pid);
    await sleep(200);
  }
  return Math.round(sum / 5);
}

/** Connections being set up at once (below the servers' listen backlog of 511). */
const CONNECTING = 256;
/** Long enough for a quiet Runnel SSE stream's first heartbeat (15 s by default) after thousands of stream opens on a loaded machine. */
const IDLE_READY_TIMEOUT_MS = 120_000;

/** Ingress (and, for SSE, mock and proxy) memory with `count` idle connections. */
export async function memoryScenario(rig: Rig, transport: "sse" | "ws", count: number, paths: readonly PathName[], settleMs: number): Promise<MemoryResult> {
  const holder: Record<PathName, string> = { direct: "mock-provider", proxy: "proxy", runnel: "ingress" };
  const addresses = sourceAddresses(count);
  const result: MemoryResult = { transport, wanted: count, opened: 0, sourceAddresses: addresses.length, paths: {} };
  const others: Record<string, number> = {};
  let opened = 0;
  for (const path of paths) {
    const name = holder[path];
    const pid = pidOf(rig, name);
    const inspectPort = rig.inspectPorts?.[name];
    await sleep(settleMs);
    const before = await meanRssKb(pid);
    const heapBefore = inspectPort ? await heapAfterGc(inspectPort) : undefined;
    const othersBefore = new Map(rig.processes.map((p) => [p.name, rssKb(p.pid)]));
    const idle = { baseUrl: rig.urls[path], model: path === "runnel" ? "idle" : upstreamModels(FAKE_SIZES).idle };
    const opening = performance.now();
    const opener = transport === "sse" ? openIdleSse(idle, IDLE_READY_TIMEOUT_MS) : openIdleWs(idle, IDLE_READY_TIMEOUT_MS);
    const connections = await openMany(count, CONNECTING, addresses, opener);
    const openSeconds = round((performance.now() - opening) / 1000, 1);
    const ready = connections.filter((c) => c.ready).length;
    process.stderr.write(`[bench] ${transport} ${path}: ${ready} of ${count} open in ${openSeconds} s\n`);
    await sleep(settleMs);
    const after = await meanRssKb(pid);
    const heapAfter = inspectPort ? await heapAfterGc(inspectPort) : undefined;
    opened = Math.max(opened, ready);
    const perStream = (delta: number) => (ready ? round(delta / ready, 2) : Number.NaN);
    result.paths[path] = {
      process: name,
      opened: ready,
      openSeconds,
      rssBeforeKb: before,
      rssAfterKb: after,
      kbPerStream: perStream(after - before),
      ...(heapBefore && heapAfter
        ? { heapBefore, heapAfter, heapKbPerStream: perStream(heapAfter.heapUsedKb + heapAfter.externalKb - heapBefore.heapUsedKb - heapBefore.externalKb) }
        : {}),
    };
    if (path === "runnel") {
      for (const p of rig.processes) others[p.name] = rssKb(p.pid) - (othersBefore.get(p.name) ?? 0);
    }
    for (const connection of connections) connection.close();
    await sleep(settleMs);
  }
  return { ...result, opened, ...(Object.keys(others).length ? { others } : {}) };
}

/** The idle model string does not depend on sizes; a stand-in to reach it. */
const FAKE_SIZES = { itlTokens: 0, throughputTokens: 0 } as BenchSizes;

interface JournalEntry {
  readonly receivedAt: number;
  readonly clientClosedAt: number | null;
  readonly status: number | null;
}

async function journal(rig: Rig): Promise<JournalEntry[]> {
  const answer = await httpJson("GET", `${rig.mockUrl}/_mock/requests`);
  return (answer.body as { requests: JournalEntry[] }).requests;
}

export interface CancelResult {
  readonly samples: number;
  readonly paths: Record<PathName, Summary & { errors: number }>;
}

/**
 * Cancel speed, one stream at a time: read the first token, then cancel
 * (Runnel: `DELETE /v1/streams/{id}`; direct and proxy: the client closes its
 * socket) and wait for the mock's journal to record its socket closing.
 * Latency = the journal's `clientClosedAt` − the epoch ms when the cancel was sent (1 ms resolution).
 */
export async function cancelScenario(rig: Rig, sizes: BenchSizes): Promise<CancelResult> {
  const models = upstreamModels(sizes);
  const paths = {} as CancelResult["paths"];
  for (const path of PATHS) {
    const latencies: number[] = [];
    let errors = 0;
    for (let index = 0; index < sizes.cancels; index++) {
      await httpJson("DELETE", `${rig.mockUrl}/_mock/requests`);
      let cancelledAt = 0;
      let firstToken: () => void = () => {};
      const gotFirstToken = new Promise<void>((resolve) => {
        firstToken = resolve;
      });
      const stream = openStream(target(rig, path, "cancel", models.cancel), {
        timeoutMs: 10_000,
        onFirstToken: (response) => {
          cancelledAt = Date.now();
          if (path === "runnel") {
            const id = String(response.headers["x-runnel-stream-id"]);
            const token = encodeURIComponent(String(response.headers["x-runnel-resume-token"]));
            httpJson("DELETE", `${rig.urls.runnel}/v1/streams/${id}?token=${token}`).catch(() => {});
          } else {
            response.destroy();
          }
          firstToken();
        },
      });
      await Promise.race([gotFirstToken, stream]);
      let closedAt: number | null = null;
      const deadline = Date.now() + 5000;
      while (cancelledAt > 0 && closedAt === null && Date.now() < deadline) {
        const entry = (await journal(rig)).at(-1);
        closedAt = entry?.clientClosedAt ?? null;
        if (closedAt === null) await sleep(1);
      }
      const result = await stream;
      if (closedAt === null || cancelledAt === 0) {
        errors++;
        if (errors === 1) process.stderr.write(`[bench] cancel ${path}: no close recorded (${result.error ?? "no error"})\n`);
      } else {
        latencies.push(closedAt - cancelledAt);
      }
    }
    paths[path] = { ...summarize(latencies), errors };
  }
  return { samples: sizes.cancels, paths };
}

export interface FailoverResult {
  readonly samples: number;
  /** TTFT without a failure and with a 500 first, and the extra (p50, p99 difference). */
  readonly paths: Record<
    "direct" | "runnel",
    { base: Summary; failover: Summary; extraP50: number; extraP99: number; errors: number; firstError: string | null }
  >;
}

/**
 * Failover: the primary route answers 500 and the backup route (next
 * priority) serves (Runnel: route failover in the worker, no retry on the
 * primary; direct: a client that sends the request again at once after the 500).
 */
export async function failoverScenario(rig: Rig, sizes: BenchSizes, nonce: string): Promise<FailoverResult> {
  const models = upstreamModels(sizes);
  const direct = { base: [] as number[], failover: [] as number[], errors: 0, firstError: null as string | null };
  const runnel = { base: [] as number[], failover: [] as number[], errors: 0, firstError: null as string | null };
  const note = (into: typeof direct, result: StreamResult) => {
    if (result.error !== null || !Number.isFinite(result.ttftMs)) {
      into.errors++;
      into.firstError = into.firstError ?? result.error;
    }
  };
  for (let index = 0; index < sizes.failovers; index++) {
    const base = await openStream({ baseUrl: rig.urls.runnel, model: "base" });
    note(runnel, base);
    if (Number.isFinite(base.ttftMs)) runnel.base.push(base.ttftMs);
    const failed = await openStream({ baseUrl: rig.urls.runnel, model: `failover-${index}` });
    note(runnel, failed);
    if (Number.isFinite(failed.ttftMs)) runnel.failover.push(failed.ttftMs);

    const directBase = await openStream({ baseUrl: rig.urls.direct, model: models.base });
    note(direct, directBase);
    if (Number.isFinite(directBase.ttftMs)) direct.base.push(directBase.ttftMs);
    const started = performance.now();
    const model = models.failover(`${nonce}-d${index}`);
    const first = await openStream({ baseUrl: rig.urls.direct, model });
    if (first.status !== 500) {
      direct.errors++;
      direct.firstError = direct.firstError ?? `expected a 500 first, got ${first.status}`;
      continue;
    }
    const retriedAt = performance.now();
    const second = await openStream({ baseUrl: rig.urls.direct, model });
    note(direct, second);
    if (Number.isFinite(second.ttftMs)) direct.failover.push(retriedAt - started + second.ttftMs);
  }
  const finish = (from: typeof direct) => {
    const base = summarize(from.base);
    const failover = summarize(from.failover);
    return {
      base,
      failover,
      extraP50: round(failover.p50 - base.p50),
      extraP99: round(failover.p99 - base.p99),
      errors: from.errors,
      firstError: from.firstError,
    };
  };
  return { samples: sizes.failovers, paths: { direct: finish(direct), runnel: finish(runnel) } };
}
