/**
 * A worker killed with SIGKILL mid-stream (issue #5): another worker takes
 * the stream over once the lost one's job lease expires (jobAckWait 2 s in
 * test/fixtures/runnel.failover.yaml) and the client's one stream completes
 * under the model's afterFirstToken policy, with no gap and no repeated seq:
 * `restart` announces a takeover and sends a complete answer, `continue`
 * has a route that accepts prefills continue the partial answer, `error`
 * ends the stream with RUNNEL_ERR_WORKER_LOST.
 *
 * Two worker processes run; the one that owns the stream (its record, read
 * over the control plane's admin API) is the one killed, and it is started
 * again after each test so the next one has two workers too.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { credentials, Metadata } from "@grpc/grpc-js";
import { type NatsHandle, REPO_ROOT, type Stack, startNats, startStack } from "@runnel/launcher";
import { mockText } from "@runnel/mock-provider";
import { CLIENT_CHANNEL_OPTIONS, controlPlane } from "@runnel/shared";
import { assertAnnouncement, assertCoherent, keyOf, type RouteRef, readStream, type StreamView } from "./failover-support.js";
import { mockRequests, parseSse } from "./helpers.js";

const CONFIG = join(REPO_ROOT, "test", "fixtures", "runnel.failover.yaml");
const USER_TURN = { role: "user", text: "Tell me about rivers." };
/** Every route of the takeover models answers these 300 tokens, 10 ms apart. */
const WHOLE = mockText(300, 12);

let nats: NatsHandle;
let stack: Stack;
let admin: controlPlane.StreamAdminServiceClient;

before(async () => {
  nats = await startNats();
  try {
    stack = await startStack({
      natsUrl: nats.url,
      env: { RUNNEL_CONFIG: CONFIG, LOG_LEVEL: "info" },
      replicas: { worker: 2 },
      logDir: join(REPO_ROOT, ".runnel", "logs", "failover-takeover"),
    });
  } catch (error) {
    await nats.stop();
    throw error;
  }
  admin = new controlPlane.StreamAdminServiceClient(stack.controlPlaneTarget, credentials.createInsecure(), CLIENT_CHANNEL_OPTIONS);
});
after(async () => {
  admin?.close();
  await stack?.stop();
  await nats?.stop();
});

const routes = (model: string): [RouteRef, RouteRef] => [
  { provider: "p-steady", model: `mock?tokens=300&itl=10&seed=12&key=${model}-a` },
  { provider: "p-steady", model: `mock?tokens=300&itl=10&seed=12&key=${model}-b` },
];

/** A stream being read: the raw SSE text so far. */
interface OpenStream {
  readonly streamId: string;
  readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  text: string;
}

async function open(model: string): Promise<OpenStream> {
  const response = await fetch(`${stack.ingressUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, stream: true, messages: [{ role: "user", content: USER_TURN.text }] }),
  });
  assert.equal(response.status, 200);
  const streamId = response.headers.get("x-runnel-stream-id");
  assert.ok(streamId && response.body);
  return { streamId, reader: response.body.getReader(), text: "" };
}

const decoder = new TextDecoder();

function contentTokens(text: string): number {
  const complete = text.slice(0, text.lastIndexOf("\n\n") + 2);
  return parseSse(complete).events.filter((event) => event.data !== "[DONE]" && /"content":"[^"]/.test(event.data)).length;
}

/** Reads until `count` content tokens arrived. */
async function readTokens(stream: OpenStream, count: number): Promise<void> {
  while (contentTokens(stream.text) < count) {
    const { value, done } = await stream.reader.read();
    assert.equal(done, false, "the stream ended before the worker was killed");
    stream.text += decoder.decode(value, { stream: true });
  }
}

async function readToEnd(stream: OpenStream): Promise<StreamView> {
  for (;;) {
    const { value, done } = await stream.reader.read();
    if (done) break;
    stream.text += decoder.decode(value, { stream: true });
  }
  return readStream(200, stream.text, 0, stream.streamId);
}

/** The worker that owns the stream, as its record says. */
async function ownerOf(streamId: string): Promise<string> {
  const response = await new Promise<controlPlane.GetStreamResponse>((resolve, reject) =>
    admin.getStream({ streamId }, new Metadata(), {}, (error, value) => (error ? reject(error) : resolve(value))),
  );
  const owner = response.stream?.owner;
  assert.ok(owner, "the stream's record names its worker");
  return owner;
}

/** SIGKILLs the worker that owns the stream; resolves with its replica index and when it died. */
async function killOwner(streamId: string): Promise<{ index: number; killedAt: number }> {
  const owner = await ownerOf(streamId);
  const worker = stack.replicas("worker").find((replica) => replica.instanceId === owner);
  assert.ok(worker, `the owner ${owner} is one of ${stack.replicas("worker").map((replica) => replica.instanceId)}`);
  const exited = new Promise<void>((resolve) => worker.process.once("exit", () => resolve()));
  worker.process.kill("SIGKILL");
  await exited;
  return { index: worker.index, killedAt: Date.now() };
}

/** The requests the takeover made: to either route of the model, after the kill. */
async function requestsAfter(model: string, killedAt: number) {
  return (await mockRequests(stack)).filter((request) => keyOf(request.model)?.startsWith(`${model}-`) && request.receivedAt >= killedAt);
}

describe("a worker killed mid-stream: another worker takes the stream over", () => {
  test("restart: a takeover announcement, then a complete answer; seq without a gap or a repeat", { timeout: 40_000 }, async () => {
    const [first, second] = routes("t-restart");
    const stream = await open("t-restart");
    await readTokens(stream, 10);
    const { index, killedAt } = await killOwner(stream.streamId);
    try {
      const view = await readToEnd(stream);
      const elapsed = Date.now() - killedAt;
      assertCoherent(view);
      assert.equal(view.failovers.length, 1, `one announcement; got ${view.events.length} events ending ${JSON.stringify(view.events.at(-1))}`);
      const to = view.failovers[0]?.runnel?.failover?.to;
      assert.ok(
        [first, second].some((candidate) => JSON.stringify(candidate) === JSON.stringify(to)),
        `the takeover serves a route of the model: ${JSON.stringify(to)}`,
      );
      assertAnnouncement(view.failovers[0], { mode: "restart", from: first, to: to ?? first, takeover: true, reason_code: "RUNNEL_ERR_WORKER_LOST" });
      assert.ok(view.segments[0] && view.segments[0].length > 0 && WHOLE.startsWith(view.segments[0]), "the lost worker's partial answer");
      assert.equal(view.segments[1], WHOLE, "a complete answer after the announcement");
      assert.deepEqual(view.finishReasons, ["stop"]);
      assert.equal(view.error, undefined);
      assert.equal(view.done, true);
      const retried = await requestsAfter("t-restart", killedAt);
      assert.equal(retried.length, 1, "one new provider request");
      assert.deepEqual(retried[0]?.messages, [USER_TURN], "a restart sends the original conversation");
      assert.ok(elapsed < 20_000, `completed ${elapsed} ms after the kill`);
    } finally {
      await stack.startReplica("worker", index);
    }
  });

  test("a worker shut down (SIGTERM) past its drain timeout hands the stream over at once: restart, no gap, no repeat", { timeout: 40_000 }, async () => {
    const [first] = routes("t-restart");
    const stream = await open("t-restart");
    await readTokens(stream, 10);
    const owner = await ownerOf(stream.streamId);
    const worker = stack.replicas("worker").find((replica) => replica.instanceId === owner);
    assert.ok(worker);
    const stoppedAt = Date.now();
    const exited = new Promise<void>((resolve) => worker.process.once("exit", () => resolve()));
    worker.process.kill("SIGTERM");
    try {
      const view = await readToEnd(stream);
      const elapsed = Date.now() - stoppedAt;
      assertCoherent(view);
      assert.equal(view.failovers.length, 1, `one announcement; got ${view.events.length} events ending ${JSON.stringify(view.events.at(-1))}`);
      assertAnnouncement(view.failovers[0], {
        mode: "restart",
        from: first,
        to: view.failovers[0]?.runnel?.failover?.to ?? first,
        takeover: true,
        reason_code: "RUNNEL_ERR_WORKER_LOST",
      });
      assert.equal(view.segments[1], WHOLE, "a complete answer after the announcement");
      assert.equal(view.done, true);
      // 1 s of drain, then the job goes straight back to the queue: no waiting for the 2 s ack deadline.
      const tookOverAt = (await requestsAfter("t-restart", stoppedAt))[0]?.receivedAt ?? Number.POSITIVE_INFINITY;
      assert.ok(tookOverAt - stoppedAt < 1_900, `taken over ${tookOverAt - stoppedAt} ms after SIGTERM`);
      assert.ok(elapsed < 15_000, `completed ${elapsed} ms after SIGTERM`);
    } finally {
      await exited;
      await stack.startReplica("worker", worker.index);
    }
  });

  test("continue on routes that accept prefills: the new worker continues the partial answer", { timeout: 40_000 }, async () => {
    const [first, second] = routes("t-continue");
    const stream = await open("t-continue");
    await readTokens(stream, 10);
    const { index, killedAt } = await killOwner(stream.streamId);
    try {
      const view = await readToEnd(stream);
      assertCoherent(view);
      assert.equal(view.failovers.length, 1, `one announcement; got ${view.events.length} events ending ${JSON.stringify(view.events.at(-1))}`);
      const to = view.failovers[0]?.runnel?.failover?.to;
      assert.ok(
        [first, second].some((candidate) => JSON.stringify(candidate) === JSON.stringify(to)),
        `a route of the model: ${JSON.stringify(to)}`,
      );
      assertAnnouncement(view.failovers[0], { mode: "continue", from: first, to: to ?? first, takeover: true, reason_code: "RUNNEL_ERR_WORKER_LOST" });
      const partial = view.segments[0] ?? "";
      assert.ok(partial.length > 0 && WHOLE.startsWith(partial));
      assert.equal(view.text, WHOLE, "the partial answer and its continuation make the whole answer");
      assert.deepEqual(view.finishReasons, ["stop"]);
      assert.equal(view.done, true);
      const continued = await requestsAfter("t-continue", killedAt);
      assert.equal(continued.length, 1, "one new provider request");
      assert.deepEqual(continued[0]?.messages, [USER_TURN, { role: "assistant", text: partial }], "the prefill is exactly what the client has");
    } finally {
      await stack.startReplica("worker", index);
    }
  });

  test("error: the stream ends with RUNNEL_ERR_WORKER_LOST, no [DONE], and no new provider request", { timeout: 40_000 }, async () => {
    const stream = await open("t-error");
    await readTokens(stream, 10);
    const { index, killedAt } = await killOwner(stream.streamId);
    try {
      const view = await readToEnd(stream);
      const elapsed = Date.now() - killedAt;
      assertCoherent(view);
      assert.equal(view.failovers.length, 0);
      assert.ok(WHOLE.startsWith(view.text) && view.text.length > 0);
      assert.equal(view.error?.code, "RUNNEL_ERR_WORKER_LOST");
      assert.equal(view.done, false);
      assert.equal((await requestsAfter("t-error", killedAt)).length, 0);
      assert.ok(elapsed < 15_000, `ended ${elapsed} ms after the kill`);
    } finally {
      await stack.startReplica("worker", index);
    }
  });
});
