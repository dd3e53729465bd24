/**
 * Failover across routes (issue #5), end to end through the real processes:
 * the mock provider fails on demand (the scenario in each route's upstream
 * model, test/fixtures/runnel.failover.yaml), and the client must see one
 * coherent stream whose chunks name the upstream model that served them,
 * with an announcement where the stream changed routes:
 *
 * - before the first token, the next route answers (`next_route`; `hedge`
 *   when a hedged request won), at once: a route's own retries are spent
 *   only when no other route can serve (failover-order.test.ts has more);
 * - after it, the model's `afterFirstToken` policy: `error` ends the stream
 *   with an error event, `restart` discards and starts over on the next
 *   route, `continue` has the next route continue the partial answer as an
 *   assistant prefill;
 * - a 429 puts its route in cooldown for its Retry-After, consecutive
 *   failures open the route's circuit, one probe per probeInterval closes it;
 * - context-length errors go only to a route with a larger context window;
 *   content-policy rejections are answered, not failed over, unless the model asks.
 *
 * The mock's journal (`GET /_mock/requests`) shows what each route received.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { REPO_ROOT } from "@runnel/launcher";
import { mockText } from "@runnel/mock-provider";
import OpenAI from "openai";
import {
  type Announcement,
  askStream,
  assertAnnouncement,
  assertCoherent,
  type OpenAIErrorBody,
  parseNamedSse,
  type RouteRef,
  requestsFor,
  type StreamView,
  sleep,
} from "./failover-support.js";
import { type E2E, startE2E, waitForMockRequest } from "./helpers.js";

const CONFIG = join(REPO_ROOT, "test", "fixtures", "runnel.failover.yaml");
const USER_TURN = { role: "user", text: "Tell me about rivers." };

/** A route of the config, by provider and upstream model. */
const route = (provider: string, model: string): RouteRef => ({ provider, model });
const BACKUP_TEXT = mockText(6, 1);
/** The partial answer of every primary that fails after its first token: 5 tokens of seed 7. */
const PARTIAL = mockText(5, 7);
/** What the backups of the after-first-token models answer: 8 tokens of seed 8. */
const RESTART_TEXT = mockText(8, 8);

let e2e: E2E;
let url: string;

before(async () => {
  e2e = await startE2E("failover", CONFIG);
  url = e2e.stack.ingressUrl;
});
after(async () => {
  await e2e?.[Symbol.asyncDispose]();
});

/**
 * The backup served the whole stream after a failure before the first token:
 * one `next_route` announcement first, then only the backup's chunks, its
 * complete answer, its usage, and [DONE].
 */
function assertServedByBackup(view: StreamView, from: RouteRef, to: RouteRef, text: string, tokens: number, reasonCode: string | RegExp): void {
  assert.equal(view.status, 200, `status ${view.status}: ${JSON.stringify(view.httpError)}`);
  assertCoherent(view);
  assert.equal(view.failovers.length, 1, "one announcement");
  assertAnnouncement(view.failovers[0], { mode: "next_route", from, to, takeover: false, reason_code: reasonCode });
  assert.equal(view.segments[0], "", "no content before the announcement");
  assert.equal(view.text, text, "the backup's complete answer");
  for (const chunk of view.chunks) assert.equal(chunk.model, to.model, `every chunk names the backup's upstream model: ${JSON.stringify(chunk)}`);
  assert.deepEqual(
    view.usage.map((usage) => usage.completion_tokens),
    [tokens],
    "the backup's usage, once",
  );
  assert.deepEqual(view.finishReasons, ["stop"]);
  assert.equal(view.error, undefined);
  assert.equal(view.done, true);
}

async function assertRequests(key: string, count: number, message?: string): Promise<void> {
  assert.equal((await requestsFor(e2e.stack, key)).length, count, message ?? `requests to the route ${key}`);
}

describe("before the first token: the next route answers", () => {
  test("500: the backup at once, without the primary's retries (another route can serve); one coherent stream", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "f-500");
    assertServedByBackup(
      view,
      route("p-retrying", "mock?fail=500&key=f-500"),
      route("backup", "mock?tokens=6&seed=1&key=f-500-b"),
      BACKUP_TEXT,
      6,
      "RUNNEL_ERR_PROVIDER_UNAVAILABLE",
    );
    await assertRequests("f-500", 1, "no retry on the primary (maxAttempts 2) while the backup can serve");
    await assertRequests("f-500-b", 1);
  });

  test("503 that persists: the backup answers", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "f-503");
    assertServedByBackup(
      view,
      route("p-503", "mock?fail=503&key=f-503"),
      route("backup", "mock?tokens=6&seed=1&key=f-503-b"),
      BACKUP_TEXT,
      6,
      "RUNNEL_ERR_PROVIDER_UNAVAILABLE",
    );
    await assertRequests("f-503", 1);
  });

  test("429 with Retry-After: the backup answers, and the primary is left alone until the Retry-After has passed", { timeout: 20_000 }, async () => {
    const primary = route("p-429", "mock?fail=429&retry_after=2&key=f-429");
    const backup = route("backup", "mock?tokens=6&seed=1&key=f-429-b");
    const first = await askStream(url, "f-429");
    assertServedByBackup(first, primary, backup, BACKUP_TEXT, 6, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
    const [limited] = await requestsFor(e2e.stack, "f-429");
    assert.ok(limited);

    const second = await askStream(url, "f-429");
    assert.equal(second.status, 200);
    assertCoherent(second);
    assert.equal(second.text, BACKUP_TEXT);
    assert.ok(
      second.chunks.filter((chunk) => !chunk.runnel).every((chunk) => chunk.model === backup.model),
      "served by the backup",
    );
    await assertRequests("f-429", 1, "the route in cooldown got no request");
    await assertRequests("f-429-b", 2);

    // Retry-After 2 s: once it has passed, the primary is tried again (and answers 429 again).
    await sleep(Math.max(0, limited.receivedAt + 2_500 - Date.now()));
    const third = await askStream(url, "f-429");
    assert.equal(third.text, BACKUP_TEXT);
    await assertRequests("f-429", 2, "the primary is tried again after its cooldown");
  });

  test("a connection reset: the backup answers", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "f-reset");
    assertServedByBackup(
      view,
      route("p-reset", "mock?fail=reset&key=f-reset"),
      route("backup", "mock?tokens=6&seed=1&key=f-reset-b"),
      BACKUP_TEXT,
      6,
      "RUNNEL_ERR_PROVIDER_UNAVAILABLE",
    );
    await assertRequests("f-reset", 1);
  });

  test("no response at all: after the first-token timeout (1 s) the primary's request is closed and the backup answers", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "f-no-response");
    assertServedByBackup(
      view,
      route("p-silent", "mock?fail=no-response&key=f-no-response"),
      route("backup", "mock?tokens=6&seed=1&key=f-no-response-b"),
      BACKUP_TEXT,
      6,
      "RUNNEL_ERR_PROVIDER_TIMEOUT",
    );
    assert.ok(view.elapsedMs >= 950 && view.elapsedMs < 4_000, `answered after ${view.elapsedMs} ms`);
    const primary = await waitForMockRequest(e2e.stack, (request) => request.model.endsWith("key=f-no-response") && request.clientClosed, 2_000);
    assert.equal(primary.tokensSent, 0);
    await assertRequests("f-no-response", 1);
  });

  test("failover.maxRoutes bounds the routes one request tries; then the last failure is the answer", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "f-exhausted");
    assert.equal(view.status, 502, "every route tried failed before the first token: an HTTP status");
    assert.equal(view.httpError?.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    await assertRequests("f-exhausted-1", 1);
    await assertRequests("f-exhausted-2", 1);
    await assertRequests("f-exhausted-3", 0, "maxRoutes 2: the third route is never tried");
  });

  test("failover.budget: no route starts later than the budget after the request arrived", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "f-budget");
    assert.equal(view.status, 504, "the primary's timeout came after the 500 ms budget: it is the answer");
    assert.equal(view.httpError?.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
    assert.ok(view.elapsedMs >= 950 && view.elapsedMs < 3_000, `answered after ${view.elapsedMs} ms`);
    await assertRequests("f-budget", 1);
    await assertRequests("f-budget-b", 0, "the backup is not started past the budget");
  });

  test("hedging: a first token later than hedgeAfter starts the next route too; the first token wins and the loser is closed", {
    timeout: 20_000,
  }, async () => {
    const slow = route("p-slow", "mock?ttft=4000&tokens=6&seed=2&key=f-hedge");
    const fast = route("backup", "mock?tokens=6&seed=3&key=f-hedge-b");
    const view = await askStream(url, "f-hedge");
    assert.equal(view.status, 200);
    assertCoherent(view);
    assert.equal(view.failovers.length, 1);
    assertAnnouncement(view.failovers[0], { mode: "hedge", from: slow, to: fast, takeover: false, reason_code: /^(RUNNEL_ERR_[A-Z_]+)?$/ });
    assert.equal(view.segments[0], "");
    assert.equal(view.text, mockText(6, 3), "the hedged request's answer");
    for (const chunk of view.chunks) assert.equal(chunk.model, fast.model, "nothing of the slow route reaches the client");
    assert.deepEqual(
      view.usage.map((usage) => usage.completion_tokens),
      [6],
    );
    assert.equal(view.done, true);
    assert.ok(view.elapsedMs < 2_500, `answered after ${view.elapsedMs} ms, not after the slow route's 4 s`);

    const [primary] = await requestsFor(e2e.stack, "f-hedge");
    const [hedged] = await requestsFor(e2e.stack, "f-hedge-b");
    assert.ok(primary && hedged, "the mock saw both requests");
    const delay = hedged.receivedAt - primary.receivedAt;
    assert.ok(delay >= 250 && delay < 1_500, `the hedged request started ${delay} ms after the first (hedgeAfter 300 ms)`);
    assert.ok(hedged.firstTokenAt !== null);
    const closed = await waitForMockRequest(e2e.stack, (request) => request.model === slow.model && request.clientClosed, 2_000);
    assert.equal(closed.tokensSent, 0);
    const lag = (closed.clientClosedAt ?? 0) - hedged.firstTokenAt;
    assert.ok(lag < 500, `the slow request was closed ${lag} ms after the winner's first token`);
  });

  test("hedging: a first token within hedgeAfter starts nothing else", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "f-hedge-fast");
    assert.equal(view.status, 200);
    assert.equal(view.failovers.length, 0);
    assert.equal(view.text, mockText(6, 2));
    await sleep(400);
    await assertRequests("f-hedge-fast-b", 0, "no hedged request");
  });

  test("context length exceeded: only a route with a larger context window is tried", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "f-context");
    assertServedByBackup(
      view,
      route("p-refusing", "mock?fail=context-length&key=f-context"),
      route("backup", "mock?tokens=6&seed=5&key=f-context-big"),
      mockText(6, 5),
      6,
      "RUNNEL_ERR_CONTEXT_LENGTH",
    );
    await assertRequests("f-context-small", 0, "the route with a smaller window is skipped");
    await assertRequests("f-context", 1);
  });

  test("context length exceeded with no larger route: the 400 is the answer, and no other route is tried", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "f-context-none");
    assert.equal(view.status, 400);
    assert.match(view.httpError?.message ?? "", /maximum context length is 8192 tokens/);
    assert.equal(view.httpError?.code, "RUNNEL_ERR_CONTEXT_LENGTH");
    assert.equal(view.httpError?.type, "invalid_request_error");
    await assertRequests("f-context-none-b", 0, "a route with the same window is not tried");
  });

  test("a content-policy rejection is answered (400, OpenAI error JSON), not failed over", { timeout: 20_000 }, async () => {
    const response = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "f-policy", stream: true, messages: [{ role: "user", content: "Tell me about rivers." }] }),
    });
    assert.equal(response.status, 400);
    assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
    const body = (await response.json()) as { error: OpenAIErrorBody };
    assert.deepEqual(Object.keys(body.error), ["message", "type", "param", "code"]);
    assert.equal(body.error.code, "RUNNEL_ERR_CONTENT_POLICY");
    assert.equal(body.error.type, "invalid_request_error");
    assert.match(body.error.message, /safety system/);
    await assertRequests("f-policy", 1);
    await assertRequests("f-policy-b", 0, "no failover on a content-policy rejection");
  });

  test("a content-policy rejection fails over when failover.onContentPolicy is true", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "f-policy-failover");
    assertServedByBackup(
      view,
      route("p-refusing", "mock?fail=content-policy&key=f-policy-failover"),
      route("backup", "mock?tokens=6&seed=1&key=f-policy-failover-b"),
      BACKUP_TEXT,
      6,
      "RUNNEL_ERR_CONTENT_POLICY",
    );
  });

  test("a primary down for a while: the backup serves, the circuit opens, one probe per probeInterval, and the primary is back soon after it recovers", {
    timeout: 30_000,
  }, async () => {
    const primary = route("p-flaky", "mock?fail=outage&key=f-circuit&tokens=4&seed=10");
    const backup = route("backup", "mock?tokens=4&seed=11&key=f-circuit-b");
    const PRIMARY_TEXT = mockText(4, 10);
    const FALLBACK_TEXT = mockText(4, 11);
    const outage = `${e2e.stack.mockUrl}/_mock/outages/f-circuit`;
    const servedBy = (view: StreamView) =>
      view.text === PRIMARY_TEXT ? "primary" : view.text === FALLBACK_TEXT ? "backup" : `neither: ${JSON.stringify(view)}`;

    assert.equal(servedBy(await askStream(url, "f-circuit")), "primary", "healthy to start with");
    assert.equal((await fetch(outage, { method: "PUT" })).status, 204);

    // failureThreshold 3: three requests find the primary down and fail over.
    for (let index = 0; index < 3; index++) {
      const view = await askStream(url, "f-circuit");
      assertServedByBackup(view, primary, backup, FALLBACK_TEXT, 4, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    }
    await assertRequests("f-circuit", 4);

    // Open: requests go to the backup; the primary sees at most one probe per 500 ms.
    const openedAt = Date.now();
    let served = 0;
    while (Date.now() - openedAt < 1_600) {
      const view = await askStream(url, "f-circuit");
      assert.equal(servedBy(view), "backup");
      assertCoherent(view);
      served += 1;
    }
    const window = Date.now() - openedAt;
    const probes = (await requestsFor(e2e.stack, "f-circuit")).filter((request) => request.receivedAt >= openedAt);
    assert.ok(served >= 5, `only ${served} requests in the window`);
    assert.ok(probes.length >= 1, "the open circuit lets a probe through once its interval has passed");
    assert.ok(probes.length <= Math.floor(window / 500) + 1, `${probes.length} requests reached the open primary in ${window} ms (one probe per 500 ms)`);
    for (const probe of probes) assert.equal(probe.status, 503);

    // Recovery: the next probe succeeds and closes the circuit.
    assert.equal((await fetch(outage, { method: "DELETE" })).status, 204);
    const recoveredAt = Date.now();
    let back: number | undefined;
    while (Date.now() - recoveredAt < 3_000) {
      const view = await askStream(url, "f-circuit");
      if (servedBy(view) === "primary") {
        back = Date.now() - recoveredAt;
        break;
      }
      assert.equal(servedBy(view), "backup");
      await sleep(50);
    }
    assert.ok(back !== undefined && back < 1_500, `back on the primary ${back ?? "never"} ms after it recovered (probeInterval 500 ms)`);
    for (let index = 0; index < 3; index++) {
      const view = await askStream(url, "f-circuit");
      assert.equal(servedBy(view), "primary", "the circuit is closed again");
      assert.equal(view.failovers.length, 0);
    }
  });
});

describe("after the first token: the model's afterFirstToken policy", () => {
  test("error (the default): the tokens so far, then an explicit error event, no [DONE]; no other route is tried", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "f-cut-error");
    assert.equal(view.status, 200);
    assertCoherent(view);
    assert.equal(view.text, PARTIAL);
    assert.equal(view.failovers.length, 0);
    assert.equal(view.error?.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
    assert.equal(view.done, false);
    await assertRequests("f-cut-error-b", 0);
  });

  test("restart: an announcement, then the next route's complete answer and its usage, then [DONE]", { timeout: 20_000 }, async () => {
    const primary = route("p-cutting", "mock?tokens=20&seed=7&fail=cut&after=5&key=f-restart");
    const backup = route("backup", "mock?tokens=8&seed=8&key=f-restart-b");
    const view = await askStream(url, "f-restart");
    assert.equal(view.status, 200);
    assertCoherent(view);
    assert.equal(view.failovers.length, 1);
    assertAnnouncement(view.failovers[0], { mode: "restart", from: primary, to: backup, takeover: false, reason_code: "RUNNEL_ERR_PROVIDER_STREAM_CUT" });
    assert.equal(view.segments[0], PARTIAL, "what the client is told to discard");
    assert.deepEqual(view.segmentModels[0], [primary.model]);
    assert.equal(view.segments[1], RESTART_TEXT, "a complete answer after the announcement");
    assert.deepEqual(view.segmentModels[1], [backup.model]);
    assert.deepEqual(view.finishReasons, ["stop"]);
    assert.deepEqual(
      view.usage.map((usage) => usage.completion_tokens),
      [8],
      "the answering route's usage",
    );
    assert.equal(view.error, undefined);
    assert.equal(view.done, true);
    const [restarted] = await requestsFor(e2e.stack, "f-restart-b");
    assert.deepEqual(restarted?.messages, [USER_TURN], "a restart sends the original conversation");
    await assertRequests("f-restart", 1, "no retry on the route after its first token");
  });

  test("restart, read with the openai SDK: a chunk with empty choices and a runnel property, then the new answer", { timeout: 20_000 }, async () => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: "f-restart-sdk",
      stream: true,
      messages: [{ role: "user", content: "Tell me about rivers." }],
    });
    const announcements: Announcement[] = [];
    const texts = [""];
    let finish: string | null = null;
    for await (const chunk of stream) {
      const failover = (chunk as unknown as { runnel?: { failover?: Announcement } }).runnel?.failover;
      if (failover) {
        assert.deepEqual(chunk.choices, []);
        assert.equal(chunk.object, "chat.completion.chunk");
        announcements.push(failover);
        texts.push("");
        continue;
      }
      texts[texts.length - 1] += chunk.choices[0]?.delta?.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(announcements.length, 1);
    assert.equal(announcements[0]?.mode, "restart");
    assert.deepEqual(announcements[0]?.to, route("backup", "mock?tokens=8&seed=8&key=f-restart-sdk-b"));
    assert.deepEqual(texts, [PARTIAL, RESTART_TEXT]);
    assert.equal(finish, "stop");
  });

  test("restart, not streamed: the final answer only, and runnel.failovers", { timeout: 20_000 }, async () => {
    const response = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "f-restart-json", messages: [{ role: "user", content: "Tell me about rivers." }] }),
    });
    assert.equal(response.status, 200);
    const body = (await response.json()) as {
      object: string;
      model: string;
      choices: { message: { content: string }; finish_reason: string }[];
      usage: { completion_tokens: number };
      runnel?: { failovers?: Announcement[] };
    };
    assert.equal(body.object, "chat.completion");
    assert.equal(body.choices[0]?.message.content, RESTART_TEXT, "without the discarded part");
    assert.equal(body.choices[0]?.finish_reason, "stop");
    assert.equal(body.model, "mock?tokens=8&seed=8&key=f-restart-json-b");
    assert.equal(body.usage.completion_tokens, 8);
    const failovers = body.runnel?.failovers;
    assert.ok(Array.isArray(failovers), `runnel.failovers in ${JSON.stringify(body)}`);
    assert.equal(failovers.length, 1);
    assert.deepEqual(failovers[0], {
      ...failovers[0],
      mode: "restart",
      from: route("p-cutting", "mock?tokens=20&seed=7&fail=cut&after=5&key=f-restart-json"),
      to: route("backup", "mock?tokens=8&seed=8&key=f-restart-json-b"),
      reason_code: "RUNNEL_ERR_PROVIDER_STREAM_CUT",
      takeover: false,
    });
    assert.deepEqual(Object.keys(failovers[0] ?? {}).sort(), ["from", "mode", "reason", "reason_code", "takeover", "to"]);
  });

  test("restart on the Anthropic API: an event runnel_failover, then the new answer, then message_stop", { timeout: 20_000 }, async () => {
    const response = await fetch(`${url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "anthropic-version": "2023-06-01" },
      body: JSON.stringify({
        model: "f-restart-anthropic",
        max_tokens: 1024,
        stream: true,
        messages: [{ role: "user", content: "Tell me about rivers." }],
      }),
    });
    assert.equal(response.status, 200);
    const events = parseNamedSse(await response.text());
    const at = events.findIndex((event) => event.event === "runnel_failover");
    assert.ok(at > 0, `an event runnel_failover in ${events.map((event) => event.event).join(", ")}`);
    assert.equal(events.filter((event) => event.event === "runnel_failover").length, 1);
    const data = JSON.parse(events[at]?.data ?? "{}") as Announcement & { type: string };
    assert.deepEqual(Object.keys(data).sort(), ["from", "mode", "reason", "reason_code", "takeover", "to", "type"]);
    assert.equal(data.type, "runnel_failover");
    assert.equal(data.mode, "restart");
    assert.deepEqual(data.from, route("p-cutting", "mock?tokens=20&seed=7&fail=cut&after=5&key=f-restart-anthropic"));
    assert.deepEqual(data.to, route("backup", "mock?tokens=8&seed=8&key=f-restart-anthropic-b"));
    assert.equal(data.reason_code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
    assert.equal(data.takeover, false);
    const textOf = (slice: typeof events) =>
      slice
        .filter((event) => event.event === "content_block_delta")
        .map((event) => (JSON.parse(event.data) as { delta: { text?: string } }).delta.text ?? "")
        .join("");
    assert.equal(textOf(events.slice(0, at)), PARTIAL);
    assert.equal(textOf(events.slice(at + 1)), RESTART_TEXT);
    assert.equal(events.at(-1)?.event, "message_stop");
    assert.equal(events.filter((event) => event.event === "error").length, 0);
    const ids = events.flatMap((event) => (event.id === undefined ? [] : [Number(event.id)]));
    for (let index = 1; index < ids.length; index++) assert.ok((ids[index] ?? 0) > (ids[index - 1] ?? 0), `ids increase: ${ids.join(", ")}`);
  });

  test("restart after a stall (idle timeout): the stalled request is closed and the next route answers", { timeout: 20_000 }, async () => {
    const primary = route("p-cutting", "mock?tokens=20&seed=7&fail=stall&after=4&key=f-stall-restart");
    const backup = route("backup", "mock?tokens=8&seed=8&key=f-stall-restart-b");
    const view = await askStream(url, "f-stall-restart");
    assert.equal(view.status, 200);
    assertCoherent(view);
    assertAnnouncement(view.failovers[0], { mode: "restart", from: primary, to: backup, takeover: false, reason_code: "RUNNEL_ERR_PROVIDER_TIMEOUT" });
    assert.deepEqual(view.segments, [mockText(4, 7), RESTART_TEXT]);
    assert.equal(view.done, true);
    const stalled = await waitForMockRequest(e2e.stack, (request) => request.model === primary.model && request.clientClosed, 2_000);
    assert.equal(stalled.tokensSent, 4);
  });

  test("continue: an announcement, and the next route continues the partial answer as an assistant prefill", { timeout: 20_000 }, async () => {
    const primary = route("p-cutting", "mock?tokens=20&seed=7&fail=cut&after=5&key=f-continue");
    const backup = route("backup", "mock?tokens=20&seed=7&key=f-continue-b");
    const view = await askStream(url, "f-continue");
    assert.equal(view.status, 200);
    assertCoherent(view);
    assert.equal(view.failovers.length, 1);
    assertAnnouncement(view.failovers[0], { mode: "continue", from: primary, to: backup, takeover: false, reason_code: "RUNNEL_ERR_PROVIDER_STREAM_CUT" });
    assert.equal(view.segments[0], PARTIAL, "kept");
    assert.equal(view.text, mockText(20, 7), "the partial answer and its continuation make the whole answer");
    assert.deepEqual(view.segmentModels[1], [backup.model]);
    assert.deepEqual(view.finishReasons, ["stop"]);
    assert.equal(view.usage.length, 1);
    assert.equal(view.done, true);
    const [continued] = await requestsFor(e2e.stack, "f-continue-b");
    assert.deepEqual(continued?.messages, [USER_TURN, { role: "assistant", text: PARTIAL }], "the last message is the partial answer, exactly");
  });

  test("continue on a route without acceptsPrefill: falls back to restart", { timeout: 20_000 }, async () => {
    const primary = route("p-cutting", "mock?tokens=20&seed=7&fail=cut&after=5&key=f-continue-fallback");
    const backup = route("backup", "mock?tokens=8&seed=8&key=f-continue-fallback-b");
    const view = await askStream(url, "f-continue-fallback");
    assert.equal(view.status, 200);
    assertCoherent(view);
    assert.equal(view.failovers.length, 1);
    assertAnnouncement(view.failovers[0], { mode: "restart", from: primary, to: backup, takeover: false, reason_code: "RUNNEL_ERR_PROVIDER_STREAM_CUT" });
    assert.deepEqual(view.segments, [PARTIAL, RESTART_TEXT]);
    assert.equal(view.done, true);
    const [restarted] = await requestsFor(e2e.stack, "f-continue-fallback-b");
    assert.deepEqual(restarted?.messages, [USER_TURN], "no prefill sent to a route that does not take one");
  });

  test("continue refused by the next route (a 400 to the prefill): the refusal never masks the original failure", { timeout: 20_000 }, async (t) => {
    const view = await askStream(url, "f-continue-rejected");
    assert.equal(view.status, 200);
    assertCoherent(view);
    assert.equal(view.segments[0], PARTIAL);
    const seen = await requestsFor(e2e.stack, "f-continue-rejected-b");
    assert.ok(
      seen.some((request) => request.messages.at(-1)?.role === "assistant" && request.status === 400),
      `the continuation was asked for and refused: ${JSON.stringify(seen)}`,
    );
    assert.notEqual(view.error?.code, "RUNNEL_ERR_PROVIDER_BAD_REQUEST", "the prefill's refusal is not the stream's error");
    assert.doesNotMatch(view.error?.message ?? "", /prefill/);
    if (view.done) {
      // Refused the prefill: the route restarted without it.
      t.diagnostic("the refused continuation fell back to a restart");
      assert.equal(view.failovers.at(-1)?.runnel?.failover?.mode, "restart");
      for (const chunk of view.failovers) {
        assert.equal(chunk.runnel?.failover?.reason_code, "RUNNEL_ERR_PROVIDER_STREAM_CUT", "every announcement gives the original failure");
      }
      assert.equal(view.segments.at(-1), RESTART_TEXT);
      assert.equal(view.error, undefined);
      const restarted = seen.filter((request) => request.status === 200);
      assert.equal(restarted.length, 1);
      assert.deepEqual(restarted[0]?.messages, [USER_TURN], "the restart carries no prefill");
    } else {
      t.diagnostic("the refused continuation ended the stream with the original failure");
      assert.equal(view.error?.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT", "the original failure");
    }
  });
});
