/**
 * An ingress shutting down sends every new request elsewhere, each in the
 * way its client understands: a resume (EventSource) gets a reconnect hint,
 * since an EventSource gives up for good on any answer but 200; everything
 * else a 503 RUNNEL_ERR_SHUTTING_DOWN. Either way the connection closes with
 * the answer, so the client's next request reaches another replica.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildIngress, type Ingress } from "@runnel/ingress";
import { type NatsHandle, startNats } from "@runnel/launcher";
import { ControlPlaneLink, connectNats, createLogger, ensureTopology, newStreamId, parseConfig } from "@runnel/shared";

const log = createLogger("test", process.env.TEST_LOG_LEVEL ?? "silent");

describe("an ingress shutting down", () => {
  let nats: NatsHandle;
  let ingress: Ingress;
  let nc: Awaited<ReturnType<typeof connectNats>>;

  before(async () => {
    nats = await startNats();
    const config = parseConfig(
      "providers: [{name: x, type: mock, baseUrl: 'http://127.0.0.1:1/v1'}]\nmodels: [{name: x, routes: [{provider: x, model: x}]}]",
      {},
    );
    nc = await connectNats(nats.url, "ingress-shutdown-test");
    const bus = await ensureTopology(nc, config.bus);
    ingress = buildIngress({
      bus,
      busOptions: config.bus,
      // Nothing answers there: no routing snapshot, which no test here needs.
      link: new ControlPlaneLink("127.0.0.1:1", log),
      log,
      instanceId: "ingress-test",
      options: config.ingress,
    });
    await ingress.app.ready();
    ingress.beginShutdown();
  });
  after(async () => {
    await ingress?.close(0);
    await nc?.close();
    await nats?.stop();
  });

  test("answers a resume with a reconnect hint and a closed connection, not a 503", async () => {
    const response = await ingress.app.inject({ method: "GET", url: `/v1/streams/${newStreamId()}/events?after=3`, headers: { "last-event-id": "7" } });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers["content-type"]), /^text\/event-stream/);
    assert.equal(response.headers.connection, "close");
    assert.match(response.body, /^retry: \d+\n\n$/);
  });

  test("refuses a new completion with 503 RUNNEL_ERR_SHUTTING_DOWN and a closed connection", async () => {
    const response = await ingress.app.inject({
      method: "POST",
      url: "/v1/chat/completions",
      payload: { model: "x", stream: true, messages: [{ role: "user", content: "hi" }] },
    });
    assert.equal(response.statusCode, 503);
    assert.equal(response.json().error.code, "RUNNEL_ERR_SHUTTING_DOWN");
    assert.equal(response.headers.connection, "close");
  });

  test("fails readiness", async () => {
    const response = await ingress.app.inject({ method: "GET", url: "/readyz" });
    assert.equal(response.statusCode, 503);
    assert.ok(response.json().reasons.includes("shutting down"));
  });
});
