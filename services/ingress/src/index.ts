export { buildIngress, type Ingress, type IngressDeps } from "./app.js";
export { Auth } from "./auth.js";
export { type ChunkContext, CompletionAccumulator, encodeChunk } from "./openai-encoder.js";
export { ChatCompletionRequestSchema, parseChatCompletionRequest, toChatRequest } from "./openai-request.js";
export { StreamHub } from "./stream-hub.js";
export { type EventSink, StreamReader } from "./stream-reader.js";
export { StreamService } from "./streams.js";
export { IngressTelemetry, type ResumeVia, type Transport } from "./telemetry.js";
