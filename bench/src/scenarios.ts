/**
 * The scenarios. Each runs against every path of the same run: straight to
 * the mock provider ("direct"), through the pass-through proxy ("proxy"),
 * and through Runnel ("runnel").
 */
import { setTimeout as sleep } from "node:timers/promises";
import { type BenchSizes, upstreamModels } from "./config.js";
import { openIdleSse, openIdleWs, openMany } from "./idle.js";
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

export interface MemoryResult {
  readonly transport: "sse" | "ws";
  readonly wanted: number;
  readonly opened: number;
  /** Per path: the process holding the connections, its RSS delta (KB) and KB per connection. */
  readonly paths: Partial<Record<PathName, { process: string; opened: number; rssBeforeKb: number; rssAfterKb: number; kbPerStream: number }>>;
  /** RSS deltas (KB) of the other processes during the Runnel measurement. */
  readonly others?: Record<string, number>;
}

function pidOf(rig: Rig, name: string): number {
  const found = rig.processes.find((p) => p.name === name);
  if (!found) throw new Error(`no process ${name}`);
  return found.pid;
}

/** Ingress (and, for SSE, mock and proxy) memory with `count` idle connections. */
export async function memoryScenario(rig: Rig, transport: "sse" | "ws", count: number, paths: readonly PathName[], settleMs: number): Promise<MemoryResult> {
  const holder: Record<PathName, string> = { direct: "mock-provider", proxy: "proxy", runnel: "ingress" };
  const result: MemoryResult = { transport, wanted: count, opened: 0, paths: {} };
  const others: Record<string, number> = {};
  let opened = 0;
  for (const path of paths) {
    const pid = pidOf(rig, holder[path]);
    await sleep(settleMs);
    const before = rssKb(pid);
    const othersBefore = new Map(rig.processes.map((p) => [p.name, rssKb(p.pid)]));
    const idle = { baseUrl: rig.urls[path], model: path === "runnel" ? "idle" : upstreamModels(FAKE_SIZES).idle };
    const opening = performance.now();
    const connections = await openMany(count, 1000, () => (transport === "sse" ? openIdleSse(idle, 30_000) : openIdleWs(idle, 30_000)));
    process.stderr.write(`[bench] ${transport} ${path}: ${count} opened in ${Math.round(performance.now() - opening)} ms\n`);
    await sleep(settleMs);
    // The mean of five readings over a second: RSS moves as the collector runs.
    let after = 0;
    for (let reading = 0; reading < 5; reading++) {
      after += rssKb(pid) / 5;
      await sleep(200);
    }
    after = Math.round(after);
    const ready = connections.filter((c) => c.ready).length;
    opened = Math.max(opened, ready);
    result.paths[path] = {
      process: holder[path],
      opened: ready,
      rssBeforeKb: before,
      rssAfterKb: after,
      kbPerStream: ready ? round((after - before) / ready, 2) : Number.NaN,
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
 * Failover as it exists today: the primary answers 500 once, and the same
 * route is retried (Runnel: the worker's retry with a 0 ms backoff; direct: a
 * client that retries at once). Route failover comes with the control-plane issue.
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
