/**
 * Retries on one route before the first token, when staying on the route is
 * worth a wait: the call's `canFailOver` says no other route could take the
 * request now (or the caller wants retries here first and passes none). A
 * failure another route can take goes back at once, with no wait.
 *
 * A 429 waits what the provider asked for (Retry-After, or Gemini's
 * RetryInfo); a 5xx, a reset, a refused or timed-out connect, or a provider
 * error event before any token waits an exponential backoff with jitter.
 * Attempts are bounded, and so is the time: no attempt starts after the
 * budget, and a wait that would end beyond it is not started. What retrying
 * cannot fix (400, 401, 403, context length, content policy, a bad response,
 * a first-token timeout) is never retried. Once any token went out, nothing
 * is retried: the client already has part of an answer.
 *
 * `started` is held back until the first token (or `done`), so a failed
 * attempt leaves no trace on the stream and the client still gets an HTTP
 * status for a failure before the first token.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { type controlPlane, type EventBody, RunnelError } from "@runnel/shared/contracts";
import { ProviderError } from "./http.js";
import type { EventBatch, ProviderAdapter, StreamCall } from "./types.js";

/** Retry settings of one provider, in milliseconds. */
export interface RetryPolicy {
  /** Attempts in all, the first included; 1 means no retry. */
  readonly maxAttempts: number;
  /** No attempt starts later than this after the first one started. */
  readonly budgetMs: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
}

/** The defaults of `providers[].retries` in runnel.yaml. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = Object.freeze({ maxAttempts: 3, budgetMs: 20_000, baseDelayMs: 200, maxDelayMs: 4_000 });

/** One retry about to happen, for logs and metrics. */
export interface RetryNotice {
  readonly provider: string;
  /** The attempt that failed (1-based). */
  readonly attempt: number;
  readonly delayMs: number;
  readonly error: RunnelError;
}

export interface RetryOptions {
  readonly policy: (provider: controlPlane.ProviderSpec) => RetryPolicy;
  readonly onRetry?: (notice: RetryNotice) => void;
  /** For tests: the jitter source. */
  readonly random?: () => number;
}

/**
 * How long to wait before the next attempt, or undefined when the failure
 * goes to the routing layer as it is. `attempt` is the attempt that failed;
 * `elapsedMs` the time since the first one started. Pure.
 */
export function retryDelay(error: unknown, attempt: number, elapsedMs: number, policy: RetryPolicy, random: () => number = Math.random): number | undefined {
  if (!(error instanceof ProviderError) || !error.retry) return undefined;
  if (attempt >= policy.maxAttempts) return undefined;
  let delay = error.retryAfterMs;
  if (delay === undefined) {
    const backoff = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
    // Half fixed, half random: spreads a herd of retries without ever retrying at once.
    delay = Math.round(backoff / 2 + random() * (backoff / 2));
  }
  if (elapsedMs + delay > policy.budgetMs) return undefined;
  return delay;
}

/**
 * Wraps an adapter so each stream gets its route's retries before the first
 * token: a transform of the adapter's batches. Each attempt's `started` is
 * held (stamped with the attempt's number) until a batch with anything else
 * comes, so a failed attempt leaves no trace; once anything went out, a
 * failure is the stream's.
 */
export function withRetries(adapter: ProviderAdapter, options: RetryOptions): ProviderAdapter {
  const random = options.random ?? Math.random;
  return {
    async *stream(call: StreamCall): AsyncGenerator<EventBatch, void, undefined> {
      const policy = options.policy(call.provider);
      const firstStart = performance.now();
      for (let attempt = 1; ; attempt++) {
        let forwarded = false;
        let held: EventBody | undefined;
        try {
          for await (const batch of adapter.stream(call)) {
            if (forwarded) {
              yield batch;
              continue;
            }
            const out: EventBody[] = [];
            for (const event of batch) {
              if (!forwarded && event.$case === "started") {
                held = { $case: "started", value: { ...event.value, attempt } };
                continue;
              }
              if (!forwarded) {
                forwarded = true;
                if (held) out.push(held);
              }
              out.push(event);
            }
            if (out.length > 0) yield out;
          }
          return;
        } catch (error) {
          if (forwarded || call.signal.aborted) throw error;
          const delay = retryDelay(error, attempt, performance.now() - firstStart, policy, random);
          // Asked only when a retry would happen: another route serves sooner than a wait here.
          if (delay === undefined || call.canFailOver?.() === true) throw attempt > 1 ? withAttempts(error, attempt) : error;
          options.onRetry?.({ provider: call.provider.name, attempt, delayMs: delay, error: error as RunnelError });
          call.onRetry?.({ provider: call.provider.name, attempt, delayMs: delay, code: (error as RunnelError).code });
          try {
            await sleep(delay, undefined, { signal: call.signal });
          } catch {
            // Cancelled while waiting: no further attempt, and no request is open.
            throw call.signal.reason instanceof RunnelError
              ? call.signal.reason
              : new RunnelError("RUNNEL_ERR_CANCELLED", "cancelled while waiting to retry the provider", { cause: call.signal.reason });
          }
        }
      }
    },
  };
}

/** The last attempt's error, saying how many attempts were made. */
function withAttempts(error: unknown, attempts: number): unknown {
  if (!(error instanceof RunnelError)) return error;
  const message = `${error.message} (after ${attempts} attempts)`;
  if (error instanceof ProviderError) {
    return new ProviderError(error.code, message, { cause: error, retry: error.retry, retryAfterMs: error.retryAfterMs, status: error.status });
  }
  return new RunnelError(error.code, message, { cause: error });
}

/** The retry policy a provider's routing-snapshot spec carries (DEFAULT_RETRY_POLICY when it carries none). */
export function retryPolicyFromSpec(retries: controlPlane.ProviderRetries | undefined): RetryPolicy {
  if (!retries || retries.maxAttempts === 0) return DEFAULT_RETRY_POLICY;
  return Object.freeze({ maxAttempts: retries.maxAttempts, budgetMs: retries.budgetMs, baseDelayMs: retries.baseDelayMs, maxDelayMs: retries.maxDelayMs });
}

/** The retry policy of `providers[].retries` in a parsed runnel.yaml. */
export function retryPolicyFromConfig(retries: { maxAttempts: number; budget: number; baseDelay: number; maxDelay: number }): RetryPolicy {
  return Object.freeze({ maxAttempts: retries.maxAttempts, budgetMs: retries.budget, baseDelayMs: retries.baseDelay, maxDelayMs: retries.maxDelay });
}
