/**
 * The bootstrap every fresh clone runs (scripts/bootstrap.mjs): it runs the
 * nats-server the chart deploys, never an older one that happens to be on
 * the PATH (Debian's is 2.9), and it installs from the committed lock file,
 * which must be in the form npm leaves untouched (else a fresh clone's first
 * `npm start` dirties it).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { NATS_SERVER_VERSION, REPO_ROOT } from "@runnel/launcher";
import { parse } from "yaml";

const run = promisify(execFile);
const BOOTSTRAP = join(REPO_ROOT, "scripts", "bootstrap.mjs");

/** Runs `ensureNatsServer()` of the bootstrap in a child with `env`; its result and what it logged. */
async function ensureNatsServer(env: Record<string, string>): Promise<{ path: string; log: string } | { error: string }> {
  const script = `import(${JSON.stringify(BOOTSTRAP)}).then((m) => { try { console.log(m.ensureNatsServer()); } catch (e) { console.log("ERROR " + e.message); } })`;
  const { stdout, stderr } = await run(process.execPath, ["--input-type=module", "-e", script], { env, timeout: 120_000 });
  const line = stdout.trim();
  return line.startsWith("ERROR ") ? { error: line.slice(6) } : { path: line, log: stderr };
}

test("the bootstrap, the launcher's testcontainers image and the chart name the same nats-server release", () => {
  const bootstrap = /NATS_SERVER_VERSION = "v([\d.]+)"/.exec(readFileSync(BOOTSTRAP, "utf8"))?.[1];
  const chart = (parse(readFileSync(join(REPO_ROOT, "charts", "runnel", "values.yaml"), "utf8")) as { nats: { image: { tag: string } } }).nats.image.tag;
  assert.equal(bootstrap, NATS_SERVER_VERSION);
  assert.equal(chart, `${NATS_SERVER_VERSION}-alpine`);
});

test("an older nats-server on the PATH is passed over, saying so; NATS_SERVER_BIN pointing at one is refused", { timeout: 150_000 }, async () => {
  const fake = mkdtempSync(join(tmpdir(), "runnel-old-nats-"));
  try {
    const old = join(fake, "nats-server");
    writeFileSync(old, "#!/bin/sh\necho 'nats-server: v2.9.10'\n");
    chmodSync(old, 0o755);
    const { NATS_SERVER_BIN: _bin, ...rest } = process.env as Record<string, string>;
    const chosen = await ensureNatsServer({ ...rest, PATH: `${fake}:${process.env.PATH ?? ""}` });
    assert.ok("path" in chosen, JSON.stringify(chosen));
    assert.notEqual(chosen.path, old, "not the old server on the PATH");
    assert.match(chosen.log, /v2\.9\.10, older than the v2\.15\.\d+ the chart deploys; not using it/);
    const { stdout } = await run(chosen.path, ["--version"]);
    const [major, minor] = (/v(\d+)\.(\d+)/.exec(stdout) ?? []).slice(1).map(Number);
    assert.ok((major ?? 0) > 2 || (minor ?? 0) >= 15, `${chosen.path} is ${stdout.trim()}`);

    const refused = await ensureNatsServer({ ...rest, NATS_SERVER_BIN: old });
    assert.ok("error" in refused);
    assert.match(refused.error, /NATS_SERVER_BIN=.* is v2\.9\.10; Runnel needs v2\.15\.\d+ or a later release/);
  } finally {
    rmSync(fake, { recursive: true, force: true });
  }
});

test("package-lock.json is in the form npm leaves untouched, so a fresh clone's install does not modify it", { timeout: 60_000 }, async () => {
  const copy = mkdtempSync(join(tmpdir(), "runnel-lock-"));
  try {
    const root = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { workspaces: string[] };
    for (const file of ["package.json", "package-lock.json", ...root.workspaces.map((workspace) => join(workspace, "package.json"))]) {
      mkdirSync(dirname(join(copy, file)), { recursive: true });
      cpSync(join(REPO_ROOT, file), join(copy, file));
    }
    // What `npm install` would write to the lock file, without installing (from the cache where it can).
    await run("npm", ["install", "--package-lock-only", "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: copy, timeout: 60_000 });
    assert.equal(readFileSync(join(copy, "package-lock.json"), "utf8"), readFileSync(join(REPO_ROOT, "package-lock.json"), "utf8"));
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
});
