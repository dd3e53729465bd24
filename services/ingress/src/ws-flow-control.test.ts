import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StreamReader } from "./stream-reader.js";
import { SocketFlowControl } from "./ws-flow-control.js";

/** A reader that records pause and resume; `onResume` runs inside resume (a reader that sends at once). */
function fakeReader(name: string, log: string[], onResume: () => void = () => {}): StreamReader {
  return {
    pause: () => log.push(`pause ${name}`),
    resume: () => {
      log.push(`resume ${name}`);
      onResume();
    },
  } as unknown as StreamReader;
}

const until = async (what: string, check: () => boolean, timeoutMs = 10_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`not ${what} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

describe("SocketFlowControl", () => {
  test("pauses every reader past the limit, resumes them in turn once the buffer is down to half, from a rotating start", async () => {
    const socket = { bufferedAmount: 0 };
    const log: string[] = [];
    const readers = [fakeReader("a", log), fakeReader("b", log), undefined, fakeReader("c", log)];
    let drained = 0;
    const flow = new SocketFlowControl({
      socket,
      maxBufferBytes: 1_000,
      stuckClientTimeoutMs: 60_000,
      readers: () => readers,
      onCongested: () => log.push("congested"),
      onDrained: () => {
        drained += 1;
      },
      onStuck: () => assert.fail("not stuck"),
    });
    flow.sent();
    assert.deepEqual(log, [], "under the limit: nothing");
    socket.bufferedAmount = 1_001;
    flow.sent();
    assert.equal(flow.congested, true);
    assert.deepEqual(log, ["pause a", "pause b", "pause c", "congested"]);
    const late = fakeReader("late", log);
    flow.admit(late);
    assert.equal(log.at(-1), "pause late", "a reader starting on a congested socket waits too");
    log.length = 0;
    socket.bufferedAmount = 600;
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(flow.congested, true, "above half the limit it stays congested");
    socket.bufferedAmount = 500;
    await until("drained", () => !flow.congested);
    assert.equal(drained, 1);
    assert.deepEqual(log, ["resume a", "resume b", "resume c"]);
    log.length = 0;
    socket.bufferedAmount = 2_000;
    flow.sent();
    socket.bufferedAmount = 0;
    await until("drained again", () => !flow.congested);
    assert.deepEqual(log.slice(-3), ["resume b", "resume c", "resume a"], "the next round starts one further");
    flow.stop();
  });

  test("a reader that congests the socket as it resumes stops the round", async () => {
    const socket = { bufferedAmount: 5_000 };
    const log: string[] = [];
    let flow: SocketFlowControl | undefined;
    const readers = [
      fakeReader("a", log, () => {
        socket.bufferedAmount = 5_000;
        flow?.sent();
      }),
      fakeReader("b", log),
    ];
    flow = new SocketFlowControl({
      socket,
      maxBufferBytes: 1_000,
      stuckClientTimeoutMs: 60_000,
      readers: () => readers,
      onCongested: () => {},
      onDrained: () => {},
      onStuck: () => {},
    });
    flow.sent();
    log.length = 0;
    socket.bufferedAmount = 0;
    await until("a resumed", () => log.includes("resume a"));
    assert.equal(flow.congested, true);
    assert.deepEqual(
      log.filter((line) => line.startsWith("resume")),
      ["resume a"],
      "b waits for the next drain",
    );
    flow.stop();
  });

  test("a socket whose buffer does not shrink for the stuck timeout is reported once", async () => {
    const socket = { bufferedAmount: 5_000 };
    const stuck: number[] = [];
    const flow = new SocketFlowControl({
      socket,
      maxBufferBytes: 1_000,
      stuckClientTimeoutMs: 200,
      readers: () => [],
      onCongested: () => {},
      onDrained: () => assert.fail("never drains"),
      onStuck: (buffered) => stuck.push(buffered),
    });
    flow.sent();
    await until("stuck", () => stuck.length > 0);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(stuck, [5_000]);
  });
});
