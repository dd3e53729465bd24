export { buildWorker, type Worker, type WorkerDeps } from "./app.js";
export { runJob } from "./job-runner.js";
export { AgentPool, createAdapters, type ProviderAdapter, type StreamCall } from "./providers/index.js";
export { ChunkSchema, createOpenAIAdapter, openAIRequestBody } from "./providers/openai.js";
