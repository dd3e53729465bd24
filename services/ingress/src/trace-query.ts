/**
 * Finds a stream's trace in the trace backend and turns it into the spans
 * the inspector draws. The backend is Jaeger's query API
 * (`RUNNEL_TRACE_QUERY_URL`; `npm start` runs Jaeger, and Tempo and others
 * serve the same API): the stream's request span carries `runnel.stream.id`,
 * so a tag search on the ingress's service finds its trace, which holds the
 * whole path (ingress → bus → worker → provider, control plane included).
 *
 *   GET {base}/api/traces?service=runnel-ingress&tags={"runnel.stream.id":"<id>"}&start=<2 h ago, µs>&limit=20
 */
import type { StreamTrace, TraceSpan } from "@runnel/console";
import { z } from "zod";

/** The service whose spans carry the stream id on the request that opened it. */
export const TRACE_SERVICE = "runnel-ingress";
/** Most spans drawn of one trace. */
export const MAX_SPANS = 500;
/** How far back a stream's trace is looked for. */
const LOOKBACK_MS = 2 * 60 * 60_000;
/** Largest answer read from the backend. */
const MAX_ANSWER_BYTES = 8 * 1024 * 1024;

/** Attributes worth showing on a span (the rest stay in the trace viewer). */
const SHOWN =
  /^(http\.(route|request\.method|response\.status_code)|url\.path|messaging\.(destination\.name|operation\.name)|gen_ai\.|runnel\.|error\.type|rpc\.(method|service)|server\.address)/;

const Tag = z.object({ key: z.string(), type: z.string().optional(), value: z.unknown() });
const Span = z.object({
  traceID: z.string(),
  spanID: z.string(),
  operationName: z.string(),
  references: z.array(z.object({ refType: z.string(), spanID: z.string() })).default([]),
  startTime: z.number(),
  duration: z.number(),
  tags: z.array(Tag).default([]),
  logs: z.array(z.object({ timestamp: z.number(), fields: z.array(Tag).default([]) })).default([]),
  processID: z.string(),
});
const Trace = z.object({
  traceID: z.string(),
  spans: z.array(Span),
  processes: z.record(z.string(), z.object({ serviceName: z.string() })),
});
const Answer = z.object({ data: z.array(Trace).nullable().default([]) });

type JaegerTrace = z.infer<typeof Trace>;

function tagValue(tags: readonly z.infer<typeof Tag>[], key: string): string | undefined {
  const found = tags.find((tag) => tag.key === key);
  return found === undefined ? undefined : String(found.value);
}

/** The trace of `streamId` among the backend's answers: the one whose request span (the ingress's server span) carries the id, earliest first. */
export function pickTrace(traces: readonly JaegerTrace[], streamId: string): JaegerTrace | undefined {
  const carries = (trace: JaegerTrace) =>
    trace.spans.some((span) => tagValue(span.tags, "runnel.stream.id") === streamId && tagValue(span.tags, "span.kind") === "server");
  const start = (trace: JaegerTrace) => Math.min(...trace.spans.map((span) => span.startTime));
  return [...traces].filter(carries).sort((a, b) => start(a) - start(b))[0];
}

/** A Jaeger trace as the inspector's spans (at most MAX_SPANS, earliest first). */
export function toSpans(trace: JaegerTrace): TraceSpan[] {
  return [...trace.spans]
    .sort((a, b) => a.startTime - b.startTime)
    .slice(0, MAX_SPANS)
    .map((span) => {
      const attributes: Record<string, string> = {};
      for (const tag of span.tags) if (SHOWN.test(tag.key)) attributes[tag.key] = String(tag.value);
      const status = tagValue(span.tags, "otel.status_code");
      return {
        spanId: span.spanID,
        parentId: span.references.find((reference) => reference.refType === "CHILD_OF")?.spanID ?? null,
        service: trace.processes[span.processID]?.serviceName ?? "?",
        name: span.operationName,
        startUs: span.startTime,
        durationUs: span.duration,
        kind: tagValue(span.tags, "span.kind") ?? "internal",
        error: tagValue(span.tags, "error") === "true" || status === "ERROR",
        attributes,
        events: span.logs.map((log) => ({ atUs: log.timestamp, name: tagValue(log.fields, "event") ?? "event" })),
      };
    });
}

export type TraceLookup = { readonly found: true; readonly trace: StreamTrace } | { readonly found: false; readonly reason: string };

/**
 * Looks the stream's trace up. Not found is an answer (its spans are
 * exported as they end, so a running stream has none yet); a backend that
 * does not answer within `timeoutMs` throws.
 */
export async function findStreamTrace(baseUrl: string, streamId: string, link: string | undefined, timeoutMs = 3_000): Promise<TraceLookup> {
  const url = new URL("/api/traces", baseUrl);
  url.searchParams.set("service", TRACE_SERVICE);
  url.searchParams.set("tags", JSON.stringify({ "runnel.stream.id": streamId }));
  // Microseconds since the epoch: streams' records and events last far less than this.
  url.searchParams.set("start", String((Date.now() - LOOKBACK_MS) * 1_000));
  url.searchParams.set("limit", "20");
  const response = await fetch(url, { headers: { accept: "application/json" }, signal: AbortSignal.timeout(timeoutMs) });
  if (response.status === 404) {
    await response.body?.cancel();
    return { found: false, reason: "the trace backend has no such service yet" };
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new Error(`the trace backend answered ${response.status}`);
  }
  const length = Number(response.headers.get("content-length") ?? 0);
  if (length > MAX_ANSWER_BYTES) {
    await response.body?.cancel();
    throw new Error(`the trace backend's answer is too large (${length} bytes)`);
  }
  const text = await response.text();
  if (text.length > MAX_ANSWER_BYTES) throw new Error("the trace backend's answer is too large");
  const parsed = Answer.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`the trace backend's answer is not Jaeger's format: ${parsed.error.issues[0]?.message ?? ""}`);
  const trace = pickTrace(parsed.data.data ?? [], streamId);
  if (!trace) return { found: false, reason: "no trace of this stream yet (spans are exported when they end)" };
  return {
    found: true,
    trace: { traceId: trace.traceID, link: link ? link.replaceAll("{traceId}", trace.traceID) : null, spans: toSpans(trace), pending: null },
  };
}
