/**
 * The playground's transports: each reads one stream of the public API
 * (docs/api.md) its own way and reports what arrives as the same items, so
 * the page measures and shows every transport alike. A transport opens a new
 * stream or resumes one after a position; `drop()` closes its connection as
 * a network failure would, without cancelling the stream.
 */
import type { ApiErrorBody, Usage } from "../chunks.js";

/** The chat completions request the playground sends. */
export interface ChatBody {
  readonly model: string;
  readonly messages: readonly { readonly role: "user"; readonly content: string }[];
}

export type WireItem =
  /** The stream exists: its id and resume token (headers, or the WebSocket `started` frame). */
  | { readonly type: "opened"; readonly streamId: string; readonly resumeToken: string }
  /** One chunk; `seq` is its position in the stream when the transport carries one. */
  | { readonly type: "chunk"; readonly seq: number | undefined; readonly chunk: unknown }
  /** The stream ended normally. */
  | { readonly type: "done"; readonly seq: number | undefined; readonly finishReason: string | undefined; readonly usage: Usage | undefined }
  /** The stream (or the request) failed: terminal. */
  | { readonly type: "error"; readonly seq: number | undefined; readonly error: ApiErrorBody; readonly status?: number }
  /**
   * The connection ended before the stream did and the server asked the
   * client to come back (an ingress restarting: `retry:`, WebSocket 1012,
   * RUNNEL_ERR_SHUTTING_DOWN), or it broke: resume after the last position.
   */
  | { readonly type: "reconnect"; readonly reason: string; readonly retryMs: number | undefined };

export interface TransportContext {
  /** The gateway's base URL (the page's own origin). */
  readonly base: string;
  /** The API key, when auth is on. */
  readonly key: string | undefined;
  /** Receives every item, in order; nothing after a terminal item, `reconnect`, or `drop()`. */
  readonly sink: (item: WireItem) => void;
}

export interface StreamRef {
  readonly streamId: string;
  readonly resumeToken: string;
}

export interface Connection {
  /** Closes the connection now, as a failing network would; the stream goes on on the server. */
  drop(): void;
}

export interface Transport {
  readonly id: string;
  readonly label: string;
  /** False for a transport the gateway does not serve yet: shown, disabled, with `note`. */
  readonly available: boolean;
  readonly note: string;
  /** Which transport a resume of this one goes over (NDJSON has no resume route of its own: it resumes over SSE). */
  readonly resumesOver?: string;
  open(body: ChatBody, context: TransportContext): Connection;
  resume(stream: StreamRef, after: number, context: TransportContext): Connection;
}

/** The request body every transport sends: streamed, with usage. */
export function requestBody(body: ChatBody): Record<string, unknown> {
  return { model: body.model, messages: body.messages, stream: true, stream_options: { include_usage: true } };
}

/** Authorization for HTTP requests (never in a URL). */
export function authHeaders(key: string | undefined): Record<string, string> {
  return key ? { authorization: `Bearer ${key}` } : {};
}
