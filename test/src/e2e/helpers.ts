/** Shared pieces of the end-to-end tests: one stack per test file, the mock's journal, SSE parsing. */
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { type NatsHandle, REPO_ROOT, type Stack, startNats, startStack } from "@runnel/launcher";

export const E2E_CONFIG = join(REPO_ROOT, "test", "fixtures", "runnel.e2e.yaml");

export interface E2E extends AsyncDisposable {
  readonly nats: NatsHandle;
  readonly stack: Stack;
}

/** Starts NATS (per the harness rules) and every service as real processes with the e2e config. */
export async function startE2E(name: string, config = E2E_CONFIG, env: Readonly<Record<string, string>> = {}): Promise<E2E> {
  const nats = await startNats();
  try {
    const stack = await startStack({
      natsUrl: nats.url,
      env: { RUNNEL_CONFIG: config, LOG_LEVEL: "info", ...env },
      logDir: join(REPO_ROOT, ".runnel", "logs", name),
    });
    const stop = async () => {
      await stack.stop();
      await nats.stop();
    };
    return { nats, stack, [Symbol.asyncDispose]: stop };
  } catch (error) {
    await nats.stop();
    throw error;
  }
}

/** One request as the mock provider recorded it (its journal entry; see services/mock-provider/src/journal.ts). */
export interface MockRequest {
  id: string | number;
  /** The wire format: openai, anthropic or gemini. */
  format: string;
  model: string;
  /** The scenario's `fail`, if any. */
  fail: string | null;
  stream: boolean;
  receivedAt: number;
  /** HTTP status sent; null if none was. */
  status: number | null;
  headersSentAt: number | null;
  tokensSent: number;
  /** When the first content token went out. */
  firstTokenAt: number | null;
  finished: boolean;
  clientClosed: boolean;
  clientClosedAt: number | null;
  authorization: boolean;
  /** SHA-256 (hex) of the credential the provider received. */
  credentialSha256: string | null;
  /** The `traceparent` header the provider received. */
  traceparent: string | null;
  /** The conversation the request carried: role and text of each turn (the text cut to 4096 characters). */
  messages: { role: string; text: string }[];
  /** Of each turn, its whole text's length and SHA-256 (hex, of its UTF-8 bytes). */
  messageDigests: { length: number; sha256: string }[];
  /** Bytes of the request body the mock received. */
  bodyBytes: number | null;
}

export async function mockRequests(stack: Stack): Promise<MockRequest[]> {
  const response = await fetch(`${stack.mockUrl}/_mock/requests`);
  const body = (await response.json()) as { requests: MockRequest[] };
  return body.requests;
}

/** Polls the mock's journal until `predicate` matches an entry, or fails after `timeoutMs`. */
export async function waitForMockRequest(stack: Stack, predicate: (request: MockRequest) => boolean, timeoutMs: number): Promise<MockRequest> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = (await mockRequests(stack)).find(predicate);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no mock request matched within ${timeoutMs} ms: ${JSON.stringify(await mockRequests(stack))}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export interface SseEvent {
  id?: string;
  data: string;
}

/** Splits an SSE body into events (comments dropped), enough for assertions on our own output. */
export function parseSse(text: string): { events: SseEvent[]; comments: number } {
  const events: SseEvent[] = [];
  let comments = 0;
  for (const block of text.split("\n\n")) {
    if (block.trim() === "") continue;
    let id: string | undefined;
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) comments += 1;
      else if (line.startsWith("id: ")) id = line.slice(4);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    if (data.length > 0) events.push({ ...(id !== undefined ? { id } : {}), data: data.join("\n") });
  }
  return { events, comments };
}

export function chatBody(model: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ model, messages: [{ role: "user", content: "Tell me about rivers." }], ...extra });
}

/** Resident memory of a process, from /proc. */
export function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

/** POSTs a JSON body on a raw socket and returns the socket paused: nothing is read until the test resumes it. */
export async function openPaused(ingressUrl: string, path: string, body: string): Promise<Socket> {
  const url = new URL(ingressUrl);
  const socket = connect({ host: url.hostname, port: Number(url.port) });
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
  socket.pause();
  socket.write(
    `POST ${path} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  return socket;
}

/** Resumes a paused socket and reads the chunked response to its end; returns the head and the de-chunked body. */
export async function readChunkedResponse(socket: Socket): Promise<{ head: string; body: string }> {
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    socket.on("data", (data: Buffer) => {
      chunks.push(data);
      // The chunked terminator: the response is complete.
      if (data.subarray(-5).toString() === "0\r\n\r\n") resolve();
    });
    socket.once("end", () => resolve());
    socket.once("error", reject);
    socket.resume();
  });
  socket.destroy();
  const raw = Buffer.concat(chunks).toString("utf8");
  const head = raw.slice(0, raw.indexOf("\r\n\r\n"));
  return { head, body: dechunk(raw.slice(head.length + 4)) };
}

/** Removes HTTP/1.1 chunked framing from a response body. */
export function dechunk(raw: string): string {
  let out = "";
  let index = 0;
  for (;;) {
    const lineEnd = raw.indexOf("\r\n", index);
    if (lineEnd < 0) break;
    const size = Number.parseInt(raw.slice(index, lineEnd), 16);
    if (!size) break;
    out += raw.slice(lineEnd + 2, lineEnd + 2 + size);
    index = lineEnd + 2 + size + 2;
  }
  return out;
}
