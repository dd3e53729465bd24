/**
 * The Anthropic Messages format (`POST /v1/messages`): the request it
 * accepts, its error body (`{"type":"error","error":{type,message}}`), and
 * its named stream events: message_start, content_block_start, ping,
 * content_block_delta (text_delta), content_block_stop, message_delta (stop
 * reason and output usage), message_stop. Usage is always sent, as Anthropic does.
 */
import { MOCK_CONTEXT_LENGTH } from "./failures.js";
import { type ChatRequest, contentText, contentWords, isRecord, type MessageText } from "./openai.js";
import type { Scenario } from "./scenario.js";
import { type MockWire, single, type WireError, type WireParse } from "./wire.js";

/** Anthropic's error `type` for an HTTP status. */
function errorType(status: number): string {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 529:
      return "overloaded_error";
    default:
      return "api_error";
  }
}

let requestIds = 0;

function error(status: number, message: string, headers: Readonly<Record<string, string>> = {}): WireError {
  requestIds += 1;
  return { status, body: JSON.stringify({ type: "error", error: { type: errorType(status), message }, request_id: `req_mock_${requestIds}` }), headers };
}

export function parseAnthropicRequest(text: string): WireParse {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { ok: false, error: error(400, "There was an issue with the request body: it is not valid JSON.") };
  }
  if (!isRecord(body)) return { ok: false, error: error(400, "The request body must be a JSON object.") };
  if (typeof body.model !== "string" || body.model === "") return { ok: false, error: error(400, "model: Field required") };
  if (typeof body.max_tokens !== "number" || !Number.isInteger(body.max_tokens) || body.max_tokens < 1) {
    return { ok: false, error: error(400, "max_tokens: Field required (an integer of at least 1)") };
  }
  const messages = body.messages;
  if (!Array.isArray(messages) || messages.length === 0) return { ok: false, error: error(400, "messages: at least one message is required") };
  // `system` is a string or text blocks, like a message's content.
  let promptTokens = contentWords(body.system);
  let lastRole = "";
  const turns: MessageText[] = [];
  for (const [index, message] of messages.entries()) {
    if (!isRecord(message) || (message.role !== "user" && message.role !== "assistant")) {
      return { ok: false, error: error(400, `messages.${index}.role: Input should be 'user' or 'assistant'`) };
    }
    promptTokens += contentWords(message.content);
    lastRole = message.role;
    turns.push({ role: message.role, text: contentText(message.content) });
  }
  if (body.stream !== undefined && typeof body.stream !== "boolean") return { ok: false, error: error(400, "stream: Input should be a valid boolean") };
  return {
    ok: true,
    request: {
      model: body.model,
      stream: body.stream === true,
      includeUsage: true,
      maxTokens: body.max_tokens,
      promptTokens,
      endsWithAssistant: lastRole === "assistant",
      messages: turns,
    },
  };
}

function event(name: string, data: unknown): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}

function stopReason(finishReason: "stop" | "length"): string {
  return finishReason === "length" ? "max_tokens" : "end_turn";
}

function anthropicFailure(scenario: Scenario, chat: ChatRequest): WireError | null {
  switch (scenario.fail) {
    case "429":
    case "429-no-retry-after":
      return error(
        429,
        "This request would exceed the rate limit for your organization (mock) of 60 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
        scenario.fail === "429" ? { "retry-after": String(scenario.retryAfterSeconds) } : {},
      );
    case "500":
      return error(500, "Internal server error");
    case "503":
      // Anthropic says "overloaded" with its own 529.
      return error(529, "Overloaded");
    case "context-length":
      return error(400, `prompt is too long: ${MOCK_CONTEXT_LENGTH + 1 + chat.promptTokens} tokens > ${MOCK_CONTEXT_LENGTH} maximum`);
    case "content-policy":
      return error(400, "Output blocked by content filtering policy");
    case "auth":
      return error(401, "invalid x-api-key");
    default:
      return null;
  }
}

/** The Anthropic Messages format. */
export const ANTHROPIC_WIRE: MockWire = {
  name: "anthropic",
  idPrefix: "msg_mock_",
  credential: (headers) => single(headers["x-api-key"]),
  parse: (text) => parseAnthropicRequest(text),
  invalid: (message) => error(400, message),
  tooLarge: (message) => error(413, message, { connection: "close" }),
  internalError: () => error(500, "Internal server error"),
  failure: anthropicFailure,
  prefillRejected: () => error(400, "This model does not support assistant message prefill. The conversation must end with a user message."),
  streamContentType: "text/event-stream; charset=utf-8",
  streamStart: (header, chat) =>
    event("message_start", {
      type: "message_start",
      message: {
        id: header.id,
        type: "message",
        role: "assistant",
        content: [],
        model: header.model,
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: chat.promptTokens, output_tokens: 1 },
      },
    }) +
    event("content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }) +
    event("ping", { type: "ping" }),
  token: (_header, _chat, text) => event("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text } }),
  finish: (_header, _chat, plan) =>
    event("content_block_stop", { type: "content_block_stop", index: 0 }) +
    event("message_delta", {
      type: "message_delta",
      delta: { stop_reason: stopReason(plan.finishReason), stop_sequence: null },
      usage: { output_tokens: plan.count },
    }),
  end: () => event("message_stop", { type: "message_stop" }),
  // The documented mid-stream error, which Anthropic sends under load.
  streamError: () => event("error", { type: "error", error: { type: "overloaded_error", message: "Overloaded" } }),
  malformed: "event: content_block_delta\ndata: {not json\n\n",
  completion: (header, chat, content, plan) =>
    JSON.stringify({
      id: header.id,
      type: "message",
      role: "assistant",
      model: header.model,
      content: [{ type: "text", text: content }],
      stop_reason: stopReason(plan.finishReason),
      stop_sequence: null,
      usage: { input_tokens: chat.promptTokens, output_tokens: plan.count },
    }),
};
