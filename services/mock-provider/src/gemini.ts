/**
 * The Gemini API format: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`
 * and `:generateContent`. The model is in the path; each stream event is a
 * GenerateContentResponse (`data:` only, events separated by CRLF CRLF as
 * Google sends them) with usageMetadata; there is no end marker. Errors are
 * Google's `{"error":{code,message,status,details}}`: a 429 carries its retry
 * delay in a RetryInfo detail (no Retry-After header), a bad key is a 400
 * with the reason API_KEY_INVALID, and a blocked prompt is a 200 answer with
 * `promptFeedback.blockReason`, not an error.
 */
import { MOCK_CONTEXT_LENGTH } from "./failures.js";
import { type ChatRequest, type CompletionHeader, contentText, contentWords, isRecord, type MessageText } from "./openai.js";
import type { Scenario } from "./scenario.js";
import { type MockWire, single, type WireError, type WireParse } from "./wire.js";

const GOOGLE_STATUS: Readonly<Record<number, string>> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  413: "INVALID_ARGUMENT",
  429: "RESOURCE_EXHAUSTED",
  500: "INTERNAL",
  503: "UNAVAILABLE",
};

function error(code: number, message: string, details?: readonly unknown[], headers: Readonly<Record<string, string>> = {}): WireError {
  const status = GOOGLE_STATUS[code] ?? "UNKNOWN";
  return { status: code, body: JSON.stringify({ error: { code, message, status, ...(details ? { details } : {}) } }), headers };
}

/** Gemini `parts` as OpenAI content parts (the text ones). */
function textParts(parts: unknown): unknown[] {
  if (!Array.isArray(parts)) return [];
  return parts.map((part) => (isRecord(part) && typeof part.text === "string" ? { type: "text", text: part.text } : {}));
}

/** Words in Gemini `parts` (the text ones). */
function partsWords(parts: unknown): number {
  return contentWords(textParts(parts));
}

export function parseGeminiRequest(text: string, model: string, stream: boolean): WireParse {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { ok: false, error: error(400, "Invalid JSON payload received.") };
  }
  if (!isRecord(body)) return { ok: false, error: error(400, "Invalid JSON payload received: the body must be an object.") };
  const contents = body.contents;
  if (!Array.isArray(contents) || contents.length === 0) {
    return { ok: false, error: error(400, "* GenerateContentRequest.contents: contents is not specified") };
  }
  let promptTokens = isRecord(body.systemInstruction) ? partsWords(body.systemInstruction.parts) : 0;
  let lastRole = "";
  const turns: MessageText[] = [];
  for (const [index, content] of contents.entries()) {
    if (!isRecord(content) || !Array.isArray(content.parts) || content.parts.length === 0) {
      return { ok: false, error: error(400, `* GenerateContentRequest.contents[${index}].parts: contents.parts must not be empty.`) };
    }
    const role = content.role ?? "user";
    if (role !== "user" && role !== "model") {
      return { ok: false, error: error(400, `Please use a valid role: user, model. (contents[${index}].role)`) };
    }
    promptTokens += partsWords(content.parts);
    lastRole = role;
    turns.push({ role, text: contentText(textParts(content.parts)) });
  }
  const config = isRecord(body.generationConfig) ? body.generationConfig : {};
  const maxTokens = config.maxOutputTokens;
  if (maxTokens !== undefined && (typeof maxTokens !== "number" || !Number.isInteger(maxTokens) || maxTokens < 1)) {
    return { ok: false, error: error(400, "* GenerateContentRequest.generation_config.max_output_tokens: must be a positive integer") };
  }
  return {
    ok: true,
    request: {
      model,
      stream,
      includeUsage: true,
      maxTokens: typeof maxTokens === "number" ? maxTokens : null,
      promptTokens,
      endsWithAssistant: lastRole === "model",
      messages: turns,
    },
  };
}

function data(value: unknown): string {
  return `data: ${JSON.stringify(value)}\r\n\r\n`;
}

function usageMetadata(promptTokens: number, candidates?: number) {
  return candidates === undefined
    ? { promptTokenCount: promptTokens, totalTokenCount: promptTokens }
    : { promptTokenCount: promptTokens, candidatesTokenCount: candidates, totalTokenCount: promptTokens + candidates };
}

function response(header: CompletionHeader, chat: ChatRequest, text: string, finishReason: string | null, candidates?: number) {
  return {
    candidates: [{ content: { parts: [{ text }], role: "model" }, ...(finishReason ? { finishReason } : {}), index: 0 }],
    usageMetadata: usageMetadata(chat.promptTokens, candidates),
    modelVersion: header.model,
    responseId: header.id,
  };
}

function geminiFailure(scenario: Scenario, chat: ChatRequest): WireError | null {
  switch (scenario.fail) {
    case "429":
    case "429-no-retry-after":
      return error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        scenario.fail === "429" ? [{ "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: `${scenario.retryAfterSeconds}s` }] : undefined,
      );
    case "500":
      return error(500, "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting");
    case "503":
      return error(503, "The model is overloaded. Please try again later.");
    case "context-length":
      return error(
        400,
        `The input token count (${MOCK_CONTEXT_LENGTH + 1 + chat.promptTokens}) exceeds the maximum number of tokens allowed (${MOCK_CONTEXT_LENGTH}).`,
      );
    case "auth":
      return error(400, "API key not valid. Please pass a valid API key.", [
        { "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "API_KEY_INVALID", domain: "googleapis.com" },
      ]);
    default:
      // content-policy is a 200 answer with a blocked prompt: see blockedPrompt.
      return null;
  }
}

/** The Gemini API format. */
export const GEMINI_WIRE: MockWire = {
  name: "gemini",
  idPrefix: "gemini-mock-",
  credential: (headers) => single(headers["x-goog-api-key"]),
  parse: (text, route) => parseGeminiRequest(text, route.model ?? "", route.stream === true),
  invalid: (message) => error(400, message),
  tooLarge: (message) => error(413, message, undefined, { connection: "close" }),
  internalError: () => error(500, "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
  failure: geminiFailure,
  prefillRejected: () => error(400, "Please ensure that multiturn requests end with a user role or a function response."),
  streamContentType: "text/event-stream",
  streamStart: () => "",
  token: (header, chat, text) => data(response(header, chat, text, null)),
  finish: (header, chat, plan) => data(response(header, chat, "", plan.finishReason === "length" ? "MAX_TOKENS" : "STOP", plan.count)),
  end: () => "",
  streamError: () => data({ error: { code: 503, message: "The model is overloaded. Please try again later.", status: "UNAVAILABLE" } }),
  malformed: "data: {not json\r\n\r\n",
  completion: (header, chat, content, plan) =>
    JSON.stringify(response(header, chat, content, plan.finishReason === "length" ? "MAX_TOKENS" : "STOP", plan.count)),
  blockedPrompt(header, chat, stream) {
    const blocked = {
      promptFeedback: { blockReason: "SAFETY", safetyRatings: [{ category: "HARM_CATEGORY_DANGEROUS_CONTENT", probability: "HIGH" }] },
      usageMetadata: usageMetadata(chat.promptTokens),
      modelVersion: header.model,
      responseId: header.id,
    };
    return stream ? data(blocked) : JSON.stringify(blocked);
  },
};
