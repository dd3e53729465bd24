/**
 * The web console in a real browser: headless Chromium (the system's
 * /usr/bin/chromium, driven by playwright-core) opens the pages the ingress
 * serves, against the whole stack with auth on (test/fixtures/console.yaml)
 * and a real Jaeger receiving the services' traces.
 *
 * The playground streams an answer over each transport and the test reads
 * the figures off the page; Stop cancels (the mock provider's journal shows
 * its request closed); Drop connection resumes (the text is the whole
 * answer, no event repeated); a failover is a visible marker. The inspector
 * lists 20 streams in flight with climbing ages, cancels one, and draws its
 * trace from Jaeger. Screenshots of both pages go to docs/ (docs/console.md).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { findJaeger, freePort, type JaegerHandle, type NatsHandle, REPO_ROOT, type Stack, startJaeger, startNats, startStack } from "@runnel/launcher";
import { mockText } from "@runnel/mock-provider";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import WebSocket from "ws";
import { mockRequests, waitForMockRequest } from "./helpers.js";

/** The page's own globals, for the functions Playwright runs there (this project's TypeScript has no DOM library). */
declare const document: { querySelector(selector: string): unknown; querySelectorAll(selector: string): { length: number } };

/**
 * Where the test's screenshots of the real UI go: docs/ (the pictures in
 * docs/console.md) when RUNNEL_DOCS_SCREENSHOTS=1, else .runnel/screenshots,
 * so an ordinary test run leaves the checkout as it found it.
 */
function screenshotPath(name: string): string {
  const dir = process.env.RUNNEL_DOCS_SCREENSHOTS === "1" ? join(REPO_ROOT, "docs") : join(REPO_ROOT, ".runnel", "screenshots");
  mkdirSync(dir, { recursive: true });
  return join(dir, name);
}

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
const CONFIG = join(REPO_ROOT, "test", "fixtures", "console.yaml");
const STREAM_ID = /^[A-Za-z0-9_-]{22}$/;

/** "850 ms", "1.23 s", "12.3 s", "1 min 5 s" (format.ts) in milliseconds. */
function parseMs(text: string): number {
  const minutes = /^(\d+) min (\d+) s$/.exec(text);
  if (minutes) return Number(minutes[1]) * 60_000 + Number(minutes[2]) * 1_000;
  const match = /^([\d.]+) (ms|s)$/.exec(text);
  assert.ok(match, `not a duration: ${JSON.stringify(text)}`);
  return Number(match[1]) * (match[2] === "s" ? 1_000 : 1);
}

async function figure(page: Page, name: string): Promise<string> {
  return (await page.textContent(`[data-figure="${name}"]`))?.trim() ?? "";
}

/** The answer as the page shows it: the text not discarded by a restart, markers left out. */
async function answer(page: Page): Promise<string> {
  return page.$$eval("#answer .text:not(.discarded)", (nodes) => nodes.map((node) => node.textContent ?? "").join(""));
}

async function waitForFigure(page: Page, name: string, predicate: (value: string) => boolean, what: string, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await figure(page, name);
    if (predicate(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`${what}: figure ${name} is ${JSON.stringify(value)} after ${timeoutMs} ms (status: ${await figure(page, "status")})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Streams one answer in the playground with `transport` and waits for its end. */
async function ask(page: Page, model: string, transport: string): Promise<void> {
  await page.selectOption("#model", model);
  await page.check(`input[name=transport][value=${transport}]`);
  await page.waitForSelector("#send:not([disabled])");
  await page.click("#send");
}

/** A stream over a WebSocket (the `ws` client), kept open until `stop()`; `text` gathers its frames. */
async function openSocketStream(base: string, key: string, body: object): Promise<{ id: string; transport: string; stop: () => void; text: Promise<string> }> {
  const socket = new WebSocket(`${base.replace(/^http/, "ws")}/v1/ws`, ["runnel.v1"], { headers: { authorization: `Bearer ${key}` } });
  let frames = "";
  const text = new Promise<string>((resolve) => socket.once("close", () => resolve(frames)));
  const id = await new Promise<string>((resolve, reject) => {
    socket.once("error", reject);
    socket.once("open", () => socket.send(JSON.stringify({ type: "request", id: "crowd", body })));
    socket.on("message", (data: Buffer) => {
      frames += `${data.toString()}\n`;
      const frame = JSON.parse(data.toString()) as { type: string; streamId?: string };
      if (frame.type === "started" && frame.streamId) resolve(frame.streamId);
    });
  });
  return { id, transport: "websocket", stop: () => socket.close(1000), text };
}

/**
 * The Jaeger npm test builds in the background on a fresh machine (its log
 * in RUNNEL_TEST_JAEGER_BUILD_LOG): waits for the binary, up to 15 minutes.
 */
async function builtJaeger(): Promise<string | undefined> {
  const log = process.env.RUNNEL_TEST_JAEGER_BUILD_LOG;
  if (!log) return undefined;
  const deadline = Date.now() + 15 * 60_000;
  while (Date.now() < deadline) {
    const found = findJaeger();
    if (found) return found;
    await new Promise((resolve) => setTimeout(resolve, 2_000));
  }
  throw new Error(`jaeger was still building after 15 minutes: see ${log}`);
}

describe("the Runnel console in a real browser", () => {
  const apiKey = `sk-console-${randomBytes(12).toString("hex")}`;
  const adminKey = `sk-console-admin-${randomBytes(12).toString("hex")}`;
  let jaeger: JaegerHandle | undefined;
  let nats: NatsHandle | undefined;
  let stack: Stack | undefined;
  let userDataDir: string | undefined;
  let context: BrowserContext | undefined;
  let page: Page;
  const pageErrors: string[] = [];
  const ingress = () => stack?.ingressUrl ?? "";

  before(
    async () => {
      if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (node scripts/bootstrap.mjs does, as root)`);
      const binary = process.env.RUNNEL_TEST_JAEGER || findJaeger() || (await builtJaeger());
      if (!binary)
        throw new Error(
          "no jaeger binary (PATH or .tools/bin): npm test builds it; by hand: node -e \"import('./scripts/bootstrap.mjs').then((b) => b.ensureJaeger())\"",
        );
      const logDir = join(REPO_ROOT, ".runnel", "logs", "console");
      jaeger = await startJaeger({
        binary,
        ports: { otlpGrpc: await freePort(), otlpHttp: await freePort(), query: await freePort(), queryGrpc: await freePort() },
        logDir,
      });
      nats = await startNats();
      stack = await startStack({
        natsUrl: nats.url,
        // Two ingress replicas: the inspector on one lists the streams of both.
        replicas: { ingress: 2 },
        env: {
          RUNNEL_CONFIG: CONFIG,
          RUNNEL_TEST_API_KEY: apiKey,
          RUNNEL_TEST_ADMIN_KEY: adminKey,
          LOG_LEVEL: "info",
          OTEL_EXPORTER_OTLP_ENDPOINT: jaeger.otlpHttpEndpoint,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
          OTEL_BSP_SCHEDULE_DELAY: "100",
          RUNNEL_TRACE_QUERY_URL: jaeger.queryUrl,
          RUNNEL_TRACE_LINK: `${jaeger.queryUrl}/trace/{traceId}`,
        },
        logDir,
      });
      userDataDir = await mkdtemp(join(tmpdir(), "runnel-chromium-"));
      context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_ARGS,
        viewport: { width: 1280, height: 900 },
      });
      page = context.pages()[0] ?? (await context.newPage());
      const collect = (label: string) => (target: Page) => {
        target.on("pageerror", (error) => pageErrors.push(`${label}: ${error.message}`));
        target.on("console", (message) => {
          if (message.type() === "error") pageErrors.push(`${label}: ${message.text()}`);
        });
      };
      collect("playground")(page);
      context.on("page", collect("page"));
    },
    { timeout: 17 * 60_000 },
  );

  after(async () => {
    await context?.close();
    if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
    await stack?.stop();
    await nats?.stop();
    await jaeger?.stop();
  });

  test("the pages come from the ingress with caching headers and a strict CSP, small", async () => {
    const html = await fetch(`${ingress()}/`);
    assert.equal(html.status, 200);
    assert.equal(html.headers.get("cache-control"), "no-cache");
    const csp = html.headers.get("content-security-policy") ?? "";
    assert.match(csp, /default-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    const body = await html.text();
    const assets = [...body.matchAll(/(?:src|href)="(\/console\/assets\/[^"]+)"/g)].map((match) => match[1] as string);
    assert.equal(assets.length, 2, "one script and one stylesheet");
    let gzipped = Buffer.byteLength(body);
    for (const asset of assets) {
      const response = await fetch(`${ingress()}${asset}`, { headers: { "accept-encoding": "gzip" } });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("cache-control"), "public, max-age=31536000, immutable");
      gzipped += Number(response.headers.get("content-length"));
      await response.arrayBuffer();
    }
    assert.ok(gzipped < 150 * 1024, `the playground's entry files are ${gzipped} bytes gzipped`);
  });

  test("the playground streams the same answer over SSE, WebSocket, NDJSON and long-polling, with figures measured in the page", async () => {
    await page.goto(`${ingress()}/`);
    // Auth is on: the key is asked for once and kept in session storage.
    await page.waitForSelector("#key-panel:not([hidden])");
    await page.fill("#key", apiKey);
    await page.click("#key-form button[type=submit]");
    await page.waitForSelector("#model option[value=steady]", { state: "attached" });
    assert.equal(await page.evaluate<string | null>('sessionStorage.getItem("runnel.apiKey")'), apiKey);
    assert.equal(await page.isDisabled("input[name=transport][value=responses]"), true, "the Responses API is listed, not served yet");

    const expected = mockText(48, 0);
    for (const transport of ["sse", "websocket", "ndjson", "longpoll"]) {
      await ask(page, "steady", transport);
      await waitForFigure(page, "status", (value) => value === "done", transport);
      assert.equal(await answer(page), expected, `${transport}: the whole answer`);
      const ttft = parseMs(await figure(page, "ttft"));
      const total = parseMs(await figure(page, "total"));
      assert.ok(ttft > 0 && ttft < total, `${transport}: time to first token ${ttft} ms within the total ${total} ms`);
      // 48 tokens 15 ms apart: well under a thousand a second, and not nothing.
      const overall = Number(await figure(page, "rate-overall"));
      assert.ok(overall > 5 && overall < 1_000, `${transport}: ${overall} tokens/s`);
      assert.equal(await figure(page, "tokens"), "48");
      // The role chunk, 48 tokens, the finish: 50 events, none twice, none missing.
      assert.equal(await figure(page, "events"), "50", transport);
      assert.equal(await figure(page, "duplicates"), "0");
      assert.equal(await figure(page, "gaps"), "0");
      assert.match(await figure(page, "stream-id"), STREAM_ID);
      assert.equal(await figure(page, "route"), "mock?tokens=48&itl=15");
      assert.equal(await figure(page, "finish"), "stop");
      assert.match(await figure(page, "usage"), /in, 48 out$/, `${transport}: usage reported`);
      assert.ok((await page.$$("#timeline rect")).length >= 40, `${transport}: the inter-token timeline has a bar per gap`);
    }
    // The key never went into a URL: the page's own address has none.
    assert.equal(page.url().includes(apiKey), false);
  });

  test("Stop cancels the stream: the provider's request closes and the page shows it cancelled", async () => {
    await ask(page, "long", "sse");
    await waitForFigure(page, "tokens", (value) => Number(value.replace(/,/g, "")) >= 10, "long stream started");
    const streamId = await figure(page, "stream-id");
    await page.click("#stop");
    await waitForFigure(page, "status", (value) => value === "cancelled", "stop", 10_000);
    assert.ok((await page.$$("#answer .marker.end")).length === 1, "the end is marked on the page");
    const provider = await waitForMockRequest(stack as Stack, (request) => request.model === "mock?tokens=4000&itl=10" && request.clientClosed, 10_000);
    assert.ok(provider.tokensSent < 4_000, `the provider stopped generating after ${provider.tokensSent} tokens`);
    const status = await fetch(`${ingress()}/v1/streams/${streamId}`, { headers: { authorization: `Bearer ${apiKey}` } });
    assert.equal(((await status.json()) as { status: string }).status, "cancelled");
  });

  for (const transport of ["sse", "websocket", "ndjson"]) {
    test(`Drop connection (${transport}) resumes after the last event: the whole answer, nothing lost, nothing repeated`, async () => {
      const before = (await mockRequests(stack as Stack)).filter((request) => request.model === "mock?tokens=80&itl=25").length;
      await ask(page, "resumable", transport);
      await waitForFigure(page, "events", (value) => Number(value) >= 15, `${transport}: stream under way`);
      await page.click("#drop");
      await waitForFigure(page, "status", (value) => value === "done", `${transport}: resumed to the end`, 30_000);
      assert.equal(await answer(page), mockText(80, 0));
      const resumedFrom = Number(await figure(page, "resumed-from"));
      assert.ok(resumedFrom >= 15 && resumedFrom < 82, `resumed from event ${resumedFrom}`);
      assert.equal(await figure(page, "events"), "82", "role chunk, 80 tokens, finish: each once");
      assert.equal(await figure(page, "duplicates"), "0");
      assert.equal(await figure(page, "gaps"), "0");
      assert.equal(await figure(page, "transport"), transport === "ndjson" ? "NDJSON → SSE" : transport === "sse" ? "SSE → SSE" : "WebSocket → WebSocket");
      assert.equal((await page.$$("#answer .marker.resume")).length, 2, "the drop and the resume are marked");
      // One generation, never interrupted: the drop was the client's connection, not the stream.
      const requests = (await mockRequests(stack as Stack)).filter((request) => request.model === "mock?tokens=80&itl=25");
      assert.equal(requests.length, before + 1);
      assert.equal(requests.at(-1)?.clientClosed, false);
      assert.equal(requests.at(-1)?.tokensSent, 80);
      if (transport === "sse") await page.screenshot({ path: screenshotPath("console-playground.png"), fullPage: true });
    });
  }

  test("a failover that restarts the answer is a visible marker, and what it discards is struck through", async () => {
    await ask(page, "flaky", "sse");
    await waitForFigure(page, "status", (value) => value === "done", "failover");
    const markers = await page.$$eval("#answer .marker.failover", (nodes) => nodes.map((node) => node.textContent ?? ""));
    assert.equal(markers.length, 1);
    assert.match(markers[0] ?? "", /failover \(restart\): mock\/mock\?fail=cut&after=5 → backup\/mock/);
    assert.equal(await answer(page), mockText(32, 0));
    assert.ok((await page.$$("#answer .text.discarded")).length >= 1, "the cut answer stays visible, struck through");
    assert.equal(await figure(page, "route"), "backup/mock");
  });

  test("the inspector lists 20 streams in flight with climbing ages, cancels one, and draws its trace", async () => {
    const inspector = await (context as BrowserContext).newPage();
    await inspector.goto(`${ingress()}/console/streams`);
    await inspector.waitForSelector("#admin-panel:not([hidden])");
    await inspector.fill("#admin-key", adminKey);
    await inspector.click("#admin-form button[type=submit]");
    await inspector.waitForSelector('#feed-status[data-state="live"]');
    // Across the cluster: half the streams on each of the two ingress replicas (the inspector is on the first),
    // most over SSE, two over NDJSON and two over WebSocket.
    const streams: { id: string; transport: string; stop: () => void; text: Promise<string> }[] = [];
    try {
      for (let index = 0; index < 20; index += 1) {
        const base = (stack as Stack).ingressUrls[index % 2] as string;
        const body = { model: "crowd", stream: true, messages: [{ role: "user", content: `stream ${index}` }] };
        if (index % 10 === 9) {
          streams.push(await openSocketStream(base, apiKey, body));
          continue;
        }
        const transport = index % 10 === 8 ? "ndjson" : "sse";
        const controller = new AbortController();
        const response = await fetch(`${base}/v1/chat/completions`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            authorization: `Bearer ${apiKey}`,
            ...(transport === "ndjson" ? { accept: "application/x-ndjson" } : {}),
          },
          body: JSON.stringify(body),
          signal: controller.signal,
        });
        assert.equal(response.status, 200);
        const id = response.headers.get("x-runnel-stream-id") ?? "";
        streams.push({ id, transport, stop: () => controller.abort(), text: response.text().catch(() => "") });
      }
      const ids = streams.map((stream) => stream.id);
      // Functions, not strings: the page's CSP forbids evaluating strings, Playwright's included.
      await inspector.waitForFunction((wanted) => wanted.every((id) => document.querySelector(`tr[data-stream-id="${id}"][data-phase="running"]`)), ids, {
        timeout: 20_000,
      });
      const cell = (id: string, column: string) => inspector.textContent(`tr[data-stream-id="${id}"] td[data-col="${column}"]`).then((text) => text ?? "");
      const first = ids[0] as string;
      const ageBefore = parseMs(await cell(first, "age"));
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const ageAfter = parseMs(await cell(first, "age"));
      assert.ok(ageAfter >= ageBefore + 1_000, `the age climbs: ${ageBefore} ms, then ${ageAfter} ms`);
      for (const id of ids) {
        assert.equal(await cell(id, "key"), "console-user", "the key's name");
        assert.equal(await cell(id, "model"), "crowd");
        assert.equal(await cell(id, "route"), "mock/mock?tokens=3000&itl=10&seed=7");
        // Each client's transport, whichever replica serves it (the other replica is asked about once a second).
        const transport = streams.find((stream) => stream.id === id)?.transport ?? "";
        await inspector.waitForSelector(`tr[data-stream-id="${id}"] td[data-col="transport"]:text-is("${transport}")`, { timeout: 10_000 });
        assert.ok(parseMs(await cell(id, "ttft")) > 0, "time to first token");
        assert.ok(Number((await cell(id, "tokens")).replace(/,/g, "")) > 0, "tokens so far");
        assert.ok(Number(await cell(id, "rate")) > 0, "tokens per second");
      }
      assert.equal((await inspector.content()).includes(apiKey), false, "never the key itself");
      await inspector.waitForSelector('#route-rows tr[data-route="mock/mock?tokens=3000&itl=10&seed=7"][data-circuit="closed"]', { timeout: 10_000 });

      // One stream: its timeline, then a cancel from the page.
      await inspector.click(`tr[data-stream-id="${first}"]`);
      await inspector.waitForSelector('#detail-timeline li[data-kind="first_token"]');
      const kinds = await inspector.$$eval("#detail-timeline li", (items) => items.map((item) => item.getAttribute("data-kind")));
      assert.deepEqual(kinds.slice(0, 4), ["queued", "claimed", "attempt", "first_token"]);
      await inspector.click("#detail-cancel");
      await inspector.waitForSelector(`tr[data-stream-id="${first}"][data-phase="cancelled"]`, { timeout: 10_000 });
      assert.match((await streams[0]?.text) ?? "", /RUNNEL_ERR_CANCELLED/, "the stream's client got the cancel");
      const closed = await waitForMockRequest(stack as Stack, (request) => request.model === "mock?tokens=3000&itl=10&seed=7" && request.clientClosed, 10_000);
      assert.ok(closed.tokensSent < 3_000, "the provider's request closed mid-generation");
      assert.equal(
        (await mockRequests(stack as Stack)).filter((request) => request.model === "mock?tokens=3000&itl=10&seed=7" && request.clientClosed).length,
        1,
        "exactly one provider request closed: the cancelled stream's",
      );
      assert.equal(await inspector.$$eval('#stream-rows tr[data-phase="running"]', (rows) => rows.length), 19);
      await inspector.waitForSelector('#detail-timeline li[data-kind="end"]');

      // Its trace, from Jaeger: the whole path of the request as a waterfall.
      await inspector.waitForFunction(() => document.querySelectorAll("#waterfall .span-row").length >= 4, undefined, { timeout: 20_000 });
      const services = await inspector.$$eval("#waterfall .span-row", (rows) => [...new Set(rows.map((row) => row.getAttribute("data-service")))]);
      assert.ok(services.includes("runnel-ingress") && services.includes("runnel-worker"), `spans of ${services.join(", ")}`);
      const link = await inspector.getAttribute("#detail-trace a", "href");
      assert.match(link ?? "", new RegExp(`^${jaeger?.queryUrl}/trace/[0-9a-f]{32}$`));
      await inspector.screenshot({ path: screenshotPath("console-inspector.png"), fullPage: true });

      // Opened again on a busy gateway (the key is still in this tab's session storage): the streams are there, joined mid-way.
      await inspector.reload();
      await inspector.waitForFunction(
        (wanted) => wanted.every((id) => document.querySelector(`tr[data-stream-id="${id}"][data-phase="running"]`)),
        ids.slice(1),
        {
          timeout: 20_000,
        },
      );
      assert.match(await cell(ids[1] as string, "tokens"), /^≈/, "counted from the stream's last position");
      await inspector.close();
    } finally {
      await Promise.all(
        streams
          .slice(1)
          .map((stream) =>
            fetch(`${ingress()}/v1/streams/${stream.id}`, { method: "DELETE", headers: { authorization: `Bearer ${apiKey}` } }).then((response) =>
              response.body?.cancel(),
            ),
          ),
      );
      for (const stream of streams) stream.stop();
    }
  });

  test("the inspector's API lets only an admin key in: none is 401, a client key 403", async () => {
    const status = (await (await fetch(`${ingress()}/console/api/status`)).json()) as { inspector: string; access: string; traces: boolean };
    assert.deepEqual([status.inspector, status.access, status.traces], ["enabled", "admin-key", true]);
    const feed = (key?: string) => fetch(`${ingress()}/console/api/feed`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
    const none = await feed();
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as { error: { code: string } }).error.code, "RUNNEL_ERR_UNAUTHORIZED");
    const client = await feed(apiKey);
    assert.equal(client.status, 403);
    await client.body?.cancel();
    const admin = await feed(adminKey);
    assert.equal(admin.status, 200);
    assert.match(admin.headers.get("content-type") ?? "", /^text\/event-stream/);
    await admin.body?.cancel();
  });

  test("the pages ran without a script error or a CSP violation", () => {
    // The one error the console logs by design: the playground's first GET /v1/models, answered 401 (auth on, no key yet).
    const unexpected = pageErrors.filter((error) => !/^playground: Failed to load resource: the server responded with a status of 401/.test(error));
    assert.deepEqual(unexpected, []);
  });
});
