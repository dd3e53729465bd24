/**
 * Routing does what a user who lists a backup expects, end to end through the
 * real processes, with the config written as docs/configuration.md shows it
 * (test/fixtures/runnel.failover-order.yaml: routes in order, no `priority`,
 * the providers' default retries):
 *
 * - routes listed in order are a failover order: a healthy primary serves
 *   every request; only routes given the same `priority` share the load;
 * - a failure before the first token goes to the next route at once, without
 *   retrying on the failed route (a 429 is not waited for; a 500 costs no
 *   backoff), unless the model asks for `failover.sameRouteRetries: always`
 *   or no other route can serve;
 * - the failover budget bounds the wait for a first token, not the length of
 *   a generation: a long answer cut after it is still continued or restarted.
 *
 * The mock's journal (`GET /_mock/requests`) shows what each route received.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { REPO_ROOT } from "@runnel/launcher";
import { mockText } from "@runnel/mock-provider";
import OpenAI from "openai";
import { type Announcement, askStream, assertAnnouncement, assertCoherent, type RouteRef, requestsFor, type StreamView } from "./failover-support.js";
import { type E2E, startE2E } from "./helpers.js";

const CONFIG = join(REPO_ROOT, "test", "fixtures", "runnel.failover-order.yaml");
const USER_TURN = { role: "user", text: "Tell me about rivers." };
const route = (provider: string, model: string): RouteRef => ({ provider, model });
const BACKUP_TEXT = mockText(4, 2);

let e2e: E2E;
let url: string;
let client: OpenAI;

before(async () => {
  e2e = await startE2E("failover-order", CONFIG);
  url = e2e.stack.ingressUrl;
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
});
after(async () => {
  await e2e?.[Symbol.asyncDispose]();
});

async function requestCount(key: string): Promise<number> {
  return (await requestsFor(e2e.stack, key)).length;
}

/** The backup served the whole stream after the primary failed before its first token. */
function assertBackupServed(view: StreamView, from: RouteRef, to: RouteRef, reasonCode: string): void {
  assert.equal(view.status, 200, `status ${view.status}: ${JSON.stringify(view.httpError)}`);
  assertCoherent(view);
  assert.equal(view.failovers.length, 1, "one announcement");
  assertAnnouncement(view.failovers[0], { mode: "next_route", from, to, takeover: false, reason_code: reasonCode });
  assert.equal(view.text, BACKUP_TEXT);
  for (const chunk of view.chunks) assert.equal(chunk.model, to.model);
  assert.equal(view.done, true);
}

describe("routes listed in order are a failover order", () => {
  test("[primary, backup] without priority: 12 of 12 healthy requests go to the primary", { timeout: 30_000 }, async () => {
    const primary = route("primary", "mock?tokens=4&seed=1&key=o-healthy");
    for (let index = 0; index < 12; index++) {
      const view = await askStream(url, "o-healthy");
      assert.equal(view.status, 200);
      assert.equal(view.failovers.length, 0);
      assert.equal(view.text, mockText(4, 1), "the primary's answer");
      for (const chunk of view.chunks) assert.equal(chunk.model, primary.model, "every chunk names the primary's upstream model");
    }
    assert.equal(await requestCount("o-healthy"), 12);
    assert.equal(await requestCount("o-healthy-b"), 0, "the backup is for failures, not for load");
  });

  test("routes given the same priority share the load", { timeout: 30_000 }, async () => {
    for (let index = 0; index < 20; index++) {
      const view = await askStream(url, "o-shared");
      assert.equal(view.status, 200);
      assert.equal(view.text, mockText(4, 1));
    }
    const [first, second] = [await requestCount("o-shared-1"), await requestCount("o-shared-2")];
    assert.equal(first + second, 20);
    // Weighted 1:1; one route taking all 20 has a chance of 2 in 2^20.
    assert.ok(first > 0 && second > 0, `both routes served: ${first} and ${second}`);
  });
});

describe("before the first token, another route is better than a wait", () => {
  test("429 with Retry-After: 1 and a healthy backup: the backup's first token comes well within the second, read with the openai SDK", {
    timeout: 20_000,
  }, async (t) => {
    const startedAt = Date.now();
    const stream = await client.chat.completions.create({ model: "o-429", stream: true, messages: [{ role: "user", content: "Tell me about rivers." }] });
    let firstTokenMs: number | undefined;
    let text = "";
    const announcements: Announcement[] = [];
    const models = new Set<string>();
    for await (const chunk of stream) {
      const failover = (chunk as unknown as { runnel?: { failover?: Announcement } }).runnel?.failover;
      if (failover) {
        announcements.push(failover);
        continue;
      }
      const content = chunk.choices[0]?.delta?.content ?? "";
      if (content !== "") {
        firstTokenMs ??= Date.now() - startedAt;
        models.add(chunk.model);
      }
      text += content;
    }
    assert.equal(text, BACKUP_TEXT, "the backup's answer");
    assert.deepEqual([...models], ["mock?tokens=4&seed=2&key=o-429-b"]);
    assert.equal(announcements.length, 1);
    assert.equal(announcements[0]?.mode, "next_route");
    assert.equal(announcements[0]?.reason_code, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
    t.diagnostic(`first token after ${firstTokenMs} ms`);
    assert.ok(firstTokenMs !== undefined && firstTokenMs < 800, `first token after ${firstTokenMs} ms: the Retry-After of 1 s was not waited for`);
    assert.equal(await requestCount("o-429"), 1, "the rate-limited route was asked once, then left to cool down");
    assert.equal(await requestCount("o-429-b"), 1);

    // It cools down: the next request within the Retry-After goes straight to the backup.
    const next = await askStream(url, "o-429");
    assert.equal(next.status, 200);
    assert.equal(next.failovers.length, 0, "nothing to announce: the backup is the first route tried");
    assert.equal(next.text, BACKUP_TEXT);
    assert.equal(await requestCount("o-429"), 1, "the route in cooldown got no request");
  });

  test("500 and a healthy backup: the backup starts at once, without the primary's retries and backoff", { timeout: 20_000 }, async (t) => {
    const primary = route("primary", "mock?fail=500&key=o-500");
    const backup = route("backup", "mock?tokens=4&seed=2&key=o-500-b");
    const view = await askStream(url, "o-500");
    assertBackupServed(view, primary, backup, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    const failed = await requestsFor(e2e.stack, "o-500");
    const [served] = await requestsFor(e2e.stack, "o-500-b");
    assert.equal(failed.length, 1, "one request to the primary: no retry, so no backoff");
    assert.ok(served);
    t.diagnostic(`the backup's request came ${served.receivedAt - (failed[0]?.receivedAt ?? 0)} ms after the primary's`);
  });

  test("one route only: nowhere else to go, so the provider's retries apply (a 500 once, then the answer)", { timeout: 20_000 }, async () => {
    const view = await askStream(url, "o-alone");
    assert.equal(view.status, 200, JSON.stringify(view.httpError));
    assert.equal(view.failovers.length, 0);
    assert.equal(view.text, mockText(4, 1));
    const seen = await requestsFor(e2e.stack, "o-alone");
    assert.deepEqual(
      seen.map((request) => request.status),
      [500, 200],
      "retried on its one route",
    );
  });

  test("failover.sameRouteRetries: always: a 500 is retried on the primary (3 attempts, with backoff) before the backup", { timeout: 20_000 }, async () => {
    const primary = route("primary", "mock?fail=500&key=o-500-always");
    const backup = route("backup", "mock?tokens=4&seed=2&key=o-500-always-b");
    const view = await askStream(url, "o-500-always");
    assertBackupServed(view, primary, backup, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    const attempts = await requestsFor(e2e.stack, "o-500-always");
    assert.equal(attempts.length, 3, "the provider's default maxAttempts");
    // Backoff 200 ms doubling, half of it fixed: at least 100 ms, then 200 ms.
    const gaps = attempts.slice(1).map((request, index) => request.receivedAt - (attempts[index]?.receivedAt ?? 0));
    assert.ok((gaps[0] ?? 0) >= 90 && (gaps[1] ?? 0) >= 190, `backoff between the attempts: ${gaps.join(", ")} ms`);
    assert.equal(await requestCount("o-500-always-b"), 1);
  });

  test("failover.sameRouteRetries: always: a 429 with Retry-After: 1 is waited for on the primary, as a prompt cache may be worth", {
    timeout: 20_000,
  }, async () => {
    const primary = route("primary", "mock?fail=429&retry_after=1&key=o-429-always");
    const backup = route("backup", "mock?tokens=4&seed=2&key=o-429-always-b");
    const view = await askStream(url, "o-429-always");
    assertBackupServed(view, primary, backup, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
    assert.equal(await requestCount("o-429-always"), 3);
    assert.ok(view.elapsedMs >= 1_900, `answered after ${view.elapsedMs} ms: two waits of 1 s on the primary`);
  });
});

describe("the failover budget bounds the wait for a first token, not the length of a generation", () => {
  test("continue: a long answer cut 1.5 s in, past the budget of 1 s, is continued on the backup", { timeout: 20_000 }, async () => {
    const primary = route("primary", "mock?tokens=40&itl=50&seed=3&fail=cut&after=30&key=o-long-continue");
    const backup = route("backup", "mock?tokens=40&seed=3&key=o-long-continue-b");
    const partial = mockText(30, 3);
    const view = await askStream(url, "o-long-continue");
    assert.equal(view.status, 200);
    assertCoherent(view);
    assert.equal(view.error, undefined, `no error event: ${JSON.stringify(view.error)}`);
    assert.equal(view.failovers.length, 1);
    assertAnnouncement(view.failovers[0], { mode: "continue", from: primary, to: backup, takeover: false, reason_code: "RUNNEL_ERR_PROVIDER_STREAM_CUT" });
    assert.equal(view.segments[0], partial, "kept");
    assert.equal(view.text, mockText(40, 3), "the partial answer and its continuation make the whole answer");
    assert.equal(view.done, true);
    const [cut] = await requestsFor(e2e.stack, "o-long-continue");
    const [continued] = await requestsFor(e2e.stack, "o-long-continue-b");
    assert.ok(cut && continued);
    assert.ok(continued.receivedAt - cut.receivedAt > 1_000, `the backup started ${continued.receivedAt - cut.receivedAt} ms in: past the budget`);
    assert.deepEqual(continued.messages, [USER_TURN, { role: "assistant", text: partial }]);
  });

  test("restart: a long answer cut past the budget is restarted on the backup", { timeout: 20_000 }, async () => {
    const primary = route("primary", "mock?tokens=40&itl=50&seed=3&fail=cut&after=30&key=o-long-restart");
    const backup = route("backup", "mock?tokens=8&seed=4&key=o-long-restart-b");
    const view = await askStream(url, "o-long-restart");
    assert.equal(view.status, 200);
    assertCoherent(view);
    assert.equal(view.error, undefined, `no error event: ${JSON.stringify(view.error)}`);
    assert.equal(view.failovers.length, 1);
    assertAnnouncement(view.failovers[0], { mode: "restart", from: primary, to: backup, takeover: false, reason_code: "RUNNEL_ERR_PROVIDER_STREAM_CUT" });
    assert.deepEqual(view.segments, [mockText(30, 3), mockText(8, 4)]);
    assert.equal(view.done, true);
  });
});
