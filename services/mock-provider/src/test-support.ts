/**
 * Helpers for this package's tests: a mock provider listening on a free
 * port of 127.0.0.1 (closed when the test ends), a chat request helper, and
 * an incremental reader of server-sent events.
 */
import { buildMockProvider, type MockProvider, type MockProviderOptions } from "./app.js";

/** The part of node:test's TestContext the helpers use. */
export interface TestHooks {
  after(fn: () => Promise<void> | void): void;
}

/** A listening mock provider and its base URL (`http://127.0.0.1:<port>`). */
export interface RunningMock {
  readonly app: MockProvider;
  readonly url: string;
}

/** Starts a mock provider on a free port; it is closed when the test ends. */
export async function startMock(t: TestHooks, options: MockProviderOptions = {}): Promise<RunningMock> {
  const app = buildMockProvider(options);
  const port = await app.listen(0, "127.0.0.1");
  t.after(() => app.close());
  return { app, url: `http://127.0.0.1:${port}` };
}

/** POSTs a chat request (messages default to one user message of three words). */
export function chat(url: string, body: Record<string, unknown>, init: RequestInit = {}): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "say something nice" }], ...body }),
    ...init,
  });
}

/** Reads a response body as server-sent events, one `data:` payload at a time. */
export class SseReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #decoder = new TextDecoder();
  #buffer = "";
  #pending: ReturnType<ReadableStreamDefaultReader<Uint8Array>["read"]> | null = null;

  constructor(response: Response) {
    if (!response.body) throw new Error("response has no body");
    this.#reader = response.body.getReader();
  }

  /** The next event's data; null when the body ends; "timeout" when nothing complete arrives within `timeoutMs`. Rejects if the body errors. */
  async next(timeoutMs = 5000): Promise<string | null | "timeout"> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = this.#buffer.indexOf("\n\n");
      if (end >= 0) {
        const event = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        if (!event.startsWith("data: ")) throw new Error(`not an SSE data event: ${JSON.stringify(event)}`);
        return event.slice("data: ".length);
      }
      this.#pending ??= this.#reader.read();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), Math.max(0, deadline - Date.now()));
      });
      const result = await Promise.race([this.#pending, timeout]).finally(() => clearTimeout(timer));
      if (result === "timeout") return "timeout";
      this.#pending = null;
      if (result.done) {
        if (this.#buffer !== "") throw new Error(`body ended inside an event: ${JSON.stringify(this.#buffer)}`);
        return null;
      }
      this.#buffer += this.#decoder.decode(result.value, { stream: true });
    }
  }

  /** Every remaining event until the body ends (rejects if it errors or stalls for `timeoutMs`). */
  async rest(timeoutMs = 5000): Promise<string[]> {
    const events: string[] = [];
    for (;;) {
      const event = await this.next(timeoutMs);
      if (event === null) return events;
      if (event === "timeout") throw new Error(`no event within ${timeoutMs} ms (after ${events.length})`);
      events.push(event);
    }
  }

  /** Cancels the body. */
  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => undefined);
  }
}

/** A parsed `chat.completion.chunk`. */
export interface Chunk {
  id: string;
  object: string;
  created: number;
  model: string;
  system_fingerprint: string;
  choices: { index: number; delta: { role?: string; content?: string }; logprobs: null; finish_reason: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

/** Parses event payloads (all but `[DONE]`) as chunks. */
export function chunks(events: readonly string[]): Chunk[] {
  return events.filter((event) => event !== "[DONE]").map((event) => JSON.parse(event) as Chunk);
}

/** The concatenated content of the chunks. */
export function contentOf(parsed: readonly Chunk[]): string {
  return parsed.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("");
}
