/**
 * The stream resources and the other clients, end to end through all
 * services: resume with the `eventsource` package after a drop, DELETE
 * cancel, status, long-polling deltas, a 20-second quiet upstream with
 * heartbeats, `curl -N` receiving lines before the upstream finishes, the
 * Python `openai` package, and bad input (413).
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { REPO_ROOT } from "@runnel/launcher";
import { mockText } from "@runnel/mock-provider";
import { EventSource } from "eventsource";
import { chatBody, type E2E, parseSse, startE2E, waitForMockRequest } from "./helpers.js";

const run = promisify(execFile);

interface Chunk {
  choices: { delta: { content?: string }; finish_reason: string | null }[];
}

const content = (data: string) => (JSON.parse(data) as Chunk).choices[0]?.delta.content ?? "";

/** Opens a streaming completion and reads it until `stopAfter` SSE events have arrived, then drops the connection. */
async function openAndDrop(ingressUrl: string, model: string, stopAfter: number) {
  const controller = new AbortController();
  const response = await fetch(`${ingressUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: chatBody(model, { stream: true }),
    signal: controller.signal,
  });
  const streamId = response.headers.get("x-runnel-stream-id") ?? "";
  const token = response.headers.get("x-runnel-resume-token") ?? "";
  const reader = response.body?.getReader();
  assert.ok(reader);
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    assert.equal(done, false, "the stream ended before the drop");
    text += decoder.decode(value, { stream: true });
    const complete = text.slice(0, text.lastIndexOf("\n\n") + 2);
    if (parseSse(complete).events.length >= stopAfter) {
      controller.abort();
      return { streamId, token, events: parseSse(complete).events };
    }
  }
}

describe("stream resources and more clients", () => {
  let e2e: E2E;
  before(async () => {
    e2e = await startE2E("streams");
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
  });

  test("a dropped stream resumes with EventSource from its last id: the whole text, exactly once", { timeout: 30_000 }, async () => {
    const first = await openAndDrop(e2e.stack.ingressUrl, "medium", 40);
    const lastId = Number(first.events.at(-1)?.id);
    assert.ok(lastId >= 40);
    // Within the 1 s detach grace: the generation is still running.
    const url = `${e2e.stack.ingressUrl}/v1/streams/${first.streamId}/events?after=${lastId}&token=${first.token}`;
    const resumed = await new Promise<{ id: number; data: string }[]>((resolve, reject) => {
      const events: { id: number; data: string }[] = [];
      const source = new EventSource(url);
      source.onmessage = (message) => {
        if (message.data === "[DONE]") {
          source.close();
          resolve(events);
          return;
        }
        events.push({ id: Number(message.lastEventId), data: message.data });
      };
      source.onerror = (error) => {
        source.close();
        reject(new Error(`EventSource failed: ${String(error.message)}`));
      };
    });
    const ids = [...first.events.map((event) => Number(event.id)), ...resumed.map((event) => event.id)];
    assert.deepEqual(
      ids,
      ids.map((_id, index) => index + 1),
      "consecutive ids, no duplicate, no gap",
    );
    const text = [...first.events, ...resumed].map((event) => content(event.data)).join("");
    assert.equal(text, mockText(200, 0));
    const seen = (await (await fetch(`${e2e.stack.mockUrl}/_mock/requests`)).json()) as { requests: { model: string; clientClosed: boolean }[] };
    assert.equal(seen.requests.filter((request) => request.model === "mock?tokens=200&itl=10" && request.clientClosed).length, 0, "never cancelled");
  });

  test("resuming after the end answers 204, so EventSource stops reconnecting", async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("mock", { stream: true }),
    });
    const streamId = response.headers.get("x-runnel-stream-id");
    const token = response.headers.get("x-runnel-resume-token");
    const { events } = parseSse(await response.text());
    const last = events.at(-2)?.id;
    const again = await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}/events?token=${token}`, { headers: { "last-event-id": String(last) } });
    assert.equal(again.status, 204);
  });

  test("an EventSource reconnecting with Last-Event-ID resumes after it, not from the ?after= of its URL", async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("mock", { stream: true }),
    });
    const streamId = response.headers.get("x-runnel-stream-id");
    const token = response.headers.get("x-runnel-resume-token");
    assert.equal(parseSse(await response.text()).events.at(-1)?.data, "[DONE]");
    // Opened with ?after=5, it received up to 20, was cut, and reconnects: the URL is unchanged, Last-Event-ID is 20.
    const again = await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}/events?token=${token}&after=5`, { headers: { "last-event-id": "20" } });
    const { events } = parseSse(await again.text());
    assert.equal(events[0]?.id, "21");
    // And the other way round: a fresh position in the URL is not overridden by an older header.
    const fresh = await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}/events?token=${token}&after=30`, { headers: { "last-event-id": "20" } });
    assert.equal(parseSse(await fresh.text()).events[0]?.id, "31");
  });

  test("DELETE cancels at once and idempotently; the reader gets RUNNEL_ERR_CANCELLED; status says cancelled", async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("long", { stream: true }),
    });
    const streamId = response.headers.get("x-runnel-stream-id") ?? "";
    const token = response.headers.get("x-runnel-resume-token") ?? "";
    const body = response.text();
    await waitForMockRequest(e2e.stack, (request) => request.model.startsWith("mock?tokens=5000") && request.tokensSent > 3 && !request.clientClosed, 5_000);
    const cancelledAt = Date.now();
    const cancel = await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}?token=${token}`, { method: "DELETE" });
    assert.equal(cancel.status, 200);
    const seen = await waitForMockRequest(e2e.stack, (request) => request.model.startsWith("mock?tokens=5000") && request.clientClosed, 3_000);
    assert.ok((seen.clientClosedAt ?? 0) - cancelledAt < 1_000, `provider closed ${(seen.clientClosedAt ?? 0) - cancelledAt} ms after DELETE`);
    const { events } = parseSse(await body);
    const last = JSON.parse(events.at(-1)?.data ?? "{}") as { error?: { code: string } };
    assert.equal(last.error?.code, "RUNNEL_ERR_CANCELLED");
    const again = await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}`, { method: "DELETE", headers: { "x-runnel-resume-token": token } });
    assert.equal(again.status, 200);
    const status = (await (await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}?token=${token}`)).json()) as { status: string; id: string };
    assert.equal(status.id, streamId);
    assert.equal(status.status, "cancelled");
  });

  test("DELETE with content-type: application/json and no body cancels (clients that set one header on every call)", async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("long", { stream: true }),
    });
    const streamId = response.headers.get("x-runnel-stream-id") ?? "";
    const token = response.headers.get("x-runnel-resume-token") ?? "";
    const body = response.text();
    const cancel = await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}`, {
      method: "DELETE",
      headers: { "content-type": "application/json", "x-runnel-resume-token": token },
    });
    assert.equal(cancel.status, 200, await cancel.clone().text());
    assert.equal(((await cancel.json()) as { id: string }).id, streamId);
    const last = JSON.parse(parseSse(await body).events.at(-1)?.data ?? "{}") as { error?: { code: string } };
    assert.equal(last.error?.code, "RUNNEL_ERR_CANCELLED");
    // A request that needs a body still says so, in OpenAI's shape.
    const empty = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" } });
    assert.equal(empty.status, 400);
    assert.equal(((await empty.json()) as { error: { code: string } }).error.code, "RUNNEL_ERR_INVALID_REQUEST");
  });

  test("during a long time to first token the client has its stream id within a second, and can cancel with it", { timeout: 30_000 }, async () => {
    await fetch(`${e2e.stack.mockUrl}/_mock/requests`, { method: "DELETE" });
    const sentAt = Date.now();
    // `quiet`: the provider thinks 20 s before its first token.
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("quiet", { stream: true }),
    });
    const headersAfter = Date.now() - sentAt;
    assert.equal(response.status, 200);
    // ingress.holdHeaders is 500 ms; before, the headers waited for the first heartbeat (1 s here, 15 s by default).
    assert.ok(headersAfter < 850, `headers (and the stream id) after ${headersAfter} ms`);
    const streamId = response.headers.get("x-runnel-stream-id") ?? "";
    assert.match(streamId, /^[A-Za-z0-9_-]{22}$/);
    const body = response.text();
    await waitForMockRequest(e2e.stack, (request) => request.model.startsWith("mock?ttft=20000") && !request.clientClosed, 5_000);
    const token = response.headers.get("x-runnel-resume-token") ?? "";
    assert.equal((await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}?token=${token}`, { method: "DELETE" })).status, 200);
    const closed = await waitForMockRequest(e2e.stack, (request) => request.model.startsWith("mock?ttft=20000") && request.clientClosed, 5_000);
    assert.equal(closed.firstTokenAt, null, "cancelled before the provider's first token");
    const last = JSON.parse(parseSse(await body).events.at(-1)?.data ?? "{}") as { error?: { code: string } };
    assert.equal(last.error?.code, "RUNNEL_ERR_CANCELLED", "a failure after the headers is an error event in the stream");
  });

  test("no streaming response is silent for longer than one heartbeat interval, also when a stall starts right after a token", {
    timeout: 30_000,
  }, async () => {
    // ingress.heartbeatInterval is 1 s here; the token lands just after the writer's first tick.
    for (const [path, body, accept] of [
      ["/v1/chat/completions", chatBody("stall-after-token", { stream: true }), "text/event-stream"],
      ["/v1/chat/completions", chatBody("stall-after-token", { stream: true }), "application/x-ndjson"],
      [
        "/v1/messages",
        JSON.stringify({ model: "stall-after-token", max_tokens: 64, stream: true, messages: [{ role: "user", content: "hi" }] }),
        "text/event-stream",
      ],
    ] as const) {
      const controller = new AbortController();
      const response = await fetch(`${e2e.stack.ingressUrl}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", accept },
        body,
        signal: controller.signal,
      });
      const arrivals: { at: number; text: string }[] = [];
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      const until = Date.now() + 5_000;
      while (Date.now() < until) {
        const { value, done } = await reader.read();
        if (done) break;
        arrivals.push({ at: Date.now(), text: decoder.decode(value, { stream: true }) });
      }
      controller.abort();
      const token = arrivals.findIndex((arrival) => /"(content|text)":"[^"]+/.test(arrival.text));
      assert.ok(token >= 0, `${path} ${accept}: the token arrived (${JSON.stringify(arrivals.map((arrival) => arrival.text))})`);
      const after = arrivals.slice(token);
      assert.ok(after.length >= 4, `${path} ${accept}: heartbeats followed the token (${after.length - 1})`);
      const gaps = after.slice(1).map((arrival, index) => arrival.at - (after[index] as { at: number }).at);
      // One interval (1 s), with room for a loaded machine's timers; two intervals of silence fail.
      assert.ok(Math.max(...gaps) < 1_400, `${path} ${accept}: gaps after the token ${gaps.join(", ")} ms`);
    }
  });

  test("while a stream runs, its status shows the live last_seq and the provider serving it; resumed chunks name the same model as live ones", {
    timeout: 30_000,
  }, async () => {
    const controller = new AbortController();
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("long", { stream: true }),
      signal: controller.signal,
    });
    const streamId = response.headers.get("x-runnel-stream-id") ?? "";
    const token = response.headers.get("x-runnel-resume-token") ?? "";
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let text = "";
    while (parseSse(text).events.length < 40) text += decoder.decode((await reader.read()).value, { stream: true });
    const live = parseSse(text).events.map((event) => JSON.parse(event.data) as { model: string });
    const liveModel = live.at(-1)?.model;
    assert.equal(liveModel, "mock?tokens=5000&itl=5", "live chunks name the upstream model that serves");

    const status = (await (await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}?token=${token}`)).json()) as {
      status: string;
      last_seq: number;
      provider: string | null;
    };
    assert.equal(status.status, "running");
    assert.ok(status.last_seq >= 40, `last_seq ${status.last_seq} while 40 events are out`);
    assert.equal(status.provider, "mock");

    // Resumed past the stream's `started` event, over SSE and polling: the same model as the live chunks.
    const resumed = await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}/events?token=${token}&after=20`);
    const resumedReader = (resumed.body as ReadableStream<Uint8Array>).getReader();
    let resumedText = "";
    while (parseSse(resumedText).events.length < 5) resumedText += decoder.decode((await resumedReader.read()).value, { stream: true });
    await resumedReader.cancel();
    for (const event of parseSse(resumedText).events) assert.equal((JSON.parse(event.data) as { model: string }).model, liveModel);
    const deltas = (await (await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}/deltas?token=${token}&after=20`)).json()) as {
      events: { chunk: { model: string } }[];
    };
    assert.ok(deltas.events.length > 0);
    for (const event of deltas.events) assert.equal(event.chunk.model, liveModel);
    controller.abort();
    await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}?token=${token}`, { method: "DELETE" });
  });

  test("an unknown stream is a 404 in OpenAI's error format", async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/streams/AAAAAAAAAAAAAAAAAAAAAA`);
    assert.equal(response.status, 404);
    const body = (await response.json()) as { error: { code: string } };
    assert.equal(body.error.code, "RUNNEL_ERR_STREAM_NOT_FOUND");
  });

  test("long-polling deltas read the whole stream in order", { timeout: 30_000 }, async () => {
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("medium", { stream: true }),
    });
    const streamId = response.headers.get("x-runnel-stream-id");
    const token = response.headers.get("x-runnel-resume-token");
    void response.body?.cancel();
    let next = 0;
    let done = false;
    let text = "";
    let polls = 0;
    while (!done) {
      polls += 1;
      assert.ok(polls < 500, "too many polls");
      const poll = await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}/deltas?after=${next}&wait=2000&token=${token}`);
      assert.equal(poll.status, 200);
      const body = (await poll.json()) as { events: { seq: number; chunk?: Chunk }[]; next: number; done: boolean };
      for (const [index, event] of body.events.entries()) assert.equal(event.seq, next + index + 1);
      text += body.events.map((event) => event.chunk?.choices[0]?.delta.content ?? "").join("");
      assert.ok(body.next >= next);
      next = body.next;
      done = body.done;
    }
    assert.equal(text, mockText(200, 0));
    // Polling again from the end answers at once that nothing follows.
    const started = Date.now();
    const again = (await (await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}/deltas?after=${next}&wait=5000&token=${token}`)).json()) as {
      events: unknown[];
      done: boolean;
    };
    assert.deepEqual(again, { events: [], next, done: true });
    assert.ok(Date.now() - started < 1_000);
  });

  test("a 20-second quiet upstream is not timed out and gets heartbeats meanwhile", { timeout: 60_000 }, async () => {
    const started = Date.now();
    const response = await fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody("quiet", { stream: true }),
    });
    const { events, comments } = parseSse(await response.text());
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 19_500, `answered after ${elapsed} ms`);
    assert.equal(events.at(-1)?.data, "[DONE]");
    assert.equal(events.map((event) => (event.data === "[DONE]" ? "" : content(event.data))).join(""), mockText(3, 0));
    assert.ok(comments >= 15, `${comments} keep-alive comments in 20 s at a 1 s interval`);
  });

  test("curl -N prints the first lines before the upstream has finished", { timeout: 30_000 }, async () => {
    const curl = spawn("curl", [
      "-sS",
      "-N",
      `${e2e.stack.ingressUrl}/v1/chat/completions`,
      "-H",
      "content-type: application/json",
      "-d",
      chatBody("medium", { stream: true }),
    ]);
    const started = Date.now();
    let firstDataAt = 0;
    let output = "";
    curl.stdout.on("data", (data: Buffer) => {
      output += data.toString();
      if (!firstDataAt && output.includes('"content":"')) firstDataAt = Date.now();
    });
    const code = await new Promise<number | null>((resolve) => curl.once("exit", resolve));
    const endedAt = Date.now();
    assert.equal(code, 0);
    assert.ok(firstDataAt > 0 && endedAt - firstDataAt > 1_000, `first token ${firstDataAt - started} ms in, end ${endedAt - started} ms in`);
    assert.equal(parseSse(output).events.at(-1)?.data, "[DONE]");
  });

  test("the Python openai package streams the exact text", { timeout: 60_000 }, async () => {
    const python = process.env.RUNNEL_TEST_PYTHON;
    assert.ok(python, "RUNNEL_TEST_PYTHON is set by npm test's bootstrap (a venv with the pinned openai package)");
    const { stdout } = await run(python, [join(REPO_ROOT, "test", "python", "stream_chat.py"), `${e2e.stack.ingressUrl}/v1`, "mock"]);
    const result = JSON.parse(stdout) as { text: string; finish_reason: string; stream_id: string };
    assert.equal(result.text, mockText(32, 0));
    assert.equal(result.finish_reason, "stop");
    assert.match(result.stream_id, /^[A-Za-z0-9_-]{22}$/);
  });

  test("a body over the limit is a 413 in OpenAI's format, the upload is not cut, and the ingress stays healthy", async () => {
    const huge = JSON.stringify({ model: "mock", messages: [{ role: "user", content: "x".repeat(9 * 1024 * 1024) }] });
    // node:http, which sends the whole body at once (no Expect: 100-continue), as most clients do.
    // Closing on a client still uploading resets the connection, and the reset can take the 413
    // with it: the ingress reads the rest of the upload instead, so the request must not fail.
    const answer = await new Promise<{ status: number; body: string; connection: string | undefined }>((resolve, reject) => {
      const request = httpRequest(
        `${e2e.stack.ingressUrl}/v1/chat/completions`,
        { method: "POST", headers: { "content-type": "application/json" } },
        (response) => {
          let body = "";
          response.setEncoding("utf8");
          response.on("data", (chunk: string) => {
            body += chunk;
          });
          response.on("end", () => resolve({ status: response.statusCode ?? 0, body, connection: response.headers.connection }));
        },
      );
      request.on("error", reject);
      request.end(huge);
    });
    assert.equal(answer.status, 413);
    const body = JSON.parse(answer.body) as { error: { code: string; type: string } };
    assert.equal(body.error.code, "RUNNEL_ERR_BODY_TOO_LARGE");
    assert.notEqual(answer.connection, "close", "the connection is kept: its next request can follow");
    assert.equal((await fetch(`${e2e.stack.ingressUrl}/readyz`)).status, 200);
  });
});

describe("with authentication on", () => {
  let e2e: E2E;
  const keyA = "sk-runnel-test-team-a-0001";
  const keyB = "sk-runnel-test-team-b-0002";
  before(async () => {
    e2e = await startE2E("auth", join(REPO_ROOT, "test", "fixtures", "runnel.auth.yaml"));
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
  });

  const post = (key: string | undefined) =>
    fetch(`${e2e.stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: chatBody("mock", { stream: true }),
    });

  test("no key or a wrong key is a 401 in OpenAI's error format", async () => {
    for (const key of [undefined, "sk-not-a-key-of-this-gateway"]) {
      const response = await post(key);
      assert.equal(response.status, 401);
      const body = (await response.json()) as { error: { type: string; code: string } };
      assert.equal(body.error.type, "authentication_error");
      assert.equal(body.error.code, "RUNNEL_ERR_UNAUTHORIZED");
    }
  });

  test("only the key that opened a stream, or its resume token, may read or cancel it", async () => {
    const response = await post(keyA);
    assert.equal(response.status, 200);
    const streamId = response.headers.get("x-runnel-stream-id");
    const token = response.headers.get("x-runnel-resume-token") ?? "";
    await response.text();
    const status = (key: string) => fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal((await status(keyA)).status, 200);
    assert.equal((await status(keyB)).status, 401);
    assert.equal(
      (await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}`, { method: "DELETE", headers: { authorization: `Bearer ${keyB}` } })).status,
      401,
    );
    assert.equal((await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}?token=${token}`)).status, 200);
    assert.equal((await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}?token=${token.replace(/^./, (c) => (c === "A" ? "B" : "A"))}`)).status, 401);
  });
});
