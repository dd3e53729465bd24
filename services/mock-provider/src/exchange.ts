/**
 * One HTTP exchange in flight: the request, the response, its journal entry,
 * and a signal that fires when the connection closes, so every timer and
 * pending write of the exchange stops with it.
 */
import { once } from "node:events";
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Journal, JournalEntry } from "./journal.js";
import { errorBody, type OpenAIError } from "./openai.js";

/** One request being answered. */
export interface Exchange {
  readonly request: IncomingMessage;
  readonly response: ServerResponse;
  /** Journal entry of a chat request; null for other routes. */
  readonly entry: JournalEntry | null;
  readonly journal: Journal;
  /** Aborted when the response closes, whoever closed it. */
  readonly signal: AbortSignal;
  /**
   * Closes the connection on the server's own initiative (not recorded as a
   * client close): `reset` at once with a TCP RST, `close` with a FIN once
   * what was written has gone out, leaving the HTTP response unfinished.
   */
  destroy(how: "reset" | "close"): void;
}

/** Records that the response headers went out with `status`. */
export function markHeadersSent(exchange: Exchange, status: number): void {
  const entry = exchange.entry;
  if (!entry) return;
  entry.status = status;
  entry.headersSentAt = Date.now();
  exchange.journal.changed(entry);
}

/** Sends a whole response. */
export function send(exchange: Exchange, status: number, body: string, headers: OutgoingHttpHeaders = {}): void {
  const { response } = exchange;
  if (response.headersSent || response.destroyed) return;
  response.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers });
  markHeadersSent(exchange, status);
  response.end(body);
}

/** Sends an OpenAI error. */
export function sendError(exchange: Exchange, error: OpenAIError, headers: OutgoingHttpHeaders = {}): void {
  send(exchange, error.status, errorBody(error), headers);
}

/** Writes `data`, waiting for 'drain' when the socket buffer is full. Rejects with an AbortError once the connection has closed. */
export async function write(exchange: Exchange, data: string): Promise<void> {
  exchange.signal.throwIfAborted();
  if (exchange.response.write(data)) return;
  await once(exchange.response, "drain", { signal: exchange.signal });
}

/** True for the error a sleep or write throws once the exchange's connection has closed. */
export function isAbort(exchange: Exchange, error: unknown): boolean {
  return exchange.signal.aborted || (error instanceof Error && error.name === "AbortError");
}
