/**
 * Runnel from a real browser: headless Chromium (the system's
 * /usr/bin/chromium, driven by playwright-core; nothing is downloaded) loads
 * a page from another origin, which streams a completion with `fetch`,
 * leaves mid-stream and resumes the rest with `EventSource`, and streams one
 * over a browser `WebSocket`. The stack runs with its own config
 * (test/fixtures/browser.yaml): CORS for the page's origin only, auth on.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type NatsHandle, REPO_ROOT, type Stack, startNats, startStack } from "@runnel/launcher";
import { mockText } from "@runnel/mock-provider";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import WebSocket from "ws";
import { mockRequests } from "./helpers.js";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const BROWSER_CONFIG = join(REPO_ROOT, "test", "fixtures", "browser.yaml");
const expected = mockText(32, 0);

/**
 * The page: plain browser JavaScript, no bundler. Each function runs one
 * scenario and resolves with what it saw, for the assertions in Node.
 */
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Runnel browser test</title></head>
<body><script>
"use strict";
const MESSAGES = [{ role: "user", content: "Tell me about rivers." }];

window.runnelTests = {
  /** fetch a streaming completion, read it up to seq leaveAfter, leave, and resume the rest with EventSource. */
  async fetchThenResume(base, key, model, leaveAfter) {
    const controller = new AbortController();
    const response = await fetch(base + "/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer " + key },
      body: JSON.stringify({ model, stream: true, messages: MESSAGES }),
      signal: controller.signal,
    });
    const streamId = response.headers.get("x-runnel-stream-id");
    const token = response.headers.get("x-runnel-resume-token");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const seqs = [];
    let buffered = "";
    let fetchText = "";
    let lastSeq = 0;
    reading: for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf("\\n\\n")) >= 0) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        let id = null;
        let data = "";
        for (const line of block.split("\\n")) {
          if (line.startsWith("id: ")) id = Number(line.slice(4));
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (id === null) continue;
        fetchText += JSON.parse(data).choices[0]?.delta?.content ?? "";
        seqs.push(id);
        lastSeq = id;
        if (lastSeq >= leaveAfter) break reading;
      }
    }
    controller.abort();
    const resumeText = await new Promise((resolve, reject) => {
      let text = "";
      const url = base + "/v1/streams/" + streamId + "/events?token=" + encodeURIComponent(token) + "&after=" + lastSeq;
      const source = new EventSource(url);
      source.onmessage = (event) => {
        if (event.data === "[DONE]") {
          source.close();
          resolve(text);
          return;
        }
        const chunk = JSON.parse(event.data);
        if (chunk.error) {
          source.close();
          reject(new Error("error event: " + JSON.stringify(chunk.error)));
          return;
        }
        text += chunk.choices[0]?.delta?.content ?? "";
        seqs.push(Number(event.lastEventId));
      };
      // EventSource would reconnect on its own; a failure here is the test's failure.
      source.onerror = () => {
        source.close();
        reject(new Error("EventSource failed"));
      };
    });
    return { streamId, token, fetchText, resumeText, seqs, leftAt: lastSeq };
  },

  /** One completion over a browser WebSocket, offering the given subprotocols. */
  websocket(wsBase, protocols, model) {
    return new Promise((resolve) => {
      const socket = new WebSocket(wsBase + "/v1/ws", protocols);
      const seqs = [];
      let text = "";
      let opened = false;
      let started = null;
      socket.onopen = () => {
        opened = true;
        socket.send(JSON.stringify({ type: "request", id: "page", body: { model, messages: MESSAGES } }));
      };
      socket.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        if (frame.type === "started") started = frame;
        else if (frame.type === "chunk") {
          text += frame.chunk.choices[0]?.delta?.content ?? "";
          seqs.push(frame.seq);
        } else if (frame.type === "done" || frame.type === "error") {
          socket.close(1000);
          resolve({ opened, protocol: socket.protocol, extensions: socket.extensions, started, text, seqs, end: frame, closeCode: null });
        }
      };
      socket.onclose = (event) => resolve({ opened, protocol: socket.protocol, extensions: socket.extensions, started, text, seqs, end: null, closeCode: event.code });
    });
  },
};
</script></body></html>`;

interface ResumeResult {
  streamId: string | null;
  token: string | null;
  fetchText: string;
  resumeText: string;
  seqs: number[];
  leftAt: number;
}

interface WebSocketResult {
  opened: boolean;
  protocol: string;
  extensions: string;
  started: { streamId: string; resumeToken: string } | null;
  text: string;
  seqs: number[];
  end: { type: string; finish_reason?: string; error?: { code: string } } | null;
  closeCode: number | null;
}

/** Fails after `ms` instead of hanging on a page that never answers. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function serve(html: string): Promise<{ server: Server; origin: string }> {
  const server = createServer((request, response) => {
    if (request.url === "/") {
      response.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      response.end(html);
      return;
    }
    response.writeHead(404).end();
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      resolve({ server, origin: `http://127.0.0.1:${port}` });
    });
  });
}

describe("Runnel from a real browser (headless Chromium)", () => {
  const apiKey = `sk-browser-${randomBytes(12).toString("hex")}`;
  let nats: NatsHandle | undefined;
  let stack: Stack | undefined;
  let pageServer: Server | undefined;
  let pageOrigin = "";
  let userDataDir: string | undefined;
  let context: BrowserContext | undefined;
  let page: Page;
  const pageErrors: string[] = [];

  const ingress = () => stack?.ingressUrl ?? "";
  const evaluate = <T>(expression: string, what: string) => within(page.evaluate<T>(expression), 20_000, what);

  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `${CHROMIUM} is missing: this test drives the system's Chromium and never downloads one. Install Debian's chromium package (\`apt-get install chromium\`, or \`node scripts/bootstrap.mjs\` as root).`,
      );
    }
    ({ server: pageServer, origin: pageOrigin } = await serve(PAGE));
    nats = await startNats();
    stack = await startStack({
      natsUrl: nats.url,
      env: { RUNNEL_CONFIG: BROWSER_CONFIG, RUNNEL_TEST_PAGE_ORIGIN: pageOrigin, RUNNEL_TEST_API_KEY: apiKey, LOG_LEVEL: "info" },
      logDir: join(REPO_ROOT, ".runnel", "logs", "browser"),
    });
    userDataDir = await mkdtemp(join(tmpdir(), "runnel-chromium-"));
    context = await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    page = context.pages()[0] ?? (await context.newPage());
    page.on("pageerror", (error) => pageErrors.push(error.message));
    page.on("console", (message) => {
      if (message.type() === "error") pageErrors.push(message.text());
    });
    await page.goto(`${pageOrigin}/`);
  });

  after(async () => {
    await context?.close();
    if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
    await stack?.stop();
    await nats?.stop();
    await new Promise((resolve) => pageServer?.close(resolve) ?? resolve(undefined));
  });

  test("fetch streams part of a completion cross-origin, then EventSource resumes the rest from the resume token", async () => {
    const result = await evaluate<ResumeResult>(
      `window.runnelTests.fetchThenResume(${JSON.stringify(ingress())}, ${JSON.stringify(apiKey)}, "slow", 10)`,
      "fetch then EventSource",
    );
    // The page could read the exposed headers (CORS).
    assert.match(result.streamId ?? "", /^[A-Za-z0-9_-]{22}$/);
    assert.match(result.token ?? "", /^[A-Za-z0-9_-]{32}$/);
    assert.equal(result.leftAt, 10);
    assert.ok(result.resumeText.length > 0, "EventSource delivered the rest");
    assert.equal(result.fetchText + result.resumeText, expected, `page errors: ${pageErrors.join("; ")}`);
    // role chunk, 32 tokens, finish chunk: every seq once, in order, across the two requests.
    assert.deepEqual(
      result.seqs,
      Array.from({ length: 34 }, (_value, index) => index + 1),
    );
    const provider = (await mockRequests(stack as Stack)).find((request) => request.model === "mock?itl=20");
    assert.equal(provider?.clientClosed, false, "leaving and resuming within the grace did not cancel the generation");
    assert.equal(provider?.tokensSent, 32);
  });

  test("a browser WebSocket authenticates with the runnel.bearer subprotocol and streams a completion", async () => {
    const wsBase = ingress().replace(/^http/, "ws");
    const result = await evaluate<WebSocketResult>(
      `window.runnelTests.websocket(${JSON.stringify(wsBase)}, ["runnel.v1", ${JSON.stringify(`runnel.bearer.${apiKey}`)}], "mock")`,
      "WebSocket completion",
    );
    assert.equal(result.opened, true, `page errors: ${pageErrors.join("; ")}`);
    assert.equal(result.protocol, "runnel.v1", "the server selects runnel.v1 and never echoes the key");
    assert.equal(result.extensions, "", "no permessage-deflate");
    assert.match(result.started?.streamId ?? "", /^[A-Za-z0-9_-]{22}$/);
    assert.equal(result.end?.type, "done");
    assert.equal(result.end?.finish_reason, "stop");
    assert.equal(result.text, expected);
    assert.deepEqual(
      result.seqs,
      Array.from({ length: 33 }, (_value, index) => index + 1),
    );

    const refused = await evaluate<WebSocketResult>(
      `window.runnelTests.websocket(${JSON.stringify(wsBase)}, ["runnel.v1"], "mock")`,
      "WebSocket without a key",
    );
    assert.equal(refused.opened, false, "no key, no socket");
    assert.equal(refused.closeCode, 1006);
  });

  test("the upgrade without a key is answered 401 before switching protocols", async () => {
    const wsUrl = `${ingress().replace(/^http/, "ws")}/v1/ws`;
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const socket = new WebSocket(wsUrl, ["runnel.v1", "runnel.bearer.sk-not-a-key-of-this-gateway"]);
      socket.once("open", () => reject(new Error("the upgrade was accepted with a wrong key")));
      socket.once("error", () => {});
      socket.once("unexpected-response", (_request, response) => {
        let body = "";
        response.on("data", (data: Buffer) => {
          body += data.toString();
        });
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
      });
    });
    assert.equal(answer.status, 401);
    const error = (JSON.parse(answer.body) as { error: { code: string; type: string } }).error;
    assert.equal(error.code, "RUNNEL_ERR_UNAUTHORIZED");
    assert.equal(error.type, "authentication_error");
  });

  test("CORS answers preflights for the configured origin only", async () => {
    const preflight = (origin: string) =>
      fetch(`${ingress()}/v1/chat/completions`, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
      });
    const allowed = await preflight(pageOrigin);
    assert.equal(allowed.status, 204);
    assert.equal(allowed.headers.get("access-control-allow-origin"), pageOrigin);
    assert.match(allowed.headers.get("access-control-allow-headers") ?? "", /authorization/);
    assert.match(allowed.headers.get("access-control-allow-methods") ?? "", /POST/);
    assert.match(allowed.headers.get("access-control-expose-headers") ?? "", /x-runnel-resume-token/);

    const other = await preflight("http://elsewhere.example");
    await other.body?.cancel();
    assert.equal(other.headers.get("access-control-allow-origin"), null);
    assert.equal(other.headers.get("access-control-allow-methods"), null);
  });
});
