/**
 * The control plane reloads runnel.yaml when the file changes, however it
 * changes: written in place, saved by rename as editors do, or swapped the
 * way Kubernetes updates a ConfigMap volume (a `..data` symlink pointed at a
 * new directory). A valid config reaches open watches as a new version on
 * the same call; a bad one is rejected with a message naming the field, and
 * the running config stays.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { buildControlPlane, ConfigReloader, type ControlPlane, type ReloadResult } from "@runnel/control-plane";
import { type NatsHandle, startNats } from "@runnel/launcher";
import { type Bus, ControlPlaneLink, connectNats, controlPlane, createLogger, ensureTopology, loadConfig, type RoutingSnapshot } from "@runnel/shared";

const log = createLogger("test", process.env.TEST_LOG_LEVEL ?? "silent");

/** A valid config serving the given public model names. */
const configText = (...models: string[]) => `
providers:
  - { name: p, type: mock, baseUrl: "http://127.0.0.1:1/v1" }
models:
${models.map((model) => `  - { name: ${model}, routes: [{ provider: p, model: m }] }`).join("\n")}
`;

const BAD_CONFIG = `
providers:
  - { name: p, type: mock, baseUrl: "http://127.0.0.1:1/v1" }
models:
  - { name: broken, routes: [{ provider: primery, model: m }] }
`;

interface Fixture {
  readonly cp: ControlPlane;
  readonly reloader: ConfigReloader;
  readonly results: ReloadResult[];
  readonly snapshots: RoutingSnapshot[];
  readonly link: ControlPlaneLink;
  close(): Promise<void>;
}

describe("config reload", () => {
  let nats: NatsHandle;
  let bus: Bus;
  const dirs: string[] = [];

  before(async () => {
    nats = await startNats();
    bus = await ensureTopology(await connectNats(nats.url, "reload-test"), loadConfig({}).bus);
  });

  after(async () => {
    await bus?.nc.drain();
    await nats?.stop();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), "runnel-reload-"));
    dirs.push(dir);
    return dir;
  };

  /** A control plane serving `path`, a reloader watching it, and a routing watch recording what it is pushed. */
  const start = async (path: string): Promise<Fixture> => {
    const env = { RUNNEL_CONFIG: path };
    const cp = buildControlPlane({ config: loadConfig(env), bus, log, instanceId: "cp-reload" });
    const target = `127.0.0.1:${await cp.listen("127.0.0.1", 0)}`;
    const results: ReloadResult[] = [];
    const reloader = new ConfigReloader({
      load: () => loadConfig(env),
      snapshots: cp.snapshots,
      log,
      path,
      debounceMs: 100,
      onReload: (result) => results.push(result),
    });
    reloader.watch();
    const snapshots: RoutingSnapshot[] = [];
    const link = new ControlPlaneLink(target, log);
    link.watchRouting(controlPlane.DataPlaneRole.DATA_PLANE_ROLE_INGRESS, "reload-watch", (snapshot) => snapshots.push(snapshot));
    await until(() => snapshots.length === 1, "the first snapshot");
    return {
      cp,
      reloader,
      results,
      snapshots,
      link,
      async close() {
        reloader.close();
        link.close();
        await cp.close(500);
      },
    };
  };

  const until = async (predicate: () => boolean, what: string, timeoutMs = 5_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

  const modelNames = (snapshot: RoutingSnapshot | undefined) => snapshot?.models.map((model) => model.name) ?? [];

  test("a file written in place is served as a new version on the open watch", async () => {
    const path = join(tempDir(), "runnel.yaml");
    writeFileSync(path, configText("one"));
    const fixture = await start(path);
    try {
      const first = fixture.cp.snapshots.current.version;
      writeFileSync(path, configText("one", "two"));
      await until(() => fixture.snapshots.length === 2, "the new snapshot");
      assert.deepEqual(modelNames(fixture.snapshots[1]), ["one", "two"]);
      assert.notEqual(fixture.cp.snapshots.current.version, first);
      assert.equal(fixture.results.length, 1, "one reload for one save (events are debounced)");
      assert.equal(fixture.results[0]?.ok, true);
      assert.equal(fixture.cp.snapshots.watchers, 1, "the watch was not re-opened");

      // Touching the file (same text) reloads nothing.
      writeFileSync(path, configText("one", "two"));
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.equal(fixture.results.length, 1);
    } finally {
      await fixture.close();
    }
  });

  test("a bad config is rejected with the field named; the running one stays until a good one comes", async () => {
    const path = join(tempDir(), "runnel.yaml");
    writeFileSync(path, configText("one"));
    const fixture = await start(path);
    try {
      const version = fixture.cp.snapshots.current.version;
      writeFileSync(path, BAD_CONFIG);
      await until(() => fixture.results.length === 1, "the rejection");
      const rejected = fixture.results[0];
      assert.equal(rejected?.ok, false);
      assert.match(rejected?.ok === false ? rejected.error : "", /models\[0\]\.routes\[0\]\.provider: unknown provider "primery"/);
      assert.equal(rejected?.version, version);
      assert.equal(fixture.cp.snapshots.current.version, version, "the old config is still served");
      assert.equal(fixture.snapshots.length, 1, "watchers were sent nothing");

      // Not YAML at all, then a file that cannot be read: rejected the same way.
      writeFileSync(path, "models: [unclosed");
      await until(() => fixture.results.length === 2, "the YAML rejection");
      assert.match(fixture.results[1]?.ok === false ? fixture.results[1].error : "", /not valid YAML/);
      rmSync(path);
      await until(() => fixture.results.length === 3, "the missing-file rejection");
      assert.match(fixture.results[2]?.ok === false ? fixture.results[2].error : "", /cannot read the file: ENOENT/);
      assert.equal(fixture.cp.snapshots.current.version, version);

      // A signal reload of the same bad state changes nothing either.
      assert.equal(fixture.reloader.reload("SIGHUP").ok, false);
      assert.equal(fixture.cp.snapshots.current.version, version);

      writeFileSync(path, configText("fixed"));
      await until(() => fixture.snapshots.length === 2, "the fixed config");
      assert.deepEqual(modelNames(fixture.snapshots[1]), ["fixed"]);
    } finally {
      await fixture.close();
    }
  });

  test("a save by rename (as editors do) is noticed, and again after it", async () => {
    const dir = tempDir();
    const path = join(dir, "runnel.yaml");
    writeFileSync(path, configText("one"));
    const fixture = await start(path);
    try {
      for (const [index, models] of [
        ["one", "two"],
        ["one", "two", "three"],
      ].entries()) {
        writeFileSync(join(dir, ".runnel.yaml.swp"), configText(...models));
        renameSync(join(dir, ".runnel.yaml.swp"), path);
        await until(() => fixture.snapshots.length === index + 2, `save ${index + 1}`);
        assert.deepEqual(modelNames(fixture.snapshots.at(-1)), models);
      }
    } finally {
      await fixture.close();
    }
  });

  test("a ConfigMap volume update (the ..data symlink swapped to a new directory) is noticed", async () => {
    // The layout the kubelet writes: runnel.yaml -> ..data/runnel.yaml, ..data -> ..<timestamp>/
    const dir = tempDir();
    const version = (name: string, text: string) => {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, "runnel.yaml"), text);
    };
    version("..2025_01_01_00_00_00.1", configText("one"));
    symlinkSync("..2025_01_01_00_00_00.1", join(dir, "..data"));
    symlinkSync("..data/runnel.yaml", join(dir, "runnel.yaml"));
    const path = join(dir, "runnel.yaml");
    const fixture = await start(path);
    try {
      let previous = "..2025_01_01_00_00_00.1";
      for (const [index, models] of [["one", "two"], ["three"]].entries()) {
        const next = `..2025_01_01_00_00_0${index + 1}.2`;
        version(next, configText(...models));
        // What the kubelet does: a new symlink renamed over ..data (atomic), then the old directory removed.
        symlinkSync(next, join(dir, "..data_tmp"));
        renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
        rmSync(join(dir, previous), { recursive: true });
        previous = next;
        await until(() => fixture.snapshots.length === index + 2, `update ${index + 1}`);
        assert.deepEqual(modelNames(fixture.snapshots.at(-1)), models);
      }
      assert.ok(
        fixture.results.every((result) => result.ok),
        JSON.stringify(fixture.results),
      );
    } finally {
      await fixture.close();
    }
  });
});
