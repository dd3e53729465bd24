import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { FailoverMode, FinishReason, type StreamEvent, StreamPhase, StreamState } from "@runnel/shared";
import { ConsoleBoard } from "./console-board.js";
import { inspectorAccess } from "./routes/console-api.js";
import { pickTrace, toSpans } from "./trace-query.js";

const T0 = 1_800_000_000_000;

function state(changes: Partial<StreamState>): StreamState {
  return { ...StreamState.fromPartial({ streamId: "stream-one", model: "chat", keyId: "team-a", createdAtMs: T0 }), ...changes };
}

function event(seq: number, body: StreamEvent["event"], streamId = "stream-one"): StreamEvent {
  return { streamId, seq, epoch: 0, event: body };
}

const delta = (seq: number, streamId = "stream-one") => event(seq, { $case: "textDelta", value: { text: "x" } }, streamId);

describe("the console board", () => {
  test("a stream seen from its start: claim, attempt, first token, failover, end; tokens, TTFT and rate", () => {
    const board = new ConsoleBoard();
    board.record(state({ phase: StreamPhase.STREAM_PHASE_RUNNING, owner: "worker-1", provider: "primary" }), T0 + 5, true, T0 + 5);
    board.event(event(1, { $case: "started", value: { provider: "primary", model: "up-a", attempt: 1 } }), T0 + 10);
    for (let seq = 2; seq <= 11; seq += 1) board.event(delta(seq), T0 + 100 + (seq - 2) * 10);
    board.event(
      event(12, {
        $case: "failover",
        value: {
          mode: FailoverMode.FAILOVER_MODE_CONTINUE,
          from: { provider: "primary", model: "up-a" },
          to: { provider: "backup", model: "up-b" },
          reasonCode: "RUNNEL_ERR_PROVIDER_STREAM_CUT",
          reason: "cut",
          takeover: false,
        },
      }),
      T0 + 200,
    );
    const running = board.tick(T0 + 250).upserts[0];
    assert.equal(running?.phase, "running");
    assert.equal(running?.tokens, 10);
    assert.equal(running?.ttftMs, 100);
    assert.equal(running?.provider, "backup");
    assert.equal(running?.route, "up-b");
    assert.equal(running?.key, "team-a");
    board.event(event(13, { $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP, usage: undefined } }), T0 + 300);
    const ended = board.tick(T0 + 310).upserts[0];
    assert.equal(ended?.phase, "done");
    assert.equal(ended?.outcome, "done (stop)");
    assert.equal(ended?.endedAtMs, T0 + 300);
    // 10 tokens from +100 to +190 ms: 9 intervals in 90 ms.
    assert.equal(ended?.rate, 100);
    assert.deepEqual(
      board.timeline("stream-one")?.map((entry) => entry.kind),
      ["queued", "claimed", "attempt", "first_token", "failover", "end"],
    );
    assert.match(board.timeline("stream-one")?.[4]?.text ?? "", /continue: primary\/up-a failed \(RUNNEL_ERR_PROVIDER_STREAM_CUT\) → backup\/up-b/);
    // Nothing changed: nothing sent.
    assert.deepEqual(board.tick(T0 + 320), { upserts: [], removes: [] });
    // Past the linger time the finished stream goes.
    assert.deepEqual(board.tick(T0 + 300 + board.options.lingerMs + 1).removes, ["stream-one"]);
    assert.equal(board.size, 0);
  });

  test("records written before the inspector joined: old finished ones are left out, running ones are partial", () => {
    const board = new ConsoleBoard({ lingerMs: 10_000 });
    board.record(state({ streamId: "old-done", phase: StreamPhase.STREAM_PHASE_DONE, updatedAtMs: T0 }), T0, false, T0 + 60_000);
    board.record(state({ streamId: "running-a", phase: StreamPhase.STREAM_PHASE_RUNNING, lastSeq: 41, owner: "worker-2" }), T0 + 50_000, false, T0 + 60_000);
    board.event(delta(42, "running-a"), T0 + 60_001);
    assert.equal(board.row("old-done"), undefined);
    const row = board.row("running-a");
    assert.equal(row?.partial, true);
    assert.equal(row?.tokens, 41);
    assert.equal(row?.ttftMs, null);
    // What the record says: when the job was queued, and who claimed it; what happened between is not known.
    assert.deepEqual(
      board.timeline("running-a")?.map((entry) => [entry.kind, entry.atMs]),
      [
        ["queued", T0],
        ["claimed", T0 + 50_000],
      ],
    );
  });

  test("a cancel ends the stream as cancelled with its reason; the transport shows when it is known", () => {
    const board = new ConsoleBoard();
    board.record(state({ phase: StreamPhase.STREAM_PHASE_RUNNING, owner: "worker-1" }), T0, true, T0);
    board.transport("stream-one", "websocket");
    board.cancelRequested("stream-one", "ops", T0 + 10);
    board.event(event(3, { $case: "error", value: { code: "RUNNEL_ERR_CANCELLED", message: "cancelled", retryable: false, httpStatus: 499 } }), T0 + 20);
    board.record(state({ phase: StreamPhase.STREAM_PHASE_CANCELLED, owner: "worker-1", cancelReason: "cancelled from the console" }), T0 + 25, true, T0 + 25);
    const row = board.tick(T0 + 30).upserts[0];
    assert.equal(row?.phase, "cancelled");
    assert.equal(row?.outcome, "cancelled: cancelled from the console");
    assert.equal(row?.transport, "websocket");
    assert.ok(board.timeline("stream-one")?.some((entry) => entry.kind === "cancel" && entry.text.includes("ops")));
  });

  test("memory is bounded: streams beyond the most tracked are counted, not kept; timelines keep their end", () => {
    const board = new ConsoleBoard({ maxStreams: 2, maxTimeline: 3 });
    for (const id of ["stream-a1", "stream-b2", "stream-c3"]) board.record(state({ streamId: id, phase: StreamPhase.STREAM_PHASE_RUNNING }), T0, true, T0);
    assert.equal(board.size, 2);
    assert.equal(board.overflow, 1);
    for (let attempt = 1; attempt <= 5; attempt += 1) {
      board.event(event(attempt, { $case: "started", value: { provider: "p", model: "m", attempt } }, "stream-a1"), T0 + attempt);
    }
    board.event(
      event(6, { $case: "error", value: { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", message: "down", retryable: true, httpStatus: 502 } }, "stream-a1"),
      T0 + 9,
    );
    const timeline = board.timeline("stream-a1") ?? [];
    assert.equal(timeline.length, 3);
    assert.equal(timeline.at(-1)?.kind, "end");
    assert.equal(board.row("stream-a1")?.outcome, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
  });
});

describe("who may use the inspector", () => {
  test("auth on: admin keys, or disabled when none is configured; auth off: disabled unless the config opens it", () => {
    assert.deepEqual(
      [inspectorAccess({ known: true, open: false, adminKeys: 1 }, false).enabled, inspectorAccess({ known: true, open: false, adminKeys: 1 }, false).access],
      [true, "admin-key"],
    );
    assert.equal(inspectorAccess({ known: true, open: false, adminKeys: 0 }, true).enabled, false);
    assert.match(inspectorAccess({ known: true, open: false, adminKeys: 0 }, true).reason, /admin: true/);
    assert.equal(inspectorAccess({ known: true, open: true, adminKeys: 0 }, false).enabled, false);
    assert.deepEqual(
      [inspectorAccess({ known: true, open: true, adminKeys: 0 }, true).enabled, inspectorAccess({ known: true, open: true, adminKeys: 0 }, true).access],
      [true, "open"],
    );
    assert.equal(inspectorAccess({ known: false, open: false, adminKeys: 0 }, true).enabled, false);
  });
});

describe("a stream's trace from Jaeger's query API", () => {
  const span = (spanID: string, parent: string | undefined, processID: string, startTime: number, tags: { key: string; value: unknown }[]) => ({
    traceID: "t1",
    spanID,
    operationName: `op-${spanID}`,
    references: parent ? [{ refType: "CHILD_OF", spanID: parent }] : [],
    startTime,
    duration: 100,
    tags,
    logs: [{ timestamp: startTime + 5, fields: [{ key: "event", value: "runnel.first_byte" }] }],
    processID,
  });
  const trace = {
    traceID: "t1",
    processes: { p1: { serviceName: "runnel-ingress" }, p2: { serviceName: "runnel-worker" } },
    spans: [
      span("b", "a", "p2", 20, [
        { key: "gen_ai.request.model", value: "up-a" },
        { key: "otel.status_code", value: "ERROR" },
        { key: "secret.prompt", value: "never shown" },
      ]),
      span("a", undefined, "p1", 10, [
        { key: "runnel.stream.id", value: "stream-one" },
        { key: "span.kind", value: "server" },
        { key: "http.route", value: "/v1/chat/completions" },
      ]),
    ],
  };

  test("the trace whose request span carries the stream id is the one; its spans keep a few attributes", () => {
    const resumeOnly = { ...trace, traceID: "t0", spans: [span("z", undefined, "p1", 1, [{ key: "runnel.stream.id", value: "stream-one" }])] };
    assert.equal(pickTrace([resumeOnly, trace], "stream-one")?.traceID, "t1");
    assert.equal(pickTrace([trace], "another-stream"), undefined);
    const spans = toSpans(trace);
    assert.deepEqual(
      spans.map((one) => [one.spanId, one.parentId, one.service, one.kind, one.error]),
      [
        ["a", null, "runnel-ingress", "server", false],
        ["b", "a", "runnel-worker", "internal", true],
      ],
    );
    assert.deepEqual(spans[1]?.attributes, { "gen_ai.request.model": "up-a" });
    assert.deepEqual(spans[0]?.events, [{ atUs: 15, name: "runnel.first_byte" }]);
  });
});
