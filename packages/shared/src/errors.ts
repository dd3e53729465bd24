/**
 * Runnel's error catalogue. Every failure that can reach a client, an operator
 * or another service has a stable `RUNNEL_ERR_*` code listed here, with the
 * HTTP status it maps to at the edge, the gRPC status code, the OpenAI error
 * `type`, and whether retrying the same request can help. docs/errors.md is
 * generated from the same facts and must stay in step (a test checks it).
 */

/**
 * What a failure before a stream is served means for the next route:
 * `next-route`, another route may well answer; `larger-context`, only a
 * route declared with a larger context window; `if-configured`, only when
 * the model says so (`failover.onContentPolicy`); `never`, the answer is
 * the error.
 */
export type FailoverRule = "next-route" | "larger-context" | "if-configured" | "never";

/** How a provider request's failure counts against its route's health: a failure (circuit, error rate), a 429 (cooldown), or nothing. */
export type HealthVerdict = "failure" | "rate-limited" | "none";

export interface ErrorSpec {
  readonly httpStatus: number;
  /** gRPC status code (numeric, per grpc/status.proto). */
  readonly grpcCode: number;
  /** OpenAI error `type`. */
  readonly type: "invalid_request_error" | "authentication_error" | "rate_limit_error" | "server_error" | "not_found_error";
  readonly retryable: boolean;
  /** Whether another route is tried when a provider request fails with it. */
  readonly failover: FailoverRule;
  /** What it says about the route that failed with it. */
  readonly health: HealthVerdict;
  readonly description: string;
}

export const ERRORS = {
  RUNNEL_ERR_INVALID_REQUEST: {
    httpStatus: 400,
    grpcCode: 3,
    type: "invalid_request_error",
    retryable: false,
    failover: "never",
    health: "none",
    description: "The request body does not match the API's schema; `param` names the field.",
  },
  RUNNEL_ERR_MODEL_NOT_FOUND: {
    httpStatus: 404,
    grpcCode: 5,
    type: "not_found_error",
    retryable: false,
    failover: "never",
    health: "none",
    description: "No model of that name is configured.",
  },
  RUNNEL_ERR_STREAM_NOT_FOUND: {
    httpStatus: 404,
    grpcCode: 5,
    type: "not_found_error",
    retryable: false,
    failover: "never",
    health: "none",
    description: "No stream of that id is known (never existed, or past its retention).",
  },
  RUNNEL_ERR_NOT_READY: {
    httpStatus: 503,
    grpcCode: 14,
    type: "server_error",
    retryable: true,
    failover: "never",
    health: "none",
    description: "The service has not received its first routing snapshot or lost NATS; retry shortly.",
  },
  RUNNEL_ERR_OVERLOADED: {
    httpStatus: 503,
    grpcCode: 8,
    type: "server_error",
    retryable: true,
    failover: "never",
    health: "none",
    description: "The job could not be queued (the job queue or the large-request store is full, or NATS refused it).",
  },
  RUNNEL_ERR_SHUTTING_DOWN: {
    httpStatus: 503,
    grpcCode: 14,
    type: "server_error",
    retryable: true,
    failover: "never",
    health: "none",
    description: "The service is draining for shutdown; the client should retry elsewhere.",
  },
  RUNNEL_ERR_NO_ROUTE: {
    httpStatus: 503,
    grpcCode: 14,
    type: "server_error",
    retryable: true,
    failover: "next-route",
    health: "none",
    description: "The model has no route whose provider the worker knows.",
  },
  RUNNEL_ERR_PROVIDER_RATE_LIMITED: {
    httpStatus: 429,
    grpcCode: 8,
    type: "rate_limit_error",
    retryable: true,
    failover: "next-route",
    health: "rate-limited",
    description: "The provider answered 429.",
  },
  RUNNEL_ERR_PROVIDER_AUTH: {
    httpStatus: 502,
    grpcCode: 16,
    type: "authentication_error",
    retryable: false,
    failover: "next-route",
    health: "failure",
    description: "The provider rejected Runnel's credentials (401/403). An operator must fix the key.",
  },
  RUNNEL_ERR_PROVIDER_BAD_REQUEST: {
    httpStatus: 400,
    grpcCode: 3,
    type: "invalid_request_error",
    retryable: false,
    failover: "never",
    health: "none",
    description: "The provider rejected the request (a 4xx other than 401/403/429); its reason is passed on.",
  },
  RUNNEL_ERR_CONTEXT_LENGTH: {
    httpStatus: 400,
    grpcCode: 3,
    type: "invalid_request_error",
    retryable: false,
    failover: "larger-context",
    health: "none",
    description: "The prompt does not fit the model's context window; failover tries only routes declared with a larger one.",
  },
  RUNNEL_ERR_CONTENT_POLICY: {
    httpStatus: 400,
    grpcCode: 3,
    type: "invalid_request_error",
    retryable: false,
    failover: "if-configured",
    health: "none",
    description: "The provider refused the request under its content policy; returned as is unless the model fails over on it.",
  },
  RUNNEL_ERR_PROVIDER_UNAVAILABLE: {
    httpStatus: 502,
    grpcCode: 14,
    type: "server_error",
    retryable: true,
    failover: "next-route",
    health: "failure",
    description: "The provider answered 5xx, refused or reset the connection before streaming.",
  },
  RUNNEL_ERR_PROVIDER_TIMEOUT: {
    httpStatus: 504,
    grpcCode: 4,
    type: "server_error",
    retryable: true,
    failover: "next-route",
    health: "failure",
    description: "The provider did not connect, send a first token, or send the next token within its configured timeout.",
  },
  RUNNEL_ERR_PROVIDER_STREAM_CUT: {
    httpStatus: 502,
    grpcCode: 14,
    type: "server_error",
    retryable: true,
    failover: "next-route",
    health: "failure",
    description: "The provider's stream ended without a finish reason: the answer is incomplete.",
  },
  RUNNEL_ERR_PROVIDER_BAD_RESPONSE: {
    httpStatus: 502,
    grpcCode: 13,
    type: "server_error",
    retryable: true,
    failover: "next-route",
    health: "failure",
    description: "The provider sent a chunk that is not valid for its wire format.",
  },
  RUNNEL_ERR_CANCELLED: {
    httpStatus: 499,
    grpcCode: 1,
    type: "invalid_request_error",
    retryable: false,
    failover: "never",
    health: "none",
    description: "The stream was cancelled (client disconnect or an explicit cancel).",
  },
  RUNNEL_ERR_EVENT_GAP: {
    httpStatus: 502,
    grpcCode: 15,
    type: "server_error",
    retryable: true,
    failover: "never",
    health: "none",
    description: "The ingress saw a gap in a stream's event sequence; the stream is ended rather than delivered with a hole.",
  },
  RUNNEL_ERR_SLOW_CLIENT: {
    httpStatus: 500,
    grpcCode: 8,
    type: "server_error",
    retryable: true,
    failover: "never",
    health: "none",
    description: "The client read slower than the stream was produced and its bounded buffer filled.",
  },
  RUNNEL_ERR_WORKER_LOST: {
    httpStatus: 502,
    grpcCode: 14,
    type: "server_error",
    retryable: true,
    failover: "never",
    health: "none",
    description: "The worker running the stream stopped without ending it.",
  },
  RUNNEL_ERR_EVENTS_EXPIRED: {
    httpStatus: 410,
    grpcCode: 11,
    type: "invalid_request_error",
    retryable: false,
    failover: "never",
    health: "none",
    description: "The events asked for are past the replay log's retention window; the stream cannot be resumed from there.",
  },
  RUNNEL_ERR_UNAUTHORIZED: {
    httpStatus: 401,
    grpcCode: 16,
    type: "authentication_error",
    retryable: false,
    failover: "never",
    health: "none",
    description: "No API key, an unknown API key, or a key (or resume token) that does not own the stream.",
  },
  RUNNEL_ERR_BODY_TOO_LARGE: {
    httpStatus: 413,
    grpcCode: 3,
    type: "invalid_request_error",
    retryable: false,
    failover: "never",
    health: "none",
    description: "The request body is larger than `ingress.bodyLimitBytes`.",
  },
  RUNNEL_ERR_BODY_UNAVAILABLE: {
    httpStatus: 502,
    grpcCode: 14,
    type: "server_error",
    retryable: true,
    failover: "never",
    health: "none",
    description: "The worker could not read a large request's body from the `runnel_bodies` object store (past its TTL, or NATS failed).",
  },
  RUNNEL_ERR_INTERNAL: {
    httpStatus: 500,
    grpcCode: 13,
    type: "server_error",
    retryable: false,
    failover: "never",
    health: "none",
    description: "A bug in Runnel. The logs carry the stream id and the cause.",
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERRORS, code);
}

/** An error with a catalogued code. `cause` chains what went wrong underneath. */
export class RunnelError extends Error {
  readonly code: ErrorCode;
  readonly httpStatus: number;
  readonly retryable: boolean;
  /** The request field at fault, for invalid requests. */
  readonly param: string | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; param?: string; httpStatus?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "RunnelError";
    this.code = code;
    this.httpStatus = options.httpStatus ?? ERRORS[code].httpStatus;
    this.retryable = ERRORS[code].retryable;
    this.param = options.param;
  }

  get spec(): ErrorSpec {
    return ERRORS[this.code];
  }
}

/** Wraps anything thrown into a RunnelError, keeping the original as `cause`. */
export function toRunnelError(error: unknown, fallback: ErrorCode = "RUNNEL_ERR_INTERNAL"): RunnelError {
  if (error instanceof RunnelError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new RunnelError(fallback, message, { cause: error });
}

/** The OpenAI error body: `{ "error": { message, type, param, code } }`. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

export function openAIErrorBody(code: string, message: string, param?: string | null): OpenAIErrorBody {
  const type = isErrorCode(code) ? ERRORS[code].type : "server_error";
  return { error: { message, type, param: param ?? null, code } };
}
