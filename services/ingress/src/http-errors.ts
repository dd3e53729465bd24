/**
 * Errors at the HTTP edge: one mapping of anything thrown (a RunnelError,
 * Fastify's own 4xx such as malformed JSON, a body over the limit or an
 * unsupported media type, anything else) to a RunnelError, and the shape in
 * which an API answers one (`ErrorShape`). The mapping is written once; each
 * API only renders: OpenAI's error JSON here, Anthropic's beside its encoder.
 */
import { openAIErrorBody, RunnelError, toRunnelError } from "@runnel/shared/contracts";

/** An error as an API renders it: a RunnelError (with the field at fault) or a stream's error event. */
export interface ErrorLike {
  readonly code: string;
  readonly message: string;
  readonly httpStatus: number;
  readonly param?: string | undefined;
}

/** An error as an HTTP answer: its status, the API's own headers (beside the JSON content type) and its body. */
export interface ErrorResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: object;
}

/** How one API answers an error. */
export type ErrorShape = (error: ErrorLike) => ErrorResponse;

/** OpenAI's error JSON, `{"error":{"message","type","param","code"}}`, with the error's own status. */
export const openAIErrors: ErrorShape = (error) => ({
  status: error.httpStatus || 502,
  headers: {},
  body: openAIErrorBody(error.code, error.message, error.param),
});

/** The 413 of a body over `ingress.bodyLimitBytes`, on HTTP and in a WebSocket request frame alike. */
export function bodyTooLarge(limitBytes: number, options: { cause?: unknown; param?: string } = {}): RunnelError {
  return new RunnelError("RUNNEL_ERR_BODY_TOO_LARGE", `Request body is larger than ${limitBytes} bytes`, options);
}

/**
 * Anything a request handler, hook or Fastify itself threw, as a RunnelError.
 * Fastify's own 4xx errors (malformed JSON, body too large, wrong content
 * type) are the client's: a 413 is RUNNEL_ERR_BODY_TOO_LARGE, another 4xx
 * RUNNEL_ERR_INVALID_REQUEST with Fastify's status; anything else is
 * RUNNEL_ERR_INTERNAL, the original kept as `cause`.
 */
export function httpError(error: unknown, bodyLimitBytes: number): RunnelError {
  if (error instanceof RunnelError) return error;
  const clientStatus = (error as { statusCode?: unknown } | null)?.statusCode;
  if (clientStatus === 413) return bodyTooLarge(bodyLimitBytes, { cause: error });
  if (typeof clientStatus === "number" && clientStatus >= 400 && clientStatus < 500) {
    return new RunnelError("RUNNEL_ERR_INVALID_REQUEST", (error as Error).message, { cause: error, httpStatus: clientStatus });
  }
  return toRunnelError(error);
}
