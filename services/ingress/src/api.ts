/**
 * What an API is to the stream path, on its request side: a parser that
 * turns a body into the normalised request. Its other sides are its encoder
 * (the wire its streams are written in) and its error shape (http-errors.ts);
 * its route puts the three together with `openStream` and `serveStream`.
 */
import type { ChatRequest } from "@runnel/shared/contracts";

/** What a request parser makes of a body: enough to open and serve the stream. */
export interface ParsedRequest {
  /** The public model asked for. */
  readonly model: string;
  /** Written as it comes (SSE, NDJSON), or as one answer at the end. */
  readonly streaming: boolean;
  /** The normalised request the job carries. */
  readonly chat: ChatRequest;
}

/** An API's request parser. `P` adds what the API's wire needs beside (a Responses echo, say). */
export interface RequestApi<P extends ParsedRequest = ParsedRequest> {
  /** For logs: `openai`, `anthropic`. */
  readonly name: string;
  /** Validates a body and maps it; throws RUNNEL_ERR_INVALID_REQUEST naming the field at fault, in the API's own words. */
  parse(body: unknown): P;
}
