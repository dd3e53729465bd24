import assert from "node:assert/strict";
import { test } from "node:test";
import type { TraceSpan } from "@runnel/console";
import { layoutWaterfall } from "./waterfall.js";

const span = (spanId: string, parentId: string | null, service: string, startUs: number, durationUs: number): TraceSpan => ({
  spanId,
  parentId,
  service,
  name: spanId,
  startUs,
  durationUs,
  kind: "internal",
  error: false,
  attributes: {},
  events: [],
});

test("spans come in tree order, children by start time, placed on the trace's axis", () => {
  const waterfall = layoutWaterfall([
    span("provider", "worker", "runnel-worker", 400, 500),
    span("server", null, "runnel-ingress", 0, 1_000),
    span("publish", "server", "runnel-ingress", 100, 50),
    span("worker", "publish", "runnel-worker", 300, 700),
    // A parent the backend does not have: shown as a root.
    span("orphan", "missing", "runnel-control-plane", 200, 10),
  ]);
  assert.deepEqual(
    waterfall.rows.map((row) => [row.span.spanId, row.depth]),
    [
      ["server", 0],
      ["publish", 1],
      ["worker", 2],
      ["provider", 3],
      ["orphan", 0],
    ],
  );
  assert.equal(waterfall.durationUs, 1_000);
  assert.equal(waterfall.rows[3]?.offset, 0.4);
  assert.equal(waterfall.rows[3]?.width, 0.5);
  assert.deepEqual(waterfall.services, ["runnel-ingress", "runnel-worker", "runnel-control-plane"]);
});

test("no spans, no rows", () => {
  assert.deepEqual(layoutWaterfall([]).rows, []);
});
