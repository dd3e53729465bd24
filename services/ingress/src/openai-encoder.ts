/**
 * Encodes vocabulary events as OpenAI `chat.completion.chunk` objects, and
 * folds a whole stream into one `chat.completion`. One encoder, used by every
 * wire framing (SSE, NDJSON); pure.
 */
import { FailoverMode, failoverJson, openAIErrorBody, openAIFinishReason, type StreamEvent, type Usage } from "@runnel/shared";

export interface ChunkContext {
  /** `chatcmpl-<stream id>`. */
  readonly id: string;
  /** Unix seconds. */
  readonly created: number;
  /** The model named in chunks: the public model until the worker reports what serves it. */
  model: string;
  /** The chunk envelope up to the delta, built once per model (the per-token path only appends). */
  prefix?: string | undefined;
  /** Usage from a `usage` event before `done` (what older workers sent), written after the finish chunk. */
  pendingUsage?: Usage | undefined;
}

/** OpenAI's usage object of ours. */
export function openAIUsage(usage: Usage) {
  return {
    prompt_tokens: usage.inputTokens,
    completion_tokens: usage.outputTokens,
    total_tokens: usage.inputTokens + usage.outputTokens,
    prompt_tokens_details: { cached_tokens: usage.cachedInputTokens },
    completion_tokens_details: { reasoning_tokens: usage.reasoningTokens },
  };
}

/**
 * One `chat.completion.chunk` with a single choice. Every dynamic value goes
 * through JSON.stringify; only the constant envelope is cached.
 */
function chunk(context: ChunkContext, deltaJson: string, finishReason: string | null = null): string {
  context.prefix ??= `{"id":${JSON.stringify(context.id)},"object":"chat.completion.chunk","created":${context.created},"model":${JSON.stringify(context.model)},"choices":[{"index":0,"delta":`;
  return `${context.prefix}${deltaJson},"finish_reason":${finishReason === null ? "null" : JSON.stringify(finishReason)}}]}`;
}

/**
 * The JSON payload of one event, or the error object for an error event.
 * Returns undefined for nothing to write (a `usage` event, held for the end).
 * For `done` it is the finish chunk; the usage chunk that follows it is
 * `endUsageChunk`.
 */
export function encodeChunk(context: ChunkContext, event: StreamEvent): string | undefined {
  const body = event.event;
  switch (body?.$case) {
    case "started":
      context.model = body.value.model || context.model;
      context.prefix = undefined;
      return chunk(context, '{"role":"assistant","content":""}');
    case "textDelta":
      return chunk(context, `{"content":${JSON.stringify(body.value.text)}}`);
    case "reasoningDelta":
      // The field DeepSeek, vLLM and most compatible clients read reasoning from.
      return chunk(context, `{"reasoning_content":${JSON.stringify(body.value.text)}}`);
    case "toolCallDelta": {
      const call: Record<string, unknown> = { index: body.value.index };
      if (body.value.id) {
        call.id = body.value.id;
        call.type = "function";
      }
      const fn: Record<string, string> = { arguments: body.value.arguments };
      if (body.value.name) fn.name = body.value.name;
      call.function = fn;
      return chunk(context, JSON.stringify({ tool_calls: [call] }));
    }
    case "usage":
      // Held: OpenAI sends usage in a last chunk after the finish chunk (usageChunk).
      context.pendingUsage = body.value;
      return undefined;
    case "failover":
      // The route changed: later chunks name the model now serving.
      if (body.value.to?.model) {
        context.model = body.value.to.model;
        context.prefix = undefined;
      }
      return JSON.stringify({
        id: context.id,
        object: "chat.completion.chunk",
        created: context.created,
        model: context.model,
        choices: [],
        runnel: { failover: failoverJson(body.value) },
      });
    case "done":
      return chunk(context, "{}", openAIFinishReason(body.value.finishReason));
    case "error":
      return JSON.stringify(openAIErrorBody(body.value.code, body.value.message));
    default:
      return undefined;
  }
}

/**
 * The chunk that follows the finish chunk of a `done` when the stream has
 * usage (the client asked for it): `choices: []` and `usage`, OpenAI's last
 * chunk before `[DONE]`. Undefined when there is none.
 */
export function endUsageChunk(context: ChunkContext, event: StreamEvent): string | undefined {
  const body = event.event;
  if (body?.$case !== "done") return undefined;
  const usage = body.value.usage ?? context.pendingUsage;
  if (!usage) return undefined;
  return JSON.stringify({
    id: context.id,
    object: "chat.completion.chunk",
    created: context.created,
    model: context.model,
    choices: [],
    usage: openAIUsage(usage),
  });
}

/**
 * Follows a route event the client does not get (it is before a resume
 * point): later chunks name the model it says serves, as the live chunks of
 * the same stream did.
 */
export function followRoute(context: ChunkContext, event: StreamEvent): void {
  const body = event.event;
  const model = body?.$case === "started" ? body.value.model : body?.$case === "failover" ? body.value.to?.model : undefined;
  if (model) {
    context.model = model;
    context.prefix = undefined;
  }
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
