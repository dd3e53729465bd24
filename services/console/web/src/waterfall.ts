/**
 * A trace as a waterfall: spans in tree order (each under its parent, by
 * start time), each placed on the trace's time axis. Pure; the page draws
 * the rows.
 */
import type { TraceSpan } from "@runnel/console";

export interface WaterfallRow {
  readonly span: TraceSpan;
  readonly depth: number;
  /** Start and width as fractions of the whole trace, 0..1. */
  readonly offset: number;
  readonly width: number;
}

export interface Waterfall {
  readonly rows: readonly WaterfallRow[];
  readonly startUs: number;
  readonly durationUs: number;
  readonly services: readonly string[];
}

export function layoutWaterfall(spans: readonly TraceSpan[]): Waterfall {
  if (spans.length === 0) return { rows: [], startUs: 0, durationUs: 0, services: [] };
  const startUs = Math.min(...spans.map((span) => span.startUs));
  const endUs = Math.max(...spans.map((span) => span.startUs + span.durationUs));
  const durationUs = Math.max(1, endUs - startUs);
  const ids = new Set(spans.map((span) => span.spanId));
  const children = new Map<string | null, TraceSpan[]>();
  for (const span of spans) {
    const parent = span.parentId !== null && ids.has(span.parentId) ? span.parentId : null;
    children.set(parent, [...(children.get(parent) ?? []), span]);
  }
  for (const list of children.values()) list.sort((a, b) => a.startUs - b.startUs || a.name.localeCompare(b.name));
  const rows: WaterfallRow[] = [];
  const walk = (span: TraceSpan, depth: number, seen: Set<string>) => {
    if (seen.has(span.spanId)) return;
    seen.add(span.spanId);
    rows.push({ span, depth, offset: (span.startUs - startUs) / durationUs, width: Math.max(span.durationUs / durationUs, 0.002) });
    for (const child of children.get(span.spanId) ?? []) walk(child, depth + 1, seen);
  };
  const seen = new Set<string>();
  for (const root of children.get(null) ?? []) walk(root, 0, seen);
  const services = [...new Set(rows.map((row) => row.span.service))];
  return { rows, startUs, durationUs, services };
}
