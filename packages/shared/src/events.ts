/**
 * The streaming vocabulary: the one definition of what a stream is made of,
 * shared by worker, bus and ingress. The types come from proto/runnel/v1/stream.proto;
 * this module adds constructors, the binary codec used on the bus, and the
 * small facts every consumer needs (is it terminal, what finish reason).
 */
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import type { RunnelError } from "./errors.js";
import { type Failover, FailoverMode, FinishReason, Job, ProviderWaiting, StreamEvent } from "./gen/runnel/v1/stream.js";

export type { ChatMessage, ChatRequest, ContentPart, Failover, Route, Tool, ToolCall, Usage } from "./gen/runnel/v1/stream.js";
export { FailoverMode, FinishReason, Job, ProviderWaiting, StreamEvent };

/** The payload of a StreamEvent, discriminated by `$case`. */
export type EventBody = NonNullable<StreamEvent["event"]>;
export type EventKind = EventBody["$case"];

/**
 * One writer for every event: `finish()` copies the bytes out and rewinds it,
 * so its buffer is reused instead of a new one being grown for each token.
 * Safe because encoding is synchronous and calls no other code.
 */
const eventWriter = new BinaryWriter();

export function encodeEvent(event: StreamEvent): Uint8Array {
  try {
    return StreamEvent.encode(event, eventWriter).finish();
  } catch (error) {
    // A value the writer refused (say a seq out of range): rewind, so the next event starts clean.
    eventWriter.finish();
    throw error;
  }
}

export function decodeEvent(bytes: Uint8Array): StreamEvent {
  return StreamEvent.decode(bytes);
}

export function encodeJob(job: Job): Uint8Array {
  return Job.encode(job).finish();
}

export function decodeJob(bytes: Uint8Array): Job {
  return Job.decode(bytes);
}

/**
 * The most UTF-16 code units one delta event carries: at most 3 bytes each in
 * UTF-8, so an event stays near 192 KiB, far below any NATS `max_payload`
 * (1 MiB by default), which refuses a larger message outright.
 */
export const MAX_DELTA_CHARS = 64 * 1024;

/**
 * A text, reasoning or tool-call delta longer than `maxChars` (a provider may
 * send a whole tool call's arguments in one chunk) as consecutive deltas of
 * at most `maxChars` each, which every encoder joins back as it joins a
 * provider's own deltas; a cut never falls between the two halves of a
 * surrogate pair. A tool call's id and name go with its first piece only, as
 * providers stream them. Any other event, and every delta within the bound,
 * comes back alone and unchanged.
 */
export function splitDelta(body: EventBody, maxChars = MAX_DELTA_CHARS): EventBody[] {
  switch (body.$case) {
    case "textDelta":
      return body.value.text.length <= maxChars ? [body] : pieces(body.value.text, maxChars).map((text) => ({ $case: "textDelta", value: { text } }));
    case "reasoningDelta":
      return body.value.text.length <= maxChars ? [body] : pieces(body.value.text, maxChars).map((text) => ({ $case: "reasoningDelta", value: { text } }));
    case "toolCallDelta": {
      const { index, id, name, arguments: partial } = body.value;
      if (partial.length <= maxChars) return [body];
      return pieces(partial, maxChars).map((piece, at) => ({
        $case: "toolCallDelta",
        value: at === 0 ? { index, id, name, arguments: piece } : { index, id: "", name: "", arguments: piece },
      }));
    }
    default:
      return [body];
  }
}

function pieces(text: string, maxChars: number): string[] {
  const out: string[] = [];
  for (let start = 0; start < text.length; ) {
    let end = Math.min(start + maxChars, text.length);
    // A high surrogate at the end of a piece: keep it with its low half.
    if (end < text.length && end - start > 1 && isHighSurrogate(text.charCodeAt(end - 1))) end -= 1;
    out.push(text.slice(start, end));
    start = end;
  }
  return out;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/** The terminal error event of a failure: its code, message, retryability and HTTP status, from the catalogue. */
export function errorEvent(error: RunnelError): EventBody {
  return { $case: "error", value: { code: error.code, message: error.message, retryable: error.retryable, httpStatus: error.httpStatus } };
}

/** Done and error end a stream; nothing follows them. */
export function isTerminal(event: StreamEvent): boolean {
  const kind = event.event?.$case;
  return kind === "done" || kind === "error";
}

const FINISH_TO_OPENAI: Record<FinishReason, string> = {
  [FinishReason.FINISH_REASON_UNSPECIFIED]: "stop",
  [FinishReason.FINISH_REASON_STOP]: "stop",
  [FinishReason.FINISH_REASON_LENGTH]: "length",
  [FinishReason.FINISH_REASON_TOOL_CALLS]: "tool_calls",
  [FinishReason.FINISH_REASON_CONTENT_FILTER]: "content_filter",
  [FinishReason.UNRECOGNIZED]: "stop",
};

/** The OpenAI `finish_reason` string of a finish reason. */
export function openAIFinishReason(reason: FinishReason): string {
  return FINISH_TO_OPENAI[reason];
}

/** Maps a provider's finish reason string onto OpenAI's set; unknown values are `undefined`. */
export function finishReasonFromOpenAI(reason: string): FinishReason | undefined {
  switch (reason) {
    case "stop":
    case "eos":
      return FinishReason.FINISH_REASON_STOP;
    case "length":
      return FinishReason.FINISH_REASON_LENGTH;
    case "tool_calls":
    case "function_call":
      return FinishReason.FINISH_REASON_TOOL_CALLS;
    case "content_filter":
      return FinishReason.FINISH_REASON_CONTENT_FILTER;
    default:
      return undefined;
  }
}

/**
 * Numbers a stream's events. The worker owns one per stream; `seq` starts at 1
 * and never skips, which is what lets the ingress detect a gap and resume find
 * its place.
 */
export class EventSequencer {
  #seq: number;

  /** `after`: the seq already used (a stream continued by another worker starts after it). */
  constructor(
    readonly streamId: string,
    after = 0,
    /** The writer's ownership epoch, stamped on every event (see StreamEvent.epoch). */
    readonly epoch = 0,
  ) {
    this.#seq = after;
  }

  /** The seq of the last event made, 0 before any. */
  get last(): number {
    return this.#seq;
  }

  next(event: EventBody): StreamEvent {
    this.#seq += 1;
    return { streamId: this.streamId, seq: this.#seq, epoch: this.epoch, event };
  }
}

const FAILOVER_MODE_NAMES: Record<FailoverMode, string> = {
  [FailoverMode.FAILOVER_MODE_UNSPECIFIED]: "unspecified",
  [FailoverMode.FAILOVER_MODE_NEXT_ROUTE]: "next_route",
  [FailoverMode.FAILOVER_MODE_RESTART]: "restart",
  [FailoverMode.FAILOVER_MODE_CONTINUE]: "continue",
  [FailoverMode.FAILOVER_MODE_HEDGE]: "hedge",
  [FailoverMode.UNRECOGNIZED]: "unspecified",
};

/**
 * The documented wire form of a failover announcement (the `runnel.failover`
 * extension of an OpenAI chunk, the `runnel_failover` Anthropic event).
 */
export function failoverJson(failover: Failover): Record<string, unknown> {
  return {
    mode: FAILOVER_MODE_NAMES[failover.mode] ?? "unspecified",
    from: failover.from ? { provider: failover.from.provider, model: failover.from.model } : null,
    to: failover.to ? { provider: failover.to.provider, model: failover.to.model } : null,
    reason_code: failover.reasonCode,
    reason: failover.reason,
    takeover: failover.takeover,
  };
}
