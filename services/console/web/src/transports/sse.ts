/**
 * SSE through `fetch` (an `EventSource` cannot POST or send a header): a new
 * stream is `POST /v1/chat/completions` with `stream: true`; a resume is
 * `GET /v1/streams/{id}/events` with `Last-Event-ID` and the resume token in
 * `?token=`. Each SSE event is one chunk, with its `id:` as position.
 */
import { chunkFacts, errorOf, type Usage } from "../chunks.js";
import { SseParser } from "../sse-parser.js";
import { authHeaders, type ChatBody, type Connection, requestBody, type StreamRef, type Transport, type TransportContext, type WireItem } from "./types.js";

/** Reads a response body as text, chunk by chunk, until it ends (or `onText` returns false: then it lets the body go). */
export async function readText(response: Response, onText: (text: string) => boolean | undefined): Promise<void> {
  if (!response.body) return;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (onText(decoder.decode(value, { stream: true })) === false) {
        await reader.cancel().catch(() => {});
        break;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** The item for an HTTP error answer (the OpenAI error JSON). */
export async function errorAnswer(response: Response): Promise<WireItem> {
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    body = undefined;
  }
  return {
    type: "error",
    seq: undefined,
    status: response.status,
    error: errorOf(body) ?? { code: `HTTP ${response.status}`, message: response.statusText },
  };
}

/** The stream's id and resume token from a response's headers, when they are there. */
export function streamHeaders(response: Response): StreamRef | undefined {
  const streamId = response.headers.get("x-runnel-stream-id");
  const resumeToken = response.headers.get("x-runnel-resume-token");
  return streamId && resumeToken ? { streamId, resumeToken } : undefined;
}

/**
 * Turns an SSE body into items and hands them to the sink: one connection's
 * worth, up to a terminal item (`[DONE]`, an error) or a `reconnect` when it
 * ends without one. Shared by a new stream and a resume.
 */
export async function pumpSse(response: Response, context: TransportContext, isDropped: () => boolean): Promise<void> {
  const parser = new SseParser();
  let finishReason: string | undefined;
  let usage: Usage | undefined;
  let retryMs: number | undefined;
  let ended = false;
  const emit = (item: WireItem) => {
    if (!isDropped() && !ended) context.sink(item);
    if (item.type === "done" || item.type === "error") ended = true;
  };
  try {
    await readText(response, (text) => {
      for (const event of parser.push(text)) {
        if (event.retry !== undefined) retryMs = event.retry;
        if (event.data === "") continue;
        const seq = event.id !== undefined && /^\d+$/.test(event.id) ? Number(event.id) : undefined;
        if (event.data === "[DONE]") {
          emit({ type: "done", seq, finishReason, usage });
          continue;
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(event.data);
        } catch {
          emit({ type: "error", seq, error: { code: "console_unreadable_event", message: `not JSON: ${event.data.slice(0, 80)}` } });
          continue;
        }
        const error = errorOf(parsed);
        if (error) {
          emit({ type: "error", seq, error });
          continue;
        }
        const facts = chunkFacts(parsed);
        finishReason = facts.finishReason ?? finishReason;
        usage = facts.usage ?? usage;
        emit({ type: "chunk", seq, chunk: parsed });
      }
      return !isDropped() && !ended;
    });
  } catch (error) {
    if (isDropped() || ended) return;
    emit({ type: "reconnect", reason: `the connection broke (${(error as Error).message})`, retryMs });
    return;
  }
  if (!ended && !isDropped()) emit({ type: "reconnect", reason: "the server ended the connection before the stream", retryMs });
}

/**
 * Runs `start` with an AbortController and a sink that goes quiet once the
 * connection is dropped; `drop()` aborts the request. A request that fails
 * (the network, not the API) asks for a reconnect.
 */
export function connection(
  context: TransportContext,
  start: (guarded: TransportContext, signal: AbortSignal, isDropped: () => boolean) => Promise<void>,
): Connection {
  const controller = new AbortController();
  let dropped = false;
  const isDropped = () => dropped;
  const guarded: TransportContext = { ...context, sink: (item) => (dropped ? undefined : context.sink(item)) };
  start(guarded, controller.signal, isDropped).catch((error: unknown) => {
    guarded.sink({ type: "reconnect", reason: `the request failed (${(error as Error).message})`, retryMs: undefined });
  });
  return {
    drop() {
      dropped = true;
      controller.abort();
    },
  };
}

/** Opens a stream with POST and hands its headers to the sink; returns the response (undefined after an error answer). */
export async function post(body: ChatBody, context: TransportContext, accept: string, signal: AbortSignal): Promise<Response | undefined> {
  const response = await fetch(`${context.base}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", accept, ...authHeaders(context.key) },
    body: JSON.stringify(requestBody(body)),
    signal,
  });
  if (!response.ok) {
    context.sink(await errorAnswer(response));
    return undefined;
  }
  const stream = streamHeaders(response);
  if (stream) context.sink({ type: "opened", ...stream });
  return response;
}

/** `GET /v1/streams/{id}/events` after `after`, then live. */
export async function resumeSse(stream: StreamRef, after: number, context: TransportContext, signal: AbortSignal, isDropped: () => boolean): Promise<void> {
  const url = `${context.base}/v1/streams/${encodeURIComponent(stream.streamId)}/events?token=${encodeURIComponent(stream.resumeToken)}`;
  const response = await fetch(url, { headers: { accept: "text/event-stream", "last-event-id": String(after), ...authHeaders(context.key) }, signal });
  if (response.status === 204) {
    // Nothing after `after`: the stream had already ended there.
    context.sink({ type: "done", seq: undefined, finishReason: undefined, usage: undefined });
    return;
  }
  if (!response.ok) {
    context.sink(await errorAnswer(response));
    return;
  }
  await pumpSse(response, context, isDropped);
}

export const sseTransport: Transport = {
  id: "sse",
  label: "SSE",
  available: true,
  note: "POST /v1/chat/completions, read with fetch; resumes with GET /v1/streams/{id}/events and Last-Event-ID",
  open(body, context) {
    return connection(context, async (guarded, signal, isDropped) => {
      const response = await post(body, guarded, "text/event-stream", signal);
      if (response) await pumpSse(response, guarded, isDropped);
    });
  },
  resume(stream, after, context) {
    return connection(context, (guarded, signal, isDropped) => resumeSse(stream, after, guarded, signal, isDropped));
  },
};
