/**
 * HTTP plumbing shared by the adapters: one undici Agent per provider
 * (keep-alive, a pool limit, a connect timeout), error classification of
 * non-2xx answers, and a watchdog for time to first token and idle gaps.
 */
import { type controlPlane, type ErrorCode, RunnelError } from "@runnel/shared";
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

/** Maps a provider's non-2xx answer to a catalogued error, keeping the provider's own message. */
export function errorFromStatus(statusCode: number, providerMessage: string, retryAfter: string | undefined): RunnelError {
  let code: ErrorCode;
  if (statusCode === 429) code = "RUNNEL_ERR_PROVIDER_RATE_LIMITED";
  else if (statusCode === 401 || statusCode === 403) code = "RUNNEL_ERR_PROVIDER_AUTH";
  else if (statusCode === 408 || statusCode === 504) code = "RUNNEL_ERR_PROVIDER_TIMEOUT";
  else if (statusCode >= 400 && statusCode < 500) code = "RUNNEL_ERR_PROVIDER_BAD_REQUEST";
  else code = "RUNNEL_ERR_PROVIDER_UNAVAILABLE";
  // Retry-After is either delta-seconds or an HTTP date.
  const suffix = retryAfter ? ` (retry after ${/^\d+$/.test(retryAfter) ? `${retryAfter}s` : retryAfter})` : "";
  return new RunnelError(code, `provider answered ${statusCode}: ${providerMessage}${suffix}`);
}

/** Maps a transport failure (connect refused, reset, connect timeout) to a catalogued error. */
export function errorFromTransport(error: unknown, phase: "connect" | "stream"): RunnelError {
  if (error instanceof RunnelError) return error;
  if (error instanceof undiciErrors.ConnectTimeoutError) {
    return new RunnelError("RUNNEL_ERR_PROVIDER_TIMEOUT", "provider connect timed out", { cause: error });
  }
  const detail = error instanceof Error ? ((error as NodeJS.ErrnoException).code ?? error.message) : String(error);
  if (phase === "stream") {
    return new RunnelError("RUNNEL_ERR_PROVIDER_STREAM_CUT", `provider connection failed mid-stream: ${detail}`, { cause: error });
  }
  return new RunnelError("RUNNEL_ERR_PROVIDER_UNAVAILABLE", `provider unreachable: ${detail}`, { cause: error });
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
