/** The results table (text) and the plot (hand-written SVG). */
import type { BenchResults } from "./main.js";

/** One line of the table. */
export interface Row {
  readonly scenario: string;
  readonly metric: string;
  readonly unit: string;
  readonly direct: number | null;
  readonly proxy: number | null;
  readonly runnel: number | null;
  /** Runnel − direct (latencies) or the figure the target is about. */
  readonly added: number | null;
  /** Runnel / direct. */
  readonly ratio: number | null;
  readonly target: string;
  /** Whether the target is met; null when there is no target on this row. */
  readonly met: boolean | null;
}

const r3 = (value: number) => Math.round(value * 1000) / 1000;
const ratio = (runnel: number, direct: number) => (direct > 0 ? Math.round((runnel / direct) * 100) / 100 : null);

export function rows(results: BenchResults): Row[] {
  const out: Row[] = [];
  for (const t of results.ttft) {
    for (const p of ["p50", "p90", "p99"] as const) {
      const direct = t.paths.direct[p];
      const runnel = t.paths.runnel[p];
      const added = r3(runnel - direct);
      const target = t.concurrency === 50 && p === "p50" ? "added ≤ 1.5 ms" : t.concurrency === 50 && p === "p99" ? "added ≤ 5 ms" : "";
      const limit = target === "" ? null : p === "p50" ? 1.5 : 5;
      out.push({
        scenario: `TTFT c=${t.concurrency} (${t.streams} streams of ${t.tokensPerStream} tok)`,
        metric: p,
        unit: "ms",
        direct,
        proxy: t.paths.proxy[p],
        runnel,
        added,
        ratio: ratio(runnel, direct),
        target,
        met: limit === null ? null : added <= limit,
      });
    }
  }
  const itl = results.itl;
  for (const p of ["p50", "p99"] as const) {
    const direct = itl.paths.direct.gaps[p];
    const runnel = itl.paths.runnel.gaps[p];
    const added = r3(runnel - direct);
    out.push({
      scenario: `inter-token, ${itl.streams} streams × 50 tok/s`,
      metric: p,
      unit: "ms",
      direct,
      proxy: itl.paths.proxy.gaps[p],
      runnel,
      added,
      ratio: ratio(runnel, direct),
      target: p === "p99" ? "added ≤ 2 ms" : "",
      met: p === "p99" ? added <= 2 : null,
    });
  }
  const tp = results.throughput.paths;
  out.push({
    scenario: `throughput, ${results.throughput.concurrency} streams`,
    metric: "tokens/s",
    unit: "tok/s",
    direct: tp.direct.tokensPerSecond,
    proxy: tp.proxy.tokensPerSecond,
    runnel: tp.runnel.tokensPerSecond,
    added: null,
    ratio: ratio(tp.runnel.tokensPerSecond, tp.direct.tokensPerSecond),
    target: "≥ 50,000 tok/s",
    met: tp.runnel.tokensPerSecond >= 50_000,
  });
  const cpuTotal = (record: Record<string, number>, names: readonly string[]) => r3(names.reduce((sum, name) => sum + (record[name] ?? 0), 0));
  out.push({
    scenario: "CPU per 1000 tokens (all servers)",
    metric: "CPU ms",
    unit: "ms",
    direct: cpuTotal(tp.direct.cpuMsPerThousandTokens, ["mock-provider"]),
    proxy: cpuTotal(tp.proxy.cpuMsPerThousandTokens, ["mock-provider", "proxy"]),
    runnel: cpuTotal(tp.runnel.cpuMsPerThousandTokens, ["mock-provider", "ingress", "worker", "control-plane", "nats-server"]),
    added: null,
    ratio: null,
    target: "",
    met: null,
  });
  for (const memory of results.memory) {
    const runnel = memory.paths.runnel;
    const scenario = `ingress memory, ${memory.transport === "sse" ? "idle SSE streams" : "idle WebSockets"} (${runnel?.opened ?? 0} open)`;
    out.push({
      scenario,
      metric: "RSS KB/stream",
      unit: "KB",
      direct: memory.paths.direct?.kbPerStream ?? null,
      proxy: memory.paths.proxy?.kbPerStream ?? null,
      runnel: runnel?.kbPerStream ?? null,
      added: null,
      ratio: null,
      target: "≤ 30 KB",
      met: runnel ? runnel.kbPerStream <= 30 : null,
    });
    if (runnel?.heapKbPerStream !== undefined) {
      out.push({
        scenario,
        metric: "heap KB/stream",
        unit: "KB",
        direct: memory.paths.direct?.heapKbPerStream ?? null,
        proxy: memory.paths.proxy?.heapKbPerStream ?? null,
        runnel: runnel.heapKbPerStream,
        added: null,
        ratio: null,
        target: "",
        met: null,
      });
    }
  }
  if (results.memory.every((m) => m.transport !== "ws")) {
    out.push({
      scenario: "ingress memory, idle WebSockets",
      metric: "not measured",
      unit: "",
      direct: null,
      proxy: null,
      runnel: null,
      added: null,
      ratio: null,
      target: "≤ 30 KB",
      met: null,
    });
  }
  const cancel = results.cancel.paths;
  for (const p of ["p50", "p99"] as const) {
    out.push({
      scenario: `cancel → provider socket closed (${results.cancel.samples})`,
      metric: p,
      unit: "ms",
      direct: cancel.direct[p],
      proxy: cancel.proxy[p],
      runnel: cancel.runnel[p],
      added: r3(cancel.runnel[p] - cancel.direct[p]),
      ratio: null,
      target: p === "p99" ? "≤ 20 ms" : "",
      met: p === "p99" ? cancel.runnel[p] <= 20 : null,
    });
  }
  const failover = results.failover.paths;
  for (const p of ["P50", "P99"] as const) {
    const key = `extra${p}` as const;
    out.push({
      scenario: `failover: extra TTFT, 500, then the next route (${results.failover.samples})`,
      metric: p.toLowerCase(),
      unit: "ms",
      direct: failover.direct[key],
      proxy: null,
      runnel: failover.runnel[key],
      added: null,
      ratio: null,
      target: p === "P50" ? "" : "≤ 5 ms",
      met: p === "P50" ? null : failover.runnel[key] <= 5,
    });
  }
  return out;
}

function cell(value: number | null | string): string {
  if (value === null) return "–";
  if (typeof value === "string") return value;
  if (!Number.isFinite(value)) return "n/a";
  return Math.abs(value) >= 1000 ? Math.round(value).toLocaleString("en-US") : String(Math.round(value * 100) / 100);
}

/** A Markdown table (also readable in a terminal). */
export function table(all: readonly Row[]): string {
  const header = ["scenario", "metric", "direct", "proxy", "runnel", "runnel − direct", "runnel / direct", "target", "met"];
  const lines = all.map((row) => [
    row.scenario,
    row.unit && row.metric !== "not measured" ? `${row.metric} (${row.unit})` : row.metric,
    cell(row.direct),
    cell(row.proxy),
    cell(row.runnel),
    cell(row.added),
    row.ratio === null ? "–" : `${row.ratio}×`,
    row.target || "–",
    row.met === null ? "–" : row.met ? "yes" : "NO",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? "").length)));
  const format = (cells: readonly string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(" | ")} |`;
  return [format(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...lines.map(format)].join("\n");
}

const escapeXml = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Horizontal bars: latency added over direct, by the proxy and by Runnel, per scenario (ms). */
export function svg(all: readonly Row[], title: string): string {
  const bars = all.filter((row) => row.unit === "ms" && row.direct !== null && row.runnel !== null && !row.scenario.startsWith("CPU"));
  const items = bars.map((row) => ({
    label: `${row.scenario} ${row.metric}`,
    proxy: row.proxy !== null && row.direct !== null ? row.proxy - row.direct : null,
    runnel: row.scenario.startsWith("failover") ? (row.runnel ?? 0) : (row.runnel ?? 0) - (row.direct ?? 0),
  }));
  const max = Math.max(1, ...items.flatMap((item) => [item.proxy ?? 0, item.runnel]).filter(Number.isFinite));
  const left = 380;
  const width = 1000;
  const plot = width - left - 90;
  const rowHeight = 30;
  const top = 60;
  const height = top + items.length * rowHeight + 40;
  // Log scale: the added latencies span 1 ms (failover) to over a second (c=500); on a linear axis most bars were invisible.
  const floor = 0.1;
  const decades = Math.log10(Math.max(max, 10 * floor) / floor);
  const scale = (value: number) => (value <= floor ? 0 : (Math.log10(value / floor) / decades) * plot);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12" role="img">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="22" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
    `<rect x="${left}" y="32" width="12" height="10" fill="#9aa5b1"/><text x="${left + 16}" y="41">pass-through proxy − direct</text>`,
    `<rect x="${left + 200}" y="32" width="12" height="10" fill="#d9480f"/><text x="${left + 216}" y="41">Runnel − direct (ms, log scale; failover: extra TTFT)</text>`,
  ];
  for (let tick = 1; tick <= max * 1.0001; tick *= 10) {
    const x = (left + scale(tick)).toFixed(1);
    parts.push(`<line x1="${x}" y1="${top - 4}" x2="${x}" y2="${height - 30}" stroke="#ccc" stroke-dasharray="3,3"/>`);
    parts.push(`<text x="${x}" y="${height - 12}" text-anchor="middle">${cell(tick)} ms</text>`);
  }
  items.forEach((item, index) => {
    const y = top + index * rowHeight;
    parts.push(`<text x="${left - 8}" y="${y + 15}" text-anchor="end">${escapeXml(item.label)}</text>`);
    if (item.proxy !== null && Number.isFinite(item.proxy)) {
      parts.push(`<rect x="${left}" y="${y + 2}" width="${scale(item.proxy).toFixed(1)}" height="10" fill="#9aa5b1"/>`);
    }
    if (Number.isFinite(item.runnel)) {
      parts.push(`<rect x="${left}" y="${y + 13}" width="${scale(item.runnel).toFixed(1)}" height="12" fill="#d9480f"/>`);
      parts.push(`<text x="${left + scale(item.runnel) + 4}" y="${y + 23}">${cell(item.runnel)}</text>`);
    }
  });
  parts.push(`<line x1="${left}" y1="${top - 4}" x2="${left}" y2="${height - 30}" stroke="#333"/>`);
  parts.push(`<text x="${left}" y="${height - 12}" text-anchor="middle">≤ ${floor}</text>`);
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}
