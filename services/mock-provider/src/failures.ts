/**
 * The failures that are a plain HTTP error answer: their status, headers and
 * OpenAI error body. Failures of the connection or of the stream itself
 * (reset, stall, cut, ...) are played out in completion.ts.
 */
import type { OpenAIError } from "./openai.js";
import type { Scenario } from "./scenario.js";

/** An error answer: status and body in `error`, plus extra headers. */
export interface ErrorReply {
  readonly error: OpenAIError;
  readonly headers: Readonly<Record<string, string>>;
}

/** The context length `fail=context-length` claims. */
export const MOCK_CONTEXT_LENGTH = 8192;

const INTERNAL: OpenAIError = {
  status: 500,
  message: "The server had an error while processing your request. Sorry about that!",
  type: "server_error",
  param: null,
  code: null,
};

/** The 500 answer (also the first answer of `fail=500-once`). */
export const INTERNAL_ERROR_REPLY: ErrorReply = { error: INTERNAL, headers: {} };

function rateLimit(scenario: Scenario, model: string): OpenAIError {
  return {
    status: 429,
    message: `Rate limit reached for ${model.split("?")[0]} in organization org-mock on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in ${scenario.retryAfterSeconds}s.`,
    type: "requests",
    param: null,
    code: "rate_limit_exceeded",
  };
}

/**
 * The error answer for the scenario's failure, or null when the failure is
 * not a plain error answer (or there is none). `500-once` is not handled here:
 * it needs the app's memory of keys.
 */
export function errorReplyFor(scenario: Scenario, model: string, promptTokens: number): ErrorReply | null {
  switch (scenario.fail) {
    case "429":
      return { error: rateLimit(scenario, model), headers: { "retry-after": String(scenario.retryAfterSeconds) } };
    case "429-no-retry-after":
      return { error: rateLimit(scenario, model), headers: {} };
    case "500":
      return INTERNAL_ERROR_REPLY;
    case "503":
      return {
        error: { status: 503, message: "The server is overloaded or not ready yet.", type: "server_error", param: null, code: null },
        headers: {},
      };
    case "context-length":
      return {
        error: {
          status: 400,
          message: `This model's maximum context length is ${MOCK_CONTEXT_LENGTH} tokens. However, your messages resulted in ${MOCK_CONTEXT_LENGTH + 1 + promptTokens} tokens. Please reduce the length of the messages.`,
          type: "invalid_request_error",
          param: "messages",
          code: "context_length_exceeded",
        },
        headers: {},
      };
    case "content-policy":
      return {
        error: {
          status: 400,
          message: "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
          type: "invalid_request_error",
          param: null,
          code: "content_policy_violation",
        },
        headers: {},
      };
    case "auth":
      return {
        error: {
          status: 401,
          message: "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
          type: "invalid_request_error",
          param: null,
          code: "invalid_api_key",
        },
        headers: {},
      };
    default:
      return null;
  }
}
