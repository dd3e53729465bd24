/**
 * `npm start` as a user runs it: the script bootstraps, starts nats-server and
 * every service, prints the URL, serves a streamed completion to `curl -N`,
 * and on SIGTERM stops every process it started.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { freePort, REPO_ROOT } from "@runnel/launcher";
import { mockText } from "@runnel/mock-provider";
import { chatBody, parseSse } from "./helpers.js";
import { alive, descendants } from "./processes.js";

const run = promisify(execFile);

async function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  let output = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${pattern} within ${timeoutMs} ms; output:\n${output.slice(-4000)}`)), timeoutMs);
    const onData = (data: Buffer) => {
      output += data.toString();
      if (pattern.test(output)) {
        clearTimeout(timer);
        resolve(output);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`npm start exited with ${code}; output:\n${output.slice(-4000)}`));
    });
  });
}

test("npm start serves a streamed completion to curl -N and SIGTERM leaves no process behind", { timeout: 120_000 }, async () => {
  const port = await freePort();
  const mockPort = await freePort();
  const { NATS_URL: _ignored, ...env } = process.env;
  const child = spawn(process.execPath, [join(REPO_ROOT, "scripts", "start.mjs")], {
    cwd: REPO_ROOT,
    env: { ...env, PORT: String(port), MOCK_PORT: String(mockPort), GRPC_PORT: String(await freePort()), LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  try {
    const output = await waitForOutput(child, /Runnel is ready at http:\/\/127\.0\.0\.1:\d+/, 90_000);
    assert.match(output, new RegExp(`Runnel is ready at http://127\\.0\\.0\\.1:${port}`));
    const started = descendants(child.pid ?? 0);
    // nats-server and the four services
    assert.ok(started.length >= 5, `expected at least 5 child processes, found ${started.length}`);

    const { stdout } = await run("curl", [
      "-sS",
      "-N",
      `http://127.0.0.1:${port}/v1/chat/completions`,
      "-H",
      "content-type: application/json",
      "-d",
      chatBody("mock", { stream: true }),
    ]);
    const { events } = parseSse(stdout);
    assert.equal(events.at(-1)?.data, "[DONE]");
    const text = events
      .slice(0, -1)
      .map((event) => (JSON.parse(event.data) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? "")
      .join("");
    assert.equal(text, mockText(32, 0));

    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
    const deadline = Date.now() + 5_000;
    let left = started.filter(alive);
    while (left.length > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      left = started.filter(alive);
    }
    assert.deepEqual(left, [], "every process npm start launched has exited");
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
});

test("when a service dies, npm start stops the rest and exits non-zero", { timeout: 120_000 }, async () => {
  const port = await freePort();
  const mockPort = await freePort();
  const { NATS_URL: _ignored, ...env } = process.env;
  const child = spawn(process.execPath, [join(REPO_ROOT, "scripts", "start.mjs")], {
    cwd: REPO_ROOT,
    env: { ...env, PORT: String(port), MOCK_PORT: String(mockPort), GRPC_PORT: String(await freePort()), LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  try {
    await waitForOutput(child, /Runnel is ready at/, 90_000);
    const started = descendants(child.pid ?? 0);
    const worker = started.find((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(join("services", "worker", "dist", "main.js"));
      } catch {
        return false;
      }
    });
    assert.ok(worker, "found the worker process");
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    process.kill(worker, "SIGKILL");
    assert.equal(await exited, 1);
    const deadline = Date.now() + 5_000;
    let left = started.filter(alive);
    while (left.length > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      left = started.filter(alive);
    }
    assert.deepEqual(left, []);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
});
