export { buildWorker, type Worker, type WorkerDeps } from "./app.js";
export { runJob } from "./job-runner.js";
export { anthropicRequestBody, createAnthropicAdapter } from "./providers/anthropic.js";
export { createGeminiAdapter, geminiRequestBody } from "./providers/gemini.js";
export {
  type AdapterOptions,
  AgentPool,
  createAdapters,
  DEFAULT_RETRY_POLICY,
  type ProviderAdapter,
  ProviderError,
  type RetryNotice,
  type RetryPolicy,
  retryPolicyFromConfig,
  type StreamCall,
} from "./providers/index.js";
export { ChunkSchema, createOpenAIAdapter, openAIRequestBody } from "./providers/openai.js";
export { genAiProvider, JobTelemetry, observeJobs, observeWorkerLoad, WorkerInstruments } from "./telemetry.js";
