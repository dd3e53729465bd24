/**
 * Large requests over a real nats-server with its default max_payload of
 * 1 MiB, in one process: a worker (two for the hand-off), the control plane
 * on a real gRPC port, the mock provider and a provider that answers in
 * huge chunks, on real HTTP ports. A job too large for one NATS message
 * travels without its request, which waits in the `runnel_bodies` object
 * store (docs/architecture.md, "Large requests"); these tests prove the
 * worker finds it on the first delivery, after a takeover and after a
 * hand-off, deletes it once the stream ended, ends the stream with a coded
 * error when it is gone, and never publishes an event over max_payload.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { buildControlPlane, type ControlPlane } from "@runnel/control-plane";
import { type NatsHandle, startNats } from "@runnel/launcher";
import { buildMockProvider, type MockProvider, mockText } from "@runnel/mock-provider";
import {
  BODIES_BUCKET,
  type Bus,
  type ChatRequest,
  ControlPlaneLink,
  connectNats,
  createLogger,
  decodeEvent,
  decodeJob,
  encodeJobForQueue,
  ensureTopology,
  eventsSubject,
  INLINE_JOB_CAP,
  isTerminal,
  JOBS_SUBJECT,
  type Job,
  newStreamId,
  parseConfig,
  type StreamEvent,
  StreamPhase,
  StreamRecords,
  storeRequest,
} from "@runnel/shared";
import { buildWorker, type Worker } from "@runnel/worker";

const log = createLogger("test", process.env.TEST_LOG_LEVEL ?? "silent");
const MiB = 1024 * 1024;

/** A user turn of `bytes` characters of random text (base64: one byte per character in UTF-8 and in JSON). */
function longText(bytes: number): string {
  return randomBytes(Math.ceil((bytes * 3) / 4))
    .toString("base64")
    .slice(0, bytes);
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/** A provider speaking OpenAI's format that answers every request with one 2 MB text chunk and one 2 MB tool-call chunk. */
function hugeChunkProvider(text: string, toolArguments: string): Server {
  return createServer((request, response) => {
    request.resume();
    request.on("end", () => {
      const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
        `data: ${JSON.stringify({ id: "chatcmpl-huge", object: "chat.completion.chunk", created: 1, model: "huge", choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
      response.writeHead(200, { "content-type": "text/event-stream" });
      response.write(chunk({ role: "assistant", content: text }));
      response.write(chunk({ tool_calls: [{ index: 0, id: "call_huge", type: "function", function: { name: "lookup", arguments: toolArguments } }] }));
      response.write(chunk({}, "tool_calls"));
      response.end("data: [DONE]\n\n");
    });
  });
}

describe("large requests over a real nats-server (default max_payload)", () => {
  let nats: NatsHandle;
  let bus: Bus;
  let mock: MockProvider;
  let mockPort: number;
  let huge: Server;
  let hugePort: number;
  let cp: ControlPlane;
  let worker: Worker;
  let records: StreamRecords;
  const hugeText = longText(2 * MiB);
  const hugeArguments = JSON.stringify({ q: longText(2 * MiB) });

  const configText = () => `
providers:
  - { name: mock, type: mock, baseUrl: "http://127.0.0.1:${mockPort}/v1", apiKey: sk-component }
  - { name: huge, type: openai, baseUrl: "http://127.0.0.1:${hugePort}/v1", apiKey: sk-component }
models:
  - name: mock
    afterFirstToken: restart
    routes: [{ provider: mock, model: mock }]
  - name: huge
    routes: [{ provider: huge, model: huge }]
`;
  // A short ack deadline, so a lost worker's job comes back within the test.
  const busConfig = parseConfig(
    "providers: [{name: x, type: mock, baseUrl: 'http://127.0.0.1:1/v1'}]\nmodels: [{name: x, routes: [{provider: x, model: x}]}]\nbus: {jobAckWait: 1s}",
    {},
  );

  /** A worker with its own control-plane link (its drain() closes it). */
  const startWorker = async (workerId: string): Promise<Worker> => {
    const link = new ControlPlaneLink(`127.0.0.1:${cpPort}`, log);
    const started = buildWorker({ bus, link, log, workerId, version: "test", concurrency: 8, ackWaitMs: busConfig.bus.jobAckWait });
    started.start();
    const deadline = Date.now() + 10_000;
    while (!started.ready().ready) {
      if (Date.now() > deadline) throw new Error(`worker not ready: ${started.ready().reasons.join(", ")}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return started;
  };
  let cpPort: number;

  before(async () => {
    nats = await startNats();
    bus = await ensureTopology(await connectNats(nats.url, "large-requests-test"), busConfig.bus);
    assert.equal(bus.nc.info?.max_payload, MiB, "the server runs with nats-server's default max_payload");
    records = new StreamRecords(bus.records);
    mock = buildMockProvider();
    mockPort = await mock.listen(0, "127.0.0.1");
    huge = hugeChunkProvider(hugeText, hugeArguments);
    await new Promise<void>((resolve) => huge.listen(0, "127.0.0.1", resolve));
    hugePort = (huge.address() as AddressInfo).port;
    cp = buildControlPlane({ config: parseConfig(configText(), {}), bus, log, instanceId: "cp-test", heartbeatIntervalMs: 200 });
    cpPort = await cp.listen("127.0.0.1", 0);
    worker = await startWorker("worker-a");
  });

  after(async () => {
    await worker?.drain(2_000);
    await cp?.close(1_000);
    await bus?.nc.drain();
    await mock?.close();
    await new Promise((resolve) => huge?.close(resolve));
    await nats?.stop();
  });

  const request = (text: string): ChatRequest => ({
    messages: [{ role: "user", content: [{ part: { $case: "text", value: text } }], name: "", toolCallId: "", toolCalls: [] }],
    stop: [],
    tools: [],
    toolChoiceJson: "",
    includeUsage: false,
    user: "",
  });

  const job = (streamId: string, text: string, model = "mock", upstream = "mock"): Job => ({
    streamId,
    model,
    request: request(text),
    // Each model has a provider of its name.
    routes: [{ provider: model, model: upstream }],
    createdAtMs: Date.now(),
    routingVersion: 0,
    traceContext: {},
    keyId: "",
    affinityKey: "",
    requestRef: "",
  });

  /** Subscribes to a stream's events; `done` resolves at the terminal event (or after `timeoutMs` with what came). Records each message's size. */
  const listen = (streamId: string, timeoutMs = 20_000) => {
    const events: StreamEvent[] = [];
    const sizes: number[] = [];
    let resolveDone: (events: StreamEvent[]) => void = () => {};
    const done = new Promise<StreamEvent[]>((resolve) => {
      resolveDone = resolve;
    });
    const subscription = bus.nc.subscribe(eventsSubject(streamId), {
      callback: (_error, message) => {
        const event = decodeEvent(message.data);
        events.push(event);
        sizes.push(message.data.length);
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
    return { events, sizes, done };
  };

  /** Queues a job as the ingress does: a large one's request goes to the object store first. */
  const submit = async (value: Job, msgID = value.streamId): Promise<Uint8Array> => {
    const { data, stored } = await encodeJobForQueue(bus, value);
    assert.equal(stored, true, "the test's job is one that travels without its request");
    await bus.js.publish(JOBS_SUBJECT, data, { msgID });
    return data;
  };

  const text = (events: StreamEvent[]) => events.map((event) => (event.event?.$case === "textDelta" ? event.event.value.text : "")).join("");

  /** Waits until the stored body is gone (deleted, or never there). */
  const bodyGone = async (name: string, timeoutMs = 5_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const info = await bus.bodies.info(name);
      if (!info || info.deleted) return;
      if (Date.now() > deadline) throw new Error(`the body of ${name} is still in ${BODIES_BUCKET}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

  test("a 1.5 MB job travels without its request; the provider gets the whole of it; the body is deleted once the stream ended", async () => {
    const streamId = newStreamId();
    const prompt = longText(1.5 * 1024 * 1024);
    const seed = Math.floor(Math.random() * 1e9);
    const upstream = `mock?seed=${seed}`;
    const stream = listen(streamId);
    const queued = await submit(job(streamId, prompt, "mock", upstream));
    // What went on the queue is small, and names the body instead of carrying it.
    assert.ok(queued.length < 4096, `the job is ${queued.length} bytes`);
    assert.equal(decodeJob(queued).request, undefined);
    assert.equal(decodeJob(queued).requestRef, streamId);
    const events = await stream.done;
    assert.equal(events.at(-1)?.event?.$case, "done");
    assert.equal(text(events), mockText(32, seed));
    const served = mock.journal.entries().find((entry) => entry.model === upstream);
    assert.deepEqual(served?.messageDigests, [{ length: prompt.length, sha256: sha256(prompt) }]);
    await bodyGone(streamId);
  });

  test("the bucket keeps bodies on file for as long as a job can live, bounded in size, as configured at every start", async () => {
    const status = await bus.bodies.status();
    assert.equal(status.storage, "file");
    assert.equal(status.ttl, (busConfig.bus.jobMaxAge + 60_000) * 1_000_000);
    assert.equal(status.streamInfo.config.max_bytes, busConfig.bus.bodiesMaxBytes);
    // Chunks, like jobs, stay far below max_payload.
    await storeRequest(bus, "probe", request(longText(MiB)));
    const info = await bus.bodies.info("probe");
    assert.ok(info && info.chunks >= 4 && (info.options?.max_chunk_size ?? Infinity) <= INLINE_JOB_CAP, JSON.stringify(info?.options));
    await bus.bodies.delete("probe");
    // A changed config reaches a bucket that already exists (nats.js's create alone leaves it as it was), and back.
    await ensureTopology(bus.nc, { ...busConfig.bus, jobMaxAge: 60_000, bodiesMaxBytes: 64 * MiB });
    const changed = await bus.bodies.status();
    assert.equal(changed.ttl, 120_000 * 1_000_000);
    assert.equal(changed.streamInfo.config.max_bytes, 64 * MiB);
    await ensureTopology(bus.nc, busConfig.bus);
    assert.equal((await bus.bodies.status()).ttl, status.ttl);
  });

  test("a body that is gone ends the stream with RUNNEL_ERR_BODY_UNAVAILABLE; the provider is never called", async () => {
    const streamId = newStreamId();
    const seed = Math.floor(Math.random() * 1e9);
    const upstream = `mock?seed=${seed}`;
    const { data } = await encodeJobForQueue(bus, job(streamId, longText(MiB), "mock", upstream));
    // As if the TTL had run out before a worker took the job.
    await bus.bodies.delete(streamId);
    const stream = listen(streamId);
    await bus.js.publish(JOBS_SUBJECT, data, { msgID: streamId });
    const events = await stream.done;
    const last = events.at(-1)?.event;
    assert.equal(last?.$case, "error");
    assert.equal(last?.$case === "error" ? last.value.code : "", "RUNNEL_ERR_BODY_UNAVAILABLE");
    assert.equal(last?.$case === "error" ? last.value.retryable : false, true);
    assert.match(last?.$case === "error" ? last.value.message : "", /not in runnel_bodies/);
    let record = await records.get(streamId);
    for (let tries = 0; tries < 100 && record?.state.phase === StreamPhase.STREAM_PHASE_RUNNING; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      record = await records.get(streamId);
    }
    assert.equal(record?.state.phase, StreamPhase.STREAM_PHASE_FAILED);
    assert.equal(record?.state.errorCode, "RUNNEL_ERR_BODY_UNAVAILABLE");
    assert.equal(mock.journal.entries().filter((entry) => entry.model === upstream).length, 0);
  });

  test("a job redelivered after its worker died: the next worker takes the stream over and finds the body", async () => {
    const streamId = newStreamId();
    const prompt = longText(1.5 * 1024 * 1024);
    const seed = Math.floor(Math.random() * 1e9);
    const upstream = `mock?seed=${seed}`;
    const now = Date.now();
    // What a worker that died before its first token leaves behind: its claim, no events.
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
    const stream = listen(streamId);
    await submit(job(streamId, prompt, "mock", upstream), `${streamId}-redelivered`);
    const events = await stream.done;
    assert.equal(events[0]?.event?.$case, "failover");
    assert.equal(events[0]?.event?.$case === "failover" ? events[0].event.value.takeover : false, true);
    assert.equal(events.at(-1)?.event?.$case, "done");
    assert.equal(text(events), mockText(32, seed));
    const served = mock.journal.entries().find((entry) => entry.model === upstream);
    assert.deepEqual(served?.messageDigests, [{ length: prompt.length, sha256: sha256(prompt) }]);
    assert.equal((await records.get(streamId))?.state.owner, "worker-a");
    await bodyGone(streamId);
  });

  test("a stream handed off by a draining worker: the body is stored again with the new job, and the next worker restarts it whole", async () => {
    const streamId = newStreamId();
    const prompt = longText(1.5 * 1024 * 1024);
    const upstream = `mock?tokens=300&itl=10&seed=${Math.floor(Math.random() * 1e9)}`;
    const stream = listen(streamId);
    await submit(job(streamId, prompt, "mock", upstream));
    await mock.journal.waitFor((entry) => entry.model === upstream && entry.tokensSent >= 3, 5_000);
    const stored = await bus.bodies.info(streamId);
    assert.ok(stored);
    const second = await startWorker("worker-b");
    try {
      // No time to finish: the running stream is handed to the other worker.
      await worker.drain(0);
      worker = second;
      // Stored again before the job went back (the second worker deletes it only once the stream ends, 3 s on).
      const restored = await bus.bodies.info(streamId);
      assert.ok(restored && !restored.deleted && restored.revision > stored.revision, `revision ${restored?.revision} after ${stored.revision}`);
      assert.equal(restored.size, stored.size);
      const events = await stream.done;
      assert.equal(events.at(-1)?.event?.$case, "done");
      const takeover = events.find((event) => event.event?.$case === "failover");
      assert.equal(takeover?.event?.$case === "failover" ? takeover.event.value.takeover : false, true);
      const served = mock.journal.entries().filter((entry) => entry.model === upstream);
      assert.equal(served.length, 2, "generated again from the start by the second worker");
      for (const entry of served) assert.deepEqual(entry.messageDigests, [{ length: prompt.length, sha256: sha256(prompt) }]);
      assert.equal((await records.get(streamId))?.state.owner, "worker-b");
      await bodyGone(streamId);
    } finally {
      if (worker !== second) await second.drain(1_000);
    }
  });

  test("a provider chunk over max_payload goes out as several consecutive deltas, each a bus message far below it", async () => {
    const streamId = newStreamId();
    const stream = listen(streamId);
    await submit(job(streamId, longText(MiB), "huge", "huge"));
    const events = await stream.done;
    assert.equal(events.at(-1)?.event?.$case, "done");
    assert.deepEqual(
      events.map((event) => event.seq),
      events.map((_event, index) => index + 1),
    );
    assert.equal(text(events), hugeText);
    const tools = events.flatMap((event) => (event.event?.$case === "toolCallDelta" ? [event.event.value] : []));
    assert.ok(tools.length >= 2, `${tools.length} tool-call deltas`);
    assert.equal(tools.map((tool) => tool.arguments).join(""), hugeArguments);
    assert.deepEqual(
      tools.map((tool) => [tool.index, tool.id, tool.name]),
      [[0, "call_huge", "lookup"], ...tools.slice(1).map(() => [0, "", ""])],
    );
    assert.ok(events.filter((event) => event.event?.$case === "textDelta").length >= 2);
    const largest = Math.max(...stream.sizes);
    assert.ok(largest < 256 * 1024, `the largest event is ${largest} bytes`);
  });
});
