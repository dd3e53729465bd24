/**
 * A client that stops reading must not grow the ingress's memory without
 * limit: once its bounded buffer is full, its stream is ended with
 * RUNNEL_ERR_SLOW_CLIENT and the provider request is cancelled.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import { chatBody, type E2E, startE2E, waitForMockRequest } from "./helpers.js";

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

describe("a client that stops reading", () => {
  let e2e: E2E;
  before(async () => {
    e2e = await startE2E("slow-client");
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
  });

  test("is ended and the provider cancelled, with the ingress's memory bounded", { timeout: 60_000 }, async () => {
    const ingressPid = e2e.stack.services.get("ingress")?.process.pid ?? 0;
    const before = rssKiB(ingressPid);
    const url = new URL(e2e.stack.ingressUrl);
    const body = chatBody("flood", { stream: true });
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    // Send the request, then never read a byte.
    socket.pause();
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    const startedAt = Date.now();
    const seen = await waitForMockRequest(e2e.stack, (request) => request.model === "mock?tokens=1000000" && request.clientClosed, 30_000);
    assert.ok(seen.tokensSent < 1_000_000, `the provider was stopped after ${seen.tokensSent} tokens`);
    const growthKiB = rssKiB(ingressPid) - before;
    assert.ok(growthKiB < 64 * 1024, `ingress RSS grew by ${growthKiB} KiB`);
    // Reading on, the client finds the explicit error event at the end of its stream, and no [DONE].
    let received = "";
    await new Promise<void>((resolve, reject) => {
      socket.on("data", (data: Buffer) => {
        received += data.toString("latin1");
        if (received.endsWith("0\r\n\r\n")) resolve();
      });
      socket.once("close", () => resolve());
      socket.once("error", reject);
      socket.resume();
    });
    assert.match(received, /^HTTP\/1\.1 200/);
    assert.match(received, /"code":"RUNNEL_ERR_SLOW_CLIENT"/);
    assert.doesNotMatch(received, /\[DONE\]/);
    assert.ok(Date.now() - startedAt < 30_000);
    socket.destroy();
  });
});
