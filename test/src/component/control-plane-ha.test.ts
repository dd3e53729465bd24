/**
 * Two control-plane replicas on one NATS, in one process, each with its own
 * NATS connection as separate processes would have. Neither holds state of
 * its own: both fold the same outcome feed into the same route health, both
 * see the workers registered with the other, both answer every admin call,
 * a drain ordered through one reaches a worker registered with the other,
 * and when one goes away its clients carry on with the other.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { buildControlPlane, type ControlPlane } from "@runnel/control-plane";
import { type NatsHandle, startNats } from "@runnel/launcher";
import { buildMockProvider, type MockProvider } from "@runnel/mock-provider";
import {
  type Bus,
  CircuitState,
  ControlPlaneLink,
  connectNats,
  controlPlane,
  createLogger,
  decodeEvent,
  encodeJob,
  ensureTopology,
  eventsSubject,
  HEALTH_OUTCOMES_SUBJECT,
  isTerminal,
  JOBS_SUBJECT,
  Job,
  newStreamId,
  OutcomeKind,
  parseConfig,
  type StreamEvent,
  StreamPhase,
  StreamRecords,
} from "@runnel/shared";
import { buildWorker, type Worker } from "@runnel/worker";

const log = createLogger("test", process.env.TEST_LOG_LEVEL ?? "silent");
const HEARTBEAT_MS = 200;

async function eventually<T>(what: string, probe: () => Promise<T>, accept: (value: T) => boolean, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (accept(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(value)} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("two control-plane replicas", () => {
  let nats: NatsHandle;
  let mock: MockProvider;
  const buses: Bus[] = [];
  const replicas: ControlPlane[] = [];
  const targets: string[] = [];
  /** One admin link per replica, so the test knows which replica answers. */
  let admin: ControlPlaneLink[] = [];
  let workerLink: ControlPlaneLink;
  let worker: Worker;
  let records: StreamRecords;

  before(async () => {
    nats = await startNats();
    mock = buildMockProvider();
    const mockPort = await mock.listen(0, "127.0.0.1");
    const config = parseConfig(
      `
providers:
  - { name: mock, type: mock, baseUrl: "http://127.0.0.1:${mockPort}/v1" }
  - { name: flaky, type: mock, baseUrl: "http://127.0.0.1:${mockPort}/v1", circuit: { failureThreshold: 3, probeInterval: 30s } }
models:
  - name: mock
    routes: [{ provider: mock, model: mock }]
  - name: flaky
    routes: [{ provider: flaky, model: m1 }, { provider: mock, model: "mock?seed=1", priority: 1 }]
bus: { jobAckWait: 2s }
`,
      {},
    );
    for (const name of ["cp-a", "cp-b"]) {
      const bus = await ensureTopology(await connectNats(nats.url, name), config.bus);
      const cp = buildControlPlane({ config, bus, log, instanceId: name, heartbeatIntervalMs: HEARTBEAT_MS });
      buses.push(bus);
      replicas.push(cp);
      targets.push(`127.0.0.1:${await cp.listen("127.0.0.1", 0)}`);
    }
    admin = targets.map((target) => new ControlPlaneLink(target, log));
    records = new StreamRecords((buses[0] as Bus).records);
    // The worker knows replica A only, so everything B knows of it came through NATS.
    const workerBus = await ensureTopology(await connectNats(nats.url, "worker-ha"), config.bus);
    buses.push(workerBus);
    workerLink = new ControlPlaneLink(targets[0] as string, log);
    worker = buildWorker({ bus: workerBus, link: workerLink, log, workerId: "worker-ha", version: "test", concurrency: 4, ackWaitMs: config.bus.jobAckWait });
    worker.start();
    await eventually(
      "worker ready",
      async () => worker.ready(),
      (ready) => ready.ready,
    );
  });

  after(async () => {
    await worker?.drain(1_000);
    for (const link of admin) link.close();
    for (const cp of replicas) await cp.close(500);
    for (const bus of buses) await bus.nc.drain();
    await mock?.close();
    await nats?.stop();
  });

  const statusOf = (replica: number) => (admin[replica] as ControlPlaneLink).getProviderStatus(2_000);

  const job = (streamId: string, upstreamModel: string) =>
    Job.fromPartial({
      streamId,
      model: "mock",
      request: { messages: [{ role: "user", content: [{ part: { $case: "text", value: "hi" } }] }] },
      routes: [{ provider: "mock", model: upstreamModel }],
      createdAtMs: Date.now(),
    });

  /** Collects a stream's events until its terminal one (or `timeoutMs`). */
  const listen = (streamId: string, timeoutMs = 10_000) => {
    const events: StreamEvent[] = [];
    const nc = (buses[0] as Bus).nc;
    const done = new Promise<StreamEvent[]>((resolve) => {
      const subscription = nc.subscribe(eventsSubject(streamId), {
        callback: (_error, message) => {
          const event = decodeEvent(message.data);
          events.push(event);
          if (isTerminal(event)) {
            subscription.unsubscribe();
            resolve(events);
          }
        },
      });
      setTimeout(() => {
        subscription.unsubscribe();
        resolve(events);
      }, timeoutMs).unref();
    });
    return { events, done };
  };

  const submit = (value: Job) => (buses[0] as Bus).js.publish(JOBS_SUBJECT, encodeJob(value), { msgID: value.streamId });

  test("both replicas fold the same outcomes into the same route health", async () => {
    // The outcomes a worker would publish: three failures on flaky/m1 (its threshold), a good request on mock.
    const publish = (outcome: Partial<controlPlane.RouteOutcome>) =>
      (buses[0] as Bus).nc.publish(
        HEALTH_OUTCOMES_SUBJECT,
        controlPlane.RouteOutcome.encode(controlPlane.RouteOutcome.fromPartial({ workerId: "worker-x", atMs: Date.now(), ...outcome })).finish(),
      );
    for (let attempt = 0; attempt < 3; attempt++) {
      publish({ provider: "flaky", model: "m1", kind: OutcomeKind.OUTCOME_KIND_STARTED, workerInFlight: 1 });
      publish({ provider: "flaky", model: "m1", kind: OutcomeKind.OUTCOME_KIND_FAILED, errorCode: "RUNNEL_ERR_PROVIDER_UNAVAILABLE" });
    }
    publish({ provider: "mock", model: "mock", kind: OutcomeKind.OUTCOME_KIND_STARTED, workerInFlight: 1 });
    publish({ provider: "mock", model: "mock", kind: OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, ttftMs: 120, workerInFlight: 1 });
    publish({ provider: "mock", model: "mock", kind: OutcomeKind.OUTCOME_KIND_SUCCEEDED, tokens: 50 });
    await (buses[0] as Bus).nc.flush();

    const routeOf = (response: controlPlane.GetProviderStatusResponse, provider: string, model: string) =>
      response.routes.find((route) => route.provider === provider && route.model === model);
    const settled = (response: controlPlane.GetProviderStatusResponse) =>
      routeOf(response, "flaky", "m1")?.circuit === CircuitState.CIRCUIT_STATE_OPEN && routeOf(response, "mock", "mock")?.tokensLastMinute === 50;
    const [a, b] = [await eventually("replica A's status", () => statusOf(0), settled), await eventually("replica B's status", () => statusOf(1), settled)];

    assert.deepEqual(a.routes, b.routes, "the same route health on both replicas");
    assert.deepEqual(a.providers, b.providers);
    const flaky = routeOf(a, "flaky", "m1");
    assert.equal(flaky?.errorRate, 1);
    assert.equal(flaky?.requestsLastMinute, 3);
    const good = routeOf(a, "mock", "mock");
    assert.equal(good?.circuit, CircuitState.CIRCUIT_STATE_CLOSED);
    assert.equal(good?.ttftMs, 120);
    // Every configured route is listed, the ones no outcome mentioned as closed and idle.
    assert.deepEqual(
      a.routes.map((route) => `${route.provider}/${route.model}`),
      ["mock/mock", "flaky/m1", "mock/mock?seed=1"],
    );
    assert.deepEqual(
      a.providers.map((provider) => [provider.name, provider.healthy]),
      [
        ["mock", true],
        ["flaky", false],
      ],
      "a provider with an open circuit is unhealthy",
    );
    assert.equal(a.routingVersion, b.routingVersion);
  });

  test("a worker registered with one replica is listed by both", async () => {
    const listed = (response: controlPlane.GetProviderStatusResponse) => response.workers.some((worker) => worker.workerId === "worker-ha");
    for (const replica of [0, 1]) {
      const response = await eventually(`workers on replica ${replica}`, () => statusOf(replica), listed);
      const entry = response.workers.find((worker) => worker.workerId === "worker-ha");
      assert.equal(entry?.capacity, 4);
      assert.equal(entry?.draining, false);
      assert.ok(Date.now() - (entry?.lastSeenMs ?? 0) < 5 * HEARTBEAT_MS + 1_000, "seen within the last heartbeats");
    }
  });

  test("either replica answers ListStreams, GetStream and CancelStream", async () => {
    const streamId = newStreamId();
    const stream = listen(streamId);
    await submit(job(streamId, "mock"));
    assert.equal((await stream.done).at(-1)?.event?.$case, "done");
    await eventually(
      "the record is done",
      async () => (await records.get(streamId))?.state.phase,
      (phase) => phase === StreamPhase.STREAM_PHASE_DONE,
    );

    for (const replica of [0, 1]) {
      const link = admin[replica] as ControlPlaneLink;
      const { stream: state } = await link.getStream(streamId, 2_000);
      assert.equal(state?.phase, StreamPhase.STREAM_PHASE_DONE, `GetStream on replica ${replica}`);
      assert.equal(state?.owner, "worker-ha");
      const done = await link.listStreams({ phase: StreamPhase.STREAM_PHASE_DONE, limit: 50 }, 2_000);
      assert.ok(
        done.streams.some((listed) => listed.streamId === streamId),
        `ListStreams on replica ${replica}`,
      );
      const running = await link.listStreams({ phase: StreamPhase.STREAM_PHASE_RUNNING, limit: 50 }, 2_000);
      assert.ok(!running.streams.some((listed) => listed.streamId === streamId));
      await assert.rejects(link.getStream(newStreamId(), 2_000), (error: { code: number }) => error.code === status.NOT_FOUND);
      await assert.rejects(link.getStream("", 2_000), (error: { code: number }) => error.code === status.INVALID_ARGUMENT);
    }

    // A cancel through B, seen through A; a second one changes nothing.
    const pending = newStreamId();
    const cancelled = await (admin[1] as ControlPlaneLink).cancel(pending, "ops", 2_000);
    assert.equal(cancelled.changed, true);
    const seen = await (admin[0] as ControlPlaneLink).getStream(pending, 2_000);
    assert.equal(seen.stream?.phase, StreamPhase.STREAM_PHASE_CANCELLED);
    assert.equal(seen.stream?.cancelReason, "ops");
    const again = await (admin[0] as ControlPlaneLink).cancel(pending, "again", 2_000);
    assert.equal(again.changed, false);
    const finished = await (admin[0] as ControlPlaneLink).cancel(streamId, "too late", 2_000);
    assert.equal(finished.changed, false, "an ended stream stays ended");
  });

  test("a drain ordered through one replica reaches a worker registered with the other", async () => {
    // A stream that runs for about a second, so the drain finds it running.
    const streamId = newStreamId();
    const stream = listen(streamId);
    await submit(job(streamId, "mock?tokens=40&itl=25"));
    await eventually(
      "the stream runs",
      async () => (await records.get(streamId))?.state.phase,
      (phase) => phase === StreamPhase.STREAM_PHASE_RUNNING,
    );

    const response = await (admin[1] as ControlPlaneLink).drainWorker("worker-ha", 2_000);
    assert.equal(response.found, true);
    assert.equal(worker.draining, true);
    assert.ok(worker.ready().reasons.includes("draining"));

    // The running stream finishes normally.
    const events = await stream.done;
    assert.equal(events.at(-1)?.event?.$case, "done");

    // Its heartbeats say so, on both replicas.
    for (const replica of [0, 1]) {
      await eventually(
        `draining on replica ${replica}`,
        () => statusOf(replica),
        (status) => status.workers.some((entry) => entry.workerId === "worker-ha" && entry.draining),
      );
    }

    // A job submitted now is not taken.
    const later = newStreamId();
    await submit(job(later, "mock"));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(await records.get(later), undefined, "nobody claimed the job");
    assert.equal(worker.inFlight, 0);

    // Idempotent; an unknown worker is reported as not found, by either replica.
    assert.equal((await (admin[0] as ControlPlaneLink).drainWorker("worker-ha", 2_000)).found, true);
    assert.equal((await (admin[0] as ControlPlaneLink).drainWorker("worker-nobody", 2_000)).found, false);
    await assert.rejects((admin[1] as ControlPlaneLink).drainWorker("", 2_000), (error: { code: number }) => error.code === status.INVALID_ARGUMENT);
  });

  test("when a replica goes away, registrations and admin calls carry on with the other", async () => {
    const both = new ControlPlaneLink(targets.join(","), log);
    try {
      both.register(
        { workerId: "worker-moving", version: "test", capacity: 2 },
        () => ({ inFlight: 1, capacity: 2, streamIds: [], draining: false, inFlightByProvider: { mock: 1 } }),
        HEARTBEAT_MS,
      );
      await eventually(
        "worker-moving listed",
        () => statusOf(1),
        (status) => status.workers.some((entry) => entry.workerId === "worker-moving"),
      );
      // Replica A goes away (its registration and watch calls end, its port closes).
      await (replicas[0] as ControlPlane).close(200);

      // Admin calls through a link that knows both: each one answered (A fails fast, B answers).
      for (let call = 0; call < 6; call++) {
        const status = await both.getProviderStatus(3_000);
        assert.ok(status.routingVersion > 0);
      }
      // Well past the expiry window, the worker is still live: its heartbeats now reach B.
      await new Promise((resolve) => setTimeout(resolve, 5 * HEARTBEAT_MS + 500));
      const status = await statusOf(1);
      const moving = status.workers.find((entry) => entry.workerId === "worker-moving");
      assert.ok(moving, "still live after its replica went away");
      assert.ok(Date.now() - moving.lastSeenMs < 5 * HEARTBEAT_MS);
      assert.equal(status.providers.find((provider) => provider.name === "mock")?.inFlight, 1, "in-flight per provider from its heartbeats");
    } finally {
      both.close();
    }
  });
});
