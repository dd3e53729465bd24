/**
 * Who may use the console's inspector, at the HTTP level, as the keys in
 * runnel.yaml change (they reach the ingress with the routing snapshot, so a
 * reload changes the answer without a restart): no admin key configured,
 * disabled (404) even with console.inspectorWithoutAuth; an admin key, admin
 * keys only (401 without a key, 403 with another); no auth section, open
 * only because the ingress was told inspectorWithoutAuth. The playground at
 * `/` is served throughout, and not at all with console.enabled false.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { buildControlPlane, ConfigReloader, type ControlPlane } from "@runnel/control-plane";
import { buildIngress, type Ingress } from "@runnel/ingress";
import { type NatsHandle, startNats } from "@runnel/launcher";
import { type Bus, ControlPlaneLink, connectNats, createLogger, ensureTopology, loadConfig } from "@runnel/shared";

const log = createLogger("test", process.env.TEST_LOG_LEVEL ?? "silent");
const APP_KEY = "sk-console-app-key-0001";
const OPS_KEY = "sk-console-ops-key-0002";

const configText = (auth: "none" | "no-admin" | "admin") => `
providers:
  - { name: p, type: mock, baseUrl: "http://127.0.0.1:1/v1" }
models:
  - { name: m, routes: [{ provider: p, model: m }] }
${
  auth === "none"
    ? ""
    : `auth:
  apiKeys:
    - { name: app, key: "${APP_KEY}" }
    - { name: ops, key: "${OPS_KEY}", admin: ${auth === "admin"} }`
}
`;

let nats: NatsHandle;
let bus: Bus;
let cp: ControlPlane;
let reloader: ConfigReloader;
let ingress: Ingress;
let base: string;
const links: ControlPlaneLink[] = [];
let dir: string;
let path: string;

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not ${what} within 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The feed's status, and its first event when it answered 200 (then the connection is let go). */
async function feed(key: string | undefined): Promise<{ status: number; first: string }> {
  const controller = new AbortController();
  const response = await fetch(`${base}/console/api/feed`, { headers: key ? { authorization: `Bearer ${key}` } : {}, signal: controller.signal });
  if (response.status !== 200) {
    await response.body?.cancel();
    return { status: response.status, first: "" };
  }
  const reader = response.body?.getReader();
  const chunk = await reader?.read();
  controller.abort();
  return { status: 200, first: new TextDecoder().decode(chunk?.value) };
}

async function inspector(): Promise<{ inspector: string; access: string; reason: string }> {
  return (await fetch(`${base}/console/api/status`)).json() as Promise<{ inspector: string; access: string; reason: string }>;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "runnel-console-"));
  path = join(dir, "runnel.yaml");
  writeFileSync(path, configText("no-admin"));
  nats = await startNats();
  const env = { RUNNEL_CONFIG: path };
  bus = await ensureTopology(await connectNats(nats.url, "console-test"), loadConfig(env).bus);
  cp = buildControlPlane({ config: loadConfig(env), bus, log, instanceId: "cp-console" });
  const target = `127.0.0.1:${await cp.listen("127.0.0.1", 0)}`;
  reloader = new ConfigReloader({ load: () => loadConfig(env), snapshots: cp.snapshots, log, path, debounceMs: 50 });
  reloader.watch();
  const link = new ControlPlaneLink(target, log);
  links.push(link);
  ingress = buildIngress({
    bus,
    busOptions: loadConfig(env).bus,
    link,
    log,
    instanceId: "ingress-console",
    options: loadConfig(env).ingress,
    console: { enabled: true, inspectorWithoutAuth: true },
  });
  ingress.start();
  base = await ingress.app.listen({ host: "127.0.0.1", port: 0 });
  await until("ready", async () => (await fetch(`${base}/readyz`)).status === 200);
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

test("the inspector follows the keys of runnel.yaml as it reloads; the playground is served throughout", async () => {
  // Auth on, no admin key: disabled, whatever inspectorWithoutAuth says (it is for a gateway without auth).
  assert.equal((await inspector()).inspector, "disabled");
  assert.match((await inspector()).reason, /admin: true/);
  assert.equal((await feed(OPS_KEY)).status, 404);
  assert.equal((await fetch(`${base}/console/api/streams/AAAAAAAAAAAAAAAAAAAAAA`, { headers: { authorization: `Bearer ${OPS_KEY}` } })).status, 404);
  const page = await fetch(`${base}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
  await page.body?.cancel();

  // The key is made an admin key: admin keys only.
  writeFileSync(path, configText("admin"));
  await until("the inspector enabled", async () => (await inspector()).inspector === "enabled");
  assert.equal((await inspector()).access, "admin-key");
  assert.equal((await feed(undefined)).status, 401);
  assert.equal((await feed(APP_KEY)).status, 403);
  const admitted = await feed(OPS_KEY);
  assert.equal(admitted.status, 200);
  assert.match(admitted.first, /^event: hello\ndata: \{"now":\d+,"lingerMs":\d+,"instance":"ingress-console"\}/);
  const unknown = await fetch(`${base}/console/api/streams/AAAAAAAAAAAAAAAAAAAAAA`, { headers: { authorization: `Bearer ${OPS_KEY}` } });
  assert.equal(unknown.status, 404);
  assert.equal(((await unknown.json()) as { error: { code: string } }).error.code, "RUNNEL_ERR_STREAM_NOT_FOUND");
  const cancel = await fetch(`${base}/console/api/streams/AAAAAAAAAAAAAAAAAAAAAA`, { method: "DELETE", headers: { authorization: `Bearer ${OPS_KEY}` } });
  assert.equal(cancel.status, 404, "no cancel of a stream that does not exist (it would record one)");
  await cancel.body?.cancel();

  // No auth section: open, because this ingress was told inspectorWithoutAuth.
  writeFileSync(path, configText("none"));
  await until("the inspector open", async () => (await inspector()).access === "open");
  assert.equal((await inspector()).inspector, "enabled");
  assert.equal((await feed(undefined)).status, 200);
});

test("console.enabled false: no playground, no inspector", async () => {
  const off = buildIngress({
    bus,
    busOptions: loadConfig({ RUNNEL_CONFIG: path }).bus,
    link: new ControlPlaneLink("127.0.0.1:1", log),
    log,
    instanceId: "ingress-console-off",
    options: loadConfig({ RUNNEL_CONFIG: path }).ingress,
    console: { enabled: false, inspectorWithoutAuth: true },
  });
  try {
    assert.equal((await off.app.inject({ method: "GET", url: "/" })).statusCode, 404);
    assert.equal((await off.app.inject({ method: "GET", url: "/console/api/status" })).statusCode, 404);
  } finally {
    await off.close(0);
  }
});
