// Draws one real trace as a waterfall and screenshots it (docs/trace-failover.png):
// runs the stack with tracing exported over OTLP http/json to the tests'
// in-process receiver, streams one completion from a model whose first route
// fails (so it fails over), renders the spans the services exported, and
// takes the picture with the system's Chromium (never a downloaded browser).
// Run after a build: node scripts/trace-screenshot.mjs [output.png]
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { bootstrap, CHROMIUM_BIN, ROOT } from "./bootstrap.mjs";

const { natsServer } = bootstrap();
if (natsServer) process.env.NATS_SERVER_BIN = natsServer;
const { startNats, startStack } = await import(join(ROOT, "packages", "launcher", "dist", "index.js"));
const { startOtlpReceiver } = await import(join(ROOT, "test", "dist", "otlp-receiver.js"));

const output = process.argv[2] ?? join(ROOT, "docs", "trace-failover.png");
const receiver = await startOtlpReceiver();
const nats = await startNats({ forceLocal: true });
let stack;
try {
  stack = await startStack({
    natsUrl: nats.url,
    env: {
      RUNNEL_CONFIG: join(ROOT, "test", "fixtures", "runnel.telemetry.yaml"),
      LOG_LEVEL: "warn",
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.httpEndpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_BSP_SCHEDULE_DELAY: "100",
    },
  });
  const response = await fetch(`${stack.ingressUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "failover", stream: true, messages: [{ role: "user", content: "Tell me about rivers." }] }),
  });
  const streamId = response.headers.get("x-runnel-stream-id");
  await response.text();
  const spans = await receiver.waitFor((all) => {
    const server = all.find((span) => span.attributes["runnel.stream.id"] === streamId && span.kind === 2);
    return server && all.some((span) => span.traceId === server.traceId && span.events.some((event) => event.name === "runnel.stream.end"));
  });
  const server = spans.find((span) => span.attributes["runnel.stream.id"] === streamId && span.kind === 2);
  const trace = receiver.trace(server.traceId);
  const html = render(trace);
  writeFileSync(join(ROOT, ".runnel", "trace.html"), html);
  const browser = await chromium.launch({ executablePath: CHROMIUM_BIN, args: ["--no-sandbox"] });
  const page = await browser.newPage({ viewport: { width: 1500, height: 400 }, deviceScaleFactor: 1 });
  await page.setContent(html);
  await page.screenshot({ path: output, fullPage: true });
  await browser.close();
  process.stdout.write(`${trace.length} spans of trace ${server.traceId} → ${output}\n`);
} finally {
  await stack?.stop();
  await nats.stop();
  await receiver.close();
}

function render(trace) {
  const kinds = { 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer" };
  const colors = { "runnel-ingress": "#4e79a7", "runnel-worker": "#f28e2b", "runnel-control-plane": "#59a14f" };
  // Nanoseconds since the epoch as Numbers lose a few hundred nanoseconds: nothing at this scale.
  const start = Math.min(...trace.map((span) => Number(span.startTimeUnixNano)));
  const end = Math.max(...trace.map((span) => Number(span.endTimeUnixNano)));
  const total = (end - start) / 1e6;
  const ms = (nanos) => (Number(nanos) - start) / 1e6;
  const children = new Map();
  for (const span of trace) children.set(span.parentSpanId, [...(children.get(span.parentSpanId) ?? []), span]);
  const ids = new Set(trace.map((span) => span.spanId));
  const rows = [];
  const walk = (span, depth) => {
    rows.push({ span, depth });
    for (const child of (children.get(span.spanId) ?? []).sort((a, b) => (a.startTimeUnixNano < b.startTimeUnixNano ? -1 : 1))) walk(child, depth + 1);
  };
  for (const root of trace.filter((span) => !ids.has(span.parentSpanId))) walk(root, 0);
  const escapeHtml = (text) => String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const KEYS = [
    "http.route",
    "http.response.status_code",
    "messaging.destination.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "runnel.route.provider",
    "error.type",
  ];
  const body = rows
    .map(({ span, depth }) => {
      const left = (ms(span.startTimeUnixNano) / total) * 100;
      const width = Math.max(0.3, (Number(span.endTimeUnixNano - span.startTimeUnixNano) / 1e6 / total) * 100);
      const attributes = KEYS.filter((key) => span.attributes[key] !== undefined)
        .map((key) => `${key}=${Array.isArray(span.attributes[key]) ? span.attributes[key].join(",") : span.attributes[key]}`)
        .join("  ");
      // Events: a numbered mark on the bar's timeline, and a line with the same number under the span's name.
      const marks = span.events
        .map((event, index) => `<div class="event" style="left:${(ms(event.timeUnixNano) / total) * 100}%"><span>${index + 1}</span></div>`)
        .join("");
      const notes = span.events
        .map((event, index) => {
          const detail = Object.entries(event.attributes)
            .filter(([, value]) => value !== false)
            .map(
              ([key, value]) => `${key.replace(/^(runnel|gen_ai)\./, "")}=${typeof value === "number" && !Number.isInteger(value) ? value.toFixed(3) : value}`,
            )
            .join(" ");
          return `<div class="note"><b>${index + 1}</b> ${escapeHtml(event.name)} <i>at ${ms(event.timeUnixNano).toFixed(1)} ms</i> ${escapeHtml(detail)}</div>`;
        })
        .join("");
      const failed = span.statusCode === 2 ? " failed" : "";
      return `<div class="row"><div class="name" style="padding-left:${depth * 14 + 6}px"><b style="color:${colors[span.service] ?? "#777"}">${escapeHtml(span.service.replace("runnel-", ""))}</b> ${escapeHtml(span.name)} <small>${kinds[span.kind] ?? ""}</small><div class="attrs">${escapeHtml(attributes)}</div>${notes}</div><div class="lane"><div class="bar${failed}" style="left:${left}%;width:${width}%;background:${colors[span.service] ?? "#777"}"></div><div class="dur" style="left:calc(${left + width}% + 4px)">${(Number(span.endTimeUnixNano - span.startTimeUnixNano) / 1e6).toFixed(1)} ms</div>${marks}</div></div>`;
    })
    .join("\n");
  return `<!doctype html><html><head><meta charset="utf-8"><style>
body{font:13px system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:16px;margin:0 0 4px}.sub{color:#666;margin-bottom:12px}
.row{display:flex;border-top:1px solid #eee;min-height:46px}
.name{width:620px;flex:none;padding-top:6px;white-space:nowrap;overflow:hidden}
.name small{color:#888}.attrs{color:#555;font-size:11px;white-space:normal;margin-top:2px}
.lane{position:relative;flex:1;margin-right:90px}
.bar{position:absolute;top:10px;height:14px;border-radius:2px;opacity:.85}
.bar.failed{outline:2px solid #e15759}
.dur{position:absolute;top:9px;font-size:11px;color:#555;white-space:nowrap}
.event{position:absolute;top:6px;height:22px;border-left:2px solid #222}
.event span{position:absolute;left:2px;top:12px;font-size:10px;font-weight:bold}
.note{font-size:11px;color:#222;white-space:normal;margin-top:2px}.note i{color:#777;font-style:normal}
.event i{color:#666;font-style:normal}
</style></head><body>
<h1>One streamed request, failed over to a second route: trace ${escapeHtml(trace[0].traceId)}</h1>
<div class="sub">${trace.length} spans exported over OTLP by the ingress, worker and control plane of a local stack; ${total.toFixed(1)} ms end to end. Bars: span duration on one timeline; marks: span events. Rendered by scripts/trace-screenshot.mjs.</div>
${body}
</body></html>`;
}
