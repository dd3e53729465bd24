/**
 * HTTP plumbing shared by the adapters: one undici Agent per provider
 * (keep-alive, a pool limit, a connect timeout), error classification of
 * non-2xx answers, and a watchdog for time to first token and idle gaps.
 */
import { type controlPlane, ERRORS, type ErrorCode, RunnelError } from "@runnel/shared/contracts";
import { Agent, errors as undiciErrors } from "undici";

/** Agents by provider, rebuilt when the provider's connection settings change. */
export class AgentPool {
  readonly #agents = new Map<string, { key: string; agent: Agent }>();

  get(provider: controlPlane.ProviderSpec): Agent {
    const key = `${provider.baseUrl}|${provider.maxConnections}|${provider.timeouts?.connectMs ?? 0}`;
    const existing = this.#agents.get(provider.name);
    if (existing && existing.key === key) return existing.agent;
    if (existing) void existing.agent.close();
    const agent = new Agent({
      connections: provider.maxConnections || 256,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 600_000,
      // Streams have no body or headers timeout here: the watchdog owns time to first token and idle.
      headersTimeout: 0,
      bodyTimeout: 0,
      connectTimeout: provider.timeouts?.connectMs || 10_000,
      pipelining: 1,
    });
    this.#agents.set(provider.name, { key, agent });
    return agent;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#agents.values()].map((entry) => entry.agent.close()));
    this.#agents.clear();
  }
}

/**
 * A failure of one attempt at a provider. `retry` says whether another
 * attempt on the same route, before any token reached the client, can help
 * (a 429, a 5xx, a reset, a refused or timed-out connect); `retryAfterMs` is
 * the wait the provider asked for, when it asked.
 */
export class ProviderError extends RunnelError {
  readonly retry: boolean;
  readonly retryAfterMs: number | undefined;
  /** The provider's HTTP status, when it answered one. */
  readonly status: number | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; retry: boolean; retryAfterMs?: number | undefined; status?: number | undefined }) {
    super(code, message, options.cause === undefined ? {} : { cause: options.cause });
    this.name = "ProviderError";
    this.retry = options.retry;
    this.retryAfterMs = options.retryAfterMs;
    this.status = options.status;
  }
}

/** What an adapter reads from a provider's error answer. */
export interface ErrorDetail {
  readonly message: string;
  /** Overrides the code the status maps to (Gemini answers 400 for a bad key). */
  readonly code?: ErrorCode;
  /** A retry delay carried in the body (Gemini's RetryInfo) rather than in Retry-After. */
  readonly retryAfterMs?: number;
}

/** The catalogued code of a non-2xx status, and whether another attempt can help. */
export function classifyStatus(statusCode: number): { code: ErrorCode; retry: boolean } {
  if (statusCode === 429) return { code: "RUNNEL_ERR_PROVIDER_RATE_LIMITED", retry: true };
  if (statusCode === 401 || statusCode === 403) return { code: "RUNNEL_ERR_PROVIDER_AUTH", retry: false };
  if (statusCode === 408 || statusCode === 504) return { code: "RUNNEL_ERR_PROVIDER_TIMEOUT", retry: true };
  if (statusCode >= 400 && statusCode < 500) return { code: "RUNNEL_ERR_PROVIDER_BAD_REQUEST", retry: false };
  return { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", retry: true };
}

/** Reads Retry-After (delta-seconds or an HTTP date) as milliseconds from `now`; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Maps a provider's non-2xx answer to a catalogued error, keeping the provider's own message. */
export function errorFromStatus(statusCode: number, detail: ErrorDetail, retryAfterHeader: string | undefined): ProviderError {
  const { code, retry } = classifyStatus(statusCode);
  const retryAfterMs = parseRetryAfter(retryAfterHeader) ?? detail.retryAfterMs;
  const suffix = retryAfterMs === undefined ? "" : ` (retry after ${(retryAfterMs / 1000).toFixed(retryAfterMs % 1000 === 0 ? 0 : 1)}s)`;
  const finalCode = detail.code ?? refineBadRequest(code, detail.message);
  return new ProviderError(finalCode, `provider answered ${statusCode}: ${detail.message}${suffix}`, {
    retry: retry && (finalCode === code || ERRORS[finalCode].retryable),
    retryAfterMs,
    status: statusCode,
  });
}

// What OpenAI, Anthropic, Gemini and vLLM-style servers say (their codes differ or are absent; the messages are stable).
const CONTEXT_LENGTH =
  /context length|context window|maximum context|prompt is too long|too many tokens|input token count .* exceeds|exceeds the (model's )?(maximum )?(input|context)/i;
const CONTENT_POLICY = /content.?policy|content (filtering|management) policy|safety system|responsible ai|flagged as|blocked by (the )?safety/i;

/** A 400 that says the prompt is too long, or that the content policy refused it: failover treats both apart. */
export function refineBadRequest(code: ErrorCode, message: string): ErrorCode {
  if (code !== "RUNNEL_ERR_PROVIDER_BAD_REQUEST") return code;
  if (CONTEXT_LENGTH.test(message)) return "RUNNEL_ERR_CONTEXT_LENGTH";
  if (CONTENT_POLICY.test(message)) return "RUNNEL_ERR_CONTENT_POLICY";
  return code;
}

/** Maps a transport failure (connect refused, reset, connect timeout) to a catalogued error. */
export function errorFromTransport(error: unknown, phase: "connect" | "stream"): RunnelError {
  if (error instanceof RunnelError) return error;
  if (error instanceof undiciErrors.ConnectTimeoutError) {
    return new ProviderError("RUNNEL_ERR_PROVIDER_TIMEOUT", "provider connect timed out", { cause: error, retry: true });
  }
  const detail = error instanceof Error ? ((error as NodeJS.ErrnoException).code ?? error.message) : String(error);
  if (phase === "stream") {
    return new ProviderError("RUNNEL_ERR_PROVIDER_STREAM_CUT", `provider connection failed mid-stream: ${detail}`, { cause: error, retry: true });
  }
  return new ProviderError("RUNNEL_ERR_PROVIDER_UNAVAILABLE", `provider unreachable: ${detail}`, { cause: error, retry: true });
}

/** Removes the provider's key from text that came from the provider (some echo a key back in their errors). */
export function redactKey(text: string, apiKey: string): string {
  if (apiKey.length < 4 || !text.includes(apiKey)) return text;
  return text.split(apiKey).join("[redacted]");
}

/** Parses JSON, or undefined when the text is not JSON. */
export function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * Aborts a request when the first token is late or the gap between tokens is
 * too long. `touch()` is on the per-token path, so it only stores a time; one
 * timer per stream checks it.
 */
export class Watchdog {
  #last = 0;
  #limit: number;
  #timer: NodeJS.Timeout | undefined;
  #phase: "first-token" | "idle" = "first-token";

  constructor(
    private readonly controller: AbortController,
    private readonly firstTokenMs: number,
    private readonly idleMs: number,
  ) {
    this.#limit = firstTokenMs;
    this.#last = performance.now();
    this.#schedule(firstTokenMs);
  }

  /** Records activity. The first call switches from the first-token to the idle limit. */
  touch(): void {
    this.#last = performance.now();
    if (this.#phase === "first-token") {
      this.#phase = "idle";
      this.#limit = this.idleMs;
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#schedule(this.idleMs);
    }
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(ms: number): void {
    if (ms <= 0) return;
    this.#timer = setTimeout(() => this.#check(), ms);
  }

  #check(): void {
    const elapsed = performance.now() - this.#last;
    if (elapsed >= this.#limit) {
      const what = this.#phase === "first-token" ? `no first token within ${this.firstTokenMs} ms` : `no token for ${this.idleMs} ms`;
      this.controller.abort(new RunnelError("RUNNEL_ERR_PROVIDER_TIMEOUT", `provider timed out: ${what}`));
      return;
    }
    this.#schedule(this.#limit - elapsed);
  }
}

/** Reads at most `limit` bytes of a body as text (for error answers). */
export async function readBounded(body: AsyncIterable<Uint8Array>, limit = 64 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    if (size + chunk.byteLength > limit) {
      chunks.push(Buffer.from(chunk).subarray(0, limit - size));
      break;
    }
    chunks.push(Buffer.from(chunk));
    size += chunk.byteLength;
  }
  return Buffer.concat(chunks).toString("utf8");
}
