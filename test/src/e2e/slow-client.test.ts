/**
 * Clients slower than the token rate. Ingress memory must stay bounded
 * whatever the client does: a client that falls behind is paused and later
 * catches up from the replay log with nothing lost; a client that reads
 * nothing at all is cut off after `ingress.stuckClientTimeout` (3 s in the
 * e2e config) and its provider request is cancelled.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { chatBody, type E2E, openPaused, parseSse, readChunkedResponse, rssKiB, startE2E, waitForMockRequest } from "./helpers.js";

describe("a client slower than the stream", () => {
  let e2e: E2E;
  before(async () => {
    e2e = await startE2E("slow-client");
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
  });

  test("falls behind, then catches up from the log: every token, in order, with ingress memory bounded", { timeout: 90_000 }, async () => {
    const ingressPid = e2e.stack.services.get("ingress")?.process.pid ?? 0;
    const before = rssKiB(ingressPid);
    const socket = await openPaused(e2e.stack.ingressUrl, "/v1/chat/completions", chatBody("burst", { stream: true }));
    // Not reading for 1.5 s (under the 3 s stuck timeout) while the provider streams 200,000 tokens (about 45 MB of SSE) as fast as it can.
    await waitForMockRequest(e2e.stack, (request) => request.model === "mock?tokens=200000" && request.tokensSent > 20_000, 30_000);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const growthKiB = rssKiB(ingressPid) - before;
    const { head, body } = await readChunkedResponse(socket);
    assert.match(head, /^HTTP\/1\.1 200/);
    const { events } = parseSse(body);
    assert.equal(events.at(-1)?.data, "[DONE]");
    const numbered = events.slice(0, -1);
    assert.equal(numbered.length, 200_002, "role chunk, 200,000 tokens, finish chunk");
    numbered.forEach((event, index) => {
      if (Number(event.id) !== index + 1) assert.fail(`event ${index} has id ${event.id}`);
    });
    assert.ok(growthKiB < 40 * 1024, `ingress RSS grew by ${growthKiB} KiB while 45 MB waited for the client`);
  });

  test("reads nothing at all: cut off after the stuck timeout and the provider is cancelled", { timeout: 60_000 }, async () => {
    const socket = await openPaused(e2e.stack.ingressUrl, "/v1/chat/completions", chatBody("flood", { stream: true }));
    const openedAt = Date.now();
    const seen = await waitForMockRequest(e2e.stack, (request) => request.model === "mock?tokens=1000000" && request.clientClosed, 30_000);
    assert.ok(seen.tokensSent < 1_000_000, `the provider was stopped after ${seen.tokensSent} tokens`);
    const elapsed = (seen.clientClosedAt ?? 0) - openedAt;
    assert.ok(elapsed >= 2_500 && elapsed < 15_000, `cancelled ${elapsed} ms after the request`);
    socket.destroy();
  });
});
