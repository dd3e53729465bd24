/**
 * A wire format the mock speaks: how it reads a chat request and how it
 * writes errors, stream events and whole completions. One implementation per
 * provider API (OpenAI chat completions, Anthropic Messages, Gemini
 * generateContent); the scenario, its timing and its failures are the same
 * for all of them.
 */
import type { IncomingHttpHeaders } from "node:http";
import type { CompletionPlan } from "./completion.js";
import { errorReplyFor, INTERNAL_ERROR_REPLY } from "./failures.js";
import {
  type ChatRequest,
  type CompletionHeader,
  chunkEvent,
  completionBody,
  DONE_EVENT,
  errorBody,
  invalidRequest,
  MALFORMED_EVENT,
  type OpenAIError,
  parseChatRequest,
  usage,
  usageEvent,
} from "./openai.js";
import type { Scenario } from "./scenario.js";

/** The first value of a header, if it came. */
export function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** The provider APIs the mock speaks (`openai-responses`: OpenAI's Responses API). */
export type WireName = "openai" | "anthropic" | "gemini" | "openai-responses";

/** An error answer, rendered in the format's own body. */
export interface WireError {
  readonly status: number;
  readonly body: string;
  readonly headers: Readonly<Record<string, string>>;
}

export type WireParse = { readonly ok: true; readonly request: ChatRequest } | { readonly ok: false; readonly error: WireError };

/** What the route itself says about a request (Gemini puts the model and the streaming choice in the URL). */
export interface RouteFacts {
  readonly model?: string;
  readonly stream?: boolean;
}

export interface MockWire {
  readonly name: WireName;
  /** Prefix of response ids (`chatcmpl-mock-`, `msg_mock_`, ...). */
  readonly idPrefix: string;
  /** Whether the request carried this format's credential header (its value is never kept). */
  /** The credential the request carries in the format's header (the key, without "Bearer "), if any. */
  credential(headers: IncomingHttpHeaders): string | undefined;
  parse(text: string, route: RouteFacts): WireParse;
  /** A 400 for a request the mock cannot serve (a bad scenario, for instance). */
  invalid(message: string, param: string | null): WireError;
  /** A 413 for a body over the limit. */
  tooLarge(message: string): WireError;
  /** The 500 answer (also the first answer of `fail=500-once`). */
  internalError(): WireError;
  /** The plain error answer of the scenario's failure, or null. */
  failure(scenario: Scenario, chat: ChatRequest): WireError | null;
  /** The format's answer to a conversation ending with an assistant turn, from a model that refuses prefills. */
  prefillRejected(): WireError;
  /** Content type of streamed answers. */
  readonly streamContentType: string;
  /** Events sent before the first token. */
  streamStart(header: CompletionHeader, chat: ChatRequest): string;
  token(header: CompletionHeader, chat: ChatRequest, text: string): string;
  /** Events after the last token: the finish reason, and usage when the format sends it (`withUsage` for OpenAI). */
  finish(header: CompletionHeader, chat: ChatRequest, plan: CompletionPlan, withUsage: boolean): string;
  /** The end marker (`[DONE]`, `message_stop`); empty when the format has none. */
  end(header: CompletionHeader): string;
  /** The format's error event inside a stream (`fail=stream-error`), which ends it. */
  streamError(header: CompletionHeader, chat: ChatRequest): string;
  /** One event that is not valid for the format. */
  readonly malformed: string;
  /** The body of a non-streamed completion. */
  completion(header: CompletionHeader, chat: ChatRequest, content: string, plan: CompletionPlan): string;
  /**
   * The answer to `fail=content-policy` when the format reports a blocked
   * prompt in a 200 answer rather than with an error (Gemini); undefined otherwise.
   */
  blockedPrompt?(header: CompletionHeader, chat: ChatRequest, stream: boolean): string;
}

/** An OpenAIError as a WireError. */
export function openAIWireError(error: OpenAIError, headers: Readonly<Record<string, string>> = {}): WireError {
  return { status: error.status, body: errorBody(error), headers };
}

/** The OpenAI chat completions format (the mock's original one). */
export const OPENAI_WIRE: MockWire = {
  name: "openai",
  idPrefix: "chatcmpl-mock-",
  credential: (headers) => single(headers.authorization)?.replace(/^Bearer\s+/i, ""),
  parse(text) {
    const parsed = parseChatRequest(text);
    return parsed.ok ? parsed : { ok: false, error: openAIWireError(parsed.error) };
  },
  invalid: (message, param) => openAIWireError(invalidRequest(message, param, "invalid_scenario")),
  tooLarge: (message) =>
    openAIWireError({ status: 413, message, type: "invalid_request_error", param: null, code: "request_too_large" }, { connection: "close" }),
  internalError: () => openAIWireError(INTERNAL_ERROR_REPLY.error),
  failure(scenario, chat) {
    const reply = errorReplyFor(scenario, chat.model, chat.promptTokens);
    return reply ? openAIWireError(reply.error, reply.headers) : null;
  },
  prefillRejected: () =>
    openAIWireError(
      invalidRequest(
        "This model does not support assistant message prefill: the conversation must end with a user message.",
        "messages",
        "prefill_not_supported",
      ),
    ),
  streamContentType: "text/event-stream; charset=utf-8",
  streamStart: (header) => chunkEvent(header, { role: "assistant", content: "" }, null),
  token: (header, _chat, text) => chunkEvent(header, { content: text }, null),
  finish(header, chat, plan, withUsage) {
    const finish = chunkEvent(header, {}, plan.finishReason);
    return withUsage ? finish + usageEvent(header, usage(chat.promptTokens, plan.count)) : finish;
  },
  end: () => DONE_EVENT,
  // OpenAI's error chunk: an `error` object where a chunk would be.
  streamError: () => `data: ${errorBody(INTERNAL_ERROR_REPLY.error)}\n\n`,
  malformed: MALFORMED_EVENT,
  completion: (header, chat, content, plan) => completionBody(header, content, plan.finishReason, usage(chat.promptTokens, plan.count)),
};
