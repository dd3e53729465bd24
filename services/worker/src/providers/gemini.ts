/**
 * The Gemini adapter: `models/{model}:streamGenerateContent?alt=sse` of the
 * Gemini API. Requests are mapped from the normalised ChatRequest (system
 * instruction, function declarations and calling config, function calls and
 * responses, images); every SSE event is a GenerateContentResponse, validated
 * and mapped onto the vocabulary. Gemini has no end marker: the stream ends
 * with the body, after a candidate carried a finish reason.
 */
import { randomBytes } from "node:crypto";
import { type ChatRequest, type ContentPart, type ErrorCode, FinishReason, RunnelError } from "@runnel/shared/contracts";
import type { EventSourceMessage } from "eventsource-parser";
import { z } from "zod";
import { type ErrorDetail, ProviderError, refineBadRequest, safeJson } from "./http.js";
import { type DecoderSink, joinUrl, parseJson, runSseStream, type SseStreamOptions, type StreamDecoder, textOf, validChunk } from "./sse-stream.js";
import type { EventBatch, ProviderAdapter, StreamCall } from "./types.js";

const count = z.number().int().nonnegative();

const PartSchema = z.object({
  text: z.string().nullish(),
  thought: z.boolean().nullish(),
  functionCall: z.object({ id: z.string().nullish(), name: z.string(), args: z.record(z.string(), z.unknown()).nullish() }).nullish(),
});

const ErrorObjectSchema = z.object({ code: z.number().int().nullish(), message: z.string().default("provider error"), status: z.string().nullish() });

/** One GenerateContentResponse: what each SSE event of the stream carries. */
export const GeminiChunkSchema = z.object({
  candidates: z
    .array(
      z.object({
        content: z.object({ parts: z.array(PartSchema).nullish(), role: z.string().nullish() }).nullish(),
        finishReason: z.string().nullish(),
        index: count.nullish(),
      }),
    )
    .nullish(),
  promptFeedback: z.object({ blockReason: z.string().nullish() }).nullish(),
  usageMetadata: z
    .object({
      promptTokenCount: count.nullish(),
      candidatesTokenCount: count.nullish(),
      cachedContentTokenCount: count.nullish(),
      thoughtsTokenCount: count.nullish(),
      toolUsePromptTokenCount: count.nullish(),
    })
    .nullish(),
  modelVersion: z.string().nullish(),
  error: ErrorObjectSchema.nullish(),
});

/** `{ "error": { code, message, status, details } }`, Google's error answer. */
const ErrorBodySchema = z.object({
  error: ErrorObjectSchema.extend({
    details: z.array(z.object({ "@type": z.string().nullish(), reason: z.string().nullish(), retryDelay: z.string().nullish() }).loose()).nullish(),
  }),
});

/** Gemini's finish reasons on OpenAI's. */
export function finishReasonFromGemini(reason: string, calledTools: boolean): FinishReason {
  switch (reason) {
    case "MAX_TOKENS":
      return FinishReason.FINISH_REASON_LENGTH;
    case "SAFETY":
    case "RECITATION":
    case "BLOCKLIST":
    case "PROHIBITED_CONTENT":
    case "SPII":
    case "IMAGE_SAFETY":
      return FinishReason.FINISH_REASON_CONTENT_FILTER;
    default:
      // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL and anything new. Gemini
      // says STOP after function calls; OpenAI clients expect tool_calls.
      return calledTools ? FinishReason.FINISH_REASON_TOOL_CALLS : FinishReason.FINISH_REASON_STOP;
  }
}

/** The error a Google status name stands for (an error inside the stream). */
function errorFromGoogleStatus(status: string | null | undefined, code: number | null | undefined, message: string): ProviderError {
  const text = `provider reported ${status ?? code ?? "an error"}: ${message}`;
  let runnelCode: ErrorCode = "RUNNEL_ERR_PROVIDER_UNAVAILABLE";
  let retry = true;
  if (status === "RESOURCE_EXHAUSTED" || code === 429) runnelCode = "RUNNEL_ERR_PROVIDER_RATE_LIMITED";
  else if (status === "UNAUTHENTICATED" || status === "PERMISSION_DENIED" || code === 401 || code === 403) {
    runnelCode = "RUNNEL_ERR_PROVIDER_AUTH";
    retry = false;
  } else if (status === "INVALID_ARGUMENT" || status === "FAILED_PRECONDITION" || status === "NOT_FOUND" || code === 400 || code === 404) {
    runnelCode = refineBadRequest("RUNNEL_ERR_PROVIDER_BAD_REQUEST", message);
    retry = false;
  } else if (status === "DEADLINE_EXCEEDED" || code === 504) runnelCode = "RUNNEL_ERR_PROVIDER_TIMEOUT";
  return new ProviderError(runnelCode, text, { retry });
}

/** Reads "7s" or "0.5s" (a protobuf Duration in JSON) as milliseconds. */
export function parseGoogleDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)s$/.exec(text.trim());
  return match ? Math.round(Number(match[1]) * 1000) : undefined;
}

/**
 * Reads Google's error answer. Gemini answers 400 (not 401) to a bad key,
 * with the reason API_KEY_INVALID, and puts the retry delay of a 429 in a
 * RetryInfo detail rather than in Retry-After.
 */
export function readGeminiError(_status: number, text: string): ErrorDetail {
  const parsed = ErrorBodySchema.safeParse(safeJson(text));
  if (!parsed.success) return { message: text.slice(0, 500) || "no body" };
  const { error } = parsed.data;
  const details = error.details ?? [];
  const badKey = details.some((detail) => detail.reason === "API_KEY_INVALID");
  const retryDelay = details.find((detail) => detail["@type"]?.endsWith("google.rpc.RetryInfo") && detail.retryDelay)?.retryDelay;
  const retryAfterMs = retryDelay ? parseGoogleDuration(retryDelay) : undefined;
  return {
    message: error.status ? `${error.status}: ${error.message}` : error.message,
    ...(badKey ? { code: "RUNNEL_ERR_PROVIDER_AUTH" as const } : {}),
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
  };
}

type Part = Record<string, unknown>;
interface GeminiContent {
  role: "user" | "model";
  parts: Part[];
}

const MIME_BY_EXTENSION: Record<string, string> = {
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  webp: "image/webp",
  gif: "image/gif",
  heic: "image/heic",
  heif: "image/heif",
};

function imagePart(url: string): Part {
  const data = /^data:([^;,]+);base64,(.*)$/s.exec(url);
  if (data) return { inlineData: { mimeType: data[1], data: data[2] } };
  const extension = /\.([a-z0-9]+)(?:[?#].*)?$/i.exec(url)?.[1]?.toLowerCase();
  const mimeType = extension ? MIME_BY_EXTENSION[extension] : undefined;
  return { fileData: { fileUri: url, ...(mimeType ? { mimeType } : {}) } };
}

function parts(content: readonly ContentPart[]): Part[] {
  const out: Part[] = [];
  for (const part of content) {
    if (part.part?.$case === "text") {
      if (part.part.value !== "") out.push({ text: part.part.value });
    } else if (part.part?.$case === "imageUrl") out.push(imagePart(part.part.value.url));
  }
  return out;
}

function parseJsonField(json: string, param: string): unknown {
  try {
    return JSON.parse(json);
  } catch {
    throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `${param} is not JSON`, { param });
  }
}

/** JSON Schema keywords Gemini's Schema object rejects ("Unknown name ..."): removed, never inside `properties` names. */
const UNSUPPORTED_SCHEMA_KEYS = new Set(["$schema", "additionalProperties", "strict"]);

export function geminiSchema(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(geminiSchema);
  if (node === null || typeof node !== "object") return node;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (UNSUPPORTED_SCHEMA_KEYS.has(key)) continue;
    if (key === "properties" && value !== null && typeof value === "object" && !Array.isArray(value)) {
      out[key] = Object.fromEntries(Object.entries(value).map(([name, schema]) => [name, geminiSchema(schema)]));
    } else out[key] = geminiSchema(value);
  }
  return out;
}

/** OpenAI's tool_choice on Gemini's functionCallingConfig. */
function toolConfig(json: string): Record<string, unknown> | undefined {
  const choice = parseJsonField(json, "tool_choice");
  if (choice === "auto") return { functionCallingConfig: { mode: "AUTO" } };
  if (choice === "none") return { functionCallingConfig: { mode: "NONE" } };
  if (choice === "required") return { functionCallingConfig: { mode: "ANY" } };
  if (choice !== null && typeof choice === "object") {
    const name = (choice as { function?: { name?: unknown } }).function?.name;
    if (typeof name === "string") return { functionCallingConfig: { mode: "ANY", allowedFunctionNames: [name] } };
  }
  return undefined;
}

/**
 * The generateContent body for a normalised request. System and developer
 * messages become `systemInstruction`; assistant turns are `model` turns with
 * `functionCall` parts; tool results are `functionResponse` parts named after
 * the call they answer (Gemini matches by name, OpenAI by id).
 */
export function geminiRequestBody(request: ChatRequest): Record<string, unknown> {
  const system: Part[] = [];
  const contents: GeminiContent[] = [];
  const toolNames = new Map<string, string>();
  const push = (role: GeminiContent["role"], added: Part[]) => {
    if (added.length === 0) return;
    const last = contents.at(-1);
    if (last && last.role === role) last.parts.push(...added);
    else contents.push({ role, parts: added });
  };
  request.messages.forEach((message, index) => {
    switch (message.role) {
      case "system":
      case "developer": {
        const text = textOf(message.content);
        if (text !== "") system.push({ text });
        break;
      }
      case "assistant": {
        const added = parts(message.content);
        message.toolCalls.forEach((call, callIndex) => {
          toolNames.set(call.id, call.name);
          const param = `messages[${index}].tool_calls[${callIndex}].function.arguments`;
          added.push({ functionCall: { name: call.name, args: call.arguments.trim() === "" ? {} : parseJsonField(call.arguments, param) } });
        });
        push("model", added);
        break;
      }
      case "tool": {
        const text = textOf(message.content);
        const json = safeJson(text);
        const response = json !== null && typeof json === "object" && !Array.isArray(json) ? json : { content: text };
        push("user", [{ functionResponse: { name: toolNames.get(message.toolCallId) || message.name || message.toolCallId, response } }]);
        break;
      }
      default:
        push("user", parts(message.content));
    }
  });
  const body: Record<string, unknown> = { contents };
  if (system.length > 0) body.systemInstruction = { parts: system };
  const generationConfig: Record<string, unknown> = {};
  if (request.temperature !== undefined) generationConfig.temperature = request.temperature;
  if (request.topP !== undefined) generationConfig.topP = request.topP;
  if (request.maxTokens !== undefined) generationConfig.maxOutputTokens = request.maxTokens;
  if (request.stop.length > 0) generationConfig.stopSequences = request.stop;
  if (request.seed !== undefined) generationConfig.seed = request.seed;
  if (Object.keys(generationConfig).length > 0) body.generationConfig = generationConfig;
  if (request.tools.length > 0) {
    body.tools = [
      {
        functionDeclarations: request.tools.map((tool, index) => ({
          name: tool.name,
          ...(tool.description ? { description: tool.description } : {}),
          ...(tool.parametersJson ? { parameters: geminiSchema(parseJsonField(tool.parametersJson, `tools[${index}].function.parameters`)) } : {}),
        })),
      },
    ];
  }
  if (request.toolChoiceJson) {
    const config = toolConfig(request.toolChoiceJson);
    if (config) body.toolConfig = config;
  }
  return body;
}

/** The stream URL. The model goes in the path: a `models/` prefix is accepted, and the name is escaped. */
export function geminiStreamUrl(baseUrl: string, model: string): string {
  const name = model.startsWith("models/") ? model.slice("models/".length) : model;
  return joinUrl(baseUrl, `models/${encodeURIComponent(name)}:streamGenerateContent?alt=sse`);
}

export function createGeminiAdapter(options: SseStreamOptions): ProviderAdapter {
  return {
    stream(call: StreamCall): AsyncIterable<EventBatch> {
      const { provider } = call;
      const headers: Record<string, string> = { "content-type": "application/json", accept: "text/event-stream", ...provider.headers };
      // In a header, never in the URL's ?key=, so it cannot end up in a logged URL.
      if (provider.apiKey) headers["x-goog-api-key"] = provider.apiKey;
      return runSseStream(call, options, {
        url: geminiStreamUrl(provider.baseUrl, call.model),
        headers,
        body: JSON.stringify(geminiRequestBody(call.request)),
        readError: readGeminiError,
        decoder: new GeminiDecoder(),
      });
    },
  };
}

/** An id for a function call Gemini sent without one (OpenAI clients answer tool calls by id). */
function toolCallId(): string {
  return `call_${randomBytes(12).toString("base64url")}`;
}

/** Maps GenerateContentResponse events. Candidate 0 is the answer; usageMetadata is cumulative, the last one wins. */
export class GeminiDecoder implements StreamDecoder {
  #tools = 0;

  decode(event: EventSourceMessage, sink: DecoderSink): void {
    const json = parseJson(event.data, sink);
    if (json === undefined) return;
    const chunk = validChunk(GeminiChunkSchema, json, sink);
    if (!chunk) return;
    if (chunk.error) {
      sink.fail(errorFromGoogleStatus(chunk.error.status, chunk.error.code, chunk.error.message));
      return;
    }
    const candidate = chunk.candidates?.find((item) => (item.index ?? 0) === 0);
    if (candidate) {
      for (const part of candidate.content?.parts ?? []) {
        if (part.functionCall) {
          const call = part.functionCall;
          sink.token({
            $case: "toolCallDelta",
            value: { index: this.#tools++, id: call.id || toolCallId(), name: call.name, arguments: JSON.stringify(call.args ?? {}) },
          });
        } else if (part.text) {
          sink.token(part.thought ? { $case: "reasoningDelta", value: { text: part.text } } : { $case: "textDelta", value: { text: part.text } });
        }
      }
      if (candidate.finishReason) sink.finish(finishReasonFromGemini(candidate.finishReason, this.#tools > 0));
    } else if (chunk.promptFeedback?.blockReason) {
      // The prompt itself was blocked: no candidate will come.
      sink.finish(FinishReason.FINISH_REASON_CONTENT_FILTER);
    }
    const usage = chunk.usageMetadata;
    if (usage) {
      const thoughts = usage.thoughtsTokenCount ?? 0;
      sink.usage({
        inputTokens: (usage.promptTokenCount ?? 0) + (usage.toolUsePromptTokenCount ?? 0),
        // OpenAI's completion_tokens include reasoning; Gemini's candidatesTokenCount does not.
        outputTokens: (usage.candidatesTokenCount ?? 0) + thoughts,
        cachedInputTokens: usage.cachedContentTokenCount ?? 0,
        reasoningTokens: thoughts,
      });
    }
  }
}
