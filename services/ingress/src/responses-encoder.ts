/**
 * Encodes vocabulary events as the OpenAI Responses API stream, and folds a
 * stream into the Response object. Pure: the events are objects; `sseFrame`
 * is the one place that serialises them. docs/responses-api.md has the wire
 * shapes, the numbering rule and the failover extension.
 *
 * The sequence is OpenAI's: `response.created` and `response.in_progress`,
 * then output items one at a time, each opened (`response.output_item.added`,
 * its part added), filled (deltas) and closed (text / part / item done): a
 * `message` item for text, a `reasoning` item with a summary part for
 * reasoning, a `function_call` item per tool call. A switch of kind closes
 * the open item. The end is one of `response.completed`, `response.incomplete`
 * (a length or content-filter finish) or `response.failed` followed by an
 * `error` event (a failure): never `response.completed` after a failure.
 *
 * **Sequence numbers.** The Responses stream of a Runnel stream is this
 * encoding of its vocabulary events in `seq` order from seq 1, and an
 * event's `sequence_number` is its 0-based position in that encoding. The
 * encoding reads nothing but the events and a context fixed when the
 * response was created (its id, `created_at`, the model asked for, the
 * request's echoed settings), so every replica that encodes the same events
 * produces the same events with the same numbers. A client resuming after N
 * (`starting_after=N`) gets the events numbered above N: an encoder built
 * with `startingAfter: N` encodes from seq 1 and returns only those. It has
 * to start from seq 1 in any case: the `done` events repeat the whole text.
 */
import { ERRORS, type Failover, FailoverMode, FinishReason, failoverJson, isErrorCode, type StreamEvent, type Usage } from "@runnel/shared/contracts";

/** The request's settings a Response object repeats (responses-request.ts `responseEcho` builds it). Plain JSON. */
export interface ResponseEcho {
  readonly background: boolean;
  readonly instructions: string | null;
  readonly max_output_tokens: number | null;
  readonly max_tool_calls: number | null;
  readonly metadata: Readonly<Record<string, string>>;
  readonly parallel_tool_calls: boolean;
  readonly previous_response_id: string | null;
  readonly reasoning: { readonly effort: string | null; readonly summary: string | null };
  readonly store: boolean;
  readonly temperature: number | null;
  readonly text: Readonly<Record<string, unknown>>;
  readonly tool_choice: unknown;
  readonly tools: ReadonlyArray<Readonly<Record<string, unknown>>>;
  readonly top_p: number | null;
  readonly truncation: "disabled";
  readonly user: string | null;
}

/** What a response is, beside its events: fixed when it was created, the same on every replica. */
export interface ResponsesContext {
  /** The Runnel stream: the response is `resp_<streamId>`, its items `msg_<streamId>_<output index>` and so on. */
  readonly streamId: string;
  /** Unix seconds of the response's creation (from the job, never a replica's clock). */
  readonly createdAt: number;
  /** The model the client asked for; objects after `started` name the upstream model serving it. */
  readonly model: string;
  readonly echo: ResponseEcho;
}

export type ResponseStatus = "in_progress" | "completed" | "incomplete" | "failed" | "cancelled";

/** One Responses stream event: `type`, `sequence_number`, then the type's fields. */
export interface ResponsesEvent {
  readonly type: string;
  readonly sequence_number: number;
  readonly [field: string]: unknown;
}

/** The event type of the failover announcement (docs/responses-api.md, "Failover"). */
export const FAILOVER_EVENT = "runnel:failover";

/** One SSE frame: `event: <type>` and the event as JSON, OpenAI's framing. The one place the events become text. */
export function sseFrame(event: ResponsesEvent): string {
  return `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/** The heartbeat: an SSE comment, which every SSE client (the SDKs included) skips. */
export const HEARTBEAT_FRAME = ": keep-alive\n\n";

/** OpenAI's usage object of ours. */
export function responsesUsage(usage: Usage) {
  return {
    input_tokens: usage.inputTokens,
    input_tokens_details: { cached_tokens: usage.cachedInputTokens },
    output_tokens: usage.outputTokens,
    output_tokens_details: { reasoning_tokens: usage.reasoningTokens },
    total_tokens: usage.inputTokens + usage.outputTokens,
  };
}

/**
 * The `response.error.code` of a Runnel code, on the set OpenAI's Response
 * object uses (its SDKs type it as an enum). The Runnel code itself is in the
 * `error` event and in the object's `runnel.error_code`.
 */
export function responseErrorCode(code: string): "rate_limit_exceeded" | "invalid_prompt" | "server_error" {
  switch (code) {
    case "RUNNEL_ERR_PROVIDER_RATE_LIMITED":
      return "rate_limit_exceeded";
    case "RUNNEL_ERR_INVALID_REQUEST":
    case "RUNNEL_ERR_PROVIDER_BAD_REQUEST":
    case "RUNNEL_ERR_CONTEXT_LENGTH":
    case "RUNNEL_ERR_CONTENT_POLICY":
      return "invalid_prompt";
    default:
      return "server_error";
  }
}

type ItemStatus = "in_progress" | "completed" | "incomplete";

interface MessageItem {
  readonly kind: "message";
  readonly outputIndex: number;
  readonly id: string;
  text: string;
  status: ItemStatus;
  discarded: boolean;
}

interface ReasoningItem {
  readonly kind: "reasoning";
  readonly outputIndex: number;
  readonly id: string;
  text: string;
  status: ItemStatus;
  discarded: boolean;
}

interface FunctionCallItem {
  readonly kind: "function_call";
  readonly outputIndex: number;
  readonly id: string;
  readonly callId: string;
  readonly name: string;
  arguments: string;
  status: ItemStatus;
  discarded: boolean;
}

type Item = MessageItem | ReasoningItem | FunctionCallItem;

const outputTextPart = (text: string) => ({ type: "output_text", annotations: [], logprobs: [], text });
const summaryPart = (text: string) => ({ type: "summary_text", text });

/** An output item as OpenAI renders it (a fresh object every time: SDKs mutate what they are given). */
function renderItem(item: Item, opening = false): Record<string, unknown> {
  switch (item.kind) {
    case "message":
      return { id: item.id, type: "message", status: item.status, content: opening ? [] : [outputTextPart(item.text)], role: "assistant" };
    case "reasoning":
      // OpenAI's reasoning items carry no status.
      return { id: item.id, type: "reasoning", summary: opening ? [] : [summaryPart(item.text)] };
    case "function_call":
      return { id: item.id, type: "function_call", status: item.status, arguments: item.arguments, call_id: item.callId, name: item.name };
  }
}

export interface EncoderOptions {
  /** Return only the events numbered above this (a resume's `starting_after`); the rest are encoded and dropped. */
  readonly startingAfter?: number;
}

/**
 * Turns one stream's vocabulary events, in `seq` order from seq 1, into
 * Responses events, and keeps the Response they describe. One per stream
 * and reader.
 */
export class ResponsesStreamEncoder {
  readonly #context: ResponsesContext;
  readonly #startingAfter: number;
  #next = 0;
  #started = false;
  #ended = false;
  #model: string;
  #status: ResponseStatus = "in_progress";
  #error: { code: string; message: string } | null = null;
  #errorCode: string | undefined;
  #incomplete: { reason: "max_output_tokens" | "content_filter" } | null = null;
  #usage: Usage | undefined;
  /** Every item the stream opened, by output index (discarded ones included: clients index their snapshot so). */
  readonly #items: Item[] = [];
  #open: Item | undefined;
  /** Function-call items by the vocabulary's tool index. */
  readonly #tools = new Map<number, FunctionCallItem>();
  readonly #failovers: Record<string, unknown>[] = [];

  constructor(context: ResponsesContext, options: EncoderOptions = {}) {
    this.#context = context;
    this.#model = context.model;
    this.#startingAfter = options.startingAfter ?? -1;
  }

  /** True once the stream ended (completed, incomplete or failed): nothing more is encoded. */
  get ended(): boolean {
    return this.#ended;
  }

  /** The sequence number of the last event encoded (returned or not); -1 before any. */
  get lastSequenceNumber(): number {
    return this.#next - 1;
  }

  /**
   * `response.created` and `response.in_progress`, unless already produced
   * ("": nothing). They depend on the context alone, so the wire may send
   * them before the first vocabulary event (at once, or on the first
   * heartbeat) without changing any number; `encode` produces them first otherwise.
   */
  start(): ResponsesEvent[] {
    const out: ResponsesEvent[] = [];
    this.#start(out);
    return out;
  }

  /** The events of one vocabulary event ([] for those that write nothing, like `started` or `usage`). */
  encode(event: StreamEvent): ResponsesEvent[] {
    const out: ResponsesEvent[] = [];
    if (this.#ended) return out;
    this.#start(out);
    const body = event.event;
    switch (body?.$case) {
      case "started":
        if (body.value.model) this.#model = body.value.model;
        break;
      case "textDelta":
        if (body.value.text === "") break;
        this.#delta(out, "message", body.value.text);
        break;
      case "reasoningDelta":
        if (body.value.text === "") break;
        this.#delta(out, "reasoning", body.value.text);
        break;
      case "toolCallDelta":
        this.#toolDelta(out, body.value.index, body.value.id, body.value.name, body.value.arguments);
        break;
      case "usage":
        this.#usage = body.value;
        break;
      case "failover":
        this.#failover(out, body.value);
        break;
      case "done":
        if (body.value.usage) this.#usage = body.value.usage;
        this.#finish(out, body.value.finishReason);
        break;
      case "error":
        this.#fail(out, body.value.code, body.value.message);
        break;
      default:
        break;
    }
    return out;
  }

  /** A failure the ingress raised itself (a lost worker, a gap): the same ending as an error event. */
  fail(code: string, message: string): ResponsesEvent[] {
    const out: ResponsesEvent[] = [];
    if (this.#ended) return out;
    this.#start(out);
    this.#fail(out, code, message);
    return out;
  }

  /** The Response as it stands: in progress, or as the stream ended. A fresh object. */
  response(): Record<string, unknown> {
    const echo = this.#context.echo;
    const extension: Record<string, unknown> = {};
    if (this.#failovers.length > 0) extension.failovers = this.#failovers.map((failover) => ({ ...failover }));
    if (this.#errorCode !== undefined) extension.error_code = this.#errorCode;
    return {
      id: `resp_${this.#context.streamId}`,
      object: "response",
      created_at: this.#context.createdAt,
      status: this.#status,
      background: echo.background,
      error: this.#error === null ? null : { ...this.#error },
      incomplete_details: this.#incomplete === null ? null : { ...this.#incomplete },
      instructions: echo.instructions,
      max_output_tokens: echo.max_output_tokens,
      max_tool_calls: echo.max_tool_calls,
      model: this.#model,
      output: this.#items.filter((item) => !item.discarded).map((item) => renderItem(item)),
      parallel_tool_calls: echo.parallel_tool_calls,
      previous_response_id: echo.previous_response_id,
      reasoning: { ...echo.reasoning },
      store: echo.store,
      temperature: echo.temperature,
      text: structuredClone(echo.text),
      tool_choice: structuredClone(echo.tool_choice),
      tools: structuredClone(echo.tools),
      top_p: echo.top_p,
      truncation: echo.truncation,
      usage: this.#usage ? responsesUsage(this.#usage) : null,
      user: echo.user,
      metadata: { ...echo.metadata },
      ...(Object.keys(extension).length > 0 ? { runnel: extension } : {}),
    };
  }

  #emit(out: ResponsesEvent[], type: string, fields: Record<string, unknown>): void {
    const sequence = this.#next++;
    if (sequence > this.#startingAfter) out.push({ type, sequence_number: sequence, ...fields });
  }

  #start(out: ResponsesEvent[]): void {
    if (this.#started) return;
    this.#started = true;
    // Built from the context alone (the model asked for), whenever they are produced.
    const opening = { ...this.response(), model: this.#context.model };
    this.#emit(out, "response.created", { response: opening });
    this.#emit(out, "response.in_progress", { response: structuredClone(opening) });
  }

  #itemId(prefix: string, outputIndex: number): string {
    return `${prefix}_${this.#context.streamId}_${outputIndex}`;
  }

  /** A text or reasoning delta: into the open item of that kind, or a new one (closing what is open). */
  #delta(out: ResponsesEvent[], kind: "message" | "reasoning", delta: string): void {
    const open = this.#open;
    let item: MessageItem | ReasoningItem;
    if (open !== undefined && open.kind === kind) item = open;
    else {
      this.#close(out, "completed");
      const outputIndex = this.#items.length;
      item = { kind, outputIndex, id: this.#itemId(kind === "message" ? "msg" : "rs", outputIndex), text: "", status: "in_progress", discarded: false };
      this.#items.push(item);
      this.#open = item;
      this.#emit(out, "response.output_item.added", { output_index: outputIndex, item: renderItem(item, true) });
      if (kind === "message") {
        this.#emit(out, "response.content_part.added", { item_id: item.id, output_index: outputIndex, content_index: 0, part: outputTextPart("") });
      } else {
        this.#emit(out, "response.reasoning_summary_part.added", { item_id: item.id, output_index: outputIndex, summary_index: 0, part: summaryPart("") });
      }
    }
    item.text += delta;
    if (kind === "message") {
      this.#emit(out, "response.output_text.delta", { item_id: item.id, output_index: item.outputIndex, content_index: 0, delta, logprobs: [] });
    } else {
      this.#emit(out, "response.reasoning_summary_text.delta", { item_id: item.id, output_index: item.outputIndex, summary_index: 0, delta });
    }
  }

  /**
   * A tool-call fragment: a new tool index opens a `function_call` item
   * (closing what is open) with the call's id and name; arguments go out as
   * deltas. A fragment of a call whose item was closed (fragments
   * interleaved across calls, which no adapter produces) still goes to that
   * call's item: clients accumulate by output index.
   */
  #toolDelta(out: ResponsesEvent[], index: number, id: string, name: string, partial: string): void {
    let item = this.#tools.get(index);
    if (item === undefined) {
      this.#close(out, "completed");
      const outputIndex = this.#items.length;
      item = {
        kind: "function_call",
        outputIndex,
        id: this.#itemId("fc", outputIndex),
        callId: id || `call_${this.#context.streamId}_${outputIndex}`,
        name,
        arguments: "",
        status: "in_progress",
        discarded: false,
      };
      this.#items.push(item);
      this.#tools.set(index, item);
      this.#open = item;
      this.#emit(out, "response.output_item.added", { output_index: outputIndex, item: renderItem(item, true) });
    }
    if (partial === "") return;
    item.arguments += partial;
    this.#emit(out, "response.function_call_arguments.delta", { item_id: item.id, output_index: item.outputIndex, delta: partial });
  }

  /** Closes the open item with its done events. */
  #close(out: ResponsesEvent[], status: ItemStatus): void {
    const item = this.#open;
    if (item === undefined) return;
    this.#open = undefined;
    item.status = status;
    const at = { item_id: item.id, output_index: item.outputIndex };
    switch (item.kind) {
      case "message":
        this.#emit(out, "response.output_text.done", { ...at, content_index: 0, text: item.text, logprobs: [] });
        this.#emit(out, "response.content_part.done", { ...at, content_index: 0, part: outputTextPart(item.text) });
        break;
      case "reasoning":
        this.#emit(out, "response.reasoning_summary_text.done", { ...at, summary_index: 0, text: item.text });
        this.#emit(out, "response.reasoning_summary_part.done", { ...at, summary_index: 0, part: summaryPart(item.text) });
        break;
      case "function_call":
        this.#emit(out, "response.function_call_arguments.done", { ...at, arguments: item.arguments, name: item.name });
        break;
    }
    this.#emit(out, "response.output_item.done", { output_index: item.outputIndex, item: renderItem(item) });
  }

  /**
   * The route changed. `restart`: what came is discarded, so the open item
   * is closed as incomplete and every item so far leaves the Response; the
   * next route's output opens new items, at the next output indexes.
   * `continue`: the next route continues the open item, which stays open.
   * Before the first token (`next_route`, `hedge`) there is nothing to
   * change. Each is announced by a `runnel:failover` event.
   */
  #failover(out: ResponsesEvent[], failover: Failover): void {
    if (failover.to?.model) this.#model = failover.to.model;
    const announcement = failoverJson(failover);
    this.#failovers.push(announcement);
    if (failover.mode === FailoverMode.FAILOVER_MODE_RESTART) {
      this.#close(out, "incomplete");
      for (const item of this.#items) item.discarded = true;
      this.#tools.clear();
    }
    this.#emit(out, FAILOVER_EVENT, { ...announcement });
  }

  #finish(out: ResponsesEvent[], reason: FinishReason): void {
    this.#ended = true;
    const incomplete =
      reason === FinishReason.FINISH_REASON_LENGTH ? "max_output_tokens" : reason === FinishReason.FINISH_REASON_CONTENT_FILTER ? "content_filter" : undefined;
    this.#close(out, incomplete === undefined ? "completed" : "incomplete");
    if (incomplete === undefined) {
      this.#status = "completed";
      this.#emit(out, "response.completed", { response: this.response() });
      return;
    }
    this.#status = "incomplete";
    this.#incomplete = { reason: incomplete };
    this.#emit(out, "response.incomplete", { response: this.response() });
  }

  /**
   * A failure: `response.failed` with the Response (status `failed`, or
   * `cancelled` for a cancel; open items incomplete, none closed), then an
   * `error` event, which makes OpenAI's SDKs raise an APIError. Nothing follows.
   */
  #fail(out: ResponsesEvent[], code: string, message: string): void {
    this.#ended = true;
    if (this.#open) this.#open.status = "incomplete";
    this.#open = undefined;
    const cancelled = code === "RUNNEL_ERR_CANCELLED";
    this.#status = cancelled ? "cancelled" : "failed";
    this.#error = cancelled ? null : { code: responseErrorCode(code), message };
    this.#errorCode = code;
    this.#emit(out, "response.failed", { response: this.response() });
    const type = isErrorCode(code) ? ERRORS[code].type : "server_error";
    // The documented fields at the top, and the `error` object OpenAI's API sends in practice (and the SDKs raise on).
    this.#emit(out, "error", { code, message, param: null, error: { type, code, message, param: null } });
  }
}

/**
 * Folds a stream's events into the Response object, for `stream: false` and
 * for `GET /v1/responses/{id}`: the same encoding as the stream, so both
 * describe the same response.
 */
export class ResponseAccumulator {
  readonly #encoder: ResponsesStreamEncoder;

  constructor(context: ResponsesContext) {
    this.#encoder = new ResponsesStreamEncoder(context);
  }

  add(event: StreamEvent): void {
    this.#encoder.encode(event);
  }

  /** A failure the ingress raised itself. */
  fail(code: string, message: string): void {
    this.#encoder.fail(code, message);
  }

  get ended(): boolean {
    return this.#encoder.ended;
  }

  /** The Response now: in progress until the stream ended. */
  result(): Record<string, unknown> {
    return this.#encoder.response();
  }
}
