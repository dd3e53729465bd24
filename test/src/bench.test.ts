/**
 * The benchmark's quick mode as a smoke test: it runs to the end and writes
 * well-formed results with every scenario. No thresholds: figures on a shared
 * CI machine are not assertions (docs/benchmarks.md).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "@runnel/launcher";

test("npm run bench -- --quick completes and writes every scenario", { timeout: 240_000 }, async (t) => {
  const out = mkdtempSync(join(tmpdir(), "runnel-bench-"));
  t.after(() => rmSync(out, { recursive: true, force: true }));
  const child = spawn(process.execPath, [join(REPO_ROOT, "bench", "dist", "main.js"), "--quick", "--out", out], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const keep = (data: Buffer) => {
    output = (output + data.toString()).slice(-20_000);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const code = await new Promise<number | null>((resolve) => child.on("exit", (exitCode) => resolve(exitCode)));
  assert.equal(code, 0, `the quick benchmark failed:\n${output}`);

  const results = JSON.parse(readFileSync(join(out, "results.json"), "utf8"));
  assert.equal(results.mode, "quick");
  assert.deepEqual(
    results.ttft.map((t: { concurrency: number }) => t.concurrency),
    [1, 50, 500],
  );
  for (const scenario of results.ttft) {
    for (const path of ["direct", "proxy", "runnel"]) assert.equal(typeof scenario.paths[path].p99, "number", `ttft c=${scenario.concurrency} ${path}`);
  }
  for (const path of ["direct", "proxy", "runnel"]) {
    assert.equal(typeof results.itl.paths[path].gaps.p99, "number", `itl ${path}`);
    assert.equal(typeof results.throughput.paths[path].tokensPerSecond, "number", `throughput ${path}`);
    assert.equal(typeof results.cancel.paths[path].p99, "number", `cancel ${path}`);
  }
  assert.deepEqual(
    results.memory.map((m: { transport: string }) => m.transport),
    ["sse", "ws"],
  );
  assert.equal(typeof results.memory[0].paths.runnel.kbPerStream, "number");
  for (const path of ["direct", "runnel"]) assert.equal(typeof results.failover.paths[path].extraP99, "number", `failover ${path}`);
  assert.ok(Array.isArray(results.table) && results.table.length > 0, "the table is in the JSON");
  assert.match(readFileSync(join(out, "results.svg"), "utf8"), /^<svg [^>]*>[\s\S]*<\/svg>\n$/);
});
