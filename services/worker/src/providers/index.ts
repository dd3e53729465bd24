import { type controlPlane, RunnelError } from "@runnel/shared/contracts";
import { createAnthropicAdapter } from "./anthropic.js";
import { createGeminiAdapter } from "./gemini.js";
import type { AgentPool } from "./http.js";
import { createOpenAIAdapter } from "./openai.js";
import { createOpenAIResponsesAdapter } from "./openai-responses.js";
import { DEFAULT_RETRY_POLICY, type RetryNotice, type RetryPolicy, withRetries } from "./retry.js";
import type { SseStreamOptions } from "./sse-stream.js";
import type { ProviderAdapter } from "./types.js";

export { AgentPool, ProviderError } from "./http.js";
export { DEFAULT_RETRY_POLICY, type RetryNotice, type RetryPolicy, retryPolicyFromConfig, retryPolicyFromSpec } from "./retry.js";
export type { EventBatch, ProviderAdapter, StreamCall } from "./types.js";

export interface AdapterOptions {
  /** Called for each upstream event that failed validation and was skipped. */
  readonly onMalformedChunk?: (reason: string) => void;
  /** The retry settings of a provider (DEFAULT_RETRY_POLICY when omitted). */
  readonly retryPolicy?: (provider: controlPlane.ProviderSpec) => RetryPolicy;
  /** Called before each retry. */
  readonly onRetry?: (notice: RetryNotice) => void;
}

/**
 * The adapters by provider type, each with its retries before the first
 * token. `mock` speaks the OpenAI-compatible wire format; `openai-responses`
 * is OpenAI's Responses API.
 */
export function createAdapters(agents: AgentPool, options: AdapterOptions = {}): (type: string) => ProviderAdapter {
  const streamOptions: SseStreamOptions = { agents, ...(options.onMalformedChunk ? { onMalformedChunk: options.onMalformedChunk } : {}) };
  const retry = (adapter: ProviderAdapter) =>
    withRetries(adapter, { policy: options.retryPolicy ?? (() => DEFAULT_RETRY_POLICY), ...(options.onRetry ? { onRetry: options.onRetry } : {}) });
  const openai = retry(createOpenAIAdapter(streamOptions));
  const openaiResponses = retry(createOpenAIResponsesAdapter(streamOptions));
  const anthropic = retry(createAnthropicAdapter(streamOptions));
  const gemini = retry(createGeminiAdapter(streamOptions));
  return (type) => {
    switch (type) {
      case "openai":
      case "mock":
        return openai;
      case "openai-responses":
        return openaiResponses;
      case "anthropic":
        return anthropic;
      case "gemini":
        return gemini;
      default:
        throw new RunnelError("RUNNEL_ERR_NO_ROUTE", `provider type "${type}" has no adapter in this worker version`);
    }
  };
}
