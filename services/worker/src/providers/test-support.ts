/**
 * Helpers for the adapters' tests: a tiny upstream HTTP server on 127.0.0.1
 * that records what it was sent and when its sockets closed, a provider spec
 * pointing at it, and a runner that collects what an adapter emits.
 */
import assert from "node:assert/strict";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { ChatRequest, controlPlane, EventBody } from "@runnel/shared";
import { RunnelError } from "@runnel/shared";
import { AgentPool } from "./http.js";
import type { ProviderAdapter, StreamCall } from "./types.js";

/** The part of node:test's TestContext the helpers use. */
export interface TestHooks {
  after(fn: () => Promise<void> | void): void;
}

export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** performance.now() when the request's body had arrived. */
  readonly at: number;
}

export type Handler = (request: IncomingMessage, response: ServerResponse, seen: SeenRequest) => void;

export interface Upstream {
  readonly provider: controlPlane.ProviderSpec;
  readonly agents: AgentPool;
  readonly seen: SeenRequest[];
  readonly server: Server;
  /** Connections accepted so far. */
  readonly sockets: Socket[];
  /** Resolves with performance.now() when the n-th accepted socket (0-based) closes. */
  socketClosed(index?: number): Promise<number>;
}

export const TEST_TIMEOUTS = { connectMs: 1000, firstTokenMs: 1000, idleMs: 300, totalMs: 0 };

/** Starts an upstream; the server and the agent pool are closed when the test ends. */
export async function upstream(t: TestHooks, handler: Handler, overrides: Partial<controlPlane.ProviderSpec> = {}): Promise<Upstream> {
  const seen: SeenRequest[] = [];
  const sockets: Socket[] = [];
  const closedAt = new Map<Socket, Promise<number>>();
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const entry: SeenRequest = {
        method: request.method ?? "",
        url: request.url ?? "",
        headers: request.headers,
        body: Buffer.concat(chunks).toString("utf8"),
        at: performance.now(),
      };
      seen.push(entry);
      handler(request, response, entry);
    });
  });
  server.on("connection", (socket: Socket) => {
    sockets.push(socket);
    closedAt.set(socket, new Promise((resolve) => socket.once("close", () => resolve(performance.now()))));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const agents = new AgentPool();
  t.after(async () => {
    server.closeAllConnections();
    await agents.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    provider: {
      name: "p",
      type: "openai",
      baseUrl: `http://127.0.0.1:${port}`,
      apiKey: "sk-secret-key-123",
      headers: {},
      timeouts: TEST_TIMEOUTS,
      maxConnections: 4,
      healthy: true,
      retries: undefined,
      failOnMalformedChunk: false,
      continueFinalMessage: false,
      requestsPerMinute: 0,
      tokensPerMinute: 0,
      circuit: undefined,
      propagateTrace: true,
      ...overrides,
    },
    agents,
    seen,
    server,
    sockets,
    socketClosed: async (index = 0) => {
      while (sockets.length <= index) await new Promise((resolve) => setTimeout(resolve, 2));
      const socket = sockets[index];
      assert.ok(socket);
      const closed = closedAt.get(socket);
      assert.ok(closed);
      return closed;
    },
  };
}

export function textMessage(role: string, text: string): ChatRequest["messages"][number] {
  return { role, content: [{ part: { $case: "text", value: text } }], name: "", toolCallId: "", toolCalls: [] };
}

export function chatRequest(overrides: Partial<ChatRequest> = {}): ChatRequest {
  return { messages: [textMessage("user", "Hi")], stop: [], tools: [], toolChoiceJson: "", includeUsage: false, user: "", ...overrides };
}

export interface Run {
  readonly events: EventBody[];
  /** performance.now() of each emitted event. */
  readonly times: number[];
  readonly result: Promise<void>;
}

export function runAdapter(
  adapter: ProviderAdapter,
  up: Pick<Upstream, "provider">,
  options: {
    model?: string;
    request?: ChatRequest;
    signal?: AbortSignal;
    onEmit?: (event: EventBody) => void;
    onRetry?: StreamCall["onRetry"];
    canFailOver?: StreamCall["canFailOver"];
  } = {},
): Run {
  const events: EventBody[] = [];
  const times: number[] = [];
  const batches = adapter.stream({
    request: options.request ?? chatRequest(),
    model: options.model ?? "model-x",
    provider: up.provider,
    signal: options.signal ?? new AbortController().signal,
    ...(options.onRetry ? { onRetry: options.onRetry } : {}),
    ...(options.canFailOver ? { canFailOver: options.canFailOver } : {}),
  });
  // Pulled as fast as it comes, as the worker's publishing loop does while the bus keeps up.
  const result = (async () => {
    for await (const batch of batches) {
      for (const event of batch) {
        events.push(event);
        times.push(performance.now());
        options.onEmit?.(event);
      }
    }
  })();
  // Tests that never await the result must not fail on an unhandled rejection.
  result.catch(() => {});
  return { events, times, result };
}

export async function rejection(promise: Promise<void>): Promise<RunnelError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof RunnelError, `expected a RunnelError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected the stream to reject");
}

/** Writes SSE headers and the raw body text, then ends the response. */
export function replay(body: string): Handler {
  return (_request, response) => {
    response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    response.end(body);
  };
}

/** One SSE frame, with an `event:` line when named. */
export function sse(data: unknown, event?: string): string {
  return `${event ? `event: ${event}\n` : ""}data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
}

/** Answers with a JSON error body. */
export function errorAnswer(status: number, body: unknown, headers: Record<string, string> = {}): Handler {
  return (_request, response) => {
    response.writeHead(status, { "content-type": "application/json", ...headers });
    response.end(typeof body === "string" ? body : JSON.stringify(body));
  };
}

/** Resolves with the value of `promise`, or `fallback` after `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<T>((resolve) => (timer = setTimeout(() => resolve(fallback), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Every adapter test fails rather than hangs if a stream never ends. */
export const BOUNDED = { timeout: 5000 };
