import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import type { NatsConnection } from "@nats-io/nats-core";
import { coalesceWrites } from "./nats-writes.js";

/** A stand-in for nats.js's protocol handler: an outbound buffer, the write it triggers, and sendCommand as nats.js 3 has it. */
function fakeConnection(pendingLimit = 100) {
  const writes: string[] = [];
  let outbound = "";
  const protocol = {
    pendingLimit,
    outbound: { size: () => outbound.length },
    flushPending() {
      if (outbound) writes.push(outbound);
      outbound = "";
    },
    sendCommand(command: string) {
      const empty = outbound.length === 0;
      outbound += command;
      if (empty) queueMicrotask(() => protocol.flushPending());
      else if (outbound.length >= protocol.pendingLimit) protocol.flushPending();
    },
  };
  const send = (command: string) => protocol.sendCommand(command);
  return { nc: { protocol } as unknown as NatsConnection, send, writes };
}

/** The end of this turn: nats.js asks for the flush in a microtask, coalesceWrites writes in the turn's setImmediate. */
async function endOfTurn(): Promise<void> {
  await Promise.resolve();
  await nextTurn();
}

describe("coalesceWrites", () => {
  test("commands sent during one turn go out in one write, in order, at the end of the turn", async () => {
    const { nc, send, writes } = fakeConnection();
    assert.equal(coalesceWrites(nc, 60_000), true);
    send("a;");
    await Promise.resolve(); // a microtask checkpoint (another socket read) in the same turn
    send("b;");
    send("c;");
    assert.deepEqual(writes, []);
    await endOfTurn();
    assert.deepEqual(writes, ["a;b;c;"]);
    send("d;");
    await endOfTurn();
    assert.deepEqual(writes, ["a;b;c;", "d;"]);
  });

  test("a buffer past nats.js's limit is written at once", async () => {
    const { nc, send, writes } = fakeConnection(10);
    coalesceWrites(nc, 60_000);
    send("12345");
    await Promise.resolve();
    send("67890");
    assert.deepEqual(writes, ["1234567890"]);
    send("x");
    await endOfTurn();
    assert.deepEqual(writes, ["1234567890", "x"]);
  });

  test("in a long turn, a command more than the bound after the oldest waiting one writes them all", async () => {
    const { nc, send, writes } = fakeConnection();
    coalesceWrites(nc, 0.5);
    send("a;");
    await Promise.resolve(); // nats.js asks for the flush in a microtask
    const started = performance.now();
    while (performance.now() - started < 1) {
      // a turn kept busy for 1 ms
    }
    send("b;");
    assert.deepEqual(writes, ["a;b;"]);
    send("c;");
    await endOfTurn();
    assert.deepEqual(writes, ["a;b;", "c;"]);
  });

  test("applying it twice wraps once", async () => {
    const { nc, send, writes } = fakeConnection();
    assert.equal(coalesceWrites(nc, 60_000), true);
    assert.equal(coalesceWrites(nc, 60_000), true);
    send("a;");
    send("b;");
    await endOfTurn();
    await endOfTurn();
    assert.deepEqual(writes, ["a;b;"]);
  });

  test("a connection without the expected internals is left as it is", () => {
    assert.equal(coalesceWrites({} as NatsConnection), false);
    assert.equal(coalesceWrites({ protocol: { flushPending() {}, outbound: { size: () => 0 }, pendingLimit: 1 } } as unknown as NatsConnection), false);
  });
});
