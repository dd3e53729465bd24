/**
 * The write coalescing of connectNats on a real nats-server: the pinned
 * nats.js has the internals it relies on, and messages published from many
 * turns and callbacks all arrive, in order.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import { type NatsHandle, startNats } from "@runnel/launcher";
import { coalesceWrites, connectNats, type NatsConnection } from "@runnel/shared";

describe("connectNats writes once per turn", () => {
  let nats: NatsHandle;
  let publisher: NatsConnection;
  let subscriber: NatsConnection;

  before(async () => {
    nats = await startNats();
    publisher = await connectNats(nats.url, "writes-publisher");
    subscriber = await connectNats(nats.url, "writes-subscriber");
  });
  after(async () => {
    await publisher?.close();
    await subscriber?.close();
    await nats?.stop();
  });

  test("the pinned nats.js exposes what coalesceWrites needs", () => {
    assert.equal(coalesceWrites(publisher), true, "connectNats could not coalesce writes: nats.js internals changed");
  });

  test("every message arrives, in order, across turns, microtasks and a buffer past the limit", async () => {
    const received: number[] = [];
    const total = 5_000;
    const done = new Promise<void>((resolve) => {
      subscriber.subscribe("writes.test", {
        callback: (_error, message) => {
          received.push(Number(new TextDecoder().decode(message.data)));
          if (received.length === total) resolve();
        },
      });
    });
    await subscriber.flush();
    const payload = (n: number) => new TextEncoder().encode(String(n).padStart(64, "0"));
    for (let n = 0; n < total; n++) {
      publisher.publish("writes.test", payload(n));
      if (n % 700 === 0) await nextTurn();
      else if (n % 90 === 0) await Promise.resolve();
    }
    await publisher.flush();
    await done;
    assert.deepEqual(
      received,
      Array.from({ length: total }, (_, n) => n),
    );
  });
});
