/**
 * A rolling restart of the deployed topology, simulated with processes: two
 * ingress replicas behind a round-robin TCP load balancer (standing for the
 * Kubernetes Service, see load-balancer.ts for what it models), two workers,
 * two control-plane replicas, NATS and the mock provider, each a separate
 * process. While 50 streams run (SSE read with the `openai` SDK and resumed
 * with `eventsource`; WebSocket with `ws`), each ingress, then each worker,
 * then each control plane is replaced one at a time as a Deployment rollout
 * replaces pods: out of the endpoints, preStop sleep, SIGTERM, exit, a new
 * process on the same port, ready, back in the endpoints. Every stream must
 * end with `done` and carry exactly the mock's text for it, every seq once
 * and in order, however many times it was resumed.
 *
 * The clock is compressed (docs/deploy.md has the deployed values): preStop
 * 300 ms instead of 10 s, SHUTDOWN_DELAY_MS 300 ms instead of 5 s, the
 * ingress's drain 500 ms instead of 10 s and the worker's 2 s instead of 30 s
 * (test/fixtures/runnel.rolling.yaml), so that the restarts cut streams: the
 * clients must resume them, and the draining workers hand them over (the
 * models' `afterFirstToken: continue`).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { LoadBalancer, type NatsHandle, REPO_ROOT, type ReplicatedService, type Stack, startNats, startStack } from "@runnel/launcher";
import { mockText } from "@runnel/mock-provider";
import { EventSource } from "eventsource";
import OpenAI, { APIError } from "openai";
import WebSocket from "ws";

const CONFIG = join(REPO_ROOT, "test", "fixtures", "runnel.rolling.yaml");
const API_KEY = "sk-runnel-test-rolling-0001";
/** The models of the fixture and the text the mock generates for each. */
const MODELS = {
  short: mockText(100, 101),
  medium: mockText(150, 202),
  long: mockText(500, 303),
} as const;
type Model = keyof typeof MODELS;

const STREAMS = 50;
/** Compressed lifecycle: preStop (10 s deployed), SHUTDOWN_DELAY_MS (5 s), endpoint removal reaching the proxy (about 1 s). */
const PRE_STOP_MS = 300;
const SHUTDOWN_DELAY_MS = 300;
const PROPAGATION_MS = 150;

interface Chunk {
  choices: { delta: { content?: string | null }; finish_reason: string | null }[];
  runnel?: { failover?: { mode: string; takeover: boolean } };
}

/** What one client saw of one stream, across every connection it took. */
interface Seen {
  readonly index: number;
  readonly transport: "sse" | "ws";
  readonly model: Model;
  streamId: string;
  token: string;
  /** The seq of every event received, in arrival order. */
  readonly seqs: number[];
  text: string;
  finish: string | null;
  /** Connections after the first: EventSource (re)connections, WebSocket `resume` frames. */
  resumes: number;
  /** Requests refused with RUNNEL_ERR_SHUTTING_DOWN and sent again. */
  retried: number;
  /** Failover announcements received (a worker handing the stream to another one). */
  failovers: string[];
  error: string | undefined;
  endedAt: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What every client shares: where to connect, and how the test stops those still running when it ends. */
interface Clients {
  readonly baseUrl: string;
  /** Set when the test is over: nothing reconnects any more. */
  stopped: boolean;
  readonly closers: Set<() => void>;
}

function track(index: number, transport: Seen["transport"], model: Model): Seen {
  return {
    index,
    transport,
    model,
    streamId: "",
    token: "",
    seqs: [],
    text: "",
    finish: null,
    resumes: 0,
    retried: 0,
    failovers: [],
    error: undefined,
    endedAt: 0,
  };
}

/** Takes one chunk's text, as a client must: a failover `restart` announcement discards what came before (docs/api.md). */
function receive(seen: Seen, chunk: Chunk): void {
  const failover = chunk.runnel?.failover;
  if (failover) {
    seen.failovers.push(`${failover.mode}${failover.takeover ? " (takeover)" : ""}`);
    if (failover.mode === "restart") seen.text = "";
  }
  seen.text += chunk.choices[0]?.delta.content ?? "";
  seen.finish = chunk.choices[0]?.finish_reason ?? seen.finish;
}

/**
 * An app reading a completion with the openai SDK. If the ingress shuts down
 * mid-stream (an RUNNEL_ERR_SHUTTING_DOWN error event) or the connection
 * drops, it resumes with an EventSource on /v1/streams/{id}/events from the
 * last seq it has, which itself reconnects (Last-Event-ID) if cut again.
 */
async function runSse(client: OpenAI, clients: Clients, seen: Seen): Promise<void> {
  const controller = new AbortController();
  const abort = () => controller.abort();
  clients.closers.add(abort);
  try {
    const { data: stream, response } = await client.chat.completions
      .create({ model: seen.model, stream: true, messages: [{ role: "user", content: `stream ${seen.index}` }] }, { signal: controller.signal })
      .withResponse();
    seen.streamId = response.headers.get("x-runnel-stream-id") ?? "";
    seen.token = response.headers.get("x-runnel-resume-token") ?? "";
    for await (const chunk of stream) {
      // One chunk per stream event: the n-th chunk is seq n.
      seen.seqs.push(seen.seqs.length + 1);
      receive(seen, chunk as Chunk);
    }
    if (seen.finish !== null) return;
  } catch (error) {
    if (!seen.streamId || (error instanceof APIError && error.code !== "RUNNEL_ERR_SHUTTING_DOWN")) throw error;
  } finally {
    clients.closers.delete(abort);
  }
  if (clients.stopped) throw new Error("cut, and the test is over");
  await resumeWithEventSource(clients, seen);
}

function resumeWithEventSource(clients: Clients, seen: Seen): Promise<void> {
  return new Promise((resolve, reject) => {
    // As docs/api.md shows it: the position in the URL; EventSource adds Last-Event-ID when it reconnects.
    const source = new EventSource(`${clients.baseUrl}/v1/streams/${seen.streamId}/events?token=${seen.token}&after=${seen.seqs.length}`);
    const close = (error: Error) => {
      source.close();
      clients.closers.delete(stop);
      reject(error);
    };
    const stop = () => close(new Error("still reading when the test ended"));
    clients.closers.add(stop);
    source.onopen = () => {
      seen.resumes += 1;
    };
    source.onmessage = (message) => {
      if (message.data === "[DONE]") {
        source.close();
        clients.closers.delete(stop);
        resolve();
        return;
      }
      const payload = JSON.parse(message.data) as Chunk & { error?: { code: string; message: string } };
      if (payload.error) {
        close(new Error(`error event ${payload.error.code}: ${payload.error.message}`));
        return;
      }
      seen.seqs.push(Number(message.lastEventId));
      receive(seen, payload);
    };
    source.onerror = (event) => {
      // CONNECTING: it reconnects on its own. CLOSED: it gave up (a non-200 answer).
      if (source.readyState === source.CLOSED) close(new Error(`EventSource gave up: ${event.message ?? ""} (${event.code ?? "no status"})`));
    };
  });
}

interface WsFrame {
  type: "started" | "chunk" | "done" | "error";
  id: string | number | null;
  streamId?: string;
  resumeToken?: string;
  seq?: number;
  chunk?: Chunk;
  finish_reason?: string | null;
  error?: { code: string; message: string };
}

/**
 * An app with one WebSocket carrying a few streams. When the socket closes
 * (1012 from an ingress shutting down), it reconnects through the load
 * balancer and sends `resume` for every stream it has an id for, `request`
 * again for any whose `started` it never got.
 */
class WsApp {
  readonly #url: string;
  readonly #clients: Clients;
  readonly #streams = new Map<string, { seen: Seen; resolve: () => void; reject: (error: Error) => void }>();
  #socket: WebSocket | undefined;
  #reconnecting = false;
  closes: number[] = [];

  constructor(clients: Clients) {
    this.#clients = clients;
    this.#url = `${clients.baseUrl.replace("http", "ws")}/v1/ws`;
    clients.closers.add(() => {
      for (const entry of this.#streams.values()) entry.reject(new Error("still reading when the test ended"));
      this.#streams.clear();
      this.#socket?.terminate();
    });
  }

  run(seen: Seen): Promise<void> {
    const done = new Promise<void>((resolve, reject) => {
      this.#streams.set(String(seen.index), { seen, resolve, reject });
    });
    const state = this.#socket?.readyState;
    if (state === WebSocket.OPEN) this.#send({ type: "request", id: String(seen.index), body: this.#body(seen) });
    // Connecting, closing (its close handler reconnects) or about to reconnect: the next open sends it.
    else if ((state === undefined || state === WebSocket.CLOSED) && !this.#reconnecting) this.#connect(0);
    return done;
  }

  #body(seen: Seen) {
    return { model: seen.model, messages: [{ role: "user", content: `stream ${seen.index}` }] };
  }

  #send(frame: unknown): void {
    this.#socket?.send(JSON.stringify(frame));
  }

  #connect(attempt: number): void {
    this.#reconnecting = false;
    const socket = new WebSocket(this.#url, ["runnel.v1"], { headers: { authorization: `Bearer ${API_KEY}` } });
    this.#socket = socket;
    socket.on("open", () => {
      for (const [id, entry] of this.#streams) {
        if (entry.seen.streamId) {
          entry.seen.resumes += 1;
          this.#send({ type: "resume", id, streamId: entry.seen.streamId, after: entry.seen.seqs.at(-1) ?? 0, token: entry.seen.token });
        } else {
          this.#send({ type: "request", id, body: this.#body(entry.seen) });
        }
      }
    });
    socket.on("message", (data) => this.#onFrame(JSON.parse(String(data)) as WsFrame));
    socket.on("error", () => {});
    socket.on("close", (code) => {
      this.closes.push(code);
      if (socket !== this.#socket || this.#streams.size === 0 || this.#clients.stopped) return;
      // Refused upgrades and resets while the load balancer catches up: try again, a bounded number of times.
      if (attempt >= 20) {
        for (const entry of this.#streams.values()) entry.reject(new Error(`websocket: gave up reconnecting (last close ${code})`));
        return;
      }
      this.#reconnecting = true;
      setTimeout(() => this.#connect(code === 1012 ? 0 : attempt + 1), 100 + Math.floor(Math.random() * 200));
    });
  }

  #onFrame(frame: WsFrame): void {
    const id = String(frame.id);
    const entry = this.#streams.get(id);
    if (!entry) return;
    const { seen } = entry;
    switch (frame.type) {
      case "started":
        seen.streamId = frame.streamId ?? "";
        seen.token ||= frame.resumeToken ?? "";
        return;
      case "chunk":
        seen.seqs.push(frame.seq ?? 0);
        if (frame.chunk) receive(seen, frame.chunk);
        return;
      case "done":
        seen.seqs.push(frame.seq ?? 0);
        seen.finish = frame.finish_reason ?? null;
        this.#streams.delete(id);
        entry.resolve();
        if (this.#streams.size === 0) this.#socket?.close(1000);
        return;
      case "error":
        if (frame.error?.code === "RUNNEL_ERR_SHUTTING_DOWN") {
          // Refused by a draining ingress: the socket closes with 1012 next, and the reconnect sends it again.
          seen.retried += 1;
          return;
        }
        this.#streams.delete(id);
        entry.reject(new Error(`error frame ${frame.error?.code}: ${frame.error?.message}`));
    }
  }
}

async function streamStatus(baseUrl: string, seen: Seen): Promise<string> {
  const response = await fetch(`${baseUrl}/v1/streams/${seen.streamId}?token=${seen.token}`);
  return response.text();
}

/** What the mock provider saw: one request per generation, and how many the gateway closed early (cancels, hand-offs). */
async function mockGenerations(mockUrl: string): Promise<{ requests: number; cut: number }> {
  const { requests } = (await (await fetch(`${mockUrl}/_mock/requests`)).json()) as { requests: { clientClosed: boolean }[] };
  return { requests: requests.length, cut: requests.filter((request) => request.clientClosed).length };
}

interface Restart {
  readonly replica: string;
  /** SIGTERM to exit. */
  stopMs: number;
  /** New process to ready. */
  startMs: number;
  /** Out of the endpoints to back in them (ingress), or SIGTERM to ready (others). */
  totalMs: number;
  exitCode: number | null;
}

describe("a rolling restart of every ingress, worker and control plane while 50 streams run", () => {
  let nats: NatsHandle;
  let stack: Stack;
  let balancer: LoadBalancer;

  before(async () => {
    nats = await startNats();
    stack = await startStack({
      natsUrl: nats.url,
      env: { RUNNEL_CONFIG: CONFIG, LOG_LEVEL: "info" },
      serviceEnv: { ingress: { SHUTDOWN_DELAY_MS: String(SHUTDOWN_DELAY_MS) }, "control-plane": { SHUTDOWN_DELAY_MS: String(SHUTDOWN_DELAY_MS) } },
      replicas: { "control-plane": 2, worker: 2, ingress: 2 },
      logDir: join(REPO_ROOT, ".runnel", "logs", "rolling-restart"),
    });
    balancer = await LoadBalancer.start(
      stack.replicas("ingress").map((replica) => ({ name: replica.instanceId, port: replica.port })),
      { probeIntervalMs: 100, propagationMs: PROPAGATION_MS },
    );
  });
  after(async () => {
    await balancer?.close();
    await stack?.stop();
    await nats?.stop();
  });

  test("every stream completes with done and exactly its text: no token lost or repeated", { timeout: 150_000 }, async (t) => {
    const client = new OpenAI({ baseURL: `${balancer.url}/v1`, apiKey: API_KEY, maxRetries: 4 });
    const clients: Clients = { baseUrl: balancer.url, stopped: false, closers: new Set() };
    t.after(() => {
      clients.stopped = true;
      for (const close of [...clients.closers]) close();
    });
    const models: Model[] = ["long", "medium", "short"];
    /** The first wave is all long streams: those on the first ingress are cut by both ingress restarts, and resumed twice. */
    let onlyLong = true;
    const all: Seen[] = [];
    const running: Promise<void>[] = [];
    let wsApp: WsApp | undefined;

    const launch = () => {
      const index = all.length;
      const model = onlyLong ? "long" : (models[index % models.length] as Model);
      // Two in five over WebSocket, two streams to a socket.
      const transport = index % 5 >= 3 ? "ws" : "sse";
      const seen = track(index, transport, model);
      all.push(seen);
      let run: Promise<void>;
      if (transport === "ws") {
        if (!wsApp || index % 5 === 3) wsApp = new WsApp(clients);
        run = wsApp.run(seen);
      } else {
        run = runSse(client, clients, seen);
      }
      running.push(
        run.then(
          () => {
            seen.endedAt = Date.now();
          },
          (error: unknown) => {
            seen.endedAt = Date.now();
            seen.error = error instanceof Error ? error.message : String(error);
          },
        ),
      );
    };
    /** Starts `count` streams `gapMs` apart. */
    const wave = async (count: number, gapMs: number) => {
      for (let started = 0; started < count && all.length < STREAMS; started += 1) {
        launch();
        await sleep(gapMs);
      }
    };
    const firstEvents = async (from: number) => {
      const deadline = Date.now() + 15_000;
      while (all.slice(from).some((seen) => seen.seqs.length === 0 && !seen.error)) {
        assert.ok(Date.now() < deadline, "streams of the wave got no first event within 15 s");
        await sleep(20);
      }
    };

    const restarts: Restart[] = [];
    const restart = async (name: ReplicatedService, index: number) => {
      const old = stack.replicas(name)[index];
      assert.ok(old);
      const begun = Date.now();
      // The pod is deleted: the endpoints controller takes it out while preStop sleeps, then the kubelet sends SIGTERM.
      if (name === "ingress") {
        await Promise.all([balancer.terminate(old.instanceId), sleep(PRE_STOP_MS)]);
      }
      const signalled = Date.now();
      await stack.stopReplica(name, index, 30_000);
      const exited = Date.now();
      const fresh = await stack.startReplica(name, index);
      const ready = Date.now();
      if (name === "ingress") {
        balancer.restore(old.instanceId);
        await balancer.waitInRotation([old.instanceId], 10_000);
      }
      restarts.push({
        replica: old.instanceId,
        stopMs: exited - signalled,
        startMs: ready - exited,
        totalMs: Date.now() - begun,
        exitCode: old.process.exitCode,
      });
      t.diagnostic(`${old.instanceId} → ${fresh.instanceId}: stop ${exited - signalled} ms, start ${ready - exited} ms, ${Date.now() - begun} ms in all`);
    };

    const phases: [ReplicatedService, number][] = [
      ["ingress", 0],
      ["ingress", 1],
      ["worker", 0],
      ["worker", 1],
    ];
    const perPhase = Math.ceil(STREAMS / phases.length);
    const began = Date.now();
    for (const [name, index] of phases) {
      // Streams running when the replica goes, and more arriving while it drains.
      const from = all.length;
      await wave(Math.ceil(perPhase * 0.6), 60);
      onlyLong = false;
      await firstEvents(from);
      await Promise.all([restart(name, index), wave(perPhase - Math.ceil(perPhase * 0.6), 150)]);
    }
    // Off the hot path: streams go on while the control planes restart.
    await restart("control-plane", 0);
    await restart("control-plane", 1);
    const settle = Date.now();
    let giveUp: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(running), new Promise((resolve) => (giveUp = setTimeout(resolve, 30_000)))]);
    clearTimeout(giveUp);
    const tail = Date.now() - settle;
    clients.stopped = true;
    for (const close of [...clients.closers]) close();
    await Promise.all(running);

    const failed = all.filter((seen) => seen.error !== undefined || seen.endedAt === 0);
    const resumes = (transport: Seen["transport"]) => all.filter((seen) => seen.transport === transport).reduce((sum, seen) => sum + seen.resumes, 0);
    const retried = all.reduce((sum, seen) => sum + seen.retried, 0);
    t.diagnostic(
      `${all.length} streams (${all.filter((seen) => seen.transport === "sse").length} SSE, ${all.filter((seen) => seen.transport === "ws").length} WebSocket) in ${Date.now() - began} ms; last streams ended ${tail} ms after the last restart`,
    );
    t.diagnostic(
      `resumes: ${resumes("sse")} EventSource connections (SSE), ${resumes("ws")} resume frames (WebSocket); ${all.filter((seen) => seen.resumes > 0).length} streams resumed, ${all.filter((seen) => seen.resumes > 1).length} of them more than once; ${retried} WebSocket requests refused while draining and sent again`,
    );
    t.diagnostic(
      `load balancer: connections ${JSON.stringify(balancer.connections())}, refused ${balancer.refused}, upstream errors ${balancer.upstreamErrors}`,
    );
    const handedOff = all.filter((seen) => seen.failovers.length > 0);
    t.diagnostic(
      `${handedOff.length} streams handed from a draining worker to the other: ${[...new Set(handedOff.flatMap((seen) => seen.failovers))].join(", ") || "-"}`,
    );
    const generations = await mockGenerations(stack.mockUrl);
    t.diagnostic(`mock provider: ${generations.requests} requests, ${generations.cut} closed by the gateway before the end`);
    for (const seen of failed) {
      const status = seen.streamId ? await streamStatus(balancer.url, seen) : "no stream id";
      t.diagnostic(
        `stream ${seen.index} (${seen.transport}, ${seen.model}, ${seen.streamId}, ${seen.seqs.length} events): ${seen.error ?? "never ended"}; status ${status}`,
      );
    }

    assert.equal(all.length, STREAMS);
    assert.deepEqual(
      failed.map((seen) => `${seen.index}: ${seen.error ?? "never ended"}`),
      [],
      "every stream ends with done",
    );
    for (const seen of all) {
      const label = `stream ${seen.index} (${seen.transport}, ${seen.model}, resumed ${seen.resumes}×)`;
      assert.deepEqual(
        seen.seqs,
        seen.seqs.map((_seq, position) => position + 1),
        `${label}: every seq once, in order`,
      );
      assert.equal(seen.finish, "stop", `${label}: ended with done`);
      assert.equal(seen.text, MODELS[seen.model], `${label}: exactly the mock's text`);
    }
    for (const each of restarts) assert.equal(each.exitCode, 0, `${each.replica} shut down cleanly within its grace`);
    assert.ok(resumes("sse") > 0 && resumes("ws") > 0, "the restarts cut SSE and WebSocket streams, and clients resumed them");
  });
});
