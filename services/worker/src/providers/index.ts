import { RunnelError } from "@runnel/shared";
import type { AgentPool } from "./http.js";
import { createOpenAIAdapter } from "./openai.js";
import type { ProviderAdapter } from "./types.js";

export { AgentPool } from "./http.js";
export type { ProviderAdapter, StreamCall } from "./types.js";

/** The adapters by provider type. `mock` speaks the OpenAI-compatible wire format. */
export function createAdapters(agents: AgentPool, onMalformedChunk?: (reason: string) => void): (type: string) => ProviderAdapter {
  const openai = createOpenAIAdapter({ agents, ...(onMalformedChunk ? { onMalformedChunk } : {}) });
  return (type) => {
    switch (type) {
      case "openai":
      case "mock":
        return openai;
      default:
        throw new RunnelError("RUNNEL_ERR_NO_ROUTE", `provider type "${type}" has no adapter in this worker version`);
    }
  };
}
