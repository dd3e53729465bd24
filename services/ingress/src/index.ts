export { buildIngress, type Ingress, type IngressDeps } from "./app.js";
export { type ChunkContext, CompletionAccumulator, encodeChunk } from "./openai-encoder.js";
export { ChatCompletionRequestSchema, parseChatCompletionRequest, toChatRequest } from "./openai-request.js";
export { StreamSession } from "./stream-session.js";
