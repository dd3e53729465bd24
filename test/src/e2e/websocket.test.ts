/**
 * The WebSocket transport (`GET /v1/ws`) end to end through real processes,
 * with the `ws` client package: many streams on one socket, cancel, resume
 * on a new socket, errors that leave the socket usable, heartbeats, the
 * handshake, the per-socket limit, and close 1012 on shutdown.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { after, before, describe, test } from "node:test";
import { mockText } from "@runnel/mock-provider";
import WebSocket, { type ClientOptions } from "ws";
import { type E2E, type MockRequest, mockRequests, startE2E, waitForMockRequest } from "./helpers.js";

const expected = mockText(32, 0);
/** The e2e config's heartbeat interval. */
const HEARTBEAT_MS = 1_000;

interface ErrorBody {
  message: string;
  type: string;
  param: string | null;
  code: string;
}

interface ChunkBody {
  id: string;
  object: string;
  choices: Array<{ delta: { content?: string; role?: string }; finish_reason: string | null }>;
  usage?: { completion_tokens: number };
}

/** A server frame, as far as these tests read it (every field is checked where it matters). */
interface Frame {
  type: "started" | "chunk" | "done" | "error";
  id: string | number | null;
  streamId?: string;
  resumeToken?: string;
  seq?: number;
  chunk?: ChunkBody;
  finish_reason?: string;
  usage?: { completion_tokens: number; prompt_tokens: number; total_tokens: number } | null;
  error?: ErrorBody;
}

/** A `ws` client that records every frame and can wait for one. */
class Client {
  readonly frames: Frame[] = [];
  readonly pings: number[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly #waiters = new Set<() => void>();

  private constructor(
    readonly socket: WebSocket,
    readonly response: IncomingMessage,
  ) {
    socket.on("message", (data, isBinary) => {
      assert.equal(isBinary, false, "the server sends text frames only");
      this.frames.push(JSON.parse(String(data)) as Frame);
      for (const wake of this.#waiters) wake();
    });
    socket.on("ping", () => this.pings.push(Date.now()));
    this.closed = new Promise((resolve) => socket.once("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    this.closed.then(() => {
      for (const wake of this.#waiters) wake();
    });
  }

  static open(url: string, protocols: string[] = [], options: ClientOptions = {}): Promise<Client> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, protocols, options);
      let response: IncomingMessage | undefined;
      socket.once("upgrade", (message) => {
        response = message;
      });
      socket.once("open", () => resolve(new Client(socket, response as IncomingMessage)));
      socket.once("error", reject);
      socket.once("unexpected-response", (_request, message) => reject(new Error(`upgrade refused: ${message.statusCode}`)));
    });
  }

  send(frame: Record<string, unknown>): void {
    this.socket.send(JSON.stringify(frame));
  }

  of(id: string | number): Frame[] {
    return this.frames.filter((frame) => frame.id === id);
  }

  /** Resolves with the first frame (recorded or to come) that matches, or fails after `timeoutMs`. */
  async waitFor(predicate: (frame: Frame) => boolean, timeoutMs: number, what = "a frame"): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.find(predicate);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0 || this.socket.readyState === WebSocket.CLOSED) {
        throw new Error(`${what} did not arrive within ${timeoutMs} ms; got ${JSON.stringify(this.frames.slice(-5))}`);
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.#waiters.delete(wake);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.#waiters.add(wake);
      });
    }
  }

  /** The terminal frame (done or error) of request `id`. */
  terminal(id: string | number, timeoutMs: number): Promise<Frame> {
    return this.waitFor((frame) => frame.id === id && (frame.type === "done" || frame.type === "error"), timeoutMs, `the terminal frame of ${id}`);
  }

  close(): Promise<{ code: number; reason: string }> {
    this.socket.close();
    return this.closed;
  }
}

/** The upgrade's HTTP refusal: its status and the OpenAI error body. */
function refusal(url: string, protocols: string[] = []): Promise<{ status: number; body: { error: ErrorBody } }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, protocols);
    socket.once("open", () => reject(new Error("the upgrade was accepted")));
    socket.once("error", () => {});
    socket.once("unexpected-response", (_request, response) => {
      let text = "";
      response.on("data", (data: Buffer) => {
        text += data.toString();
      });
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(text) as { error: ErrorBody } }));
    });
  });
}

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

function body(model: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model, messages: [{ role: "user", content: "Tell me about rivers." }], ...extra };
}

function text(frames: Frame[]): string {
  return frames
    .filter((frame) => frame.type === "chunk")
    .map((frame) => frame.chunk?.choices[0]?.delta.content ?? "")
    .join("");
}

function seqs(frames: Frame[]): number[] {
  return frames.filter((frame) => frame.type === "chunk").map((frame) => frame.seq ?? -1);
}

function consecutiveFrom(first: number, count: number): number[] {
  return Array.from({ length: count }, (_value, index) => first + index);
}

describe("the WebSocket transport through the whole stack", () => {
  let e2e: E2E;
  let url: string;
  /** Mock journal entries that existed before a test began, so a test looks only at its own requests. */
  let seenBefore: Set<MockRequest["id"]>;
  const isNew = (request: MockRequest) => !seenBefore.has(request.id);
  const markJournal = async () => {
    seenBefore = new Set((await mockRequests(e2e.stack)).map((request) => request.id));
  };

  before(async () => {
    e2e = await startE2E("websocket");
    url = `${e2e.stack.ingressUrl.replace(/^http/, "ws")}/v1/ws`;
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
  });

  test("two concurrent streams on one socket each get the exact text, seq consecutive per stream, then done", async () => {
    const client = await Client.open(url);
    client.send({ type: "request", id: "a", body: body("mock") });
    client.send({ type: "request", id: 2, body: body("mock") });
    client.send({ type: "request", id: "with-usage", body: body("mock", { stream_options: { include_usage: true } }) });
    const [doneA, done2, doneUsage] = await Promise.all([client.terminal("a", 10_000), client.terminal(2, 10_000), client.terminal("with-usage", 10_000)]);
    const streamIds = new Set<string>();
    for (const [id, done] of [
      ["a", doneA],
      [2, done2],
      ["with-usage", doneUsage],
    ] as const) {
      const frames = client.of(id);
      const started = frames[0];
      assert.equal(started?.type, "started", `the first frame of ${id} is started`);
      assert.match(started?.streamId ?? "", /^[A-Za-z0-9_-]{22}$/);
      assert.match(started?.resumeToken ?? "", /^[A-Za-z0-9_-]{32}$/);
      streamIds.add(started?.streamId ?? "");
      assert.equal(done.type, "done", `request ${id} ended with ${JSON.stringify(done)}`);
      assert.equal(done.finish_reason, "stop");
      assert.equal(done.streamId, started?.streamId);
      assert.equal(text(frames), expected);
      const chunks = frames.filter((frame) => frame.type === "chunk");
      for (const frame of chunks) {
        assert.equal(frame.streamId, started?.streamId);
        assert.equal(frame.chunk?.object, "chat.completion.chunk");
        assert.equal(frame.chunk?.id, `chatcmpl-${started?.streamId}`);
      }
      assert.deepEqual(seqs(frames), consecutiveFrom(1, chunks.length));
      assert.equal(done.seq, chunks.length + 1);
      assert.equal(frames.at(-1), done, "nothing follows the done frame");
    }
    assert.equal(streamIds.size, 3, "every request has its own stream");
    // role chunk + 32 tokens; the finish reason and the usage come together in the done frame, after every chunk (OpenAI's order).
    assert.equal(client.of("a").filter((frame) => frame.type === "chunk").length, 33);
    assert.equal(doneA.usage, null);
    assert.equal(client.of("with-usage").filter((frame) => frame.type === "chunk").length, 33);
    assert.equal(client.of("with-usage").filter((frame) => frame.chunk?.usage).length, 0, "no usage chunk before the finish");
    assert.equal(doneUsage.usage?.completion_tokens, 32);
    assert.equal(doneUsage.usage?.total_tokens, (doneUsage.usage?.prompt_tokens ?? 0) + 32);
    await client.close();
  });

  test("the handshake selects runnel.v1 and never negotiates permessage-deflate; other paths are 404", async () => {
    // The ws client offers permessage-deflate by default: the server must decline it.
    const client = await Client.open(url, ["runnel.v1"], { perMessageDeflate: true });
    assert.equal(client.response.statusCode, 101);
    assert.equal(client.response.headers["sec-websocket-extensions"], undefined);
    assert.equal(client.socket.extensions, "");
    assert.equal(client.response.headers["sec-websocket-protocol"], "runnel.v1");
    await client.close();

    const plain = await Client.open(url);
    assert.equal(plain.response.headers["sec-websocket-protocol"], undefined);
    await plain.close();

    const elsewhere = await refusal(url.replace("/v1/ws", "/v1/nope"));
    assert.equal(elsewhere.status, 404);
    assert.equal(elsewhere.body.error.code, "RUNNEL_ERR_INVALID_REQUEST");
    const foreign = await refusal(url, ["graphql-ws"]);
    assert.equal(foreign.status, 400);
    assert.match(foreign.body.error.message, /runnel\.v1/);
  });

  test("bad frames get error frames and the socket stays usable", async () => {
    const client = await Client.open(url);
    client.send({ type: "request", id: "bad", body: { model: "mock", messages: [{ role: "robot", content: "hi" }] } });
    const bad = await client.terminal("bad", 5_000);
    assert.equal(bad.type, "error");
    assert.equal(bad.error?.code, "RUNNEL_ERR_INVALID_REQUEST");
    assert.equal(bad.error?.type, "invalid_request_error");
    assert.equal(bad.error?.param, "messages[0].role");

    client.send({ type: "request", id: "unknown-model", body: body("no-such-model") });
    const unknown = await client.terminal("unknown-model", 5_000);
    assert.equal(unknown.error?.code, "RUNNEL_ERR_MODEL_NOT_FOUND");
    assert.equal(unknown.error?.param, "model");

    client.socket.send("{not json");
    const notJson = await client.waitFor((frame) => frame.type === "error" && frame.id === null, 5_000, "the error frame of a non-JSON frame");
    assert.equal(notJson.error?.code, "RUNNEL_ERR_INVALID_REQUEST");

    client.send({ type: "launch", id: "what" });
    const unknownType = await client.terminal("what", 5_000);
    assert.equal(unknownType.error?.code, "RUNNEL_ERR_INVALID_REQUEST");

    client.send({ type: "cancel", id: "never-sent" });
    const cancelUnknown = await client.terminal("never-sent", 5_000);
    assert.equal(cancelUnknown.error?.code, "RUNNEL_ERR_STREAM_NOT_FOUND");

    client.send({ type: "resume", id: "resume-unknown", streamId: "AAAAAAAAAAAAAAAAAAAAAA", after: 0 });
    const resumeUnknown = await client.terminal("resume-unknown", 5_000);
    assert.equal(resumeUnknown.error?.code, "RUNNEL_ERR_STREAM_NOT_FOUND");

    // Every refusal left the socket open: a good request on it still streams the whole text.
    assert.equal(client.socket.readyState, WebSocket.OPEN);
    client.send({ type: "request", id: "good", body: body("mock") });
    const good = await client.terminal("good", 10_000);
    assert.equal(good.type, "done");
    assert.equal(text(client.of("good")), expected);

    // Resuming a finished stream from its end: nothing follows, said at once.
    const goodStream = client.of("good")[0]?.streamId;
    client.send({ type: "resume", id: "past-the-end", streamId: goodStream, after: good.seq });
    const pastTheEnd = await client.terminal("past-the-end", 5_000);
    assert.equal(pastTheEnd.error?.code, "RUNNEL_ERR_INVALID_REQUEST");
    assert.equal(pastTheEnd.error?.param, "after");
    // From before its end: the rest of it, then done.
    client.send({ type: "resume", id: "tail", streamId: goodStream, after: (good.seq ?? 0) - 3 });
    const tail = await client.terminal("tail", 5_000);
    assert.equal(tail.type, "done");
    assert.deepEqual(seqs(client.of("tail")), [(good.seq ?? 0) - 2, (good.seq ?? 0) - 1]);
    assert.equal(text(client.of("tail")), expected.slice(text(client.of("good").slice(0, -3)).length));
    await client.close();
  });

  test("a binary frame closes the socket with 1003, a frame far over the body limit with 1009", async () => {
    const binary = await Client.open(url);
    binary.socket.send(Buffer.from([1, 2, 3]));
    assert.equal((await binary.closed).code, 1003);
    const huge = await Client.open(url);
    // The e2e config keeps the default body limit of 8 MiB; a frame gets 64 KiB beyond it for its envelope
    // (a body just over the limit is an error frame: large-requests.test.ts).
    huge.send({ type: "request", id: "huge", body: body("mock", { user: "x".repeat(8 * 1024 * 1024 + 64 * 1024) }) });
    assert.equal((await huge.closed).code, 1009);
  });

  test("the server pings within two heartbeat intervals; a socket that never pongs is closed with 1001", async () => {
    const openedAt = Date.now();
    const client = await Client.open(url);
    const silent = await Client.open(url, [], { autoPong: false });
    const deadline = openedAt + 2 * HEARTBEAT_MS;
    while (client.pings.length === 0 && Date.now() < deadline + 100) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(client.pings.length > 0, "no ping within two heartbeat intervals");
    assert.ok((client.pings[0] ?? Infinity) - openedAt <= 2 * HEARTBEAT_MS + 100, `first ping ${(client.pings[0] ?? 0) - openedAt} ms after open`);

    const closed = await Promise.race([silent.closed, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 4 * HEARTBEAT_MS))]);
    assert.equal(closed?.code, 1001, "the silent socket was closed with 1001 within four intervals");
    assert.ok(silent.pings.length >= 1);
    // The socket that answers pings is still open.
    assert.equal(client.socket.readyState, WebSocket.OPEN);
    await client.close();
  });

  test("cancel mid-stream closes the provider's connection in under a second, and is idempotent", async () => {
    await markJournal();
    const client = await Client.open(url);
    client.send({ type: "request", id: "c", body: body("long") });
    await client.waitFor((frame) => frame.id === "c" && frame.type === "chunk" && (frame.seq ?? 0) >= 6, 10_000, "five tokens of the long stream");
    const cancelledAt = Date.now();
    client.send({ type: "cancel", id: "c" });
    const terminal = await client.terminal("c", 5_000);
    assert.equal(terminal.type, "error");
    assert.equal(terminal.error?.code, "RUNNEL_ERR_CANCELLED");
    const seen = await waitForMockRequest(
      e2e.stack,
      (request) => isNew(request) && request.model.startsWith("mock?tokens=5000") && request.clientClosed,
      5_000,
    );
    const latency = (seen.clientClosedAt ?? Infinity) - cancelledAt;
    assert.ok(latency < 1_000, `the provider saw the close ${latency} ms after the cancel`);
    assert.ok(seen.tokensSent < 5_000, "the provider stopped generating");

    // Cancelling again is a no-op: no frame for "c"; the frame sent after it is answered first.
    const framesOfC = client.of("c").length;
    client.send({ type: "cancel", id: "c" });
    client.send({ type: "cancel", id: "probe" });
    await client.terminal("probe", 5_000);
    assert.equal(client.of("c").length, framesOfC);
    await client.close();
  });

  test("closing the socket mid-stream and resuming on a new socket continues exactly where it left off", async () => {
    await markJournal();
    const first = await Client.open(url);
    first.send({ type: "request", id: "r", body: body("long") });
    await first.waitFor((frame) => frame.id === "r" && frame.type === "chunk" && (frame.seq ?? 0) >= 50, 10_000, "50 events of the long stream");
    await first.close();
    const started = first.of("r")[0];
    const before = first.of("r").filter((frame) => frame.type === "chunk");
    const lastSeq = before.at(-1)?.seq ?? 0;
    assert.ok(lastSeq >= 50);

    // Well within the 1 s detach grace.
    const second = await Client.open(url);
    second.send({ type: "resume", id: "r2", streamId: started?.streamId, after: lastSeq, token: started?.resumeToken });
    const done = await second.terminal("r2", 60_000);
    assert.equal(done.type, "done", `the resumed stream ended with ${JSON.stringify(done)}`);
    assert.equal(done.finish_reason, "stop");
    const resumed = second.of("r2");
    assert.equal(resumed[0]?.type, "started");
    assert.equal(resumed[0]?.streamId, started?.streamId);
    const all = [...before, ...resumed.filter((frame) => frame.type === "chunk")];
    assert.deepEqual(seqs(all), consecutiveFrom(1, all.length), "no duplicate and no missing seq across the two sockets");
    assert.equal(text(all), mockText(5_000, 0));
    assert.equal(done.seq, all.length + 1);
    const provider = (await mockRequests(e2e.stack)).find((request) => isNew(request) && request.model.startsWith("mock?tokens=5000"));
    assert.equal(provider?.clientClosed, false, "the generation was not cancelled while the client was away");
    assert.equal(provider?.tokensSent, 5_000);
    await second.close();
  });

  test(`a socket runs at most 64 streams at once; one more is refused with an error frame`, async () => {
    const client = await Client.open(url);
    const ids = Array.from({ length: 64 }, (_value, index) => `s${index}`);
    for (const id of ids) client.send({ type: "request", id, body: body("long") });
    client.send({ type: "request", id: "one-too-many", body: body("mock") });
    const refused = await client.terminal("one-too-many", 5_000);
    assert.equal(refused.type, "error");
    assert.equal(refused.error?.code, "RUNNEL_ERR_INVALID_REQUEST");
    assert.match(refused.error?.message ?? "", /64/);
    for (const id of ids) await client.waitFor((frame) => frame.id === id && frame.type === "started", 10_000, `started of ${id}`);
    for (const id of ids) client.send({ type: "cancel", id });
    const ends = await Promise.all(ids.map((id) => client.terminal(id, 10_000)));
    for (const end of ends) assert.equal(end.error?.code, "RUNNEL_ERR_CANCELLED");
    // With the streams over, the socket takes requests again.
    client.send({ type: "request", id: "after", body: body("mock") });
    assert.equal((await client.terminal("after", 10_000)).type, "done");
    assert.equal(text(client.of("after")), expected);
    await client.close();
  });

  test("a client that falls behind is paused, then catches up from the log with every event in order", { timeout: 90_000 }, async () => {
    await markJournal();
    const ingressPid = e2e.stack.services.get("ingress")?.process.pid ?? 0;
    const before = rssKiB(ingressPid);
    const client = await Client.open(url);
    client.socket.pause();
    client.send({ type: "request", id: "burst", body: body("burst") });
    // Not reading for 1.5 s (under the 3 s stuck timeout) while the provider streams 200,000 tokens as fast as it can.
    await waitForMockRequest(e2e.stack, (request) => isNew(request) && request.model === "mock?tokens=200000" && request.tokensSent > 20_000, 30_000);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const growthKiB = rssKiB(ingressPid) - before;
    client.socket.resume();
    const done = await client.terminal("burst", 60_000);
    assert.equal(done.type, "done", `the stream ended with ${JSON.stringify(done)}`);
    const frames = client.of("burst");
    const chunkSeqs = seqs(frames);
    assert.equal(chunkSeqs.length, 200_001, "role chunk and 200,000 tokens");
    chunkSeqs.forEach((seq, index) => {
      if (seq !== index + 1) assert.fail(`chunk ${index} has seq ${seq}`);
    });
    assert.equal(text(frames), mockText(200_000, 0));
    assert.ok(growthKiB < 40 * 1024, `ingress RSS grew by ${growthKiB} KiB while the client read nothing`);
    await client.close();
  });

  test("a client that reads nothing at all is closed with 1008 after the stuck timeout and its stream is cancelled", { timeout: 60_000 }, async () => {
    await markJournal();
    const client = await Client.open(url);
    client.socket.pause();
    const openedAt = Date.now();
    client.send({ type: "request", id: "flood", body: body("flood") });
    const seen = await waitForMockRequest(e2e.stack, (request) => isNew(request) && request.model === "mock?tokens=1000000" && request.clientClosed, 30_000);
    assert.ok(seen.tokensSent < 1_000_000, `the provider was stopped after ${seen.tokensSent} tokens`);
    const elapsed = (seen.clientClosedAt ?? 0) - openedAt;
    // Stuck timeout 3 s in the e2e config; cancelled at once then, with no detach grace.
    assert.ok(elapsed >= 2_500 && elapsed < 15_000, `cancelled ${elapsed} ms after the request`);
    // Reading again: what was queued, then the server's close.
    client.socket.resume();
    const closed = await client.closed;
    assert.equal(closed.code, 1008);
  });

  // Last: it stops the ingress.
  test("shutting the ingress down refuses new requests, lets running streams go on, then closes every socket with 1012", async () => {
    const busy = await Client.open(url);
    const idle = await Client.open(url);
    busy.send({ type: "request", id: "busy", body: body("long") });
    await busy.waitFor((frame) => frame.id === "busy" && frame.type === "chunk", 10_000, "the first event of the long stream");
    const stopping = e2e.stack.stopService("ingress", 30_000);
    // Draining: a new request is refused on an open socket while the running stream still flows.
    await new Promise((resolve) => setTimeout(resolve, 300));
    idle.send({ type: "request", id: "late", body: body("mock") });
    const late = await idle.terminal("late", 5_000);
    assert.equal(late.error?.code, "RUNNEL_ERR_SHUTTING_DOWN");
    const flowing = busy.of("busy").length;
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(busy.of("busy").length > flowing, "the running stream goes on during the drain");

    const [busyClose, idleClose] = await Promise.all([busy.closed, idle.closed]);
    await stopping;
    assert.equal(busyClose.code, 1012);
    assert.equal(idleClose.code, 1012);
    // Not ended as if it were complete: no terminal frame, the client resumes from its last seq elsewhere.
    assert.equal(
      busy.of("busy").some((frame) => frame.type === "done" || frame.type === "error"),
      false,
    );
  });
});
