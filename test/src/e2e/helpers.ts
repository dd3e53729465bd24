/** Shared pieces of the end-to-end tests: one stack per test file, the mock's journal, SSE parsing. */
import { join } from "node:path";
import { type NatsHandle, startNats } from "../nats-harness.js";
import { REPO_ROOT, type Stack, startStack } from "../stack.js";

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

/** One request as the mock provider recorded it. */
export interface MockRequest {
  id: string | number;
  model: string;
  stream: boolean;
  receivedAt: number;
  tokensSent: number;
  finished: boolean;
  clientClosed: boolean;
  clientClosedAt: number | null;
  authorization: boolean;
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
