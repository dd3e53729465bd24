/**
 * The streaming-aware load generator: opens chat-completion streams over
 * node:http with a keep-alive Agent, parses SSE incrementally (each byte is
 * scanned once) and times, per stream, the first content token and every gap
 * between two content tokens with performance.now(). Traffic goes only to
 * 127.0.0.1.
 */
import { Agent, type IncomingMessage, request } from "node:http";
import type { Samples } from "./stats.js";

/** One keep-alive Agent for the whole run; no socket limit (the scenarios bound concurrency themselves). */
export const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY, maxFreeSockets: 1024 });

/** Where one stream goes: a base URL on 127.0.0.1 and the model to ask for. */
export interface Target {
  readonly baseUrl: string;
  readonly model: string;
}

/** What one stream did. */
export interface StreamResult {
  readonly status: number;
  /** Request start to the first content token, ms; NaN when none came. */
  readonly ttftMs: number;
  readonly tokens: number;
  /** The stream ended with `data: [DONE]`. */
  readonly done: boolean;
  /** An error event or a transport error, if any. */
  readonly error: string | null;
  readonly headers: IncomingMessage["headers"];
}

/** Options of one stream. */
export interface StreamOptions {
  /** Receives every inter-token gap (ms). */
  readonly gaps?: Samples;
  /** Called on the first content token, with the response (to cancel or read headers). */
  readonly onFirstToken?: (response: IncomingMessage) => void;
  /** Ends the stream after this many ms whatever happens (a bound on every stream). */
  readonly timeoutMs?: number;
}

const BODY_PREFIX = '{"stream":true,"messages":[{"role":"user","content":"bench"}],"model":';
const CONTENT = '"content":"';

/** True when the SSE `data` payload carries a non-empty content delta. */
function hasContent(data: string): boolean {
  const at = data.indexOf(CONTENT);
  return at >= 0 && data.charCodeAt(at + CONTENT.length) !== 34; // 34: '"', an empty content (the role chunk)
}

/**
 * Incremental SSE framing: feed text chunks, get each event's data lines.
 * Only the tail after the last complete event is kept, and the search for the
 * next blank line starts where the previous search stopped, so a stream of n
 * bytes costs O(n) however it is split into chunks.
 */
export class SseParser {
  #buffer = "";
  #scanFrom = 0;

  /** Calls `onData` with the data of every complete event in `chunk` (comments and ids are skipped). */
  feed(chunk: string, onData: (data: string) => void): void {
    this.#buffer = this.#buffer.length === 0 ? chunk : this.#buffer + chunk;
    let start = 0;
    for (;;) {
      const end = this.#buffer.indexOf("\n\n", Math.max(start, this.#scanFrom));
      if (end < 0) break;
      const event = this.#buffer.slice(start, end);
      start = end + 2;
      this.#scanFrom = start;
      let lineStart = 0;
      while (lineStart <= event.length) {
        let lineEnd = event.indexOf("\n", lineStart);
        if (lineEnd < 0) lineEnd = event.length;
        if (event.startsWith("data:", lineStart)) {
          const offset = event.charCodeAt(lineStart + 5) === 32 ? 6 : 5;
          onData(event.slice(lineStart + offset, lineEnd));
        }
        lineStart = lineEnd + 1;
      }
    }
    if (start > 0) this.#buffer = this.#buffer.slice(start);
    // Resume the next search one character early: a "\n\n" may straddle two chunks.
    this.#scanFrom = Math.max(0, this.#buffer.length - 1);
  }
}

/** Opens one streaming chat completion and reads it to the end. Never rejects. */
export function openStream(target: Target, options: StreamOptions = {}): Promise<StreamResult> {
  return new Promise((resolve) => {
    const started = performance.now();
    let ttftMs = Number.NaN;
    let last = 0;
    let tokens = 0;
    let done = false;
    let error: string | null = null;
    let status = 0;
    let headers: IncomingMessage["headers"] = {};
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ status, ttftMs, tokens, done, error, headers });
    };
    const body = `${BODY_PREFIX}${JSON.stringify(target.model)}}`;
    const call = request(`${target.baseUrl}/v1/chat/completions`, {
      method: "POST",
      agent,
      headers: { "content-type": "application/json", accept: "text/event-stream", "content-length": Buffer.byteLength(body) },
    });
    const timer = setTimeout(() => {
      error = error ?? "timeout";
      call.destroy();
      finish();
    }, options.timeoutMs ?? 120_000);
    call.on("error", (cause) => {
      error = error ?? cause.message;
      finish();
    });
    call.on("response", (response) => {
      status = response.statusCode ?? 0;
      headers = response.headers;
      response.setEncoding("utf8");
      if (status !== 200) {
        let text = "";
        response.on("data", (chunk: string) => {
          if (text.length < 2000) text += chunk;
        });
        response.on("end", () => {
          error = `HTTP ${status}: ${text.slice(0, 300)}`;
          finish();
        });
        return;
      }
      const parser = new SseParser();
      const onData = (data: string) => {
        if (data === "[DONE]") {
          done = true;
          return;
        }
        if (hasContent(data)) {
          const now = performance.now();
          if (tokens === 0) {
            ttftMs = now - started;
            options.onFirstToken?.(response);
          } else {
            options.gaps?.push(now - last);
          }
          last = now;
          tokens++;
        } else if (data.startsWith('{"error"')) {
          error = data.slice(0, 300);
        }
      };
      response.on("data", (chunk: string) => parser.feed(chunk, onData));
      response.on("end", finish);
      response.on("close", finish);
      response.on("error", (cause) => {
        error = error ?? cause.message;
        finish();
      });
    });
    call.end(body);
  });
}

/**
 * Runs `total` streams with at most `concurrency` in flight (a closed loop:
 * each slot opens the next stream when its previous one ends).
 */
export async function closedLoop(total: number, concurrency: number, open: (index: number) => Promise<StreamResult>): Promise<StreamResult[]> {
  const results: StreamResult[] = [];
  let next = 0;
  const slot = async () => {
    while (next < total) {
      const index = next++;
      results.push(await open(index));
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, slot));
  return results;
}

/** Simple JSON request (for DELETE, the mock journal), bounded by a timeout. */
export function httpJson(method: string, url: string, timeoutMs = 10_000): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const call = request(url, { method, agent, timeout: timeoutMs }, (response) => {
      let text = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => {
        text += chunk;
      });
      response.on("end", () => {
        let body: unknown = text;
        try {
          body = text.length ? JSON.parse(text) : null;
        } catch {
          // not JSON: keep the text
        }
        resolve({ status: response.statusCode ?? 0, body });
      });
    });
    call.on("timeout", () => call.destroy(new Error(`${method} ${url}: timeout`)));
    call.on("error", reject);
    call.end();
  });
}
