/**
 * The WebSocket protocol (`GET /v1/ws`, docs/api.md "WebSocket"): what the
 * client may send, what the server sends, and the one place server frames
 * become text. Every frame is one JSON text frame; one socket carries many
 * streams, told apart by a client-chosen `id`.
 *
 *   client → server
 *     {"type":"request","id","body"}                      body: an OpenAI chat completions request (always streamed)
 *     {"type":"cancel","id"}                              cancels the request `id` at once (idempotent)
 *     {"type":"resume","id","streamId","after","token"?}  reads an existing stream from after `after`, then live
 *   server → client
 *     {"type":"started","id","streamId","resumeToken"}    first frame of every request and resume
 *     {"type":"chunk","id","streamId","seq","chunk"}      chunk: an OpenAI `chat.completion.chunk`
 *     {"type":"done","id","streamId","seq","finish_reason","usage"}   terminal
 *     {"type":"error","id","streamId"?,"error":{message,type,param,code}}  terminal for `id`;
 *                                                          `id` null for a frame that could not be read
 *
 * Pure: the socket, its streams and its flow control are ws-session.ts and
 * ws-flow-control.ts.
 */
import { type OpenAIErrorBody, openAIErrorBody, openAIFinishReason, type RunnelError, type StreamEvent } from "@runnel/shared/contracts";
import { z } from "zod";
import { type ChatCompletionChunk, type ChunkContext, ChunkJson, doneUsage, encodeChunk, type OpenAIUsage, openAIUsage } from "./openai-encoder.js";

export const WS_PATH = "/v1/ws";
/** The subprotocol the server selects; a client that offers any subprotocol must offer this one. */
export const WS_PROTOCOL = "runnel.v1";
/** Browsers cannot set headers on a WebSocket: they send the API key as the subprotocol `runnel.bearer.<key>`. */
export const WS_BEARER_PREFIX = "runnel.bearer.";
/**
 * Room a frame has beyond `ingress.bodyLimitBytes` for the envelope around a
 * request's body (`type`, an `id` of up to 256 characters): a body over the
 * limit inside it is refused with an error frame, as HTTP answers a 413. Only
 * a frame larger than the limit plus this closes the socket (1009).
 */
export const WS_ENVELOPE_BYTES = 64 * 1024;
/** Streams (requests and resumes) one socket may run at once; one more is answered with an error frame. */
export const MAX_STREAMS_PER_SOCKET = 64;

/** Close codes the server uses, each with one meaning. */
export const WS_CLOSE = {
  /** Two heartbeat intervals without a pong (or any frame): the peer is gone. */
  NO_PONG: 1001,
  /** The client sent a binary frame: it does not speak this protocol. */
  UNSUPPORTED_DATA: 1003,
  /** A frame larger than `ingress.bodyLimitBytes` + WS_ENVELOPE_BYTES (sent by the `ws` library, which stops reading it). */
  MESSAGE_TOO_BIG: 1009,
  /** The client read nothing for `ingress.stuckClientTimeout` while frames waited; its streams are cancelled. */
  STUCK_CLIENT: 1008,
  /** The ingress is shutting down: resume the streams (from the last seq received) on another replica. */
  SERVICE_RESTART: 1012,
} as const;

const RequestIdSchema = z.union([z.string().min(1).max(256), z.number().int()]);

/** The client's name for one request or resume on its socket (1 and "1" differ). */
export type RequestId = z.infer<typeof RequestIdSchema>;

const ClientFrameSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("request"), id: RequestIdSchema, body: z.unknown() }),
  z.object({ type: z.literal("cancel"), id: RequestIdSchema }),
  z.object({
    type: z.literal("resume"),
    id: RequestIdSchema,
    streamId: z.string(),
    after: z.number().int().nonnegative().default(0),
    token: z.string().optional(),
  }),
]);

export type ClientFrame = z.infer<typeof ClientFrameSchema>;

/** A client frame's text read: the frame, or why it cannot be (with its id when one is usable, for the error frame). */
export type ReadFrame = { readonly frame: ClientFrame } | { readonly id: RequestId | null; readonly problem: { message: string; param?: string } };

export function readClientFrame(text: string): ReadFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { id: null, problem: { message: "the frame is not valid JSON" } };
  }
  const parsed = ClientFrameSchema.safeParse(value);
  if (parsed.success) return { frame: parsed.data };
  const issue = parsed.error.issues[0];
  const param = issue && issue.path.length > 0 ? issue.path.map(String).join(".") : undefined;
  const message = `invalid frame: ${param ? `${param}: ` : ""}${issue?.message ?? "invalid"}`;
  return { id: usableId(value), problem: param ? { message, param } : { message } };
}

/** The id of a frame that failed validation, if it has a usable one. */
function usableId(frame: unknown): RequestId | null {
  if (typeof frame !== "object" || frame === null || !("id" in frame)) return null;
  const parsed = RequestIdSchema.safeParse(frame.id);
  return parsed.success ? parsed.data : null;
}

/** A server frame, properties in the documented order. */
export type ServerFrame =
  | { type: "started"; id: RequestId; streamId: string; resumeToken: string }
  | { type: "chunk"; id: RequestId; streamId: string; seq: number; chunk: ChatCompletionChunk }
  | { type: "done"; id: RequestId; streamId: string; seq: number; finish_reason: string; usage: OpenAIUsage | null }
  | { type: "error"; id: RequestId | null; streamId?: string; error: OpenAIErrorBody["error"] };

/** The error frame of a frame refused before any stream (a bad frame, a body over the limit, an unknown model): no streamId. */
export function refusalFrame(id: RequestId | null, error: RunnelError): ServerFrame {
  return { type: "error", id, error: openAIErrorBody(error.code, error.message, error.param).error };
}

/**
 * The frames of one stream on a socket, and their text: `started`, then a
 * `chunk` per event (the OpenAI encoder's chunk), ending with `done` (the
 * finish reason and, when asked for, the usage, in place of the finish and
 * usage chunks) or `error`. One per stream; the text of its chunk frames
 * has a cached envelope, as the chunks inside have (ChunkJson).
 */
export class StreamFrames {
  readonly #chunkJson = new ChunkJson();
  /** `{"type":"chunk","id":…,"streamId":…,"seq":`, built once: the per-token path only appends. */
  readonly #chunkPrefix: string;

  constructor(
    readonly id: RequestId,
    readonly streamId: string,
    /** The chunks' context: a new stream's, or a resumed one's (resumedChunkContext). */
    readonly chunks: ChunkContext,
  ) {
    this.#chunkPrefix = `{"type":"chunk","id":${JSON.stringify(id)},"streamId":${JSON.stringify(streamId)},"seq":`;
  }

  started(resumeToken: string): ServerFrame {
    return { type: "started", id: this.id, streamId: this.streamId, resumeToken };
  }

  /** The frame of one event; undefined for one that sends nothing (a `usage` event waits for `done`). */
  frame(event: StreamEvent): ServerFrame | undefined {
    const body = event.event;
    const { id, streamId } = this;
    switch (body?.$case) {
      case "done": {
        const usage = doneUsage(this.chunks, event);
        return {
          type: "done",
          id,
          streamId,
          seq: event.seq,
          finish_reason: openAIFinishReason(body.value.finishReason),
          usage: usage ? openAIUsage(usage) : null,
        };
      }
      case "error":
        return { type: "error", id, streamId, error: openAIErrorBody(body.value.code, body.value.message).error };
      default: {
        const chunk = encodeChunk(this.chunks, event);
        return chunk === undefined || "error" in chunk ? undefined : { type: "chunk", id, streamId, seq: event.seq, chunk };
      }
    }
  }

  /** A frame's text: always `JSON.stringify(frame)`, a chunk frame of this stream by its cached envelope. */
  text(frame: ServerFrame): string {
    if (frame.type !== "chunk" || frame.id !== this.id || frame.streamId !== this.streamId) return JSON.stringify(frame);
    return `${this.#chunkPrefix}${frame.seq},"chunk":${this.#chunkJson.text(frame.chunk)}}`;
  }
}
