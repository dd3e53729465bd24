/**
 * Component tests of the bus and control-plane design, in one process: a real
 * nats-server, the control plane on a real gRPC port, a worker, and the mock
 * provider on a real HTTP port. They prove the properties the design promises:
 * one generation per stream even on redelivery, a cancel recorded before start
 * means the job never starts, a cancel reaches the owning worker and aborts
 * the provider request, and the data plane keeps working on its last routing
 * snapshot when the control plane is gone.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credentials, Metadata } from "@grpc/grpc-js";
import { buildControlPlane, type ControlPlane } from "@runnel/control-plane";
import { StreamHub, StreamReader } from "@runnel/ingress";
import { type NatsHandle, startNats } from "@runnel/launcher";
import { buildMockProvider, type MockProvider, mockText } from "@runnel/mock-provider";
import {
  type Bus,
  CLIENT_CHANNEL_OPTIONS,
  ControlPlaneLink,
  cancelStream,
  connectNats,
  controlPlane,
  createLogger,
  decodeEvent,
  EventLog,
  encodeEvent,
  encodeJob,
  ensureTopology,
  eventsSubject,
  type Failover,
  FailoverMode,
  isTerminal,
  JOBS_CONSUMER,
  JOBS_STREAM,
  JOBS_SUBJECT,
  type Job,
  newStreamId,
  parseConfig,
  type StreamEvent,
  StreamPhase,
  StreamRecords,
} from "@runnel/shared";
import { buildWorker, type Worker } from "@runnel/worker";

const log = createLogger("test", process.env.TEST_LOG_LEVEL ?? "silent");

describe("data plane and control plane over a real nats-server", () => {
  let nats: NatsHandle;
  let bus: Bus;
  let mock: MockProvider;
  let mockPort: number;
  let cp: ControlPlane;
  let cpTarget: string;
  let worker: Worker;
  let link: ControlPlaneLink;
  let records: StreamRecords;

  const configText = () => `
providers:
  - { name: mock, type: mock, baseUrl: "http://127.0.0.1:${mockPort}/v1", apiKey: sk-component }
models:
  - name: mock
    routes: [{ provider: mock, model: mock }]
`;

  // A short ack deadline, so a test can outlast it.
  const busConfig = parseConfig(
    "providers: [{name: x, type: mock, baseUrl: 'http://127.0.0.1:1/v1'}]\nmodels: [{name: x, routes: [{provider: x, model: x}]}]\nbus: {jobAckWait: 1s}",
    {},
  );

  before(async () => {
    nats = await startNats();
    const nc = await connectNats(nats.url, "component-test");
    bus = await ensureTopology(nc, busConfig.bus);
    records = new StreamRecords(bus.records);
    mock = buildMockProvider();
    mockPort = await mock.listen(0, "127.0.0.1");
    cp = buildControlPlane({ config: parseConfig(configText(), {}), bus, log, instanceId: "cp-test", heartbeatIntervalMs: 200 });
    cpTarget = `127.0.0.1:${await cp.listen("127.0.0.1", 0)}`;
    link = new ControlPlaneLink(cpTarget, log);
    worker = buildWorker({ bus, link, log, workerId: "worker-test", version: "test", concurrency: 8, ackWaitMs: busConfig.bus.jobAckWait });
    worker.start();
    const deadline = Date.now() + 10_000;
    while (!worker.ready().ready) {
      if (Date.now() > deadline) throw new Error(`worker not ready: ${worker.ready().reasons.join(", ")}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });

  after(async () => {
    await worker?.drain(2_000);
    await cp?.close(1_000);
    await bus?.nc.drain();
    await mock?.close();
    await nats?.stop();
  });

  const job = (streamId: string, upstreamModel = "mock"): Job => ({
    streamId,
    model: "mock",
    request: {
      messages: [{ role: "user", content: [{ part: { $case: "text", value: "hi" } }], name: "", toolCallId: "", toolCalls: [] }],
      stop: [],
      tools: [],
      toolChoiceJson: "",
      includeUsage: true,
      user: "",
    },
    routes: [{ provider: "mock", model: upstreamModel }],
    createdAtMs: Date.now(),
    routingVersion: 0,
    traceContext: {},
    keyId: "",
    affinityKey: "",
    requestRef: "",
  });

  /** Subscribes to a stream's events; `done` resolves at the terminal event (or after `timeoutMs` with what came). */
  const listen = (streamId: string, timeoutMs = 10_000) => {
    const events: StreamEvent[] = [];
    let resolveDone: (events: StreamEvent[]) => void = () => {};
    const done = new Promise<StreamEvent[]>((resolve) => {
      resolveDone = resolve;
    });
    const subscription = bus.nc.subscribe(eventsSubject(streamId), {
      callback: (_error, message) => {
        const event = decodeEvent(message.data);
        events.push(event);
        if (isTerminal(event)) {
          subscription.unsubscribe();
          resolveDone(events);
        }
      },
    });
    setTimeout(() => {
      subscription.unsubscribe();
      resolveDone(events);
    }, timeoutMs).unref();
    return { events, done };
  };

  const submit = async (value: Job, msgID = value.streamId) => {
    await bus.js.publish(JOBS_SUBJECT, encodeJob(value), { msgID });
  };

  test("running streams are not capped by the job consumer: one left at a low max_ack_pending by an older deployment is lifted", async () => {
    // nats-server's default is 1,000 unacknowledged jobs, i.e. 1,000 running streams cluster-wide; 2 stands in for it here.
    await bus.jsm.consumers.update(JOBS_STREAM, JOBS_CONSUMER, { max_ack_pending: 2 });
    await ensureTopology(bus.nc, busConfig.bus);
    assert.equal((await bus.jsm.consumers.info(JOBS_STREAM, JOBS_CONSUMER)).config.max_ack_pending, -1);
    // Four streams of 2 s each (40 tokens, 50 ms apart): with the cap, the third and fourth would start only after 2 s.
    const streams = Array.from({ length: 4 }, () => {
      const streamId = newStreamId();
      return { streamId, stream: listen(streamId, 10_000) };
    });
    const submittedAt = Date.now();
    await Promise.all(streams.map(({ streamId }) => submit(job(streamId, `mock?tokens=40&itl=50&seed=${Math.floor(Math.random() * 1e9)}`))));
    const firstEventAt = await Promise.all(
      streams.map(
        ({ stream }) =>
          new Promise<number>((resolve, reject) => {
            const poll = setInterval(() => {
              if (stream.events.length > 0) {
                clearInterval(poll);
                resolve(Date.now());
              } else if (Date.now() - submittedAt > 5_000) {
                clearInterval(poll);
                reject(new Error("a stream did not start within 5 s"));
              }
            }, 5);
          }),
      ),
    );
    assert.ok(Math.max(...firstEventAt) - submittedAt < 1_000, `all four started at once (last after ${Math.max(...firstEventAt) - submittedAt} ms)`);
    for (const { stream } of streams) assert.equal((await stream.done).at(-1)?.event?.$case, "done");
  });

  test("a job streams started, every token, and done with its usage, numbered 1..N without gaps", async () => {
    const streamId = newStreamId();
    const stream = listen(streamId);
    await submit(job(streamId));
    const events = await stream.done;
    assert.deepEqual(
      events.map((event) => event.seq),
      events.map((_event, index) => index + 1),
    );
    assert.equal(events[0]?.event?.$case, "started");
    const text = events.map((event) => (event.event?.$case === "textDelta" ? event.event.value.text : "")).join("");
    assert.equal(text, mockText(32, 0));
    // Usage travels on the terminal event (the job asked for it), not as an event before it.
    assert.equal(events.filter((event) => event.event?.$case === "usage").length, 0);
    const done = events.at(-1)?.event;
    assert.equal(done?.$case, "done");
    assert.equal(done?.$case === "done" && done.value.usage?.outputTokens, 32);
    // The record is written right after the terminal event is published.
    let record = await records.get(streamId);
    for (let tries = 0; tries < 100 && record?.state.phase === StreamPhase.STREAM_PHASE_RUNNING; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      record = await records.get(streamId);
    }
    assert.equal(record?.state.phase, StreamPhase.STREAM_PHASE_DONE);
    assert.equal(record?.state.owner, "worker-test");
    assert.equal(record?.state.lastSeq, events.length);
  });

  test("the same job delivered twice is generated once", async () => {
    const streamId = newStreamId();
    const upstream = `mock?seed=${Math.floor(Math.random() * 1e9)}`;
    const first = listen(streamId);
    await submit(job(streamId, upstream), `${streamId}-a`);
    const events = await first.done;
    assert.equal(events.at(-1)?.event?.$case, "done");
    const second = listen(streamId, 1_000);
    // A second delivery of the same stream (as after a redelivery), past JetStream's de-duplication.
    await submit(job(streamId, upstream), `${streamId}-b`);
    const extra = await second.done;
    assert.equal(extra.length, 0, "no event published for the duplicate");
    const generations = mock.journal.entries().filter((entry) => entry.model === upstream);
    assert.equal(generations.length, 1);
  });

  test("a cancel recorded before a worker takes the job means it never starts", async () => {
    const streamId = newStreamId();
    const upstream = `mock?seed=${Math.floor(Math.random() * 1e9)}`;
    const cancelled = await cancelStream(records, bus.nc, streamId, "user changed their mind");
    assert.equal(cancelled.changed, true);
    const stream = listen(streamId);
    await submit(job(streamId, upstream));
    const events = await stream.done;
    assert.equal(events.length, 1);
    const only = events[0]?.event;
    assert.equal(only?.$case, "error");
    assert.equal(only?.$case === "error" ? only.value.code : "", "RUNNEL_ERR_CANCELLED");
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(mock.journal.entries().filter((entry) => entry.model === upstream).length, 0, "the provider never saw it");
  });

  test("CancelStream over gRPC reaches the owning worker and the provider's connection closes", async () => {
    const streamId = newStreamId();
    const upstream = `mock?tokens=100000&itl=5&seed=${Math.floor(Math.random() * 1e9)}`;
    const stream = listen(streamId);
    await submit(job(streamId, upstream));
    await mock.journal.waitFor((entry) => entry.model === upstream && entry.tokensSent >= 3, 5_000);
    const admin = new controlPlane.StreamAdminServiceClient(cpTarget, credentials.createInsecure(), CLIENT_CHANNEL_OPTIONS);
    const cancelledAt = Date.now();
    const response = await new Promise<controlPlane.CancelStreamResponse>((resolve, reject) =>
      admin.cancelStream({ streamId, reason: "test cancel" }, new Metadata(), {}, (error, value) => (error ? reject(error) : resolve(value))),
    );
    assert.equal(response.changed, true);
    assert.equal(response.state?.owner, "worker-test");
    const closed = await mock.journal.waitFor((entry) => entry.model === upstream && entry.clientClosed, 2_000);
    assert.ok((closed.clientClosedAt ?? 0) - cancelledAt < 500, `provider closed ${(closed.clientClosedAt ?? 0) - cancelledAt} ms after the cancel`);
    const events = await stream.done;
    const last = events.at(-1)?.event;
    assert.equal(last?.$case === "error" ? last.value.code : last?.$case, "RUNNEL_ERR_CANCELLED");
    // Idempotent: a second cancel changes nothing and still answers.
    const again = await new Promise<controlPlane.CancelStreamResponse>((resolve, reject) =>
      admin.cancelStream({ streamId, reason: "again" }, new Metadata(), {}, (error, value) => (error ? reject(error) : resolve(value))),
    );
    assert.equal(again.changed, false);
    assert.equal(again.state?.phase, StreamPhase.STREAM_PHASE_CANCELLED);
    admin.close();
  });

  test("a generation longer than the ack deadline keeps its job alive: no redelivery, one generation", async () => {
    const streamId = newStreamId();
    const upstream = `mock?tokens=120&itl=25&seed=${Math.floor(Math.random() * 1e9)}`;
    const stream = listen(streamId, 15_000);
    // Every delivery, first or redelivery, takes a consumer sequence number.
    const deliveriesBefore = (await bus.jsm.consumers.info("RUNNEL_JOBS", "runnel-workers")).delivered.consumer_seq;
    const started = Date.now();
    await submit(job(streamId, upstream));
    const events = await stream.done;
    assert.ok(Date.now() - started > 2_500, "the stream outlasted the 1 s ack deadline");
    assert.equal(events.at(-1)?.event?.$case, "done");
    assert.equal(mock.journal.entries().filter((entry) => entry.model === upstream).length, 1);
    // Acknowledged: the work queue holds nothing for it any more.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const info = await bus.jsm.streams.info("RUNNEL_JOBS");
    assert.equal(info.state.messages, 0);
    const deliveriesAfter = (await bus.jsm.consumers.info("RUNNEL_JOBS", "runnel-workers")).delivered.consumer_seq;
    assert.equal(deliveriesAfter - deliveriesBefore, 1, "the job was delivered once, never redelivered");
  });

  test("GetStream and ListStreams read stream records; an unknown stream is NOT_FOUND", async () => {
    const admin = new controlPlane.StreamAdminServiceClient(cpTarget, credentials.createInsecure(), CLIENT_CHANNEL_OPTIONS);
    const streamId = newStreamId();
    const stream = listen(streamId);
    await submit(job(streamId));
    await stream.done;
    let phase = StreamPhase.STREAM_PHASE_RUNNING;
    for (let tries = 0; tries < 100 && phase === StreamPhase.STREAM_PHASE_RUNNING; tries++) {
      const got = await new Promise<controlPlane.GetStreamResponse>((resolve, reject) =>
        admin.getStream({ streamId }, new Metadata(), {}, (error, value) => (error ? reject(error) : resolve(value))),
      );
      phase = got.stream?.phase ?? phase;
      if (phase === StreamPhase.STREAM_PHASE_RUNNING) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(phase, StreamPhase.STREAM_PHASE_DONE);
    const listed = await new Promise<controlPlane.ListStreamsResponse>((resolve, reject) =>
      admin.listStreams({ phase: StreamPhase.STREAM_PHASE_DONE, limit: 1000 }, new Metadata(), {}, (error, value) => (error ? reject(error) : resolve(value))),
    );
    assert.ok(listed.streams.some((state) => state.streamId === streamId));
    assert.ok(listed.streams.every((state) => state.phase === StreamPhase.STREAM_PHASE_DONE));
    await assert.rejects(
      new Promise((resolve, reject) =>
        admin.getStream({ streamId: "no-such-stream-id" }, new Metadata(), {}, (error, value) => (error ? reject(error) : resolve(value))),
      ),
      (error: Error & { code?: number }) => error.code === 5,
    );
    admin.close();
  });

  test("a job redelivered after its worker died ends the stream with RUNNEL_ERR_WORKER_LOST after the last logged event", async () => {
    const streamId = newStreamId();
    const upstream = `mock?seed=${Math.floor(Math.random() * 1e9)}`;
    const now = Date.now();
    // What a worker that died mid-stream leaves behind: its claim and the events it published.
    const claimed = await records.claim({
      streamId,
      phase: StreamPhase.STREAM_PHASE_RUNNING,
      model: "mock",
      owner: "dead-worker",
      provider: "mock",
      createdAtMs: now,
      updatedAtMs: now,
      lastSeq: 0,
      errorCode: "",
      cancelReason: "",
      keyId: "",
      epoch: 0,
    });
    assert.equal(claimed.claimed, true);
    await bus.js.publish(
      eventsSubject(streamId),
      encodeEvent({ streamId, seq: 1, epoch: 0, event: { $case: "started", value: { provider: "mock", model: "mock", attempt: 1 } } }),
    );
    await bus.js.publish(eventsSubject(streamId), encodeEvent({ streamId, seq: 2, epoch: 0, event: { $case: "textDelta", value: { text: "half an" } } }));
    const stream = listen(streamId);
    await submit(job(streamId, upstream));
    const events = await stream.done;
    assert.equal(events.length, 1);
    assert.equal(events[0]?.seq, 3);
    const body = events[0]?.event;
    assert.equal(body?.$case === "error" ? body.value.code : body?.$case, "RUNNEL_ERR_WORKER_LOST");
    const record = await records.get(streamId);
    assert.equal(record?.state.phase, StreamPhase.STREAM_PHASE_FAILED);
    assert.equal(record?.state.errorCode, "RUNNEL_ERR_WORKER_LOST");
    assert.equal(mock.journal.entries().filter((entry) => entry.model === upstream).length, 0, "not generated again");
  });

  const failover = (): Failover => ({
    mode: FailoverMode.FAILOVER_MODE_RESTART,
    from: { provider: "mock", model: "mock" },
    to: { provider: "mock", model: "mock" },
    reasonCode: "RUNNEL_ERR_WORKER_LOST",
    reason: "test",
    takeover: true,
  });

  const reader = (streamId: string, after: number, fromLog: boolean, bufferEvents = 256) =>
    new StreamReader({ hub: new StreamHub(bus.nc), log: new EventLog(bus), streamId, after, fromLog, bufferEvents });

  test("the ingress's stream reader: in order, duplicates dropped, a hole in the log is an explicit error", async () => {
    const streamId = newStreamId();
    const live = reader(streamId, 0, false);
    const delivered: StreamEvent[] = [];
    live.attach((event) => delivered.push(event));
    const text = (seq: number): StreamEvent => ({ streamId, seq, epoch: 0, event: { $case: "textDelta", value: { text: String(seq) } } });
    for (const seq of [1, 2, 2, 1, 3, 5, 6]) bus.nc.publish(eventsSubject(streamId), encodeEvent(text(seq)));
    await bus.nc.flush();
    const deadline = Date.now() + 3_000;
    while (!live.ended && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(
      delivered.map((event) => event.seq),
      [1, 2, 3, 0],
    );
    const gap = delivered.at(-1)?.event;
    assert.equal(gap?.$case === "error" ? gap.value.code : gap?.$case, "RUNNEL_ERR_EVENT_GAP");
  });

  test("fencing: after a takeover's fence, a late write of the old owner reaches no reader, live or from the log", async () => {
    const streamId = newStreamId();
    const subject = eventsSubject(streamId);
    const event = (seq: number, epoch: number, body: StreamEvent["event"]): StreamEvent => ({ streamId, seq, epoch, event: body });
    const text = (seq: number, epoch: number, value: string) => event(seq, epoch, { $case: "textDelta", value: { text: value } });
    const live = reader(streamId, 0, false);
    const delivered: StreamEvent[] = [];
    live.attach((delivery) => delivered.push(delivery));
    // The old owner (epoch 0) wrote two events.
    await bus.js.publish(subject, encodeEvent(text(1, 0, "a")));
    const second = await bus.js.publish(subject, encodeEvent(text(2, 0, "b")));
    // A takeover's fence that expects an older position is refused: the new owner must read again.
    await assert.rejects(
      bus.js.publish(subject, encodeEvent(event(3, 1, { $case: "failover", value: failover() })), { expect: { lastSubjectSequence: second.seq - 1 } }),
      /wrong last sequence/i,
    );
    // The fence that expects the log's real end lands.
    await bus.js.publish(subject, encodeEvent(event(3, 1, { $case: "failover", value: failover() })), { expect: { lastSubjectSequence: second.seq } });
    // The old owner comes back and writes on, with the seqs the new owner uses too.
    await bus.js.publish(subject, encodeEvent(text(3, 0, "stale")));
    await bus.js.publish(subject, encodeEvent(text(4, 0, "stale")));
    await bus.js.publish(subject, encodeEvent(text(4, 1, "fresh")));
    await bus.js.publish(subject, encodeEvent(text(5, 0, "stale")));
    await bus.js.publish(subject, encodeEvent(event(5, 1, { $case: "done", value: { finishReason: 1 } })));
    const expected = [
      [1, 0, "a"],
      [2, 0, "b"],
      [3, 1, "failover"],
      [4, 1, "fresh"],
      [5, 1, "done"],
    ];
    const view = (events: StreamEvent[]) =>
      events.map((delivery) => [delivery.seq, delivery.epoch, delivery.event?.$case === "textDelta" ? delivery.event.value.text : delivery.event?.$case]);
    const deadline = Date.now() + 5_000;
    while (!live.ended && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(view(delivered), expected, "live");
    for (const after of [0, 2, 3]) {
      const replay = reader(streamId, after, true);
      const replayed: StreamEvent[] = [];
      replay.attach((delivery) => replayed.push(delivery));
      const until = Date.now() + 5_000;
      while (!replay.ended && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.deepEqual(view(replayed), expected.slice(after), `replayed after ${after}`);
    }
  });

  test("the ingress's stream reader: far more events than its buffer before it attaches, all delivered in order from the log", async () => {
    const streamId = newStreamId();
    const early = reader(streamId, 0, false, 64);
    for (let seq = 1; seq <= 1100; seq++)
      bus.nc.publish(eventsSubject(streamId), encodeEvent({ streamId, seq, epoch: 0, event: { $case: "textDelta", value: { text: "x" } } }));
    bus.nc.publish(eventsSubject(streamId), encodeEvent({ streamId, seq: 1101, epoch: 0, event: { $case: "done", value: { finishReason: 1 } } }));
    await bus.nc.flush();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const delivered: StreamEvent[] = [];
    early.attach((event) => delivered.push(event));
    const deadline = Date.now() + 5_000;
    while (!early.ended && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(
      delivered.map((event) => event.seq),
      Array.from({ length: 1101 }, (_value, index) => index + 1),
    );
  });

  test("the ingress's stream reader: resumes from a position, replaying the log then following live", async () => {
    const streamId = newStreamId();
    for (let seq = 1; seq <= 10; seq++)
      await bus.js.publish(eventsSubject(streamId), encodeEvent({ streamId, seq, epoch: 0, event: { $case: "textDelta", value: { text: `${seq}` } } }));
    const resumed = reader(streamId, 4, true);
    const delivered: StreamEvent[] = [];
    resumed.attach((event) => delivered.push(event));
    await Promise.race([resumed.caughtUp, new Promise((_resolve, reject) => setTimeout(() => reject(new Error("not caught up with the log in 5 s")), 5_000))]);
    for (let seq = 11; seq <= 12; seq++)
      bus.nc.publish(
        eventsSubject(streamId),
        encodeEvent({ streamId, seq, epoch: 0, event: { $case: "textDelta", value: `${seq}` ? { text: `${seq}` } : { text: "" } } }),
      );
    bus.nc.publish(eventsSubject(streamId), encodeEvent({ streamId, seq: 13, epoch: 0, event: { $case: "done", value: { finishReason: 1 } } }));
    const deadline = Date.now() + 3_000;
    while (!resumed.ended && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(
      delivered.map((event) => event.seq),
      [5, 6, 7, 8, 9, 10, 11, 12, 13],
    );
  });

  test("the ingress's stream reader: events past the log's retention end the read with RUNNEL_ERR_EVENTS_EXPIRED, never a hole", async () => {
    const streamId = newStreamId();
    for (let seq = 1; seq <= 6; seq++)
      await bus.js.publish(eventsSubject(streamId), encodeEvent({ streamId, seq, epoch: 0, event: { $case: "textDelta", value: { text: `${seq}` } } }));
    // What the retention window does to an old stream: its first events are gone.
    await bus.jsm.streams.purge("RUNNEL_EVENTS", { filter: eventsSubject(streamId), keep: 2 });
    const late = reader(streamId, 1, true);
    const delivered: StreamEvent[] = [];
    late.attach((event) => delivered.push(event));
    const deadline = Date.now() + 3_000;
    while (!late.ended && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(delivered.length, 1);
    const only = delivered[0]?.event;
    assert.equal(only?.$case === "error" ? only.value.code : only?.$case, "RUNNEL_ERR_EVENTS_EXPIRED");
    // From a position the log still holds, the rest is delivered.
    const recent = reader(streamId, 4, true);
    const rest: StreamEvent[] = [];
    recent.attach((event) => rest.push(event));
    await Promise.race([recent.caughtUp, new Promise((resolve) => setTimeout(resolve, 3_000))]);
    assert.deepEqual(
      rest.map((event) => event.seq),
      [5, 6],
    );
    recent.close();
  });

  test("the ingress's stream reader: catchUp() finds in the log the end the live feed missed", async () => {
    const streamId = newStreamId();
    for (let seq = 1; seq <= 3; seq++)
      await bus.js.publish(eventsSubject(streamId), encodeEvent({ streamId, seq, epoch: 0, event: { $case: "textDelta", value: { text: `${seq}` } } }));
    await bus.js.publish(eventsSubject(streamId), encodeEvent({ streamId, seq: 4, epoch: 0, event: { $case: "done", value: { finishReason: 1 } } }));
    // A live reader at seq 3 that never saw the terminal event (as after a reconnect).
    const missed = reader(streamId, 3, false);
    const delivered: StreamEvent[] = [];
    missed.attach((event) => delivered.push(event));
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(delivered.length, 0, "nothing on the live feed");
    missed.catchUp();
    const deadline = Date.now() + 3_000;
    while (!missed.ended && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(
      delivered.map((event) => [event.seq, event.event?.$case]),
      [[4, "done"]],
    );
  });

  test("two workers claiming one stream: exactly one wins", async () => {
    const streamId = newStreamId();
    const base = {
      streamId,
      phase: StreamPhase.STREAM_PHASE_RUNNING,
      model: "mock",
      provider: "",
      createdAtMs: 1,
      updatedAtMs: 1,
      lastSeq: 0,
      errorCode: "",
      cancelReason: "",
      keyId: "",
      epoch: 0,
    };
    const results = await Promise.all([records.claim({ ...base, owner: "a" }), records.claim({ ...base, owner: "b" }), records.claim({ ...base, owner: "c" })]);
    assert.equal(results.filter((result) => result.claimed).length, 1);
  });

  test("routing snapshots: the ingress never receives credentials, workers do", async () => {
    const routing = new controlPlane.RoutingServiceClient(cpTarget, credentials.createInsecure(), CLIENT_CHANNEL_OPTIONS);
    const first = (role: controlPlane.DataPlaneRole) =>
      new Promise<controlPlane.RoutingSnapshot>((resolve, reject) => {
        const call = routing.watchRouting({ role, instanceId: "t", knownVersion: 0 });
        call.once("data", (response: controlPlane.WatchRoutingResponse) => {
          call.cancel();
          if (response.snapshot) resolve(response.snapshot);
        });
        call.once("error", (error: Error & { code?: number }) => {
          if (error.code !== 1) reject(error);
        });
      });
    const ingressView = await first(controlPlane.DataPlaneRole.DATA_PLANE_ROLE_INGRESS);
    const workerView = await first(controlPlane.DataPlaneRole.DATA_PLANE_ROLE_WORKER);
    assert.equal(ingressView.version, workerView.version);
    assert.equal(ingressView.providers[0]?.apiKey, "");
    assert.equal(workerView.providers[0]?.apiKey, "sk-component");
    await assert.rejects(first(controlPlane.DataPlaneRole.DATA_PLANE_ROLE_UNSPECIFIED), /role/);
    routing.close();
  });

  test("a config change is pushed to watchers as a new version; the same content keeps its version", async () => {
    const versions: number[] = [];
    const watcher = new ControlPlaneLink(cpTarget, log);
    watcher.watchRouting(controlPlane.DataPlaneRole.DATA_PLANE_ROLE_INGRESS, "watcher", (snapshot) => versions.push(snapshot.version));
    const until = async (count: number) => {
      const deadline = Date.now() + 5_000;
      while (versions.length < count) {
        if (Date.now() > deadline) throw new Error(`saw ${versions.length} snapshots`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    };
    await until(1);
    assert.equal(cp.snapshots.replace(parseConfig(configText(), {})), false, "same content, same version");
    const extended = `${configText()}  - name: second\n    routes: [{ provider: mock, model: mock }]\n`;
    assert.equal(cp.snapshots.replace(parseConfig(extended, {})), true);
    await until(2);
    assert.notEqual(versions[1], versions[0]);
    cp.snapshots.replace(parseConfig(configText(), {}));
    await until(3);
    assert.equal(versions[2], versions[0]);
    watcher.close();
  });

  test("GetProviderStatus shows the registered worker and its in-flight streams", async () => {
    const admin = new controlPlane.StreamAdminServiceClient(cpTarget, credentials.createInsecure(), CLIENT_CHANNEL_OPTIONS);
    const streamId = newStreamId();
    const upstream = `mock?tokens=400&itl=5&seed=${Math.floor(Math.random() * 1e9)}`;
    const stream = listen(streamId);
    await submit(job(streamId, upstream));
    await mock.journal.waitFor((entry) => entry.model === upstream && entry.tokensSent >= 1, 5_000);
    const status = async () =>
      new Promise<controlPlane.GetProviderStatusResponse>((resolve, reject) =>
        // A deadline: a call that hangs fails here, by name, rather than as the file's timeout.
        admin.getProviderStatus({}, new Metadata(), { deadline: Date.now() + 5_000 }, (error, value) => (error ? reject(error) : resolve(value))),
      );
    let seen: controlPlane.GetProviderStatusResponse | undefined;
    const deadline = Date.now() + 3_000;
    do {
      seen = await status();
      if (seen.providers[0]?.inFlight === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    } while (Date.now() < deadline);
    assert.equal(seen?.workers.find((w) => w.workerId === "worker-test")?.capacity, 8);
    assert.equal(seen?.providers.find((p) => p.name === "mock")?.inFlight, 1);
    await stream.done;
    admin.close();
  });

  test("standard gRPC health answers SERVING", async () => {
    const { service } = await import("grpc-health-check");
    const { makeGenericClientConstructor } = await import("@grpc/grpc-js");
    const Health = makeGenericClientConstructor(service, "grpc.health.v1.Health");
    const client = new Health(cpTarget, credentials.createInsecure());
    const answer = await new Promise<{ status: string | number }>((resolve, reject) =>
      (client as unknown as { check(request: object, callback: (error: Error | null, value: { status: string | number }) => void): void }).check(
        { service: "runnel.v1.RoutingService" },
        (error, value) => (error ? reject(error) : resolve(value)),
      ),
    );
    assert.ok(answer.status === "SERVING" || answer.status === 1, `status ${String(answer.status)}`);
    client.close();
  });
});
