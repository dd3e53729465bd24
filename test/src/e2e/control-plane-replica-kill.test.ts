/**
 * A control-plane replica killed under load: no request fails. The stack
 * runs two control-plane replicas (every ingress and worker knows both);
 * 20 clients stream completions back to back for about 10 s, and one
 * replica is SIGKILLed mid-way. Every request must end with `[DONE]` and the
 * mock's whole text. Then the survivor does everything the pair did: the
 * admin CLI lists, reads and cancels streams and lists the worker (which
 * re-registered with it), and a change to the config file reaches the
 * ingress through it, without a request failing.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type NatsHandle, REPO_ROOT, type Stack, startNats, startStack } from "@runnel/launcher";
import { mockText } from "@runnel/mock-provider";
import { E2E_CONFIG } from "./helpers.js";

const CLI = join(REPO_ROOT, "services", "control-plane", "dist", "cli.js");
const CLIENTS = 20;
const LOAD_MS = 10_000;
const KILL_AT_MS = 4_000;
/** Half a second per stream: many streams are mid-way when the replica dies. */
const STEADY_MODEL = "steady";
const STEADY_TEXT = mockText(50, 7);

interface Tally {
  ok: number;
  failed: string[];
}

/** One streamed completion through the ingress; resolves with the failure, or undefined when it ended with the whole text and [DONE]. */
async function complete(ingressUrl: string, model: string, expected: string): Promise<string | undefined> {
  let body = "";
  try {
    const response = await fetch(`${ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model, stream: true, messages: [{ role: "user", content: "go" }] }),
      signal: AbortSignal.timeout(15_000),
    });
    body = await response.text();
    if (response.status !== 200) return `HTTP ${response.status}: ${body.slice(0, 300)}`;
  } catch (error) {
    return `request failed: ${error instanceof Error ? error.message : String(error)}`;
  }
  const data = body
    .split("\n")
    .filter((line) => line.startsWith("data: "))
    .map((line) => line.slice(6));
  if (data.at(-1) !== "[DONE]") return `no [DONE]: ${body.slice(-300)}`;
  const text = data
    .slice(0, -1)
    .map((line) => (JSON.parse(line) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta?.content ?? "")
    .join("");
  return text === expected ? undefined : `wrong text: ${text.slice(0, 80)}…`;
}

function cli(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === "number" ? error.code : null) : 0, stdout, stderr }),
    );
  });
}

describe("a control-plane replica killed under load", () => {
  let nats: NatsHandle;
  let stack: Stack;
  let dir: string;
  let configPath: string;
  let baseConfig: string;
  const tally: Tally = { ok: 0, failed: [] };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "runnel-cp-kill-"));
    configPath = join(dir, "runnel.yaml");
    baseConfig = `${readFileSync(E2E_CONFIG, "utf8").replace(/^models:\n/m, `models:\n  - name: ${STEADY_MODEL}\n    routes: [{ provider: mock, model: "mock?tokens=50&itl=10&seed=7" }]\n`)}`;
    writeFileSync(configPath, baseConfig);
    nats = await startNats();
    stack = await startStack({
      natsUrl: nats.url,
      env: { RUNNEL_CONFIG: configPath, LOG_LEVEL: "info" },
      replicas: { "control-plane": 2 },
      logDir: join(REPO_ROOT, ".runnel", "logs", "control-plane-replica-kill"),
    });
  });

  after(async () => {
    await stack?.stop();
    await nats?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("no request fails while one replica is SIGKILLed", async (t) => {
    const [victim, survivor] = stack.replicas("control-plane");
    assert.ok(victim && survivor, "two control-plane replicas");
    const started = Date.now();
    const clients = Array.from({ length: CLIENTS }, async () => {
      while (Date.now() - started < LOAD_MS) {
        const failure = await complete(stack.ingressUrl, STEADY_MODEL, STEADY_TEXT);
        if (failure) tally.failed.push(failure);
        else tally.ok += 1;
      }
    });
    await new Promise((resolve) => setTimeout(resolve, KILL_AT_MS));
    const before = tally.ok;
    victim.process.kill("SIGKILL");
    await new Promise((resolve) => victim.process.once("exit", resolve));
    const killedAt = Date.now() - started;
    await Promise.all(clients);
    t.diagnostic(`${tally.ok} requests, ${tally.ok - before} after the kill at ${killedAt} ms, ${tally.failed.length} failed`);

    assert.deepEqual(tally.failed, [], `${tally.failed.length} of ${tally.ok + tally.failed.length} requests failed`);
    assert.ok(before > CLIENTS, `load before the kill (${before} requests)`);
    assert.ok(tally.ok - before > CLIENTS * 4, `load after the kill at ${killedAt} ms (${tally.ok - before} requests)`);
    assert.equal(survivor.process.exitCode, null, "the survivor is still running");
  });

  test("the admin CLI works against the survivor, given both addresses or its own", async () => {
    const both = stack.controlPlaneTargets.join(",");
    const survivor = stack.controlPlaneTargets[1] as string;
    for (const url of [both, survivor]) {
      const workers = await cli(["--url", url, "workers", "--json"]);
      assert.equal(workers.code, 0, workers.stderr);
      const listed = (JSON.parse(workers.stdout) as { workers: { workerId: string; lastSeenMs: number; draining: boolean }[] }).workers;
      assert.equal(listed.length, 1, "the worker is live (it registered with the survivor)");
      assert.ok(Date.now() - (listed[0]?.lastSeenMs ?? 0) < 5_000, "heartbeats reach the survivor");

      const done = await cli(["--url", url, "streams", "ls", "--phase", "done", "--limit", "3", "--json"]);
      assert.equal(done.code, 0, done.stderr);
      const streams = (JSON.parse(done.stdout) as { streams: { streamId: string; phase: string; model: string }[] }).streams;
      assert.equal(streams.length, 3);
      const got = await cli(["--url", url, "streams", "get", streams[0]?.streamId ?? "", "--json"]);
      assert.equal(got.code, 0, got.stderr);
      assert.deepEqual([(JSON.parse(got.stdout) as { phase: string }).phase, (JSON.parse(got.stdout) as { model: string }).model], ["done", STEADY_MODEL]);

      const providers = await cli(["--url", url, "providers", "--json"]);
      assert.equal(providers.code, 0, providers.stderr);
      const status = JSON.parse(providers.stdout) as { providers: { name: string; healthy: boolean }[] };
      assert.ok(status.providers.some((provider) => provider.name === "mock" && provider.healthy));
    }

    // A stream cancelled through the survivor ends with RUNNEL_ERR_CANCELLED, and the provider is let go.
    const response = await fetch(`${stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "long", stream: true, messages: [{ role: "user", content: "go" }] }),
    });
    const streamId = response.headers.get("x-runnel-stream-id") ?? "";
    assert.ok(streamId, "the ingress names the stream");
    const reading = response.text();
    const cancelled = await cli(["--url", both, "streams", "cancel", streamId, "--reason", "ops"]);
    assert.equal(cancelled.code, 0, cancelled.stderr);
    assert.match(cancelled.stdout, new RegExp(`^cancelled ${streamId}`));
    const body = await reading;
    assert.match(body, /RUNNEL_ERR_CANCELLED/);
    assert.doesNotMatch(body, /\[DONE\]/);
  });

  test("a config change reaches the ingress through the survivor", async () => {
    writeFileSync(configPath, baseConfig.replace(/^models:\n/m, `models:\n  - name: added\n    routes: [{ provider: mock, model: "mock?seed=9" }]\n`));
    const deadline = Date.now() + 10_000;
    for (;;) {
      const models = (await (await fetch(`${stack.ingressUrl}/v1/models`)).json()) as { data: { id: string }[] };
      if (models.data.some((model) => model.id === "added")) break;
      if (Date.now() > deadline) throw new Error(`the new model never reached the ingress: ${JSON.stringify(models)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(await complete(stack.ingressUrl, "added", mockText(32, 9)), undefined);
  });
});
