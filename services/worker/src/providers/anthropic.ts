/**
 * The Anthropic adapter: the Messages API (`POST /v1/messages`, `stream:
 * true`). Requests are mapped from the normalised ChatRequest (system
 * prompt, tool use and tool results as content blocks, images, stop
 * sequences); the named SSE events (message_start, content_block_*,
 * message_delta, message_stop, ping, error) are validated one by one and
 * mapped onto the vocabulary.
 */
import { type ChatMessage, type ChatRequest, type ContentPart, FinishReason, RunnelError } from "@runnel/shared/contracts";
import type { EventSourceMessage } from "eventsource-parser";
import { z } from "zod";
import { type ErrorDetail, ProviderError, refineBadRequest, safeJson } from "./http.js";
import { type DecoderSink, joinUrl, parseJson, runSseStream, type SseStreamOptions, type StreamDecoder, textOf } from "./sse-stream.js";
import type { EventBatch, ProviderAdapter, StreamCall } from "./types.js";

/** The API version sent unless the provider's `headers` set `anthropic-version`. */
export const ANTHROPIC_VERSION = "2023-06-01";
/** Anthropic requires `max_tokens`; this is sent when the client gave none. */
export const ANTHROPIC_DEFAULT_MAX_TOKENS = 4096;

const count = z.number().int().nonnegative();

const UsageSchema = z.object({
  input_tokens: count.nullish(),
  output_tokens: count.nullish(),
  cache_creation_input_tokens: count.nullish(),
  cache_read_input_tokens: count.nullish(),
});

const ErrorObjectSchema = z.object({ type: z.string().default("error"), message: z.string().default("provider error") });

/** The events of the stream, by `type`. Types not listed (new ones Anthropic may add) are skipped. */
export const AnthropicEventSchemas = {
  message_start: z.object({
    type: z.literal("message_start"),
    message: z.object({ model: z.string().nullish(), usage: UsageSchema.nullish() }),
  }),
  content_block_start: z.object({
    type: z.literal("content_block_start"),
    index: count,
    content_block: z.object({ type: z.string(), id: z.string().nullish(), name: z.string().nullish(), text: z.string().nullish() }),
  }),
  content_block_delta: z.object({
    type: z.literal("content_block_delta"),
    index: count,
    delta: z.discriminatedUnion("type", [
      z.object({ type: z.literal("text_delta"), text: z.string() }),
      z.object({ type: z.literal("thinking_delta"), thinking: z.string() }),
      z.object({ type: z.literal("input_json_delta"), partial_json: z.string() }),
      z.object({ type: z.literal("signature_delta"), signature: z.string() }),
      z.object({ type: z.literal("citations_delta") }),
    ]),
  }),
  content_block_stop: z.object({ type: z.literal("content_block_stop"), index: count }),
  message_delta: z.object({
    type: z.literal("message_delta"),
    delta: z.object({ stop_reason: z.string().nullish() }),
    usage: UsageSchema.nullish(),
  }),
  message_stop: z.object({ type: z.literal("message_stop") }),
  ping: z.object({ type: z.literal("ping") }),
  error: z.object({ type: z.literal("error"), error: ErrorObjectSchema }),
} as const;

type EventType = keyof typeof AnthropicEventSchemas;
const EVENT_TYPES = new Set<string>(Object.keys(AnthropicEventSchemas));
const isEventType = (type: string): type is EventType => EVENT_TYPES.has(type);

/** `{ "type": "error", "error": { "type": ..., "message": ... } }`, the body of every error answer. */
const ErrorBodySchema = z.object({ error: ErrorObjectSchema });

/** Anthropic's stop reasons on OpenAI's finish reasons. */
export function finishReasonFromAnthropic(reason: string): FinishReason {
  switch (reason) {
    case "max_tokens":
    case "model_context_window_exceeded":
      return FinishReason.FINISH_REASON_LENGTH;
    case "tool_use":
      return FinishReason.FINISH_REASON_TOOL_CALLS;
    case "refusal":
      return FinishReason.FINISH_REASON_CONTENT_FILTER;
    default:
      // end_turn, stop_sequence, pause_turn and anything new.
      return FinishReason.FINISH_REASON_STOP;
  }
}

/** The error an `error` event (or an error answer's `error.type`) stands for. */
export function errorFromAnthropicType(type: string, message: string): ProviderError {
  const text = `provider reported ${type}: ${message}`;
  switch (type) {
    case "rate_limit_error":
      return new ProviderError("RUNNEL_ERR_PROVIDER_RATE_LIMITED", text, { retry: true });
    case "authentication_error":
    case "permission_error":
      return new ProviderError("RUNNEL_ERR_PROVIDER_AUTH", text, { retry: false });
    case "invalid_request_error":
    case "not_found_error":
    case "request_too_large":
      return new ProviderError(refineBadRequest("RUNNEL_ERR_PROVIDER_BAD_REQUEST", message), text, { retry: false });
    case "timeout_error":
      return new ProviderError("RUNNEL_ERR_PROVIDER_TIMEOUT", text, { retry: true });
    default:
      // overloaded_error, api_error and anything new.
      return new ProviderError("RUNNEL_ERR_PROVIDER_UNAVAILABLE", text, { retry: true });
  }
}

type Block = Record<string, unknown>;
interface AnthropicMessage {
  role: "user" | "assistant";
  content: Block[];
}

function imageBlock(url: string): Block {
  const data = /^data:([^;,]+);base64,(.*)$/s.exec(url);
  if (data) return { type: "image", source: { type: "base64", media_type: data[1], data: data[2] } };
  return { type: "image", source: { type: "url", url } };
}

function contentBlocks(parts: readonly ContentPart[]): Block[] {
  const blocks: Block[] = [];
  for (const part of parts) {
    if (part.part?.$case === "text") {
      // Anthropic rejects empty text blocks.
      if (part.part.value !== "") blocks.push({ type: "text", text: part.part.value });
    } else if (part.part?.$case === "imageUrl") blocks.push(imageBlock(part.part.value.url));
  }
  return blocks;
}

function parseArguments(message: ChatMessage, index: number, callIndex: number): unknown {
  const call = message.toolCalls[callIndex];
  if (!call || call.arguments.trim() === "") return {};
  try {
    return JSON.parse(call.arguments);
  } catch {
    throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `messages[${index}].tool_calls[${callIndex}].function.arguments is not JSON`, {
      param: `messages[${index}].tool_calls[${callIndex}].function.arguments`,
    });
  }
}

function parseJsonField(json: string, param: string): unknown {
  try {
    return JSON.parse(json);
  } catch {
    throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `${param} is not JSON`, { param });
  }
}

/** OpenAI's tool_choice on Anthropic's. */
function toolChoice(json: string): Block | undefined {
  const choice = parseJsonField(json, "tool_choice");
  if (choice === "auto") return { type: "auto" };
  if (choice === "none") return { type: "none" };
  if (choice === "required") return { type: "any" };
  if (choice !== null && typeof choice === "object") {
    const name = (choice as { function?: { name?: unknown } }).function?.name;
    if (typeof name === "string") return { type: "tool", name };
  }
  return undefined;
}

/**
 * The Messages API body for a normalised request. System and developer
 * messages become `system`; tool results become `tool_result` blocks in a
 * user turn; consecutive turns of one role are merged (the API wants them
 * alternating). A last assistant message is sent as is: Anthropic continues
 * it (a prefill), which some models refuse with a 400 that reaches the client.
 */
export function anthropicRequestBody(request: ChatRequest, model: string): Record<string, unknown> {
  const system: Block[] = [];
  const messages: AnthropicMessage[] = [];
  const push = (role: AnthropicMessage["role"], blocks: Block[]) => {
    const last = messages.at(-1);
    if (last && last.role === role) last.content.push(...blocks);
    else messages.push({ role, content: blocks });
  };
  request.messages.forEach((message, index) => {
    switch (message.role) {
      case "system":
      case "developer": {
        const text = textOf(message.content);
        if (text !== "") system.push({ type: "text", text });
        break;
      }
      case "assistant": {
        const blocks = contentBlocks(message.content);
        message.toolCalls.forEach((call, callIndex) => {
          blocks.push({ type: "tool_use", id: call.id, name: call.name, input: parseArguments(message, index, callIndex) });
        });
        push("assistant", blocks);
        break;
      }
      case "tool":
        push("user", [{ type: "tool_result", tool_use_id: message.toolCallId, content: textOf(message.content) }]);
        break;
      default:
        push("user", contentBlocks(message.content));
    }
  });
  const body: Record<string, unknown> = {
    model,
    max_tokens: request.maxTokens ?? ANTHROPIC_DEFAULT_MAX_TOKENS,
    stream: true,
    messages,
  };
  if (system.length > 0) body.system = system;
  if (request.temperature !== undefined) body.temperature = request.temperature;
  if (request.topP !== undefined) body.top_p = request.topP;
  if (request.stop.length > 0) body.stop_sequences = request.stop;
  if (request.user) body.metadata = { user_id: request.user };
  if (request.tools.length > 0) {
    body.tools = request.tools.map((tool, index) => ({
      name: tool.name,
      ...(tool.description ? { description: tool.description } : {}),
      input_schema: tool.parametersJson ? parseJsonField(tool.parametersJson, `tools[${index}].function.parameters`) : { type: "object", properties: {} },
    }));
  }
  if (request.toolChoiceJson) {
    const choice = toolChoice(request.toolChoiceJson);
    if (choice) body.tool_choice = choice;
  }
  return body;
}

/** The URL of the Messages API: the SDKs' base URL has no /v1, but one ending in /v1 is accepted too. */
export function anthropicMessagesUrl(baseUrl: string): string {
  return /\/v1\/?$/.test(baseUrl) ? joinUrl(baseUrl, "messages") : joinUrl(baseUrl, "v1/messages");
}

export function readAnthropicError(_status: number, text: string): ErrorDetail {
  const parsed = ErrorBodySchema.safeParse(safeJson(text));
  if (!parsed.success) return { message: text.slice(0, 500) || "no body" };
  return { message: `${parsed.data.error.type}: ${parsed.data.error.message}` };
}

export function createAnthropicAdapter(options: SseStreamOptions): ProviderAdapter {
  return {
    stream(call: StreamCall): AsyncIterable<EventBatch> {
      const { provider } = call;
      const headers: Record<string, string> = {
        "content-type": "application/json",
        accept: "text/event-stream",
        "anthropic-version": ANTHROPIC_VERSION,
        ...provider.headers,
      };
      if (provider.apiKey) headers["x-api-key"] = provider.apiKey;
      return runSseStream(call, options, {
        url: anthropicMessagesUrl(provider.baseUrl),
        headers,
        body: JSON.stringify(anthropicRequestBody(call.request, call.model)),
        readError: readAnthropicError,
        decoder: new AnthropicDecoder(),
      });
    },
  };
}

/** Maps the Messages stream. `message_stop` is the end marker; `message_delta` carries the stop reason and the output usage. */
export class AnthropicDecoder implements StreamDecoder {
  /** Tool index (0, 1, ...) of each tool_use content block, by block index. */
  readonly #toolIndex = new Map<number, number>();
  #tools = 0;
  #inputTokens = 0;
  #cacheReadTokens = 0;
  #cacheWriteTokens = 0;
  #outputTokens = 0;

  decode(event: EventSourceMessage, sink: DecoderSink): void {
    const json = parseJson(event.data, sink);
    if (json === undefined) return;
    const type = (json as { type?: unknown } | null)?.type;
    if (typeof type !== "string") {
      sink.malformed("no event type");
      return;
    }
    // Anthropic may add event types; a type we do not know is skipped, not an error.
    if (!isEventType(type)) return;
    const parsed = AnthropicEventSchemas[type].safeParse(json);
    if (!parsed.success) {
      sink.malformed(`${type}: ${parsed.error.issues[0]?.message ?? "schema"}`);
      return;
    }
    const data = parsed.data;
    switch (data.type) {
      case "message_start":
        if (data.message.usage) this.#usage(data.message.usage, sink);
        return;
      case "content_block_start": {
        const block = data.content_block;
        if (block.type === "tool_use") {
          const index = this.#tools++;
          this.#toolIndex.set(data.index, index);
          sink.token({ $case: "toolCallDelta", value: { index, id: block.id ?? "", name: block.name ?? "", arguments: "" } });
        } else if (block.type === "text" && block.text) {
          sink.token({ $case: "textDelta", value: { text: block.text } });
        }
        return;
      }
      case "content_block_delta": {
        const delta = data.delta;
        if (delta.type === "text_delta") {
          if (delta.text) sink.token({ $case: "textDelta", value: { text: delta.text } });
        } else if (delta.type === "thinking_delta") {
          if (delta.thinking) sink.token({ $case: "reasoningDelta", value: { text: delta.thinking } });
        } else if (delta.type === "input_json_delta") {
          // Input of a server tool (web search, code execution) runs at Anthropic, not at the client: not forwarded.
          const index = this.#toolIndex.get(data.index);
          if (index !== undefined && delta.partial_json)
            sink.token({ $case: "toolCallDelta", value: { index, id: "", name: "", arguments: delta.partial_json } });
        }
        return;
      }
      case "message_delta":
        if (data.usage) this.#usage(data.usage, sink);
        if (data.delta.stop_reason) sink.finish(finishReasonFromAnthropic(data.delta.stop_reason));
        return;
      case "message_stop":
        sink.end();
        return;
      case "error":
        sink.fail(errorFromAnthropicType(data.error.type, data.error.message));
        return;
      default:
        // content_block_stop, ping: nothing to map.
        return;
    }
  }

  /** message_start carries the input side, message_delta the (cumulative) output side and, on newer API versions, the input side again. */
  #usage(usage: z.infer<typeof UsageSchema>, sink: DecoderSink): void {
    if (usage.input_tokens != null) this.#inputTokens = usage.input_tokens;
    if (usage.cache_read_input_tokens != null) this.#cacheReadTokens = usage.cache_read_input_tokens;
    if (usage.cache_creation_input_tokens != null) this.#cacheWriteTokens = usage.cache_creation_input_tokens;
    if (usage.output_tokens != null) this.#outputTokens = usage.output_tokens;
    sink.usage({
      // Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens includes them.
      inputTokens: this.#inputTokens + this.#cacheReadTokens + this.#cacheWriteTokens,
      outputTokens: this.#outputTokens,
      cachedInputTokens: this.#cacheReadTokens,
      reasoningTokens: 0,
    });
  }
}
