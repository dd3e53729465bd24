/**
 * The contract tree and the code's hygiene, checked on every run: `buf lint`
 * is clean, the committed generated TypeScript is exactly what `npm run proto`
 * produces from proto/, and the tree passes the one lint/format tool.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { REPO_ROOT } from "@runnel/launcher";

const run = promisify(execFile);
const bin = (name: string) => join(REPO_ROOT, "node_modules", ".bin", name);
const GENERATED = join("packages", "shared", "src", "gen");

async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)))
    .sort();
}

test("buf lint is clean", async () => {
  await run(bin("buf"), ["lint"], { cwd: REPO_ROOT });
});

test("the generated TypeScript is exactly what proto/ generates", async () => {
  const out = await mkdtemp(join(tmpdir(), "runnel-proto-"));
  try {
    await run(bin("buf"), ["generate", "--output", out], { cwd: REPO_ROOT });
    const fresh = join(out, GENERATED);
    const committed = join(REPO_ROOT, GENERATED);
    assert.deepEqual(await files(fresh), await files(committed), "the same files");
    for (const file of await files(fresh)) {
      const [a, b] = await Promise.all([readFile(join(fresh, file), "utf8"), readFile(join(committed, file), "utf8")]);
      assert.ok(a === b, `${file} differs from what proto/ generates: run npm run proto and commit`);
    }
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});

test("biome check (lint and format) is clean", async () => {
  try {
    await run(bin("biome"), ["check", "--max-diagnostics=20", "."], { cwd: REPO_ROOT });
  } catch (error) {
    const { stdout, stderr } = error as { stdout: string; stderr: string };
    assert.fail(`biome check failed:\n${stdout}\n${stderr}`);
  }
});
