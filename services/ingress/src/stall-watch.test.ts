import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { StreamPhase, StreamState } from "@runnel/shared";
import { judgeQuietStream, type StallPolicy } from "./stall-watch.js";

const policy: StallPolicy = { quietMs: 30_000, jobMaxAgeMs: 300_000, workerLostMs: 60_000 };
const record = (phase: StreamPhase, updatedAtMs: number): StreamState => ({ ...StreamState.fromPartial({ streamId: "s", owner: "w1" }), phase, updatedAtMs });

describe("judgeQuietStream", () => {
  test("a job still waiting in the queue is left alone until the queue would have dropped it", () => {
    assert.deepEqual(judgeQuietStream(undefined, 0, 299_000, policy), { end: false });
    const verdict = judgeQuietStream(undefined, 0, 301_000, policy);
    assert.equal(verdict.end && verdict.code, "RUNNEL_ERR_OVERLOADED");
  });

  test("a running stream whose worker refreshes its record is never ended, however long it is quiet", () => {
    assert.deepEqual(judgeQuietStream(record(StreamPhase.STREAM_PHASE_RUNNING, 10_000_000 - 59_000), 0, 10_000_000, policy), { end: false });
  });

  test("a running stream whose record went stale has lost its worker", () => {
    const verdict = judgeQuietStream(record(StreamPhase.STREAM_PHASE_RUNNING, 1_000), 0, 62_000, policy);
    assert.equal(verdict.end, true);
    assert.equal(verdict.end && verdict.code, "RUNNEL_ERR_WORKER_LOST");
    assert.match(verdict.end ? verdict.message : "", /w1/);
  });

  test("an ended stream whose terminal event never arrived is ended as a gap", () => {
    for (const phase of [StreamPhase.STREAM_PHASE_DONE, StreamPhase.STREAM_PHASE_FAILED, StreamPhase.STREAM_PHASE_CANCELLED]) {
      const verdict = judgeQuietStream(record(phase, 100), 0, 200, policy);
      assert.equal(verdict.end && verdict.code, "RUNNEL_ERR_EVENT_GAP");
    }
  });
});
