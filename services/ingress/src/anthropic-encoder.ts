/**
 * Encodes vocabulary events as the Anthropic Messages API stream (event
 * values, which the SSE framer writes as `event: <type>\ndata: <json>\n\n`
 * through `anthropicEventJson`), and folds a whole stream into one
 * `message` object. Pure.
 *
 * The wire sequence is Anthropic's: `message_start`, then content blocks
 * (`content_block_start`, `content_block_delta`…, `content_block_stop`) one
 * at a time, indexed from 0 (a switch between text, thinking and a tool call
 * closes the open block and opens the next), then `message_delta` (stop
 * reason and usage) and `message_stop`. A failure is one `event: error` and
 * the end: never a `message_stop`. `ping` is the heartbeat.
 *
 * Usage comes at the end of our streams, so `message_start` reports zeros
 * and `message_delta` the real figures (Anthropic's `message_delta.usage` is
 * cumulative and may carry `input_tokens`; its SDKs take them from there).
 * Our `inputTokens` counts cache reads, as OpenAI's `prompt_tokens` does;
 * Anthropic's `input_tokens` does not, so they are reported apart.
 */
import { FailoverMode, FinishReason, failoverJson, type StreamEvent, type Usage } from "@runnel/shared/contracts";
import type { ErrorShape } from "./http-errors.js";
import { jsonWire, sseWire, type Wire } from "./wire.js";

/** Anthropic's `stop_reason` values this gateway produces. */
export type AnthropicStopReason = "end_turn" | "max_tokens" | "tool_use" | "refusal";

export function anthropicStopReason(reason: FinishReason): AnthropicStopReason {
  switch (reason) {
    case FinishReason.FINISH_REASON_LENGTH:
      return "max_tokens";
    case FinishReason.FINISH_REASON_TOOL_CALLS:
      return "tool_use";
    case FinishReason.FINISH_REASON_CONTENT_FILTER:
      return "refusal";
    default:
      return "end_turn";
  }
}

export type AnthropicErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "not_found_error"
  | "request_too_large"
  | "rate_limit_error"
  | "api_error"
  | "timeout_error"
  | "overloaded_error";

/**
 * The status and error type Anthropic would answer for one of our HTTP
 * statuses. Anthropic's set has no 502 or 503: capacity (503: queue full,
 * not ready, draining, no route) is its 529 `overloaded_error`, other server
 * failures its 500 `api_error`; a gateway timeout is its 504 `timeout_error`.
 * Other 4xx keep their status as `invalid_request_error`, as Anthropic does.
 */
export function anthropicError(httpStatus: number): { status: number; type: AnthropicErrorType } {
  switch (httpStatus) {
    case 400:
      return { status: 400, type: "invalid_request_error" };
    case 401:
      return { status: 401, type: "authentication_error" };
    case 403:
      return { status: 403, type: "permission_error" };
    case 404:
      return { status: 404, type: "not_found_error" };
    case 413:
      return { status: 413, type: "request_too_large" };
    case 429:
      return { status: 429, type: "rate_limit_error" };
    case 503:
    case 529:
      return { status: 529, type: "overloaded_error" };
    case 504:
      return { status: 504, type: "timeout_error" };
    default:
      return httpStatus >= 400 && httpStatus < 500 ? { status: httpStatus, type: "invalid_request_error" } : { status: 500, type: "api_error" };
  }
}

/** Anthropic's error body: `{"type":"error","error":{"type":…,"message":…}}`. */
export interface AnthropicErrorBody {
  type: "error";
  error: { type: AnthropicErrorType; message: string };
}

export function anthropicErrorBody(type: AnthropicErrorType, message: string): AnthropicErrorBody {
  return { type: "error", error: { type, message } };
}

/** Anthropic's error answer: its status and body, with the Runnel code in `x-runnel-error-code`. */
export const anthropicErrors: ErrorShape = (error) => {
  const { status, type } = anthropicError(error.httpStatus);
  return { status, headers: { "x-runnel-error-code": error.code }, body: anthropicErrorBody(type, error.message) };
};

/** Anthropic's usage object, from ours (see the file comment). */
export interface AnthropicUsage {
  input_tokens: number;
  output_tokens: number;
  cache_read_input_tokens: number;
}

export function anthropicUsage(usage: Usage): AnthropicUsage {
  return {
    input_tokens: Math.max(0, usage.inputTokens - usage.cachedInputTokens),
    output_tokens: usage.outputTokens,
    cache_read_input_tokens: usage.cachedInputTokens,
  };
}

/** The usage of `message_start` (zeros: usage comes at the end of our streams) and of a `message_delta` without any. */
const NO_USAGE = { input_tokens: 0, output_tokens: 0 } as const;

type BlockKind = "text" | "thinking" | "tool_use";

/** A content block as `content_block_start` opens it. */
export type AnthropicBlockStart =
  | { type: "text"; text: "" }
  | { type: "thinking"; thinking: ""; signature: "" }
  | { type: "tool_use"; id: string; name: string; input: Record<string, never> };

/** A `content_block_delta`'s delta. */
export type AnthropicDelta =
  | { type: "text_delta"; text: string }
  | { type: "thinking_delta"; thinking: string }
  | { type: "input_json_delta"; partial_json: string };

/** One event of Anthropic's stream (its `type` is also the SSE event name), properties in Anthropic's order. */
export type AnthropicStreamEvent =
  | {
      type: "message_start";
      message: {
        id: string;
        type: "message";
        role: "assistant";
        model: string;
        content: [];
        stop_reason: null;
        stop_sequence: null;
        usage: typeof NO_USAGE;
      };
    }
  | { type: "content_block_start"; index: number; content_block: AnthropicBlockStart }
  | { type: "content_block_delta"; index: number; delta: AnthropicDelta }
  | { type: "content_block_stop"; index: number }
  | {
      type: "message_delta";
      delta: { stop_reason: AnthropicStopReason; stop_sequence: null };
      usage: AnthropicUsage | typeof NO_USAGE;
    }
  | { type: "message_stop" }
  | { type: "ping" }
  | ({ type: "runnel_failover" } & Record<string, unknown>)
  | AnthropicErrorBody;

/** The heartbeat event. */
export const PING: AnthropicStreamEvent = { type: "ping" };

/**
 * The JSON text of an Anthropic stream event: the one place they are
 * serialised. Always `JSON.stringify(event)`; a content delta (every token)
 * is written by hand: stringifying each token's object took 4 times as long.
 */
export function anthropicEventJson(event: AnthropicStreamEvent): string {
  if (event.type !== "content_block_delta") return JSON.stringify(event);
  const delta = event.delta;
  switch (delta.type) {
    case "text_delta":
      return `{"type":"content_block_delta","index":${event.index},"delta":{"type":"text_delta","text":${JSON.stringify(delta.text)}}}`;
    case "thinking_delta":
      return `{"type":"content_block_delta","index":${event.index},"delta":{"type":"thinking_delta","thinking":${JSON.stringify(delta.thinking)}}}`;
    case "input_json_delta":
      return `{"type":"content_block_delta","index":${event.index},"delta":{"type":"input_json_delta","partial_json":${JSON.stringify(delta.partial_json)}}}`;
  }
}

/**
 * Whether the last of an event's values carries its seq as the SSE id (the
 * resume position): every event's but `started`'s, whose `message_start`
 * may as well come from a heartbeat.
 */
export function anthropicPositioned(event: StreamEvent): boolean {
  return event.event?.$case !== "started";
}

/**
 * Turns one stream's events, in order, into Anthropic stream events. One per
 * stream; holds the open block and the usage seen so far.
 */
export class AnthropicStreamEncoder {
  readonly #id: string;
  readonly #streamId: string;
  #model: string;
  #started = false;
  #ended = false;
  /** Index of the next content block. */
  #nextIndex = 0;
  #open: BlockKind | undefined;
  /** Content block index of each tool call, by the provider's index. */
  readonly #toolBlocks = new Map<number, number>();
  #usage: Usage | undefined;

  /** `streamId` names the message (`msg_<streamId>`); `model` is the public model until the worker reports the one serving. */
  constructor(streamId: string, model: string) {
    this.#streamId = streamId;
    this.#id = `msg_${streamId}`;
    this.#model = model;
  }

  /** True once `message_start` was produced. */
  get started(): boolean {
    return this.#started;
  }

  /** `message_start`, if it was not produced yet (a heartbeat before the first event); otherwise nothing. */
  start(): AnthropicStreamEvent[] {
    const out: AnthropicStreamEvent[] = [];
    this.#start(out);
    return out;
  }

  /** The events of one vocabulary event ([] when it writes nothing, like usage, which waits for the end). */
  encode(event: StreamEvent): AnthropicStreamEvent[] {
    const out: AnthropicStreamEvent[] = [];
    if (this.#ended) return out;
    const body = event.event;
    switch (body?.$case) {
      case "started":
        if (!this.#started && body.value.model) this.#model = body.value.model;
        this.#start(out);
        break;
      case "textDelta":
        return this.#delta(out, "text", { type: "text_delta", text: body.value.text });
      case "reasoningDelta":
        return this.#delta(out, "thinking", { type: "thinking_delta", thinking: body.value.text });
      case "toolCallDelta": {
        const { index, id, name, arguments: partial } = body.value;
        this.#start(out);
        let block = this.#toolBlocks.get(index);
        if (block === undefined) {
          this.#close(out);
          block = this.#nextIndex++;
          this.#toolBlocks.set(index, block);
          this.#open = "tool_use";
          const toolId = id || `toolu_${this.#streamId}_${index}`;
          out.push({ type: "content_block_start", index: block, content_block: { type: "tool_use", id: toolId, name, input: {} } });
        }
        // A fragment of a call whose block was closed (fragments interleaved across calls, which no adapter produces)
        // still goes to that call's block: Anthropic clients accumulate by index.
        if (partial) out.push({ type: "content_block_delta", index: block, delta: { type: "input_json_delta", partial_json: partial } });
        break;
      }
      case "usage":
        this.#usage = body.value;
        break;
      case "failover":
        // Closes the open block: whatever follows (a restart, a continuation) starts a new one.
        this.#start(out);
        this.#close(out);
        out.push({ type: "runnel_failover", ...failoverJson(body.value) });
        break;
      case "done": {
        this.#ended = true;
        this.#start(out);
        this.#close(out);
        const usage = body.value.usage ?? this.#usage;
        out.push(
          {
            type: "message_delta",
            delta: { stop_reason: anthropicStopReason(body.value.finishReason), stop_sequence: null },
            usage: usage ? anthropicUsage(usage) : NO_USAGE,
          },
          { type: "message_stop" },
        );
        break;
      }
      case "error":
        this.#ended = true;
        out.push(anthropicErrorBody(anthropicError(body.value.httpStatus).type, body.value.message));
        break;
      default:
        break;
    }
    return out;
  }

  /** A text or thinking delta: into the open block of its kind (the per-token case, one event alone), or a new block. */
  #delta(out: AnthropicStreamEvent[], kind: "text" | "thinking", delta: AnthropicDelta): AnthropicStreamEvent[] {
    if (this.#open === kind) return [{ type: "content_block_delta", index: this.#nextIndex - 1, delta }];
    this.#start(out);
    this.#switchTo(out, kind);
    out.push({ type: "content_block_delta", index: this.#nextIndex - 1, delta });
    return out;
  }

  #start(out: AnthropicStreamEvent[]): void {
    if (this.#started) return;
    this.#started = true;
    out.push({
      type: "message_start",
      message: { id: this.#id, type: "message", role: "assistant", model: this.#model, content: [], stop_reason: null, stop_sequence: null, usage: NO_USAGE },
    });
  }

  /** Closes the open block unless it is of `kind` (tool calls switch by index, not here), and opens a block of `kind`. */
  #switchTo(out: AnthropicStreamEvent[], kind: "text" | "thinking"): void {
    if (this.#open === kind) return;
    this.#close(out);
    this.#open = kind;
    const index = this.#nextIndex++;
    const block: AnthropicBlockStart = kind === "text" ? { type: "text", text: "" } : { type: "thinking", thinking: "", signature: "" };
    out.push({ type: "content_block_start", index, content_block: block });
  }

  #close(out: AnthropicStreamEvent[]): void {
    if (this.#open === undefined) return;
    this.#open = undefined;
    out.push({ type: "content_block_stop", index: this.#nextIndex - 1 });
  }
}

/** The Anthropic Messages API: its SSE event sequence with `ping` heartbeats, or one `message`. */
export function anthropicWire(streaming: boolean, streamId: string, model: string): Wire {
  if (!streaming) return jsonWire(new MessageAccumulator(streamId, model), anthropicErrors);
  const encoder = new AnthropicStreamEncoder(streamId, model);
  return sseWire({
    encode: (event) => encoder.encode(event),
    json: anthropicEventJson,
    name: (value) => value.type,
    positioned: anthropicPositioned,
    // A ping comes after message_start, as Anthropic's stream always begins with it.
    heartbeat: () => [...encoder.start(), PING],
    errors: anthropicErrors,
  });
}

/** A content block of a non-streaming `message`. */
export type AnthropicContentBlock =
  | { type: "text"; text: string }
  | { type: "thinking"; thinking: string; signature: string }
  | { type: "tool_use"; id: string; name: string; input: Record<string, unknown> };

/** Anthropic's non-streaming response. */
export interface AnthropicMessage {
  id: string;
  type: "message";
  role: "assistant";
  model: string;
  content: AnthropicContentBlock[];
  stop_reason: AnthropicStopReason;
  stop_sequence: null;
  usage: AnthropicUsage;
}

type Building =
  | { type: "text"; text: string }
  | { type: "thinking"; thinking: string }
  | { type: "tool_use"; index: number; id: string; name: string; arguments: string };

/** Folds a stream's events into one non-streaming `message`, with the same block boundaries the stream would have. */
export class MessageAccumulator {
  readonly #streamId: string;
  #model: string;
  readonly #blocks: Building[] = [];
  readonly #tools = new Map<number, Extract<Building, { type: "tool_use" }>>();
  #stop: AnthropicStopReason = "end_turn";
  #usage: Usage | undefined;

  constructor(streamId: string, model: string) {
    this.#streamId = streamId;
    this.#model = model;
  }

  add(event: StreamEvent): void {
    const body = event.event;
    const last = this.#blocks.at(-1);
    switch (body?.$case) {
      case "started":
        this.#model = body.value.model || this.#model;
        break;
      case "textDelta":
        if (last?.type === "text") last.text += body.value.text;
        else this.#blocks.push({ type: "text", text: body.value.text });
        break;
      case "reasoningDelta":
        if (last?.type === "thinking") last.thinking += body.value.text;
        else this.#blocks.push({ type: "thinking", thinking: body.value.text });
        break;
      case "toolCallDelta": {
        const existing = this.#tools.get(body.value.index);
        if (existing) {
          existing.id ||= body.value.id;
          existing.name ||= body.value.name;
          existing.arguments += body.value.arguments;
          break;
        }
        const call = { type: "tool_use" as const, index: body.value.index, id: body.value.id, name: body.value.name, arguments: body.value.arguments };
        this.#tools.set(body.value.index, call);
        this.#blocks.push(call);
        break;
      }
      case "usage":
        this.#usage = body.value;
        break;
      case "failover":
        if (body.value.to?.model) this.#model = body.value.to.model;
        if (body.value.mode === FailoverMode.FAILOVER_MODE_RESTART) {
          // What came before is discarded: the answer is the next route's alone.
          this.#blocks.length = 0;
          this.#tools.clear();
        }
        break;
      case "done":
        this.#stop = anthropicStopReason(body.value.finishReason);
        if (body.value.usage) this.#usage = body.value.usage;
        break;
      default:
        break;
    }
  }

  result(): AnthropicMessage {
    return {
      id: `msg_${this.#streamId}`,
      type: "message",
      role: "assistant",
      model: this.#model,
      content: this.#blocks.map((block): AnthropicContentBlock => {
        if (block.type === "text") return { type: "text", text: block.text };
        if (block.type === "thinking") return { type: "thinking", thinking: block.thinking, signature: "" };
        return { type: "tool_use", id: block.id || `toolu_${this.#streamId}_${block.index}`, name: block.name, input: toolInput(block.arguments) };
      }),
      stop_reason: this.#stop,
      stop_sequence: null,
      usage: this.#usage ? anthropicUsage(this.#usage) : { input_tokens: 0, output_tokens: 0, cache_read_input_tokens: 0 },
    };
  }
}

/**
 * A tool call's arguments as the object Anthropic's `input` is. Arguments
 * that are not a JSON object (a call cut off by max_tokens) give `{}`; the
 * stop reason tells the client the call is incomplete.
 */
function toolInput(json: string): Record<string, unknown> {
  if (json.trim() === "") return {};
  try {
    const value: unknown = JSON.parse(json);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
