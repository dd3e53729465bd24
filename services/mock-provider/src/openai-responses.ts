/**
 * The OpenAI Responses format (`POST /v1/responses`): the request it accepts
 * (`model`, `input` as a string or items, `instructions`,
 * `max_output_tokens`, `stream`), OpenAI's error body, the Response object,
 * and the streamed events as OpenAI sends them: `response.created`,
 * `response.in_progress`, one `message` item (`response.output_item.added`,
 * `response.content_part.added`, `response.output_text.delta` per token, the
 * text, part and item done events), then `response.completed`, or
 * `response.incomplete` when `max_output_tokens` cut the answer. Every event
 * is `event: <type>` + `data:` and carries its `sequence_number`, from 0.
 * There is no end marker after the terminal event. `fail=stream-error` ends
 * the stream with `response.failed` after `after` tokens. Usage is always
 * reported, with the input and output token details.
 */
import type { CompletionPlan } from "./completion.js";
import { errorReplyFor, INTERNAL_ERROR_REPLY } from "./failures.js";
import { type ChatRequest, type CompletionHeader, countWords, invalidRequest, isRecord, type MessageText } from "./openai.js";
import { type MockWire, openAIWireError, single, type WireParse } from "./wire.js";

/** The text of Responses content: a string, or the `input_text` / `output_text` parts joined. */
function responsesText(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  let text = "";
  for (const part of content) {
    if (isRecord(part) && (part.type === "input_text" || part.type === "output_text") && typeof part.text === "string") text += part.text;
  }
  return text;
}

/** A turn of the journal: message items by their role, function calls and their outputs by their item type. */
function turnOf(item: Record<string, unknown>): MessageText | null {
  const type = item.type ?? (typeof item.role === "string" ? "message" : undefined);
  if (type === "message" && typeof item.role === "string") return { role: item.role, text: responsesText(item.content) };
  if (type === "function_call") return { role: "function_call", text: typeof item.arguments === "string" ? item.arguments : "" };
  if (type === "function_call_output") return { role: "function_call_output", text: responsesText(item.output) };
  return null;
}

/** Checks the request body by hand; the checks mirror OpenAI's for the fields the mock reads. */
export function parseResponsesRequest(text: string): WireParse {
  const fail = (message: string, param: string | null = null, code: string | null = null): WireParse => ({
    ok: false,
    error: openAIWireError(invalidRequest(message, param, code)),
  });
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return fail(
      "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
    );
  }
  if (!isRecord(body)) return fail("The request body must be a JSON object.");
  if (typeof body.model !== "string" || body.model === "") {
    return fail("Missing required parameter: 'model'.", "model", body.model === undefined ? "missing_required_parameter" : "invalid_type");
  }
  const input = body.input;
  const turns: MessageText[] = [];
  if (typeof input === "string") turns.push({ role: "user", text: input });
  else if (Array.isArray(input)) {
    for (const [index, item] of input.entries()) {
      const turn = isRecord(item) ? turnOf(item) : null;
      if (turn === null)
        return fail(`Invalid 'input[${index}]': expected a message, function_call or function_call_output item.`, `input[${index}]`, "invalid_type");
      turns.push(turn);
    }
  } else {
    return fail("Missing required parameter: 'input'.", "input", input === undefined ? "missing_required_parameter" : "invalid_type");
  }
  const max = body.max_output_tokens;
  if (max !== undefined && max !== null && (typeof max !== "number" || !Number.isInteger(max) || max < 1)) {
    return fail(
      `Invalid 'max_output_tokens': expected an integer greater than or equal to 1, got ${JSON.stringify(max)}.`,
      "max_output_tokens",
      "invalid_value",
    );
  }
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== "boolean") {
    return fail("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type");
  }
  let promptTokens = typeof body.instructions === "string" ? countWords(body.instructions) : 0;
  for (const turn of turns) promptTokens += countWords(turn.text);
  return {
    ok: true,
    request: {
      model: body.model,
      stream: body.stream === true,
      includeUsage: true,
      maxTokens: typeof max === "number" ? max : null,
      promptTokens,
      endsWithAssistant: turns.at(-1)?.role === "assistant",
      messages: turns,
    },
  };
}

/** One response's running state while it streams: the next sequence number and the text so far. */
interface Streaming {
  next: number;
  text: string;
}

/** Keyed by the response's header: every wire call of one answer gets the same header object. */
const streams = new WeakMap<CompletionHeader, Streaming>();

function streaming(header: CompletionHeader): Streaming {
  let state = streams.get(header);
  if (!state) {
    state = { next: 0, text: "" };
    streams.set(header, state);
  }
  return state;
}

function event(header: CompletionHeader, type: string, fields: Record<string, unknown>): string {
  const state = streaming(header);
  const data = { type, sequence_number: state.next++, ...fields };
  return `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

function itemId(header: CompletionHeader): string {
  return header.id.replace(/^resp_/, "msg_");
}

function usage(chat: ChatRequest, outputTokens: number) {
  return {
    input_tokens: chat.promptTokens,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: outputTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: chat.promptTokens + outputTokens,
  };
}

type Status = "in_progress" | "completed" | "incomplete" | "failed";

function message(header: CompletionHeader, status: Exclude<Status, "failed">, text: string | null) {
  const content = text === null ? [] : [{ type: "output_text", annotations: [], logprobs: [], text }];
  return { id: itemId(header), type: "message", status, content, role: "assistant" };
}

/** The Response object, in OpenAI's field order. */
function responseObject(
  header: CompletionHeader,
  chat: ChatRequest,
  status: Status,
  output: unknown[],
  extra: { usage?: unknown; error?: unknown; incomplete?: boolean } = {},
) {
  return {
    id: header.id,
    object: "response",
    created_at: header.created,
    status,
    background: false,
    error: extra.error ?? null,
    incomplete_details: extra.incomplete ? { reason: "max_output_tokens" } : null,
    instructions: null,
    max_output_tokens: chat.maxTokens,
    max_tool_calls: null,
    model: header.model,
    output,
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    service_tier: "default",
    store: true,
    temperature: 1.0,
    text: { format: { type: "text" } },
    tool_choice: "auto",
    tools: [],
    top_p: 1.0,
    truncation: "disabled",
    usage: extra.usage ?? null,
    user: null,
    metadata: {},
  };
}

/** The OpenAI Responses format. */
export const OPENAI_RESPONSES_WIRE: MockWire = {
  name: "openai-responses",
  idPrefix: "resp_mock_",
  credential: (headers) => single(headers.authorization)?.replace(/^Bearer\s+/i, ""),
  parse: (text) => parseResponsesRequest(text),
  invalid: (message, param) => openAIWireError(invalidRequest(message, param, "invalid_scenario")),
  tooLarge: (message) =>
    openAIWireError({ status: 413, message, type: "invalid_request_error", param: null, code: "request_too_large" }, { connection: "close" }),
  internalError: () => openAIWireError(INTERNAL_ERROR_REPLY.error),
  failure(scenario, chat) {
    // The Responses API answers HTTP errors with the same body as chat completions.
    const reply = errorReplyFor(scenario, chat.model, chat.promptTokens);
    return reply ? openAIWireError(reply.error, reply.headers) : null;
  },
  prefillRejected: () =>
    openAIWireError(
      invalidRequest("This model does not support assistant message prefill: the input must end with a user message.", "input", "prefill_not_supported"),
    ),
  streamContentType: "text/event-stream; charset=utf-8",
  streamStart(header, chat) {
    const opening = responseObject(header, chat, "in_progress", []);
    const id = itemId(header);
    return (
      event(header, "response.created", { response: opening }) +
      event(header, "response.in_progress", { response: opening }) +
      event(header, "response.output_item.added", { output_index: 0, item: message(header, "in_progress", null) }) +
      event(header, "response.content_part.added", {
        item_id: id,
        output_index: 0,
        content_index: 0,
        part: { type: "output_text", annotations: [], logprobs: [], text: "" },
      })
    );
  },
  token(header, _chat, text) {
    streaming(header).text += text;
    return event(header, "response.output_text.delta", { item_id: itemId(header), output_index: 0, content_index: 0, delta: text, logprobs: [] });
  },
  finish(header, chat, plan: CompletionPlan) {
    const { text } = streaming(header);
    const id = itemId(header);
    const incomplete = plan.finishReason === "length";
    const item = message(header, incomplete ? "incomplete" : "completed", text);
    const final = responseObject(header, chat, incomplete ? "incomplete" : "completed", [item], { usage: usage(chat, plan.count), incomplete });
    return (
      event(header, "response.output_text.done", { item_id: id, output_index: 0, content_index: 0, text, logprobs: [] }) +
      event(header, "response.content_part.done", {
        item_id: id,
        output_index: 0,
        content_index: 0,
        part: { type: "output_text", annotations: [], logprobs: [], text },
      }) +
      event(header, "response.output_item.done", { output_index: 0, item }) +
      event(header, incomplete ? "response.incomplete" : "response.completed", { response: final })
    );
  },
  // The terminal event ends the stream; nothing follows it.
  end: () => "",
  streamError: (header, chat) =>
    event(header, "response.failed", {
      response: responseObject(header, chat, "failed", [], { error: { code: "server_error", message: "The model failed to generate a response." } }),
    }),
  malformed: "event: response.output_text.delta\ndata: {not json\n\n",
  completion(header, chat, content, plan) {
    const incomplete = plan.finishReason === "length";
    const item = message(header, incomplete ? "incomplete" : "completed", content);
    return JSON.stringify(responseObject(header, chat, incomplete ? "incomplete" : "completed", [item], { usage: usage(chat, plan.count), incomplete }));
  },
};
