/**
 * API keys reload like routes: a key added to runnel.yaml works on the
 * ingress after the control plane's reload, a revoked one stops working
 * (also for new requests on a WebSocket opened with it), and no restart is
 * needed. The keys reach the ingress in its routing
 * snapshot as digests, never the keys themselves; workers get none.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { buildControlPlane, ConfigReloader, type ControlPlane } from "@runnel/control-plane";
import { buildIngress, type Ingress } from "@runnel/ingress";
import { type NatsHandle, startNats } from "@runnel/launcher";
import { type Bus, ControlPlaneLink, connectNats, controlPlane, createLogger, ensureTopology, loadConfig, type RoutingSnapshot } from "@runnel/shared";
import WebSocket from "ws";

const log = createLogger("test", process.env.TEST_LOG_LEVEL ?? "silent");
const KEY_A = "sk-runnel-key-of-team-a-0001";
const KEY_B = "sk-runnel-key-of-team-b-0002";

const configText = (keys: Record<string, string> | undefined) => `
providers:
  - { name: p, type: mock, baseUrl: "http://127.0.0.1:1/v1", apiKey: sk-provider-secret }
models:
  - { name: m, routes: [{ provider: p, model: m }] }
${
  keys
    ? `auth:\n  apiKeys:\n${Object.entries(keys)
        .map(([name, key]) => `    - { name: ${name}, key: "${key}" }`)
        .join("\n")}`
    : ""
}
`;

let nats: NatsHandle;
let bus: Bus;
let cp: ControlPlane;
let reloader: ConfigReloader;
let ingress: Ingress;
const links: ControlPlaneLink[] = [];
let dir: string;
let path: string;
let target: string;

async function status(key: string | undefined): Promise<number> {
  const response = await ingress.app.inject({ method: "GET", url: "/v1/models", headers: key ? { authorization: `Bearer ${key}` } : {} });
  return response.statusCode;
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not ${what} within 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "runnel-keys-"));
  path = join(dir, "runnel.yaml");
  writeFileSync(path, configText({ "team-a": KEY_A }));
  nats = await startNats();
  const env = { RUNNEL_CONFIG: path };
  bus = await ensureTopology(await connectNats(nats.url, "keys-test"), loadConfig(env).bus);
  cp = buildControlPlane({ config: loadConfig(env), bus, log, instanceId: "cp-keys" });
  target = `127.0.0.1:${await cp.listen("127.0.0.1", 0)}`;
  reloader = new ConfigReloader({ load: () => loadConfig(env), snapshots: cp.snapshots, log, path, debounceMs: 50 });
  reloader.watch();
  const link = new ControlPlaneLink(target, log);
  links.push(link);
  ingress = buildIngress({ bus, busOptions: loadConfig(env).bus, link, log, instanceId: "ingress-keys", options: loadConfig(env).ingress });
  ingress.start();
  await until("ready", async () => (await ingress.app.inject({ method: "GET", url: "/readyz" })).statusCode === 200);
});

after(async () => {
  reloader?.close();
  await ingress?.close(200);
  await cp?.close(200);
  for (const link of links) link.close();
  await bus?.nc.drain();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("a key added to runnel.yaml works after the reload, a revoked one stops working, without a restart", async () => {
  assert.equal(await status(KEY_A), 200);
  assert.equal(await status(KEY_B), 401);
  assert.equal(await status(undefined), 401);

  writeFileSync(path, configText({ "team-a": KEY_A, "team-b": KEY_B }));
  await until("accepting the added key", async () => (await status(KEY_B)) === 200);
  assert.equal(await status(KEY_A), 200);

  writeFileSync(path, configText({ "team-b": KEY_B }));
  await until("refusing the revoked key", async () => (await status(KEY_A)) === 401);
  assert.equal(await status(KEY_B), 200);

  // Removing the auth section opens the gateway (as at start, loudly logged); putting it back closes it.
  writeFileSync(path, configText(undefined));
  await until("open", async () => (await status(undefined)) === 200);
  writeFileSync(path, configText({ "team-a": KEY_A }));
  await until("closed again", async () => (await status(undefined)) === 401);
});

test("the ingress's snapshot carries key digests, never the keys; a worker's carries none", async () => {
  const watch = (role: controlPlane.DataPlaneRole) =>
    new Promise<RoutingSnapshot>((resolve) => {
      const link = new ControlPlaneLink(target, log);
      links.push(link);
      link.watchRouting(role, `watch-${role}`, (snapshot) => resolve(snapshot));
    });
  const forIngress = await watch(controlPlane.DataPlaneRole.DATA_PLANE_ROLE_INGRESS);
  const forWorker = await watch(controlPlane.DataPlaneRole.DATA_PLANE_ROLE_WORKER);
  const ingressJson = JSON.stringify(controlPlane.RoutingSnapshot.toJSON(forIngress));
  assert.equal(forIngress.clientAuth?.enabled, true);
  assert.deepEqual(
    forIngress.clientAuth?.keys.map((key) => key.name),
    ["team-a"],
  );
  assert.equal(ingressJson.includes(KEY_A), false, "no client key in the ingress's snapshot");
  assert.equal(ingressJson.includes("sk-provider-secret"), false, "no provider key in the ingress's snapshot");
  assert.equal(forWorker.clientAuth, undefined, "a worker gets no client keys");
  assert.equal(forWorker.providers[0]?.apiKey, "sk-provider-secret");
});

test("a key revoked from runnel.yaml opens no more streams on a WebSocket already open with it; what runs goes on", async () => {
  const address = await ingress.app.listen({ host: "127.0.0.1", port: 0 });
  writeFileSync(path, configText({ "team-a": KEY_A, "team-b": KEY_B }));
  await until("accepting team-b", async () => (await status(KEY_B)) === 200);

  const socket = new WebSocket(`${address.replace(/^http/, "ws")}/v1/ws`, { headers: { authorization: `Bearer ${KEY_A}` } });
  const frames: Array<{ type: string; id: unknown; streamId?: string; error?: { code: string } }> = [];
  socket.on("message", (data) => frames.push(JSON.parse(String(data))));
  await new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("error", reject);
  });
  const frameOf = (id: string, type: string) => frames.find((frame) => frame.id === id && frame.type === type);
  const request = (id: string) => socket.send(JSON.stringify({ type: "request", id, body: { model: "m", messages: [{ role: "user", content: "hi" }] } }));

  request("before");
  await until("the stream opened before the revoke", async () => frameOf("before", "started") !== undefined);

  writeFileSync(path, configText({ "team-b": KEY_B }));
  await until("refusing the revoked key", async () => (await status(KEY_A)) === 401);
  request("after");
  await until("the request after the revoke answered", async () => frameOf("after", "error") !== undefined || frameOf("after", "started") !== undefined);
  assert.equal(frameOf("after", "started"), undefined, "no stream opened with the revoked key");
  const refused = frameOf("after", "error");
  assert.equal(refused?.error?.code, "RUNNEL_ERR_UNAUTHORIZED");
  assert.equal(refused?.streamId, undefined);
  assert.equal(socket.readyState, WebSocket.OPEN, "the socket stays open");
  assert.equal(frameOf("before", "error"), undefined, "the stream opened before the revoke goes on");

  const closed = new Promise((resolve) => socket.once("close", resolve));
  socket.close();
  await closed;
  writeFileSync(path, configText({ "team-a": KEY_A }));
  await until("back to team-a alone", async () => (await status(KEY_A)) === 200 && (await status(KEY_B)) === 401);
});
