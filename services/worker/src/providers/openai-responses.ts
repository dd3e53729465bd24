/**
 * The OpenAI Responses adapter: OpenAI's own `POST /v1/responses` as the
 * upstream (some OpenAI models are served only there), and compatible
 * servers. The request is the normalised ChatRequest as Responses input
 * items; the upstream's named SSE events are read with eventsource-parser,
 * each validated with a schema, and mapped onto the vocabulary: text deltas,
 * reasoning (summary or raw text) deltas, function-call items and their
 * argument deltas, usage, and the terminal events (`response.completed`,
 * `response.incomplete`, `response.failed`, `error`). docs/responses-api.md
 * has the wire shapes; docs/providers.md the mapping.
 */
import { type ChatMessage, type ChatRequest, type ContentPart, type ErrorCode, FinishReason, type Usage } from "@runnel/shared/contracts";
import type { EventSourceMessage } from "eventsource-parser";
import { z } from "zod";
import { ProviderError, refineBadRequest, safeJson } from "./http.js";
import { type DecoderSink, joinUrl, parseJson, runSseStream, type SseStreamOptions, type StreamDecoder, textOf, validChunk } from "./sse-stream.js";
import type { EventBatch, ProviderAdapter, StreamCall } from "./types.js";

type InputPart = { type: "input_text"; text: string } | { type: "input_image"; image_url: string; detail: string };

function inputParts(parts: readonly ContentPart[]): InputPart[] {
  const out: InputPart[] = [];
  for (const part of parts) {
    if (part.part?.$case === "text") out.push({ type: "input_text", text: part.part.value });
    else if (part.part?.$case === "imageUrl") out.push({ type: "input_image", image_url: part.part.value.url, detail: part.part.value.detail || "auto" });
  }
  return out;
}

/** A user, system or developer message: string content for one text part, parts otherwise. */
function messageItem(message: ChatMessage): Record<string, unknown> {
  const parts = message.content;
  if (parts.length === 0) return { role: message.role, content: "" };
  if (parts.length === 1 && parts[0]?.part?.$case === "text") return { role: message.role, content: parts[0].part.value };
  return { role: message.role, content: inputParts(parts) };
}

/**
 * The conversation as Responses input items: each message by its role; an
 * assistant turn's text as an assistant message (string content, which the
 * API takes for any role) followed by one `function_call` item per tool
 * call; each `tool` message as the `function_call_output` of its call.
 */
function inputItems(messages: readonly ChatMessage[]): Record<string, unknown>[] {
  const items: Record<string, unknown>[] = [];
  for (const message of messages) {
    if (message.role === "assistant") {
      const text = textOf(message.content);
      if (text !== "" || message.toolCalls.length === 0) items.push({ role: "assistant", content: text });
      for (const call of message.toolCalls) items.push({ type: "function_call", call_id: call.id, name: call.name, arguments: call.arguments });
    } else if (message.role === "tool") {
      const images = message.content.some((part) => part.part?.$case === "imageUrl");
      items.push({ type: "function_call_output", call_id: message.toolCallId, output: images ? inputParts(message.content) : textOf(message.content) });
    } else {
      items.push(messageItem(message));
    }
  }
  return items;
}

/** Chat completions' `tool_choice` (what the ChatRequest carries) in the Responses API's shape. */
function toolChoice(json: string): unknown {
  const choice: unknown = JSON.parse(json);
  if (typeof choice === "object" && choice !== null && "function" in choice) {
    const fn = (choice as { function?: { name?: unknown } }).function;
    return { type: "function", name: fn?.name };
  }
  return choice;
}

/** Chat completions' `response_format` (what the ChatRequest carries) as the Responses API's `text.format`. */
function textFormat(json: string): unknown {
  const format = JSON.parse(json) as { type?: string; json_schema?: Record<string, unknown> };
  if (format.type === "json_schema" && format.json_schema) return { type: "json_schema", ...format.json_schema };
  return format;
}

/**
 * The Responses API body. Runnel keeps conversation state itself, so the
 * upstream stores nothing (`store: false`) and every request carries the
 * whole conversation. There is no `stop` or `seed` parameter in this API:
 * neither is sent. A tool without a strict flag is sent non-strict (the
 * API's default is strict, chat completions' is not).
 */
export function openAIResponsesRequestBody(request: ChatRequest, model: string): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model,
    input: inputItems(request.messages),
    stream: true,
    store: false,
    // Padding against length side channels is for links the client does not trust; this one is the gateway's own TLS.
    stream_options: { include_obfuscation: false },
  };
  if (request.temperature !== undefined) body.temperature = request.temperature;
  if (request.topP !== undefined) body.top_p = request.topP;
  if (request.maxTokens !== undefined) body.max_output_tokens = request.maxTokens;
  if (request.user) body.safety_identifier = request.user;
  if (request.tools.length > 0) {
    body.tools = request.tools.map((tool) => ({
      type: "function",
      name: tool.name,
      ...(tool.description ? { description: tool.description } : {}),
      parameters: tool.parametersJson ? JSON.parse(tool.parametersJson) : { type: "object", properties: {} },
      strict: tool.strict ?? false,
    }));
  }
  if (request.toolChoiceJson) body.tool_choice = toolChoice(request.toolChoiceJson);
  if (request.responseFormatJson) body.text = { format: textFormat(request.responseFormatJson) };
  if (request.reasoningEffort || request.reasoningSummary) {
    body.reasoning = {
      ...(request.reasoningEffort ? { effort: request.reasoningEffort } : {}),
      ...(request.reasoningSummary ? { summary: request.reasoningSummary } : {}),
    };
  }
  return body;
}

const count = z.number().int().nonnegative();

const UsageSchema = z.object({
  input_tokens: count.default(0),
  input_tokens_details: z.object({ cached_tokens: count.nullish() }).nullish(),
  output_tokens: count.default(0),
  output_tokens_details: z.object({ reasoning_tokens: count.nullish() }).nullish(),
});

const ResponseSchema = z.object({
  status: z.string().nullish(),
  output: z.array(z.object({ type: z.string() })).nullish(),
  usage: UsageSchema.nullish(),
  error: z.object({ code: z.string().nullish(), message: z.string().nullish() }).nullish(),
  incomplete_details: z.object({ reason: z.string().nullish() }).nullish(),
});

const ItemSchema = z.object({
  type: z.string(),
  id: z.string().nullish(),
  call_id: z.string().nullish(),
  name: z.string().nullish(),
  arguments: z.string().nullish(),
});

const at = { output_index: count.nullish(), item_id: z.string().nullish() };

/** The events the adapter reads, by type; other types are skipped, as OpenAI adds event types over time. */
const EVENT_SCHEMAS = {
  "response.output_item.added": z.object({ ...at, item: ItemSchema }),
  "response.output_item.done": z.object({ ...at, item: ItemSchema }),
  "response.output_text.delta": z.object({ ...at, delta: z.string() }),
  "response.refusal.delta": z.object({ ...at, delta: z.string() }),
  "response.reasoning_summary_text.delta": z.object({ ...at, summary_index: count.default(0), delta: z.string() }),
  "response.reasoning_text.delta": z.object({ ...at, delta: z.string() }),
  "response.function_call_arguments.delta": z.object({ ...at, delta: z.string() }),
  "response.function_call_arguments.done": z.object({ ...at, arguments: z.string() }),
  "response.completed": z.object({ response: ResponseSchema }),
  "response.incomplete": z.object({ response: ResponseSchema }),
  "response.failed": z.object({ response: ResponseSchema }),
  // OpenAI documents code, message and param at the top; in practice it sends them nested under `error`.
  error: z.object({
    code: z.string().nullish(),
    message: z.string().nullish(),
    error: z.object({ type: z.string().nullish(), code: z.string().nullish(), message: z.string().nullish() }).nullish(),
  }),
} as const;

type EventType = keyof typeof EVENT_SCHEMAS;
type EventOf<T extends EventType> = z.infer<(typeof EVENT_SCHEMAS)[T]>;

const TypeSchema = z.object({ type: z.string() });

/** The OpenAI error answer: `{ "error": { "message": ... } }`. */
const ErrorBodySchema = z.object({ error: z.object({ message: z.string() }) });

export function createOpenAIResponsesAdapter(options: SseStreamOptions): ProviderAdapter {
  return {
    stream(call: StreamCall): AsyncIterable<EventBatch> {
      const { provider } = call;
      const headers: Record<string, string> = { "content-type": "application/json", accept: "text/event-stream", ...provider.headers };
      if (provider.apiKey) headers.authorization = `Bearer ${provider.apiKey}`;
      return runSseStream(call, options, {
        url: joinUrl(provider.baseUrl, "responses"),
        headers,
        body: JSON.stringify(openAIResponsesRequestBody(call.request, call.model)),
        readError: (_status, text) => {
          const parsed = ErrorBodySchema.safeParse(safeJson(text));
          return { message: parsed.success ? parsed.data.error.message : text.slice(0, 500) || "no body" };
        },
        decoder: new OpenAIResponsesDecoder(),
      });
    },
  };
}

/** A function call of the stream: its vocabulary tool index, and how much of its arguments went out. */
interface Call {
  readonly index: number;
  streamed: number;
}

/**
 * The Runnel code of an upstream error code (of `response.failed`, or of an
 * `error` event), and whether another attempt can help (only before the
 * first token: the retry layer's rule).
 */
export function classifyResponsesError(code: string, message: string): { code: ErrorCode; retry: boolean } {
  switch (code) {
    case "rate_limit_exceeded":
    case "too_many_requests":
    case "insufficient_quota":
    case "requests":
    case "tokens":
      return { code: "RUNNEL_ERR_PROVIDER_RATE_LIMITED", retry: true };
    case "context_length_exceeded":
      return { code: "RUNNEL_ERR_CONTEXT_LENGTH", retry: false };
    case "server_error":
    case "internal_error":
    case "overloaded":
    case "vector_store_timeout":
    case "":
      return { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", retry: true };
    default: {
      // invalid_prompt, invalid_request_error and the image errors: the request is at fault.
      const refined = refineBadRequest("RUNNEL_ERR_PROVIDER_BAD_REQUEST", message);
      return { code: refined, retry: false };
    }
  }
}

/**
 * Maps the Responses API's events. The terminal events are the end marker:
 * `response.completed` (finish `tool_calls` when the output has a function
 * call, `content_filter` after a refusal, else `stop`), `response.incomplete`
 * (`length` for max_output_tokens, `content_filter`), `response.failed` and
 * `error` (a failure, with the upstream's message).
 */
export class OpenAIResponsesDecoder implements StreamDecoder {
  /** Function calls by output index and by item id (deltas name either). */
  readonly #byOutput = new Map<number, Call>();
  readonly #byItem = new Map<string, Call>();
  #calls = 0;
  #refused = false;
  /** The reasoning part being streamed, so a new summary part is set apart from the one before. */
  #reasoningPart: string | undefined;

  decode(event: EventSourceMessage, sink: DecoderSink): void {
    const json = parseJson(event.data, sink);
    if (json === undefined) return;
    const typed = validChunk(TypeSchema, json, sink);
    if (!typed) return;
    const type = typed.type;
    if (!Object.hasOwn(EVENT_SCHEMAS, type)) return;
    switch (type as EventType) {
      case "response.output_item.added":
        this.#itemAdded(this.#read("response.output_item.added", json, sink), sink);
        return;
      case "response.output_item.done":
        this.#itemDone(this.#read("response.output_item.done", json, sink), sink);
        return;
      case "response.output_text.delta": {
        const delta = this.#read("response.output_text.delta", json, sink);
        if (delta?.delta) sink.token({ $case: "textDelta", value: { text: delta.delta } });
        return;
      }
      case "response.refusal.delta": {
        const delta = this.#read("response.refusal.delta", json, sink);
        if (!delta?.delta) return;
        this.#refused = true;
        sink.token({ $case: "textDelta", value: { text: delta.delta } });
        return;
      }
      case "response.reasoning_summary_text.delta": {
        const delta = this.#read("response.reasoning_summary_text.delta", json, sink);
        if (!delta?.delta) return;
        const part = `${delta.item_id ?? delta.output_index ?? ""}:${delta.summary_index}`;
        const separate = this.#reasoningPart !== undefined && this.#reasoningPart !== part;
        this.#reasoningPart = part;
        sink.token({ $case: "reasoningDelta", value: { text: separate ? `\n\n${delta.delta}` : delta.delta } });
        return;
      }
      case "response.reasoning_text.delta": {
        const delta = this.#read("response.reasoning_text.delta", json, sink);
        if (delta?.delta) sink.token({ $case: "reasoningDelta", value: { text: delta.delta } });
        return;
      }
      case "response.function_call_arguments.delta": {
        const delta = this.#read("response.function_call_arguments.delta", json, sink);
        if (!delta) return;
        const call = this.#call(delta, sink);
        if (call && delta.delta) this.#arguments(call, delta.delta, sink);
        return;
      }
      case "response.function_call_arguments.done": {
        const done = this.#read("response.function_call_arguments.done", json, sink);
        const call = done ? this.#call(done, sink) : undefined;
        // A server that sent no deltas (or fewer): the rest of the arguments, once.
        if (done && call) this.#arguments(call, done.arguments.slice(call.streamed), sink);
        return;
      }
      case "response.completed": {
        const completed = this.#read("response.completed", json, sink);
        if (!completed) return;
        this.#usage(completed.response.usage, sink);
        const toolCall = this.#calls > 0 || (completed.response.output ?? []).some((item) => item.type === "function_call");
        sink.finish(
          toolCall ? FinishReason.FINISH_REASON_TOOL_CALLS : this.#refused ? FinishReason.FINISH_REASON_CONTENT_FILTER : FinishReason.FINISH_REASON_STOP,
        );
        sink.end();
        return;
      }
      case "response.incomplete": {
        const incomplete = this.#read("response.incomplete", json, sink);
        if (!incomplete) return;
        this.#usage(incomplete.response.usage, sink);
        const reason = incomplete.response.incomplete_details?.reason;
        sink.finish(reason === "content_filter" ? FinishReason.FINISH_REASON_CONTENT_FILTER : FinishReason.FINISH_REASON_LENGTH);
        sink.end();
        return;
      }
      case "response.failed": {
        const failed = this.#read("response.failed", json, sink);
        if (!failed) return;
        const error = failed.response.error;
        this.#fail(error?.code ?? "", error?.message || "the response failed", sink);
        return;
      }
      case "error": {
        const error = this.#read("error", json, sink);
        if (!error) return;
        const code = error.error?.code ?? error.code ?? error.error?.type ?? "";
        this.#fail(code, error.error?.message ?? error.message ?? "provider error", sink);
        return;
      }
    }
  }

  #read<T extends EventType>(type: T, json: unknown, sink: DecoderSink): EventOf<T> | undefined {
    // TypeScript cannot narrow the schema through the generic key; the map pairs each type with its own.
    const schema = EVENT_SCHEMAS[type] as unknown as z.ZodType<EventOf<T>>;
    return validChunk(schema, json, sink);
  }

  #itemAdded(added: EventOf<"response.output_item.added"> | undefined, sink: DecoderSink): void {
    if (added?.item.type !== "function_call") return;
    const call: Call = { index: this.#calls++, streamed: 0 };
    if (added.output_index != null) this.#byOutput.set(added.output_index, call);
    if (added.item.id) this.#byItem.set(added.item.id, call);
    sink.token({ $case: "toolCallDelta", value: { index: call.index, id: added.item.call_id ?? "", name: added.item.name ?? "", arguments: "" } });
    if (added.item.arguments) this.#arguments(call, added.item.arguments, sink);
  }

  #itemDone(done: EventOf<"response.output_item.done"> | undefined, sink: DecoderSink): void {
    if (done?.item.type !== "function_call") return;
    const call = this.#call({ output_index: done.output_index, item_id: done.item.id }, sink);
    if (call && done.item.arguments) this.#arguments(call, done.item.arguments.slice(call.streamed), sink);
  }

  /** The call a delta or done event is about; an event about a call never added is malformed. */
  #call(event: { output_index?: number | null | undefined; item_id?: string | null | undefined }, sink: DecoderSink): Call | undefined {
    const call =
      (event.output_index != null ? this.#byOutput.get(event.output_index) : undefined) ?? (event.item_id ? this.#byItem.get(event.item_id) : undefined);
    if (!call) sink.malformed("a function call event for an item that was never added");
    return call;
  }

  #arguments(call: Call, partial: string, sink: DecoderSink): void {
    if (partial === "") return;
    call.streamed += partial.length;
    sink.token({ $case: "toolCallDelta", value: { index: call.index, id: "", name: "", arguments: partial } });
  }

  #usage(usage: z.infer<typeof UsageSchema> | null | undefined, sink: DecoderSink): void {
    if (!usage) return;
    const value: Usage = {
      inputTokens: usage.input_tokens,
      outputTokens: usage.output_tokens,
      cachedInputTokens: usage.input_tokens_details?.cached_tokens ?? 0,
      reasoningTokens: usage.output_tokens_details?.reasoning_tokens ?? 0,
    };
    sink.usage(value);
  }

  #fail(upstreamCode: string, message: string, sink: DecoderSink): void {
    const { code, retry } = classifyResponsesError(upstreamCode, message);
    sink.fail(new ProviderError(code, `provider reported an error mid-stream: ${message}${upstreamCode ? ` (${upstreamCode})` : ""}`, { retry }));
  }
}
