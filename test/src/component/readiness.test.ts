/**
 * Ready means connected: while NATS is away, the ingress, the worker and the
 * control plane fail readiness (a load balancer takes the ingress out of
 * rotation instead of sending it requests that wait for a 503), and they are
 * ready again once the connection is back. nats.js reconnects for ever, so
 * `isClosed()` alone never notices.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { buildControlPlane, type ControlPlane } from "@runnel/control-plane";
import { buildIngress, type Ingress } from "@runnel/ingress";
import { type NatsHandle, startNats } from "@runnel/launcher";
import { type Bus, ControlPlaneLink, connectNats, createLogger, ensureTopology, parseConfig } from "@runnel/shared";
import { buildWorker, type Worker } from "@runnel/worker";

const log = createLogger("test", process.env.TEST_LOG_LEVEL ?? "silent");
const config = parseConfig(
  "providers: [{name: mock, type: mock, baseUrl: 'http://127.0.0.1:1/v1'}]\nmodels: [{name: mock, routes: [{provider: mock, model: mock}]}]",
  {},
);

let nats: NatsHandle;
const buses: Bus[] = [];
let controlPlane: ControlPlane;
let ingress: Ingress;
let worker: Worker;
const links: ControlPlaneLink[] = [];

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`not ${what} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return Date.now() - start;
}

async function ingressReady(): Promise<{ status: number; reasons: string[] }> {
  const response = await ingress.app.inject({ method: "GET", url: "/readyz" });
  return { status: response.statusCode, reasons: (response.json() as { reasons: string[] }).reasons };
}

before(async () => {
  // Its own local server: the test stops and restarts it.
  nats = await startNats({ forceLocal: true });
  const bus = async (name: string) => {
    const connected = await ensureTopology(await connectNats(nats.url, name), config.bus);
    buses.push(connected);
    return connected;
  };
  controlPlane = buildControlPlane({ config, bus: await bus("cp"), log, instanceId: "cp-readiness" });
  const target = `127.0.0.1:${await controlPlane.listen("127.0.0.1", 0)}`;
  const link = () => {
    const made = new ControlPlaneLink(target, log);
    links.push(made);
    return made;
  };
  ingress = buildIngress({ bus: await bus("ingress"), busOptions: config.bus, link: link(), log, instanceId: "ingress-readiness", options: config.ingress });
  ingress.start();
  worker = buildWorker({ bus: await bus("worker"), link: link(), log, workerId: "worker-readiness", version: "test", concurrency: 4, ackWaitMs: 30_000 });
  worker.start();
  await until("ready at start", async () => (await ingressReady()).status === 200 && worker.ready().ready && controlPlane.ready());
});

after(async () => {
  await worker?.drain(1_000);
  await ingress?.close(500);
  await controlPlane?.close(500);
  for (const bus of buses) await bus.nc.close();
  for (const link of links) link.close();
  await nats?.stop();
});

test("the ingress, the worker and the control plane are not ready while NATS is away, and ready again once it is back", { timeout: 60_000 }, async () => {
  const restarting = nats.restart?.(3_000);
  assert.ok(restarting, "a local nats-server can be restarted");
  const lostAfter = await until("unready after the server stopped", async () => (await ingressReady()).status === 503, 3_000);
  const { reasons } = await ingressReady();
  assert.ok(reasons.includes("not connected to NATS"), `ingress says why: ${reasons.join(", ")}`);
  assert.ok(!worker.ready().ready && worker.ready().reasons.includes("not connected to NATS"), `worker: ${worker.ready().reasons.join(", ")}`);
  assert.equal(controlPlane.ready(), false, "control plane not ready");
  // Still away (the server is down for 3 s): not ready the whole time, whatever the client library's own state.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  assert.equal((await ingressReady()).status, 503);
  await restarting;
  await until("ready again after the server came back", async () => (await ingressReady()).status === 200 && worker.ready().ready && controlPlane.ready());
  assert.ok(lostAfter < 3_000, `noticed within ${lostAfter} ms`);
});
