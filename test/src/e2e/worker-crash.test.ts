/**
 * A worker that dies mid-stream must not leave its client hanging: the
 * ingress notices the stream's record is no longer refreshed and ends the
 * stream with an explicit RUNNEL_ERR_WORKER_LOST error event.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { chatBody, type E2E, parseSse, startE2E } from "./helpers.js";

describe("a worker killed mid-stream", () => {
  let e2e: E2E;
  before(async () => {
    e2e = await startE2E("worker-crash");
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
  });

  test("ends the client's stream with RUNNEL_ERR_WORKER_LOST, not a hang", { timeout: 60_000 }, async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("long", { stream: true }),
    });
    assert.equal(response.status, 200);
    const reader = response.body?.getReader();
    assert.ok(reader);
    const decoder = new TextDecoder();
    let text = "";
    while (!text.includes("id: 5\n")) {
      const { value, done } = await reader.read();
      assert.equal(done, false, "the stream ended before the worker was killed");
      text += decoder.decode(value, { stream: true });
    }
    const killedAt = Date.now();
    e2e.stack.services.get("worker")?.process.kill("SIGKILL");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    const elapsed = Date.now() - killedAt;
    const { events } = parseSse(text);
    const last = JSON.parse(events.at(-1)?.data ?? "{}") as { error?: { code: string } };
    assert.equal(last.error?.code, "RUNNEL_ERR_WORKER_LOST");
    assert.ok(events.every((event) => event.data !== "[DONE]"));
    // Records are refreshed every 2/3 s (jobAckWait 2 s); lost after 4 s stale, checked when quiet 2 s.
    assert.ok(elapsed < 15_000, `ended ${elapsed} ms after the kill`);
  });
});
