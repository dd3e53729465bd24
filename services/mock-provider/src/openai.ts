/**
 * The OpenAI wire format the mock speaks: the chat request it accepts, the
 * error body, the `chat.completion` object and the `chat.completion.chunk`
 * stream events.
 */

/** The parts of an OpenAI chat request the mock uses. */
export interface ChatRequest {
  readonly model: string;
  readonly stream: boolean;
  readonly includeUsage: boolean;
  /** `max_completion_tokens`, else `max_tokens`; null when neither is given. */
  readonly maxTokens: number | null;
  /** A deterministic prompt size: words in the messages' text content. */
  readonly promptTokens: number;
  /** The conversation ends with an assistant turn: the client asks the model to continue it (a prefill). */
  readonly endsWithAssistant: boolean;
  /** The conversation's turns with their text, in order, as the format names the roles (`system` of Anthropic and Gemini not included). */
  readonly messages: readonly MessageText[];
}

/** One turn of a conversation: its role and the concatenation of its text parts. */
export interface MessageText {
  readonly role: string;
  readonly text: string;
}

/** The text of a trailing assistant turn (a prefill); null when the conversation ends with another role. */
export function prefillOf(chat: ChatRequest): string | null {
  return chat.endsWithAssistant ? (chat.messages.at(-1)?.text ?? "") : null;
}

/** An OpenAI error `{"error": {...}}` with its HTTP status. */
export interface OpenAIError {
  readonly status: number;
  readonly message: string;
  readonly type: string;
  readonly param: string | null;
  readonly code: string | null;
}

/** The JSON body of an OpenAI error. */
export function errorBody(error: OpenAIError): string {
  return JSON.stringify({ error: { message: error.message, type: error.type, param: error.param, code: error.code } });
}

/** A 400 `invalid_request_error`. */
export function invalidRequest(message: string, param: string | null = null, code: string | null = null): OpenAIError {
  return { status: 400, message, type: "invalid_request_error", param, code };
}

type ParseResult = { readonly ok: true; readonly request: ChatRequest } | { readonly ok: false; readonly error: OpenAIError };

export function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

export function countWords(text: string): number {
  const words = text.trim().split(/\s+/u);
  return words[0] === "" ? 0 : words.length;
}

/** Words in a message's `content`: a string, or an array of parts of which the `text` ones count. */
export function contentWords(content: unknown): number {
  if (typeof content === "string") return countWords(content);
  if (!Array.isArray(content)) return 0;
  let words = 0;
  for (const part of content) {
    if (isRecord(part) && part.type === "text" && typeof part.text === "string") words += countWords(part.text);
  }
  return words;
}

/** The text of a message's `content`: a string, or the `text` parts of an array joined (OpenAI and Anthropic alike). */
export function contentText(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  let text = "";
  for (const part of content) {
    if (isRecord(part) && part.type === "text" && typeof part.text === "string") text += part.text;
  }
  return text;
}

type CountResult = { readonly value: number | null } | { readonly error: OpenAIError };

function optionalCount(body: Record<string, unknown>, name: string): CountResult {
  const value = body[name];
  if (value === undefined || value === null) return { value: null };
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    return { error: invalidRequest(`Invalid '${name}': expected an integer greater than or equal to 1, got ${JSON.stringify(value)}.`, name, "invalid_value") };
  }
  return { value };
}

/** Checks the request body (raw text) by hand; the checks mirror OpenAI's for the fields the mock reads. */
export function parseChatRequest(text: string): ParseResult {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return {
      ok: false,
      error: invalidRequest(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
      ),
    };
  }
  if (!isRecord(body)) return { ok: false, error: invalidRequest("The request body must be a JSON object.") };
  if (typeof body.model !== "string" || body.model === "") {
    return {
      ok: false,
      error: invalidRequest("you must provide a model parameter", "model", body.model === undefined ? "missing_required_parameter" : "invalid_type"),
    };
  }
  const messages = body.messages;
  if (messages === undefined) return { ok: false, error: invalidRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter") };
  if (!Array.isArray(messages))
    return { ok: false, error: invalidRequest("Invalid type for 'messages': expected an array of objects.", "messages", "invalid_type") };
  if (messages.length === 0)
    return {
      ok: false,
      error: invalidRequest(
        "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        "messages",
        "empty_array",
      ),
    };
  let promptTokens = 0;
  let lastRole = "";
  const turns: MessageText[] = [];
  for (const [index, message] of messages.entries()) {
    if (!isRecord(message) || typeof message.role !== "string") {
      return {
        ok: false,
        error: invalidRequest(`Invalid 'messages[${index}]': expected an object with a string 'role'.`, `messages[${index}]`, "invalid_type"),
      };
    }
    promptTokens += contentWords(message.content);
    lastRole = message.role;
    turns.push({ role: message.role, text: contentText(message.content) });
  }
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== "boolean") {
    return { ok: false, error: invalidRequest("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type") };
  }
  const streamOptions = body.stream_options;
  if (streamOptions !== undefined && streamOptions !== null && !isRecord(streamOptions)) {
    return { ok: false, error: invalidRequest("Invalid type for 'stream_options': expected an object.", "stream_options", "invalid_type") };
  }
  const maxTokens = optionalCount(body, "max_tokens");
  if ("error" in maxTokens) return { ok: false, error: maxTokens.error };
  const maxCompletionTokens = optionalCount(body, "max_completion_tokens");
  if ("error" in maxCompletionTokens) return { ok: false, error: maxCompletionTokens.error };
  return {
    ok: true,
    request: {
      model: body.model,
      stream: body.stream === true,
      includeUsage: isRecord(streamOptions) && streamOptions.include_usage === true,
      maxTokens: maxCompletionTokens.value ?? maxTokens.value,
      promptTokens,
      endsWithAssistant: lastRole === "assistant",
      messages: turns,
    },
  };
}

/** Token counts of a completion. */
export interface Usage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
}

/** Usage for `promptTokens` in and `completionTokens` out. */
export function usage(promptTokens: number, completionTokens: number): Usage {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

/** Fields every completion object and chunk of one response shares. */
export interface CompletionHeader {
  readonly id: string;
  /** Unix seconds. */
  readonly created: number;
  readonly model: string;
}

/** `system_fingerprint` of every response. */
export const SYSTEM_FINGERPRINT = "fp_mock";

/** Why a completion stopped. */
export type FinishReason = "stop" | "length";

/** One SSE event carrying a `chat.completion.chunk` with a single choice. */
export function chunkEvent(header: CompletionHeader, delta: Readonly<Record<string, string>>, finishReason: FinishReason | null): string {
  const chunk = {
    id: header.id,
    object: "chat.completion.chunk",
    created: header.created,
    model: header.model,
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
  };
  return `data: ${JSON.stringify(chunk)}\n\n`;
}

/** The SSE event carrying the usage chunk (no choices), sent last when usage was asked for. */
export function usageEvent(header: CompletionHeader, counts: Usage): string {
  const chunk = {
    id: header.id,
    object: "chat.completion.chunk",
    created: header.created,
    model: header.model,
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices: [],
    usage: counts,
  };
  return `data: ${JSON.stringify(chunk)}\n\n`;
}

/** The SSE event that ends an OpenAI stream. */
export const DONE_EVENT = "data: [DONE]\n\n";

/** The SSE event `fail=malformed` sends: not JSON. */
export const MALFORMED_EVENT = "data: {not json\n\n";

/** The body of a non-streamed completion. */
export function completionBody(header: CompletionHeader, content: string, finishReason: FinishReason, counts: Usage): string {
  return JSON.stringify({
    id: header.id,
    object: "chat.completion",
    created: header.created,
    model: header.model,
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices: [{ index: 0, message: { role: "assistant", content }, logprobs: null, finish_reason: finishReason }],
    usage: counts,
  });
}

/** The body of `GET /v1/models`. */
export function modelsBody(created: number): string {
  return JSON.stringify({ object: "list", data: [{ id: "mock", object: "model", created, owned_by: "runnel" }] });
}
