/**
 * Encodes vocabulary events as OpenAI `chat.completion.chunk` values, and
 * folds a whole stream into one `chat.completion`. One encoder, used by
 * every transport that carries chunks (SSE, NDJSON, long-poll, WebSocket);
 * `ChunkJson` is the one place its values become JSON text. Pure.
 */

import type { StoredRecord } from "@runnel/shared/contracts";
import { FailoverMode, failoverJson, type OpenAIErrorBody, openAIErrorBody, openAIFinishReason, type StreamEvent, type Usage } from "@runnel/shared/contracts";
import { openAIErrors } from "./http-errors.js";
import { jsonWire, NO_VALUES, ndjsonWire, type StreamEncoding, sseWire, type Wire } from "./wire.js";

export interface ChunkContext {
  /** `chatcmpl-<stream id>`. */
  readonly id: string;
  /** Unix seconds. */
  readonly created: number;
  /** The model named in chunks: the public model until the worker reports what serves it. */
  model: string;
  /** Usage from a `usage` event before `done` (what older workers sent), written after the finish chunk. */
  pendingUsage?: Usage | undefined;
}

/** The chunk context of a stream read again from a position (resume, polling): named as when it was opened. */
export function resumedChunkContext(streamId: string, record: StoredRecord | undefined): ChunkContext {
  return {
    id: `chatcmpl-${streamId}`,
    created: Math.floor((record?.state.createdAtMs ?? Date.now()) / 1000),
    model: record?.state.model ?? "",
  };
}

/** OpenAI's usage object. */
export interface OpenAIUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
  completion_tokens_details: { reasoning_tokens: number };
}

/** OpenAI's usage object of ours. */
export function openAIUsage(usage: Usage): OpenAIUsage {
  return {
    prompt_tokens: usage.inputTokens,
    completion_tokens: usage.outputTokens,
    total_tokens: usage.inputTokens + usage.outputTokens,
    prompt_tokens_details: { cached_tokens: usage.cachedInputTokens },
    completion_tokens_details: { reasoning_tokens: usage.reasoningTokens },
  };
}

/** One fragment of a tool call, as OpenAI streams it. */
export interface ToolCallFragment {
  index: number;
  id?: string;
  type?: "function";
  function: { arguments: string; name?: string };
}

/** A chunk's delta: one of these fields at a time, as the encoder makes them (`{}` for the finish chunk). */
export interface ChunkDelta {
  role?: "assistant";
  content?: string;
  reasoning_content?: string;
  tool_calls?: ToolCallFragment[];
}

export interface ChunkChoice {
  index: number;
  delta: ChunkDelta;
  finish_reason: string | null;
}

/** A `chat.completion.chunk`: one choice, or none with `usage` (the usage chunk) or `runnel.failover` (an announcement). */
export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: ChunkChoice[];
  usage?: OpenAIUsage;
  runnel?: { failover: Record<string, unknown> };
}

/** What one event becomes on the OpenAI API: a chunk, or the error object of an error event. */
export type OpenAIStreamValue = ChatCompletionChunk | OpenAIErrorBody;

/** A chunk with a single choice, its properties in OpenAI's order. */
function chunk(context: ChunkContext, delta: ChunkDelta, finishReason: string | null = null): ChatCompletionChunk {
  return {
    id: context.id,
    object: "chat.completion.chunk",
    created: context.created,
    model: context.model,
    choices: [{ index: 0, delta, finish_reason: finishReason }],
  };
}

/** A chunk without choices, carrying `extra` (usage, a failover announcement). */
function bareChunk(context: ChunkContext, extra: Pick<ChatCompletionChunk, "usage" | "runnel">): ChatCompletionChunk {
  return { id: context.id, object: "chat.completion.chunk", created: context.created, model: context.model, choices: [], ...extra };
}

/**
 * The value of one event: a chunk, or the error object for an error event.
 * Undefined for nothing to write (a `usage` event, held for the end). For
 * `done` it is the finish chunk; the usage chunk that follows it is
 * `endUsageChunk`.
 */
export function encodeChunk(context: ChunkContext, event: StreamEvent): OpenAIStreamValue | undefined {
  const body = event.event;
  switch (body?.$case) {
    case "started":
      context.model = body.value.model || context.model;
      return chunk(context, { role: "assistant", content: "" });
    case "textDelta":
      return chunk(context, { content: body.value.text });
    case "reasoningDelta":
      // The field DeepSeek, vLLM and most compatible clients read reasoning from.
      return chunk(context, { reasoning_content: body.value.text });
    case "toolCallDelta": {
      const { index, id, name, arguments: partial } = body.value;
      const fn = name ? { arguments: partial, name } : { arguments: partial };
      // The id and type come with a call's first fragment only.
      const call: ToolCallFragment = id ? { index, id, type: "function", function: fn } : { index, function: fn };
      return chunk(context, { tool_calls: [call] });
    }
    case "usage":
      // Held: OpenAI sends usage in a last chunk after the finish chunk (endUsageChunk).
      context.pendingUsage = body.value;
      return undefined;
    case "failover":
      // The route changed: this chunk and later ones name the model now serving.
      if (body.value.to?.model) context.model = body.value.to.model;
      return bareChunk(context, { runnel: { failover: failoverJson(body.value) } });
    case "done":
      return chunk(context, {}, openAIFinishReason(body.value.finishReason));
    case "error":
      return openAIErrorBody(body.value.code, body.value.message);
    default:
      return undefined;
  }
}

/** The usage a `done` reports: its own, or that of an earlier `usage` event (older workers); undefined without. */
export function doneUsage(context: ChunkContext, event: StreamEvent): Usage | undefined {
  const body = event.event;
  return body?.$case === "done" ? (body.value.usage ?? context.pendingUsage) : undefined;
}

/**
 * The chunk that follows the finish chunk of a `done` when the stream has
 * usage (the client asked for it): `choices: []` and `usage`, OpenAI's last
 * chunk before `[DONE]`. Undefined when there is none.
 */
export function endUsageChunk(context: ChunkContext, event: StreamEvent): ChatCompletionChunk | undefined {
  const usage = doneUsage(context, event);
  return usage === undefined ? undefined : bareChunk(context, { usage: openAIUsage(usage) });
}

/**
 * The JSON text of the OpenAI values of one stream: the one place they are
 * serialised. The text is always `JSON.stringify(value)`; a chunk with one
 * choice (every token) takes a fast path, its constant envelope cached as
 * text and only the delta encoded: stringifying each token's whole object
 * took 7 times as long (0.88 s against 0.12 s for a million text deltas on
 * the 2-core test machine). One per stream: the cache follows its model.
 */
export class ChunkJson {
  #id = "";
  #created = -1;
  #model = "";
  #prefix = "";

  text(value: OpenAIStreamValue): string {
    if ("error" in value) return JSON.stringify(value);
    const choice = value.choices.length === 1 && value.usage === undefined && value.runnel === undefined ? value.choices[0] : undefined;
    if (choice === undefined || choice.index !== 0) return JSON.stringify(value);
    if (value.id !== this.#id || value.model !== this.#model || value.created !== this.#created) {
      this.#id = value.id;
      this.#model = value.model;
      this.#created = value.created;
      this.#prefix = `{"id":${JSON.stringify(value.id)},"object":"chat.completion.chunk","created":${JSON.stringify(value.created)},"model":${JSON.stringify(value.model)},"choices":[{"index":0,"delta":`;
    }
    const finish = choice.finish_reason === null ? "null" : JSON.stringify(choice.finish_reason);
    return `${this.#prefix}${deltaJson(choice.delta)},"finish_reason":${finish}}]}`;
  }
}

/** A delta's JSON: the two per-token shapes (content, reasoning) by hand, every other through JSON.stringify. */
function deltaJson(delta: ChunkDelta): string {
  if (delta.role === undefined && delta.tool_calls === undefined) {
    if (delta.reasoning_content === undefined && delta.content !== undefined) return `{"content":${JSON.stringify(delta.content)}}`;
    if (delta.content === undefined && delta.reasoning_content !== undefined) return `{"reasoning_content":${JSON.stringify(delta.reasoning_content)}}`;
  }
  return JSON.stringify(delta);
}

/** The chunks of one stream: each event's values (the finish chunk and the usage chunk for `done`) and their JSON. */
export function openAIEncoding(context: ChunkContext): StreamEncoding<OpenAIStreamValue> {
  const serializer = new ChunkJson();
  return {
    encode: (event) => {
      const value = encodeChunk(context, event);
      if (value === undefined) return NO_VALUES;
      // The finish chunk, then (when the client asked) the usage chunk: OpenAI's order. The done's id goes
      // on the last of the two, so a client cut between them resumes from before the done and gets both.
      const usage = endUsageChunk(context, event);
      return usage === undefined ? [value] : [value, usage];
    },
    json: (value) => serializer.text(value),
    errors: openAIErrors,
  };
}

/** OpenAI chat completions: SSE (`id: <seq>` + chunk, `[DONE]` after a success), NDJSON (a chunk per line) or one `chat.completion`. */
export function openAIWire(format: "sse" | "ndjson" | "json", context: ChunkContext): Wire {
  if (format === "json") return jsonWire(new CompletionAccumulator(context), openAIErrors);
  const encoding = openAIEncoding(context);
  return format === "sse" ? sseWire({ ...encoding, trailer: "data: [DONE]\n\n" }) : ndjsonWire(encoding);
}

/**
 * Follows a route event the client does not get (it is before a resume
 * point): later chunks name the model it says serves, as the live chunks of
 * the same stream did.
 */
export function followRoute(context: ChunkContext, event: StreamEvent): void {
  const body = event.event;
  const model = body?.$case === "started" ? body.value.model : body?.$case === "failover" ? body.value.to?.model : undefined;
  if (model) context.model = model;
}

/** Folds a stream's events into one non-streaming `chat.completion`. */
export class CompletionAccumulator {
  #text = "";
  #reasoning = "";
  #finish = "stop";
  #usage: Usage | undefined;
  /** Tool calls by the provider's index (sparse and unbounded in principle, so a Map). */
  readonly #tools = new Map<number, { id: string; name: string; arguments: string }>();
  readonly #failovers: Record<string, unknown>[] = [];

  constructor(readonly context: ChunkContext) {}

  add(event: StreamEvent): void {
    const body = event.event;
    switch (body?.$case) {
      case "started":
        this.context.model = body.value.model || this.context.model;
        break;
      case "textDelta":
        this.#text += body.value.text;
        break;
      case "reasoningDelta":
        this.#reasoning += body.value.text;
        break;
      case "toolCallDelta": {
        const existing = this.#tools.get(body.value.index) ?? { id: "", name: "", arguments: "" };
        existing.id ||= body.value.id;
        existing.name ||= body.value.name;
        existing.arguments += body.value.arguments;
        this.#tools.set(body.value.index, existing);
        break;
      }
      case "usage":
        this.#usage = body.value;
        break;
      case "failover":
        this.#failovers.push(failoverJson(body.value));
        if (body.value.to?.model) this.context.model = body.value.to.model;
        if (body.value.mode === FailoverMode.FAILOVER_MODE_RESTART) {
          // What came before is discarded: the answer is the next route's alone.
          this.#text = "";
          this.#reasoning = "";
          this.#tools.clear();
        }
        break;
      case "done":
        this.#finish = openAIFinishReason(body.value.finishReason);
        if (body.value.usage) this.#usage = body.value.usage;
        break;
      default:
        break;
    }
  }

  result(): Record<string, unknown> {
    const message: Record<string, unknown> = { role: "assistant", content: this.#text.length > 0 || this.#tools.size === 0 ? this.#text : null };
    if (this.#reasoning) message.reasoning_content = this.#reasoning;
    const tools = [...this.#tools.entries()].sort(([a], [b]) => a - b).map(([, call]) => call);
    if (tools.length > 0) message.tool_calls = tools.map((t) => ({ id: t.id, type: "function", function: { name: t.name, arguments: t.arguments } }));
    return {
      id: this.context.id,
      object: "chat.completion",
      created: this.context.created,
      model: this.context.model,
      choices: [{ index: 0, message, finish_reason: this.#finish, logprobs: null }],
      usage: this.#usage ? openAIUsage(this.#usage) : null,
      ...(this.#failovers.length > 0 ? { runnel: { failovers: this.#failovers } } : {}),
    };
  }
}
