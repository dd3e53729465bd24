/**
 * The control plane steers but is not on the path: with every replica gone,
 * the ingress and the worker keep serving from their last routing snapshot,
 * and a client that leaves still stops the provider (the ingress runs the
 * cancel itself when no replica answers).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { mockText } from "@runnel/mock-provider";
import OpenAI from "openai";
import { type E2E, startE2E, waitForMockRequest } from "./helpers.js";

describe("with the control plane gone", () => {
  let e2e: E2E;
  let client: OpenAI;

  before(async () => {
    e2e = await startE2E("control-plane-outage");
    client = new OpenAI({ baseURL: `${e2e.stack.ingressUrl}/v1`, apiKey: "unused", maxRetries: 0 });
    await e2e.stack.stopService("control-plane");
    const controlPlane = e2e.stack.services.get("control-plane");
    assert.ok(controlPlane?.process.exitCode !== null || controlPlane?.process.signalCode !== null, "the control plane has exited");
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
  });

  test("completions still stream from the last routing snapshot", async () => {
    const stream = await client.chat.completions.create({ model: "mock", stream: true, messages: [{ role: "user", content: "still there?" }] });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    assert.equal(text, mockText(32, 0));
  });

  test("a client that leaves still closes the provider's connection", async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: "long", stream: true, messages: [{ role: "user", content: "go" }] },
      { signal: controller.signal },
    );
    let received = 0;
    let abortedAt = 0;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) received += 1;
      if (received === 3 && abortedAt === 0) {
        abortedAt = Date.now();
        controller.abort();
      }
    }
    const seen = await waitForMockRequest(e2e.stack, (request) => request.model.startsWith("mock?tokens=5000") && request.clientClosed, 5_000);
    const latency = (seen.clientClosedAt ?? 0) - abortedAt;
    // The generation outlives the disconnect by the detach grace (1 s in the e2e config), then stops.
    assert.ok(latency >= 900 && latency < 3_000, `provider saw the close ${latency} ms after the client aborted`);
  });

  test("the ingress and the worker stay ready", async () => {
    const ingress = await fetch(`${e2e.stack.ingressUrl}/readyz`);
    assert.equal(ingress.status, 200);
    const worker = e2e.stack.services.get("worker");
    const ready = await fetch(`http://127.0.0.1:${worker?.healthPort}/readyz`);
    assert.equal(ready.status, 200);
  });
});
