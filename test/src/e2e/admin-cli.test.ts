/**
 * The admin CLI as an operator runs it: the real `runnel` process (and `npm
 * run runnel`) against a running control plane with a worker, tables for
 * people, JSON for scripts, gRPC statuses as messages and exit codes.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { buildControlPlane, type ControlPlane } from "@runnel/control-plane";
import { freePort, type NatsHandle, REPO_ROOT, startNats } from "@runnel/launcher";
import { buildMockProvider, type MockProvider } from "@runnel/mock-provider";
import {
  type Bus,
  ControlPlaneLink,
  connectNats,
  createLogger,
  EventLog,
  encodeJob,
  ensureTopology,
  JOBS_SUBJECT,
  Job,
  newStreamId,
  parseConfig,
  StreamPhase,
  StreamRecords,
} from "@runnel/shared";
import { buildWorker, type Worker } from "@runnel/worker";

const log = createLogger("test", process.env.TEST_LOG_LEVEL ?? "silent");
const CLI = join(REPO_ROOT, "services", "control-plane", "dist", "cli.js");

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command with a clean environment plus `env`; resolves whatever the exit code. */
function run(file: string, args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      file,
      [...args],
      { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env }, timeout: 30_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe("the runnel admin CLI", () => {
  let nats: NatsHandle;
  let bus: Bus;
  let mock: MockProvider;
  let cp: ControlPlane;
  let target: string;
  let worker: Worker;
  let link: ControlPlaneLink;
  let doneStream: string;
  const cli = (...args: string[]) => run(process.execPath, [CLI, "--url", target, ...args]);

  before(async () => {
    nats = await startNats();
    mock = buildMockProvider();
    const mockPort = await mock.listen(0, "127.0.0.1");
    const config = parseConfig(
      `providers: [{ name: mock, type: mock, baseUrl: "http://127.0.0.1:${mockPort}/v1" }]\nmodels: [{ name: mock, routes: [{ provider: mock, model: mock }] }]`,
      {},
    );
    bus = await ensureTopology(await connectNats(nats.url, "cli-test"), config.bus);
    cp = buildControlPlane({ config, bus, log, instanceId: "cp-cli", heartbeatIntervalMs: 200 });
    target = `127.0.0.1:${await cp.listen("127.0.0.1", 0)}`;
    link = new ControlPlaneLink(target, log);
    worker = buildWorker({ bus, link, log, workerId: "worker-cli", version: "test", concurrency: 2, ackWaitMs: config.bus.jobAckWait });
    worker.start();
    const records = new StreamRecords(bus.records);
    doneStream = newStreamId();
    const deadline = Date.now() + 10_000;
    while (!worker.ready().ready) await new Promise((resolve) => setTimeout(resolve, 20));
    await bus.js.publish(
      JOBS_SUBJECT,
      encodeJob(
        Job.fromPartial({
          streamId: doneStream,
          model: "mock",
          request: { messages: [{ role: "user", content: [{ part: { $case: "text", value: "hi" } }] }] },
          routes: [{ provider: "mock", model: "mock" }],
          createdAtMs: Date.now(),
        }),
      ),
      { msgID: doneStream },
    );
    while ((await records.get(doneStream))?.state.phase !== StreamPhase.STREAM_PHASE_DONE) {
      if (Date.now() > deadline) throw new Error("the stream did not finish");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // Listed once its first heartbeat reached the presence bucket.
    while (!(await cp.workers.list()).some((entry) => entry.workerId === "worker-cli")) await new Promise((resolve) => setTimeout(resolve, 20));
  });

  after(async () => {
    await worker?.drain(1_000);
    await cp?.close(500);
    await bus?.nc.drain();
    await mock?.close();
    await nats?.stop();
  });

  test("--help and usage errors", async () => {
    const help = await cli("--help");
    assert.equal(help.code, 0);
    assert.match(help.stdout, /streams ls \[--phase P\]/);
    const unknown = await cli("streams", "rm", "x");
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "streams rm"/);
    const phase = await cli("streams", "ls", "--phase", "runing");
    assert.equal(phase.code, 2);
    assert.match(phase.stderr, /--phase: one of queued, running, done, failed, cancelled/);
    const missing = await cli("streams", "get");
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /needs a stream id/);
  });

  test("streams ls: a table, a phase filter, JSON", async () => {
    const table = await cli("streams", "ls");
    assert.equal(table.code, 0, table.stderr);
    const [header, ...rows] = table.stdout.trimEnd().split("\n");
    assert.match(header ?? "", /^STREAM\s+PHASE\s+MODEL\s+PROVIDER\s+OWNER\s+SEQ\s+AGE\s+ERROR\/REASON$/);
    const row = rows.find((line) => line.startsWith(doneStream));
    assert.match(row ?? "", new RegExp(`^${doneStream}\\s+done\\s+mock\\s+mock\\s+worker-cli\\s+\\d+\\s+\\d+s`));

    const running = await cli("streams", "ls", "--phase", "running", "--json");
    assert.equal(running.code, 0);
    assert.deepEqual(JSON.parse(running.stdout), { streams: [] });

    const json = await cli("streams", "ls", "--phase", "done", "--limit", "5", "--json");
    const listed = JSON.parse(json.stdout) as { streams: { streamId: string; phase: string; owner: string; lastSeq: number }[] };
    const entry = listed.streams.find((stream) => stream.streamId === doneStream);
    assert.equal(entry?.phase, "done");
    assert.equal(entry?.owner, "worker-cli");
    assert.ok((entry?.lastSeq ?? 0) > 30);
  });

  test("streams get and ls show a running stream's live position and the provider serving it", { timeout: 30_000 }, async () => {
    const running = newStreamId();
    await bus.js.publish(
      JOBS_SUBJECT,
      encodeJob(
        Job.fromPartial({
          streamId: running,
          model: "mock",
          request: { messages: [{ role: "user", content: [{ part: { $case: "text", value: "hi" } }] }] },
          routes: [{ provider: "mock", model: "mock?tokens=2000&itl=5" }],
          createdAtMs: Date.now(),
        }),
      ),
      { msgID: running },
    );
    const log = new EventLog(bus);
    while (((await log.last(running))?.seq ?? 0) < 40) await new Promise((resolve) => setTimeout(resolve, 20));
    const got = JSON.parse((await cli("streams", "get", running, "--json")).stdout) as { phase: string; provider: string; lastSeq: number };
    assert.equal(got.phase, "running");
    assert.equal(got.provider, "mock", "the provider serving it, while it runs");
    assert.ok(got.lastSeq >= 40, `live last seq ${got.lastSeq}, not the record's last refresh`);
    const listed = JSON.parse((await cli("streams", "ls", "--phase", "running", "--json")).stdout) as { streams: { streamId: string; lastSeq: number }[] };
    assert.ok((listed.streams.find((stream) => stream.streamId === running)?.lastSeq ?? 0) >= 40);
    assert.equal((await cli("streams", "cancel", running)).code, 0);
  });

  test("streams get: a record, or NOT_FOUND with exit code 69", async () => {
    const got = await cli("streams", "get", doneStream);
    assert.equal(got.code, 0, got.stderr);
    assert.match(got.stdout, /^stream:\s+\S+$/m);
    assert.match(got.stdout, /^phase:\s+done$/m);
    assert.match(got.stdout, /^owner:\s+worker-cli$/m);
    const json = JSON.parse((await cli("streams", "get", doneStream, "--json")).stdout) as { phase: string; model: string };
    assert.deepEqual([json.phase, json.model], ["done", "mock"]);

    const absent = await cli("streams", "get", "no-such-stream-0000");
    assert.equal(absent.code, 64 + 5);
    assert.equal(absent.stdout, "");
    assert.equal(absent.stderr, "runnel: NOT_FOUND: no stream no-such-stream-0000\n");
  });

  test("streams cancel: recorded once, idempotent after", async () => {
    const streamId = newStreamId();
    const first = await cli("streams", "cancel", streamId, "--reason", "ops test");
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, new RegExp(`^cancelled ${streamId} \\(it had not started; it never will\\)$`, "m"));
    const second = JSON.parse((await cli("streams", "cancel", streamId, "--json")).stdout) as {
      changed: boolean;
      state: { phase: string; cancelReason: string };
    };
    assert.equal(second.changed, false);
    assert.deepEqual([second.state.phase, second.state.cancelReason], ["cancelled", "ops test"]);
    const ended = await cli("streams", "cancel", doneStream);
    assert.equal(ended.code, 0);
    assert.match(ended.stdout, /is already done; nothing to cancel/);
  });

  test("providers and workers: tables and JSON", async () => {
    const table = await cli("providers");
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^routing version \d+$/m);
    assert.match(table.stdout, /^mock\s+mock\s+yes\s+\d+$/m);
    assert.match(table.stdout, /^routes:\nPROVIDER\s+MODEL\s+CIRCUIT/m);
    assert.match(table.stdout, /^mock\s+mock\s+closed\s+0%/m);
    assert.match(table.stdout, /^worker-cli\s+0\s+2\s+no\s+\d+s ago$/m);

    const json = JSON.parse((await cli("providers", "--json")).stdout) as {
      providers: { name: string; healthy: boolean }[];
      routes: { provider: string; circuit: string }[];
      workers: { workerId: string }[];
    };
    assert.deepEqual(
      json.providers.map((provider) => [provider.name, provider.healthy]),
      [["mock", true]],
    );
    assert.equal(json.routes[0]?.circuit, "closed");
    assert.deepEqual(
      json.workers.map((entry) => entry.workerId),
      ["worker-cli"],
    );

    const workers = await cli("workers");
    assert.match(workers.stdout, /^WORKER\s+IN-FLIGHT\s+CAPACITY\s+DRAINING\s+LAST SEEN\nworker-cli\s+0\s+2\s+no/m);
  });

  test("the address: RUNNEL_CONTROL_PLANE_URL, a list with a dead replica first, a DNS name, and no replica at all", async () => {
    const fromEnv = await run(process.execPath, [CLI, "workers", "--json"], { RUNNEL_CONTROL_PLANE_URL: target });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    const dead = `127.0.0.1:${await freePort()}`;
    for (let call = 0; call < 3; call++) {
      const listed = await run(process.execPath, [CLI, "--url", `${dead},${target}`, "streams", "get", doneStream, "--json"]);
      assert.equal(listed.code, 0, listed.stderr);
    }
    // A DNS name, as the chart's headless Service is used (localhost may resolve to ::1 too, where nothing listens).
    const viaDns = await run(process.execPath, [CLI, "--url", `dns:///localhost:${target.split(":")[1]}`, "streams", "get", doneStream]);
    assert.equal(viaDns.code, 0, viaDns.stderr);
    const none = await run(process.execPath, [CLI, "--url", dead, "--timeout", "2s", "providers"]);
    assert.equal(none.code, 64 + 14);
    assert.match(none.stderr, /^runnel: UNAVAILABLE: .*ECONNREFUSED/);
    assert.match(none.stderr, new RegExp(`\\(control plane: ${dead}; set --url or RUNNEL_CONTROL_PLANE_URL\\)`));
  });

  test("npm run runnel runs the same CLI", async () => {
    const npm = await run("npm", ["run", "-s", "runnel", "--", "workers", "--json", "--url", target]);
    assert.equal(npm.code, 0, npm.stderr);
    assert.deepEqual(
      (JSON.parse(npm.stdout) as { workers: { workerId: string }[] }).workers.map((entry) => entry.workerId),
      ["worker-cli"],
    );
  });

  // Last: the worker takes no more jobs after it.
  test("workers drain: reaches the worker; an unknown one exits 69", async () => {
    const drained = await cli("workers", "drain", "worker-cli");
    assert.equal(drained.code, 0, drained.stderr);
    assert.match(drained.stdout, /worker worker-cli is draining/);
    assert.equal(worker.draining, true);
    const unknown = await cli("workers", "drain", "worker-nobody");
    assert.equal(unknown.code, 69);
    assert.equal(unknown.stderr, "runnel: NOT_FOUND: no live worker worker-nobody\n");
    const json = await cli("workers", "drain", "worker-nobody", "--json");
    assert.deepEqual([json.code, JSON.parse(json.stdout)], [69, { found: false }]);
  });
});
