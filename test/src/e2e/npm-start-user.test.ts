/**
 * The README's real-provider path, exactly as a user takes it: a
 * runnel.yaml whose provider key, provider URL and client API key are
 * `${VAR}`s set only in the user's shell, `RUNNEL_CONFIG=./runnel.yaml npm
 * start` run as a child process from the directory holding the file, the
 * official `openai` SDK as the client, the admin command the banner prints,
 * a SIGHUP to the launcher (a reload, not a crash), and Ctrl-C's clean stop.
 * The "provider" is the mock, which speaks OpenAI's wire format and records
 * the digest of the key it was sent.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { freePort, REPO_ROOT } from "@runnel/launcher";
import { buildMockProvider, mockText } from "@runnel/mock-provider";
import OpenAI from "openai";
import { alive, cmdline, descendants } from "./processes.js";

const run = promisify(execFile);

/** Collects a child's output; `until` resolves once it matches (or rejects on exit or timeout). */
function output(child: ChildProcess): { text: () => string; until: (pattern: RegExp, timeoutMs: number) => Promise<string> } {
  let text = "";
  const listeners = new Set<() => void>();
  const onData = (data: Buffer) => {
    text += data.toString();
    for (const listener of listeners) listener();
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  return {
    text: () => text,
    until: (pattern, timeoutMs) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (!pattern.test(text)) return;
          cleanup();
          resolve(text);
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no ${pattern} within ${timeoutMs} ms; output:\n${text.slice(-4000)}`));
        }, timeoutMs);
        const onExit = (code: number | null) => {
          cleanup();
          reject(new Error(`npm start exited with ${code}; output:\n${text.slice(-4000)}`));
        };
        const cleanup = () => {
          clearTimeout(timer);
          listeners.delete(check);
          child.off("exit", onExit);
        };
        listeners.add(check);
        child.once("exit", onExit);
        check();
      }),
  };
}

const CONFIG = `# As README.md and docs/configuration.md show: secrets and addresses come from the environment.
providers:
  - { name: primary, type: openai, baseUrl: "\${UPSTREAM_BASE_URL}", apiKey: "\${OPENAI_API_KEY}" }
models:
  - name: chat
    routes:
      - { provider: primary, model: gpt-4o-mini }
auth:
  apiKeys:
    - { name: me, key: "\${RUNNEL_API_KEY}" }
`;

test("npm start with a runnel.yaml whose keys and URL come from the user's environment, streamed with the openai SDK; SIGHUP reloads; Ctrl-C stops cleanly", {
  timeout: 180_000,
}, async () => {
  const provider = buildMockProvider();
  const providerPort = await provider.listen(0, "127.0.0.1");
  const dir = join(REPO_ROOT, ".runnel", `user-${randomBytes(4).toString("hex")}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "runnel.yaml"), CONFIG);
  const providerKey = `sk-user-provider-${randomBytes(8).toString("hex")}`;
  const clientKey = `rk-user-client-${randomBytes(8).toString("hex")}`;
  const port = await freePort();
  const grpcPort = await freePort();
  const { NATS_URL: _ignored, ...shell } = process.env;
  // The user's shell: these are set nowhere else.
  const env = {
    ...shell,
    OPENAI_API_KEY: providerKey,
    UPSTREAM_BASE_URL: `http://127.0.0.1:${providerPort}/v1`,
    RUNNEL_API_KEY: clientKey,
    RUNNEL_CONFIG: "./runnel.yaml",
    PORT: String(port),
    GRPC_PORT: String(grpcPort),
    MOCK_PORT: String(await freePort()),
    RUNNEL_JAEGER: "0",
  };
  // Its own process group, as a terminal gives a command: Ctrl-C reaches the whole group.
  const child = spawn("npm", ["start"], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  const out = output(child);
  try {
    await out.until(/Runnel is ready at http:\/\/127\.0\.0\.1:\d+/, 150_000);
    assert.match(
      out.text(),
      new RegExp(`Config: ${dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/runnel\\.yaml`),
      "the relative path, from where npm start was run",
    );

    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: clientKey, maxRetries: 0 });
    const stream = await client.chat.completions.create({ model: "chat", stream: true, messages: [{ role: "user", content: "Hello" }] });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    assert.equal(text, mockText(32, 0));
    const journal = provider.journal.entries();
    assert.equal(
      journal.at(-1)?.credentialSha256,
      createHash("sha256").update(providerKey).digest("hex"),
      "the provider got the key from the user's environment",
    );
    const wrong = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "rk-not-the-key-0000000000", maxRetries: 0 });
    await assert.rejects(wrong.chat.completions.create({ model: "chat", messages: [{ role: "user", content: "Hi" }] }), { status: 401 });

    // The admin command the banner printed reaches this stack's control plane (GRPC_PORT is not the default).
    const admin = /Admin: (.+?) {3}\(control plane/.exec(out.text())?.[1];
    assert.ok(admin?.includes(`127.0.0.1:${grpcPort}`), `admin command: ${admin}`);
    const listed = await run("sh", ["-c", `${admin} --json`], { cwd: REPO_ROOT, env: shell, timeout: 30_000 });
    assert.equal((JSON.parse(listed.stdout) as { streams: unknown[] }).streams.length, 1);

    // SIGHUP to the launcher (the pid the banner names) reloads: forwarded to the control plane; the stack keeps serving.
    const launcher = Number(/kill -HUP (\d+) reloads it/.exec(out.text())?.[1]);
    assert.ok(
      cmdline(launcher).some((arg) => arg.endsWith(join("scripts", "start.mjs"))),
      "the banner names the launcher's pid",
    );
    const started = descendants(child.pid ?? 0);
    const natsArgs = started.map(cmdline).find((args) => args[0]?.endsWith("nats-server")) ?? [];
    const store = natsArgs[natsArgs.indexOf("-sd") + 1];
    assert.ok(store && existsSync(store), `the temporary NATS store: ${store}`);
    process.kill(launcher, "SIGHUP");
    await out.until(/"trigger":"SIGHUP"/, 15_000);
    const again = await client.chat.completions.create({ model: "chat", messages: [{ role: "user", content: "Still there?" }] });
    assert.equal(again.choices[0]?.finish_reason, "stop");

    // Ctrl-C (SIGINT to the terminal's foreground process group): every process ends, and the temporary store goes with them.
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once("exit", (code, signal) => resolve({ code, signal })),
    );
    process.kill(-(child.pid ?? 0), "SIGINT");
    const exit = await exited;
    // npm ends itself by the signal it was sent once its script has stopped.
    assert.ok(exit.code === 0 || exit.signal === "SIGINT", `npm start ended with ${JSON.stringify(exit)}`);
    assert.doesNotMatch(out.text(), /exited unexpectedly/);
    const deadline = Date.now() + 10_000;
    while (started.some(alive) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(started.filter(alive), [], "every process npm start launched has exited");
    assert.equal(existsSync(store), false, "the temporary NATS store was removed");
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    for (const pid of descendants(child.pid ?? 0)) process.kill(pid, "SIGKILL");
    await Promise.race([provider.close(), new Promise((resolve) => setTimeout(resolve, 2_000))]);
    rmSync(dir, { recursive: true, force: true });
  }
});
